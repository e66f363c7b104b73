//! Devices an operator grants to contracts, and simulated ones for boards
//! without the hardware (and for tests).
//!
//! A device is anything a contract may drive through the node: an espresso
//! machine on a relay board, a LoRa radio on SPI. Contracts address devices
//! by the name the operator gave them and send string commands with
//! key-value arguments; answers are key-value pairs too, so the WIT interface
//! stays stable while device kinds are added.
//!
//! Device calls act on the world immediately: unlike storage writes they are
//! not rolled back when the call later fails. Contracts should check first
//! (`status`) and act last.
//!
//! # Exactly once
//!
//! A purchase runs once, but a node that crashes after a contract drove a
//! device and before it recorded the run as done runs the contract again
//! when it restarts. So every device call carries an idempotency key,
//! [`CallKey`]: the purchase id (`Purchase::certificate`) and the index of
//! the call among that purchase's calls to this device. A run is
//! deterministic, so a re-run makes the same calls in the same order; a
//! device that sees a key again with the same command and arguments answers
//! what it answered the first time, without acting. The built-in devices do
//! this with [`RecentCalls`] (bounded; journaled on disk by the node, see
//! [`RecentCalls::with_journal`], so the guarantee survives a crash).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

/// The idempotency key of one device call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey {
    /// The purchase the call serves (`Purchase::certificate`).
    pub purchase_id: [u8; 32],
    /// 0 for the purchase's first call to this device, 1 for the next...
    pub seq: u32,
}

/// What a device answers: key-value pairs, or a refusal for the buyer.
pub type DeviceAnswer = Result<Vec<(String, String)>, String>;

/// A device the node can lend to contracts.
pub trait Device: Send + Sync + fmt::Debug {
    /// What it is: "espresso-machine", "lora", "ble", "zigbee", ...
    fn kind(&self) -> &str;
    /// Runs `command`. `Err` is a refusal or failure with a message for the
    /// buyer (e.g. "no water"); it is returned to the contract, not a trap.
    ///
    /// `key` identifies the call (see the module docs): when `key` was seen
    /// before with the same command and arguments, the device must return
    /// the answer it gave then and not act again (a re-run after a crash);
    /// with other arguments it must refuse rather than act. [`RecentCalls`]
    /// implements this for devices that keep their keys in memory.
    fn call(&self, key: &CallKey, command: &str, args: &[(String, String)]) -> DeviceAnswer;
}

/// The recent calls of one device and their answers, so that a call made
/// again with the same [`CallKey`] gets the first answer instead of a second
/// action.
///
/// Bounded: it keeps the last `capacity` keys (oldest forgotten first), each
/// with a SHA-256 of its command and arguments and the answer. A re-run is
/// recognised while fewer than `capacity` later calls reached the device;
/// the built-in devices keep [`RecentCalls::DEFAULT_CAPACITY`] (a run makes
/// at most 64 device calls, so that covers at least 64 purchases, and their
/// answers are at most a few hundred bytes). In memory only unless made
/// [`RecentCalls::with_journal`] (what the node does for the devices of its
/// config): then the keys survive a crash and restart.
#[derive(Debug)]
pub struct RecentCalls {
    capacity: usize,
    order: VecDeque<CallKey>,
    answers: HashMap<CallKey, ([u8; 32], DeviceAnswer)>,
    /// With a journal, the keys survive a restart (see [`RecentCalls::with_journal`]).
    journal: Option<Journal>,
}

/// An append-only file of device calls, fsynced: `pending` before the
/// device acts, the answer after. Rewritten with the keys remembered when
/// it grows past four times the capacity.
#[derive(Debug)]
struct Journal {
    path: std::path::PathBuf,
    file: std::fs::File,
    lines: usize,
}

/// One journal line (JSON).
#[derive(serde::Serialize, serde::Deserialize)]
struct JournalLine {
    /// Purchase id, hex.
    k: String,
    s: u32,
    /// Request hash, hex.
    r: String,
    /// `None`: the device was about to act (written before it does).
    a: Option<DeviceAnswer>,
}

/// What a call whose journal shows it started but never finished answers:
/// the device may have acted before the node stopped, so it must not act
/// again.
pub const UNKNOWN_RESULT: &str =
    "this call may have been made before the node stopped (no answer was recorded); not acting twice";

