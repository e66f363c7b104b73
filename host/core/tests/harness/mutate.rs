//! Mutations of valid messages fed to one core, and the oracle that judges
//! every input. Shared by `tests/mutations.rs` (stable, seeded) and the
//! cargo-fuzz target `fuzz/fuzz_targets/mutate.rs` (include this file and
//! `harness/mod.rs` with `#[path]`).
//!
//! 1. **Corpus**: an honest network of [`N`] cores (a provider, two buyers,
//!    a node that restarts and catches up, a light node, voters) plays a
//!    fixed scenario; every input each node received is logged, so any node
//!    can be replayed exactly, and every message sent is kept.
//! 2. **Episode**: one *victim* node is replayed from its log twice: the
//!    *twin* gets only the honest log, the *attacked* copy gets the same log
//!    with attacker inputs in between: mutations of messages the victim has
//!    already seen (decoded-level field changes, signatures kept, zeroed or
//!    re-signed with the key of member [`BYZANTINE`], which the attacker
//!    holds), byte-level changes fed through `handle_bytes`, exact replays;
//!    then, after the clock has moved past every TTL, late replays.
//! 3. **Oracle**: see [`Check`] for exactly what is asserted.

#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use wallance_core::core::{MAX_ORPHAN_VOTES, MAX_SHARES_PER_FETCH};
use wallance_core::msg::{
    Announce, CertFetch, CertVote, Head, Heads, HeadsRequest, Outcome, Request, RequestDraft, ServiceOffer, ShareFetch,
    SyncDigest, Vote,
};
use wallance_core::{Core, CoreConfig, Hash, Keypair, MemberId, Message, Output, Params, Signature, Snapshot, Wallet};
use wallance_core::{Membership, UNITS_PER_COIN};

use crate::harness::Net;

/// Cores in the honest network.
pub const N: usize = 8;
/// Node 0 sells espresso.
pub const PROVIDER: usize = 0;
/// Buys often (more purchases than certificates are kept: pruning).
pub const BUYER_A: usize = 2;
/// Buys a few times, also while [`RESTARTER`] is cut off.
pub const BUYER_B: usize = 1;
/// Publishes many shares, is cut off, restarts and catches up.
pub const RESTARTER: usize = 3;
/// Keeps only wallets 0, [`BUYER_B`] and its own.
pub const LIGHT: usize = 4;
/// Misses the restarter's shares and fetches them in one `ShareFetch`.
pub const LAGGARD: usize = 6;
/// The member whose key the attacker holds. The highest index: the honest
/// quorums never need its vote, so what it signs cannot legitimately change
/// which voters a certificate names.
pub const BYZANTINE: usize = 7;
/// The nodes attacked, one per episode.
pub const VICTIMS: [usize; 3] = [PROVIDER, RESTARTER, LIGHT];
/// What one attacker input may make the victim send (amplification bound):
/// the core's documented answer to one `ShareFetch` (`MAX_SHARES_PER_FETCH`
/// shares), plus a few other messages. Honest inputs are not bounded.
pub const MAX_SENDS_PER_INPUT: usize = MAX_SHARES_PER_FETCH as usize + 16;
/// What the same input, repeated at once, may make the victim send: large
/// answers are rate-limited per asker, so a replayer gets one, not one per
/// copy.
pub const REPEAT_SENDS: usize = 16;
/// Votes for requests a node does not hold that it keeps per voter (the
/// core's documented bound): on a light node a replayed vote for a wallet it
/// does not keep may take one of those slots.
pub const ORPHAN_VOTES_PER_VOTER: usize = MAX_ORPHAN_VOTES;
/// Shares the restarter publishes (more than [`REPEAT_SENDS`]).
pub const RESTARTER_SHARES: usize = 100;
const RUN_BODY: &str = "one espresso";

/// One input of one node, as the honest run gave it.
#[derive(Debug, Clone)]
pub enum Input {
    Msg(u64, Message),
    Timeout(u64),
    Share(u64),
    Buy(u64),
    SetServices(u64, Vec<ServiceOffer>),
    Restart(u64),
    /// Not an input: what this node sent (part of what it has seen).
    Sent(Message),
}

impl Input {
    fn time(&self) -> Option<u64> {
        match self {
            Input::Msg(t, _)
            | Input::Timeout(t)
            | Input::Share(t)
            | Input::Buy(t)
            | Input::SetServices(t, _)
            | Input::Restart(t) => Some(*t),
            Input::Sent(_) => None,
        }
    }
    fn message(&self) -> Option<&Message> {
        match self {
            Input::Msg(_, m) | Input::Sent(m) => Some(m),
            _ => None,
        }
    }
}

// ------------------------------------------------------------------ corpus

pub fn params() -> Params {
    Params {
        initial_units: 100 * UNITS_PER_COIN,
        ..Params::default()
    }
}

pub fn tracked(i: usize) -> Option<HashSet<u32>> {
    (i == LIGHT).then(|| [PROVIDER as u32, BUYER_B as u32, LIGHT as u32].into_iter().collect())
}

/// The harness network, logging every node's inputs.
struct Recorder {
    net: Net,
    logs: Vec<Vec<Input>>,
}

impl Recorder {
    fn flush(&mut self, i: usize) {
        while let Some(out) = self.net.nodes[i].core.poll_output() {
            match out {
                Output::Persist(b) => self.net.nodes[i].disk.apply(&b),
                Output::Send(m) => {
                    self.logs[i].push(Input::Sent(m.clone()));
                    self.net.sent.push(m.clone());
                    self.net.queue.push_back((i, m));
                }
                Output::Run(cert) => {
                    let idx = self.net.nodes[i]
                        .config
                        .membership
                        .index_of(&cert.request.requester)
                        .expect("member");
                    let v = cert.new_version();
                    self.net.nodes[i].runs.push(*cert);
                    let now = self.net.now;
                    self.net.nodes[i]
                        .core
                        .contract_done(now, idx, v, true, RUN_BODY, Vec::new());
                }
                Output::Event(e) => self.net.nodes[i].events.push(e),
            }
        }
    }

    fn run(&mut self) {
        let mut steps = 0;
        while let Some((from, m)) = self.net.queue.pop_front() {
            steps += 1;
            assert!(steps < 1_000_000, "message storm");
            for to in 0..N {
                if to == from || self.net.isolated[to] {
                    continue;
                }
                let now = self.net.now;
                self.logs[to].push(Input::Msg(now, m.clone()));
                let _ = self.net.nodes[to].core.handle_message(now, m.clone());
                self.flush(to);
            }
        }
    }

    fn tick(&mut self, ms: u64) {
        self.net.now += ms;
        let now = self.net.now;
        for i in 0..N {
            if !self.net.isolated[i] {
                self.logs[i].push(Input::Timeout(now));
                self.net.nodes[i].core.handle_timeout(now);
                self.flush(i);
            }
        }
        self.run();
    }

    fn share(&mut self, i: usize, n: usize) {
        for _ in 0..n {
            let now = self.net.now;
            self.logs[i].push(Input::Share(now));
            self.net.nodes[i].core.publish_share(now, "temperature", 21.5);
            self.flush(i);
        }
        self.run();
    }

