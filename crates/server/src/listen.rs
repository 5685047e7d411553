//! The accept loop: connections served by hyper with a header read timeout (which also closes
//! idle keep-alive connections), a cap on the connections served fully, and a graceful drain.
//!
//! Past `server.max_connections`, a connection is still accepted and served, but must send its
//! request's headers within one second and is closed after one request (no keep-alive): a client
//! that sends its request at once (a probe, a user) is answered as usual, while a flood of idle
//! or half-sent connections is shed within a second and never holds descriptors for long. The
//! in-flight slots, not the connection count, bound the work.

use crate::{AppState, router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Header timeout of a connection past the cap.
const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves `state` on `listener` until `shutdown` resolves, then stops accepting and drains the
/// requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let config = state.server.clone();
    let full = router(state.clone());
    let slots = Arc::new(Semaphore::new(config.max_connections));

    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(config.header_read_timeout);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(config.header_read_timeout);
    let mut shed = Builder::new(TokioExecutor::new()).http1_only();
    shed.http1()
        .timer(TokioTimer::new())
        .keep_alive(false)
        .header_read_timeout(OVERFLOW_HEADER_TIMEOUT.min(config.header_read_timeout));
    let (builder, shed) = (Arc::new(builder), Arc::new(shed));

    let graceful = GracefulShutdown::new();
    let mut accept_errors = Throttle::default();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of descriptors (EMFILE) and the like: wait for some to close rather
                    // than spin; the header timeout frees idle ones.
                    if accept_errors.ready() {
                        tracing::warn!(error = %e, "accepting a connection failed; retrying");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        let slot = slots.clone().try_acquire_owned().ok();
        metrics::gauge!("cascade_http_connections").set((config.max_connections - slots.available_permits()) as f64);
        let service = TowerToHyperService::new(full.clone());
        let conn = match &slot {
            Some(_) => graceful.watch(builder.serve_connection(io, service).into_owned()),
            None => {
                metrics::counter!("cascade_http_connections_over_cap_total").increment(1);
                graceful.watch(shed.serve_connection(io, service).into_owned())
            }
        };
        tokio::spawn(async move {
            // A client that goes away mid-request is its own business, not an error of ours.
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

/// At most one log line per second for a repeating condition.
#[derive(Debug, Default)]
struct Throttle(Option<Instant>);

impl Throttle {
    fn ready(&mut self) -> bool {
        let now = Instant::now();
        if self.0.is_some_and(|last| now.duration_since(last) < Duration::from_secs(1)) {
            return false;
        }
        self.0 = Some(now);
        true
    }
}
