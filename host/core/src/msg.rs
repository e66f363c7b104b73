//! Every message of the protocol, its canonical encoding and its checks.
//!
//! A message is `tag (1 byte) || body || signature (64 bytes)`. The signed
//! digest is `SHA-256(domain || body)`; for requests and votes the nonce is
//! the body's last field and the same digest is the LWPoW hash, so a request's
//! identity, its proof of work and what its signature covers are one value.
//! `docs/protocol.md` lists every field with its size.

use crate::crypto::{Hash, Keypair, MemberId, Signature, sha256, verify};
use crate::encode::{DecodeError, Reader, Writer};
use crate::pow;

pub const MAX_SERVICE_LEN: usize = 64;
pub const MAX_TOPIC_LEN: usize = 64;
pub const MAX_PARAMS_BYTES: usize = 1_024;
pub const MAX_PARAM_KEY_LEN: usize = 64;
pub const MAX_OUTCOME_LEN: usize = 4_096;
pub const MAX_SERVICES_PER_PROVIDER: usize = 64;
/// Nothing larger is ever decoded (a certificate of 10 000 voters is ~760 KB).
pub const MAX_MESSAGE_LEN: usize = 4 << 20;

const TAG_SHARE: u8 = 1;
const TAG_REQUEST: u8 = 2;
const TAG_VOTE: u8 = 3;
const TAG_CERT: u8 = 4;
const TAG_ANNOUNCE: u8 = 5;
const TAG_OUTCOME: u8 = 6;
const TAG_DIGEST: u8 = 7;
const TAG_HEADS_REQUEST: u8 = 8;
const TAG_HEADS: u8 = 9;
const TAG_CERT_FETCH: u8 = 10;
const TAG_SHARE_FETCH: u8 = 11;

/// A sensor transaction: one data share, earning its sender 1/rate DCoin.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    pub sender: MemberId,
    /// 1, 2, 3, ... per sender; a gap means a share is missing.
    pub seq: u64,
    pub time_ms: u64,
    pub topic: String,
    pub value: f64,
    pub sig: Signature,
}

/// A request transaction: buy `service` from `provider` at `price`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub requester: MemberId,
    pub service: String,
    pub provider: MemberId,
    pub price: u64,
    /// What the request buys, pinned: the provider's announcement sequence
    /// number and the hash of the contract it listed for `service`. The
    /// provider runs exactly that contract or refunds the purchase.
    pub announce_seq: u64,
    pub contract_hash: Hash,
    pub time_ms: u64,
    /// The requester's wallet version and State this request spends from:
    /// one request per State.
    pub version: u64,
    pub state: Hash,
    /// How far the requester's sensor shares and received credits count.
    pub shares_upto: u64,
    pub received_upto: u64,
    /// What the buyer passes to the contract.
    pub params: Vec<(String, String)>,
    pub nonce: u64,
    pub sig: Signature,
}

/// A consensus transaction (Algorithm 1): `voter` checked request
/// `request_id` and computes the requester keeps `remaining` units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vote {
    pub voter: MemberId,
    pub request_id: Hash,
    pub remaining: u64,
    pub nonce: u64,
    pub sig: Signature,
}

/// One vote inside a certificate, the voter named by member index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertVote {
    pub voter_idx: u32,
    pub nonce: u64,
    pub sig: Signature,
}

/// A quorum certificate: a request and enough identical votes for it. It
/// proves the requester's new wallet by itself (hole 6), and the provider's
/// signature fixes exactly which voters are rewarded (hole 5).
///
/// A certificate whose `provider_sig` is all zeros is a *proof*: any node
/// that committed assembles one so that nodes which missed the votes,
/// the provider included, can catch up. A proof moves the requester's
/// wallet but pays nobody; only the provider's signed certificate settles
/// the payment and the rewards, so every node pays the same voters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub request: Request,
    pub remaining: u64,
    /// Sorted by voter index, no duplicates.
    pub votes: Vec<CertVote>,
    pub provider_sig: Signature,
}

/// One service a provider offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceOffer {
    pub name: String,
    pub price: u64,
    pub contract_hash: Hash,
}

