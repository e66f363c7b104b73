//! `wallance bench-net`: consensus over real DDS between real node
//! processes, beside the paper's section VI. Runs inside a private network
//! namespace it creates (loopback only, nothing leaves the machine).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use wallance_core::{Params, UNITS_PER_COIN};
use wallance_dds::netns::{Isolation, Loopback, isolate};

use super::bench::SignatureCosts;
use super::client::{self, Conn};
use super::init;
use crate::config::NodeConfig;
use crate::http::view::{CommitView, PurchaseView, StatsView, StatusView};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Network sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "8,16,48")]
    sizes: Vec<usize>,
    /// Purchases one after the other, per size.
    #[arg(long, default_value_t = 30)]
    purchases: usize,
    /// Seconds of concurrent purchases for the throughput figure (at the first size, 8 nodes by default).
    #[arg(long, default_value_t = 10)]
    throughput_secs: u64,
    /// Put the nodes' data folders here (e.g. /dev/shm, to see the latency
    /// without this machine's ~4 ms fsync); a temporary folder by default.
    #[arg(long)]
    data_in: Option<std::path::PathBuf>,
    #[arg(long)]
    json: bool,
}

/// One measured figure, beside its anchor and target (also bench_gateway's).
#[derive(Debug, Serialize)]
pub(super) struct Row {
    pub(super) name: String,
    pub(super) value: f64,
    pub(super) unit: &'static str,
    pub(super) anchor: String,
    pub(super) target: &'static str,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut forwarded = vec!["bench-net".to_string(), "--sizes".into()];
    forwarded.push(args.sizes.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(","));
    forwarded.extend(["--purchases".into(), args.purchases.to_string()]);
    forwarded.extend(["--throughput-secs".into(), args.throughput_secs.to_string()]);
    if args.json {
        forwarded.push("--json".into());
    }
    if let Some(d) = &args.data_in {
        forwarded.extend(["--data-in".into(), d.display().to_string()]);
    }
    let refs: Vec<&str> = forwarded.iter().map(String::as_str).collect();
    match isolate(Loopback::Multicast, &refs).context("cannot create a private network namespace (needs unshare)")? {
        Isolation::Ran(status) if status.success() => return Ok(()),
        Isolation::Ran(status) => bail!("the benchmark failed inside its namespace: {status}"),
        Isolation::Inside(_) => {}
    }
    let load_before = super::bench_gateway::load();
    // Before any node runs: the signature costs on an idle machine.
    let signing = SignatureCosts::measure();
    let mut rows = Vec::new();
    for &n in &args.sizes {
        measure(n, &args, &signing, &mut rows)?;
    }
    let machine = super::bench_gateway::Machine::now(load_before);
    if !args.json {
        println!("{:<58} {:>10} {:<5} {:<30} target", "measure", "value", "", "anchor");
        for r in &rows {
            println!(
                "{:<58} {:>10.2} {:<5} {:<30} {}",
                r.name, r.value, r.unit, r.anchor, r.target
            );
        }
        println!("machine: {machine}");
        println!();
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({ "machine": machine, "rows": rows }))?
    );
    Ok(())
}

