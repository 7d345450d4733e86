//! Bearer-token authentication for the admin and Key Manager endpoints.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
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

/// The API token. Never logged, compared in constant time, zeroed on drop.
pub struct ApiToken(Zeroizing<String>);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

impl ApiToken {
    /// Reads the token file (surrounding whitespace trimmed), or creates it with a random
    /// token and mode 0600. Returns the token and whether the file was created.
    pub fn load_or_create(path: &Path) -> Result<(ApiToken, bool), String> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let text = Zeroizing::new(text);
                let token = text.trim();
                if token.is_empty() {
                    return Err(format!("API token file {} is empty", path.display()));
                }
                Ok((ApiToken(Zeroizing::new(token.to_string())), false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = Zeroizing::new([0u8; 32]);
                rand::rng().fill_bytes(bytes.as_mut());
                let token = Zeroizing::new(hex::encode(bytes.as_ref()));
                // Written aside, then linked into place: replicas starting together on a shared
                // token file never see it half-written, and exactly one token wins.
                let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
                let written = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .and_then(|mut f| f.write_all(token.as_bytes()).and_then(|_| f.sync_all()));
                if let Err(e) = written {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(format!("cannot create API token file {}: {e}", path.display()));
                }
                let linked = std::fs::hard_link(&tmp, path);
                let _ = std::fs::remove_file(&tmp);
                match linked {
                    Ok(()) => Ok((ApiToken(token), true)),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load_or_create(path),
                    Err(e) => Err(format!("cannot create API token file {}: {e}", path.display())),
                }
            }
            Err(e) => Err(format!("cannot read API token file {}: {e}", path.display())),
        }
    }

    pub fn matches(&self, presented: &str) -> bool {
        let a = self.0.as_bytes();
        let b = presented.as_bytes();
        a.len() == b.len() && bool::from(a.ct_eq(b))
    }
}

/// Middleware: 401 without a bearer token, 403 with a wrong one.
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let path = req.uri().path();
    match presented {
        None => ApiError::MissingToken.for_path(path),
        Some(t) if !state.token.matches(t) => ApiError::WrongToken.for_path(path),
        Some(_) => next.run(req).await,
    }
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
