//! Benchmark of the contract runtime on the three shipped contracts.
//!
//! `cargo run --release -p wallance-runtime --example bench`
//!
//! Builds `contracts/` for wasm32 first (one `cargo build`), then measures
//! compile and cached-load time, invocation latency on a fresh instance,
//! fuel overhead, node start with cached contracts, and file landing to
//! callable under hot reload. Prints a table (median, anchor measured on
//! wasmtime 48 for a small contract, target) and the same figures as JSON.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use wallance_runtime::{
    ContractStorage, Devices, EspressoMachine, MemoryStorage, Purchase, RegistryEvent, Runtime, RuntimeConfig,
};

/// 1 DCoin in units: contract prices are in units (`wallance_sdk::coins`).
const UNITS: u64 = 1_000_000;

const CONTRACTS: [(&str, &str); 3] = [
    ("espresso", "espresso.wasm"),
    ("radio-rental", "radio_rental.wasm"),
    ("compute", "compute_rental.wasm"),
];

struct Row {
    key: String,
    what: String,
    median_us: f64,
    p99_us: Option<f64>,
    anchor: &'static str,
    target: &'static str,
}

fn main() -> Result<()> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize()?;
    let wasm_dir = build_contracts(&repo)?;
    let load_before = load_average();
    let mut rows = Vec::new();

    // Compile time: no cache, every load compiles.
    let uncached = Runtime::new(RuntimeConfig::default())?;
    for (name, file) in CONTRACTS {
        let bytes = std::fs::read(wasm_dir.join(file))?;
        let mut times = Vec::new();
        for _ in 0..7 {
            let report = uncached.load_bytes(&bytes)?;
            times.push(report.componentize + report.compile);
        }
        rows.push(row(
            &format!("compile_{name}"),
            &format!("compile {name} ({} KiB .wasm)", bytes.len() / 1024),
            &mut times,
            false,
            "14-25 ms",
            "",
        ));
    }

    // Cached load: deserialize from the node's cache dir.
    let cache = tempfile::tempdir()?;
    let cached_config = RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    };
    let cached = Runtime::new(cached_config.clone())?;
    for (name, file) in CONTRACTS {
        let bytes = std::fs::read(wasm_dir.join(file))?;
        cached.load_bytes(&bytes)?;
        let mut times = Vec::new();
        let mut link = Vec::new();
        for _ in 0..50 {
            let report = cached.load_bytes(&bytes)?;
            if !report.from_cache {
                bail!("{name} missed the cache");
            }
            times.push(report.compile);
            link.push(report.link_and_info);
        }
        rows.push(row(
            &format!("cached_load_{name}"),
            &format!("cached load {name} (deserialize)"),
            &mut times,
            false,
            "~30 µs",
            "≤ 50 µs p50",
        ));
        rows.push(row(
            &format!("link_info_{name}"),
            &format!("  + link and info() {name}"),
            &mut link,
            false,
            "",
            "",
        ));
    }

    // Node start with three cached contracts: new runtime + load the folder.
    let folder = tempfile::tempdir()?;
    for (name, file) in CONTRACTS {
        // A contract file is named after its service.
        std::fs::copy(wasm_dir.join(file), folder.path().join(format!("{name}.wasm")))?;
    }
    let mut starts = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let runtime = Runtime::new(cached_config.clone())?;
        for (path, result) in runtime.load_dir(folder.path()) {
            let report = result.with_context(|| path.display().to_string())?;
            if !report.from_cache {
                bail!("{} was compiled at start", path.display());
            }
        }
        starts.push(started.elapsed());
    }
    rows.push(row(
        "start_three_cached",
        "node start, 3 cached contracts (no compile)",
        &mut starts,
        false,
        "",
        "no compile",
    ));

    // Invocation on a fresh store + instance per call.
    let runtime = Runtime::new(cached_config.clone())?;
    runtime.load_dir(folder.path());
    let storage: Arc<dyn ContractStorage> = Arc::new(MemoryStorage::new());
    let machine = Arc::new(EspressoMachine::new(u64::MAX / 4, u64::MAX / 4));
    let devices = Devices::new().with("espresso", machine);
    let espresso = purchase(&[("size", "ristretto")]);
    let compute = purchase(&[("task", "sha256-chain"), ("input", "x"), ("rounds", "1")]);
    for (key, what, service, purchase, devices) in [
        (
            "invoke_espresso",
            "invoke espresso (2 device calls, 2 writes)",
            "espresso",
            &espresso,
            &devices,
        ),
        (
            "invoke_compute_small",
            "invoke compute (1 hash)",
            "compute",
            &compute,
            &Devices::new(),
        ),
    ] {
        let mut times = Vec::new();
        for i in 0..3_000 {
            let started = Instant::now();
            let outcome = runtime.invoke(service, purchase, &storage, devices)?;
            let elapsed = started.elapsed();
            if outcome.result.is_err() {
                bail!("{service} refused: {:?}", outcome.result);
            }
            if i >= 200 {
                times.push(elapsed);
            }
        }
        rows.push(row(key, what, &mut times, true, "~22 µs", "≤ 30 µs p50"));
    }

    // Fuel overhead on CPU-bound work.
    let heavy = Purchase {
        price: 4 * UNITS,
        ..purchase(&[("task", "sha256-chain"), ("input", "x"), ("rounds", "40000")])
    };
    let no_fuel = Runtime::new(RuntimeConfig {
        consume_fuel: false,
        ..RuntimeConfig::default()
    })?;
    no_fuel.load_bytes(&std::fs::read(wasm_dir.join("compute_rental.wasm"))?)?;
    let mut on = Vec::new();
    let mut off = Vec::new();
    let mut fuel_used = 0;
    for _ in 0..15 {
        let started = Instant::now();
        fuel_used = runtime.invoke("compute", &heavy, &storage, &Devices::new())?.fuel_used;
        on.push(started.elapsed());
        let started = Instant::now();
        no_fuel.invoke("compute", &heavy, &storage, &Devices::new())?;
        off.push(started.elapsed());
    }
    rows.push(row(
        "sha256x40k_fuel_on",
        &format!("40k SHA-256 rounds, fuel on ({fuel_used} fuel)"),
        &mut on,
        false,
        "",
        "",
    ));
    rows.push(row(
        "sha256x40k_fuel_off",
        "40k SHA-256 rounds, fuel off",
        &mut off,
        false,
        "",
        "",
    ));
    let overhead = median(&mut on) / median(&mut off) - 1.0;

    // File landing to callable, through the watcher.
    for (key, what, config) in [
        (
            "landing_cached",
            "file landing to callable (cache hit)",
            cached_config.clone(),
        ),
        (
            "landing_compile",
            "file landing to callable (compiles)",
            RuntimeConfig::default(),
        ),
    ] {
        let dir = tempfile::tempdir()?;
        let dir_path = dir.path().canonicalize()?;
        let runtime = Runtime::new(config)?;
        let events = runtime.subscribe();
        let _watcher = runtime.watch(&dir_path)?;
        let source = wasm_dir.join("compute_rental.wasm");
        let mut times = Vec::new();
        for _ in 0..15 {
            let tmp = dir_path.join(".landing.partial");
            let target = dir_path.join("compute.wasm");
            std::fs::copy(&source, &tmp)?;
            let started = Instant::now();
            std::fs::rename(&tmp, &target)?;
            wait_for(&events, |e| matches!(e, RegistryEvent::Added(_)))?;
            runtime.invoke("compute", &compute, &storage, &Devices::new())?;
            times.push(started.elapsed());
            std::fs::remove_file(&target)?;
            wait_for(&events, |e| matches!(e, RegistryEvent::Removed(_)))?;
        }
        rows.push(row(
            key,
            what,
            &mut times,
            false,
            "~60 ms (10 ms debounce)",
            "≤ 100 ms p50",
        ));
    }

    print_table(&rows, overhead, &load_before);
    Ok(())
}

