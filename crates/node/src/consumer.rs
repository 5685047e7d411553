//! One way to follow the event log: every part of a node that keeps state derived from the log
//! (serving's live view, the online feature state, and every later consumer) is a
//! [`LogConsumer`] run by [`consume`] under the supervisor.

use crate::supervisor::{StopSignal, Supervisor};
use cascade_core::Record;
use cascade_store::Store;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// State kept up with the log by applying its records in order.
pub trait LogConsumer: Send + Sync + 'static {
    /// The next offset this consumer needs (its position; where a restart resumes).
    fn next_offset(&self) -> u64;

    /// Applies `batch`, the records read from [`LogConsumer::next_offset`] up to `through`
    /// (exclusive): consecutive, except where the store's quarantine hid records, which are
    /// absent. Afterwards the consumer's position is `through`, even when the batch is empty
    /// because everything read was hidden. On error the same records are offered again after a
    /// backoff.
    fn apply(
        self: Arc<Self>,
        batch: Vec<(u64, Record)>,
        through: u64,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// Makes the position durable (every [`ConsumerOptions::checkpoint`], and once when the node
    /// stops). Consumers whose state lives only in memory have nothing to do.
    fn checkpoint(self: Arc<Self>) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Told the log's end after every poll (lag gauges beyond the common one).
    fn observe_end(&self, _log_end: u64) {}
}

/// How a consumer polls.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerOptions {
    /// Most records per apply: a short batch keeps locks a consumer takes short.
    pub batch: usize,
    /// Wait when the consumer is at the end of the log.
    pub poll: Duration,
    /// How often [`LogConsumer::checkpoint`] runs (`None`: never while running).
    pub checkpoint: Option<Duration>,
}

