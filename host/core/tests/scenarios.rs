//! Scripted scenarios of the core: inputs in, outputs checked.

mod harness;

use harness::Net;
use wallance_core::msg::{Message, Request, RequestDraft, Vote};
use wallance_core::{BuyError, Event, Params, UNITS_PER_COIN};

#[test]
fn a_purchase_commits_everywhere_pays_the_provider_and_the_drawn_member() {
    let mut net = Net::new(8);
    net.offer_espresso();
    net.share(3, 5); // one coin earned
    let request = net.buy(3).unwrap();
    for at in 0..8 {
        let w = net.wallet(at, 3);
        assert_eq!(w.version, 1, "node {at}");
        // 10 initial + 1 earned - 2 price - 2 voter reward = 7.
        assert_eq!(w.balance, 7 * UNITS_PER_COIN, "node {at}");
        assert_eq!(w.shares_at_state, 5);
        assert_eq!(net.commits(at), 1);
    }
    // Every node keeps a certificate of a quorum (6 of 8); the provider's
    // is signed (it only tells peers that the provider saw the commit).
    for at in 0..8 {
        let cert = net.nodes[at].core.certificate(3, 1).unwrap().clone();
        assert_eq!(cert.is_signed(), at == 0, "node {at}");
        assert_eq!(cert.votes.len(), 6);
        assert_eq!(cert.request, request);
    }
    // Exactly what the requester paid moved: the price to the provider,
    // the reward to the member drawn from the request id. Nothing minted.
    let drawn = net.nodes[0].core.membership().reward_recipient(&request.id()) as usize;
    for at in 0..8 {
        for member in 0..8 {
            let expected =
                if member == 0 { 2 * UNITS_PER_COIN } else { 0 } + if member == drawn { 2 * UNITS_PER_COIN } else { 0 };
            assert_eq!(net.wallet(at, member).received, expected, "node {at}, member {member}");
        }
        let total_received: u64 = net.nodes[at].core.wallets().map(|w| w.received).sum();
        assert_eq!(total_received, 4 * UNITS_PER_COIN);
    }
    // Exactly one contract run, on the provider.
    let runs: Vec<usize> = (0..8).map(|i| net.nodes[i].runs.len()).collect();
    assert_eq!(runs, vec![1, 0, 0, 0, 0, 0, 0, 0]);
    // The outcome reached the requester.
    assert!(
        net.nodes[3]
            .events
            .iter()
            .any(|e| matches!(e, Event::Outcome(o) if o.body == "one espresso"))
    );
}

#[test]
fn insufficient_balance_and_unknown_service_are_refused_locally() {
    let mut net = Net::with(4, Params::default(), |_| None);
    net.offer_espresso();
    assert!(matches!(net.buy(1), Err(BuyError::InsufficientBalance { .. })));
    let r = net.nodes[1].core.buy(net.now, "tea", None, 1, vec![]);
    assert!(matches!(r, Err(BuyError::UnknownService(_))));
    let r = net.nodes[1].core.buy(net.now, "espresso", None, 1, vec![]);
    assert!(matches!(r, Err(BuyError::PriceTooLow { .. })));
}

#[test]
fn a_second_request_on_the_same_state_never_wins() {
    let mut net = Net::new(4);
    net.offer_espresso();
    let first = net.buy(2).unwrap();
    // Craft a double spend on the State the first request already used.
    let key = net.nodes[2].key.clone();
    let draft = RequestDraft {
        service: "espresso".into(),
        provider: first.provider,
        price: first.price + 1,
        announce_seq: 0,
        contract_hash: [0; 32],
        time_ms: first.time_ms,
        version: first.version,
        state: first.state,
        shares_upto: first.shares_upto,
        received_upto: first.received_upto,
        params: vec![],
    };
    let second = Request::build(&key, draft, 1).unwrap();
    for i in 0..4 {
        let r = net.nodes[i]
            .core
            .handle_message(net.now, Message::Request(second.clone()));
        assert!(r.is_err(), "node {i} accepted a request on a spent State");
    }
    assert_eq!(net.wallet(1, 2).balance, 6 * UNITS_PER_COIN);
}

