//! The Web3Signer eth2 signing endpoints.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use super::AppState;
use super::client::ClientInfo;
use super::error::{ApiError, body_rejection};

/// `POST /api/v1/eth2/sign/{identifier}`
pub async fn sign(
    State(state): State<AppState>,
    Path(identifier): Path<String>,
    client: Option<Extension<ClientInfo>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let client = client.map(|Extension(c)| c).unwrap_or_default();
    let body = body.map_err(|r| body_rejection(r, super::MAX_BODY_BYTES))?;
    let signature = state.signer.sign(&identifier, &body, &client.to_string()).await?;
    Ok(if wants_text(&headers) {
        (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            signature.to_string(),
        )
            .into_response()
    } else {
        Json(json!({ "signature": signature.to_string() })).into_response()
    })
}

/// `POST /internal/v1/threshold/sign/{identifier}`: a share node's partial signature, for a
/// threshold coordinator. Only over mutual TLS: the node must know which coordinator asks.
pub async fn sign_partial(
    State(state): State<AppState>,
    Path(identifier): Path<String>,
    client: Option<Extension<ClientInfo>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let client = client.map(|Extension(c)| c).unwrap_or_default();
    if client.certificate.is_none() {
        return Err(ApiError::Forbidden(
            "partial signatures are given only to a coordinator with a client certificate (serve with --tls-client-ca-file)"
                .into(),
        ));
    }
    let body = body.map_err(|r| body_rejection(r, super::MAX_BODY_BYTES))?;
    let (signature, index) = state
        .signer
        .sign_partial(&identifier, &body, &client.to_string())
        .await?;
    Ok(Json(json!({ "index": index, "signature": signature.to_string() })).into_response())
}

/// Bare hex only when the client asks for text/plain and not for JSON.
fn wants_text(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut text = false;
    for part in accept.split(',') {
        let media = part.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match media.as_str() {
            "application/json" | "application/*" | "*/*" => return false,
            "text/plain" | "text/*" => text = true,
            _ => {}
        }
    }
    text
}

/// `GET /api/v1/eth2/publicKeys`: keys that can sign, and keys still being decrypted
/// (requests for those wait for them).
pub async fn public_keys(State(state): State<AppState>) -> Json<Vec<String>> {
    Json(state.signer.listed_pubkeys().iter().map(|k| k.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn content_negotiation() {
        assert!(!wants_text(&HeaderMap::new()));
        assert!(!wants_text(&accept("*/*")));
        assert!(!wants_text(&accept("application/json")));
        assert!(wants_text(&accept("text/plain")));
        assert!(wants_text(&accept("text/plain; charset=utf-8")));
        assert!(!wants_text(&accept("text/plain, application/json")));
        assert!(!wants_text(&accept("text/plain, */*;q=0.1")));
    }
}