impl Default for RecentCalls {
    fn default() -> Self {
        RecentCalls::new(RecentCalls::DEFAULT_CAPACITY)
    }
}

impl RecentCalls {
    pub const DEFAULT_CAPACITY: usize = 4096;

    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a device must remember at least one call");
        RecentCalls {
            capacity,
            order: VecDeque::with_capacity(capacity.min(1024)),
            answers: HashMap::new(),
            journal: None,
        }
    }

    /// Keys kept in a journal file too, so a run re-executed after a crash
    /// (between the device call and the run's durable record) reuses the
    /// answer instead of acting twice. A call is journaled as pending
    /// (fsync) before the device acts, and its answer after: a call found
    /// pending at start may or may not have acted, and is refused
    /// ([`UNKNOWN_RESULT`]) rather than repeated. A line that does not
    /// parse (a torn last write) is skipped.
    pub fn with_journal(capacity: usize, path: impl Into<std::path::PathBuf>) -> std::io::Result<Self> {
        let path = path.into();
        let mut calls = RecentCalls::new(capacity);
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines() {
                let Ok(l) = serde_json::from_str::<JournalLine>(line) else {
                    continue;
                };
                let (Some(purchase_id), Some(request)) = (unhex32(&l.k), unhex32(&l.r)) else {
                    continue;
                };
                let key = CallKey { purchase_id, seq: l.s };
                let answer = l.a.unwrap_or_else(|| Err(UNKNOWN_RESULT.to_string()));
                calls.remember(key, request, answer);
            }
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        let lines = calls.order.len();
        calls.journal = Some(Journal { path, file, lines });
        calls.compact_if_large()?;
        Ok(calls)
    }

    fn remember(&mut self, key: CallKey, request: [u8; 32], answer: DeviceAnswer) {
        if self.answers.insert(key, (request, answer)).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.answers.remove(&oldest);
            }
        }
    }

    fn append(&mut self, key: &CallKey, request: &[u8; 32], answer: Option<&DeviceAnswer>) -> std::io::Result<()> {
        use std::io::Write;
        let Some(j) = self.journal.as_mut() else {
            return Ok(());
        };
        let line = JournalLine {
            k: hex32(&key.purchase_id),
            s: key.seq,
            r: hex32(request),
            a: answer.cloned(),
        };
        let mut bytes = serde_json::to_vec(&line).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        j.file.write_all(&bytes)?;
        j.file.sync_data()?;
        j.lines += 1;
        Ok(())
    }

    /// Rewrites the journal with the remembered keys only, atomically.
    fn compact_if_large(&mut self) -> std::io::Result<()> {
        use std::io::Write;
        let Some(j) = self.journal.as_ref() else {
            return Ok(());
        };
        if j.lines <= 4 * self.capacity {
            return Ok(());
        }
        let tmp = j.path.with_extension("journal.tmp");
        let mut out = std::fs::File::create(&tmp)?;
        for key in &self.order {
            if let Some((request, answer)) = self.answers.get(key) {
                let line = JournalLine {
                    k: hex32(&key.purchase_id),
                    s: key.seq,
                    r: hex32(request),
                    a: Some(answer.clone()),
                };
                let mut bytes = serde_json::to_vec(&line).map_err(std::io::Error::other)?;
                bytes.push(b'\n');
                out.write_all(&bytes)?;
            }
        }
        out.sync_all()?;
        let path = j.path.clone();
        std::fs::rename(&tmp, &path)?;
        let file = std::fs::OpenOptions::new().append(true).open(&path)?;
        let lines = self.order.len();
        self.journal = Some(Journal { path, file, lines });
        Ok(())
    }

    /// Runs `act` for a new key and records its answer; for a key seen
    /// before, returns the recorded answer (same command and arguments) or
    /// a refusal (different ones) without running `act`. Call it with the
    /// device's lock held, so two calls with one key cannot both act.
    pub fn once(
        &mut self,
        key: &CallKey,
        command: &str,
        args: &[(String, String)],
        act: impl FnOnce() -> DeviceAnswer,
    ) -> DeviceAnswer {
        let request = request_hash(command, args);
        if let Some((recorded, answer)) = self.answers.get(key) {
            if *recorded == request {
                return answer.clone();
            }
            return Err(format!(
                "device call {} of this purchase was already made with another command or arguments; not acting twice",
                key.seq
            ));
        }
        if let Err(e) = self.append(key, &request, None) {
            return Err(format!("the device's call journal cannot be written ({e}); not acting"));
        }
        let answer = act();
        // The device acted: a failure to record that now leaves the call
        // pending in the journal, refused (not repeated) after a restart.
        let _ = self.append(key, &request, Some(&answer));
        self.remember(*key, request, answer.clone());
        let _ = self.compact_if_large();
        assert_eq!(self.order.len(), self.answers.len());
        assert!(self.order.len() <= self.capacity);
        answer
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

fn hex32(bytes: &[u8; 32]) -> String {
    hex::encode(bytes)
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok()?.try_into().ok()
}

/// Hash of a command and its arguments, unambiguous (lengths included).
fn request_hash(command: &str, args: &[(String, String)]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(command.as_bytes());
    for (key, value) in args {
        field(key.as_bytes());
        field(value.as_bytes());
    }
    hasher.finalize().into()
}

/// At most this much of a contract-supplied command is echoed in an answer,
/// so recorded answers stay small.
const ECHO_BYTES_MAX: usize = 64;

fn echo(text: &str) -> String {
    let mut end = text.len().min(ECHO_BYTES_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = &text[..end];
    if end < text.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

/// The devices granted to one service, by name. Cheap to clone.
#[derive(Clone, Default)]
pub struct Devices {
    by_name: BTreeMap<String, Arc<dyn Device>>,
}

impl fmt::Debug for Devices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.by_name.iter().map(|(n, d)| (n, d.kind())))
            .finish()
    }
}

