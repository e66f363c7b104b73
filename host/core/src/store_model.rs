//! What the core asks to be made durable, and what it is restored from.
//!
//! The core never writes anything itself: after each input it emits one
//! [`Batch`] of [`Change`]s (`Output::Persist`) ahead of any message that
//! depends on it. The adapter makes the batch durable (one redb commit)
//! before it sends. [`Snapshot`] is the whole durable state; the redb store
//! loads one at start-up and the simulator keeps one in memory as its disk.

use std::collections::BTreeMap;

use crate::msg::{Announce, Certificate, Request, Vote};
use crate::wallet::Wallet;

/// One write of a contract to its own key-value storage: sets `key` to
/// `value`, or deletes it when `value` is `None`. A contract's state lives
/// in the node's store, not in [`Snapshot`]: the core only carries the
/// writes from the run to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractWrite {
    pub contract: String,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// One durable change.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Wallet `idx` after a step that moved money or its State (a
    /// certificate, a verdict, a reward): durable, since nothing re-sends
    /// what a crash would lose of it.
    Wallet {
        idx: u32,
        wallet: Wallet,
    },
    /// Wallet `idx` after a step that only credited sensor shares (its
    /// `shares_seen`): stored like [`Change::Wallet`] but without fsync. A
    /// crash may lose it; shares are credited by number, and a node asks
    /// the sender again for the numbers it misses.
    Tally {
        idx: u32,
        wallet: Wallet,
    },
    /// This node's vote on `requester_idx`'s State `version` (one per State).
    MyVote {
        requester_idx: u32,
        version: u64,
        vote: Vote,
    },
    PutRequest(Box<Request>),
    DropRequest([u8; 32]),
    PutVote(Vote),
    /// Drops every pending vote for a request.
    DropVotes([u8; 32]),
    PutCert {
        idx: u32,
        version: u64,
        cert: Box<Certificate>,
    },
    DropCert {
        idx: u32,
        version: u64,
    },
    /// The provider must run the contract for this certificate.
    RunPending {
        idx: u32,
        version: u64,
        cert: Box<Certificate>,
    },
    /// ... and it has run, with this outcome and the contract's storage
    /// writes (applied with the marker, in the same transaction, only if
    /// the run is recorded; the core emits one `RunDone` per run).
    RunDone {
        idx: u32,
        version: u64,
        ok: bool,
        body: String,
        writes: Vec<ContractWrite>,
    },
    /// Finished runs of `idx` up to `upto` are forgotten; no run of `idx`
    /// at or below `upto` that is not still owed will ever run again.
    RunsPruned {
        idx: u32,
        upto: u64,
    },
    /// Which certificates of wallet `idx` this node has settled, for a
    /// wallet it does not keep (a light node): every version up to
    /// `settled`, and `above`.
    Marks {
        idx: u32,
        settled: u64,
        above: Vec<u64>,
    },
    Announce(Announce),
    ShareSeq(u64),
    AnnounceSeq(u64),
    /// A committed purchase's price, held until its verdict (or this
    /// node's verdict vote on it, once cast).
    PutEscrow(Box<Escrow>),
    /// Forgets a settled escrow (the oldest beyond the number remembered).
    DropEscrow([u8; 32]),
}

/// A committed purchase's price, held until a quorum votes its verdict:
/// paid to the provider, or refunded to the requester.
#[derive(Debug, Clone, PartialEq)]
pub struct Escrow {
    /// The purchase (request id); the escrow is keyed by its `verdict_id`.
    pub purchase: [u8; 32],
    pub requester_idx: u32,
    /// The requester's wallet version the purchase committed.
    pub version: u64,
    pub provider_idx: u32,
    pub price: u64,
    /// The request's time plus `outcome_timeout_ms`: with no outcome from
    /// the provider by then, this node votes for the refund.
    pub deadline_ms: u64,
    /// This node's verdict vote, once cast (one per purchase, durable
    /// before it is sent).
    pub my_vote: Option<Vote>,
    /// Set once a quorum voted the verdict (true: the provider was paid).
    /// Settled escrows are kept (a bounded number) so that this node can
    /// send its vote back to a peer that missed the quorum, after a
    /// restart too.
    pub verdict: Option<bool>,
}

