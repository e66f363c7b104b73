//! Pay for service rendered, with real node processes over DDS, real redb
//! files and the real espresso contract: a refused purchase is refunded on
//! every node; a second member announcing "espresso" never receives a
//! purchase by default. Each test runs in a private network namespace.

mod net;

use net::*;
use wallance_dds::netns::{Loopback, test_inside};

fn stat(net: &Net, i: usize, key: &str) -> u64 {
    net.get(i, "/api/view")
        .and_then(|v| v["stats"][key].as_u64())
        .unwrap_or(0)
}

#[test]
fn a_refused_purchase_is_refunded_on_every_node_and_a_served_one_paid() {
    if !test_inside(
        "a_refused_purchase_is_refunded_on_every_node_and_a_served_one_paid",
        Loopback::Multicast,
    ) {
        return;
    }
    let mut net = Net::init(4, 20.0);
    net.start_all();
    let all: Vec<usize> = (0..4).collect();
    net.wait_ready(&all);
    let price = net.price();
    net.wait_funds(1, price);
    // The espresso contract refuses an unknown size.
    let refused = net.buy(1, &[("size", "bucket")]);
    let p = net.wait_done(1, &refused);
    let o = p.outcome.as_ref().expect("waited for");
    assert!(!o.ok && o.body.contains("unknown size"), "{p:?}");
    wait("the refund on every node", 30, || {
        all.iter()
            .all(|&i| stat(&net, i, "verdicts_refunded") == 1 && stat(&net, i, "escrows_open") == 0)
    });
    // A served one is paid to the provider, everywhere.
    net.wait_funds(1, price);
    let served = net.buy(1, &[("size", "espresso")]);
    let p = net.wait_done(1, &served);
    assert_eq!(p.outcome.map(|o| o.ok), Some(true));
    wait("the payment on every node", 30, || {
        all.iter()
            .all(|&i| stat(&net, i, "verdicts_paid") == 1 && stat(&net, i, "escrows_open") == 0)
    });
    net.wait_agree(&all, 30);
    // The provider lists what it produced, with the contract's log lines.
    let produced = net.get(0, "/api/produced").unwrap();
    let produced = produced.as_array().unwrap();
    let find = |id: &str| produced.iter().find(|o| o["request_id"] == id).cloned().unwrap();
    let (r, s) = (find(&refused), find(&served));
    assert_eq!((r["ok"].as_bool(), s["ok"].as_bool()), (Some(false), Some(true)));
    assert_eq!(s["service"], "espresso");
    assert!(
        s["logs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().starts_with("info: cup")),
        "{s}"
    );
    // Every node credited the same members the same amounts.
    let received = |i: usize| -> Vec<(String, u64)> {
        net.get(i, "/api/wallets")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|w| (w["name"].as_str().unwrap().to_string(), w["received"].as_u64().unwrap()))
            .collect()
    };
    wait("identical credits", 30, || {
        all.iter().all(|&i| received(i) == received(0))
    });
}

#[test]
fn a_second_provider_of_a_name_gets_no_purchase_unless_named() {
    if !test_inside(
        "a_second_provider_of_a_name_gets_no_purchase_unless_named",
        Loopback::Multicast,
    ) {
        return;
    }
    let mut net = Net::init(4, 20.0);
    // node-4 drops a copy of the espresso contract into its folder: a
    // second offer of "espresso".
    let folder = net.nodes[3].config.parent().unwrap().join("contracts");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(ESPRESSO, folder.join("espresso.wasm")).unwrap();
    net.start_all();
    let all: Vec<usize> = (0..4).collect();
    net.wait_ready(&all);
    wait("two offers", 60, || {
        net.get(1, "/api/services")
            .is_some_and(|s| s.as_array().unwrap().iter().filter(|s| s["name"] == "espresso").count() == 2)
    });
    let price = net.price();
    net.wait_funds(1, price);
    let body = serde_json::json!({ "service": "espresso", "price": price, "params": {} });
    let (status, v) = post(&net.nodes[1].api, "/api/buy", Some(&net.nodes[1].token), &body);
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("name the one"), "{v}");
    let body = serde_json::json!({ "service": "espresso", "provider": "node-1", "price": price, "params": {} });
    let (status, v) = post(&net.nodes[1].api, "/api/buy", Some(&net.nodes[1].token), &body);
    assert_eq!(status, 202, "{v}");
    let id = v["request_id"].as_str().unwrap();
    let p = net.wait_done(1, id);
    assert_eq!(p.provider, "node-1", "{p:?}");
    assert_eq!(p.outcome.map(|o| o.ok), Some(true));
    // The refused purchase committed nothing; node-4 ran nothing, node-1
    // ran the one named.
    assert_eq!(net.version_of(1, 1), 1);
    assert_eq!(net.get(3, "/api/produced").unwrap(), serde_json::json!([]));
    let produced = net.get(0, "/api/produced").unwrap();
    assert_eq!(produced.as_array().unwrap().len(), 1, "{produced}");
    assert_eq!(produced[0]["request_id"], id, "{produced}");
}
