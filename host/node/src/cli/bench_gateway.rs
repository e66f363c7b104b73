//! `wallance bench-gateway`: what a node costs a Raspberry Pi-class
//! gateway, measured on real node processes in a private network namespace
//! (loopback without multicast, so an aarch64 node under qemu-user joins
//! too; see `host/node/tests/mixed_arch.rs`).
//!
//! - **SD card**: bytes written and fsyncs per committed purchase and per
//!   sensor share, per node: the store's own counters (`/metrics`) and the
//!   kernel's `/proc/<pid>/io`, for each `[store] commit_window_ms`, with
//!   the commit latency each window costs.
//! - **Memory and start-up**: resident memory and the time to "ready" (API
//!   up, three contracts loaded from the compiled-code cache) of one node,
//!   x86-64 and, with `--aarch64 <binary>`, the aarch64 build under qemu.
//! - **Binary size**: the release builds found in the target folder, with
//!   and without debug info.
//!
//! Prints a table, then JSON with the machine's load before and after.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use wallance_core::Params;
use wallance_dds::netns::{Isolation, Loopback, isolate};

use super::bench_net::{Cluster, Row, espresso_machine, pct, rss_kb, spawn_node};
use super::client::{self, Conn};
use super::init;
use crate::config::{NodeConfig, StoreConfig};
use crate::http::view::{CommitView, StatusView};

/// Where Debian's `libc6-arm64-cross` puts the aarch64 loader and libc
/// (qemu-aarch64's `-L`).
pub const AARCH64_SYSROOT: &str = "/usr/aarch64-linux-gnu";

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The aarch64 `wallance` binary (`cargo xtask cross-build`): also
    /// measure its memory and start-up under qemu-aarch64.
    #[arg(long)]
    aarch64: Option<PathBuf>,
    /// Folder with the three shipped contracts (.wasm); the build's by default.
    #[arg(long, default_value = env!("WALLANCE_CONTRACTS_WASM_DIR"))]
    contracts: PathBuf,
    /// Group-commit windows to measure, in ms.
    #[arg(long, value_delimiter = ',', default_value = "0,5,20,50")]
    windows: Vec<u64>,
    /// Windows to measure again with `quick_repair = false`.
    #[arg(long, value_delimiter = ',', default_value = "0,50")]
    no_quick_repair_windows: Vec<u64>,
    /// Purchases one after the other, per window.
    #[arg(long, default_value_t = 30)]
    purchases: usize,
    /// Seconds of concurrent buying per window (every member buys).
    #[arg(long, default_value_t = 10)]
    load_secs: u64,
    /// Seconds of sensor shares (10 per second per node).
    #[arg(long, default_value_t = 10)]
    share_secs: u64,
    /// A quick run for CI: few purchases, short phases, windows 0 and 20.
    #[arg(long)]
    short: bool,
    /// Put the nodes' data folders here (default: a temporary folder).
    #[arg(long)]
    data_in: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Document {
    machine: Machine,
    rows: Vec<Row>,
}

/// The machine a benchmark ran on, printed beside its figures (also
/// bench's and bench-net's).
#[derive(Debug, Serialize)]
pub(super) struct Machine {
    cpus: usize,
    /// 1, 5 and 15 minute load averages before and after the run.
    load_before: String,
    load_after: String,
}

impl Machine {
    /// This machine now, with the load read before the run.
    pub(super) fn now(load_before: String) -> Self {
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            load_before,
            load_after: load(),
        }
    }
}

impl std::fmt::Display for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} CPUs, load average {} before, {} after",
            self.cpus, self.load_before, self.load_after
        )
    }
}