/// A provider's complete list of services; a later `seq` replaces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    pub provider: MemberId,
    pub seq: u64,
    pub services: Vec<ServiceOffer>,
    pub sig: Signature,
}

/// What a contract returned, sent by the provider to the requester.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub provider: MemberId,
    pub requester: MemberId,
    pub request_id: Hash,
    pub version: u64,
    pub ok: bool,
    pub body: String,
    pub sig: Signature,
}

/// Anti-entropy: a digest of everything a node has settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncDigest {
    pub from: MemberId,
    pub time_ms: u64,
    pub digest: Hash,
    pub sig: Signature,
}

/// Asks `to` for its wallet heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadsRequest {
    pub from: MemberId,
    pub to: MemberId,
    pub time_ms: u64,
    pub sig: Signature,
}

/// A wallet's head: version, settled commits, shares seen and credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub idx: u32,
    pub version: u64,
    pub settled: u64,
    pub shares: u64,
    pub received: u64,
}

/// `from`'s heads, for `to`. Only wallets past genesis are listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heads {
    pub from: MemberId,
    pub to: MemberId,
    pub time_ms: u64,
    pub heads: Vec<Head>,
    pub sig: Signature,
}

/// Asks `to` for the certificates of wallet `idx`, versions `from..=to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertFetch {
    pub from: MemberId,
    pub to: MemberId,
    pub idx: u32,
    pub first_version: u64,
    pub last_version: u64,
    pub sig: Signature,
}

/// Asks sender `to` to re-send its shares `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareFetch {
    pub from: MemberId,
    pub to: MemberId,
    pub first_seq: u64,
    pub last_seq: u64,
    pub sig: Signature,
}

/// Any message on the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
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

fn digest_of(domain: &[u8], body: &Writer) -> Hash {
    sha256(&[domain, &body.bytes])
}

impl Share {
    fn body(&self, w: &mut Writer) {
        w.raw(&self.sender.0)
            .u64(self.seq)
            .u64(self.time_ms)
            .str8(&self.topic)
            .u64(self.value.to_bits());
    }
    pub fn digest(&self) -> Hash {
        let mut w = Writer::new();
        self.body(&mut w);
        digest_of(b"wallance/share/v1", &w)
    }
    pub fn new(key: &Keypair, seq: u64, time_ms: u64, topic: &str, value: f64) -> Self {
        let mut s = Self {
            sender: key.id(),
            seq,
            time_ms,
            topic: truncate(topic, MAX_TOPIC_LEN),
            value,
            sig: Signature::default(),
        };
        s.sig = key.sign(&s.digest());
        s
    }
    fn decode_body(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            sender: MemberId(r.array()?),
            seq: r.u64()?,
            time_ms: r.u64()?,
            topic: r.str8("topic", MAX_TOPIC_LEN)?,
            value: f64::from_bits(r.u64()?),
            sig: Signature(r.array()?),
        })
    }
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Encodes request parameters; `None` when they exceed the limits.
fn encode_params(params: &[(String, String)], w: &mut Writer) -> Option<()> {
    let mut inner = Writer::new();
    if params.len() > 255 {
        return None;
    }
    inner.u8(params.len() as u8);
    for (k, v) in params {
        if k.len() > MAX_PARAM_KEY_LEN || v.len() > MAX_PARAMS_BYTES {
            return None;
        }
        inner.str8(k).bytes16(v.as_bytes());
    }
    if inner.bytes.len() > MAX_PARAMS_BYTES {
        return None;
    }
    w.bytes16(&inner.bytes);
    Some(())
}

fn decode_params(r: &mut Reader) -> Result<Vec<(String, String)>, DecodeError> {
    let bytes = r.bytes16("params", MAX_PARAMS_BYTES)?;
    let mut p = Reader::new(&bytes);
    let n = p.u8()?;
    let mut out = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let k = p.str8("param key", MAX_PARAM_KEY_LEN)?;
        let v = String::from_utf8(p.bytes16("param value", MAX_PARAMS_BYTES)?)
            .map_err(|_| DecodeError::Utf8("param value"))?;
        out.push((k, v));
    }
    p.finish()?;
    Ok(out)
}

