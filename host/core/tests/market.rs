//! Pay for service rendered (docs/protocol.md): a committed purchase's price
//! waits in escrow until a quorum votes its verdict, on the provider's
//! signed outcome or, with none by the deadline, for the refund. One test
//! per way the market issue found a buyer paying for nothing.

mod harness;

use harness::Net;
use wallance_core::msg::{Outcome, ServiceOffer};
use wallance_core::*;

fn deliver(net: &mut Net, to: usize, m: Message) {
    let now = net.now;
    let _ = net.nodes[to].core.handle_message(now, m);
    net.flush(to);
    net.run();
}

fn wallets(net: &Net, i: usize) -> Vec<Wallet> {
    net.nodes[i].core.wallets().cloned().collect()
}

fn assert_agree(net: &Net) {
    let reference = wallets(net, 0);
    for i in 1..net.nodes.len() {
        assert_eq!(wallets(net, i), reference, "node {i} disagrees with node 0");
        assert_eq!(
            net.nodes[i].core.escrows().count(),
            net.nodes[0].core.escrows().count(),
            "node {i} holds other escrows than node 0"
        );
    }
}

const PRICE: u64 = 2 * UNITS_PER_COIN;

/// The voter reward `member` got for purchase `id` (the drawn member).
fn reward_of(net: &Net, id: &Hash, member: usize) -> u64 {
    let drawn = net.nodes[0].core.membership().reward_recipient(id);
    if drawn as usize == member {
        harness::params().reward_units
    } else {
        0
    }
}

#[test]
fn a_served_purchase_pays_the_provider_once_its_verdict_commits() {
    let mut net = Net::new(4);
    net.offer_espresso();
    let r = net.buy(1).unwrap();
    assert_agree(&net);
    assert_eq!(net.nodes[2].core.escrows().count(), 0, "the verdict settled at once");
    assert_eq!(
        net.wallet(2, 0).received,
        PRICE + reward_of(&net, &r.id(), 0),
        "the provider got the price"
    );
    assert_eq!(net.nodes[2].core.stats().verdicts_paid, 1);
}

#[test]
fn a_refused_or_failed_run_refunds_the_requester_on_every_node() {
    let mut net = Net::new(4);
    net.contract_ok = Some(false);
    net.offer_espresso();
    let before = net.wallet(1, 1).spendable(&harness::params());
    let r = net.buy(1).unwrap();
    assert_agree(&net);
    let w = net.wallet(3, 1);
    assert_eq!(
        net.wallet(3, 0).received,
        reward_of(&net, &r.id(), 0),
        "the provider is not paid for a refusal"
    );
    assert_eq!(
        w.spendable(&harness::params()),
        before - harness::params().reward_units + reward_of(&net, &r.id(), 1),
        "the requester pays only the voter reward"
    );
    for i in 0..4 {
        assert_eq!(net.nodes[i].core.stats().verdicts_refunded, 1, "node {i}");
    }
}

#[test]
fn a_provider_that_never_answers_refunds_at_the_deadline_and_freezes_nothing() {
    let mut net = Net::new(4);
    net.contract_ok = None;
    net.offer_espresso();
    let r = net.buy(1).unwrap();
    assert_eq!(net.nodes[2].core.escrows().count(), 1, "the price waits for a verdict");
    net.tick(harness::params().outcome_timeout_ms / 2);
    assert_eq!(net.nodes[2].core.escrows().count(), 1, "no refund before the deadline");
    net.tick(harness::params().outcome_timeout_ms / 2 + 1_000);
    net.tick(harness::params().retry_ms);
    assert_agree(&net);
    assert_eq!(net.nodes[2].core.escrows().count(), 0);
    assert_eq!(
        net.wallet(2, 1).received,
        PRICE + reward_of(&net, &r.id(), 1),
        "the price went back to the requester"
    );
    // The wallet moved on: the requester buys again from its refund.
    net.contract_ok = Some(true);
    net.buy(1).unwrap();
    assert_eq!(net.wallet(3, 1).version, 2);
    assert_agree(&net);
}

