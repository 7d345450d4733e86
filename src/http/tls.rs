//! TLS for the HTTP API (rustls): a server certificate, and optionally client certificates
//! checked against a CA, so that only known validator clients can ask for signatures.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Clone, Debug)]
pub struct TlsOptions {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, every client must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

fn certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{what} {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {}: no PEM certificate in the file", path.display()));
    }
    Ok(certs)
}

/// Builds the server configuration; errors name the file.
pub fn server_config(opts: &TlsOptions) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(&opts.cert, "--tls-cert-file")?;
    // A private file of ours only; its parse errors never quote key material.
    let pem = crate::fsutil::read_access_file(&opts.key, "--tls-key-file").map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| format!("--tls-key-file {}: {e}", opts.key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &opts.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca, "--tls-client-ca-file")? {
                roots
                    .add(c)
                    .map_err(|e| format!("--tls-client-ca-file {}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("--tls-client-ca-file {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("--tls-cert-file/--tls-key-file: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client's certificate: its subject and issuer as written in it, and the SHA-256 of
/// the certificate, which names it without ambiguity.
pub fn client_certificate(conn: &rustls::ServerConnection) -> Option<crate::http::client::Certificate> {
    use sha2::Digest;
    let cert = conn.peer_certificates()?.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(crate::http::client::Certificate {
        subject: parsed.subject().to_string(),
        issuer: parsed.issuer().to_string(),
        fingerprint: hex::encode(sha2::Sha256::digest(cert.as_ref())),
    })
}
