//! Request bodies are read whole, within a deadline and a size limit, before a handler runs:
//! a client trickling a body (or stopping half-way) holds nothing for longer than
//! `--http-body-timeout-secs`. Before a byte is read, the body's size is reserved from one
//! budget shared by every connection and HTTP/2 stream (`--http-body-budget-mb`): however
//! many senders, bodies in memory stay within it. A share of the budget is kept for small
//! bodies (every real signing request since Bellatrix is under 64 KiB), so large senders
//! cannot crowd out validator clients; beyond the budget a request is answered 503 at once,
//! unread, and the client can try another replica.

use std::sync::{Arc, Mutex};
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
use crate::ratelimit::RateLimit;

/// A body up to this size is small: it may use the whole budget.
pub const SMALL_BODY_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub timeout: Duration,
    /// None: the route's callers are authenticated administrators, not budgeted.
    pub budget: Option<Arc<BodyBudget>>,
}

/// The bytes of request bodies that may be in memory at once.
#[derive(Debug)]
pub struct BodyBudget {
    total: usize,
    /// Large bodies may use at most `total - small_reserve`.
    small_reserve: usize,
    used: Mutex<Used>,
    refused: prometheus_client::metrics::counter::Counter,
}

#[derive(Debug, Default)]
struct Used {
    all: usize,
    large: usize,
}

/// Bytes reserved for one body, given back on drop.
pub struct Reservation {
    budget: Arc<BodyBudget>,
    bytes: usize,
    large: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut used = self.budget.lock();
        used.all -= self.bytes;
        if self.large {
            used.large -= self.bytes;
        }
    }
}

impl BodyBudget {
    /// `total` bytes, a quarter of them kept for small bodies; refusals counted in `refused`.
    pub fn new(total: usize, refused: prometheus_client::metrics::counter::Counter) -> Arc<BodyBudget> {
        Arc::new(BodyBudget {
            total,
            small_reserve: total / 4,
            used: Mutex::new(Used::default()),
            refused,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Used> {
        self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves `bytes`, or None when the budget (or the large bodies' part of it) is taken.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        let large = bytes > SMALL_BODY_BYTES;
        let mut used = self.lock();
        let fits = used.all + bytes <= self.total && (!large || used.large + bytes <= self.total - self.small_reserve);
        if !fits {
            return None;
        }
        used.all += bytes;
        if large {
            used.large += bytes;
        }
        Some(Reservation {
            budget: self.clone(),
            bytes,
            large,
        })
    }

    pub fn in_use(&self) -> usize {
        self.lock().all
    }
}

pub async fn read_whole(limits: BodyLimits, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    // The size the client declares (Content-Length, or an HTTP/2 stream that ended): known
    // before a byte is read, so an oversized body is refused unread.
    let declared = req.body().size_hint().exact().and_then(|n| usize::try_from(n).ok());
    if let Some(n) = declared.filter(|n| *n > limits.max_bytes) {
        if n <= LINGER_BYTES {
            linger(req.into_body());
        }
        return ApiError::PayloadTooLarge(format!("request body is larger than {} bytes", limits.max_bytes))
            .for_path(&path);
    }
    let _reservation = match (&limits.budget, declared.unwrap_or(limits.max_bytes)) {
        (None, _) | (_, 0) => None,
        (Some(budget), bytes) => match budget.reserve(bytes) {
            Some(r) => Some(r),
            None => {
                budget.refused.inc();
                static BUSY: RateLimit = RateLimit::new();
                if let Some(held) = BUSY.allow() {
                    tracing::warn!(
                        bytes,
                        in_use = budget.in_use(),
                        budget = budget.total,
                        similar_since_last = held,
                        "request refused unread: request bodies in flight fill --http-body-budget-mb"
                    );
                }
                return ApiError::Busy(format!(
                    "server busy: {} MiB of request bodies in flight (--http-body-budget-mb); try again or another replica",
                    budget.total >> 20
                ))
                .for_path(&path);
            }
        },
    };
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(limits.timeout, collect(body, limits.max_bytes)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return ApiError::PayloadTooLarge(format!("request body is larger than {} bytes", limits.max_bytes))
                .for_path(&path);
        }
        Ok(Err(e)) => return ApiError::BadRequest(format!("cannot read request body: {e}")).for_path(&path),
        Err(_) => {
            static SLOW: RateLimit = RateLimit::new();
            if let Some(held) = SLOW.allow() {
                tracing::warn!(path = %crate::http::shown(&path), secs = limits.timeout.as_secs(), similar_since_last = held,
                    "request body not received in time");
            }
            return ApiError::RequestTimeout(format!(
                "request body not received within {} s",
                limits.timeout.as_secs()
            ))
            .for_path(&path);
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// A refused body up to this size is read and thrown away, so that the client, still
/// sending it, reads the 413 and its reason instead of a reset connection (as a lingering
/// close does). Nothing of it is kept; it costs bandwidth only, and at most `LINGER_TIME`.
const LINGER_BYTES: usize = 8 << 20;
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);

fn linger(body: Body) {
    tokio::spawn(async move {
        let mut body = http_body_util::Limited::new(body, LINGER_BYTES);
        let _ = tokio::time::timeout(LINGER_TIME, async { while let Some(Ok(_)) = body.frame().await {} }).await;
    });
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
