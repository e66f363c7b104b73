//! The attacker of `shared/docs/threat-model.md` against one core: replayed,
//! late, mutated and forged messages, Byzantine members and providers.
//! Each test is one hole of the integrity issue; each failed on the core
//! before its fix.

mod harness;

use harness::Net;
use wallance_core::msg::{
    CertFetch, Certificate, Message, Outcome, Request, RequestDraft, ServiceOffer, ShareFetch, SyncDigest, Vote,
};
use wallance_core::{Event, Keypair, Output, Params, UNITS_PER_COIN, Wallet};

/// Every message the network carried so far, as an attacker records them.
fn captured(net: &Net, pick: impl Fn(&Message) -> bool) -> Vec<Message> {
    net.sent.iter().filter(|m| pick(m)).cloned().collect()
}

/// Feeds `m` to node `to` as a replay and carries out what it answers.
fn replay(net: &mut Net, to: usize, m: &Message) -> Vec<Output> {
    let _ = net.nodes[to].core.handle_message(net.now, m.clone());
    let mut outs = Vec::new();
    while let Some(o) = net.nodes[to].core.poll_output() {
        if let Output::Persist(b) = &o {
            net.nodes[to].disk.apply(b);
        }
        outs.push(o);
    }
    outs
}

fn runs_asked(outs: &[Output]) -> usize {
    outs.iter().filter(|o| matches!(o, Output::Run(_))).count()
}

fn wallets(net: &Net, at: usize) -> Vec<Wallet> {
    net.nodes[at].core.wallets().cloned().collect()
}

/// Hole 1: a light node answered "already settled" from the few
/// certificates it kept; an old certificate replayed later paid its
/// provider again on every replay.
#[test]
fn replayed_old_certificates_never_credit_twice_on_a_light_node() {
    // Node 3 keeps only wallets 0 (the provider) and 3.
    let mut net = Net::with(4, harness::params(), |i| {
        (i == 3).then(|| [0u32, 3].into_iter().collect())
    });
    net.offer_espresso();
    let certs_kept = harness::params().certs_kept_per_wallet;
    for _ in 0..certs_kept + 2 {
        net.share(1, 20); // 4 DCoin: the price and the voter reward
        net.buy(1).unwrap();
    }
    let before = net.wallet(3, 0);
    assert_eq!(before.received, net.wallet(0, 0).received);
    // Every certificate and proof ever sent, replayed, twice.
    for m in captured(&net, |m| matches!(m, Message::Certificate(_))) {
        replay(&mut net, 3, &m);
        replay(&mut net, 3, &m);
    }
    net.tick(120_000);
    for m in captured(&net, |m| matches!(m, Message::Certificate(_))) {
        replay(&mut net, 3, &m);
    }
    assert_eq!(
        net.wallet(3, 0),
        before,
        "a replay changed the light node's view of the provider"
    );
    assert_eq!(net.wallet(3, 0).received, net.wallet(0, 0).received);
}

/// Hole 1, reverse: a light node that kept the unsigned proof first never
/// settled the signed certificate.
#[test]
fn a_light_node_settles_from_a_proof_as_from_a_signed_certificate() {
    let mut net = Net::with(4, harness::params(), |i| {
        (i == 3).then(|| [0u32, 3].into_iter().collect())
    });
    net.offer_espresso();
    net.isolated[3] = true;
    net.buy(1).unwrap();
    net.isolated[3] = false;
    // It hears only an unsigned proof, kept by a voter.
    let proof = net.nodes[2].core.certificate(1, 1).unwrap().clone();
    assert!(!proof.is_signed());
    replay(&mut net, 3, &Message::Certificate(Box::new(proof)));
    // The price waits in escrow for its verdict: the light node asks the
    // others for theirs (a query vote), and settles it as they did.
    assert_eq!(net.nodes[3].core.escrows().count(), 1);
    net.tick(harness::params().retry_ms);
    assert_eq!(net.nodes[3].core.escrows().count(), 0);
    assert_eq!(net.wallet(3, 0).received, net.wallet(0, 0).received);
    // The signed one afterwards is a duplicate.
    let signed = net.nodes[0].core.certificate(1, 1).unwrap().clone();
    assert!(signed.is_signed());
    replay(&mut net, 3, &Message::Certificate(Box::new(signed)));
    assert_eq!(net.wallet(3, 0).received, net.wallet(0, 0).received);
}

