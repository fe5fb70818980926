//! The TLS material pgBackRest's repository host and its PostgreSQL hosts authenticate each other with: one CA made
//! for the stack, a server certificate per node and one client certificate. pgBackRest checks the address it dials
//! against the certificate's common name or a DNS-type subjectAltName (an IP-type SAN is rejected, HA-FACTS), so
//! a node's certificate carries its address in both.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The common name of the client certificate; the servers authorise it for the stanza (`tls-server-auth`).
pub const CLIENT_CN: &str = "faultline";

/// PEM text of one certificate and its private key.
#[derive(Clone, Debug)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// The stack's CA certificate, one server identity per node address, and the client identity.
pub struct Pki {
    pub ca_cert: String,
    pub servers: Vec<(String, Pem)>,
    pub client: Pem,
}

/// Generates the CA and every certificate. The CA's key is not kept: nothing is signed after `up`.
pub fn generate(server_names: &[String]) -> Result<Pki, rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "faultline stack CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |cn: &str| -> Result<Pem, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, cn);
        // A DNS-type name even for an address: that is the form pgBackRest matches.
        p.subject_alt_names = vec![SanType::DnsName(cn.to_string().try_into()?)];
        let cert = p.signed_by(&key, &issuer)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    };
    let mut servers = Vec::new();
    for name in server_names {
        servers.push((name.clone(), leaf(name)?));
    }
    Ok(Pki {
        ca_cert: ca_cert.pem(),
        servers,
        client: leaf(CLIENT_CN)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_gets_its_own_certificate_signed_by_one_ca() {
        let pki = generate(&["10.201.0.11".into(), "10.201.0.13".into()]).unwrap();
        assert!(pki.ca_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(pki.servers.len(), 2);
        assert_eq!(pki.servers[1].0, "10.201.0.13");
        assert_ne!(pki.servers[0].1.key, pki.servers[1].1.key);
        assert!(pki.client.key.contains("PRIVATE KEY"));
    }
}
