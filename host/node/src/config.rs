//! The files an operator edits: `network.toml` (who the members are and the
//! protocol parameters, identical on every node) and `node.toml` (this
//! node's key, store, contracts, transport, sensor and API).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use wallance_core::{Keypair, MemberId, Membership, Params};

/// `network.toml`: the membership and the parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkFile {
    /// DDS domain of this network.
    #[serde(default)]
    pub domain_id: u16,
    #[serde(default)]
    pub params: Params,
    pub members: Vec<MemberEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberEntry {
    pub name: String,
    /// Ed25519 public key, hex.
    pub id: String,
    #[serde(default = "one")]
    pub weight: u64,
}

fn one() -> u64 {
    1
}

impl NetworkFile {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read network file {}", path.display()))?;
        let file: Self =
            toml::from_str(&text).with_context(|| format!("{} is not a valid network file", path.display()))?;
        file.params
            .validate()
            .map_err(|e| anyhow::anyhow!("{}: bad parameters: {e}", path.display()))?;
        file.membership()?;
        Ok(file)
    }

    pub fn membership(&self) -> anyhow::Result<Membership> {
        let mut ids = Vec::with_capacity(self.members.len());
        for m in &self.members {
            ids.push(
                MemberId::from_hex(&m.id).with_context(|| format!("member {:?}: id is not 64 hex digits", m.name))?,
            );
        }
        Membership::weighted(ids, self.members.iter().map(|m| m.weight).collect())
            .map_err(|e| anyhow::anyhow!("membership: {e}"))
    }

    pub fn name_of(&self, id: &MemberId) -> Option<&str> {
        let hex = id.to_hex();
        self.members.iter().find(|m| m.id == hex).map(|m| m.name.as_str())
    }

    /// How people see `id`: its member name, or its short hex ID.
    pub fn display_name(&self, id: &MemberId) -> String {
        self.name_of(id).map(str::to_string).unwrap_or_else(|| id.short())
    }
}

/// Which network interfaces DDS may use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interfaces {
    /// Every interface, as DDS users expect.
    #[default]
    All,
    /// 127.0.0.1 only: nothing leaves the machine.
    Loopback,
}

/// Where sensor readings come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorConfig {
    /// Readings per second (0 disables the sensor).
    #[serde(default = "default_rate")]
    pub rate_hz: f64,
    #[serde(default = "default_topic")]
    pub topic: String,
    /// A shell command printing one number per run (a real sensor); by
    /// default a virtual sensor random-walks around 21 °C.
    #[serde(default)]
    pub command: Option<String>,
    /// A FIFO (or file) the node reads one number per line from.
    #[serde(default)]
    pub fifo: Option<PathBuf>,
}

fn default_rate() -> f64 {
    1.0
}
fn default_topic() -> String {
    "temperature".into()
}

impl Default for SensorConfig {
    fn default() -> Self {
        Self {
            rate_hz: default_rate(),
            topic: default_topic(),
            command: None,
            fifo: None,
        }
    }
}

/// `node.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The network file, relative to this file.
    pub network: PathBuf,
    /// Where the key, store and contract cache live, relative to this file.
    pub data_dir: PathBuf,
    /// The contracts folder (hot-reloaded), relative to this file.
    #[serde(default = "default_contracts")]
    pub contracts_dir: PathBuf,
    #[serde(default)]
    pub interfaces: Interfaces,
    #[serde(default)]
    pub sensor: SensorConfig,
    /// HTTP API and dashboard.
    #[serde(default = "default_api")]
    pub api_listen: SocketAddr,
    /// Token required by every API call that changes state.
    #[serde(default)]
    pub api_token: Option<String>,
    /// Keep only these members' wallets (a light node); all by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub light_members: Option<Vec<String>>,
    /// Devices granted to contracts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<wallance_runtime::DeviceConfig>,
    /// How the node writes to its disk (an SD card on a gateway).
    #[serde(default, skip_serializing_if = "StoreConfig::is_default")]
    pub store: StoreConfig,
}

/// `[store]` in `node.toml`: how often the node syncs its store to disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Group commit: the durable steps of this many milliseconds share one
    /// commit (one fsync of the store's journal), and what they send waits
    /// for it. 0 (the default) commits each step at once. A window bounds
    /// the node's fsyncs to one per window (plus the checkpoints) whatever
    /// the load, at the cost of up to the window in latency per durable step
    /// (docs/operator.md, "SD cards").
    #[serde(default)]
    pub commit_window_ms: u64,
    /// Changes that may be lost in a crash (share tallies, votes heard) are
    /// committed without fsync; they are made durable at the latest this
    /// many seconds later, and at a clean stop.
    #[serde(default = "default_checkpoint_s")]
    pub checkpoint_s: u64,
    /// redb's quick repair: each checkpoint (a redb durable commit: every
    /// 512 journaled commits, every `checkpoint_s` and at a clean stop) also
    /// records the allocator state (two fsyncs instead of one), so that the
    /// open after a crash reads it instead of walking the whole file. A
    /// durable decision itself is one fsync of the store's journal either
    /// way.
    #[serde(default = "yes")]
    pub quick_repair: bool,
}

