//! Rate-limited logging of repeated faults, so a peer cannot flood the log.
//!
//! The first fault of each kind is logged in full; further faults of that kind
//! are only counted, and at most one summary line per kind per interval says
//! how many there were ("N more ... in the last 10 s"). After a whole interval
//! without one, the next fault of the kind is logged in full again. Each line
//! (full or summary) opens an interval, so a kind writes at most one line per
//! interval, and `k` kinds at most `k * (1 + t / interval)` lines in `t`.
//!
//! Pure bookkeeping: the caller passes the time and writes the lines, which
//! keeps the type testable and the wording where the context is.

use std::time::{Duration, Instant};

/// What the caller should log now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// Log this fault in full: the first of its kind in a while.
    First,
    /// `count` faults of this kind were not logged over the last `over`.
    Summary { count: u64, over: Duration },
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    /// Faults counted since `start` and not logged.
    suppressed: u64,
}

/// Per-kind log budget; `K` is a small key such as a `&'static str` reason.
/// A handful of kinds is expected: lookups are linear.
#[derive(Debug, Clone)]
pub struct LogLimiter<K> {
    interval: Duration,
    windows: Vec<(K, Window)>,
}

impl<K: Copy + Eq> LogLimiter<K> {
    /// The interval the node uses.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            windows: Vec::new(),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Records one fault of kind `key` at `now`. `Some(First)`: log it in
    /// full. `Some(Summary)`: an interval of suppressed faults ended; log the
    /// summary (this fault is counted in the next one). `None`: log nothing.
    pub fn record(&mut self, key: K, now: Instant) -> Option<Report> {
        let interval = self.interval;
        let Some(i) = self.windows.iter().position(|(k, _)| *k == key) else {
            self.windows.push((
                key,
                Window {
                    start: now,
                    suppressed: 0,
                },
            ));
            return Some(Report::First);
        };
        let w = &mut self.windows[i].1;
        if now.saturating_duration_since(w.start) < interval {
            w.suppressed += 1;
            return None;
        }
        if w.suppressed == 0 {
            // A quiet interval: this one is news again.
            w.start = now;
            return Some(Report::First);
        }
        let summary = Report::Summary {
            count: w.suppressed,
            over: now.saturating_duration_since(w.start),
        };
        *w = Window {
            start: now,
            suppressed: 1,
        };
        Some(summary)
    }

    /// The summaries due at `now`: every kind whose interval has ended with
    /// suppressed faults. Kinds quiet for a whole interval are forgotten.
    /// Call it periodically so a burst's tail is reported without waiting
    /// for the next fault.
    pub fn due(&mut self, now: Instant) -> Vec<(K, Report)> {
        let interval = self.interval;
        let mut out = Vec::new();
        self.windows.retain_mut(|(k, w)| {
            let elapsed = now.saturating_duration_since(w.start);
            if elapsed < interval {
                return true;
            }
            if w.suppressed == 0 {
                return false;
            }
            out.push((
                *k,
                Report::Summary {
                    count: w.suppressed,
                    over: elapsed,
                },
            ));
            *w = Window {
                start: now,
                suppressed: 0,
            };
            true
        });
        out
    }

    /// Every suppressed count not yet reported, whatever the time (for a
    /// last summary when stopping). Forgets every kind.
    pub fn finish(&mut self, now: Instant) -> Vec<(K, Report)> {
        self.windows
            .drain(..)
            .filter(|(_, w)| w.suppressed > 0)
            .map(|(k, w)| {
                (
                    k,
                    Report::Summary {
                        count: w.suppressed,
                        over: now.saturating_duration_since(w.start),
                    },
                )
            })
            .collect()
    }
}

impl<K: Copy + Eq> Default for LogLimiter<K> {
    fn default() -> Self {
        Self::new(Self::DEFAULT_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn limiter() -> (LogLimiter<&'static str>, Instant) {
        (LogLimiter::new(10 * S), Instant::now())
    }

    #[test]
    fn the_first_fault_of_each_kind_is_logged_then_the_rest_counted() {
        let (mut l, t) = limiter();
        assert_eq!(l.record("a", t), Some(Report::First));
        assert_eq!(l.record("b", t), Some(Report::First));
        for i in 0..1000 {
            assert_eq!(l.record("a", t + Duration::from_millis(i)), None);
        }
        assert_eq!(l.record("b", t + 9 * S), None);
        assert!(l.due(t + 9 * S).is_empty());
    }

    #[test]
    fn one_summary_per_kind_per_interval() {
        let (mut l, t) = limiter();
        l.record("a", t);
        for _ in 0..5 {
            l.record("a", t + S);
        }
        assert!(l.due(t + 9 * S).is_empty());
        assert_eq!(
            l.due(t + 10 * S),
            vec![("a", Report::Summary { count: 5, over: 10 * S })]
        );
        // Already reported: nothing more until the next interval ends.
        assert!(l.due(t + 11 * S).is_empty());
        l.record("a", t + 12 * S);
        l.record("a", t + 13 * S);
        assert!(l.due(t + 19 * S).is_empty());
        assert_eq!(
            l.due(t + 21 * S),
            vec![("a", Report::Summary { count: 2, over: 11 * S })]
        );
    }

    #[test]
    fn a_fault_after_the_interval_brings_the_summary_without_a_flush() {
        let (mut l, t) = limiter();
        l.record("a", t);
        l.record("a", t + S);
        l.record("a", t + 2 * S);
        assert_eq!(
            l.record("a", t + 10 * S),
            Some(Report::Summary { count: 2, over: 10 * S })
        );
        // That fault opened the next interval and is counted in it.
        assert_eq!(l.record("a", t + 11 * S), None);
        assert_eq!(
            l.finish(t + 12 * S),
            vec![("a", Report::Summary { count: 2, over: 2 * S })]
        );
    }

    #[test]
    fn after_a_quiet_interval_a_fault_is_news_again() {
        let (mut l, t) = limiter();
        assert_eq!(l.record("a", t), Some(Report::First));
        assert_eq!(l.record("a", t + 10 * S), Some(Report::First));
        // And once a flush forgot the quiet kind.
        assert!(l.due(t + 30 * S).is_empty());
        assert_eq!(l.record("a", t + 31 * S), Some(Report::First));
    }

    #[test]
    fn a_steady_flood_writes_a_bounded_number_of_lines() {
        // 3 kinds, 1 000 faults a second each for 60 s, flushed every 50 ms:
        // at most 3 * (1 + 60 / 10) lines, and every fault is in one of them.
        let (mut l, t) = limiter();
        let kinds = ["a", "b", "c"];
        let mut lines = 0;
        let mut reported = 0;
        let mut count = |r: Report| {
            lines += 1;
            reported += match r {
                Report::First => 1,
                Report::Summary { count, .. } => count,
            };
        };
        for ms in 0..60_000u64 {
            let now = t + Duration::from_millis(ms);
            for k in kinds {
                if let Some(r) = l.record(k, now) {
                    count(r);
                }
            }
            if ms % 50 == 0 {
                for (_, r) in l.due(now) {
                    count(r);
                }
            }
        }
        for (_, r) in l.finish(t + 60 * S) {
            count(r);
        }
        assert!(lines <= 3 * (1 + 6) + 3, "{lines} lines");
        assert_eq!(reported, 3 * 60_000);
    }

    #[test]
    fn a_clock_going_backwards_does_not_panic_or_log() {
        let (mut l, t) = limiter();
        let later = t + 5 * S;
        l.record("a", later);
        assert_eq!(l.record("a", t), None);
        assert!(l.due(t).is_empty());
    }
}
