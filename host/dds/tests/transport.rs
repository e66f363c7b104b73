//! Real DDS traffic between participants, each test inside its own private
//! network namespace (the test re-executes itself under `unshare -n`).

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{certificate, deliver, key, one_of_each, recv_n, recv_n_from, transport, transport_with, until_heard};
use serde::Serialize;
use wallance_core::msg::{Announce, Message, ServiceOffer, Vote};
use wallance_dds::netns::{self, Loopback};
use wallance_dds::{Malformed, Receiving, TopicId, TransportStats, wire};

const DISCOVERY: Duration = Duration::from_secs(20);

fn sort_key(m: &Message) -> String {
    format!("{}:{:?}", m.kind(), m.encode())
}

#[test]
fn every_message_type_crosses_both_ways() {
    if !netns::test_inside("every_message_type_crosses_both_ways", Loopback::Multicast) {
        return;
    }
    let a = transport(0);
    let b = transport(0);
    let started = Instant::now();
    assert!(a.wait_for_readers(1, DISCOVERY), "a never found b's readers");
    assert!(b.wait_for_readers(1, DISCOVERY), "b never found a's readers");
    println!("discovery (both topics, both ways): {:?}", started.elapsed());

    let mut vote_deliveries = Vec::new();
    for (from, to, seed) in [(&a, &b, 1u8), (&b, &a, 2u8)] {
        let sent = one_of_each(&key(seed));
        let (mut got, sends) = deliver(from, to, &sent, Duration::from_secs(10));
        // Every delivery is one of the messages sent, unchanged, and no
        // message arrives more often than it was sent.
        for (m, n) in sent.iter().zip(&sends) {
            let copies = got.iter().filter(|g| *g == m).count();
            assert!(copies >= 1 && copies <= *n as usize, "{}: {copies} of {n}", m.kind());
        }
        assert_eq!(
            got.len(),
            got.iter().filter(|g| sent.contains(g)).count(),
            "got {got:?}"
        );
        got.sort_by_key(sort_key);
        got.dedup();
        let mut want = sent.clone();
        want.sort_by_key(sort_key);
        assert_eq!(got, want);
        vote_deliveries.push(
            sent.iter()
                .zip(&sends)
                .filter(|(m, _)| matches!(m, Message::Vote(_)))
                .map(|(_, n)| u64::from(*n))
                .sum::<u64>(),
        );
        // Nothing of its own comes back to the sender.
        let mut echo = Vec::new();
        assert_eq!(from.try_recv_batch(&mut echo, 100), 0, "echo {echo:?}");
    }
    assert_eq!(a.stats().malformed(), 0);
    assert_eq!(b.stats().malformed(), 0);
    // Counted per send and per take, never per retry of ours the stats did
    // not see: b sent its vote as often as `deliver` says, and took a's.
    assert_eq!(b.stats().topic(TopicId::Vote).sent, vote_deliveries[1]);
    assert!((1..=vote_deliveries[0]).contains(&b.stats().topic(TopicId::Vote).received));
}

#[test]
fn ten_thousand_votes_all_arrive() {
    if !netns::test_inside("ten_thousand_votes_all_arrive", Loopback::Multicast) {
        return;
    }
    ten_thousand_votes(Receiving::Thread);
}

/// The same with `Receiving::Direct`, the receiver polling concurrently as a
/// daemon loop would. (Left untaken, 10 000 samples in rustdds' cache make
/// every take slow: about 150 per second in a debug build. Thread mode
/// exists for that.)
#[test]
fn ten_thousand_votes_all_arrive_direct() {
    if !netns::test_inside("ten_thousand_votes_all_arrive_direct", Loopback::Multicast) {
        return;
    }
    ten_thousand_votes(Receiving::Direct);
}

