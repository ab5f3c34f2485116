//! The one error type of the HTTP API and its JSON shape:
//! `{"error": {"code": "not_found", "message": "no such conversation"}}`.
//!
//! Every outcome maps to its status on purpose; 5xx bodies are generic and the cause is logged
//! once, here, inside the request's span.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::bot::knowledge_base::KbError;
use crate::people::agents::AgentError;
use crate::people::visitors::VisitorError;
use crate::sites::SiteError;
use crate::storage::StorageError;

/// The JSON shape of every error answer (documented in the OpenAPI document).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `bad_request`, `unauthorized`, `invalid_credentials`, `forbidden`,
    /// `origin_not_allowed`, `invalid_signature`, `not_found`, `conflict`, `too_large`,
    /// `unsupported_type`, `invalid_field`, `rate_limited`, `unavailable`, `internal`.
    pub code: String,
    /// For people; names the field to fix where there is one.
    pub message: String,
}

#[derive(Debug)]
pub enum ApiError {
    /// 400: the request cannot be read (bad JSON, wrong content type).
    BadRequest(String),
    /// 401: no credentials, or unknown ones.
    Unauthorized(String),
    /// 401: a login with a wrong email or password.
    InvalidCredentials,
    /// 403: authenticated, but not allowed.
    Forbidden(String),
    /// 403: the request's `Origin` is not one of the site's allowed origins.
    OriginNotAllowed,
    /// 403: a claimed identity without a valid signature on a site that enforces them.
    InvalidSignature,
    /// 404: no such thing, or not visible to the caller (the two look the same on purpose).
    NotFound(String),
    /// 409: a duplicate.
    Conflict(String),
    /// 413: the body is larger than the limit.
    PayloadTooLarge(String),
    /// 415: a file type that is not accepted.
    UnsupportedMediaType(String),
    /// 422: readable, but a field is invalid; the message names it.
    Unprocessable(String),
    /// 429: too many attempts; retry after the given seconds.
    TooManyRequests { retry_after_secs: u64 },
    /// 503: shutting down or over a limit.
    Unavailable(String),
    /// 500: the cause is logged, never sent.
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            ApiError::BadRequest(message) => (StatusCode::BAD_REQUEST, "bad_request", message.clone()),
            ApiError::Unauthorized(message) => (StatusCode::UNAUTHORIZED, "unauthorized", message.clone()),
            ApiError::InvalidCredentials => {
                (StatusCode::UNAUTHORIZED, "invalid_credentials", "wrong email or password".into())
            }
            ApiError::Forbidden(message) => (StatusCode::FORBIDDEN, "forbidden", message.clone()),
            ApiError::OriginNotAllowed => {
                (StatusCode::FORBIDDEN, "origin_not_allowed", "this origin is not allowed for the site".into())
            }
            ApiError::InvalidSignature => {
                (StatusCode::FORBIDDEN, "invalid_signature", "the user signature does not match".into())
            }
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, "not_found", message.clone()),
            ApiError::Conflict(message) => (StatusCode::CONFLICT, "conflict", message.clone()),
            ApiError::PayloadTooLarge(message) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", message.clone()),
            ApiError::UnsupportedMediaType(message) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_type", message.clone())
            }
            ApiError::Unprocessable(message) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message.clone()),
            ApiError::TooManyRequests { retry_after_secs } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many attempts; retry in {retry_after_secs} s"),
            ),
            ApiError::Unavailable(message) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", message.clone()),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error".into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!(%cause, "request failed");
        }
        let (status, code, message) = self.parts();
        let body = ErrorBody { error: ErrorDetail { code: code.to_owned(), message } };
        let mut response = (status, axum::Json(body)).into_response();
        if let ApiError::TooManyRequests { retry_after_secs } = self {
            response.headers_mut().insert(header::RETRY_AFTER, retry_after_secs.into());
        }
        response
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::ApplianceOnly(_) => ApiError::Unavailable(error.to_string()),
            error => ApiError::Internal(error.to_string()),
        }
    }
}

