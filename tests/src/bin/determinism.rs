//! Runs a fixed list of purchases against the shipped services and the
//! float-heavy test guest and prints one canonical JSON document: every
//! outcome (message and data, refusal or failure), the service's storage
//! after each call (sorted keys, values in hex), fuel used and peak memory.
//! Two runs on two architectures must print the same bytes; `cargo xtask
//! cross-determinism` builds this for x86-64 and aarch64 (run under
//! qemu-user) and compares them.
//!
//! ```text
//! determinism guests <dir>   copy the built .wasm files into <dir> (as <service>.wasm)
//! determinism run <dir>      run the purchases against <dir>/<service>.wasm, JSON on stdout
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wallance_runtime::{
    ContractStorage, Devices, EspressoMachine, InvokeError, MemoryStorage, Radio, RadioKind, Runtime, RuntimeConfig,
};
use wallance_tests::purchase;

/// (service, the built file it comes from).
const GUESTS: &[(&str, &str)] = &[
    ("espresso", wallance_tests::ESPRESSO),
    ("radio-rental", wallance_tests::RADIO_RENTAL),
    ("compute", wallance_tests::COMPUTE_RENTAL),
    ("floats", wallance_tests::FLOATS),
];

/// (service, buyer byte, price in DCoin, consensus time, params).
type Call = (&'static str, u8, u64, u64, &'static [(&'static str, &'static str)]);

/// The purchases, in order; each service's storage and devices carry over
/// from one call to the next.
const CALLS: &[Call] = &[
    ("espresso", 1, 2, 1_000, &[("size", "lungo")]),
    ("espresso", 1, 2, 2_000, &[]),
    ("espresso", 2, 2, 3_000, &[]), // no water left: refused
    ("espresso", 2, 2, 4_000, &[("size", "bucket")]),
    ("radio-rental", 0xa1, 10, 1_000, &[("radio", "lora")]),
    ("radio-rental", 0xb0, 10, 2_000, &[("radio", "lora0")]), // taken: refused
    ("radio-rental", 0xb0, 20, 2_000, &[("radio", "ble")]),
    ("radio-rental", 0xa1, 15, 3_000, &[("radio", "lora")]),
    ("radio-rental", 0xb0, 10, 4_000, &[("action", "status")]),
    (
        "compute",
        3,
        2,
        1,
        &[("task", "sha256-chain"), ("input", "wallance"), ("rounds", "20000")],
    ),
    ("compute", 3, 10, 2, &[("task", "prime-count"), ("below", "100000")]),
    ("compute", 3, 1, 4, &[("task", "prime-count"), ("below", "20000")]), // over budget: refused
    // Runs out of fuel (500 M) part way: every node must stop at the same
    // instruction.
    (
        "compute",
        3,
        1_000,
        5,
        &[("task", "sha256-chain"), ("input", "x"), ("rounds", "100000")],
    ),
    ("floats", 4, 1, 1, &[("set", "scalar")]),
    ("floats", 4, 1, 2, &[("set", "simd")]),
    ("floats", 4, 1, 3, &[("set", "relaxed")]),
    ("floats", 4, 1, 4, &[("set", "loop"), ("n", "150")]),
];

fn devices_for(service: &str) -> Devices {
    match service {
        // Water for a lungo and an espresso, beans for two cups.
        "espresso" => Devices::new().with("espresso", Arc::new(EspressoMachine::new(150, 17))),
        "radio-rental" => Devices::new()
            .with("lora0", Arc::new(Radio::new(RadioKind::Lora)))
            .with("ble0", Arc::new(Radio::new(RadioKind::Ble)))
            .with("zigbee0", Arc::new(Radio::new(RadioKind::Zigbee))),
        _ => Devices::new(),
    }
}

fn run(dir: &Path) -> anyhow::Result<Value> {
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let mut contracts = Vec::new();
    for (service, _) in GUESTS {
        let path = dir.join(format!("{service}.wasm"));
        let bytes = std::fs::read(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let started = Instant::now();
        let report = runtime.load_file(&path)?;
        eprintln!("loaded {service} in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
        contracts.push(json!({
            "service": report.info.name,
            "price": report.info.price,
            "version": report.info.version,
            "sha256": hex::encode(Sha256::digest(&bytes)),
        }));
    }
    let storage = Arc::new(MemoryStorage::new());
    let backend: Arc<dyn ContractStorage> = storage.clone();
    let mut devices: Vec<(&str, Devices)> = Vec::new();
    let mut calls = Vec::new();
    for (index, (service, buyer, price, time_ms, params)) in CALLS.iter().enumerate() {
        if !devices.iter().any(|(s, _)| s == service) {
            devices.push((service, devices_for(service)));
        }
        let granted = &devices.iter().find(|(s, _)| s == service).expect("just added").1;
        let paid = purchase(*buyer, *price, *time_ms, params);
        let started = Instant::now();
        let record = match runtime.invoke(service, &paid, &backend, granted) {
            Ok(outcome) => {
                storage.apply(service, &outcome.writes);
                let result = match outcome.result {
                    Ok(output) => json!({ "ok": { "message": output.message, "data": output.data } }),
                    Err(reason) => json!({ "refused": reason }),
                };
                let logs: Vec<Value> = outcome
                    .logs
                    .iter()
                    .map(|l| json!([format!("{:?}", l.level), l.message]))
                    .collect();
                json!({
                    "result": result,
                    "fuel_used": outcome.fuel_used,
                    "peak_memory_bytes": outcome.peak_memory_bytes,
                    "writes": outcome.writes.iter().map(|w| json!([w.key, w.value.as_ref().map(hex::encode)])).collect::<Vec<_>>(),
                    "logs": logs,
                })
            }
            Err(InvokeError::Failed {
                cause, fuel_used, logs, ..
            }) => {
                let logs: Vec<Value> = logs
                    .iter()
                    .map(|l| json!([format!("{:?}", l.level), l.message]))
                    .collect();
                json!({ "result": { "failed": cause.to_string() }, "fuel_used": fuel_used, "logs": logs })
            }
            Err(other) => json!({ "result": { "error": other.to_string() } }),
        };
        eprintln!(
            "call {index} {service} in {:.1} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
        let stored: serde_json::Map<String, Value> = storage
            .dump(service)
            .into_iter()
            .map(|(key, value)| (key, Value::String(hex::encode(value))))
            .collect();
        let mut record = record;
        record["call"] = json!(format!("{index}: {service} {params:?}"));
        record["storage_after"] = Value::Object(stored);
        calls.push(record);
    }
    Ok(json!({ "contracts": contracts, "calls": calls }))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["guests", dir] => {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir)?;
            for (service, built) in GUESTS {
                std::fs::copy(built, dir.join(format!("{service}.wasm")))?;
            }
            Ok(())
        }
        ["run", dir] => {
            let started = Instant::now();
            let document = run(Path::new(dir))?;
            // Pretty, with sorted keys: one value per line, so a line diff
            // names the first difference.
            println!("{}", serde_json::to_string_pretty(&document)?);
            eprintln!(
                "{} on {}: {:.2} s",
                std::env::consts::ARCH,
                std::env::consts::OS,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        _ => anyhow::bail!("usage: determinism guests <dir> | run <dir>"),
    }
}
