//! Runs many seeds of a scenario and tallies the violations by class, with
//! the first seed that shows each (to replay with `WALLANCE_SIM_SEED`).
//!
//! ```text
//! cargo run -p wallance-sim --example sweep -- everything 50 new
//! cargo run -p wallance-sim --example sweep -- everything 50 legacy 1000
//! ```
//! Arguments: scenario (one of `SCENARIOS`: `everything`, `replay`,
//! `byzantine-provider`, `failing-contracts`, `light-third`,
//! `pruned-catch-up`, `pruned-provider`), seeds, money rule (`new` or
//! `legacy`), first seed.

use std::collections::BTreeMap;
use std::time::Instant;

use wallance_sim::*;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.first().map_or("everything", String::as_str);
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let money = match args.get(2).map(String::as_str) {
        Some("legacy") => MoneyRule::LegacyMintedRewards,
        _ => MoneyRule::RequesterPaysReward,
    };
    let first: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
    let start = Instant::now();
    // class -> (seeds showing it, total count, first seed, first message)
    let mut classes: BTreeMap<String, (u64, u64, u64, String)> = BTreeMap::new();
    let mut injected = 0;
    let mut commits = 0;
    let mut failing = 0;
    let mut checks = (0, 0);
    let mut batches = (0, 0);
    for seed in first..first + n {
        let Some(mut c) = SimConfig::scenario(name, seed) else {
            eprintln!("unknown scenario {name}: one of {}", SCENARIOS.join(", "));
            std::process::exit(2);
        };
        c.money = money;
        let r = simulate(c);
        injected += r.injected.values().sum::<u64>();
        commits += r.commits;
        checks.0 += r.money_checks;
        checks.1 += r.liveness_checks;
        batches.0 += r.signatures_batched;
        batches.1 += r.batches_failed;
        if !r.ok() {
            failing += 1;
        }
        for (class, count) in &r.violation_classes {
            let e = classes
                .entry(class.clone())
                .or_insert_with(|| (0, 0, seed, String::new()));
            e.0 += 1;
            e.1 += count;
            if e.3.is_empty() {
                e.3 = r
                    .violations
                    .iter()
                    .find(|v| v.starts_with(&format!("[{class}]")))
                    .cloned()
                    .unwrap_or_default();
            }
        }
    }
    println!(
        "{name}, {n} seeds from {first}, money {money:?}: {:.1}s, {commits} commits, {injected} injected, \
         {} money and {} liveness checks, {} signatures batched, {} batches failed, {failing} failing seeds",
        start.elapsed().as_secs_f64(),
        checks.0,
        checks.1,
        batches.0,
        batches.1
    );
    for (class, (seeds, count, seed, example)) in classes {
        println!("  {class}: {seeds} seeds, {count} times; first seed {seed}: {example}");
    }
}
