//! `wallance node`: one member of a real network.
//!
//! One thread owns the [`Core`] and is the store's only writer; it runs the
//! loop: take what arrived (DDS samples, API commands, finished contract
//! runs), feed the core, then carry out its outputs — one redb commit for
//! everything the step persisted (with the purchase records it changed),
//! *then* the sends, the contract runs it owes and the events. The DDS
//! reader thread, the HTTP API and the contract worker talk to it only
//! through a channel ([`Cmd`]); they read committed data through a
//! `StoreReader`. So the protocol stays single-threaded and replayable.
//!
//! Contract runs ([`worker`]), purchase records ([`purchases`]) and the
//! virtual sensor ([`sensor`]) are in their own modules.

mod purchases;
mod sensor;
mod view;
mod worker;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tracing::{debug, info, warn};
use wallance_core::msg::{Certificate, ServiceOffer};
use wallance_core::{BuyError, Change, Core, CoreConfig, Event, Hash, Keypair, MemberId, Message, Output};
use wallance_dds::{LogLimiter, Networks, Report, SendError, TopicId, Transport, TransportConfig};
use wallance_runtime::{DeviceGrants, RegistryEvent, Runtime, RuntimeConfig};
use wallance_store::Store;

use crate::cmd::{BuyReply, Cmd, RunDone, now_ms};
use crate::config::{Interfaces, Loaded, NodeConfig, load_or_create_key};
use crate::http::view::{CommitView, ContractState, OutcomeView, SharedView};
use sensor::Sensor;

/// How many commits and outcomes the view lists (newest first).
const SHOWN: usize = 200;

/// Options the `demo` and tests pass besides the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Print one line per commit and outcome on stdout (the demo reads them).
    pub announce_events: bool,
}

pub fn run(config_path: &Path, opts: RunOptions) -> anyhow::Result<()> {
    let loaded = NodeConfig::load(config_path)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("cannot install signal handlers")?;
    }
    Node::start(loaded, opts, stop)?.run()
}

struct Node {
    core: Core,
    key: Keypair,
    store: Store,
    transport: Transport,
    runtime: Runtime,
    registry_events: Receiver<RegistryEvent>,
    _watcher: wallance_runtime::ContractWatcher,
    rx: Receiver<Cmd>,
    net_pending: Arc<AtomicBool>,
    jobs: Sender<Box<Certificate>>,
    sensor: Sensor,
    next_sensor: Instant,
    sensor_period: Option<Duration>,
    view: SharedView,
    loaded: Loaded,
    stop: Arc<AtomicBool>,
    opts: RunOptions,
    commits: VecDeque<Arc<CommitView>>,
    outcomes: VecDeque<Arc<OutcomeView>>,
    /// Outcomes this node produced as a provider (newest first, 200).
    produced: VecDeque<Arc<OutcomeView>>,
    contracts: Vec<ContractState>,
    purchases: purchases::Book,
    acks: Vec<SyncSender<()>>,
    replies: Vec<(BuyReply, Result<Hash, BuyError>)>,
    started: Instant,
    last_view: Instant,
    dirty: bool,
    /// Sends fail per message while a peer holds a reliable window (one
    /// that died without a goodbye, until its lease ends): logged by
    /// (kind, reason) with a count at most every 10 s, not once each.
    send_log: LogLimiter<(&'static str, &'static str)>,
    /// rustdds' own lines are off by default: the peer count is logged here.
    peer_log: crate::logging::PeerLog,
    /// DDS participants discovered, as last read, and when.
    peers: usize,
    peers_checked: Instant,
    /// Readers of announces seen, to send ours again when one appears.
    announce_readers: AnnounceReaders,
    /// Steps waiting for their group's commit (`[store] commit_window_ms`).
    group: Group,
    commit_window: Duration,
    checkpoint: Duration,
    /// Lazy commits since the last durable one, and when that was.
    lazy_pending: bool,
    last_durable: Instant,
    store_commits: StoreCommits,
}

/// Commits the loop made, by kind (`/metrics`).
#[derive(Debug, Default, Clone, Copy)]
pub struct StoreCommits {
    /// With fsync: steps that decided something, groups, checkpoints.
    pub durable: u64,
    /// Without fsync: steps that decided nothing.
    pub lazy: u64,
    /// Steps committed (a durable commit may carry several).
    pub steps: u64,
}

