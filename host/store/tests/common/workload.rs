//! A deterministic workload shaped like a node's: the crash test and the
//! benchmark both commit it, and the crash test replays it to know exactly
//! what the file must hold.

#![allow(dead_code)]

use wallance_core::msg::{CertVote, Certificate, Request, Vote};
use wallance_core::{Change, MemberId, Signature, Wallet};

/// splitmix64: a stateless hash of a counter, so any step can be rebuilt
/// from its number alone.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn bytes32(seed: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&mix(seed ^ ((i as u64) << 56)).to_le_bytes());
    }
    out
}

/// Member `i`'s ID: distinct, random-looking, cheap to make by the million.
pub fn member_id(i: u32) -> MemberId {
    MemberId(bytes32(u64::from(i) | 1 << 40))
}

pub fn members(n: u32) -> Vec<MemberId> {
    (0..n).map(member_id).collect()
}

/// A wallet some way into the network's life: a few dozen purchases, a
/// balance in the tens of coins, a few hundred thousand sensor shares and
/// credits not yet committed. Sizes match the README's typical row.
pub fn wallet(id: MemberId, seed: u64) -> Wallet {
    let r = |k: u64| mix(seed.wrapping_mul(31).wrapping_add(k));
    let version = 1 + r(1) % 200;
    let shares_at_state = r(3) % 1_000_000;
    let received_at_state = r(4) % 2_000_000_000;
    Wallet {
        id,
        version,
        state: bytes32(r(2)),
        balance: r(5) % 100_000_000,
        shares_at_state,
        received_at_state,
        shares_seen: shares_at_state + r(6) % 100,
        received: received_at_state + r(7) % 1_000_000,
        settled: version - r(8) % 2,
        settled_above: Vec::new(),
    }
}

fn request(seq: u64, requester: MemberId, provider: MemberId) -> Request {
    Request {
        requester,
        service: "espresso".into(),
        provider,
        price: 2_500_000,
        announce_seq: 0,
        contract_hash: [0; 32],
        time_ms: 1_700_000_000_000 + seq,
        version: seq,
        state: bytes32(seq ^ 0x55),
        shares_upto: seq * 3,
        received_upto: seq * 5,
        params: vec![("size".into(), "double".into())],
        nonce: mix(seq),
        sig: Signature([seq as u8; 64]),
    }
}

/// The step of every 64 whose run stays owed: the provider never runs it.
const OWED_RUN_STEP: u64 = 48;

/// What one decision makes durable on a voter: the requester's new wallet,
/// this node's vote, the vote as seen, and the request dropped. Every 16th
/// step also stores a request, a certificate and a run owed, the step after
/// marks the run done (except one in four, which stays owed), and the step
/// after that prunes the requester's finished runs up to it. Every 8th step
/// records a light node's settlement marks. So all tables see traffic.
/// `ShareSeq(seq)` names the step, which is how a reader learns which steps
/// are in.
pub fn decision(seq: u64, members: &[MemberId]) -> Vec<Change> {
    let n = members.len() as u64;
    let idx = (mix(seq) % n) as u32;
    let me = members[0];
    let req = request(seq, members[idx as usize], members[((idx as u64 + 1) % n) as usize]);
    let request_id = req.id();
    let vote = Vote {
        voter: me,
        request_id,
        remaining: 1_000,
        nonce: seq,
        sig: Signature([7; 64]),
    };
    let mut batch = vec![
        Change::Wallet {
            idx,
            wallet: wallet(members[idx as usize], seq),
        },
        Change::MyVote {
            requester_idx: idx,
            version: seq,
            vote,
        },
        Change::PutVote(vote),
        Change::DropRequest(request_id),
        Change::ShareSeq(seq),
    ];
    if seq.is_multiple_of(16) {
        let cert = Box::new(Certificate {
            request: req.clone(),
            remaining: 1_000,
            votes: (0..4)
                .map(|i| CertVote {
                    voter_idx: i,
                    nonce: u64::from(i),
                    sig: Signature([i as u8; 64]),
                })
                .collect(),
            provider_sig: Signature([3; 64]),
        });
        batch.push(Change::PutRequest(Box::new(req)));
        batch.push(Change::PutCert {
            idx,
            version: seq,
            cert: cert.clone(),
        });
        batch.push(Change::RunPending {
            idx,
            version: seq,
            cert,
        });
    }
    if seq % 16 == 1 {
        let prev = seq - 1;
        let prev_idx = mix(prev) % n;
        let prev_req = request(prev, members[prev_idx as usize], members[((prev_idx + 1) % n) as usize]);
        if prev % 64 != OWED_RUN_STEP {
            batch.push(Change::RunDone {
                idx: prev_idx as u32,
                version: prev,
                ok: true,
                body: format!("poured #{prev}"),
                writes: Vec::new(),
            });
        }
        batch.push(Change::DropVotes(prev_req.id()));
        batch.push(Change::DropRequest(prev_req.id()));
    }
    if seq % 16 == 2 {
        // The run two steps back is finished, or owed one time in four;
        // either way it is at or below `upto`.
        let run = seq - 2;
        batch.push(Change::RunsPruned {
            idx: (mix(run) % n) as u32,
            upto: seq,
        });
    }
    if seq % 8 == 5 {
        let r = mix(seq ^ 0x6d61_726b);
        batch.push(Change::Marks {
            idx: (r % n) as u32,
            settled: seq,
            above: (1..=r % 3).map(|k| seq + 2 * k).collect(),
        });
    }
    batch
}
