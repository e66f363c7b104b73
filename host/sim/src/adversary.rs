//! The network adversary of the threat model (shared/docs/threat-model.md): it sees
//! every message any node sends, keeps a bounded sample of them, and at
//! random times re-injects them to any node: exact old copies, bursts of
//! duplicates, copies with one field mutated (keeping the old signature,
//! zeroing it or re-signing with a Byzantine member's key), and valid
//! encodings with flipped bytes.
//!
//! Everything here is a function of the simulator's seeded RNG: a seed
//! replays the same attack.

use std::collections::BTreeMap;
use std::rc::Rc;

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use wallance_core::msg::{
    Announce, CertFetch, CertVote, Head, Heads, HeadsRequest, Outcome, Request, RequestDraft, Share, ShareFetch,
    SyncDigest, Vote,
};
use wallance_core::{Keypair, MemberId, Membership, Message, Params, Signature};

/// How the network adversary behaves.
#[derive(Debug, Clone, Serialize)]
pub struct AdversaryConfig {
    /// Time between two injections during the workload, uniform in this range.
    pub every_ms: (u64, u64),
    /// After the workload the adversary goes on this many times slower ...
    pub quiet_slowdown: u64,
    /// ... and stops this long before the end of the run (so its last
    /// messages are handled before the final checks).
    pub stop_before_end_ms: u64,
    /// Messages kept for replay: a uniform sample of everything ever sent
    /// (so old messages stay) ...
    pub reservoir: usize,
    /// ... plus the most recent ones (so mutations hit live requests).
    pub recent: usize,
    /// Copies in a burst of duplicates, uniform in this range.
    pub burst: (usize, usize),
    /// Relative weights of the four actions.
    pub weight_replay: u32,
    pub weight_burst: u32,
    pub weight_mutate: u32,
    pub weight_flip: u32,
    /// Forged digests (a random member's name, no valid signature) to every
    /// node at once.
    pub weight_digest_flood: u32,
}

impl Default for AdversaryConfig {
    fn default() -> Self {
        Self {
            every_ms: (5, 120),
            quiet_slowdown: 4,
            stop_before_end_ms: 2_000,
            reservoir: 4_096,
            recent: 256,
            burst: (5, 40),
            weight_replay: 4,
            weight_burst: 1,
            weight_mutate: 5,
            weight_flip: 2,
            weight_digest_flood: 1,
        }
    }
}

impl AdversaryConfig {
    /// Exact replays and duplicate bursts only: no key, no mutation.
    pub fn replay_only() -> Self {
        Self {
            weight_mutate: 0,
            weight_flip: 0,
            weight_digest_flood: 0,
            ..Self::default()
        }
    }
}

/// What the adversary does with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Replay,
    Burst,
    Mutate,
    Flip,
    DigestFlood,
}

/// How a mutated copy is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SigMode {
    Keep,
    Zero,
    Resign,
}

/// The recorded traffic, per message kind (so that rare kinds such as
/// certificates and fetches are picked as often as shares and votes).
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    kinds: BTreeMap<&'static str, Kind>,
}

#[derive(Debug, Default)]
struct Kind {
    sample: Vec<Rc<Message>>,
    recent: std::collections::VecDeque<Rc<Message>>,
    seen: u64,
}

impl Recorder {
    pub(crate) fn record(&mut self, cfg: &AdversaryConfig, rng: &mut ChaCha8Rng, m: &Rc<Message>) {
        // 11 kinds share the configured sizes.
        let cap = cfg.reservoir.div_ceil(11).max(1);
        let recent = cfg.recent.div_ceil(11).max(1);
        let k = self.kinds.entry(m.kind()).or_default();
        k.seen += 1;
        if k.sample.len() < cap {
            k.sample.push(m.clone());
        } else {
            // Algorithm R: every message ever sent is in the sample with
            // the same probability, however old.
            let j = rng.gen_range(0..k.seen);
            if (j as usize) < cap {
                k.sample[j as usize] = m.clone();
            }
        }
        k.recent.push_back(m.clone());
        while k.recent.len() > recent {
            k.recent.pop_front();
        }
    }

    /// A kind at random, then an old message of it (half the time) or a
    /// recent one.
    pub(crate) fn pick(&self, rng: &mut ChaCha8Rng) -> Option<Rc<Message>> {
        let kinds: Vec<&Kind> = self.kinds.values().collect();
        let k = kinds.choose(rng)?;
        if rng.gen_bool(0.5) || k.recent.is_empty() {
            k.sample.choose(rng).cloned()
        } else {
            k.recent.get(rng.gen_range(0..k.recent.len())).cloned()
        }
    }
}

