//! Compute rental: runs a real computation for the buyer, with a work budget
//! bought by the price.
//!
//! Parameters:
//! - `task` = `sha256-chain`: hashes `input` (a string) `rounds` times,
//!   each round hashing the previous digest; returns the final digest.
//! - `task` = `prime-count`: counts the primes below `below` with a sieve.
//!
//! Each DCoin buys `WORK_PER_COIN` work units (one hash round, or one
//! sieve number). The node's fuel limit per call caps the total on top, so a
//! huge price cannot buy an endless computation: that fails with "out of
//! fuel" and the buyer's money stays a matter for the node's policy.

use sha2::{Digest, Sha256};
use wallance_sdk::{Contract, Outcome, Purchase, ServiceInfo, UNITS_PER_COIN, coins, format_coins, log, storage, to_hex};

const PRICE: u64 = coins(1);
const WORK_PER_COIN: u64 = 10_000;

struct ComputeRental;

impl Contract for ComputeRental {
    fn info() -> ServiceInfo {
        ServiceInfo::new(
            "compute",
            PRICE,
            "SHA-256 hash chains and prime counts; one unit buys 10000 work units",
            env!("CARGO_PKG_VERSION"),
        )
    }

    fn purchase(purchase: Purchase) -> Result<Outcome, String> {
        let budget = u64::try_from(u128::from(purchase.price) * u128::from(WORK_PER_COIN) / u128::from(UNITS_PER_COIN))
            .unwrap_or(u64::MAX);
        let outcome = match purchase.param("task") {
            Some("sha256-chain") => {
                let input = purchase.param("input").unwrap_or("");
                let rounds: u64 = purchase.param_parsed("rounds")?;
                check_budget(rounds, budget, purchase.price)?;
                let digest = sha256_chain(input.as_bytes(), rounds);
                Outcome::new(format!("hashed {rounds} rounds"))
                    .with("digest", to_hex(&digest))
                    .with("work", rounds)
            }
            Some("prime-count") => {
                let below: u64 = purchase.param_parsed("below")?;
                check_budget(below, budget, purchase.price)?;
                let count = count_primes_below(below);
                Outcome::new(format!("{count} primes below {below}"))
                    .with("primes", count)
                    .with("work", below)
            }
            Some(other) => {
                return Err(format!("unknown task {other:?}: use sha256-chain or prime-count"));
            }
            None => return Err("missing parameter \"task\"".into()),
        };
        let jobs = storage::get_u64("jobs").unwrap_or(0) + 1;
        storage::set_u64("jobs", jobs);
        log::info(&format!("job {jobs}: {}", outcome.message));
        Ok(outcome.with("job", jobs))
    }
}

fn check_budget(work: u64, budget: u64, price: u64) -> Result<(), String> {
    if work == 0 {
        return Err("nothing to compute".into());
    }
    if work > budget {
        return Err(format!(
            "{work} work units exceed the {budget} bought by price {} ({WORK_PER_COIN} per DCoin)",
            format_coins(price)
        ));
    }
    Ok(())
}

fn sha256_chain(input: &[u8], rounds: u64) -> [u8; 32] {
    let mut digest: [u8; 32] = Sha256::digest(input).into();
    for _ in 1..rounds {
        digest = Sha256::digest(digest).into();
    }
    digest
}

fn count_primes_below(below: u64) -> u64 {
    if below < 3 {
        return 0;
    }
    let n = below as usize;
    let mut composite = vec![false; n];
    let mut count = 0;
    for i in 2..n {
        if composite[i] {
            continue;
        }
        count += 1;
        // i * i overflows 32-bit usize for large i; then no multiple is
        // below n anyway.
        let Some(mut multiple) = i.checked_mul(i) else {
            continue;
        };
        while multiple < n {
            composite[multiple] = true;
            multiple += i;
        }
    }
    count
}

wallance_sdk::export_contract!(ComputeRental);
