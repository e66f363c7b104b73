//! A deterministic many-node simulator of the Wallance protocol.
//!
//! N real [`Core`]s (the same state machine the daemon runs) exchange real
//! encoded messages over a seeded in-memory network with latency, jitter,
//! loss, duplication (and so reordering), partitions, per-node downlink
//! bandwidth and CPU cost, crashes and restarts from each node's durable
//! state, clock skew, and Byzantine members below a third. After every step
//! it checks the invariants; a failure names its seed, and
//! `WALLANCE_SIM_SEED=<seed>` replays it.
//!
//! The attacker of `shared/docs/threat-model.md` is built in: a network adversary
//! ([`AdversaryConfig`], `adversary.rs`) that records everything sent and
//! re-injects exact copies, duplicate bursts, mutated and re-signed copies
//! and flipped bytes to any node; a Byzantine provider; contracts that fail;
//! light nodes. The checks it must not break: a State chain and conservation
//! of money per wallet after every commit ([`MoneyRule`]); at the end,
//! agreement on every field of every wallet (light nodes included, and their
//! settlement marks of the wallets they do not keep), money created only by
//! shares, contracts run exactly once, no panic in any core call, no
//! amplification, no honest member blamed for a forgery, bounded pending
//! queues, and liveness after healing. Violations are counted by class in
//! the [`Report`]; what each node and purchase ended with is in it too.
//!
//! Time is simulated in microseconds: nothing here reads a clock.

mod adversary;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::hash::{BuildHasherDefault, DefaultHasher};
use std::panic::{AssertUnwindSafe, catch_unwind};

// Fixed hashers: a seed replays to the same run in any process.
type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<DefaultHasher>>;
type HashSet<K> = std::collections::HashSet<K, BuildHasherDefault<DefaultHasher>>;
use std::rc::Rc;

pub use adversary::AdversaryConfig;
use adversary::{Action, Knowledge, Recorder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use wallance_core::msg::{
    CertVote, Certificate, Outcome, Request, RequestDraft, ServiceOffer, Share, Vote, decision_id,
};
use wallance_core::wallet::next_state;
use wallance_core::{
    Batch, Change, Core, CoreConfig, Event, Hash, Keypair, MemberId, Membership, Message, Output, Params, Snapshot,
    UNITS_PER_COIN, Wallet,
};

/// Lazy batches a node holds before it folds them into a durable commit
/// anyway (the node's periodic checkpoint does the same in time).
const LAZY_BATCHES_MAX: usize = 4_096;

/// The network between nodes.
#[derive(Debug, Clone, Serialize)]
pub struct NetModel {
    pub name: &'static str,
    /// One-way latency, uniform in this range (its spread reorders messages).
    pub latency_us_min: u64,
    pub latency_us_max: u64,
    pub loss: f64,
    pub duplicate: f64,
    /// Each node's downlink: received bytes queue behind each other.
    pub downlink_bits_per_s: u64,
    /// Per message headers (RTPS + UDP + IP).
    pub overhead_bytes: u64,
}

impl NetModel {
    /// Switched Ethernet or loopback.
    pub fn lan() -> Self {
        Self {
            name: "lan",
            latency_us_min: 50,
            latency_us_max: 200,
            loss: 0.0,
            duplicate: 0.0,
            downlink_bits_per_s: 1_000_000_000,
            overhead_bytes: 80,
        }
    }
    /// The paper's testbed: Raspberry Pis on 5 GHz WiFi (Table II: 1.4-6 ms).
    pub fn wifi() -> Self {
        Self {
            name: "wifi",
            latency_us_min: 1_400,
            latency_us_max: 6_000,
            loss: 0.001,
            duplicate: 0.0,
            downlink_bits_per_s: 50_000_000,
            overhead_bytes: 80,
        }
    }
    /// Gateways across a wide area: 20-60 ms one way, 20 Mbit/s down.
    pub fn wan() -> Self {
        Self {
            name: "wan",
            latency_us_min: 20_000,
            latency_us_max: 60_000,
            loss: 0.001,
            duplicate: 0.0,
            downlink_bits_per_s: 20_000_000,
            overhead_bytes: 80,
        }
    }
    /// A hostile network for correctness runs.
    pub fn faulty() -> Self {
        Self {
            name: "faulty",
            latency_us_min: 100,
            latency_us_max: 30_000,
            loss: 0.05,
            duplicate: 0.05,
            downlink_bits_per_s: 100_000_000,
            overhead_bytes: 80,
        }
    }
    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "lan" => Some(Self::lan()),
            "wifi" => Some(Self::wifi()),
            "wan" => Some(Self::wan()),
            "faulty" => Some(Self::faulty()),
            _ => None,
        }
    }
}

/// CPU time a node spends per message, measured on this machine with
/// ed25519-dalek (verify 31 µs, sign 14 µs).
#[derive(Debug, Clone, Serialize)]
pub struct CpuModel {
    pub verify_us: u64,
    pub sign_us: u64,
    pub base_us: u64,
    /// Charge a certificate one verification per vote, plus the request and
    /// the provider's signature (the most it can cost). When false it costs
    /// only `base_us`: what it costs a node that committed already (a
    /// duplicate) or had verified its votes (the core's signature cache).
    /// The adversarial scenarios alternate the two by seed, because timing
    /// alone hid a liveness hole: `pruned-catch-up` seed 601 failed only
    /// with cheap certificates (`Core::credits_vouched`).
    pub certificate_votes_verified: bool,
    /// Model the node's batch verification (`Core::preverify`): votes and
    /// requests that arrive while the node is busy wait,
    /// and are verified in one batch when it gets to them. A signature in a
    /// batch costs `batch_sig_us`, and each batch `batch_fixed_us` more
    /// (measured by `vbench`-style runs in the `bench` command: 20 + 13 k µs
    /// for k signatures against 31 µs alone). The adversarial scenarios
    /// turn it off on half of the seeds.
    pub batch_verify: bool,
    pub batch_fixed_us: u64,
    pub batch_sig_us: u64,
}

impl Default for CpuModel {
    fn default() -> Self {
        Self {
            verify_us: 31,
            sign_us: 14,
            base_us: 3,
            certificate_votes_verified: true,
            batch_verify: true,
            batch_fixed_us: 20,
            batch_sig_us: 13,
        }
    }
}

/// Faults injected until `until_ms`; afterwards the network heals.
#[derive(Debug, Clone, Serialize)]
pub struct Faults {
    /// Mean time between crashes (of a random honest node).
    pub crash_every_ms: Option<u64>,
    pub down_ms: (u64, u64),
    /// Probability that a crash hits between a durable write and the sends
    /// that follow it.
    pub crash_mid_output: f64,
    pub partition_every_ms: Option<u64>,
    pub partition_ms: (u64, u64),
    pub max_clock_skew_ms: u64,
    /// Clocks set by hand: (node, skew in ms), in place of the random draw
    /// (which is still made, so the rest of a seed's run is unchanged).
    pub skews_ms: Vec<(usize, i64)>,
    pub until_ms: u64,
}

impl Faults {
    pub fn none() -> Self {
        Self {
            crash_every_ms: None,
            down_ms: (0, 0),
            crash_mid_output: 0.0,
            partition_every_ms: None,
            partition_ms: (0, 0),
            max_clock_skew_ms: 0,
            skews_ms: Vec::new(),
            until_ms: 0,
        }
    }
    pub fn all(until_ms: u64) -> Self {
        Self {
            crash_every_ms: Some(3_000),
            down_ms: (500, 6_000),
            crash_mid_output: 0.3,
            partition_every_ms: Some(8_000),
            partition_ms: (1_000, 5_000),
            max_clock_skew_ms: 2_000,
            skews_ms: Vec::new(),
            until_ms,
        }
    }
}

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub enum Mode {
    /// Every node buys and shares; every message reaches every node.
    Full,
    /// Consensus latency at scale: `purchases` purchases one after the other,
    /// each by a fresh wallet. Requests reach every member, which all vote;
    /// above 64 members, votes and certificates are delivered only to the
    /// requester, the provider and `observers` more nodes (whose commit times
    /// are measured), so that 10 000 members simulate in a minute.
    Latency { purchases: usize, observers: usize },
}

#[derive(Debug, Clone, Serialize)]
pub struct SimConfig {
    pub nodes: usize,
    pub seed: u64,
    /// Byzantine members (must stay below a third).
    pub byzantine: usize,
    /// Honest light nodes keeping only half the wallets.
    pub light: usize,
    pub net: NetModel,
    pub cpu: CpuModel,
    pub faults: Faults,
    #[serde(skip)]
    pub params: Params,
    pub mode: Mode,
    /// Workload phase; then `quiet_ms` with no new work before the checks.
    pub duration_ms: u64,
    pub quiet_ms: u64,
    pub share_interval_ms: u64,
    pub buy_interval_ms: u64,
    /// The network adversary (records, replays, mutates); `None`: off.
    pub adversary: Option<AdversaryConfig>,
    /// A second provider, Byzantine (the first Byzantine member), offering
    /// the same services at the same prices; it signs two certificates for
    /// one decision, withholds its certificate, sends outcomes for runs that
    /// never happened. Honest members buy from either at random.
    pub byzantine_provider: bool,
    /// Probability that a contract run reports `ok = false` (decided by the
    /// seed, the requester and the version, so a replay fails the same way).
    pub contract_failure: f64,
    /// Whether crashes may hit the honest provider (node 0). Off, to look
    /// at what a long outage does to other nodes alone.
    pub crash_provider: bool,
    /// The money rule the conservation checks hold the core to.
    pub money: MoneyRule,
    /// Check the evidence rule: a vote whose signature does not verify is
    /// never counted as its voter's equivocation.
    pub check_blame: bool,
}

/// Who pays what at a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MoneyRule {
    /// The rule of `Params::cost` and `Membership::reward_recipient`: the
    /// requester pays `price + reward_units`; every node applying the commit
    /// (by its own quorum, a proof or a signed certificate, once per
    /// (requester, version)) credits the provider `price` and the reward
    /// recipient `reward_units`. Only shares create money.
    RequesterPaysReward,
    /// The rule before it: the requester pays `price`, the provider-signed
    /// certificate pays the provider and mints a reward for each voter in
    /// it (the core before the integrity fixes). Kept to measure such a
    /// core (`examples/sweep.rs ... legacy`); conservation is then checked
    /// per wallet only.
    LegacyMintedRewards,
}

impl MoneyRule {
    /// What a purchase at `price` takes from the requester.
    pub fn cost(self, params: &Params, price: u64) -> u64 {
        match self {
            MoneyRule::RequesterPaysReward => params.cost(price).unwrap_or(u64::MAX),
            MoneyRule::LegacyMintedRewards => price,
        }
    }
}

impl SimConfig {
    pub fn new(nodes: usize, seed: u64) -> Self {
        Self {
            nodes,
            seed,
            byzantine: 0,
            light: 0,
            net: NetModel::lan(),
            cpu: CpuModel::default(),
            faults: Faults::none(),
            params: Params {
                request_ttl_ms: 15_000,
                sync_interval_ms: 2_000,
                ..Params::default()
            },
            mode: Mode::Full,
            duration_ms: 20_000,
            quiet_ms: 20_000,
            share_interval_ms: 250,
            buy_interval_ms: 2_000,
            adversary: None,
            byzantine_provider: false,
            contract_failure: 0.0,
            crash_provider: true,
            money: MoneyRule::RequesterPaysReward,
            check_blame: true,
        }
    }

    /// Everything at once (issue 8): a faulty network with crashes,
    /// partitions and skew, Byzantine members below a third, light nodes
    /// holding about a third of the honest weight, the network adversary,
    /// a Byzantine provider and contracts that fail.
    pub fn everything(nodes: usize, seed: u64) -> Self {
        let mut c = Self::new(nodes, seed);
        c.net = NetModel::faulty();
        c.faults = Faults::all(12_000);
        c.byzantine = (nodes - 1) / 3;
        c.light = (nodes - c.byzantine).div_ceil(3);
        c.duration_ms = 40_000;
        c.quiet_ms = 30_000;
        c.adversary = Some(AdversaryConfig::default());
        c.byzantine_provider = true;
        c.contract_failure = 0.2;
        c
    }

