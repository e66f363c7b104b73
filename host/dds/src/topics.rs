//! Topic names, type names and the QoS of every topic, with the reasons.
//!
//! Both sides of a topic use the same QoS so requested/offered always match.
//!
//! **Two DDS topics carry the eleven message kinds**, each as a union
//! ([`CONSENSUS_TOPIC`], [`SYNC_TOPIC`]). A [`TopicId`] is a message kind:
//! its counters are its own, its topic is shared.
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
//! No topic is keyed and every one keeps all (bounded by `max_samples`):
//! which message replaces which is the core's business (a wallet's higher
//! version, an announce's higher `seq`), not the middleware's.

use rustdds::policy::{Durability, History, Reliability, ResourceLimits};
use rustdds::{QosPolicies, QosPolicyBuilder, TopicKind};

/// One message kind, and the DDS topic it rides.
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
    /// The DDS topic: [`CONSENSUS_TOPIC`] or [`SYNC_TOPIC`].
    pub name: &'static str,
    /// The message's IDL type, `module::Struct`.
    pub type_name: &'static str,
    /// The topic's IDL type, which other vendors match on: the struct
    /// around the union that carries `type_name`.
    pub topic_type: &'static str,
    /// False on both topics: rustdds keeps no history per instance, and a
    /// union's member cannot be a key.
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

/// The topic of requests, votes and certificates, the messages a purchase
/// waits on, and its type (`wire::Consensus`, a struct around a union).
/// Endpoint discovery costs each participant work per remote endpoint, so
/// starting a network grows with the square of its size times the
/// endpoints per participant: two topics instead of eleven take a
/// participant from 22 endpoints to 4. With 11 more topics, 48 nodes took
/// 10.6-12.6 s instead of 3.7-3.9 s to discover each other.
pub const CONSENSUS_TOPIC: &str = "wallance_consensus";
pub const CONSENSUS_TYPE: &str = "wallance::Consensus";
/// The topic of shares, announces, outcomes and the repair messages, and
/// its type (`wire::Sync`). Apart from [`CONSENSUS_TOPIC`] so that a burst
/// of shares or repairs never stands in front of a vote: each topic has its
/// own reader, taken from in turn.
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
        const fn on(name: &'static str, topic_type: &'static str, type_name: &'static str) -> TopicSpec {
            TopicSpec {
                name,
                type_name,
                topic_type,
                keyed: false,
                reliable: false,
                transient_local: false,
                keep_last: None,
                // One reader per topic, so one cache for all its kinds:
                // deep enough for a 10k-vote burst, or shares (over 80% of
                // traffic) from thousands of sensors. The reader thread
                // takes samples at once; the cache only absorbs bursts.
                max_samples: 16_384,
            }
        }
        const fn consensus(type_name: &'static str) -> TopicSpec {
            on(CONSENSUS_TOPIC, CONSENSUS_TYPE, type_name)
        }
        const fn sync(type_name: &'static str) -> TopicSpec {
            on(SYNC_TOPIC, SYNC_TYPE, type_name)
        }
        match self {
            // A request is only useful to voters online now; the requester
            // re-sends it every `retry_ms` until it commits.
            TopicId::Request => consensus("wallance::Request"),
            // Votes are the latency path: a voter re-sends its vote every
            // `retry_ms / 2` while the decision is open, so a lost one delays
            // and never stalls.
            TopicId::Vote => consensus("wallance::Vote"),
            // A certificate proves a wallet's new version by itself: late
            // joiners and restarted nodes catch up through the digest,
            // HeadsRequest and CertFetch.
            TopicId::Certificate => consensus("wallance::Certificate"),
            // Over 80% of traffic. A gap is repaired by ShareFetch (shares
            // carry per-sender sequence numbers), so late joiners need no
            // durability.
            TopicId::Share => sync("wallance::Share"),
            // A requester that missed its outcome (or restarted while the
            // contract ran) asks again with a query vote, `retry_ms` apart.
            // A provider's service list: the provider sends it again every
            // 30 s and answers a HeadsRequest (what a node joining sends
            // first) with it; the latest replaces the rest (by `seq`). The
            // digest is periodic: the next replaces a lost one. The rest is
            // point-to-point sync traffic on a broadcast medium; a lost ask
            // is asked again after `retry_ms`.
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