/// Why a request could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    #[error("service name longer than {MAX_SERVICE_LEN} bytes")]
    ServiceName,
    #[error("parameters exceed {MAX_PARAMS_BYTES} bytes")]
    Params,
    #[error("a parameter name is empty")]
    ParamName,
    #[error("no nonce found for the proof of work")]
    Work,
}

/// The fields of a request before its proof of work and signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestDraft {
    pub service: String,
    pub provider: MemberId,
    pub price: u64,
    pub announce_seq: u64,
    pub contract_hash: Hash,
    pub time_ms: u64,
    pub version: u64,
    pub state: Hash,
    pub shares_upto: u64,
    pub received_upto: u64,
    pub params: Vec<(String, String)>,
}

impl Request {
    /// The canonical bytes hashed before the nonce.
    pub fn prefix(&self) -> Option<Vec<u8>> {
        if self.service.len() > MAX_SERVICE_LEN {
            return None;
        }
        let mut w = Writer::with_tag(b"wallance/request/v2");
        w.raw(&self.requester.0)
            .str8(&self.service)
            .raw(&self.provider.0)
            .u64(self.price)
            .u64(self.announce_seq)
            .raw(&self.contract_hash)
            .u64(self.time_ms)
            .u64(self.version)
            .raw(&self.state)
            .u64(self.shares_upto)
            .u64(self.received_upto);
        encode_params(&self.params, &mut w)?;
        Some(w.finish())
    }

    /// The request's identity: its LWPoW hash, also what is signed.
    pub fn id(&self) -> Hash {
        match self.prefix() {
            Some(prefix) => pow::hash_with_nonce(&prefix, self.nonce),
            None => [0xff; 32],
        }
    }

    /// Solves the proof of work and signs.
    pub fn build(key: &Keypair, draft: RequestDraft, difficulty: u8) -> Result<Self, BuildError> {
        let mut r = Self {
            requester: key.id(),
            service: draft.service,
            provider: draft.provider,
            price: draft.price,
            announce_seq: draft.announce_seq,
            contract_hash: draft.contract_hash,
            time_ms: draft.time_ms,
            version: draft.version,
            state: draft.state,
            shares_upto: draft.shares_upto,
            received_upto: draft.received_upto,
            params: draft.params,
            nonce: 0,
            sig: Signature::default(),
        };
        if r.service.len() > MAX_SERVICE_LEN {
            return Err(BuildError::ServiceName);
        }
        if r.params.iter().any(|(k, _)| k.trim().is_empty()) {
            return Err(BuildError::ParamName);
        }
        let prefix = r.prefix().ok_or(BuildError::Params)?;
        // Start from the hash of the content so two requests rarely race
        // through the same nonces; any start works.
        let start = u64::from_le_bytes(sha256(&[&prefix])[..8].try_into().expect("8 bytes"));
        let (nonce, id) = pow::solve(&prefix, difficulty, start, 1 << 40).ok_or(BuildError::Work)?;
        r.nonce = nonce;
        r.sig = key.sign(&id);
        Ok(r)
    }

    fn body(&self, w: &mut Writer) -> Option<()> {
        let prefix = self.prefix()?;
        w.raw(&prefix[b"wallance/request/v2".len()..]).u64(self.nonce);
        Some(())
    }

    fn decode_body(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            requester: MemberId(r.array()?),
            service: r.str8("service", MAX_SERVICE_LEN)?,
            provider: MemberId(r.array()?),
            price: r.u64()?,
            announce_seq: r.u64()?,
            contract_hash: r.array()?,
            time_ms: r.u64()?,
            version: r.u64()?,
            state: r.array()?,
            shares_upto: r.u64()?,
            received_upto: r.u64()?,
            params: decode_params(r)?,
            nonce: r.u64()?,
            sig: Signature(r.array()?),
        })
    }

    /// Signature and proof of work; returns the id when both hold.
    pub fn check(&self, difficulty: u8) -> Result<Hash, &'static str> {
        let id = self.check_pow(difficulty)?;
        if !verify(&self.requester, &id, &self.sig) {
            return Err("request signature is invalid");
        }
        Ok(id)
    }

    /// The proof of work alone; returns the id (what the signature signs).
    pub fn check_pow(&self, difficulty: u8) -> Result<Hash, &'static str> {
        let Some(prefix) = self.prefix() else {
            return Err("request fields exceed their limits");
        };
        let id = pow::hash_with_nonce(&prefix, self.nonce);
        if !pow::meets(&id, difficulty) {
            return Err("request proof of work does not meet the difficulty");
        }
        Ok(id)
    }
}