/// The market issue, item 2: voters that saw the new price dropped the
/// request, and the requester's wallet froze. Voters no longer judge
/// prices; the provider refunds a purchase below its listed price.
#[test]
fn a_price_raised_while_a_request_is_in_flight_never_freezes_the_requester() {
    let mut net = Net::new(4);
    net.offer_espresso();
    // The provider raises the price; nodes 2 and 3 see it, node 1 not yet.
    net.isolated[1] = true;
    let dearer = vec![ServiceOffer {
        name: "espresso".into(),
        price: 3 * UNITS_PER_COIN,
        contract_hash: [2; 32],
    }];
    let now = net.now;
    net.nodes[0].core.set_services(now, dearer);
    net.flush(0);
    net.run();
    net.isolated[1] = false;
    let r = net.nodes[1].core.buy(net.now, "espresso", None, PRICE, vec![]).unwrap();
    net.flush(1);
    net.run();
    assert_eq!(net.wallet(2, 1).version, r.version + 1, "the request committed");
    assert_agree(&net);
    assert_eq!(
        net.wallet(0, 0).received,
        reward_of(&net, &r.id(), 0),
        "nothing paid below the listed price"
    );
    assert_eq!(
        net.wallet(0, 1).received,
        PRICE + reward_of(&net, &r.id(), 1),
        "refunded"
    );
    let refusal = net.nodes[1].events.iter().find_map(|e| match e {
        Event::Outcome(o) => Some(o.clone()),
        _ => None,
    });
    let refusal = refusal.expect("the requester learns why");
    assert!(!refusal.ok && refusal.body.contains("listed price"), "{refusal:?}");
}

/// A Byzantine provider signs "served" for some members and "refused" for
/// others: no verdict reaches a quorum, and every node holds the same
/// escrow open: no node pays, no node refunds, every wallet agrees.
#[test]
fn an_equivocating_provider_cannot_make_nodes_settle_differently() {
    let mut net = Net::new(7);
    net.contract_ok = None;
    net.offer_espresso();
    let r = net.buy(1).unwrap();
    let version = r.version + 1;
    let ok = Outcome::new(&net.nodes[0].key, net.id(1), r.id(), version, true, "served");
    let no = Outcome::new(&net.nodes[0].key, net.id(1), r.id(), version, false, "refused");
    for i in 1..7 {
        let o = if i <= 3 { ok.clone() } else { no.clone() };
        deliver(&mut net, i, Message::Outcome(o));
    }
    // Each saw one outcome first; the other one changes no vote.
    for i in 1..7 {
        let o = if i <= 3 { no.clone() } else { ok.clone() };
        deliver(&mut net, i, Message::Outcome(o));
    }
    net.tick(harness::params().outcome_timeout_ms + 1_000);
    for _ in 0..3 {
        net.tick(harness::params().retry_ms);
    }
    assert_agree(&net);
    assert_eq!(net.nodes[3].core.escrows().count(), 1, "split votes settle nothing");
    let total: u64 = wallets(&net, 3).iter().map(|w| w.received).sum();
    assert_eq!(total, harness::params().reward_units, "only the reward moved");
}

/// Outcomes signed by anyone but the purchase's provider, or replayed,
/// move nothing.
#[test]
fn forged_and_replayed_outcomes_move_nothing() {
    let mut net = Net::new(4);
    net.contract_ok = None;
    net.offer_espresso();
    let r = net.buy(1).unwrap();
    let version = r.version + 1;
    // Member 3 claims to be the provider.
    let mut forged = Outcome::new(&net.nodes[3].key, net.id(1), r.id(), version, false, "refused");
    forged.provider = net.id(0);
    deliver(&mut net, 2, Message::Outcome(forged));
    let by_member = Outcome::new(&net.nodes[3].key, net.id(1), r.id(), version, false, "refused");
    deliver(&mut net, 2, Message::Outcome(by_member));
    assert_eq!(net.nodes[2].core.escrows().count(), 1, "no vote on a forgery");
    assert!(net.nodes[2].core.stats().rejected.keys().any(|k| k.contains("outcome")));
    // The genuine one settles it; replaying it a thousand times changes nothing.
    let genuine = Outcome::new(&net.nodes[0].key, net.id(1), r.id(), version, true, "served");
    for to in 1..4 {
        deliver(&mut net, to, Message::Outcome(genuine.clone()));
    }
    let after = wallets(&net, 2);
    for _ in 0..1_000 {
        deliver(&mut net, 2, Message::Outcome(genuine.clone()));
    }
    assert_eq!(wallets(&net, 2), after);
    assert_eq!(net.wallet(2, 0).received, PRICE + reward_of(&net, &r.id(), 0));
    assert_agree(&net);
}

/// A restart between casting a verdict vote and the quorum keeps the vote:
/// the node never votes the other verdict after the deadline.
#[test]
fn a_restarted_member_keeps_its_verdict_vote() {
    let mut net = Net::new(4);
    net.contract_ok = None;
    net.offer_espresso();
    let r = net.buy(1).unwrap();
    let ok = Outcome::new(&net.nodes[0].key, net.id(1), r.id(), r.version + 1, true, "served");
    net.isolated = vec![true; 4];
    deliver(&mut net, 2, Message::Outcome(ok));
    let disk = net.nodes[2].disk.clone();
    let vote = disk
        .escrows
        .values()
        .next()
        .and_then(|e| e.my_vote)
        .expect("vote is durable");
    assert_eq!(vote.remaining, 1);
    let config = net.nodes[2].config.clone();
    let key = net.nodes[2].key.clone();
    net.nodes[2].core = Core::new(config, key, disk, net.now);
    net.flush(2);
    net.tick(harness::params().outcome_timeout_ms + 1_000);
    let sent_refund = net.sent.iter().any(|m| {
        matches!(m, Message::Vote(v) if v.voter == net.id(2) && v.request_id == vote.request_id && v.remaining == 0)
    });
    assert!(!sent_refund, "the restarted node voted the other verdict");
}

