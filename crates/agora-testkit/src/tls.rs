//! A private PKI for TLS tests, generated in-process with `rcgen`: a CA, a server certificate for 127.0.0.1 /
//! localhost / ::1, and a client certificate, all written as PEM files into a scratch directory.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

use crate::scratch_file;

/// PEM files of one private PKI.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The CA certificate (trust anchor for both sides).
    pub ca: PathBuf,
    /// The server certificate (SAN: 127.0.0.1, ::1, localhost).
    pub server_cert: PathBuf,
    /// The server key.
    pub server_key: PathBuf,
    /// A client certificate signed by the same CA.
    pub client_cert: PathBuf,
    /// The client key.
    pub client_key: PathBuf,
}

impl Pki {
    /// Generates a fresh CA and the two leaf certificates.
    pub fn generate() -> Self {
        let ca_key = KeyPair::generate().expect("generate CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "agora test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |names: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().expect("generate leaf key");
            let mut params = CertificateParams::new(names).expect("leaf params");
            params.distinguished_name.push(DnType::CommonName, cn);
            params.use_authority_key_identifier_extension = true;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &issuer).expect("sign leaf");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            vec!["127.0.0.1".into(), "::1".into(), "localhost".into()],
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            vec!["agora-node".into()],
            "agora-node",
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        Pki {
            ca: scratch_file("ca.pem", &ca_cert.pem()),
            server_cert: scratch_file("server-cert.pem", &server_cert),
            server_key: scratch_file("server-key.pem", &server_key),
            client_cert: scratch_file("client-cert.pem", &client_cert),
            client_key: scratch_file("client-key.pem", &client_key),
        }
    }

    /// nats-server arguments for TLS with this PKI; `verify_clients` adds `--tlsverify` (client certificates
    /// required, checked against the CA).
    pub fn server_args(&self, verify_clients: bool) -> Vec<String> {
        let mut args = vec![
            if verify_clients { "--tlsverify" } else { "--tls" }.to_string(),
            "--tlscert".into(),
            self.server_cert.to_string_lossy().into_owned(),
            "--tlskey".into(),
            self.server_key.to_string_lossy().into_owned(),
        ];
        if verify_clients {
            args.push("--tlscacert".into());
            args.push(self.ca.to_string_lossy().into_owned());
        }
        args
    }
}