/// Hole 2: finished runs were pruned from memory, and a replayed
/// certificate (or its proof) made the provider run the contract again.
#[test]
fn a_replayed_certificate_or_proof_never_reruns_a_pruned_run() {
    let mut net = Net::new(4);
    net.offer_espresso();
    let certs_kept = harness::params().certs_kept_per_wallet;
    for _ in 0..certs_kept + 3 {
        net.share(1, 20); // 4 DCoin: the price and the voter reward
        net.buy(1).unwrap();
    }
    let runs = net.nodes[0].runs.len();
    assert_eq!(runs, certs_kept + 3);
    let old = captured(&net, |m| matches!(m, Message::Certificate(c) if c.new_version() == 1));
    assert!(!old.is_empty());
    for m in &old {
        let Message::Certificate(c) = m else { unreachable!() };
        let mut proof = c.clone();
        proof.provider_sig = Default::default();
        assert_eq!(runs_asked(&replay(&mut net, 0, m)), 0);
        assert_eq!(runs_asked(&replay(&mut net, 0, &Message::Certificate(proof))), 0);
    }
    // Also after a restart from the store.
    net.restart(0);
    for m in &old {
        assert_eq!(runs_asked(&replay(&mut net, 0, m)), 0, "after a restart");
    }
    assert!(
        net.nodes[0].disk.runs.len() <= certs_kept,
        "finished runs are pruned on disk too"
    );
}

/// Hole 3: votes arriving after their request committed opened a pending
/// decision that lived for the whole TTL.
#[test]
fn late_and_replayed_votes_open_no_pending_decision() {
    let mut net = Net::new(4);
    net.offer_espresso();
    net.buy(1).unwrap();
    assert_eq!(net.wallet(0, 1).version, 1);
    for i in 0..4 {
        assert_eq!(net.nodes[i].core.pending_decisions(), 0, "node {i}");
    }
    for m in captured(&net, |m| matches!(m, Message::Vote(_))) {
        for i in 0..4 {
            replay(&mut net, i, &m);
        }
    }
    for i in 0..4 {
        assert_eq!(net.nodes[i].core.pending_decisions(), 0, "node {i} after late votes");
    }
}

/// Hole 3: one member signing valid votes for invented request ids filled
/// the decision table, after which nothing committed anywhere.
#[test]
fn a_member_flooding_votes_for_invented_requests_only_fills_its_own_slots() {
    let params = Params {
        vote_difficulty: 0,
        max_pending_decisions: 64,
        ..harness::params()
    };
    let mut net = Net::with(4, params, |_| None);
    net.offer_espresso();
    let byzantine = net.nodes[3].key.clone();
    for n in 0..5_000u32 {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&n.to_le_bytes());
        let v = Vote::build(&byzantine, id, 1, 0).unwrap();
        for i in 0..3 {
            replay(&mut net, i, &Message::Vote(v));
        }
    }
    for i in 0..3 {
        let pending = net.nodes[i].core.pending_decisions();
        assert!(
            pending <= wallance_core::core::MAX_ORPHAN_VOTES,
            "node {i} holds {pending} decisions for one member's invented votes"
        );
    }
    // An honest purchase still commits everywhere.
    net.buy(1).unwrap();
    for i in 0..4 {
        assert_eq!(net.wallet(i, 1).version, 1, "node {i}");
    }
}

/// Hole 4: one packet panicked a node.
#[test]
fn a_cert_fetch_with_first_above_last_is_refused_not_a_panic() {
    let mut net = Net::new(4);
    net.offer_espresso();
    net.buy(1).unwrap();
    let f = CertFetch::new(&net.nodes[2].key.clone(), net.id(0), 1, 5, 2);
    let r = net.nodes[0].core.handle_message(net.now, Message::CertFetch(f));
    assert_eq!(r.unwrap_err().reason, "first version above the last");
    let f = ShareFetch::new(&net.nodes[2].key.clone(), net.id(0), 9, 3);
    assert!(
        net.nodes[0]
            .core
            .handle_message(net.now, Message::ShareFetch(f))
            .is_err()
    );
}

#[test]
fn a_request_or_certificate_at_version_u64_max_is_refused_not_a_panic() {
    let mut net = Net::new(4);
    net.offer_espresso();
    net.buy(1).unwrap();
    let mut cert: Certificate = net.nodes[0].core.certificate(1, 1).unwrap().clone();
    cert.request.version = u64::MAX;
    let r = net.nodes[2]
        .core
        .handle_message(net.now, Message::Certificate(Box::new(cert.clone())));
    assert!(r.is_err());
    // Re-signed by its requester (a Byzantine member holds its own key).
    let key = net.nodes[1].key.clone();
    let r = Request::build(
        &key,
        RequestDraft {
            service: "espresso".into(),
            provider: net.id(0),
            price: 2 * UNITS_PER_COIN,
            announce_seq: 0,
            contract_hash: [0; 32],
            time_ms: net.now,
            version: u64::MAX,
            state: [0; 32],
            shares_upto: 0,
            received_upto: 0,
            params: vec![],
        },
        1,
    )
    .unwrap();
    assert!(
        net.nodes[2]
            .core
            .handle_message(net.now, Message::Request(r.clone()))
            .is_err()
    );
    cert.request = r;
    assert!(
        net.nodes[2]
            .core
            .handle_message(net.now, Message::Certificate(Box::new(cert)))
            .is_err()
    );
}

