//! End to end: real `wallance node` processes, real DDS (RTPS over UDP),
//! real redb files, the real espresso contract in wasmtime. Each test runs
//! inside a private network namespace it creates: nothing leaves the machine.

mod net;

use std::process::Command;

use net::*;
use wallance_dds::netns::{Loopback, test_inside};

#[test]
fn the_demo_runs_for_a_user_without_loopback_multicast() {
    // The usual Linux default: lo up, no multicast flag; rustdds discovers
    // the 8 processes by unicast.
    if !test_inside(
        "the_demo_runs_for_a_user_without_loopback_multicast",
        Loopback::NoMulticast,
    ) {
        return;
    }
    let out = Command::new(BIN).args(["demo", "--timeout", "60"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("identical on all 8 nodes"), "{stdout}");
    assert!(stdout.contains("brewed a 20 ml ristretto"), "{stdout}");
}

#[test]
fn eight_nodes_buy_a_service_and_every_wallet_agrees() {
    if !test_inside("eight_nodes_buy_a_service_and_every_wallet_agrees", Loopback::Multicast) {
        return;
    }
    let mut net = Net::init(8, 20.0);
    net.start_all();
    let all: Vec<usize> = (0..8).collect();
    net.wait_ready(&all);
    let price = net.price();
    // Three buyers at once.
    for i in [1, 2, 3] {
        net.wait_funds(i, price);
    }
    let ids: Vec<(usize, String)> = [1, 2, 3]
        .iter()
        .map(|&i| (i, net.buy(i, &[("size", "espresso")])))
        .collect();
    let mut outcomes = Vec::new();
    for (i, id) in &ids {
        let p = net.wait_done(*i, id);
        let o = p.outcome.as_ref().expect("waited for");
        assert!(o.ok, "{p:?}");
        assert!(o.body.contains("brewed a 40 ml espresso"), "{p:?}");
        outcomes.push((id.clone(), o.body.clone()));
    }
    net.wait_agree(&all, 30);
    for i in [1, 2, 3] {
        assert_eq!(net.version_of(0, i), 1);
    }
    // The provider ran each purchase exactly once and brewed one cup for
    // each: the cups are numbered 1, 2, 3, once each, and every buyer got
    // the cup made for it.
    let s = net.get(0, "/api/status").unwrap();
    assert_eq!(s["stats"]["contract_runs"], 3, "{s}");
    let bought: Vec<&str> = ids.iter().map(|(_, id)| id.as_str()).collect();
    let cups = one_cup_per_purchase(&net, &bought);
    assert_eq!(cups.len(), 3, "{cups:?}");
    for (id, body) in &outcomes {
        assert_eq!(Some(cups[id]), field(body, "cup-number"), "{body}");
    }
    for i in 0..8 {
        net.stop(i); // clean shutdown on SIGTERM
    }
}

#[test]
fn a_node_killed_mid_consensus_restarts_and_catches_up() {
    if !test_inside(
        "a_node_killed_mid_consensus_restarts_and_catches_up",
        Loopback::Multicast,
    ) {
        return;
    }
    let mut net = Net::init(5, 20.0);
    net.start_all();
    let all: Vec<usize> = (0..5).collect();
    net.wait_ready(&all);
    let price = net.price();
    net.wait_funds(1, price);
    net.wait_funds(4, price);
    // node-5 buys and is killed right away: its request is durable, its vote
    // may or may not have left.
    let id5 = net.buy(4, &[]);
    net.kill9(4);
    // The others buy while it is down (4 of 5 is a quorum).
    let id2 = net.buy(1, &[]);
    assert_eq!(net.wait_done(1, &id2).outcome.map(|o| o.ok), Some(true));
    net.start(4);
    // It restarts from its store, re-sends its pending request and catches up
    // on what it missed from certificates.
    net.wait_ready(&all);
    wait("node-5's own purchase", 60, || net.version_of(0, 4) == 1);
    net.wait_agree(&all, 60);
    assert_eq!(net.version_of(4, 1), 1);
    // node-5's own purchase, asked just before the kill: its record was
    // durable with the request, and it learns the outcome and the verdict
    // after restarting (in either order).
    let mine = net.wait_complete(4, &id5);
    assert_eq!(mine.requester, "node-5", "{mine:?}");
    assert!(
        mine.requested_at_ms.is_some(),
        "the record from before the kill: {mine:?}"
    );
    assert_eq!(mine.commit.as_ref().map(|c| c.version), Some(1), "{mine:?}");
    assert_eq!(mine.outcome.as_ref().map(|o| o.ok), Some(true), "{mine:?}");
    assert_eq!(mine.verdict.as_ref().map(|v| v.paid), Some(true), "{mine:?}");
    // Killed again, the whole record is still there, unchanged.
    net.kill9(4);
    net.start(4);
    net.wait_ready(&all);
    assert_eq!(net.wait_complete(4, &id5), mine);
    // The provider ran each of the two purchases once, one cup each, and
    // node-5 got the cup made for it.
    let cups = one_cup_per_purchase(&net, &[&id5, &id2]);
    assert_eq!(cups.len(), 2, "{cups:?}");
    let body = &mine.outcome.as_ref().expect("waited for").body;
    assert_eq!(Some(cups[&id5]), field(body, "cup-number"), "{body}");
}

#[test]
fn a_late_joiner_converges() {
    if !test_inside("a_late_joiner_converges", Loopback::Multicast) {
        return;
    }
    let mut net = Net::init(4, 20.0);
    // Three of four are a quorum (3 > 8/3).
    for i in 0..3 {
        net.start(i);
    }
    net.wait_ready(&[0, 1, 2]);
    let price = net.price();
    net.wait_funds(1, price);
    let id = net.buy(1, &[]);
    assert_eq!(net.wait_done(1, &id).outcome.map(|o| o.ok), Some(true));
    net.wait_funds(2, price);
    let id = net.buy(2, &[]);
    assert_eq!(net.wait_done(2, &id).outcome.map(|o| o.ok), Some(true));
    net.start(3);
    net.wait_ready(&[0, 1, 2, 3]);
    net.wait_agree(&[0, 1, 2, 3], 60);
    assert_eq!(net.version_of(3, 1), 1);
    assert_eq!(net.version_of(3, 2), 1);
}

#[test]
fn nodes_on_separate_hosts_reach_consensus_and_heal_a_partition() {
    if !test_inside(
        "nodes_on_separate_hosts_reach_consensus_and_heal_a_partition",
        Loopback::Multicast,
    ) {
        return;
    }
    // Four "hosts": network namespaces joined by veth pairs to a bridge, with
    // addresses from 198.18.0.0/15 (reserved for network tests) that exist
    // only inside this test's namespaces.
    let tag = std::process::id() % 10_000;
    let ns: Vec<String> = (0..4).map(|i| format!("wl{tag}h{i}")).collect();
    sh("ip link add br0 type bridge && ip link set br0 up && ip link add br1 type bridge && ip link set br1 up");
    for (i, n) in ns.iter().enumerate() {
        sh(&format!(
            "ip netns add {n} && ip link add v{i} type veth peer name eth0 netns {n} && ip link set v{i} master br0 && ip link set v{i} up && \
             ip netns exec {n} sh -c 'ip link set lo up && ip link set eth0 up && ip addr add 198.18.0.{}/24 dev eth0 && ip link set eth0 multicast on && ip route add 224.0.0.0/4 dev eth0'",
            i + 1
        ));
    }
    let cleanup = Cleanup(ns.clone());
    let mut net = Net::init_with(4, 20.0, false);
    for (i, host) in ns.iter().enumerate() {
        // The API stays on each host's own loopback: talk to it from inside.
        net.start_with(i, &["ip", "netns", "exec", host]);
    }
    let in_ns = |i: usize, path: &str| -> Option<serde_json::Value> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns[i],
                "curl",
                "-sf",
                &format!("{}{path}", net.nodes[i].api),
            ])
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    };
    let ready = |nodes: &[usize]| {
        nodes.iter().all(|&i| {
            in_ns(i, "/api/status").is_some_and(|s| {
                s["peers"]["dds_participants"].as_u64().unwrap_or(0) + 1 >= nodes.len() as u64
                    && s["services"].as_u64().unwrap_or(0) >= 1
            })
        })
    };
    wait("discovery across hosts", 60, || ready(&[0, 1, 2, 3]));
    let buy = |i: usize| -> String {
        let body = r#"{"service":"espresso","price":2000000,"params":{}}"#;
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns[i],
                "curl",
                "-s",
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "-H",
            ])
            .arg(format!("Authorization: Bearer {}", net.nodes[i].token))
            .args(["-d", body, &format!("{}/api/buy", net.nodes[i].api)])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["request_id"]
            .as_str()
            .unwrap_or_else(|| panic!("buy refused: {v}"))
            .to_string()
    };
    let version = |at: usize, member: usize| -> u64 {
        in_ns(at, "/api/wallets")
            .and_then(|w| {
                w.as_array()
                    .unwrap()
                    .iter()
                    .find(|w| w["name"] == format!("node-{}", member + 1).as_str())
                    .cloned()
            })
            .and_then(|w| w["version"].as_u64())
            .unwrap_or(0)
    };
    let funds = |at: usize| -> u64 {
        in_ns(at, "/api/wallets")
            .and_then(|w| {
                w.as_array()
                    .unwrap()
                    .iter()
                    .find(|w| w["name"] == format!("node-{}", at + 1).as_str())
                    .cloned()
            })
            .and_then(|w| w["spendable"].as_u64())
            .unwrap_or(0)
    };
    // A purchase costs the price (2 DCoin) plus the voter reward (2 DCoin).
    wait("node-2's funds", 60, || funds(1) >= 4 * COIN);
    buy(1);
    wait("a purchase across hosts", 60, || (0..4).all(|i| version(i, 1) == 1));
    // Partition: host 4's cable goes to another bridge.
    sh("ip link set v3 nomaster && ip link set v3 master br1");
    wait("node-3's funds", 60, || funds(2) >= 4 * COIN);
    buy(2);
    wait("commit on the majority side", 60, || (0..3).all(|i| version(i, 2) == 1));
    assert_eq!(version(3, 2), 0, "the cut-off host cannot have seen it");
    // Heal: host 4 catches up from certificates.
    sh("ip link set v3 nomaster && ip link set v3 master br0");
    wait("the cut-off host catches up", 90, || version(3, 2) == 1);
    drop(net);
    drop(cleanup);
}

struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

#[test]
fn forged_replayed_and_malformed_samples_are_rejected_and_the_network_goes_on() {
    if !test_inside(
        "forged_replayed_and_malformed_samples_are_rejected_and_the_network_goes_on",
        Loopback::Multicast,
    ) {
        return;
    }
    use wallance_core::msg::{Message, Share, Vote};
    use wallance_core::{Keypair, MemberId};
    let mut net = Net::init(4, 20.0);
    net.start_all();
    net.wait_ready(&[0, 1, 2, 3]);
    let price = net.price();
    net.wait_funds(1, price);
    let id = net.buy(1, &[]);
    assert_eq!(net.wait_done(1, &id).outcome.map(|o| o.ok), Some(true));
    // An intruder joins the DDS domain (it is not a member).
    let intruder = wallance_dds::Transport::new(wallance_dds::TransportConfig::loopback(7)).unwrap();
    assert!(intruder.wait_for_readers(4, std::time::Duration::from_secs(20)));
    let stranger = Keypair::from_seed([42; 32]);
    let members: Vec<MemberId> = net
        .get(0, "/api/wallets")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|w| MemberId::from_hex(w["id"].as_str().unwrap()).unwrap())
        .collect();
    let mut request_id = [0u8; 32];
    hex::decode_to_slice(&id, &mut request_id).unwrap();
    // A vote in a member's name, signed by someone else, for a request no
    // node holds (a vote for the committed request would be dropped as a
    // late duplicate before any signature is checked).
    request_id[0] ^= 0xff;
    let mut forged = Vote::build(&stranger, request_id, 1_000 * COIN, 1).unwrap();
    forged.voter = members[2];
    // Shares from a non-member, and one claiming a member's identity.
    let alien = Share::new(&stranger, 1, 1, "t", 1.0);
    let mut impostor = Share::new(&stranger, 10_000, 1, "t", 1.0);
    impostor.sender = members[3];
    // Sent again at each poll: every topic is best effort, and the intruder
    // seeing the nodes' readers says nothing of the nodes having matched its
    // writers; what comes before that is dropped, as an attacker's retries
    // would make up for.
    let forgeries = [Message::Vote(forged), Message::Share(alien), Message::Share(impostor)];
    let rejected = |i: usize| -> u64 {
        net.get(i, "/api/status")
            .map(|s| {
                s["stats"]["rejected"]
                    .as_object()
                    .unwrap()
                    .values()
                    .map(|v| v.as_u64().unwrap())
                    .sum()
            })
            .unwrap_or(0)
    };
    wait("the forgeries to be refused", 30, || {
        for m in &forgeries {
            intruder.send(m).unwrap();
        }
        (0..4).all(|i| rejected(i) >= 2)
    });
    // The network goes on: another purchase commits everywhere.
    net.wait_funds(2, price);
    let id = net.buy(2, &[]);
    assert_eq!(net.wait_done(2, &id).outcome.map(|o| o.ok), Some(true));
    net.wait_agree(&[0, 1, 2, 3], 30);
}

