//! The supervisor of a node's long-running work: named jobs, each with its health, its restart
//! policy and its metrics, stopped together and in order.
//!
//! Every round of a job runs as its own task, so a round that panics is caught, counted and
//! followed by the next one (after a backoff) instead of silently ending the job — the failure
//! a hand-spawned loop hides until someone notices stale features.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Consecutive failures double a job's wait up to this many times (×64).
const MAX_BACKOFF_DOUBLINGS: u32 = 6;

/// How a job is doing, as `GET /v2/health/jobs`-style reports and tests read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobHealth {
    pub rounds: u64,
    pub failures: u64,
    pub panics: u64,
    /// Failures (or panics) since the last successful round.
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    /// Whether the job has ended (stopped, or finished by itself).
    pub ended: bool,
}

#[derive(Debug, Default)]
struct Registry {
    jobs: Mutex<BTreeMap<&'static str, JobHealth>>,
}

impl Registry {
    fn update(&self, job: &'static str, f: impl FnOnce(&mut JobHealth)) {
        f(self.jobs.lock().entry(job).or_default());
    }
}

/// What a round reports; `Err` is logged with the job's name, counted and backed off from.
pub type RoundResult = Result<(), String>;

/// Whether a job keeps running: read between rounds, so a round in progress always finishes.
#[derive(Debug, Clone)]
pub struct StopSignal(watch::Receiver<bool>);

impl StopSignal {
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Sleeps `duration`, or less if the node stops meanwhile. Returns whether it stopped.
    pub async fn sleep(&mut self, duration: Duration) -> bool {
        if self.is_stopped() {
            return true;
        }
        tokio::select! {
            () = tokio::time::sleep(duration) => self.is_stopped(),
            _ = self.0.changed() => true,
        }
    }
}

/// Runs named jobs until [`Supervisor::shutdown`].
#[derive(Debug)]
pub struct Supervisor {
    stop: watch::Sender<bool>,
    registry: Arc<Registry>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor { stop: watch::channel(false).0, registry: Arc::default(), tasks: Vec::new() }
    }
}

/// Records a round's outcome in the registry, the metrics and the log; returns whether it
/// succeeded.
fn record(registry: &Registry, job: &'static str, outcome: Result<RoundResult, tokio::task::JoinError>) -> bool {
    let (label, error) = match outcome {
        Ok(Ok(())) => ("ok", None),
        Ok(Err(e)) => ("failed", Some(e)),
        Err(e) => ("panicked", Some(if e.is_panic() { "the round panicked".to_string() } else { e.to_string() })),
    };
    metrics::counter!("cascade_job_rounds_total", "job" => job, "outcome" => label).increment(1);
    let mut consecutive = 0;
    registry.update(job, |h| {
        h.rounds += 1;
        match label {
            "ok" => h.consecutive_failures = 0,
            "failed" => h.failures += 1,
            _ => h.panics += 1,
        }
        if let Some(e) = &error {
            h.consecutive_failures = h.consecutive_failures.saturating_add(1);
            h.last_error = Some(e.clone());
        }
        consecutive = h.consecutive_failures;
    });
    metrics::gauge!("cascade_job_consecutive_failures", "job" => job).set(f64::from(consecutive));
    match error {
        None => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            metrics::gauge!("cascade_job_last_success_seconds", "job" => job).set(now.as_secs_f64());
            true
        }
        Some(e) => {
            // Every failure while they are rare, then at doubling intervals: a dependency that is
            // down for an hour must not write a line per poll.
            if consecutive.is_power_of_two() {
                tracing::error!(job, error = %e, consecutive, "job round failed; retrying with backoff");
            }
            false
        }
    }
}

/// The wait after a round: `base`, doubled per consecutive failure (up to ×64).
fn backoff(base: Duration, registry: &Registry, job: &'static str) -> Duration {
    let failures = registry.jobs.lock().get(job).map_or(0, |h| h.consecutive_failures);
    base * (1u32 << failures.min(MAX_BACKOFF_DOUBLINGS))
}

impl Supervisor {
    pub fn new() -> Supervisor {
        Supervisor::default()
    }

    /// The signal jobs started outside [`Supervisor::every`] watch.
    pub fn stop_signal(&self) -> StopSignal {
        StopSignal(self.stop.subscribe())
    }

