//! Azure Key Vault secrets (`type: azure-secret`), authenticated as an application with a
//! client secret: a token from the Microsoft identity platform (client credentials grant,
//! scope `https://vault.azure.net/.default`), then `GET /secrets/<name>`.
//! References: https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow
//! and https://learn.microsoft.com/en-us/rest/api/keyvault/secrets/get-secret/get-secret

use serde::Deserialize;
use zeroize::Zeroizing;

use super::http::{self, StoreError};

/// The Key Vault REST API version asked for.
pub const API_VERSION: &str = "7.4";

pub struct AzureSecret {
    pub http: reqwest::Client,
    /// `https://<vaultName>.vault.azure.net` (or the definition's `vaultUrl`).
    pub vault_url: String,
    pub secret_name: String,
    /// `https://login.microsoftonline.com` (or `AZURE_AUTHORITY_HOST`, as the Azure SDKs).
    pub authority: String,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: Zeroizing<String>,
}

#[derive(Deserialize)]
struct Token {
    access_token: Zeroizing<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Tokens per (authority, tenant, client), until a minute before they expire: a load of many
/// secrets asks for one.
type TokenCache =
    std::sync::Mutex<std::collections::HashMap<(String, String, String), (Zeroizing<String>, std::time::Instant)>>;
static TOKENS: std::sync::OnceLock<TokenCache> = std::sync::OnceLock::new();

#[derive(Deserialize)]
struct TokenError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

#[derive(Deserialize)]
struct Secret {
    value: Option<Zeroizing<String>>,
}

#[derive(Deserialize)]
struct VaultErrorBody {
    error: VaultError,
}

#[derive(Deserialize)]
struct VaultError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// `application/x-www-form-urlencoded` value encoding.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl AzureSecret {
    pub fn describe(&self) -> String {
        format!("Azure Key Vault {} secret {}", self.vault_url, self.secret_name)
    }

    async fn token(&self) -> Result<Zeroizing<String>, StoreError> {
        let key = (self.authority.clone(), self.tenant_id.clone(), self.client_id.clone());
        let cache = TOKENS.get_or_init(Default::default);
        if let Some((t, until)) = cache.lock().expect("token cache").get(&key)
            && std::time::Instant::now() < *until
        {
            return Ok(t.clone());
        }
        let what = format!(
            "Microsoft identity platform {} (tenant {})",
            self.authority, self.tenant_id
        );
        let form = Zeroizing::new(format!(
            "client_id={}&scope={}&client_secret={}&grant_type=client_credentials",
            form_encode(&self.client_id),
            form_encode("https://vault.azure.net/.default"),
            form_encode(&self.client_secret),
        ));
        let req = self
            .http
            .post(format!("{}/{}/oauth2/v2.0/token", self.authority, self.tenant_id))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.as_bytes().to_vec());
        let (status, body) = http::exchange(&what, req).await?;
        if !status.is_success() {
            // `invalid_client` may come as 400 or 401: the `error` field tells.
            let e = serde_json::from_slice::<TokenError>(&body).map_or_else(
                |_| http::short(&body),
                |e| {
                    let first = e.error_description.lines().next().unwrap_or_default().to_string();
                    format!("{}: {first}", e.error)
                },
            );
            let e = format!("{what}: {status}: {e}");
            return Err(if status.is_server_error() {
                StoreError::Unreachable(e)
            } else {
                StoreError::Refused(e)
            });
        }
        let t: Token = serde_json::from_slice(&body).map_err(|e| StoreError::Protocol(format!("{what}: {e}")))?;
        let life = std::time::Duration::from_secs(t.expires_in.unwrap_or(0).saturating_sub(60));
        cache
            .lock()
            .expect("token cache")
            .insert(key, (t.access_token.clone(), std::time::Instant::now() + life));
        Ok(t.access_token)
    }

    /// The secret's current value.
    pub async fn fetch(&self) -> Result<Zeroizing<String>, StoreError> {
        let token = self.token().await?;
        let what = self.describe();
        let req = self
            .http
            .get(format!(
                "{}/secrets/{}?api-version={API_VERSION}",
                self.vault_url, self.secret_name
            ))
            .bearer_auth(token.as_str());
        let (status, body) = http::exchange(&what, req).await?;
        if !status.is_success() {
            let e = serde_json::from_slice::<VaultErrorBody>(&body).map_or_else(
                |_| http::short(&body),
                |b| format!("{}: {}", b.error.code, b.error.message),
            );
            let e = format!("{what}: {status}: {e}");
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                StoreError::Unreachable(e)
            } else {
                StoreError::Refused(e)
            });
        }
        let s: Secret = serde_json::from_slice(&body).map_err(|e| StoreError::Protocol(format!("{what}: {e}")))?;
        s.value
            .ok_or_else(|| StoreError::Protocol(format!("{what}: the answer has no `value`")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding() {
        assert_eq!(
            form_encode("https://vault.azure.net/.default"),
            "https%3A%2F%2Fvault.azure.net%2F.default"
        );
        assert_eq!(form_encode("a b+c&d=é"), "a%20b%2Bc%26d%3D%C3%A9");
    }
}
