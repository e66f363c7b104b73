//! Gentle on SD cards, with real node processes and real redb files over
//! DDS (in a private network namespace): sensor shares never make the
//! store fsync; a group-commit window (`[store] commit_window_ms`) makes
//! several steps share one durable commit and still loses nothing to a
//! `kill -9`.

mod net;

use net::*;
use serde_json::Value;
use wallance_dds::netns::{Loopback, test_inside};

fn stats(net: &Net, i: usize) -> Value {
    net.get(i, "/api/status")
        .map(|s| s["stats"].clone())
        .unwrap_or(Value::Null)
}

fn n(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// Appends a `[store]` table to every node's config.
fn store_settings(net: &Net, table: &str) {
    for node in &net.nodes {
        let mut text = std::fs::read_to_string(&node.config).unwrap();
        text.push_str(&format!("\n[store]\n{table}\n"));
        std::fs::write(&node.config, text).unwrap();
    }
}

#[test]
fn sensor_shares_never_fsync_the_store() {
    if !test_inside("sensor_shares_never_fsync_the_store", Loopback::Multicast) {
        return;
    }
    let mut net = Net::init(3, 20.0);
    // No checkpoint during the test: only shares could sync.
    store_settings(&net, "checkpoint_s = 3600");
    net.start_all();
    net.wait_ready(&[0, 1, 2]);
    let before: Vec<Value> = (0..3).map(|i| stats(&net, i)).collect();
    std::thread::sleep(std::time::Duration::from_secs(3));
    for (i, b) in before.iter().enumerate() {
        let a = stats(&net, i);
        let shares = n(&a, "shares_received") - n(b, "shares_received");
        // 20 per second from each of two peers, for 3 s.
        assert!(shares >= 60, "node {i} received {shares} shares");
        assert_eq!(
            n(&a, "store_syncs"),
            n(b, "store_syncs"),
            "node {i} synced for shares: {a}"
        );
        assert!(n(&a, "store_commits_lazy") > n(b, "store_commits_lazy"), "{a}");
    }
    // A clean stop makes the lazy commits durable (a checkpoint): node-1's
    // own share tally, committed only lazily since start-up, is on disk.
    let own = |net: &Net| {
        net.get(0, "/api/wallets")
            .and_then(|w| w.as_array()?.iter().find(|w| w["name"] == "node-1")?["shares"].as_u64())
    };
    let shares_before_stop = own(&net).expect("node-1's wallet");
    assert!(shares_before_stop >= 60, "{shares_before_stop}");
    net.stop(0);
    let log = std::fs::read_to_string(&net.nodes[0].log).unwrap();
    assert!(log.contains("every acknowledged decision is already durable"), "{log}");
    let network = wallance::config::NetworkFile::load(&net.dir.path().join("network.toml")).unwrap();
    let store_path = net.nodes[0].config.parent().unwrap().join("data/wallance.redb");
    let (_, snapshot) = wallance_store::Store::open(&store_path, network.membership().unwrap().members()).unwrap();
    assert!(
        snapshot.wallets[&0].shares_seen >= shares_before_stop,
        "the stop lost lazily committed shares: {} on disk, {shares_before_stop} before the stop",
        snapshot.wallets[&0].shares_seen
    );
}

#[test]
fn a_commit_window_groups_steps_and_survives_kill_9() {
    if !test_inside("a_commit_window_groups_steps_and_survives_kill_9", Loopback::Multicast) {
        return;
    }
    let mut net = Net::init(4, 10.0);
    store_settings(&net, "commit_window_ms = 30");
    net.start_all();
    let all = [0, 1, 2, 3];
    net.wait_ready(&all);
    let price = net.price();
    let mut ids = Vec::new();
    for round in 0..4 {
        for buyer in [1, 2] {
            net.wait_funds(buyer, price);
            ids.push((buyer, net.buy(buyer, &[])));
        }
        if round == 1 {
            // A voter dies while groups are open, and comes back.
            net.kill9(3);
            net.start(3);
        }
        for (buyer, id) in &ids[ids.len() - 2..] {
            net.wait_done(*buyer, id);
        }
    }
    net.wait_ready(&all);
    net.wait_agree(&all, 60);
    // Each buyer's cups, as the provider's machine counted them, once each.
    let cups: Vec<String> = ids
        .iter()
        .map(|(b, id)| net.wait_done(*b, id).outcome.unwrap().body)
        .collect();
    let mut numbers: Vec<u64> = cups
        .iter()
        .map(|b| {
            b.split("cup-number=")
                .nth(1)
                .and_then(|r| r.split([',', ')']).next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no cup number in {b}"))
        })
        .collect();
    numbers.sort();
    assert_eq!(numbers, (1..=8).collect::<Vec<u64>>());
    // Some durable commit carried more than one step.
    let s = stats(&net, 0);
    let commits = n(&s, "store_commits_durable") + n(&s, "store_commits_lazy");
    assert!(n(&s, "store_steps") > commits, "no step shared a commit: {s}");
}

#[test]
fn lazy_commits_are_made_durable_every_checkpoint() {
    if !test_inside("lazy_commits_are_made_durable_every_checkpoint", Loopback::Multicast) {
        return;
    }
    let mut net = Net::init(2, 20.0);
    store_settings(&net, "checkpoint_s = 1");
    net.start_all();
    net.wait_ready(&[0, 1]);
    let before: Vec<Value> = (0..2).map(|i| stats(&net, i)).collect();
    std::thread::sleep(std::time::Duration::from_millis(3_500));
    for (i, b) in before.iter().enumerate() {
        let a = stats(&net, i);
        // Shares only: each second's lazy commits end in one checkpoint,
        // a durable commit of at least two syncs (redb's quick repair).
        let checkpoints = n(&a, "store_commits_durable") - n(b, "store_commits_durable");
        assert!(
            (2..=5).contains(&checkpoints),
            "node {i}: {checkpoints} durable commits in 3.5 s: {a}"
        );
        assert!(n(&a, "store_syncs") - n(b, "store_syncs") >= 2 * checkpoints, "{a}");
    }
}
