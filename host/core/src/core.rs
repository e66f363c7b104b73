//! The protocol state machine.
//!
//! ```text
//!   inputs (with `now`)                 outputs, in order
//!   handle_message / handle_bytes  ──►  Persist(batch)   make durable first
//!   handle_timeout                      Send(message)    then broadcast
//!   publish_share / buy                 Event(event)     tell the operator
//!   contract_done / set_services        poll_timeout()   when to call again
//! ```
//! The caller drains `poll_output` after every input. Everything persisted by
//! one input comes out as one batch ahead of the messages that depend on it,
//! so a crash can lose only what was never announced.

use std::collections::{BTreeMap, VecDeque};
use std::hash::{BuildHasherDefault, DefaultHasher};

/// A hash map with a fixed hasher: iteration order depends only on what was
/// inserted, so a run replays exactly from its inputs (std's default hasher
/// is seeded at random per process).
type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<DefaultHasher>>;
type HashSet<K> = std::collections::HashSet<K, BuildHasherDefault<DefaultHasher>>;

use crate::crypto::{Hash, Keypair, MemberId, SigCache, Signature, sha256, verify};
use crate::msg::*;
use crate::params::{Membership, Params};
use crate::store_model::{Batch, Change, ContractWrite, Escrow, RunRecord, Snapshot};
use crate::wallet::{Mark, Marks, Wallet, next_state};

/// Something for the adapter to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Make these changes durable before sending anything that follows.
    Persist(Batch),
    /// Broadcast to the network.
    Send(Message),
    /// This node is the provider: run the contract once for this
    /// certificate (it is durable, as `Change::RunPending`, before this is
    /// emitted), then report with [`Core::contract_done`]. An obligation,
    /// like `Persist` and `Send`: a run the adapter drops is run again
    /// after a restart, never lost.
    Run(Box<Certificate>),
    /// For the operator: nothing to carry out.
    Event(Event),
}

/// What happened, for the operator and the adapters.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A purchase committed: the requester's wallet moved to `version`.
    Committed {
        requester: MemberId,
        version: u64,
        request_id: Hash,
        service: String,
        provider: MemberId,
        price: u64,
        remaining: u64,
        /// From the request's time to this commit, in ms of the caller's clock.
        latency_ms: u64,
        /// True when a certificate (not this node's own quorum) carried it.
        from_certificate: bool,
    },
    /// The contract of a purchase this node made has run.
    Outcome(Outcome),
    /// The services on the network changed.
    ServicesChanged,
    /// A purchase's verdict reached a quorum: its price went to the
    /// provider (`paid`) or back to the requester.
    Settled {
        purchase: Hash,
        requester: MemberId,
        provider: MemberId,
        price: u64,
        paid: bool,
    },
}

/// Why a message was rejected. Every rejection is also counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    pub kind: &'static str,
    pub reason: &'static str,
}

/// Why a purchase could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuyError {
    #[error("no provider offers service {0:?}")]
    UnknownService(String),
    /// Several providers offer the name: the buyer must name one. A
    /// purchase never goes to whoever announces the name (or the lowest
    /// price) last: that is how a member squats on another's service.
    #[error("{} providers offer service {service:?}: name the one to buy from", providers.len())]
    AmbiguousService { service: String, providers: Vec<MemberId> },
    #[error("price {offered} is below the listed price {listed}")]
    PriceTooLow { offered: u64, listed: u64 },
    #[error("insufficient balance: {available} units, the purchase costs {cost} (price plus voter reward)")]
    InsufficientBalance { available: u64, cost: u64 },
    #[error("a purchase is already pending on this wallet's State")]
    Pending,
    #[error("this node is not a member")]
    NotMember,
    #[error("{0}")]
    Build(#[from] BuildError),
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub rejected: BTreeMap<String, u64>,
    pub duplicates: u64,
    pub votes_sent: u64,
    pub votes_received: u64,
    pub shares_received: u64,
    pub commits: u64,
    pub certificates_applied: u64,
    pub certificates_adopted: u64,
    /// Times this node, unable to settle commits whose certificates every
    /// peer had pruned, took its settlement and credit tallies from heads
    /// vouched for by more than a third of the weight.
    pub tallies_adopted: u64,
    /// Votes cast on a request whose claimed credits this node could not
    /// check, because members holding more than a third of the weight had
    /// voted the same remaining (`credits_vouched`).
    pub credits_vouched: u64,
    pub expired_requests: u64,
    pub parked_requests: u64,
    /// Verdicts settled here: the price paid to the provider, or refunded.
    pub verdicts_paid: u64,
    pub verdicts_refunded: u64,
    pub verdict_votes_sent: u64,
    pub messages_sent: u64,
    /// Signature checks answered by the cache of verified signatures (a
    /// certificate's votes and request this node had verified already).
    pub signatures_cached: u64,
    /// Signatures verified in batches ([`Core::preverify`]) that held, and
    /// batches that did not (a bad signature in them).
    pub signatures_batched: u64,
    pub batches_failed: u64,
    /// Signatures of votes, requests and certificates checked, alone or in
    /// a batch (not those answered from the cache): the work done.
    pub signatures_checked: u64,
}

#[derive(Debug, Clone)]
struct Pending {
    request: Request,
    idx: u32,
    /// Parked: waiting for shares, credits, a catch-up or an announcement.
    parked: bool,
    last_vote_resend_ms: u64,
}

/// A settled escrow, as remembered to answer late peers.
#[derive(Debug, Clone, Copy)]
struct Closed {
    purchase: Hash,
    my_vote: Option<Vote>,
    requester_idx: u32,
    version: u64,
}

impl Closed {
    fn of(e: &Escrow) -> Self {
        Self {
            purchase: e.purchase,
            my_vote: e.my_vote,
            requester_idx: e.requester_idx,
            version: e.version,
        }
    }
}

/// An open escrow and the verdict votes heard for it.
#[derive(Debug, Clone)]
struct OpenEscrow {
    escrow: Escrow,
    /// The verdict votes counted, by (voter, pay the provider?). A voter
    /// that signed both verdicts counts on both sides: two quorums would
    /// share more than a third of the weight, so Byzantine members below a
    /// third can never give both a quorum, and a quorum relayed from a node
    /// that closed must count here whatever else its voters sent.
    votes: BTreeMap<(u32, bool), Vote>,
    pay_weight: u64,
    refund_weight: u64,
    last_resend_ms: u64,
    /// Queries sent past the deadline (`tick_escrows`), and when the next
    /// may go: they back off.
    queries: u32,
    next_query_ms: u64,
}

#[derive(Debug, Clone, Default)]
struct Decision {
    request_id: Hash,
    remaining: u64,
    votes: BTreeMap<u32, CertVote>,
    weight: u64,
    first_seen_ms: u64,
}

/// Configuration of one node's core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub params: Params,
    pub membership: Membership,
    /// A light node keeps only these wallets and abstains on the others.
    pub tracked: Option<std::collections::HashSet<u32>>,
}

/// One node's protocol state.
#[derive(Debug)]
pub struct Core {
    params: Params,
    members: Membership,
    key: Keypair,
    me: MemberId,
    my_idx: Option<u32>,
    tracked: Option<std::collections::HashSet<u32>>,
    /// Boxed: a light node's absent wallets cost a pointer each.
    wallets: Vec<Option<Box<Wallet>>>,
    requests: HashMap<Hash, Pending>,
    my_votes: HashMap<u32, (u64, Vote)>,
    decisions: HashMap<Hash, Decision>,
    /// (voter, request) -> decision, to catch equivocating voters.
    voter_seen: HashMap<(u32, Hash), Hash>,
    certs: HashMap<u32, BTreeMap<u64, Certificate>>,
    /// Settlement marks of the wallets this node does not keep.
    marks: HashMap<u32, Marks>,
    runs: BTreeMap<(u32, u64), RunRecord>,
    /// Per requester: finished runs at or below were pruned, and nothing at
    /// or below that is not in `runs` ever runs here (exactly once).
    run_floor: HashMap<u32, u64>,
    /// Requests that committed here recently: late and replayed votes and
    /// requests for them cost a lookup.
    committed: HashSet<Hash>,
    committed_order: VecDeque<Hash>,
    /// Pending requests per requester (the bound is checked in O(1)).
    per_requester: HashMap<u32, usize>,
    /// Per voter, the requests it voted for that this node does not hold
    /// (oldest first): a voter can park at most `MAX_ORPHAN_VOTES` votes here.
    orphans: HashMap<u32, VecDeque<Hash>>,
    /// This node's committed purchases: request id -> provider, and whether
    /// its outcome arrived (only that provider's outcome is accepted, once).
    my_purchases: HashMap<Hash, (MemberId, bool)>,
    my_purchases_order: VecDeque<Hash>,
    /// When this node last sent heads requests (catch-up), at most
    /// `MAX_HEADS_REQUESTS_PER_INTERVAL` per sync interval.
    heads_requests_sent: VecDeque<u64>,
    /// While this node has commits it cannot settle: the hashes of the
    /// fully settled heads vectors peers reported, with who reported them
    /// (one vector per peer, the newest; the vector itself is the message
    /// that completes the vouch, so only hashes are kept).
    vouches: HashMap<Hash, Vec<u32>>,
    vouch_of: HashMap<u32, Hash>,
    announces: HashMap<MemberId, Announce>,
    /// Committed purchases whose price awaits its verdict, by verdict id.
    /// Changed only through `insert_escrow` and `remove_escrow`, which keep
    /// `escrow_versions` equal to its (requester, version) pairs.
    escrows: HashMap<Hash, OpenEscrow>,
    /// How many open escrows hold each (requester index, wallet version):
    /// the certificates `keep_cert` must not drop, found without walking
    /// every open escrow for each certificate kept. (One per pair: two
    /// purchases never commit on one State; counted, so it stays exact.)
    escrow_versions: BTreeMap<(u32, u64), u32>,
    /// Verdicts settled here recently, with this node's vote on each (sent
    /// back to a peer still voting, so it can settle too).
    closed_verdicts: HashMap<Hash, Closed>,
    /// The votes that closed recent escrows here (`remember_quorum`).
    quorum_votes: HashMap<Hash, Vec<Vote>>,
    quorum_order: VecDeque<Hash>,
    quorum_votes_kept: usize,
    /// Own purchases settled before their outcome reached this node: it
    /// asks (a query vote) until the provider re-sends it, a few times.
    awaiting_outcome: HashMap<Hash, u32>,
    /// Per member: (window start, answers sent) to its verdict queries and
    /// late votes, at most `MAX_VERDICT_ANSWERS_PER_MEMBER` per `retry_ms`.
    verdict_answers: HashMap<u32, (u64, usize)>,
    closed_order: VecDeque<Hash>,
    my_services: Vec<ServiceOffer>,
    announce_seq: u64,
    share_seq: u64,
    own_shares: VecDeque<Share>,
    share_buffer: HashMap<u32, BTreeMap<u64, Share>>,
    /// Own requests still pending: id -> last sent.
    my_requests: HashMap<Hash, u64>,
    throttle: HashMap<(u8, u32, u64), u64>,
    next_sync_ms: u64,
    next_tick_ms: u64,
    last_heads_sent_ms: Option<u64>,
    digest_cache: Option<Hash>,
    batch: Batch,
    outbox: VecDeque<Output>,
    stats: Stats,
    /// Signatures verified here, so a certificate does not verify them again.
    sigs: SigCache,
    /// Batches [`Self::preverify`] skips, and failed batches in a row: after
    /// a failure it verifies alone for 2, 4 ... 64 calls, so a flood of
    /// forgeries cannot make every batch a wasted one.
    batch_skip: u32,
    batch_failures: u32,
    now_ms: u64,
}

/// Requests one member may have waiting here at once (a Byzantine member
/// could otherwise fill the queue with requests on its State).
const MAX_PENDING_PER_REQUESTER: usize = 4;
/// Votes one voter may have here for requests this node does not hold
/// (votes may overtake their request; an honest voter has a few at once).
/// A newer one evicts the oldest, so replayed or invented votes cost a
/// member only its own slots.
pub const MAX_ORPHAN_VOTES: usize = 16;
/// Committed request ids remembered (besides the TTL), so late votes are
/// dropped for the price of a lookup.
pub const MAX_REMEMBERED_COMMITS: usize = 65_536;
/// Own purchases whose provider is remembered for their outcome.
pub const MAX_REMEMBERED_PURCHASES: usize = 1_024;
/// Shares re-sent in answer to one `ShareFetch` (a peer with a longer gap
/// asks again after `retry_ms`).
pub const MAX_SHARES_PER_FETCH: u64 = 256;
/// Heads requests a node sends per sync interval (each peer at most once
/// every `HEADS_REQUEST_EVERY_INTERVALS` intervals): a member whose digest
/// always differs can take one of them, never all.
pub const MAX_HEADS_REQUESTS_PER_INTERVAL: usize = 2;
pub const HEADS_REQUEST_EVERY_INTERVALS: u64 = 4;