/// Real node processes of one network, killed when dropped (also used by
/// `bench_gateway`).
pub(super) struct Cluster {
    pub(super) children: Vec<Child>,
    pub(super) conns: Vec<Conn>,
    pub(super) _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Node 0 provides espresso, and `compute` too when `compute` is true. As
/// soon as every node sees the services, node 1 buys: how soon after the
/// processes start a purchase can commit everywhere.
fn start(n: usize, data_in: Option<&Path>, compute: bool) -> anyhow::Result<(Cluster, Startup)> {
    let started = Instant::now();
    // Sensors off: only purchases on the wire.
    let cluster = Cluster::spawn(n, data_in, 3, 20_000, 0.0, |i, config, cfg| {
        if i == 0 {
            let wasm = include_bytes!(concat!(env!("OUT_DIR"), "/espresso.wasm"));
            let folder = config.parent().context("folder")?.join(&cfg.contracts_dir);
            std::fs::write(folder.join("espresso.wasm"), wasm)?;
            cfg.devices.push(espresso_machine());
            if compute {
                let shipped = Path::new(env!("WALLANCE_CONTRACTS_WASM_DIR")).join("compute_rental.wasm");
                std::fs::copy(&shipped, folder.join("compute.wasm"))
                    .with_context(|| format!("{}: build the shipped contracts", shipped.display()))?;
            }
        }
        Ok(())
    })?;
    // Node 0's contracts load in any order: wait for all of them.
    let services = if compute { 2 } else { 1 };
    let mut first: Option<String> = None;
    let mut committed = None;
    let discovery = cluster.wait_ready(services, started, |_| {
        let id = match &first {
            Some(id) => id.clone(),
            None => match buy(&cluster.conns[1]) {
                Ok(id) => first.insert(id).clone(),
                // Not every node has matched every writer yet: again.
                Err(_) => return Ok(false),
            },
        };
        if commit_latencies(&cluster, &id).is_some() {
            committed = Some(started.elapsed());
            return Ok(true);
        }
        Ok(false)
    })?;
    let startup = Startup {
        participants: discovery.participants.as_secs_f64(),
        services: discovery.services.as_secs_f64(),
        first_commit: committed.map_or(0.0, |d| d.as_secs_f64()),
    };
    eprintln!(
        "{n} nodes: every participant discovered at {:.2} s, every service seen at {:.2} s, \
         a first purchase committed everywhere at {:.2} s",
        startup.participants, startup.services, startup.first_commit
    );
    Ok((cluster, startup))
}

/// From the processes' start, in seconds.
struct Startup {
    participants: f64,
    services: f64,
    first_commit: f64,
}

/// An espresso machine that never runs dry.
pub(super) fn espresso_machine() -> wallance_runtime::DeviceConfig {
    wallance_runtime::DeviceConfig {
        name: "espresso-machine".into(),
        kind: wallance_runtime::SimulatedKind::EspressoMachine {
            water_ml: u64::MAX / 2,
            beans_g: u64::MAX / 2,
        },
        grant: vec!["espresso".into()],
    }
}

impl Cluster {
    /// `n` node processes of a new network in a folder under `data_in` (a
    /// temporary one by default), every member funded from the start. DDS
    /// domain `domain`, node i's API on `api_port_base + i`. `configure`
    /// edits node i's `node.toml` (its path, its content) before it starts.
    /// [`Self::spawn`], then [`Self::wait_ready`].
    pub(super) fn start(
        n: usize,
        data_in: Option<&Path>,
        domain: u16,
        api_port_base: u16,
        sensor_hz: f64,
        services: usize,
        configure: impl Fn(usize, &Path, &mut NodeConfig) -> anyhow::Result<()>,
    ) -> anyhow::Result<Cluster> {
        let cluster = Self::spawn(n, data_in, domain, api_port_base, sensor_hz, configure)?;
        cluster.wait_ready(services, Instant::now(), |_| Ok(true))?;
        Ok(cluster)
    }

    /// Writes the configs and starts the node processes, without waiting.
    pub(super) fn spawn(
        n: usize,
        data_in: Option<&Path>,
        domain: u16,
        api_port_base: u16,
        sensor_hz: f64,
        configure: impl Fn(usize, &Path, &mut NodeConfig) -> anyhow::Result<()>,
    ) -> anyhow::Result<Cluster> {
        let dir = match data_in {
            Some(base) => tempfile::tempdir_in(base)?,
            None => tempfile::tempdir()?,
        };
        let params = Params {
            initial_units: 1_000_000 * UNITS_PER_COIN,
            ..Params::default()
        };
        let written = init::write(
            &init::Args {
                nodes: n,
                dir: dir.path().to_path_buf(),
                domain,
                loopback: true,
                api_port_base,
                sensor_hz,
            },
            params,
        )?;
        for (i, path) in written.configs.iter().enumerate() {
            let mut cfg: NodeConfig = toml::from_str(&std::fs::read_to_string(path)?)?;
            configure(i, path, &mut cfg)?;
            init::write_toml(path, &cfg)?;
        }
        let exe = std::env::current_exe()?;
        let mut cluster = Cluster {
            children: Vec::new(),
            conns: Vec::new(),
            _dir: dir,
        };
        for (i, path) in written.configs.iter().enumerate() {
            cluster.children.push(spawn_node(&[exe.as_os_str()], path)?);
            cluster.conns.push(Conn {
                api: format!("http://127.0.0.1:{}", api_port_base as usize + i),
                token: Some(written.tokens[i].clone()),
                json: true,
            });
        }
        Ok(cluster)
    }