/// The id a purchase's *verdict* votes carry in `Vote::request_id`: a
/// verdict is voted like a request, `remaining` 1 for "pay the provider"
/// and 0 for "refund the requester" (docs/protocol.md, Pay for service
/// rendered). Domain-separated, so it never equals a request id.
pub fn verdict_id(purchase: &Hash) -> Hash {
    sha256(&[b"wallance/verdict/v1", purchase])
}

/// The identity of a decision: what identical votes agree on.
pub fn decision_id(request_id: &Hash, remaining: u64) -> Hash {
    sha256(&[b"wallance/decision/v1", request_id, &remaining.to_le_bytes()])
}

impl Vote {
    fn prefix(voter: &MemberId, request_id: &Hash, remaining: u64) -> Vec<u8> {
        let mut w = Writer::with_tag(b"wallance/vote/v1");
        w.raw(&voter.0).raw(request_id).u64(remaining);
        w.finish()
    }

    pub fn hash(&self) -> Hash {
        pow::hash_with_nonce(&Self::prefix(&self.voter, &self.request_id, self.remaining), self.nonce)
    }

    pub fn build(key: &Keypair, request_id: Hash, remaining: u64, difficulty: u8) -> Option<Self> {
        let voter = key.id();
        let prefix = Self::prefix(&voter, &request_id, remaining);
        let (nonce, hash) = pow::solve(&prefix, difficulty, 0, 1 << 40)?;
        Some(Self {
            voter,
            request_id,
            remaining,
            nonce,
            sig: key.sign(&hash),
        })
    }

    pub fn decision(&self) -> Hash {
        decision_id(&self.request_id, self.remaining)
    }

    pub fn check(&self, difficulty: u8) -> Result<(), &'static str> {
        let hash = self.check_pow(difficulty)?;
        if !verify(&self.voter, &hash, &self.sig) {
            return Err("vote signature is invalid");
        }
        Ok(())
    }

    /// The proof of work alone; returns the hash the signature signs.
    pub fn check_pow(&self, difficulty: u8) -> Result<Hash, &'static str> {
        let hash = self.hash();
        if !pow::meets(&hash, difficulty) {
            return Err("vote proof of work does not meet the difficulty");
        }
        Ok(hash)
    }

    fn body(&self, w: &mut Writer) {
        w.raw(&self.voter.0)
            .raw(&self.request_id)
            .u64(self.remaining)
            .u64(self.nonce);
    }

    fn decode_body(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            voter: MemberId(r.array()?),
            request_id: r.array()?,
            remaining: r.u64()?,
            nonce: r.u64()?,
            sig: Signature(r.array()?),
        })
    }
}

impl Certificate {
    pub fn digest(&self) -> Hash {
        let mut w = Writer::with_tag(b"wallance/cert/v1");
        w.raw(&self.request.id())
            .u64(self.remaining)
            .u32(self.votes.len() as u32);
        for v in &self.votes {
            w.u32(v.voter_idx).u64(v.nonce).raw(&v.sig.0);
        }
        sha256(&[&w.bytes])
    }

    /// True when the provider signed it (it settles), false for a proof.
    pub fn is_signed(&self) -> bool {
        self.provider_sig != Signature::default()
    }

    /// The version the requester's wallet has once this commits.
    pub fn new_version(&self) -> u64 {
        self.request.version + 1
    }

    fn body(&self, w: &mut Writer) -> Option<()> {
        self.request.body(w)?;
        w.raw(&self.request.sig.0)
            .u64(self.remaining)
            .u32(self.votes.len() as u32);
        for v in &self.votes {
            w.u32(v.voter_idx).u64(v.nonce).raw(&v.sig.0);
        }
        Some(())
    }

