//! The Secrets Manager calls Palisade makes (`GetSecretValue`, `ListSecrets`), over the JSON
//! 1.1 protocol with SigV4. Errors are told apart by their `__type`, never by status: AWS
//! answers 400 where moto answers 404.

use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use super::credentials::CredentialSource;
use super::sigv4;
use crate::keys::stores::http::{self, StoreError};

/// A `ListSecrets` filter (`name`, `tag-key`, `tag-value`: prefix matches, case-sensitive;
/// values within one filter are alternatives, filters must all match).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub key: &'static str,
    pub values: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct SecretsManager {
    http: reqwest::Client,
    /// `https://secretsmanager.<region>.amazonaws.com`, or the endpoint override.
    endpoint: String,
    host: String,
    region: String,
    credentials: CredentialSource,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "__type", default)]
    kind: Option<String>,
    #[serde(alias = "Message", default)]
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SecretValue {
    #[serde(default)]
    secret_string: Option<Zeroizing<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListPage {
    #[serde(default)]
    secret_list: Vec<Listed>,
    #[serde(default)]
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Listed {
    name: String,
}

impl SecretsManager {
    pub fn new(
        http: reqwest::Client,
        region: &str,
        endpoint_override: Option<&str>,
        credentials: CredentialSource,
    ) -> Result<Self, StoreError> {
        let endpoint = match endpoint_override {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => format!("https://secretsmanager.{region}.amazonaws.com"),
        };
        let url = reqwest::Url::parse(&endpoint)
            .map_err(|e| StoreError::Config(format!("AWS endpoint `{endpoint}`: {e}")))?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => return Err(StoreError::Config(format!("AWS endpoint `{endpoint}` has no host"))),
        };
        Ok(SecretsManager {
            http,
            endpoint,
            host,
            region: region.to_string(),
            credentials,
        })
    }

    pub fn describe(&self) -> String {
        format!("AWS Secrets Manager {} ({})", self.endpoint, self.region)
    }

    /// The headers of a signed `operation` with `body` at `amz_date`, `Authorization` last
    /// (`Host` is signed, and sent by the client from the URL).
    fn signed_headers(
        &self,
        operation: &str,
        body: &[u8],
        creds: &super::Credentials,
        amz_date: &str,
    ) -> Vec<(String, String)> {
        let mut headers = vec![
            ("host".to_string(), self.host.clone()),
            ("x-amz-date".to_string(), amz_date.to_string()),
            ("x-amz-target".to_string(), format!("secretsmanager.{operation}")),
            ("content-type".to_string(), "application/x-amz-json-1.1".to_string()),
        ];
        if let Some(t) = &creds.session_token {
            headers.push(("x-amz-security-token".to_string(), t.to_string()));
        }
        let auth = sigv4::authorization(
            &sigv4::Request {
                method: "POST",
                path: "/",
                headers: &headers,
                body,
            },
            creds,
            &sigv4::Scope {
                region: &self.region,
                service: "secretsmanager",
                amz_date,
            },
        );
        headers.retain(|(k, _)| k != "host");
        headers.push(("authorization".to_string(), auth));
        headers
    }

    /// One signed call; the answer's body (wiped when dropped).
    async fn call(&self, operation: &str, body: &serde_json::Value) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let what = self.describe();
        let creds = self.credentials.resolve(&self.http).await?;
        let body = serde_json::to_vec(body).expect("JSON");
        let amz_date = http::amz_date(std::time::SystemTime::now());
        let headers = self.signed_headers(operation, &body, &creds, &amz_date);
        let mut req = self.http.post(format!("{}/", self.endpoint)).body(body);
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        let (status, answer) = http::exchange(&what, req).await?;
        if status.is_success() {
            return Ok(answer);
        }
        let err: ErrorBody = serde_json::from_slice(&answer).unwrap_or(ErrorBody {
            kind: None,
            message: None,
        });
        // `ns#Type` or `Type:http://...`: the bare name.
        let kind = err
            .kind
            .as_deref()
            .map(|k| k.split(':').next().unwrap_or(k))
            .map(|k| k.rsplit('#').next().unwrap_or(k).to_string())
            .unwrap_or_else(|| status.to_string());
        let message = err.message.unwrap_or_else(|| http::short(&answer));
        let e = format!("{what}: {operation}: {kind}: {message}");
        Err(match kind.as_str() {
            "ThrottlingException" | "InternalServiceError" | "InternalFailure" | "ServiceUnavailable" => {
                StoreError::Unreachable(e)
            }
            _ if status.is_server_error() => StoreError::Unreachable(e),
            _ => StoreError::Refused(e),
        })
    }

    /// The secret's string value.
    pub async fn get_secret_value(&self, id: &str) -> Result<Zeroizing<String>, StoreError> {
        let answer = self.call("GetSecretValue", &json!({ "SecretId": id })).await?;
        let v: SecretValue = serde_json::from_slice(&answer)
            .map_err(|e| StoreError::Protocol(format!("{}: GetSecretValue {id}: {e}", self.describe())))?;
        v.secret_string.ok_or_else(|| {
            StoreError::Protocol(format!(
                "{}: secret {id} has no SecretString (a binary secret cannot hold a key)",
                self.describe()
            ))
        })
    }

    /// The names of every secret matching all `filters`, all pages.
    pub async fn list_secrets(&self, filters: &[Filter]) -> Result<Vec<String>, StoreError> {
        let filters: Vec<serde_json::Value> = filters
            .iter()
            .filter(|f| !f.values.is_empty())
            .map(|f| json!({"Key": f.key, "Values": f.values}))
            .collect();
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut body = json!({ "MaxResults": 100 });
            if !filters.is_empty() {
                body["Filters"] = json!(filters);
            }
            if let Some(t) = &token {
                body["NextToken"] = json!(t);
            }
            let answer = self.call("ListSecrets", &body).await?;
            let page: ListPage = serde_json::from_slice(&answer)
                .map_err(|e| StoreError::Protocol(format!("{}: ListSecrets: {e}", self.describe())))?;
            names.extend(page.secret_list.into_iter().map(|s| s.name));
            match page.next_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same requests botocore signed (`tests/data/aws-sigv4-botocore`): moto does not check
    /// signatures, so this is what holds Palisade's requests to AWS's own signer.
    #[test]
    fn requests_are_signed_as_botocore_signs_them() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/aws-sigv4-botocore");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let case: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let url = case["url"].as_str().unwrap();
            let region = case["region"].as_str().unwrap();
            let endpoint = (!url.contains("amazonaws.com")).then(|| url.trim_end_matches('/'));
            let creds = super::super::Credentials {
                access_key_id: case["access_key_id"].as_str().unwrap().into(),
                secret_access_key: Zeroizing::new(case["secret_access_key"].as_str().unwrap().into()),
                session_token: case["session_token"].as_str().map(|t| Zeroizing::new(t.to_string())),
            };
            let sm = SecretsManager::new(
                reqwest::Client::new(),
                region,
                endpoint,
                CredentialSource::Specified(creds.clone()),
            )
            .unwrap();
            let headers = sm.signed_headers(
                case["operation"].as_str().unwrap(),
                case["body"].as_str().unwrap().as_bytes(),
                &creds,
                case["amz_date"].as_str().unwrap(),
            );
            let auth = &headers.iter().find(|(k, _)| k == "authorization").unwrap().1;
            assert_eq!(auth, case["authorization"].as_str().unwrap(), "{}", path.display());
            n += 1;
        }
        assert_eq!(n, 2);
    }
}
