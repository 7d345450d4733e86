//! Bearer-token authentication for the admin and Key Manager endpoints.

use std::path::Path;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use rand::RngCore;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::AppState;
use super::error::ApiError;

/// Shorter tokens are accepted with a warning.
const MIN_TOKEN_CHARS: usize = 16;

/// The API token. Never logged, compared in constant time, zeroed on drop.
pub struct ApiToken(Zeroizing<String>);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error(transparent)]
    Access(#[from] crate::fsutil::AccessFileError),
    #[error("token file {} is not UTF-8", .0.display())]
    NotText(std::path::PathBuf),
    #[error("token file {} is empty", .0.display())]
    Empty(std::path::PathBuf),
    #[error("cannot create API token file {}: {source}", path.display())]
    Create {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl ApiToken {
    /// Reads the token file (surrounding whitespace trimmed), or creates it with a random
    /// token and mode 0600. Returns the token and whether the file was created.
    pub fn load_or_create(path: &Path) -> Result<(ApiToken, bool), TokenFileError> {
        match Self::load_as(path, "--api-token-file") {
            Ok(t) => Ok((t, false)),
            Err(_) if !path.exists() && std::fs::symlink_metadata(path).is_err() => {
                let mut bytes = Zeroizing::new([0u8; 32]);
                rand::rng().fill_bytes(bytes.as_mut());
                let token = Zeroizing::new(hex::encode(bytes.as_ref()));
                // Replicas starting together on a shared token file: exactly one token wins.
                match crate::fsutil::write_private(path, token.as_bytes(), crate::fsutil::Existing::Keep) {
                    Ok(()) => Ok((ApiToken(token), true)),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Ok((Self::load_as(path, "--api-token-file")?, false))
                    }
                    Err(source) => Err(TokenFileError::Create {
                        path: path.into(),
                        source,
                    }),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Reads a token file that must exist: a private regular file of ours (see
    /// `fsutil::read_access_file`).
    pub fn load(path: &Path) -> Result<ApiToken, TokenFileError> {
        Self::load_as(path, "token file")
    }

    /// `load`, naming the option the file came from in errors.
    pub fn load_as(path: &Path, what: &'static str) -> Result<ApiToken, TokenFileError> {
        let bytes = crate::fsutil::read_access_file(path, what)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| TokenFileError::NotText(path.into()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(TokenFileError::Empty(path.into()));
        }
        Ok(ApiToken(Zeroizing::new(token.to_string())))
    }

    /// What an operator should fix: a guessable token. (A file others can read is refused.)
    pub fn weaknesses(&self, path: &Path) -> Vec<String> {
        let mut w = Vec::new();
        if self.0.len() < MIN_TOKEN_CHARS {
            w.push(format!(
                "the token in {} has {} characters: use at least {MIN_TOKEN_CHARS} random ones (delete the file and Palisade creates one)",
                path.display(),
                self.0.len()
            ));
        }
        w
    }

    pub fn matches(&self, presented: &str) -> bool {
        let a = self.0.as_bytes();
        let b = presented.as_bytes();
        a.len() == b.len() && bool::from(a.ct_eq(b))
    }
}

/// The bearer token of a request, if it carries one.
pub fn presented(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
}

/// Whether the request carries the admin token.
pub fn is_admin(state: &AppState, headers: &axum::http::HeaderMap) -> bool {
    presented(headers).is_some_and(|t| state.token.matches(t))
}

/// Middleware for the admin routes: 401 without a bearer token, 403 with a wrong one; every
/// admin call is logged with who made it, failures at most once per second.
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    check(&state.token, "admin", req, next).await
}

/// Middleware for the signing routes: a no-op unless `--signing-token-file` is set.
pub async fn require_signing_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match &state.signing_token {
        None => next.run(req).await,
        Some(token) => check(token, "signing", req, next).await,
    }
}

async fn check(token: &ApiToken, what: &'static str, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let client = req
        .extensions()
        .get::<super::client::ClientInfo>()
        .map(|c| c.to_string())
        .unwrap_or_default();
    let error = match presented(req.headers()) {
        None => ApiError::MissingToken,
        Some(t) if !token.matches(t) => ApiError::WrongToken,
        Some(_) => {
            // A client that holds the token keeps its connection when the table is full.
            if let Some(conn) = req.extensions().get::<super::server::ConnHandle>() {
                conn.prove();
            }
            if what == "admin" {
                tracing::info!(method = %req.method(), %path, %client, "admin request (token accepted)");
            }
            return next.run(req).await;
        }
    };
    static FAILURES: crate::ratelimit::RateLimit = crate::ratelimit::RateLimit::new();
    if let Some(suppressed) = FAILURES.allow() {
        tracing::warn!(%path, %client, reason = %error.message(), suppressed, "{what} authentication failed");
    }
    error.for_path(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_private_token_file_then_reuses_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.txt");
        let (t1, created) = ApiToken::load_or_create(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (t2, created) = ApiToken::load_or_create(&path).unwrap();
        assert!(!created);
        let on_disk = std::fs::read_to_string(&path).unwrap();
        assert!(t1.matches(&on_disk) && t2.matches(&on_disk));
        assert!(!t1.matches("wrong"));
        assert!(!format!("{t1:?}").contains(&on_disk));
        std::fs::write(&path, "  my-token\n").unwrap();
        assert!(ApiToken::load_or_create(&path).unwrap().0.matches("my-token"));
    }
}