    fn buy(&mut self, i: usize) {
        let now = self.net.now;
        self.logs[i].push(Input::Buy(now));
        let r = self.net.nodes[i]
            .core
            .buy(now, "espresso", None, 2 * UNITS_PER_COIN, vec![]);
        assert!(r.is_ok(), "node {i} could not buy: {r:?}");
        self.flush(i);
        self.run();
    }

    fn offer(&mut self) {
        let now = self.net.now;
        let offers = vec![ServiceOffer {
            name: "espresso".into(),
            price: 2 * UNITS_PER_COIN,
            contract_hash: [1; 32],
        }];
        self.logs[PROVIDER].push(Input::SetServices(now, offers.clone()));
        self.net.nodes[PROVIDER].core.set_services(now, offers);
        self.flush(PROVIDER);
        self.run();
    }

    fn restart(&mut self, i: usize) {
        let now = self.net.now;
        self.logs[i].push(Input::Restart(now));
        let n = &mut self.net.nodes[i];
        n.core = Core::new(n.config.clone(), n.key.clone(), n.disk.clone(), now);
        self.flush(i);
        self.run();
    }
}

/// What the un-attacked twin of a victim ends with.
#[derive(Debug, Clone)]
pub struct TwinEnd {
    /// After the whole honest log.
    pub wallets: Vec<Wallet>,
    pub runs: BTreeMap<(u32, u64), u32>,
    /// After two expiry ticks past every TTL.
    pub late_wallets: Vec<Wallet>,
    pub late_decisions: usize,
    pub late_requests: usize,
}

/// Everything an episode needs, built once.
#[derive(Debug)]
pub struct Corpus {
    /// Every message sent in the honest run, in order.
    pub sent: Vec<Message>,
    pub logs: Vec<Vec<Input>>,
    pub configs: Vec<CoreConfig>,
    pub keys: Vec<Keypair>,
    pub members: Vec<MemberId>,
    pub outsider: Keypair,
    pub end_ms: u64,
    /// Per victim: the messages it has seen (received or sent) in log order,
    /// with the log position they appear at, grouped by kind.
    pub seen: BTreeMap<usize, Vec<Vec<(usize, Message)>>>,
    pub twins: BTreeMap<usize, TwinEnd>,
}

pub const KINDS: [&str; 11] = [
    "share",
    "request",
    "vote",
    "certificate",
    "announce",
    "outcome",
    "digest",
    "heads-request",
    "heads",
    "cert-fetch",
    "share-fetch",
];

fn kind_index(m: &Message) -> usize {
    KINDS.iter().position(|k| *k == m.kind()).expect("known kind")
}

impl Corpus {
    /// Plays the honest scenario and replays each victim's twin.
    pub fn build() -> Self {
        let net = Net::with(N, params(), tracked);
        let mut r = Recorder {
            net,
            logs: vec![Vec::new(); N],
        };
        r.offer();
        // The laggard misses the restarter's shares and fetches them later.
        r.net.isolated[LAGGARD] = true;
        r.share(RESTARTER, RESTARTER_SHARES);
        r.net.isolated[LAGGARD] = false;
        r.share(BUYER_B, 10);
        r.share(BUYER_A, 5);
        r.tick(5_000);
        // More purchases of one wallet than certificates are kept.
        for k in 0..10 {
            r.buy(BUYER_A);
            if k % 4 == 0 {
                r.buy(BUYER_B);
            }
            r.tick(1_000);
        }
        // The restarter misses two purchases and some shares, then restarts.
        r.net.isolated[RESTARTER] = true;
        r.buy(BUYER_B);
        r.share(BUYER_A, 3);
        r.buy(BUYER_B);
        r.net.isolated[RESTARTER] = false;
        r.restart(RESTARTER);
        for _ in 0..4 {
            r.tick(5_000);
        }
        r.buy(BUYER_A);
        r.buy(BUYER_B);
        r.tick(5_000);
        r.tick(5_000);
        let end_ms = r.net.now;

        let mut present = [false; 11];
        for m in &r.net.sent {
            present[kind_index(m)] = true;
        }
        for (k, p) in KINDS.iter().zip(present) {
            assert!(p, "the honest scenario never sent a {k} message");
        }
        let keys: Vec<Keypair> = r.net.nodes.iter().map(|n| n.key.clone()).collect();
        let members: Vec<MemberId> = keys.iter().map(|k| k.id()).collect();
        // Sanity: every node agrees on every wallet it keeps.
        for (of, id) in members.iter().enumerate() {
            let reference = r.net.nodes[0].core.wallet(id).cloned();
            for (at, node) in r.net.nodes.iter().enumerate().skip(1) {
                if let Some(w) = node.core.wallet(id) {
                    assert_eq!(
                        Some(w),
                        reference.as_ref(),
                        "honest run: node {at} disagrees on wallet {of}"
                    );
                }
            }
        }
        let mut corpus = Corpus {
            sent: r.net.sent.clone(),
            logs: r.logs.clone(),
            configs: r.net.nodes.iter().map(|n| n.config.clone()).collect(),
            keys,
            members,
            outsider: Keypair::from_seed([0xEE; 32]),
            end_ms,
            seen: BTreeMap::new(),
            twins: BTreeMap::new(),
        };
        for v in VICTIMS {
            let mut by_kind = vec![Vec::new(); KINDS.len()];
            for (pos, input) in corpus.logs[v].iter().enumerate() {
                if let Some(m) = input.message() {
                    by_kind[kind_index(m)].push((pos, m.clone()));
                }
            }
            corpus.seen.insert(v, by_kind);
            let mut twin = Replica::new(&corpus, v);
            for input in &corpus.logs[v] {
                twin.honest(input);
            }
            // The replay is exact: the twin is the node of the honest run.
            let original: Vec<Wallet> = r.net.nodes[v].core.wallets().cloned().collect();
            let wallets: Vec<Wallet> = twin.core.wallets().cloned().collect();
            assert_eq!(wallets, original, "replaying node {v}'s log is not exact");
            let runs = twin.runs.clone();
            let (late, late2) = corpus.late_times();
            twin.timeout(late);
            twin.timeout(late2);
            corpus.twins.insert(
                v,
                TwinEnd {
                    wallets,
                    runs,
                    late_wallets: twin.core.wallets().cloned().collect(),
                    late_decisions: twin.core.pending_decisions(),
                    late_requests: twin.core.pending_requests().count(),
                },
            );
        }
        corpus
    }

    /// When late replays arrive (past every TTL), and when the second expiry
    /// tick runs (past the TTL of anything fed at the first, even a request
    /// dated up to the clock skew ahead).
    pub fn late_times(&self) -> (u64, u64) {
        let p = &self.configs[0].params;
        let late = self.end_ms + p.request_ttl_ms + 10_000;
        (late, late + p.request_ttl_ms + p.max_clock_skew_ms + 10_000)
    }

    fn params(&self) -> &Params {
        &self.configs[0].params
    }

    fn membership(&self) -> &Membership {
        &self.configs[0].membership
    }

