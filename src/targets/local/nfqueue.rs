//! The kernel's NFQUEUE protocol (nfnetlink_queue), as much of it as the delay agent needs: bind one queue of the
//! current network namespace with metadata-only copies, a queue length and fail-open, read the ids of the packets
//! the kernel holds, and give each its ACCEPT verdict, in any order.
//!
//! Hand-written over libc (about what libnetfilter_queue's core does) rather than the `nfq` crate: nfq 0.2 exposes
//! no file descriptor, so an agent could not wait for "a packet or the next release time" without polling, and
//! each of its messages keeps a whole receive buffer alive while the packet is held.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
/// A full queue (or a full socket) lets packets pass instead of dropping them.
const NFQA_CFG_F_FAIL_OPEN: u32 = 1;
/// Whole GSO packets are queued as one, not segmented first: the agent never reads the payload.
const NFQA_CFG_F_GSO: u32 = 1 << 2;
const NF_ACCEPT: u32 = 1;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

/// One bound NFQUEUE queue.
pub struct Queue {
    fd: OwnedFd,
    num: u16,
    seq: u32,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One nfnetlink message to the queue subsystem: header, nfgenmsg (res_id = queue number), attributes.
fn message(kind: u16, queue: u16, ack: bool, seq: u32, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut m = vec![0u8; NLMSG_HDRLEN];
    m.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
    m.extend_from_slice(&queue.to_be_bytes());
    for (t, v) in attrs {
        m.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
        m.extend_from_slice(&t.to_ne_bytes());
        m.extend_from_slice(v);
        m.resize(align4(m.len()), 0);
    }
    let len = m.len() as u32;
    let flags = libc::NLM_F_REQUEST as u16 | if ack { libc::NLM_F_ACK as u16 } else { 0 };
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m[4..6].copy_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | kind).to_ne_bytes());
    m[6..8].copy_from_slice(&flags.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    m
}

/// The packet ids in a buffer of netlink messages from the kernel; an error message with a non-zero code is
/// returned as that error.
fn parse_packets(buf: &[u8], ids: &mut Vec<u32>) -> io::Result<()> {
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            break;
        }
        let kind = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().unwrap());
        let body = &buf[at + NLMSG_HDRLEN..at + len];
        if kind == libc::NLMSG_ERROR as u16 && body.len() >= 4 {
            let code = i32::from_ne_bytes(body[0..4].try_into().unwrap());
            if code != 0 {
                return Err(io::Error::from_raw_os_error(-code));
            }
        } else if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET && body.len() >= NFGENMSG_LEN
        {
            let mut a = NFGENMSG_LEN;
            while a + 4 <= body.len() {
                let alen = u16::from_ne_bytes(body[a..a + 2].try_into().unwrap()) as usize;
                let atype = u16::from_ne_bytes(body[a + 2..a + 4].try_into().unwrap()) & 0x3fff;
                if alen < 4 || a + alen > body.len() {
                    break;
                }
                if atype == NFQA_PACKET_HDR && alen >= 8 {
                    ids.push(u32::from_be_bytes(body[a + 4..a + 8].try_into().unwrap()));
                }
                a += align4(alen);
            }
        }
        at += align4(len);
    }
    Ok(())
}

