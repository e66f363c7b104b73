//! Value generators shared by the integration tests.
//!
//! Key spaces are kept tiny (8 members, 4 requests, 4 voters) so random
//! batches overwrite, drop and re-add the same rows: that is where a store
//! and `Snapshot::apply` could disagree.

#![allow(dead_code)]

pub mod workload;

use proptest::prelude::*;
use wallance_core::msg::{Announce, CertVote, Certificate, Request, ServiceOffer, Vote};
use wallance_core::{Change, MemberId, Params, Signature, Wallet};

pub const N_MEMBERS: usize = 8;

pub fn members() -> Vec<MemberId> {
    (0..N_MEMBERS as u8).map(|i| MemberId([i + 1; 32])).collect()
}

pub fn request(n: u8, price: u64) -> Request {
    Request {
        requester: MemberId([n % N_MEMBERS as u8 + 1; 32]),
        service: format!("svc-{n}"),
        provider: MemberId([(n + 1) % N_MEMBERS as u8 + 1; 32]),
        price,
        announce_seq: 1,
        contract_hash: [n; 32],
        time_ms: 1_000 + u64::from(n),
        version: u64::from(n),
        state: [n; 32],
        shares_upto: 3,
        received_upto: 7,
        params: vec![("k".into(), format!("v{n}"))],
        nonce: u64::from(n) * 31,
        sig: Signature([n; 64]),
    }
}

/// One of four requests; the id is what requests and votes are keyed by.
pub fn request_id(n: u8) -> [u8; 32] {
    request(n % 4, 100).id()
}

fn wallet() -> impl Strategy<Value = (u32, Wallet)> {
    (
        0..N_MEMBERS as u32,
        0u64..5,
        any::<[u8; 32]>(),
        any::<[u64; 7]>(),
        proptest::collection::vec(0u64..50, 0..4),
    )
        .prop_map(|(idx, version, state, n, above)| {
            let id = members()[idx as usize];
            let mut w = Wallet::genesis(id, &Params::default());
            // Half the version-0 wallets keep the genesis State.
            if version > 0 || n[6].is_multiple_of(2) {
                w.version = version;
                w.state = state;
            }
            w.balance = n[0];
            w.shares_at_state = n[1] % 1000;
            w.received_at_state = n[2];
            w.shares_seen = n[3] % 1000;
            w.received = n[4];
            w.settled = n[5] % 10;
            w.settled_above = above;
            (idx, w)
        })
}

fn vote() -> impl Strategy<Value = Vote> {
    (0u8..4, 0u8..4, any::<u64>(), any::<u64>()).prop_map(|(r, voter, remaining, nonce)| Vote {
        voter: members()[voter as usize],
        request_id: request_id(r),
        remaining,
        nonce,
        sig: Signature([voter; 64]),
    })
}

fn cert() -> impl Strategy<Value = Certificate> {
    (0u8..4, any::<u64>(), 0usize..5).prop_map(|(r, remaining, n_votes)| Certificate {
        request: request(r, 100),
        remaining,
        votes: (0..n_votes as u32)
            .map(|i| CertVote {
                voter_idx: i,
                nonce: u64::from(i),
                sig: Signature([i as u8; 64]),
            })
            .collect(),
        provider_sig: Signature([9; 64]),
    })
}

fn announce() -> impl Strategy<Value = Announce> {
    (0u8..3, any::<u64>(), 0usize..3).prop_map(|(p, seq, n)| Announce {
        provider: members()[p as usize],
        seq,
        services: (0..n)
            .map(|i| ServiceOffer {
                name: format!("s{i}"),
                price: i as u64 * 10,
                contract_hash: [i as u8; 32],
            })
            .collect(),
        sig: Signature([p; 64]),
    })
}

/// Small (wallet index, version) keys so certificates and runs collide.
fn slot() -> impl Strategy<Value = (u32, u64)> {
    (0u32..3, 0u64..3)
}

/// Versions 0..=3 against runs at 0..=2: prunes below, across and above
/// every run of a requester. The last index has no runs at all.
fn runs_pruned(requesters: u32) -> impl Strategy<Value = Change> {
    (0..requesters + 1, 0u64..4).prop_map(|(idx, upto)| Change::RunsPruned { idx, upto })
}

fn marks() -> impl Strategy<Value = Change> {
    (
        0..N_MEMBERS as u32,
        prop_oneof![0u64..20, Just(u64::MAX)],
        proptest::collection::vec(prop_oneof![0u64..40, Just(u64::MAX)], 0..4),
    )
        .prop_map(|(idx, settled, above)| Change::Marks { idx, settled, above })
}

fn run_pending(slot: impl Strategy<Value = (u32, u64)>) -> impl Strategy<Value = Change> {
    (slot, cert()).prop_map(|((idx, version), c)| Change::RunPending {
        idx,
        version,
        cert: Box::new(c),
    })
}

fn run_done(slot: impl Strategy<Value = (u32, u64)>) -> impl Strategy<Value = Change> {
    (slot, any::<bool>(), "[a-z é]{0,12}").prop_map(|((idx, version), ok, body)| Change::RunDone {
        idx,
        version,
        ok,
        body,
        writes: Vec::new(),
    })
}

pub fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        3 => wallet().prop_map(|(idx, wallet)| Change::Wallet { idx, wallet }),
        1 => wallet().prop_map(|(idx, wallet)| Change::Tally { idx, wallet }),
        1 => (0u32..N_MEMBERS as u32, 0u64..4, vote()).prop_map(|(requester_idx, version, vote)| {
            Change::MyVote { requester_idx, version, vote }
        }),
        // Price 100 gives the ids votes use; 101 and 102 give others.
        1 => (0u8..4, 0u64..3).prop_map(|(n, p)| Change::PutRequest(Box::new(request(n, 100 + p)))),
        1 => (0u8..4).prop_map(|n| Change::DropRequest(request_id(n))),
        2 => vote().prop_map(Change::PutVote),
        1 => (0u8..5).prop_map(|n| Change::DropVotes(if n == 4 { [0xee; 32] } else { request_id(n) })),
        1 => (slot(), cert()).prop_map(|((idx, version), c)| Change::PutCert { idx, version, cert: Box::new(c) }),
        1 => slot().prop_map(|(idx, version)| Change::DropCert { idx, version }),
        1 => run_pending(slot()),
        1 => run_done(slot()),
        1 => runs_pruned(3),
        1 => marks(),
        1 => announce().prop_map(Change::Announce),
        1 => any::<u64>().prop_map(Change::ShareSeq),
        1 => any::<u64>().prop_map(Change::AnnounceSeq),
    ]
}

pub fn batches() -> impl Strategy<Value = Vec<Vec<Change>>> {
    proptest::collection::vec(proptest::collection::vec(change(), 0..8), 1..12)
}

/// Only runs: recorded, finished and pruned, over two requesters. About a
/// third of the cases prune owed and finished runs of one requester in one
/// change (64 cases from proptest's deterministic runner: 24); the rest
/// prune one kind, or nothing.
pub fn run_batches() -> impl Strategy<Value = Vec<Vec<Change>>> {
    let slot = || (0u32..2, 0u64..3);
    let change = prop_oneof![4 => run_pending(slot()), 3 => run_done(slot()), 2 => runs_pruned(2)];
    proptest::collection::vec(proptest::collection::vec(change, 0..8), 1..12)
}
