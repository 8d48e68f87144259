//! The one mapping from errors to HTTP responses, in Kylin's envelope.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use spool_core::ServiceError;
use tracing::error;

/// Kylin's code for a failed call.
const ERROR_CODE: &str = "999";

/// Everything a handler can answer with instead of success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing or wrong credentials.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The user has too many queries queued or running.
    #[error("{0}")]
    TooManyQueries(String),
    /// As many password checks as allowed are running; the login was not checked.
    #[error("too many logins are being checked at once; retry in a second")]
    LoginsBusy,
    /// Too many failed logins from this client.
    #[error("too many failed logins; retry in {0} s")]
    TooManyAttempts(u64),
    /// The request is malformed; the message says which field.
    #[error("{0}")]
    BadRequest(String),
    /// No such route or resource.
    #[error("{0}")]
    NotFound(String),
    /// The method is not served on this path.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The resource exists but is not in a state that allows this; the code says which state.
    #[error("{1}")]
    Conflict(&'static str, String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The requested byte range lies outside the result (the result's length rides along for
    /// the `Content-Range` header).
    #[error("requested range is outside the result of {0} bytes")]
    RangeNotSatisfiable(u64),
    /// The request body is larger than allowed.
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// A backend cannot take the request now; the code says which and why. Retrying later
    /// may succeed.
    #[error("{1}")]
    Unavailable(&'static str, String),
    /// Something broke on our side.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(e) => Self::BadRequest(e.to_string()),
            ServiceError::Unsupported(message) => Self::BadRequest(message),
            e @ ServiceError::NotFound(_) => Self::NotFound(e.to_string()),
            e @ ServiceError::NotReady(_) => Self::Conflict("SPOOL-QUERY-NOT-READY", e.to_string()),
            e @ ServiceError::QueryFailed { .. } => {
                Self::Conflict("SPOOL-QUERY-FAILED", e.to_string())
            }
            ServiceError::Forbidden(message) => Self::Forbidden(message),
            e @ ServiceError::ProjectNotFound(_) => Self::NotFound(e.to_string()),
            e @ ServiceError::WrongProject { .. } => Self::BadRequest(e.to_string()),
            e @ ServiceError::IdempotencyConflict { .. } => {
                Self::Conflict("SPOOL-IDEMPOTENCY-CONFLICT", e.to_string())
            }
            e @ ServiceError::AlreadyFinished { .. } => {
                Self::Conflict("SPOOL-QUERY-FINISHED", e.to_string())
            }
            e @ ServiceError::TooManyQueries { .. } => Self::TooManyQueries(e.to_string()),
            e @ ServiceError::StoreFull => Self::Unavailable("SPOOL-DISK-FULL", e.to_string()),
            e @ ServiceError::StoreUnavailable(_) => {
                Self::Unavailable("SPOOL-STORE-UNAVAILABLE", e.to_string())
            }
            ServiceError::Internal(source) => Self::Internal(source),
        }
    }
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::TooManyAttempts(_) | Self::TooManyQueries(_) | Self::LoginsBusy => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(..) => StatusCode::CONFLICT,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::Unavailable(..) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code of this error (Kylin 5's where Kylin has one), the envelope's
    /// `error_code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "KE-010003208",
            Self::TooManyAttempts(_) => "SPOOL-LOGIN-THROTTLED",
            Self::LoginsBusy => "SPOOL-LOGIN-BUSY",
            Self::TooManyQueries(_) => "SPOOL-TOO-MANY-QUERIES",
            Self::BadRequest(_) => "SPOOL-BAD-REQUEST",
            Self::NotFound(_) => "SPOOL-NOT-FOUND",
            Self::MethodNotAllowed => "SPOOL-METHOD-NOT-ALLOWED",
            Self::Conflict(code, _) => code,
            Self::Forbidden(_) => "SPOOL-FORBIDDEN",
            Self::RangeNotSatisfiable(_) => "SPOOL-RANGE-NOT-SATISFIABLE",
            Self::PayloadTooLarge(_) => "SPOOL-PAYLOAD-TOO-LARGE",
            Self::Unavailable(code, _) => code,
            Self::Internal(_) => "SPOOL-INTERNAL",
        }
    }
}

/// Builds the error envelope with `status`, `msg` and the stable `error_code`.
pub(crate) fn envelope(status: StatusCode, error_code: &str, msg: &str) -> Response {
    let body = json!({ "code": ERROR_CODE, "data": null, "msg": msg, "error_code": error_code });
    (status, Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            Self::Internal(source) => {
                let reference = uuid::Uuid::new_v4();
                error!(%reference, error = %source, source = ?source, "internal error");
                format!("internal error; reference {reference}")
            }
            other => other.to_string(),
        };
        let mut response = envelope(status, self.code(), &message);
        match self {
            Self::Unauthorized(_) => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"spool\", charset=\"UTF-8\""),
                );
            }
            Self::TooManyAttempts(seconds) => {
                if let Ok(v) = HeaderValue::from_str(&seconds.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            Self::RangeNotSatisfiable(len) => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    response.headers_mut().insert(header::CONTENT_RANGE, v);
                }
            }
            Self::TooManyQueries(_) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Self::LoginsBusy => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::Unavailable(..) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            }
            _ => {}
        }
        response
    }
}
