//! Web3Signer-style YAML key definitions (`--key-config-path`): one or more YAML documents
//! per file, each one key source, with Web3Signer's field names so that its files work as
//! they are:
//! - `file-keystore` (`keystoreFile`, `keystorePasswordFile`; relative to the YAML file);
//! - `file-raw` (`privateKey`);
//! - `aws-secret` (`authenticationMode` SPECIFIED or ENVIRONMENT, `accessKeyId`,
//!   `secretAccessKey`, `region`, `secretName`, `endpointOverride`);
//! - `hashicorp` (`serverHost`, `serverPort`, `timeout` in ms, `tlsEnabled`,
//!   `tlsKnownServersPath`, `keyPath`, `keyName`, `token`; and Palisade's `tlsCaFile`);
//! - `azure-secret` (`vaultName`, `secretName`, `clientId`, `clientSecret`, `tenantId`,
//!   `timeout` in s; and Palisade's `vaultUrl` for a private endpoint or another cloud).
//!
//! Numbers and booleans may be written as strings (`serverPort: "8200"`), as Web3Signer
//! accepts. Palisade's own optional fields `allowedSigningTypes` and `deniedSigningTypes`
//! narrow the signer's policy for that key. Any error rejects the whole file.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::signing::policy::TypeSet;

/// A YAML scalar that may be written as a number, a boolean or a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Bool(bool),
    Num(u64),
    Str(String),
}

impl Scalar {
    fn number(&self, field: &str) -> Result<u64, String> {
        match self {
            Scalar::Num(n) => Ok(*n),
            Scalar::Str(s) => s.trim().parse().map_err(|_| format!("`{field}` must be a number")),
            Scalar::Bool(_) => Err(format!("`{field}` must be a number")),
        }
    }