/// Hole 5: a replayed ShareFetch made its target re-sign and broadcast up
/// to 1 024 shares, every time.
#[test]
fn a_replayed_share_fetch_is_answered_once_per_period_and_bounded() {
    let mut net = Net::new(4);
    net.share(1, 2_000);
    let f = ShareFetch::new(&net.nodes[2].key.clone(), net.id(1), 1, 2_000);
    let mut shares = 0;
    for _ in 0..100 {
        shares += replay(&mut net, 1, &Message::ShareFetch(f))
            .iter()
            .filter(|o| matches!(o, Output::Send(Message::Share(_))))
            .count();
    }
    assert_eq!(shares, wallance_core::core::MAX_SHARES_PER_FETCH as usize);
    // The same for certificates.
    net.offer_espresso();
    for _ in 0..3 {
        net.share(2, 20);
        net.buy(2).unwrap();
    }
    let f = CertFetch::new(&net.nodes[3].key.clone(), net.id(0), 2, 1, u64::MAX);
    let mut certs = 0;
    for _ in 0..100 {
        certs += replay(&mut net, 0, &Message::CertFetch(f))
            .iter()
            .filter(|o| matches!(o, Output::Send(Message::Certificate(_))))
            .count();
    }
    assert_eq!(certs, 3);
}

/// Hole 6: a forged digest took the single heads-request slot before its
/// signature was checked, silencing the catch-up.
#[test]
fn a_forged_digest_takes_no_catch_up_slot() {
    let mut net = Net::new(4);
    net.offer_espresso();
    net.isolated[3] = true;
    net.buy(1).unwrap();
    net.isolated[3] = false;
    // A forger sends digests in every member's name, unsigned, at the start
    // of every interval, just ahead of the genuine ones.
    let forger = Keypair::from_seed([99; 32]);
    for _ in 0..4 {
        net.now += 5_000;
        for from in 0..3 {
            let mut d = SyncDigest::new(&forger, net.now, [7; 32]);
            d.from = net.id(from);
            let outs = replay(&mut net, 3, &Message::Digest(d));
            assert!(!outs.iter().any(|o| matches!(o, Output::Send(Message::HeadsRequest(_)))));
        }
        // The genuine digests that follow still start the catch-up.
        net.tick(0);
    }
    assert_eq!(wallets(&net, 3), wallets(&net, 0));
}

/// Hole 6: a forged vote after a member's real vote was counted as that
/// member equivocating.
#[test]
fn a_forged_vote_after_a_real_one_does_not_blame_the_voter() {
    let params = Params {
        vote_difficulty: 0,
        ..harness::params()
    };
    let mut net = Net::with(4, params, |_| None);
    net.offer_espresso();
    net.isolated[1] = true; // node 1's vote reaches nobody yet: no quorum
    net.isolated[2] = true;
    let r = net.nodes[3]
        .core
        .buy(net.now, "espresso", None, 2 * UNITS_PER_COIN, vec![])
        .unwrap();
    net.flush(3);
    net.run();
    let real = captured(&net, |m| matches!(m, Message::Vote(v) if v.voter == net.id(3)));
    let Message::Vote(real) = real[0] else { unreachable!() };
    let forged = Vote {
        remaining: real.remaining + 1,
        ..real
    };
    let err = net.nodes[0]
        .core
        .handle_message(net.now, Message::Vote(forged))
        .unwrap_err();
    assert_eq!(err.reason, "vote signature is invalid");
    assert!(
        !net.nodes[0]
            .core
            .stats()
            .rejected
            .keys()
            .any(|k| k.contains("equivocation")),
        "an honest member was blamed for a forgery"
    );
    // The forgery was of node 3's real vote on its own purchase.
    assert_eq!(real.request_id, r.id());
}

/// Hole 7: `buy` sent the request before storing it; with the pending
/// table full it was neither stored nor re-sent, and the next purchase
/// spent the same State.
#[test]
fn an_honest_requester_keeps_its_request_when_the_pending_table_is_full() {
    let params = Params {
        max_pending_requests: 1,
        ..harness::params()
    };
    let mut net = Net::with(4, params, |_| None);
    net.offer_espresso();
    net.isolated = vec![true, true, false, true];
    // Node 2 holds another member's request: its table is full.
    let _ = net.nodes[1]
        .core
        .buy(net.now, "espresso", None, 2 * UNITS_PER_COIN, vec![])
        .unwrap();
    net.flush(1);
    net.run();
    net.isolated = vec![true, true, true, true];
    assert_eq!(net.nodes[2].core.pending_requests().count(), 1);
    let mine = net.nodes[2]
        .core
        .buy(net.now, "espresso", None, 2 * UNITS_PER_COIN, vec![])
        .unwrap();
    net.flush(2);
    assert!(
        net.nodes[2].disk.requests.contains_key(&mine.id()),
        "own request not stored"
    );
    // A second purchase on the same State is refused, not a double spend.
    let again = net.nodes[2]
        .core
        .buy(net.now, "espresso", None, 2 * UNITS_PER_COIN, vec![]);
    assert!(again.is_err());
    net.isolated = vec![false; 4];
    net.tick(2_000);
    assert_eq!(net.wallet(0, 2).version, 1);
}