impl Devices {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, name: impl Into<String>, device: Arc<dyn Device>) -> Self {
        self.insert(name, device);
        self
    }

    pub fn insert(&mut self, name: impl Into<String>, device: Arc<dyn Device>) {
        self.by_name.insert(name.into(), device);
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Device>> {
        self.by_name.get(name)
    }

    /// (name, kind) of each device, sorted by name.
    pub fn list(&self) -> Vec<(String, String)> {
        self.by_name
            .iter()
            .map(|(name, device)| (name.clone(), device.kind().to_string()))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// One device in the node's config file, e.g.
///
/// ```toml
/// [[device]]
/// name = "espresso"
/// kind = "espresso-machine"
/// water_ml = 1000
/// beans_g = 200
/// grant = ["espresso"]
///
/// [[device]]
/// name = "lora0"
/// kind = "lora"
/// grant = ["radio-rental"]
/// ```
// No `deny_unknown_fields`: serde does not support it together with
// `flatten`, and it rejects every field of the flattened kind.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct DeviceConfig {
    pub name: String,
    #[serde(flatten)]
    pub kind: SimulatedKind,
    /// Services (by name) allowed to use this device.
    #[serde(default)]
    pub grant: Vec<String>,
}

/// The simulated device kinds this crate ships. A node with real hardware
/// implements [`Device`] itself and adds it to [`DeviceGrants`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SimulatedKind {
    EspressoMachine { water_ml: u64, beans_g: u64 },
    Lora,
    Ble,
    Zigbee,
}

/// All devices of a node and which services each is granted to.
#[derive(Clone, Default)]
pub struct DeviceGrants {
    devices: BTreeMap<String, (Arc<dyn Device>, Vec<String>)>,
}

impl fmt::Debug for DeviceGrants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.devices.iter().map(|(n, (d, g))| (n, (d.kind().to_string(), g))))
            .finish()
    }
}

impl DeviceGrants {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds simulated devices from the operator's config.
    pub fn from_config(config: &[DeviceConfig]) -> Self {
        let mut grants = DeviceGrants::new();
        for entry in config {
            let device: Arc<dyn Device> = match &entry.kind {
                SimulatedKind::EspressoMachine { water_ml, beans_g } => {
                    Arc::new(EspressoMachine::new(*water_ml, *beans_g))
                }
                SimulatedKind::Lora => Arc::new(Radio::new(RadioKind::Lora)),
                SimulatedKind::Ble => Arc::new(Radio::new(RadioKind::Ble)),
                SimulatedKind::Zigbee => Arc::new(Radio::new(RadioKind::Zigbee)),
            };
            grants.add(entry.name.clone(), device, entry.grant.clone());
        }
        grants
    }

