//! A contract that misbehaves on request (parameter `attack`), to prove the
//! node stops each kind of misbehaviour with a clear error and goes on.

use std::hint::black_box;

use wallance_sdk::{Contract, Outcome, Purchase, ServiceInfo, log, storage};

struct Hostile;

impl Contract for Hostile {
    fn info() -> ServiceInfo {
        ServiceInfo::new("hostile", 1, "Misbehaves on request", "1")
    }

    fn purchase(purchase: Purchase) -> Result<Outcome, String> {
        match purchase.param("attack").unwrap_or("none") {
            "none" => Ok(Outcome::new("behaving")),
            "loop" => {
                let mut n = 0u64;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            "recursion" => Ok(Outcome::new(format!("{}", recurse(black_box(u64::MAX))))),
            "trap" => trap(),
            "panic" => panic!("the hostile contract panics on purpose"),
            "log-flood" => {
                let line = "x".repeat(1000);
                loop {
                    log::info(&line);
                }
            }
            "log-forge" => {
                log::info("innocent\n2026-11-30T00:00:00.000000Z  INFO wallance: wallet credited\x1b[2J");
                Ok(Outcome::new("logged"))
            }
            "huge-output" => Ok(Outcome::new("y".repeat(1 << 20))),
            "storage-flood" => {
                let value = vec![0u8; 60_000];
                for i in 0u64.. {
                    storage::set(&format!("flood/{i}"), &value);
                }
                Ok(Outcome::new("unreachable"))
            }
            "write-then-refuse" => {
                storage::set("refused", b"should not persist");
                Err("refusing after a write".into())
            }
            "write-then-trap" => {
                storage::set("trapped", b"should not persist");
                trap()
            }
            other => Err(format!("unknown attack {other:?}")),
        }
    }
}

/// A bare `unreachable` instruction, without a panic message.
fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    // Only so the crate also type-checks for the host (clippy, docs).
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

/// Not tail-recursive (the result is used after the call), so the compiler
/// cannot turn it into a loop.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if depth == 0 {
        return 0;
    }
    let below = recurse(black_box(depth - 1));
    below.wrapping_mul(31) ^ depth
}

wallance_sdk::export_contract!(Hostile);
