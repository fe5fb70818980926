//! The network faults' mechanisms, measured on this machine's kernel between two network namespaces of the test's
//! own (a veth pair; nothing of the stack is touched): a loss rule drops about the share of packets it says, and
//! deleting faultline's table gives every packet back. Needs root.

mod common;

use std::process::{Command, Stdio};

use faultline::targets::local::netns;

/// Two namespaces joined by a veth pair (10.250.<n>.1 and .2), removed when dropped.
struct Pair {
    a: String,
    b: String,
    b_addr: String,
}

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Pair {
    /// `tag` (0-9) keeps the pairs of tests running at once apart.
    fn new(tag: u32) -> Pair {
        let id = std::process::id() % 20 * 10 + 10 + tag;
        let (a, b) = (format!("fltest-a{id}"), format!("fltest-b{id}"));
        let (a_addr, b_addr) = (format!("10.250.{id}.1"), format!("10.250.{id}.2"));
        let (va, vb) = (format!("flva{id}"), format!("flvb{id}"));
        ip(&["netns", "add", &a]);
        ip(&["netns", "add", &b]);
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
        ip(&["link", "set", &va, "netns", &a]);
        ip(&["link", "set", &vb, "netns", &b]);
        // Named as in the stack's nodes, where faultline's shaping goes.
        ip(&["-n", &a, "link", "set", &va, "name", "eth0"]);
        ip(&["-n", &b, "link", "set", &vb, "name", "eth0"]);
        let dev = "eth0".to_string();
        for (ns, dev, addr) in [(&a, &dev, &a_addr), (&b, &dev, &b_addr)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        Pair { a, b, b_addr }
    }

    /// Sends `n` UDP datagrams from A to B; returns how many B received. A datagram the sender's own output hook
    /// drops fails its send with EPERM, which the sender ignores (it counts as lost, as on a lossy link).
    fn datagrams_through(&self, n: u32) -> u32 {
        let receiver = Command::new("ip")
            .args(["netns", "exec", &self.b, "python3", "-c"])
            .arg(format!(
                "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('{}',9999))\n\
                 s.settimeout(1.0)\nprint('ready',flush=True)\nc=0\n\
                 while True:\n  try:\n    s.recv(64); c+=1\n  except socket.timeout:\n    break\nprint(c)",
                self.b_addr
            ))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // The receiver binds before it prints; give it the moment.
        std::thread::sleep(std::time::Duration::from_millis(500));
        let send = Command::new("ip")
            .args(["netns", "exec", &self.a, "python3", "-c"])
            .arg(format!(
                "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
                 for i in range({n}):\n  try:\n    s.sendto(b'x',('{}',9999))\n  except PermissionError:\n    pass\n  \
                 time.sleep(0.0002)",
                self.b_addr
            ))
            .output()
            .unwrap();
        assert!(
            send.status.success(),
            "{}",
            String::from_utf8_lossy(&send.stderr)
        );
        let out = receiver.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().last().unwrap().trim().parse().unwrap()
    }
}

impl Pair {
    /// Streams TCP from A to B; returns the rate B received at over `secs` seconds (timed at the receiver, so
    /// what sits in the sender's socket buffer does not count), in kbit/s.
    fn tcp_kbit_per_s(&self, secs: f64) -> f64 {
        let receiver = Command::new("ip")
            .args(["netns", "exec", &self.b, "python3", "-c"])
            .arg(format!(
                "import socket,time\nl=socket.socket()\nl.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
                 l.bind(('{}',9998))\nl.listen(1)\nc,_=l.accept()\nc.settimeout(0.5)\nn=0\n\
                 c.recv(65536)\nstart=time.time()\n\
                 while time.time()-start<{secs}:\n  try:\n    n+=len(c.recv(65536))\n  except socket.timeout:\n    pass\n\
                 print(n*8/1000/(time.time()-start))\nc.close()",
                self.b_addr
            ))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
        let send = Command::new("ip")
            .args(["netns", "exec", &self.a, "python3", "-c"])
            .arg(format!(
                "import socket,time\ns=socket.create_connection(('{}',9998))\nb=b'x'*16384\n\
                 end=time.time()+{secs}+1\n\
                 try:\n  while time.time()<end:\n    s.send(b)\nexcept OSError:\n  pass",
                self.b_addr
            ))
            .output()
            .unwrap();
        assert!(
            send.status.success(),
            "{}",
            String::from_utf8_lossy(&send.stderr)
        );
        let out = receiver.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
fn a_loss_rule_drops_about_its_share_and_deleting_the_table_gives_every_packet_back() {
    needs_root!();
    let pair = Pair::new(1);
    const N: u32 = 2000;
    let before = pair.datagrams_through(N);
    assert!(before >= N - 5, "without a rule {before} of {N} arrived");

    let b: std::net::Ipv4Addr = pair.b_addr.parse().unwrap();
    netns::add_drop_rules(&pair.a, &[b], &[], 30).unwrap();
    let lossy = pair.datagrams_through(N);
    let dropped = f64::from(N - lossy) / f64::from(N) * 100.0;
    eprintln!("loss 30 % asked: {dropped:.1} % of {N} datagrams dropped");
    // 2000 draws at 30 %: the standard deviation is about 1 point; 5 points is far outside chance.
    assert!(
        (25.0..35.0).contains(&dropped),
        "asked for 30 % loss, {dropped:.1} % dropped ({lossy} of {N} arrived)"
    );

    assert!(
        netns::delete_rules(&pair.a).unwrap(),
        "faultline's table was there"
    );
    let after = pair.datagrams_through(N);
    assert!(after >= N - 5, "after the revert {after} of {N} arrived");
}

#[test]
fn a_bandwidth_limit_holds_the_stream_near_its_rate_and_deleting_it_lifts_it() {
    needs_root!();
    let pair = Pair::new(2);
    let free = pair.tcp_kbit_per_s(2.0);
    let b: std::net::Ipv4Addr = pair.b_addr.parse().unwrap();
    netns::shape_egress(&pair.a, &[b], 2000).unwrap();
    assert!(netns::has_shaping(&pair.a));
    let limited = pair.tcp_kbit_per_s(3.0);
    eprintln!(
        "bandwidth 2000 kbit/s asked: {limited:.0} kbit/s measured (unlimited: {free:.0} kbit/s)"
    );
    // Timed at the receiver: within 10 % of the limit (measured here: 2059 kbit/s), far from the unlimited rate.
    assert!(
        (1800.0..2200.0).contains(&limited),
        "asked for 2000 kbit/s, measured {limited:.0} kbit/s (unlimited {free:.0})"
    );
    assert!(
        free > 20.0 * 2000.0,
        "the unlimited link carried only {free:.0} kbit/s"
    );
    assert!(netns::delete_shaping(&pair.a).unwrap());
    assert!(!netns::has_shaping(&pair.a));
    let after = pair.tcp_kbit_per_s(2.0);
    assert!(
        after > 20.0 * 2000.0,
        "after the revert only {after:.0} kbit/s"
    );
}
