//! A peer that dies without a goodbye (SIGKILL) stays matched until its lease
//! expires and never acknowledges again, so it holds every reliable writer's
//! send window. This test pins down what the daemon sees: sends within the
//! window go through to live peers, sends past it fail with `WouldBlock`
//! after `send_block`, and sending recovers once the dead peer's lease (50 s
//! for rustdds) runs out. It takes about a minute.

mod common;

use std::io::BufRead;
use std::time::{Duration, Instant};

use common::{key, recv_n, transport};
use wallance_core::msg::{Message, Vote};
use wallance_dds::netns::{self, Loopback};
use wallance_dds::{SendError, TopicId, topics::SEND_WINDOW};
use wallance_dds::{Transport, TransportConfig};

/// Not a test: the peer process that `dead_peer_holds_the_window_until_its_lease_expires`
/// starts and kills. Returns at once unless that test launched it.
#[test]
#[ignore = "helper process of dead_peer_holds_the_window_until_its_lease_expires"]
fn helper_idle_peer() {
    if std::env::var("WALLANCE_IDLE_PEER").is_err() {
        return;
    }
    if !netns::test_inside("helper_idle_peer", Loopback::Multicast) {
        return;
    }
    let _t = transport(0);
    println!("READY");
    std::thread::sleep(Duration::from_secs(300));
}

#[test]
fn dead_peer_holds_the_window_until_its_lease_expires() {
    if !netns::test_inside(
        "dead_peer_holds_the_window_until_its_lease_expires",
        Loopback::Multicast,
    ) {
        return;
    }
    // A daemon that prefers failing fast to stalling behind a dead peer.
    let a = Transport::new(TransportConfig {
        send_block: Duration::from_millis(100),
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
    peer.kill().expect("kill peer");
    peer.wait().expect("reap peer");
    let killed = Instant::now();

    let voter = key(7);
    let base = Vote::build(&voter, [4; 32], 0, 0).expect("difficulty 0");
    let vote = |i: u64| Message::Vote(Vote { remaining: i, ..base });
    let window = SEND_WINDOW as u64;
    for i in 0..window {
        a.send(&vote(i)).expect("within the window");
    }
    assert_eq!(
        recv_n(&b, window as usize, Duration::from_secs(20)).len(),
        window as usize
    );

    // Past the window: fails after send_block (100 ms), not later.
    let t = Instant::now();
    let err = a.send(&vote(window)).expect_err("window held by the dead peer");
    assert!(matches!(err, SendError::WouldBlock("vote")), "{err}");
    assert!(t.elapsed() < Duration::from_millis(500), "{:?}", t.elapsed());

    // Recovers when the lease expires.
    let mut i = window + 1;
    let recovered = loop {
        match a.send(&vote(i)) {
            Ok(()) => break killed.elapsed(),
            Err(SendError::WouldBlock(_)) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(killed.elapsed() < Duration::from_secs(120), "never recovered");
        std::thread::sleep(Duration::from_millis(400));
        i += 1;
    };
    let got = recv_n(&b, 1, Duration::from_secs(10));
    assert_eq!(got, vec![vote(i)]);
    // Every failure so far was the window: counted under that reason.
    let stats = a.stats();
    let failed = stats.topic(TopicId::Vote).send_failed;
    assert_eq!(failed, i - window);
    assert_eq!(err.reason(), "window_full");
    assert_eq!(
        stats.send_failed_by_reason,
        vec![("window_full", failed), ("dds_error", 0), ("not_encodable", 0)]
    );
    println!(
        "dead peer: window of {window} went through, then WouldBlock; sending recovered \
         {recovered:?} after the kill; failed sends counted: {}",
        a.stats().topic(TopicId::Vote).send_failed
    );
}
