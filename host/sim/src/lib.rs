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
//! Time is simulated in microseconds: nothing here reads a clock.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::{BuildHasherDefault, DefaultHasher};

// Fixed hashers: a seed replays to the same run in any process.
type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<DefaultHasher>>;
type HashSet<K> = std::collections::HashSet<K, BuildHasherDefault<DefaultHasher>>;
use std::rc::Rc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use wallance_core::msg::{Certificate, Request, RequestDraft, ServiceOffer, Share, Vote, decision_id};
use wallance_core::wallet::next_state;
use wallance_core::{
    Change, Core, CoreConfig, Event, Hash, Keypair, MemberId, Membership, Message, Output, Params, Snapshot,
    UNITS_PER_COIN, Wallet,
};

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
}

impl Default for CpuModel {
    fn default() -> Self {
        Self {
            verify_us: 31,
            sign_us: 14,
            base_us: 3,
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
        }
    }
}

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
    pub crashes: u64,
    pub partitions: u64,
    pub sim_time_ms: u64,
    pub steps: u64,
    pub violations: Vec<String>,
    /// Every wallet as the first honest full node sees it at the end.
    pub wallets: Vec<WalletRow>,
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

/// The seeds a test runs: `WALLANCE_SIM_SEED` alone when set, else `seeds`.
pub fn seeds_from_env(seeds: std::ops::Range<u64>) -> Vec<u64> {
    match std::env::var("WALLANCE_SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => seeds.collect(),
    }
}

#[derive(Debug)]
enum Payload {
    Msg(Rc<Message>),
    Bytes(Rc<Vec<u8>>),
}

#[derive(Debug)]
enum Ev {
    Arrive { to: usize, epoch: u32, payload: Payload },
    Process { to: usize, epoch: u32, payload: Payload },
    Timer { node: usize, epoch: u32 },
    Share { node: usize },
    Buy { node: usize },
    Crash,
    Restart { node: usize },
    Partition,
    Heal,
    Attack { node: usize },
    LatencyBuy { n: usize },
}

struct SimNode {
    key: Keypair,
    core: Option<Core>,
    disk: Snapshot,
    config: CoreConfig,
    epoch: u32,
    skew_ms: i64,
    byzantine: bool,
    light: bool,
    cpu_free_us: u64,
    rx_free_us: u64,
    timer_at_us: u64,
    crash_after_persist: bool,
    side: u8,
    sent_msgs: u64,
    sent_bytes: u64,
    recv_bytes: u64,
    seen_requests: Vec<Request>,
    replay: Vec<Rc<Message>>,
}