    fn byzantine(&self) -> &Keypair {
        &self.keys[BYZANTINE]
    }
}

// ------------------------------------------------------------------ replica

/// One replayed node: its core, its disk, and what it was asked to run.
#[derive(Debug)]
pub struct Replica {
    pub core: Core,
    key: Keypair,
    config: CoreConfig,
    pub disk: Snapshot,
    /// Runs asked (`Output::Run`) per (requester index, version).
    pub runs: BTreeMap<(u32, u64), u32>,
    pub now: u64,
    /// The node has restarted (it forgot what is not on its disk).
    pub restarted: bool,
    /// The last honest message, batched with each attacker message
    /// (`Core::preverify`), as a node batches what arrived together.
    last_msg: Option<Message>,
}

impl Replica {
    pub fn new(c: &Corpus, v: usize) -> Self {
        Self {
            core: Core::new(c.configs[v].clone(), c.keys[v].clone(), Snapshot::default(), 0),
            key: c.keys[v].clone(),
            config: c.configs[v].clone(),
            disk: Snapshot::default(),
            runs: BTreeMap::new(),
            now: 0,
            restarted: false,
            last_msg: None,
        }
    }

    /// Carries out the outputs: persists, counts sends, runs contracts at
    /// once (as the harness does). Returns the number of messages sent.
    fn drain(&mut self) -> usize {
        let mut sends = 0;
        while let Some(out) = self.core.poll_output() {
            match out {
                Output::Persist(b) => self.disk.apply(&b),
                Output::Send(_) => sends += 1,
                Output::Run(cert) => {
                    let idx = self
                        .config
                        .membership
                        .index_of(&cert.request.requester)
                        .unwrap_or(u32::MAX);
                    let v = cert.request.version.wrapping_add(1);
                    *self.runs.entry((idx, v)).or_default() += 1;
                    self.core.contract_done(self.now, idx, v, true, RUN_BODY, Vec::new());
                }
                Output::Event(_) => {}
            }
        }
        sends
    }

    fn timeout(&mut self, t: u64) {
        self.now = self.now.max(t);
        self.core.handle_timeout(t);
        self.drain();
    }

    /// One input of the honest log.
    pub fn honest(&mut self, input: &Input) {
        if let Some(t) = input.time() {
            self.now = self.now.max(t);
        }
        match input {
            Input::Msg(t, m) => {
                self.last_msg = Some(m.clone());
                let _ = self.core.handle_message(*t, m.clone());
            }
            Input::Timeout(t) => self.core.handle_timeout(*t),
            Input::Share(t) => {
                self.core.publish_share(*t, "temperature", 21.5);
            }
            Input::Buy(t) => {
                let _ = self.core.buy(*t, "espresso", None, 2 * UNITS_PER_COIN, vec![]);
            }
            Input::SetServices(t, offers) => self.core.set_services(*t, offers.clone()),
            Input::Restart(t) => {
                self.core = Core::new(self.config.clone(), self.key.clone(), self.disk.clone(), *t);
                self.restarted = true;
            }
            Input::Sent(_) => return,
        }
        self.drain();
    }

    /// One attacker input; `Err` carries the panic message and location.
    fn attack(&mut self, a: &Payload) -> Result<usize, String> {
        let now = self.now;
        quiet_panics();
        QUIET.with(|q| q.set(true));
        let r = catch_unwind(AssertUnwindSafe(|| {
            let _ = match a {
                Payload::Msg(m) => {
                    // A forgery batched with a valid message must fail the
                    // batch and be refused alone: the twin never batches.
                    let mut batch = vec![(**m).clone()];
                    batch.extend(self.last_msg.clone());
                    self.core.preverify(&batch);
                    self.core.handle_message(now, (**m).clone())
                }
                Payload::Bytes(b) => self.core.handle_bytes(now, b),
            };
            self.drain()
        }));
        QUIET.with(|q| q.set(false));
        r.map_err(|_| LAST_PANIC.with(|p| p.take()))
    }
}

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

/// A panic inside an attacked core is a finding reported with its input, not
/// a backtrace on stderr: while `QUIET` is set on this thread the hook only
/// records the message and location. Other threads (and other panics) go
/// to the hook that was installed before (libtest's, the fuzzer's).
fn quiet_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(|q| q.get()) {
                let msg = info
                    .payload()
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                let at = info.location().map(|l| format!(" at {l}")).unwrap_or_default();
                LAST_PANIC.with(|p| *p.borrow_mut() = format!("{msg}{at}"));
            } else {
                previous(info);
            }
        }));
    });
}

// ------------------------------------------------------------------ choices

/// Where the choices come from: a seeded generator (stable test) or the
/// fuzzer's input bytes (zeros once they run out).
pub trait Source {
    fn byte(&mut self) -> u8;
    /// True once a byte stream is used up (a generator never is).
    fn exhausted(&self) -> bool;

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.byte();
        }
        u64::from_le_bytes(b)
    }
    /// 0..n (0 when n is 0).
    fn below(&mut self, n: usize) -> usize {
        match n {
            0 | 1 => 0,
            2..=256 => usize::from(self.byte()) % n,
            _ => {
                let x = u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()]);
                x as usize % n
            }
        }
    }
    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }
}

/// xorshift64*: small, seeded, deterministic.
#[derive(Debug, Clone)]
pub struct XorShift(pub u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl Source for XorShift {
    fn byte(&mut self) -> u8 {
        (self.next() >> 56) as u8
    }
    fn u64(&mut self) -> u64 {
        self.next()
    }
    fn exhausted(&self) -> bool {
        false
    }
}

/// The fuzzer's input as a choice stream.
#[derive(Debug)]
pub struct Bytes<'a> {
    pub data: &'a [u8],
    pub pos: usize,
}

impl Source for Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    fn exhausted(&self) -> bool {
        self.pos >= self.data.len()
    }
}

// ---------------------------------------------------------------- mutations

/// What the attacker feeds.
#[derive(Debug, Clone)]
pub enum Payload {
    Msg(Box<Message>),
    Bytes(Vec<u8>),
}

/// One attacker input and how it was made.
#[derive(Debug, Clone)]
pub struct Attack {
    pub payload: Payload,
    /// Signed by the attacker's member key (it acts as a Byzantine member).
    pub fresh: bool,
    /// The base message's kind and log position, and every change made.
    pub desc: String,
}

struct Mutator<'a> {
    c: &'a Corpus,
    victim: usize,
    desc: Vec<String>,
}

fn sig_zero() -> Signature {
    Signature::default()
}

fn zero_sig(m: &mut Message) {
    match m {
        Message::Share(x) => x.sig = sig_zero(),
        Message::Request(x) => x.sig = sig_zero(),
        Message::Vote(x) => x.sig = sig_zero(),
        Message::Certificate(x) => x.provider_sig = sig_zero(),
        Message::Announce(x) => x.sig = sig_zero(),
        Message::Outcome(x) => x.sig = sig_zero(),
        Message::Digest(x) => x.sig = sig_zero(),
        Message::HeadsRequest(x) => x.sig = sig_zero(),
        Message::Heads(x) => x.sig = sig_zero(),
        Message::CertFetch(x) => x.sig = sig_zero(),
        Message::ShareFetch(x) => x.sig = sig_zero(),
    }
}

