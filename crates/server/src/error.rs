//! The one error type handlers return, rendered as `{"error": {code, message, details}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cascade_api::{ErrorBody, ErrorCode, ErrorResponse, FieldProblem};

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
        | ErrorCode::UnknownPipeline => StatusCode::BAD_REQUEST,
        ErrorCode::BatchTooLarge | ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::ItemNotFound | ErrorCode::UserNotFound => StatusCode::NOT_FOUND,
        ErrorCode::StoreUnavailable | ErrorCode::FeatureStoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<cascade_store::Error> for ApiError {
    fn from(e: cascade_store::Error) -> Self {
        let code = match e.kind() {
            cascade_store::ErrorKind::Unavailable => ErrorCode::StoreUnavailable,
            cascade_store::ErrorKind::NotFound | cascade_store::ErrorKind::Internal => ErrorCode::Internal,
        };
        tracing::error!(error = %e, "store error");
        ApiError::new(code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorResponse { error: ErrorBody { code: self.code, message: self.message, details: self.details } };
        (self.status, axum::Json(body)).into_response()
    }
}