impl From<VisitorError> for ApiError {
    fn from(error: VisitorError) -> Self {
        match error {
            VisitorError::InvalidSignature => ApiError::InvalidSignature,
            VisitorError::Blocked => ApiError::Forbidden("this visitor is blocked".into()),
            VisitorError::NotFound => ApiError::NotFound(error.to_string()),
            VisitorError::Invalid(message) => ApiError::Unprocessable(message),
            VisitorError::Storage(error) => error.into(),
        }
    }
}

impl From<AgentError> for ApiError {
    fn from(error: AgentError) -> Self {
        match error {
            AgentError::DuplicateEmail(_) => ApiError::Conflict(error.to_string()),
            AgentError::NotFound(_) => ApiError::NotFound(error.to_string()),
            AgentError::InvalidCredentials => ApiError::InvalidCredentials,
            AgentError::WrongCode => ApiError::Unauthorized(error.to_string()),
            AgentError::TwoFactor(error) => error.into(),
            AgentError::Invalid(error) => ApiError::Unprocessable(error.to_string()),
            AgentError::PasswordChecksBusy => ApiError::TooManyRequests { retry_after_secs: 1 },
            AgentError::Storage(error) => error.into(),
        }
    }
}

impl From<crate::people::visitor_limits::LimitExceeded> for ApiError {
    fn from(error: crate::people::visitor_limits::LimitExceeded) -> Self {
        ApiError::TooManyRequests { retry_after_secs: error.retry_after_secs }
    }
}

impl From<crate::chat::uploads::UploadError> for ApiError {
    fn from(error: crate::chat::uploads::UploadError) -> Self {
        use crate::chat::uploads::UploadError;
        match error {
            UploadError::Empty | UploadError::Invalid(_) => ApiError::Unprocessable(error.to_string()),
            UploadError::TooLarge(_) => ApiError::PayloadTooLarge(error.to_string()),
            UploadError::Refused => ApiError::UnsupportedMediaType(error.to_string()),
            UploadError::NotFound => ApiError::NotFound(error.to_string()),
            UploadError::QuotaExceeded(_) => ApiError::TooManyRequests { retry_after_secs: 3600 },
            UploadError::Storage(error) => error.into(),
        }
    }
}

impl From<crate::chat::conversations::ConversationError> for ApiError {
    fn from(error: crate::chat::conversations::ConversationError) -> Self {
        use crate::chat::conversations::ConversationError;
        match error {
            ConversationError::NotFound => ApiError::NotFound(error.to_string()),
            ConversationError::Closed
            | ConversationError::AlreadyAssigned
            | ConversationError::NotClosed
            | ConversationError::AlreadyRated
            | ConversationError::VisitorHasOpen
            | ConversationError::LeaseNotHeld => ApiError::Conflict(error.to_string()),
            ConversationError::Invalid(message) => ApiError::Unprocessable(message),
            ConversationError::Storage(error) => error.into(),
        }
    }
}

impl From<crate::chat::offline_messages::OfflineMessageError> for ApiError {
    fn from(error: crate::chat::offline_messages::OfflineMessageError) -> Self {
        use crate::chat::offline_messages::OfflineMessageError;
        match error {
            OfflineMessageError::Invalid(message) => ApiError::Unprocessable(message),
            OfflineMessageError::Storage(error) => error.into(),
        }
    }
}

impl From<crate::email::transcript::TranscriptError> for ApiError {
    fn from(error: crate::email::transcript::TranscriptError) -> Self {
        use crate::email::transcript::TranscriptError;
        match error {
            TranscriptError::NotFound => ApiError::NotFound(error.to_string()),
            TranscriptError::Invalid(_) => ApiError::Unprocessable(error.to_string()),
            TranscriptError::Storage(error) => error.into(),
        }
    }
}

impl From<SiteError> for ApiError {
    fn from(error: SiteError) -> Self {
        match error {
            SiteError::NotFound(_) => ApiError::NotFound(error.to_string()),
            SiteError::Invalid(error) => ApiError::Unprocessable(error.to_string()),
            SiteError::Storage(error) => error.into(),
        }
    }
}

impl From<KbError> for ApiError {
    fn from(error: KbError) -> Self {
        match error {
            KbError::NotFound | KbError::NoSuchSite => ApiError::NotFound(error.to_string()),
            KbError::Invalid(message) => ApiError::Unprocessable(message),
            KbError::Storage(error) => error.into(),
        }
    }
}