impl Mutator<'_> {
    fn note(&mut self, s: String) {
        self.desc.push(s);
    }

    /// An integer from some other message of the honest run.
    fn other_int(&self, src: &mut dyn Source) -> u64 {
        let m = &self.c.sent[src.below(self.c.sent.len())];
        let ints: Vec<u64> = match m {
            Message::Share(s) => vec![s.seq, s.time_ms],
            Message::Request(r) => vec![r.price, r.time_ms, r.version, r.shares_upto, r.received_upto, r.nonce],
            Message::Vote(v) => vec![v.remaining, v.nonce],
            Message::Certificate(c) => vec![c.remaining, c.request.version, c.request.price, c.request.received_upto],
            Message::Announce(a) => vec![a.seq],
            Message::Outcome(o) => vec![o.version],
            Message::Digest(d) => vec![d.time_ms],
            Message::HeadsRequest(h) => vec![h.time_ms],
            Message::Heads(h) => h
                .heads
                .iter()
                .flat_map(|x| [x.version, x.settled, x.shares])
                .chain([h.time_ms])
                .collect(),
            Message::CertFetch(f) => vec![f.first_version, f.last_version],
            Message::ShareFetch(f) => vec![f.first_seq, f.last_seq],
        };
        ints[src.below(ints.len())]
    }

    /// A boundary or related value for integer field `field` holding `v`.
    fn int(&mut self, src: &mut dyn Source, field: &str, v: u64) -> u64 {
        let (n, how) = match src.below(11) {
            0 => (0, "0"),
            1 => (1, "1"),
            2 => (u64::MAX, "u64::MAX"),
            3 => (u64::MAX - 1, "u64::MAX-1"),
            4 => (v.wrapping_add(1), "+1"),
            5 => (v.wrapping_sub(1), "-1"),
            6 => (self.other_int(src), "from another message"),
            7 => (src.u64(), "random"),
            8 => (v ^ (1 << src.below(64)), "bit flip"),
            9 => (u64::from(u32::MAX), "u32::MAX"),
            _ => (v.wrapping_add(1 + src.below(1_000) as u64), "+k"),
        };
        self.note(format!("{field}: {v} -> {n} ({how})"));
        n
    }

    fn int32(&mut self, src: &mut dyn Source, field: &str, v: u32) -> u32 {
        let n = match src.below(6) {
            0 => 0,
            1 => N as u32,
            2 => u32::MAX,
            3 => src.below(N) as u32,
            4 => v.wrapping_add(1),
            _ => src.byte().into(),
        };
        self.note(format!("{field}: {v} -> {n}"));
        n
    }

    /// A member, the victim, the attacker's member, a non-member or junk.
    fn member(&mut self, src: &mut dyn Source, field: &str) -> MemberId {
        let (m, who) = match src.below(6) {
            0 => (self.c.members[self.victim], "victim".to_string()),
            1 => (self.c.members[BYZANTINE], "byzantine member".into()),
            2 => (self.c.outsider.id(), "non-member".into()),
            3 => (MemberId([0; 32]), "zero id".into()),
            4 => {
                let mut b = [0u8; 32];
                for x in &mut b {
                    *x = src.byte();
                }
                (MemberId(b), "junk id".into())
            }
            _ => {
                let i = src.below(N);
                (self.c.members[i], format!("member {i}"))
            }
        };
        self.note(format!("{field} -> {who}"));
        m
    }

    fn hash(&mut self, src: &mut dyn Source, field: &str, h: Hash) -> Hash {
        let (n, how) = match src.below(4) {
            0 => ([0; 32], "zero"),
            1 => {
                let mut h = h;
                h[src.below(32)] ^= 1 << src.below(8);
                (h, "bit flip")
            }
            2 => (self.other_request_id(src), "another request id"),
            _ => {
                let mut b = [0u8; 32];
                for x in &mut b {
                    *x = src.byte();
                }
                (b, "random")
            }
        };
        self.note(format!("{field} -> {how}"));
        n
    }

    fn other_request_id(&self, src: &mut dyn Source) -> Hash {
        let ids: Vec<Hash> = self
            .c
            .sent
            .iter()
            .filter_map(|m| match m {
                Message::Request(r) => Some(r.id()),
                Message::Vote(v) => Some(v.request_id),
                _ => None,
            })
            .collect();
        ids[src.below(ids.len())]
    }

    fn victim_id(&self) -> MemberId {
        self.c.members[self.victim]
    }

    /// `to` fields point at the victim most of the time (so it acts).
    fn to(&mut self, src: &mut dyn Source, old: MemberId) -> MemberId {
        if src.percent(70) {
            if old != self.victim_id() {
                self.note("to -> victim".into());
            }
            self.victim_id()
        } else {
            self.member(src, "to")
        }
    }

    fn request_fields(&mut self, src: &mut dyn Source, r: &mut Request) {
        match src.below(11) {
            0 => r.price = self.int(src, "price", r.price),
            1 => r.time_ms = self.int(src, "time_ms", r.time_ms),
            2 => r.version = self.int(src, "version", r.version),
            3 => r.shares_upto = self.int(src, "shares_upto", r.shares_upto),
            4 => r.received_upto = self.int(src, "received_upto", r.received_upto),
            5 => r.nonce = self.int(src, "nonce", r.nonce),
            6 => r.state = self.hash(src, "state", r.state),
            7 => {
                r.service = match src.below(4) {
                    0 => String::new(),
                    1 => "tea".into(),
                    2 => "e".repeat(64),
                    _ => "espresso\u{e9}".into(),
                };
                self.note(format!("service -> {:?}", r.service));
            }
            8 => r.provider = self.member(src, "provider"),
            9 => r.requester = self.member(src, "requester"),
            _ => {
                let n = src.below(3);
                r.params = (0..n).map(|i| (format!("k{i}"), "v".repeat(src.below(600)))).collect();
                self.note(format!("params -> {n} entries"));
            }
        }
    }

    /// Rebuilds a request as the attacker's member (new work and signature).
    fn rebuild_request(&mut self, r: &Request) -> Option<Request> {
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
        Request::build(self.c.byzantine(), draft, self.c.params().difficulty).ok()
    }

    fn cert_vote(&mut self, src: &mut dyn Source) -> Option<CertVote> {
        // A vote from another certificate, or a vote message turned into one.
        let pick = &self.c.sent[src.below(self.c.sent.len())];
        match pick {
            Message::Certificate(c) if !c.votes.is_empty() => Some(c.votes[src.below(c.votes.len())]),
            Message::Vote(v) => Some(CertVote {
                voter_idx: self.c.membership().index_of(&v.voter)?,
                nonce: v.nonce,
                sig: v.sig,
            }),
            _ => None,
        }
    }

    /// Changes one field (or one structural property) of `m`.
    fn change_field(&mut self, src: &mut dyn Source, m: &mut Message) {
        match m {
            Message::Share(s) => match src.below(5) {
                0 => s.seq = self.int(src, "seq", s.seq),
                1 => s.time_ms = self.int(src, "time_ms", s.time_ms),
                2 => {
                    s.topic = ["", "x", &"t".repeat(64), "\u{1F600}"][src.below(4)].to_string();
                    self.note(format!("topic -> {:?}", s.topic));
                }
                3 => {
                    s.value = [f64::NAN, f64::INFINITY, -0.0, f64::MAX][src.below(4)];
                    self.note(format!("value -> {}", s.value));
                }
                _ => s.sender = self.member(src, "sender"),
            },
            Message::Request(r) => self.request_fields(src, r),
            Message::Vote(v) => match src.below(4) {
                0 => v.remaining = self.int(src, "remaining", v.remaining),
                1 => v.request_id = self.hash(src, "request_id", v.request_id),
                2 => v.nonce = self.int(src, "nonce", v.nonce),
                _ => v.voter = self.member(src, "voter"),
            },
            Message::Certificate(c) => match src.below(10) {
                0..=2 => self.request_fields(src, &mut c.request),
                3 => c.remaining = self.int(src, "remaining", c.remaining),
                4 => {
                    let n = c.votes.len();
                    if n >= 2 {
                        match src.below(3) {
                            0 => c.votes.reverse(),
                            1 => c.votes.swap(src.below(n), src.below(n)),
                            _ => c.votes.rotate_left(1),
                        }
                    }
                    self.note("votes reordered".into());
                }
                5 => {
                    if !c.votes.is_empty() {
                        let i = src.below(c.votes.len());
                        let dup = c.votes[i];
                        c.votes.insert(i, dup);
                    }
                    self.note("a vote duplicated".into());
                }
                6 => {
                    let keep = match src.below(3) {
                        0 => c.votes.len().saturating_sub(1),
                        1 => 1,
                        _ => 0,
                    };
                    c.votes.truncate(keep);
                    self.note(format!("votes truncated to {keep}"));
                }
                7 => {
                    if let Some(v) = self.cert_vote(src) {
                        let at = src.below(c.votes.len() + 1);
                        c.votes.insert(at, v);
                        self.note(format!("vote of member {} inserted at {at}", v.voter_idx));
                    }
                }
                8 => {
                    if !c.votes.is_empty() {
                        let i = src.below(c.votes.len());
                        match src.below(3) {
                            0 => c.votes[i].voter_idx = self.int32(src, "vote voter_idx", c.votes[i].voter_idx),
                            1 => c.votes[i].nonce = self.int(src, "vote nonce", c.votes[i].nonce),
                            _ => {
                                c.votes[i].sig = sig_zero();
                                self.note("a vote signature zeroed".into());
                            }
                        }
                    }
                }
                _ => {
                    // Keep only a quorum's worth from the front or the back.
                    let q = self.c.membership().quorum_count(self.c.params());
                    if c.votes.len() > q {
                        if src.percent(50) {
                            c.votes.drain(..c.votes.len() - q);
                        } else {
                            c.votes.truncate(q);
                        }
                    }
                    self.note("votes cut to a quorum".into());
                }
            },
            Message::Announce(a) => match src.below(5) {
                0 => a.seq = self.int(src, "seq", a.seq),
                1 => {
                    if let Some(s) = a.services.first_mut() {
                        s.price = 0;
                    }
                    self.note("first service price -> 0".into());
                }
                2 => {
                    a.services.clear();
                    self.note("services cleared".into());
                }
                3 => {
                    let extra = a.services.first().cloned().map(|mut s| {
                        s.name = "tea".into();
                        s
                    });
                    a.services.extend(extra);
                    self.note("a service added".into());
                }
                _ => a.provider = self.member(src, "provider"),
            },
            Message::Outcome(o) => match src.below(6) {
                0 => o.version = self.int(src, "version", o.version),
                1 => {
                    o.ok = !o.ok;
                    self.note("ok flipped".into());
                }
                2 => {
                    o.body = "x".repeat(src.below(5_000));
                    self.note(format!("body -> {} bytes", o.body.len()));
                }
                3 => o.request_id = self.hash(src, "request_id", o.request_id),
                4 => o.provider = self.member(src, "provider"),
                _ => o.requester = self.member(src, "requester"),
            },
            Message::Digest(d) => match src.below(3) {
                0 => d.time_ms = self.int(src, "time_ms", d.time_ms),
                1 => d.digest = self.hash(src, "digest", d.digest),
                _ => d.from = self.member(src, "from"),
            },
            Message::HeadsRequest(h) => match src.below(3) {
                0 => h.time_ms = self.int(src, "time_ms", h.time_ms),
                1 => h.to = self.to(src, h.to),
                _ => h.from = self.member(src, "from"),
            },
            Message::Heads(h) => match src.below(7) {
                0 => {
                    if let Some(x) = pick_mut(src, &mut h.heads) {
                        let idx = x.idx;
                        match src.below(3) {
                            0 => x.version = self.int(src, &format!("head {idx} version"), x.version),
                            1 => x.settled = self.int(src, &format!("head {idx} settled"), x.settled),
                            _ => x.shares = self.int(src, &format!("head {idx} shares"), x.shares),
                        }
                    }
                }
                1 => {
                    if let Some(x) = pick_mut(src, &mut h.heads) {
                        x.idx = self.int32(src, "head idx", x.idx);
                    }
                }
                2 => {
                    let dup = h.heads.first().copied();
                    h.heads.extend(dup);
                    self.note("a head duplicated".into());
                }
                3 => {
                    let big = src.percent(50);
                    h.heads = (0..N as u32 + 2)
                        .map(|idx| Head {
                            idx,
                            version: if big { u64::MAX } else { 1_000 },
                            settled: if big { u64::MAX } else { 1_000 },
                            shares: if big { u64::MAX } else { 1_000 },
                            received: if big { u64::MAX } else { 1_000 },
                        })
                        .collect();
                    self.note(format!("every wallet claimed far ahead (u64::MAX: {big})"));
                }
                4 => {
                    h.heads.clear();
                    self.note("heads cleared".into());
                }
                5 => h.to = self.to(src, h.to),
                _ => h.from = self.member(src, "from"),
            },
            Message::CertFetch(f) => match src.below(6) {
                0 => f.first_version = self.int(src, "first_version", f.first_version),
                1 => f.last_version = self.int(src, "last_version", f.last_version),
                2 => {
                    std::mem::swap(&mut f.first_version, &mut f.last_version);
                    if f.first_version <= f.last_version {
                        f.first_version = f.last_version.saturating_add(1 + src.below(3) as u64);
                    }
                    self.note(format!(
                        "range reversed: first {} > last {}",
                        f.first_version, f.last_version
                    ));
                }
                3 => {
                    f.first_version = src.below(2) as u64;
                    f.last_version = u64::MAX;
                    self.note("range 0/1..=u64::MAX".into());
                }
                4 => f.idx = self.int32(src, "idx", f.idx),
                _ => f.to = self.to(src, f.to),
            },
            Message::ShareFetch(f) => match src.below(5) {
                0 => f.first_seq = self.int(src, "first_seq", f.first_seq),
                1 => f.last_seq = self.int(src, "last_seq", f.last_seq),
                2 => {
                    std::mem::swap(&mut f.first_seq, &mut f.last_seq);
                    self.note("range swapped".into());
                }
                3 => {
                    f.first_seq = src.below(2) as u64;
                    f.last_seq = u64::MAX;
                    self.note("range 0/1..=u64::MAX".into());
                }
                _ => f.to = self.to(src, f.to),
            },
        }
    }

    /// Keeps, zeroes or re-signs (as the attacker's member). Returns true
    /// when the attacker signed.
    fn signature(&mut self, src: &mut dyn Source, m: &mut Message) -> bool {
        let mode = src.below(10);
        if mode < 4 {
            self.note("signature kept".into());
            return false;
        }
        if mode < 6 {
            self.note("signature zeroed".into());
            zero_sig(m);
            return false;
        }
        self.signature_fresh(src, m)
    }

    fn signature_fresh(&mut self, src: &mut dyn Source, m: &mut Message) -> bool {
        let b = self.c.byzantine().clone();
        // Re-signed by the attacker's member: it becomes the signer.
        let fresh = match m {
            // A share the Byzantine member signs is a real share of its own
            // (money the protocol lets it create): not an attack, kept.
            Message::Share(_) => {
                self.note("signature kept (shares are not re-signed)".into());
                return false;
            }
            Message::Request(r) => match self.rebuild_request(r) {
                Some(n) => {
                    *r = n;
                    true
                }
                None => false,
            },
            Message::Vote(v) => match Vote::build(&b, v.request_id, v.remaining, self.c.params().vote_difficulty) {
                Some(n) => {
                    *v = n;
                    true
                }
                None => false,
            },
            Message::Certificate(c) => {
                if src.percent(50)
                    && let Some(r) = self.rebuild_request(&c.request)
                {
                    self.note("inner request rebuilt by the byzantine member".into());
                    c.request = r;
                }
                c.provider_sig = b.sign(&c.digest());
                true
            }
            Message::Announce(a) => {
                *a = Announce::new(&b, a.seq, a.services.clone());
                true
            }
            Message::Outcome(o) => {
                let requester = if src.percent(70) { self.victim_id() } else { o.requester };
                *o = Outcome::new(&b, requester, o.request_id, o.version, o.ok, &o.body);
                true
            }
            Message::Digest(d) => {
                *d = SyncDigest::new(&b, d.time_ms, d.digest);
                true
            }
            Message::HeadsRequest(h) => {
                let to = self.to(src, h.to);
                *h = HeadsRequest::new(&b, to, h.time_ms);
                true
            }
            Message::Heads(h) => {
                let to = self.to(src, h.to);
                *h = Heads::new(&b, to, h.time_ms, h.heads.clone());
                true
            }
            Message::CertFetch(f) => {
                let to = self.to(src, f.to);
                *f = CertFetch::new(&b, to, f.idx, f.first_version, f.last_version);
                true
            }
            Message::ShareFetch(f) => {
                let to = self.to(src, f.to);
                *f = ShareFetch::new(&b, to, f.first_seq, f.last_seq);
                true
            }
        };
        self.note(if fresh {
            "re-signed by the byzantine member".into()
        } else {
            "re-signing failed, signature kept".into()
        });
        fresh
    }

    /// Byte-level changes of a valid encoding.
    fn bytes(&mut self, src: &mut dyn Source, mut b: Vec<u8>) -> Vec<u8> {
        for _ in 0..1 + src.below(3) {
            match src.below(6) {
                0 => {
                    let flips = 1 + src.below(4);
                    for _ in 0..flips {
                        let i = src.below(b.len());
                        if let Some(x) = b.get_mut(i) {
                            *x ^= 1 << src.below(8);
                        }
                    }
                    self.note(format!("{flips} bit flips"));
                }
                1 => {
                    let n = src.below(b.len() + 1);
                    b.truncate(n);
                    self.note(format!("truncated to {n} bytes"));
                }
                2 => {
                    let n = 1 + src.below(80);
                    let fill = src.byte();
                    b.extend(std::iter::repeat_n(fill, n));
                    self.note(format!("{n} bytes {fill:#x} appended"));
                }
                3 => {
                    let t = 1 + src.below(12) as u8;
                    if let Some(x) = b.first_mut() {
                        *x = t;
                    }
                    self.note(format!("tag -> {t}"));
                }
                4 => {
                    // Splice in a piece of another message's encoding.
                    let other = self.c.sent[src.below(self.c.sent.len())].encode().unwrap_or_default();
                    let at = src.below(b.len() + 1);
                    let from = src.below(other.len() + 1);
                    let len = src.below(other.len() - from + 1);
                    let end = (at + len).min(b.len());
                    b.splice(at..end, other[from..from + len].iter().copied());
                    self.note(format!("{len} bytes of another message spliced at {at}"));
                }
                _ => {
                    // A length or count field: overwrite 4 bytes with 0xff.
                    let i = src.below(b.len());
                    for x in b.iter_mut().skip(i).take(4) {
                        *x = 0xff;
                    }
                    self.note(format!("4 bytes 0xff at {i}"));
                }
            }
        }
        b
    }

    fn mutate(&mut self, src: &mut dyn Source, base: &Message, late: bool) -> Attack {
        let mode = src.below(20);
        // Late (past every TTL), exact replays are the point.
        if mode < 3 || (late && mode < 10) {
            self.note("exact replay".into());
            return self.attack(Payload::Msg(Box::new(base.clone())), false);
        }
        if mode < 7 {
            let bytes = base.encode().expect("honest messages encode");
            let b = self.bytes(src, bytes);
            return self.attack(Payload::Bytes(b), false);
        }
        let mut m = base.clone();
        if mode == 7 {
            // Only the signature: a signed certificate becomes a proof.
            self.note("only the signature zeroed".into());
            zero_sig(&mut m);
            return self.attack(Payload::Msg(Box::new(m)), false);
        }
        let fields = 1 + src.below(3);
        for _ in 0..fields {
            self.change_field(src, &mut m);
        }
        let mut fresh = self.signature(src, &mut m);
        if fresh && self.c.sent.contains(&m) {
            // The attacker's member re-signed into its own honest message
            // (votes are deterministic): that is the honest run early, which
            // may legitimately change who a certificate rewards. Forge it.
            self.note("equals the byzantine member's honest message: signature zeroed instead".into());
            zero_sig(&mut m);
            fresh = false;
        }
        // Now and then, the mutated message as bytes.
        if src.percent(10)
            && let Some(b) = m.encode()
        {
            self.note("fed as bytes".into());
            return self.attack(Payload::Bytes(b), fresh);
        }
        self.attack(Payload::Msg(Box::new(m)), fresh)
    }

    fn attack(&mut self, payload: Payload, fresh: bool) -> Attack {
        Attack {
            payload,
            fresh,
            desc: self.desc.join("; "),
        }
    }
}

