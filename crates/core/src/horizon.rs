//! The time horizon: how far past the clock a record's or a request's time may be.
//!
//! One event dated in year 9999 would move every feature view's watermark there (so every later
//! real event is dropped as late) and survive restarts, because the log is replayed. So every
//! writer refuses records dated more than `max_ahead` past its clock, and serving refuses a
//! request time beyond it. The bound is configured as `[log] max_event_ahead` (typed by
//! cascade-store, whose `Store::append` is the one path every writer takes); the node hands the
//! same value to serving.
//!
//! ```
//! use cascade_core::{Horizon, Timestamp};
//! use std::time::Duration;
//! let horizon = Horizon::new(Duration::from_secs(86_400));
//! let now = Timestamp(1_000_000_000_000);
//! assert!(horizon.check(Timestamp(now.0 + 1_000), now).is_ok());
//! let reason = horizon.check(Timestamp(now.0 + 2 * 86_400_000), now).unwrap_err();
//! assert_eq!(reason, "2 days past the server clock (2001-09-09T01:46:40.000Z); the limit is log.max_event_ahead = 1day");
//! assert!(Horizon::UNBOUNDED.check(Timestamp(i64::MAX), now).is_ok());
//! ```

use crate::event::Record;
use crate::schema::FieldError;
use crate::time::Timestamp;
use std::time::Duration;

/// The configuration key that sets the horizon, named in every refusal.
pub const HORIZON_KEY: &str = "log.max_event_ahead";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Horizon {
    /// How far past the clock a time may be; zero: no bound.
    max_ahead: Duration,
}

impl Default for Horizon {
    /// One day: generous for client clock skew and batching, far short of a poisoned date.
    fn default() -> Self {
        Horizon::new(Duration::from_secs(86_400))
    }
}

impl Horizon {
    /// No bound (`max_event_ahead = "0s"`).
    pub const UNBOUNDED: Horizon = Horizon { max_ahead: Duration::ZERO };

    /// Times more than `max_ahead` past the clock are refused; zero means no bound.
    pub fn new(max_ahead: Duration) -> Horizon {
        Horizon { max_ahead }
    }

    pub fn max_ahead(&self) -> Duration {
        self.max_ahead
    }

    /// The latest time accepted when the clock reads `now` (`None`: no bound).
    pub fn limit(&self, now: Timestamp) -> Option<Timestamp> {
        if self.max_ahead.is_zero() {
            return None;
        }
        let ahead = i64::try_from(self.max_ahead.as_millis()).unwrap_or(i64::MAX);
        Some(Timestamp(now.0.saturating_add(ahead)))
    }

    /// `Err(reason)` when `t` is past the horizon, saying how far past the clock it is.
    pub fn check(&self, t: Timestamp, now: Timestamp) -> Result<(), String> {
        match self.limit(now) {
            Some(limit) if t > limit => Err(format!(
                "{} past the server clock ({now}); the limit is {HORIZON_KEY} = {}",
                rough(t.0.saturating_sub(now.0)),
                humantime::format_duration(self.max_ahead)
            )),
            _ => Ok(()),
        }
    }

    /// Every time of `record` past the horizon, naming the field ([`Record::times`]).
    pub fn check_record(&self, record: &Record, now: Timestamp) -> Vec<FieldError> {
        record
            .times()
            .into_iter()
            .filter_map(|(field, t)| self.check(t, now).err().map(|reason| FieldError::new(field, reason)))
            .collect()
    }

    /// [`Horizon::check_record`] for each record of a batch, with its index in the batch.
    pub fn check_batch(&self, records: &[Record], now: Timestamp) -> Vec<(usize, FieldError)> {
        if self.max_ahead.is_zero() {
            return Vec::new();
        }
        records
            .iter()
            .enumerate()
            .flat_map(|(index, record)| self.check_record(record, now).into_iter().map(move |e| (index, e)))
            .collect()
    }
}

/// A duration in its largest whole unit ("2 days", "7973 years"): a reader wants the order of
/// magnitude, not `7973years 11months ...`.
fn rough(ms: i64) -> String {
    const UNITS: [(&str, i64); 6] = [
        ("year", 365 * 86_400_000),
        ("day", 86_400_000),
        ("hour", 3_600_000),
        ("minute", 60_000),
        ("second", 1_000),
        ("millisecond", 1),
    ];
    let (unit, size) = UNITS.iter().copied().find(|(_, size)| ms >= *size).unwrap_or(UNITS[5]);
    let n = ms / size;
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, ItemRecord};

    const NOW: Timestamp = Timestamp(1_700_000_000_000);
    const DAY: i64 = 86_400_000;

    fn event(ts: i64) -> Record {
        Record::Event(Event {
            id: None,
            event_type: "click".into(),
            ts: Timestamp(ts),
            user: Some("u".into()),
            item: None,
            fields: vec![],
        })
    }

    #[test]
    fn the_bound_is_inclusive_and_zero_is_unbounded() {
        let h = Horizon::default();
        assert!(h.check(Timestamp(NOW.0 + DAY), NOW).is_ok());
        assert!(h.check(Timestamp(NOW.0 + DAY + 1), NOW).is_err());
        assert!(h.check(Timestamp(0), NOW).is_ok(), "the past is not this check's business");
        assert!(Horizon::new(Duration::ZERO).check(Timestamp(i64::MAX), NOW).is_ok());
        // The far future does not overflow.
        assert!(h.check(Timestamp(i64::MAX), Timestamp(i64::MAX - 5)).is_ok());
    }

    #[test]
    fn reasons_say_how_far_and_which_key() {
        let far = Timestamp::parse_rfc3339("9999-12-31T23:59:59Z").unwrap();
        let reason = Horizon::default().check(far, NOW).unwrap_err();
        assert!(reason.starts_with("7981 years past the server clock (2023-11-14T22:13:20.000Z)"), "{reason}");
        assert!(reason.ends_with("the limit is log.max_event_ahead = 1day"), "{reason}");
        assert_eq!(rough(1), "1 millisecond");
        assert_eq!(rough(90 * 60_000), "1 hour");
    }

    #[test]
    fn every_time_of_a_record_is_checked_and_named() {
        let h = Horizon::default();
        let item = Record::Item(ItemRecord {
            id: "i".into(),
            attributes: vec![],
            available: true,
            created_at: Some(Timestamp(NOW.0 + 3 * DAY)),
            deleted: false,
            updated_at: NOW,
        });
        let batch = [event(NOW.0), item, event(NOW.0 + 2 * DAY)];
        let problems = h.check_batch(&batch, NOW);
        let named: Vec<(usize, &str)> = problems.iter().map(|(i, e)| (*i, e.field.as_str())).collect();
        assert_eq!(named, [(1, "created_at"), (2, "ts")]);
        assert!(problems[1].1.reason.starts_with("2 days past"), "{}", problems[1].1.reason);
        assert!(Horizon::UNBOUNDED.check_batch(&batch, NOW).is_empty());
    }
}
