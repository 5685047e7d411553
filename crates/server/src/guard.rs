//! What stands between a connection and a handler: the API key and its scope, the body read
//! under a time and size limit, a slot among the route class's requests in flight, and the
//! request timeout.
//!
//! Overload is answered at once: a request that finds its class's slots taken waits at most
//! `server.queue_timeout` (and only while fewer than `server.max_queued` wait), then gets 503
//! `overloaded` with `Retry-After`, so latency of the requests accepted stays bounded and memory
//! does not grow with the offered load.

use crate::error::ApiError;
use crate::keys::{Denied, KeyRing, Scope};
use crate::{AppState, ServerConfig};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cascade_api::ErrorCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A class of routes: one scope, one pool of slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Writes: events, items, users.
    Ingest,
    /// The cascade and online features.
    Serve,
    /// Catalogue reads.
    Read,
    /// Administrative routes: the model lifecycle, rollouts, the audit log and jobs (the
    /// `admin` scope only).
    Admin,
    /// Health probes: never limited, keyed unless `server.open_health`.
    Health,
    /// Prometheus metrics: never limited, keyed unless `server.open_metrics`.
    Metrics,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Ingest => "ingest",
            Class::Serve => "serve",
            Class::Read => "read",
            Class::Admin => "admin",
            Class::Health => "health",
            Class::Metrics => "metrics",
        }
    }
}

/// What a route needs of the request's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Nothing,
    AnyKey,
    Scope(Scope),
}

/// Slots for one class: `in_flight` execute, up to `max_queued` wait up to `wait`.
#[derive(Debug)]
struct Gate {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_queued: usize,
    wait: Duration,
}

impl Gate {
    fn new(in_flight: usize, config: &ServerConfig) -> Gate {
        Gate {
            slots: Arc::new(Semaphore::new(in_flight)),
            waiting: AtomicUsize::new(0),
            max_queued: config.max_queued,
            wait: config.queue_timeout,
        }
    }

    async fn enter(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_queued {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let permit = tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        permit.ok().and_then(Result::ok)
    }
}

/// The guard's state, shared by every route.
#[derive(Debug)]
pub struct Guard {
    keys: Arc<KeyRing>,
    ingest: Gate,
    serve: Gate,
    read: Gate,
    admin: Gate,
    open_health: bool,
    open_metrics: bool,
    request_timeout: Duration,
    body_timeout: Duration,
    max_body_bytes: usize,
}

impl Guard {
    pub fn new(config: &ServerConfig, keys: Arc<KeyRing>) -> Guard {
        Guard {
            keys,
            ingest: Gate::new(config.in_flight.ingest, config),
            serve: Gate::new(config.in_flight.serve_slots(), config),
            read: Gate::new(config.in_flight.read, config),
            admin: Gate::new(config.in_flight.admin, config),
            open_health: config.open_health,
            open_metrics: config.open_metrics,
            request_timeout: config.request_timeout,
            body_timeout: config.body_read_timeout,
            max_body_bytes: config.max_body_bytes,
        }
    }

    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }

    /// What a class needs of the request's key.
    fn needs(&self, class: Class) -> Need {
        match class {
            Class::Ingest => Need::Scope(Scope::Ingest),
            Class::Serve => Need::Scope(Scope::Serve),
            Class::Read => Need::Scope(Scope::Read),
            Class::Admin => Need::Scope(Scope::Admin),
            // Any key will do: a scraper or a probe needs no data scope.
            Class::Health if !self.open_health => Need::AnyKey,
            Class::Metrics if !self.open_metrics => Need::AnyKey,
            Class::Health | Class::Metrics => Need::Nothing,
        }
    }

    fn gate(&self, class: Class) -> Option<&Gate> {
        match class {
            Class::Ingest => Some(&self.ingest),
            Class::Serve => Some(&self.serve),
            Class::Read => Some(&self.read),
            Class::Admin => Some(&self.admin),
            Class::Health | Class::Metrics => None,
        }
    }
}

