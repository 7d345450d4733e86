//! AWS credentials: given in the definition (`authenticationMode: SPECIFIED`), or found the way
//! the AWS SDKs find them (`ENVIRONMENT`): environment variables, the shared credentials file
//! and profile, a container's credentials endpoint, then the EC2 instance metadata service
//! (IMDSv2). Web identity (STS) is not supported: it needs an STS call of its own.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

use super::super::http::StoreError;

#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Zeroizing<String>,
    pub session_token: Option<Zeroizing<String>>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.access_key_id)
    }
}

/// How the credentials are found.
#[derive(Clone, Debug)]
pub enum CredentialSource {
    Specified(Credentials),
    /// The SDKs' default chain.
    Environment,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// How long credentials found by the default chain are reused: instance and container
/// credentials are rotated well before they expire (at least 15 minutes), and a load of
/// thousands of secrets must not ask the metadata service thousands of times.
const CHAIN_CACHE: Duration = Duration::from_secs(300);

impl CredentialSource {
    /// The credentials to sign with now.
    pub async fn resolve(&self, http: &reqwest::Client) -> Result<Credentials, StoreError> {
        static CACHE: std::sync::Mutex<Option<(Credentials, std::time::Instant)>> = std::sync::Mutex::new(None);
        match self {
            CredentialSource::Specified(c) => Ok(c.clone()),
            CredentialSource::Environment => {
                if let Some((c, at)) = CACHE.lock().expect("credentials cache").as_ref()
                    && at.elapsed() < CHAIN_CACHE
                {
                    return Ok(c.clone());
                }
                let c = Self::chain(http).await?;
                *CACHE.lock().expect("credentials cache") = Some((c.clone(), std::time::Instant::now()));
                Ok(c)
            }
        }
    }

    /// The default chain, in the SDKs' order.
    async fn chain(http: &reqwest::Client) -> Result<Credentials, StoreError> {
        if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            return Ok(Credentials {
                access_key_id: id,
                secret_access_key: Zeroizing::new(secret),
                session_token: env("AWS_SESSION_TOKEN").map(Zeroizing::new),
            });
        }
        if let Some(c) = shared_file_credentials()? {
            return Ok(c);
        }
        if env("AWS_WEB_IDENTITY_TOKEN_FILE").is_some() {
            // Falling through to the instance's role would sign as the node, not as the
            // workload the operator configured.
            return Err(StoreError::Config(
                "AWS web identity credentials (AWS_WEB_IDENTITY_TOKEN_FILE, EKS IRSA) are not supported: \
                 use EKS Pod Identity or ECS task credentials, or access keys"
                    .into(),
            ));
        }
        if let Some(c) = container_credentials(http).await? {
            return Ok(c);
        }
        if env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Err(StoreError::Config(
                "no AWS credentials: none in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), \
                 the shared credentials file or a container endpoint, and instance metadata is disabled"
                    .into(),
            ));
        }
        instance_credentials(http).await
    }
}

fn home() -> Option<PathBuf> {
    env("HOME").map(PathBuf::from)
}

fn profile() -> String {
    env("AWS_PROFILE").unwrap_or_else(|| "default".into())
}

/// `[section]` -> key = value pairs of an AWS ini file.
fn ini_section(text: &str, section: &str) -> Option<Vec<(String, String)>> {
    let mut inside = false;
    let mut found = None::<Vec<(String, String)>>;
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
            if inside {
                found.get_or_insert_with(Vec::new);
            }
            continue;
        }
        if inside && let Some((k, v)) = line.split_once('=') {
            found
                .get_or_insert_with(Vec::new)
                .push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    found
}

/// `~/.aws/credentials` (or `AWS_SHARED_CREDENTIALS_FILE`), profile `AWS_PROFILE`.
fn shared_file_credentials() -> Result<Option<Credentials>, StoreError> {
    let Some(path) = env("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".aws/credentials")))
    else {
        return Ok(None);
    };
    let Ok(text) = std::fs::read_to_string(&path).map(Zeroizing::new) else {
        return Ok(None);
    };
    let profile = profile();
    let Some(pairs) = ini_section(&text, &profile) else {
        return Ok(None);
    };
    let get = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(id), Some(secret)) => Ok(Some(Credentials {
            access_key_id: id,
            secret_access_key: Zeroizing::new(secret),
            session_token: get("aws_session_token").map(Zeroizing::new),
        })),
        _ => Err(StoreError::Config(format!(
            "{}: profile [{profile}] lacks aws_access_key_id or aws_secret_access_key",
            path.display()
        ))),
    }
}