/// Picks an action by the configured weights.
pub(crate) fn pick_action(cfg: &AdversaryConfig, rng: &mut ChaCha8Rng) -> Action {
    let w = [
        (Action::Replay, cfg.weight_replay),
        (Action::Burst, cfg.weight_burst),
        (Action::Mutate, cfg.weight_mutate),
        (Action::Flip, cfg.weight_flip),
        (Action::DigestFlood, cfg.weight_digest_flood),
    ];
    let total: u32 = w.iter().map(|(_, x)| x).sum::<u32>().max(1);
    let mut draw = rng.gen_range(0..total);
    for (a, x) in w {
        if draw < x {
            return a;
        }
        draw -= x;
    }
    Action::Replay
}

/// What the adversary knows: the membership and the keys of the Byzantine
/// members (it controls them).
pub(crate) struct Knowledge<'a> {
    pub membership: &'a Membership,
    pub params: &'a Params,
    pub byzantine_keys: &'a [Keypair],
}

impl Knowledge<'_> {
    fn random_member(&self, rng: &mut ChaCha8Rng) -> MemberId {
        let n = self.membership.len() as u32;
        self.membership.id(rng.gen_range(0..n)).expect("in range")
    }
    fn byzantine_key(&self, rng: &mut ChaCha8Rng) -> Option<&Keypair> {
        self.byzantine_keys.choose(rng)
    }
}

/// A "boundary" value for a u64 field: the classics that break arithmetic.
fn edgy_u64(rng: &mut ChaCha8Rng, v: u64) -> u64 {
    match rng.gen_range(0..8) {
        0 => 0,
        1 => u64::MAX,
        2 => u64::MAX - 1,
        3 => v.wrapping_add(1),
        4 => v.wrapping_sub(1),
        5 => v.wrapping_add(rng.gen_range(2..1_000)),
        6 => v / 2,
        _ => rng.r#gen(),
    }
}

fn edgy_u32(rng: &mut ChaCha8Rng, v: u32, members: u32) -> u32 {
    match rng.gen_range(0..6) {
        0 => 0,
        1 => u32::MAX,
        2 => members,
        3 => v.wrapping_add(1),
        4 => rng.gen_range(0..members.max(1)),
        _ => rng.r#gen(),
    }
}