impl Queue {
    /// Binds queue `num` of this network namespace: metadata only, at most `max_len` packets held by the kernel,
    /// fail-open. Fails if another process holds the queue.
    pub fn bind(num: u16, max_len: u32) -> io::Result<Queue> {
        // SAFETY: plain socket(2); the descriptor is owned by the OwnedFd at once.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut q = Queue { fd, num, seq: 0 };
        // Room for bursts (the kernel fails open beyond it); root may exceed rmem_max.
        q.set_int(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 8 << 20);
        q.set_int(libc::SOL_NETLINK, libc::NETLINK_NO_ENOBUFS, 1);
        q.request(&[(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0])])?;
        let mut params = 0u32.to_be_bytes().to_vec();
        params.push(NFQNL_COPY_META);
        q.request(&[(NFQA_CFG_PARAMS, &params)])?;
        q.request(&[(NFQA_CFG_QUEUE_MAXLEN, &max_len.to_be_bytes())])?;
        let flags = NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO;
        q.request(&[
            (NFQA_CFG_FLAGS, &flags.to_be_bytes()),
            (NFQA_CFG_MASK, &flags.to_be_bytes()),
        ])?;
        Ok(q)
    }

    fn set_int(&self, level: i32, name: i32, value: i32) {
        // SAFETY: setsockopt(2) with a pointer to a live i32 and its size.
        unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                &value as *const i32 as *const libc::c_void,
                std::mem::size_of::<i32>() as libc::socklen_t,
            );
        }
    }

    fn send(&self, buf: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_nl zeroed = the kernel; buf is a live slice.
        let n = unsafe {
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as u16;
            libc::sendto(
                self.fd.as_raw_fd(),
                buf.as_ptr() as *const libc::c_void,
                buf.len(),
                0,
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// A config message, waiting for the kernel's acknowledgement.
    fn request(&mut self, attrs: &[(u16, &[u8])]) -> io::Result<()> {
        self.seq += 1;
        self.send(&message(NFQNL_MSG_CONFIG, self.num, true, self.seq, attrs))?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = self.recv_into(&mut buf, 0)?;
            let mut at = 0;
            while at + NLMSG_HDRLEN <= n {
                let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
                let kind = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().unwrap());
                if len < NLMSG_HDRLEN || at + len > n {
                    break;
                }
                if kind == libc::NLMSG_ERROR as u16 {
                    let code = i32::from_ne_bytes(buf[at + 16..at + 20].try_into().unwrap());
                    return if code == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::from_raw_os_error(-code))
                    };
                }
                at += align4(len);
            }
        }
    }

    fn recv_into(&self, buf: &mut [u8], flags: i32) -> io::Result<usize> {
        // SAFETY: recv(2) into a live buffer of its length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                flags,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Appends the ids of every packet waiting on the socket, without blocking.
    pub fn take_packets(&self, ids: &mut Vec<u32>) -> io::Result<()> {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match self.recv_into(&mut buf, libc::MSG_DONTWAIT) {
                Ok(n) => parse_packets(&buf[..n], ids)?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
                // A burst beyond the socket's buffer: the kernel failed those packets open.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// ACCEPT verdicts for these packets, several messages per datagram.
    pub fn accept(&self, ids: &[u32]) -> io::Result<()> {
        for chunk in ids.chunks(256) {
            let mut buf = Vec::with_capacity(chunk.len() * 32);
            for id in chunk {
                let mut hdr = NF_ACCEPT.to_be_bytes().to_vec();
                hdr.extend_from_slice(&id.to_be_bytes());
                buf.extend(message(
                    NFQNL_MSG_VERDICT,
                    self.num,
                    false,
                    0,
                    &[(NFQA_VERDICT_HDR, &hdr)],
                ));
            }
            self.send(&buf)?;
        }
        Ok(())
    }
}

impl AsRawFd for Queue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_message_is_laid_out_as_the_kernel_reads_it() {
        let hdr = [0, 0, 0, 1, 0, 0, 0, 42];
        let m = message(NFQNL_MSG_VERDICT, 7, false, 0, &[(NFQA_VERDICT_HDR, &hdr)]);
        assert_eq!(m.len(), 16 + 4 + 4 + 8);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 32);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), 0x0301);
        assert_eq!(&m[18..20], &7u16.to_be_bytes());
        assert_eq!(u16::from_ne_bytes(m[20..22].try_into().unwrap()), 12);
    }

    #[test]
    fn packet_ids_come_from_the_packet_header_attribute() {
        // A packet message: nfgenmsg, then NFQA_PACKET_HDR {id 5, hw proto, hook} and another attribute.
        let phdr = [0, 0, 0, 5, 8, 0, 4];
        let mut m = message(
            NFQNL_MSG_PACKET,
            1,
            false,
            0,
            &[(NFQA_PACKET_HDR, &phdr), (9, &[1, 2, 3, 4])],
        );
        let second = message(
            NFQNL_MSG_PACKET,
            1,
            false,
            0,
            &[(NFQA_PACKET_HDR, &[0, 1, 0, 0, 8, 0, 4])],
        );
        m.extend(second);
        let mut ids = Vec::new();
        parse_packets(&m, &mut ids).unwrap();
        assert_eq!(ids, vec![5, 65536]);
    }
}
