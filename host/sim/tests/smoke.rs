use wallance_sim::*;

#[test]
fn eight_honest_nodes_on_a_lan_buy_services() {
    let r = simulate(SimConfig::new(8, 1));
    eprintln!("{}", describe(&r));
    eprintln!("p50 {} p99 {} commits {}", r.p50_ms, r.p99_ms, r.commits);
    assert!(r.ok(), "{}", describe(&r));
    assert!(r.commits > 10, "{}", describe(&r));
}

#[test]
fn everything_at_once() {
    for seed in seeds_from_env(0..6) {
        let mut c = SimConfig::new(10, seed);
        c.net = NetModel::faulty();
        c.faults = Faults::all(12_000);
        c.byzantine = 3;
        c.light = 1;
        c.duration_ms = 40_000;
        c.quiet_ms = 30_000;
        let r = simulate(c);
        eprintln!(
            "{} crashes {} partitions {} rejected {} p50 {}",
            describe(&r),
            r.crashes,
            r.partitions,
            r.rejected,
            r.p50_ms
        );
    }
}
