//! Wire format: golden bytes, round trips, and hostile bytes.

mod harness;

use proptest::prelude::*;
use wallance_core::msg::*;
use wallance_core::{Keypair, MemberId, Message, UNITS_PER_COIN};

fn key() -> Keypair {
    Keypair::from_seed([1; 32])
}

fn request() -> Request {
    Request::build(
        &key(),
        RequestDraft {
            service: "espresso".into(),
            provider: MemberId([3; 32]),
            price: 2 * UNITS_PER_COIN,
            announce_seq: 0,
            contract_hash: [0; 32],
            time_ms: 1_700_000_000_000,
            version: 4,
            state: [5; 32],
            shares_upto: 17,
            received_upto: 6 * UNITS_PER_COIN,
            params: vec![("size".into(), "large".into())],
        },
        1,
    )
    .unwrap()
}

fn all_messages() -> Vec<Message> {
    let k = key();
    let r = request();
    let vote = Vote::build(&k, r.id(), 9 * UNITS_PER_COIN, 1).unwrap();
    let cert = Certificate {
        request: r.clone(),
        remaining: 9 * UNITS_PER_COIN,
        votes: vec![CertVote {
            voter_idx: 2,
            nonce: vote.nonce,
            sig: vote.sig,
        }],
        provider_sig: k.sign(&[7; 32]),
    };
    vec![
        Message::Share(Share::new(&k, 3, 1_000, "temperature", 21.5)),
        Message::Request(r.clone()),
        Message::Vote(vote),
        Message::Certificate(Box::new(cert)),
        Message::Announce(Announce::new(
            &k,
            1,
            vec![ServiceOffer {
                name: "espresso".into(),
                price: 2,
                contract_hash: [8; 32],
            }],
        )),
        Message::Outcome(Outcome::new(&k, MemberId([4; 32]), r.id(), 5, true, "brewed")),
        Message::Digest(SyncDigest::new(&k, 10, [6; 32])),
        Message::HeadsRequest(HeadsRequest::new(&k, MemberId([4; 32]), 11)),
        Message::Heads(Heads::new(
            &k,
            MemberId([4; 32]),
            12,
            vec![Head {
                idx: 1,
                version: 2,
                settled: 2,
                shares: 40,
                received: 6,
            }],
        )),
        Message::CertFetch(CertFetch::new(&k, MemberId([4; 32]), 1, 2, 3)),
        Message::ShareFetch(ShareFetch::new(&k, MemberId([4; 32]), 5, 9)),
    ]
}

#[test]
fn every_message_round_trips() {
    for m in all_messages() {
        let bytes = m.encode().unwrap();
        assert_eq!(Message::decode(&bytes).unwrap(), m, "{}", m.kind());
    }
}

#[test]
fn every_truncation_and_every_trailing_byte_is_an_error() {
    for m in all_messages() {
        let bytes = m.encode().unwrap();
        for n in 0..bytes.len() {
            assert!(Message::decode(&bytes[..n]).is_err(), "{} truncated to {n}", m.kind());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Message::decode(&longer).is_err(), "{} with a trailing byte", m.kind());
    }
}

#[test]
fn golden_vote_bytes_and_sizes() {
    let k = key();
    let vote = Vote::build(&k, [2; 32], 5 * UNITS_PER_COIN, 0).unwrap();
    assert_eq!(vote.nonce, 0, "difficulty 0 takes the first nonce");
    // SHA-256("wallance/vote/v1" || voter || request id || remaining || nonce),
    // computed independently with Python's hashlib.
    assert_eq!(hex::encode(vote.hash()), GOLDEN_VOTE_HASH);
    let bytes = Message::Vote(vote).encode().unwrap();
    // tag 1 + voter 32 + request 32 + remaining 8 + nonce 8 + signature 64.
    assert_eq!(bytes.len(), 145);
    assert_eq!(hex::encode(&bytes[..73]), GOLDEN_VOTE_PREFIX);
    // Ed25519 signatures are deterministic: the whole message is golden.
    assert_eq!(hex::encode(&bytes), GOLDEN_VOTE);
}