/// The market issue, item 2: a contract replaced while a purchase waited
/// served it with the new version. The request pins the contract hash;
/// the provider refunds a purchase whose contract it no longer has.
#[test]
fn a_contract_replaced_before_its_run_refunds_instead_of_serving_another_version() {
    let mut net = Net::new(4);
    net.offer_espresso();
    net.isolated[0] = true;
    let r = net.buy(1).unwrap();
    assert_eq!(r.contract_hash, [1; 32], "the request pins what was announced");
    assert_eq!(net.wallet(2, 1).version, 1, "committed without the provider");
    // Same name, same price, another contract.
    let replaced = vec![ServiceOffer {
        name: "espresso".into(),
        price: PRICE,
        contract_hash: [9; 32],
    }];
    let now = net.now;
    net.nodes[0].core.set_services(now, replaced);
    net.nodes[0].events.clear();
    net.isolated[0] = false;
    for _ in 0..4 {
        net.tick(harness::params().sync_interval_ms);
    }
    assert!(
        net.nodes[0].runs.is_empty(),
        "the replaced contract must not serve the purchase"
    );
    assert_agree(&net);
    assert_eq!(
        net.wallet(3, 1).received,
        PRICE + reward_of(&net, &r.id(), 1),
        "refunded"
    );
}

/// The market issue, item 1: a member announcing another's service name
/// (cheaper) took the purchase. With two offers, the buyer must choose.
#[test]
fn a_squatter_announcing_the_same_name_never_gets_a_purchase_by_default() {
    let mut net = Net::new(4);
    net.offer_espresso();
    let squat = vec![ServiceOffer {
        name: "espresso".into(),
        price: 1,
        contract_hash: [7; 32],
    }];
    let now = net.now;
    net.nodes[3].core.set_services(now, squat);
    net.flush(3);
    net.run();
    let err = net.nodes[1]
        .core
        .buy(net.now, "espresso", None, PRICE, vec![])
        .unwrap_err();
    assert!(
        matches!(&err, BuyError::AmbiguousService { providers, .. } if providers.len() == 2),
        "{err:?}"
    );
    let provider = net.id(0);
    let r = net.nodes[1]
        .core
        .buy(net.now, "espresso", Some(provider), PRICE, vec![])
        .unwrap();
    assert_eq!(r.provider, provider);
}

/// A requester that missed its outcome (it was cut off while the others
/// settled) asks for it and gets it from the provider, once back.
#[test]
fn a_requester_that_missed_its_outcome_gets_it_resent() {
    let mut net = Net::new(5);
    net.offer_espresso();
    let r = net.nodes[1].core.buy(net.now, "espresso", None, PRICE, vec![]).unwrap();
    // Its request and vote go out, then it hears nothing more.
    net.flush(1);
    net.isolated[1] = true;
    net.run();
    assert_eq!(net.nodes[2].core.escrows().count(), 0, "the others settled it");
    assert!(!net.nodes[1].events.iter().any(|e| matches!(e, Event::Outcome(_))));
    net.isolated[1] = false;
    for _ in 0..10 {
        net.tick(harness::params().retry_ms);
    }
    let got = net.nodes[1].events.iter().find_map(|e| match e {
        Event::Outcome(o) if o.request_id == r.id() => Some(o.clone()),
        _ => None,
    });
    assert!(got.is_some_and(|o| o.ok), "the requester never got its outcome");
    assert_agree(&net);
}

