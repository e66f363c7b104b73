//! A mixed x86-64 / aarch64 network: node-4 is the aarch64 build of
//! `wallance`, run by `qemu-aarch64` (Debian's qemu-user) in a 39-bit
//! address space, beside three x86-64 nodes, all real processes over DDS in
//! a private network namespace. `cargo xtask cross-network` builds the
//! aarch64 node and runs this test (it is `#[ignore]`d otherwise).
//!
//! - node-1 (x86-64) and node-4 (aarch64) both host the three shipped
//!   services, with the same devices; node-3 (x86-64) buys the same list of
//!   purchases from each, one after the other, so both providers see the
//!   same calls from the same buyer in the same order. Their outcomes (ok,
//!   message and data, log lines, fuel) and, once stopped, their contract
//!   storage must be identical.
//! - Purchases cross the architectures both ways: node-3 buys from the
//!   aarch64 provider and node-4 buys espresso from node-2 (x86-64).
//! - Every node ends with identical committed wallets.
//!
//! Why the namespace's loopback has no multicast flag: rustdds sets
//! `IP_MULTICAST_IF` with a 4-byte address on each multicast interface,
//! which qemu-user 7.2 does not translate ("Protocol not available"; a real
//! arm64 kernel accepts it). With no multicast interface rustdds opens no
//! multicast socket and finds its peers through its unicast discovery of
//! the first 12 participant ports on 127.0.0.1, which serves four nodes.
//! The x86-64 nodes run the same way, so every node takes the same path.

mod common;
mod net;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use net::*;
use serde_json::{Value, json};
use wallance::cli::bench_gateway::AARCH64_SYSROOT;
use wallance::cli::client::{self, Conn};
use wallance::http::view::PurchaseView;
use wallance_dds::netns::{Loopback, test_inside};

/// Set by `cargo xtask cross-network`: the aarch64 `wallance` binary.
const ENV_NODE: &str = "WALLANCE_AARCH64_NODE";
/// A Raspberry Pi's usual kernel gives user space 39 bits: 512 GiB.
const GUEST_ADDRESS_SPACE: &str = "512G";

const X86_PROVIDER: usize = 0;
const X86_SECOND: usize = 1;
const BUYER: usize = 2;
const ARM: usize = 3;

/// (service, price in DCoin, params).
type Call = (&'static str, u64, &'static [(&'static str, &'static str)]);

/// The same list goes to each provider.
const CALLS: &[Call] = &[
    ("espresso", 2, &[("size", "lungo")]),
    ("espresso", 2, &[]),
    ("espresso", 2, &[("size", "bucket")]), // refused: unknown size
    ("radio-rental", 10, &[("radio", "lora")]),
    ("radio-rental", 10, &[("radio", "ble")]),
    ("radio-rental", 10, &[("action", "status")]),
    (
        "compute",
        2,
        &[("task", "sha256-chain"), ("input", "wallance"), ("rounds", "20000")],
    ),
    ("compute", 10, &[("task", "prime-count"), ("below", "100000")]),
    ("compute", 1, &[("task", "prime-count"), ("below", "20000")]), // over budget: refused
];

/// The devices both providers get (node-2 only the espresso machine).
const DEVICES: &str = r#"
[[devices]]
name = "espresso-machine"
kind = "espresso-machine"
water_ml = 5000
beans_g = 1000
grant = ["espresso"]

[[devices]]
name = "lora0"
kind = "lora"
grant = ["radio-rental"]

[[devices]]
name = "ble0"
kind = "ble"
grant = ["radio-rental"]

[[devices]]
name = "zigbee0"
kind = "zigbee"
grant = ["radio-rental"]
"#;

/// Lets node `i` host the three services with the shared devices.
fn host_three_services(net: &Net, i: usize) {
    let dir = net.nodes[i].config.parent().unwrap().to_path_buf();
    let mut text = std::fs::read_to_string(&net.nodes[i].config).unwrap();
    // `Net::init` gave node-1 an espresso machine already.
    if let Some(at) = text.find("\n[[devices]]") {
        text.truncate(at);
    }
    text.push_str(DEVICES);
    std::fs::write(&net.nodes[i].config, text).unwrap();
    for (file, service) in [
        ("espresso", "espresso"),
        ("radio_rental", "radio-rental"),
        ("compute_rental", "compute"),
    ] {
        std::fs::copy(common::guest_wasm(file), dir.join(format!("contracts/{service}.wasm"))).unwrap();
    }
}

