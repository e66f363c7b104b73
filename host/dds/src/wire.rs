//! Wire types: one serde struct per DDS topic, exactly as `idl/wallance.idl`
//! describes them.
//!
//! Field order, types and bounds here ARE the wire format (XCDR1 / PLAIN_CDR,
//! little endian, every struct `@final`), so another vendor's participant can
//! read and write our topics from the IDL alone. Change one only together with
//! the IDL and the golden vectors in the tests.
//!
//! Mapping rules:
//! - 32-byte IDs and hashes are `octet x[32]` (no length prefix), signatures
//!   `octet sig[64]`.
//! - Money and counters are `unsigned long long` (u64), never floats; the one
//!   float is a sensor value (`double`), kept bit-exact.
//! - Names the protocol compares (service, topic, parameter key) are bounded
//!   IDL strings, which cannot hold NUL, so such a name is refused on send.
//!   Free text (parameter values, contract outcomes) is `sequence<octet, N>`
//!   of UTF-8, so any Rust string crosses losslessly.
//! - Conversions from the wire check every bound the core checks, so an
//!   oversized or non-UTF-8 sample is dropped here with a reason instead of
//!   reaching the core.

use serde::{Deserialize, Serialize};
use wallance_core::crypto::{MemberId, Signature};
use wallance_core::msg::{
    self as core_msg, MAX_OUTCOME_LEN, MAX_PARAM_KEY_LEN, MAX_PARAMS_BYTES, MAX_SERVICE_LEN, MAX_SERVICES_PER_PROVIDER,
    MAX_TOPIC_LEN, Message,
};

/// Votes in one certificate. The core bounds a certificate only by the 4 MiB
/// message limit (76 bytes per vote); we bound the sequence explicitly so a
/// hostile length cannot make us build a huge vector.
pub const MAX_CERT_VOTES: usize = 50_000;
/// Wallet heads in one `Heads` message: bounded by the same 4 MiB.
pub const MAX_HEADS: usize = 200_000;
/// Parameters in one request: the core's canonical encoding counts them in a u8.
pub const MAX_PARAMS: usize = 255;

/// Why a message cannot go on the wire or a sample cannot become a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("{field} is {len} long, limit is {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{0} contains a NUL byte, which an IDL string cannot carry")]
    Nul(&'static str),
    #[error("{0} is not valid UTF-8")]
    Utf8(&'static str),
}

/// Serde for `octet x[N]` with N > 32 (serde's derive stops at 32): a tuple,
/// which CDR writes as N bytes with no length prefix, like an IDL array.
mod octets {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::ser::SerializeTuple;
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub fn serialize<S: Serializer, const N: usize>(bytes: &[u8; N], ser: S) -> Result<S::Ok, S::Error> {
        let mut t = ser.serialize_tuple(N)?;
        for b in bytes {
            t.serialize_element(b)?;
        }
        t.end()
    }

    struct ArrayVisitor<const N: usize>;

    impl<'de, const N: usize> Visitor<'de> for ArrayVisitor<N> {
        type Value = [u8; N];
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "{N} octets")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; N], A::Error> {
            let mut out = [0u8; N];
            for (i, slot) in out.iter_mut().enumerate() {
                *slot = seq.next_element()?.ok_or_else(|| A::Error::invalid_length(i, &self))?;
            }
            Ok(out)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(de: D) -> Result<[u8; N], D::Error> {
        de.deserialize_tuple(N, ArrayVisitor::<N>)
    }
}

/// `wallance::Share`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Share {
    pub sender: [u8; 32],
    pub seq: u64,
    pub time_ms: u64,
    pub topic: String,
    pub value: f64,
    #[serde(with = "octets")]
    pub sig: [u8; 64],
}

/// `wallance::Param`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Param {
    pub key: String,
    pub value: Vec<u8>,
}

/// `wallance::Request`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub requester: [u8; 32],
    pub service: String,
    pub provider: [u8; 32],
    pub price: u64,
    pub announce_seq: u64,
    pub contract_hash: [u8; 32],
    pub time_ms: u64,
    pub version: u64,
    pub state: [u8; 32],
    pub shares_upto: u64,
    pub received_upto: u64,
    pub params: Vec<Param>,
    pub nonce: u64,
    #[serde(with = "octets")]
    pub sig: [u8; 64],
}

/// `wallance::Vote`: 144 bytes of CDR, 148 with the encapsulation header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub voter: [u8; 32],
    pub request_id: [u8; 32],
    pub remaining: u64,
    pub nonce: u64,
    #[serde(with = "octets")]
    pub sig: [u8; 64],
}

/// `wallance::CertVote`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertVote {
    pub voter_idx: u32,
    pub nonce: u64,
    #[serde(with = "octets")]
    pub sig: [u8; 64],
}

/// `wallance::Certificate`. A member of [`ConsensusMessage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    pub request: Request,
    pub remaining: u64,
    pub votes: Vec<CertVote>,
    #[serde(with = "octets")]
    pub provider_sig: [u8; 64],
}

