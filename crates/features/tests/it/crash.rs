//! Crash recovery: a child process consumes the log, checkpointing often, and is killed with
//! SIGKILL at varying moments, several times over the same directory. Afterwards the recovered
//! state, caught up to the end of the log, must read exactly like an uninterrupted run.
//!
//! The child is this same test binary, re-executed to run `crash::child_consumer` with the
//! directory in `CASCADE_FEATURES_CRASH_DIR`; it prints `at OFFSET` after each checkpoint.

use crate::checkpoint::{DEFS, assert_same_reads, workload};
use crate::features;
use cascade_features::OnlineEngine;
use cascade_store::{Store, StoreOptions};
use cascade_testkit::child::TestChild;
use std::io::Write;
use std::time::{Duration, Instant};

const ENV_DIR: &str = "CASCADE_FEATURES_CRASH_DIR";
const EVENTS: usize = 6000;
const CHUNK: usize = 37;

#[test]
fn child_consumer() {
    let Ok(dir) = std::env::var(ENV_DIR) else { return };
    let store = Store::open(&dir, StoreOptions::default()).unwrap();
    let mut engine = OnlineEngine::open(&dir, features(DEFS)).unwrap();
    let mut out = std::io::stdout();
    writeln!(out, "start {}", engine.next_offset()).unwrap();
    loop {
        let n = engine.catch_up_store(&store, CHUNK).unwrap();
        engine.checkpoint().unwrap();
        writeln!(out, "at {}", engine.next_offset()).unwrap();
        out.flush().unwrap();
        if n == 0 {
            break;
        }
    }
}

#[test]
fn recovery_after_sigkill_reads_exactly_like_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let log = workload(EVENTS);
    {
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        for batch in log.chunks(500) {
            store.append_blocking(batch).unwrap();
        }
        store.close().unwrap();
    }
    let mut last_acked = 0u64;
    let mut kills = 0;
    for (run, kill_after) in [5usize, 23, 41].into_iter().enumerate() {
        let child = TestChild::spawn("crash::child_consumer", &[(ENV_DIR, dir.path().into())]);
        let started = Instant::now();
        let mut seen = 0;
        let mut finished = false;
        while seen < kill_after && started.elapsed() < Duration::from_secs(60) {
            match child.next_line(Duration::from_secs(10)) {
                Some(line) => {
                    if let Some(start) = line.strip_prefix("start ") {
                        let start: u64 = start.parse().unwrap();
                        assert!(start >= last_acked, "run {run} resumed at {start}, before checkpoint {last_acked}");
                        assert!(run == 0 || start > 0, "run {run} did not resume from a checkpoint");
                    } else if let Some(at) = line.strip_prefix("at ") {
                        last_acked = at.parse().unwrap();
                        seen += 1;
                        finished |= last_acked == EVENTS as u64;
                    }
                }
                None => break,
            }
        }
        for line in child.kill() {
            if let Some(at) = line.strip_prefix("at ") {
                last_acked = at.parse().unwrap();
            }
        }
        assert!(seen >= 1, "run {run}: the child made no progress");
        kills += usize::from(!finished);
    }
    assert!(kills >= 2, "the child should have been killed mid-log");
    assert!(last_acked < EVENTS as u64, "something must be left for recovery");

    // Recover and finish in this process; compare with an uninterrupted run over the same log.
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let mut recovered = OnlineEngine::open(dir.path(), features(DEFS)).unwrap();
    assert!(recovered.next_offset() >= last_acked, "the last acknowledged checkpoint survived");
    recovered.catch_up_store(&store, usize::MAX).unwrap();
    let fresh_dir = tempfile::tempdir().unwrap();
    let mut uninterrupted = OnlineEngine::open(fresh_dir.path(), features(DEFS)).unwrap();
    uninterrupted.catch_up(store.read_from(0)).unwrap();
    assert_eq!(recovered.next_offset(), uninterrupted.next_offset());
    let end = log.iter().map(|r| r.ts().0).max().unwrap();
    assert_same_reads(&recovered, &uninterrupted, end);
}
