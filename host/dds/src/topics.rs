//! Topic names, type names and the QoS of every topic, with the reasons.
//!
//! Both sides of a topic use the same QoS so requested/offered always match.
//! Two rustdds behaviours shape the numbers (see the crate README):
//! - a reader's cache keeps `ResourceLimits::max_samples` samples (64 when
//!   unset) and silently drops older untaken ones even when reliable, so every
//!   topic sets generous limits and a dedicated thread takes samples at once;
//! - a reliable writer blocks (up to `max_blocking_time`) once its
//!   `max_samples` samples are unacknowledged: that limit is our send window
//!   ([`SEND_WINDOW`]), set on writers only.
//!
//! rustdds does not keep history per instance: `KeepLast(n)` keeps the
//! writer's last `n` samples overall. Keys still matter to other vendors
//! (Cyclone keeps `n` per instance) and document which sample replaces which.

use rustdds::policy::{Durability, History, Reliability, ResourceLimits};
use rustdds::{QosPolicies, QosPolicyBuilder, TopicKind};

/// One DDS topic of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TopicId {
    Share,
    Request,
    Vote,
    Certificate,
    Announce,
    Outcome,
    Digest,
    HeadsRequest,
    Heads,
    CertFetch,
    ShareFetch,
}

/// How a topic is configured; one row of the table in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: &'static str,
    /// The IDL type name, `module::Struct`, which other vendors match on.
    pub type_name: &'static str,
    pub keyed: bool,
    pub reliable: bool,
    pub transient_local: bool,
    /// `None` is KeepAll (bounded by `max_samples`).
    pub keep_last: Option<i32>,
    /// The reader's cache (`ResourceLimits::max_samples` of the reader).
    pub max_samples: i32,
}

/// Unacknowledged samples a reliable writer may have in flight before `send`
/// blocks (the writer's `ResourceLimits::max_samples`).
///
/// Two limits pull against each other:
/// - small enough that a burst fits the receiver's socket buffer (4 MiB
///   here, ~1 KiB per small datagram) while its event loop is descheduled: a
///   flood past that is dropped by the kernel and rustdds repairs it at only
///   ~160 samples/s (measured with a 16 384 window under load);
/// - large enough to outlast a peer that died without a goodbye: it stays
///   matched, never acknowledges, and holds every reliable writer's window
///   until its lease expires (rustdds announces 50 s). Past the window, sends
///   fail with `WouldBlock` for everyone until then.
///
/// 1 024 covers 20 samples/s per topic for 50 s and 1 MiB of datagrams.
pub const SEND_WINDOW: i32 = 1_024;

impl TopicId {
    pub const ALL: [TopicId; 11] = [
        TopicId::Share,
        TopicId::Request,
        TopicId::Vote,
        TopicId::Certificate,
        TopicId::Announce,
        TopicId::Outcome,
        TopicId::Digest,
        TopicId::HeadsRequest,
        TopicId::Heads,
        TopicId::CertFetch,
        TopicId::ShareFetch,
    ];