    fn decode_body(r: &mut Reader) -> Result<Self, DecodeError> {
        let request = Request::decode_body(r)?;
        let remaining = r.u64()?;
        let n = r.u32()? as usize;
        // 76 bytes per vote: refuse counts the remaining bytes cannot hold.
        if n > r.remaining() / 76 {
            return Err(DecodeError::Invalid("certificate vote count"));
        }
        let mut votes = Vec::with_capacity(n);
        for _ in 0..n {
            votes.push(CertVote {
                voter_idx: r.u32()?,
                nonce: r.u64()?,
                sig: Signature(r.array()?),
            });
        }
        Ok(Self {
            request,
            remaining,
            votes,
            provider_sig: Signature(r.array()?),
        })
    }
}

impl Announce {
    pub fn new(key: &Keypair, seq: u64, services: Vec<ServiceOffer>) -> Self {
        let mut a = Self {
            provider: key.id(),
            seq,
            services,
            sig: Signature::default(),
        };
        a.sig = key.sign(&a.digest());
        a
    }
    fn body(&self, w: &mut Writer) -> Option<()> {
        if self.services.len() > MAX_SERVICES_PER_PROVIDER {
            return None;
        }
        w.raw(&self.provider.0).u64(self.seq).u8(self.services.len() as u8);
        for s in &self.services {
            if s.name.len() > MAX_SERVICE_LEN {
                return None;
            }
            w.str8(&s.name).u64(s.price).raw(&s.contract_hash);
        }
        Some(())
    }
    pub fn digest(&self) -> Hash {
        let mut w = Writer::new();
        if self.body(&mut w).is_none() {
            return [0xff; 32];
        }
        digest_of(b"wallance/announce/v1", &w)
    }
    fn decode_body(r: &mut Reader) -> Result<Self, DecodeError> {
        let provider = MemberId(r.array()?);
        let seq = r.u64()?;
        let n = usize::from(r.u8()?);
        if n > MAX_SERVICES_PER_PROVIDER {
            return Err(DecodeError::Invalid("announce service count"));
        }
        let mut services = Vec::with_capacity(n);
        for _ in 0..n {
            services.push(ServiceOffer {
                name: r.str8("service", MAX_SERVICE_LEN)?,
                price: r.u64()?,
                contract_hash: r.array()?,
            });
        }
        Ok(Self {
            provider,
            seq,
            services,
            sig: Signature(r.array()?),
        })
    }
}

impl Outcome {
    #[allow(clippy::too_many_arguments)]
    pub fn new(key: &Keypair, requester: MemberId, request_id: Hash, version: u64, ok: bool, body: &str) -> Self {
        let mut o = Self {
            provider: key.id(),
            requester,
            request_id,
            version,
            ok,
            body: truncate(body, MAX_OUTCOME_LEN),
            sig: Signature::default(),
        };
        o.sig = key.sign(&o.digest());
        o
    }
    fn body(&self, w: &mut Writer) {
        w.raw(&self.provider.0)
            .raw(&self.requester.0)
            .raw(&self.request_id)
            .u64(self.version)
            .u8(u8::from(self.ok))
            .bytes16(self.body.as_bytes());
    }
    pub fn digest(&self) -> Hash {
        let mut w = Writer::new();
        self.body(&mut w);
        digest_of(b"wallance/outcome/v1", &w)
    }
    fn decode_body(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            provider: MemberId(r.array()?),
            requester: MemberId(r.array()?),
            request_id: r.array()?,
            version: r.u64()?,
            ok: match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(DecodeError::Invalid("outcome ok flag")),
            },
            body: String::from_utf8(r.bytes16("outcome", MAX_OUTCOME_LEN)?)
                .map_err(|_| DecodeError::Utf8("outcome"))?,
            sig: Signature(r.array()?),
        })
    }
}

impl SyncDigest {
    pub fn new(key: &Keypair, time_ms: u64, digest: Hash) -> Self {
        let mut d = Self {
            from: key.id(),
            time_ms,
            digest,
            sig: Signature::default(),
        };
        d.sig = key.sign(&d.signed_digest());
        d
    }
    fn body(&self, w: &mut Writer) {
        w.raw(&self.from.0).u64(self.time_ms).raw(&self.digest);
    }
    pub fn signed_digest(&self) -> Hash {
        let mut w = Writer::new();
        self.body(&mut w);
        digest_of(b"wallance/digest/v1", &w)
    }
}