/// Steps whose commit is pending, with everything that must wait for it:
/// what they send, the runs they hand over, the answers to the API. Steps
/// join in order, so nothing goes out ahead of what it depends on.
/// Watches how many readers of announces discovery knows. Every topic is
/// best effort, so a node that joined missed the announces sent before its
/// reader matched: when the count grows, the provider sends its announce
/// again at once and once more `AGAIN` later (the new reader may match our
/// writer a little after we found it), and `AGAIN` after its services
/// change, instead of the joiner waiting for the 30 s re-announce or its
/// first catch-up. A non-member making readers appear and vanish gets at
/// most one announce per `PERIOD` plus the second shots: about 14 a second.
#[derive(Default)]
struct AnnounceReaders {
    known: usize,
    checked: Option<Instant>,
    again_at: Option<Instant>,
}

impl AnnounceReaders {
    /// How often discovery's tables are read.
    const PERIOD: Duration = Duration::from_millis(100);
    /// While discovery goes on each growth moves the second shot, so it
    /// goes out this long after the last reader was found: at 48 nodes,
    /// 1 s here made the services seen everywhere 0.7-0.9 s after every
    /// participant was.
    const AGAIN: Duration = Duration::from_millis(250);

    /// The services changed and the core announced them: once more
    /// `AGAIN` later, for readers that had not matched our writer yet.
    fn announced(&mut self, now: Instant) {
        self.again_at = Some(now + Self::AGAIN);
    }

    /// Whether to re-announce now; reads `count` at most every `PERIOD`.
    fn due(&mut self, now: Instant, count: impl FnOnce() -> usize) -> bool {
        if let Some(t) = self.again_at
            && now >= t
        {
            self.again_at = None;
            return true;
        }
        if self
            .checked
            .is_some_and(|t| now.saturating_duration_since(t) < Self::PERIOD)
        {
            return false;
        }
        self.checked = Some(now);
        let n = count();
        let grew = n > self.known;
        self.known = n;
        if grew {
            self.again_at = Some(now + Self::AGAIN);
        }
        grew
    }
}

#[derive(Default)]
struct Group {
    batch: Vec<Change>,
    durable: bool,
    steps: u64,
    sends: Vec<Message>,
    /// Boxed as the core hands them out and the worker takes them.
    #[allow(clippy::vec_box)]
    runs: Vec<Box<Certificate>>,
    events: Vec<Event>,
    acks: Vec<SyncSender<()>>,
    replies: Vec<(BuyReply, Result<Hash, BuyError>)>,
    /// Set when the first durable step joins (only with a commit window).
    deadline: Option<Instant>,
}