/// `key=N` in an outcome body (`brewed a 40 ml espresso (size-ml=40,
/// cup-number=1, ...)`).
fn field(body: &str, key: &str) -> Option<u64> {
    let at = body.find(&format!("{key}="))? + key.len() + 1;
    body[at..].split([',', ')']).next()?.trim().parse().ok()
}

/// Each committed purchase ran at most once and each one paid for brewed
/// exactly one cup. The espresso contract numbers its cups in its storage
/// (`cup-number` in its outcome) and the machine its brews (`cups` in each
/// answer, which the node journals with the purchase's key in
/// `<data_dir>/devices/espresso-machine.calls`; the contract asks `status`,
/// then `brew`). `bought` is every purchase the network committed. Once
/// the provider (node-1, never restarted here) settled them all, it
/// produced at most one outcome per purchase and no other; the served ones
/// are exactly those whose price it was paid, and carry the cup numbers
/// 1..=n once each; and the machine brewed exactly n cups, one per
/// purchase, which it numbered 1..=n. A contract run twice for a purchase
/// adds an outcome and a cup number; a cup brewed twice adds a brew to the
/// journal. Returns the served purchases' cup numbers.
fn one_cup_per_purchase(net: &Net, bought: &[&str]) -> std::collections::BTreeMap<String, u64> {
    let committed: u64 = net
        .get(0, "/api/wallets")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["version"].as_u64().unwrap())
        .sum();
    assert_eq!(committed, bought.len() as u64, "purchases committed at the provider");
    let stat = |key: &str| {
        net.get(0, "/api/view")
            .and_then(|v| v["stats"][key].as_u64())
            .unwrap_or(u64::MAX)
    };
    wait("every purchase settled at the provider", 90, || {
        stat("escrows_open") == 0 && stat("verdicts_paid") + stat("verdicts_refunded") == committed
    });
    let paid = stat("verdicts_paid");
    let produced = net.get(0, "/api/produced").unwrap();
    let produced = produced.as_array().unwrap();
    let mut ids: Vec<&str> = produced.iter().map(|o| o["request_id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), produced.len(), "two outcomes for one purchase: {produced:?}");
    assert!(
        ids.iter().all(|id| bought.contains(id)),
        "an outcome for a purchase not bought: {produced:?}"
    );
    let cups: std::collections::BTreeMap<String, u64> = produced
        .iter()
        .filter(|o| o["ok"] == true)
        .map(|o| {
            let body = o["body"].as_str().unwrap();
            let cup = field(body, "cup-number").unwrap_or_else(|| panic!("no cup number in {o}"));
            (o["request_id"].as_str().unwrap().to_string(), cup)
        })
        .collect();
    let served = cups.len() as u64;
    assert_eq!(served, paid, "served outcomes and purchases paid: {produced:?}");
    let mut numbers: Vec<u64> = cups.values().copied().collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=served).collect::<Vec<_>>(), "cup numbers: {produced:?}");
    // The machine's journal: the brew of each purchase key.
    let journal = net.nodes[0]
        .config
        .parent()
        .unwrap()
        .join("data/devices/espresso-machine.calls");
    let text = std::fs::read_to_string(&journal).unwrap_or_default();
    let mut brews = std::collections::BTreeMap::new();
    for line in text.lines() {
        let l: serde_json::Value = serde_json::from_str(line).unwrap();
        let Some(answer) = l["a"]["Ok"].as_array() else {
            continue;
        };
        let cups_made = answer
            .iter()
            .find(|kv| kv[0] == "cups")
            .and_then(|kv| kv[1].as_str()?.parse::<u64>().ok())
            .unwrap();
        let seq = l["s"].as_u64().unwrap();
        assert!(seq <= 1, "a third device call in one run: {line}");
        if seq == 1 {
            let key = l["k"].as_str().unwrap().to_string();
            if let Some(before) = brews.insert(key, cups_made) {
                assert_eq!(before, cups_made, "one key, two different brews:\n{text}");
            }
        }
    }
    let mut machine: Vec<u64> = brews.values().copied().collect();
    machine.sort_unstable();
    assert_eq!(
        machine,
        (1..=served).collect::<Vec<_>>(),
        "brews the machine journaled:\n{text}"
    );
    cups
}
