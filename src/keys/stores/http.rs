//! What the secret-store clients share: an HTTPS client (rustls, the system's roots plus an
//! optional CA file), bodies read into memory that is wiped, typed errors that never quote a
//! secret, and bounded retries for a store that cannot be reached.

use std::path::Path;
use std::time::Duration;

use zeroize::Zeroizing;

/// Why a store did not give a key. Messages name the store, never a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or did not answer in time: worth retrying.
    #[error("{0}")]
    Unreachable(String),
    /// The store answered with an error (not found, denied, bad credentials).
    #[error("{0}")]
    Refused(String),
    /// The answer was not what the store's API documents.
    #[error("{0}")]
    Protocol(String),
    /// The definition or the environment is incomplete or wrong.
    #[error("{0}")]
    Config(String),
}

impl StoreError {
    pub fn retryable(&self) -> bool {
        matches!(self, StoreError::Unreachable(_))
    }
}

/// Options for one store's client.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Whole-request timeout.
    pub timeout: Option<Duration>,
    /// Trust this CA (PEM) as well as the system's.
    pub ca_file: Option<std::path::PathBuf>,
}

/// A shared client for these options: building one loads the system's certificates, which a
/// load of thousands of definitions must not do thousands of times.
pub fn client(opts: &ClientOptions) -> Result<reqwest::Client, StoreError> {
    type Cache =
        std::sync::Mutex<std::collections::HashMap<(Option<Duration>, Option<std::path::PathBuf>), reqwest::Client>>;
    static CLIENTS: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let key = (opts.timeout, opts.ca_file.clone());
    let cache = CLIENTS.get_or_init(Default::default);
    if let Some(c) = cache.lock().expect("client cache").get(&key) {
        return Ok(c.clone());
    }
    let c = new_client(opts)?;
    cache.lock().expect("client cache").insert(key, c.clone());
    Ok(c)
}

/// An HTTPS client; TLS through rustls (ring), as the server's.
fn new_client(opts: &ClientOptions) -> Result<reqwest::Client, StoreError> {
    // No redirects: a store's answer elsewhere would carry its token (X-Vault-Token, the AWS
    // session token) to another host, maybe over plain HTTP.
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(opts.timeout.unwrap_or(Duration::from_secs(10)))
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("palisade/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &opts.ca_file {
        b = b.add_root_certificate(read_ca(ca)?);
    }
    b.build()
        .map_err(|e| StoreError::Config(format!("cannot build an HTTPS client: {e}")))
}

fn read_ca(path: &Path) -> Result<reqwest::Certificate, StoreError> {
    let pem = std::fs::read(path).map_err(|e| StoreError::Config(format!("CA file {}: {e}", path.display())))?;
    reqwest::Certificate::from_pem(&pem)
        .map_err(|e| StoreError::Config(format!("CA file {}: not a PEM certificate: {e}", path.display())))
}

/// Sends `req`; the body of a 2xx answer, in memory that is wiped when dropped. `what` names
/// the store in errors.
pub async fn send(what: &str, req: reqwest::RequestBuilder) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let (status, body) = exchange(what, req).await?;
    if !status.is_success() {
        return Err(StoreError::Refused(format!(
            "{what} answered {status}: {}",
            short(&body)
        )));
    }
    Ok(body)
}

/// Sends `req`; the status and the body whatever the status.
pub async fn exchange(
    what: &str,
    req: reqwest::RequestBuilder,
) -> Result<(reqwest::StatusCode, Zeroizing<Vec<u8>>), StoreError> {
    let resp = req.send().await.map_err(|e| transport(what, e))?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| transport(what, e))?;
    Ok((status, Zeroizing::new(Vec::from(bytes))))
}