impl Node {
    fn start(loaded: Loaded, opts: RunOptions, stop: Arc<AtomicBool>) -> anyhow::Result<Self> {
        let data_dir = &loaded.data_dir;
        std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
        let key = load_or_create_key(data_dir)?;
        let membership = loaded.network.membership()?;
        let Some(my_idx) = membership.index_of(&key.id()) else {
            bail!(
                "this node's key {} is not a member of the network in {}: add it there (wallance init writes both)",
                key.id().to_hex(),
                loaded.config.network.display()
            );
        };
        let store_path = data_dir.join("wallance.redb");
        let options = wallance_store::StoreOptions::default().with_quick_repair(loaded.config.store.quick_repair);
        let (store, snapshot) = Store::open_with(&store_path, membership.members(), options)
            .with_context(|| format!("cannot open the store {}", store_path.display()))?;
        let tracked = match &loaded.config.light_members {
            None => None,
            Some(names) => {
                let mut set = std::collections::HashSet::new();
                for n in names {
                    let idx = loaded
                        .network
                        .members
                        .iter()
                        .position(|m| &m.name == n)
                        .with_context(|| format!("light_members: no member named {n:?}"))?;
                    set.insert(idx as u32);
                }
                set.insert(my_idx);
                Some(set)
            }
        };
        let params = loaded.network.params.clone();
        let mut core = Core::new(
            CoreConfig {
                params,
                membership,
                tracked,
            },
            key.clone(),
            snapshot,
            now_ms(),
        );

        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: Some(data_dir.join("cache")),
            ..RuntimeConfig::default()
        })
        .context("cannot start the contract runtime")?;
        info!("{}", runtime.memory_plan());
        std::fs::create_dir_all(&loaded.contracts_dir)
            .with_context(|| format!("cannot create contracts dir {}", loaded.contracts_dir.display()))?;
        let registry_events = runtime.subscribe();
        // The first scan (and its compiles) runs on the watcher's thread, so
        // the API and DDS come up at once whatever the folder holds; its
        // results arrive on `registry_events` like later changes.
        let contracts = Vec::new();
        let watcher = runtime
            .watch_in_background(loaded.contracts_dir.clone())
            .with_context(|| format!("cannot watch {}", loaded.contracts_dir.display()))?;
        core.set_services(now_ms(), offers(&runtime));

        let (tx, rx) = mpsc::channel();
        let net_pending = Arc::new(AtomicBool::new(false));
        let mut tcfg = TransportConfig::new(loaded.network.domain_id);
        // The loop never waits on a send: every topic is best effort, so no
        // reader (a peer killed without a goodbye, a hostile non-member)
        // holds a writer, and were one ever reliable, a full window would
        // fail the send at once, counted, for the core to re-send.
        tcfg.send_block = Duration::ZERO;
        tcfg.networks = match loaded.config.interfaces {
            Interfaces::All => Networks::All,
            Interfaces::Loopback => Networks::Loopback,
        };
        {
            let tx = tx.clone();
            let flag = net_pending.clone();
            tcfg.on_receive = Some(Arc::new(move || {
                // Coalesce wake-ups: one pending `Net` is enough.
                if !flag.swap(true, Ordering::AcqRel) {
                    let _ = tx.send(Cmd::Net);
                }
            }));
        }
        let transport = Transport::new(tcfg).context("cannot join the DDS domain")?;

        // Device calls are journaled in the data folder: the purchase id
        // keys them, so a run re-executed after a crash reuses the answer.
        let devices_dir = loaded.data_dir.join("devices");
        let grants = DeviceGrants::from_config_journaled(&loaded.config.devices, &devices_dir)
            .with_context(|| format!("cannot open the device call journals in {}", devices_dir.display()))?;
        let jobs = worker::spawn(
            runtime.clone(),
            worker::NodeStorage { reader: store.reader() },
            grants,
            core.membership().clone(),
            core.params().outcome_timeout_ms,
            tx.clone(),
        );
        let view: SharedView = crate::http::view::Hub::new();
        crate::http::spawn(
            loaded.config.api_listen,
            loaded.config.api_token.clone(),
            view.clone(),
            tx.clone(),
            Some(loaded.contracts_dir.clone()),
            Some(store.reader()),
        )?;
        let sensor_period =
            (loaded.config.sensor.rate_hz > 0.0).then(|| Duration::from_secs_f64(1.0 / loaded.config.sensor.rate_hz));
        let sensor = Sensor::new(&loaded.config.sensor)?;
        // The dashboard's lists of outcomes start from the store's records,
        // so a restart does not empty them.
        let purchases = purchases::Book::new(store.reader(), key.id());
        let (mut outcomes, mut produced) = (VecDeque::new(), VecDeque::new());
        for p in purchases.recent(SHOWN) {
            let Some(o) = &p.outcome else { continue };
            let v = Arc::new(OutcomeView {
                request_id: p.request_id.clone(),
                provider: p.provider.clone(),
                requester: p.requester.clone(),
                version: p.commit.as_ref().map_or(0, |c| c.version),
                ok: o.ok,
                body: o.body.clone(),
                at_ms: o.at_ms,
                service: p.service.clone(),
                logs: o.logs.clone(),
            });
            if p.provider_id == key.id().to_hex() {
                produced.push_back(v.clone());
            }
            if p.requester_id == key.id().to_hex() {
                outcomes.push_back(v);
            }
        }
        let me = loaded.network.name_of(&key.id()).unwrap_or("?").to_string();
        info!(member = %me, id = %key.id().to_hex(), api = %loaded.config.api_listen, "node started");
        let loaded_store = loaded.config.store.clone();
        if loaded_store.commit_window_ms > 0 {
            info!(
                window_ms = loaded_store.commit_window_ms,
                "group commit: durable steps within {} ms share one commit", loaded_store.commit_window_ms
            );
        }
        Ok(Self {
            core,
            key,
            store,
            transport,
            runtime,
            registry_events,
            _watcher: watcher,
            rx,
            net_pending,
            jobs,
            sensor,
            next_sensor: Instant::now(),
            sensor_period,
            view,
            loaded,
            stop,
            opts,
            commits: VecDeque::new(),
            outcomes,
            produced,
            contracts,
            purchases,
            acks: Vec::new(),
            replies: Vec::new(),
            started: Instant::now(),
            last_view: Instant::now() - Duration::from_secs(1),
            dirty: true,
            send_log: LogLimiter::default(),
            peer_log: Default::default(),
            peers: 0,
            peers_checked: Instant::now() - Duration::from_secs(1),
            announce_readers: AnnounceReaders::default(),
            group: Group::default(),
            commit_window: Duration::from_millis(loaded_store.commit_window_ms),
            checkpoint: Duration::from_secs(loaded_store.checkpoint_s),
            lazy_pending: false,
            last_durable: Instant::now(),
            store_commits: StoreCommits::default(),
        })
    }

    fn run(mut self) -> anyhow::Result<()> {
        let mut inbox = Vec::with_capacity(1024);
        self.flush()?;
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let core_due = self.core.poll_timeout().saturating_sub(now_ms());
            let mut wait = Duration::from_millis(core_due.min(100));
            if let Some(_p) = self.sensor_period {
                wait = wait.min(self.next_sensor.saturating_duration_since(now));
            }
            if let Some(deadline) = self.group.deadline {
                wait = wait.min(deadline.saturating_duration_since(now));
            }
            match self.rx.recv_timeout(wait) {
                Ok(cmd) => self.on_cmd(cmd),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            // Everything else already waiting, without blocking.
            while let Ok(cmd) = self.rx.try_recv() {
                self.on_cmd(cmd);
            }
            self.net_pending.store(false, Ordering::Release);
            loop {
                inbox.clear();
                if self.transport.try_recv_batch(&mut inbox, 1024) == 0 {
                    break;
                }
                let now = now_ms();
                // What arrived together is verified as one batch: under
                // load the batches grow, and a signature costs about half.
                self.core.preverify(&inbox);
                for m in inbox.drain(..) {
                    self.dirty = true;
                    if let Err(r) = self.core.handle_message(now, m) {
                        debug!(kind = r.kind, reason = r.reason, "message rejected");
                    }
                }
            }
            if let Some(period) = self.sensor_period
                && Instant::now() >= self.next_sensor
            {
                self.next_sensor += period;
                if self.next_sensor < Instant::now() {
                    self.next_sensor = Instant::now() + period;
                }
                if let Some(value) = self.sensor.read() {
                    let topic = self.loaded.config.sensor.topic.clone();
                    self.core.publish_share(now_ms(), &topic, value);
                    self.dirty = true;
                }
            }
            while let Ok(ev) = self.registry_events.try_recv() {
                self.on_registry(ev);
            }
            let now = now_ms();
            if now >= self.core.poll_timeout() {
                self.core.handle_timeout(now);
            }
            if self
                .announce_readers
                .due(Instant::now(), || self.transport.remote_readers(TopicId::Announce))
            {
                self.core.reannounce(now);
            }
            self.flush()?;
            if self.lazy_pending && self.group.steps == 0 && self.last_durable.elapsed() >= self.checkpoint {
                self.checkpoint_now()?;
            }
            self.log_send_failures(false);
            // Discovery changes nothing the core sees, so no message marks
            // the view dirty when it moves: read the count every 100 ms
            // (it walks rustdds' tables) and publish when it changed.
            if self.peers_checked.elapsed() >= Duration::from_millis(100) {
                self.peers_checked = Instant::now();
                let n = self.transport.discovered_participants();
                if n != self.peers {
                    self.peers = n;
                    self.dirty = true;
                }
            }
            let peers = self.peers;
            self.peer_log.update(Instant::now(), || peers);
            // While a group waits for its commit the view would show what
            // is not durable yet: it is published after.
            if self.dirty && self.group.steps == 0 && self.last_view.elapsed() >= Duration::from_millis(50) {
                self.publish_view();
            }
        }
        self.finish_group()?;
        if self.lazy_pending {
            self.checkpoint_now()?;
        }
        self.log_send_failures(true);
        info!("stopping: every acknowledged decision is already durable");
        Ok(())
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Net => {}
            Cmd::Buy {
                service,
                provider,
                price,
                params,
                reply,
            } => {
                self.dirty = true;
                let r = self
                    .core
                    .buy(now_ms(), &service, provider, price, params)
                    .map(|request| {
                        let id = request.id();
                        info!(service = %service, price, id = %hex::encode(&id[..6]), "purchase requested");
                        // Recorded in the same commit as the request itself.
                        self.purchases.bought(&request, &self.loaded.network);
                        id
                    });
                // Answered after the next commit: an acknowledged purchase
                // is durable and survives a crash.
                self.replies.push((reply, r));
            }
            Cmd::RunDone(done) => {
                self.dirty = true;
                let RunDone {
                    idx,
                    version,
                    ok,
                    ref body,
                    fuel_used,
                    elapsed_us,
                    ..
                } = *done;
                info!(
                    requester = idx,
                    version, ok, fuel_used, elapsed_us, "contract ran: {body}"
                );
                self.purchases.ran(&done);
                let done = *done;
                self.produced.push_front(Arc::new(OutcomeView {
                    request_id: hex::encode(done.request_id),
                    provider: self.name(&self.key.id()),
                    requester: self.name(&done.requester),
                    version,
                    ok,
                    body: done.body.clone(),
                    at_ms: now_ms(),
                    service: done.service,
                    logs: done.logs,
                }));
                self.produced.truncate(SHOWN);
                // The writes become durable in the run's `RunDone`, with
                // the next commit, or not at all (a run not owed).
                self.core
                    .contract_done(now_ms(), idx, version, ok, &done.body, done.writes);
                self.acks.push(done.ack);
            }
        }
    }

    fn on_registry(&mut self, ev: RegistryEvent) {
        self.dirty = true;
        match &ev {
            // The runtime has logged why (sanitized), once per file and reason.
            RegistryEvent::LoadFailed { path, error } => {
                self.contracts.retain(|c| c.file != path.display().to_string());
                self.contracts.push(view::contract_rejected(path, error));
            }
            RegistryEvent::Added(info) | RegistryEvent::Replaced { current: info, .. } => {
                let hash = hex::encode(info.contract_hash);
                info!(service = %info.name, price = info.price, %hash, "contract (re)loaded");
                self.contracts.retain(|c| c.service.as_deref() != Some(&info.name));
                if let Some(src) = &info.source {
                    self.contracts.retain(|c| c.file != src.display().to_string());
                }
                self.contracts.push(view::contract_loaded(info));
            }
            RegistryEvent::Removed(info) => {
                info!(service = %info.name, "contract removed");
                self.contracts.retain(|c| c.service.as_deref() != Some(&info.name));
            }
            // A file that was not loaded is gone: drop its entry.
            RegistryEvent::Cleared { path } => {
                self.contracts
                    .retain(|c| c.service.is_some() || c.file != path.display().to_string());
            }
            _ => {}
        }
        self.core.set_services(now_ms(), offers(&self.runtime));
        self.announce_readers.announced(Instant::now());
    }

    /// Carries out the core's outputs: durable first (the core's batch and
    /// the purchase records it changed, in one transaction), then sends,
    /// then the runs owed, then the events. With a commit window, a step
    /// that needs durability opens a group that later steps join until the
    /// window ends; the group then commits once and its outputs go out in
    /// order.
    fn flush(&mut self) -> anyhow::Result<()> {
        let g = &mut self.group;
        let first = g.batch.len();
        let mut stepped = false;
        while let Some(out) = self.core.poll_output() {
            stepped = true;
            match out {
                Output::Persist(b) => g.batch.extend(b),
                Output::Send(m) => g.sends.push(m),
                Output::Run(cert) => g.runs.push(cert),
                Output::Event(e) => {
                    self.purchases.on_event(&e, &self.loaded.network);
                    g.events.push(e);
                }
            }
        }
        // A store that cannot commit must stop the node: sending what is
        // not durable could make it vote twice after a restart. Steps
        // that decide nothing (votes heard, share tallies) skip the
        // fsync; a purchase record (what a buyer is told) does not.
        g.durable |= self.purchases.has_changes() || g.batch[first..].iter().any(Change::needs_durability);
        g.acks.append(&mut self.acks);
        g.replies.append(&mut self.replies);
        if stepped {
            g.steps += 1;
        }
        if g.durable && !self.commit_window.is_zero() {
            let deadline = *g.deadline.get_or_insert_with(|| Instant::now() + self.commit_window);
            if Instant::now() < deadline {
                return Ok(());
            }
        }
        self.finish_group()
    }

    /// Commits the pending group, then carries out what waited for it.
    fn finish_group(&mut self) -> anyhow::Result<()> {
        let g = std::mem::take(&mut self.group);
        // The records the group's steps changed, as they stand now: the
        // book kept them since the store does not have them yet.
        let records = self.purchases.take();
        if !g.batch.is_empty() || !records.is_empty() {
            self.store
                .commit_with_purchases(&g.batch, &records, g.durable)
                .with_context(|| format!("store commit failed ({})", self.store.path().display()))?;
            self.store_commits.steps += g.steps;
            if g.durable {
                self.store_commits.durable += 1;
                self.lazy_pending = false;
                self.last_durable = Instant::now();
            } else {
                self.store_commits.lazy += 1;
                self.lazy_pending = true;
            }
        }
        for ack in g.acks {
            let _ = ack.send(());
        }
        for (reply, r) in g.replies {
            let _ = reply.send(r);
        }
        for m in &g.sends {
            if let Err(e) = self.transport.send(m) {
                self.send_failed(m.kind(), &e);
            }
        }
        // Each run is durable (`RunPending`) before it is handed over: one
        // the worker never reports is owed again after a restart.
        for cert in g.runs {
            let _ = self.jobs.send(cert);
        }
        for e in g.events {
            self.on_event(e);
        }
        if !records.is_empty() {
            // Long polls on these purchases answer now, not at the next
            // periodic view, and find the view already showing what they
            // were woken for.
            self.publish_view();
            self.view.purchases_changed();
        }
        Ok(())
    }

    /// Makes the lazy commits durable: a crash then loses none of them.
    fn checkpoint_now(&mut self) -> anyhow::Result<()> {
        self.store
            .commit(&[])
            .with_context(|| format!("store checkpoint failed ({})", self.store.path().display()))?;
        self.store_commits.durable += 1;
        self.lazy_pending = false;
        self.last_durable = Instant::now();
        Ok(())
    }

    fn send_failed(&mut self, kind: &'static str, e: &SendError) {
        match self.send_log.record((kind, e.reason()), Instant::now()) {
            Some(Report::First) => warn!(
                kind,
                reason = e.reason(),
                "send failed: {e}; more for this reason are counted and summarised every {} s",
                self.send_log.interval().as_secs()
            ),
            Some(summary) => log_send_summary((kind, e.reason()), summary),
            None => {}
        }
    }

    /// Logs the send-failure summaries due (all of them when `stopping`).
    fn log_send_failures(&mut self, stopping: bool) {
        let now = Instant::now();
        let due = if stopping {
            self.send_log.finish(now)
        } else {
            self.send_log.due(now)
        };
        for (key, summary) in due {
            log_send_summary(key, summary);
        }
    }

    fn name(&self, id: &MemberId) -> String {
        self.loaded.network.display_name(id)
    }

    fn on_event(&mut self, e: Event) {
        self.dirty = true;
        match e {
            Event::Committed {
                requester,
                version,
                request_id,
                service,
                provider,
                price,
                remaining,
                latency_ms,
                from_certificate,
            } => {
                let c = CommitView {
                    requester: self.name(&requester),
                    requester_id: requester.to_hex(),
                    version,
                    request_id: hex::encode(request_id),
                    service: service.clone(),
                    provider: self.name(&provider),
                    provider_id: provider.to_hex(),
                    price,
                    remaining,
                    latency_ms,
                    from_certificate,
                    at_ms: now_ms(),
                };
                if self.opts.announce_events {
                    println!(
                        "COMMIT {} {} v{} {} {} price={} remaining={} latency_ms={}",
                        c.request_id, c.requester, version, service, c.provider, price, remaining, latency_ms
                    );
                }
                info!(requester = %c.requester, version, service = %service, latency_ms, "committed");
                self.commits.push_front(Arc::new(c));
                self.commits.truncate(SHOWN);
            }
            Event::Outcome(o) => {
                let v = OutcomeView {
                    request_id: hex::encode(o.request_id),
                    provider: self.name(&o.provider),
                    requester: self.name(&o.requester),
                    version: o.version,
                    ok: o.ok,
                    body: o.body.clone(),
                    at_ms: now_ms(),
                    service: String::new(),
                    logs: Vec::new(),
                };
                if self.opts.announce_events {
                    println!("OUTCOME {} ok={} {}", v.request_id, v.ok, v.body);
                }
                info!(provider = %v.provider, ok = v.ok, "outcome: {}", v.body);
                self.outcomes.push_front(Arc::new(v));
                self.outcomes.truncate(SHOWN);
            }
            Event::Settled {
                purchase,
                requester,
                provider,
                price,
                paid,
            } => {
                let (requester, provider) = (self.name(&requester), self.name(&provider));
                let purchase = hex::encode(purchase);
                if self.opts.announce_events {
                    println!("SETTLED {purchase} paid={paid} price={price}");
                }
                if paid {
                    info!(%purchase, %provider, price, "verdict: the provider is paid");
                } else {
                    info!(%purchase, %requester, price, "verdict: the price is refunded to the requester");
                }
            }
            Event::ServicesChanged => {}
        }
    }

    fn publish_view(&mut self) {
        self.dirty = false;
        self.last_view = Instant::now();
        let v = view::build(
            &self.core,
            &self.loaded.network,
            &self.key,
            &self.commits,
            &self.outcomes,
            &self.produced,
            &self.contracts,
            &self.transport,
            self.peers,
            self.store.path(),
            (self.store.io().get(), self.store_commits),
            self.started,
        );
        self.view.publish(v);
    }
}