    /// A job that calls `round` repeatedly until the node stops, waiting `wait(did_work)` between
    /// rounds when the round succeeded (`Ok(true)`: more work is waiting, go again at once) and a
    /// backoff from `interval` when it failed or panicked.
    pub fn repeat<F, Fut>(&mut self, job: &'static str, interval: Duration, round: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<bool, String>> + Send + 'static,
    {
        self.repeat_then(job, interval, round, async {});
    }

    /// [`Supervisor::repeat`], then `last` once when the node stops (a final checkpoint).
    pub fn repeat_then<F, Fut>(
        &mut self,
        job: &'static str,
        interval: Duration,
        mut round: F,
        last: impl Future<Output = ()> + Send + 'static,
    ) where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<bool, String>> + Send + 'static,
    {
        let registry = self.registry.clone();
        let mut stop = self.stop_signal();
        registry.update(job, |_| {});
        let task = tokio::spawn(async move {
            while !stop.is_stopped() {
                let started = Instant::now();
                let outcome = tokio::spawn(round()).await;
                let more = matches!(outcome, Ok(Ok(true)));
                let ok = record(&registry, job, outcome.map(|r| r.map(drop)));
                metrics::histogram!("cascade_job_round_seconds", "job" => job).record(started.elapsed().as_secs_f64());
                if !(ok && more) && stop.sleep(backoff(interval, &registry, job)).await {
                    break;
                }
            }
            last.await;
            registry.update(job, |h| h.ended = true);
        });
        self.tasks.push((job, task));
    }

    /// A job that runs `round` every `interval` (the first time after one interval) until the
    /// node stops.
    pub fn every<F, Fut>(&mut self, job: &'static str, interval: Duration, mut round: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = RoundResult> + Send + 'static,
    {
        let registry = self.registry.clone();
        let mut stop = self.stop_signal();
        registry.update(job, |_| {});
        let task = tokio::spawn(async move {
            while !stop.sleep(backoff(interval, &registry, job)).await {
                let outcome = tokio::spawn(round()).await;
                record(&registry, job, outcome);
            }
            registry.update(job, |h| h.ended = true);
        });
        self.tasks.push((job, task));
    }

    /// A job that ends by itself (a queue writer that ends when its queue is closed and drained);
    /// it is not restarted, and [`Supervisor::shutdown`] waits for it.
    pub fn until_done(&mut self, job: &'static str, work: impl Future<Output = ()> + Send + 'static) {
        let registry = self.registry.clone();
        registry.update(job, |_| {});
        let task = tokio::spawn(async move {
            let outcome = tokio::spawn(work).await.map(|()| Ok(()));
            record(&registry, job, outcome);
            registry.update(job, |h| h.ended = true);
        });
        self.tasks.push((job, task));
    }

    /// Every job's health, by name.
    pub fn health(&self) -> BTreeMap<&'static str, JobHealth> {
        self.registry.jobs.lock().clone()
    }

    /// A handle that reads the jobs' health after the supervisor has moved on.
    pub fn health_handle(&self) -> HealthHandle {
        HealthHandle(self.registry.clone())
    }

    /// Tells every job to stop after its current round and waits for all of them; jobs that end
    /// by themselves are waited for too (close their queues first).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for (job, task) in self.tasks {
            if let Err(e) = task.await {
                tracing::error!(job, error = %e, "job did not stop cleanly");
            }
        }
    }
}

/// Reads the supervisor's job health from elsewhere (readiness, tests).
#[derive(Debug, Clone)]
pub struct HealthHandle(Arc<Registry>);

impl HealthHandle {
    pub fn get(&self) -> BTreeMap<&'static str, JobHealth> {
        self.0.jobs.lock().clone()
    }
}

impl cascade_server::JobsReport for HealthHandle {
    fn jobs(&self) -> Vec<cascade_api::JobHealth> {
        self.get()
            .into_iter()
            .map(|(name, h)| cascade_api::JobHealth {
                name: name.to_string(),
                rounds: h.rounds,
                failures: h.failures,
                panics: h.panics,
                consecutive_failures: h.consecutive_failures,
                last_error: h.last_error,
                ended: h.ended,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_round_is_counted_and_the_job_carries_on() {
        let mut supervisor = Supervisor::new();
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        supervisor.every("flaky", Duration::from_millis(1), move || {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => panic!("boom"),
                    1 => Err("down".to_string()),
                    _ => Ok(()),
                }
            }
        });
        let health = supervisor.health_handle();
        for _ in 0..2000 {
            if health.get()["flaky"].rounds >= 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let h = health.get()["flaky"].clone();
        assert_eq!((h.panics, h.failures), (1, 1), "{h:?}");
        assert!(h.rounds >= 4, "{h:?}");
        assert_eq!(h.consecutive_failures, 0, "a success resets the count");
        assert_eq!(h.last_error.as_deref(), Some("down"));
        supervisor.shutdown().await;
        assert!(health.get()["flaky"].ended);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_lets_the_round_in_progress_finish() {
        let mut supervisor = Supervisor::new();
        let finished = Arc::new(AtomicU32::new(0));
        let started = Arc::new(tokio::sync::Notify::new());
        let (f, s) = (finished.clone(), started.clone());
        supervisor.repeat("slow", Duration::from_millis(1), move || {
            let (f, s) = (f.clone(), s.clone());
            async move {
                s.notify_one();
                tokio::time::sleep(Duration::from_millis(100)).await;
                f.fetch_add(1, Ordering::SeqCst);
                Ok(false)
            }
        });
        started.notified().await;
        supervisor.shutdown().await;
        assert!(finished.load(Ordering::SeqCst) >= 1, "the round that had started was not cut short");
    }

    #[tokio::test]
    async fn backoff_doubles_per_consecutive_failure_up_to_a_cap() {
        let registry = Registry::default();
        let base = Duration::from_millis(10);
        assert_eq!(backoff(base, &registry, "j"), base);
        registry.update("j", |h| h.consecutive_failures = 3);
        assert_eq!(backoff(base, &registry, "j"), base * 8);
        registry.update("j", |h| h.consecutive_failures = 40);
        assert_eq!(backoff(base, &registry, "j"), base * 64);
    }
}