impl HeadsRequest {
    pub fn new(key: &Keypair, to: MemberId, time_ms: u64) -> Self {
        let mut m = Self {
            from: key.id(),
            to,
            time_ms,
            sig: Signature::default(),
        };
        m.sig = key.sign(&m.digest());
        m
    }
    fn body(&self, w: &mut Writer) {
        w.raw(&self.from.0).raw(&self.to.0).u64(self.time_ms);
    }
    pub fn digest(&self) -> Hash {
        let mut w = Writer::new();
        self.body(&mut w);
        digest_of(b"wallance/heads-request/v1", &w)
    }
}

impl Heads {
    pub fn new(key: &Keypair, to: MemberId, time_ms: u64, heads: Vec<Head>) -> Self {
        let mut m = Self {
            from: key.id(),
            to,
            time_ms,
            heads,
            sig: Signature::default(),
        };
        m.sig = key.sign(&m.digest());
        m
    }
    fn body(&self, w: &mut Writer) {
        w.raw(&self.from.0)
            .raw(&self.to.0)
            .u64(self.time_ms)
            .u32(self.heads.len() as u32);
        for h in &self.heads {
            w.u32(h.idx).u64(h.version).u64(h.settled).u64(h.shares).u64(h.received);
        }
    }
    pub fn digest(&self) -> Hash {
        let mut w = Writer::new();
        self.body(&mut w);
        digest_of(b"wallance/heads/v1", &w)
    }
}

impl CertFetch {
    pub fn new(key: &Keypair, to: MemberId, idx: u32, first_version: u64, last_version: u64) -> Self {
        let mut m = Self {
            from: key.id(),
            to,
            idx,
            first_version,
            last_version,
            sig: Signature::default(),
        };
        m.sig = key.sign(&m.digest());
        m
    }
    fn body(&self, w: &mut Writer) {
        w.raw(&self.from.0)
            .raw(&self.to.0)
            .u32(self.idx)
            .u64(self.first_version)
            .u64(self.last_version);
    }
    pub fn digest(&self) -> Hash {
        let mut w = Writer::new();
        self.body(&mut w);
        digest_of(b"wallance/cert-fetch/v1", &w)
    }
}

impl ShareFetch {
    pub fn new(key: &Keypair, to: MemberId, first_seq: u64, last_seq: u64) -> Self {
        let mut m = Self {
            from: key.id(),
            to,
            first_seq,
            last_seq,
            sig: Signature::default(),
        };
        m.sig = key.sign(&m.digest());
        m
    }
    fn body(&self, w: &mut Writer) {
        w.raw(&self.from.0)
            .raw(&self.to.0)
            .u64(self.first_seq)
            .u64(self.last_seq);
    }
    pub fn digest(&self) -> Hash {
        let mut w = Writer::new();
        self.body(&mut w);
        digest_of(b"wallance/share-fetch/v1", &w)
    }
}