fn yes() -> bool {
    true
}

fn default_checkpoint_s() -> u64 {
    30
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            commit_window_ms: 0,
            checkpoint_s: default_checkpoint_s(),
            quick_repair: true,
        }
    }
}

impl StoreConfig {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn default_contracts() -> PathBuf {
    "contracts".into()
}
fn default_api() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7070))
}

/// A loaded `node.toml` with its paths resolved.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: NodeConfig,
    pub network: NetworkFile,
    pub data_dir: PathBuf,
    pub contracts_dir: PathBuf,
}

impl NodeConfig {
    pub fn load(path: &Path) -> anyhow::Result<Loaded> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read node config {}", path.display()))?;
        let config: Self =
            toml::from_str(&text).with_context(|| format!("{} is not a valid node config", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let network = NetworkFile::load(&base.join(&config.network))?;
        if config.sensor.rate_hz < 0.0 || config.sensor.rate_hz > 1_000.0 {
            bail!("{}: sensor.rate_hz must be between 0 and 1000", path.display());
        }
        if config.store.commit_window_ms > 1_000 {
            bail!(
                "{}: store.commit_window_ms must be at most 1000 (every durable step waits for it)",
                path.display()
            );
        }
        if config.store.checkpoint_s == 0 || config.store.checkpoint_s > 3_600 {
            bail!("{}: store.checkpoint_s must be between 1 and 3600", path.display());
        }
        Ok(Loaded {
            data_dir: base.join(&config.data_dir),
            contracts_dir: base.join(&config.contracts_dir),
            network,
            config,
        })
    }
}

/// Reads this node's key from `dir/key` (64 hex digits of seed), creating
/// it on first start (readable by the owner only).
pub fn load_or_create_key(dir: &Path) -> anyhow::Result<Keypair> {
    let path = dir.join("key");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mut seed = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut seed)
                .with_context(|| format!("{} is not a 64-hex-digit key", path.display()))?;
            Ok(Keypair::from_seed(seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no OS randomness for a key: {e}"))?;
            write_key(&path, &seed)?;
            Ok(Keypair::from_seed(seed))
        }
        Err(e) => Err(e).with_context(|| format!("cannot read key {}", path.display())),
    }
}

pub fn write_key(path: &Path, seed: &[u8; 32]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create key file {}", path.display()))?;
    writeln!(f, "{}", hex::encode(seed))?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node.toml with `extra` appended, beside a valid network.toml.
    fn load_with(extra: &str) -> anyhow::Result<Loaded> {
        let dir = tempfile::tempdir()?;
        let key = Keypair::from_seed([1; 32]);
        let network = format!("[[members]]\nname = \"a\"\nid = \"{}\"\n", key.id().to_hex());
        std::fs::write(dir.path().join("network.toml"), network)?;
        let node = format!("network = \"network.toml\"\ndata_dir = \"data\"\n{extra}");
        std::fs::write(dir.path().join("node.toml"), node)?;
        NodeConfig::load(&dir.path().join("node.toml"))
    }

    #[test]
    fn store_settings_default_and_bad_ones_are_refused_with_the_reason() {
        let loaded = load_with("").unwrap();
        assert_eq!(loaded.config.store, StoreConfig::default());
        assert_eq!(loaded.config.store.checkpoint_s, 30);
        assert!(loaded.config.store.quick_repair);
        let set = load_with("[store]\ncommit_window_ms = 20\nquick_repair = false\n").unwrap();
        assert_eq!(
            (set.config.store.commit_window_ms, set.config.store.quick_repair),
            (20, false)
        );
        for (bad, says) in [
            ("commit_window_ms = 1001", "commit_window_ms must be at most 1000"),
            ("checkpoint_s = 0", "checkpoint_s must be between 1 and 3600"),
            ("checkpoint_s = 3601", "checkpoint_s must be between 1 and 3600"),
            ("fsync = false", "unknown field"),
        ] {
            let err = format!("{:#}", load_with(&format!("[store]\n{bad}\n")).unwrap_err());
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
