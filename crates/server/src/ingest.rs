//! `POST /v1/events`: parse, validate the whole batch, append it as one unit.

use crate::body::{self, Media};
use crate::{AppState, error::ApiError};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use cascade_api::{Duplicate, ErrorCode, FieldProblem, IngestResponse};
use cascade_core::Record;
use cascade_store::Outcome;

/// Parses a JSON array of events, or NDJSON (one event per line): NDJSON is chosen by an
/// `application/x-ndjson` content type or, with `application/json`, by a body that does not start
/// with `[`. Duplicate keys are refused ([`body::value`]).
pub fn parse_batch(headers: &HeaderMap, body: &[u8]) -> Result<Vec<serde_json::Value>, ApiError> {
    let array = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if body::media(headers, true)? == Media::Json && array {
        return match body::value(body) {
            Ok(serde_json::Value::Array(values)) => Ok(values),
            Ok(_) => unreachable!("a document starting with `[` is an array"),
            Err(e) => Err(ApiError::new(ErrorCode::MalformedJson, format!("body is not a JSON array of events: {e}"))),
        };
    }
    let mut out = Vec::new();
    for (n, line) in body.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value = body::value(line).map_err(|e| {
            ApiError::new(ErrorCode::MalformedJson, format!("NDJSON line {}: {e}", n + 1)).with_details(vec![
                FieldProblem { index: Some(out.len()), field: String::new(), reason: e.to_string() },
            ])
        })?;
        out.push(value);
    }
    Ok(out)
}

#[utoipa::path(
    post, path = "/v1/events", tag = "events",
    request_body(content = cascade_api::schema::EventBatch, description = "A JSON array of events, or NDJSON with one event per line; at least one event",
        content_type = "application/json"),
    responses(
        (status = 200, description = "Every event is stored (or was stored before, see `duplicates`)", body = IngestResponse),
        (status = 400, description = "Malformed body (`malformed_json`), no events (`empty_batch`), invalid events (`invalid_events`, checked first) or times past the horizon (`time_ahead`); nothing was written", body = cascade_api::ErrorResponse),
        (status = 413, description = "Too many events or too many bytes; nothing was written", body = cascade_api::ErrorResponse),
        (status = 503, description = "The event log cannot take writes", body = cascade_api::ErrorResponse),
    )
)]
pub async fn post_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<IngestResponse>, ApiError> {
    let values = parse_batch(&headers, &body)?;
    if values.is_empty() {
        // Nothing to store: a client that sends nothing most likely lost its batch on the way.
        return Err(ApiError::new(ErrorCode::EmptyBatch, "the request carries no events; send at least one"));
    }
    let max = state.server.max_batch_events;
    if values.len() > max {
        return Err(ApiError::new(
            ErrorCode::BatchTooLarge,
            format!("{} events in one request; the limit is {max} (server.max_batch_events)", values.len()),
        ));
    }
    let mut records = Vec::with_capacity(values.len());
    let mut problems = Vec::new();
    for (index, value) in values.iter().enumerate() {
        match state.schema.validate_event(value) {
            Ok(event) => records.push(Record::Event(event)),
            Err(errors) => problems.extend(errors.into_iter().map(|e| FieldProblem {
                index: Some(index),
                field: e.field,
                reason: e.reason,
            })),
        }
    }
    if !problems.is_empty() {
        let bad = problems.iter().filter_map(|p| p.index).collect::<std::collections::BTreeSet<_>>().len();
        metrics::counter!("cascade_events_rejected_total").increment(values.len() as u64);
        return Err(ApiError::new(
            ErrorCode::InvalidEvents,
            format!("{bad} of {} events are invalid; nothing was written", values.len()),
        )
        .with_details(problems));
    }
    // Schema problems first, then time: an event dated past the horizon would move every
    // watermark derived from the log (features, lateness) to its date.
    let ahead = state.store.horizon().check_batch(&records, state.clock.now());
    if !ahead.is_empty() {
        metrics::counter!("cascade_events_rejected_total").increment(values.len() as u64);
        return Err(ApiError::time_ahead(ahead.into_iter().map(|(i, e)| (Some(i), e)).collect()));
    }
    let outcomes = state.store.append(&records).await?;
    let mut response = IngestResponse { accepted: 0, duplicates: Vec::new(), first_offset: None, last_offset: None };
    for (index, (outcome, record)) in outcomes.iter().zip(&records).enumerate() {
        match *outcome {
            Outcome::Written(offset) => {
                response.accepted += 1;
                response.first_offset.get_or_insert(offset);
                response.last_offset = Some(offset);
            }
            Outcome::Duplicate(offset) => response.duplicates.push(Duplicate {
                index,
                id: record.idempotency_key().unwrap_or_default().to_string(),
                offset,
            }),
        }
    }
    metrics::counter!("cascade_events_ingested_total").increment(response.accepted as u64);
    metrics::counter!("cascade_events_duplicate_total").increment(response.duplicates.len() as u64);
    Ok(Json(response))
}
