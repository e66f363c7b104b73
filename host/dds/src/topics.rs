//! Topic names, type names and the QoS of every topic, with the reasons.
//!
//! Both sides of a topic use the same QoS so requested/offered always match.
//!
//! **Every topic is best effort and volatile.** A reliable writer waits for
//! every reader that asked for reliability to acknowledge, so such a reader
//! that never does (a non-member's, or a peer killed without a goodbye, still
//! matched until its lease ends, 50 s for rustdds) holds the writer's window
//! and stalls its sends. A best-effort writer waits for nobody, and a
//! reader that asks for reliable delivery does not match it at all. The core
//! re-sends what is lost: a request every `retry_ms` until it commits, a vote
//! every `retry_ms / 2` while its decision is open, an outcome when the
//! requester asks, an announce every 30 s and to every `HeadsRequest`; the
//! digest, `HeadsRequest`, `CertFetch` and `ShareFetch` repair the rest.
//!
//! Two rustdds behaviours shape the numbers (see the crate README):
//! - a reader's cache keeps `ResourceLimits::max_samples` samples (64 when
//!   unset) and silently drops older untaken ones even when reliable, so every
//!   topic sets generous limits and a dedicated thread takes samples at once;
//! - a writer keeps at most its `max_samples` samples ([`SEND_WINDOW`]), set
//!   on writers only; were a topic reliable, that would be its send window.
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
    /// The DDS topic. The announce, outcome and repair messages share one,
    /// [`SYNC_TOPIC`], as members of the union [`SYNC_TYPE`].
    pub name: &'static str,
    /// The message's IDL type, `module::Struct`.
    pub type_name: &'static str,
    /// The topic's IDL type, which other vendors match on: `type_name`, or
    /// the union that carries it.
    pub topic_type: &'static str,
    pub keyed: bool,
    /// False on every topic, as is `transient_local`: see the module doc.
    pub reliable: bool,
    pub transient_local: bool,
    /// `None` is KeepAll (bounded by `max_samples`).
    pub keep_last: Option<i32>,
    /// The reader's cache (`ResourceLimits::max_samples` of the reader).
    pub max_samples: i32,
}

/// The samples a writer keeps (its `ResourceLimits::max_samples`). On a
/// reliable topic this would be the send window: unacknowledged samples in
/// flight before `send` blocks. Every topic is best effort today (see the
/// module doc), so it only bounds the writer's memory: 1 024 small samples,
/// about 1 MiB.
pub const SEND_WINDOW: i32 = 1_024;

/// The topic of the announce, outcome and repair messages, and its type
/// (`wire::Sync`, a struct around a union). Endpoint discovery costs each
/// participant work per remote endpoint, so starting a network grows with
/// the square of its size times the endpoints per participant: one topic
/// instead of seven takes a participant from 22 endpoints to 10. With 11
/// more topics, 48 nodes took 10.6-12.6 s instead of 3.7-3.9 s to discover
/// each other.
pub const SYNC_TOPIC: &str = "wallance_sync";
pub const SYNC_TYPE: &str = "wallance::Sync";

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
                topic_type: type_name,
                keyed: false,
                reliable: false,
                transient_local: false,
                keep_last: None,
                max_samples,
            }
        }
        const fn sync(type_name: &'static str) -> TopicSpec {
            TopicSpec {
                topic_type: SYNC_TYPE,
                ..volatile(SYNC_TOPIC, type_name, 1_024)
            }
        }
        match self {
            // Over 80% of traffic. A gap is repaired by ShareFetch (shares
            // carry per-sender sequence numbers), so late joiners need no
            // durability.
            TopicId::Share => volatile("wallance_share", "wallance::Share", 16_384),
            // A request is only useful to voters online now; the requester
            // re-sends it every `retry_ms` until it commits.
            TopicId::Request => volatile("wallance_request", "wallance::Request", 4_096),
            // Votes are the latency path: a voter re-sends its vote every
            // `retry_ms / 2` while the decision is open, so a lost one delays
            // and never stalls. A deep reader cache for 10k-vote bursts.
            TopicId::Vote => volatile("wallance_vote", "wallance::Vote", 16_384),
            // A certificate proves a wallet's new version by itself: late
            // joiners and restarted nodes catch up through the digest,
            // HeadsRequest and CertFetch.
            TopicId::Certificate => TopicSpec {
                name: "wallance_certificate",
                type_name: "wallance::Certificate",
                topic_type: "wallance::Certificate",
                keyed: true,
                reliable: false,
                transient_local: false,
                keep_last: Some(1_024),
                // Certificates can be large (76 bytes per vote): a bounded cache.
                max_samples: 1_024,
            },
            // The announce, outcome and repair messages, on one topic (see
            // SYNC_TOPIC). A requester that missed its outcome (or restarted
            // while the contract ran) asks again with a query vote,
            // `retry_ms` apart. A provider's service list: the provider sends it
            // again every 30 s and answers a HeadsRequest (what a node
            // joining sends first) with it; the latest replaces the rest (by
            // `seq`). The digest is periodic: the next replaces a lost one.
            // The rest is point-to-point sync traffic on a broadcast medium;
            // a lost ask is asked again after `retry_ms`.
            TopicId::Announce => sync("wallance::Announce"),
            TopicId::Digest => sync("wallance::SyncDigest"),
            TopicId::HeadsRequest => sync("wallance::HeadsRequest"),
            TopicId::Heads => sync("wallance::Heads"),
            TopicId::CertFetch => sync("wallance::CertFetch"),
            TopicId::ShareFetch => sync("wallance::ShareFetch"),
            TopicId::Outcome => sync("wallance::Outcome"),
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