/// Hole 9: a Byzantine provider signed two certificates for one decision
/// (different voters), and honest nodes' wallets then differed.
#[test]
fn two_certificates_for_one_decision_settle_once_and_identically() {
    let mut net = Net::new(7);
    net.offer_espresso();
    net.isolated = vec![true; 7];
    net.isolated[1] = false;
    let r = net.nodes[1]
        .core
        .buy(net.now, "espresso", None, 2 * UNITS_PER_COIN, vec![])
        .unwrap();
    net.flush(1);
    net.run();
    // Gather every member's vote by hand, as the provider would.
    let mut votes = Vec::new();
    let own = captured(&net, |m| matches!(m, Message::Vote(_)));
    let Message::Vote(v1) = own[0] else { unreachable!() };
    votes.push((1u32, v1));
    for i in [0usize, 2, 3, 4, 5, 6] {
        let _ = net.nodes[i].core.handle_message(net.now, Message::Request(r.clone()));
        while let Some(o) = net.nodes[i].core.poll_output() {
            if let Output::Send(Message::Vote(v)) = o {
                votes.push((i as u32, v));
            }
        }
    }
    votes.sort_by_key(|(i, _)| *i);
    let cert = |pick: &[u32]| {
        let mut c = Certificate {
            request: r.clone(),
            remaining: v1.remaining,
            votes: votes
                .iter()
                .filter(|(i, _)| pick.contains(i))
                .map(|(i, v)| wallance_core::msg::CertVote {
                    voter_idx: *i,
                    nonce: v.nonce,
                    sig: v.sig,
                })
                .collect(),
            provider_sig: Default::default(),
        };
        c.provider_sig = net.nodes[0].key.sign(&c.digest());
        c
    };
    // A quorum of 7 is 5: one certificate rewards 0..=4, another (a
    // superset) everyone.
    let a = cert(&[0, 1, 2, 3, 4]);
    let b = cert(&[0, 1, 2, 3, 4, 5, 6]);
    for i in 2..7 {
        let (first, second) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        replay(&mut net, i, &Message::Certificate(Box::new(first.clone())));
        replay(&mut net, i, &Message::Certificate(Box::new(second.clone())));
    }
    let reference = wallets(&net, 2);
    for i in 3..7 {
        assert_eq!(wallets(&net, i), reference, "node {i} disagrees with node 2");
    }
    let total: u64 = reference.iter().map(|w| w.received).sum();
    assert_eq!(
        total,
        2 * UNITS_PER_COIN,
        "one reward moved, the price waits for its verdict"
    );
    // The provider never heard of it: past the outcome window every member
    // votes the refund, the provider included once it catches up.
    net.isolated = vec![false; 7];
    net.tick(harness::params().outcome_timeout_ms + 1);
    for _ in 0..5 {
        net.tick(harness::params().retry_ms);
    }
    let reference = wallets(&net, 2);
    for i in [0, 1, 3, 4, 5, 6] {
        assert_eq!(wallets(&net, i), reference, "node {i} disagrees with node 2");
    }
    let total: u64 = reference.iter().map(|w| w.received).sum();
    assert_eq!(total, 4 * UNITS_PER_COIN, "exactly the price and one reward moved");
    assert_eq!(
        reference[1].received,
        2 * UNITS_PER_COIN,
        "the price went back to the requester"
    );
}

/// Hole 10: outcomes were accepted from any key.
#[test]
fn outcomes_are_accepted_only_from_the_purchases_provider_and_once() {
    let mut net = Net::new(4);
    net.offer_espresso();
    let r = net.buy(1).unwrap();
    let outcomes = |net: &Net| {
        net.nodes[1]
            .events
            .iter()
            .filter(|e| matches!(e, Event::Outcome(_)))
            .count()
    };
    assert_eq!(outcomes(&net), 1);
    let liar = net.nodes[2].key.clone();
    let fake = Outcome::new(&liar, net.id(1), r.id(), 1, true, "free espresso");
    assert!(
        net.nodes[1]
            .core
            .handle_message(net.now, Message::Outcome(fake))
            .is_err()
    );
    let real = captured(&net, |m| matches!(m, Message::Outcome(_)));
    let _ = net.nodes[1].core.handle_message(net.now, real[0].clone());
    net.flush(1);
    assert_eq!(outcomes(&net), 1, "a replayed outcome was reported again");
}