/// `wallance::ServiceOffer`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceOffer {
    pub name: String,
    pub price: u64,
    pub contract_hash: [u8; 32],
}

/// `wallance::Announce`: a provider's service list, the latest replacing
/// older ones (by `seq`). A member of [`Sync`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    pub provider: [u8; 32],
    pub seq: u64,
    pub services: Vec<ServiceOffer>,
    #[serde(with = "octets")]
    pub sig: [u8; 64],
}

/// `wallance::Outcome`. A member of [`SyncMessage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub provider: [u8; 32],
    pub requester: [u8; 32],
    pub request_id: [u8; 32],
    pub version: u64,
    pub ok: bool,
    pub body: Vec<u8>,
    #[serde(with = "octets")]
    pub sig: [u8; 64],
}

/// `wallance::SyncDigest`. `from`/`to` are `from_id`/`to_id` on the wire
/// because `from` is a keyword in Python, where other vendors' tools live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncDigest {
    pub from_id: [u8; 32],
    pub time_ms: u64,
    pub digest: [u8; 32],
    #[serde(with = "octets")]
    pub sig: [u8; 64],
}

/// `wallance::HeadsRequest`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadsRequest {
    pub from_id: [u8; 32],
    pub to_id: [u8; 32],
    pub time_ms: u64,
    #[serde(with = "octets")]
    pub sig: [u8; 64],
}

/// `wallance::Head`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub idx: u32,
    pub version: u64,
    pub settled: u64,
    pub shares: u64,
    pub received: u64,
}

/// `wallance::Heads`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heads {
    pub from_id: [u8; 32],
    pub to_id: [u8; 32],
    pub time_ms: u64,
    pub heads: Vec<Head>,
    #[serde(with = "octets")]
    pub sig: [u8; 64],
}

/// `wallance::CertFetch`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertFetch {
    pub from_id: [u8; 32],
    pub to_id: [u8; 32],
    pub idx: u32,
    pub first_version: u64,
    pub last_version: u64,
    #[serde(with = "octets")]
    pub sig: [u8; 64],
}

/// `wallance::ShareFetch`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareFetch {
    pub from_id: [u8; 32],
    pub to_id: [u8; 32],
    pub first_seq: u64,
    pub last_seq: u64,
    #[serde(with = "octets")]
    pub sig: [u8; 64],
}

/// `wallance::Consensus`, the one sample type of the `wallance_consensus`
/// topic: requests, votes and certificates, the messages a purchase waits
/// on. Every message kind rides one of two topics, each a struct around a
/// union: endpoint discovery costs each participant work per remote
/// endpoint, so a network's start-up grows with the square of its size
/// times the endpoints per participant (2 topics make 4 endpoints where 11
/// made 22). Two, not one: each topic has its own reader and cache, and the
/// reader thread takes at most [`crate::transport`]'s batch from each in
/// turn, so a burst of shares or repair traffic never stands in front of a
/// vote. A struct around the union, not the union itself: Cyclone DDS takes
/// a union at the top of a topic type for a keyed one and would not match
/// our keyless writers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Consensus {
    pub msg: ConsensusMessage,
}

/// `wallance::ConsensusMessage`: an IDL union switched on an `unsigned
/// long`, the member's index in this order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ConsensusMessage {
    Request(Request),
    Vote(Vote),
    Certificate(Box<Certificate>),
}

/// `wallance::Sync`, the one sample type of the `wallance_sync` topic:
/// shares, announces, outcomes and the repair messages (see [`Consensus`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sync {
    pub msg: SyncMessage,
}

/// `wallance::SyncMessage`: an IDL union switched on an `unsigned long`, the
/// member's index in this order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SyncMessage {
    Announce(Announce),
    Digest(SyncDigest),
    HeadsRequest(HeadsRequest),
    Heads(Heads),
    CertFetch(CertFetch),
    ShareFetch(ShareFetch),
    Outcome(Outcome),
    Share(Share),
}

impl WireMessage {
    /// The message kind's [`TopicId`].
    pub fn topic(&self) -> crate::topics::TopicId {
        use crate::topics::TopicId;
        match self {
            WireMessage::Share(_) => TopicId::Share,
            WireMessage::Request(_) => TopicId::Request,
            WireMessage::Vote(_) => TopicId::Vote,
            WireMessage::Certificate(_) => TopicId::Certificate,
            WireMessage::Announce(_) => TopicId::Announce,
            WireMessage::Outcome(_) => TopicId::Outcome,
            WireMessage::Digest(_) => TopicId::Digest,
            WireMessage::HeadsRequest(_) => TopicId::HeadsRequest,
            WireMessage::Heads(_) => TopicId::Heads,
            WireMessage::CertFetch(_) => TopicId::CertFetch,
            WireMessage::ShareFetch(_) => TopicId::ShareFetch,
        }
    }
}

