//! `Path` and `Query` extractors whose rejections use the JSON error shape: axum's own answer
//! a bad path segment or query string with a `text/plain` 400, which clients cannot match on.

use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::request::Parts;
use cascade_api::{ErrorCode, FieldProblem};
use serde::de::DeserializeOwned;

/// axum's `Path`, refusing with `invalid_request` naming the parameter.
#[derive(Debug)]
pub struct Path<T>(pub T);

/// axum's `Query`, refusing with `invalid_request` naming the parameter.
#[derive(Debug)]
pub struct Query<T>(pub T);

fn invalid(field: String, reason: String, message: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message).with_details(vec![FieldProblem { index: None, field, reason }])
}

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(path_rejection(&rejection)),
        }
    }
}

/// The parameter a path error is about: the key axum names, or the route's only parameter.
fn path_rejection(rejection: &PathRejection) -> ApiError {
    use axum::extract::path::ErrorKind as K;
    let reason = rejection.body_text();
    // A rejection axum answers with a 5xx (an extractor that does not fit its route) is our bug.
    if rejection.status().is_server_error() {
        tracing::error!(error = %reason, "path extractor does not fit its route");
        return ApiError::new(ErrorCode::Internal, reason);
    }
    let field = match rejection {
        PathRejection::FailedToDeserializePathParams(e) => match e.kind() {
            K::ParseErrorAtKey { key, .. } | K::InvalidUtf8InPathParam { key } | K::DeserializeError { key, .. } => {
                key.clone()
            }
            _ => String::new(),
        },
        _ => String::new(),
    };
    let message = if field.is_empty() { reason.clone() } else { format!("path parameter `{field}`: {reason}") };
    invalid(field, reason, message)
}

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(query_rejection(&rejection)),
        }
    }
}

/// axum words a bad query as `Failed to deserialize query string: <param>: <reason>` (the
/// parameter is absent when the string as a whole does not parse).
fn query_rejection(rejection: &QueryRejection) -> ApiError {
    let text = rejection.body_text();
    let detail = text.strip_prefix("Failed to deserialize query string: ").unwrap_or(&text);
    let (field, reason) = match detail.split_once(": ") {
        Some((field, reason)) if !field.is_empty() && !field.contains(char::is_whitespace) => {
            (field.to_string(), reason.to_string())
        }
        _ => (String::new(), detail.to_string()),
    };
    let message = if field.is_empty() {
        format!("bad query string: {reason}")
    } else {
        format!("query parameter `{field}`: {reason}")
    };
    invalid(field, reason, message)
}

#[cfg(test)]
mod tests {
    /// The document's limits (`cascade-api`, which depends on nothing) are the ones the server
    /// enforces (`cascade-core`).
    #[test]
    fn documented_limits_are_the_enforced_ones() {
        assert_eq!(cascade_api::schema::MAX_ID_BYTES, cascade_core::schema::MAX_ID_BYTES);
        assert_eq!(cascade_api::schema::MAX_TIMESTAMP_MS, cascade_core::time::MAX_MILLIS);
    }
}