struct Decided {
    decision: Hash,
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
    request_owner: HashMap<Hash, usize>,
    created_us: HashMap<Hash, u64>,
    purchases_started: u64,
    committed_after_heal: HashSet<usize>,
    last_buy_error: HashMap<usize, String>,
    crashes: u64,
    partitions: u64,
    steps: u64,
    violations: Vec<String>,
    partitioned: bool,
    workload_until_us: u64,
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
                let skew = if cfg.faults.max_clock_skew_ms > 0 {
                    rng.gen_range(-(cfg.faults.max_clock_skew_ms as i64)..=cfg.faults.max_clock_skew_ms as i64)
                } else {
                    0
                };
                SimNode {
                    key,
                    core: None,
                    disk: Snapshot::default(),
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
                    rx_free_us: 0,
                    timer_at_us: u64::MAX,
                    crash_after_persist: false,
                    side: 0,
                    sent_msgs: 0,
                    sent_bytes: 0,
                    recv_bytes: 0,
                    seen_requests: Vec::new(),
                    replay: Vec::new(),
                }
            })
            .collect();
        let mut sim = Self {
            workload_until_us: cfg.duration_ms * 1000,
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
            request_owner: HashMap::default(),
            created_us: HashMap::default(),
            purchases_started: 0,
            committed_after_heal: HashSet::default(),
            last_buy_error: HashMap::default(),
            crashes: 0,
            partitions: 0,
            steps: 0,
            violations: Vec::new(),
            partitioned: false,
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
        node.timer_at_us = u64::MAX;
        node.cpu_free_us = self.now_us;
        node.rx_free_us = self.now_us;
        node.core = Some(Core::new(node.config.clone(), node.key.clone(), node.disk.clone(), now));
        if i == PROVIDER {
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
            }
            Mode::Latency { .. } => {
                // Let the provider's announcement reach everybody first.
                self.at(2_000_000, Ev::LatencyBuy { n: 0 });
            }
        }
    }

    /// Runs to the end and checks everything.
    pub fn run(mut self) -> Report {
        let end_us = (self.cfg.duration_ms + self.cfg.quiet_ms) * 1000;
        while let Some(Reverse((t, seq))) = self.queue.pop() {
            if t > end_us {
                break;
            }
            self.now_us = t;
            let ev = self.events.remove(&seq).expect("every queued seq has an event");
            self.step(ev);
            self.steps += 1;
            if self.violations.len() > 20 {
                break;
            }
        }
        self.now_us = self.now_us.max(end_us);
        self.final_checks();
        self.report()
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Arrive { to, epoch, payload } => {
                if self.nodes[to].epoch != epoch || self.nodes[to].core.is_none() {
                    return;
                }
                let cost = self.cpu_cost(&payload);
                let node = &mut self.nodes[to];
                let start = node.cpu_free_us.max(self.now_us);
                node.cpu_free_us = start + cost;
                let done = node.cpu_free_us;
                self.at(done, Ev::Process { to, epoch, payload });
            }
            Ev::Process { to, epoch, payload } => {
                if self.nodes[to].epoch != epoch {
                    return;
                }
                let now = self.node_now_ms(to);
                let node = &mut self.nodes[to];
                let Some(core) = node.core.as_mut() else {
                    return;
                };
                match payload {
                    Payload::Msg(m) => {
                        if let Message::Request(r) = &*m
                            && node.byzantine
                            && node.seen_requests.len() < 256
                        {
                            node.seen_requests.push(r.clone());
                        }
                        if node.byzantine && node.replay.len() < 64 {
                            node.replay.push(m.clone());
                        }
                        let _ = core.handle_message(now, (*m).clone());
                    }
                    Payload::Bytes(b) => {
                        let _ = core.handle_bytes(now, &b);
                    }
                }
                self.drain(to);
            }
            Ev::Timer { node, epoch } => {
                if self.nodes[node].epoch != epoch || self.nodes[node].timer_at_us != self.now_us {
                    return;
                }
                self.nodes[node].timer_at_us = u64::MAX;
                let now = self.node_now_ms(node);
                if let Some(core) = self.nodes[node].core.as_mut() {
                    core.handle_timeout(now);
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
        }
    }

    fn cpu_cost(&self, payload: &Payload) -> u64 {
        let c = &self.cfg.cpu;
        match payload {
            Payload::Bytes(_) => c.base_us,
            Payload::Msg(m) => match &**m {
                Message::Certificate(cert) => c.base_us + c.verify_us * (cert.votes.len() as u64 + 2),
                Message::Request(_) => c.base_us + c.verify_us + c.sign_us,
                _ => c.base_us + c.verify_us,
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
                        if let Change::RunDone { idx, version, .. } = change {
                            *self.runs_done.entry((*idx, *version)).or_default() += 1;
                        }
                    }
                    self.nodes[i].disk.apply(&batch);
                    if self.nodes[i].crash_after_persist {
                        // Killed after the write, before any send.
                        self.nodes[i].crash_after_persist = false;
                        self.crash(i);
                        return;
                    }
                }
                Output::Send(m) => self.send(i, m),
                Output::Event(e) => self.on_event(i, e, &mut runs),
            }
        }
        if !runs.is_empty() {
            let now = self.node_now_ms(i);
            for cert in runs {
                let idx = self.membership.index_of(&cert.request.requester).expect("member");
                let version = cert.new_version();
                let body = format!("{} brewed for {}", cert.request.service, cert.request.requester);
                if let Some(core) = self.nodes[i].core.as_mut() {
                    core.contract_done(now, idx, version, true, &body);
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

    fn on_event(&mut self, i: usize, e: Event, runs: &mut Vec<Certificate>) {
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
                    price,
                    provider: 0,
                    created_us: created,
                    requester_commit_us: None,
                    last_commit_us: now,
                    commits: HashSet::default(),
                });
                entry.provider = self.membership.index_of(&provider).unwrap_or(0);
                if entry.decision != decision {
                    self.violations.push(format!(
                        "double spend: node {i} committed another decision for wallet {idx} version {version}"
                    ));
                    return;
                }
                entry.commits.insert(i);
                entry.last_commit_us = entry.last_commit_us.max(now);
                if owner == Some(i) && entry.requester_commit_us.is_none() {
                    entry.requester_commit_us = Some(now);
                    if self.partitioned_free_since().is_some_and(|h| created >= h) {
                        self.committed_after_heal.insert(i);
                    }
                }
                self.check_node(i);
            }
            Event::RunContract(cert) => {
                let idx = self.membership.index_of(&cert.request.requester).expect("member");
                let voters = cert.votes.iter().map(|v| v.voter_idx).collect();
                let provider = self.membership.index_of(&cert.request.provider).expect("member");
                self.certs
                    .insert((idx, cert.new_version()), (cert.request.price, provider, voters));
                if (*self.runs_done.get(&(idx, cert.new_version())).unwrap_or(&0)) > 0 {
                    self.violations.push(format!(
                        "contract for wallet {idx} version {} asked to run again after it ran",
                        cert.new_version()
                    ));
                }
                runs.push(*cert);
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
                0
            } else if self.rng.gen_bool(self.cfg.net.duplicate) {
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
                self.at(arrive, Ev::Arrive { to, epoch, payload: p });
            }
        }
    }

    fn buy(&mut self, i: usize) {
        let now = self.node_now_ms(i);
        let (service, price) = SERVICES[self.rng.gen_range(0..SERVICES.len())];
        let Some(core) = self.nodes[i].core.as_mut() else {
            return;
        };
        match core.buy(now, service, None, price, vec![("size".into(), "small".into())]) {
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

    fn crash(&mut self, i: usize) {
        self.crashes += 1;
        let node = &mut self.nodes[i];
        node.core = None;
        node.epoch += 1;
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

    fn double_spend(&mut self, i: usize, first: &Request) {
        let key = self.nodes[i].key.clone();
        let draft = RequestDraft {
            service: first.service.clone(),
            provider: first.provider,
            price: first.price + 1,
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
                            problems.push(format!(
                                "node {i}: wallet {idx} v{} has a State off its chain",
                                w.version
                            ));
                        }
                    }
                    _ => continue, // adopted from a certificate before any honest commit we saw
                }
            }
            // Conservation: the balance is exactly what was earned minus what was spent.
            let spent: Option<u64> = (1..=w.version)
                .map(|v| self.decided.get(&(idx, v)).map(|d| params.cost(d.price).unwrap_or(u64::MAX)))
                .sum();
            if let Some(spent) = spent {
                let earned = params.initial_units + params.share_credit(0, w.shares_at_state) + w.received_at_state;
                if earned != w.balance + spent {
                    problems.push(format!(
                        "node {i}: wallet {idx} v{}: earned {earned} != balance {} + spent {spent}",
                        w.version, w.balance
                    ));
                }
            }
        }
        self.violations.extend(problems);
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
        // Exactly-once contract runs.
        for ((idx, v), count) in &self.runs_done {
            if *count > 1 {
                self.violations
                    .push(format!("contract for wallet {idx} v{v} ran {count} times"));
            }
        }
        for ((idx, v), d) in &self.decided {
            let provider_honest = !self.nodes[d.provider as usize].byzantine;
            if provider_honest && self.runs_done.get(&(*idx, *v)).copied().unwrap_or(0) != 1 {
                self.violations.push(format!(
                    "contract for wallet {idx} v{v} ran {} times, expected once",
                    self.runs_done.get(&(*idx, *v)).copied().unwrap_or(0)
                ));
            }
        }
        if !matches!(self.cfg.mode, Mode::Full) {
            return;
        }
        for i in 0..n {
            if self.nodes[i].core.is_none() {
                self.violations.push(format!("node {i} is still down at the end"));
            }
            self.check_node(i);
        }
        // Agreement of honest full nodes once quiet.
        let honest: Vec<usize> = (0..n)
            .filter(|i| !self.nodes[*i].byzantine && !self.nodes[*i].light)
            .collect();
        let Some(&first) = honest.first() else { return };
        let reference: Vec<Wallet> = self.nodes[first]
            .core
            .as_ref()
            .map(|c| c.wallets().cloned().collect())
            .unwrap_or_default();
        for &i in &honest[1..] {
            let Some(core) = self.nodes[i].core.as_ref() else {
                continue;
            };
            for (a, b) in reference.iter().zip(core.wallets()) {
                let owner = self.membership.index_of(&a.id).expect("member") as usize;
                let same = if self.nodes[owner].byzantine {
                    (a.version, a.state, a.balance, a.received) == (b.version, b.state, b.balance, b.received)
                } else {
                    (a.version, a.state, a.balance, a.shares_seen, a.received, a.settled)
                        == (b.version, b.state, b.balance, b.shares_seen, b.received, b.settled)
                };
                if !same {
                    self.violations.push(format!(
                        "disagreement once quiet on wallet {owner}: node {first} has v{} bal {} shares {} recv {} settled {}, node {i} has v{} bal {} shares {} recv {} settled {}",
                        a.version, a.balance, a.shares_seen, a.received, a.settled, b.version, b.balance, b.shares_seen, b.received, b.settled
                    ));
                }
            }
        }
        // Light nodes agree on the wallets they keep.
        for i in (0..n).filter(|i| self.nodes[*i].light) {
            let Some(core) = self.nodes[i].core.as_ref() else {
                continue;
            };
            for w in core.wallets() {
                let Some(r) = reference.iter().find(|r| r.id == w.id) else {
                    continue;
                };
                if (r.version, r.state, r.balance) != (w.version, w.state, w.balance) {
                    let owner = self.membership.index_of(&w.id).expect("member");
                    self.violations
                        .push(format!("light node {i} disagrees on wallet {owner}"));
                }
            }
        }
        // Liveness after healing.
        if self.partitioned_free_since().is_some()
            && self.cfg.duration_ms * 1000 > self.partitioned_free_since().unwrap_or(0) + 5_000_000
        {
            for &i in &honest {
                if !self.committed_after_heal.contains(&i) {
                    let why = self.last_buy_error.get(&i).cloned().unwrap_or_default();
                    let pending = self.nodes[i]
                        .core
                        .as_ref()
                        .map(|c| c.pending_requests().count())
                        .unwrap_or(0);
                    self.violations.push(format!(
                        "node {i}: no purchase committed after the network healed (last refusal: {why}; {pending} pending)"
                    ));
                }
            }
        }
        if self.decided.is_empty() {
            self.violations.push("no purchase committed at all".into());
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
        Report {
            wallets,
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
            crashes: self.crashes,
            partitions: self.partitions,
            sim_time_ms: self.now_us / 1000,
            steps: self.steps,
            violations: self.violations,
        }
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

/// A summary that tests print on failure.
pub fn describe(r: &Report) -> String {
    let mut s = format!(
        "seed {} ({}): {} commits, {} runs, {} violations",
        r.seed,
        replay_hint(r.seed),
        r.commits,
        r.contract_runs,
        r.violations.len()
    );
    for v in r.violations.iter().take(10) {
        s.push_str("\n  ");
        s.push_str(v);
    }
    s
}
