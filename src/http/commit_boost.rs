//! The Commit-Boost signer API (`/signer/v1/*`), served with `--commit-boost-api-enabled`.
//! Each request proves its module: a current Commit-Boost module with an HS256 JWT signed with
//! its secret, whose claims name the route and the keccak256 of the body; a module declared
//! `api: web3signer` (Commit-Boost before v0.8) with its secret itself or a JWT. Each kind has
//! its routes: the current signature routes for the first, Web3Signer's for the second. The
//! work is in `app::commit_boost`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use sha3::{Digest, Keccak256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::{ApiError, body_rejection};
use crate::app::commit_boost::modules::Api;
use crate::app::commit_boost::{CommitBoost, CommitBoostError, Module, SignedBy};
use crate::consensus::commit_boost::DelegatedProxy;
use crate::signing::commit_boost::{Route, parse_current, parse_legacy, parse_proxy_request};

/// Clock difference allowed on a token's expiry (Commit-Boost's own).
const LEEWAY_SECS: u64 = 10;

#[derive(Deserialize)]
struct Claims {
    module: String,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    payload_hash: Option<String>,
}

fn unauthorized(m: impl Into<String>) -> CommitBoostError {
    CommitBoostError::Unauthorized(m.into())
}

/// Which modules a route is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum For {
    Both,
    CommitBoost,
    Web3Signer,
}

/// The module the request proves it is, or why it proves nothing.
fn authenticate<'a>(
    cb: &'a CommitBoost,
    headers: &HeaderMap,
    path: &str,
    body: &[u8],
    route_for: For,
) -> Result<&'a Module, CommitBoostError> {
    let token = super::auth::presented(headers)
        .ok_or_else(|| unauthorized("missing bearer token: send `Authorization: Bearer <module JWT>`"))?;
    let module = if token.split('.').count() != 3 {
        // A Web3Signer-era module's secret itself.
        cb.modules()
            .find(|m| m.api == Api::Web3Signer && bool::from(m.secret.bytes().ct_eq(token.as_bytes())))
            .ok_or_else(|| {
                unauthorized("invalid bearer token: not a JWT, nor the secret of a module with `api: web3signer`")
            })?
    } else {
        verified_jwt(cb, token, path, body)?
    };
    match (route_for, module.api) {
        (For::Both, _) | (For::CommitBoost, Api::CommitBoost) | (For::Web3Signer, Api::Web3Signer) => Ok(module),
        (For::CommitBoost, Api::Web3Signer) => Err(CommitBoostError::Forbidden(format!(
            "module {} is declared `api: web3signer`: its signatures are asked for at /signer/v1/request_signature",
            module.id
        ))),
        (For::Web3Signer, Api::CommitBoost) => Err(CommitBoostError::Forbidden(format!(
            "module {}: this route signs roots not bound to the module; it serves modules declared `api: web3signer` only",
            module.id
        ))),
    }
}

/// The module of a JWT signed with its secret and not expired; for a current Commit-Boost
/// module, also for this route and this body.
fn verified_jwt<'a>(cb: &'a CommitBoost, token: &str, path: &str, body: &[u8]) -> Result<&'a Module, CommitBoostError> {
    // Which module the token claims to be decides the secret it must be signed with.
    let mut peek = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    peek.insecure_disable_signature_validation();
    peek.validate_exp = false;
    peek.required_spec_claims.clear();
    let claimed = jsonwebtoken::decode::<Claims>(token, &jsonwebtoken::DecodingKey::from_secret(&[]), &peek)
        .map_err(|e| unauthorized(format!("invalid JWT: {e}")))?;
    let module = cb
        .module(&claimed.claims.module)
        .ok_or_else(|| unauthorized(format!("unknown module `{}`", super::shown(&claimed.claims.module))))?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.leeway = LEEWAY_SECS;
    validation.set_required_spec_claims(&["exp"]);
    let claims = jsonwebtoken::decode::<Claims>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(module.secret.bytes()),
        &validation,
    )
    .map_err(|e| unauthorized(format!("JWT of module {} refused: {e}", module.id)))?
    .claims;
    let strict = module.api == Api::CommitBoost;
    match claims.route.as_deref() {
        Some(r) if r == path => {}
        Some(r) => {
            return Err(unauthorized(format!(
                "the JWT is for route {}, not {path}",
                super::shown(r)
            )));
        }
        None if strict => return Err(unauthorized("the JWT names no route")),
        None => {}
    }
    let hash = hex::encode(Keccak256::digest(body));
    let given = claims.payload_hash.as_deref().map(|h| h.trim_start_matches("0x"));
    match (given, body.is_empty()) {
        (None, true) => {}
        (Some(h), false) if h.eq_ignore_ascii_case(&hash) => {}
        (Some(_), true) => return Err(unauthorized("the JWT has a payload hash but the request has no body")),
        (None, false) if strict => return Err(unauthorized("the JWT has no payload_hash for the body")),
        (None, false) => {}
        (Some(_), false) => return Err(unauthorized("the JWT's payload_hash is not the body's keccak256")),
    }
    Ok(module)
}