#[test]
fn double_spend_split_between_halves_commits_at_most_one() {
    // The requester sends two requests on one State to disjoint halves
    // before anyone votes: neither half alone is a quorum.
    let mut net = Net::new(6);
    net.offer_espresso();
    let key = net.nodes[5].key.clone();
    let w = net.wallet(5, 5);
    let make = |price| {
        Request::build(
            &key,
            RequestDraft {
                service: "espresso".into(),
                provider: net.id(0),
                price,
                announce_seq: 0,
                contract_hash: [0; 32],
                time_ms: net.now,
                version: 0,
                state: w.state,
                shares_upto: 0,
                received_upto: 0,
                params: vec![],
            },
            1,
        )
        .unwrap()
    };
    let (a, b) = (make(2 * UNITS_PER_COIN), make(3 * UNITS_PER_COIN));
    for i in 0..6 {
        let r = if i < 3 { a.clone() } else { b.clone() };
        let _ = net.nodes[i].core.handle_message(net.now, Message::Request(r));
        net.flush(i);
    }
    net.run();
    // Re-sending both to everyone changes nothing: each voter voted once.
    for i in 0..6 {
        let _ = net.nodes[i].core.handle_message(net.now, Message::Request(a.clone()));
        let _ = net.nodes[i].core.handle_message(net.now, Message::Request(b.clone()));
        net.flush(i);
    }
    net.run();
    for i in 0..6 {
        assert_eq!(net.wallet(i, 5).version, 0, "node {i} committed a split double spend");
    }
}

#[test]
fn votes_are_counted_as_they_arrive_not_every_period() {
    let mut net = Net::new(8);
    net.offer_espresso();
    net.buy(1).unwrap();
    // No timer ran: the commit came from the votes themselves.
    assert_eq!(net.wallet(7, 1).version, 1);
}

#[test]
fn a_restarted_node_catches_up_from_certificates_of_its_peers() {
    let mut net = Net::new(4);
    net.offer_espresso();
    net.isolated[3] = true;
    net.buy(1).unwrap();
    net.buy(2).unwrap();
    assert_eq!(net.wallet(3, 1).version, 0);
    net.isolated[3] = false;
    net.restart(3);
    // Anti-entropy: digests differ, heads are exchanged, certificates fetched.
    for _ in 0..5 {
        net.tick(5_000);
    }
    for of in 0..4 {
        assert_eq!(net.wallet(3, of), net.wallet(0, of), "wallet {of}");
    }
}

#[test]
fn a_crash_between_commit_and_run_still_runs_the_contract_once() {
    let mut net = Net::new(4);
    net.offer_espresso();
    // Keep the provider's outputs: the crash hits before the run finishes.
    let r = net.nodes[1]
        .core
        .buy(net.now, "espresso", None, 2 * UNITS_PER_COIN, vec![])
        .unwrap();
    net.flush(1);
    // Deliver everything except to the provider's contract runner: take the
    // provider's disk right after it persisted RunPending.
    let id = r.id();
    let mut crashed_disk = None;
    while let Some((from, m)) = net.queue.pop_front() {
        for to in 0..4 {
            if to == from {
                continue;
            }
            let _ = net.nodes[to].core.handle_message(net.now, m.clone());
            if to == 0 {
                while let Some(out) = net.nodes[0].core.poll_output() {
                    match out {
                        wallance_core::Output::Persist(b) => net.nodes[0].disk.apply(&b),
                        wallance_core::Output::Send(m) => net.queue.push_back((0, m)),
                        wallance_core::Output::Run(_) => {
                            crashed_disk.get_or_insert_with(|| net.nodes[0].disk.clone());
                        }
                        wallance_core::Output::Event(_) => {}
                    }
                }
            } else {
                net.flush(to);
            }
        }
    }
    let disk = crashed_disk.expect("the provider was asked to run the contract");
    assert!(
        disk.runs
            .values()
            .any(|r| r.done.is_none() && r.cert.request.id() == id)
    );
    net.nodes[0].disk = disk;
    net.restart(0);
    let runs = net.nodes[0].runs.len();
    assert_eq!(runs, 1, "the owed run is asked for again after the restart");
    assert!(net.nodes[0].disk.runs.values().all(|r| r.done.is_some()));
    // And a second restart owes nothing.
    net.nodes[0].events.clear();
    net.nodes[0].runs.clear();
    net.restart(0);
    assert!(net.nodes[0].runs.is_empty());
}