    pub const fn spec(self) -> TopicSpec {
        const fn volatile(name: &'static str, type_name: &'static str, max_samples: i32) -> TopicSpec {
            TopicSpec {
                name,
                type_name,
                keyed: false,
                reliable: true,
                transient_local: false,
                keep_last: None,
                max_samples,
            }
        }
        match self {
            // Over 80% of traffic. Reliable so gaps are rare; a gap left is
            // repaired by ShareFetch (shares carry per-sender sequence numbers),
            // so late joiners need no durability.
            TopicId::Share => volatile("wallance_share", "wallance::Share", 16_384),
            // A request is only useful to voters online now; a missed one
            // expires and the requester retries on its new State.
            TopicId::Request => volatile("wallance_request", "wallance::Request", 4_096),
            // Votes are the latency path; a lost vote can stall a decision, so
            // reliable with a deep window for 10k-vote bursts.
            TopicId::Vote => volatile("wallance_vote", "wallance::Vote", 16_384),
            // A certificate proves a wallet's new version by itself: late
            // joiners and restarted nodes catch up from the writer's history,
            // older gaps through HeadsRequest/CertFetch.
            TopicId::Certificate => TopicSpec {
                name: "wallance_certificate",
                type_name: "wallance::Certificate",
                keyed: true,
                reliable: true,
                transient_local: true,
                keep_last: Some(1_024),
                // Certificates can be large (76 bytes per vote): a bounded cache.
                max_samples: 1_024,
            },
            // A provider's service list; the latest replaces the rest, and a
            // node joining later must see it to check requests.
            TopicId::Announce => TopicSpec {
                name: "wallance_announce",
                type_name: "wallance::Announce",
                keyed: true,
                reliable: true,
                transient_local: true,
                keep_last: Some(1),
                max_samples: 1_024,
            },
            // The requester may restart while its contract runs: keep the
            // provider's recent outcomes for it.
            TopicId::Outcome => TopicSpec {
                name: "wallance_outcome",
                type_name: "wallance::Outcome",
                keyed: false,
                reliable: true,
                transient_local: true,
                keep_last: Some(64),
                max_samples: 1_024,
            },
            // Periodic; the next digest replaces a lost one, so no repair
            // traffic (no heartbeats or acks) for it.
            TopicId::Digest => TopicSpec {
                name: "wallance_sync_digest",
                type_name: "wallance::SyncDigest",
                keyed: false,
                reliable: false,
                transient_local: false,
                keep_last: Some(16),
                max_samples: 1_024,
            },
            // Point-to-point sync traffic on a broadcast medium: reliable so a
            // catch-up does not wait for the next digest round.
            TopicId::HeadsRequest => volatile("wallance_sync_heads_request", "wallance::HeadsRequest", 1_024),
            TopicId::Heads => volatile("wallance_sync_heads", "wallance::Heads", 256),
            TopicId::CertFetch => volatile("wallance_sync_cert_fetch", "wallance::CertFetch", 1_024),
            TopicId::ShareFetch => volatile("wallance_sync_share_fetch", "wallance::ShareFetch", 1_024),
        }
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    pub fn kind(self) -> TopicKind {
        if self.spec().keyed {
            TopicKind::WithKey
        } else {
            TopicKind::NoKey
        }
    }

    /// The writer's QoS: the reader's, with the resource limit set to the
    /// send window ([`SEND_WINDOW`], or the history depth a transient-local
    /// writer must keep for late joiners, whichever is larger).
    pub fn writer_qos(self, max_blocking: std::time::Duration) -> QosPolicies {
        let s = self.spec();
        let window = SEND_WINDOW.max(s.keep_last.unwrap_or(0)).min(s.max_samples);
        self.qos_with(max_blocking, window)
    }

    /// The QoS of the topic and its reader. Resource limits are not part of
    /// QoS matching, so writer and reader may differ there. `max_blocking`
    /// bounds how long a reliable send waits for the window to open.
    pub fn qos(self, max_blocking: std::time::Duration) -> QosPolicies {
        self.qos_with(max_blocking, self.spec().max_samples)
    }

    fn qos_with(self, max_blocking: std::time::Duration, max_samples: i32) -> QosPolicies {
        let s = self.spec();
        let reliability = if s.reliable {
            Reliability::Reliable {
                max_blocking_time: rustdds::Duration::from_std(max_blocking),
            }
        } else {
            Reliability::BestEffort
        };
        QosPolicyBuilder::new()
            .reliability(reliability)
            .durability(if s.transient_local {
                Durability::TransientLocal
            } else {
                Durability::Volatile
            })
            .history(match s.keep_last {
                Some(depth) => History::KeepLast { depth },
                None => History::KeepAll,
            })
            .resource_limits(ResourceLimits {
                max_samples,
                max_instances: max_samples,
                max_samples_per_instance: max_samples,
            })
            .build()
    }
}
