//! Where "now" comes from: the system clock in production, a hand-driven one in tests.
//!
//! Code that asks for the time (expiry, staleness, rate limits) takes a `&dyn Clock` or an
//! `Arc<dyn Clock>` rather than calling [`Timestamp::now`] itself, so tests can control it.
//!
//! ```
//! use cascade_core::{Clock, ManualClock, Timestamp};
//! use std::time::Duration;
//! let clock = ManualClock::new(Timestamp(1_000));
//! clock.advance(Duration::from_secs(2));
//! assert_eq!(clock.now(), Timestamp(3_000));
//! ```

use crate::time::Timestamp;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// A source of the current time, in milliseconds since the epoch.
pub trait Clock: std::fmt::Debug + Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The real wall clock ([`Timestamp::now`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told to; for tests. Shareable between threads (`&self` methods);
/// wrap it in an `Arc` to hand one clock to the code under test and keep driving it.
#[derive(Debug, Default)]
pub struct ManualClock {
    millis: AtomicI64,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock { millis: AtomicI64::new(start.0) }
    }

    /// Jumps to `t` (backwards too: tests of clock skew need that).
    pub fn set(&self, t: Timestamp) {
        self.millis.store(t.0, Ordering::SeqCst);
    }

    /// Moves forward by `by` (whole milliseconds; saturating) and returns the new time.
    pub fn advance(&self, by: Duration) -> Timestamp {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let prev = self.millis.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| Some(t.saturating_add(ms)));
        // `fetch_update` with a closure that always returns `Some` cannot fail.
        Timestamp(prev.unwrap_or_else(|t| t).saturating_add(ms))
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.millis.load(Ordering::SeqCst))
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

impl<C: Clock + ?Sized> Clock for Box<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(Timestamp(10));
        assert_eq!(clock.now(), Timestamp(10));
        assert_eq!(clock.now(), Timestamp(10));
        assert_eq!(clock.advance(Duration::from_millis(5)), Timestamp(15));
        assert_eq!(clock.now(), Timestamp(15));
        clock.set(Timestamp(3));
        assert_eq!(clock.now(), Timestamp(3));
        assert_eq!(ManualClock::default().now(), Timestamp(0));
        clock.set(Timestamp(i64::MAX - 1));
        assert_eq!(clock.advance(Duration::MAX), Timestamp(i64::MAX));
    }

    #[test]
    fn manual_clock_is_shared_between_threads() {
        let clock = Arc::new(ManualClock::new(Timestamp(0)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let clock = clock.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        clock.advance(Duration::from_millis(1));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        // Through the trait object, as code under test would see it.
        let dyn_clock: Arc<dyn Clock> = clock;
        assert_eq!(dyn_clock.now(), Timestamp(4000));
    }

    #[test]
    fn system_clock_is_now() {
        let before = Timestamp::now();
        let t = SystemClock.now();
        let after = Timestamp::now();
        assert!(before <= t && t <= after, "{before} <= {t} <= {after}");
        // Later than 2024-01-01: the clock is a real one, in milliseconds.
        assert!(t > Timestamp(1_704_067_200_000));
    }
}