#[test]
fn a_threshold_below_two_thirds_is_refused() {
    for (num, den) in [(1, 2), (3, 5), (65, 100)] {
        let p = Params {
            threshold_num: num,
            threshold_den: den,
            ..Params::default()
        };
        assert!(p.validate().is_err(), "{num}/{den} accepted");
    }
    assert!(Params::default().validate().is_ok());
}

/// The economic hole: a member offering itself a free service and buying it
/// in a loop minted the voter rewards. Now the requester pays them, so the
/// money on the network only changes with sensor shares.
#[test]
fn buying_a_free_service_in_a_loop_creates_no_money() {
    let mut net = Net::new(4);
    let offers = vec![ServiceOffer {
        name: "nothing".into(),
        price: 0,
        contract_hash: [2; 32],
    }];
    net.nodes[1].core.set_services(net.now, offers);
    net.flush(1);
    net.run();
    let money = |net: &Net, at: usize| -> u64 {
        let p = &net.nodes[at].config.params;
        net.nodes[at].core.wallets().map(|w| w.spendable(p)).sum()
    };
    let before = money(&net, 0);
    for _ in 0..20 {
        let _ = net.nodes[1].core.buy(net.now, "nothing", None, 0, vec![]);
        net.flush(1);
        net.run();
    }
    assert!(net.wallet(0, 1).version >= 4, "the loop did buy");
    for at in 0..4 {
        assert_eq!(money(&net, at), before, "node {at}: money was created");
    }
}

/// Hole 8: a node that missed more commits than its peers keep
/// certificates for could never settle them: its `received` stayed short
/// for ever and its digests never converged. It now takes its tallies from
/// heads that more than a third of the weight reported identically.
#[test]
fn a_node_that_missed_pruned_certificates_catches_up_every_field() {
    let mut net = node_3_misses_purchases_of(&[1, 2], 5);
    net.isolated[3] = false;
    for _ in 0..12 {
        net.tick(5_000);
    }
    assert!(net.nodes[3].core.stats().tallies_adopted > 0);
    for at in 0..3 {
        assert_eq!(wallets(&net, 3), wallets(&net, at), "node 3 differs from node {at}");
    }
}

/// The vouched catch-up above waits for a moment when no purchase is in
/// flight, and may wait for ever while others keep buying. Until then a
/// member back from such an outage could not check the credits a wallet
/// earned from the commits it missed, so it parked that wallet's requests,
/// and where the quorum needed it the wallet could not buy (simulator,
/// `pruned-catch-up` seed 601). It now votes the remaining it computes once
/// members holding more than a third of the weight voted exactly that: at
/// least one of them is honest and holds the credits. A third or less is
/// not enough.
#[test]
fn a_member_missing_pruned_credits_votes_once_more_than_a_third_vouched() {
    // Node 3 misses six purchases from provider 0, whose certificates (and
    // so wallet 0's credits) every peer pruned.
    let mut net = node_3_misses_purchases_of(&[1, 2], 3);
    assert!(net.wallet(3, 0).received < net.wallet(0, 0).received);
    // Node 3 is back; nodes 1 and 2 are away. Node 0 spends its credits.
    net.isolated = vec![false, true, true, false];
    let request = net.buy(0).unwrap();
    assert!(request.received_upto > net.wallet(3, 0).received);
    // Node 0's vote alone is a quarter of the weight: node 3 waits.
    assert_eq!(net.nodes[3].core.stats().credits_vouched, 0);
    assert_eq!(net.wallet(3, 0).version, 0);
    assert_eq!(net.wallet(0, 0).version, 0, "committed without a quorum");

    // Node 1 comes back and gets the request: half the weight voted one
    // remaining, node 3 votes it too, and 3 of 4 commit. No timer ran, so
    // no catch-up did this.
    net.isolated[1] = false;
    let _ = net.nodes[1].core.handle_message(net.now, Message::Request(request));
    net.flush(1);
    net.run();
    assert_eq!(net.nodes[3].core.stats().credits_vouched, 1);
    assert_eq!(net.nodes[3].core.stats().tallies_adopted, 0);
    // The same commit everywhere; only node 3's credit tally still lacks
    // what it missed.
    let committed = |w: Wallet| (w.version, w.state, w.balance, w.received_at_state);
    for at in [0, 1, 3] {
        assert_eq!(net.wallet(at, 0).version, 1, "node {at} did not commit");
        assert_eq!(
            committed(net.wallet(at, 0)),
            committed(net.wallet(0, 0)),
            "node {at} differs"
        );
    }
    assert!(net.wallet(3, 0).received < net.wallet(0, 0).received);

    // Everyone back: the catch-up still brings node 3's tallies level.
    net.isolated[2] = false;
    for _ in 0..12 {
        net.tick(5_000);
    }
    assert!(net.nodes[3].core.stats().tallies_adopted > 0);
    for at in 0..3 {
        assert_eq!(wallets(&net, 3), wallets(&net, at), "node 3 differs from node {at}");
    }
}

