//! What the node shows: a snapshot the loop rebuilds after changes and the
//! API serves as JSON (the loop never blocks on a reader), and the record
//! of each purchase this node made or served ([`PurchaseView`], kept in the
//! store). The CLI and the tests read the same types back.

use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

pub type SharedView = Arc<Hub>;

/// The latest view and a version counter live listeners wait on.
#[derive(Debug)]
pub struct Hub {
    pub view: RwLock<Arc<View>>,
    pub version: tokio::sync::watch::Sender<u64>,
    /// Bumped as soon as purchase records are committed (not at the next
    /// view): what a long poll on `/api/purchases/{id}` waits on.
    pub purchases: tokio::sync::watch::Sender<u64>,
}

impl Hub {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            view: RwLock::new(Arc::new(View::default())),
            version: tokio::sync::watch::channel(0).0,
            purchases: tokio::sync::watch::channel(0).0,
        })
    }
    pub fn purchases_changed(&self) {
        self.purchases.send_modify(|n| *n += 1);
    }
    pub fn publish(&self, v: View) {
        if let Ok(mut w) = self.view.write() {
            *w = Arc::new(v);
        }
        self.version.send_modify(|n| *n += 1);
    }
    pub fn get(&self) -> Arc<View> {
        self.view.read().map(|v| v.clone()).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct View {
    pub me: String,
    pub id: String,
    pub uptime_s: u64,
    pub members: usize,
    pub quorum: usize,
    /// What every purchase pays its voter reward with, on top of the price.
    pub reward_units: u64,
    pub wallets: Vec<WalletView>,
    pub pending: Vec<PendingView>,
    /// Shared with the node's own lists: publishing a view (at every
    /// group of commits) copies pointers, not 600 records.
    pub commits: Vec<Arc<CommitView>>,
    pub outcomes: Vec<Arc<OutcomeView>>,
    /// Outcomes this node produced as a provider, with the contract's logs.
    pub produced: Vec<Arc<OutcomeView>>,
    pub services: Vec<ServiceView>,
    pub contracts: Vec<ContractState>,
    pub peers: PeersView,
    pub stats: StatsView,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WalletView {
    pub name: String,
    pub id: String,
    pub version: u64,
    pub state: String,
    pub balance: u64,
    pub spendable: u64,
    pub shares: u64,
    pub received: u64,
    /// The newest commit of this wallet this node saw since it started.
    pub last_commit: Option<LastCommit>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastCommit {
    pub request_id: String,
    pub service: String,
    pub price: u64,
    pub at_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingView {
    pub request_id: String,
    pub requester: String,
    pub service: String,
    pub price: u64,
    pub version: u64,
    pub waiting: bool,
    pub time_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitView {
    pub requester: String,
    pub requester_id: String,
    pub version: u64,
    pub request_id: String,
    pub service: String,
    pub provider: String,
    pub provider_id: String,
    pub price: u64,
    pub remaining: u64,
    pub latency_ms: u64,
    pub from_certificate: bool,
    pub at_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutcomeView {
    pub request_id: String,
    pub provider: String,
    pub requester: String,
    pub version: u64,
    pub ok: bool,
    pub body: String,
    pub at_ms: u64,
    /// Known at the provider (empty for a purchase's outcome as received).
    pub service: String,
    /// The contract's log lines, kept with the outcome at the provider.
    pub logs: Vec<String>,
}

/// What this node recorded of a purchase it made (as the buyer) or served
/// (as the provider): kept in the store, across restarts, for the newest
/// `wallance_store::PURCHASES_KEPT` purchases. `GET /api/purchases/{id}`
/// (with `?wait=<s>` it answers as soon as the outcome or verdict is here).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseView {
    pub request_id: String,
    pub status: PurchaseStatus,
    pub service: String,
    pub provider: String,
    pub provider_id: String,
    pub requester: String,
    pub requester_id: String,
    /// In units (1 DCoin = 1 000 000).
    pub price: u64,
    /// The contract's parameters (known at the buyer).
    #[serde(default)]
    pub params: Vec<(String, String)>,
    /// When this node's wallet asked (at the buyer).
    pub requested_at_ms: Option<u64>,
    pub commit: Option<PurchaseCommit>,
    pub outcome: Option<PurchaseOutcome>,
    pub verdict: Option<PurchaseVerdict>,
}

/// `pending` until committed, `committed` until the outcome or the verdict,
/// then `done` (the outcome is here) or `settled` (a verdict without an
/// outcome here: the provider never answered, the price was refunded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PurchaseStatus {
    #[default]
    Pending,
    Committed,
    Done,
    Settled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseCommit {
    /// The requester's wallet version the purchase moved it to.
    pub version: u64,
    pub at_ms: u64,
    /// From the request's time to this node's commit.
    pub latency_ms: u64,
    /// Learned from a certificate rather than this node's own quorum.
    pub from_certificate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseOutcome {
    pub ok: bool,
    pub body: String,
    /// When it reached this node (at the provider: when the run finished).
    pub at_ms: u64,
    /// The contract's log lines (at the provider).
    #[serde(default)]
    pub logs: Vec<String>,
    /// Fuel and time of the run (at the provider).
    pub fuel_used: Option<u64>,
    pub elapsed_us: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseVerdict {
    /// The price went to the provider (`true`) or back to the requester.
    pub paid: bool,
    pub at_ms: u64,
}

impl PurchaseView {
    /// The outcome or the verdict is known: nothing more to wait for.
    pub fn finished(&self) -> bool {
        self.outcome.is_some() || self.verdict.is_some()
    }

    /// Sets `status` from what the record holds.
    pub fn refresh_status(&mut self) {
        self.status = if self.outcome.is_some() {
            PurchaseStatus::Done
        } else if self.verdict.is_some() {
            PurchaseStatus::Settled
        } else if self.commit.is_some() {
            PurchaseStatus::Committed
        } else {
            PurchaseStatus::Pending
        };
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceView {
    pub name: String,
    pub price: u64,
    pub provider: String,
    pub provider_id: String,
    pub contract_hash: String,
}

/// A file in the contracts folder: loaded, or rejected and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContractState {
    pub file: String,
    pub service: Option<String>,
    pub price: Option<u64>,
    pub description: Option<String>,
    pub version: Option<String>,
    pub contract_hash: Option<String>,
    pub status: String,
    pub error: Option<String>,
    pub at_ms: u64,
}

/// `GET /api/status`: a node's health at a glance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    pub me: String,
    pub id: String,
    pub uptime_s: u64,
    pub members: usize,
    pub quorum: usize,
    /// Requests waiting for their quorum.
    pub pending: usize,
    pub peers: PeersView,
    pub stats: StatsView,
    /// Services on the network.
    pub services: usize,
    pub contracts: Vec<ContractState>,
    pub contracts_dir: Option<String>,
    pub token_configured: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeersView {
    pub dds_participants: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatsView {
    pub rejected: std::collections::BTreeMap<String, u64>,
    pub votes_sent: u64,
    pub votes_received: u64,
    pub shares_received: u64,
    pub commits: u64,
    pub certificates_applied: u64,
    pub duplicates: u64,
    /// Signature checks the core answered from its cache of verified
    /// signatures (a certificate's votes seen before).
    #[serde(default)]
    pub signatures_cached: u64,
    /// Signatures verified in batches that held (`Core::preverify`), and
    /// batches that did not (a bad signature in them).
    #[serde(default)]
    pub signatures_batched: u64,
    #[serde(default)]
    pub batches_failed: u64,
    /// Signatures of votes, requests and certificates verified, alone or
    /// in a batch (`Stats::signatures_checked`): the work done.
    #[serde(default)]
    pub signatures_checked: u64,
    /// Vouched catch-ups taken (`Stats::tallies_adopted`).
    #[serde(default)]
    pub tallies_adopted: u64,
    /// Votes on credits this node could not check, vouched for by more
    /// than a third of the weight (`Stats::credits_vouched`).
    #[serde(default)]
    pub credits_vouched: u64,
    pub messages_sent: u64,
    pub dds_received: u64,
    pub dds_malformed: u64,
    /// `dds_malformed` by reason (`wallance_dds::Malformed`), zeros included.
    pub dds_malformed_by_reason: std::collections::BTreeMap<String, u64>,
    /// Failed DDS sends by reason (`wallance_dds::SendError::reason`).
    pub dds_send_failures: std::collections::BTreeMap<String, u64>,
    pub store_bytes: u64,
    /// The store's file syncs (fdatasync) and bytes written since start:
    /// what wears an SD card.
    #[serde(default)]
    pub store_syncs: u64,
    #[serde(default)]
    pub store_written_bytes: u64,
    /// Store commits with and without fsync, and the steps they carried
    /// (a group commit carries several).
    #[serde(default)]
    pub store_commits_durable: u64,
    #[serde(default)]
    pub store_commits_lazy: u64,
    #[serde(default)]
    pub store_steps: u64,
    pub contract_runs: u64,
    pub contract_failures: u64,
    /// Purchases whose verdict paid the provider / refunded the requester
    /// here, and purchase prices still in escrow.
    pub verdicts_paid: u64,
    pub verdicts_refunded: u64,
    pub escrows_open: u64,
}
