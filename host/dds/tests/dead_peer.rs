//! A reader that asks for reliable delivery and then never acknowledges
//! holds a reliable writer's send window: a peer killed without a goodbye
//! (matched until its lease ends, 50 s for rustdds), or a live non-member
//! doing it on purpose. Under the old reliable topics, the window's 1 024
//! votes went out and then every send failed for everyone until the lease
//! ran out (52 s). Every topic is best effort now (`topics` module doc):
//! this test kills a peer that held both a Wallance transport and a foreign
//! reliable vote reader, then sends four windows of votes, never waiting.

mod common;

use std::io::BufRead;
use std::time::{Duration, Instant};

use common::{key, recv_n, transport, until_heard};
use wallance_core::msg::{Message, Vote};
use wallance_dds::netns::{self, Loopback};
use wallance_dds::{TopicId, topics::SEND_WINDOW};
use wallance_dds::{Transport, TransportConfig};

/// Not a test: the peer process that `dead_peer_holds_the_window_until_its_lease_expires`
/// starts and kills. Returns at once unless that test launched it.
/// Not a test: the peer process that `a_dead_peer_holds_no_send_window`
/// starts and kills: a Wallance transport, and a reader of the vote topic
/// asking for reliable delivery as another vendor (or an attacker) may.
/// Returns at once unless that test launched it.
#[test]
#[ignore = "helper process of a_dead_peer_holds_no_send_window"]
fn helper_idle_peer() {
    if std::env::var("WALLANCE_IDLE_PEER").is_err() {
        return;
    }
    if !netns::test_inside("helper_idle_peer", Loopback::Multicast) {
        return;
    }
    let _t = transport(0);
    let raw = rustdds::DomainParticipantBuilder::new(0)
        .with_only_networks([std::net::IpAddr::from([127, 0, 0, 1])])
        .build()
        .expect("raw participant");
    let reliable = rustdds::QosPolicyBuilder::new()
        .reliability(rustdds::policy::Reliability::Reliable {
            max_blocking_time: rustdds::Duration::from_secs(1),
        })
        .history(rustdds::policy::History::KeepAll)
        .build();
    let t = TopicId::Vote;
    let topic = raw
        .create_topic(t.name().into(), t.spec().type_name.into(), &reliable, t.kind())
        .expect("topic");
    let subscriber = raw.create_subscriber(&reliable).expect("subscriber");
    let _reader = subscriber
        .create_datareader_no_key_cdr::<wallance_dds::wire::Vote>(&topic, Some(reliable))
        .expect("reliable reader");
    println!("READY");
    std::thread::sleep(Duration::from_secs(300));
}

#[test]
fn a_dead_peer_holds_no_send_window() {
    if !netns::test_inside("a_dead_peer_holds_no_send_window", Loopback::Multicast) {
        return;
    }
    // The daemon's setting: a send never waits.
    let a = Transport::new(TransportConfig {
        send_block: Duration::ZERO,
        ..TransportConfig::loopback(0)
    })
    .expect("transport");
    let b = transport(0);
    let mut peer = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["helper_idle_peer", "--exact", "--nocapture", "--include-ignored"])
        .env("WALLANCE_IDLE_PEER", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn peer");
    let mut lines = std::io::BufReader::new(peer.stdout.take().expect("stdout")).lines();
    assert!(lines.any(|l| l.is_ok_and(|l| l.contains("READY"))), "peer never ready");
    assert!(
        a.wait_for_readers(2, Duration::from_secs(20)),
        "a never found both peers"
    );
    // The foreign reliable reader too (discovered; a best-effort writer does
    // not match it).
    let t = Instant::now();
    while a.remote_readers(TopicId::Vote) < 3 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "a never found the reliable reader"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    until_heard(&a, &b, Duration::from_secs(20));
    peer.kill().expect("kill peer");
    peer.wait().expect("reap peer");
    let killed = Instant::now();

    let voter = key(7);
    let base = Vote::build(&voter, [4; 32], 0, 0).expect("difficulty 0");
    let vote = |i: u64| Message::Vote(Vote { remaining: i, ..base });
    // Four windows, in batches the live peer takes before the next goes out
    // (best effort has no flow control; this test is about the dead one).
    let window = SEND_WINDOW as u64;
    let batch = 256;
    let mut slowest = Duration::ZERO;
    for start in (0..4 * window).step_by(batch) {
        for i in start..start + batch as u64 {
            let t = Instant::now();
            a.send(&vote(i)).expect("no window is held by the dead peer");
            slowest = slowest.max(t.elapsed());
        }
        let got = recv_n(&b, batch, Duration::from_secs(20));
        assert_eq!(
            got,
            (start..start + batch as u64).map(vote).collect::<Vec<_>>(),
            "batch from {start}"
        );
    }
    assert!(
        killed.elapsed() < Duration::from_secs(40),
        "the dead peer's lease (50 s) may have ended first: {:?}",
        killed.elapsed()
    );
    let stats = a.stats();
    assert_eq!(stats.topic(TopicId::Vote).send_failed, 0);
    println!(
        "dead peer: {} votes sent past it in {:?} (slowest send {slowest:?}), all received by the live peer",
        4 * window,
        killed.elapsed()
    );
}
