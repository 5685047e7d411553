//! Item and user upserts and reads.

use crate::extract::Path;
use crate::ingest::body_rejection;
use crate::{AppState, error::ApiError};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use cascade_api::{ErrorCode, FieldProblem, Item, User};
use cascade_core::{FieldError, ItemRecord, Record, UserRecord, Value};
use std::collections::BTreeMap;

fn json_body(body: Result<Bytes, BytesRejection>) -> Result<serde_json::Value, ApiError> {
    let body = body.map_err(|e| body_rejection(&e))?;
    serde_json::from_slice(&body).map_err(|e| ApiError::new(ErrorCode::MalformedJson, format!("body is not JSON: {e}")))
}

fn problems(errors: Vec<FieldError>) -> Vec<FieldProblem> {
    errors.into_iter().map(|e| FieldProblem { index: None, field: e.field, reason: e.reason }).collect()
}

fn attributes(attrs: &[(String, Value)]) -> BTreeMap<String, serde_json::Value> {
    attrs.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()
}

fn item_dto(r: &ItemRecord, offset: Option<u64>) -> Item {
    Item {
        id: r.id.clone(),
        attributes: attributes(&r.attributes),
        available: r.available,
        created_at: r.created_at.map(|t| t.to_string()),
        updated_at: r.updated_at.to_string(),
        offset,
    }
}

fn user_dto(r: &UserRecord, offset: Option<u64>) -> User {
    User { id: r.id.clone(), attributes: attributes(&r.attributes), updated_at: r.updated_at.to_string(), offset }
}

async fn write(state: &AppState, record: Record) -> Result<u64, ApiError> {
    match state.store.append(&[record]).await?[..] {
        [cascade_store::Outcome::Written(offset)] => Ok(offset),
        _ => Err(ApiError::new(ErrorCode::Internal, "catalogue upsert was not written")),
    }
}

#[utoipa::path(put, path = "/v1/items/{id}", tag = "catalogue",
    params(("id" = String, Path, description = "Item id: 1 to 256 bytes (UTF-8) without control characters",
        min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")),
    request_body = cascade_api::ItemIn,
    responses(
        (status = 200, description = "Stored; the record as it now reads", body = Item),
        (status = 400, description = "Invalid item; nothing was written", body = cascade_api::ErrorResponse),
    ))]
pub async fn put_item(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Item>, ApiError> {
    let body = json_body(body)?;
    let item = state.schema.validate_item(&id, &body, state.clock.now()).map_err(|e| {
        ApiError::new(ErrorCode::InvalidItem, format!("item `{id}` is invalid; nothing was written"))
            .with_details(problems(e))
    })?;
    let dto = item_dto(&item, None);
    let offset = write(&state, Record::Item(item)).await?;
    Ok(Json(Item { offset: Some(offset), ..dto }))
}

#[utoipa::path(get, path = "/v1/items/{id}", tag = "catalogue",
    params(("id" = String, Path, description = "Item id: 1 to 256 bytes (UTF-8) without control characters",
        min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")),
    responses(
        (status = 200, description = "The latest version of the item", body = Item),
        (status = 400, description = "The id is not UTF-8 (`invalid_request`)", body = cascade_api::ErrorResponse),
        (status = 404, description = "Unknown or deleted item", body = cascade_api::ErrorResponse),
    ))]
pub async fn get_item(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Item>, ApiError> {
    let item =
        state.store.item(&id).ok_or_else(|| ApiError::new(ErrorCode::ItemNotFound, format!("no item `{id}`")))?;
    Ok(Json(item_dto(&item, None)))
}

#[utoipa::path(put, path = "/v1/users/{id}", tag = "catalogue",
    params(("id" = String, Path, description = "User id: 1 to 256 bytes (UTF-8) without control characters",
        min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")),
    request_body = cascade_api::UserIn,
    responses(
        (status = 200, description = "Stored; the record as it now reads", body = User),
        (status = 400, description = "Invalid user; nothing was written", body = cascade_api::ErrorResponse),
    ))]
pub async fn put_user(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<User>, ApiError> {
    let body = json_body(body)?;
    let user = state.schema.validate_user(&id, &body, state.clock.now()).map_err(|e| {
        ApiError::new(ErrorCode::InvalidUser, format!("user `{id}` is invalid; nothing was written"))
            .with_details(problems(e))
    })?;
    let dto = user_dto(&user, None);
    let offset = write(&state, Record::User(user)).await?;
    Ok(Json(User { offset: Some(offset), ..dto }))
}

#[utoipa::path(get, path = "/v1/users/{id}", tag = "catalogue",
    params(("id" = String, Path, description = "User id: 1 to 256 bytes (UTF-8) without control characters",
        min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")),
    responses(
        (status = 200, description = "The latest version of the user", body = User),
        (status = 400, description = "The id is not UTF-8 (`invalid_request`)", body = cascade_api::ErrorResponse),
        (status = 404, description = "Unknown user", body = cascade_api::ErrorResponse),
    ))]
pub async fn get_user(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<User>, ApiError> {
    let user =
        state.store.user(&id).ok_or_else(|| ApiError::new(ErrorCode::UserNotFound, format!("no user `{id}`")))?;
    Ok(Json(user_dto(&user, None)))
}