/// A provider that missed a purchase's quorum, then adopted the buyer's
/// next commit from a certificate, has a gap it must fetch. Peers report a
/// commit whose price is in escrow as unsettled in their heads, so a node
/// fetched only when a peer reported more settled than itself: never, when
/// that escrow waits for this very node's verdict (here one member is down
/// and the others are one vote short). Wallets never agreed again
/// (simulator, `everything` seed 146, once votes vouched for credits
/// changed its timing). A node now asks any peer at its version for its gap.
#[test]
fn a_provider_that_missed_a_quorum_fetches_its_gap_although_peers_report_it_unsettled() {
    let mut net = Net::new(4);
    net.offer_espresso();
    // Free: no escrow of its own (a verdict closed without this node is
    // the next test).
    net.offer(2, "tea", 0, [3; 32]);
    // Provider 0 is away while wallet 1 buys its espresso (v1), then tea
    // from node 2 (v2): nodes 1, 2 and 3 commit both.
    net.isolated[0] = true;
    net.buy(1).unwrap();
    net.nodes[1].core.buy(net.now, "tea", None, 0, vec![]).unwrap();
    net.flush(1);
    net.run();
    assert_eq!(net.wallet(1, 1).version, 2);
    assert_eq!(net.wallet(0, 1).version, 0);
    // Node 3 goes down for good; node 0 is back and hears of v2 first.
    net.isolated = vec![false, false, false, true];
    let v2 = net.nodes[2].core.certificate(1, 2).unwrap().clone();
    replay(&mut net, 0, &Message::Certificate(Box::new(v2)));
    let w = net.wallet(0, 1);
    assert_eq!((w.version, w.settled), (2, 0), "node 0 has a gap at v1");
    // The espresso's price waits in escrow on nodes 1 and 2 for a verdict
    // quorum (3 of 4): node 0's refund vote, once it knows of v1.
    for _ in 0..40 {
        net.tick(5_000);
    }
    let w = net.wallet(0, 1);
    assert_eq!((w.version, w.settled), (2, 2), "node 0 never settled v1");
    for at in [0, 1, 2] {
        let open: Vec<_> = net.nodes[at]
            .core
            .escrows()
            .map(|e| (e.version, e.provider_idx, e.my_vote.is_some(), e.deadline_ms, net.now))
            .collect();
        assert!(open.is_empty(), "node {at} still holds a price in escrow: {open:?}");
    }
    for at in [1, 2] {
        assert_eq!(wallets(&net, 0), wallets(&net, at), "node 0 differs from node {at}");
    }
}

/// A member that learns of a commit only after its verdict closed
/// elsewhere asks (a query) once the outcome window is over. Each member
/// used to answer with its own vote only: with one of the quorum's voters
/// down, and this member's own vote the other way (it never saw the
/// outcome in time), the price stayed in escrow here for ever and this
/// member's tally of the provider differed from everyone else's. The
/// members that closed it now answer with the votes that closed it, and a
/// voter of that quorum that sent this member the other verdict counts on
/// both sides instead of being dropped as an equivocator.
#[test]
fn a_member_that_settles_after_the_verdict_closed_elsewhere_closes_it_from_the_relayed_quorum() {
    let mut net = Net::new(4);
    net.offer_espresso();
    net.offer(2, "tea", 2 * UNITS_PER_COIN, [3; 32]);
    // Node 0 is away while wallet 1 buys tea from node 2: nodes 1, 2 and 3
    // commit, node 2 serves, and the three of them pay node 2.
    net.isolated[0] = true;
    net.nodes[1]
        .core
        .buy(net.now, "tea", None, 2 * UNITS_PER_COIN, vec![])
        .unwrap();
    net.flush(1);
    net.run();
    for at in [1, 2, 3] {
        assert_eq!(net.nodes[at].core.escrows().count(), 0, "node {at} did not settle");
    }
    // Node 3 goes down for good; node 0 is back and hears of the commit.
    net.isolated = vec![false, false, false, true];
    let cert = net.nodes[2].core.certificate(1, 1).unwrap().clone();
    let key = wallance_core::msg::verdict_id(&cert.request.id());
    replay(&mut net, 0, &Message::Certificate(Box::new(cert)));
    assert_eq!(net.nodes[0].core.escrows().count(), 1);
    // Node 3 was Byzantine too: it signed "refund" for node 0 alone. Its
    // "pay" in the relayed quorum must still count (a voter that signed
    // both counts on both sides; no two quorums can form that way).
    let difficulty = harness::params().vote_difficulty;
    let refund = Vote::build(&net.nodes[3].key, key, 0, difficulty).unwrap();
    replay(&mut net, 0, &Message::Vote(refund));
    for _ in 0..40 {
        net.tick(5_000);
    }
    let open: Vec<_> = net.nodes[0].core.escrows().map(|e| e.version).collect();
    assert!(open.is_empty(), "node 0 still holds the price of {open:?}");
    for at in [1, 2] {
        assert_eq!(wallets(&net, 0), wallets(&net, at), "node 0 differs from node {at}");
    }
}

