//! `wallance init`: keys and configs for a network of N members.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use wallance_core::{Keypair, Params};

use crate::config::{Interfaces, MemberEntry, NetworkFile, NodeConfig, SensorConfig, write_key};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Members to create.
    #[arg(long, default_value_t = 8)]
    pub nodes: usize,
    /// Folder to write network.toml and one node-<i>/ folder per member into.
    #[arg(long)]
    pub dir: PathBuf,
    /// DDS domain.
    #[arg(long, default_value_t = 0)]
    pub domain: u16,
    /// Keep DDS on 127.0.0.1 (nothing leaves the machine).
    #[arg(long)]
    pub loopback: bool,
    /// First API port; node i listens on base + i - 1.
    #[arg(long, default_value_t = 7070)]
    pub api_port_base: u16,
    /// Sensor readings per second on every node.
    #[arg(long, default_value_t = 1.0)]
    pub sensor_hz: f64,
}

/// What `init` wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub network: PathBuf,
    pub configs: Vec<PathBuf>,
    pub tokens: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let w = write(&args, Params::default())?;
    println!("Wrote {} and {} node configs:", w.network.display(), w.configs.len());
    for c in &w.configs {
        println!("  wallance node --config {}", c.display());
    }
    Ok(())
}

fn random_seed() -> anyhow::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    Ok(seed)
}

pub fn write(args: &Args, params: Params) -> anyhow::Result<Written> {
    if args.nodes == 0 || args.nodes > 10_000 {
        bail!("--nodes must be between 1 and 10000");
    }
    let network_path = args.dir.join("network.toml");
    if network_path.exists() {
        bail!("{} exists already: pick an empty --dir", network_path.display());
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("cannot create {}", args.dir.display()))?;
    let mut members = Vec::new();
    let mut configs = Vec::new();
    let mut tokens = Vec::new();
    for i in 1..=args.nodes {
        let name = format!("node-{i}");
        let dir = args.dir.join(&name);
        let seed = random_seed()?;
        let key = Keypair::from_seed(seed);
        write_key(&dir.join("data").join("key"), &seed)?;
        members.push(MemberEntry {
            name: name.clone(),
            id: key.id().to_hex(),
            weight: 1,
        });
        let token = hex::encode(random_seed()?);
        let port = args
            .api_port_base
            .checked_add(i as u16 - 1)
            .context("API ports overflow: lower --api-port-base")?;
        let config = NodeConfig {
            network: PathBuf::from("../network.toml"),
            data_dir: PathBuf::from("data"),
            contracts_dir: PathBuf::from("contracts"),
            interfaces: if args.loopback {
                Interfaces::Loopback
            } else {
                Interfaces::All
            },
            sensor: SensorConfig {
                rate_hz: args.sensor_hz,
                ..SensorConfig::default()
            },
            api_listen: ([127, 0, 0, 1], port).into(),
            api_token: Some(token.clone()),
            light_members: None,
            devices: Vec::new(),
            store: Default::default(),
        };
        std::fs::create_dir_all(dir.join("contracts"))?;
        let path = dir.join("node.toml");
        write_toml(&path, &config)?;
        configs.push(path);
        tokens.push(token);
    }
    let network = NetworkFile {
        domain_id: args.domain,
        params,
        members,
    };
    write_toml(&network_path, &network)?;
    Ok(Written {
        network: network_path,
        configs,
        tokens,
    })
}

pub fn write_toml<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let text = toml::to_string_pretty(value).context("cannot serialize config")?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