/// Every member starts with `dcoin`, so the test needs no sensor income.
fn fund_everyone(net: &Net, dcoin: u64) {
    let path = net.dir.path().join("network.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let old = text.lines().find(|l| l.starts_with("initial_units")).unwrap();
    let text = text.replace(old, &format!("initial_units = {}", dcoin * COIN));
    std::fs::write(&path, text).unwrap();
}

/// Buys `service` at node `buyer` from `provider` (a member name) and
/// returns the request id.
fn buy(net: &Net, buyer: usize, provider: &str, service: &str, dcoin: u64, params: &[(&str, &str)]) -> String {
    let params: serde_json::Map<String, Value> = params
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    let body = json!({ "service": service, "price": dcoin * COIN, "provider": provider, "params": params });
    let (status, v) = post(&net.nodes[buyer].api, "/api/buy", Some(&net.nodes[buyer].token), &body);
    assert_eq!(status, 202, "node-{} buying {service} from {provider}: {v}", buyer + 1);
    v["request_id"].as_str().unwrap().to_string()
}

/// Node `i`'s record of purchase `id`, once it has the outcome.
fn record(net: &Net, i: usize, id: &str) -> PurchaseView {
    let conn = Conn {
        api: net.nodes[i].api.clone(),
        token: None,
        json: false,
    };
    let p = client::wait_for(&conn, id, 120).unwrap_or_else(|e| panic!("purchase {id} at node-{}: {e:#}", i + 1));
    assert!(
        p.outcome.is_some(),
        "purchase {id} settled at node-{} without an outcome: {p:?}",
        i + 1
    );
    p
}

/// Leases end at the purchase's consensus time plus their length: the one
/// input that differs between two purchases. Runs of 12 digits or more
/// (millisecond times) become `<ms>`; everything else is compared as is.
fn mask_times(text: &str) -> String {
    let mut out = String::new();
    let mut digits = String::new();
    for c in text.chars().chain(std::iter::once('\0')) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        if digits.len() >= 12 {
            out.push_str("<ms>");
        } else {
            out.push_str(&digits);
        }
        digits.clear();
        if c != '\0' {
            out.push(c);
        }
    }
    out
}

/// What a provider produced for one call, as compared across architectures.
fn produced(p: &PurchaseView) -> Value {
    let o = p.outcome.as_ref().unwrap();
    json!({
        "service": p.service,
        "ok": o.ok,
        "body": mask_times(&o.body),
        "logs": o.logs.iter().map(|l| mask_times(l)).collect::<Vec<_>>(),
        "fuel_used": o.fuel_used,
    })
}

/// Node `i` sees its three peers and at least `services` offers.
fn ready(net: &Net, i: usize, services: u64) -> bool {
    net.get(i, "/api/status")
        .is_some_and(|s| s["services"].as_u64() >= Some(services) && s["peers"]["dds_participants"].as_u64() >= Some(3))
}

/// The contract storage of a stopped node: service → key → value.
fn storage(net: &Net, i: usize) -> BTreeMap<String, BTreeMap<String, String>> {
    let dir = net.nodes[i].config.parent().unwrap();
    let network = wallance::config::NetworkFile::load(&net.dir.path().join("network.toml")).unwrap();
    let membership = network.membership().unwrap();
    let (store, _) = wallance_store::Store::open(&dir.join("data/wallance.redb"), membership.members()).unwrap();
    let mut all = BTreeMap::new();
    for service in ["espresso", "radio-rental", "compute"] {
        let mut kv = BTreeMap::new();
        for key in store.kv_keys(service, b"", 1_000).unwrap() {
            let value = store.kv_get(service, &key).unwrap().unwrap();
            kv.insert(
                String::from_utf8_lossy(&key).into_owned(),
                mask_times(&String::from_utf8_lossy(&value)),
            );
        }
        all.insert(service.to_string(), kv);
    }
    all
}