    /// [`DeviceGrants::from_config`] with each device's calls journaled in
    /// `dir/<device name>.calls`, so the purchase-id idempotency of device
    /// calls holds across a node crash and restart (what the node uses).
    pub fn from_config_journaled(config: &[DeviceConfig], dir: &std::path::Path) -> std::io::Result<Self> {
        let mut grants = DeviceGrants::new();
        for entry in config {
            let journal = dir.join(format!("{}.calls", entry.name));
            let device: Arc<dyn Device> = match &entry.kind {
                SimulatedKind::EspressoMachine { water_ml, beans_g } => {
                    Arc::new(EspressoMachine::with_journal(*water_ml, *beans_g, &journal)?)
                }
                SimulatedKind::Lora => Arc::new(Radio::with_journal(RadioKind::Lora, &journal)?),
                SimulatedKind::Ble => Arc::new(Radio::with_journal(RadioKind::Ble, &journal)?),
                SimulatedKind::Zigbee => Arc::new(Radio::with_journal(RadioKind::Zigbee, &journal)?),
            };
            grants.add(entry.name.clone(), device, entry.grant.clone());
        }
        Ok(grants)
    }

    /// Adds a device granted to the given services.
    pub fn add(&mut self, name: String, device: Arc<dyn Device>, services: Vec<String>) {
        self.devices.insert(name, (device, services));
    }

    pub fn device(&self, name: &str) -> Option<&Arc<dyn Device>> {
        self.devices.get(name).map(|(device, _)| device)
    }

    /// The devices granted to `service`: what the node passes to
    /// `Runtime::invoke` for it.
    pub fn for_service(&self, service: &str) -> Devices {
        let mut devices = Devices::new();
        for (name, (device, services)) in &self.devices {
            if services.iter().any(|s| s == service) {
                devices.insert(name.clone(), device.clone());
            }
        }
        devices
    }
}

fn arg<'a>(args: &'a [(String, String)], key: &str) -> Option<&'a str> {
    args.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn parse_arg(args: &[(String, String)], key: &str) -> Result<u64, String> {
    let raw = arg(args, key).ok_or_else(|| format!("missing argument {key:?}"))?;
    raw.parse()
        .map_err(|_| format!("argument {key:?} is not a number: {}", echo(raw)))
}

/// A simulated espresso machine with a water tank and a bean hopper.
///
/// Commands: `status` → `water-ml`, `beans-g`, `cups`; `brew` with
/// `size-ml` → the same fields after brewing, or `Err("no water")`,
/// `Err("no beans")`. A cup takes its size in water and 7 g of beans
/// (10 g above 60 ml).
///
/// Calls are idempotent per [`CallKey`] (see [`RecentCalls`]): a brew
/// repeated by a re-run of the same purchase pours nothing.
#[derive(Debug)]
pub struct EspressoMachine {
    inner: Mutex<EspressoInner>,
}

#[derive(Debug)]
struct EspressoInner {
    state: EspressoState,
    recent: RecentCalls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspressoState {
    pub water_ml: u64,
    pub beans_g: u64,
    pub cups: u64,
}

impl EspressoMachine {
    pub fn new(water_ml: u64, beans_g: u64) -> Self {
        Self::with_calls(water_ml, beans_g, RecentCalls::default())
    }

    /// A machine whose calls are journaled in `journal` (see
    /// [`RecentCalls::with_journal`]): a purchase re-run after a crash
    /// never brews twice.
    pub fn with_journal(water_ml: u64, beans_g: u64, journal: &std::path::Path) -> std::io::Result<Self> {
        Ok(Self::with_calls(
            water_ml,
            beans_g,
            RecentCalls::with_journal(RecentCalls::DEFAULT_CAPACITY, journal)?,
        ))
    }

    fn with_calls(water_ml: u64, beans_g: u64, recent: RecentCalls) -> Self {
        EspressoMachine {
            inner: Mutex::new(EspressoInner {
                state: EspressoState {
                    water_ml,
                    beans_g,
                    cups: 0,
                },
                recent,
            }),
        }
    }