#[test]
fn golden_request_identity() {
    let r = request();
    let prefix = r.prefix().unwrap();
    // Domain 19 + requester 32 + service 1+8 + provider 32 + price,
    // announce seq, time, version 4*8 + contract hash 32 + State 32 +
    // shares, received 2*8 + params 2+1+1+4+2+5.
    assert_eq!(prefix.len(), 19 + 32 + 9 + 32 + 32 + 32 + 32 + 16 + 15);
    assert_eq!(
        hex::encode(wallance_core::crypto::sha256(&[&prefix, &r.nonce.to_le_bytes()])),
        hex::encode(r.id())
    );
    assert!(wallance_core::pow::meets(&r.id(), 1));
    assert_eq!(
        Message::Request(r).encode().unwrap().len(),
        1 + prefix.len() - 19 + 8 + 64
    );
}

const GOLDEN_VOTE_HASH: &str = include_str!("golden/vote_hash.hex");
const GOLDEN_VOTE_PREFIX: &str = include_str!("golden/vote_prefix.hex");
const GOLDEN_VOTE: &str = include_str!("golden/vote.hex");

#[test]
fn oversized_input_is_refused_before_parsing() {
    let big = vec![2u8; MAX_MESSAGE_LEN + 1];
    assert!(matches!(
        Message::decode(&big),
        Err(wallance_core::encode::DecodeError::TooLong { .. })
    ));
}

#[test]
fn hostile_inputs_to_the_core_are_rejected_with_a_reason_and_counted() {
    let mut net = harness::Net::new(4);
    net.offer_espresso();
    let core = &mut net.nodes[1].core;
    let now = 2_000;
    // Garbage.
    assert_eq!(
        core.handle_bytes(now, &[0xff, 1, 2]).unwrap_err().reason,
        "malformed bytes"
    );
    // A share from a stranger.
    let stranger = Keypair::from_seed([99; 32]);
    let share = Share::new(&stranger, 1, now, "t", 1.0);
    assert_eq!(
        core.handle_message(now, Message::Share(share)).unwrap_err().reason,
        "unknown member"
    );
    // A share with a broken signature.
    let mut share = Share::new(&Keypair::from_seed([3; 32]), 1, now, "t", 1.0);
    share.value = 2.0;
    assert_eq!(
        core.handle_message(now, Message::Share(share)).unwrap_err().reason,
        "signature is invalid"
    );
    // A request on a State the wallet never had.
    let k = Keypair::from_seed([4; 32]);
    let mut draft = RequestDraft {
        service: "espresso".into(),
        provider: Keypair::from_seed([1; 32]).id(),
        price: 2 * UNITS_PER_COIN,
        announce_seq: 0,
        contract_hash: [0; 32],
        time_ms: now,
        version: 0,
        state: [0; 32],
        shares_upto: 0,
        received_upto: 0,
        params: vec![],
    };
    let r = Request::build(&k, draft.clone(), 1).unwrap();
    assert_eq!(
        core.handle_message(now, Message::Request(r)).unwrap_err().reason,
        "State does not match the wallet"
    );
    // A request with its price changed after signing.
    draft.state = core.wallet(&k.id()).unwrap().state;
    let mut r = Request::build(&k, draft.clone(), 1).unwrap();
    r.price += 1;
    let reason = core.handle_message(now, Message::Request(r)).unwrap_err().reason;
    assert!(
        reason.contains("proof of work") || reason.contains("signature"),
        "{reason}"
    );
    // A request from the future.
    draft.time_ms = now + 3_600_000;
    let r = Request::build(&k, draft, 1).unwrap();
    assert_eq!(
        core.handle_message(now, Message::Request(r)).unwrap_err().reason,
        "time is in the future"
    );
    let counted: u64 = core.stats().rejected.values().sum();
    assert_eq!(counted, 6);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Message::decode(&bytes);
    }

    #[test]
    fn decoding_mutated_messages_never_panics(which in 0usize..11, at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let m = &all_messages()[which];
        let mut bytes = m.encode().unwrap();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        if let Ok(decoded) = Message::decode(&bytes) {
            // Whatever parses re-encodes to the same bytes: one encoding per value.
            prop_assert_eq!(decoded.encode().unwrap(), bytes);
        }
    }

    #[test]
    fn the_core_survives_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut net = harness::Net::new(2);
        let _ = net.nodes[0].core.handle_bytes(5, &bytes);
        while net.nodes[0].core.poll_output().is_some() {}
    }
}