/// The middleware of a route of `class` (see the module's documentation).
pub async fn guard(State((state, class)): State<(AppState, Class)>, req: Request, next: Next) -> Response {
    let guard = &state.guard;
    let mut req = req;
    let needs = match guard.needs(class) {
        Need::Nothing => None,
        Need::AnyKey => Some(None),
        Need::Scope(scope) => Some(Some(scope)),
    };
    if let Some(scope) = needs {
        let authorization = req.headers().get(header::AUTHORIZATION).map(axum::http::HeaderValue::as_bytes);
        match guard.keys.check(authorization, scope) {
            Ok(principal) => {
                req.extensions_mut().insert(principal);
            }
            Err(denied) => return denial(&denied).into_response(),
        }
    }
    let req = match read_body(guard, req).await {
        Ok(req) => req,
        Err(e) => return e.into_response(),
    };
    let _slot = match guard.gate(class) {
        None => None,
        Some(gate) => match gate.enter().await {
            Some(slot) => Some(slot),
            None => {
                metrics::counter!("cascade_http_shed_total", "class" => class.name()).increment(1);
                return ApiError::new(
                    ErrorCode::Overloaded,
                    format!("too many {} requests at once; retry shortly", class.name()),
                )
                .into_response();
            }
        },
    };
    match tokio::time::timeout(guard.request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("cascade_http_timeouts_total", "class" => class.name()).increment(1);
            ApiError::new(
                ErrorCode::Timeout,
                format!("the request took longer than server.request_timeout ({:?})", guard.request_timeout),
            )
            .into_response()
        }
    }
}

fn denial(denied: &Denied) -> ApiError {
    match denied {
        Denied::Missing => ApiError::new(
            ErrorCode::Unauthorized,
            "this route needs an API key: send `Authorization: Bearer <key>` (`cascade keys create`)",
        ),
        Denied::Unknown => ApiError::new(ErrorCode::Unauthorized, "the API key is not known or was revoked"),
        Denied::Scope { name, needs } => {
            ApiError::new(ErrorCode::Forbidden, format!("the API key `{name}` lacks the `{needs}` scope"))
        }
    }
}

/// Reads the whole body within `server.body_read_timeout` and `server.max_body_bytes`, so that
/// a slow or oversized upload is refused before it holds a slot.
async fn read_body(guard: &Guard, req: Request) -> Result<Request, ApiError> {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(req);
    }
    let (parts, body) = req.into_parts();
    let too_large = || ApiError::new(ErrorCode::PayloadTooLarge, "request body exceeds server.max_body_bytes");
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > guard.max_body_bytes) {
        return Err(too_large());
    }
    let read = axum::body::to_bytes(body, guard.max_body_bytes);
    let bytes = match tokio::time::timeout(guard.body_timeout, read).await {
        Err(_) => {
            return Err(ApiError::new(
                ErrorCode::RequestTimeout,
                format!("the body did not arrive within server.body_read_timeout ({:?})", guard.body_timeout),
            ));
        }
        Ok(Err(e)) if is_length_limit(&e) => return Err(too_large()),
        Ok(Err(e)) => return Err(ApiError::new(ErrorCode::MalformedJson, format!("reading the body: {e}"))),
        Ok(Ok(bytes)) => bytes,
    };
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(in_flight: usize, max_queued: usize, wait_ms: u64) -> Gate {
        let config =
            ServerConfig { max_queued, queue_timeout: Duration::from_millis(wait_ms), ..ServerConfig::default() };
        Gate::new(in_flight, &config)
    }

    #[tokio::test]
    async fn a_full_gate_sheds_at_once_when_no_one_may_wait() {
        let g = gate(2, 0, 1_000);
        let (a, b) = (g.enter().await, g.enter().await);
        assert!(a.is_some() && b.is_some());
        assert!(g.enter().await.is_none(), "a third request with no queue is shed");
        drop(a);
        assert!(g.enter().await.is_some(), "a freed slot is taken");
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_get_a_freed_slot_or_give_up_after_the_queue_timeout() {
        let g = Arc::new(gate(1, 1, 100));
        let held = g.enter().await.unwrap();
        // No slot frees within the wait: shed (paused time advances to the timeout).
        assert!(g.enter().await.is_none());
        // A slot freed while waiting is handed over.
        let waiter = tokio::spawn({
            let g = g.clone();
            async move { g.enter().await.is_some() }
        });
        tokio::task::yield_now().await;
        // The queue holds one: a second waiter is shed at once.
        assert!(g.enter().await.is_none());
        drop(held);
        assert!(waiter.await.unwrap());
        assert_eq!(g.waiting.load(Ordering::Acquire), 0, "waiters are uncounted when they leave");
    }
}