/// The region when a definition names none: `AWS_REGION`, `AWS_DEFAULT_REGION`, then the
/// profile's `region` in `~/.aws/config` (or `AWS_CONFIG_FILE`).
pub fn default_region() -> Option<String> {
    if let Some(r) = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")) {
        return Some(r);
    }
    let path = env("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".aws/config")))?;
    let text = std::fs::read_to_string(path).ok()?;
    let profile = profile();
    let section = if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    };
    ini_section(&text, &section)?
        .into_iter()
        .find(|(k, _)| k == "region")
        .map(|(_, v)| v)
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EndpointCredentials {
    access_key_id: String,
    secret_access_key: Zeroizing<String>,
    #[serde(default)]
    token: Option<Zeroizing<String>>,
}

impl From<EndpointCredentials> for Credentials {
    fn from(c: EndpointCredentials) -> Self {
        Credentials {
            access_key_id: c.access_key_id,
            secret_access_key: c.secret_access_key,
            session_token: c.token,
        }
    }
}

const METADATA_TIMEOUT: Duration = Duration::from_secs(2);

/// ECS and EKS Pod Identity: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` or `_FULL_URI`, with an
/// optional `Authorization` header from `AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE)`.
async fn container_credentials(http: &reqwest::Client) -> Result<Option<Credentials>, StoreError> {
    let url = match (
        env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
        env("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
    ) {
        (Some(rel), _) => format!("http://169.254.170.2{rel}"),
        (None, Some(full)) => full,
        (None, None) => return Ok(None),
    };
    let mut req = http.get(&url).timeout(METADATA_TIMEOUT);
    let token = match env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
        Some(f) => Some(
            std::fs::read_to_string(&f)
                .map_err(|e| StoreError::Config(format!("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {f}: {e}")))?
                .trim()
                .to_string(),
        ),
        None => env("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
    };
    if let Some(t) = token {
        req = req.header("Authorization", t);
    }
    let body = super::super::http::send("AWS container credentials endpoint", req).await?;
    let c: EndpointCredentials = serde_json::from_slice(&body)
        .map_err(|e| StoreError::Protocol(format!("AWS container credentials endpoint: {e}")))?;
    Ok(Some(c.into()))
}

/// IMDSv2: a session token, the role name, then the role's credentials.
async fn instance_credentials(http: &reqwest::Client) -> Result<Credentials, StoreError> {
    let base = env("AWS_EC2_METADATA_SERVICE_ENDPOINT").unwrap_or_else(|| "http://169.254.169.254".into());
    let base = base.trim_end_matches('/');
    let what = "EC2 instance metadata service";
    let token = super::super::http::send(
        what,
        http.put(format!("{base}/latest/api/token"))
            .header("x-aws-ec2-metadata-token-ttl-seconds", "300")
            .timeout(METADATA_TIMEOUT),
    )
    .await?;
    let token = Zeroizing::new(String::from_utf8_lossy(&token).trim().to_string());
    let roles = super::super::http::send(
        what,
        http.get(format!("{base}/latest/meta-data/iam/security-credentials/"))
            .header("x-aws-ec2-metadata-token", token.as_str())
            .timeout(METADATA_TIMEOUT),
    )
    .await?;
    let role = String::from_utf8_lossy(&roles)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    if role.is_empty() {
        return Err(StoreError::Config(format!(
            "{what}: no IAM role attached to this instance"
        )));
    }
    let body = super::super::http::send(
        what,
        http.get(format!("{base}/latest/meta-data/iam/security-credentials/{role}"))
            .header("x-aws-ec2-metadata-token", token.as_str())
            .timeout(METADATA_TIMEOUT),
    )
    .await?;
    let c: EndpointCredentials =
        serde_json::from_slice(&body).map_err(|e| StoreError::Protocol(format!("{what}: {e}")))?;
    Ok(c.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_profiles() {
        let text =
            "[default]\naws_access_key_id = A\naws_secret_access_key=B\n\n[other]\n# note\naws_access_key_id=C\n";
        let d = ini_section(text, "default").unwrap();
        assert_eq!(
            d,
            vec![
                ("aws_access_key_id".into(), "A".into()),
                ("aws_secret_access_key".into(), "B".into())
            ]
        );
        assert_eq!(ini_section(text, "other").unwrap().len(), 1);
        assert!(ini_section(text, "missing").is_none());
    }

    #[test]
    fn debug_hides_the_secret() {
        let c = Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: Zeroizing::new("very-secret".into()),
            session_token: Some(Zeroizing::new("token-secret".into())),
        };
        let d = format!("{c:?} {:?}", CredentialSource::Specified(c.clone()));
        assert!(!d.contains("very-secret") && !d.contains("token-secret"), "{d}");
    }
}
