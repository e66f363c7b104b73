//! Simulated networks, one scenario per test. Each runs a fixed seed set;
//! `WALLANCE_SIM_SEED=<n>` replays one seed (a failure prints it).

mod common;

use wallance_sim::*;

/// The money rule these scenarios hold the core to: the requester pays
/// the price and the voter reward (`MoneyRule::LegacyMintedRewards` is the
/// rule of the core before it, where certificates minted rewards).
const MONEY: MoneyRule = MoneyRule::RequesterPaysReward;

/// Hold the core to the evidence rule: a forged vote never counts as its
/// voter's equivocation.
const CHECK_BLAME: bool = true;

fn check(mut cfg: SimConfig) -> Report {
    cfg.money = MONEY;
    cfg.check_blame = CHECK_BLAME;
    let r = simulate(cfg);
    assert!(r.ok(), "{}", describe(&r));
    assert!(r.commits > 0, "{}", describe(&r));
    assert_eq!(r.commits, r.contract_runs, "{}", describe(&r));
    r
}

/// Every honest node was held to liveness (a purchase of its own made once
/// the faults ended committed: `r.ok()` says none failed) and has purchases
/// of its own committed.
fn every_honest_node_bought(r: &Report) {
    let why = describe(r);
    let honest: Vec<usize> = (0..r.node_rows.len()).filter(|i| !r.node_rows[*i].byzantine).collect();
    assert_eq!(r.liveness_checks, honest.len() as u64, "{why}");
    for i in honest {
        let own = r.purchases.iter().filter(|p| p.requester == i as u32).count();
        assert!(own > 0, "node {i}: no purchase committed: {why}");
    }
}

/// Every node buys; every purchase commits on all 8 nodes, runs once and is
/// paid to the provider.
#[test]
fn eight_honest_nodes_on_a_lan_buy_services() {
    for seed in seeds_from_env(1..3) {
        let r = check(SimConfig::new(8, seed));
        let why = describe(&r);
        assert!(r.commits > 20, "{why}");
        // Votes are counted as they arrive: well under the paper's 2 s period.
        assert!(r.p99_ms < 50.0, "{why}");
        every_honest_node_bought(&r);
        for p in &r.purchases {
            assert_eq!(p.committed_by.len(), 8, "{}/v{}: {why}", p.requester, p.version);
            assert_eq!(
                (p.run_ok, p.verdict),
                (Some(true), Some(true)),
                "{}/v{}: {why}",
                p.requester,
                p.version
            );
        }
    }
}

/// 15 % of messages lost and 5 % duplicated (so reordered, with latencies
/// spread over 0.1-30 ms): the network really lost and duplicated, the
/// cores saw the duplicates, and still every node's purchases commit and
/// every wallet agrees.
#[test]
fn loss_duplication_and_reordering() {
    for seed in seeds_from_env(10..16) {
        let mut c = SimConfig::new(8, seed);
        c.net = NetModel::faulty();
        c.net.loss = 0.15;
        let r = check(c);
        let why = describe(&r);
        assert!(r.messages_lost > 0 && r.messages_duplicated > 0, "{why}");
        assert!(r.node_rows.iter().all(|n| n.duplicates > 0), "{why}");
        every_honest_node_bought(&r);
    }
}

#[test]
fn crashes_and_restarts_from_the_durable_state() {
    for seed in seeds_from_env(20..26) {
        let mut c = SimConfig::new(7, seed);
        c.faults = Faults {
            crash_every_ms: Some(1_500),
            down_ms: (200, 8_000),
            crash_mid_output: 0.5,
            ..Faults::none()
        };
        c.faults.until_ms = 15_000;
        c.duration_ms = 30_000;
        let r = check(c);
        let why = describe(&r);
        // Several nodes crashed, all are back, agree (`check`) and buy.
        let crashed = r.node_rows.iter().filter(|n| n.crashes > 0).count();
        assert!(crashed > 1, "{why}");
        // Crashes lost what was committed without fsync (share tallies,
        // votes heard, the share number), as the node's store does.
        assert!(r.lazy_batches_lost > 0, "{why}");
        assert!(r.node_rows.iter().all(|n| n.up), "{why}");
        every_honest_node_bought(&r);
    }
}

#[test]
fn partitions_heal_and_purchases_resume() {
    for seed in seeds_from_env(30..36) {
        let mut c = SimConfig::new(9, seed);
        c.faults = Faults {
            partition_every_ms: Some(3_000),
            partition_ms: (1_000, 6_000),
            ..Faults::none()
        };
        c.faults.until_ms = 15_000;
        c.duration_ms = 35_000;
        let r = check(c);
        assert!(r.partitions > 0);
        // Purchases resume: every node's purchase made after the last
        // partition healed committed.
        every_honest_node_bought(&r);
    }
}

