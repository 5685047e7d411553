//! The one error type handlers return, rendered as `{"error": {code, message, details}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cascade_api::{ErrorBody, ErrorCode, ErrorResponse, FieldProblem};
use cascade_core::{ErrorKind, FieldError};

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

    /// 400 `invalid_request` naming one field of the request.
    pub fn invalid_field(field: &str, reason: String) -> Self {
        ApiError::new(ErrorCode::InvalidRequest, format!("`{field}` {reason}")).with_details(vec![FieldProblem {
            index: None,
            field: field.into(),
            reason,
        }])
    }

    /// 500: work handed to the blocking pool panicked (logged with what it was).
    pub fn blocking_failed(what: &str, e: &tokio::task::JoinError) -> Self {
        tracing::error!(error = %e, "{what} panicked");
        ApiError::new(ErrorCode::Internal, format!("the {what} failed"))
    }

    /// `time_ahead`: `problems` (index in the batch, when a batch; field and reason) lie past
    /// the time horizon.
    pub fn time_ahead(problems: Vec<(Option<usize>, FieldError)>) -> Self {
        let first = problems.first().map_or(String::new(), |(_, e)| format!(": {} {}", e.field, e.reason));
        let n = problems.len();
        ApiError::new(
            ErrorCode::TimeAhead,
            format!(
                "{n} time{} past the server clock's horizon{first}; nothing was written",
                if n == 1 { "" } else { "s" }
            ),
        )
        .with_details(
            problems.into_iter().map(|(index, e)| FieldProblem { index, field: e.field, reason: e.reason }).collect(),
        )
    }
}

/// Every code has exactly one status; no wildcard, so a new code forces a decision here.
fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::MalformedJson
        | ErrorCode::InvalidEvents
        | ErrorCode::EmptyBatch
        | ErrorCode::TimeAhead
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
        ErrorCode::StoreUnavailable
        | ErrorCode::FeatureStoreUnavailable
        | ErrorCode::Unavailable
        | ErrorCode::Overloaded
        | ErrorCode::Timeout => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
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
        // Handlers check the horizon before appending; the store's own check (its clock may
        // have moved on) still answers with the same code.
        if let cascade_store::Error::TimeAhead(problems) = e {
            return ApiError::time_ahead(problems.into_iter().map(|(i, p)| (Some(i), p)).collect());
        }
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
            E::TimeAhead { field, reason } => ApiError::time_ahead(vec![(None, FieldError::new(field, reason))]),
            E::UnknownPipeline { .. } => ApiError::new(ErrorCode::UnknownPipeline, e.to_string())
                .with_details(vec![problem("pipeline", "not configured")]),
            E::ItemNotFound(_) => ApiError::new(ErrorCode::ItemNotFound, e.to_string()),
            E::Config { .. } | E::Bundle(_) | E::Registry(_) | E::Features(_) | E::Internal(_) => by_kind(e.kind(), &e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code;
        let body = ErrorResponse { error: ErrorBody { code, message: self.message, details: self.details } };
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match code {
            ErrorCode::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            // Shedding is brief by design: a second is long enough for the queue to drain.
            ErrorCode::Overloaded => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}