fn service(state: &AppState) -> Result<&CommitBoost, ApiError> {
    state
        .commit_boost
        .as_deref()
        .ok_or_else(|| ApiError::NotFound("the Commit-Boost API is not enabled".into()))
}

/// Authenticates, runs `op`, counts and (for refusals) logs the outcome under the module.
async fn run<'a, F, Fut>(
    cb: &'a CommitBoost,
    route: &'static str,
    headers: &HeaderMap,
    path: &str,
    body: &[u8],
    route_for: For,
    op: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(&'a Module) -> Fut,
    Fut: std::future::Future<Output = Result<(&'static str, Response), CommitBoostError>>,
{
    let mut module_id = None;
    let result = match authenticate(cb, headers, path, body, route_for) {
        Ok(module) => {
            module_id = Some(module.id.as_str());
            op(module).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok((outcome, response)) => {
            cb.count(module_id, route, outcome);
            Ok(response)
        }
        Err(e) => {
            cb.count(module_id, route, e.outcome());
            static REFUSED: crate::ratelimit::RateLimit = crate::ratelimit::RateLimit::new();
            if let Some(suppressed) = REFUSED.allow() {
                tracing::info!(module = module_id.unwrap_or("-"), route, reason = %e, suppressed, "Commit-Boost request refused");
            }
            Err(ApiError::CommitBoost(e))
        }
    }
}

fn bad(e: String) -> CommitBoostError {
    CommitBoostError::BadRequest(e)
}

/// `GET /signer/v1/get_pubkeys`
pub async fn get_pubkeys(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Result<Response, ApiError> {
    let cb = service(&state)?;
    run(
        cb,
        "get_pubkeys",
        &headers,
        uri.path(),
        &[],
        For::Both,
        |module| async move {
            let keys = cb.pubkeys(module).await;
            Ok(("listed", Json(json!({ "keys": keys })).into_response()))
        },
    )
    .await
}

async fn request(
    state: AppState,
    route: Option<Route>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let cb = service(&state)?;
    let label = match route {
        None => "request_signature",
        Some(Route::Consensus) => "request_signature_bls",
        Some(Route::ProxyBls) => "request_signature_proxy_bls",
        Some(Route::ProxyEcdsa) => "request_signature_proxy_ecdsa",
    };
    let text = body.clone();
    run(
        cb,
        label,
        &headers,
        uri.path(),
        &text,
        if route.is_none() {
            For::Web3Signer
        } else {
            For::CommitBoost
        },
        |module| async move {
            let req = match route {
                None => parse_legacy(&body),
                Some(r) => parse_current(r, &body),
            }
            .map_err(bad)?;
            let signed = cb.sign(module, &req).await?;
            let signature = format!("0x{}", hex::encode(&signed.signature));
            let response = match req.dialect {
                crate::signing::commit_boost::Dialect::Legacy => Json(json!(signature)).into_response(),
                crate::signing::commit_boost::Dialect::Current { nonce } => {
                    let mut v = json!({
                        "object_root": req.object_root.to_string(),
                        "module_signing_id": module.signing_id.to_string(),
                        "nonce": nonce,
                        "chain_id": format!("{:#x}", cb.chain_id()),
                        "signature": signature,
                    });
                    match signed.by {
                        SignedBy::Bls(pk) => v["pubkey"] = json!(pk.to_string()),
                        SignedBy::Ecdsa(a) => v["address"] = json!(format!("0x{}", hex::encode(a))),
                    }
                    Json(v).into_response()
                }
            };
            Ok(("signed", response))
        },
    )
    .await
}

fn read(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| body_rejection(r, super::MAX_BODY_BYTES))
}

/// `POST /signer/v1/request_signature` (Web3Signer's: a `type` field, the root as it is) and
/// `POST /signer/v1/request_signature/{bls,proxy-bls,proxy-ecdsa}` (current Commit-Boost).
pub async fn request_signature(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let route = match uri.path().rsplit_once('/').map(|(_, last)| last) {
        Some("bls") => Some(Route::Consensus),
        Some("proxy-bls") => Some(Route::ProxyBls),
        Some("proxy-ecdsa") => Some(Route::ProxyEcdsa),
        _ => None,
    };
    request(state, route, uri, headers, read(body)?).await
}

/// `POST /signer/v1/generate_proxy_key`
pub async fn generate_proxy_key(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read(body)?;
    let cb = service(&state)?;
    let text = body.clone();
    run(
        cb,
        "generate_proxy_key",
        &headers,
        uri.path(),
        &text,
        For::Both,
        |module| async move {
            let req = parse_proxy_request(&body).map_err(bad)?;
            let d = cb.generate(module, &req).await?;
            let proxy = match d.proxy {
                DelegatedProxy::Bls(p) => p.to_string(),
                DelegatedProxy::Address(a) => format!("0x{}", hex::encode(a)),
                DelegatedProxy::Compressed(k) => format!("0x{}", hex::encode(k)),
            };
            Ok((
                "generated",
                Json(json!({
                    "message": { "delegator": d.delegator.to_string(), "proxy": proxy },
                    "signature": d.signature.to_string(),
                }))
                .into_response(),
            ))
        },
    )
    .await
}
