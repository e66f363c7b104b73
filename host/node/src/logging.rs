//! The log of `wallance node`: one line per event on stderr, fit for a file
//! or journald as well as a terminal.
//!
//! - Colours only when stderr is a terminal (and `NO_COLOR` is unset): a
//!   file or journald gets plain text, no `\x1b[` escapes.
//! - `RUST_LOG` chooses what is logged; without it, [`DEFAULT_FILTER`].
//! - Faults a peer can repeat at will (malformed DDS samples, failed sends)
//!   are rate-limited where they are logged: the first of each reason, then
//!   one count per reason at most every 10 s (`wallance_dds::LogLimiter`).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use tracing::info;
use tracing_subscriber::EnvFilter;
use wallance_dds::{LogLimiter, Report};

/// What is logged without `RUST_LOG`: our own lines from info up, nothing
/// from the DDS library (rustdds and its CDR decoder, `cdr_encoding`).
///
/// Measured with rustdds 0.15.1, three nodes on loopback:
/// - at every start it warns `send_to_locator: Message size = 2440` for each
///   discovery datagram over 1 500 bytes (our topics' endpoint data), and
///   again for every larger sample (a certificate, a heads reply) later on;
/// - on a loopback without the multicast flag (a non-root user's default)
///   it warns "No multicast joins succeeded" at start, then about 30 "No
///   locators for RtpsReaderProxy" lines a second (~40 KB/s) while discovery
///   works by unicast, and at every clean stop logs two ERRORs
///   (`leave_multicast_group: ... No such device`: it leaves a group it never
///   joined);
/// - a peer can make it log a line per packet (invalid DATA_FRAG at ERROR,
///   strings without their NUL terminator at WARN in `cdr_encoding`), which
///   nothing here could rate-limit.
///
/// So `rustdds=error` would still print ERROR lines at clean stops and let a
/// peer write to the log at will. What an operator needs from DDS the node
/// logs itself: the participant failing to start (a fatal error), the number
/// of peers discovered when it changes ([`PeerLog`]), malformed samples and
/// failed sends (first of each reason, then a count at most every 10 s).
/// `RUST_LOG=info,rustdds=warn` brings rustdds' lines back for debugging.
/// (The "Cannot remove Writer" ERRORs rustdds also printed at every stop
/// were ours: writers dropped after their participant. Fixed in
/// `wallance_dds::Transport`.)
pub const DEFAULT_FILTER: &str = "info,rustdds=off,cdr_encoding=off";

/// Installs the global subscriber for `wallance node`.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colours())
        .init();
}

/// Colours for a person at a terminal only.
fn colours() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// One line when the number of DDS participants discovered changes, so the
/// log shows peers coming and going without rustdds' own lines: the first
/// change at once, then at most one line per 10 s with the current count
/// (a peer flapping, or a stranger spoofing participants, writes no more).
#[derive(Debug, Default)]
pub struct PeerLog {
    known: usize,
    checked: Option<Instant>,
    limiter: LogLimiter<()>,
}

impl PeerLog {
    /// How often the count is read (it walks rustdds' discovery tables).
    const PERIOD: Duration = Duration::from_secs(1);

    /// Call often; reads `count` at most once a second.
    pub fn update(&mut self, now: Instant, count: impl FnOnce() -> usize) {
        if self
            .checked
            .is_some_and(|t| now.saturating_duration_since(t) < Self::PERIOD)
        {
            return;
        }
        self.checked = Some(now);
        let n = count();
        let mut report = None;
        if n != self.known {
            let was = self.known;
            self.known = n;
            match self.limiter.record((), now) {
                Some(Report::First) => info!(peers = n, "DDS participants discovered: {n} (was {was})"),
                r => report = r,
            }
        }
        if report.is_none() {
            report = self.limiter.due(now).pop().map(|(_, r)| r);
        }
        if let Some(Report::Summary { count, over }) = report {
            info!(
                peers = n,
                "DDS participants discovered: {n} ({count} more changes in the last {} s)",
                over.as_secs_f64().round()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_filter_parses() {
        let f = EnvFilter::try_new(DEFAULT_FILTER).expect("valid filter");
        let shown = f.to_string();
        assert!(shown.contains("rustdds=off"), "{shown}");
    }
}