#[test]
#[ignore = "needs the aarch64 node: run `cargo xtask cross-network`"]
fn an_aarch64_node_under_qemu_agrees_with_x86_nodes_on_wallets_outcomes_and_storage() {
    let name = "an_aarch64_node_under_qemu_agrees_with_x86_nodes_on_wallets_outcomes_and_storage";
    let Some(arm_node) = std::env::var_os(ENV_NODE) else {
        panic!("{ENV_NODE} is not set: run `cargo xtask cross-network`, which builds the aarch64 node");
    };
    if !test_inside(name, Loopback::NoMulticast) {
        return;
    }
    let arm_node = PathBuf::from(arm_node);
    let mut net = Net::init(4, 1.0);
    fund_everyone(&net, 1_000);
    host_three_services(&net, X86_PROVIDER);
    host_three_services(&net, ARM);
    for i in [X86_PROVIDER, X86_SECOND, BUYER] {
        net.start(i);
    }
    let started = Instant::now();
    let arm_node = arm_node.display().to_string();
    net.start_program(
        ARM,
        &[
            "qemu-aarch64",
            "-L",
            AARCH64_SYSROOT,
            "-R",
            GUEST_ADDRESS_SPACE,
            &arm_node,
        ],
    );
    // node-2 hosts espresso too, for node-4 to buy across architectures.
    // It is added once node-4 is up so that node-4's services are
    // compared with node-1's alone.
    wait("four nodes to discover each other and six offers", 300, || {
        (0..4).all(|i| ready(&net, i, 6))
    });
    let arm_ready = started.elapsed();

    // The aarch64 node said which memory layout it chose, and why.
    let log = std::fs::read_to_string(&net.nodes[ARM].log).unwrap();
    let plan = log
        .lines()
        .find(|l| l.contains("contract memory:"))
        .unwrap_or_else(|| panic!("node-4 did not log its memory plan:\n{log}"));
    assert!(plan.contains("39-bit user space"), "{plan}");
    assert!(plan.contains("a pool of 32 live instances"), "{plan}");

    // The same calls from the same buyer, first to node-1 (x86-64), then to
    // node-4 (aarch64).
    let mut x86 = Vec::new();
    let mut arm = Vec::new();
    let mut arm_times = Vec::new();
    for (service, dcoin, params) in CALLS {
        for (provider, out) in [(X86_PROVIDER, &mut x86), (ARM, &mut arm)] {
            let begun = Instant::now();
            let id = buy(&net, BUYER, &format!("node-{}", provider + 1), service, *dcoin, params);
            let at_buyer = record(&net, BUYER, &id);
            let at_provider = record(&net, provider, &id);
            assert_eq!(
                at_buyer.outcome.as_ref().map(|o| (o.ok, &o.body)),
                at_provider.outcome.as_ref().map(|o| (o.ok, &o.body)),
                "the buyer got what the provider produced"
            );
            if provider == ARM {
                arm_times.push(begun.elapsed());
            }
            out.push(produced(&at_provider));
        }
    }
    for (i, (a, b)) in x86.iter().zip(&arm).enumerate() {
        assert_eq!(a, b, "call {i} {:?}: x86-64 and aarch64 providers differ", CALLS[i]);
    }
    let served: Vec<bool> = x86.iter().map(|v| v["ok"] == true).collect();
    assert_eq!(
        served,
        [true, true, false, true, true, true, true, true, false],
        "each call served or refused as its comment says: {x86:#?}"
    );

    // aarch64 buyer, x86-64 provider: node-2 starts offering espresso now.
    let dir2 = net.nodes[X86_SECOND].config.parent().unwrap().to_path_buf();
    let mut text = std::fs::read_to_string(&net.nodes[X86_SECOND].config).unwrap();
    text.push_str(DEVICES.split("\n[[devices]]\nname = \"lora0\"").next().unwrap());
    std::fs::write(&net.nodes[X86_SECOND].config, text).unwrap();
    net.stop(X86_SECOND);
    std::fs::copy(common::guest_wasm("espresso"), dir2.join("contracts/espresso.wasm")).unwrap();
    net.start(X86_SECOND);
    wait("node-2's espresso offer at node-4", 120, || {
        ready(&net, X86_SECOND, 7) && ready(&net, ARM, 7)
    });
    let id = buy(&net, ARM, "node-2", "espresso", 2, &[("size", "espresso")]);
    let p = record(&net, ARM, &id);
    assert_eq!(p.outcome.as_ref().map(|o| o.ok), Some(true), "{p:?}");
    let served = record(&net, X86_SECOND, &id);
    assert_eq!(
        served.outcome.map(|o| (o.ok, o.body)),
        p.outcome.map(|o| (o.ok, o.body)),
        "node-4 got what node-2 produced"
    );

    // Every node, both architectures, holds the same committed wallets.
    net.wait_agree(&[0, 1, 2, 3], 120);
    let wallets = net.committed(0).unwrap();
    assert!(
        wallets
            .iter()
            .any(|(name, version, _, _)| name == "node-4" && *version >= 1),
        "node-4's own purchase moved its wallet: {wallets:?}"
    );

    for i in 0..4 {
        net.stop(i);
    }
    let (x86_storage, arm_storage) = (storage(&net, X86_PROVIDER), storage(&net, ARM));
    assert_eq!(
        x86_storage, arm_storage,
        "contract storage differs between x86-64 and aarch64"
    );
    for (service, key) in [
        ("espresso", "cups"),
        ("radio-rental", "lease/lora0"),
        ("radio-rental", "lease/ble0"),
        ("compute", "jobs"),
    ] {
        assert!(
            x86_storage[service].contains_key(key),
            "{service} stored no {key:?}: {x86_storage:?}"
        );
    }
    eprintln!(
        "aarch64 node ready (three contracts compiled under qemu) after {:.1} s; its purchases took {:?}",
        arm_ready.as_secs_f64(),
        arm_times
    );
}
