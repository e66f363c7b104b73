//! A peer killed with `kill -9`, then restarted, delays nobody else's
//! commits: real node processes buying in a loop over real DDS, in a private
//! network namespace.
//!
//! A node killed without a goodbye stays matched at every other node until
//! its DDS lease ends (rustdds announces 50 s), and a restarted one comes
//! back as a new participant beside its dead self. A reader that asked for
//! reliable delivery would hold each writer's send window (1 024 samples)
//! that long; ours take the busy topics best effort and the core re-sends
//! what is lost. The test sends well past one window while the peer is dead.

mod net;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use net::*;
use serde_json::{Value, json};
use wallance_dds::netns::{Loopback, test_inside};
use wallance_dds::topics::SEND_WINDOW;

/// One purchase a survivor made: when it asked (since the test started),
/// and its request-to-commit latency at the buyer.
#[derive(Debug, Clone, Copy)]
struct Bought {
    asked: Duration,
    latency_ms: u64,
}

fn counter(net: &Net, i: usize, key: &str) -> u64 {
    net.get(i, "/api/status")
        .and_then(|s| s["stats"][key].as_u64())
        .unwrap_or_else(|| panic!("no stats.{key} at node {i}"))
}

/// Buys espresso at the node serving `api` and waits for this node's commit of it; `None`
/// when the node refuses the purchase for now (its previous one not yet
/// settled here) or does not commit within 30 s.
fn buy_and_commit(api: &str, token: &str, price: u64, started: Instant) -> Option<Bought> {
    let body = json!({ "service": "espresso", "price": price, "params": {} });
    let asked = started.elapsed();
    let (status, v) = post(api, "/api/buy", Some(token), &body);
    if status != 202 {
        return None;
    }
    let id = v["request_id"].as_str()?.to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let p: Option<Value> = get(api, &format!("/api/purchases/{id}"));
        if let Some(l) = p.as_ref().and_then(|p| p["commit"]["latency_ms"].as_u64()) {
            return Some(Bought { asked, latency_ms: l });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("purchase {id} at {api} not committed 30 s after it was asked");
}

fn quantile(v: &[u64], q: f64) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v[((v.len() - 1) as f64 * q).round() as usize]
}

#[test]
fn a_peer_killed_and_restarted_during_a_buying_loop_delays_no_commit_by_a_second() {
    if !test_inside(
        "a_peer_killed_and_restarted_during_a_buying_loop_delays_no_commit_by_a_second",
        Loopback::Multicast,
    ) {
        return;
    }
    let mut net = Net::init(5, 1.0);
    // Every member funded from the start: this test is about the network's
    // pace, not about earning.
    let network = net.dir.path().join("network.toml");
    let text = std::fs::read_to_string(&network).unwrap();
    assert!(text.contains("initial_units = 0"), "{text}");
    std::fs::write(
        &network,
        text.replace("initial_units = 0", "initial_units = 1000000000000"),
    )
    .unwrap();
    net.start_all();
    let all: Vec<usize> = (0..5).collect();
    net.wait_ready(&all);
    let price = net.price();

    // node-1 provides, nodes 2 to 4 buy in a loop, node-5 is killed.
    let buyers = [1, 2, 3];
    let victim = 4;
    let started = Instant::now();
    let stop = AtomicBool::new(false);
    let mut marks = Vec::new();
    let bought: Vec<Vec<Bought>> = std::thread::scope(|s| {
        let stop = &stop;
        let loops: Vec<_> = buyers
            .iter()
            .map(|&i| {
                let (api, token) = (net.nodes[i].api.clone(), net.nodes[i].token.clone());
                s.spawn(move || {
                    let mut mine = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        match buy_and_commit(&api, &token, price, started) {
                            Some(b) => mine.push(b),
                            None => std::thread::sleep(Duration::from_millis(5)),
                        }
                    }
                    mine
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(3));
        let votes_before = counter(&net, 0, "votes_sent");
        marks.push(("killed", started.elapsed()));
        net.kill9(victim);
        std::thread::sleep(Duration::from_secs(15));
        let votes_dead = counter(&net, 0, "votes_sent") - votes_before;
        marks.push(("restarted", started.elapsed()));
        net.start(victim);
        std::thread::sleep(Duration::from_secs(6));
        // Killed and restarted at once: the new participant appears while
        // the dead one is still matched everywhere.
        marks.push(("killed and restarted again", started.elapsed()));
        net.kill9(victim);
        net.start(victim);
        std::thread::sleep(Duration::from_secs(6));
        stop.store(true, Ordering::Relaxed);
        let bought = loops.into_iter().map(|h| h.join().expect("buyer")).collect();
        // Enough traffic that a reliable window held by the dead peer would
        // have filled: node-1's votes alone, while node-5 was dead.
        assert!(
            votes_dead > SEND_WINDOW as u64,
            "only {votes_dead} votes sent while the peer was dead: the test proves nothing"
        );
        println!("node-1 sent {votes_dead} votes while node-5 was dead (send window {SEND_WINDOW})");
        bought
    });

    let first_kill = marks[0].1;
    let after: Vec<Bought> = bought
        .iter()
        .flatten()
        .filter(|b| b.asked >= first_kill)
        .copied()
        .collect();
    let latencies: Vec<u64> = after.iter().map(|b| b.latency_ms).collect();
    println!(
        "{} purchases by the survivors after the first kill: commit p50 {} ms, p99 {} ms, max {} ms; marks {marks:?}",
        after.len(),
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        quantile(&latencies, 1.0),
    );
    for (i, mine) in buyers.iter().zip(&bought) {
        assert!(
            mine.iter().filter(|b| b.asked >= first_kill).count() >= 20,
            "node {i} bought too little to measure: {mine:?}"
        );
    }
    let slow: Vec<&Bought> = after.iter().filter(|b| b.latency_ms > 1_000).collect();
    assert!(
        slow.is_empty(),
        "commits delayed more than a second by the dead or restarted peer: {slow:?} (marks {marks:?})"
    );
    // No survivor waited on, or failed, a send.
    for i in [0, 1, 2, 3] {
        let s = net.get(i, "/api/status").unwrap();
        assert_eq!(s["stats"]["dds_send_failures"]["window_full"], 0, "node {i}: {s}");
    }
    // The restarted node catches up, and every wallet agrees.
    net.wait_agree(&all, 60);
}
