//! Mutations of valid messages against one core (issue 8), on stable Rust.
//!
//! A seeded loop over a few thousand attacker inputs; the corpus, the
//! mutator and the oracle are in `harness/mutate.rs` (shared with the
//! cargo-fuzz target in `fuzz/`), the oracle is documented on
//! `mutate::Check`.
//!
//! - `WALLANCE_MUTATIONS=N`: about N attacker inputs (default 10 000).
//! - `WALLANCE_MUTATIONS_SEED=S`: replays the one episode of seed S, as
//!   printed by a failure.

mod harness;
#[path = "harness/mutate.rs"]
mod mutate;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use mutate::{BUYER_A, BYZANTINE, Check, Corpus, Failure, LIGHT, PROVIDER, RESTARTER, Source, VICTIMS, XorShift};
use wallance_core::Message;
use wallance_core::msg::{CertFetch, Vote};

/// Attacker inputs per episode (part of what a seed replays: keep fixed).
const PER_EPISODE: usize = 150;

fn corpus() -> &'static Corpus {
    static C: OnceLock<Corpus> = OnceLock::new();
    C.get_or_init(Corpus::build)
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

fn episode(c: &Corpus, seed: u64) -> (mutate::EpisodeStats, Vec<Failure>) {
    let mut src = XorShift::new(seed);
    let victim = VICTIMS[src.below(VICTIMS.len())];
    mutate::run_episode(c, victim, &mut src, PER_EPISODE, false)
}

#[test]
fn mutations_of_valid_messages_are_rejected_or_harmless() {
    let c = corpus();
    let seeds: Vec<u64> = match env_u64("WALLANCE_MUTATIONS_SEED") {
        Some(s) => vec![s],
        None => {
            let total = env_u64("WALLANCE_MUTATIONS").unwrap_or(10_000) as usize;
            (0..total.div_ceil(PER_EPISODE) as u64)
                .map(|i| 0x3A11_0000 + i)
                .collect()
        }
    };
    let started = std::time::Instant::now();
    let mut attacks = 0;
    // One failure per (check, base kind): the first seed that shows it.
    let mut found: BTreeMap<(Check, String), (u64, Box<Failure>)> = BTreeMap::new();
    for seed in &seeds {
        let (stats, failures) = episode(c, *seed);
        attacks += stats.attacks;
        for f in failures {
            let base = f.mutation.split(';').next().unwrap_or_default().to_string();
            found.entry((f.check, base)).or_insert((*seed, Box::new(f)));
        }
    }
    eprintln!(
        "{} episodes, about {attacks} attacker inputs, {:.1} s, {} distinct failures",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        found.len()
    );
    for (seed, f) in found.values() {
        eprintln!("\n{f}\n  replay: WALLANCE_MUTATIONS_SEED={seed:#x} cargo test -p wallance-core --test mutations");
    }
    assert!(
        found.is_empty(),
        "{} distinct oracle failures (printed above)",
        found.len()
    );
}

#[test]
fn the_corpus_holds_every_message_kind_and_replays_exactly() {
    // Corpus::build asserts both; here the counts, for the record.
    let c = corpus();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &c.sent {
        *kinds.entry(m.kind()).or_default() += 1;
    }
    let logs: Vec<(usize, usize)> = VICTIMS.iter().map(|v| (*v, c.logs[*v].len())).collect();
    eprintln!(
        "{} messages sent in the honest run: {kinds:?}; victim (node, log length): {logs:?}",
        c.sent.len()
    );
    assert_eq!(kinds.len(), mutate::KINDS.len(), "{kinds:?}");
}

// Targeted cases: each is one input the oracle must accept. They name the
// holes the random loop finds, so a regression points at its cause.

fn signed_cert_of(c: &Corpus, idx: usize, version: u64) -> wallance_core::msg::Certificate {
    c.sent
        .iter()
        .find_map(|m| match m {
            Message::Certificate(x)
                if x.is_signed() && x.request.requester == c.members[idx] && x.request.version + 1 == version =>
            {
                Some((**x).clone())
            }
            _ => None,
        })
        .expect("the provider's certificate is in the corpus")
}

fn ok(r: Result<(), Box<Failure>>) {
    if let Err(f) = r {
        panic!("{f}");
    }
}

#[test]
fn a_cert_fetch_with_first_after_last_is_harmless() {
    let c = corpus();
    let b = &c.keys[BYZANTINE];
    let f = CertFetch::new(b, c.members[PROVIDER], BUYER_A as u32, 5, 2);
    ok(mutate::feed_one(
        c,
        PROVIDER,
        Some(c.logs[PROVIDER].len() - 1),
        Message::CertFetch(f),
        true,
    ));
}

#[test]
fn a_certificate_at_version_u64_max_is_harmless() {
    let c = corpus();
    let mut cert = signed_cert_of(c, BUYER_A, 3);
    cert.request.version = u64::MAX;
    let m = Message::Certificate(Box::new(cert));
    ok(mutate::feed_one(
        c,
        PROVIDER,
        Some(c.logs[PROVIDER].len() - 1),
        m.clone(),
        false,
    ));
    ok(mutate::feed_one(c, LIGHT, Some(c.logs[LIGHT].len() - 1), m, false));
}

#[test]
fn a_replayed_share_fetch_is_not_amplified() {
    let c = corpus();
    // The laggard's honest catch-up fetch of the restarter's shares,
    // replayed after the restarter lost its share ring in the restart.
    let fetch = c
        .sent
        .iter()
        .find(|m| matches!(m, Message::ShareFetch(f) if f.to == c.members[RESTARTER] && f.last_seq - f.first_seq > 64))
        .expect("a large honest ShareFetch")
        .clone();
    ok(mutate::feed_one(
        c,
        RESTARTER,
        Some(c.logs[RESTARTER].len() - 1),
        fetch,
        false,
    ));
}

#[test]
fn a_replayed_old_certificate_does_not_credit_a_light_node_again() {
    let c = corpus();
    let cert = signed_cert_of(c, BUYER_A, 1);
    ok(mutate::feed_one(
        c,
        LIGHT,
        None,
        Message::Certificate(Box::new(cert)),
        false,
    ));
}

#[test]
fn a_replayed_proof_does_not_run_a_pruned_contract_again() {
    let c = corpus();
    let mut proof = signed_cert_of(c, BUYER_A, 1);
    proof.provider_sig = Default::default();
    ok(mutate::feed_one(
        c,
        PROVIDER,
        None,
        Message::Certificate(Box::new(proof)),
        false,
    ));
}

#[test]
fn a_late_replayed_vote_opens_no_pending_decision() {
    let c = corpus();
    let vote = c
        .sent
        .iter()
        .find(|m| matches!(m, Message::Vote(_)))
        .expect("a vote")
        .clone();
    ok(mutate::feed_one(c, PROVIDER, None, vote, false));
}

#[test]
fn a_forged_vote_does_not_blame_its_voter() {
    let c = corpus();
    // Right after the provider counted a real vote, the same vote with
    // another remaining balance and the old signature.
    let log = &c.logs[PROVIDER];
    let (pos, vote) = log
        .iter()
        .enumerate()
        .find_map(|(i, input)| match input {
            mutate::Input::Msg(_, Message::Vote(v)) if v.voter != c.members[PROVIDER] => Some((i, *v)),
            _ => None,
        })
        .expect("a vote reaches the provider");
    let forged = Vote {
        remaining: vote.remaining + 1,
        ..vote
    };
    ok(mutate::feed_one(c, PROVIDER, Some(pos), Message::Vote(forged), false));
}
