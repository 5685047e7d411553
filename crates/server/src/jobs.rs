//! `POST /v1/jobs`, `GET /v1/jobs/{id}`, `GET /v1/jobs`: training, evaluation and
//! precomputation, run by the node. This module parses and validates the request and names who
//! submitted it; the node's runner (a [`JobQueue`]) queues, runs, records and audits the job.

use crate::AppState;
use crate::body;
use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::keys::Principal;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cascade_api::{ErrorCode, Job, JobList, JobRequest, MAX_JOB_K};
use cascade_core::ErrorKind;
use std::sync::Arc;

/// Jobs listed by `GET /v1/jobs` unless `limit` says otherwise, and the most it takes.
const DEFAULT_LIST: usize = 20;
const MAX_LIST: usize = 100;

/// The node's job runner, as the HTTP API reaches it.
pub trait JobQueue: Send + Sync {
    /// Queues `request`, submitted by `who` (`key:NAME` or `anonymous`), and records it (and
    /// its submission in the audit log) before answering; returns the job as queued. Blocking.
    fn submit(&self, request: JobRequest, who: &str) -> Result<Job, JobRefused>;

    /// The job `id`, if there is one; an id not of the job id shape names none. Blocking (an
    /// older job is read from disk).
    fn get(&self, id: &str) -> Result<Option<Job>, JobRefused>;

    /// The `limit` most recent jobs, newest first, without their logs.
    fn list(&self, limit: usize) -> Vec<Job>;
}

/// Why a job was not queued or cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum JobRefused {
    /// A training is queued or running (one training at a time per project), or too many jobs
    /// are queued.
    #[error("{0}")]
    Conflict(String),
    /// The runner is stopping, or cannot record the job (its directory, the audit log).
    #[error("{0}")]
    Unavailable(String),
}

impl JobRefused {
    pub fn kind(&self) -> ErrorKind {
        match self {
            JobRefused::Conflict(_) => ErrorKind::Conflict,
            JobRefused::Unavailable(_) => ErrorKind::Unavailable,
        }
    }
}

impl From<JobRefused> for ApiError {
    fn from(e: JobRefused) -> Self {
        match e {
            JobRefused::Conflict(message) => ApiError::new(ErrorCode::Conflict, message),
            JobRefused::Unavailable(message) => {
                tracing::error!(error = %message, "job request failed");
                ApiError::new(ErrorCode::Unavailable, message)
            }
        }
    }
}

fn queue(state: &AppState) -> Result<Arc<dyn JobQueue>, ApiError> {
    state.job_queue.clone().ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "this server runs no jobs"))
}

/// Who a request authenticated as, in the audit log's words.
fn who(principal: Option<&Principal>) -> String {
    match principal.and_then(|p| p.name.as_deref()) {
        Some(name) => format!("key:{name}"),
        None => "anonymous".into(),
    }
}

#[utoipa::path(post, path = "/v1/jobs", tag = "jobs",
    request_body = JobRequest,
    responses(
        (status = 202, description = "Queued; `Location` names the job to poll", body = Job,
            headers(("location" = String, description = "`/v1/jobs/{id}`"))),
        (status = 400, description = "Malformed body (`malformed_json`: an unknown kind or parameter) or a parameter out of range (`invalid_request`)", body = cascade_api::ErrorResponse),
        (status = 409, description = "A training is queued or running, here or as `cascade train` (`conflict`: one training at a time per project), or too many jobs are queued", body = cascade_api::ErrorResponse),
    )
)]
pub async fn post_job(
    State(state): State<AppState>,
    principal: Option<axum::Extension<Principal>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: JobRequest = body::json(&headers, &body, "a job request")?;
    if let JobRequest::Train { params } | JobRequest::Evaluate { params } = &request
        && let Some(k) = params.k
        && !(1..=MAX_JOB_K).contains(&k)
    {
        return Err(ApiError::invalid_field("params.k", format!("must be between 1 and {MAX_JOB_K}")));
    }
    let queue = queue(&state)?;
    let who = who(principal.as_ref().map(|p| &p.0));
    let job = tokio::task::spawn_blocking(move || queue.submit(request, &who))
        .await
        .map_err(|e| ApiError::blocking_failed("job request", &e))??;
    let location = HeaderValue::from_str(&format!("/v1/jobs/{}", job.id))
        .map_err(|_| ApiError::new(ErrorCode::Internal, "a job id is not a header value"))?;
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(job)).into_response())
}

#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "A job id, as `POST /v1/jobs` returned it", pattern = r"^job_[0-9a-f]{12}$")),
    responses(
        (status = 200, description = "The job: state, progress, its log's latest lines, and its result or error", body = Job),
        (status = 404, description = "No such job (`not_found`)", body = cascade_api::ErrorResponse),
    )
)]
pub async fn get_job(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Job>, ApiError> {
    let queue = queue(&state)?;
    let lookup = id.clone();
    let job = tokio::task::spawn_blocking(move || queue.get(&lookup))
        .await
        .map_err(|e| ApiError::blocking_failed("job request", &e))??;
    job.map(Json).ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no job `{id}`")))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// How many jobs (default 20, at most 100).
    #[param(minimum = 1, maximum = 100, nullable = false)]
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/jobs", tag = "jobs",
    params(ListQuery),
    responses(
        (status = 200, description = "The most recent jobs, newest first, without their logs", body = JobList),
        (status = 400, description = "`limit` out of range or not an integer (`invalid_request`)", body = cascade_api::ErrorResponse),
    )
)]
pub async fn list_jobs(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<JobList>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIST);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(ApiError::invalid_field("limit", format!("must be between 1 and {MAX_LIST}")));
    }
    Ok(Json(JobList { jobs: queue(&state)?.list(limit) }))
}
