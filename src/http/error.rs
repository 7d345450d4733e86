//! Every error Palisade answers with, mapped to an HTTP status in this one place.
//! Bodies are always `{"error": "<reason>"}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::protection::ProtectionError;
use crate::service::SignError;

#[derive(Debug)]
pub enum ApiError {
    Sign(SignError),
    Protection(ProtectionError),
    BadRequest(String),
    NotFound(String),
    PayloadTooLarge(String),
    MissingToken,
    WrongToken,
    Internal(String),
}

impl From<SignError> for ApiError {
    fn from(e: SignError) -> Self {
        ApiError::Sign(e)
    }
}

impl From<ProtectionError> for ApiError {
    fn from(e: ProtectionError) -> Self {
        ApiError::Protection(e)
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Sign(e) => match e {
                SignError::BadRequest(_) | SignError::WrongChain { .. } => StatusCode::BAD_REQUEST,
                SignError::UnknownKey(_) | SignError::KeyFailed(..) => StatusCode::NOT_FOUND,
                SignError::KeyLoading(_) | SignError::ProtectionUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                SignError::Refused(_) => StatusCode::PRECONDITION_FAILED,
                SignError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Protection(e) => match e {
                ProtectionError::Refused(_) => StatusCode::PRECONDITION_FAILED,
                ProtectionError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                ProtectionError::WrongChain { .. } | ProtectionError::InvalidInterchange(_) => StatusCode::BAD_REQUEST,
                ProtectionError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MissingToken => StatusCode::UNAUTHORIZED,
            ApiError::WrongToken => StatusCode::FORBIDDEN,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::Sign(e) => e.to_string(),
            ApiError::Protection(e) => e.to_string(),
            ApiError::BadRequest(m) | ApiError::NotFound(m) | ApiError::PayloadTooLarge(m) | ApiError::Internal(m) => {
                m.clone()
            }
            ApiError::MissingToken => {
                "missing bearer token: send `Authorization: Bearer <token from --api-token-file>`".into()
            }
            ApiError::WrongToken => "invalid bearer token".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut resp = (status, axum::Json(json!({ "error": self.message() }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// A body the extractor refused (too large, unreadable) as `{"error": ...}`.
pub fn body_rejection(r: axum::extract::rejection::BytesRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(format!("request body is larger than {} bytes", super::MAX_BODY_BYTES))
    } else {
        ApiError::BadRequest(format!("cannot read request body: {}", r.body_text()))
    }
}