impl From<Sync> for WireMessage {
    fn from(s: Sync) -> Self {
        match s.msg {
            SyncMessage::Announce(m) => WireMessage::Announce(m),
            SyncMessage::Digest(m) => WireMessage::Digest(m),
            SyncMessage::HeadsRequest(m) => WireMessage::HeadsRequest(m),
            SyncMessage::Heads(m) => WireMessage::Heads(m),
            SyncMessage::CertFetch(m) => WireMessage::CertFetch(m),
            SyncMessage::ShareFetch(m) => WireMessage::ShareFetch(m),
            SyncMessage::Outcome(m) => WireMessage::Outcome(m),
            SyncMessage::Share(m) => WireMessage::Share(m),
        }
    }
}

impl From<Consensus> for WireMessage {
    fn from(s: Consensus) -> Self {
        match s.msg {
            ConsensusMessage::Request(m) => WireMessage::Request(m),
            ConsensusMessage::Vote(m) => WireMessage::Vote(m),
            ConsensusMessage::Certificate(m) => WireMessage::Certificate(m),
        }
    }
}

/// A message as one sample of the topic it rides.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    Consensus(Consensus),
    Sync(Sync),
}

impl From<WireMessage> for Sample {
    fn from(m: WireMessage) -> Self {
        let consensus = |msg| Sample::Consensus(Consensus { msg });
        let sync = |msg| Sample::Sync(Sync { msg });
        match m {
            WireMessage::Request(m) => consensus(ConsensusMessage::Request(m)),
            WireMessage::Vote(m) => consensus(ConsensusMessage::Vote(m)),
            WireMessage::Certificate(m) => consensus(ConsensusMessage::Certificate(m)),
            WireMessage::Share(m) => sync(SyncMessage::Share(m)),
            WireMessage::Announce(m) => sync(SyncMessage::Announce(m)),
            WireMessage::Outcome(m) => sync(SyncMessage::Outcome(m)),
            WireMessage::Digest(m) => sync(SyncMessage::Digest(m)),
            WireMessage::HeadsRequest(m) => sync(SyncMessage::HeadsRequest(m)),
            WireMessage::Heads(m) => sync(SyncMessage::Heads(m)),
            WireMessage::CertFetch(m) => sync(SyncMessage::CertFetch(m)),
            WireMessage::ShareFetch(m) => sync(SyncMessage::ShareFetch(m)),
        }
    }
}

/// A message as it goes on one of the topics.
#[derive(Debug, Clone, PartialEq)]
pub enum WireMessage {
    Share(Share),
    Request(Request),
    Vote(Vote),
    Certificate(Box<Certificate>),
    Announce(Announce),
    Outcome(Outcome),
    Digest(SyncDigest),
    HeadsRequest(HeadsRequest),
    Heads(Heads),
    CertFetch(CertFetch),
    ShareFetch(ShareFetch),
}

// ---- checks shared by both directions ----

fn name(field: &'static str, s: &str, max: usize) -> Result<String, WireError> {
    if s.len() > max {
        return Err(WireError::TooLong {
            field,
            len: s.len(),
            max,
        });
    }
    if s.as_bytes().contains(&0) {
        return Err(WireError::Nul(field));
    }
    Ok(s.to_owned())
}

fn text(field: &'static str, bytes: Vec<u8>, max: usize) -> Result<String, WireError> {
    if bytes.len() > max {
        return Err(WireError::TooLong {
            field,
            len: bytes.len(),
            max,
        });
    }
    String::from_utf8(bytes).map_err(|_| WireError::Utf8(field))
}

fn count(field: &'static str, len: usize, max: usize) -> Result<(), WireError> {
    if len > max {
        return Err(WireError::TooLong { field, len, max });
    }
    Ok(())
}

fn id(bytes: [u8; 32]) -> MemberId {
    MemberId(bytes)
}

fn sig(bytes: [u8; 64]) -> Signature {
    Signature(bytes)
}

// ---- core -> wire ----

fn request_to_wire(r: &core_msg::Request) -> Result<Request, WireError> {
    count("request params", r.params.len(), MAX_PARAMS)?;
    let params = r
        .params
        .iter()
        .map(|(k, v)| {
            count("param value", v.len(), MAX_PARAMS_BYTES)?;
            Ok(Param {
                key: name("param key", k, MAX_PARAM_KEY_LEN)?,
                value: v.as_bytes().to_vec(),
            })
        })
        .collect::<Result<Vec<_>, WireError>>()?;
    Ok(Request {
        requester: r.requester.0,
        service: name("service", &r.service, MAX_SERVICE_LEN)?,
        provider: r.provider.0,
        price: r.price,
        announce_seq: r.announce_seq,
        contract_hash: r.contract_hash,
        time_ms: r.time_ms,
        version: r.version,
        state: r.state,
        shares_upto: r.shares_upto,
        received_upto: r.received_upto,
        params,
        nonce: r.nonce,
        sig: r.sig.0,
    })
}

impl From<&core_msg::Vote> for Vote {
    fn from(v: &core_msg::Vote) -> Self {
        Self {
            voter: v.voter.0,
            request_id: v.request_id,
            remaining: v.remaining,
            nonce: v.nonce,
            sig: v.sig.0,
        }
    }
}