#[test]
fn a_voter_waits_for_missing_shares_instead_of_voting_wrong() {
    let mut net = Net::new(4);
    net.offer_espresso();
    // Node 3 misses node 1's shares.
    net.isolated[3] = true;
    net.share(1, 10);
    net.isolated[3] = false;
    assert_eq!(net.wallet(3, 1).shares_seen, 0);
    net.buy(1).unwrap();
    // Node 3 fetched the missing shares from the requester and voted the same
    // remaining balance as everybody.
    assert_eq!(net.wallet(3, 1).shares_seen, 10);
    assert_eq!(net.wallet(3, 1), net.wallet(0, 1));
    // 10 initial + 2 earned - 2 price - 2 voter reward.
    assert_eq!(net.wallet(0, 1).balance, 8 * UNITS_PER_COIN);
}

#[test]
fn a_light_node_abstains_on_wallets_it_does_not_keep() {
    let mut net = Net::with(4, harness::params(), |i| {
        (i == 3).then(|| [0u32, 3].into_iter().collect())
    });
    net.offer_espresso();
    net.buy(1).unwrap();
    assert!(net.nodes[3].core.wallet(&net.id(1)).is_none());
    assert_eq!(net.nodes[3].core.stats().votes_sent, 0);
    // It still settles the provider's payment on the wallets it keeps.
    assert_eq!(net.wallet(3, 0).received, net.wallet(0, 0).received);
    // Three voters are a quorum of 4, so the purchase committed without it.
    assert_eq!(net.wallet(0, 1).version, 1);
}

#[test]
fn votes_below_a_quorum_expire_and_memory_stays_bounded() {
    let mut net = Net::new(4);
    net.offer_espresso();
    net.isolated = vec![false, true, true, false];
    let _ = net.buy(3).unwrap();
    // Only nodes 0 and 3 voted: 2 of 4 is no quorum, one vote group.
    assert_eq!(net.wallet(0, 3).version, 0);
    assert_eq!(net.nodes[0].core.pending_decisions(), 1);
    let ttl = net.nodes[0].config.params.request_ttl_ms;
    net.isolated = vec![false, true, true, true];
    net.tick(ttl + 5_000);
    assert_eq!(net.nodes[0].core.pending_decisions(), 0);
    assert_eq!(net.nodes[0].core.pending_requests().count(), 0);
    // The requester keeps its request and re-sends it once the network heals.
    net.isolated = vec![false; 4];
    net.tick(2_000);
    assert_eq!(net.wallet(0, 3).version, 1);
    assert_eq!(net.wallet(1, 3).version, 1);
}

#[test]
fn a_vote_replayed_under_another_voters_id_is_rejected() {
    // Difficulty 0 so the signature, not the work, is what fails.
    let params = Params {
        vote_difficulty: 0,
        ..harness::params()
    };
    let mut net = Net::with(4, params.clone(), |_| None);
    net.offer_espresso();
    let r = net.buy(1).unwrap();
    let vote = net
        .sent
        .iter()
        .find_map(|m| match m {
            Message::Vote(v) if v.voter == net.id(2) => Some(*v),
            _ => None,
        })
        .unwrap();
    let forged = Vote {
        voter: net.id(3),
        ..vote
    };
    let mut fresh = Net::with(4, params, |_| None);
    fresh.offer_espresso();
    let _ = fresh.nodes[0].core.handle_message(fresh.now, Message::Request(r));
    let err = fresh.nodes[0]
        .core
        .handle_message(fresh.now, Message::Vote(forged))
        .unwrap_err();
    assert_eq!((err.kind, err.reason), ("vote", "vote signature is invalid"));
    assert_eq!(
        fresh.nodes[0].core.stats().rejected["vote: vote signature is invalid"],
        1
    );
    // With the default difficulty the voter's ID is inside the work, so
    // the replayed vote fails even before its signature is checked.
    let mut strict = Net::new(4);
    strict.offer_espresso();
    let hits = (0..16u64)
        .filter(|n| {
            let v = Vote {
                voter: strict.id(3),
                nonce: *n,
                ..vote
            };
            strict.nodes[0]
                .core
                .handle_message(strict.now, Message::Vote(v))
                .is_err()
        })
        .count();
    assert_eq!(hits, 16);
}