/// The refusals a skewed clock can cause (docs/protocol.md: a request from
/// beyond `max_clock_skew_ms` ahead; a digest, heads request or heads from
/// beyond `max(max_clock_skew_ms, sync_interval_ms)` either way).
const IN_THE_FUTURE: &str = "time is in the future";
const TIME_TOO_FAR: &str = "time too far from this node's clock (a replay?)";

fn refused_for_time(n: &NodeRow) -> u64 {
    n.refused(&format!("request: {IN_THE_FUTURE}"))
        + ["digest", "heads-request", "heads"]
            .iter()
            .map(|kind| n.refused(&format!("{kind}: {TIME_TOO_FAR}")))
            .sum::<u64>()
}

/// Clocks up to 10 s apart either way, within the 30 s the protocol allows:
/// nothing is refused for its time, every node's purchases commit on every
/// node, and the wallets agree.
#[test]
fn clock_skew_between_nodes() {
    for seed in seeds_from_env(40..44) {
        let mut c = SimConfig::new(8, seed);
        c.faults.max_clock_skew_ms = 10_000;
        assert!(2 * c.faults.max_clock_skew_ms <= c.params.max_clock_skew_ms);
        let r = check(c);
        let why = describe(&r);
        let skews: Vec<i64> = r.node_rows.iter().map(|n| n.skew_ms).collect();
        let spread = skews.iter().max().unwrap() - skews.iter().min().unwrap();
        assert!(spread > 5_000, "clocks hardly skewed: {skews:?}");
        for (i, n) in r.node_rows.iter().enumerate() {
            assert_eq!(
                refused_for_time(n),
                0,
                "node {i} (skew {} ms) refused for time: {why}",
                n.skew_ms
            );
            let own = r.purchases.iter().filter(|p| p.requester == i as u32).count();
            assert!(
                own > 0,
                "node {i} (skew {} ms): no purchase committed: {why}",
                n.skew_ms
            );
        }
        for p in &r.purchases {
            assert_eq!(
                p.committed_by.len(),
                8,
                "{}/v{} not committed everywhere: {why}",
                p.requester,
                p.version
            );
        }
    }
}

/// Clocks beyond the protocol's bound (here 5 s), among nodes within it;
/// clocks are given relative to the majority's:
/// - a node 8 s ahead: every other node refuses its requests as from the
///   future while their time is more than the bound ahead of the voter's
///   clock (docs/protocol.md, Request), so each commits only once it is not,
///   3 s later, from a re-sent copy;
/// - a node 8 s behind: its requests are in the others' past, and there is
///   deliberately no "too old" (docs/protocol.md, Expiry), so they commit at
///   once; it refuses everybody else's as from the future;
/// - a node 40 s behind: its purchases commit but reach the provider after
///   half their outcome window, so it never runs them and refunds each;
/// - nodes 2 s ahead and behind: refused only by nodes more than the bound
///   behind them, like everybody.
///
/// Who refuses whose requests is checked pair by pair. Every purchase
/// commits on every node, skewed or not, and every wallet agrees.
#[test]
fn a_clock_beyond_the_bound_is_refused_and_the_others_agree() {
    const NODES: usize = 10;
    const BASE: i64 = 40_000;
    const BOUND: i64 = 5_000;
    const AHEAD: usize = 1;
    const BEHIND: usize = 2;
    const FAR_BEHIND: usize = 5;
    let within = [(3, 2_000), (4, -2_000)];
    for seed in seeds_from_env(45..47) {
        let mut c = SimConfig::new(NODES, seed);
        c.params.max_clock_skew_ms = BOUND as u64;
        assert!(c.params.sync_interval_ms <= c.params.max_clock_skew_ms);
        assert!(40_000 > c.params.outcome_timeout_ms / 2);
        c.faults.skews_ms = (0..NODES).map(|i| (i, BASE)).collect();
        for (i, ms) in [(AHEAD, 8_000), (BEHIND, -8_000), (FAR_BEHIND, -40_000)]
            .into_iter()
            .chain(within)
        {
            c.faults.skews_ms[i].1 = BASE + ms;
        }
        let r = check(c);
        let why = describe(&r);
        let rows = &r.node_rows;
        let mine = |i: usize| r.purchases.iter().filter(move |p| p.requester == i as u32);
        for i in 0..NODES {
            assert!(mine(i).count() > 0, "node {i}: no purchase committed: {why}");
            for p in mine(i) {
                assert_eq!(p.committed_by.len(), NODES, "node {i}'s v{}: {why}", p.version);
                let latency = p.requester_latency_ms.expect("the requester committed");
                if i == AHEAD {
                    assert!(
                        latency >= (8_000 - BOUND) as u64,
                        "node {i}'s v{} in {latency} ms: {why}",
                        p.version
                    );
                } else {
                    assert!(latency < 1_000, "node {i}'s v{} in {latency} ms: {why}", p.version);
                }
            }
        }
        // Who refused whose requests as from the future: exactly the pairs
        // where the requester's clock is more than the bound ahead.
        for (i, voter) in rows.iter().enumerate() {
            for (j, requester) in rows.iter().enumerate().filter(|(j, _)| *j != i) {
                let refused = voter.refused_requests_of(j, IN_THE_FUTURE);
                let beyond = requester.skew_ms - voter.skew_ms > BOUND;
                assert_eq!(
                    refused > 0,
                    beyond,
                    "node {i} (clock {} ms) refused {refused} requests of node {j} (clock {} ms): {why}",
                    voter.skew_ms - BASE,
                    requester.skew_ms - BASE
                );
            }
        }
        // Served and paid, except the node far behind: refunded, never run.
        for i in 0..NODES {
            let far = i == FAR_BEHIND;
            assert!(
                mine(i).all(|p| p.run_ok == Some(!far) && p.verdict == Some(!far)),
                "node {i}: {why}"
            );
        }
    }
}

