//! The one error type handlers return, rendered as `{"error": {code, message, details}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cascade_api::{ErrorBody, ErrorCode, ErrorResponse, FieldProblem};
use cascade_core::ErrorKind;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub details: Vec<FieldProblem>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { status: status_of(code), code, message: message.into(), details: Vec::new() }
    }

    pub fn with_details(mut self, details: Vec<FieldProblem>) -> Self {
        self.details = details;
        self
    }
}

/// Every code has exactly one status; no wildcard, so a new code forces a decision here.
fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::MalformedJson
        | ErrorCode::InvalidEvents
        | ErrorCode::InvalidItem
        | ErrorCode::InvalidUser
        | ErrorCode::UnknownFeature
        | ErrorCode::InvalidFeatureRequest
        | ErrorCode::InvalidRecommendationRequest
        | ErrorCode::UnknownPipeline
        | ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::BatchTooLarge | ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::ItemNotFound | ErrorCode::UserNotFound | ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::StoreUnavailable | ErrorCode::FeatureStoreUnavailable | ErrorCode::Unavailable => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The code of an error no more specific code describes: one per kind, no wildcard, so a new
/// kind forces a decision here.
fn code_of(kind: ErrorKind) -> ErrorCode {
    match kind {
        ErrorKind::Invalid => ErrorCode::InvalidRequest,
        ErrorKind::NotFound => ErrorCode::NotFound,
        ErrorKind::Conflict => ErrorCode::Conflict,
        ErrorKind::Unavailable => ErrorCode::Unavailable,
        ErrorKind::Internal => ErrorCode::Internal,
    }
}

/// An engine error by its kind, logged when it is the server's fault or a dependency's.
fn by_kind(kind: ErrorKind, e: &dyn std::fmt::Display) -> ApiError {
    match kind {
        ErrorKind::Invalid | ErrorKind::NotFound | ErrorKind::Conflict => {}
        ErrorKind::Unavailable | ErrorKind::Internal => tracing::error!(error = %e, "request failed"),
    }
    ApiError::new(code_of(kind), e.to_string())
}

impl From<cascade_store::Error> for ApiError {
    fn from(e: cascade_store::Error) -> Self {
        let code = match e.kind() {
            ErrorKind::Unavailable => ErrorCode::StoreUnavailable,
            kind @ (ErrorKind::Invalid | ErrorKind::NotFound | ErrorKind::Conflict | ErrorKind::Internal) => {
                code_of(kind)
            }
        };
        tracing::error!(error = %e, "store error");
        ApiError::new(code, e.to_string())
    }
}

impl From<cascade_serving::Error> for ApiError {
    fn from(e: cascade_serving::Error) -> Self {
        use cascade_serving::Error as E;
        let problem =
            |field: &str, reason: &str| FieldProblem { index: None, field: field.into(), reason: reason.into() };
        match &e {
            E::InvalidRequest { field, reason } => {
                ApiError::new(ErrorCode::InvalidRecommendationRequest, e.to_string())
                    .with_details(vec![problem(field, reason)])
            }
            E::UnknownPipeline { .. } => ApiError::new(ErrorCode::UnknownPipeline, e.to_string())
                .with_details(vec![problem("pipeline", "not configured")]),
            E::ItemNotFound(_) => ApiError::new(ErrorCode::ItemNotFound, e.to_string()),
            E::Config { .. } | E::Bundle(_) | E::Registry(_) | E::Features(_) | E::Internal(_) => by_kind(e.kind(), &e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorResponse { error: ErrorBody { code: self.code, message: self.message, details: self.details } };
        (self.status, axum::Json(body)).into_response()
    }
}
