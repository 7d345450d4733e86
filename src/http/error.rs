//! Every error Palisade answers with, mapped to an HTTP status in this one place.
//! Bodies are `{"error": "<reason>"}` (Web3Signer's form), and `{"message": "<reason>"}` on
//! the Key Manager API (the keymanager-APIs standard's form).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::keymanager::KeyManagerError;
use crate::app::signer::SignError;
use crate::protection::ProtectionError;

#[derive(Debug)]
pub enum ApiError {
    Sign(SignError),
    Protection(ProtectionError),
    BadRequest(String),
    NotFound(String),
    MethodNotAllowed(String),
    PayloadTooLarge(String),
    /// Host not allowed, a cross-origin request, a signing type the policy refuses.
    Forbidden(String),
    UnsupportedMediaType(String),
    RequestTimeout(String),
    /// The server's shared capacity (request bodies in flight) is taken: try again shortly,
    /// or another replica.
    Busy(String),
    MissingToken,
    WrongToken,
    CommitBoost(crate::app::commit_boost::CommitBoostError),
    Internal(String),
}

impl From<SignError> for ApiError {
    fn from(e: SignError) -> Self {
        ApiError::Sign(e)
    }
}

impl From<KeyManagerError> for ApiError {
    fn from(e: KeyManagerError) -> Self {
        match e {
            KeyManagerError::BadRequest(m) => ApiError::BadRequest(m),
            KeyManagerError::Protection(p) => ApiError::Protection(p),
        }
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
            ApiError::Sign(e) => sign_status(e),
            ApiError::Protection(e) => protection_status(e),
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::MissingToken => StatusCode::UNAUTHORIZED,
            ApiError::WrongToken => StatusCode::FORBIDDEN,
            ApiError::CommitBoost(e) => {
                use crate::app::commit_boost::CommitBoostError as E;
                match e {
                    E::Unauthorized(_) => StatusCode::UNAUTHORIZED,
                    E::Forbidden(_) => StatusCode::FORBIDDEN,
                    E::UnknownKey(_) => StatusCode::NOT_FOUND,
                    E::BadRequest(_) => StatusCode::BAD_REQUEST,
                    // A disabled key is a refusal for the module, not a slashing question.
                    E::Sign(SignError::Refused(_)) => StatusCode::FORBIDDEN,
                    E::Sign(s) => sign_status(s),
                    E::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
                }
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::Sign(e) => e.to_string(),
            ApiError::Protection(e) => e.to_string(),
            ApiError::BadRequest(m)
            | ApiError::NotFound(m)
            | ApiError::MethodNotAllowed(m)
            | ApiError::PayloadTooLarge(m)
            | ApiError::Forbidden(m)
            | ApiError::UnsupportedMediaType(m)
            | ApiError::RequestTimeout(m)
            | ApiError::Busy(m)
            | ApiError::Internal(m) => m.clone(),
            ApiError::MissingToken => "missing bearer token: send `Authorization: Bearer <token>`".into(),
            ApiError::WrongToken => "invalid bearer token".into(),
            ApiError::CommitBoost(e) => e.to_string(),
        }
    }
}

impl ApiError {
    /// The response, with the reason under `field`.
    fn respond(self, field: &str) -> Response {
        let status = self.status();
        let busy = matches!(self, ApiError::Busy(_));
        let mut resp = (status, axum::Json(json!({ field: self.message() }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if busy {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }

    /// The response in the form the endpoint at `path` promises.
    pub fn for_path(self, path: &str) -> Response {
        if path.starts_with(KEYMANAGER_PREFIX) {
            KeyManagerApiError(self).into_response()
        } else {
            self.into_response()
        }
    }
}

/// The status of a signing that gave no signature.
fn sign_status(e: &SignError) -> StatusCode {
    match e {
        SignError::BadRequest(_) => StatusCode::BAD_REQUEST,
        SignError::UnknownKey(_) | SignError::KeyFailed(..) => StatusCode::NOT_FOUND,
        SignError::KeyLoading(_) => StatusCode::SERVICE_UNAVAILABLE,
        SignError::Refused(_) | SignError::HoldersRefused(_) => StatusCode::PRECONDITION_FAILED,
        SignError::Protection(e) => protection_status(e),
        SignError::NotPermitted { .. } | SignError::ShareOnly(_) => StatusCode::FORBIDDEN,
        SignError::HoldersUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        SignError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The status of what slashing protection answered, on the signing path and the admin routes.
fn protection_status(e: &ProtectionError) -> StatusCode {
    match e {
        ProtectionError::Refused(_) => StatusCode::PRECONDITION_FAILED,
        ProtectionError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        ProtectionError::WrongChain { .. }
        | ProtectionError::ZeroChain
        | ProtectionError::InvalidInterchange(_)
        | ProtectionError::InvalidRepair(_)
        | ProtectionError::NotShared(_) => StatusCode::BAD_REQUEST,
        ProtectionError::RepairRefused(_) | ProtectionError::FleetSecretMismatch { .. } => StatusCode::CONFLICT,
        ProtectionError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The Key Manager API's endpoints live under this prefix.
pub const KEYMANAGER_PREFIX: &str = "/eth/";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.respond("error")
    }
}

/// An error of the Key Manager API: `{"message": ...}`.
#[derive(Debug)]
pub struct KeyManagerApiError(pub ApiError);

impl<E: Into<ApiError>> From<E> for KeyManagerApiError {
    fn from(e: E) -> Self {
        KeyManagerApiError(e.into())
    }
}

impl IntoResponse for KeyManagerApiError {
    fn into_response(self) -> Response {
        self.0.respond("message")
    }
}

/// A body the extractor refused (too large, unreadable), for a route whose limit is `limit`.
pub fn body_rejection(r: axum::extract::rejection::BytesRejection, limit: usize) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(format!("request body is larger than {limit} bytes"))
    } else {
        ApiError::BadRequest(format!("cannot read request body: {}", r.body_text()))
    }
}