    /// The named attack scenarios the adversary tests and the `sweep`
    /// example run (`SCENARIOS` lists the names).
    pub fn scenario(name: &str, seed: u64) -> Option<Self> {
        let mut c = match name {
            "everything" => Self::everything(10, seed),
            "replay" => {
                let mut c = Self::new(8, seed);
                c.net = NetModel::faulty();
                c.faults = Faults {
                    crash_every_ms: Some(3_000),
                    down_ms: (500, 5_000),
                    crash_mid_output: 0.3,
                    ..Faults::none()
                };
                c.faults.until_ms = 12_000;
                c.duration_ms = 30_000;
                c.quiet_ms = 25_000;
                c.adversary = Some(AdversaryConfig::replay_only());
                // Light nodes too: an old certificate replayed to a node
                // that no longer keeps it must not pay twice.
                c.light = 2;
                c
            }
            "byzantine-provider" => {
                let mut c = Self::new(10, seed);
                c.byzantine = 3;
                c.byzantine_provider = true;
                c.net = NetModel::faulty();
                c
            }
            "failing-contracts" => {
                let mut c = Self::new(8, seed);
                c.contract_failure = 0.5;
                c.faults = Faults {
                    crash_every_ms: Some(2_000),
                    down_ms: (200, 4_000),
                    crash_mid_output: 0.5,
                    ..Faults::none()
                };
                c.faults.until_ms = 15_000;
                c.duration_ms = 30_000;
                c
            }
            "light-third" => {
                let mut c = Self::new(9, seed);
                c.light = 3;
                c.net = NetModel::faulty();
                c
            }
            // Outages longer than the certificates peers keep (2 here): of
            // any honest node but the provider, or of the provider too.
            "pruned-catch-up" | "pruned-provider" => {
                let mut c = Self::new(6, seed);
                c.params.certs_kept_per_wallet = 2;
                c.faults = Faults {
                    crash_every_ms: Some(4_000),
                    down_ms: (15_000, 20_000),
                    crash_mid_output: 0.0,
                    ..Faults::none()
                };
                c.faults.until_ms = 8_000;
                c.duration_ms = 40_000;
                c.buy_interval_ms = 1_000;
                c.crash_provider = name == "pruned-provider";
                c.light = 1;
                c
            }
            _ => return None,
        };
        // Odd seeds charge certificates only the base cost, and seeds 2 and
        // 3 modulo 4 verify every signature alone (see CpuModel).
        c.cpu.certificate_votes_verified = seed.is_multiple_of(2);
        c.cpu.batch_verify = seed % 4 < 2;
        Some(c)
    }
}

/// The kinds `Core::preverify` batches.
fn batched(m: &Message) -> bool {
    matches!(m, Message::Vote(_) | Message::Request(_))
}

/// The names [`SimConfig::scenario`] knows.
pub const SCENARIOS: [&str; 7] = [
    "everything",
    "replay",
    "byzantine-provider",
    "failing-contracts",
    "light-third",
    "pruned-catch-up",
    "pruned-provider",
];

/// What a run measured and found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub seed: u64,
    pub nodes: usize,
    pub net: String,
    pub purchases_started: u64,
    pub commits: u64,
    pub contract_runs: u64,
    /// Request creation to the requester's commit, ms of simulated time.
    pub latency_requester_ms: Vec<f64>,
    /// Request creation to the last observed honest node's commit.
    pub latency_all_ms: Vec<f64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p50_all_ms: f64,
    pub p99_all_ms: f64,
    pub messages_per_node: f64,
    pub bytes_sent_per_node: f64,
    pub bytes_received_per_node: f64,
    pub rejected: u64,
    /// Times an honest node took its tallies from vouched heads (it had
    /// commits whose certificates every peer had pruned).
    pub tallies_adopted: u64,
    /// Signatures honest nodes verified in batches that held, and batches
    /// that failed (a forgery in them), since each node's last start: shows
    /// that the batch path runs, forgeries included.
    pub signatures_batched: u64,
    pub batches_failed: u64,
    pub crashes: u64,
    /// Batches committed without fsync that crashes lost.
    pub lazy_batches_lost: u64,
    pub partitions: u64,
    pub sim_time_ms: u64,
    pub steps: u64,
    pub violations: Vec<String>,
    /// Violations by class (the list above keeps a few messages per class).
    pub violation_classes: BTreeMap<String, u64>,
    /// What the network adversary injected, by action and message field.
    pub injected: BTreeMap<String, u64>,
    /// Core calls that panicked (each also a violation).
    pub panics: u64,
    /// The largest `pending_requests` / `pending_decisions` of an honest
    /// node at the end.
    pub pending_requests_max: usize,
    pub pending_decisions_max: usize,
    /// How many times the end checks actually ran (so a check that never
    /// applies shows as 0, not as a pass): honest full nodes whose total
    /// credits were compared with what their settled commits paid, and
    /// honest requesters held to liveness.
    pub money_checks: u64,
    pub liveness_checks: u64,
    /// Every wallet as the first honest full node sees it at the end.
    pub wallets: Vec<WalletRow>,
    /// Messages the network lost, and the extra copies it delivered.
    pub messages_lost: u64,
    pub messages_duplicated: u64,
    /// Every node at the end, by index (what tests look into).
    #[serde(skip)]
    pub node_rows: Vec<NodeRow>,
    /// Every purchase an honest node committed, by (requester, version).
    #[serde(skip)]
    pub purchases: Vec<PurchaseRow>,
}

/// One node at the end of a run.
#[derive(Debug, Clone)]
pub struct NodeRow {
    pub byzantine: bool,
    pub light: bool,
    /// Running at the end (not down after a crash).
    pub up: bool,
    /// Its clock minus simulated time, in ms.
    pub skew_ms: i64,
    /// The wallets it is configured to keep (`None`: every one).
    pub tracked: Option<BTreeSet<u32>>,
    /// The wallets its core keeps at the end, by member index.
    pub wallets: BTreeMap<u32, Wallet>,
    /// Member indexes with a wallet row on its disk.
    pub stored_wallets: BTreeSet<u32>,
    /// Settlement marks on its disk (for wallets it does not keep):
    /// member index -> (settled, settled_above).
    pub stored_marks: BTreeMap<u32, (u64, Vec<u64>)>,
    /// Times it crashed (and restarted from its disk).
    pub crashes: u64,
    /// Its core's counters since its last start: refusals by reason, and
    /// duplicates.
    pub rejected: BTreeMap<String, u64>,
    pub duplicates: u64,
    /// Requests it refused over the whole run, by (requester index, reason).
    pub requests_refused: BTreeMap<(u32, String), u64>,
}

impl NodeRow {
    /// How many messages of one refusal reason (`"kind: reason"`) it counted.
    pub fn refused(&self, reason: &str) -> u64 {
        self.rejected.get(reason).copied().unwrap_or(0)
    }

    /// How many requests of `requester` it refused for `reason`.
    pub fn refused_requests_of(&self, requester: usize, reason: &str) -> u64 {
        self.requests_refused
            .get(&(requester as u32, reason.to_string()))
            .copied()
            .unwrap_or(0)
    }
}

/// One purchase honest nodes committed.
#[derive(Debug, Clone)]
pub struct PurchaseRow {
    pub requester: u32,
    /// The requester's wallet version it committed.
    pub version: u64,
    pub provider: u32,
    pub price: u64,
    /// The honest nodes that committed it (those keeping the requester's wallet).
    pub committed_by: BTreeSet<usize>,
    /// From `Core::buy` to the requester's own commit, in ms of simulated
    /// time (`None`: the requester did not commit it itself).
    pub requester_latency_ms: Option<u64>,
    /// The `ok` of its contract run once its provider finished it (or
    /// refused it, which refunds).
    pub run_ok: Option<bool>,
    /// Its verdict as honest nodes settled it: `true` paid the provider,
    /// `false` refunded the requester, `None` still in escrow.
    pub verdict: Option<bool>,
}

/// One wallet in a report.
#[derive(Debug, Clone, Serialize)]
pub struct WalletRow {
    pub member: String,
    pub byzantine: bool,
    pub version: u64,
    pub balance_units: u64,
    pub spendable_units: u64,
    pub shares: u64,
    pub received_units: u64,
    pub state: String,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// A failure message that says how to replay it.
pub fn replay_hint(seed: u64) -> String {
    format!("replay with WALLANCE_SIM_SEED={seed}")
}

/// The seeds a test runs: `WALLANCE_SIM_SEED` alone when set; else
/// `WALLANCE_SIM_SEEDS=N` seeds from the range's start; else `seeds`.
pub fn seeds_from_env(seeds: std::ops::Range<u64>) -> Vec<u64> {
    let var = |name: &str| std::env::var(name).ok().and_then(|s| s.trim().parse::<u64>().ok());
    match (var("WALLANCE_SIM_SEED"), var("WALLANCE_SIM_SEEDS")) {
        (Some(seed), _) => vec![seed],
        (None, Some(n)) => (seeds.start..seeds.start.saturating_add(n)).collect(),
        (None, None) => seeds.collect(),
    }
}

#[derive(Debug)]
enum Payload {
    Msg(Rc<Message>),
    Bytes(Rc<Vec<u8>>),
}

#[derive(Debug)]
enum Ev {
    /// `adv`: 0 for honest traffic, 1 for a message the network adversary
    /// injected, and above for the copies of one burst of duplicates.
    Arrive {
        to: usize,
        epoch: u32,
        payload: Payload,
        adv: u32,
    },
    Process {
        to: usize,
        epoch: u32,
        payload: Payload,
        adv: u32,
    },
    Timer {
        node: usize,
        epoch: u32,
    },
    Share {
        node: usize,
    },
    Buy {
        node: usize,
    },
    Crash,
    Restart {
        node: usize,
    },
    Partition,
    Heal,
    Attack {
        node: usize,
    },
    LatencyBuy {
        n: usize,
    },
    Adversary,
}

struct SimNode {
    key: Keypair,
    core: Option<Core>,
    /// The store as reads see it: every batch committed.
    disk: Snapshot,
    /// The store as a crash leaves it: batches up to the last durable one.
    /// A batch without `Change::needs_durability` is committed without
    /// fsync, as the node does, and a crash loses it with every such batch
    /// after the last durable commit.
    synced: Snapshot,
    /// Batches committed without fsync since the last durable one.
    lazy: Vec<Batch>,
    config: CoreConfig,
    epoch: u32,
    skew_ms: i64,
    byzantine: bool,
    light: bool,
    cpu_free_us: u64,
    /// What arrived while the node was busy and waits for it, verified as
    /// one batch when it gets to the first of them (`CpuModel::batch_verify`).
    queued: Vec<Rc<Message>>,
    rx_free_us: u64,
    timer_at_us: u64,
    crash_after_persist: bool,
    side: u8,
    sent_msgs: u64,
    sent_bytes: u64,
    recv_bytes: u64,
    seen_requests: Vec<Request>,
    replay: Vec<Rc<Message>>,
    crashes: u64,
    /// Requests it refused, by (requester idx, reason), over the whole run.
    requests_refused: BTreeMap<(u32, String), u64>,
    /// A Byzantine node's view of the votes, by decision: what it can put
    /// in a second certificate.
    votes_seen: HashMap<Hash, BTreeMap<u32, CertVote>>,
}

struct Decided {
    decision: Hash,
    request_id: Hash,
    price: u64,
    provider: u32,
    created_us: u64,
    requester_commit_us: Option<u64>,
    /// When the latest honest node committed it.
    last_commit_us: u64,
    commits: HashSet<usize>,
}

/// One simulated network.
#[allow(missing_debug_implementations)]
pub struct Sim {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    now_us: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Ev>,
    nodes: Vec<SimNode>,
    membership: Membership,
    /// (requester idx, version) -> what was decided, for every honest commit.
    decided: HashMap<(u32, u64), Decided>,
    /// (requester idx, version) -> State after it.
    chain: HashMap<(u32, u64), Hash>,
    /// Certificates issued, by (requester idx, version).
    certs: HashMap<(u32, u64), (u64, u32, Vec<u32>)>,
    runs_done: HashMap<(u32, u64), u32>,
    /// The `ok` of each finished run, by (requester idx, version).
    runs_ok: HashMap<(u32, u64), bool>,
    messages_lost: u64,
    messages_duplicated: u64,
    /// Purchase -> its verdict (true: the provider was paid), as the first
    /// honest node settled it; every other honest node must settle the same.
    verdicts: HashMap<Hash, bool>,
    request_owner: HashMap<Hash, usize>,
    created_us: HashMap<Hash, u64>,
    purchases_started: u64,
    committed_after_heal: HashSet<usize>,
    last_buy_error: HashMap<usize, String>,
    crashes: u64,
    lazy_batches_lost: u64,
    partitions: u64,
    steps: u64,
    violations: Vec<String>,
    partitioned: bool,
    workload_until_us: u64,
    /// When an honest node last committed anything.
    last_honest_commit_us: u64,
    recorder: Recorder,
    injected: BTreeMap<String, u64>,
    violation_classes: BTreeMap<String, u64>,
    panics: u64,
    /// Contract runs asked for, by (requester idx, version).
    run_events: HashMap<(u32, u64), u32>,
    /// Injected messages honest nodes handled, and what they sent in answer.
    adversary_delivered: u64,
    adversary_answers: u64,
    /// What the node being stepped is handling, for violation messages.
    handling: String,
    /// Per burst of duplicates: copies, copies handled, answers to the
    /// first, answers in all.
    bursts: Vec<(u64, u64, u64, u64)>,
    money_checks: u64,
    liveness_checks: u64,
}

/// One message (of any kind, however crafted) may make an honest node send
/// at most this many: a fetch is answered in bounded pieces.
const MAX_ANSWERS_PER_MESSAGE: u64 = 256;
/// On average over a run, what an injected message may make a node send.
const MAX_MEAN_ANSWERS: f64 = 2.0;

thread_local! {
    /// True while this thread is inside a guarded core call.
    static IN_CORE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs (once per process) a panic hook that stays silent for panics
/// inside guarded core calls and defers to the previous hook otherwise.
fn quiet_panics_in_cores() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_CORE.with(|c| c.get()) {
                previous(info);
            }
        }));
    });
}

