//! Item and user upserts and reads.

use crate::body;
use crate::extract::Path;
use crate::{AppState, error::ApiError};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use cascade_api::{ErrorCode, FieldProblem, Item, User};
use cascade_core::{FieldError, ItemRecord, Record, UserRecord, Value};
use std::collections::BTreeMap;

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
        (status = 400, description = "Invalid item (`invalid_item`) or `updated_at`/`created_at` past the horizon (`time_ahead`); nothing was written", body = cascade_api::ErrorResponse),
    ))]
pub async fn put_item(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Item>, ApiError> {
    let body: serde_json::Value = body::json(&headers, &body, "a JSON object")?;
    let item = state.schema.validate_item(&id, &body, state.clock.now()).map_err(|e| {
        ApiError::new(ErrorCode::InvalidItem, format!("item `{id}` is invalid; nothing was written"))
            .with_details(problems(e))
    })?;
    let dto = item_dto(&item, None);
    let record = Record::Item(item);
    let ahead = state.store.horizon().check_record(&record, state.clock.now());
    if !ahead.is_empty() {
        return Err(ApiError::time_ahead(ahead.into_iter().map(|e| (None, e)).collect()));
    }
    let offset = write(&state, record).await?;
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
        (status = 400, description = "Invalid user (`invalid_user`) or `updated_at` past the horizon (`time_ahead`); nothing was written", body = cascade_api::ErrorResponse),
    ))]
pub async fn put_user(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<User>, ApiError> {
    let body: serde_json::Value = body::json(&headers, &body, "a JSON object")?;
    let user = state.schema.validate_user(&id, &body, state.clock.now()).map_err(|e| {
        ApiError::new(ErrorCode::InvalidUser, format!("user `{id}` is invalid; nothing was written"))
            .with_details(problems(e))
    })?;
    let dto = user_dto(&user, None);
    let record = Record::User(user);
    let ahead = state.store.horizon().check_record(&record, state.clock.now());
    if !ahead.is_empty() {
        return Err(ApiError::time_ahead(ahead.into_iter().map(|e| (None, e)).collect()));
    }
    let offset = write(&state, record).await?;
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