    /// Waits until every node sees every other participant and `services`
    /// services, and until `also` (called with the elapsed time once the
    /// services are seen everywhere) says true. Returns when each of the
    /// first two happened, counted from `started`.
    pub(super) fn wait_ready(
        &self,
        services: usize,
        started: Instant,
        mut also: impl FnMut(Duration) -> anyhow::Result<bool>,
    ) -> anyhow::Result<Discovery> {
        let n = self.conns.len();
        let (mut participants, mut seen, mut done) = (None, None, false);
        loop {
            let status: Vec<Option<StatusView>> = self
                .conns
                .iter()
                .map(|c| client::get_as::<StatusView>(c, "/api/status").ok())
                .collect();
            let all = |f: &dyn Fn(&StatusView) -> bool| status.iter().all(|s| s.as_ref().is_some_and(f));
            if participants.is_none() && all(&|s| s.peers.dds_participants + 1 >= n) {
                participants = Some(started.elapsed());
            }
            if seen.is_none() && all(&|s| s.services >= services) {
                seen = Some(started.elapsed());
            }
            if let Some(at) = seen
                && !done
            {
                done = also(at)?;
            }
            if let (Some(participants), Some(services), true) = (participants, seen, done) {
                return Ok(Discovery { participants, services });
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!("{n} nodes did not discover each other within 120 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// When every node saw every other participant, and every service.
pub(super) struct Discovery {
    pub(super) participants: Duration,
    pub(super) services: Duration,
}

/// Starts `wallance node --config <config>` as `program` (the binary, or
/// e.g. qemu and its arguments then the binary), logging to node.log beside
/// the config.
pub(super) fn spawn_node(program: &[&std::ffi::OsStr], config: &Path) -> anyhow::Result<Child> {
    let log = std::fs::File::create(config.parent().unwrap_or(Path::new(".")).join("node.log"))?;
    Ok(Command::new(program[0])
        .args(&program[1..])
        .args(["node", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?)
}

fn buy(c: &Conn) -> anyhow::Result<String> {
    client::request(c, "espresso", None, 2.0, &[])
}

/// Latency at every node (ms from the request's time to its commit there).
fn commit_latencies(cluster: &Cluster, id: &str) -> Option<Vec<u64>> {
    let mut out = Vec::new();
    for c in &cluster.conns {
        let commits: Vec<CommitView> = client::get_as(c, "/api/commits").ok()?;
        out.push(commits.iter().find(|x| x.request_id == id)?.latency_ms);
    }
    Some(out)
}

/// The purchases per second the signature costs leave on this machine,
/// from the verifications the nodes did per purchase in the same run.
struct Ceiling {
    verify_us: f64,
    sign_us: f64,
    cores: usize,
    /// Verifications per purchase, all nodes together: those of votes,
    /// requests and certificates counted by the nodes, and one outcome each.
    verified: f64,
    purchases_per_s: f64,
    /// The same with every verification in a batch of 8.
    batch8_us: f64,
    batched_per_s: f64,
    /// The same at the share of verifications the nodes batched.
    mix_per_s: f64,
}

impl Ceiling {
    /// `checked` and `batched` are what the `n` nodes verified per purchase,
    /// all together, and how many of those in batches (`signatures_checked`,
    /// `signatures_batched`). A node verifies fewer votes than the other
    /// `n - 1`: once a purchase committed there, later votes for it are
    /// dropped unchecked. Each node also verifies the outcome, and makes its
    /// vote and verdict vote (2 signatures, each with its proof of work);
    /// the request, the certificate and the outcome add 3 signatures in the
    /// network. All `n` nodes share the cores.
    fn of(costs: &SignatureCosts, n: usize, checked: f64, batched: f64) -> Ceiling {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let nodes = n as f64;
        let verified = checked + nodes;
        let signing_us = nodes * 2.0 * costs.sign_us + 3.0 * costs.sign_us;
        let per_s = |cpu_us: f64| cores as f64 * 1e6 / cpu_us;
        let alone = (verified - batched).max(0.0);
        Ceiling {
            verify_us: costs.verify_us,
            sign_us: costs.sign_us,
            cores,
            verified,
            purchases_per_s: per_s(verified * costs.verify_us + signing_us),
            batch8_us: costs.batch8_us,
            batched_per_s: per_s(verified * costs.batch8_us + signing_us),
            mix_per_s: per_s(alone * costs.verify_us + batched * costs.batch8_us + signing_us),
        }
    }
}

/// The `q` quantile of `v` (0 when empty).
pub(super) fn pct(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

pub(super) fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn measure(n: usize, args: &Args, signing: &SignatureCosts, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let first = Some(&n) == args.sizes.first();
    let (cluster, startup) = start(n, args.data_in.as_deref(), first)?;
    let discovery_target = if n == 48 { "≤ 3 s" } else { "" };
    rows.push(Row {
        name: format!("discovery: every node sees every participant, {n} nodes"),
        value: startup.participants,
        unit: "s",
        anchor: "from the processes' start".into(),
        target: discovery_target,
    });
    rows.push(Row {
        name: format!("  every node sees node 0's services, {n} nodes"),
        value: startup.services,
        unit: "s",
        anchor: String::new(),
        target: "",
    });
    rows.push(Row {
        name: format!("  a first purchase committed at every node, {n} nodes"),
        value: startup.first_commit,
        unit: "s",
        anchor: "bought once the services are seen".into(),
        target: discovery_target,
    });
    let mut all = Vec::new();
    let mut requester = Vec::new();
    for k in 0..args.purchases {
        let buyer = 1 + k % (n - 1);
        let id = buy(&cluster.conns[buyer])?;
        let t = Instant::now();
        let lat = loop {
            if let Some(l) = commit_latencies(&cluster, &id) {
                break l;
            }
            if t.elapsed() > Duration::from_secs(30) {
                bail!("purchase {k} did not commit on every node within 30 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        requester.push(lat[buyer] as f64);
        all.push(*lat.iter().max().unwrap_or(&0) as f64);
    }
    let (a50, a99) = (pct(&mut all, 0.5), pct(&mut all, 0.99));
    let r50 = pct(&mut requester, 0.5);
    let paper = match n {
        8 => "paper: 300 ms",
        48 => "paper: < 1 s",
        _ => "",
    };
    let target50 = match n {
        8 => "≤ 5 ms",
        48 => "≤ 50 ms",
        _ => "",
    };
    rows.push(Row {
        name: format!("consensus p50, request to every node committed, {n} nodes"),
        value: a50,
        unit: "ms",
        anchor: paper.into(),
        target: target50,
    });
    rows.push(Row {
        name: format!("consensus p99, request to every node committed, {n} nodes"),
        value: a99,
        unit: "ms",
        anchor: String::new(),
        target: if n == 8 { "≤ 20 ms" } else { "" },
    });
    rows.push(Row {
        name: format!("consensus p50 at the requester, {n} nodes"),
        value: r50,
        unit: "ms",
        anchor: String::new(),
        target: "",
    });
    let rss: Vec<u64> = cluster.children.iter().map(|c| rss_kb(c.id())).collect();
    let mut rss_mb: Vec<f64> = rss.iter().map(|k| *k as f64 / 1024.0).collect();
    rows.push(Row {
        name: format!("resident memory per node (median), {n} nodes"),
        value: pct(&mut rss_mb, 0.5),
        unit: "MB",
        anchor: String::new(),
        target: "≤ 30 MB",
    });
    if first {
        outcome_after_commit(&cluster, n, args.purchases, rows)?;
    }
    if first && args.throughput_secs > 0 {
        // Every member buys as fast as its one-request-per-State rule lets it.
        let stats = || -> anyhow::Result<Vec<_>> {
            cluster
                .conns
                .iter()
                .map(|c| client::get_as::<StatusView>(c, "/api/status").map(|s| s.stats))
                .collect()
        };
        let at_start = stats()?;
        let deadline = Instant::now() + Duration::from_secs(args.throughput_secs);
        std::thread::scope(|s| {
            for c in &cluster.conns {
                s.spawn(move || {
                    while Instant::now() < deadline {
                        match buy(c) {
                            Ok(_) => {}
                            Err(_) => std::thread::sleep(Duration::from_millis(1)),
                        }
                    }
                });
            }
        });
        std::thread::sleep(Duration::from_secs(2));
        let at_end = stats()?;
        // Every node commits every purchase: node 0's count is the network's.
        let purchases = (at_end[0].commits - at_start[0].commits).max(1) as f64;
        let rate = (at_end[0].commits - at_start[0].commits) as f64 / args.throughput_secs as f64;
        let summed = |f: fn(&StatsView) -> u64| {
            at_start
                .iter()
                .zip(&at_end)
                .map(|(a, b)| f(b).saturating_sub(f(a)))
                .sum::<u64>() as f64
                / purchases
        };
        let checked = summed(|s| s.signatures_checked);
        let batched = summed(|s| s.signatures_batched);
        let ceiling = Ceiling::of(signing, n, checked, batched);
        rows.push(Row {
            name: format!("CPU ceiling from signature work, {n} nodes on {} cores", ceiling.cores),
            value: ceiling.purchases_per_s,
            unit: "/s",
            anchor: format!(
                "{:.0} verifications per purchase in this run, verify {:.1} µs, sign {:.1} µs, measured now",
                ceiling.verified, ceiling.verify_us, ceiling.sign_us
            ),
            target: "",
        });
        rows.push(Row {
            name: format!("  the same, every signature verified in a batch of 8, {n} nodes"),
            value: ceiling.batched_per_s,
            unit: "/s",
            anchor: format!("{:.1} µs per signature, measured now", ceiling.batch8_us),
            target: "",
        });
        rows.push(Row {
            name: format!("  the same, batched as the nodes batched, {n} nodes"),
            value: ceiling.mix_per_s,
            unit: "/s",
            anchor: format!("{:.0} of the {:.0} verifications in batches", batched, ceiling.verified),
            target: "",
        });
        rows.push(Row {
            name: format!("committed purchases per second, {n} nodes, all buying"),
            value: rate,
            unit: "/s",
            anchor: String::new(),
            target: if n == 8 { "≥ 1 000/s" } else { "" },
        });
        rows.push(Row {
            name: "  that rate as a share of the ceiling, batched as the nodes batched".into(),
            value: 100.0 * rate / ceiling.mix_per_s,
            unit: "%",
            anchor: "the rest of the CPU: DDS, store, loop, API".into(),
            target: "",
        });
    }
    Ok(())
}

/// The outcome of a contract that runs for about a millisecond, back at the
/// buyer: from the buyer's commit to the outcome reaching it (both clocked
/// by the buyer's node, in ms). On the way: the provider commits (at about
/// the same time), runs the contract, makes its run durable, signs the
/// outcome and sends it; the buyer checks and records it.
fn outcome_after_commit(cluster: &Cluster, n: usize, purchases: usize, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    // The compute contract hashes a chain of `rounds` SHA-256s, sized to
    // about 1 ms on this machine by the first few runs (not counted).
    const CALIBRATION: usize = 5;
    let mut rounds = 2_000u64;
    let mut after_commit = Vec::new();
    let mut runs_us = Vec::new();
    for k in 0..CALIBRATION + purchases {
        let buyer = &cluster.conns[1 + k % (n - 1)];
        let params = [
            "task=sha256-chain".to_string(),
            "input=bench".to_string(),
            format!("rounds={rounds}"),
        ];
        let started = Instant::now();
        let id = loop {
            match client::request(buyer, "compute", None, 1.0, &params) {
                Ok(id) => break id,
                // The service may not have reached every buyer yet.
                Err(_) if started.elapsed() < Duration::from_secs(30) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(e.context("buying compute")),
            }
        };
        let bought = client::wait_for(buyer, &id, 30)?;
        let served: PurchaseView = client::get_as(&cluster.conns[0], &format!("/api/purchases/{id}"))?;
        let (Some(commit), Some(outcome)) = (&bought.commit, &bought.outcome) else {
            bail!("compute purchase {k} ended without a commit and an outcome at the buyer: {bought:?}");
        };
        if !outcome.ok {
            bail!("compute purchase {k} failed: {}", outcome.body);
        }
        let run_us = served
            .outcome
            .and_then(|o| o.elapsed_us)
            .context("no run time at the provider")?;
        if k < CALIBRATION {
            rounds = (rounds * 1_000 / run_us.max(1)).clamp(100, 9_000);
            continue;
        }
        runs_us.push(run_us as f64);
        after_commit.push(outcome.at_ms.saturating_sub(commit.at_ms) as f64);
    }
    rows.push(Row {
        name: format!("contract run at the provider (compute, {rounds} SHA-256 rounds), p50"),
        value: pct(&mut runs_us, 0.5) / 1_000.0,
        unit: "ms",
        anchor: "sized to about 1 ms".into(),
        target: "",
    });
    rows.push(Row {
        name: format!("outcome at the buyer after its commit, p50, {n} nodes"),
        value: pct(&mut after_commit, 0.5),
        unit: "ms",
        anchor: "ms clocks: ±1 ms".into(),
        target: "≤ 5 ms",
    });
    rows.push(Row {
        name: format!("outcome at the buyer after its commit, p99, {n} nodes"),
        value: pct(&mut after_commit, 0.99),
        unit: "ms",
        anchor: String::new(),
        target: "",
    });
    Ok(())
}