fn pick_mut<'a, T>(src: &mut dyn Source, v: &'a mut [T]) -> Option<&'a mut T> {
    if v.is_empty() {
        return None;
    }
    let i = src.below(v.len());
    v.get_mut(i)
}

// ------------------------------------------------------------------- oracle

/// What the oracle checks. After **every attacker input**:
/// - `Panic`: the core did not panic.
/// - `Amplification`: the input made the victim send at most
///   [`MAX_SENDS_PER_INPUT`] messages.
/// - `Money`: no wallet's money fields changed (version, state, balance,
///   shares_at_state, received_at_state, received, settled, settled_above):
///   every attacker input is a replay or a mutation of a message the victim
///   has already seen, or signed by one Byzantine member that cannot make a
///   quorum alone, so only honest traffic may move money. (`shares_seen` may
///   move: a replayed share lost in a restart is a real share.)
/// - `RunTwice`: no contract run was asked for twice for one (requester,
///   version).
/// - `Pending`: pending requests and decisions stay within
///   `max_pending_requests` / `max_pending_decisions`, and an input *not*
///   signed by the attacker's member key (a replay, a mutation keeping or
///   zeroing a signature, changed bytes) opens no pending request, and no
///   pending decision either, except an orphan vote (for a request the node
///   does not hold) on a light node or a restarted node, which cannot tell
///   it from a vote that overtook its request: then at most
///   [`ORPHAN_VOTES_PER_VOTER`] per member in all.
/// - Amplification, repeated: an input answered with more than
///   [`REPEAT_SENDS`] messages is fed again at once, and the repeat gets at
///   most [`REPEAT_SENDS`].
/// - `Blame`: an input not signed by the attacker's member adds no
///   equivocation or double-spend rejection (an honest member is never
///   blamed for a forgery).
///
/// After the **whole honest log** (attacker inputs in between):
/// - `Twin`: every wallet of the attacked core equals, field by field, the
///   twin's (same honest log, no attacker); contract runs per (requester,
///   version) equal the twin's.
///
/// After the **late phase** (both cores ticked past every TTL, attacker
/// replays and mutations fed to the attacked one, both ticked past the TTL
/// again):
/// - `Twin` again, and `Leftover`: the attacked core holds no more pending
///   requests or decisions than the twin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Check {
    Panic,
    Amplification,
    Money,
    RunTwice,
    Pending,
    Blame,
    Forged,
    Twin,
    Leftover,
}

