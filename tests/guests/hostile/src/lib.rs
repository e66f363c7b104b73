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
            // One million empty lines: each costs the host a `LogEntry`.
            "empty-log-flood" => {
                for _ in 0..1_000_000 {
                    log::info("");
                }
                Ok(Outcome::new("flooded"))
            }
            // A 1 MiB panic message.
            "huge-panic" => panic!("{}", "p".repeat(1 << 20)),
            // Terminal escapes and line breaks meant to forge node log lines.
            "control-chars" => {
                log::info("\x1b[2J\nERROR node: forged line");
                Ok(Outcome::new("served\x1b[31m\nERROR forged")
                    .with("k\r\n", "v\x07"))
            }
            "control-refusal" => Err("no\x1b[2J\nforged".into()),
            // Recursion through `call_indirect` (a function pointer), with a
            // frame in linear memory (the shadow stack) at each level.
            "indirect-recursion" => {
                let f: fn(u64) -> u64 = black_box(recurse_indirect);
                Ok(Outcome::new(format!("{}", f(black_box(u64::MAX)))))
            }
            // Cheap host calls in a loop: the most wall time per unit of fuel.
            "host-call-loop" => {
                let mut n = 0u64;
                loop {
                    n = black_box(n.wrapping_add(wallance_sdk::now_ms()));
                }
            }
            // The sign of a NaN a division produces is platform-specific
            // (negative on x86, positive on Arm) unless the host
            // canonicalizes it.
            "nan" => {
                let zero = black_box(0.0f32);
                let nan = black_box(zero / zero);
                let zero64 = black_box(0.0f64);
                let nan64 = black_box(zero64 / zero64);
                Ok(Outcome::new("nan")
                    .with("f32", format!("{:08x}", nan.to_bits()))
                    .with("f64", format!("{:016x}", nan64.to_bits())))
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

/// Calls itself through a function pointer and keeps an array on the
/// (linear-memory) stack at each level.
#[inline(never)]
fn recurse_indirect(depth: u64) -> u64 {
    if depth == 0 {
        return 0;
    }
    // 4 KiB of frame in linear memory per level: the contract's stack
    // there (64 KiB) runs out long before the native one.
    let mut frame = [depth; 512];
    let next: fn(u64) -> u64 = black_box(recurse_indirect);
    frame[black_box(3)] = next(black_box(depth - 1));
    black_box(&mut frame);
    frame.iter().fold(0, |a, b| a.wrapping_mul(31) ^ b)
}

wallance_sdk::export_contract!(Hostile);