/// The sizes docs/protocol.md's message table gives, from the real encoder:
/// a change to a message's fields must change the table too.
#[test]
fn message_sizes_are_what_the_protocol_doc_says() {
    let k = key();
    let len = |m: Message| m.encode().unwrap().len();
    let draft = |service: &str, params: Vec<(String, String)>| RequestDraft {
        service: service.into(),
        provider: MemberId([3; 32]),
        price: 2 * UNITS_PER_COIN,
        announce_seq: 0,
        contract_hash: [0; 32],
        time_ms: 1,
        version: 0,
        state: [5; 32],
        shares_upto: 0,
        received_upto: 0,
        params,
    };
    let r = |service: &str, params| Request::build(&k, draft(service, params), 0).unwrap();
    let share = |topic: &str| len(Message::Share(Share::new(&k, 1, 1, topic, 1.0)));
    assert_eq!(share(""), 122);
    assert_eq!(share("temperature"), 122 + 11);
    let req = |service: &str, params| len(Message::Request(r(service, params)));
    assert_eq!(req("", vec![]), 253);
    assert_eq!(req("espresso", vec![]), 253 + 8);
    // Each parameter: 1 + key + 2 + value bytes.
    assert_eq!(req("", vec![("size".into(), "large".into())]), 253 + 3 + 4 + 5);
    let vote = Vote::build(&k, [1; 32], 1, 0).unwrap();
    assert_eq!(len(Message::Vote(vote)), 145);
    let cert = |service: &str, n: usize| {
        len(Message::Certificate(Box::new(Certificate {
            request: r(service, vec![]),
            remaining: 1,
            votes: (0..n as u32)
                .map(|i| CertVote {
                    voter_idx: i,
                    nonce: 0,
                    sig: vote.sig,
                })
                .collect(),
            provider_sig: Default::default(),
        })))
    };
    assert_eq!(cert("", 0), 329);
    assert_eq!(cert("espresso", 6), 329 + 8 + 76 * 6);
    let ann = |names: &[&str]| {
        len(Message::Announce(Announce::new(
            &k,
            1,
            names
                .iter()
                .map(|n| ServiceOffer {
                    name: (*n).into(),
                    price: 1,
                    contract_hash: [0; 32],
                })
                .collect(),
        )))
    };
    assert_eq!(ann(&[]), 106);
    assert_eq!(ann(&["espresso"]), 106 + 41 + 8);
    let outcome = |body: &str| {
        len(Message::Outcome(Outcome::new(
            &k,
            MemberId([4; 32]),
            [1; 32],
            1,
            true,
            body,
        )))
    };
    assert_eq!(outcome(""), 172);
    assert_eq!(outcome("brewed"), 172 + 6);
    assert_eq!(len(Message::Digest(SyncDigest::new(&k, 1, [0; 32]))), 137);
    assert_eq!(
        len(Message::HeadsRequest(HeadsRequest::new(&k, MemberId([4; 32]), 1))),
        137
    );
    let heads = |n: u32| {
        len(Message::Heads(Heads::new(
            &k,
            MemberId([4; 32]),
            1,
            (0..n)
                .map(|i| Head {
                    idx: i,
                    version: 1,
                    settled: 1,
                    shares: 1,
                    received: 1,
                })
                .collect(),
        )))
    };
    assert_eq!(heads(0), 141);
    assert_eq!(heads(3), 141 + 36 * 3);
    assert_eq!(
        len(Message::CertFetch(CertFetch::new(&k, MemberId([4; 32]), 1, 1, 2))),
        149
    );
    assert_eq!(
        len(Message::ShareFetch(ShareFetch::new(&k, MemberId([4; 32]), 1, 2))),
        145
    );
}