impl Message {
    /// A short name for logs and rejection counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Share(_) => "share",
            Message::Request(_) => "request",
            Message::Vote(_) => "vote",
            Message::Certificate(_) => "certificate",
            Message::Announce(_) => "announce",
            Message::Outcome(_) => "outcome",
            Message::Digest(_) => "digest",
            Message::HeadsRequest(_) => "heads-request",
            Message::Heads(_) => "heads",
            Message::CertFetch(_) => "cert-fetch",
            Message::ShareFetch(_) => "share-fetch",
        }
    }

    /// Wire bytes. `None` only for a message built with fields over their
    /// limits, which the core never sends.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut w = Writer::new();
        match self {
            Message::Share(m) => {
                if m.topic.len() > MAX_TOPIC_LEN {
                    return None;
                }
                w.u8(TAG_SHARE);
                m.body(&mut w);
                w.raw(&m.sig.0);
            }
            Message::Request(m) => {
                w.u8(TAG_REQUEST);
                m.body(&mut w)?;
                w.raw(&m.sig.0);
            }
            Message::Vote(m) => {
                w.u8(TAG_VOTE);
                m.body(&mut w);
                w.raw(&m.sig.0);
            }
            Message::Certificate(m) => {
                w.u8(TAG_CERT);
                m.body(&mut w)?;
                w.raw(&m.provider_sig.0);
            }
            Message::Announce(m) => {
                w.u8(TAG_ANNOUNCE);
                m.body(&mut w)?;
                w.raw(&m.sig.0);
            }
            Message::Outcome(m) => {
                w.u8(TAG_OUTCOME);
                m.body(&mut w);
                w.raw(&m.sig.0);
            }
            Message::Digest(m) => {
                w.u8(TAG_DIGEST);
                m.body(&mut w);
                w.raw(&m.sig.0);
            }
            Message::HeadsRequest(m) => {
                w.u8(TAG_HEADS_REQUEST);
                m.body(&mut w);
                w.raw(&m.sig.0);
            }
            Message::Heads(m) => {
                w.u8(TAG_HEADS);
                m.body(&mut w);
                w.raw(&m.sig.0);
            }
            Message::CertFetch(m) => {
                w.u8(TAG_CERT_FETCH);
                m.body(&mut w);
                w.raw(&m.sig.0);
            }
            Message::ShareFetch(m) => {
                w.u8(TAG_SHARE_FETCH);
                m.body(&mut w);
                w.raw(&m.sig.0);
            }
        }
        Some(w.finish())
    }

    /// Parses wire bytes; never panics, whatever the input.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(DecodeError::TooLong {
                field: "message",
                len: bytes.len(),
                max: MAX_MESSAGE_LEN,
            });
        }
        let mut r = Reader::new(bytes);
        let msg = match r.u8()? {
            TAG_SHARE => Message::Share(Share::decode_body(&mut r)?),
            TAG_REQUEST => Message::Request(Request::decode_body(&mut r)?),
            TAG_VOTE => Message::Vote(Vote::decode_body(&mut r)?),
            TAG_CERT => Message::Certificate(Box::new(Certificate::decode_body(&mut r)?)),
            TAG_ANNOUNCE => Message::Announce(Announce::decode_body(&mut r)?),
            TAG_OUTCOME => Message::Outcome(Outcome::decode_body(&mut r)?),
            TAG_DIGEST => Message::Digest(SyncDigest {
                from: MemberId(r.array()?),
                time_ms: r.u64()?,
                digest: r.array()?,
                sig: Signature(r.array()?),
            }),
            TAG_HEADS_REQUEST => Message::HeadsRequest(HeadsRequest {
                from: MemberId(r.array()?),
                to: MemberId(r.array()?),
                time_ms: r.u64()?,
                sig: Signature(r.array()?),
            }),
            TAG_HEADS => {
                let from = MemberId(r.array()?);
                let to = MemberId(r.array()?);
                let time_ms = r.u64()?;
                let n = r.u32()? as usize;
                if n > r.remaining() / 36 {
                    return Err(DecodeError::Invalid("heads count"));
                }
                let mut heads = Vec::with_capacity(n);
                for _ in 0..n {
                    heads.push(Head {
                        idx: r.u32()?,
                        version: r.u64()?,
                        settled: r.u64()?,
                        shares: r.u64()?,
                        received: r.u64()?,
                    });
                }
                Message::Heads(Heads {
                    from,
                    to,
                    time_ms,
                    heads,
                    sig: Signature(r.array()?),
                })
            }
            TAG_CERT_FETCH => Message::CertFetch(CertFetch {
                from: MemberId(r.array()?),
                to: MemberId(r.array()?),
                idx: r.u32()?,
                first_version: r.u64()?,
                last_version: r.u64()?,
                sig: Signature(r.array()?),
            }),
            TAG_SHARE_FETCH => Message::ShareFetch(ShareFetch {
                from: MemberId(r.array()?),
                to: MemberId(r.array()?),
                first_seq: r.u64()?,
                last_seq: r.u64()?,
                sig: Signature(r.array()?),
            }),
            tag => return Err(DecodeError::UnknownTag(tag)),
        };
        r.finish()?;
        Ok(msg)
    }
}