/// A failed check, with what is needed to replay it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub check: Check,
    pub victim: usize,
    /// Log position the input was fed before (`late` for the late phase).
    pub at: String,
    pub mutation: String,
    pub input: String,
    pub detail: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} failed on victim node {} at {}\n  mutation: {}\n  input: {}\n  detail: {}",
            self.check, self.victim, self.at, self.mutation, self.input, self.detail
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Probe {
    money: Vec<Wallet>,
    decisions: usize,
    requests: usize,
    blame: u64,
    votes_received: u64,
}

fn probe(core: &Core) -> Probe {
    Probe {
        money: core
            .wallets()
            .map(|w| Wallet {
                shares_seen: 0,
                ..w.clone()
            })
            .collect(),
        decisions: core.pending_decisions(),
        requests: core.pending_requests().count(),
        blame: core
            .stats()
            .rejected
            .iter()
            .filter(|(k, _)| k.contains("equivocation") || k.contains("double spend"))
            .map(|(_, n)| n)
            .sum(),
        votes_received: core.stats().votes_received,
    }
}

fn short(p: &Payload) -> String {
    let s = match p {
        Payload::Msg(m) => format!("{m:?}"),
        Payload::Bytes(b) => format!("{} bytes: {}", b.len(), hex_prefix(b)),
    };
    if s.len() > 600 { format!("{}...", &s[..600]) } else { s }
}

