//! HashiCorp Vault, KV secrets engine version 2 (`type: hashicorp`): `GET <keyPath>` with the
//! token in `X-Vault-Token`; the key is the field `keyName` of `data.data`.
//! Reference: https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v2#read-secret-version

use serde::Deserialize;
use zeroize::Zeroizing;

use super::http::{self, StoreError};

pub struct VaultSecret {
    pub http: reqwest::Client,
    /// `http(s)://host:port`
    pub base: String,
    /// The full path, as Web3Signer takes it: `/v1/<mount>/data/<path>`.
    pub key_path: String,
    pub key_name: String,
    pub token: Zeroizing<String>,
}

#[derive(Deserialize)]
struct Answer {
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    data: Option<std::collections::HashMap<String, Zeroizing<String>>>,
}

#[derive(Deserialize)]
struct Errors {
    #[serde(default)]
    errors: Vec<String>,
}

impl VaultSecret {
    pub fn describe(&self) -> String {
        format!("HashiCorp Vault {}{}", self.base, self.key_path)
    }

    /// The value of `key_name` in the secret's latest version.
    pub async fn fetch(&self) -> Result<Zeroizing<String>, StoreError> {
        let what = self.describe();
        let req = self
            .http
            .get(format!("{}{}", self.base, self.key_path))
            .header("X-Vault-Token", self.token.as_str());
        let (status, body) = http::exchange(&what, req).await?;
        if !status.is_success() {
            let errors = serde_json::from_slice::<Errors>(&body)
                .map(|e| e.errors)
                .unwrap_or_default();
            let why = if errors.is_empty() {
                match status.as_u16() {
                    404 => "no such secret (or no permission to read it; a deleted version also answers 404)".into(),
                    _ => http::short(&body),
                }
            } else {
                errors.join("; ")
            };
            let e = format!("{what}: {status}: {why}");
            // Sealed, standby or overloaded: it may answer later.
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                StoreError::Unreachable(e)
            } else {
                StoreError::Refused(e)
            });
        }
        let answer: Answer = serde_json::from_slice(&body).map_err(|e| StoreError::Protocol(format!("{what}: {e}")))?;
        let mut fields = answer.and_then_data().ok_or_else(|| {
            StoreError::Protocol(format!(
                "{what}: no `data.data` in the answer (is it a KV version 2 path, /v1/<mount>/data/<path>?)"
            ))
        })?;
        fields.remove(&self.key_name).ok_or_else(|| {
            StoreError::Refused(format!("{what}: the secret has no field `{}` (keyName)", self.key_name))
        })
    }
}

impl Answer {
    fn and_then_data(self) -> Option<std::collections::HashMap<String, Zeroizing<String>>> {
        self.data.and_then(|d| d.data)
    }
}
