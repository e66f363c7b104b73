//! The node's HTTP API and the operator's CLI against a real network of four
//! `wallance node` processes in a private network namespace.

mod common;

use std::process::Command;

use common::{BIN, Net, Options, get, get_raw, post, wallet};
use serde_json::{Value, json};
use wallance_dds::netns::{Loopback, test_inside};

/// What a refused call must not change: every wallet's committed fields,
/// the pending requests and the commit counter, on the buyer's node.
fn ledger(api: &str) -> Value {
    let wallets: Vec<Value> = get(api, "/api/wallets")
        .expect("wallets")
        .as_array()
        .expect("an array")
        .iter()
        .map(|w| json!([w["name"], w["version"], w["state"], w["balance"]]))
        .collect();
    let status = get(api, "/api/status").expect("status");
    json!({ "wallets": wallets, "pending": status["pending"], "commits": status["stats"]["commits"] })
}

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().expect("run wallance");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_purchases_are_refused_with_their_status_and_change_nothing_then_one_commits() {
    if !test_inside(
        "bad_purchases_are_refused_with_their_status_and_change_nothing_then_one_commits",
        Loopback::Multicast,
    ) {
        return;
    }
    let net = Net::start(4, Options { without_token: vec![4] }).expect("network up");
    let buyer = &net.nodes[1];
    let api = buyer.api.as_str();
    let token = buyer.token.as_deref().expect("init writes a token");
    let price = net.espresso_price().expect("espresso listed");
    assert!(price > 0, "the espresso must cost something for the 422 case");
    net.wait_spendable(1, "node-2", 2 * price).expect("node-2 earns");

    let good = json!({ "service": "espresso", "price": price, "params": { "size": "ristretto" } }).to_string();
    let cases: Vec<(&str, &str, Option<&str>, String, u16)> = vec![
        ("no token", api, None, good.clone(), 401),
        ("wrong token", api, Some("not-the-token"), good.clone(), 401),
        (
            "no token configured",
            &net.nodes[3].api,
            Some("anything"),
            good.clone(),
            403,
        ),
        (
            "malformed JSON",
            api,
            Some(token),
            "{\"service\": \"espresso\", ".into(),
            400,
        ),
        (
            "missing field",
            api,
            Some(token),
            json!({ "service": "espresso" }).to_string(),
            400,
        ),
        (
            "negative price",
            api,
            Some(token),
            json!({ "service": "espresso", "price": -1 }).to_string(),
            400,
        ),
        (
            "unknown field",
            api,
            Some(token),
            json!({ "service": "espresso", "price": price, "tip": 1 }).to_string(),
            400,
        ),
        (
            "empty parameter name",
            api,
            Some(token),
            json!({ "service": "espresso", "price": price, "params": { " ": "x" } }).to_string(),
            400,
        ),
        (
            "unknown service",
            api,
            Some(token),
            json!({ "service": "teleport", "price": price }).to_string(),
            404,
        ),
        (
            "price below the listed one",
            api,
            Some(token),
            json!({ "service": "espresso", "price": price - 1 }).to_string(),
            422,
        ),
        (
            "insufficient balance",
            api,
            Some(token),
            json!({ "service": "espresso", "price": 1_000_000_000_000u64 }).to_string(),
            402,
        ),
    ];
    for (what, at, tok, body, want) in cases {
        let before = ledger(at);
        let (status, answer) = post(at, "/api/buy", tok, &body).expect("the node answers");
        assert_eq!(status, want, "{what}: {answer}");
        let reason = answer["error"].as_str().unwrap_or("");
        assert!(!reason.is_empty(), "{what}: no reason in {answer}");
        println!("{what}: {status} {reason}");
        // Give the loop time to publish anything a refused call might have changed.
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(ledger(at), before, "{what} changed the ledger");
    }

    // Unknown endpoints and purchases answer JSON 404s.
    let (status, _, body) = get_raw(api, "/api/nothing-here").expect("answer");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("error"));
    let (status, _, _) = get_raw(api, &format!("/api/purchases/{}", "00".repeat(32))).expect("answer");
    assert_eq!(status, 404);
    let (status, _, body) = get_raw(api, "/api/purchases/not-an-id").expect("answer");
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = get_raw(api, &format!("/api/purchases/{}?wait=soon", "00".repeat(32))).expect("answer");
    assert_eq!(status, 400, "{body}");

    // A good purchase: 202 with a handle, followed to the contract's outcome.
    let version = wallet(api, "node-2").unwrap()["version"].as_u64().unwrap();
    let (status, answer) = post(api, "/api/buy", Some(token), &good).expect("answer");
    assert_eq!(status, 202, "{answer}");
    let id = answer["request_id"].as_str().expect("request_id").to_string();
    assert_eq!(answer["follow"], format!("/api/purchases/{id}"));
    // One long poll: the node answers when the outcome is committed here.
    let done = get(api, &format!("/api/purchases/{id}?wait=8")).expect("outcome");
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["requester"], "node-2", "{done}");
    assert_eq!(done["params"], json!([["size", "ristretto"]]), "{done}");
    assert_eq!(done["outcome"]["ok"], true, "{done}");
    assert!(
        done["outcome"]["body"].as_str().unwrap().contains("ristretto"),
        "{done}"
    );
    assert!(done["commit"]["latency_ms"].as_u64().is_some());
    // Every node commits it; the wallet shows it as its last purchase.
    net.wait("every node to commit", common::STEP, |net| {
        for n in &net.nodes {
            if wallet(&n.api, "node-2")?["version"].as_u64() < Some(version + 1) {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .expect("committed everywhere");
    let w = wallet(api, "node-2").unwrap();
    assert_eq!(w["last_commit"]["request_id"], id.as_str(), "{w}");
    let commits = get(api, "/api/commits").unwrap();
    assert!(
        commits
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["request_id"] == id.as_str())
    );
    let outcomes = get(api, "/api/outcomes").unwrap();
    assert!(
        outcomes
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["request_id"] == id.as_str())
    );
    let contracts = get(&net.nodes[0].api, "/api/contracts").unwrap();
    assert_eq!(contracts[0]["status"], "loaded", "{contracts}");

    // Prometheus metrics: the commit is in the latency histogram.
    let (status, ctype, text) = get_raw(api, "/metrics").expect("metrics");
    assert_eq!(status, 200);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    for name in [
        "wallance_commit_latency_seconds_count 1",
        "wallance_votes_sent_total",
        "wallance_votes_received_total",
        "wallance_sensor_shares_received_total",
        "wallance_contract_invocations_total",
        "wallance_contract_failures_total",
        "wallance_store_bytes",
        "wallance_dds_malformed_samples_total",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }

    // The CLI, human and JSON.
    let api_arg = ["--api", api];
    let (ok, out, err) = cli(&[&["wallets"][..], &api_arg].concat());
    assert!(ok && out.contains("node-4") && out.contains("balance"), "{out}{err}");
    let (ok, out, err) = cli(&[&["services", "--json"][..], &api_arg].concat());
    assert!(ok, "{err}");
    let services: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(services[0]["name"], "espresso");
    let (ok, out, err) = cli(&[&["status"][..], &api_arg].concat());
    assert!(ok && out.contains("quorum") && out.contains("node-2"), "{out}{err}");
    let coins = format!("{}", price as f64 / 1e6);
    net.wait_spendable(1, "node-2", price).expect("node-2 can pay again");
    let (ok, out, err) = cli(&[
        &[
            "buy",
            "espresso",
            "--price",
            &coins,
            "--param",
            "size=lungo",
            "--token",
            token,
        ][..],
        &api_arg,
    ]
    .concat());
    assert!(
        ok && out.contains("committed in") && out.contains("lungo"),
        "{out}{err}"
    );
    let (ok, _, err) = cli(&[&["buy", "teleport", "--price", "1", "--token", token][..], &api_arg].concat());
    assert!(!ok && err.contains("404") && err.contains("teleport"), "{err}");
    let (ok, _, err) = cli(&[&["buy", "espresso", "--price", &coins][..], &api_arg].concat());
    assert!(!ok && err.contains("401") && err.contains("--token"), "{err}");
    let (ok, _, err) = cli(&["wallets", "--api", "http://127.0.0.1:1"]);
    assert!(!ok && err.contains("cannot reach the node"), "{err}");
}
