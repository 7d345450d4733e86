//! Request bodies are read whole, within a deadline and a size limit, before a handler runs:
//! a client trickling a body (or stopping half-way) holds nothing for longer than
//! `--http-body-timeout-secs`.

use std::time::Duration;

use axum::body::Body;
use axum::body::Bytes;
use axum::body::HttpBody as _;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;
use zeroize::Zeroize;

use super::error::ApiError;

#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub timeout: Duration,
}

pub async fn read_whole(limits: BodyLimits, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(limits.timeout, collect(body, limits.max_bytes)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return ApiError::PayloadTooLarge(format!("request body is larger than {} bytes", limits.max_bytes))
                .for_path(&path);
        }
        Ok(Err(e)) => return ApiError::BadRequest(format!("cannot read request body: {e}")).for_path(&path),
        Err(_) => {
            tracing::warn!(%path, secs = limits.timeout.as_secs(), "request body not received in time");
            return ApiError::RequestTimeout(format!(
                "request body not received within {} s",
                limits.timeout.as_secs()
            ))
            .for_path(&path);
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// The body in one buffer. Each chunk is zeroed once copied (bodies may carry keystore
/// passwords), and the buffer is sized up front so that growing it leaves no copies behind.
async fn collect(body: Body, max_bytes: usize) -> Result<Bytes, axum::BoxError> {
    let hint = usize::try_from(body.size_hint().lower()).unwrap_or(0).min(max_bytes);
    let mut body = http_body_util::Limited::new(body, max_bytes);
    let mut out = Vec::with_capacity(hint);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if out.len() + data.len() > out.capacity() {
                let mut bigger = Vec::with_capacity((out.len() + data.len()).max(out.capacity() * 2));
                bigger.extend_from_slice(&out);
                out.zeroize();
                out = bigger;
            }
            out.extend_from_slice(&data);
            if let Ok(mut owned) = data.try_into_mut() {
                owned.as_mut().zeroize();
            }
        }
    }
    Ok(Bytes::from(out))
}

/// Zeroes a body that carried secrets, once parsed (when no one else holds it).
pub fn zeroize_body(body: Bytes) {
    if let Ok(mut owned) = body.try_into_mut() {
        owned.as_mut().zeroize();
    }
}
