//! `wallance simulate`: the simulator as a command.

use anyhow::{Context, bail};
use wallance_core::UNITS_PER_COIN;
use wallance_sim::{Faults, Mode, NetModel, Report, SimConfig, describe, simulate};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Members of the network.
    #[arg(long, default_value_t = 8)]
    nodes: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Network model: lan, wifi (the paper's testbed), wan, faulty.
    #[arg(long, default_value = "lan")]
    net: String,
    /// Byzantine members (below a third).
    #[arg(long, default_value_t = 0)]
    byzantine: usize,
    /// Inject crashes, partitions and clock skew for the first half.
    #[arg(long)]
    faults: bool,
    /// Simulated seconds of work (shares and purchases).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Measure consensus latency instead: this many purchases one at a time,
    /// votes delivered to the requester, the provider and a few observers.
    #[arg(long)]
    latency: Option<usize>,
    /// Print the report as JSON only.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = config(&args)?;
    let started = std::time::Instant::now();
    let report = simulate(cfg);
    let wall = started.elapsed();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, wall);
    }
    if !report.ok() {
        bail!("invariants violated: {}", describe(&report));
    }
    Ok(())
}

pub fn config(args: &Args) -> anyhow::Result<SimConfig> {
    if 3 * args.byzantine >= args.nodes {
        bail!("--byzantine must stay below a third of --nodes");
    }
    let mut cfg = SimConfig::new(args.nodes, args.seed);
    cfg.net = NetModel::by_name(&args.net).with_context(|| format!("unknown --net {:?}", args.net))?;
    cfg.byzantine = args.byzantine;
    cfg.duration_ms = args.seconds * 1000;
    if args.faults {
        cfg.faults = Faults::all(cfg.duration_ms / 2);
        cfg.quiet_ms = 30_000;
    }
    if let Some(purchases) = args.latency {
        cfg.mode = Mode::Latency {
            purchases,
            observers: 3,
        };
        cfg.duration_ms = 2_000 + 10_000 * purchases as u64 + 10_000;
        cfg.quiet_ms = 1_000;
    }
    Ok(cfg)
}

fn coins(units: u64) -> String {
    format!("{:.1}", units as f64 / UNITS_PER_COIN as f64)
}

fn print_report(r: &Report, wall: std::time::Duration) {
    println!(
        "Simulated {} members on a {} network for {:.1} s ({} steps, {:.1} s of real time, seed {}).",
        r.nodes,
        r.net,
        r.sim_time_ms as f64 / 1000.0,
        r.steps,
        wall.as_secs_f64(),
        r.seed
    );
    println!(
        "Purchases: {} started, {} committed, {} contracts run. Faults: {} crashes, {} partitions. {} hostile or stale messages refused.",
        r.purchases_started, r.commits, r.contract_runs, r.crashes, r.partitions, r.rejected
    );
    println!(
        "Consensus latency (request to the requester's commit): p50 {:.2} ms, p99 {:.2} ms (paper, 8 Pis on WiFi: 300 ms).",
        r.p50_ms, r.p99_ms
    );
    println!(
        "Traffic per node: {:.0} messages, {:.1} KB sent, {:.1} KB received.",
        r.messages_per_node,
        r.bytes_sent_per_node / 1000.0,
        r.bytes_received_per_node / 1000.0
    );
    if !r.wallets.is_empty() && r.wallets.len() <= 64 {
        println!();
        println!(
            "{:<10} {:>8} {:>10} {:>10} {:>8} {:>10}  state",
            "member", "version", "balance", "spendable", "shares", "received"
        );
        for w in &r.wallets {
            println!(
                "{:<10} {:>8} {:>10} {:>10} {:>8} {:>10}  {}{}",
                w.member,
                w.version,
                coins(w.balance_units),
                coins(w.spendable_units),
                w.shares,
                coins(w.received_units),
                w.state,
                if w.byzantine { "  (Byzantine)" } else { "" }
            );
        }
        println!("(DCoin; every honest node holds these same wallets, checked after the run.)");
    }
    if r.ok() {
        println!("All invariants held: agreement, no double spend, conservation, State chains, contracts run once.");
    }
}
