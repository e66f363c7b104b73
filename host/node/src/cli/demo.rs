//! `wallance demo`: a local network of real `wallance node` processes on
//! loopback DDS. Sensors earn coins, then a member buys an espresso from the
//! node that hosts the contract, through consensus; the demo shows the cup
//! and every node's wallets, checks they agree, and stops the network.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use wallance_core::{Params, UNITS_PER_COIN};

use super::client::{self, Conn, coins};
use super::init;
use crate::config::NodeConfig;
use crate::http::view::{ServiceView, StatusView, View, WalletView};
use wallance_runtime::{DeviceConfig, SimulatedKind};

/// The espresso contract, built from `contracts/espresso` by build.rs.
const ESPRESSO_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/espresso.wasm"));

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Members (separate processes); rustdds finds up to 12 per host by
    /// unicast when loopback has no multicast.
    #[arg(long, default_value_t = 8)]
    nodes: usize,
    /// Keep the network's files here instead of a temporary folder.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seconds to wait for each step.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Leave the network running after the purchase (Ctrl-C stops it).
    #[arg(long)]
    keep_running: bool,
}

struct Network {
    children: Vec<Child>,
    conns: Vec<Conn>,
    logs: Vec<PathBuf>,
}

impl Drop for Network {
    fn drop(&mut self) {
        for c in &mut self.children {
            // SIGTERM first: nodes shut down cleanly.
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for c in &mut self.children {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.nodes < 2 || args.nodes > 12 {
        bail!("--nodes must be between 2 and 12 (rustdds' unicast discovery limit on one host)");
    }
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new().prefix("wallance-demo-").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let timeout = Duration::from_secs(args.timeout);
    println!(
        "Wallance demo: {} nodes as separate processes, DDS on loopback only, data in {}",
        args.nodes,
        dir.display()
    );

    // A network of N members; node-1 hosts the espresso machine.
    let base = free_port()?;
    let params = Params {
        request_ttl_ms: 30_000,
        ..Params::default()
    };
    let written = init::write(
        &init::Args {
            nodes: args.nodes,
            dir: dir.clone(),
            domain: (std::process::id() % 200) as u16,
            loopback: true,
            api_port_base: base.min(u16::MAX - 20),
            sensor_hz: 5.0,
        },
        params,
    )?;
    let mut ports = Vec::new();
    for (i, path) in written.configs.iter().enumerate() {
        let mut cfg: NodeConfig = toml::from_str(&std::fs::read_to_string(path)?)?;
        // Ports next to a free one may be taken: give each node its own.
        let port = free_port()?;
        ports.push(port);
        cfg.api_listen = ([127, 0, 0, 1], port).into();
        if i == 0 {
            cfg.devices.push(DeviceConfig {
                name: "espresso-machine".into(),
                kind: SimulatedKind::EspressoMachine {
                    water_ml: 1_000,
                    beans_g: 200,
                },
                grant: vec!["espresso".into()],
            });
        }
        init::write_toml(path, &cfg)?;
    }
    let provider_dir = written.configs[0].parent().context("config has a folder")?;
    std::fs::write(provider_dir.join("contracts").join("espresso.wasm"), ESPRESSO_WASM)?;
    // Check the configs parse before starting anything.
    for cfg in &written.configs {
        NodeConfig::load(cfg)?;
    }

    let exe = std::env::current_exe()?;
    let mut net = Network {
        children: Vec::new(),
        conns: Vec::new(),
        logs: Vec::new(),
    };
    for (i, cfg) in written.configs.iter().enumerate() {
        let log = cfg.parent().context("config has a folder")?.join("node.log");
        let child = Command::new(&exe)
            .args(["node", "--config"])
            .arg(cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("cannot start node-{}", i + 1))?;
        net.children.push(child);
        net.logs.push(log);
        net.conns.push(Conn {
            api: format!("http://127.0.0.1:{}", ports[i]),
            token: Some(written.tokens[i].clone()),
            json: false,
        });
    }
    println!(
        "Dashboard: {}/  (node-1; node-k listens on its own port, see node-k/node.toml)",
        net.conns[0].api
    );

    let result = demo(&net, args.nodes, timeout);
    if let Err(e) = &result {
        eprintln!("demo failed: {e:#}");
        for log in &net.logs {
            eprintln!("  log: {}", log.display());
        }
        if args.dir.is_none() {
            // Keep the evidence: the temporary folder would vanish.
            let keep = std::env::temp_dir().join(format!("wallance-demo-failed-{}", std::process::id()));
            let _ = copy_dir(&dir, &keep);
            eprintln!("  files kept in {}", keep.display());
        }
    }
    result?;
    if args.keep_running {
        println!("The network keeps running; press Ctrl-C to stop it.");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    println!("Stopping the network.");
    drop(net);
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), target)?;
        }
    }
    Ok(())
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        match ok() {
            Ok(true) => return Ok(()),
            Ok(false) | Err(_) if started.elapsed() < timeout => std::thread::sleep(Duration::from_millis(100)),
            Ok(false) => bail!("timed out after {} s waiting for {what}", timeout.as_secs()),
            Err(e) => return Err(e.context(format!("waiting for {what}"))),
        }
    }
}