fn hex_prefix(b: &[u8]) -> String {
    b.iter().take(48).map(|x| format!("{x:02x}")).collect()
}

/// Feeds one attacker input and checks everything [`Check`] asks of a single
/// input. An input answered with more than [`REPEAT_SENDS`] messages is fed
/// again at once, and that repeat must be answered with at most
/// [`REPEAT_SENDS`]: a replayer cannot have a large answer again at will.
fn judge(
    node: &mut Replica,
    victim: usize,
    params: &Params,
    payload: &Payload,
    fresh: bool,
) -> Result<usize, (Check, String)> {
    let sends = judge_once(node, victim, params, payload, fresh)?;
    if sends > REPEAT_SENDS {
        let again = judge_once(node, victim, params, payload, fresh)?;
        if again > REPEAT_SENDS {
            return Err((
                Check::Amplification,
                format!(
                    "the input made the victim send {sends} messages, and {again} again when repeated at once \
                     (bound for a repeat {REPEAT_SENDS})"
                ),
            ));
        }
    }
    Ok(sends)
}

fn judge_once(
    node: &mut Replica,
    victim: usize,
    params: &Params,
    payload: &Payload,
    fresh: bool,
) -> Result<usize, (Check, String)> {
    let before = probe(&node.core);
    let runs_before = node.runs.clone();
    let sends = node.attack(payload).map_err(|p| (Check::Panic, p))?;
    if sends > MAX_SENDS_PER_INPUT {
        return Err((
            Check::Amplification,
            format!("one input made the victim send {sends} messages (bound {MAX_SENDS_PER_INPUT})"),
        ));
    }
    if let Some(((idx, v), n)) = node.runs.iter().find(|(k, n)| **n > 1 && runs_before.get(k) != Some(n)) {
        return Err((
            Check::RunTwice,
            format!("Output::Run for wallet {idx} version {v} {n} times"),
        ));
    }
    let after = probe(&node.core);
    if after.money != before.money {
        let diff: Vec<String> = before
            .money
            .iter()
            .zip(&after.money)
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("{:?}: {a:?} -> {b:?}", a.id))
            .collect();
        return Err((Check::Money, diff.join("\n    ")));
    }
    if after.decisions > params.max_pending_decisions || after.requests > params.max_pending_requests {
        return Err((Check::Pending, "a queue exceeds its bound".into()));
    }
    // A light node cannot tell a replayed vote for a wallet it does not keep
    // from a vote that overtook its request, nor can a restarted node for a
    // request that committed before its restart: such votes may wait, within
    // the per-voter bound. Anywhere else, a replayed vote is recognized.
    let orphans_ok = (victim == LIGHT || node.restarted) && after.decisions <= N * ORPHAN_VOTES_PER_VOTER;
    if !fresh && (after.requests > before.requests || (after.decisions > before.decisions && !orphans_ok)) {
        return Err((
            Check::Pending,
            format!(
                "an input no member signed opened pending work: decisions {} -> {}, requests {} -> {}",
                before.decisions, after.decisions, before.requests, after.requests
            ),
        ));
    }
    // Ground truth for signatures: the lone check. A vote that fails it is
    // never counted, however it was batched (`Core::preverify`).
    if let Payload::Msg(m) = payload
        && let Message::Vote(v) = &**m
        && !wallance_core::crypto::verify(&v.voter, &v.hash(), &v.sig)
        && after.votes_received > before.votes_received
    {
        return Err((
            Check::Forged,
            "a vote whose signature does not verify was counted".into(),
        ));
    }
    if !fresh && after.blame > before.blame {
        return Err((
            Check::Blame,
            "an input no member signed was counted as equivocation or double spend".into(),
        ));
    }
    Ok(sends)
}