/// The outcome message itself is lost on the way to the requester, which
/// settles the verdict from the others' votes: it asks the provider again
/// (a query vote) until the outcome arrives.
#[test]
fn a_requester_whose_outcome_was_lost_asks_until_it_has_it() {
    let mut net = Net::new(4);
    net.offer_espresso();
    let r = net.nodes[1].core.buy(net.now, "espresso", None, PRICE, vec![]).unwrap();
    net.flush(1);
    // Deliver everything, except outcomes to the requester.
    let deliver_all = |net: &mut Net, drop_outcomes: bool| {
        while let Some((from, m)) = net.queue.pop_front() {
            for to in 0..net.nodes.len() {
                if to == from || (drop_outcomes && to == 1 && matches!(m, Message::Outcome(_))) {
                    continue;
                }
                let now = net.now;
                let _ = net.nodes[to].core.handle_message(now, m.clone());
                net.flush(to);
            }
        }
    };
    deliver_all(&mut net, true);
    assert_eq!(
        net.nodes[1].core.escrows().count(),
        0,
        "the requester settled the verdict"
    );
    assert!(!net.nodes[1].events.iter().any(|e| matches!(e, Event::Outcome(_))));
    for _ in 0..3 {
        net.now += harness::params().retry_ms;
        for i in 0..4 {
            let now = net.now;
            net.nodes[i].core.handle_timeout(now);
            net.flush(i);
        }
        deliver_all(&mut net, false);
    }
    assert!(
        net.nodes[1]
            .events
            .iter()
            .any(|e| matches!(e, Event::Outcome(o) if o.request_id == r.id() && o.ok)),
        "the requester never got its outcome"
    );
}

/// A member asking about every settled purchase, over and over, gets a
/// bounded number of answers from each node per `retry_ms`: no node
/// broadcasts in proportion to what others ask.
#[test]
fn verdict_queries_about_every_settled_purchase_get_bounded_answers() {
    let mut net = Net::new(4);
    net.offer_espresso();
    let mut ids = Vec::new();
    for _ in 0..(wallance_core::core::MAX_VERDICT_ANSWERS_PER_MEMBER + 20) {
        net.share(1, 20);
        ids.push(net.buy(1).unwrap().id());
    }
    assert_eq!(net.nodes[2].core.escrows().count(), 0);
    // Member 3 asks node 2 about each of them, three times (later than
    // the late votes of the purchases themselves, which were answered).
    net.now += harness::params().retry_ms;
    let key = net.nodes[3].key.clone();
    let mut answers = 0;
    for _ in 0..3 {
        for id in &ids {
            let q = wallance_core::msg::Vote::build(
                &key,
                wallance_core::msg::verdict_id(id),
                wallance_core::core::VERDICT_QUERY,
                1,
            )
            .unwrap();
            let now = net.now;
            let _ = net.nodes[2].core.handle_message(now, Message::Vote(q));
            while let Some(o) = net.nodes[2].core.poll_output() {
                if matches!(o, Output::Send(Message::Vote(_) | Message::Outcome(_))) {
                    answers += 1;
                }
            }
        }
    }
    assert_eq!(
        answers,
        wallance_core::core::MAX_VERDICT_ANSWERS_PER_MEMBER,
        "answers within one retry interval"
    );
    // An honest node catching up is answered again in the next interval.
    net.now += harness::params().retry_ms;
    let q = wallance_core::msg::Vote::build(
        &key,
        wallance_core::msg::verdict_id(&ids[0]),
        wallance_core::core::VERDICT_QUERY,
        1,
    )
    .unwrap();
    let now = net.now;
    let _ = net.nodes[2].core.handle_message(now, Message::Vote(q));
    let mut again = 0;
    while let Some(o) = net.nodes[2].core.poll_output() {
        if matches!(o, Output::Send(Message::Vote(_))) {
            again += 1;
        }
    }
    assert_eq!(again, 1);
}

/// Every DDS topic is best effort: a node whose reader had not matched the
/// provider's writer misses its announce and cannot buy. The provider's
/// host calls `reannounce` when it sees a new reader of announces; the same
/// announce (same sequence number) then reaches the joiner, which buys.
#[test]
fn a_node_that_missed_the_announce_buys_after_the_provider_reannounces() {
    let mut net = Net::new(4);
    net.isolated[1] = true;
    net.offer_espresso();
    net.isolated[1] = false;
    let now = net.now;
    assert!(
        matches!(
            net.nodes[1].core.buy(now, "espresso", None, PRICE, vec![]),
            Err(BuyError::UnknownService(_))
        ),
        "node 1 never saw the announce"
    );
    // Without services, nothing is sent.
    let sent = net.sent.len();
    net.nodes[2].core.reannounce(now);
    net.flush(2);
    assert_eq!(net.sent.len(), sent, "node 2 offers nothing");
    net.nodes[0].core.reannounce(now);
    net.flush(0);
    let resent: Vec<&Message> = net.sent[sent..].iter().collect();
    assert!(
        matches!(resent.as_slice(), [Message::Announce(a)] if a.seq == 1),
        "one announce, the same as before: {resent:?}"
    );
    net.run();
    let r = net.nodes[1]
        .core
        .buy(net.now, "espresso", None, PRICE, vec![])
        .expect("buys now");
    net.flush(1);
    net.run();
    assert_eq!(net.wallet(3, 1).version, r.version + 1, "the purchase committed");
    assert_agree(&net);
}
