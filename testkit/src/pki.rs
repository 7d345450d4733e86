//! A throwaway PKI for TLS tests: a CA, a server certificate for 127.0.0.1, a client
//! certificate from the CA and a self-signed one, as private PEM files.

use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

pub struct Pki {
    dir: tempfile::TempDir,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    /// A CA, a server certificate for 127.0.0.1, a client certificate from the CA (CN=vc-1)
    /// and one that is self-signed (CN=intruder).
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        // Private keys private (Palisade refuses a key file other users can read).
        let write = |name: &str, text: String| {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Palisade test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        write("ca.pem", ca_cert.pem());
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&server_key, &issuer)
            .unwrap();
        write("server.pem", server.pem());
        write("server.key", server_key.serialize_pem());

        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        client_params.distinguished_name.push(DnType::CommonName, "vc-1");
        let client = client_params.signed_by(&client_key, &issuer).unwrap();
        write("client.pem", format!("{}{}", client.pem(), client_key.serialize_pem()));
        write("client.crt", client.pem());
        write("client.key", client_key.serialize_pem());

        let rogue_key = KeyPair::generate().unwrap();
        let mut rogue_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        rogue_params.distinguished_name.push(DnType::CommonName, "intruder");
        let rogue = rogue_params.self_signed(&rogue_key).unwrap();
        write("rogue.pem", format!("{}{}", rogue.pem(), rogue_key.serialize_pem()));
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    pub fn client(&self, identity: Option<&str>) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(self.path("ca.pem")).unwrap()).unwrap();
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(10));
        if let Some(name) = identity {
            b = b.identity(reqwest::Identity::from_pem(&std::fs::read(self.path(name)).unwrap()).unwrap());
        }
        b.build().unwrap()
    }
}
