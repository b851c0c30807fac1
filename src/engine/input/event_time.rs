//! The times an input may state: not before `limits.min_event_time`, not after its
//! record's reference time plus `limits.max_future_skew_ms`. The caller vouches for now.
//!
//! An event dated years ahead would otherwise become the engine's clock: every customer
//! touched after it would look dormant and every timer would fire at once. The engine
//! reads no clock, so the reference comes with the record: the earlier of the broker
//! timestamp (which a producer may set) and `received_at`, the caller's clock.

use super::touchpoint::Rejection;
use super::{Input, Record};
use crate::engine::config::Limits;
use crate::model::output::RFC3339_MS;

/// What bounds the time of every record, prepared once from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBounds {
    /// `limits.min_event_time` (ms).
    floor: i64,
    /// `limits.max_future_skew_ms`.
    skew: i64,
}

/// The times one record may state, both ends included (ms since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    pub earliest: i64,
    pub latest: i64,
}

impl TimeBounds {
    pub fn new(limits: &Limits) -> Self {
        Self {
            // A configuration is validated before use; the start of RFC 3339 otherwise.
            floor: limits.min_event_time_ms().unwrap_or(*RFC3339_MS.start()),
            skew: i64::try_from(limits.max_future_skew_ms).unwrap_or(i64::MAX),
        }
    }

    /// The window of `record`. A broker timestamp before the floor says nothing (no
    /// producer writes before it on purpose) and is ignored; a later one than
    /// `received_at` cannot widen the window, so only the reader's clock can.
    pub fn window(&self, record: &Record) -> TimeWindow {
        let reference = match record.timestamp {
            Some(t) if t >= self.floor => t.min(record.received_at),
            _ => record.received_at,
        };
        TimeWindow {
            earliest: self.floor,
            // Whatever the clocks say, a time must be one RFC 3339 can write back out.
            latest: reference.saturating_add(self.skew).min(*RFC3339_MS.end()),
        }
    }
}

impl TimeWindow {
    pub fn contains(&self, at: i64) -> bool {
        (self.earliest..=self.latest).contains(&at)
    }

    /// `at`, stated by `field`, or the refusal that names the window.
    pub fn check(&self, field: &'static str, at: i64) -> Result<(), Rejection> {
        if self.contains(at) {
            Ok(())
        } else {
            Err(Rejection::TimeOutOfRange {
                field,
                at,
                earliest: self.earliest,
                latest: self.latest,
            })
        }
    }
}

/// The time an input states about itself, with its field: what moves the clocks.
pub fn stated_time(input: &Input) -> Option<(&'static str, i64)> {
    match input {
        Input::Touchpoint(tp) => Some(("occurred_at", tp.occurred_at)),
        Input::Request(r) => r.requested_at.map(|at| ("requested_at", at)),
        Input::Command(c) => c.requested_at.map(|at| ("requested_at", at)),
        Input::Reference(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::input::touchpoint::parse_time;

    const DAY: i64 = 86_400_000;

    fn ms(t: &str) -> i64 {
        parse_time(t, "t").unwrap()
    }

    fn record(timestamp: Option<i64>, received_at: i64) -> Record<'static> {
        Record {
            timestamp,
            ..Record::new(b"", "t", 0, received_at)
        }
    }

    fn bounds() -> TimeBounds {
        TimeBounds::new(&Limits::default())
    }

    #[test]
    fn the_window_runs_from_the_floor_to_a_day_after_the_reader_s_clock() {
        let now = ms("2026-12-06T10:00:00Z");
        let w = bounds().window(&record(None, now));
        assert_eq!(w.earliest, ms("2000-01-01T00:00:00Z"));
        assert_eq!(w.latest, now + DAY);
        assert!(w.contains(now + DAY) && !w.contains(now + DAY + 1));
        assert!(w.contains(w.earliest) && !w.contains(w.earliest - 1));
    }

    #[test]
    fn a_broker_timestamp_narrows_the_window_but_never_widens_it() {
        let now = ms("2026-12-06T10:00:00Z");
        let earlier = now - 3 * DAY;
        assert_eq!(
            bounds().window(&record(Some(earlier), now)).latest,
            earlier + DAY
        );
        // A producer-set timestamp in 9999 is no licence to state 9999.
        let hostile = ms("9999-12-31T23:59:59Z");
        assert_eq!(
            bounds().window(&record(Some(hostile), now)).latest,
            now + DAY
        );
        // One before the floor (or garbage) says nothing: the reader's clock decides.
        for garbage in [0, -1, i64::MIN] {
            assert_eq!(
                bounds().window(&record(Some(garbage), now)).latest,
                now + DAY
            );
        }
    }

    #[test]
    fn the_window_never_ends_beyond_what_rfc_3339_can_write() {
        let w = bounds().window(&record(None, i64::MAX));
        assert_eq!(w.latest, *RFC3339_MS.end());
        let limits = Limits {
            max_future_skew_ms: u64::MAX,
            ..Limits::default()
        };
        let w = TimeBounds::new(&limits).window(&record(None, 0));
        assert_eq!(w.latest, *RFC3339_MS.end());
    }

    #[test]
    fn a_time_outside_the_window_is_refused_with_the_bounds() {
        let now = ms("2026-12-06T10:00:00Z");
        let w = bounds().window(&record(None, now));
        let refusal = w
            .check("occurred_at", ms("9999-12-31T23:59:59Z"))
            .unwrap_err();
        assert_eq!(refusal.reason(), "time_out_of_range");
        assert_eq!(
            refusal.to_string(),
            "field `occurred_at` is 9999-12-31T23:59:59Z, outside the accepted range \
             2000-01-01T00:00:00Z to 2026-12-07T10:00:00Z"
        );
        let refusal = w.check("requested_at", ms("0000-01-01T00:00:00Z"));
        assert!(matches!(
            refusal,
            Err(Rejection::TimeOutOfRange {
                field: "requested_at",
                ..
            })
        ));
        assert_eq!(w.check("occurred_at", now + DAY), Ok(()));
    }
}