fn transport(what: &str, e: reqwest::Error) -> StoreError {
    // reqwest's message names the URL, never a header or a body.
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut msg = format!("{what}: {kind}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    StoreError::Unreachable(msg)
}

/// An error body for a message: short, printable, and only ever an error answer (a 2xx body
/// may hold a key and is never quoted).
pub fn short(body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    text.trim().to_string()
}

/// Attempts and the pause before each retry: a store that is down at startup is tried for a
/// few seconds, then reported.
pub const RETRY_PAUSES: [Duration; 3] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// Runs `op` until it succeeds, fails for a reason retrying cannot fix, or the retries run
/// out.
pub async fn with_retries<T, F, Fut>(mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut pauses = RETRY_PAUSES.iter();
    loop {
        match op().await {
            Err(e) if e.retryable() => match pauses.next() {
                Some(p) => tokio::time::sleep(*p).await,
                None => {
                    return Err(StoreError::Unreachable(format!(
                        "{e} (tried {} times)",
                        RETRY_PAUSES.len() + 1
                    )));
                }
            },
            other => return other,
        }
    }
}

/// The current UTC time as `YYYYMMDDTHHMMSSZ` (AWS's `x-amz-date`).
pub fn amz_date(now: std::time::SystemTime) -> String {
    let secs = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates() {
        let at = |s: u64| amz_date(std::time::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "19700101T000000Z");
        // The AWS test suite's timestamp, 2015-08-30T12:36:00Z.
        assert_eq!(at(1_440_938_160), "20150830T123600Z");
        // A leap day, and the last second of a year.
        assert_eq!(at(1_709_164_800), "20240229T000000Z");
        assert_eq!(at(1_798_761_599), "20261231T235959Z");
    }

    #[tokio::test]
    async fn retries_only_what_can_recover() {
        let mut n = 0;
        let r: Result<(), _> = with_retries(|| {
            n += 1;
            async { Err(StoreError::Refused("no".into())) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(n, 1, "a refusal is not retried");
        let mut n = 0;
        let r = with_retries(|| {
            n += 1;
            let ok = n == 2;
            async move {
                if ok {
                    Ok(7)
                } else {
                    Err(StoreError::Unreachable("down".into()))
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 7);
    }

    #[test]
    fn known_servers_files() {
        let fp = "7C:B3:".to_string() + &"AB:".repeat(29) + "CD";
        let servers = parse_known_servers(&format!(
            "# Vault\nlocalhost:8200 {fp}\n\n[::1]:8200 {}\n",
            "00".repeat(32)
        ))
        .unwrap();
        assert_eq!(servers.len(), 2);
        assert_eq!((servers[0].host.as_str(), servers[0].port), ("localhost", Some(8200)));
        assert_eq!(servers[0].fingerprint[0], 0x7c);
        assert_eq!((servers[1].host.as_str(), servers[1].port), ("::1", Some(8200)));
        assert!(
            parse_known_servers("localhost:8200 7C:B3")
                .unwrap_err()
                .contains("line 1")
        );
        assert!(parse_known_servers("").is_err());
    }

    #[test]
    fn error_bodies_are_short_and_printable() {
        assert_eq!(
            short(b"{\"errors\":[\"permission denied\"]}\n"),
            "{\"errors\":[\"permission denied\"]}"
        );
        assert_eq!(short(&[b'a'; 1000]).len(), 300);
    }
}

/// Web3Signer's `tlsKnownServersPath`: a server is trusted when its certificate's SHA-256
/// fingerprint is listed for its host and port (lines `host:port AA:BB:...`), whoever signed
/// it.
#[derive(Debug)]
struct KnownServers {
    /// The fingerprints listed for the host and port this client connects to.
    fingerprints: Vec<[u8; 32]>,
    host: String,
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
}

/// One line of a known-servers file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownServer {
    pub host: String,
    pub port: Option<u16>,
    pub fingerprint: [u8; 32],
}

/// The entries of a known-servers file.
pub fn parse_known_servers(text: &str) -> Result<Vec<KnownServer>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(host_port), Some(fp), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("line {}: expected `host:port fingerprint`", i + 1));
        };
        let (host, port) = match host_port.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') && p.parse::<u16>().is_ok() => (h, p.parse().ok()),
            _ => (host_port, None),
        };
        let hex_fp: String = fp.chars().filter(|c| *c != ':').collect();
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&hex_fp, &mut bytes)
            .map_err(|_| format!("line {}: the fingerprint must be a SHA-256 (32 bytes of hex)", i + 1))?;
        out.push(KnownServer {
            host: host.trim_matches(['[', ']']).to_ascii_lowercase(),
            port,
            fingerprint: bytes,
        });
    }
    if out.is_empty() {
        return Err("no server listed".into());
    }
    Ok(out)
}

impl rustls::client::danger::ServerCertVerifier for KnownServers {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use sha2::Digest;
        let fingerprint: [u8; 32] = sha2::Sha256::digest(end_entity.as_ref()).into();
        let host = server_name.to_str().to_ascii_lowercase();
        if host == self.host && self.fingerprints.contains(&fingerprint) {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the certificate of {host} (SHA-256 {}) is not in tlsKnownServersPath",
                hex::encode(fingerprint)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A client for `host:port` that trusts exactly the certificates listed for it in `file`
/// (Web3Signer's `tlsKnownServersPath`).
pub fn pinned_client(file: &Path, host: &str, port: u16, timeout: Duration) -> Result<reqwest::Client, StoreError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| StoreError::Config(format!("tlsKnownServersPath {}: {e}", file.display())))?;
    let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
    let fingerprints: Vec<[u8; 32]> = parse_known_servers(&text)
        .map_err(|e| StoreError::Config(format!("tlsKnownServersPath {}: {e}", file.display())))?
        .into_iter()
        .filter(|k| k.host == host && k.port.is_none_or(|p| p == port))
        .map(|k| k.fingerprint)
        .collect();
    if fingerprints.is_empty() {
        return Err(StoreError::Config(format!(
            "tlsKnownServersPath {}: lists no certificate for {host}:{port}",
            file.display()
        )));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Config(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(KnownServers {
            fingerprints,
            host,
            provider,
        }))
        .with_no_client_auth();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .use_preconfigured_tls(config)
        .build()
        .map_err(|e| StoreError::Config(format!("cannot build an HTTPS client: {e}")))
}