fn ten_thousand_votes(receiving: Receiving) {
    const N: u64 = 10_000;
    let a = transport(0);
    let b = transport_with(0, receiving);
    assert!(a.wait_for_readers(1, DISCOVERY));
    until_heard(&a, &b, DISCOVERY);
    let taken_before = b.stats().topic(TopicId::Vote).received;
    let voter = key(3);
    let base = Vote::build(&voter, [5; 32], 0, 0).expect("difficulty 0");
    let started = Instant::now();
    let rx = b.receiver();
    let concurrent = (receiving == Receiving::Direct)
        .then(|| std::thread::spawn(move || recv_n_from(&rx, N as usize, Duration::from_secs(60))));
    // Our vote readers are best effort (a dead peer must hold no window), so
    // nothing paces the sender but this loop: bursts of 100, each taken
    // from rustdds before the next. In thread mode nothing is handed to the
    // test until all are sent: the reader thread must keep the cache drained.
    const BURST: u64 = 100;
    for i in 0..N {
        let v = Vote { remaining: i, ..base };
        a.send(&Message::Vote(v)).expect("send");
        if (i + 1) % BURST == 0 {
            let t = Instant::now();
            while b.stats().topic(TopicId::Vote).received < taken_before + i + 1 {
                assert!(
                    t.elapsed() < Duration::from_secs(20),
                    "burst to {i}: {} taken",
                    b.stats().topic(TopicId::Vote).received - taken_before
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    let got = match concurrent {
        Some(handle) => handle.join().expect("receiver thread"),
        None => recv_n(&b, N as usize, Duration::from_secs(60)),
    };
    let elapsed = started.elapsed();
    let remaining: HashSet<u64> = got
        .iter()
        .map(|m| match m {
            Message::Vote(v) => v.remaining,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    println!(
        "{receiving:?}: {} of {N} votes in {elapsed:?} ({:.0} votes/s)",
        got.len(),
        got.len() as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(got.len(), N as usize);
    assert_eq!(remaining.len(), N as usize, "duplicates among the votes");
    assert_eq!(b.stats().topic(TopicId::Vote).received, taken_before + N);
    assert_eq!(b.stats().malformed(), 0);
}

#[test]
fn a_late_joiner_is_replayed_nothing() {
    if !netns::test_inside("a_late_joiner_is_replayed_nothing", Loopback::Multicast) {
        return;
    }
    let provider = key(10);
    let a = transport(0);
    let cert = Message::Certificate(Box::new(certificate(&key(20), &provider, 1)));
    let announce = Message::Announce(Announce::new(
        &provider,
        1,
        vec![ServiceOffer {
            name: "espresso".into(),
            price: 2_000_000,
            contract_hash: [4; 32],
        }],
    ));
    let early_vote = Message::Vote(Vote::build(&provider, [1; 32], 1, 0).expect("difficulty 0"));
    // Published while nobody listens.
    for m in [&cert, &announce, &early_vote] {
        a.send(m).expect("send");
    }
    std::thread::sleep(Duration::from_millis(500));

    // Every topic is volatile: a node joining later learns certificates
    // through the digest, HeadsRequest and CertFetch, and announces from
    // the provider's next one (every 30 s, and in answer to HeadsRequest).
    let b = transport(0);
    until_heard(&a, &b, DISCOVERY);
    let mut more = Vec::new();
    b.recv_batch(&mut more, 10, Duration::from_millis(500));
    assert!(more.is_empty(), "replayed: {more:?}");
    // What is sent now arrives.
    a.send(&announce).expect("send");
    assert_eq!(recv_n(&b, 1, Duration::from_secs(10)), vec![announce]);
}

/// Something that is not a `wallance::Vote` at all: 10 bytes.
#[derive(Debug, Serialize)]
struct Garbage {
    bytes: [u8; 10],
}

#[test]
fn malformed_samples_are_counted_and_dropped() {
    if !netns::test_inside("malformed_samples_are_counted_and_dropped", Loopback::Multicast) {
        return;
    }
    let b = transport(0);
    // A raw participant writing on our topics with our type names but
    // wrong contents, as a buggy or hostile vendor might.
    let raw = rustdds::DomainParticipantBuilder::new(0)
        .with_only_networks([std::net::IpAddr::from([127, 0, 0, 1])])
        .build()
        .expect("raw participant");
    let qos = |t: TopicId| t.qos(Duration::from_secs(1));
    let topic = |t: TopicId| {
        raw.create_topic(t.name().into(), t.spec().topic_type.into(), &qos(t), t.kind())
            .expect("topic")
    };
    let publisher = raw.create_publisher(&qos(TopicId::Vote)).expect("publisher");
    // Votes ride the consensus topic; shares and outcomes the sync topic.
    let (consensus, sync) = (topic(TopicId::Vote), topic(TopicId::Share));
    let garbage_writer = publisher
        .create_datawriter_no_key_cdr::<Garbage>(&consensus, Some(qos(TopicId::Vote)))
        .expect("writer");
    let vote_writer = publisher
        .create_datawriter_no_key_cdr::<wire::Consensus>(&consensus, Some(qos(TopicId::Vote)))
        .expect("writer");
    let sync_writer = publisher
        .create_datawriter_no_key_cdr::<wire::Sync>(&sync, Some(qos(TopicId::Share)))
        .expect("writer");
    let started = Instant::now();
    let raw_sees = |t: TopicId| {
        raw.discovered_readers()
            .iter()
            .filter(|r| r.subscription_topic_data.topic_name() == t.name())
            .count()
    };
    while raw_sees(TopicId::Vote) == 0 || raw_sees(TopicId::Share) == 0 {
        assert!(started.elapsed() < DISCOVERY, "no discovery");
        std::thread::sleep(Duration::from_millis(10));
    }

    // 1: too short to be a consensus sample: fails CDR decoding, counted
    // under the kind that stands for its topic, Vote.
    garbage_writer
        .write(Garbage { bytes: [0xAB; 10] }, None)
        .expect("write");
    // 2: decodes, but its topic name breaks the 64-byte bound; 3: a name
    // with a NUL inside.
    let sig = [0u8; 64];
    for topic in ["t".repeat(100), "a\0b".to_string()] {
        sync_writer
            .write(
                wire::Sync {
                    msg: wire::SyncMessage::Share(wire::Share {
                        sender: [1; 32],
                        seq: 1,
                        time_ms: 2,
                        topic,
                        value: 1.0,
                        sig,
                    }),
                },
                None,
            )
            .expect("write");
    }
    // 4: an outcome whose text is not UTF-8.
    sync_writer
        .write(
            wire::Sync {
                msg: wire::SyncMessage::Outcome(wire::Outcome {
                    provider: [1; 32],
                    requester: [2; 32],
                    request_id: [3; 32],
                    version: 1,
                    ok: true,
                    body: vec![0xff, 0xfe],
                    sig,
                }),
            },
            None,
        )
        .expect("write");
    // Then valid votes, which must all arrive.
    let voter = key(4);
    let valid: Vec<Vote> = (0..5)
        .map(|i| Vote::build(&voter, [6; 32], i, 0).expect("difficulty 0"))
        .collect();
    for v in &valid {
        let msg = wire::ConsensusMessage::Vote(wire::Vote::from(v));
        vote_writer.write(wire::Consensus { msg }, None).expect("write");
    }
    let got = recv_n(&b, valid.len(), Duration::from_secs(10));
    let want: Vec<Message> = valid.into_iter().map(Message::Vote).collect();
    assert_eq!(got, want);
    let started = Instant::now();
    let mut stats: TransportStats = b.stats();
    while stats.malformed() < 4 && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
        stats = b.stats();
    }
    println!("stats: {stats:?}");
    assert_eq!(stats.topic(TopicId::Vote).malformed, 1);
    assert_eq!(stats.topic(TopicId::Share).malformed, 2);
    assert_eq!(stats.topic(TopicId::Share).received, 0);
    assert_eq!(stats.topic(TopicId::Outcome).malformed, 1);
    let by_reason: Vec<(Malformed, u64)> = stats
        .malformed_by_reason
        .iter()
        .copied()
        .filter(|&(_, n)| n > 0)
        .collect();
    assert_eq!(
        by_reason,
        vec![
            (Malformed::Undecodable, 1),
            (Malformed::TooLong, 1),
            (Malformed::NulByte, 1),
            (Malformed::NotUtf8, 1),
        ]
    );
    assert_eq!(stats.malformed_by_reason.len(), Malformed::ALL.len());
    let share_reason = stats.last_malformed(TopicId::Share).unwrap_or_default();
    assert!(
        share_reason.contains("share topic contains a NUL byte"),
        "{share_reason}"
    );
    let vote_reason = stats.last_malformed(TopicId::Vote).unwrap_or_default();
    assert!(vote_reason.contains("Deserialization"), "{vote_reason}");
}

/// Discovery on a loopback without the multicast flag, as a non-root user
/// gets it by default: rustdds falls back to unicast to the well-known ports.
#[test]
fn discovery_without_multicast_flag() {
    if !netns::test_inside("discovery_without_multicast_flag", Loopback::NoMulticast) {
        return;
    }
    let a = transport(0);
    let b = transport(0);
    let started = Instant::now();
    assert!(a.wait_for_readers(1, DISCOVERY), "a never found b");
    assert!(b.wait_for_readers(1, DISCOVERY), "b never found a");
    // Matched readers on a's side say nothing of b having matched a's
    // writer: best effort drops what comes before that.
    until_heard(&a, &b, DISCOVERY);
    println!("unicast-only discovery: {:?}", started.elapsed());
    let v = Message::Vote(Vote::build(&key(5), [2; 32], 3, 0).expect("difficulty 0"));
    a.send(&v).expect("send");
    assert_eq!(recv_n(&b, 1, Duration::from_secs(10)), vec![v]);
}

/// A node alone on the network (first boot, partition) keeps sending: with
/// no reader matched, a reliable writer must neither block nor fail.
#[test]
fn lone_node_sends_without_blocking() {
    if !netns::test_inside("lone_node_sends_without_blocking", Loopback::Multicast) {
        return;
    }
    let a = transport(0);
    let voter = key(6);
    let base = Vote::build(&voter, [3; 32], 0, 0).expect("difficulty 0");
    let started = Instant::now();
    // Past the 16 384-sample window of the vote topic.
    for i in 0..40_000 {
        a.send(&Message::Vote(Vote { remaining: i, ..base }))
            .expect("send with nobody listening");
    }
    let elapsed = started.elapsed();
    println!("40 000 votes with no reader: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(20), "sends blocked: {elapsed:?}");
    assert_eq!(a.stats().topic(TopicId::Vote).sent, 40_000);
}