impl Change {
    /// True for the changes a node must make durable before it sends what
    /// follows: wallets after money moved, its own votes, requests it holds
    /// (an acknowledged purchase), certificates and proofs (with the commit
    /// they carry), contract runs and its announcement number. The rest
    /// (votes heard, drops, share tallies, its own share number) may be
    /// lost in a crash: peers re-send, the catch-up restores them, and a
    /// share is credited by its number (a share number used again after a
    /// crash earns nothing twice). So sensor shares never wait for the disk.
    pub fn needs_durability(&self) -> bool {
        match self {
            Change::Wallet { .. }
            | Change::MyVote { .. }
            | Change::PutRequest(_)
            | Change::PutCert { .. }
            | Change::RunPending { .. }
            | Change::RunDone { .. }
            | Change::RunsPruned { .. }
            | Change::AnnounceSeq(_) => true,
            Change::PutEscrow(e) => e.my_vote.is_some(),
            Change::Tally { .. }
            | Change::ShareSeq(_)
            | Change::DropRequest(_)
            | Change::PutVote(_)
            | Change::DropVotes(_)
            | Change::DropCert { .. }
            | Change::Marks { .. }
            | Change::Announce(_)
            | Change::DropEscrow(_) => false,
        }
    }
}

/// The changes of one step, durable together.
pub type Batch = Vec<Change>;

/// A contract run the provider owes or has done.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub cert: Certificate,
    pub done: Option<(bool, String)>,
}

/// Everything durable, as the core restores from it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub wallets: BTreeMap<u32, Wallet>,
    pub my_votes: BTreeMap<u32, (u64, Vote)>,
    pub requests: BTreeMap<[u8; 32], Request>,
    pub votes: BTreeMap<([u8; 32], [u8; 32]), Vote>,
    pub certs: BTreeMap<(u32, u64), Certificate>,
    pub runs: BTreeMap<(u32, u64), RunRecord>,
    /// Per requester wallet: finished runs at or below were pruned.
    pub run_floor: BTreeMap<u32, u64>,
    /// Settlement marks of wallets this node does not keep.
    pub marks: BTreeMap<u32, (u64, Vec<u64>)>,
    pub announces: BTreeMap<[u8; 32], Announce>,
    pub share_seq: u64,
    pub announce_seq: u64,
    /// Open and recently settled escrows by verdict id.
    pub escrows: BTreeMap<[u8; 32], Escrow>,
}

impl Snapshot {
    /// Applies a batch: the in-memory twin of the redb store.
    pub fn apply(&mut self, batch: &[Change]) {
        for change in batch {
            match change {
                Change::Wallet { idx, wallet } | Change::Tally { idx, wallet } => {
                    self.wallets.insert(*idx, wallet.clone());
                }
                Change::MyVote {
                    requester_idx,
                    version,
                    vote,
                } => {
                    self.my_votes.insert(*requester_idx, (*version, *vote));
                }
                Change::PutRequest(r) => {
                    self.requests.insert(r.id(), (**r).clone());
                }
                Change::DropRequest(id) => {
                    self.requests.remove(id);
                }
                Change::PutVote(v) => {
                    self.votes.insert((v.request_id, v.voter.0), *v);
                }
                Change::DropVotes(id) => {
                    let keys: Vec<_> = self
                        .votes
                        .range((*id, [0; 32])..=(*id, [0xff; 32]))
                        .map(|(k, _)| *k)
                        .collect();
                    for k in keys {
                        self.votes.remove(&k);
                    }
                }
                Change::PutCert { idx, version, cert } => {
                    self.certs.insert((*idx, *version), (**cert).clone());
                }
                Change::DropCert { idx, version } => {
                    self.certs.remove(&(*idx, *version));
                }
                Change::RunPending { idx, version, cert } => {
                    self.runs.entry((*idx, *version)).or_insert_with(|| RunRecord {
                        cert: (**cert).clone(),
                        done: None,
                    });
                }
                // Contract storage is not part of the snapshot (see
                // `ContractWrite`): the writes are the store's to apply.
                Change::RunDone {
                    idx, version, ok, body, ..
                } => {
                    if let Some(run) = self.runs.get_mut(&(*idx, *version)) {
                        run.done = Some((*ok, body.clone()));
                    }
                }
                Change::RunsPruned { idx, upto } => {
                    self.runs
                        .retain(|(i, v), run| !(*i == *idx && *v <= *upto && run.done.is_some()));
                    let floor = self.run_floor.entry(*idx).or_default();
                    *floor = (*floor).max(*upto);
                }
                Change::Marks { idx, settled, above } => {
                    self.marks.insert(*idx, (*settled, above.clone()));
                }
                Change::Announce(a) => {
                    self.announces.insert(a.provider.0, a.clone());
                }
                Change::ShareSeq(s) => self.share_seq = *s,
                Change::AnnounceSeq(s) => self.announce_seq = *s,
                Change::PutEscrow(e) => {
                    self.escrows.insert(crate::msg::verdict_id(&e.purchase), (**e).clone());
                }
                Change::DropEscrow(id) => {
                    self.escrows.remove(id);
                }
            }
        }
    }
}