    fn boolean(&self, field: &str) -> Result<bool, String> {
        match self {
            Scalar::Bool(b) => Ok(*b),
            Scalar::Str(s) if s.eq_ignore_ascii_case("true") => Ok(true),
            Scalar::Str(s) if s.eq_ignore_ascii_case("false") => Ok(false),
            _ => Err(format!("`{field}` must be true or false")),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDefinition {
    #[serde(rename = "type")]
    kind: Option<String>,
    key_type: Option<String>,
    // file-keystore, file-raw
    keystore_file: Option<String>,
    keystore_password_file: Option<String>,
    private_key: Option<Zeroizing<String>>,
    // aws-secret
    authentication_mode: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<Zeroizing<String>>,
    region: Option<String>,
    secret_name: Option<String>,
    endpoint_override: Option<String>,
    // hashicorp
    server_host: Option<String>,
    server_port: Option<Scalar>,
    timeout: Option<Scalar>,
    tls_enabled: Option<Scalar>,
    tls_known_servers_path: Option<String>,
    tls_ca_file: Option<String>,
    key_path: Option<String>,
    key_name: Option<String>,
    token: Option<Zeroizing<String>>,
    auth_method: Option<String>,
    // azure-secret
    vault_name: Option<String>,
    vault_url: Option<String>,
    client_id: Option<String>,
    client_secret: Option<Zeroizing<String>>,
    tenant_id: Option<String>,
    // threshold (a coordinator's view of a t-of-n group)
    group_file: Option<String>,
    nodes: Option<Vec<String>>,
    tls_client_cert_file: Option<String>,
    tls_client_key_file: Option<String>,
    // Palisade's signing policy per key
    allowed_signing_types: Option<Vec<String>>,
    denied_signing_types: Option<Vec<String>>,
}

/// One YAML document: the key, and the signing types it is limited to, if any.
#[derive(Debug)]
pub struct Definition {
    pub key: KeyDefinition,
    pub signing_types: Option<TypeSet>,
}

pub enum KeyDefinition {
    Keystore {
        keystore: PathBuf,
        password: PathBuf,
    },
    Raw {
        private_key: Zeroizing<String>,
    },
    Aws(AwsSecret),
    Vault(VaultSecret),
    Azure(AzureSecret),
    /// A threshold group, signed for by its share nodes.
    Threshold(super::stores::threshold::GroupDefinition),
}

/// How an `aws-secret` definition authenticates.
pub enum AwsAuth {
    Specified {
        access_key_id: String,
        secret_access_key: Zeroizing<String>,
    },
    /// The AWS SDKs' default chain (environment, profile, container, instance).
    Environment,
}

pub struct AwsSecret {
    pub auth: AwsAuth,
    pub region: String,
    pub secret_name: String,
    pub endpoint_override: Option<String>,
}

pub struct VaultSecret {
    pub server_host: String,
    pub server_port: u16,
    pub timeout_ms: u64,
    pub tls_enabled: bool,
    /// Web3Signer's allow-list of server certificates (`host:port SHA-256-fingerprint`).
    pub tls_known_servers: Option<PathBuf>,
    /// A CA that signed the server's certificate (Palisade's field).
    pub tls_ca_file: Option<PathBuf>,
    pub key_path: String,
    pub key_name: String,
    pub token: Zeroizing<String>,
}

pub struct AzureSecret {
    pub vault_url: String,
    pub secret_name: String,
    pub client_id: String,
    pub client_secret: Zeroizing<String>,
    pub tenant_id: String,
    pub timeout_secs: u64,
}

impl KeyDefinition {
    /// What it is, for logs and health: never a secret.
    pub fn describe(&self) -> String {
        match self {
            KeyDefinition::Keystore { keystore, .. } => keystore.display().to_string(),
            KeyDefinition::Raw { .. } => "file-raw".into(),
            KeyDefinition::Aws(a) => format!("aws-secret {} ({})", a.secret_name, a.region),
            KeyDefinition::Vault(v) => format!("hashicorp {}:{}{}", v.server_host, v.server_port, v.key_path),
            KeyDefinition::Azure(a) => format!("azure-secret {} in {}", a.secret_name, a.vault_url),
            KeyDefinition::Threshold(g) => {
                format!("threshold group {} ({} nodes)", g.group_file.display(), g.nodes.len())
            }
        }
    }
}

impl std::fmt::Debug for KeyDefinition {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            KeyDefinition::Keystore { keystore, password } => f
                .debug_struct("Keystore")
                .field("keystore", keystore)
                .field("password", password)
                .finish(),
            KeyDefinition::Raw { .. } => f.write_str("Raw(<redacted>)"),
            other => write!(f, "{}", other.describe()),
        }
    }
}

/// Reads every definition in `file`. Errors name the file's document and field.
pub fn read_file(file: &Path) -> Result<Vec<Definition>, String> {
    let text = Zeroizing::new(std::fs::read_to_string(file).map_err(|e| format!("cannot read: {e}"))?);
    let base = file.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
        let n = i + 1;
        let raw = RawDefinition::deserialize(doc)
            .map_err(|e| format!("document {n}: {}", redact_yaml_error(&e.to_string())))?;
        let signing_types = match (&raw.allowed_signing_types, &raw.denied_signing_types) {
            (None, None) => None,
            (allow, deny) => Some(
                TypeSet::from_lists(
                    allow.as_deref().unwrap_or_default(),
                    deny.as_deref().unwrap_or_default(),
                )
                .map_err(|e| format!("document {n}: allowedSigningTypes/deniedSigningTypes: {e}"))?,
            ),
        };
        let key = definition(raw, base).map_err(|e| format!("document {n}: {e}"))?;
        out.push(Definition { key, signing_types });
    }
    if out.is_empty() {
        return Err("no key definition in the file".into());
    }
    Ok(out)
}