/// Reads the next batch for `consumer` and applies it. Returns whether a full batch was read
/// (more is waiting).
async fn step<C: LogConsumer>(
    name: &'static str,
    store: &Arc<Store>,
    consumer: &Arc<C>,
    batch: usize,
) -> Result<bool, String> {
    let next = consumer.next_offset();
    let reader = store.clone();
    let (records, through) = tokio::task::spawn_blocking(move || {
        let mut reader = reader.read_from(next);
        let records = reader.by_ref().take(batch).collect::<cascade_store::Result<Vec<(u64, Record)>>>()?;
        Ok::<_, cascade_store::Error>((records, reader.position()))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("reading the log from offset {next}: {e}"))?;
    let full = records.len() == batch;
    if !records.is_empty() || through > next {
        consumer.clone().apply(records, through).await?;
    }
    if let Ok(stats) = store.log_stats() {
        let behind = stats.next_offset.saturating_sub(consumer.next_offset());
        metrics::gauge!("cascade_consumer_lag_records", "consumer" => name).set(behind as f64);
        consumer.observe_end(stats.next_offset);
    }
    Ok(full)
}

/// Runs `consumer` as the supervised job `name`: polls the log, applies, checkpoints, backs off
/// on failure, and checkpoints once more when the node stops.
pub fn consume<C: LogConsumer>(
    supervisor: &mut Supervisor,
    name: &'static str,
    store: Arc<Store>,
    consumer: Arc<C>,
    options: ConsumerOptions,
) {
    let last_checkpoint = Arc::new(parking_lot::Mutex::new(Instant::now()));
    let stop: StopSignal = supervisor.stop_signal();
    let last = consumer.clone().checkpoint();
    supervisor.repeat_then(
        name,
        options.poll,
        move || {
            let (store, consumer, last_checkpoint, stop) =
                (store.clone(), consumer.clone(), last_checkpoint.clone(), stop.clone());
            async move {
                let more = step(name, &store, &consumer, options.batch).await?;
                if options.checkpoint.is_some_and(|every| last_checkpoint.lock().elapsed() >= every) {
                    consumer.clone().checkpoint().await;
                    *last_checkpoint.lock() = Instant::now();
                }
                Ok(more && !stop.is_stopped())
            }
        },
        last,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_core::{Event, Timestamp};
    use cascade_store::StoreOptions;
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

    /// Counts records; fails its first two applies.
    #[derive(Default)]
    struct Counter {
        next: AtomicU64,
        failures_left: AtomicU32,
        checkpoints: AtomicU32,
        applied: AtomicU64,
    }

    impl LogConsumer for Counter {
        fn next_offset(&self) -> u64 {
            self.next.load(Ordering::SeqCst)
        }

        async fn apply(self: Arc<Self>, batch: Vec<(u64, Record)>, through: u64) -> Result<(), String> {
            if self.failures_left.load(Ordering::SeqCst) > 0 {
                self.failures_left.fetch_sub(1, Ordering::SeqCst);
                return Err("not yet".into());
            }
            assert!(batch.iter().all(|(o, _)| (self.next_offset()..through).contains(o)), "within the range read");
            self.applied.fetch_add(batch.len() as u64, Ordering::SeqCst);
            self.next.store(through, Ordering::SeqCst);
            Ok(())
        }

        async fn checkpoint(self: Arc<Self>) {
            self.checkpoints.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn event(i: i64) -> Record {
        Record::Event(Event {
            id: None,
            event_type: "click".into(),
            ts: Timestamp(i),
            user: Some("u".into()),
            item: Some(format!("i{i}")),
            fields: Vec::new(),
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_consumer_reads_everything_in_order_through_failures_and_checkpoints_at_stop() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), StoreOptions::default()).unwrap());
        store.append(&(0..2500).map(event).collect::<Vec<_>>()).await.unwrap();
        let consumer = Arc::new(Counter { failures_left: AtomicU32::new(2), ..Counter::default() });
        let mut supervisor = Supervisor::new();
        let options = ConsumerOptions { batch: 1000, poll: Duration::from_millis(1), checkpoint: None };
        consume(&mut supervisor, "counter", store.clone(), consumer.clone(), options);
        for _ in 0..4000 {
            if consumer.next_offset() == 2500 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(consumer.next_offset(), 2500);
        store.append(&[event(9)]).await.unwrap();
        for _ in 0..4000 {
            if consumer.next_offset() == 2501 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(consumer.next_offset(), 2501, "new records are followed");
        let health = supervisor.health()["counter"].clone();
        assert_eq!(health.failures, 2);
        supervisor.shutdown().await;
        assert!(consumer.checkpoints.load(Ordering::SeqCst) >= 1, "checkpointed when stopping");
    }

    /// Waits (bounded by iterations, not time) until `consumer` reaches `offset`.
    async fn reach(consumer: &Counter, offset: u64) {
        for _ in 0..4000 {
            if consumer.next_offset() >= offset {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_consumer_passes_quarantined_records_even_at_the_end_of_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions { horizon: cascade_core::Horizon::UNBOUNDED, ..StoreOptions::default() };
        let store = Arc::new(Store::open(dir.path(), options).unwrap());
        // Two real records, then three dated far ahead: the log's last records are hidden.
        store.append(&[event(1), event(2), event(1 << 50), event(1 << 50), event(1 << 50)]).await.unwrap();
        store.quarantine(Timestamp(1 << 40)).unwrap();
        let consumer = Arc::new(Counter::default());
        let mut supervisor = Supervisor::new();
        let options = ConsumerOptions { batch: 1000, poll: Duration::from_millis(1), checkpoint: None };
        consume(&mut supervisor, "counter", store.clone(), consumer.clone(), options);
        reach(&consumer, 5).await;
        assert_eq!(consumer.next_offset(), 5, "the position reaches the log's end");
        assert_eq!(consumer.applied.load(Ordering::SeqCst), 2, "hidden records are not applied");
        store.append(&[event(3)]).await.unwrap();
        reach(&consumer, 6).await;
        assert_eq!((consumer.next_offset(), consumer.applied.load(Ordering::SeqCst)), (6, 3));
        supervisor.shutdown().await;
    }
}