fn purchase(params: &[(&str, &str)]) -> Purchase {
    Purchase {
        buyer: [1; 32],
        price: 2 * UNITS,
        consensus_time_ms: 1_000,
        certificate: [2; 32],
        params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

fn wait_for(events: &std::sync::mpsc::Receiver<RegistryEvent>, wanted: impl Fn(&RegistryEvent) -> bool) -> Result<()> {
    loop {
        let event = events.recv_timeout(Duration::from_secs(10))?;
        if let RegistryEvent::LoadFailed { error, .. } = &event {
            bail!("load failed: {error}");
        }
        if wanted(&event) {
            return Ok(());
        }
    }
}

fn median(times: &mut [Duration]) -> f64 {
    percentile(times, 0.5)
}

fn percentile(times: &mut [Duration], p: f64) -> f64 {
    times.sort();
    let index = ((times.len() - 1) as f64 * p).round() as usize;
    times[index].as_secs_f64() * 1e6
}

fn row(key: &str, what: &str, times: &mut [Duration], p99: bool, anchor: &'static str, target: &'static str) -> Row {
    Row {
        key: key.to_string(),
        what: what.to_string(),
        median_us: median(times),
        p99_us: p99.then(|| percentile(times, 0.99)),
        anchor,
        target,
    }
}

fn human(us: f64) -> String {
    if us >= 1_000.0 {
        format!("{:.1} ms", us / 1_000.0)
    } else {
        format!("{us:.1} µs")
    }
}

/// `/proc/loadavg`'s first three fields: the machine is shared, so every
/// figure is printed beside how busy it was.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn print_table(rows: &[Row], fuel_overhead: f64, load_before: &str) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load_after = load_average();
    println!("\nmachine: {cpus} CPUs, load average {load_before} before, {load_after} after");
    println!("\n| measurement | median | p99 | anchor (wasmtime 48) | target |");
    println!("| --- | --- | --- | --- | --- |");
    for row in rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            row.what,
            human(row.median_us),
            row.p99_us.map_or(String::new(), human),
            row.anchor,
            row.target
        );
    }
    println!(
        "| fuel overhead (on vs off, CPU-bound) | {:+.1} % | | | |",
        fuel_overhead * 100.0
    );

    let mut json = serde_json::Map::new();
    for row in rows {
        let mut entry = serde_json::Map::new();
        entry.insert(
            "median_us".into(),
            serde_json::json!((row.median_us * 10.0).round() / 10.0),
        );
        if let Some(p99) = row.p99_us {
            entry.insert("p99_us".into(), serde_json::json!((p99 * 10.0).round() / 10.0));
        }
        if !row.anchor.is_empty() {
            entry.insert("anchor".into(), serde_json::json!(row.anchor));
        }
        if !row.target.is_empty() {
            entry.insert("target".into(), serde_json::json!(row.target));
        }
        json.insert(row.key.clone(), entry.into());
    }
    json.insert(
        "fuel_overhead_pct".into(),
        serde_json::json!((fuel_overhead * 1000.0).round() / 10.0),
    );
    json.insert(
        "machine".into(),
        serde_json::json!({"cpus": cpus, "load_before": load_before, "load_after": load_after}),
    );
    println!("\n{}", serde_json::to_string_pretty(&json).expect("plain JSON"));
}

/// Builds the shipped contracts for wasm32 with their own workspace.
fn build_contracts(repo: &Path) -> Result<PathBuf> {
    let workspace = repo.join("contracts");
    let target_dir = repo.join("target/wasm-guests");
    eprintln!("building contracts/ for wasm32 ...");
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(&workspace)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
            "--target-dir",
        ])
        .arg(&target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .status()
        .context("run cargo")?;
    if !status.success() {
        bail!("building contracts failed");
    }
    Ok(target_dir.join("wasm32-unknown-unknown/release"))
}