/// A store written before share tallies and the share number were
/// committed together (the number durable, the tally not) can come back
/// from a crash with the node's share number ahead of its own tally. The
/// node credits its own numbered shares at start, so its next share is
/// credited again everywhere instead of waiting for a gap nobody fills.
#[test]
fn a_node_whose_disk_kept_its_share_number_but_not_its_tally_credits_its_next_shares() {
    let mut net = Net::new(4);
    net.share(2, 5);
    let disk = &mut net.nodes[2].disk;
    assert_eq!(disk.share_seq, 5);
    let mut own = disk.wallets.get(&2).cloned().expect("own wallet stored");
    own.shares_seen = 2;
    disk.wallets.insert(2, own);
    net.restart(2);
    assert_eq!(net.wallet(2, 2).shares_seen, 5);
    net.share(2, 3);
    for at in 0..4 {
        assert_eq!(net.wallet(at, 2).shares_seen, 8, "node {at}");
    }
}

/// A node that verified a request and a vote when they arrived checks a
/// certificate carrying them from its cache of verified signatures, and
/// still refuses a certificate whose copy of that vote has a tampered
/// signature.
#[test]
fn a_certificate_reuses_verified_signatures_and_still_refuses_a_forged_vote() {
    let mut net = Net::new(4);
    net.offer_espresso();
    net.share(1, 3);
    net.run();
    // Node 2 hears nothing of this purchase as it happens; 3 of 4 are a
    // quorum without it.
    net.isolated[2] = true;
    let request = net.buy(1).unwrap();
    net.run();
    assert_eq!(net.wallet(3, 1).version, 1);
    let cert = net
        .sent
        .iter()
        .find_map(|m| match m {
            Message::Certificate(c) => Some(c.clone()),
            _ => None,
        })
        .expect("a certificate went out");
    // Now it gets the request and one of the certificate's votes (its own
    // vote and that one are no quorum), then the certificate.
    let voter = net.nodes[cert.votes[0].voter_idx as usize].key.id();
    let vote = net
        .sent
        .iter()
        .find_map(|m| match m {
            Message::Vote(v) if v.voter == voter && v.request_id == request.id() => Some(*v),
            _ => None,
        })
        .expect("the vote went out");
    let now = net.now;
    net.nodes[2]
        .core
        .handle_message(now, Message::Request(request))
        .unwrap();
    net.nodes[2].core.handle_message(now, Message::Vote(vote)).unwrap();
    net.flush(2);
    assert_eq!(net.wallet(2, 1).version, 0, "no quorum yet");
    assert_eq!(net.nodes[2].core.stats().signatures_cached, 0);
    let rejected = |net: &Net| net.nodes[2].core.stats().rejected.values().sum::<u64>();
    let before = rejected(&net);
    let mut forged = cert.clone();
    forged.votes[0].sig.0[5] ^= 0x40;
    let _ = net.nodes[2].core.handle_message(now, Message::Certificate(forged));
    assert_eq!(rejected(&net), before + 1, "{:?}", net.nodes[2].core.stats().rejected);
    assert_eq!(net.wallet(2, 1).version, 0);
    let cached = net.nodes[2].core.stats().signatures_cached;
    assert_eq!(cached, 1, "the request came from the cache, the forged vote did not");
    net.nodes[2]
        .core
        .handle_message(now, Message::Certificate(cert))
        .unwrap();
    assert_eq!(net.wallet(2, 1).version, 1, "the genuine certificate applies");
    assert_eq!(
        net.nodes[2].core.stats().signatures_cached,
        cached + 2,
        "its request and the vote seen before were not verified again"
    );
}
