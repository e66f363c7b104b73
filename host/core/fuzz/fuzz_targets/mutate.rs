//! Mutations of valid messages against one core, driven by libFuzzer.
//!
//! The input is a choice stream: which node is attacked, where in its log,
//! which message it has seen is the base, which fields change and how, and
//! how it is signed (see `tests/harness/mutate.rs`, shared with the stable
//! test `tests/mutations.rs`). A core panic or a failed oracle check
//! (`mutate::Check`) is a crash.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/harness/mod.rs"]
mod harness;
#[path = "../../tests/harness/mutate.rs"]
mod mutate;

use mutate::{Bytes, Corpus, Source, VICTIMS};

/// Attacker inputs per fuzzer input, at most.
const BUDGET: usize = 48;

fn corpus() -> &'static Corpus {
    static C: OnceLock<Corpus> = OnceLock::new();
    C.get_or_init(Corpus::build)
}

fuzz_target!(|data: &[u8]| {
    let c = corpus();
    let mut src = Bytes { data, pos: 0 };
    let victim = VICTIMS[src.below(VICTIMS.len())];
    let (_, failures) = mutate::run_episode(c, victim, &mut src, BUDGET, true);
    if let Some(f) = failures.first() {
        panic!("{f}");
    }
});