impl WireMessage {
    /// The wire form of a core message. Fails only for a message the core
    /// would not send (fields over their limits) or a name holding NUL.
    pub fn from_message(msg: &Message) -> Result<Self, WireError> {
        Ok(match msg {
            Message::Share(m) => WireMessage::Share(Share {
                sender: m.sender.0,
                seq: m.seq,
                time_ms: m.time_ms,
                topic: name("share topic", &m.topic, MAX_TOPIC_LEN)?,
                value: m.value,
                sig: m.sig.0,
            }),
            Message::Request(m) => WireMessage::Request(request_to_wire(m)?),
            Message::Vote(m) => WireMessage::Vote(Vote::from(m)),
            Message::Certificate(m) => {
                count("certificate votes", m.votes.len(), MAX_CERT_VOTES)?;
                WireMessage::Certificate(Box::new(Certificate {
                    request: request_to_wire(&m.request)?,
                    remaining: m.remaining,
                    votes: m
                        .votes
                        .iter()
                        .map(|v| CertVote {
                            voter_idx: v.voter_idx,
                            nonce: v.nonce,
                            sig: v.sig.0,
                        })
                        .collect(),
                    provider_sig: m.provider_sig.0,
                }))
            }
            Message::Announce(m) => {
                count("announce services", m.services.len(), MAX_SERVICES_PER_PROVIDER)?;
                WireMessage::Announce(Announce {
                    provider: m.provider.0,
                    seq: m.seq,
                    services: m
                        .services
                        .iter()
                        .map(|s| {
                            Ok(ServiceOffer {
                                name: name("service", &s.name, MAX_SERVICE_LEN)?,
                                price: s.price,
                                contract_hash: s.contract_hash,
                            })
                        })
                        .collect::<Result<_, WireError>>()?,
                    sig: m.sig.0,
                })
            }
            Message::Outcome(m) => {
                count("outcome body", m.body.len(), MAX_OUTCOME_LEN)?;
                WireMessage::Outcome(Outcome {
                    provider: m.provider.0,
                    requester: m.requester.0,
                    request_id: m.request_id,
                    version: m.version,
                    ok: m.ok,
                    body: m.body.as_bytes().to_vec(),
                    sig: m.sig.0,
                })
            }
            Message::Digest(m) => WireMessage::Digest(SyncDigest {
                from_id: m.from.0,
                time_ms: m.time_ms,
                digest: m.digest,
                sig: m.sig.0,
            }),
            Message::HeadsRequest(m) => WireMessage::HeadsRequest(HeadsRequest {
                from_id: m.from.0,
                to_id: m.to.0,
                time_ms: m.time_ms,
                sig: m.sig.0,
            }),
            Message::Heads(m) => {
                count("heads", m.heads.len(), MAX_HEADS)?;
                WireMessage::Heads(Heads {
                    from_id: m.from.0,
                    to_id: m.to.0,
                    time_ms: m.time_ms,
                    heads: m
                        .heads
                        .iter()
                        .map(|h| Head {
                            idx: h.idx,
                            version: h.version,
                            settled: h.settled,
                            shares: h.shares,
                            received: h.received,
                        })
                        .collect(),
                    sig: m.sig.0,
                })
            }
            Message::CertFetch(m) => WireMessage::CertFetch(CertFetch {
                from_id: m.from.0,
                to_id: m.to.0,
                idx: m.idx,
                first_version: m.first_version,
                last_version: m.last_version,
                sig: m.sig.0,
            }),
            Message::ShareFetch(m) => WireMessage::ShareFetch(ShareFetch {
                from_id: m.from.0,
                to_id: m.to.0,
                first_seq: m.first_seq,
                last_seq: m.last_seq,
                sig: m.sig.0,
            }),
        })
    }

    /// The core message a sample carries, after the bounds the core checks.
    pub fn into_message(self) -> Result<Message, WireError> {
        Ok(match self {
            WireMessage::Share(m) => Message::Share(m.try_into()?),
            WireMessage::Request(m) => Message::Request(m.try_into()?),
            WireMessage::Vote(m) => Message::Vote(m.into()),
            WireMessage::Certificate(m) => Message::Certificate(Box::new((*m).try_into()?)),
            WireMessage::Announce(m) => Message::Announce(m.try_into()?),
            WireMessage::Outcome(m) => Message::Outcome(m.try_into()?),
            WireMessage::Digest(m) => Message::Digest(m.into()),
            WireMessage::HeadsRequest(m) => Message::HeadsRequest(m.into()),
            WireMessage::Heads(m) => Message::Heads(m.try_into()?),
            WireMessage::CertFetch(m) => Message::CertFetch(m.into()),
            WireMessage::ShareFetch(m) => Message::ShareFetch(m.into()),
        })
    }
}

// ---- wire -> core ----

impl TryFrom<Share> for core_msg::Share {
    type Error = WireError;
    fn try_from(m: Share) -> Result<Self, WireError> {
        Ok(Self {
            sender: id(m.sender),
            seq: m.seq,
            time_ms: m.time_ms,
            topic: name("share topic", &m.topic, MAX_TOPIC_LEN)?,
            value: m.value,
            sig: sig(m.sig),
        })
    }
}