/// The same catch-up cannot be steered by Byzantine members: heads from a
/// third of the weight or less are never adopted, however clean they look.
#[test]
fn heads_from_a_third_of_the_weight_or_less_are_never_adopted() {
    let mut net = node_3_misses_purchases_of(&[1], 4);
    // Node 3 is stuck: it adopts wallet 1 from the newest certificate, the
    // older ones are pruned everywhere.
    let newest = net.nodes[0].core.certificate(1, 4).unwrap().clone();
    replay(&mut net, 3, &Message::Certificate(Box::new(newest)));
    assert_eq!(net.wallet(3, 1).version, 4);
    assert!(net.wallet(3, 1).settled < 4);
    // One member (a quarter of the weight) claims a clean state in which
    // node 3 itself earned a fortune.
    let liar = net.nodes[2].key.clone();
    let mut heads: Vec<wallance_core::msg::Head> = (0..4u32)
        .map(|i| {
            let w = net.wallet(0, i as usize);
            wallance_core::msg::Head {
                idx: i,
                version: w.version,
                settled: w.version,
                shares: w.shares_seen,
                received: w.received,
            }
        })
        .collect();
    heads[3].received += 1_000 * UNITS_PER_COIN;
    let lie = wallance_core::msg::Heads::new(&liar, net.id(3), net.now, heads);
    for _ in 0..5 {
        replay(&mut net, 3, &Message::Heads(lie.clone()));
    }
    assert_eq!(net.nodes[3].core.stats().tallies_adopted, 0);
    assert_eq!(net.wallet(3, 3).received, 0);
}

/// Four nodes whose peers keep 2 certificates per wallet; node 3 is cut off
/// (and stays so) while each of `buyers` makes `rounds` purchases.
fn node_3_misses_purchases_of(buyers: &[usize], rounds: usize) -> Net {
    let params = Params {
        certs_kept_per_wallet: 2,
        ..harness::params()
    };
    let mut net = Net::with(4, params, |_| None);
    net.offer_espresso();
    net.isolated[3] = true;
    for _ in 0..rounds {
        for &b in buyers {
            net.share(b, 20); // 4 DCoin: the price and the voter reward
            net.buy(b).unwrap();
        }
    }
    net
}

/// Batch verification (`Core::preverify`) changes what a signature costs,
/// never whether it counts: a forged copy of a vote batched with the valid
/// ones fails the batch at the node it reaches, and is refused alone there;
/// every node commits the same wallets as a network that never batches.
#[test]
fn a_forged_vote_in_a_batch_is_refused_alone_and_batching_changes_no_outcome() {
    let buy_twice = |batched: bool| {
        let mut net = Net::new(8);
        net.offer_espresso();
        let mut forged_at_5 = 0;
        let voter_3 = net.id(3);
        for buyer in [1, 2] {
            let now = net.now;
            net.nodes[buyer]
                .core
                .buy(now, "espresso", None, 2 * UNITS_PER_COIN, vec![])
                .unwrap();
            net.flush(buyer);
            if !batched {
                net.run();
                continue;
            }
            net.run_batched(|to, msgs| {
                // Node 5 gets, first in its batch, node 3's vote with its
                // signature flipped.
                if to != 5 || forged_at_5 > 0 {
                    return;
                }
                let Some(Message::Vote(v)) = msgs
                    .iter()
                    .find(|m| matches!(m, Message::Vote(v) if v.voter == voter_3))
                    .cloned()
                else {
                    return;
                };
                let mut forged = v;
                forged.sig.0[10] ^= 0x40;
                msgs.insert(0, Message::Vote(forged));
                forged_at_5 += 1;
            });
        }
        net.tick(10_000);
        net.run();
        assert_eq!(forged_at_5, usize::from(batched), "the forgery was sent");
        net
    };
    let batched = buy_twice(true);
    let plain = buy_twice(false);
    for at in 0..8 {
        assert_eq!(
            wallets(&batched, at),
            wallets(&plain, at),
            "node {at}: batching changed an outcome"
        );
        assert_eq!(batched.wallet(at, 1).version, 1, "node {at} did not commit");
        assert_eq!(plain.nodes[at].core.stats().signatures_batched, 0);
    }
    let stats = |at: usize| batched.nodes[at].core.stats().clone();
    assert!(
        stats(0).signatures_batched >= 6,
        "the provider batched a round of votes: {:?}",
        stats(0).signatures_batched
    );
    assert_eq!(stats(0).batches_failed, 0);
    assert_eq!(stats(5).batches_failed, 1, "the forgery failed node 5's batch");
    assert_eq!(stats(5).rejected.get("vote: vote signature is invalid"), Some(&1));
    assert_eq!(
        stats(5).votes_received,
        stats(4).votes_received,
        "node 5 counted the real votes alone"
    );
}