fn demo(net: &Network, n: usize, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    print!("Waiting for the nodes to discover each other and the espresso service ...");
    wait_for("discovery", timeout, || {
        for c in &net.conns {
            let s: StatusView = client::get_as(c, "/api/status")?;
            if s.services < 1 || s.peers.dds_participants + 1 < n {
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    println!(" done in {:.1} s.", started.elapsed().as_secs_f64());
    let services: Vec<ServiceView> = client::get_as(&net.conns[1], "/api/services")?;
    let espresso = services
        .into_iter()
        .find(|s| s.name == "espresso")
        .context("node-2 does not see the espresso service")?;
    let price = espresso.price;
    let reward = client::get_as::<View>(&net.conns[1], "/api/view")?.reward_units;
    println!(
        "node-2 sees service espresso from {} at {} DCoin (contract {}…).",
        espresso.provider,
        coins(price),
        espresso.contract_hash.get(..12).unwrap_or("")
    );
    println!("Sensors share readings (5 per second, 0.2 DCoin each); node-2 earns its espresso:");
    let mut last = 0;
    wait_for("node-2 to earn the price and the voter reward", timeout, || {
        let wallets: Vec<WalletView> = client::get_as(&net.conns[1], "/api/wallets")?;
        let Some(me) = wallets.iter().find(|w| w.name == "node-2") else {
            return Ok(false);
        };
        if me.spendable != last {
            println!("  node-2: {} shares, {} DCoin", me.shares, coins(me.spendable));
            last = me.spendable;
        }
        // The price plus the voter reward (paid by the buyer), and a margin.
        Ok(me.spendable >= price + reward + UNITS_PER_COIN / 2)
    })?;
    println!("node-2 buys an espresso (size=ristretto) through consensus ...");
    let p = client::buy_quiet(
        &net.conns[1],
        "espresso",
        Some("node-1"),
        price as f64 / UNITS_PER_COIN as f64,
        &["size=ristretto".to_string()],
        timeout.as_secs(),
        true,
    )?;
    let returned_ms = crate::cmd::now_ms();
    let (Some(commit), Some(outcome)) = (&p.commit, &p.outcome) else {
        bail!("the purchase ended without an outcome: {:?}", p.status);
    };
    println!(
        "Committed in {} ms (the requester's view; the paper: 300 ms with 8 Pis); the outcome reached node-2 {} ms after its commit, and the buyer {} ms after that.",
        commit.latency_ms,
        outcome.at_ms.saturating_sub(commit.at_ms),
        returned_ms.saturating_sub(outcome.at_ms)
    );
    if !outcome.ok {
        bail!("the espresso contract refused: {}", outcome.body);
    }
    println!("  ☕ {}: {}", p.provider, outcome.body);

    // Every node commits the purchase and settles the provider's certificate.
    let version = commit.version;
    wait_for("every node to commit", timeout, || {
        for c in &net.conns {
            let wallets: Vec<WalletView> = client::get_as(c, "/api/wallets")?;
            let v = wallets.iter().find(|w| w.name == "node-2").map_or(0, |w| w.version);
            if v < version {
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    // Committed fields (version, State, balance) are identical everywhere;
    // the sensor tallies keep moving while the sensors run.
    let mut views: Vec<Vec<WalletView>> = Vec::new();
    for c in &net.conns {
        views.push(client::get_as(c, "/api/wallets")?);
    }
    let key = |w: &WalletView| (w.version, w.state.clone(), w.balance);
    let reference: BTreeMap<String, _> = views[0].iter().map(|w| (w.name.clone(), key(w))).collect();
    for (i, v) in views.iter().enumerate() {
        for w in v {
            if reference.get(&w.name) != Some(&key(w)) {
                bail!("node-{} disagrees with node-1 on {}'s wallet", i + 1, w.name);
            }
        }
    }
    println!();
    println!("Wallets as every node holds them (identical on all {n} nodes):");
    println!(
        "{:<10} {:>8} {:>10} {:>10} {:>7}  state",
        "member", "version", "balance", "spendable", "shares"
    );
    for w in &views[1] {
        println!(
            "{:<10} {:>8} {:>10} {:>10} {:>7}  {}…",
            w.name,
            w.version,
            coins(w.balance),
            coins(w.spendable),
            w.shares,
            w.state.get(..16).unwrap_or("")
        );
    }
    println!(
        "(node-2 paid the price to node-1 and {} DCoin of voter reward to the member drawn from its request.)",
        reward as f64 / UNITS_PER_COIN as f64
    );
    Ok(())
}