pub(super) fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn run(mut args: Args) -> anyhow::Result<()> {
    let mut forwarded: Vec<String> = std::env::args().skip(1).collect();
    if forwarded.first().map(String::as_str) != Some("bench-gateway") {
        forwarded.insert(0, "bench-gateway".into());
    }
    let refs: Vec<&str> = forwarded.iter().map(String::as_str).collect();
    match isolate(Loopback::NoMulticast, &refs).context("cannot create a private network namespace (needs unshare)")? {
        Isolation::Ran(status) if status.success() => return Ok(()),
        Isolation::Ran(status) => bail!("the benchmark failed inside its namespace: {status}"),
        Isolation::Inside(_) => {}
    }
    if args.short {
        args.windows = vec![0, 20];
        args.no_quick_repair_windows = vec![20];
        args.purchases = 6;
        args.load_secs = 2;
        args.share_secs = 3;
    }
    let load_before = load();
    let mut rows = Vec::new();
    for &window in &args.windows {
        purchases(window, true, &args, &mut rows)?;
    }
    for &window in &args.no_quick_repair_windows {
        purchases(window, false, &args, &mut rows)?;
    }
    shares(&args, &mut rows)?;
    let native = std::env::current_exe()?;
    memory_and_start(&[native.as_os_str()], "x86-64", &args, &mut rows)?;
    if let Some(arm) = &args.aarch64 {
        let program = ["qemu-aarch64", "-L", AARCH64_SYSROOT, "-R", "512G"]
            .map(OsStr::new)
            .into_iter()
            .chain([arm.as_os_str()])
            .collect::<Vec<_>>();
        memory_and_start(&program, "aarch64 under qemu", &args, &mut rows)?;
    }
    binary_sizes(&native, &mut rows);
    let doc = Document {
        machine: Machine::now(load_before),
        rows,
    };
    if !args.json {
        println!("{:<64} {:>10} {:<6} {:<34} target", "measure", "value", "", "anchor");
        for r in &doc.rows {
            println!(
                "{:<64} {:>10.2} {:<6} {:<34} {}",
                r.name, r.value, r.unit, r.anchor, r.target
            );
        }
        println!(
            "\nmachine: {} cpus, load {} before, {} after\n",
            doc.machine.cpus, doc.machine.load_before, doc.machine.load_after
        );
    }
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

/// 4 nodes; node-1 hosts espresso (bench_net's cluster, domain 5, ports
/// from 21 000), with the `[store]` settings under test.
fn start_cluster(sensor_hz: f64, store: StoreConfig, args: &Args) -> anyhow::Result<Cluster> {
    Cluster::start(N, args.data_in.as_deref(), 5, 21_000, sensor_hz, 1, |i, config, cfg| {
        cfg.store = store.clone();
        if i == 0 {
            install_contracts(config, cfg, &args.contracts, &["espresso"])?;
        }
        Ok(())
    })
}

/// Nodes in the SD-card measurements.
const N: usize = 4;

impl Cluster {
    fn status(&self, i: usize) -> anyhow::Result<StatusView> {
        client::get_as(&self.conns[i], "/api/status")
    }

    /// Store counters and kernel I/O of every node.
    fn io(&self) -> anyhow::Result<Vec<NodeIo>> {
        let mut out = Vec::new();
        for (i, child) in self.children.iter().enumerate() {
            let s = self.status(i)?.stats;
            let (write_bytes, syscw) = proc_io(child.id());
            out.push(NodeIo {
                syncs: s.store_syncs,
                store_bytes: s.store_written_bytes,
                durable: s.store_commits_durable,
                kernel_write_bytes: write_bytes,
                write_syscalls: syscw,
                shares: s.shares_received,
                commits: s.commits,
                settled: s.verdicts_paid + s.verdicts_refunded,
                refunded: s.verdicts_refunded,
            });
        }
        Ok(out)
    }
}

/// Copies `services` into the node's contracts folder and grants them
/// their devices.
fn install_contracts(config: &Path, cfg: &mut NodeConfig, from: &Path, services: &[&str]) -> anyhow::Result<()> {
    let folder = config.parent().context("a folder")?.join(&cfg.contracts_dir);
    std::fs::create_dir_all(&folder)?;
    for service in services {
        let file = match *service {
            "espresso" => "espresso",
            "radio-rental" => "radio_rental",
            "compute" => "compute_rental",
            other => bail!("unknown service {other}"),
        };
        let src = from.join(format!("{file}.wasm"));
        std::fs::copy(&src, folder.join(format!("{service}.wasm")))
            .with_context(|| format!("cannot copy {}", src.display()))?;
    }
    if services.contains(&"espresso") {
        cfg.devices.push(espresso_machine());
    }
    if services.contains(&"radio-rental") {
        cfg.devices.push(wallance_runtime::DeviceConfig {
            name: "lora0".into(),
            kind: wallance_runtime::SimulatedKind::Lora,
            grant: vec!["radio-rental".into()],
        });
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
struct NodeIo {
    syncs: u64,
    store_bytes: u64,
    durable: u64,
    kernel_write_bytes: u64,
    write_syscalls: u64,
    shares: u64,
    commits: u64,
    settled: u64,
    refunded: u64,
}

/// `write_bytes` and `syscw` of `/proc/<pid>/io`.
fn proc_io(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("write_bytes:"), field("syscw:"))
}

/// Each node's delta of `f`, divided by `per` of that node's before and
/// after: the median over nodes and the largest node.
fn per_node(
    before: &[NodeIo],
    after: &[NodeIo],
    f: impl Fn(&NodeIo) -> u64,
    per: impl Fn(&NodeIo, &NodeIo) -> f64,
) -> (f64, f64) {
    let mut v: Vec<f64> = before
        .iter()
        .zip(after)
        .map(|(b, a)| (f(a) - f(b)) as f64 / per(b, a).max(1.0))
        .collect();
    let max = v.iter().copied().fold(0.0, f64::max);
    (pct(&mut v, 0.5), max)
}

/// The fsyncs and store bytes per settled purchase, per node.
fn disk_rows(before: &[NodeIo], after: &[NodeIo], label: &dyn Fn(&str) -> String, note: &str, rows: &mut Vec<Row>) {
    let (syncs, syncs_max) = per_node(before, after, |x| x.syncs, settled);
    rows.push(Row {
        name: label("fsyncs per committed purchase per node"),
        value: syncs,
        unit: "",
        anchor: format!("largest node {syncs_max:.2}{note}"),
        target: "≤ 2",
    });
    let (bytes, _) = per_node(before, after, |x| x.store_bytes, settled);
    rows.push(Row {
        name: label("store bytes written per purchase per node"),
        value: bytes / 1024.0,
        unit: "KiB",
        anchor: String::new(),
        target: "≤ 64 KiB",
    });
}

/// Purchases a node settled between two readings.
fn settled(b: &NodeIo, a: &NodeIo) -> f64 {
    (a.settled - b.settled) as f64
}

/// Waits until every node settled `settled` purchases; after `secs`,
/// returns the nodes that had not (a node behind under load catches up
/// later).
fn wait_settled(cluster: &Cluster, settled: u64, secs: u64) -> anyhow::Result<Vec<(usize, u64)>> {
    let started = Instant::now();
    loop {
        let io = cluster.io()?;
        let behind: Vec<(usize, u64)> = io
            .iter()
            .enumerate()
            .filter(|(_, n)| n.settled < settled)
            .map(|(i, n)| (i + 1, n.settled))
            .collect();
        if behind.is_empty() || started.elapsed() > Duration::from_secs(secs) {
            return Ok(behind);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Purchases one at a time, then every member buying at once, with the
/// group-commit window `window` ms.
fn purchases(window: u64, quick_repair: bool, args: &Args, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let store = StoreConfig {
        commit_window_ms: window,
        quick_repair,
        ..StoreConfig::default()
    };
    let setting = if quick_repair {
        format!("window {window} ms")
    } else {
        format!("window {window} ms, no quick repair")
    };
    let cluster = start_cluster(0.0, store, args)?;
    eprintln!("purchases, {setting}");
    let before = cluster.io()?;
    let mut latency = Vec::new();
    for k in 0..args.purchases {
        let buyer = 1 + k % (N - 1);
        let id = client::request(&cluster.conns[buyer], "espresso", None, 2.0, &[])?;
        let t = Instant::now();
        loop {
            let mut lat = Vec::new();
            for c in &cluster.conns {
                let commits: Vec<CommitView> = client::get_as(c, "/api/commits")?;
                if let Some(x) = commits.iter().find(|x| x.request_id == id) {
                    lat.push(x.latency_ms);
                }
            }
            if lat.len() == N {
                latency.push(lat.into_iter().max().unwrap_or(0) as f64);
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                bail!("purchase {k} did not commit on every node within 30 s");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // One purchase at a time, outcome and verdict included.
        let behind = wait_settled(&cluster, before[0].settled + k as u64 + 1, 60)?;
        if !behind.is_empty() {
            bail!("purchase {k} did not settle within 60 s at nodes (node, settled) {behind:?}");
        }
    }
    let after = cluster.io()?;
    let label = |what: &str| format!("{what}, {setting}, one at a time");
    disk_rows(&before, &after, &label, "", rows);
    let (kernel, _) = per_node(&before, &after, |x| x.kernel_write_bytes, settled);
    let (syscw, _) = per_node(&before, &after, |x| x.write_syscalls, settled);
    rows.push(Row {
        name: label("/proc/pid/io write_bytes per purchase per node"),
        value: kernel / 1024.0,
        unit: "KiB",
        anchor: format!("{syscw:.1} write syscalls (sockets too)"),
        target: "≤ 64 KiB",
    });
    let (durable, _) = per_node(&before, &after, |x| x.durable, settled);
    rows.push(Row {
        name: label("durable commits per purchase per node"),
        value: durable,
        unit: "",
        anchor: String::new(),
        target: "",
    });
    rows.push(Row {
        name: label("commit latency p50, request to every node"),
        value: pct(&mut latency, 0.5),
        unit: "ms",
        anchor: format!("p99 {:.0} ms", pct(&mut latency, 0.99)),
        target: "",
    });

    // Every member buys as fast as its one-request-per-State rule lets it.
    if args.load_secs > 0 {
        let before = cluster.io()?;
        let deadline = Instant::now() + Duration::from_secs(args.load_secs);
        std::thread::scope(|s| {
            for c in &cluster.conns {
                s.spawn(move || {
                    while Instant::now() < deadline {
                        if client::request(c, "espresso", None, 2.0, &[]).is_err() {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                });
            }
        });
        let committed_now = cluster.status(0)?.stats.commits;
        let behind = wait_settled(&cluster, before[0].settled + (committed_now - before[0].commits), 30)?;
        let after = cluster.io()?;
        let committed = (after[0].commits - before[0].commits) as f64;
        let label = |what: &str| format!("{what}, {setting}, all buying");
        // Each node's I/O over the purchases it settled (a node behind has
        // settled fewer and is counted over those).
        let lag = if behind.is_empty() {
            String::new()
        } else {
            format!("; behind after 30 s (node, settled): {behind:?}")
        };
        disk_rows(&before, &after, &label, &format!("; {committed} purchases{lag}"), rows);
        rows.push(Row {
            name: label("committed purchases per second"),
            value: committed / args.load_secs as f64,
            unit: "/s",
            anchor: format!(
                "{} refunded (provider late or silent)",
                after[0].refunded - before[0].refunded
            ),
            target: "",
        });
    }
    Ok(())
}

/// Sensor shares only: what they cost the disk.
fn shares(args: &Args, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let cluster = start_cluster(10.0, StoreConfig::default(), args)?;
    // Past the start-up commits.
    std::thread::sleep(Duration::from_secs(1));
    let before = cluster.io()?;
    std::thread::sleep(Duration::from_secs(args.share_secs));
    let after = cluster.io()?;
    // Each node publishes 10 per second and receives its peers'.
    let mut received: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a.shares - b.shares) as f64)
        .collect();
    let shares = pct(&mut received, 0.5) + 10.0 * args.share_secs as f64;
    let (syncs, syncs_max) = per_node(&before, &after, |x| x.syncs, |_, _| shares);
    rows.push(Row {
        name: format!(
            "fsyncs per sensor share per node ({shares:.0} shares, {} s)",
            args.share_secs
        ),
        value: syncs,
        unit: "",
        anchor: format!("largest node {syncs_max:.3}; checkpoint every 30 s"),
        target: "0",
    });
    let (bytes, _) = per_node(&before, &after, |x| x.store_bytes, |_, _| shares);
    let (kernel, _) = per_node(&before, &after, |x| x.kernel_write_bytes, |_, _| shares);
    rows.push(Row {
        name: "store bytes written per sensor share per node".into(),
        value: bytes,
        unit: "B",
        anchor: format!("/proc/pid/io write_bytes {kernel:.0} B"),
        target: "",
    });
    Ok(())
}

/// One node with the three shipped contracts: start-up to ready with a
/// warm compiled-code cache, and resident memory once ready.
fn memory_and_start(program: &[&OsStr], arch: &str, args: &Args, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let written = init::write(
        &init::Args {
            nodes: 1,
            dir: dir.path().to_path_buf(),
            domain: 6,
            loopback: true,
            api_port_base: 21_100,
            sensor_hz: 1.0,
        },
        Params::default(),
    )?;
    let config = &written.configs[0];
    let mut cfg: NodeConfig = toml::from_str(&std::fs::read_to_string(config)?)?;
    install_contracts(
        config,
        &mut cfg,
        &args.contracts,
        &["espresso", "radio-rental", "compute"],
    )?;
    init::write_toml(config, &cfg)?;
    let conn = Conn {
        api: "http://127.0.0.1:21100".into(),
        token: None,
        json: true,
    };
    let ready = || {
        client::get_as::<StatusView>(&conn, "/api/status")
            .is_ok_and(|s| s.contracts.iter().filter(|c| c.status == "loaded").count() == 3)
    };
    let start = |what: &str| -> anyhow::Result<(Child, Duration)> {
        let started = Instant::now();
        let mut child = spawn_node(program, config)?;
        while !ready() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("the {arch} node exited ({status}) before it was ready ({what})");
            }
            if started.elapsed() > Duration::from_secs(300) {
                bail!("the {arch} node was not ready within 300 s ({what})");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok((child, started.elapsed()))
    };
    // The first start compiles the contracts into the cache.
    let (mut first, cold) = start("compiling")?;
    stop(&mut first)?;
    let (mut child, warm) = start("cached")?;
    std::thread::sleep(Duration::from_secs(1));
    let rss = rss_kb(child.id()) as f64 / 1024.0;
    stop(&mut child)?;
    rows.push(Row {
        name: format!("start-up to ready, three cached contracts, {arch}"),
        value: warm.as_secs_f64(),
        unit: "s",
        anchor: format!("first start (compiling) {:.2} s", cold.as_secs_f64()),
        target: "≤ 1 s",
    });
    rows.push(Row {
        name: format!("resident memory once ready, three contracts, {arch}"),
        value: rss,
        unit: "MB",
        anchor: if arch.contains("qemu") {
            "the qemu process, emulator included".into()
        } else {
            String::new()
        },
        target: "≤ 30 MB",
    });
    Ok(())
}

fn stop(child: &mut Child) -> anyhow::Result<()> {
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status()?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill()?;
    bail!("a node did not stop within 20 s of SIGTERM")
}

/// Sizes of the release binaries beside this one's build, stripped too.
fn binary_sizes(native: &Path, rows: &mut Vec<Row>) {
    let target = native.parent().and_then(Path::parent);
    let candidates = [
        ("x86-64", target.map(|t| t.join("release/wallance")), "strip"),
        (
            "aarch64",
            target.map(|t| t.join("aarch64-unknown-linux-gnu/release/wallance")),
            "aarch64-linux-gnu-strip",
        ),
    ];
    for (arch, path, strip) in candidates {
        let Some(path) = path.filter(|p| p.is_file()) else {
            eprintln!("no {arch} release binary found (cargo build --release / cargo xtask cross-build --release)");
            continue;
        };
        let with = std::fs::metadata(&path).map_or(0, |m| m.len());
        let stripped = std::env::temp_dir().join(format!("wallance-stripped-{}-{arch}", std::process::id()));
        let without = Command::new(strip)
            .arg("-o")
            .arg(&stripped)
            .arg(&path)
            .status()
            .ok()
            .filter(|s| s.success())
            .and_then(|_| std::fs::metadata(&stripped).ok())
            .map_or(0, |m| m.len());
        let _ = std::fs::remove_file(&stripped);
        rows.push(Row {
            name: format!("release binary, {arch}, with line tables"),
            value: with as f64 / 1e6,
            unit: "MB",
            anchor: format!("stripped {:.1} MB", without as f64 / 1e6),
            target: "",
        });
    }
}
