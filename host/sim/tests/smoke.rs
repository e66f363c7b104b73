//! Simulated networks, one scenario per test. Each runs a fixed seed set;
//! `WALLANCE_SIM_SEED=<n>` replays one seed (a failure prints it).

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

#[test]
fn eight_honest_nodes_on_a_lan_buy_services() {
    for seed in seeds_from_env(1..3) {
        let r = check(SimConfig::new(8, seed));
        assert!(r.commits > 20, "{}", describe(&r));
        // Votes are counted as they arrive: well under the paper's 2 s period.
        assert!(r.p99_ms < 50.0, "{}", describe(&r));
    }
}

#[test]
fn loss_duplication_and_reordering() {
    for seed in seeds_from_env(10..16) {
        let mut c = SimConfig::new(8, seed);
        c.net = NetModel::faulty();
        c.net.loss = 0.15;
        check(c);
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
        assert!(r.crashes > 0);
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
    }
}

#[test]
fn clock_skew_between_nodes() {
    for seed in seeds_from_env(40..44) {
        let mut c = SimConfig::new(8, seed);
        c.faults.max_clock_skew_ms = 10_000;
        check(c);
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
    }
}

#[test]
fn light_nodes_keep_half_the_wallets() {
    for seed in seeds_from_env(60..63) {
        let mut c = SimConfig::new(9, seed);
        c.light = 2;
        check(c);
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
        check(c);
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