    pub fn state(&self) -> EspressoState {
        self.lock().state
    }

    /// The operator refills the machine.
    pub fn refill(&self, water_ml: u64, beans_g: u64) {
        let mut inner = self.lock();
        let state = &mut inner.state;
        state.water_ml += water_ml;
        state.beans_g += beans_g;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EspressoInner> {
        // The state is plain numbers updated together, and a call is
        // recorded after it acted; poisoning cannot leave it inconsistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn act(state: &mut EspressoState, command: &str, args: &[(String, String)]) -> DeviceAnswer {
        match command {
            "status" => {}
            "brew" => {
                let size_ml = parse_arg(args, "size-ml")?;
                if size_ml == 0 || size_ml > 500 {
                    return Err(format!("cannot brew {size_ml} ml"));
                }
                if state.water_ml < size_ml {
                    return Err("no water".into());
                }
                let beans_g = Self::beans_for(size_ml);
                if state.beans_g < beans_g {
                    return Err("no beans".into());
                }
                state.water_ml -= size_ml;
                state.beans_g -= beans_g;
                state.cups += 1;
            }
            other => return Err(format!("espresso machine: unknown command {}", echo(other))),
        }
        Ok(vec![
            ("water-ml".into(), state.water_ml.to_string()),
            ("beans-g".into(), state.beans_g.to_string()),
            ("cups".into(), state.cups.to_string()),
        ])
    }

    fn beans_for(size_ml: u64) -> u64 {
        if size_ml > 60 { 10 } else { 7 }
    }
}

impl Device for EspressoMachine {
    fn kind(&self) -> &str {
        "espresso-machine"
    }

    fn call(&self, key: &CallKey, command: &str, args: &[(String, String)]) -> DeviceAnswer {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let state = &mut inner.state;
        inner
            .recent
            .once(key, command, args, || Self::act(state, command, args))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RadioKind {
    Lora,
    Ble,
    Zigbee,
}

impl RadioKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RadioKind::Lora => "lora",
            RadioKind::Ble => "ble",
            RadioKind::Zigbee => "zigbee",
        }
    }
}

/// A simulated radio that can be assigned to one buyer until a time.
///
/// Commands: `status` → `kind`, `holder` (hex key or empty), `until-ms`;
/// `assign` with `holder`, `until-ms` → the same; `release`. A real radio
/// would install the holder's key so only they can transmit; the lease
/// rules (no overlap) are the contract's, the radio only obeys.
///
/// Calls are idempotent per [`CallKey`] (see [`RecentCalls`]).
#[derive(Debug)]
pub struct Radio {
    kind: RadioKind,
    inner: Mutex<RadioInner>,
}

#[derive(Debug)]
struct RadioInner {
    assignment: Option<(String, u64)>,
    recent: RecentCalls,
}

impl Radio {
    pub fn new(kind: RadioKind) -> Self {
        Self::with_calls(kind, RecentCalls::default())
    }

    /// A radio whose calls are journaled (see [`RecentCalls::with_journal`]).
    pub fn with_journal(kind: RadioKind, journal: &std::path::Path) -> std::io::Result<Self> {
        Ok(Self::with_calls(
            kind,
            RecentCalls::with_journal(RecentCalls::DEFAULT_CAPACITY, journal)?,
        ))
    }

    fn with_calls(kind: RadioKind, recent: RecentCalls) -> Self {
        Radio {
            kind,
            inner: Mutex::new(RadioInner {
                assignment: None,
                recent,
            }),
        }
    }

    /// (holder, until ms) if assigned.
    pub fn assignment(&self) -> Option<(String, u64)> {
        self.lock().assignment.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RadioInner> {
        // Replaced as a whole; poisoning cannot leave it half-written.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn act(&self, assignment: &mut Option<(String, u64)>, command: &str, args: &[(String, String)]) -> DeviceAnswer {
        match command {
            "status" => {}
            "assign" => {
                let holder = arg(args, "holder").ok_or("missing argument \"holder\"")?;
                if holder.is_empty() || holder.len() > 128 {
                    return Err("holder must be 1 to 128 characters".into());
                }
                let until_ms = parse_arg(args, "until-ms")?;
                *assignment = Some((holder.to_string(), until_ms));
            }
            "release" => *assignment = None,
            other => return Err(format!("{} radio: unknown command {}", self.kind(), echo(other))),
        }
        let (holder, until_ms) = assignment.clone().unwrap_or_default();
        Ok(vec![
            ("kind".into(), self.kind().to_string()),
            ("holder".into(), holder),
            ("until-ms".into(), until_ms.to_string()),
        ])
    }
}

impl Device for Radio {
    fn kind(&self) -> &str {
        self.kind.as_str()
    }