/// A certificate is checked one signature after another and refused at
/// the first bad one. Put in a batch, a network attacker's certificate
/// (a recorded request, 40 votes with made-up signatures and cheap work)
/// would cost every node 41 signatures instead of 2: batching must never
/// take a message whose lone check stops early.
#[test]
fn a_forged_certificate_costs_a_node_its_first_bad_signature_not_a_batch() {
    let mut net = Net::new(48);
    net.offer_espresso();
    let request = net.buy(1).unwrap();
    let target = 47;
    // A recorded request; its certificate with made-up votes arrives at a
    // node that has not committed it (a fresh one).
    let mut fresh = Net::new(48);
    let params = Params {
        initial_units: 10 * UNITS_PER_COIN,
        ..Params::default()
    };
    let mut votes = Vec::new();
    for voter_idx in 0..40u32 {
        let mut v = Vote {
            voter: fresh.id(voter_idx as usize),
            request_id: request.id(),
            remaining: 0,
            nonce: 0,
            sig: wallance_core::Signature([voter_idx as u8 + 1; 64]),
        };
        while v.check_pow(params.vote_difficulty).is_err() {
            v.nonce += 1;
        }
        votes.push(wallance_core::msg::CertVote {
            voter_idx,
            nonce: v.nonce,
            sig: v.sig,
        });
    }
    let cert = Certificate {
        request: request.clone(),
        remaining: 0,
        votes,
        provider_sig: wallance_core::Signature::default(),
    };
    let core = &mut fresh.nodes[target].core;
    let before = core.stats().signatures_checked;
    let batch = vec![Message::Certificate(Box::new(cert.clone())), Message::Request(request)];
    core.preverify(&batch);
    let _ = core.handle_message(fresh.now, Message::Certificate(Box::new(cert)));
    let checked = core.stats().signatures_checked - before;
    assert!(checked <= 3, "a forged certificate cost {checked} signature checks");
    assert_eq!(
        core.stats().rejected.get("certificate: vote signature is invalid"),
        Some(&1)
    );
}

/// A flood of forged votes must not make every batch a wasted one: after a
/// failed batch the node verifies alone for a while (2, 4 ... 64 calls),
/// and batches again once one holds.
#[test]
fn after_a_failed_batch_the_node_verifies_alone_for_a_while() {
    let keys = harness::keys(8);
    let difficulty = Params::default().vote_difficulty;
    let mut round = 0u8;
    let mut votes = |forged: bool| {
        round += 1;
        let mut batch: Vec<Message> = (1..6)
            .map(|i| Message::Vote(Vote::build(&keys[i], [round; 32], 5, difficulty).unwrap()))
            .collect();
        if forged && let Message::Vote(v) = &mut batch[2] {
            v.sig.0[3] ^= 1;
        }
        batch
    };
    let mut core = Net::new(8).nodes.swap_remove(0).core;
    let stats = |core: &wallance_core::Core| (core.stats().signatures_batched, core.stats().batches_failed);
    core.preverify(&votes(false));
    assert_eq!(stats(&core), (5, 0));
    core.preverify(&votes(true));
    assert_eq!(stats(&core), (5, 1));
    // Two calls verify alone, then batches resume.
    core.preverify(&votes(false));
    core.preverify(&votes(false));
    assert_eq!(stats(&core), (5, 1), "skipped after the failure");
    core.preverify(&votes(false));
    assert_eq!(stats(&core), (10, 1));
    // Failures in a row double the pause: 2, then 4.
    core.preverify(&votes(true));
    for _ in 0..2 {
        core.preverify(&votes(true));
    }
    core.preverify(&votes(true));
    assert_eq!(stats(&core), (10, 3));
    for _ in 0..4 {
        core.preverify(&votes(false));
    }
    assert_eq!(
        stats(&core),
        (10, 3),
        "four calls alone after the second failure in a row"
    );
    core.preverify(&votes(false));
    assert_eq!(stats(&core), (15, 3));
}