#[test]
fn byzantine_members_below_a_third() {
    for seed in seeds_from_env(50..56) {
        let mut c = SimConfig::new(10, seed);
        c.byzantine = 3;
        c.net = NetModel::faulty();
        let r = check(c);
        assert!(r.rejected > 100, "the attacks were seen and refused: {}", r.rejected);
        // Withheld and equivocated votes stall no honest member.
        every_honest_node_bought(&r);
    }
}

/// Light nodes keep only the wallets they track (here the even members and
/// their own) and agree with full nodes on those and on the settlement of
/// all others (`common::check_light_nodes`). On this quiet network every
/// node keeping a wallet commits each of its purchases.
#[test]
fn light_nodes_keep_half_the_wallets() {
    for seed in seeds_from_env(60..63) {
        let mut c = SimConfig::new(9, seed);
        c.light = 2;
        let r = check(c);
        common::check_light_nodes(&r, 2);
        let why = describe(&r);
        for p in &r.purchases {
            let keepers: std::collections::BTreeSet<usize> = (0..9)
                .filter(|i| r.node_rows[*i].wallets.contains_key(&p.requester))
                .collect();
            assert_eq!(p.committed_by, keepers, "{}/v{}: {why}", p.requester, p.version);
        }
    }
}

#[test]
fn everything_at_once() {
    for seed in seeds_from_env(0..12) {
        let mut c = SimConfig::new(10, seed);
        c.net = NetModel::faulty();
        c.faults = Faults::all(12_000);
        c.byzantine = 3;
        c.light = 1;
        c.duration_ms = 40_000;
        c.quiet_ms = 30_000;
        let r = check(c);
        // The end checks ran (not vacuous), light node included.
        assert!(r.money_checks > 0 && r.liveness_checks > 0, "{}", describe(&r));
        common::check_light_nodes(&r, 1);
    }
}

/// The checks are not decoration: a quorum of a third lets a double spend
/// through, and the simulator must say so.
#[test]
fn the_invariant_checks_catch_a_broken_quorum() {
    let mut caught = 0;
    for seed in seeds_from_env(70..80) {
        let mut c = SimConfig::new(9, seed);
        c.byzantine = 2;
        c.params.threshold_num = 1;
        c.params.threshold_den = 3;
        c.money = MONEY;
        let r = simulate(c);
        if r.violations.iter().any(|v| v.contains("double spend")) {
            caught += 1;
        }
    }
    assert!(caught > 0, "no seed exposed the double spend");
}

#[test]
fn latency_mode_measures_48_members() {
    let mut c = SimConfig::new(48, 7);
    c.mode = Mode::Latency {
        purchases: 5,
        observers: 3,
    };
    c.net = NetModel::wifi();
    c.duration_ms = 60_000;
    c.quiet_ms = 5_000;
    c.money = MONEY;
    let r = simulate(c);
    assert!(r.ok(), "{}", describe(&r));
    assert_eq!(r.commits, 5, "{}", describe(&r));
    assert!(r.p50_ms > 1.0 && r.p50_ms < 1_000.0, "{}", r.p50_ms);
}