const T_SHARE_FETCH: u8 = 1;
const T_CERT_FETCH: u8 = 2;
const T_HEADS_REQUEST: u8 = 3;
const T_ANNOUNCE: u8 = 4;
/// Answers: one per asking member (and wallet) per half `retry_ms`.
const T_ANSWER_CERTS: u8 = 5;
const T_ANSWER_SHARES: u8 = 6;
const T_DIGEST_FROM: u8 = 7;
const T_VERDICT_ECHO: u8 = 8;
const T_OUTCOME_RESEND: u8 = 9;
const T_QUORUM_RELAY: u8 = 10;
/// Answers (a vote or an outcome sent back) one member's verdict queries
/// and late verdict votes get per `retry_ms` from this node: as many as an
/// honest node catching up asks per timer tick, so that a member asking
/// about every settled purchase cannot make every node broadcast for it.
pub const MAX_VERDICT_ANSWERS_PER_MEMBER: usize = MAX_VERDICT_RESENDS_PER_TICK;
/// Times a requester asks for an outcome it missed, one per `retry_ms`.
pub const OUTCOME_ASKS: u32 = 30;
/// A verdict vote's `remaining`: 0 refund, 1 pay, 2 a query ("send me your
/// verdict"), sent by a node holding an escrow it has no verdict evidence
/// for (it committed late); never counted.
pub const VERDICT_QUERY: u64 = 2;
/// A query from a member still holding an escrow past its deadline: those
/// that closed it answer with the votes that closed it (never counted).
pub const VERDICT_QUORUM_ASK: u64 = 3;
/// Votes kept in memory to relay the quorum that closed an escrow
/// (`Core::remember_quorum`): 16 384 votes, about 2.4 MB.
pub const MAX_QUORUM_VOTES_KEPT: usize = 16_384;
/// Verified signatures remembered ([`SigCache`]): a certificate follows its
/// votes within milliseconds, and 8 192 entries (about 0.6 MB) cover
/// hundreds of decisions in flight at 8 members, dozens at 48.
pub const SIG_CACHE_ENTRIES: usize = 8_192;
/// Most signatures [`Core::preverify`] verifies in one batch (past about
/// 64 the gain per signature flattens, and a failed batch wastes less).
pub const MAX_BATCH: usize = 64;

/// Open escrows whose votes (and, at their provider, outcomes) one timer
/// tick re-sends at most.
pub const MAX_VERDICT_RESENDS_PER_TICK: usize = 64;

impl Core {
    /// A node starting from its durable state (empty for a new node).
    pub fn new(config: CoreConfig, key: Keypair, snapshot: Snapshot, now_ms: u64) -> Self {
        let salt = sha256(&[b"wallance/batch-salt/v1", &key.seed()]);
        let me = key.id();
        let my_idx = config.membership.index_of(&me);
        let n = config.membership.len();
        let params = config.params;
        let mut wallets = vec![None; n];
        for (i, id) in config.membership.members().iter().enumerate() {
            let keep = config.tracked.as_ref().is_none_or(|t| t.contains(&(i as u32))) || Some(i as u32) == my_idx;
            if keep {
                wallets[i] = Some(Box::new(
                    snapshot
                        .wallets
                        .get(&(i as u32))
                        .cloned()
                        .unwrap_or_else(|| Wallet::genesis(*id, &params)),
                ));
            }
        }
        // Every share this node numbered was signed and sent, and peers
        // credit it by its number (they fetch a gap; a share no longer held
        // is re-signed with its number). A crash that kept the number but
        // lost the wallet row's tally (committed without fsync) must not
        // leave this node's own tally behind for good: its next share would
        // never be contiguous again.
        if let Some(w) = my_idx.and_then(|i| wallets[i as usize].as_mut())
            && w.shares_seen < snapshot.share_seq
        {
            w.shares_seen = snapshot.share_seq;
        }
        let mut core = Self {
            members: config.membership,
            tracked: config.tracked,
            key,
            me,
            my_idx,
            wallets,
            requests: HashMap::default(),
            my_votes: snapshot.my_votes.into_iter().collect(),
            decisions: HashMap::default(),
            voter_seen: HashMap::default(),
            certs: HashMap::default(),
            marks: snapshot
                .marks
                .into_iter()
                .map(|(idx, (settled, above))| (idx, Marks { settled, above }))
                .collect(),
            runs: snapshot.runs,
            run_floor: snapshot.run_floor.into_iter().collect(),
            committed: HashSet::default(),
            committed_order: VecDeque::new(),
            per_requester: HashMap::default(),
            orphans: HashMap::default(),
            my_purchases: HashMap::default(),
            my_purchases_order: VecDeque::new(),
            heads_requests_sent: VecDeque::new(),
            vouches: HashMap::default(),
            vouch_of: HashMap::default(),
            announces: snapshot.announces.into_values().map(|a| (a.provider, a)).collect(),
            closed_verdicts: snapshot
                .escrows
                .iter()
                .filter(|(_, e)| e.verdict.is_some())
                .map(|(k, e)| (*k, Closed::of(e)))
                .collect(),
            awaiting_outcome: HashMap::default(),
            verdict_answers: HashMap::default(),
            quorum_votes: HashMap::default(),
            quorum_order: VecDeque::new(),
            quorum_votes_kept: 0,
            closed_order: snapshot
                .escrows
                .iter()
                .filter(|(_, e)| e.verdict.is_some())
                .map(|(k, _)| *k)
                .collect(),
            escrows: snapshot
                .escrows
                .into_iter()
                .filter(|(_, e)| e.verdict.is_none())
                .map(|(k, escrow)| {
                    let open = OpenEscrow {
                        escrow,
                        votes: BTreeMap::new(),
                        pay_weight: 0,
                        refund_weight: 0,
                        last_resend_ms: 0,
                        queries: 0,
                        next_query_ms: 0,
                    };
                    (k, open)
                })
                .collect(),
            escrow_versions: BTreeMap::new(),
            my_services: Vec::new(),
            announce_seq: snapshot.announce_seq,
            share_seq: snapshot.share_seq,
            own_shares: VecDeque::new(),
            share_buffer: HashMap::default(),
            my_requests: HashMap::default(),
            throttle: HashMap::default(),
            next_sync_ms: now_ms,
            next_tick_ms: now_ms,
            last_heads_sent_ms: None,
            digest_cache: None,
            batch: Vec::new(),
            outbox: VecDeque::new(),
            stats: Stats::default(),
            sigs: SigCache::with_salt(SIG_CACHE_ENTRIES, salt),
            batch_skip: 0,
            batch_failures: 0,
            now_ms,
            params,
        };
        for o in core.escrows.values() {
            *core
                .escrow_versions
                .entry((o.escrow.requester_idx, o.escrow.version))
                .or_default() += 1;
        }
        for ((idx, version), cert) in snapshot.certs {
            // Late votes and re-sent copies of these requests cost a lookup
            // after a restart too.
            core.remember_committed(cert.request.id());
            core.certs.entry(idx).or_default().insert(version, cert);
        }
        for request in snapshot.requests.into_values() {
            if let Some(idx) = core.members.index_of(&request.requester) {
                if request.requester == core.me {
                    core.my_requests.insert(request.id(), 0);
                }
                core.insert_request(request.id(), request, idx, 0);
            }
        }
        for vote in snapshot.votes.into_values() {
            // Signatures were checked before the votes were stored.
            core.add_vote(vote);
        }
        // Runs owed before a crash are owed still: exactly once, not at most.
        let owed: Vec<_> = core
            .runs
            .values()
            .filter(|r| r.done.is_none())
            .map(|r| r.cert.clone())
            .collect();
        for cert in owed {
            core.ask_run(cert);
        }
        let mine: Vec<(Hash, Vote)> = core
            .escrows
            .iter()
            .filter_map(|(k, e)| Some((*k, e.escrow.my_vote?)))
            .collect();
        for (k, vote) in mine {
            core.tally_verdict(k, vote);
        }
        // Restored requests start parked: check each again.
        core.reconsider_parked();
        core
    }

    pub fn id(&self) -> MemberId {
        self.me
    }
    pub fn params(&self) -> &Params {
        &self.params
    }
    pub fn membership(&self) -> &Membership {
        &self.members
    }
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    pub fn wallet(&self, id: &MemberId) -> Option<&Wallet> {
        self.wallets.get(self.members.index_of(id)? as usize)?.as_deref()
    }
    pub fn wallets(&self) -> impl Iterator<Item = &Wallet> {
        self.wallets.iter().flatten().map(|w| &**w)
    }
    pub fn services(&self) -> impl Iterator<Item = (&MemberId, &ServiceOffer)> {
        self.announces
            .values()
            .flat_map(|a| a.services.iter().map(move |s| (&a.provider, s)))
    }
    pub fn pending_requests(&self) -> impl Iterator<Item = (&Request, bool)> {
        self.requests.values().map(|p| (&p.request, p.parked))
    }
    pub fn pending_decisions(&self) -> usize {
        self.decisions.len()
    }
    pub fn certificate(&self, idx: u32, version: u64) -> Option<&Certificate> {
        self.certs.get(&idx)?.get(&version)
    }
    pub fn runs(&self) -> &BTreeMap<(u32, u64), RunRecord> {
        &self.runs
    }

    /// The next output, `None` when only a timeout is left.
    pub fn poll_output(&mut self) -> Option<Output> {
        if !self.batch.is_empty() {
            return Some(Output::Persist(std::mem::take(&mut self.batch)));
        }
        self.outbox.pop_front()
    }

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> u64 {
        self.next_tick_ms.min(self.next_sync_ms)
    }

    fn send(&mut self, m: Message) {
        self.stats.messages_sent += 1;
        self.outbox.push_back(Output::Send(m));
    }

    fn persist(&mut self, c: Change) {
        self.batch.push(c);
    }

    /// [`verify`] through the cache of signatures verified here.
    fn verify_cached(&mut self, signer: &MemberId, digest: &Hash, sig: &Signature) -> bool {
        let hits = self.sigs.hits;
        let ok = self.sigs.verify(signer, digest, sig);
        self.stats.signatures_cached += self.sigs.hits - hits;
        self.stats.signatures_checked = self.sigs.checked;
        ok
    }

