//! Crash safety: a child process appends from several threads and is killed with SIGKILL at a
//! random moment, several times over the same directory. Afterwards every acknowledged event
//! must be present exactly once, the log must read cleanly, and appending must continue.
//!
//! The child is this same test binary, re-executed to run `crash::child_writer` with the
//! directory in `CASCADE_CRASH_CHILD_DIR`; it prints one `ack` line per acknowledged batch.

use crate::event;
use cascade_core::Record;
use cascade_store::{Outcome, Store, StoreOptions};
use cascade_testkit::child::TestChild;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::{Duration, Instant};

const ENV_DIR: &str = "CASCADE_CRASH_CHILD_DIR";
const ENV_RUN: &str = "CASCADE_CRASH_CHILD_RUN";
const THREADS: usize = 4;

/// Ids of thread `t` in run `r`: `r{r}-t{t}-{n}`.
fn id(run: usize, thread: usize, n: usize) -> String {
    format!("r{run}-t{thread}-{n}")
}

#[test]
fn child_writer() {
    let Ok(dir) = std::env::var(ENV_DIR) else { return };
    let run: usize = std::env::var(ENV_RUN).unwrap().parse().unwrap();
    let mut options = StoreOptions::default();
    options.log.segment_bytes = 64 << 10; // rotate often, so kills also land near rotations
    let store = std::sync::Arc::new(Store::open(&dir, options).unwrap());
    let stdout = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (store, stdout) = (store.clone(), stdout.clone());
            std::thread::spawn(move || {
                // Retry the previous run's first ids, as a client would after a crash: each must
                // be stored at most once however often it is sent.
                if run > 0 {
                    let retry: Vec<Record> = (0..20).map(|n| event(Some(&id(run - 1, t, n)), n as i64)).collect();
                    store.append_blocking(&retry).unwrap();
                }
                let mut n = 0;
                // Runs until killed; the bound only keeps a stray child from running forever.
                while n < 50_000_000 {
                    let size = 1 + (n * 7 + t * 3) % 40;
                    let batch: Vec<Record> = (n..n + size).map(|k| event(Some(&id(run, t, k)), k as i64)).collect();
                    let out = store.append_blocking(&batch).unwrap();
                    assert!(out.iter().all(|o| matches!(o, Outcome::Written(_))));
                    let mut w = stdout.lock().unwrap();
                    writeln!(w, "ack {t} {n} {size}").unwrap();
                    w.flush().unwrap();
                    n += size;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn acknowledged_events_survive_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: HashSet<String> = HashSet::new();
    for run in 0..4 {
        let child =
            TestChild::spawn("crash::child_writer", &[(ENV_DIR, dir.path().into()), (ENV_RUN, run.to_string().into())]);
        // Kill after a varying number of acknowledgements, so the kill lands mid-storm.
        let target = 100 + run * 137;
        let started = Instant::now();
        let mut acks = 0;
        while acks < target && started.elapsed() < Duration::from_secs(60) {
            match child.next_line(Duration::from_secs(5)) {
                Some(line) if line.starts_with("ack ") => {
                    acks += 1;
                    record_ack(&line, run, &mut acked);
                }
                Some(_) => {}
                None => break,
            }
        }
        // Acks printed before the kill are acknowledgements too.
        for line in child.kill() {
            if line.starts_with("ack ") {
                record_ack(&line, run, &mut acked);
            }
        }
        assert!(acks >= 50, "run {run}: the child acknowledged only {acks} batches");
    }

    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let mut count: HashMap<String, usize> = HashMap::new();
    let mut expected_offset = 0;
    for entry in store.read_from(0) {
        let (offset, record) = entry.expect("the log reads cleanly after crashes");
        assert_eq!(offset, expected_offset, "offsets are dense");
        expected_offset += 1;
        if let Some(id) = record.idempotency_key() {
            *count.entry(id.to_string()).or_default() += 1;
        }
    }
    let missing: Vec<_> = acked.iter().filter(|id| !count.contains_key(*id)).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost, e.g. {missing:?}",
        acked.iter().filter(|id| !count.contains_key(*id)).count()
    );
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "events stored more than once: {twice:?}");
    eprintln!("crash test: {} acknowledged, {} stored over 4 killed runs", acked.len(), expected_offset);
    // Appending continues at the end of the recovered log.
    let out = store.append_blocking(&[event(Some("after-crashes"), 1)]).unwrap();
    assert_eq!(out, [Outcome::Written(expected_offset)]);
}

fn record_ack(line: &str, run: usize, acked: &mut HashSet<String>) {
    let parts: Vec<usize> = line[4..].split(' ').map(|p| p.parse().unwrap()).collect();
    let (t, n, size) = (parts[0], parts[1], parts[2]);
    acked.extend((n..n + size).map(|k| id(run, t, k)));
}