const PROVIDER: usize = 0;
const SERVICES: [(&str, u64); 2] = [("espresso", 2 * UNITS_PER_COIN), ("radio", 3 * UNITS_PER_COIN)];

impl Sim {
    pub fn new(cfg: SimConfig) -> Self {
        assert!(cfg.nodes >= 1, "at least one node");
        assert!(
            3 * cfg.byzantine < cfg.nodes,
            "Byzantine members must stay below a third"
        );
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let keys: Vec<Keypair> = (0..cfg.nodes).map(|_| Keypair::from_seed(rng.r#gen())).collect();
        let membership = Membership::new(keys.iter().map(|k| k.id()).collect()).expect("distinct keys");
        let mut params = cfg.params.clone();
        if matches!(cfg.mode, Mode::Latency { .. }) {
            params.initial_units = 100 * UNITS_PER_COIN;
        }
        let n = cfg.nodes;
        // Byzantine members are the last ones; light nodes just before them.
        let nodes = keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| {
                let byzantine = i >= n - cfg.byzantine;
                let light = !byzantine && i >= n - cfg.byzantine - cfg.light && i != PROVIDER;
                let mut tracked: Option<std::collections::HashSet<u32>> =
                    light.then(|| (0..n as u32).filter(|j| j % 2 == 0 || *j == i as u32).collect());
                // At scale every member is a light node keeping only the
                // wallets the measured purchases touch: 10 000 full nodes
                // would hold 10^8 wallets.
                if let Mode::Latency { purchases, observers } = cfg.mode
                    && n > 64
                {
                    let mut keep: std::collections::HashSet<u32> =
                        (0..=(observers + purchases).min(n - 1) as u32).collect();
                    keep.insert(i as u32);
                    tracked = Some(keep);
                }
                let drawn = if cfg.faults.max_clock_skew_ms > 0 {
                    rng.gen_range(-(cfg.faults.max_clock_skew_ms as i64)..=cfg.faults.max_clock_skew_ms as i64)
                } else {
                    0
                };
                let skew = cfg
                    .faults
                    .skews_ms
                    .iter()
                    .find(|(node, _)| *node == i)
                    .map_or(drawn, |(_, ms)| *ms);
                SimNode {
                    key,
                    core: None,
                    disk: Snapshot::default(),
                    synced: Snapshot::default(),
                    lazy: Vec::new(),
                    config: CoreConfig {
                        params: params.clone(),
                        membership: membership.clone(),
                        tracked,
                    },
                    epoch: 0,
                    skew_ms: skew,
                    byzantine,
                    light,
                    cpu_free_us: 0,
                    queued: Vec::new(),
                    rx_free_us: 0,
                    timer_at_us: u64::MAX,
                    crash_after_persist: false,
                    side: 0,
                    sent_msgs: 0,
                    sent_bytes: 0,
                    recv_bytes: 0,
                    seen_requests: Vec::new(),
                    replay: Vec::new(),
                    crashes: 0,
                    requests_refused: BTreeMap::new(),
                    votes_seen: HashMap::default(),
                }
            })
            .collect();
        let mut sim = Self {
            workload_until_us: cfg.duration_ms * 1000,
            last_honest_commit_us: 0,
            rng,
            now_us: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: HashMap::default(),
            nodes,
            membership,
            decided: HashMap::default(),
            chain: HashMap::default(),
            certs: HashMap::default(),
            runs_done: HashMap::default(),
            runs_ok: HashMap::default(),
            messages_lost: 0,
            messages_duplicated: 0,
            verdicts: HashMap::default(),
            request_owner: HashMap::default(),
            created_us: HashMap::default(),
            purchases_started: 0,
            committed_after_heal: HashSet::default(),
            last_buy_error: HashMap::default(),
            crashes: 0,
            lazy_batches_lost: 0,
            partitions: 0,
            steps: 0,
            violations: Vec::new(),
            partitioned: false,
            recorder: Recorder::default(),
            injected: BTreeMap::new(),
            violation_classes: BTreeMap::new(),
            panics: 0,
            run_events: HashMap::default(),
            adversary_delivered: 0,
            adversary_answers: 0,
            handling: String::new(),
            bursts: Vec::new(),
            money_checks: 0,
            liveness_checks: 0,
            cfg,
        };
        for i in 0..n {
            sim.start_node(i);
        }
        sim.boot();
        sim
    }

    fn at(&mut self, time_us: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((time_us, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn node_now_ms(&self, i: usize) -> u64 {
        (self.now_us / 1000).saturating_add_signed(self.nodes[i].skew_ms)
    }

    fn start_node(&mut self, i: usize) {
        let now = self.node_now_ms(i);
        let node = &mut self.nodes[i];
        node.epoch += 1;
        node.queued.clear();
        node.timer_at_us = u64::MAX;
        node.cpu_free_us = self.now_us;
        node.rx_free_us = self.now_us;
        node.core = Some(Core::new(node.config.clone(), node.key.clone(), node.disk.clone(), now));
        if i == PROVIDER || Some(i) == self.byzantine_provider() {
            let offers = SERVICES
                .iter()
                .map(|(name, price)| ServiceOffer {
                    name: (*name).to_string(),
                    price: *price,
                    contract_hash: wallance_core::crypto::sha256(&[name.as_bytes()]),
                })
                .collect();
            self.nodes[i]
                .core
                .as_mut()
                .expect("just started")
                .set_services(now, offers);
        }
        self.drain(i);
    }

    fn boot(&mut self) {
        let n = self.cfg.nodes;
        match self.cfg.mode {
            Mode::Full => {
                for i in 0..n {
                    let t = self.rng.gen_range(0..self.cfg.share_interval_ms.max(1) * 1000);
                    self.at(t, Ev::Share { node: i });
                    let t = 1_000_000 + self.rng.gen_range(0..self.cfg.buy_interval_ms.max(1) * 1000);
                    self.at(t, Ev::Buy { node: i });
                    if self.nodes[i].byzantine {
                        let t = self.rng.gen_range(0..1_000_000);
                        self.at(t, Ev::Attack { node: i });
                    }
                }
                if let Some(every) = self.cfg.faults.crash_every_ms {
                    let t = self.rng.gen_range(0..every * 1000);
                    self.at(t, Ev::Crash);
                }
                if let Some(every) = self.cfg.faults.partition_every_ms {
                    let t = self.rng.gen_range(0..every * 1000);
                    self.at(t, Ev::Partition);
                }
                if self.cfg.adversary.is_some() {
                    self.at(500_000, Ev::Adversary);
                }
            }
            Mode::Latency { .. } => {
                // Let the provider's announcement reach everybody first.
                self.at(2_000_000, Ev::LatencyBuy { n: 0 });
            }
        }
    }

    /// Runs to the end and checks everything.
    pub fn run(mut self) -> Report {
        let mut end_us = (self.cfg.duration_ms + self.cfg.quiet_ms) * 1000;
        // "Once quiet" means no honest commit for `SETTLE_US`: a request of a
        // Byzantine member can gather its quorum at any time (its votes
        // withheld, then sent; there is no deadline), and the nodes that
        // missed that quorum need a few sync intervals to catch up. The run
        // goes on, at most one more quiet period, until that holds.
        const SETTLE_US: u64 = 10_000_000;
        let hard_end_us = end_us + self.cfg.quiet_ms * 1000;
        while let Some(&Reverse((t, seq))) = self.queue.peek() {
            if t > end_us {
                let settled_at = self.last_honest_commit_us + SETTLE_US;
                if settled_at > end_us && settled_at <= hard_end_us {
                    end_us = settled_at;
                    continue;
                }
                break;
            }
            self.queue.pop();
            self.now_us = t;
            let ev = self.events.remove(&seq).expect("every queued seq has an event");
            self.step(ev);
            self.steps += 1;
            if self.violation_classes.values().sum::<u64>() > 100_000 {
                break;
            }
        }
        self.now_us = self.now_us.max(end_us);
        self.final_checks();
        self.report()
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Arrive {
                to,
                epoch,
                payload,
                adv,
            } => {
                if self.nodes[to].epoch != epoch || self.nodes[to].core.is_none() {
                    return;
                }
                let busy = self.nodes[to].cpu_free_us > self.now_us;
                let batch = match &payload {
                    Payload::Msg(m) if self.cfg.cpu.batch_verify && busy && batched(m) => {
                        let first = self.nodes[to].queued.is_empty();
                        self.nodes[to].queued.push(m.clone());
                        Some(first)
                    }
                    _ => None,
                };
                let cost = self.cpu_cost(&payload, batch);
                let node = &mut self.nodes[to];
                let start = node.cpu_free_us.max(self.now_us);
                node.cpu_free_us = start + cost;
                let done = node.cpu_free_us;
                self.at(
                    done,
                    Ev::Process {
                        to,
                        epoch,
                        payload,
                        adv,
                    },
                );
            }
            Ev::Process {
                to,
                epoch,
                payload,
                adv,
            } => {
                if self.nodes[to].epoch != epoch {
                    return;
                }
                let sent_before = self.nodes[to].sent_msgs;
                let forged_vote = match &payload {
                    Payload::Msg(m) => match &**m {
                        Message::Vote(v) => v.check(self.cfg.params.vote_difficulty).is_err(),
                        _ => false,
                    },
                    Payload::Bytes(_) => false,
                };
                let now = self.node_now_ms(to);
                let node = &mut self.nodes[to];
                let Some(core) = node.core.as_mut() else {
                    return;
                };
                // The first of a batch: verify the whole batch at once.
                if let Payload::Msg(m) = &payload
                    && node.queued.iter().any(|q| Rc::ptr_eq(q, m))
                {
                    let batch: Vec<Message> = node.queued.drain(..).map(|q| (*q).clone()).collect();
                    if let Err(panic) = Self::guarded(|| core.preverify(&batch)) {
                        self.panicked(to, "batch", &panic);
                        return;
                    }
                }
                let kind = match &payload {
                    Payload::Msg(m) => m.kind(),
                    Payload::Bytes(_) => "bytes",
                };
                let requester = match &payload {
                    Payload::Msg(m) => match &**m {
                        Message::Request(r) => self.membership.index_of(&r.requester),
                        _ => None,
                    },
                    Payload::Bytes(_) => None,
                };
                let result = match payload {
                    Payload::Msg(m) => {
                        if let Message::Request(r) = &*m
                            && node.byzantine
                            && node.seen_requests.len() < 256
                        {
                            node.seen_requests.push(r.clone());
                        }
                        if let Message::Vote(v) = &*m
                            && node.byzantine
                            && let Some(voter_idx) = self.membership.index_of(&v.voter)
                        {
                            if node.votes_seen.len() > 1_024 {
                                node.votes_seen.clear();
                            }
                            node.votes_seen.entry(v.decision()).or_default().insert(
                                voter_idx,
                                CertVote {
                                    voter_idx,
                                    nonce: v.nonce,
                                    sig: v.sig,
                                },
                            );
                        }
                        if node.byzantine && node.replay.len() < 64 {
                            node.replay.push(m.clone());
                        }
                        Self::guarded(|| core.handle_message(now, (*m).clone()))
                    }
                    Payload::Bytes(b) => Self::guarded(|| core.handle_bytes(now, &b)),
                };
                self.handling = format!("{} {kind}", if adv > 0 { "an injected" } else { "a" });
                let reject = match result {
                    Err(panic) => {
                        self.panicked(to, kind, &panic);
                        return;
                    }
                    Ok(r) => r.err(),
                };
                if let (Some(requester), Some(r)) = (requester, &reject) {
                    *self.nodes[to]
                        .requests_refused
                        .entry((requester, r.reason.to_string()))
                        .or_default() += 1;
                }
                self.drain(to);
                self.handling.clear();
                let honest = !self.nodes[to].byzantine;
                if honest
                    && self.cfg.check_blame
                    && forged_vote
                    && let Some(r) = reject
                    && r.reason.contains("equivoca")
                {
                    // Evidence: an honest member is never blamed for a forgery.
                    self.violate(
                        "false-blame",
                        format!(
                            "node {to} counted a vote with a bad signature as equivocation ({})",
                            r.reason
                        ),
                    );
                }
                if adv > 0 && honest {
                    // Amplification: what one injected message made a node send.
                    let sent = self.nodes[to].sent_msgs - sent_before;
                    self.adversary_delivered += 1;
                    self.adversary_answers += sent;
                    if let Some(b) = (adv as usize).checked_sub(2).and_then(|k| self.bursts.get_mut(k)) {
                        // (copies, handled, answers to the first, answers in all)
                        if b.1 == 0 {
                            b.2 = sent;
                        }
                        b.1 += 1;
                        b.3 += sent;
                        let (copies, handled, first, all) = *b;
                        // Duplicates must not multiply work: beyond the
                        // first copy, at most one message per duplicate.
                        if handled == copies && all - first > copies - 1 {
                            self.violate(
                                "amplification (duplicates)",
                                format!(
                                    "node {to} sent {all} messages in answer to {copies} copies of one {kind} ({first} for the first)"
                                ),
                            );
                        }
                    }
                    if sent > MAX_ANSWERS_PER_MESSAGE {
                        self.violate(
                            "amplification",
                            format!("node {to} sent {sent} messages in answer to one injected {kind}"),
                        );
                    }
                }
            }
            Ev::Timer { node, epoch } => {
                if self.nodes[node].epoch != epoch || self.nodes[node].timer_at_us != self.now_us {
                    return;
                }
                self.nodes[node].timer_at_us = u64::MAX;
                let now = self.node_now_ms(node);
                if let Some(core) = self.nodes[node].core.as_mut() {
                    if let Err(panic) = Self::guarded(|| core.handle_timeout(now)) {
                        self.panicked(node, "timeout", &panic);
                        return;
                    }
                    self.drain(node);
                }
            }
            Ev::Share { node } => {
                if self.now_us < self.workload_until_us {
                    let now = self.node_now_ms(node);
                    let value = self.rng.gen_range(15.0..30.0);
                    if let Some(core) = self.nodes[node].core.as_mut() {
                        core.publish_share(now, "temperature", value);
                        self.drain(node);
                    }
                    let next = self.now_us + self.cfg.share_interval_ms * 1000;
                    self.at(next, Ev::Share { node });
                }
            }
            Ev::Buy { node } => {
                if self.now_us < self.workload_until_us {
                    self.buy(node);
                    let jitter = self.rng.gen_range(0..self.cfg.buy_interval_ms.max(1) * 1000);
                    let next = self.now_us + self.cfg.buy_interval_ms * 500 + jitter;
                    self.at(next, Ev::Buy { node });
                }
            }
            Ev::Crash => self.crash_random(),
            Ev::Restart { node } => {
                if self.nodes[node].core.is_none() {
                    self.start_node(node);
                }
            }
            Ev::Partition => self.partition(),
            Ev::Heal => {
                self.partitioned = false;
                for n in &mut self.nodes {
                    n.side = 0;
                }
            }
            Ev::Attack { node } => {
                if self.now_us < self.workload_until_us {
                    self.attack(node);
                    let next = self.now_us + self.rng.gen_range(100_000..600_000);
                    self.at(next, Ev::Attack { node });
                }
            }
            Ev::LatencyBuy { n } => self.latency_buy(n),
            Ev::Adversary => self.adversary_step(),
        }
    }

    /// Calls into a core, turning a panic into an error (silently: the
    /// panic is reported as a violation, not printed).
    fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, Box<dyn std::any::Any + Send>> {
        quiet_panics_in_cores();
        IN_CORE.with(|c| c.set(true));
        let r = catch_unwind(AssertUnwindSafe(f));
        IN_CORE.with(|c| c.set(false));
        r
    }

    /// A core call panicked: a violation. The node's memory is no longer
    /// trustworthy, so it restarts from its disk as after a crash (the run
    /// goes on and reports everything else it finds).
    fn panicked(&mut self, i: usize, kind: &str, panic: &Box<dyn std::any::Any + Send>) {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        self.panics += 1;
        // One class per kind and message, so a sweep lists every distinct panic.
        let what_short: String = what.chars().take(60).collect();
        self.violate(
            &format!("panic ({kind}: {what_short})"),
            format!("node {i} panicked handling a {kind}: {what}"),
        );
        self.crashes += 1;
        self.lose_lazy(i);
        let node = &mut self.nodes[i];
        node.core = None;
        node.epoch += 1;
        node.queued.clear();
        node.timer_at_us = u64::MAX;
        let t = self.now_us + 500_000;
        self.at(t, Ev::Restart { node: i });
    }

    /// Records a violation: every one is counted by class, and the first
    /// few distinct messages of each class are kept.
    fn violate(&mut self, class: &str, msg: String) {
        let n = self.violation_classes.entry(class.to_string()).or_default();
        *n += 1;
        let shown = self
            .violations
            .iter()
            .filter(|v| v.starts_with(&format!("[{class}]")))
            .count();
        let line = format!("[{class}] {msg}");
        if shown < 4 && !self.violations.contains(&line) {
            self.violations.push(line);
        }
    }

    fn byzantine_provider(&self) -> Option<usize> {
        (self.cfg.byzantine_provider && self.cfg.byzantine > 0).then(|| self.cfg.nodes - self.cfg.byzantine)
    }

    /// `batch`: `None` when verified alone, `Some(first)` when in a batch
    /// (`first`: it opens the batch, and pays its fixed cost).
    fn cpu_cost(&self, payload: &Payload, batch: Option<bool>) -> u64 {
        let c = &self.cfg.cpu;
        let verify = |sigs: u64| match batch {
            None => sigs * c.verify_us,
            Some(first) => sigs * c.batch_sig_us + if first { c.batch_fixed_us } else { 0 },
        };
        match payload {
            Payload::Bytes(_) => c.base_us,
            Payload::Msg(m) => match &**m {
                Message::Certificate(cert) if c.certificate_votes_verified => {
                    c.base_us + verify(cert.votes.len() as u64 + 2)
                }
                Message::Certificate(_) => c.base_us,
                Message::Request(_) => c.base_us + verify(1) + c.sign_us,
                _ => c.base_us + verify(1),
            },
        }
    }

    /// Carries out a node's outputs.
    fn drain(&mut self, i: usize) {
        let mut runs = Vec::new();
        loop {
            let Some(core) = self.nodes[i].core.as_mut() else {
                return;
            };
            let Some(out) = core.poll_output() else {
                break;
            };
            match out {
                Output::Persist(batch) => {
                    for change in &batch {
                        if let Change::RunDone { idx, version, ok, .. } = change {
                            *self.runs_done.entry((*idx, *version)).or_default() += 1;
                            self.runs_ok.insert((*idx, *version), *ok);
                        }
                    }
                    self.persist(i, batch);
                    if self.nodes[i].crash_after_persist {
                        // Killed after the write, before any send.
                        self.nodes[i].crash_after_persist = false;
                        self.crash(i);
                        return;
                    }
                }
                Output::Send(m) => self.send(i, m),
                Output::Run(cert) => self.on_run(i, cert, &mut runs),
                Output::Event(e) => self.on_event(i, e),
            }
        }
        if !runs.is_empty() {
            let now = self.node_now_ms(i);
            for cert in runs {
                let idx = self.membership.index_of(&cert.request.requester).expect("member");
                let version = cert.new_version();
                let ok = !self.contract_fails(idx, version);
                let body = if ok {
                    format!("{} brewed for {}", cert.request.service, cert.request.requester)
                } else {
                    format!("{} failed: out of beans", cert.request.service)
                };
                if let Some(core) = self.nodes[i].core.as_mut()
                    && let Err(panic) = Self::guarded(|| core.contract_done(now, idx, version, ok, &body, Vec::new()))
                {
                    self.panicked(i, "contract_done", &panic);
                    return;
                }
            }
            self.drain(i);
            return;
        }
        let timeout_us = self.nodes[i]
            .core
            .as_ref()
            .map(|c| c.poll_timeout())
            .unwrap_or(u64::MAX);
        // Back from the node's skewed clock to simulated time.
        let at_us = (timeout_us.saturating_add_signed(-self.nodes[i].skew_ms))
            .saturating_mul(1000)
            .max(self.now_us + 1);
        if at_us < self.nodes[i].timer_at_us {
            self.nodes[i].timer_at_us = at_us;
            let epoch = self.nodes[i].epoch;
            self.at(at_us, Ev::Timer { node: i, epoch });
        }
    }

    /// Whether the contract run of (requester, version) fails: a function
    /// of the seed, so the run after a crash fails the same way.
    fn contract_fails(&self, idx: u32, version: u64) -> bool {
        if self.cfg.contract_failure <= 0.0 {
            return false;
        }
        let h = wallance_core::crypto::sha256(&[
            b"sim/contract-fails",
            &self.cfg.seed.to_le_bytes(),
            &idx.to_le_bytes(),
            &version.to_le_bytes(),
        ]);
        let draw = u64::from_le_bytes(h[..8].try_into().expect("8 bytes")) as f64 / u64::MAX as f64;
        draw < self.cfg.contract_failure
    }

    /// The core asked node `i` to run a contract (`Output::Run`).
    fn on_run(&mut self, i: usize, cert: Box<Certificate>, runs: &mut Vec<Certificate>) {
        let idx = self.membership.index_of(&cert.request.requester).expect("member");
        let voters = cert.votes.iter().map(|v| v.voter_idx).collect();
        let provider = self.membership.index_of(&cert.request.provider).expect("member");
        self.certs
            .insert((idx, cert.new_version()), (cert.request.price, provider, voters));
        *self.run_events.entry((idx, cert.new_version())).or_default() += 1;
        if (*self.runs_done.get(&(idx, cert.new_version())).unwrap_or(&0)) > 0 {
            self.violate(
                "rerun",
                format!(
                    "node {i}: contract for wallet {idx} version {} asked to run again after it ran ({}, handling {})",
                    cert.new_version(),
                    if cert.is_signed() { "signed" } else { "proof" },
                    if self.handling.is_empty() {
                        "a timer or restart"
                    } else {
                        &self.handling
                    },
                ),
            );
        }
        runs.push(*cert);
    }

    fn on_event(&mut self, i: usize, e: Event) {
        let honest = !self.nodes[i].byzantine;
        match e {
            Event::Committed {
                requester,
                version,
                request_id,
                remaining,
                price,
                provider,
                ..
            } => {
                if !honest {
                    return;
                }
                let idx = self.membership.index_of(&requester).expect("member");
                let decision = decision_id(&request_id, remaining);
                let now = self.now_us;
                let created = self.created_us.get(&request_id).copied().unwrap_or(now);
                let owner = self.request_owner.get(&request_id).copied();
                let entry = self.decided.entry((idx, version)).or_insert_with(|| Decided {
                    decision,
                    request_id,
                    price,
                    provider: 0,
                    created_us: created,
                    requester_commit_us: None,
                    last_commit_us: now,
                    commits: HashSet::default(),
                });
                entry.provider = self.membership.index_of(&provider).unwrap_or(0);
                if entry.decision != decision {
                    self.violate(
                        "double-spend",
                        format!("double spend: node {i} committed another decision for wallet {idx} version {version}"),
                    );
                    return;
                }
                entry.commits.insert(i);
                entry.last_commit_us = entry.last_commit_us.max(now);
                self.last_honest_commit_us = self.last_honest_commit_us.max(now);
                if owner == Some(i) && entry.requester_commit_us.is_none() {
                    entry.requester_commit_us = Some(now);
                    if self.partitioned_free_since().is_some_and(|h| created >= h) {
                        self.committed_after_heal.insert(i);
                    }
                }
                self.check_node(i);
            }
            Event::Settled { purchase, paid, .. } => {
                if !honest {
                    return;
                }
                let first = *self.verdicts.entry(purchase).or_insert(paid);
                if first != paid {
                    self.violate(
                        "verdict-split",
                        format!("node {i} settled a purchase the other way than another honest node"),
                    );
                }
            }
            Event::Outcome(_) | Event::ServicesChanged => {}
        }
    }

    /// The time from which no fault is injected any more.
    fn partitioned_free_since(&self) -> Option<u64> {
        let until =
            self.cfg.faults.until_ms * 1000 + self.cfg.faults.down_ms.1 * 1000 + self.cfg.faults.partition_ms.1 * 1000;
        (self.now_us >= until).then_some(until)
    }

    fn targets(&self, from: usize, m: &Message) -> Vec<usize> {
        let all = || (0..self.nodes.len()).filter(|j| *j != from).collect::<Vec<_>>();
        let Mode::Latency { observers, .. } = self.cfg.mode else {
            return all();
        };
        // Small networks can afford full delivery, which lets a member buy
        // again (everybody follows its commits).
        if self.nodes.len() <= 64 {
            return all();
        }
        let watchers = |owner: Option<usize>| {
            let mut v: Vec<usize> = (0..observers.min(self.nodes.len())).collect();
            v.push(PROVIDER);
            v.extend(owner);
            v.sort_unstable();
            v.dedup();
            v.retain(|j| *j != from);
            v
        };
        match m {
            Message::Vote(v) => watchers(self.request_owner.get(&v.request_id).copied()),
            Message::Certificate(c) => watchers(self.request_owner.get(&c.request.id()).copied()),
            Message::Request(_) | Message::Announce(_) | Message::Share(_) => all(),
            _ => watchers(None),
        }
    }

    fn send(&mut self, from: usize, m: Message) {
        if Some(from) == self.byzantine_provider()
            && let Message::Certificate(c) = &m
            && c.is_signed()
            && c.request.provider == self.nodes[from].key.id()
        {
            self.bent_certificate(from, c);
            return;
        }
        if self.nodes[from].byzantine
            && let Some(m2) = self.corrupt_own(from, &m)
        {
            match m2 {
                Some(m2) => self.broadcast(from, Payload::Msg(Rc::new(m2))),
                None => return,
            }
        }
        self.broadcast(from, Payload::Msg(Rc::new(m)));
    }

    fn broadcast(&mut self, from: usize, payload: Payload) {
        let targets = match &payload {
            Payload::Msg(m) => self.targets(from, m),
            Payload::Bytes(_) => (0..self.nodes.len()).filter(|j| *j != from).collect(),
        };
        self.send_to(from, payload, &targets);
    }

    fn send_to(&mut self, from: usize, payload: Payload, targets: &[usize]) {
        if let (Some(adv), Payload::Msg(m)) = (&self.cfg.adversary, &payload) {
            self.recorder.record(adv, &mut self.rng, m);
        }
        let len = match &payload {
            Payload::Msg(m) => m.encode().map(|b| b.len()).unwrap_or(0),
            Payload::Bytes(b) => b.len(),
        } as u64
            + self.cfg.net.overhead_bytes;
        self.nodes[from].sent_msgs += 1;
        self.nodes[from].sent_bytes += len;
        for &to in targets {
            if self.nodes[to].side != self.nodes[from].side {
                continue;
            }
            let copies = if self.rng.gen_bool(self.cfg.net.loss) {
                self.messages_lost += 1;
                0
            } else if self.rng.gen_bool(self.cfg.net.duplicate) {
                self.messages_duplicated += 1;
                2
            } else {
                1
            };
            for _ in 0..copies {
                let latency = self
                    .rng
                    .gen_range(self.cfg.net.latency_us_min..=self.cfg.net.latency_us_max);
                let node = &mut self.nodes[to];
                let wire_us = len * 8 * 1_000_000 / self.cfg.net.downlink_bits_per_s.max(1);
                let start = node.rx_free_us.max(self.now_us + latency);
                node.rx_free_us = start + wire_us;
                node.recv_bytes += len;
                let arrive = node.rx_free_us;
                let epoch = node.epoch;
                let p = match &payload {
                    Payload::Msg(m) => Payload::Msg(m.clone()),
                    Payload::Bytes(b) => Payload::Bytes(b.clone()),
                };
                self.at(
                    arrive,
                    Ev::Arrive {
                        to,
                        epoch,
                        payload: p,
                        adv: 0,
                    },
                );
            }
        }
    }

    fn buy(&mut self, i: usize) {
        let now = self.node_now_ms(i);
        let (service, price) = SERVICES[self.rng.gen_range(0..SERVICES.len())];
        // With two providers, buy from either at random.
        let provider = match self.byzantine_provider() {
            Some(b) => {
                let p = if self.rng.gen_bool(0.5) { b } else { PROVIDER };
                self.membership.id(p as u32)
            }
            None => None,
        };
        let Some(core) = self.nodes[i].core.as_mut() else {
            return;
        };
        match core.buy(now, service, provider, price, vec![("size".into(), "small".into())]) {
            Ok(request) => {
                let id = request.id();
                self.request_owner.insert(id, i);
                self.created_us.insert(id, self.now_us);
                self.purchases_started += 1;
                if self.nodes[i].byzantine {
                    self.double_spend(i, &request);
                }
                self.drain(i);
            }
            Err(e) => {
                self.last_buy_error.insert(i, e.to_string());
                self.drain(i)
            }
        }
    }

    fn latency_buy(&mut self, n: usize) {
        let Mode::Latency { purchases, observers } = self.cfg.mode else {
            return;
        };
        if n >= purchases {
            return;
        }
        // A fresh requester each time, never the provider. Above 64 members
        // requesters are never observers either: observers receive other
        // purchases' certificates (rewards) that non-observing voters never
        // see, so their next purchase would wait for a catch-up the
        // observer-only delivery does not carry.
        let requester = if self.nodes.len() > 64 {
            (observers + 1 + n).min(self.nodes.len() - 1)
        } else {
            1 + (n % (self.nodes.len() - 1).max(1)).min(self.nodes.len() - 1)
        };
        self.buy(requester);
        self.at(self.now_us + 10_000_000, Ev::LatencyBuy { n: n + 1 });
    }

    fn crash_random(&mut self) {
        let Some(every) = self.cfg.faults.crash_every_ms else {
            return;
        };
        if self.now_us >= self.cfg.faults.until_ms * 1000 {
            return;
        }
        let candidates: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].core.is_some() && !self.nodes[*i].byzantine)
            .filter(|i| self.cfg.crash_provider || *i != PROVIDER)
            .collect();
        let down = (0..self.nodes.len()).filter(|i| self.nodes[*i].core.is_none()).count();
        // Keep a quorum of honest nodes up most of the time, but not always.
        if !candidates.is_empty() && down < self.nodes.len() / 3 {
            let i = candidates[self.rng.gen_range(0..candidates.len())];
            if self.rng.gen_bool(self.cfg.faults.crash_mid_output) {
                self.nodes[i].crash_after_persist = true;
            } else {
                self.crash(i);
            }
        }
        let next = self.now_us + self.rng.gen_range(1..=2 * every * 1000);
        self.at(next, Ev::Crash);
    }

    /// Commits `batch` as the node's store does: durable with its lazy
    /// predecessors when it needs durability, else without fsync.
    fn persist(&mut self, i: usize, batch: Batch) {
        let node = &mut self.nodes[i];
        node.disk.apply(&batch);
        if batch.iter().any(Change::needs_durability) || node.lazy.len() >= LAZY_BATCHES_MAX {
            for b in node.lazy.drain(..) {
                node.synced.apply(&b);
            }
            node.synced.apply(&batch);
        } else {
            node.lazy.push(batch);
        }
    }

    /// The node's store after a crash: what was synced, nothing lazy.
    fn lose_lazy(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        self.lazy_batches_lost += node.lazy.len() as u64;
        node.lazy.clear();
        node.disk = node.synced.clone();
    }

    fn crash(&mut self, i: usize) {
        self.crashes += 1;
        self.lose_lazy(i);
        let node = &mut self.nodes[i];
        node.crashes += 1;
        node.core = None;
        node.epoch += 1;
        node.queued.clear();
        node.timer_at_us = u64::MAX;
        let (lo, hi) = self.cfg.faults.down_ms;
        let t = self.now_us + self.rng.gen_range(lo..=hi.max(lo)) * 1000;
        self.at(t, Ev::Restart { node: i });
    }

    fn partition(&mut self) {
        let Some(every) = self.cfg.faults.partition_every_ms else {
            return;
        };
        if self.now_us >= self.cfg.faults.until_ms * 1000 {
            return;
        }
        if !self.partitioned {
            self.partitioned = true;
            self.partitions += 1;
            for n in &mut self.nodes {
                n.side = u8::from(self.rng.gen_bool(0.3));
            }
            let (lo, hi) = self.cfg.faults.partition_ms;
            let t = self.now_us + self.rng.gen_range(lo..=hi.max(lo)) * 1000;
            self.at(t, Ev::Heal);
        }
        let next = self.now_us + self.rng.gen_range(1..=2 * every * 1000);
        self.at(next, Ev::Partition);
    }

    // ------------------------------------------------------------ Byzantine

    /// How a Byzantine node bends its own outputs: `Some(None)` withholds,
    /// `Some(Some(m))` sends `m` as well.
    fn corrupt_own(&mut self, i: usize, m: &Message) -> Option<Option<Message>> {
        let Message::Vote(v) = m else {
            return None;
        };
        match self.rng.gen_range(0..3) {
            0 => Some(None), // withhold its vote
            1 => {
                // Equivocate: a second, conflicting vote.
                let key = self.nodes[i].key.clone();
                let bad = Vote::build(
                    &key,
                    v.request_id,
                    v.remaining + UNITS_PER_COIN,
                    self.cfg.params.vote_difficulty,
                )?;
                Some(Some(Message::Vote(bad)))
            }
            _ => None,
        }
    }

    /// The Byzantine provider's certificate: withheld, sent twice with two
    /// different vote sets (each a valid quorum, one of them every vote it
    /// holds), or sent as it is.
    fn bent_certificate(&mut self, i: usize, a: &Certificate) {
        let kind = self.rng.gen_range(0..4);
        if kind == 0 {
            adversary::count(&mut self.injected, "byzantine-provider/withheld-certificate");
            return;
        }
        let a_msg = Payload::Msg(Rc::new(Message::Certificate(Box::new(a.clone()))));
        let b = (kind < 3).then(|| self.second_certificate(i, a)).flatten();
        let Some(b) = b else {
            self.broadcast(i, a_msg);
            return;
        };
        let b_msg = Payload::Msg(Rc::new(Message::Certificate(Box::new(b))));
        let others: Vec<usize> = (0..self.nodes.len()).filter(|j| *j != i).collect();
        if kind == 1 {
            // Half the nodes get one, half the other.
            let (x, y): (Vec<usize>, Vec<usize>) = others.iter().partition(|_| self.rng.gen_bool(0.5));
            self.send_to(i, a_msg, &x);
            self.send_to(i, b_msg, &y);
            adversary::count(&mut self.injected, "byzantine-provider/equivocated-split");
        } else {
            // Everybody gets both, the second one first.
            self.send_to(i, b_msg, &others);
            self.send_to(i, a_msg, &others);
            adversary::count(&mut self.injected, "byzantine-provider/equivocated-both");
        }
    }

    /// Another valid certificate for `a`'s decision, signed by its provider:
    /// every valid vote the provider holds, or else the highest-indexed
    /// quorum of them.
    fn second_certificate(&mut self, i: usize, a: &Certificate) -> Option<Certificate> {
        let id = a.request.id();
        let decision = decision_id(&id, a.remaining);
        let mut all: BTreeMap<u32, CertVote> = a.votes.iter().map(|v| (v.voter_idx, *v)).collect();
        if let Some(seen) = self.nodes[i].votes_seen.get(&decision) {
            for (idx, v) in seen {
                let Some(voter) = self.membership.id(*idx) else {
                    continue;
                };
                let vote = Vote {
                    voter,
                    request_id: id,
                    remaining: a.remaining,
                    nonce: v.nonce,
                    sig: v.sig,
                };
                if vote.check(self.cfg.params.vote_difficulty).is_ok() {
                    all.insert(*idx, *v);
                }
            }
        }
        let every: Vec<CertVote> = all.values().copied().collect();
        let votes = if every != a.votes {
            every
        } else {
            let mut top = Vec::new();
            let mut weight = 0;
            for v in every.iter().rev() {
                top.push(*v);
                weight += self.membership.weight(v.voter_idx);
                if self.membership.is_quorum(&self.cfg.params, weight) {
                    break;
                }
            }
            top.reverse();
            if top == a.votes || !self.membership.is_quorum(&self.cfg.params, weight) {
                return None;
            }
            top
        };
        let mut b = Certificate {
            request: a.request.clone(),
            remaining: a.remaining,
            votes,
            provider_sig: Default::default(),
        };
        b.provider_sig = self.nodes[i].key.sign(&b.digest());
        Some(b)
    }

    /// The Byzantine provider tells a requester its contract ran when it
    /// never did, or equivocates: "served" to some members, "refused" to
    /// others (their verdict votes then split; no node may settle it
    /// differently from another).
    fn forged_outcome(&mut self, i: usize) {
        let n = self.nodes[i].seen_requests.len();
        if n == 0 {
            return;
        }
        let r = self.nodes[i].seen_requests[self.rng.gen_range(0..n)].clone();
        let Some(to) = self.membership.index_of(&r.requester) else {
            return;
        };
        let version = r.version.wrapping_add(1);
        if self.rng.gen_bool(0.5) {
            let mut halves: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
            for j in (0..self.nodes.len()).filter(|j| *j != i) {
                halves[usize::from(self.rng.gen_bool(0.5))].push(j);
            }
            for (ok, targets) in [(false, &halves[0]), (true, &halves[1])] {
                let o = Outcome::new(&self.nodes[i].key, r.requester, r.id(), version, ok, "equivocated");
                self.send_to(i, Payload::Msg(Rc::new(Message::Outcome(o))), targets);
            }
            adversary::count(&mut self.injected, "byzantine-provider/outcome-equivocation");
            return;
        }
        let ok = self.rng.gen_bool(0.5);
        let o = Outcome::new(
            &self.nodes[i].key,
            r.requester,
            r.id(),
            version,
            ok,
            "served (never ran)",
        );
        adversary::count(&mut self.injected, "byzantine-provider/outcome-never-run");
        self.send_to(i, Payload::Msg(Rc::new(Message::Outcome(o))), &[to as usize]);
    }

    // ------------------------------------------------------------ adversary

    /// One move of the network adversary, and the time of the next.
    fn adversary_step(&mut self) {
        let Some(adv) = self.cfg.adversary.clone() else {
            return;
        };
        let end_us = (self.cfg.duration_ms + self.cfg.quiet_ms) * 1000;
        if self.now_us + adv.stop_before_end_ms * 1000 >= end_us {
            return;
        }
        let slow = if self.now_us < self.workload_until_us {
            1
        } else {
            adv.quiet_slowdown.max(1)
        };
        let next = self.now_us + self.rng.gen_range(adv.every_ms.0..=adv.every_ms.1.max(adv.every_ms.0)) * 1000 * slow;
        self.at(next, Ev::Adversary);
        let Some(m) = self.recorder.pick(&mut self.rng) else {
            return;
        };
        match adversary::pick_action(&adv, &mut self.rng) {
            Action::Replay => {
                let to = self.adversary_target(&m);
                adversary::count(&mut self.injected, format!("replay/{}", m.kind()));
                self.inject(to, Payload::Msg(m), 1);
            }
            Action::Burst => {
                let to = self.adversary_target(&m);
                let copies = self.rng.gen_range(adv.burst.0..=adv.burst.1.max(adv.burst.0));
                adversary::count(&mut self.injected, format!("burst/{}", m.kind()));
                self.bursts.push((copies as u64, 0, 0, 0));
                let id = self.bursts.len() as u32 + 1;
                for _ in 0..copies {
                    self.inject(to, Payload::Msg(m.clone()), id);
                }
            }
            Action::Mutate => {
                let keys: Vec<Keypair> = self
                    .nodes
                    .iter()
                    .filter(|n| n.byzantine)
                    .map(|n| n.key.clone())
                    .collect();
                let membership = self.membership.clone();
                let params = self.cfg.params.clone();
                let k = Knowledge {
                    membership: &membership,
                    params: &params,
                    byzantine_keys: &keys,
                };
                let (m2, label) = match &*m {
                    // A signed certificate stripped to a proof, sent to its
                    // provider: "you owe this run" (long after it ran).
                    Message::Certificate(c) if c.is_signed() && self.rng.gen_bool(0.3) => {
                        let mut c = (**c).clone();
                        c.provider_sig = Default::default();
                        (Message::Certificate(Box::new(c)), "certificate.as-proof".to_string())
                    }
                    _ => adversary::mutate(&mut self.rng, &k, &m),
                };
                let to = self.adversary_target(&m2);
                adversary::count(&mut self.injected, format!("mutate/{label}"));
                self.inject(to, Payload::Msg(Rc::new(m2)), 1);
            }
            Action::DigestFlood => {
                let from = self
                    .membership
                    .id(self.rng.gen_range(0..self.nodes.len() as u32))
                    .expect("member");
                let d = wallance_core::msg::SyncDigest {
                    from,
                    time_ms: self.node_now_ms(0),
                    digest: self.rng.r#gen(),
                    sig: Default::default(),
                };
                adversary::count(&mut self.injected, "digest-flood");
                let m = Rc::new(Message::Digest(d));
                for to in 0..self.nodes.len() {
                    self.inject(to, Payload::Msg(m.clone()), 1);
                }
            }
            Action::Flip => {
                let Some((bytes, how)) = adversary::flip_bytes(&mut self.rng, &m) else {
                    return;
                };
                let to = self.rng.gen_range(0..self.nodes.len());
                adversary::count(&mut self.injected, format!("flip/{}/{how}", m.kind()));
                self.inject(to, Payload::Bytes(Rc::new(bytes)), 1);
            }
        }
    }

    /// Any node at random; half the time the one a message is addressed to.
    fn adversary_target(&mut self, m: &Message) -> usize {
        let addressed = match m {
            Message::HeadsRequest(h) => Some(h.to),
            Message::Heads(h) => Some(h.to),
            Message::CertFetch(f) => Some(f.to),
            Message::ShareFetch(f) => Some(f.to),
            Message::Outcome(o) => Some(o.requester),
            Message::Certificate(c) if self.rng.gen_bool(0.3) => Some(c.request.provider),
            _ => None,
        };
        if let Some(id) = addressed
            && (matches!(m, Message::Certificate(_)) || self.rng.gen_bool(0.5))
            && let Some(i) = self.membership.index_of(&id)
        {
            return i as usize;
        }
        self.rng.gen_range(0..self.nodes.len())
    }

    /// Delivers straight to one node: the adversary is on every link, so
    /// partitions do not stop it.
    fn inject(&mut self, to: usize, payload: Payload, adv: u32) {
        let latency = self
            .rng
            .gen_range(self.cfg.net.latency_us_min..=self.cfg.net.latency_us_max);
        let epoch = self.nodes[to].epoch;
        self.at(
            self.now_us + latency,
            Ev::Arrive {
                to,
                epoch,
                payload,
                adv,
            },
        );
    }

    fn double_spend(&mut self, i: usize, first: &Request) {
        let key = self.nodes[i].key.clone();
        let draft = RequestDraft {
            service: first.service.clone(),
            provider: first.provider,
            price: first.price + 1,
            announce_seq: 0,
            contract_hash: [0; 32],
            time_ms: first.time_ms,
            version: first.version,
            state: first.state,
            shares_upto: first.shares_upto,
            received_upto: first.received_upto,
            params: vec![],
        };
        if let Ok(second) = Request::build(&key, draft, self.cfg.params.difficulty) {
            let half: Vec<usize> = (0..self.nodes.len()).filter(|j| *j != i && j % 2 == 0).collect();
            self.send_to(i, Payload::Msg(Rc::new(Message::Request(second))), &half);
        }
    }

    /// An espresso request draft on node `i`'s own wallet.
    fn own_draft(&self, i: usize, now: u64, price: u64) -> Option<(Wallet, RequestDraft)> {
        let w = self.nodes[i].core.as_ref()?.wallet(&self.nodes[i].key.id())?.clone();
        let draft = RequestDraft {
            service: "espresso".into(),
            provider: self.membership.id(PROVIDER as u32).expect("provider"),
            price,
            announce_seq: 0,
            contract_hash: [0; 32],
            time_ms: now,
            version: w.version,
            state: w.state,
            shares_upto: 0,
            received_upto: 0,
            params: vec![],
        };
        Some((w, draft))
    }

    fn attack(&mut self, i: usize) {
        if Some(i) == self.byzantine_provider() && self.rng.gen_bool(0.25) {
            self.forged_outcome(i);
            return;
        }
        let key = self.nodes[i].key.clone();
        let p = self.cfg.params.clone();
        let now = self.node_now_ms(i);
        let victim = self
            .membership
            .id(self.rng.gen_range(0..self.cfg.nodes as u32))
            .expect("index in range");
        let msg: Payload = match self.rng.gen_range(0..9) {
            0 => {
                // A vote in another member's name.
                let Some(r) = self.nodes[i].seen_requests.last() else {
                    return;
                };
                let mut v = Vote::build(&key, r.id(), 1_000 * UNITS_PER_COIN, p.vote_difficulty).expect("solvable");
                v.voter = victim;
                Payload::Msg(Rc::new(Message::Vote(v)))
            }
            1 => {
                // A share claiming to be from someone else.
                let mut s = Share::new(&key, 1_000_000, now, "forged", 1.0);
                s.sender = victim;
                Payload::Msg(Rc::new(Message::Share(s)))
            }
            2 => {
                // A request without valid work (difficulty checked at 1+).
                let Some((_, draft)) = self.own_draft(i, now, 2 * UNITS_PER_COIN) else {
                    return;
                };
                let mut r = Request::build(&key, draft, 0).expect("difficulty 0");
                r.nonce = r.nonce.wrapping_add(1);
                if wallance_core::pow::meets(&r.id(), p.difficulty) {
                    return;
                }
                Payload::Msg(Rc::new(Message::Request(r)))
            }
            3 => {
                // Garbage and truncated encodings.
                let mut bytes: Vec<u8> = (0..self.rng.gen_range(0..300)).map(|_| self.rng.r#gen()).collect();
                if let Some(r) = self.nodes[i].seen_requests.last()
                    && let Some(enc) = Message::Request(r.clone()).encode()
                    && self.rng.gen_bool(0.5)
                {
                    bytes = enc[..self.rng.gen_range(0..enc.len())].to_vec();
                }
                Payload::Bytes(Rc::new(bytes))
            }
            4 => {
                // Replay something old.
                let n = self.nodes[i].replay.len();
                if n == 0 {
                    return;
                }
                Payload::Msg(self.nodes[i].replay[self.rng.gen_range(0..n)].clone())
            }
            5 => {
                // A vote with a wrong "Remaining" for a real request.
                let Some(r) = self.nodes[i].seen_requests.last() else {
                    return;
                };
                let v = Vote::build(&key, r.id(), 777 * UNITS_PER_COIN, p.vote_difficulty).expect("solvable");
                Payload::Msg(Rc::new(Message::Vote(v)))
            }
            6 => {
                // A certificate with its remaining balance changed.
                let c = (0..self.cfg.nodes as u32).find_map(|idx| {
                    let w = self.nodes[i].core.as_ref()?.wallets().nth(idx as usize)?.version;
                    self.nodes[i].core.as_ref()?.certificate(idx, w).cloned()
                });
                let Some(mut c) = c else { return };
                c.remaining += 50 * UNITS_PER_COIN;
                Payload::Msg(Rc::new(Message::Certificate(Box::new(c))))
            }
            7 => {
                // Spam: a valid request the requester cannot afford.
                let Some((w, mut draft)) = self.own_draft(i, now, 1_000_000 * UNITS_PER_COIN) else {
                    return;
                };
                draft.shares_upto = w.shares_seen;
                draft.received_upto = w.received;
                let Ok(r) = Request::build(&key, draft, p.difficulty) else {
                    return;
                };
                Payload::Msg(Rc::new(Message::Request(r)))
            }
            _ => {
                // A request on a State the requester does not have.
                let Some((_, mut draft)) = self.own_draft(i, now, 2 * UNITS_PER_COIN) else {
                    return;
                };
                draft.state = [9; 32];
                let Ok(r) = Request::build(&key, draft, p.difficulty) else {
                    return;
                };
                Payload::Msg(Rc::new(Message::Request(r)))
            }
        };
        self.broadcast(i, msg);
    }

    // ----------------------------------------------------------- invariants

    /// State chain and conservation for every wallet a node keeps.
    fn check_node(&mut self, i: usize) {
        let Some(core) = self.nodes[i].core.as_ref() else {
            return;
        };
        let params = core.params().clone();
        let mut problems = Vec::new();
        for (idx, id) in self.membership.members().iter().enumerate() {
            let Some(w) = core.wallet(id) else { continue };
            let idx = idx as u32;
            // Valid State chain: every version's State follows from the previous.
            if w.version > 0 {
                match (self.decided.get(&(idx, w.version)), self.prev_state(idx, w.version)) {
                    (Some(d), Some(prev)) => {
                        let expect = next_state(&prev, &d.decision);
                        self.chain.entry((idx, w.version)).or_insert(expect);
                        if w.state != expect {
                            problems.push((
                                "state-chain",
                                format!("node {i}: wallet {idx} v{} has a State off its chain", w.version),
                            ));
                        }
                    }
                    _ => continue, // adopted from a certificate before any honest commit we saw
                }
            }
            // Conservation: the balance is exactly what was earned minus what
            // was spent (price, plus the reward under the current rule).
            let rule = self.cfg.money;
            let spent: Option<u64> = (1..=w.version)
                .map(|v| self.decided.get(&(idx, v)).map(|d| rule.cost(&params, d.price)))
                .sum();
            if let Some(spent) = spent {
                let earned = params.initial_units + params.share_credit(0, w.shares_at_state) + w.received_at_state;
                if earned != w.balance + spent {
                    problems.push((
                        "conservation",
                        format!(
                            "node {i}: wallet {idx} v{}: earned {earned} != balance {} + spent {spent}",
                            w.version, w.balance
                        ),
                    ));
                }
            }
        }
        for (class, p) in problems {
            self.violate(class, p);
        }
    }

    /// Money is created only by shares: on an honest full node, the credits
    /// of all wallets are exactly what the commits it settled paid out
    /// (price to the provider, reward to the recipient).
    fn check_global_conservation(&mut self, i: usize) {
        if self.cfg.money != MoneyRule::RequesterPaysReward || self.nodes[i].light || self.nodes[i].byzantine {
            return;
        }
        let Some(core) = self.nodes[i].core.as_ref() else {
            return;
        };
        let reward = core.params().reward_units;
        let wallets: Vec<Wallet> = core.wallets().cloned().collect();
        let open: HashSet<Hash> = core.escrows().map(|e| e.purchase).collect();
        let mut received: u128 = 0;
        let mut paid: u128 = 0;
        let mut per_member = vec![0u128; self.membership.len()];
        for (idx, w) in wallets.iter().enumerate() {
            received += u128::from(w.received);
            let top = w.settled.max(w.settled_above.iter().copied().max().unwrap_or(0));
            if top > w.version.max(self.decided.len() as u64) {
                let msg = format!("node {i}: wallet {idx} v{} has settled version {top}", w.version);
                self.violate("settled-beyond-version", msg);
                return;
            }
            for v in 1..=top {
                if !w.is_settled(v) {
                    continue;
                }
                let Some(d) = self.decided.get(&(idx as u32, v)) else {
                    return; // settled a commit no honest node reported: cannot price it
                };
                paid += u128::from(reward);
                per_member[self.membership.reward_recipient(&d.request_id) as usize] += u128::from(reward);
                // The price: held while its escrow is open here, then paid
                // to the provider or refunded by the verdict.
                if d.price == 0 || open.contains(&d.request_id) {
                    continue;
                }
                let Some(&to_provider) = self.verdicts.get(&d.request_id) else {
                    self.violate(
                        "verdict-unknown",
                        format!("node {i}: wallet {idx} v{v} left escrow with no verdict settled by an honest node"),
                    );
                    return;
                };
                paid += u128::from(d.price);
                let to = if to_provider { d.provider } else { idx as u32 };
                per_member[to as usize] += u128::from(d.price);
            }
        }
        self.money_checks += 1;
        if received != paid {
            self.violate(
                "money-created",
                format!("node {i}: wallets received {received} units in all, the commits it settled paid {paid}"),
            );
        }
        let wrong: Vec<(usize, u64, u128)> = wallets
            .iter()
            .enumerate()
            .filter(|(m, w)| u128::from(w.received) != per_member[*m])
            .map(|(m, w)| (m, w.received, per_member[m]))
            .collect();
        for (m, got, want) in wrong.into_iter().take(3) {
            self.violate(
                "credit-misdirected",
                format!("node {i}: member {m} received {got}, its settled payments and rewards sum to {want}"),
            );
        }
    }

    fn prev_state(&self, idx: u32, version: u64) -> Option<Hash> {
        if version == 1 {
            let id = self.membership.id(idx)?;
            return Some(Wallet::genesis(id, &self.cfg.params).state);
        }
        self.chain.get(&(idx, version - 1)).copied().or_else(|| {
            // Recompute from the decisions when the chain entry is missing.
            let mut s = Wallet::genesis(self.membership.id(idx)?, &self.cfg.params).state;
            for v in 1..version {
                s = next_state(&s, &self.decided.get(&(idx, v))?.decision);
            }
            Some(s)
        })
    }

    fn final_checks(&mut self) {
        let n = self.nodes.len();
        // Exactly once: at most one run per purchase, whoever the provider...
        let mut runs: Vec<_> = self.runs_done.iter().map(|(k, c)| (*k, *c)).collect();
        runs.sort_unstable();
        for ((idx, v), count) in runs {
            if count > 1 {
                self.violate("rerun", format!("contract for wallet {idx} v{v} ran {count} times"));
            }
        }
        // ... and at least one for every purchase from an honest provider.
        let mut owed: Vec<(u32, u64, u32)> = self.decided.iter().map(|((i, v), d)| (*i, *v, d.provider)).collect();
        owed.sort_unstable();
        for (idx, v, provider) in owed {
            let provider_honest = !self.nodes[provider as usize].byzantine;
            let ran = self.runs_done.get(&(idx, v)).copied().unwrap_or(0);
            // A purchase that reached its provider after half its outcome
            // window is refunded instead of run.
            let refunded = self
                .decided
                .get(&(idx, v))
                .and_then(|d| self.verdicts.get(&d.request_id))
                .is_some_and(|paid| !paid);
            if provider_honest && ran == 0 && !refunded {
                self.violate(
                    "run-missing",
                    format!("contract for wallet {idx} v{v} (provider {provider}) never ran"),
                );
            }
        }
        if !matches!(self.cfg.mode, Mode::Full) {
            return;
        }
        for i in 0..n {
            if self.nodes[i].core.is_none() {
                self.violate("down", format!("node {i} is still down at the end"));
            }
            self.check_node(i);
            self.check_global_conservation(i);
        }
        // Agreement on every field of every wallet, once quiet. The one
        // field that may honestly differ is a Byzantine member's
        // `shares_seen`: shares are credited without consensus, and a
        // Byzantine member can send a share to some nodes only and refuse
        // the fetches of the others. Everything else is fixed by commits
        // (version, state, balance, shares_at_state, received_at_state) or
        // by the settlement every honest node makes of every commit
        // (received, settled, settled_above), which no member can withhold
        // once the commit is known.
        let honest: Vec<usize> = (0..n)
            .filter(|i| !self.nodes[*i].byzantine && !self.nodes[*i].light)
            .collect();
        let Some(&first) = honest.first() else { return };
        let reference: Vec<Wallet> = self.nodes[first]
            .core
            .as_ref()
            .map(|c| c.wallets().cloned().collect())
            .unwrap_or_default();
        let mut problems = Vec::new();
        for i in (0..n).filter(|i| !self.nodes[*i].byzantine && *i != first) {
            let Some(core) = self.nodes[i].core.as_ref() else {
                continue;
            };
            let light = self.nodes[i].light;
            for b in core.wallets() {
                let Some(a) = reference.iter().find(|r| r.id == b.id) else {
                    continue;
                };
                let owner = self.membership.index_of(&a.id).expect("member") as usize;
                let mut b = b.clone();
                if self.nodes[owner].byzantine {
                    b.shares_seen = a.shares_seen;
                }
                if light && self.cfg.money == MoneyRule::LegacyMintedRewards {
                    // Under the legacy rule a light node does not catch up
                    // on certificates of wallets it does not keep, so it may
                    // credit less than a full node (that rule's known
                    // limit), never more: more is a certificate credited
                    // twice (unless a Byzantine provider signed two
                    // certificates with different voters: the legacy rule's
                    // other known limit).
                    if b.received > a.received && !self.cfg.byzantine_provider {
                        problems.push((
                            "light-recredit",
                            format!(
                                "light node {i} credited wallet {owner} {} units, the full node {first} {}",
                                b.received, a.received
                            ),
                        ));
                    }
                    b.received = a.received;
                    b.settled = a.settled;
                    b.settled_above.clone_from(&a.settled_above);
                }
                if *a != b {
                    let class = if light { "light-disagreement" } else { "disagreement" };
                    problems.push((
                        class,
                        format!(
                            "wallet {owner} once quiet: node {first} has {}, node {i} has {}",
                            show_wallet(a),
                            show_wallet(&b)
                        ),
                    ));
                }
            }
        }
        // A light node settles every commit once, whoever the requester:
        // for the wallets it does not keep, its settlement marks are the
        // full node's `settled` and `settled_above`.
        if self.cfg.money == MoneyRule::RequesterPaysReward {
            for i in (0..n).filter(|i| self.nodes[*i].light && !self.nodes[*i].byzantine) {
                let Some(core) = self.nodes[i].core.as_ref() else {
                    continue;
                };
                for a in &reference {
                    if core.wallet(&a.id).is_some() {
                        continue;
                    }
                    let owner = self.membership.index_of(&a.id).expect("member");
                    let marks = self.nodes[i].disk.marks.get(&owner).cloned().unwrap_or_default();
                    if marks != (a.settled, a.settled_above.clone()) {
                        problems.push((
                            "light-disagreement",
                            format!(
                                "wallet {owner} once quiet: node {first} settled {} above {:?}, light node {i}'s marks {} above {:?}",
                                a.settled, a.settled_above, marks.0, marks.1
                            ),
                        ));
                    }
                }
            }
        }
        for (class, p) in problems {
            self.violate(class, p);
        }
        // Bounded memory once quiet: the quiet period outlasts the request
        // TTL, so a node holds its own stuck request and the re-sent
        // requests of other stuck requesters (at most 2 per member), and
        // their votes (at most 4 decisions per member: an equivocating
        // voter adds one).
        let members = self.membership.len();
        for &i in (0..n).filter(|i| !self.nodes[*i].byzantine).collect::<Vec<_>>().iter() {
            let Some(core) = self.nodes[i].core.as_ref() else {
                continue;
            };
            let (r, d) = (core.pending_requests().count(), core.pending_decisions());
            if r > 2 * members || d > 4 * members {
                self.violate(
                    "memory",
                    format!(
                        "node {i} still holds {r} requests and {d} vote groups once quiet (bound {} and {})",
                        2 * members,
                        4 * members
                    ),
                );
            }
        }
        if self.adversary_delivered > 100 {
            let mean = self.adversary_answers as f64 / self.adversary_delivered as f64;
            if mean > MAX_MEAN_ANSWERS {
                self.violate(
                    "amplification",
                    format!(
                        "{} injected messages made honest nodes send {} ({mean:.1} each, bound {MAX_MEAN_ANSWERS})",
                        self.adversary_delivered, self.adversary_answers
                    ),
                );
            }
        }
        // Liveness after healing, for every honest requester whose wallet
        // enough honest nodes follow to make a quorum without Byzantine
        // votes (light nodes abstain on wallets they do not keep).
        let honest_all: Vec<usize> = (0..n).filter(|i| !self.nodes[*i].byzantine).collect();
        if self.partitioned_free_since().is_some()
            && self.cfg.duration_ms * 1000 > self.partitioned_free_since().unwrap_or(0) + 5_000_000
        {
            for &i in &honest_all {
                let followers: u64 = honest_all
                    .iter()
                    .filter(|j| {
                        self.nodes[**j]
                            .config
                            .tracked
                            .as_ref()
                            .is_none_or(|t| t.contains(&(i as u32)))
                            || **j == i
                    })
                    .map(|j| self.membership.weight(*j as u32))
                    .sum();
                if !self.membership.is_quorum(&self.cfg.params, followers) {
                    continue;
                }
                self.liveness_checks += 1;
                if !self.committed_after_heal.contains(&i) {
                    let why = self.last_buy_error.get(&i).cloned().unwrap_or_default();
                    let pending = self.nodes[i]
                        .core
                        .as_ref()
                        .map(|c| c.pending_requests().count())
                        .unwrap_or(0);
                    self.violate(
                        "liveness",
                        format!(
                            "node {i}: no purchase committed after the network healed (last refusal: {why}; {pending} pending)"
                        ),
                    );
                }
            }
        }
        if self.decided.is_empty() {
            self.violate("liveness", "no purchase committed at all".into());
        }
    }

    fn report(self) -> Report {
        let mut lat: Vec<f64> = Vec::new();
        let mut lat_all = self.commit_times();
        for d in self.decided.values() {
            if let Some(t) = d.requester_commit_us {
                lat.push((t - d.created_us) as f64 / 1000.0);
            }
        }
        lat.sort_by(f64::total_cmp);
        lat_all.sort_by(f64::total_cmp);
        let n = self.nodes.len() as f64;
        let rejected = self
            .nodes
            .iter()
            .filter(|x| !x.byzantine)
            .filter_map(|x| x.core.as_ref())
            .map(|c| c.stats().rejected.values().sum::<u64>())
            .sum();
        let tallies_adopted = self
            .nodes
            .iter()
            .filter(|x| !x.byzantine)
            .filter_map(|x| x.core.as_ref())
            .map(|c| c.stats().tallies_adopted)
            .sum();
        let (signatures_batched, batches_failed) = self
            .nodes
            .iter()
            .filter(|x| !x.byzantine)
            .filter_map(|x| x.core.as_ref())
            .fold((0, 0), |(b, f), c| {
                (b + c.stats().signatures_batched, f + c.stats().batches_failed)
            });
        let wallets = self
            .nodes
            .iter()
            .find(|x| !x.byzantine && !x.light && x.core.is_some())
            .and_then(|x| x.core.as_ref())
            .map(|core| {
                core.wallets()
                    .map(|w| {
                        let idx = self.membership.index_of(&w.id).expect("member") as usize;
                        WalletRow {
                            member: w.id.short(),
                            byzantine: self.nodes[idx].byzantine,
                            version: w.version,
                            balance_units: w.balance,
                            spendable_units: w.spendable(core.params()),
                            shares: w.shares_seen,
                            received_units: w.received,
                            state: hex::encode(&w.state[..6]),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let honest_cores = || {
            self.nodes
                .iter()
                .filter(|x| !x.byzantine)
                .filter_map(|x| x.core.as_ref())
        };
        let pending_requests_max = honest_cores().map(|c| c.pending_requests().count()).max().unwrap_or(0);
        let pending_decisions_max = honest_cores().map(|c| c.pending_decisions()).max().unwrap_or(0);
        let node_rows = self.node_rows();
        let purchases = self.purchase_rows();
        Report {
            messages_lost: self.messages_lost,
            messages_duplicated: self.messages_duplicated,
            node_rows,
            purchases,
            wallets,
            violation_classes: self.violation_classes,
            injected: self.injected,
            panics: self.panics,
            pending_requests_max,
            pending_decisions_max,
            money_checks: self.money_checks,
            liveness_checks: self.liveness_checks,
            seed: self.cfg.seed,
            nodes: self.cfg.nodes,
            net: self.cfg.net.name.to_string(),
            purchases_started: self.purchases_started,
            commits: self.decided.len() as u64,
            contract_runs: self.runs_done.values().map(|c| u64::from(*c)).sum(),
            p50_ms: percentile(&lat, 0.5),
            p99_ms: percentile(&lat, 0.99),
            p50_all_ms: percentile(&lat_all, 0.5),
            p99_all_ms: percentile(&lat_all, 0.99),
            latency_requester_ms: lat,
            latency_all_ms: lat_all,
            messages_per_node: self.nodes.iter().map(|x| x.sent_msgs as f64).sum::<f64>() / n,
            bytes_sent_per_node: self.nodes.iter().map(|x| x.sent_bytes as f64).sum::<f64>() / n,
            bytes_received_per_node: self.nodes.iter().map(|x| x.recv_bytes as f64).sum::<f64>() / n,
            rejected,
            tallies_adopted,
            signatures_batched,
            batches_failed,
            crashes: self.crashes,
            lazy_batches_lost: self.lazy_batches_lost,
            partitions: self.partitions,
            sim_time_ms: self.now_us / 1000,
            steps: self.steps,
            violations: self.violations,
        }
    }

    fn node_rows(&self) -> Vec<NodeRow> {
        self.nodes
            .iter()
            .map(|node| {
                let index = |w: &Wallet| self.membership.index_of(&w.id).expect("member");
                let wallets = node
                    .core
                    .as_ref()
                    .map(|c| c.wallets().map(|w| (index(w), w.clone())).collect())
                    .unwrap_or_default();
                let stats = node.core.as_ref().map(|c| c.stats().clone()).unwrap_or_default();
                NodeRow {
                    byzantine: node.byzantine,
                    light: node.light,
                    up: node.core.is_some(),
                    skew_ms: node.skew_ms,
                    tracked: node.config.tracked.as_ref().map(|t| t.iter().copied().collect()),
                    wallets,
                    stored_wallets: node.disk.wallets.keys().copied().collect(),
                    stored_marks: node.disk.marks.clone(),
                    crashes: node.crashes,
                    rejected: stats.rejected,
                    duplicates: stats.duplicates,
                    requests_refused: node.requests_refused.clone(),
                }
            })
            .collect()
    }

    fn purchase_rows(&self) -> Vec<PurchaseRow> {
        let mut rows: Vec<PurchaseRow> = self
            .decided
            .iter()
            .map(|(&(requester, version), d)| PurchaseRow {
                requester,
                version,
                provider: d.provider,
                price: d.price,
                committed_by: d.commits.iter().copied().collect(),
                requester_latency_ms: d.requester_commit_us.map(|t| (t - d.created_us) / 1000),
                run_ok: self.runs_ok.get(&(requester, version)).copied(),
                verdict: self.verdicts.get(&d.request_id).copied(),
            })
            .collect();
        rows.sort_unstable_by_key(|p| (p.requester, p.version));
        rows
    }

    /// Per decision every expected node committed, the time from the
    /// request to the last of those commits ("every node has committed":
    /// all honest nodes, or in latency mode the nodes votes reach).
    fn commit_times(&self) -> Vec<f64> {
        self.decided
            .values()
            .filter(|d| d.commits.len() >= self.expected_committers())
            .map(|d| (d.last_commit_us - d.created_us) as f64 / 1000.0)
            .collect()
    }

    fn expected_committers(&self) -> usize {
        match self.cfg.mode {
            Mode::Full => self.nodes.iter().filter(|n| !n.byzantine).count(),
            Mode::Latency { observers, .. } => observers.min(self.nodes.len()),
        }
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// Convenience: build, run, report.
pub fn simulate(cfg: SimConfig) -> Report {
    Sim::new(cfg).run()
}

/// Keys of `n` members as the simulator derives them from `seed`.
pub fn member_ids(n: usize, seed: u64) -> Vec<MemberId> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| Keypair::from_seed(rng.r#gen()).id()).collect()
}

fn show_wallet(w: &Wallet) -> String {
    format!(
        "v{} state {} bal {} shares@state {} recv@state {} shares {} recv {} settled {} above {:?}",
        w.version,
        hex::encode(&w.state[..4]),
        w.balance,
        w.shares_at_state,
        w.received_at_state,
        w.shares_seen,
        w.received,
        w.settled,
        w.settled_above
    )
}

/// A summary that tests print on failure.
pub fn describe(r: &Report) -> String {
    let mut s = format!(
        "seed {} ({}): {} commits, {} runs, {} injected, {} violations {:?}",
        r.seed,
        replay_hint(r.seed),
        r.commits,
        r.contract_runs,
        r.injected.values().sum::<u64>(),
        r.violation_classes.values().sum::<u64>(),
        r.violation_classes
    );
    for v in r.violations.iter().take(40) {
        s.push_str("\n  ");
        s.push_str(v);
    }
    s
}