fn log_send_summary((kind, reason): (&'static str, &'static str), summary: Report) {
    if let Report::Summary { count, over } = summary {
        warn!(
            kind,
            reason,
            count,
            "{count} more {kind} sends failed ({reason}) in the last {} s",
            over.as_secs_f64().round()
        );
    }
}

fn offers(runtime: &Runtime) -> Vec<ServiceOffer> {
    runtime
        .services()
        .into_iter()
        .map(|s| ServiceOffer {
            name: s.name,
            price: s.price,
            contract_hash: s.contract_hash,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_announce_reader_brings_two_announces_and_nothing_else_does() {
        let mut r = AnnounceReaders::default();
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // The first look finds readers: announce now.
        assert!(r.due(t0, || 3));
        // Within the period discovery is not read again.
        assert!(!r.due(ms(50), || panic!("read within the period")));
        assert!(!r.due(ms(150), || 3));
        // The second shot, a second after the growth.
        assert!(r.due(ms(1_000), || panic!("the second shot reads nothing")));
        assert!(!r.due(ms(1_200), || 3));
        // A reader lost and found again counts as new.
        assert!(!r.due(ms(1_400), || 2));
        assert!(r.due(ms(1_600), || 3));
        assert!(!r.due(ms(1_800), || 3));
        assert!(r.due(ms(2_600), || 3));
        assert!(!r.due(ms(5_000), || 3));
        // New services: once more a moment later.
        r.announced(ms(5_100));
        assert!(!r.due(ms(5_200), || 3));
        assert!(r.due(ms(6_100), || panic!("the second shot reads nothing")));
        assert!(!r.due(ms(6_300), || 3));
    }
}