/// Statistics of one episode.
#[derive(Debug, Default, Clone, Copy)]
pub struct EpisodeStats {
    pub attacks: usize,
    pub max_sends: usize,
}

/// Runs one episode against `victim`, with up to `budget` attacker inputs
/// drawn from `src`. Returns the failed checks: the first of each attacker
/// input (all of them, or only the first with `stop_at_first`); a panic
/// always ends the episode.
pub fn run_episode(
    c: &Corpus,
    victim: usize,
    src: &mut dyn Source,
    budget: usize,
    stop_at_first: bool,
) -> (EpisodeStats, Vec<Failure>) {
    let mut failures = Vec::new();
    let stats = episode(c, victim, src, budget, stop_at_first, &mut failures);
    (stats, failures)
}

fn episode(
    c: &Corpus,
    victim: usize,
    src: &mut dyn Source,
    budget: usize,
    stop_at_first: bool,
    failures: &mut Vec<Failure>,
) -> EpisodeStats {
    let log = &c.logs[victim];
    let seen = &c.seen[&victim];
    let twin = &c.twins[&victim];
    let params = c.params().clone();
    let mut node = Replica::new(c, victim);
    let mut stats = EpisodeStats::default();
    // About one attacker input per `gap` log entries, so a budget spreads
    // over the whole log.
    let gap = (log.len() / budget.max(1)).clamp(1, 64);
    // What the victim has seen so far: messages of each kind before `pos`.
    let pick = |src: &mut dyn Source, pos: usize| -> Option<&Message> {
        let kinds: Vec<&Vec<(usize, Message)>> = seen
            .iter()
            .filter(|k| k.first().is_some_and(|(p, _)| *p < pos))
            .collect();
        if kinds.is_empty() {
            return None;
        }
        let k = kinds[src.below(kinds.len())];
        let n = k.partition_point(|(p, _)| *p < pos);
        Some(&k[src.below(n)].1)
    };
    let mut feed = |node: &mut Replica, src: &mut dyn Source, base: &Message, at: String, late: bool| {
        let mut m = Mutator {
            c,
            victim,
            desc: vec![format!("base {} seen by the victim", base.kind())],
        };
        let a = m.mutate(src, base, late);
        let fail = |check, detail: String| {
            Box::new(Failure {
                check,
                victim,
                at: at.clone(),
                mutation: a.desc.clone(),
                input: short(&a.payload),
                detail,
            })
        };
        let sends = judge(node, victim, &params, &a.payload, a.fresh).map_err(|(check, d)| fail(check, d))?;
        stats.attacks += 1;
        stats.max_sends = stats.max_sends.max(sends);
        Ok(())
    };
    let twin_fail = |check, at: &str, detail: String| {
        Box::new(Failure {
            check,
            victim,
            at: at.into(),
            mutation: "(all attacker inputs of the episode)".into(),
            input: String::new(),
            detail,
        })
    };
    let compare = |node: &Replica, wallets: &[Wallet], at: &str| -> Result<(), Box<Failure>> {
        let mine: Vec<Wallet> = node.core.wallets().cloned().collect();
        if mine != wallets {
            let diff: Vec<String> = wallets
                .iter()
                .zip(&mine)
                .filter(|(a, b)| a != b)
                .map(|(t, a)| format!("twin {t:?}\n    attacked {a:?}"))
                .collect();
            return Err(twin_fail(Check::Twin, at, diff.join("\n    ")));
        }
        if node.runs != twin.runs {
            return Err(twin_fail(
                Check::Twin,
                at,
                format!("contract runs {:?}, twin {:?}", node.runs, twin.runs),
            ));
        }
        Ok(())
    };

    // Records a failure; true when the episode must stop.
    let record = |f: Box<Failure>, failures: &mut Vec<Failure>| {
        let stop = stop_at_first || f.check == Check::Panic;
        failures.push(*f);
        stop
    };
    let mut left = budget;
    // Attacks come before the log entry `next`, a choice per attack (not per
    // entry), so a fuzzer's input bytes go to the mutations.
    let mut next = src.below(2 * gap);
    for (pos, input) in log.iter().enumerate() {
        if pos >= next && input.time().is_some() && left > 0 && !src.exhausted() {
            let k = 1 + src.below(3);
            for _ in 0..k.min(left) {
                left -= 1;
                if let Some(base) = pick(src, pos) {
                    let at = format!("log position {pos} of {}", log.len());
                    if let Err(f) = feed(&mut node, src, base, at, false)
                        && record(f, failures)
                    {
                        return stats;
                    }
                }
            }
            next = pos + 1 + src.below(2 * gap);
        }
        node.honest(input);
    }
    if let Err(f) = compare(&node, &twin.wallets, "end of the honest log")
        && record(f, failures)
    {
        return stats;
    }

    let (late, late2) = c.late_times();
    node.timeout(late);
    let late_inputs = if src.exhausted() { 0 } else { 8 + src.below(24) };
    for _ in 0..late_inputs {
        if let Some(base) = pick(src, log.len())
            && let Err(f) = feed(&mut node, src, base, "late (past every TTL)".into(), true)
            && record(f, failures)
        {
            return stats;
        }
    }
    node.timeout(late2);
    if let Err(f) = compare(&node, &twin.late_wallets, "after the late replays and expiry")
        && record(f, failures)
    {
        return stats;
    }
    let (d, r) = (node.core.pending_decisions(), node.core.pending_requests().count());
    if d > twin.late_decisions || r > twin.late_requests {
        record(
            twin_fail(
                Check::Leftover,
                "after the late replays and expiry",
                format!(
                    "pending decisions {d} (twin {}), requests {r} (twin {})",
                    twin.late_decisions, twin.late_requests
                ),
            ),
            failures,
        );
    }
    stats
}

/// Feeds one given message to `victim` right after log position `pos`
/// (`None`: after the late expiry tick) and checks the per-input oracle.
/// For targeted regression tests.
pub fn feed_one(c: &Corpus, victim: usize, pos: Option<usize>, m: Message, fresh: bool) -> Result<(), Box<Failure>> {
    let mut node = Replica::new(c, victim);
    let log = &c.logs[victim];
    let upto = pos.map_or(log.len(), |p| p + 1);
    for input in &log[..upto] {
        node.honest(input);
    }
    if pos.is_none() {
        node.timeout(c.late_times().0);
    }
    let payload = Payload::Msg(Box::new(m));
    let fail = |check, detail: String| {
        Box::new(Failure {
            check,
            victim,
            at: format!("{pos:?}"),
            mutation: "targeted".into(),
            input: short(&payload),
            detail,
        })
    };
    let params = c.params().clone();
    judge(&mut node, victim, &params, &payload, fresh).map_err(|(check, d)| fail(check, d))?;
    Ok(())
}