    fn call(&self, key: &CallKey, command: &str, args: &[(String, String)]) -> DeviceAnswer {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let assignment = &mut inner.assignment;
        inner
            .recent
            .once(key, command, args, || self.act(assignment, command, args))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// The first call of a distinct purchase each time.
    fn fresh(n: u8) -> CallKey {
        CallKey {
            purchase_id: [n; 32],
            seq: 0,
        }
    }

    /// The crash the market issue found: the node dies after the device
    /// brewed but before the run's "done" record; the re-run after the
    /// restart must not brew again. The journal outlives the process.
    #[test]
    fn a_journaled_machine_never_brews_twice_for_one_purchase_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("espresso.calls");
        let brew = args(&[("size-ml", "40")]);
        let first = {
            let machine = EspressoMachine::with_journal(1000, 100, &journal).unwrap();
            let answer = machine.call(&fresh(1), "brew", &brew);
            assert_eq!(machine.state().cups, 1);
            answer
        }; // the process dies: the machine's memory is gone
        let machine = EspressoMachine::with_journal(1000, 100, &journal).unwrap();
        assert_eq!(
            machine.call(&fresh(1), "brew", &brew),
            first,
            "the recorded answer again"
        );
        assert_eq!(machine.state().cups, 0, "nothing brewed after the restart");
        assert!(machine.call(&fresh(1), "brew", &args(&[("size-ml", "20")])).is_err());
        machine.call(&fresh(2), "brew", &brew).unwrap();
        assert_eq!(machine.state().cups, 1, "a new purchase brews");
    }

    /// A call journaled as started but with no answer (the node died while
    /// the device acted) is refused after the restart, never repeated.
    #[test]
    fn a_call_that_started_before_a_crash_is_refused_not_repeated() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("radio.calls");
        let key = fresh(7);
        let request = request_hash("assign", &args(&[("holder", "a")]));
        let line = JournalLine {
            k: hex32(&key.purchase_id),
            s: key.seq,
            r: hex32(&request),
            a: None,
        };
        let mut text = serde_json::to_string(&line).unwrap();
        text.push_str("\n{\"k\": torn");
        std::fs::write(&journal, text).unwrap();
        let radio = Radio::with_journal(RadioKind::Lora, &journal).unwrap();
        let answer = radio.call(&key, "assign", &args(&[("holder", "a")]));
        assert_eq!(answer, Err(UNKNOWN_RESULT.to_string()));
        assert_eq!(radio.assignment(), None, "the radio did not act");
    }

    /// The journal is rewritten with the remembered keys when it grows.
    #[test]
    fn the_journal_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("m.calls");
        let mut calls = RecentCalls::with_journal(4, &journal).unwrap();
        for n in 0..50u8 {
            calls.once(&fresh(n), "c", &[], || Ok(vec![])).unwrap();
        }
        let lines = std::fs::read_to_string(&journal).unwrap().lines().count();
        assert!(lines <= 2 * 4 * 4 + 2, "{lines} lines for 4 remembered keys");
        let again = RecentCalls::with_journal(4, &journal).unwrap();
        assert_eq!(again.len(), 4);
    }

    #[test]
    fn espresso_machine_refuses_without_water_or_beans() {
        let machine = EspressoMachine::new(50, 10);
        machine.call(&fresh(1), "brew", &args(&[("size-ml", "40")])).unwrap();
        assert_eq!(
            machine.call(&fresh(2), "brew", &args(&[("size-ml", "40")])),
            Err("no water".to_string())
        );
        machine.refill(100, 0);
        assert_eq!(
            machine.call(&fresh(3), "brew", &args(&[("size-ml", "40")])),
            Err("no beans".to_string())
        );
        assert_eq!(machine.state().cups, 1);
    }