/// serde_yaml errors may quote the offending value; a secret must never reach a log. Where
/// one could, only the field and the place are kept.
fn redact_yaml_error(e: &str) -> String {
    const SECRET_FIELDS: [&str; 4] = ["privateKey", "secretAccessKey", "token", "clientSecret"];
    let place = e.find(" at line ").map_or("", |i| &e[i..]);
    match SECRET_FIELDS.iter().find(|f| e.contains(*f)) {
        Some(field) => format!("invalid value for `{field}`{place}"),
        None if e.len() > 200 => format!("invalid YAML key definition{place}"),
        None => e.to_string(),
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn required<T>(v: Option<T>, field: &str) -> Result<T, String> {
    v.ok_or_else(|| format!("missing field `{field}`"))
}

fn definition(raw: RawDefinition, base: &Path) -> Result<KeyDefinition, String> {
    if let Some(kt) = raw.key_type.as_deref()
        && !kt.eq_ignore_ascii_case("BLS")
    {
        return Err(format!("keyType `{kt}` is not supported (BLS only)"));
    }
    let resolve = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
    };
    match raw.kind.as_deref() {
        Some("file-keystore") => Ok(KeyDefinition::Keystore {
            keystore: resolve(&required(raw.keystore_file, "keystoreFile")?),
            password: resolve(&required(raw.keystore_password_file, "keystorePasswordFile")?),
        }),
        Some("threshold") => {
            let nodes = required(raw.nodes, "nodes")?;
            if let Some(n) = nodes.iter().find(|n| !n.starts_with("https://")) {
                return Err(format!(
                    "nodes: `{n}`: share nodes are spoken to over https (mutual TLS)"
                ));
            }
            Ok(KeyDefinition::Threshold(super::stores::threshold::GroupDefinition {
                group_file: resolve(&required(raw.group_file, "groupFile")?),
                nodes,
                client_cert: resolve(&required(raw.tls_client_cert_file, "tlsClientCertFile")?),
                client_key: resolve(&required(raw.tls_client_key_file, "tlsClientKeyFile")?),
                ca: resolve(&required(raw.tls_ca_file, "tlsCaFile")?),
                timeout: std::time::Duration::from_millis(
                    raw.timeout.as_ref().map_or(Ok(2_000), |t| t.number("timeout"))?,
                ),
            }))
        }
        Some("file-raw") => Ok(KeyDefinition::Raw {
            private_key: required(raw.private_key, "privateKey")?,
        }),
        Some("aws-secret") => {
            let auth = match raw.authentication_mode.as_deref().unwrap_or("SPECIFIED") {
                m if m.eq_ignore_ascii_case("SPECIFIED") => AwsAuth::Specified {
                    access_key_id: required(raw.access_key_id, "accessKeyId")?,
                    secret_access_key: required(raw.secret_access_key, "secretAccessKey")?,
                },
                m if m.eq_ignore_ascii_case("ENVIRONMENT") => AwsAuth::Environment,
                m => return Err(format!("authenticationMode `{m}`: SPECIFIED or ENVIRONMENT")),
            };
            Ok(KeyDefinition::Aws(AwsSecret {
                auth,
                region: required(raw.region, "region")?,
                secret_name: required(raw.secret_name, "secretName")?,
                endpoint_override: raw.endpoint_override,
            }))
        }
        Some("hashicorp") => vault(raw, &resolve),
        Some("azure-secret") => {
            if let Some(m) = raw
                .authentication_mode
                .as_deref()
                .filter(|m| !m.eq_ignore_ascii_case("CLIENT_SECRET"))
            {
                return Err(format!(
                    "authenticationMode `{m}` is not supported (CLIENT_SECRET only)"
                ));
            }
            let vault_url = match (raw.vault_url, raw.vault_name) {
                (Some(url), _) => url.trim_end_matches('/').to_string(),
                (None, Some(name)) => format!("https://{name}.vault.azure.net"),
                (None, None) => return Err("missing field `vaultName`".into()),
            };
            Ok(KeyDefinition::Azure(AzureSecret {
                vault_url,
                secret_name: required(raw.secret_name, "secretName")?,
                client_id: required(raw.client_id, "clientId")?,
                client_secret: required(raw.client_secret, "clientSecret")?,
                tenant_id: required(raw.tenant_id, "tenantId")?,
                timeout_secs: raw.timeout.as_ref().map_or(Ok(60), |t| t.number("timeout"))?,
            }))
        }
        Some(other) => Err(format!(
            "type `{other}` is not supported (file-keystore, file-raw, aws-secret, hashicorp or azure-secret)"
        )),
        None => Err("missing field `type`".into()),
    }
}

/// A `type: hashicorp` definition: a secret in HashiCorp Vault's KV store.
fn vault(raw: RawDefinition, resolve: &dyn Fn(&str) -> std::path::PathBuf) -> Result<KeyDefinition, String> {
    if let Some(m) = raw.auth_method.as_deref().filter(|m| !m.eq_ignore_ascii_case("TOKEN")) {
        return Err(format!("authMethod `{m}` is not supported (TOKEN only)"));
    }
    let port = match &raw.server_port {
        Some(p) => u16::try_from(p.number("serverPort")?).map_err(|_| "`serverPort` must be a port".to_string())?,
        None => 8200,
    };
    let tls_enabled = raw
        .tls_enabled
        .as_ref()
        .map_or(Ok(false), |t| t.boolean("tlsEnabled"))?;
    if !tls_enabled && (raw.tls_known_servers_path.is_some() || raw.tls_ca_file.is_some()) {
        return Err("tlsKnownServersPath and tlsCaFile need `tlsEnabled: true`".into());
    }
    if raw.tls_known_servers_path.is_some() && raw.tls_ca_file.is_some() {
        return Err("give tlsKnownServersPath (certificate fingerprints) or tlsCaFile (a CA), not both".into());
    }
    let server_host = required(raw.server_host, "serverHost")?;
    if !tls_enabled && !is_loopback(&server_host) {
        tracing::warn!(host = %server_host, "a Vault token will cross the network in clear text: set `tlsEnabled: true`");
    }
    Ok(KeyDefinition::Vault(VaultSecret {
        server_host,
        server_port: port,
        timeout_ms: raw.timeout.as_ref().map_or(Ok(10_000), |t| t.number("timeout"))?,
        tls_enabled: raw
            .tls_enabled
            .as_ref()
            .map_or(Ok(false), |t| t.boolean("tlsEnabled"))?,
        tls_known_servers: raw.tls_known_servers_path.as_deref().map(resolve),
        tls_ca_file: raw.tls_ca_file.as_deref().map(resolve),
        key_path: required(raw.key_path, "keyPath")?,
        key_name: raw.key_name.unwrap_or_else(|| "value".into()),
        token: required(raw.token, "token")?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_kinds_and_resolves_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("keys.yaml");
        std::fs::write(
            &f,
            "type: file-keystore\nkeyType: BLS\nkeystoreFile: ks/k.json\nkeystorePasswordFile: /abs/pw.txt\n---\ntype: file-raw\nprivateKey: '0x25295f0d1d592a90b333e26e85149708208e9f8e8bc18f6c77bd62f8ad7a6866'\n",
        )
        .unwrap();
        let defs = read_file(&f).unwrap();
        assert_eq!(defs.len(), 2);
        match &defs[0].key {
            KeyDefinition::Keystore { keystore, password } => {
                assert_eq!(keystore, &dir.path().join("ks/k.json"));
                assert_eq!(password, Path::new("/abs/pw.txt"));
            }
            _ => panic!("expected a keystore definition"),
        }
        assert!(matches!(&defs[1].key, KeyDefinition::Raw { .. }));
        assert!(defs.iter().all(|d| d.signing_types.is_none()));
    }

    #[test]
    fn errors_name_document_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bad.yaml");
        std::fs::write(&f, "type: file-raw\n---\ntype: hashicorp\n").unwrap();
        let e = read_file(&f).unwrap_err();
        assert!(e.contains("document 1") && e.contains("privateKey"), "{e}");
        std::fs::write(&f, "type: file-keystore\nkeystoreFile: a.json\n").unwrap();
        let e = read_file(&f).unwrap_err();
        assert!(e.contains("keystorePasswordFile"), "{e}");
        std::fs::write(&f, "type: file-raw\nkeyType: SECP256K1\nprivateKey: '0x00'\n").unwrap();
        assert!(read_file(&f).unwrap_err().contains("keyType"));
        std::fs::write(&f, "type: yubihsm\n").unwrap();
        assert!(read_file(&f).unwrap_err().contains("yubihsm"));
    }

    /// The shapes of Web3Signer's own documentation and acceptance tests
    /// (docs.web3signer.consensys.io, key configuration file parameters).
    #[test]
    fn web3signer_store_definitions() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("stores.yaml");
        std::fs::write(
            &f,
            r#"type: "hashicorp"
keyType: "BLS"
tlsEnabled: "true"
keyPath: "/v1/secret/data/secretPath"
keyName: "secretName"
tlsKnownServersPath: "knownhosts"
serverHost: "localhost"
serverPort: "32895"
timeout: "10000"
token: "s.MuZwBqZ0iE1HzvD64v3HMlhT"
---
type: "aws-secret"
authenticationMode: "SPECIFIED"
accessKeyId: "AKIAIOSFODNN7EXAMPLE"
secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
secretName: "validator-1"
region: "us-west-2"
---
type: aws-secret
authenticationMode: ENVIRONMENT
secretName: validator-2
region: eu-central-1
endpointOverride: http://127.0.0.1:4566
---
type: "azure-secret"
vaultName: "AzureKeyVault"
secretName: "SecretName"
clientId: "8f5e5e69-8a5d-4e8f-a1b9-7b9c4e5d6a7b"
clientSecret: "shhh"
tenantId: "1e5e5e69-8a5d-4e8f-a1b9-7b9c4e5d6a7c"
"#,
        )
        .unwrap();
        let defs = read_file(&f).unwrap();
        match &defs[0].key {
            KeyDefinition::Vault(v) => {
                assert_eq!(
                    (v.server_host.as_str(), v.server_port, v.timeout_ms),
                    ("localhost", 32895, 10_000)
                );
                assert!(v.tls_enabled);
                assert_eq!(
                    v.tls_known_servers.as_deref(),
                    Some(dir.path().join("knownhosts").as_path())
                );
                assert_eq!(
                    (v.key_path.as_str(), v.key_name.as_str()),
                    ("/v1/secret/data/secretPath", "secretName")
                );
            }
            other => panic!("{other:?}"),
        }
        match &defs[1].key {
            KeyDefinition::Aws(a) => {
                assert!(
                    matches!(&a.auth, AwsAuth::Specified { access_key_id, .. } if access_key_id == "AKIAIOSFODNN7EXAMPLE")
                );
                assert_eq!(
                    (a.region.as_str(), a.secret_name.as_str()),
                    ("us-west-2", "validator-1")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(&defs[2].key, KeyDefinition::Aws(a) if matches!(a.auth, AwsAuth::Environment) && a.endpoint_override.is_some())
        );
        match &defs[3].key {
            KeyDefinition::Azure(a) => {
                assert_eq!(a.vault_url, "https://AzureKeyVault.vault.azure.net");
                assert_eq!(a.timeout_secs, 60);
            }
            other => panic!("{other:?}"),
        }
        // Debug output and descriptions never carry a secret.
        let shown = format!("{defs:?}");
        for secret in ["MuZwBqZ0iE1HzvD64v3HMlhT", "wJalrXUtnFEMI", "shhh"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn store_definitions_missing_fields() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.yaml");
        std::fs::write(&f, "type: aws-secret\nregion: us-east-1\nsecretName: x\n").unwrap();
        assert!(read_file(&f).unwrap_err().contains("accessKeyId"));
        std::fs::write(&f, "type: hashicorp\nserverHost: h\nkeyPath: /v1/secret/data/x\n").unwrap();
        assert!(read_file(&f).unwrap_err().contains("token"));
        std::fs::write(
            &f,
            "type: hashicorp\nserverHost: h\nkeyPath: /p\ntoken: t\nserverPort: 'x'\n",
        )
        .unwrap();
        assert!(read_file(&f).unwrap_err().contains("serverPort"));
        std::fs::write(
            &f,
            "type: azure-secret\nsecretName: s\nclientId: c\nclientSecret: x\ntenantId: t\n",
        )
        .unwrap();
        assert!(read_file(&f).unwrap_err().contains("vaultName"));
    }
}