impl TryFrom<Request> for core_msg::Request {
    type Error = WireError;
    fn try_from(m: Request) -> Result<Self, WireError> {
        count("request params", m.params.len(), MAX_PARAMS)?;
        let params = m
            .params
            .into_iter()
            .map(|p| {
                Ok((
                    name("param key", &p.key, MAX_PARAM_KEY_LEN)?,
                    text("param value", p.value, MAX_PARAMS_BYTES)?,
                ))
            })
            .collect::<Result<Vec<_>, WireError>>()?;
        Ok(Self {
            requester: id(m.requester),
            service: name("service", &m.service, MAX_SERVICE_LEN)?,
            provider: id(m.provider),
            price: m.price,
            announce_seq: m.announce_seq,
            contract_hash: m.contract_hash,
            time_ms: m.time_ms,
            version: m.version,
            state: m.state,
            shares_upto: m.shares_upto,
            received_upto: m.received_upto,
            params,
            nonce: m.nonce,
            sig: sig(m.sig),
        })
    }
}

impl From<Vote> for core_msg::Vote {
    fn from(m: Vote) -> Self {
        Self {
            voter: id(m.voter),
            request_id: m.request_id,
            remaining: m.remaining,
            nonce: m.nonce,
            sig: sig(m.sig),
        }
    }
}

impl TryFrom<Certificate> for core_msg::Certificate {
    type Error = WireError;
    fn try_from(m: Certificate) -> Result<Self, WireError> {
        count("certificate votes", m.votes.len(), MAX_CERT_VOTES)?;
        Ok(Self {
            request: m.request.try_into()?,
            remaining: m.remaining,
            votes: m
                .votes
                .into_iter()
                .map(|v| core_msg::CertVote {
                    voter_idx: v.voter_idx,
                    nonce: v.nonce,
                    sig: sig(v.sig),
                })
                .collect(),
            provider_sig: sig(m.provider_sig),
        })
    }
}

impl TryFrom<Announce> for core_msg::Announce {
    type Error = WireError;
    fn try_from(m: Announce) -> Result<Self, WireError> {
        count("announce services", m.services.len(), MAX_SERVICES_PER_PROVIDER)?;
        Ok(Self {
            provider: id(m.provider),
            seq: m.seq,
            services: m
                .services
                .into_iter()
                .map(|s| {
                    Ok(core_msg::ServiceOffer {
                        name: name("service", &s.name, MAX_SERVICE_LEN)?,
                        price: s.price,
                        contract_hash: s.contract_hash,
                    })
                })
                .collect::<Result<_, WireError>>()?,
            sig: sig(m.sig),
        })
    }
}

impl TryFrom<Outcome> for core_msg::Outcome {
    type Error = WireError;
    fn try_from(m: Outcome) -> Result<Self, WireError> {
        Ok(Self {
            provider: id(m.provider),
            requester: id(m.requester),
            request_id: m.request_id,
            version: m.version,
            ok: m.ok,
            body: text("outcome body", m.body, MAX_OUTCOME_LEN)?,
            sig: sig(m.sig),
        })
    }
}

impl From<SyncDigest> for core_msg::SyncDigest {
    fn from(m: SyncDigest) -> Self {
        Self {
            from: id(m.from_id),
            time_ms: m.time_ms,
            digest: m.digest,
            sig: sig(m.sig),
        }
    }
}

impl From<HeadsRequest> for core_msg::HeadsRequest {
    fn from(m: HeadsRequest) -> Self {
        Self {
            from: id(m.from_id),
            to: id(m.to_id),
            time_ms: m.time_ms,
            sig: sig(m.sig),
        }
    }
}

impl TryFrom<Heads> for core_msg::Heads {
    type Error = WireError;
    fn try_from(m: Heads) -> Result<Self, WireError> {
        count("heads", m.heads.len(), MAX_HEADS)?;
        Ok(Self {
            from: id(m.from_id),
            to: id(m.to_id),
            time_ms: m.time_ms,
            heads: m
                .heads
                .into_iter()
                .map(|h| core_msg::Head {
                    idx: h.idx,
                    version: h.version,
                    settled: h.settled,
                    shares: h.shares,
                    received: h.received,
                })
                .collect(),
            sig: sig(m.sig),
        })
    }
}

impl From<CertFetch> for core_msg::CertFetch {
    fn from(m: CertFetch) -> Self {
        Self {
            from: id(m.from_id),
            to: id(m.to_id),
            idx: m.idx,
            first_version: m.first_version,
            last_version: m.last_version,
            sig: sig(m.sig),
        }
    }
}

impl From<ShareFetch> for core_msg::ShareFetch {
    fn from(m: ShareFetch) -> Self {
        Self {
            from: id(m.from_id),
            to: id(m.to_id),
            first_seq: m.first_seq,
            last_seq: m.last_seq,
            sig: sig(m.sig),
        }
    }
}