    /// [`Vote::check`], with the signature through the cache.
    fn check_vote(&mut self, vote: &Vote) -> Result<(), &'static str> {
        let hash = vote.check_pow(self.params.vote_difficulty)?;
        if !self.verify_cached(&vote.voter, &hash, &vote.sig) {
            return Err("vote signature is invalid");
        }
        Ok(())
    }

    fn reject(&mut self, kind: &'static str, reason: &'static str) -> Result<(), Reject> {
        *self.stats.rejected.entry(format!("{kind}: {reason}")).or_default() += 1;
        Err(Reject { kind, reason })
    }

    fn wallet_mut(&mut self, idx: u32) -> Option<&mut Wallet> {
        self.digest_cache = None;
        self.wallets.get_mut(idx as usize)?.as_deref_mut()
    }

    fn save_wallet(&mut self, idx: u32) {
        if let Some(w) = self.wallets.get(idx as usize).and_then(|w| w.clone()) {
            self.persist(Change::Wallet { idx, wallet: *w });
        }
    }

    /// [`Self::save_wallet`] after a step that only credited shares.
    fn save_tally(&mut self, idx: u32) {
        if let Some(w) = self.wallets.get(idx as usize).and_then(|w| w.clone()) {
            self.persist(Change::Tally { idx, wallet: *w });
        }
    }

    /// Checks and takes a throttle slot at once (for what this node does
    /// of its own accord).
    fn throttled(&mut self, kind: u8, a: u32, b: u64, every_ms: u64) -> bool {
        if self.is_throttled(kind, a, b, every_ms) {
            return true;
        }
        self.take_slot(kind, a, b);
        false
    }

    /// Checks a slot without taking it: a message that claims a sender is
    /// checked against the sender's slot first (cheap), and takes the slot
    /// only once its signature holds, so a forgery never silences the
    /// member it names.
    fn is_throttled(&self, kind: u8, a: u32, b: u64, every_ms: u64) -> bool {
        self.throttle
            .get(&(kind, a, b))
            .is_some_and(|t| self.now_ms < t.saturating_add(every_ms))
    }

    fn take_slot(&mut self, kind: u8, a: u32, b: u64) {
        self.throttle.insert((kind, a, b), self.now_ms);
    }

    fn insert_request(&mut self, id: Hash, request: Request, idx: u32, now_ms: u64) {
        if self
            .requests
            .insert(
                id,
                Pending {
                    request,
                    idx,
                    parked: true,
                    last_vote_resend_ms: now_ms,
                },
            )
            .is_none()
        {
            *self.per_requester.entry(idx).or_default() += 1;
        }
        // Votes that came first are no longer orphans: they stay with the
        // request (their voters' orphan slots still name it, harmlessly).
    }

    /// A request committed here (by a quorum or an adopted certificate):
    /// late votes for it cost a lookup from now on, and if it is ours it is
    /// no longer re-sent and its provider's outcome is awaited.
    fn note_committed(&mut self, id: Hash, request: &Request) {
        self.remember_committed(id);
        if request.requester == self.me {
            self.my_requests.remove(&id);
            self.remember_purchase(id, request.provider);
        }
    }

    /// Remembers a committed request id so late votes and re-sent copies
    /// are dropped at the price of a lookup.
    fn remember_committed(&mut self, id: Hash) {
        if self.committed.insert(id) {
            self.committed_order.push_back(id);
        }
        while self.committed_order.len() > MAX_REMEMBERED_COMMITS {
            if let Some(old) = self.committed_order.pop_front() {
                self.committed.remove(&old);
            }
        }
    }

    /// True when a heads request to `to_idx` fits the budget: fewer than
    /// `MAX_HEADS_REQUESTS_PER_INTERVAL` in the last sync interval, and none
    /// to that peer in the last `HEADS_REQUEST_EVERY_INTERVALS`.
    fn heads_request_fits(&self, to_idx: u32) -> bool {
        let interval = self.params.sync_interval_ms;
        let recent = self
            .heads_requests_sent
            .iter()
            .filter(|t| self.now_ms < t.saturating_add(interval))
            .count();
        recent < MAX_HEADS_REQUESTS_PER_INTERVAL
            && !self.is_throttled(T_DIGEST_FROM, to_idx, 0, interval * HEADS_REQUEST_EVERY_INTERVALS)
    }

    /// Sends a heads request to `to` if it fits the budget, and takes it.
    fn request_heads(&mut self, to: MemberId, to_idx: u32) {
        if !self.heads_request_fits(to_idx) {
            return;
        }
        let interval = self.params.sync_interval_ms;
        let now = self.now_ms;
        self.heads_requests_sent.retain(|t| now < t.saturating_add(interval));
        self.take_slot(T_DIGEST_FROM, to_idx, 0);
        self.heads_requests_sent.push_back(now);
        let h = HeadsRequest::new(&self.key, to, now);
        self.send(Message::HeadsRequest(h));
    }

    /// A signed time from a peer is fresh when within the allowed clock
    /// skew of ours, either way: older copies are replays.
    fn is_fresh(&self, time_ms: u64) -> bool {
        self.now_ms.abs_diff(time_ms) <= self.params.max_clock_skew_ms.max(self.params.sync_interval_ms)
    }

    // ---------------------------------------------------------------- inputs

    /// Decodes and handles wire bytes.
    pub fn handle_bytes(&mut self, now_ms: u64, bytes: &[u8]) -> Result<(), Reject> {
        match Message::decode(bytes) {
            Ok(m) => self.handle_message(now_ms, m),
            Err(_) => {
                self.now_ms = self.now_ms.max(now_ms);
                self.reject("message", "malformed bytes")
            }
        }
    }

    /// Verifies in one Ed25519 batch the signatures that
    /// [`Self::handle_message`] would verify one by one in `msgs`, about twice
    /// as fast per signature from 8 on, and keeps them in the signature cache
    /// so that it does not verify them again. The node calls it on whatever
    /// arrived together: under load, when the loop drains many messages at
    /// once, the batches grow with the load (as a group commit does).
    ///
    /// Only an optimisation. It takes votes and requests, messages with one
    /// signature, and only those the node would check now (from a member,
    /// not for a purchase committed here, not a request it holds already or
    /// for a wallet it does not keep). A batch holds only if each signature
    /// in it passes the lone check (`crypto::verify`, the same cofactored
    /// rule). If one is bad nothing is kept and each is verified alone when
    /// handled, as without batching: a forgery among them makes their
    /// checks cost less than twice what they cost alone, and the calls
    /// after a failed batch verify alone (2, 4 ... up to 64 of them, while
    /// batches keep failing), so a flood of forgeries costs the honest
    /// messages beside them about what they cost without batching.
    pub fn preverify(&mut self, msgs: &[Message]) {
        let mut items = Vec::new();
        for m in msgs {
            match m {
                Message::Vote(v) => {
                    if let Some(item) = self.vote_to_verify(v) {
                        items.push(item);
                    }
                }
                Message::Request(r) => {
                    let Some(idx) = self.members.index_of(&r.requester) else {
                        continue;
                    };
                    let Ok(id) = r.check_pow(self.params.difficulty) else {
                        continue;
                    };
                    let keeps = self.wallets[idx as usize]
                        .as_ref()
                        .is_some_and(|w| r.version >= w.version);
                    if keeps && !self.committed.contains(&id) && !self.requests.contains_key(&id) {
                        items.push((r.requester, id, r.sig));
                    }
                }
                // Not a certificate: its lone check stops at the first bad
                // signature, so a batch of its votes would let anyone make
                // a node check dozens of forged signatures instead of one
                // (a recorded request and made-up votes suffice). Its
                // votes are mostly in the cache from the votes themselves.
                _ => {}
            }
        }
        if items.len() < 2 {
            return;
        }
        if self.batch_skip > 0 {
            self.batch_skip -= 1;
            return;
        }
        for chunk in items.chunks(MAX_BATCH) {
            let failed = self.sigs.batches_failed;
            self.sigs.verify_batch(chunk);
            if self.sigs.batches_failed > failed {
                self.batch_failures = (self.batch_failures + 1).min(6);
                self.batch_skip = 1 << self.batch_failures;
                break;
            }
            self.batch_failures = 0;
        }
        self.stats.signatures_batched = self.sigs.batched;
        self.stats.batches_failed = self.sigs.batches_failed;
        self.stats.signatures_checked = self.sigs.checked;
    }

    /// What [`Self::preverify`] takes of a vote: one from a member that
    /// [`Self::on_vote`] would check now.
    fn vote_to_verify(&self, v: &Vote) -> Option<(MemberId, Hash, Signature)> {
        let voter_idx = self.members.index_of(&v.voter)?;
        if self.closed_verdicts.contains_key(&v.request_id) {
            return None;
        }
        if self.escrows.contains_key(&v.request_id) {
            // Only the votes that count: pay or refund.
            if v.remaining >= VERDICT_QUERY {
                return None;
            }
        } else if self.committed.contains(&v.request_id)
            || self.voter_seen.get(&(voter_idx, v.request_id)) == Some(&v.decision())
        {
            return None;
        }
        let hash = v.check_pow(self.params.vote_difficulty).ok()?;
        Some((v.voter, hash, v.sig))
    }

    /// Handles one message from the network.
    pub fn handle_message(&mut self, now_ms: u64, msg: Message) -> Result<(), Reject> {
        self.now_ms = self.now_ms.max(now_ms);
        match msg {
            Message::Share(m) => self.on_share(m),
            Message::Request(m) => self.on_request(m),
            Message::Vote(m) => self.on_vote(m),
            Message::Certificate(m) => self.on_certificate(*m),
            Message::Announce(m) => self.on_announce(m),
            Message::Outcome(m) => self.on_outcome(m),
            Message::Digest(m) => self.on_digest(m),
            Message::HeadsRequest(m) => self.on_heads_request(m),
            Message::Heads(m) => self.on_heads(m),
            Message::CertFetch(m) => self.on_cert_fetch(m),
            Message::ShareFetch(m) => self.on_share_fetch(m),
        }
    }

    /// A local sensor reading: credit ourselves and broadcast the share.
    pub fn publish_share(&mut self, now_ms: u64, topic: &str, value: f64) -> Option<Share> {
        self.now_ms = self.now_ms.max(now_ms);
        let idx = self.my_idx?;
        self.share_seq += 1;
        let share = Share::new(&self.key, self.share_seq, self.now_ms, topic, value);
        self.persist(Change::ShareSeq(self.share_seq));
        let seq = self.share_seq;
        if let Some(w) = self.wallet_mut(idx)
            && w.shares_seen + 1 == seq
        {
            w.shares_seen = seq;
        }
        self.save_tally(idx);
        self.own_shares.push_back(share.clone());
        while self.own_shares.len() > self.params.own_shares_kept {
            self.own_shares.pop_front();
        }
        self.send(Message::Share(share.clone()));
        Some(share)
    }

    /// Starts a purchase from this node's wallet. `provider` picks one when
    /// several offer the service.
    pub fn buy(
        &mut self,
        now_ms: u64,
        service: &str,
        provider: Option<MemberId>,
        price: u64,
        params: Vec<(String, String)>,
    ) -> Result<Request, BuyError> {
        self.now_ms = self.now_ms.max(now_ms);
        let idx = self.my_idx.ok_or(BuyError::NotMember)?;
        let offers: Vec<(MemberId, u64, Hash, u64)> = self
            .announces
            .values()
            .filter(|a| provider.is_none_or(|want| want == a.provider))
            .flat_map(|a| {
                a.services
                    .iter()
                    .filter(|s| s.name == service)
                    .map(|s| (a.provider, s.price, s.contract_hash, a.seq))
            })
            .collect();
        let (provider, listed, contract_hash, announce_seq) = match offers.as_slice() {
            [] => return Err(BuyError::UnknownService(service.to_string())),
            [one] => *one,
            many => {
                return Err(BuyError::AmbiguousService {
                    service: service.to_string(),
                    providers: many.iter().map(|o| o.0).collect(),
                });
            }
        };
        if price < listed {
            return Err(BuyError::PriceTooLow { offered: price, listed });
        }
        let w = self.wallets[idx as usize].clone().expect("own wallet is always kept");
        let busy = self
            .requests
            .values()
            .any(|p| p.idx == idx && p.request.version == w.version)
            || self.my_votes.get(&idx).is_some_and(|(v, _)| *v == w.version);
        if busy {
            return Err(BuyError::Pending);
        }
        let available = w.spendable(&self.params);
        let cost = self.params.cost(price).unwrap_or(u64::MAX);
        if available < cost {
            return Err(BuyError::InsufficientBalance { available, cost });
        }
        let request = Request::build(
            &self.key,
            RequestDraft {
                service: service.to_string(),
                provider,
                price,
                announce_seq,
                contract_hash,
                time_ms: self.now_ms,
                version: w.version,
                state: w.state,
                shares_upto: w.shares_seen.max(w.shares_at_state),
                received_upto: w.received.max(w.received_at_state),
                params,
            },
            self.params.difficulty,
        )?;
        let id = request.id();
        // Stored (durable before anything is sent) whatever the queues
        // hold: one request per State, so our own never needs a bound, and
        // it is re-sent until it commits.
        self.my_requests.insert(id, self.now_ms);
        self.persist(Change::PutRequest(Box::new(request.clone())));
        self.insert_request(id, request.clone(), idx, self.now_ms);
        self.send(Message::Request(request.clone()));
        // Our own vote goes through the same checks as everybody's.
        self.reconsider(id);
        self.try_commit_request(id);
        Ok(request)
    }

    /// The provider's contract finished for `cert` (requester idx, version),
    /// with the contract's storage `writes` (empty unless `ok`). The writes
    /// go into the run's `Change::RunDone`, so they become durable with it
    /// and only with it: a run already done, or not owed, drops them.
    pub fn contract_done(
        &mut self,
        now_ms: u64,
        idx: u32,
        version: u64,
        ok: bool,
        body: &str,
        writes: Vec<ContractWrite>,
    ) {
        self.now_ms = self.now_ms.max(now_ms);
        let Some(run) = self.runs.get_mut(&(idx, version)) else {
            return;
        };
        if run.done.is_some() {
            return;
        }
        let body = truncate_utf8(body, MAX_OUTCOME_LEN);
        run.done = Some((ok, body.clone()));
        let request = run.cert.request.clone();
        self.persist(Change::RunDone {
            idx,
            version,
            ok,
            body: body.clone(),
            writes: if ok { writes } else { Vec::new() },
        });
        let outcome = Outcome::new(&self.key, request.requester, request.id(), version, ok, &body);
        if request.requester == self.me {
            self.outbox.push_back(Output::Event(Event::Outcome(outcome.clone())));
        }
        self.send(Message::Outcome(outcome));
        // The provider votes its own verdict like every member.
        let key = verdict_id(&request.id());
        if self
            .escrows
            .get(&key)
            .is_some_and(|o| self.now_ms <= o.escrow.deadline_ms)
        {
            self.cast_verdict(key, ok);
        }
        self.prune_runs(idx);
    }

    /// The contracts this node hosts changed: announce the new list.
    pub fn set_services(&mut self, now_ms: u64, services: Vec<ServiceOffer>) {
        self.now_ms = self.now_ms.max(now_ms);
        self.my_services = services;
        self.announce();
    }

    /// Sends this node's current announce again, if it offers services: for
    /// a host that saw new readers of announces appear (every topic is best
    /// effort, so a node that joined missed the last one). Changes nothing.
    pub fn reannounce(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        if self.my_services.is_empty() {
            return;
        }
        if let Some(a) = self.announces.get(&self.me).cloned() {
            self.send(Message::Announce(a));
        }
    }

    fn announce(&mut self) {
        self.announce_seq += 1;
        self.persist(Change::AnnounceSeq(self.announce_seq));
        let a = Announce::new(&self.key, self.announce_seq, self.my_services.clone());
        self.announces.insert(self.me, a.clone());
        self.persist(Change::Announce(a.clone()));
        self.outbox.push_back(Output::Event(Event::ServicesChanged));
        self.send(Message::Announce(a));
    }

    /// Timers: retries, expiry, anti-entropy.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        let now = self.now_ms;
        if now >= self.next_tick_ms {
            self.next_tick_ms = now + self.params.retry_ms.min(self.params.consensus_period_ms);
            self.expire();
            self.tick_escrows();
            // Re-send own pending requests: voters answer with their votes.
            let due: Vec<Hash> = self
                .my_requests
                .iter()
                .filter(|(_, sent)| now >= **sent + self.params.retry_ms)
                .map(|(id, _)| *id)
                .collect();
            for id in due {
                if let Some(p) = self.requests.get(&id) {
                    let (r, idx) = (p.request.clone(), p.idx);
                    self.my_requests.insert(id, now);
                    self.send(Message::Request(r));
                    if let Some((_, vote)) = self.my_votes.get(&idx).filter(|(_, v)| v.request_id == id) {
                        let vote = *vote;
                        self.send(Message::Vote(vote));
                    }
                }
            }
            self.reconsider_parked();
            // Re-check decisions that had a quorum but lacked their request.
            let ready: Vec<Hash> = self
                .decisions
                .iter()
                .filter(|(_, d)| self.members.is_quorum(&self.params, d.weight))
                .map(|(k, _)| *k)
                .collect();
            for d in ready {
                self.try_commit(d);
            }
        }
        if now >= self.next_sync_ms {
            // Every member's digest reaches every member: spread them out as
            // the membership grows (10 000 members at 5 s would be 2 000
            // digests a second at each node).
            let scale = (self.members.len() as u64).div_ceil(64).max(1);
            self.next_sync_ms = now + self.params.sync_interval_ms * scale;
            if self.my_idx.is_some() {
                let digest = self.digest();
                let d = SyncDigest::new(&self.key, now, digest);
                self.send(Message::Digest(d));
                if !self.my_services.is_empty() && !self.throttled(T_ANNOUNCE, 0, 0, 30_000) {
                    let a = self.announces.get(&self.me).cloned();
                    if let Some(a) = a {
                        self.send(Message::Announce(a));
                    }
                }
            }
        }
    }

    fn expire(&mut self) {
        let now = self.now_ms;
        let ttl = self.params.request_ttl_ms;
        let expired: Vec<Hash> = self
            .requests
            .iter()
            // Our own request is never dropped: we re-send it until it commits.
            .filter(|(_, p)| p.request.requester != self.me && now > p.request.time_ms.saturating_add(ttl))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.drop_request(id);
            self.stats.expired_requests += 1;
        }
        let stale: Vec<Hash> = self
            .decisions
            .iter()
            .filter(|(_, d)| now > d.first_seen_ms.saturating_add(ttl) && !self.requests.contains_key(&d.request_id))
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            if let Some(d) = self.decisions.remove(&k) {
                self.forget_votes(&d);
                self.persist(Change::DropVotes(d.request_id));
            }
        }
        self.throttle.retain(|_, t| now < t.saturating_add(ttl));
        let every = self.params.retry_ms;
        self.verdict_answers
            .retain(|_, (since, _)| now < since.saturating_add(every));
        let decisions = &self.decisions;
        let voter_seen = &self.voter_seen;
        self.orphans.retain(|voter, ids| {
            ids.retain(|id| {
                voter_seen
                    .get(&(*voter, *id))
                    .is_some_and(|d| decisions.contains_key(d))
            });
            !ids.is_empty()
        });
    }

    fn drop_request(&mut self, id: Hash) {
        if let Some(p) = self.requests.remove(&id) {
            if let Some(n) = self.per_requester.get_mut(&p.idx) {
                *n -= 1;
                if *n == 0 {
                    self.per_requester.remove(&p.idx);
                }
            }
            self.persist(Change::DropRequest(id));
        }
        let decisions: Vec<Hash> = self
            .decisions
            .iter()
            .filter(|(_, d)| d.request_id == id)
            .map(|(k, _)| *k)
            .collect();
        for k in decisions {
            if let Some(d) = self.decisions.remove(&k) {
                self.forget_votes(&d);
                self.persist(Change::DropVotes(id));
            }
        }
    }

    fn forget_votes(&mut self, d: &Decision) {
        for voter in d.votes.keys() {
            self.voter_seen.remove(&(*voter, d.request_id));
        }
    }

    // ---------------------------------------------------------------- shares

    fn on_share(&mut self, share: Share) -> Result<(), Reject> {
        let Some(idx) = self.members.index_of(&share.sender) else {
            return self.reject("share", "unknown member");
        };
        if idx == self.my_idx.unwrap_or(u32::MAX) {
            self.stats.duplicates += 1;
            return Ok(());
        }
        let Some(w) = self.wallets[idx as usize].as_ref() else {
            return Ok(()); // a light node does not follow this wallet
        };
        let seen = w.shares_seen.max(w.shares_at_state);
        if share.seq <= seen || self.share_buffer.get(&idx).is_some_and(|b| b.contains_key(&share.seq)) {
            self.stats.duplicates += 1;
            return Ok(());
        }
        if share.seq > seen + self.params.max_buffered_shares_per_member {
            return self.reject("share", "too far ahead of the last share seen");
        }
        if !verify(&share.sender, &share.digest(), &share.sig) {
            return self.reject("share", "signature is invalid");
        }
        self.stats.shares_received += 1;
        self.share_buffer.entry(idx).or_default().insert(share.seq, share);
        self.drain_shares(idx);
        let w = self.wallets[idx as usize].as_ref().expect("checked above");
        let (seen, sender) = (w.shares_seen, w.id);
        if let Some(first_missing) = self.share_buffer.get(&idx).and_then(|b| b.keys().next().copied())
            && !self.throttled(T_SHARE_FETCH, idx, seen, self.params.retry_ms)
        {
            let f = ShareFetch::new(&self.key, sender, seen + 1, first_missing - 1);
            self.send(Message::ShareFetch(f));
        }
        Ok(())
    }

    /// Credits buffered shares that are now contiguous.
    fn drain_shares(&mut self, idx: u32) {
        let Some(buffer) = self.share_buffer.get_mut(&idx) else {
            return;
        };
        let Some(w) = self.wallets.get_mut(idx as usize).and_then(|w| w.as_mut()) else {
            return;
        };
        let before = w.shares_seen;
        w.shares_seen = w.shares_seen.max(w.shares_at_state);
        while let Some(entry) = buffer.first_entry() {
            if *entry.key() <= w.shares_seen {
                entry.remove();
            } else if *entry.key() == w.shares_seen + 1 {
                entry.remove();
                w.shares_seen += 1;
            } else {
                break;
            }
        }
        if buffer.is_empty() {
            self.share_buffer.remove(&idx);
        }
        if self.wallets[idx as usize]
            .as_ref()
            .is_some_and(|w| w.shares_seen != before)
        {
            self.digest_cache = None;
            self.save_tally(idx);
            self.reconsider_requester(idx);
        }
    }

    fn on_share_fetch(&mut self, f: ShareFetch) -> Result<(), Reject> {
        if f.to != self.me {
            return Ok(());
        }
        let Some(from) = self.members.index_of(&f.from) else {
            return self.reject("share-fetch", "unknown sender");
        };
        if f.first_seq > f.last_seq {
            return self.reject("share-fetch", "first share above the last");
        }
        // One bounded answer per asker and half retry period: a replayed
        // fetch cannot make this node re-sign and broadcast shares at will.
        let every = self.params.retry_ms / 2;
        if self.is_throttled(T_ANSWER_SHARES, from, 0, every) {
            return Ok(());
        }
        if !verify(&f.from, &f.digest(), &f.sig) {
            return self.reject("share-fetch", "signature is invalid");
        }
        self.take_slot(T_ANSWER_SHARES, from, 0);
        let last = f
            .last_seq
            .min(self.share_seq)
            .min(f.first_seq.saturating_add(MAX_SHARES_PER_FETCH - 1));
        for seq in f.first_seq.max(1)..=last {
            // Shares older than the ring (or lost in a crash) are signed
            // again: only their number earns coins, so a fresh share with
            // the same number is worth exactly the one that was lost.
            let front = self.own_shares.front().map_or(u64::MAX, |s| s.seq);
            let kept = seq.checked_sub(front).and_then(|i| self.own_shares.get(i as usize));
            let share = match kept.filter(|s| s.seq == seq) {
                Some(s) => s.clone(),
                None => Share::new(&self.key, seq, self.now_ms, "resent", 0.0),
            };
            self.send(Message::Share(share));
        }
        Ok(())
    }

    // -------------------------------------------------------------- requests

    /// Checks in order of cost: membership, the id and its proof of work
    /// (one hash), duplicates and commits already seen (lookups), the
    /// wallet's version and State, the time, the per-requester bound, and
    /// only then the signature.
    fn on_request(&mut self, request: Request) -> Result<(), Reject> {
        let Some(idx) = self.members.index_of(&request.requester) else {
            return self.reject("request", "unknown requester");
        };
        if self.members.index_of(&request.provider).is_none() {
            return self.reject("request", "provider is not a member");
        }
        let Some(id) = request.prefix().map(|p| crate::pow::hash_with_nonce(&p, request.nonce)) else {
            return self.reject("request", "fields exceed their limits");
        };
        if !crate::pow::meets(&id, self.params.difficulty) {
            return self.reject("request", "request proof of work does not meet the difficulty");
        }
        if self.committed.contains(&id) {
            self.stats.duplicates += 1;
            return Ok(());
        }
        if let Some(p) = self.requests.get_mut(&id) {
            // A re-sent request: answer with our vote again, it may have been lost.
            self.stats.duplicates += 1;
            if !p.parked && self.now_ms >= p.last_vote_resend_ms + self.params.retry_ms / 2 {
                p.last_vote_resend_ms = self.now_ms;
                if let Some((_, vote)) = self.my_votes.get(&idx).filter(|(_, v)| v.request_id == id) {
                    let vote = *vote;
                    self.send(Message::Vote(vote));
                }
            }
            return Ok(());
        }
        if request.version == u64::MAX {
            return self.reject("request", "version at its limit");
        }
        let Some(w) = self.wallets[idx as usize].as_ref() else {
            return Ok(()); // light node: not our wallet to check, we abstain
        };
        if request.version < w.version {
            return self.reject("request", "stale State: the wallet has moved on");
        }
        if request.version == w.version && request.state != w.state {
            return self.reject("request", "State does not match the wallet");
        }
        if request.time_ms > self.now_ms.saturating_add(self.params.max_clock_skew_ms) {
            return self.reject("request", "time is in the future");
        }
        // No "too old" check: a request that missed its quorum (a partition,
        // a crash) is re-sent by its requester until it commits, and voters
        // that expired it from memory must vote for it then. One request per
        // State makes that safe; a deadline would not be (see docs/protocol.md).
        if self.per_requester.get(&idx).copied().unwrap_or(0) >= MAX_PENDING_PER_REQUESTER {
            return self.reject("request", "too many pending requests from this requester");
        }
        if !self.verify_cached(&request.requester, &id, &request.sig) {
            return self.reject("request", "request signature is invalid");
        }
        if self.requests.len() >= self.params.max_pending_requests {
            self.expire();
            if self.requests.len() >= self.params.max_pending_requests {
                return self.reject("request", "pending requests are full");
            }
        }
        self.persist(Change::PutRequest(Box::new(request.clone())));
        self.insert_request(id, request, idx, self.now_ms);
        self.reconsider(id);
        self.try_commit_request(id);
        Ok(())
    }

    /// Votes may have arrived before their request: commit if they suffice.
    fn try_commit_request(&mut self, id: Hash) {
        let ready: Vec<Hash> = self
            .decisions
            .iter()
            .filter(|(_, d)| d.request_id == id)
            .map(|(k, _)| *k)
            .collect();
        for d in ready {
            self.try_commit(d);
        }
    }

    /// Every pending request and vote of wallet `idx` below `version` is void.
    fn drop_requests_before(&mut self, idx: u32, version: u64) {
        let void: Vec<Hash> = self
            .requests
            .iter()
            .filter(|(_, p)| p.idx == idx && p.request.version < version)
            .map(|(k, _)| *k)
            .collect();
        for r in void {
            self.drop_request(r);
        }
    }

    fn reconsider_parked(&mut self) {
        let parked: Vec<Hash> = self
            .requests
            .iter()
            .filter(|(_, p)| p.parked)
            .map(|(id, _)| *id)
            .collect();
        for id in parked {
            self.reconsider(id);
        }
    }

    fn reconsider_requester(&mut self, idx: u32) {
        let ids: Vec<Hash> = self
            .requests
            .iter()
            .filter(|(_, p)| p.idx == idx && p.parked)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.reconsider(id);
        }
    }

    /// Algorithm 1: vote on a pending request once it can be checked, or
    /// leave it parked and ask for what is missing.
    fn reconsider(&mut self, id: Hash) {
        let Some(p) = self.requests.get(&id) else {
            return;
        };
        if !p.parked {
            return;
        }
        let (request, idx) = (p.request.clone(), p.idx);
        let Some(w) = self.wallets[idx as usize].clone() else {
            return;
        };
        if request.version < w.version {
            self.drop_request(id);
            return;
        }
        if request.version > w.version {
            // We missed commits of this wallet: fetch them from the requester.
            if !self.throttled(T_CERT_FETCH, idx, w.version, self.params.retry_ms) {
                let f = CertFetch::new(&self.key, request.requester, idx, w.version + 1, request.version);
                self.send(Message::CertFetch(f));
            }
            return;
        }
        if request.state != w.state {
            self.drop_request(id);
            return;
        }
        if let Some((version, vote)) = self.my_votes.get(&idx)
            && *version == w.version
        {
            // One vote per State: a second request on it is a double spend.
            if vote.request_id != id {
                let _ = self.reject("request", "double spend: another request already holds this State");
                self.drop_request(id);
            } else if let Some(p) = self.requests.get_mut(&id) {
                // The request came back after we expired it: our vote may
                // have been forgotten by others too, so count and send it again.
                p.parked = false;
                let vote = *vote;
                self.send(Message::Vote(vote));
                let _ = self.accept_vote(vote, true);
            }
            return;
        }
        // No check against the provider's announcement: voters that saw
        // different announcements would reach different verdicts and could
        // freeze the requester's wallet. The price is held in escrow and the
        // provider refunds what it does not serve at the price and contract
        // the request pinned (docs/protocol.md, Pay for service rendered).
        if w.shares_seen.max(w.shares_at_state) < request.shares_upto {
            self.stats.parked_requests += 1;
            let seen = w.shares_seen.max(w.shares_at_state);
            if !self.throttled(T_SHARE_FETCH, idx, seen, self.params.retry_ms) {
                let f = ShareFetch::new(&self.key, request.requester, seen + 1, request.shares_upto);
                self.send(Message::ShareFetch(f));
            }
            return;
        }
        if w.received.max(w.received_at_state) < request.received_upto && !self.credits_vouched(id, &w, &request) {
            // Certificates crediting this wallet are missing here: catch up.
            self.stats.parked_requests += 1;
            if !self.throttled(T_HEADS_REQUEST, idx, 0, self.params.retry_ms) {
                let h = HeadsRequest::new(&self.key, request.requester, self.now_ms);
                self.send(Message::HeadsRequest(h));
            }
            return;
        }
        let Some(available) = w.available_for(&self.params, request.shares_upto, request.received_upto) else {
            let _ = self.reject("request", "claims shares or credits before the last commit");
            self.drop_request(id);
            return;
        };
        // The requester pays the price and the voter reward (only sensor
        // shares create money).
        let Some(cost) = self.params.cost(request.price).filter(|c| *c <= available) else {
            let _ = self.reject("request", "insufficient balance");
            self.drop_request(id);
            return;
        };
        let remaining = available - cost;
        if let Some(p) = self.requests.get_mut(&id) {
            p.parked = false;
        }
        if self.my_idx.is_none() {
            return;
        }
        let Some(vote) = Vote::build(&self.key, id, remaining, self.params.vote_difficulty) else {
            return;
        };
        self.my_votes.insert(idx, (w.version, vote));
        self.persist(Change::MyVote {
            requester_idx: idx,
            version: w.version,
            vote,
        });
        self.stats.votes_sent += 1;
        self.send(Message::Vote(vote));
        let _ = self.accept_vote(vote, true);
    }

    /// True when members holding more than a third of the weight voted the
    /// very `remaining` this node computes for `request` from its own copy
    /// of the wallet. At least one of them is honest, and an honest member
    /// votes only once it holds the credits the request claims, so they
    /// exist: this node may vote without holding them itself.
    ///
    /// Without it, a member back from an outage longer than peers keep
    /// certificates cannot check the credits of wallets paid by the commits
    /// it missed until its vouched catch-up (`on_heads`), and that needs a
    /// moment when no purchase is in flight anywhere. While others keep
    /// buying that moment may never come, and where the quorum needs this
    /// member (a light member not keeping the wallet, another one down) the
    /// wallet could not buy at all (simulator, `pruned-catch-up` seed 601
    /// with certificates charged only the work they cause).
    ///
    /// It changes nothing an honest node votes: `remaining` follows from
    /// the request and the wallet at its State alone, the same on every
    /// honest node, and the vote is still this node's one vote on the State.
    fn credits_vouched(&mut self, id: Hash, w: &Wallet, request: &Request) -> bool {
        let Some(available) = w.available_for(&self.params, request.shares_upto, request.received_upto) else {
            return false;
        };
        let Some(remaining) = self
            .params
            .cost(request.price)
            .and_then(|cost| available.checked_sub(cost))
        else {
            return false;
        };
        let Some(d) = self.decisions.get(&decision_id(&id, remaining)) else {
            return false;
        };
        // More than a third of the configured weight: at least one honest.
        if 3 * u128::from(d.weight) <= u128::from(self.members.total_weight()) {
            return false;
        }
        self.stats.credits_vouched += 1;
        true
    }

    // ----------------------------------------------------------------- votes

    /// Checks in order of cost: membership, a commit already seen here
    /// (late and replayed votes), duplicates, staleness, the voter's orphan
    /// slots, and only then the proof of work and signature. A vote that
    /// differs from one already counted for its voter is checked before the
    /// voter is blamed: a forgery never makes an honest member an equivocator.
    fn on_vote(&mut self, vote: Vote) -> Result<(), Reject> {
        let Some(voter_idx) = self.members.index_of(&vote.voter) else {
            return self.reject("vote", "unknown voter");
        };
        if self.escrows.contains_key(&vote.request_id) || self.closed_verdicts.contains_key(&vote.request_id) {
            return self.on_verdict_vote(voter_idx, vote);
        }
        if self.committed.contains(&vote.request_id) {
            self.stats.duplicates += 1;
            return Ok(());
        }
        if let Some(seen) = self.voter_seen.get(&(voter_idx, vote.request_id)) {
            if *seen == vote.decision() {
                self.stats.duplicates += 1;
                return Ok(());
            }
            if let Err(reason) = self.check_vote(&vote) {
                return self.reject("vote", reason);
            }
            return self.reject("vote", "equivocation: the voter already voted otherwise");
        }
        let held = match self.requests.get(&vote.request_id) {
            Some(p) => {
                if self.wallets[p.idx as usize]
                    .as_ref()
                    .is_some_and(|w| p.request.version < w.version)
                {
                    self.stats.duplicates += 1;
                    return Ok(());
                }
                true
            }
            None => false,
        };
        if let Err(reason) = self.check_vote(&vote) {
            return self.reject("vote", reason);
        }
        self.stats.votes_received += 1;
        if !held {
            self.park_orphan(voter_idx, vote.request_id);
        }
        self.accept_vote(vote, held)?;
        // Votes can vouch for credits this node is missing.
        if held && self.requests.get(&vote.request_id).is_some_and(|p| p.parked) {
            self.reconsider(vote.request_id);
        }
        Ok(())
    }

    /// A vote for a request this node does not hold takes one of its
    /// voter's `MAX_ORPHAN_VOTES` slots; the oldest is given back first.
    fn park_orphan(&mut self, voter_idx: u32, request_id: Hash) {
        let slots = self.orphans.entry(voter_idx).or_default();
        slots.push_back(request_id);
        if slots.len() <= MAX_ORPHAN_VOTES {
            return;
        }
        let Some(old) = slots.pop_front() else { return };
        if self.requests.contains_key(&old) {
            return; // its request arrived: the vote counts with it
        }
        let Some(decision) = self.voter_seen.remove(&(voter_idx, old)) else {
            return;
        };
        let weight = self.members.weight(voter_idx);
        if let Some(d) = self.decisions.get_mut(&decision) {
            if d.votes.remove(&voter_idx).is_some() {
                d.weight -= weight;
            }
            if d.votes.is_empty() {
                self.decisions.remove(&decision);
                self.persist(Change::DropVotes(old));
            }
        }
    }

    /// Adds a checked vote to its group (Algorithm 2, as votes arrive).
    /// `durable`: worth a (lazy) write; votes for requests this node does
    /// not hold are not, their voters re-send them with the request.
    fn accept_vote(&mut self, vote: Vote, durable: bool) -> Result<(), Reject> {
        let decision = vote.decision();
        if !self.decisions.contains_key(&decision) && self.decisions.len() >= self.params.max_pending_decisions {
            self.expire();
            if self.decisions.len() >= self.params.max_pending_decisions {
                return self.reject("vote", "pending votes are full");
            }
        }
        if durable {
            self.persist(Change::PutVote(vote));
        }
        if self.add_vote(vote) {
            self.try_commit(decision);
        }
        Ok(())
    }

    /// Returns true when the vote was new.
    fn add_vote(&mut self, vote: Vote) -> bool {
        let Some(voter_idx) = self.members.index_of(&vote.voter) else {
            return false;
        };
        let decision = vote.decision();
        if self.voter_seen.insert((voter_idx, vote.request_id), decision).is_some() {
            return false;
        }
        let weight = self.members.weight(voter_idx);
        let now = self.now_ms;
        let d = self.decisions.entry(decision).or_insert_with(|| Decision {
            request_id: vote.request_id,
            remaining: vote.remaining,
            first_seen_ms: now,
            ..Decision::default()
        });
        d.votes.insert(
            voter_idx,
            CertVote {
                voter_idx,
                nonce: vote.nonce,
                sig: vote.sig,
            },
        );
        d.weight += weight;
        true
    }

    fn try_commit(&mut self, decision: Hash) {
        let Some(d) = self.decisions.get(&decision) else {
            return;
        };
        if !self.members.is_quorum(&self.params, d.weight) {
            return;
        }
        let Some(p) = self.requests.get(&d.request_id) else {
            return; // the request will come by retry or inside a certificate
        };
        let (id, request, idx, remaining) = (d.request_id, p.request.clone(), p.idx, d.remaining);
        let Some(w) = self.wallets[idx as usize].as_ref() else {
            return;
        };
        if request.version > w.version {
            return; // behind: the catch-up will bring the missing commits
        }
        if request.version < w.version || request.state != w.state {
            self.drop_request(d.request_id);
            return;
        }
        let votes: Vec<CertVote> = d.votes.values().copied().collect();
        self.commit(idx, id, &request, remaining, false);
        let cert = self.quorum_certificate(request, remaining, votes);
        self.settle(idx, id, &cert.request);
        self.keep_cert(idx, cert.new_version(), &cert);
        if cert.request.provider == self.me {
            self.owe_run(idx, cert);
        }
    }

    /// The lowest-indexed votes that make a quorum: the same choice on every
    /// node that holds them, unsigned (a proof) until the provider signs.
    fn quorum_certificate(&self, request: Request, remaining: u64, votes: Vec<CertVote>) -> Certificate {
        let mut chosen = Vec::new();
        let mut weight = 0;
        for v in votes {
            chosen.push(v);
            weight += self.members.weight(v.voter_idx);
            if self.members.is_quorum(&self.params, weight) {
                break;
            }
        }
        Certificate {
            request,
            remaining,
            votes: chosen,
            provider_sig: Default::default(),
        }
    }

    /// Moves the requester's wallet to its next version.
    fn commit(&mut self, idx: u32, id: Hash, request: &Request, remaining: u64, from_certificate: bool) {
        let decision = decision_id(&id, remaining);
        let w = self.wallet_mut(idx).expect("caller checked the wallet is kept");
        assert_eq!(w.version, request.version, "commit applies to the current version only");
        w.version += 1;
        w.state = next_state(&request.state, &decision);
        w.balance = remaining;
        w.shares_at_state = request.shares_upto;
        w.received_at_state = request.received_upto;
        w.shares_seen = w.shares_seen.max(w.shares_at_state);
        let version = w.version;
        self.save_wallet(idx);
        self.drain_shares(idx);
        self.stats.commits += 1;
        self.note_committed(id, request);
        // Every pending request and vote on the old State is void now.
        self.drop_requests_before(idx, version);
        self.outbox.push_back(Output::Event(Event::Committed {
            requester: request.requester,
            version,
            request_id: id,
            service: request.service.clone(),
            provider: request.provider,
            price: request.price,
            remaining,
            latency_ms: self.now_ms.saturating_sub(request.time_ms),
            from_certificate,
        }));
        self.reconsider_requester(idx);
    }

    /// This node is the purchase's provider and has not run it: sign the
    /// certificate (so peers that missed the quorum learn of it), owe the
    /// run durably, and ask for it.
    fn owe_run(&mut self, idx: u32, mut cert: Certificate) {
        debug_assert_eq!(cert.request.provider, self.me);
        let version = cert.new_version();
        if self.run_known(idx, version) {
            return;
        }
        cert.provider_sig = self.key.sign(&cert.digest());
        self.keep_cert(idx, version, &cert);
        self.runs.insert(
            (idx, version),
            RunRecord {
                cert: cert.clone(),
                done: None,
            },
        );
        self.persist(Change::RunPending {
            idx,
            version,
            cert: Box::new(cert.clone()),
        });
        self.send(Message::Certificate(Box::new(cert.clone())));
        self.ask_run(cert);
    }

    /// Asks the adapter to run an owed contract, unless half the outcome
    /// window has gone: members vote for the refund when it ends, so a run
    /// that late would be paid for by nobody; it is refunded instead.
    ///
    /// A purchase below the price this node lists for the service (or of a
    /// service it does not offer) is refunded too: voters do not check
    /// prices (they could disagree), the provider does.
    fn ask_run(&mut self, cert: Certificate) {
        let half = self.params.outcome_timeout_ms / 2;
        let r = &cert.request;
        let listed = self.my_services.iter().find(|s| s.name == r.service);
        let refused = if self.now_ms > r.time_ms.saturating_add(half) {
            Some("not run: the purchase reached its provider too late; its price is refunded".to_string())
        } else if self.my_services.is_empty() {
            // Not yet known after a restart: the adapter's runtime answers
            // "not loaded" for a service it lacks, which refunds too.
            None
        } else {
            match listed {
                None => Some(format!(
                    "not run: this provider offers no service {:?}; its price is refunded",
                    r.service
                )),
                Some(l) if r.price < l.price => Some(format!(
                    "not run: paid {} units, the listed price is {}; its price is refunded",
                    r.price, l.price
                )),
                Some(l) if r.contract_hash != l.contract_hash => Some(format!(
                    "not run: the contract of {:?} changed since announcement {} was bought; its price is refunded",
                    r.service, r.announce_seq
                )),
                Some(_) => None,
            }
        };
        if let Some(reason) = refused {
            if let Some(idx) = self.members.index_of(&r.requester) {
                let version = cert.new_version();
                self.contract_done(self.now_ms, idx, version, false, &reason, Vec::new());
            }
            return;
        }
        self.outbox.push_back(Output::Run(Box::new(cert)));
    }

    /// Applies a commit's reward and escrow, once per (wallet, version) on
    /// every node, light nodes included: the member drawn from the request
    /// id gets the voter reward, and the price is held until its verdict
    /// ([`Core::close_escrow`]). What moves is fixed by the request alone
    /// (the requester paid both when its wallet committed), so every honest
    /// node credits the same amounts to the same members whichever valid
    /// certificate or proof it saw first, and no certificate can credit
    /// anything twice or create money.
    fn settle(&mut self, idx: u32, id: Hash, request: &Request) {
        let version = request.version + 1;
        let mark = match self.wallets[idx as usize].as_deref_mut() {
            Some(w) => w.mark_settled(version),
            None => self.marks.entry(idx).or_default().mark(version),
        };
        match mark {
            Mark::Already => return,
            Mark::Full => {
                let _ = self.reject("certificate", "settlement backlog of this wallet is full");
                return;
            }
            Mark::New => {}
        }
        if self.wallets[idx as usize].is_some() {
            self.save_wallet(idx);
        } else if let Some(m) = self.marks.get(&idx) {
            let (settled, above) = (m.settled, m.above.clone());
            self.persist(Change::Marks { idx, settled, above });
        }
        let rewarded = self.members.reward_recipient(&id);
        self.credit(rewarded, self.params.reward_units);
        if let Some(provider_idx) = self.members.index_of(&request.provider)
            && request.price > 0
        {
            let escrow = Escrow {
                purchase: id,
                requester_idx: idx,
                version,
                provider_idx,
                price: request.price,
                deadline_ms: request.time_ms.saturating_add(self.params.outcome_timeout_ms),
                my_vote: None,
                verdict: None,
            };
            self.open_escrow(escrow);
        }
        self.stats.certificates_applied += 1;
    }

    fn credit(&mut self, to: u32, amount: u64) {
        if amount == 0 {
            return;
        }
        if let Some(w) = self.wallet_mut(to) {
            w.received = w.received.saturating_add(amount);
            self.save_wallet(to);
            self.reconsider_requester(to);
        }
    }

    // -------------------------------------------------------------- verdicts

    /// Holds a committed purchase's price until its verdict. Verdict votes
    /// that overtook the commit were parked as orphan votes: they count now.
    fn open_escrow(&mut self, escrow: Escrow) {
        let key = verdict_id(&escrow.purchase);
        if self.escrows.contains_key(&key) || self.closed_verdicts.contains_key(&key) {
            return;
        }
        self.persist(Change::PutEscrow(Box::new(escrow.clone())));
        self.insert_escrow(
            key,
            OpenEscrow {
                escrow,
                votes: BTreeMap::new(),
                pay_weight: 0,
                refund_weight: 0,
                last_resend_ms: self.now_ms,
                queries: 0,
                next_query_ms: 0,
            },
        );
        let mut parked = Vec::new();
        for remaining in [0, 1] {
            if let Some(d) = self.decisions.remove(&decision_id(&key, remaining)) {
                self.forget_votes(&d);
                for (voter_idx, v) in d.votes {
                    if let Some(voter) = self.members.id(voter_idx) {
                        parked.push(Vote {
                            voter,
                            request_id: key,
                            remaining,
                            nonce: v.nonce,
                            sig: v.sig,
                        });
                    }
                }
            }
        }
        for vote in parked {
            // Checked (work and signature) when they were parked.
            self.tally_verdict(key, vote);
        }
    }

    /// A verdict vote for an open escrow or a settled one. Cheap checks
    /// first: a settled verdict costs a lookup (and, at most once per
    /// `retry_ms`, this node's own vote back, so a peer that missed the
    /// quorum settles too); a voter's second vote is a duplicate or, once
    /// its signature holds, an equivocation.
    fn on_verdict_vote(&mut self, voter_idx: u32, vote: Vote) -> Result<(), Reject> {
        if vote.remaining > VERDICT_QUORUM_ASK {
            return self.reject("vote", "a verdict is 0 (refund), 1 (pay), 2 (query) or 3 (quorum ask)");
        }
        let key = vote.request_id;
        let closed = self.closed_verdicts.get(&key).copied();
        let open = self
            .escrows
            .get(&key)
            .map(|o| Closed::of(&o.escrow))
            .filter(|_| vote.remaining >= VERDICT_QUERY);
        if let Some(here) = closed.or(open) {
            // Settled here, or a peer asks where this node stands: answer
            // with this node's vote, at most once per `retry_ms`; and, at
            // the provider, the outcome to a requester that asks for it.
            self.stats.duplicates += 1;
            let tag = u64::from_le_bytes(key[..8].try_into().expect("8 bytes"));
            let every = self.params.retry_ms;
            let outcome = self.run_outcome(here.requester_idx, here.version);
            let asks_outcome = vote.remaining >= VERDICT_QUERY && voter_idx == here.requester_idx && outcome.is_some();
            // To a quorum ask about a verdict closed here, the votes that
            // closed it (`remember_quorum`), this node's own among them. Only
            // to that: plain queries (a requester asking for its outcome, a
            // member that learned of a commit late) are frequent, and a
            // quorum in answer to each cost the simulator 2.5 times its work.
            let quorum = match (closed.is_some(), vote.remaining == VERDICT_QUORUM_ASK) {
                (true, true) => self.quorum_votes.get(&key).cloned().unwrap_or_default(),
                _ => Vec::new(),
            };
            let echo = here.my_vote.is_some() && !self.is_throttled(T_VERDICT_ECHO, 0, tag, every);
            // Its own slot: a re-sent vote must not use up the answer to
            // the quorum ask that follows it.
            let relay = !quorum.is_empty() && !self.is_throttled(T_QUORUM_RELAY, 0, tag, every);
            let resend = asks_outcome && !self.is_throttled(T_OUTCOME_RESEND, 0, tag, every);
            let now = self.now_ms;
            let (since, used) = self.verdict_answers.get(&voter_idx).copied().unwrap_or((now, 0));
            let (since, used) = if now >= since.saturating_add(every) {
                (now, 0)
            } else {
                (since, used)
            };
            let budget = used < MAX_VERDICT_ANSWERS_PER_MEMBER;
            if (echo || resend || relay) && budget && self.check_vote(&vote).is_ok() {
                self.verdict_answers.insert(voter_idx, (since, used + 1));
                if relay {
                    self.take_slot(T_QUORUM_RELAY, 0, tag);
                    for v in &quorum {
                        self.send(Message::Vote(*v));
                    }
                }
                if let (true, Some(mine)) = (echo, here.my_vote.filter(|m| !relay || !quorum.contains(m))) {
                    self.take_slot(T_VERDICT_ECHO, 0, tag);
                    self.send(Message::Vote(mine));
                }
                if resend && let Some(o) = outcome {
                    self.take_slot(T_OUTCOME_RESEND, 0, tag);
                    self.send(Message::Outcome(o));
                }
            }
            return Ok(());
        }
        let Some(open) = self.escrows.get(&key) else {
            return Ok(());
        };
        if vote.remaining >= VERDICT_QUERY {
            return Ok(()); // nothing to answer with yet
        }
        let pay = vote.remaining == 1;
        if open.votes.contains_key(&(voter_idx, pay)) {
            self.stats.duplicates += 1;
            return Ok(());
        }
        let equivocates = open.votes.contains_key(&(voter_idx, !pay));
        if let Err(reason) = self.check_vote(&vote) {
            return self.reject("vote", reason);
        }
        self.stats.votes_received += 1;
        self.tally_verdict(key, vote);
        if equivocates {
            // Counted on both sides (`OpenEscrow::votes`), and blamed.
            return self.reject("vote", "equivocation: the voter already voted the other verdict");
        }
        Ok(())
    }

    /// Counts a checked verdict vote; a quorum settles the escrow.
    fn tally_verdict(&mut self, key: Hash, vote: Vote) {
        let Some(voter_idx) = self.members.index_of(&vote.voter) else {
            return;
        };
        let weight = self.members.weight(voter_idx);
        let Some(open) = self.escrows.get_mut(&key) else {
            return;
        };
        let pay = vote.remaining == 1;
        if open.votes.insert((voter_idx, pay), vote).is_some() {
            return;
        }
        let total = if pay {
            open.pay_weight += weight;
            open.pay_weight
        } else {
            open.refund_weight += weight;
            open.refund_weight
        };
        if self.members.is_quorum(&self.params, total) {
            self.close_escrow(key, pay);
        }
    }

    /// This node's verdict on a purchase, once: durable before it is sent.
    fn cast_verdict(&mut self, key: Hash, pay: bool) {
        if self.my_idx.is_none() {
            return;
        }
        let Some(open) = self.escrows.get(&key) else {
            return;
        };
        if open.escrow.my_vote.is_some() {
            return;
        }
        let Some(vote) = Vote::build(&self.key, key, u64::from(pay), self.params.vote_difficulty) else {
            return;
        };
        let Some(open) = self.escrows.get_mut(&key) else {
            return;
        };
        open.escrow.my_vote = Some(vote);
        open.last_resend_ms = self.now_ms;
        let escrow = open.escrow.clone();
        self.persist(Change::PutEscrow(Box::new(escrow)));
        self.stats.verdict_votes_sent += 1;
        self.send(Message::Vote(vote));
        self.tally_verdict(key, vote);
    }

    /// A quorum voted the verdict: the price goes to the provider (`pay`)
    /// or back to the requester, once.
    fn close_escrow(&mut self, key: Hash, pay: bool) {
        let Some(open) = self.remove_escrow(&key) else {
            return;
        };
        let mut e = open.escrow;
        e.verdict = Some(pay);
        self.persist(Change::PutEscrow(Box::new(e.clone())));
        let quorum: Vec<Vote> = open
            .votes
            .into_iter()
            .filter(|((_, side), _)| *side == pay)
            .map(|(_, vote)| vote)
            .collect();
        self.remember_quorum(key, quorum);
        self.credit(if pay { e.provider_idx } else { e.requester_idx }, e.price);
        if pay {
            self.stats.verdicts_paid += 1;
        } else {
            self.stats.verdicts_refunded += 1;
        }
        self.remember_closed(key, Closed::of(&e));
        if Some(e.requester_idx) == self.my_idx
            && !self.my_purchases.get(&e.purchase).is_some_and(|(_, got)| *got)
            && self.awaiting_outcome.len() < MAX_REMEMBERED_PURCHASES
        {
            self.awaiting_outcome.insert(key, 0);
        }
        let (Some(requester), Some(provider)) = (self.members.id(e.requester_idx), self.members.id(e.provider_idx))
        else {
            return;
        };
        self.outbox.push_back(Output::Event(Event::Settled {
            purchase: e.purchase,
            requester,
            provider,
            price: e.price,
            paid: pay,
        }));
    }

    /// Timer work on open escrows: vote for the refund past the deadline
    /// with no outcome seen; re-send this node's vote (and, at the
    /// provider, the outcome) every `retry_ms`, a bounded number per tick.
    fn tick_escrows(&mut self) {
        let now = self.now_ms;
        let expired: Vec<Hash> = self
            .escrows
            .iter()
            .filter(|(_, o)| o.escrow.my_vote.is_none() && now > o.escrow.deadline_ms)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            self.cast_verdict(key, false);
        }
        let mut due: Vec<(u64, Hash)> = self
            .escrows
            .iter()
            .filter(|(_, o)| now >= o.last_resend_ms.saturating_add(self.params.retry_ms))
            .map(|(k, o)| (o.last_resend_ms, *k))
            .collect();
        due.sort_unstable();
        // Own purchases settled without their outcome here: ask for it.
        let mut asks: Vec<Hash> = self.awaiting_outcome.keys().copied().collect();
        asks.sort_unstable();
        for key in asks.into_iter().take(MAX_VERDICT_RESENDS_PER_TICK) {
            let purchase = self.closed_verdicts.get(&key).map(|c| c.purchase);
            let got = purchase.is_none_or(|p| self.my_purchases.get(&p).is_some_and(|(_, got)| *got));
            let n = self.awaiting_outcome.get(&key).copied().unwrap_or(OUTCOME_ASKS);
            if got || n >= OUTCOME_ASKS {
                self.awaiting_outcome.remove(&key);
                continue;
            }
            self.awaiting_outcome.insert(key, n + 1);
            if let Some(q) = Vote::build(&self.key, key, VERDICT_QUERY, self.params.vote_difficulty) {
                self.send(Message::Vote(q));
            }
        }
        for (_, key) in due.into_iter().take(MAX_VERDICT_RESENDS_PER_TICK) {
            let Some(open) = self.escrows.get_mut(&key) else {
                continue;
            };
            open.last_resend_ms = now;
            // Past the outcome window and still open here: the verdict may
            // have closed elsewhere with votes that never reached this
            // node; a query gets the quorum from those that closed. Queries
            // back off (1, 2, 4 ... then every 64 × retry_ms): an escrow
            // that closes nowhere (a split verdict) stays cheap.
            let query =
                now >= open.escrow.deadline_ms.saturating_add(self.params.retry_ms) && now >= open.next_query_ms;
            if query {
                open.next_query_ms = now.saturating_add(self.params.retry_ms.saturating_mul(1 << open.queries.min(6)));
                open.queries = open.queries.saturating_add(1);
            }
            let (vote, e) = (open.escrow.my_vote, open.escrow.clone());
            match vote {
                Some(vote) if query => {
                    self.send(Message::Vote(vote));
                    if let Some(q) = Vote::build(&self.key, key, VERDICT_QUORUM_ASK, self.params.vote_difficulty) {
                        self.send(Message::Vote(q));
                    }
                }
                Some(vote) => self.send(Message::Vote(vote)),
                None if self.my_idx.is_some() => {
                    if let Some(q) = Vote::build(&self.key, key, VERDICT_QUERY, self.params.vote_difficulty) {
                        self.send(Message::Vote(q));
                    }
                }
                None => {}
            }
            if self.my_idx == Some(e.provider_idx)
                && let Some(o) = self.run_outcome(e.requester_idx, e.version)
            {
                self.send(Message::Outcome(o));
            }
        }
    }

    /// The signed outcome of a run this node (the provider) finished.
    fn run_outcome(&self, idx: u32, version: u64) -> Option<Outcome> {
        let r = self.runs.get(&(idx, version))?;
        let (ok, body) = r.done.as_ref()?;
        let request = &r.cert.request;
        Some(Outcome::new(
            &self.key,
            request.requester,
            request.id(),
            version,
            *ok,
            body,
        ))
    }

    /// Remembers a settled escrow (bounded; the oldest is forgotten, in
    /// the store too) to answer peers that ask about it later.
    fn remember_closed(&mut self, key: Hash, closed: Closed) {
        if self.closed_verdicts.insert(key, closed).is_none() {
            self.closed_order.push_back(key);
        }
        while self.closed_order.len() > MAX_REMEMBERED_COMMITS {
            if let Some(old) = self.closed_order.pop_front() {
                self.closed_verdicts.remove(&old);
                self.persist(Change::DropEscrow(old));
            }
        }
    }

    /// Keeps the votes that closed an escrow here, in memory and bounded
    /// (`MAX_QUORUM_VOTES_KEPT` votes in all, the oldest verdicts forgotten
    /// first), to answer a member that still holds that escrow and asks
    /// (a query past the deadline). Each voter answers a query with its own
    /// vote only; where some of the quorum's voters are down, or Byzantine
    /// voters sent their vote to some members and not others, the members
    /// left behind could never reach the quorum that closed it elsewhere,
    /// and their tallies would differ from the others' for ever (simulator,
    /// `everything` seed 44).
    fn remember_quorum(&mut self, key: Hash, votes: Vec<Vote>) {
        self.quorum_votes_kept += votes.len();
        if self.quorum_votes.insert(key, votes).is_none() {
            self.quorum_order.push_back(key);
        }
        while self.quorum_votes_kept > MAX_QUORUM_VOTES_KEPT {
            let Some(old) = self.quorum_order.pop_front() else {
                break;
            };
            if let Some(v) = self.quorum_votes.remove(&old) {
                self.quorum_votes_kept -= v.len();
            }
        }
    }

    /// Open escrows: (purchase, requester, provider, price, deadline).
    pub fn escrows(&self) -> impl Iterator<Item = &Escrow> {
        self.escrows.values().map(|o| &o.escrow)
    }

    /// Keeps a certificate for peers that catch up: the newest
    /// `certs_kept_per_wallet` of each wallet, and every one whose price is
    /// still in escrow here (a node that missed the commit must be able to
    /// learn of it and vote its verdict, or the escrow could never reach a
    /// quorum; escrows close by the outcome window, so this stays bounded).
    fn insert_escrow(&mut self, key: Hash, open: OpenEscrow) {
        let pair = (open.escrow.requester_idx, open.escrow.version);
        *self.escrow_versions.entry(pair).or_default() += 1;
        if let Some(old) = self.escrows.insert(key, open) {
            // Never today (`open_escrow` checks first); kept exact anyway.
            self.forget_escrow_version((old.escrow.requester_idx, old.escrow.version));
        }
    }

    fn remove_escrow(&mut self, key: &Hash) -> Option<OpenEscrow> {
        let open = self.escrows.remove(key)?;
        self.forget_escrow_version((open.escrow.requester_idx, open.escrow.version));
        Some(open)
    }

    fn forget_escrow_version(&mut self, pair: (u32, u64)) {
        if let std::collections::btree_map::Entry::Occupied(mut e) = self.escrow_versions.entry(pair) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }

    fn keep_cert(&mut self, idx: u32, version: u64, cert: &Certificate) {
        let held: HashSet<u64> = self
            .escrow_versions
            .range((idx, 0)..=(idx, u64::MAX))
            .map(|(&(_, v), _)| v)
            .collect();
        debug_assert_eq!(
            held,
            self.escrows
                .values()
                .filter(|o| o.escrow.requester_idx == idx)
                .map(|o| o.escrow.version)
                .collect::<HashSet<u64>>(),
            "escrow_versions out of step with the open escrows"
        );
        let keep = self.params.certs_kept_per_wallet;
        let kept = self.certs.entry(idx).or_default();
        if kept.get(&version).is_some_and(|c| c.is_signed() || !cert.is_signed()) {
            return;
        }
        kept.insert(version, cert.clone());
        let mut excess = kept.len().saturating_sub(keep);
        let mut drops = Vec::new();
        for v in kept.keys() {
            if excess == 0 {
                break;
            }
            if !held.contains(v) {
                drops.push(*v);
                excess -= 1;
            }
        }
        for v in &drops {
            kept.remove(v);
        }
        if drops.contains(&version) {
            return; // older than everything kept
        }
        self.persist(Change::PutCert {
            idx,
            version,
            cert: Box::new(cert.clone()),
        });
        for v in drops {
            self.persist(Change::DropCert { idx, version: v });
        }
    }

    /// Forgets the oldest finished runs of a wallet beyond
    /// `certs_kept_per_wallet`, and raises the durable floor under which no
    /// run that is not still owed ever runs again: a replayed certificate
    /// or proof of a pruned purchase is a duplicate, never a second run.
    fn prune_runs(&mut self, idx: u32) {
        let keep = self.params.certs_kept_per_wallet;
        let done: Vec<u64> = self
            .runs
            .range((idx, 0)..=(idx, u64::MAX))
            .filter(|(_, r)| r.done.is_some())
            .map(|((_, v), _)| *v)
            .collect();
        if done.len() <= keep {
            return;
        }
        let upto = done[done.len() - keep - 1];
        self.runs
            .retain(|(i, v), run| !(*i == idx && *v <= upto && run.done.is_some()));
        let floor = self.run_floor.entry(idx).or_default();
        *floor = (*floor).max(upto);
        self.persist(Change::RunsPruned { idx, upto });
    }

    /// True when this node, as provider, has run or owes the run of
    /// `(idx, version)`, or pruned it: it must never be run (again).
    fn run_known(&self, idx: u32, version: u64) -> bool {
        self.runs.contains_key(&(idx, version)) || self.run_floor.get(&idx).is_some_and(|f| version <= *f)
    }

    // ---------------------------------------------------------- certificates

    /// Checks everything a certificate claims, trusting no sender: the
    /// request's work and signature, then each vote's work and signature
    /// and that they make a quorum. The provider's signature carries no
    /// authority (settlement is fixed by the request) and is not checked.
    fn check_certificate(&mut self, cert: &Certificate) -> Result<(u32, Hash), &'static str> {
        let idx = self
            .members
            .index_of(&cert.request.requester)
            .ok_or("unknown requester")?;
        if self.members.index_of(&cert.request.provider).is_none() {
            return Err("provider is not a member");
        }
        // Cheap first: the order, membership and weight of the votes.
        let mut weight = 0u64;
        let mut last: Option<u32> = None;
        for v in &cert.votes {
            if last.is_some_and(|l| v.voter_idx <= l) {
                return Err("votes are not sorted or repeat a voter");
            }
            last = Some(v.voter_idx);
            if self.members.id(v.voter_idx).is_none() {
                return Err("vote from an unknown member index");
            }
            weight += self.members.weight(v.voter_idx);
        }
        if !self.members.is_quorum(&self.params, weight) {
            return Err("votes do not make a quorum");
        }
        let id = cert.request.check_pow(self.params.difficulty)?;
        if !self.verify_cached(&cert.request.requester, &id, &cert.request.sig) {
            return Err("request signature is invalid");
        }
        for v in &cert.votes {
            let vote = Vote {
                voter: self
                    .members
                    .id(v.voter_idx)
                    .ok_or("vote from an unknown member index")?,
                request_id: id,
                remaining: cert.remaining,
                nonce: v.nonce,
                sig: v.sig,
            };
            self.check_vote(&vote)?;
        }
        Ok((idx, id))
    }

    fn on_certificate(&mut self, cert: Certificate) -> Result<(), Reject> {
        let Some(idx) = self.members.index_of(&cert.request.requester) else {
            return self.reject("certificate", "unknown requester");
        };
        if cert.request.version == u64::MAX {
            return self.reject("certificate", "version at its limit");
        }
        let version = cert.new_version();
        let settled = match self.wallets[idx as usize].as_ref() {
            Some(w) => version <= w.version && w.is_settled(version),
            None => self.marks.get(&idx).is_some_and(|m| m.is_settled(version)),
        };
        // A provider that missed the quorum learns of it from a proof; one
        // that ran (or pruned) it never runs it again.
        let i_owe_it = cert.request.provider == self.me && !self.run_known(idx, version);
        if settled && !i_owe_it {
            self.stats.duplicates += 1;
            return Ok(());
        }
        let id = match self.check_certificate(&cert) {
            Ok((_, id)) => id,
            Err(reason) => return self.reject("certificate", reason),
        };
        if let Some(w) = self.wallets[idx as usize].clone() {
            if cert.request.version == w.version {
                if cert.request.state != w.state {
                    return self.reject("certificate", "conflicts with this node's State");
                }
                self.commit(idx, id, &cert.request, cert.remaining, true);
            } else if cert.request.version > w.version {
                // Adopt the wallet the certificate proves (hole 6); the
                // versions skipped stay unsettled until their certificates
                // arrive (the catch-up asks for them).
                let decision = decision_id(&id, cert.remaining);
                let w = self.wallet_mut(idx).expect("kept");
                w.version = version;
                w.state = next_state(&cert.request.state, &decision);
                w.balance = cert.remaining;
                w.shares_at_state = cert.request.shares_upto;
                w.received_at_state = cert.request.received_upto;
                w.shares_seen = w.shares_seen.max(w.shares_at_state);
                self.stats.certificates_adopted += 1;
                self.save_wallet(idx);
                self.drain_shares(idx);
                self.note_committed(id, &cert.request);
                self.drop_requests_before(idx, version);
            }
        }
        self.settle(idx, id, &cert.request);
        self.keep_cert(idx, version, &cert);
        if i_owe_it {
            self.owe_run(idx, cert);
        }
        self.reconsider_requester(idx);
        Ok(())
    }

    fn on_cert_fetch(&mut self, f: CertFetch) -> Result<(), Reject> {
        if f.to != self.me {
            return Ok(());
        }
        let Some(from) = self.members.index_of(&f.from) else {
            return self.reject("cert-fetch", "unknown sender");
        };
        if f.first_version > f.last_version {
            return self.reject("cert-fetch", "first version above the last");
        }
        let every = self.params.retry_ms / 2;
        if self.is_throttled(T_ANSWER_CERTS, from, u64::from(f.idx), every) {
            return Ok(());
        }
        if !verify(&f.from, &f.digest(), &f.sig) {
            return self.reject("cert-fetch", "signature is invalid");
        }
        self.take_slot(T_ANSWER_CERTS, from, u64::from(f.idx));
        // At most the certificates kept per wallet, once per asker, wallet
        // and half retry period: a replayed fetch costs one bounded answer.
        let certs: Vec<Certificate> = self
            .certs
            .get(&f.idx)
            .map(|c| {
                c.range(f.first_version..=f.last_version)
                    .take(self.params.certs_kept_per_wallet)
                    .map(|(_, c)| c.clone())
                    .collect()
            })
            .unwrap_or_default();
        for c in certs {
            self.send(Message::Certificate(Box::new(c)));
        }
        Ok(())
    }

    // ------------------------------------------------------------- services

    fn on_announce(&mut self, a: Announce) -> Result<(), Reject> {
        if self.members.index_of(&a.provider).is_none() {
            return self.reject("announce", "unknown provider");
        }
        if self.announces.get(&a.provider).is_some_and(|old| old.seq >= a.seq) {
            self.stats.duplicates += 1;
            return Ok(());
        }
        if !verify(&a.provider, &a.digest(), &a.sig) {
            return self.reject("announce", "signature is invalid");
        }
        self.persist(Change::Announce(a.clone()));
        self.announces.insert(a.provider, a);
        self.outbox.push_back(Output::Event(Event::ServicesChanged));
        self.reconsider_parked();
        Ok(())
    }

    /// An outcome is the evidence members vote a verdict on: from the
    /// escrow's provider, before the deadline, the first one this node
    /// sees. The requester also keeps it (once, from that provider only).
    fn on_outcome(&mut self, o: Outcome) -> Result<(), Reject> {
        let key = verdict_id(&o.request_id);
        let voting = match self.escrows.get(&key) {
            Some(open) => {
                if self.members.id(open.escrow.provider_idx) != Some(o.provider) {
                    return self.reject("outcome", "not from the purchase's provider");
                }
                open.escrow.my_vote.is_none() && self.now_ms <= open.escrow.deadline_ms
            }
            None => false,
        };
        if voting {
            if !verify(&o.provider, &o.digest(), &o.sig) {
                return self.reject("outcome", "signature is invalid");
            }
            self.cast_verdict(key, o.ok);
        }
        if o.requester != self.me {
            if !voting {
                self.stats.duplicates += 1;
            }
            return Ok(());
        }
        // Only the provider the purchase named may answer it, once. A
        // purchase committed before a restart is found among the
        // certificates kept of this node's wallet.
        if !self.my_purchases.contains_key(&o.request_id)
            && let Some(provider) = self.my_idx.and_then(|i| {
                self.certs
                    .get(&i)?
                    .values()
                    .find(|c| c.request.id() == o.request_id)
                    .map(|c| c.request.provider)
            })
        {
            self.remember_purchase(o.request_id, provider);
        }
        match self.my_purchases.get(&o.request_id) {
            None => return self.reject("outcome", "not a purchase of this node"),
            Some((provider, _)) if *provider != o.provider => {
                return self.reject("outcome", "not from the purchase's provider");
            }
            Some((_, true)) => {
                self.stats.duplicates += 1;
                return Ok(());
            }
            Some(_) => {}
        }
        if !verify(&o.provider, &o.digest(), &o.sig) {
            return self.reject("outcome", "signature is invalid");
        }
        if let Some(p) = self.my_purchases.get_mut(&o.request_id) {
            p.1 = true;
        }
        self.outbox.push_back(Output::Event(Event::Outcome(o)));
        Ok(())
    }

    fn remember_purchase(&mut self, id: Hash, provider: MemberId) {
        if self.my_purchases.insert(id, (provider, false)).is_none() {
            self.my_purchases_order.push_back(id);
        }
        while self.my_purchases_order.len() > MAX_REMEMBERED_PURCHASES {
            if let Some(old) = self.my_purchases_order.pop_front() {
                self.my_purchases.remove(&old);
            }
        }
    }

    // ----------------------------------------------------------- catch-up

    /// A digest of every kept wallet's head (version, settled, shares and
    /// credits): equal digests, nothing to sync.
    pub fn digest(&mut self) -> Hash {
        if let Some(d) = self.digest_cache {
            return d;
        }
        let mut bytes = Vec::with_capacity(self.wallets.len() * 20);
        for (i, w) in self.wallets.iter().enumerate() {
            if let Some(w) = w {
                bytes.extend_from_slice(&(i as u32).to_le_bytes());
                bytes.extend_from_slice(&w.version.to_le_bytes());
                bytes.extend_from_slice(&w.settled.to_le_bytes());
                bytes.extend_from_slice(&w.shares_seen.to_le_bytes());
                // The credit tally too: nodes that settled the same
                // certificates hold the same `received`, and a difference
                // shows (hole 8: it used to be invisible).
                bytes.extend_from_slice(&w.received.to_le_bytes());
            }
        }
        let d = sha256(&[b"wallance/sync/v1", &bytes]);
        self.digest_cache = Some(d);
        d
    }

    fn on_digest(&mut self, d: SyncDigest) -> Result<(), Reject> {
        let Some(idx) = self.members.index_of(&d.from) else {
            return self.reject("digest", "unknown member");
        };
        if d.from == self.me {
            return Ok(());
        }
        // Light nodes follow other wallets: their digests always differ, so
        // they ask for heads within the same budget without comparing.
        if self.tracked.is_none() && d.digest == self.digest() {
            return Ok(());
        }
        if !self.is_fresh(d.time_ms) {
            return self.reject("digest", "time too far from this node's clock (a replay?)");
        }
        // The budget is checked before the signature and taken only after
        // it holds (in request_heads): a forged digest takes no slot.
        if !self.heads_request_fits(idx) {
            return Ok(());
        }
        if !verify(&d.from, &d.signed_digest(), &d.sig) {
            return self.reject("digest", "signature is invalid");
        }
        self.request_heads(d.from, idx);
        Ok(())
    }

    fn on_heads_request(&mut self, h: HeadsRequest) -> Result<(), Reject> {
        if h.to != self.me {
            return Ok(());
        }
        if self.members.index_of(&h.from).is_none() {
            return self.reject("heads-request", "unknown sender");
        }
        if self
            .last_heads_sent_ms
            .is_some_and(|t| self.now_ms < t + self.params.sync_interval_ms / 2)
        {
            return Ok(()); // our last heads went to everybody anyway
        }
        if !self.is_fresh(h.time_ms) {
            return self.reject("heads-request", "time too far from this node's clock (a replay?)");
        }
        if !verify(&h.from, &h.digest(), &h.sig) {
            return self.reject("heads-request", "signature is invalid");
        }
        if let Some(a) = self.announces.get(&self.me).filter(|a| !a.services.is_empty()).cloned() {
            self.send(Message::Announce(a));
        }
        self.last_heads_sent_ms = Some(self.now_ms);
        // A commit whose price is still in escrow here is not settled yet,
        // as far as a peer is told: its vouch must not be taken before the
        // verdict's credit is in `received`.
        let mut unsettled: HashMap<u32, u64> = HashMap::default();
        for o in self.escrows.values() {
            let below = o.escrow.version.saturating_sub(1);
            let s = unsettled.entry(o.escrow.requester_idx).or_insert(below);
            *s = (*s).min(below);
        }
        let heads = self
            .wallets
            .iter()
            .enumerate()
            .filter_map(|(i, w)| w.as_ref().map(|w| (i, w)))
            .filter(|(_, w)| w.version > 0 || w.settled > 0 || w.shares_seen > 0 || w.received > 0)
            .map(|(i, w)| Head {
                idx: i as u32,
                version: w.version,
                settled: unsettled.get(&(i as u32)).map_or(w.settled, |u| w.settled.min(*u)),
                shares: w.shares_seen,
                received: w.received,
            })
            .collect();
        let m = Heads::new(&self.key, h.from, self.now_ms, heads);
        self.send(Message::Heads(m));
        Ok(())
    }

    /// True while some commit this node knows of is not settled here
    /// (a wallet adopted ahead of a gap, or a light node's marks above one).
    fn has_settlement_gap(&self) -> bool {
        self.wallets
            .iter()
            .flatten()
            .any(|w| w.settled < w.version || !w.settled_above.is_empty())
            || self.marks.values().any(|m| !m.above.is_empty())
    }

    /// Hole 8: a node that missed commits whose certificates every peer has
    /// since pruned cannot settle them from certificates. It takes its
    /// settlement marks and credit tallies instead from a heads vector that
    /// peers holding more than a third of the weight reported identically
    /// — so at least one honest node holds exactly that — and that is fully
    /// settled (every wallet's `settled` equals its `version`), once this
    /// node is at the same version of every wallet it keeps. Then the set of
    /// commits behind those tallies is exactly the set behind its own
    /// wallets, and `received` is their sum: nothing is counted twice or
    /// missed. Shares are not taken (they are fetched and self-verifying).
    fn consider_vouch(&mut self, h: &Heads) {
        let Some(from) = self.members.index_of(&h.from) else {
            return;
        };
        if !self.has_settlement_gap() {
            self.vouches.clear();
            self.vouch_of.clear();
            return;
        }
        let clean = h.heads.iter().all(|x| x.settled == x.version);
        let mut bytes = Vec::with_capacity(h.heads.len() * 28);
        for x in &h.heads {
            bytes.extend_from_slice(&x.idx.to_le_bytes());
            bytes.extend_from_slice(&x.version.to_le_bytes());
            bytes.extend_from_slice(&x.received.to_le_bytes());
        }
        let key = sha256(&[b"wallance/vouch/v1", &bytes]);
        if let Some(old) = self.vouch_of.remove(&from)
            && let Some(senders) = self.vouches.get_mut(&old)
        {
            senders.retain(|s| *s != from);
            if senders.is_empty() {
                self.vouches.remove(&old);
            }
        }
        if !clean {
            return;
        }
        self.vouch_of.insert(from, key);
        let senders = self.vouches.entry(key).or_default();
        senders.push(from);
        let weight: u64 = senders.iter().map(|s| self.members.weight(*s)).sum();
        // More than a third of the configured weight: at least one honest.
        if 3 * u128::from(weight) <= u128::from(self.members.total_weight()) {
            return;
        }
        self.adopt_tallies(&h.heads);
    }

    fn adopt_tallies(&mut self, heads: &[Head]) {
        let of = |idx: u32| heads.iter().find(|x| x.idx == idx).copied();
        // Only at the same version of every kept wallet, and (a light node)
        // with nothing settled beyond the vector on the others: then both
        // stand on exactly the same commits.
        for (i, w) in self.wallets.iter().enumerate() {
            let version = of(i as u32).map_or(0, |x| x.version);
            match w {
                Some(w) if w.version != version => return,
                Some(_) => {}
                None => {
                    if self
                        .marks
                        .get(&(i as u32))
                        .is_some_and(|m| m.settled > version || m.above.iter().any(|v| *v > version))
                    {
                        return;
                    }
                }
            }
        }
        for i in 0..self.wallets.len() as u32 {
            let head = of(i).unwrap_or(Head {
                idx: i,
                version: 0,
                settled: 0,
                shares: 0,
                received: 0,
            });
            if self.wallets[i as usize].is_some() {
                let w = self.wallet_mut(i).expect("kept");
                if (w.settled, w.settled_above.is_empty(), w.received) == (head.version, true, head.received) {
                    continue;
                }
                w.settled = head.version;
                w.settled_above.clear();
                w.received = head.received;
                self.save_wallet(i);
            } else {
                let m = self.marks.entry(i).or_default();
                if m.settled == head.version && m.above.is_empty() {
                    continue;
                }
                m.settled = head.version;
                m.above.clear();
                self.persist(Change::Marks {
                    idx: i,
                    settled: head.version,
                    above: Vec::new(),
                });
            }
        }
        // The vouchers had no escrow open on these commits: every verdict
        // is in the tallies just taken. Escrows still open here were
        // settled there: forget them without crediting anything twice.
        let open: Vec<Hash> = self.escrows.keys().copied().collect();
        for key in open {
            if let Some(o) = self.remove_escrow(&key) {
                self.persist(Change::DropEscrow(key));
                self.remember_closed(key, Closed::of(&o.escrow));
            }
        }
        self.stats.tallies_adopted += 1;
        self.vouches.clear();
        self.vouch_of.clear();
        self.reconsider_parked();
    }

    fn on_heads(&mut self, h: Heads) -> Result<(), Reject> {
        if h.from == self.me || self.members.index_of(&h.from).is_none() {
            return Ok(());
        }
        if !self.is_fresh(h.time_ms) {
            return self.reject("heads", "time too far from this node's clock (a replay?)");
        }
        if !verify(&h.from, &h.digest(), &h.sig) {
            return self.reject("heads", "signature is invalid");
        }
        self.consider_vouch(&h);
        for head in h.heads {
            if head.idx as usize >= self.wallets.len() {
                continue;
            }
            // Where we are on this wallet: a kept wallet's version and
            // settlement, or a light node's settlement marks alone.
            let (version, settled, shares, id) = match self.wallets[head.idx as usize].as_ref() {
                Some(w) => (w.version, w.settled, Some(w.shares_seen), w.id),
                None => {
                    let settled = self.marks.get(&head.idx).map_or(0, |m| m.settled);
                    let Some(id) = self.members.id(head.idx) else { continue };
                    (settled, settled, None, id)
                }
            };
            // Also ask a peer at least at our version for a gap of ours,
            // whatever settlement it reports: it reports a commit whose
            // escrow is open as unsettled, and that escrow may wait for
            // this very node (the provider that missed the quorum, or the
            // vote that makes the verdict's quorum) to settle the commit.
            // Only the first missing version then: where every peer pruned
            // it, the answer is empty, not a batch of certificates.
            let gap = settled < version && head.version >= version;
            let range = if head.version > version || head.settled > settled {
                Some((settled.min(version) + 1, head.version.max(head.settled)))
            } else {
                gap.then_some((settled + 1, settled + 1))
            };
            if let Some((first, last)) = range
                && first <= last
                && !self.throttled(T_CERT_FETCH, head.idx, first, self.params.retry_ms)
            {
                let f = CertFetch::new(&self.key, h.from, head.idx, first, last);
                self.send(Message::CertFetch(f));
            }
            if let Some(shares) = shares
                && head.shares > shares
                && !self.throttled(T_SHARE_FETCH, head.idx, shares, self.params.retry_ms)
            {
                let f = ShareFetch::new(&self.key, id, shares + 1, head.shares);
                self.send(Message::ShareFetch(f));
            }
        }
        Ok(())
    }
}

fn truncate_utf8(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