/// A copy of `m` with one field changed, signed per a random mode. Returns
/// the label of what was done ("vote.remaining/resign", ...).
pub(crate) fn mutate(rng: &mut ChaCha8Rng, k: &Knowledge<'_>, m: &Message) -> (Message, String) {
    let mode = match rng.gen_range(0..3) {
        0 => SigMode::Keep,
        1 => SigMode::Zero,
        _ if k.byzantine_keys.is_empty() => SigMode::Keep,
        _ => SigMode::Resign,
    };
    let members = k.membership.len() as u32;
    let (out, field) = match m {
        Message::Share(s) => {
            let mut s = s.clone();
            let field = match rng.gen_range(0..4) {
                0 => {
                    s.seq = edgy_u64(rng, s.seq);
                    "seq"
                }
                1 => {
                    s.time_ms = edgy_u64(rng, s.time_ms);
                    "time"
                }
                2 => {
                    s.value = [f64::NAN, f64::INFINITY, -0.0, 1e308][rng.gen_range(0..4)];
                    "value"
                }
                _ => {
                    s.sender = k.random_member(rng);
                    "sender"
                }
            };
            match mode {
                SigMode::Keep => {}
                SigMode::Zero => s.sig = Signature::default(),
                SigMode::Resign => {
                    let key = k.byzantine_key(rng).expect("checked");
                    s = Share::new(key, s.seq, s.time_ms, &s.topic, s.value);
                }
            }
            (Message::Share(s), format!("share.{field}"))
        }
        Message::Request(r) => {
            let (r, field) = mutate_request(rng, k, r, mode);
            (Message::Request(r), format!("request.{field}"))
        }
        Message::Vote(v) => {
            let mut v = *v;
            let field = match rng.gen_range(0..5) {
                4 => {
                    // The signature alone: the work still holds, so the
                    // forgery passes every cheap check and reaches the
                    // signature check (and a batch, `Core::preverify`).
                    v.sig.0[rng.gen_range(0..64)] ^= 1 << rng.gen_range(0..8);
                    return (Message::Vote(v), "vote.sig".to_string());
                }
                0 => {
                    v.remaining = edgy_u64(rng, v.remaining);
                    "remaining"
                }
                1 => {
                    v.request_id = rng.r#gen();
                    "request_id"
                }
                2 => {
                    v.voter = k.random_member(rng);
                    "voter"
                }
                _ => {
                    v.nonce = edgy_u64(rng, v.nonce);
                    "nonce"
                }
            };
            match mode {
                SigMode::Keep => {}
                SigMode::Zero => v.sig = Signature::default(),
                SigMode::Resign => {
                    let key = k.byzantine_key(rng).expect("checked");
                    if let Some(b) = Vote::build(key, v.request_id, v.remaining, k.params.vote_difficulty) {
                        v = b;
                    }
                }
            }
            (Message::Vote(v), format!("vote.{field}"))
        }
        Message::Certificate(c) => {
            let mut c = (**c).clone();
            let field = match rng.gen_range(0..10) {
                0 => {
                    c.remaining = edgy_u64(rng, c.remaining);
                    "remaining"
                }
                9 => {
                    c.request.version =
                        [u64::MAX, u64::MAX - 1, 0, c.request.version.wrapping_add(1)][rng.gen_range(0..4)];
                    "request.version"
                }
                1 => {
                    c.votes.shuffle(rng);
                    "votes.reordered"
                }
                2 => {
                    if let Some(v) = c.votes.choose(rng).copied() {
                        let at = rng.gen_range(0..=c.votes.len());
                        c.votes.insert(at, v);
                    }
                    "votes.duplicated"
                }
                3 => {
                    let keep = rng.gen_range(0..c.votes.len().max(1));
                    c.votes.truncate(keep);
                    "votes.truncated"
                }
                4 => {
                    // Extended with a vote of another member (forged).
                    let idx = rng.gen_range(0..members);
                    c.votes.push(CertVote {
                        voter_idx: idx,
                        nonce: rng.r#gen(),
                        sig: Signature([rng.r#gen(); 64]),
                    });
                    c.votes.sort_by_key(|v| v.voter_idx);
                    "votes.extended"
                }
                5 => {
                    if let Some(v) = c.votes.choose_mut(rng) {
                        v.voter_idx = edgy_u32(rng, v.voter_idx, members);
                    }
                    "votes.voter_idx"
                }
                6 => {
                    // A signed certificate made a proof (or a proof "signed").
                    c.provider_sig = if c.is_signed() {
                        Signature::default()
                    } else {
                        Signature([rng.r#gen(); 64])
                    };
                    "provider_sig"
                }
                _ => {
                    let (r, f) = mutate_request(rng, k, &c.request, SigMode::Keep);
                    c.request = r;
                    match f {
                        "version" => "request.version",
                        "price" => "request.price",
                        _ => "request.other",
                    }
                }
            };
            match mode {
                SigMode::Keep => {}
                SigMode::Zero => c.provider_sig = Signature::default(),
                SigMode::Resign => {
                    // Only a Byzantine provider's signature is worth anything
                    // here; other keys make an invalid certificate.
                    let key = k
                        .byzantine_keys
                        .iter()
                        .find(|key| key.id() == c.request.provider)
                        .or_else(|| k.byzantine_key(rng))
                        .expect("checked");
                    c.provider_sig = key.sign(&c.digest());
                }
            }
            (Message::Certificate(Box::new(c)), format!("certificate.{field}"))
        }
        Message::Announce(a) => {
            let mut a = a.clone();
            let field = match rng.gen_range(0..3) {
                0 => {
                    a.seq = edgy_u64(rng, a.seq);
                    "seq"
                }
                1 => {
                    // Lower prices only: a Byzantine provider raising or
                    // withdrawing a service can freeze its buyers' wallets,
                    // a known limit (docs/protocol.md) checked elsewhere.
                    if let Some(s) = a.services.choose_mut(rng) {
                        s.price = [0, s.price / 2, s.price.saturating_sub(1)][rng.gen_range(0..3)];
                    }
                    "price"
                }
                _ => {
                    a.provider = k.random_member(rng);
                    "provider"
                }
            };
            match mode {
                SigMode::Keep => {}
                SigMode::Zero => a.sig = Signature::default(),
                SigMode::Resign => {
                    let key = k.byzantine_key(rng).expect("checked");
                    a = Announce::new(key, a.seq, a.services);
                }
            }
            (Message::Announce(a), format!("announce.{field}"))
        }
        Message::Outcome(o) => {
            let mut o = o.clone();
            let field = match rng.gen_range(0..4) {
                0 => {
                    o.version = edgy_u64(rng, o.version);
                    "version"
                }
                1 => {
                    o.ok = !o.ok;
                    "ok"
                }
                2 => {
                    o.request_id = rng.r#gen();
                    "request_id"
                }
                _ => {
                    o.requester = k.random_member(rng);
                    "requester"
                }
            };
            match mode {
                SigMode::Keep => {}
                SigMode::Zero => o.sig = Signature::default(),
                SigMode::Resign => {
                    let key = k.byzantine_key(rng).expect("checked");
                    o = Outcome::new(key, o.requester, o.request_id, o.version, o.ok, &o.body);
                }
            }
            (Message::Outcome(o), format!("outcome.{field}"))
        }
        Message::Digest(d) => {
            let mut d = *d;
            let field = match rng.gen_range(0..3) {
                0 => {
                    d.digest = rng.r#gen();
                    "digest"
                }
                1 => {
                    d.time_ms = edgy_u64(rng, d.time_ms);
                    "time"
                }
                _ => {
                    d.from = k.random_member(rng);
                    "from"
                }
            };
            match mode {
                SigMode::Keep => {}
                SigMode::Zero => d.sig = Signature::default(),
                SigMode::Resign => {
                    let key = k.byzantine_key(rng).expect("checked");
                    d = SyncDigest::new(key, d.time_ms, d.digest);
                }
            }
            (Message::Digest(d), format!("digest.{field}"))
        }
        Message::HeadsRequest(h) => {
            let mut h = *h;
            let field = match rng.gen_range(0..3) {
                0 => {
                    h.to = k.random_member(rng);
                    "to"
                }
                1 => {
                    h.time_ms = edgy_u64(rng, h.time_ms);
                    "time"
                }
                _ => {
                    h.from = k.random_member(rng);
                    "from"
                }
            };
            match mode {
                SigMode::Keep => {}
                SigMode::Zero => h.sig = Signature::default(),
                SigMode::Resign => {
                    let key = k.byzantine_key(rng).expect("checked");
                    h = HeadsRequest::new(key, h.to, h.time_ms);
                }
            }
            (Message::HeadsRequest(h), format!("heads-request.{field}"))
        }
        Message::Heads(h) => {
            let mut h = h.clone();
            let field = match rng.gen_range(0..6) {
                0 => {
                    if let Some(x) = h.heads.choose_mut(rng) {
                        x.version = edgy_u64(rng, x.version);
                    }
                    "version"
                }
                1 => {
                    if let Some(x) = h.heads.choose_mut(rng) {
                        x.settled = edgy_u64(rng, x.settled);
                    }
                    "settled"
                }
                2 => {
                    if let Some(x) = h.heads.choose_mut(rng) {
                        x.shares = edgy_u64(rng, x.shares);
                    }
                    "shares"
                }
                3 => {
                    let idx = edgy_u32(rng, 0, members);
                    h.heads.push(Head {
                        idx,
                        version: edgy_u64(rng, 0),
                        settled: edgy_u64(rng, 0),
                        shares: edgy_u64(rng, 0),
                        received: edgy_u64(rng, 0),
                    });
                    "idx"
                }
                4 => {
                    h.to = k.random_member(rng);
                    "to"
                }
                _ => {
                    h.time_ms = edgy_u64(rng, h.time_ms);
                    "time"
                }
            };
            match mode {
                SigMode::Keep => {}
                SigMode::Zero => h.sig = Signature::default(),
                SigMode::Resign => {
                    let key = k.byzantine_key(rng).expect("checked");
                    h = Heads::new(key, h.to, h.time_ms, h.heads);
                }
            }
            (Message::Heads(h), format!("heads.{field}"))
        }
        Message::CertFetch(f) => {
            let mut f = *f;
            let field = match rng.gen_range(0..5) {
                0 => {
                    // first > last
                    f.first_version = f.last_version.saturating_add(rng.gen_range(1..10));
                    "first>last"
                }
                1 => {
                    f.first_version = edgy_u64(rng, f.first_version);
                    "first"
                }
                2 => {
                    f.last_version = edgy_u64(rng, f.last_version);
                    "last"
                }
                3 => {
                    f.idx = edgy_u32(rng, f.idx, members);
                    "idx"
                }
                _ => {
                    f.to = k.random_member(rng);
                    "to"
                }
            };
            match mode {
                SigMode::Keep => {}
                SigMode::Zero => f.sig = Signature::default(),
                SigMode::Resign => {
                    let key = k.byzantine_key(rng).expect("checked");
                    f = CertFetch::new(key, f.to, f.idx, f.first_version, f.last_version);
                }
            }
            (Message::CertFetch(f), format!("cert-fetch.{field}"))
        }
        Message::ShareFetch(f) => {
            let mut f = *f;
            let field = match rng.gen_range(0..4) {
                0 => {
                    f.first_seq = f.last_seq.saturating_add(rng.gen_range(1..10));
                    "first>last"
                }
                1 => {
                    f.first_seq = edgy_u64(rng, f.first_seq);
                    "first"
                }
                2 => {
                    f.last_seq = edgy_u64(rng, f.last_seq);
                    "last"
                }
                _ => {
                    f.to = k.random_member(rng);
                    "to"
                }
            };
            match mode {
                SigMode::Keep => {}
                SigMode::Zero => f.sig = Signature::default(),
                SigMode::Resign => {
                    let key = k.byzantine_key(rng).expect("checked");
                    f = ShareFetch::new(key, f.to, f.first_seq, f.last_seq);
                }
            }
            (Message::ShareFetch(f), format!("share-fetch.{field}"))
        }
    };
    let mode = match mode {
        SigMode::Keep => "keep-sig",
        SigMode::Zero => "zero-sig",
        SigMode::Resign => "resign",
    };
    (out, format!("{field}/{mode}"))
}

fn mutate_request(rng: &mut ChaCha8Rng, k: &Knowledge<'_>, r: &Request, mode: SigMode) -> (Request, &'static str) {
    let mut r = r.clone();
    let field = match rng.gen_range(0..9) {
        0 => {
            r.price = edgy_u64(rng, r.price);
            "price"
        }
        1 => {
            r.version = edgy_u64(rng, r.version);
            "version"
        }
        2 => {
            r.time_ms = edgy_u64(rng, r.time_ms);
            "time"
        }
        3 => {
            r.shares_upto = edgy_u64(rng, r.shares_upto);
            "shares_upto"
        }
        4 => {
            r.received_upto = edgy_u64(rng, r.received_upto);
            "received_upto"
        }
        5 => {
            r.state = rng.r#gen();
            "state"
        }
        6 => {
            r.provider = k.random_member(rng);
            "provider"
        }
        7 => {
            r.service = ["espresso", "radio", "", "x"][rng.gen_range(0..4)].to_string();
            "service"
        }
        _ => {
            r.nonce = edgy_u64(rng, r.nonce);
            "nonce"
        }
    };
    match mode {
        SigMode::Keep => {}
        SigMode::Zero => r.sig = Signature::default(),
        SigMode::Resign => {
            let key = k.byzantine_key(rng).expect("checked");
            let draft = RequestDraft {
                service: r.service.clone(),
                provider: r.provider,
                price: r.price,
                announce_seq: 0,
                contract_hash: [0; 32],
                time_ms: r.time_ms,
                version: r.version,
                state: r.state,
                shares_upto: r.shares_upto,
                received_upto: r.received_upto,
                params: r.params.clone(),
            };
            if let Ok(b) = Request::build(key, draft, k.params.difficulty) {
                r = b;
            }
        }
    }
    (r, field)
}

/// A valid encoding with a few bytes changed, cut or extended.
pub(crate) fn flip_bytes(rng: &mut ChaCha8Rng, m: &Message) -> Option<(Vec<u8>, &'static str)> {
    let mut b = m.encode()?;
    if b.is_empty() {
        return None;
    }
    let how = match rng.gen_range(0..5) {
        0 => {
            for _ in 0..rng.gen_range(1..=4) {
                let i = rng.gen_range(0..b.len());
                b[i] ^= 1 << rng.gen_range(0..8);
            }
            "bit-flips"
        }
        1 => {
            let i = rng.gen_range(0..b.len());
            b[i] = rng.r#gen();
            "byte"
        }
        2 => {
            // Eight bytes of 0xff: a u64 field at its maximum, wherever it is.
            let i = rng.gen_range(0..b.len());
            for x in b.iter_mut().skip(i).take(8) {
                *x = 0xff;
            }
            "u64-max"
        }
        3 => {
            let n = rng.gen_range(0..b.len());
            b.truncate(n);
            "truncated"
        }
        _ => {
            for _ in 0..rng.gen_range(1..100) {
                b.push(rng.r#gen());
            }
            "extended"
        }
    };
    Some((b, how))
}

/// Counts by label, for the report.
pub(crate) fn count(map: &mut BTreeMap<String, u64>, label: impl Into<String>) {
    *map.entry(label.into()).or_default() += 1;
}
