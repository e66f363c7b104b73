//! Messages for the transport tests: one of every kind, signed like the
//! core signs them, with fields that exercise every wire type.
#![allow(dead_code)]

use std::time::Duration;

use wallance_core::Keypair;
use wallance_core::msg::{
    Announce, CertFetch, CertVote, Certificate, Head, Heads, HeadsRequest, Message, Outcome, Request, RequestDraft,
    ServiceOffer, Share, ShareFetch, SyncDigest, Vote,
};
use wallance_dds::{Receiver, Receiving, Transport, TransportConfig};

pub fn key(n: u8) -> Keypair {
    Keypair::from_seed([n; 32])
}

pub fn request(requester: &Keypair, provider: &Keypair, version: u64) -> Request {
    Request::build(
        requester,
        RequestDraft {
            service: "espresso".into(),
            provider: provider.id(),
            price: 2_000_000,
            announce_seq: 0,
            contract_hash: [0; 32],
            time_ms: 1_700_000_000_000,
            version,
            state: [7; 32],
            shares_upto: 12,
            received_upto: 3,
            params: vec![("sugar".into(), "2".into()), ("note".into(), "café \0 bytes".into())],
        },
        0,
    )
    .expect("difficulty 0 always solves")
}

pub fn certificate(requester: &Keypair, provider: &Keypair, version: u64) -> Certificate {
    Certificate {
        request: request(requester, provider, version),
        remaining: 5_000_000,
        votes: (0..5)
            .map(|i| CertVote {
                voter_idx: i,
                nonce: u64::from(i) * 17,
                sig: key(100 + i as u8).sign(&[i as u8; 32]),
            })
            .collect(),
        provider_sig: provider.sign(&[9; 32]),
    }
}

pub fn one_of_each(me: &Keypair) -> Vec<Message> {
    let other = key(200);
    let req = request(me, &other, 4);
    vec![
        Message::Share(Share::new(me, 42, 1_700_000_000_123, "kitchen/temp", 21.5)),
        Message::Request(req.clone()),
        Message::Vote(Vote::build(me, req.id(), 5_000_000, 0).expect("difficulty 0")),
        Message::Certificate(Box::new(certificate(me, &other, 4))),
        Message::Announce(Announce::new(
            me,
            3,
            vec![
                ServiceOffer {
                    name: "espresso".into(),
                    price: 2_000_000,
                    contract_hash: [1; 32],
                },
                ServiceOffer {
                    name: "radio".into(),
                    price: u64::MAX,
                    contract_hash: [2; 32],
                },
            ],
        )),
        Message::Outcome(Outcome::new(me, other.id(), req.id(), 5, true, "done ☕ \0 ok")),
        Message::Digest(SyncDigest::new(me, 99, [3; 32])),
        Message::HeadsRequest(HeadsRequest::new(me, other.id(), 100)),
        Message::Heads(Heads::new(
            me,
            other.id(),
            101,
            vec![
                Head {
                    idx: 0,
                    version: 1,
                    settled: 2,
                    shares: 3,
                    received: 4,
                },
                Head {
                    idx: 7,
                    version: u64::MAX,
                    settled: 0,
                    shares: u64::MAX,
                    received: u64::MAX,
                },
            ],
        )),
        Message::CertFetch(CertFetch::new(me, other.id(), 3, 1, 9)),
        Message::ShareFetch(ShareFetch::new(me, other.id(), 10, 20)),
    ]
}

/// A loopback transport for tests, delivering nothing of its own.
pub fn transport(domain: u16) -> Transport {
    transport_with(domain, Receiving::Thread)
}

pub fn transport_with(domain: u16, receiving: Receiving) -> Transport {
    Transport::new(TransportConfig {
        receiving,
        ..TransportConfig::loopback(domain)
    })
    .expect("transport starts")
}

/// Receives until `n` messages arrived or `timeout` passed.
pub fn recv_n(t: &Transport, n: usize, timeout: Duration) -> Vec<Message> {
    recv_n_from(&t.receiver(), n, timeout)
}

pub fn recv_n_from(t: &Receiver, n: usize, timeout: Duration) -> Vec<Message> {
    let deadline = std::time::Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < n {
        let now = std::time::Instant::now();
        if now >= deadline {
            break;
        }
        let want = n - out.len();
        t.recv_batch(&mut out, want, deadline - now);
    }
    out
}

/// Sends `a` votes until `b` takes one, then drains `b`. A best-effort
/// reader drops samples from a writer it has not matched yet (no repair
/// fills that gap later), and `a` seeing `b`'s reader says nothing of `b`
/// seeing `a`'s writer: this waits for both.
pub fn until_heard(a: &Transport, b: &Transport, timeout: Duration) {
    let ping = Message::Vote(Vote::build(&key(250), [0xee; 32], 0, 0).expect("difficulty 0"));
    let deadline = std::time::Instant::now() + timeout;
    let mut got = Vec::new();
    while got.is_empty() {
        assert!(std::time::Instant::now() < deadline, "b never heard a");
        a.send(&ping).expect("ping");
        b.recv_batch(&mut got, 64, Duration::from_millis(50));
    }
    // Pings still on their way.
    while {
        got.clear();
        b.recv_batch(&mut got, 64, Duration::from_millis(200));
        !got.is_empty()
    } {}
}

/// Sends `sent` from `a` to `b` as the protocol does over best-effort
/// topics: whatever `b` has not taken yet is sent again every 200 ms, until
/// `b` took each message at least once. Each topic matches on its own, so a
/// sample written before `b`'s reader matched `a`'s writer on that topic is
/// dropped and nothing repairs it; the protocol's retries are what make up
/// for that, and so do these. Returns every delivery, duplicates included,
/// and how many times each message was sent.
pub fn deliver(a: &Transport, b: &Transport, sent: &[Message], timeout: Duration) -> (Vec<Message>, Vec<u32>) {
    let deadline = std::time::Instant::now() + timeout;
    let mut taken: Vec<Message> = Vec::new();
    let mut sends = vec![0u32; sent.len()];
    loop {
        let missing: Vec<usize> = (0..sent.len()).filter(|&i| !taken.contains(&sent[i])).collect();
        if missing.is_empty() {
            return (taken, sends);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never delivered: {:?}",
            missing.iter().map(|&i| sent[i].kind()).collect::<Vec<_>>()
        );
        for &i in &missing {
            a.send(&sent[i]).expect("send");
            sends[i] += 1;
        }
        let until = std::time::Instant::now() + Duration::from_millis(200);
        loop {
            let now = std::time::Instant::now();
            if now >= until {
                break;
            }
            b.recv_batch(&mut taken, 64, until - now);
        }
    }
}
