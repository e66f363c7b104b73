//! `wallance bench`: the protocol's costs, each beside its anchor.
//!
//! Figures are medians over repeated runs (the machine is shared and noisy);
//! the paper's numbers were measured on a Raspberry Pi 3 B+, so compare
//! ratios, not absolutes.

use std::time::Instant;

use serde::Serialize;
use wallance_core::crypto::SigCache;
use wallance_core::msg::{Message, Request, RequestDraft, ServiceOffer, Vote};
use wallance_core::{Core, CoreConfig, Keypair, Membership, Params, Snapshot, UNITS_PER_COIN, pow};
use wallance_sim::{Mode, NetModel, SimConfig, simulate};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also simulate 10 000 members (about a minute).
    #[arg(long)]
    large: bool,
    /// Skip the simulated latencies.
    #[arg(long)]
    no_sim: bool,
    /// Print only the JSON.
    #[arg(long)]
    json: bool,
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    pub anchor: String,
    pub target: String,
}

fn row(name: impl Into<String>, value: f64, unit: &'static str, anchor: &str, target: &str) -> Row {
    Row {
        name: name.into(),
        value,
        unit,
        anchor: anchor.into(),
        target: target.into(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median of `rounds` timings of `iters` calls, per call, in µs.
fn time_us(rounds: usize, iters: usize, mut f: impl FnMut(usize)) -> f64 {
    let mut samples = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let t = Instant::now();
        for i in 0..iters {
            f(r * iters + i);
        }
        samples.push(t.elapsed().as_secs_f64() * 1e6 / iters as f64);
    }
    median(samples)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let load_before = super::bench_gateway::load();
    let mut rows = Vec::new();
    pow_rows(&mut rows);
    crypto_rows(&mut rows);
    core_rows(&mut rows);
    if !args.no_sim {
        sim_rows(&mut rows, args.large);
    }
    let machine = super::bench_gateway::Machine::now(load_before);
    if !args.json {
        print_table(&rows);
        println!("machine: {machine}");
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({ "machine": machine, "rows": rows }))?
    );
    Ok(())
}

fn pow_rows(rows: &mut Vec<Row>) {
    // A request's canonical prefix is about 158 bytes: hash it once per
    // solve, then only the nonce block per try.
    let anchors = ["46 µs", "740 µs", "12 ms", "190 ms"];
    for difficulty in 0u8..=3 {
        let solves = [2_000usize, 2_000, 400, 40][difficulty as usize];
        let mut tries = 0u64;
        let us = time_us(5, solves / 5, |i| {
            let mut prefix = vec![0u8; 150];
            prefix[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let (nonce, _) = pow::solve(&prefix, difficulty, 0, u64::MAX).expect("solvable");
            tries += nonce + 1;
        });
        let target = if difficulty == 1 { "≤ 1 µs" } else { "" };
        rows.push(row(
            format!(
                "LWPoW difficulty {difficulty} (avg {:.0} tries)",
                tries as f64 / solves as f64
            ),
            us,
            "µs",
            &format!("paper Pi 3: {}", anchors[difficulty as usize]),
            target,
        ));
    }
    // The naive loop: hash the whole message again at every try.
    let us = time_us(5, 400, |i| {
        let mut msg = vec![0u8; 158];
        msg[..8].copy_from_slice(&(i as u64).to_le_bytes());
        for nonce in 0u64.. {
            msg[150..].copy_from_slice(&nonce.to_le_bytes());
            if pow::meets(&wallance_core::crypto::sha256(&[&msg]), 1) {
                break;
            }
        }
    });
    rows.push(row(
        "LWPoW difficulty 1, naive full re-hash",
        us,
        "µs",
        "measured here: 1.8 µs",
        "(baseline)",
    ));
}

/// What the protocol's own signatures cost, measured in this process: a
/// vote made (proof of work and signature) and verified, at the network's
/// vote difficulty; medians of 5 rounds of 400 (also bench-net's CPU
/// ceiling).
pub(super) struct SignatureCosts {
    pub(super) sign_us: f64,
    pub(super) verify_us: f64,
    /// Per vote, verified in a batch of 8 and of 64 (`Core::preverify`).
    pub(super) batch8_us: f64,
    pub(super) batch64_us: f64,
}

impl SignatureCosts {
    pub(super) fn measure() -> Self {
        let key = Keypair::from_seed([7; 32]);
        let difficulty = Params::default().vote_difficulty;
        let id = |i: u64, first: u8| {
            let mut id = [first; 32];
            id[..8].copy_from_slice(&i.to_le_bytes());
            id
        };
        let votes: Vec<Vote> = (0..2_000u64)
            .map(|i| Vote::build(&key, id(i, 0), 5, difficulty).expect("solvable"))
            .collect();
        let sign_us = time_us(5, 400, |i| {
            std::hint::black_box(Vote::build(&key, id(i as u64, 1), 5, difficulty));
        });
        let verify_us = time_us(5, 400, |i| {
            assert!(votes[i % votes.len()].check(difficulty).is_ok());
        });
        // A cache that keeps decoded keys but no signatures, so that every
        // batch verifies again.
        let mut cache = SigCache::new(0);
        let mut batch_us = |size: usize| {
            let per = time_us(5, 400 / size, |i| {
                let from = (i * size) % (votes.len() - size);
                let items: Vec<_> = votes[from..from + size]
                    .iter()
                    .map(|v| (v.voter, v.check_pow(difficulty).expect("solved"), v.sig))
                    .collect();
                assert_eq!(cache.verify_batch(&items), size);
            });
            per / size as f64
        };
        let batch8_us = batch_us(8);
        let batch64_us = batch_us(64);
        SignatureCosts {
            sign_us,
            verify_us,
            batch8_us,
            batch64_us,
        }
    }
}

fn crypto_rows(rows: &mut Vec<Row>) {
    let key = Keypair::from_seed([7; 32]);
    let costs = SignatureCosts::measure();
    rows.push(row(
        "vote creation (work d1 + sign)",
        costs.sign_us,
        "µs",
        "ed25519-dalek sign 14 µs here",
        "",
    ));
    rows.push(row(
        "vote verification (work + signature)",
        costs.verify_us,
        "µs",
        "ed25519-dalek verify 31 µs here",
        "",
    ));
    for (size, us) in [(8, costs.batch8_us), (64, costs.batch64_us)] {
        rows.push(row(
            format!("vote verification in a batch of {size}, per vote"),
            us,
            "µs",
            &format!("alone {:.1} µs: {:.2}x", costs.verify_us, costs.verify_us / us),
            "",
        ));
    }
    let vote = Vote::build(&key, [0; 32], 5, Params::default().vote_difficulty).expect("solvable");
    let bytes = Message::Vote(vote).encode().map(|b| b.len()).unwrap_or(0);
    rows.push(row(
        "signed vote on the wire (canonical)",
        bytes as f64,
        "B",
        "paper: 72-144 B unsigned",
        "≤ 220 B",
    ));
}

/// A core of `n` members, the provider offering espresso.
fn setup(n: usize) -> (Vec<Keypair>, CoreConfig, Request) {
    let keys: Vec<Keypair> = (0..n)
        .map(|i| {
            Keypair::from_seed([
                (i % 251) as u8 + 1,
                (i / 251) as u8,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
            ])
        })
        .collect();
    let params = Params {
        initial_units: 100 * UNITS_PER_COIN,
        ..Params::default()
    };
    let config = CoreConfig {
        params,
        membership: Membership::new(keys.iter().map(|k| k.id()).collect()).expect("distinct"),
        tracked: None,
    };
    let w = wallance_core::Wallet::genesis(keys[1].id(), &config.params);
    let request = Request::build(
        &keys[1],
        RequestDraft {
            service: "espresso".into(),
            provider: keys[0].id(),
            price: 2 * UNITS_PER_COIN,
            announce_seq: 0,
            contract_hash: [0; 32],
            time_ms: 1_000,
            version: 0,
            state: w.state,
            shares_upto: 0,
            received_upto: 0,
            params: vec![],
        },
        1,
    )
    .expect("buildable");
    (keys, config, request)
}

fn core_rows(rows: &mut Vec<Row>) {
    for n in [8usize, 48] {
        let (keys, config, request) = setup(n);
        let id = request.id();
        let votes: Vec<Message> = keys[2..]
            .iter()
            .map(|k| Message::Vote(Vote::build(k, id, 98 * UNITS_PER_COIN, 1).expect("solvable")))
            .collect();
        let offers = vec![ServiceOffer {
            name: "espresso".into(),
            price: 2 * UNITS_PER_COIN,
            contract_hash: [0; 32],
        }];
        let mut per_vote = Vec::new();
        let mut per_request = Vec::new();
        for _ in 0..15 {
            let mut provider = Core::new(config.clone(), keys[0].clone(), Snapshot::default(), 1_000);
            provider.set_services(1_000, offers.clone());
            while provider.poll_output().is_some() {}
            let t = Instant::now();
            let _ = provider.handle_message(1_000, Message::Request(request.clone()));
            while provider.poll_output().is_some() {}
            per_request.push(t.elapsed().as_secs_f64() * 1e6);
            let t = Instant::now();
            for v in &votes {
                let _ = provider.handle_message(1_001, v.clone());
                while provider.poll_output().is_some() {}
            }
            per_vote.push(t.elapsed().as_secs_f64() * 1e6 / votes.len() as f64);
            assert_eq!(
                provider.wallet(&keys[1].id()).map(|w| w.version),
                Some(1),
                "the purchase committed"
            );
        }
        rows.push(row(
            format!("request check + own vote, {n} members"),
            median(per_request),
            "µs",
            "",
            "",
        ));
        rows.push(row(
            format!("commit processing per vote, {n} members (incl. certificate)"),
            median(per_vote),
            "µs",
            "verify dominates: 31 µs",
            "",
        ));
    }
}

fn sim_rows(rows: &mut Vec<Row>, large: bool) {
    let mut cases = vec![
        (8usize, NetModel::lan(), "", "≤ 5 ms p50 (issue 3, real DDS)"),
        (8, NetModel::wifi(), "paper: 300 ms at 8", ""),
        (48, NetModel::wifi(), "paper: < 1 s at 48", ""),
        (48, NetModel::wan(), "", ""),
        (1_000, NetModel::wan(), "paper estimate: 2 s", "≤ 0.5 s"),
    ];
    if large {
        cases.push((10_000, NetModel::wan(), "paper estimate: < 20 s", "≤ 300 ms"));
    }
    for (n, net, anchor, target) in cases {
        let purchases = if n >= 10_000 {
            3
        } else if n >= 1_000 {
            5
        } else {
            20
        };
        let mut cfg = SimConfig::new(n, 42);
        let name = net.name;
        // What the provider's downlink alone needs to receive a quorum of
        // votes: a floor under the consensus time whatever the CPU does.
        let vote_bytes = Message::Vote(
            Vote::build(&Keypair::from_seed([7; 32]), [0; 32], 5, cfg.params.vote_difficulty).expect("solvable"),
        )
        .encode()
        .map_or(0, |b| b.len()) as u64
            + net.overhead_bytes;
        let quorum = Membership::new(
            (0..n)
                .map(|i| {
                    let mut id = [0u8; 32];
                    id[..8].copy_from_slice(&(i as u64).to_le_bytes());
                    wallance_core::MemberId(id)
                })
                .collect(),
        )
        .expect("distinct")
        .quorum_count(&cfg.params) as u64;
        let floor_ms = (quorum * vote_bytes * 8) as f64 * 1e3 / net.downlink_bits_per_s as f64;
        let downlink_mbit = net.downlink_bits_per_s / 1_000_000;
        cfg.net = net;
        cfg.mode = Mode::Latency {
            purchases,
            observers: 3,
        };
        cfg.duration_ms = 2_000 + 10_000 * purchases as u64 + 10_000;
        cfg.quiet_ms = 1_000;
        let r = simulate(cfg);
        rows.push(row(
            format!("simulated consensus p50, {n} members, {name} ({purchases} purchases)"),
            r.p50_ms,
            "ms",
            anchor,
            target,
        ));
        rows.push(row(
            format!("simulated consensus p99, {n} members, {name}"),
            r.p99_ms,
            "ms",
            "",
            "",
        ));
        if n >= 1_000 {
            rows.push(row(
                format!("  floor: a quorum of votes through the provider's downlink, {n} members"),
                floor_ms,
                "ms",
                &format!("{quorum} votes of {vote_bytes} B at {downlink_mbit} Mbit/s"),
                "",
            ));
        }
        rows.push(row(
            format!("received per node per purchase, {n} members, {name}"),
            r.bytes_received_per_node / purchases as f64 / 1000.0,
            "KB",
            "",
            "",
        ));
    }
}

fn print_table(rows: &[Row]) {
    println!("{:<68} {:>12} {:<4}  {:<34} target", "measure", "median", "", "anchor");
    for r in rows {
        println!(
            "{:<68} {:>12.3} {:<4}  {:<34} {}",
            r.name, r.value, r.unit, r.anchor, r.target
        );
    }
    println!();
}