/// Serializes a wire struct as the CDR payload rustdds puts on the wire,
/// without the 4-byte encapsulation header. For sizes and golden tests.
pub fn to_cdr<T: Serialize>(value: &T) -> Result<Vec<u8>, rustdds::cdr_encoding::Error> {
    rustdds::cdr_encoding::to_vec::<T, byteorder::LittleEndian>(value)
}

/// The inverse of [`to_cdr`].
pub fn from_cdr<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, rustdds::cdr_encoding::Error> {
    rustdds::cdr_encoding::from_bytes::<T, byteorder::LittleEndian>(bytes).map(|(v, _)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use wallance_core::msg::{
        Announce as CAnnounce, CertFetch as CCertFetch, CertVote as CCertVote, Certificate as CCertificate,
        Head as CHead, Heads as CHeads, HeadsRequest as CHeadsRequest, Outcome as COutcome, Request as CRequest,
        ServiceOffer as CServiceOffer, Share as CShare, ShareFetch as CShareFetch, SyncDigest as CSyncDigest,
        Vote as CVote,
    };

    /// Through CDR bytes and back as the sample of its topic, as a remote
    /// participant would see it.
    fn via_cdr(w: WireMessage) -> WireMessage {
        fn rt<T: Serialize + serde::de::DeserializeOwned>(t: &T) -> T {
            from_cdr(&to_cdr(t).expect("serialize")).expect("deserialize")
        }
        match Sample::from(w) {
            Sample::Consensus(c) => WireMessage::from(rt(&c)),
            Sample::Sync(s) => WireMessage::from(rt(&s)),
        }
    }

    fn a32() -> impl Strategy<Value = [u8; 32]> {
        any::<[u8; 32]>()
    }
    fn mid() -> impl Strategy<Value = MemberId> {
        a32().prop_map(MemberId)
    }
    fn sg() -> impl Strategy<Value = Signature> {
        (a32(), a32()).prop_map(|(a, b)| {
            let mut s = [0u8; 64];
            s[..32].copy_from_slice(&a);
            s[32..].copy_from_slice(&b);
            Signature(s)
        })
    }
    /// Names: any non-NUL characters within `max` bytes.
    fn nm(max: usize) -> impl Strategy<Value = String> {
        "[^\u{0}]{0,64}".prop_filter_map("too long", move |s: String| (s.len() <= max).then_some(s))
    }
    /// Free text: anything, NUL included, within `max` bytes.
    fn tx(max: usize) -> impl Strategy<Value = String> {
        any::<String>().prop_map(move |s| {
            let mut end = s.len().min(max);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s[..end].to_string()
        })
    }
    fn req() -> impl Strategy<Value = CRequest> {
        (
            (mid(), nm(MAX_SERVICE_LEN), mid(), any::<u64>(), any::<u64>()),
            (any::<u64>(), a32(), any::<u64>(), any::<u64>()),
            (any::<u64>(), a32()),
            prop::collection::vec((nm(MAX_PARAM_KEY_LEN), tx(200)), 0..4),
            (any::<u64>(), sg()),
        )
            .prop_map(
                |(
                    (requester, service, provider, price, time_ms),
                    (version, state, shares_upto, received_upto),
                    (announce_seq, contract_hash),
                    params,
                    (nonce, sig),
                )| CRequest {
                    requester,
                    service,
                    provider,
                    price,
                    announce_seq,
                    contract_hash,
                    time_ms,
                    version,
                    state,
                    shares_upto,
                    received_upto,
                    params,
                    nonce,
                    sig,
                },
            )
    }

    fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (mid(), any::<u64>(), any::<u64>(), nm(MAX_TOPIC_LEN), any::<u64>(), sg()).prop_map(
                |(sender, seq, time_ms, topic, bits, sig)| Message::Share(CShare {
                    sender,
                    seq,
                    time_ms,
                    topic,
                    // Every bit pattern, NaN payloads included.
                    value: f64::from_bits(bits),
                    sig,
                })
            ),
            req().prop_map(Message::Request),
            (mid(), a32(), any::<u64>(), any::<u64>(), sg()).prop_map(|(voter, request_id, remaining, nonce, sig)| {
                Message::Vote(CVote {
                    voter,
                    request_id,
                    remaining,
                    nonce,
                    sig,
                })
            }),
            (
                req(),
                any::<u64>(),
                prop::collection::vec((any::<u32>(), any::<u64>(), sg()), 0..6),
                sg()
            )
                .prop_map(|(request, remaining, votes, provider_sig)| {
                    Message::Certificate(Box::new(CCertificate {
                        request,
                        remaining,
                        votes: votes
                            .into_iter()
                            .map(|(voter_idx, nonce, sig)| CCertVote { voter_idx, nonce, sig })
                            .collect(),
                        provider_sig,
                    }))
                }),
            (
                mid(),
                any::<u64>(),
                prop::collection::vec((nm(MAX_SERVICE_LEN), any::<u64>(), a32()), 0..5),
                sg()
            )
                .prop_map(|(provider, seq, services, sig)| Message::Announce(CAnnounce {
                    provider,
                    seq,
                    services: services
                        .into_iter()
                        .map(|(name, price, contract_hash)| CServiceOffer {
                            name,
                            price,
                            contract_hash,
                        })
                        .collect(),
                    sig,
                })),
            (
                (mid(), mid(), a32(), any::<u64>()),
                (any::<bool>(), tx(MAX_OUTCOME_LEN), sg())
            )
                .prop_map(|((provider, requester, request_id, version), (ok, body, sig))| {
                    Message::Outcome(COutcome {
                        provider,
                        requester,
                        request_id,
                        version,
                        ok,
                        body,
                        sig,
                    })
                }),
            (mid(), any::<u64>(), a32(), sg()).prop_map(|(from, time_ms, digest, sig)| {
                Message::Digest(CSyncDigest {
                    from,
                    time_ms,
                    digest,
                    sig,
                })
            }),
            (mid(), mid(), any::<u64>(), sg()).prop_map(|(from, to, time_ms, sig)| {
                Message::HeadsRequest(CHeadsRequest { from, to, time_ms, sig })
            }),
            (
                mid(),
                mid(),
                any::<u64>(),
                prop::collection::vec(
                    (any::<u32>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
                    0..8
                ),
                sg()
            )
                .prop_map(|(from, to, time_ms, heads, sig)| Message::Heads(CHeads {
                    from,
                    to,
                    time_ms,
                    heads: heads
                        .into_iter()
                        .map(|(idx, version, settled, shares, received)| CHead {
                            idx,
                            version,
                            settled,
                            shares,
                            received,
                        })
                        .collect(),
                    sig,
                })),
            (mid(), mid(), any::<u32>(), any::<u64>(), any::<u64>(), sg()).prop_map(
                |(from, to, idx, first_version, last_version, sig)| {
                    Message::CertFetch(CCertFetch {
                        from,
                        to,
                        idx,
                        first_version,
                        last_version,
                        sig,
                    })
                }
            ),
            (mid(), mid(), any::<u64>(), any::<u64>(), sg()).prop_map(|(from, to, first_seq, last_seq, sig)| {
                Message::ShareFetch(CShareFetch {
                    from,
                    to,
                    first_seq,
                    last_seq,
                    sig,
                })
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Lossless: core -> wire -> CDR bytes -> wire -> core gives the same
        /// canonical bytes (so the same signatures verify), for every kind.
        #[test]
        fn every_message_roundtrips_through_cdr(msg in message()) {
            let wire = WireMessage::from_message(&msg).expect("representable");
            let back = via_cdr(wire).into_message().expect("valid");
            prop_assert_eq!(back.encode(), msg.encode());
            prop_assert_eq!(back.kind(), msg.kind());
        }

        /// Arbitrary bytes on any topic: an error or a value, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = from_cdr::<Share>(&bytes).map(core_msg::Share::try_from);
            let _ = from_cdr::<Request>(&bytes).map(core_msg::Request::try_from);
            let _ = from_cdr::<Vote>(&bytes).map(core_msg::Vote::from);
            let _ = from_cdr::<Certificate>(&bytes).map(core_msg::Certificate::try_from);
            let _ = from_cdr::<Announce>(&bytes).map(core_msg::Announce::try_from);
            let _ = from_cdr::<Outcome>(&bytes).map(core_msg::Outcome::try_from);
            let _ = from_cdr::<Heads>(&bytes).map(core_msg::Heads::try_from);
            // Both topics' unions, with any index and with one that names
            // a member.
            let _ = from_cdr::<Sync>(&bytes).map(|s| WireMessage::from(s).into_message());
            let _ = from_cdr::<Consensus>(&bytes).map(|s| WireMessage::from(s).into_message());
            if let Some((first, rest)) = bytes.split_first() {
                let mut tagged = u32::from(first % 8).to_le_bytes().to_vec();
                tagged.extend_from_slice(rest);
                let _ = from_cdr::<Sync>(&tagged).map(|s| WireMessage::from(s).into_message());
                tagged[..4].copy_from_slice(&u32::from(first % 3).to_le_bytes());
                let _ = from_cdr::<Consensus>(&tagged).map(|s| WireMessage::from(s).into_message());
            }
        }
    }

    /// The exact XCDR1 bytes of a vote: what any vendor must produce from the IDL.
    #[test]
    fn vote_golden_bytes() {
        let v = Vote {
            voter: [0x11; 32],
            request_id: [0x22; 32],
            remaining: 0x0102_0304_0506_0708,
            nonce: 9,
            sig: [0x33; 64],
        };
        let bytes = to_cdr(&v).expect("serialize");
        assert_eq!(bytes.len(), 144);
        let mut want = Vec::new();
        want.extend([0x11; 32]);
        want.extend([0x22; 32]);
        want.extend([8, 7, 6, 5, 4, 3, 2, 1]);
        want.extend([9, 0, 0, 0, 0, 0, 0, 0]);
        want.extend([0x33; 64]);
        assert_eq!(bytes, want);
    }

    /// Strings and sequences: length prefixes, NUL terminator, 8-byte alignment.
    #[test]
    fn share_golden_bytes() {
        let s = Share {
            sender: [1; 32],
            seq: 2,
            time_ms: 3,
            topic: "ab".into(),
            value: 1.5,
            sig: [4; 64],
        };
        let bytes = to_cdr(&s).expect("serialize");
        let mut want = Vec::new();
        want.extend([1; 32]);
        want.extend(2u64.to_le_bytes());
        want.extend(3u64.to_le_bytes());
        want.extend(3u32.to_le_bytes()); // "ab" + NUL
        want.extend(b"ab\0");
        want.push(0); // pad 55 -> 56 for the double
        want.extend(1.5f64.to_le_bytes());
        want.extend([4; 64]);
        assert_eq!(bytes, want);
    }

    /// The sync sample's layout, as Cyclone DDS's Python binding writes it
    /// (checked there byte for byte): the member's index as a u32, then the
    /// member, its u64s aligned to 8 from the payload's start.
    #[test]
    fn sync_golden_bytes() {
        let fetch = ShareFetch {
            from_id: [1; 32],
            to_id: [2; 32],
            first_seq: 3,
            last_seq: 4,
            sig: [5; 64],
        };
        let sample = Sync {
            msg: SyncMessage::ShareFetch(fetch),
        };
        let bytes = to_cdr(&sample).expect("serialize");
        let mut want = Vec::new();
        want.extend(5u32.to_le_bytes());
        want.extend([1; 32]);
        want.extend([2; 32]);
        want.extend([0; 4]); // 68 -> 72
        want.extend(3u64.to_le_bytes());
        want.extend(4u64.to_le_bytes());
        want.extend([5; 64]);
        assert_eq!(bytes, want);
        assert_eq!(from_cdr::<Sync>(&want).expect("decode"), sample);
        // An index past the last member, or a cut sample: an error, never a panic.
        let mut unknown = want.clone();
        unknown[0] = 8;
        assert!(from_cdr::<Sync>(&unknown).is_err());
        assert!(from_cdr::<Sync>(&want[..3]).is_err());
    }

    /// The consensus sample's layout: a vote, its member index 1, then the
    /// vote with its u64s aligned to 8 from the payload's start (so 4 bytes
    /// of padding the bare vote does not have).
    #[test]
    fn consensus_golden_bytes() {
        let sample = Consensus {
            msg: ConsensusMessage::Vote(Vote {
                voter: [0x11; 32],
                request_id: [0x22; 32],
                remaining: 0x0102_0304_0506_0708,
                nonce: 9,
                sig: [0x33; 64],
            }),
        };
        let bytes = to_cdr(&sample).expect("serialize");
        let mut want = Vec::new();
        want.extend(1u32.to_le_bytes());
        want.extend([0x11; 32]);
        want.extend([0x22; 32]);
        want.extend([0; 4]); // 68 -> 72
        want.extend([8, 7, 6, 5, 4, 3, 2, 1]);
        want.extend([9, 0, 0, 0, 0, 0, 0, 0]);
        want.extend([0x33; 64]);
        assert_eq!(bytes, want);
        assert_eq!(from_cdr::<Consensus>(&want).expect("decode"), sample);
        let mut unknown = want.clone();
        unknown[0] = 3;
        assert!(from_cdr::<Consensus>(&unknown).is_err());
        assert!(from_cdr::<Consensus>(&want[..70]).is_err());
    }

    #[test]
    fn names_with_nul_are_refused_on_send() {
        let key = wallance_core::Keypair::from_seed([1; 32]);
        let share = CShare::new(&key, 1, 1, "a\0b", 1.0);
        assert_eq!(
            WireMessage::from_message(&Message::Share(share)),
            Err(WireError::Nul("share topic"))
        );
    }

    #[test]
    fn bounds_are_checked_on_receipt() {
        let mut o = Outcome {
            provider: [0; 32],
            requester: [0; 32],
            request_id: [0; 32],
            version: 0,
            ok: true,
            body: vec![b'x'; MAX_OUTCOME_LEN + 1],
            sig: [0; 64],
        };
        assert!(matches!(
            core_msg::Outcome::try_from(o.clone()),
            Err(WireError::TooLong {
                field: "outcome body",
                ..
            })
        ));
        o.body = vec![0xff, 0xfe];
        assert_eq!(core_msg::Outcome::try_from(o), Err(WireError::Utf8("outcome body")));
        let a = Announce {
            provider: [0; 32],
            seq: 0,
            services: vec![
                ServiceOffer {
                    name: String::new(),
                    price: 0,
                    contract_hash: [0; 32],
                };
                MAX_SERVICES_PER_PROVIDER + 1
            ],
            sig: [0; 64],
        };
        assert!(matches!(
            core_msg::Announce::try_from(a),
            Err(WireError::TooLong {
                field: "announce services",
                ..
            })
        ));
    }
}