    #[test]
    fn a_repeated_call_key_gets_the_first_answer_without_acting_again() {
        let machine = EspressoMachine::new(1000, 100);
        let brew = args(&[("size-ml", "40")]);
        let first = machine.call(&fresh(1), "brew", &brew);
        assert_eq!(machine.state().cups, 1);
        // A re-run of purchase 1: same key, same request.
        assert_eq!(machine.call(&fresh(1), "brew", &brew), first);
        assert_eq!(machine.state().cups, 1);
        assert_eq!(machine.state().water_ml, 960);
        // The second call of the same purchase is another call and acts.
        let second_call = CallKey { seq: 1, ..fresh(1) };
        machine.call(&second_call, "brew", &brew).unwrap();
        assert_eq!(machine.state().cups, 2);
        // A key reused with other arguments is refused, not acted on.
        let other = machine.call(&fresh(1), "brew", &args(&[("size-ml", "100")]));
        assert!(other.unwrap_err().contains("not acting twice"));
        assert_eq!(machine.state().cups, 2);
        // Refusals are replayed too, even after a refill.
        let empty = EspressoMachine::new(10, 100);
        let refusal = empty.call(&fresh(9), "brew", &brew);
        assert_eq!(refusal, Err("no water".to_string()));
        empty.refill(1000, 0);
        assert_eq!(empty.call(&fresh(9), "brew", &brew), refusal);
        assert_eq!(empty.state().cups, 0);
    }

    #[test]
    fn radios_replay_a_repeated_call_key() {
        let radio = Radio::new(RadioKind::Lora);
        let assign = args(&[("holder", "ab"), ("until-ms", "10")]);
        radio.call(&fresh(1), "assign", &assign).unwrap();
        radio.call(&fresh(2), "release", &[]).unwrap();
        // A re-run of purchase 1 does not take the radio back.
        radio.call(&fresh(1), "assign", &assign).unwrap();
        assert_eq!(radio.assignment(), None);
    }

    #[test]
    fn recent_calls_are_bounded_and_forget_the_oldest_first() {
        let mut recent = RecentCalls::new(3);
        let mut actions = 0;
        for n in 0..5 {
            recent
                .once(&fresh(n), "status", &[], || {
                    actions += 1;
                    Ok(Vec::new())
                })
                .unwrap();
        }
        assert_eq!(recent.len(), 3);
        // Keys 2..5 are remembered, 0 and 1 forgotten.
        recent.once(&fresh(4), "status", &[], || panic!("acted twice")).unwrap();
        recent
            .once(&fresh(0), "status", &[], || {
                actions += 1;
                Ok(Vec::new())
            })
            .unwrap();
        assert_eq!(actions, 6);
        assert_eq!(recent.len(), 3);
    }

    #[test]
    fn contract_supplied_text_is_echoed_truncated() {
        let machine = EspressoMachine::new(10, 10);
        let long = "é".repeat(10_000);
        let answer = machine.call(&fresh(1), &long, &[]).unwrap_err();
        assert!(answer.len() < 200, "{} bytes", answer.len());
        let answer = machine
            .call(&fresh(2), "brew", &args(&[("size-ml", &long)]))
            .unwrap_err();
        assert!(answer.len() < 200, "{} bytes", answer.len());
    }

    #[test]
    fn grants_come_from_the_operator_config() {
        let config: toml::Value = toml::from_str(
            r#"
            [[device]]
            name = "espresso"
            kind = "espresso-machine"
            water_ml = 1000
            beans_g = 200
            grant = ["espresso"]

            [[device]]
            name = "lora0"
            kind = "lora"
            grant = ["radio-rental", "espresso"]
            "#,
        )
        .unwrap();
        let devices: Vec<DeviceConfig> = config["device"].clone().try_into().unwrap();
        let grants = DeviceGrants::from_config(&devices);
        assert_eq!(
            grants.for_service("espresso").list(),
            vec![
                ("espresso".to_string(), "espresso-machine".to_string()),
                ("lora0".to_string(), "lora".to_string())
            ]
        );
        assert_eq!(grants.for_service("radio-rental").list().len(), 1);
        assert!(grants.for_service("compute").is_empty());
    }
}
