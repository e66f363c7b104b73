//! Misbehaving contracts are stopped with a clear error; the host and the
//! other contracts go on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wallance_runtime::{
    ContractStorage, Devices, EspressoMachine, FailureCause, InvokeError, Limits, LoadError, MemoryStorage, Runtime,
    RuntimeConfig, StorageQuotaError,
};
use wallance_tests::{BAD_INFO, ESPRESSO, FLOATS, HOSTILE, INFO_LOOP};

use crate::support::{purchase, runtime, runtime_with, served};

fn limits() -> Limits {
    Limits {
        fuel_per_call: 50_000_000,
        memory_bytes_max: 16 << 20,
        storage_bytes_max: 256 << 10,
        ..Limits::default()
    }
}

fn setup() -> (Runtime, Arc<MemoryStorage>, Devices) {
    let runtime = runtime_with(RuntimeConfig {
        limits: limits(),
        ..RuntimeConfig::default()
    });
    runtime.load_file(HOSTILE).unwrap();
    runtime.load_file(ESPRESSO).unwrap();
    let devices = Devices::new().with("espresso", Arc::new(EspressoMachine::new(10_000, 1_000)));
    (runtime, Arc::new(MemoryStorage::new()), devices)
}

/// Runs an attack, expects it stopped, and checks that the host still serves
/// both the hostile contract (behaving) and another contract afterwards.
fn attack(attack: &str) -> (FailureCause, Arc<MemoryStorage>, Vec<wallance_runtime::LogEntry>) {
    let (runtime, storage, devices) = setup();
    let backend: Arc<dyn ContractStorage> = storage.clone();
    let error = runtime
        .invoke("hostile", &purchase(6, 1, 1, &[("attack", attack)]), &backend, &devices)
        .expect_err("the attack must be stopped");
    let InvokeError::Failed {
        service,
        cause,
        fuel_used,
        logs,
    } = error
    else {
        panic!("unexpected error {error}");
    };
    assert_eq!(service, "hostile");
    assert!(fuel_used <= limits().fuel_per_call);
    // The host goes on: same runtime, same contract, and another contract.
    let calm = served(&runtime, "hostile", &purchase(6, 1, 2, &[]), &storage, &devices);
    assert_eq!(calm.result.unwrap().message, "behaving");
    served(&runtime, "espresso", &purchase(7, 2, 3, &[]), &storage, &devices);
    (cause, storage, logs)
}

#[test]
fn endless_loop_runs_out_of_fuel() {
    let (runtime, storage, devices) = setup();
    let backend: Arc<dyn ContractStorage> = storage;
    let started = Instant::now();
    let error = runtime
        .invoke("hostile", &purchase(6, 1, 1, &[("attack", "loop")]), &backend, &devices)
        .unwrap_err();
    // Fuel, not the 5 s wall-clock backstop, stopped it.
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    let (cause, _, _) = attack("loop");
    assert_eq!(error.cause(), Some(&cause));
    assert_eq!(cause, FailureCause::OutOfFuel { limit: 50_000_000 });
    assert!(cause.to_string().contains("ran out of fuel"));
}

#[test]
fn wall_clock_backstop_stops_a_loop_when_fuel_is_plentiful() {
    let runtime = runtime_with(RuntimeConfig {
        limits: Limits {
            fuel_per_call: u64::MAX / 2,
            wall_time_max_ms: 200,
            ..Limits::default()
        },
        ..RuntimeConfig::default()
    });
    runtime.load_file(HOSTILE).unwrap();
    let started = Instant::now();
    let error = runtime
        .invoke(
            "hostile",
            &purchase(1, 1, 1, &[("attack", "loop")]),
            &crate::support::storage(),
            &Devices::new(),
        )
        .unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(error.cause(), Some(&FailureCause::WallClock { limit_ms: 200 }));
    assert!(
        elapsed >= Duration::from_millis(190) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}

#[test]
fn memory_bomb_hits_the_memory_limit() {
    let (cause, _, _) = attack("memory");
    let FailureCause::MemoryLimit {
        limit_bytes,
        requested_bytes,
    } = cause
    else {
        panic!("expected a memory limit, got {cause}");
    };
    assert_eq!(limit_bytes, 16 << 20);
    assert!(requested_bytes > limit_bytes);
}

#[test]
fn deep_recursion_exhausts_the_stack() {
    let (cause, _, _) = attack("recursion");
    assert_eq!(cause, FailureCause::StackOverflow, "{cause}");
}

#[test]
fn trap_is_reported() {
    let (cause, _, _) = attack("trap");
    let FailureCause::Trap(message) = &cause else {
        panic!("expected a trap, got {cause}");
    };
    assert!(message.contains("unreachable"), "{message}");
}

#[test]
fn panic_message_reaches_the_host() {
    let (cause, _, logs) = attack("panic");
    let FailureCause::Panic(message) = &cause else {
        panic!("expected a panic, got {cause}");
    };
    assert!(message.contains("the hostile contract panics on purpose"), "{message}");
    assert!(logs.iter().any(|l| l.message.starts_with("panic: ")));
}

#[test]
fn log_flood_is_stopped() {
    let (cause, _, logs) = attack("log-flood");
    assert_eq!(cause, FailureCause::LogLimit { limit_bytes: 16 << 10 });
    // What was logged before the limit is kept, and bounded.
    let logged: usize = logs.iter().map(|l| l.message.len()).sum();
    assert!(logged > 0 && logged <= 16 << 10);
}

#[test]
fn huge_output_is_rejected() {
    let (cause, _, _) = attack("huge-output");
    assert_eq!(
        cause,
        FailureCause::OutputTooLarge {
            len_bytes: 1 << 20,
            limit_bytes: 16 << 10
        }
    );
}

#[test]
fn storage_flood_hits_the_quota_and_writes_nothing() {
    let (cause, storage, _) = attack("storage-flood");
    let FailureCause::Storage(StorageQuotaError::QuotaExceeded { max, .. }) = cause else {
        panic!("expected the storage quota, got {cause}");
    };
    assert_eq!(max, 256 << 10);
    assert!(storage.dump("hostile").is_empty());
}

#[test]
fn refused_or_failed_calls_leave_storage_untouched() {
    let (runtime, storage, devices) = setup();
    let backend: Arc<dyn ContractStorage> = storage.clone();
    let outcome = runtime
        .invoke(
            "hostile",
            &purchase(1, 1, 1, &[("attack", "write-then-refuse")]),
            &backend,
            &devices,
        )
        .unwrap();
    assert_eq!(outcome.result, Err("refusing after a write".to_string()));
    assert!(outcome.writes.is_empty());
    let error = runtime
        .invoke(
            "hostile",
            &purchase(1, 1, 1, &[("attack", "write-then-trap")]),
            &backend,
            &devices,
        )
        .unwrap_err();
    assert!(matches!(error.cause(), Some(FailureCause::Trap(_))));
    assert!(storage.dump("hostile").is_empty());
}

#[test]
fn attacks_in_parallel_do_not_disturb_honest_calls() {
    let (runtime, storage, devices) = setup();
    let backend: Arc<dyn ContractStorage> = storage.clone();
    std::thread::scope(|scope| {
        for attack in ["loop", "memory", "recursion", "log-flood"] {
            let (runtime, backend, devices) = (&runtime, &backend, &devices);
            scope.spawn(move || {
                for _ in 0..3 {
                    let error = runtime
                        .invoke("hostile", &purchase(1, 1, 1, &[("attack", attack)]), backend, devices)
                        .unwrap_err();
                    assert!(error.cause().is_some(), "{error}");
                }
            });
        }
        for i in 0..20 {
            served(&runtime, "espresso", &purchase(2, 2, i, &[]), &storage, &devices);
        }
    });
    assert_eq!(storage.dump("espresso").len(), 2);
}

#[test]
fn bad_files_are_rejected_with_clear_errors() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };

    let error = runtime.load_file(BAD_INFO).unwrap_err();
    assert!(matches!(error, LoadError::InvalidInfo(_)), "{error}");
    assert!(error.to_string().contains("Not A Valid Name!"));

    let error = runtime
        .load_file(write("garbage.wasm", b"this is not wasm at all"))
        .unwrap_err();
    assert!(matches!(error, LoadError::NotWasm), "{error}");

    // A valid core module that is not a contract (no WIT type information).
    let error = runtime.load_file(write("empty.wasm", b"\0asm\x01\0\0\0")).unwrap_err();
    assert!(matches!(error, LoadError::NotAContract(_)), "{error}");

    let error = runtime
        .load_file(write("native.wasm", b"\x7fELF\x02\x01\x01\0rest"))
        .unwrap_err();
    assert!(matches!(error, LoadError::Precompiled), "{error}");

    let mut truncated = std::fs::read(ESPRESSO).unwrap();
    truncated.truncate(truncated.len() / 2);
    let error = runtime.load_file(write("half.wasm", &truncated)).unwrap_err();
    assert!(
        matches!(error, LoadError::Compile(_) | LoadError::NotAContract(_)),
        "{error}"
    );

    let small = runtime_with(RuntimeConfig {
        limits: Limits {
            contract_bytes_max: 1_000,
            ..Limits::default()
        },
        ..RuntimeConfig::default()
    });
    let error = small.load_file(ESPRESSO).unwrap_err();
    assert!(
        matches!(error, LoadError::TooLarge { limit_bytes: 1_000, .. }),
        "{error}"
    );

    let error = runtime.load_file(dir.path().join("missing.wasm")).unwrap_err();
    assert!(matches!(error, LoadError::Read { .. }), "{error}");

    assert!(runtime.services().is_empty());
    let error = runtime
        .invoke(
            "hostile",
            &purchase(1, 1, 1, &[]),
            &crate::support::storage(),
            &Devices::new(),
        )
        .unwrap_err();
    assert!(matches!(error, InvokeError::UnknownService(_)));
}

#[test]
fn oversized_parameters_are_rejected_before_running() {
    let (runtime, storage, devices) = setup();
    let backend: Arc<dyn ContractStorage> = storage;
    let big = "p".repeat(10_000);
    let error = runtime
        .invoke("hostile", &purchase(1, 1, 1, &[("x", &big)]), &backend, &devices)
        .unwrap_err();
    assert!(matches!(error, InvokeError::InvalidPurchase(_)), "{error}");
}

#[test]
fn a_contract_looping_in_info_is_refused_at_load() {
    let runtime = runtime();
    let started = Instant::now();
    let error = runtime.load_file(INFO_LOOP).unwrap_err();
    assert!(
        matches!(error, LoadError::Info(FailureCause::OutOfFuel { limit: 10_000_000 })),
        "{error}"
    );
    assert!(error.to_string().contains("ran out of fuel"));
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(runtime.services().is_empty());
    // The runtime still loads and serves others.
    runtime.load_file(HOSTILE).unwrap();
}

#[test]
fn a_contract_cannot_forge_lines_in_the_node_log() {
    let (runtime, storage, devices) = setup();
    let captured = crate::support::CapturedLog::default();
    let outcome = captured.at_info(|| {
        served(
            &runtime,
            "hostile",
            &purchase(1, 1, 1, &[("attack", "log-forge")]),
            &storage,
            &devices,
        )
    });
    let log = captured.text();
    // One line, marked as the contract's, with the newline and the escape
    // sequence shown escaped.
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(
        log.contains("service=hostile") && log.contains("innocent\\n2026"),
        "{log}"
    );
    assert!(!log.contains('\x1b'), "{log}");
    // The outcome has it escaped the same way.
    assert!(
        outcome.logs[0].message.starts_with("innocent\\n2026"),
        "{:?}",
        outcome.logs
    );
}

#[test]
fn empty_log_lines_are_counted() {
    let (cause, _, logs) = attack("empty-log-flood");
    assert_eq!(cause, FailureCause::LogLineLimit { limit_lines: 256 });
    assert_eq!(logs.len(), 256);
}

#[test]
fn a_huge_panic_message_is_kept_cut_and_says_how_long_it_was() {
    let (cause, _, logs) = attack("huge-panic");
    let FailureCause::Panic(message) = &cause else {
        panic!("expected a panic, got {cause}");
    };
    assert!(message.contains("ppppp"), "{message}");
    assert!(message.len() < 1100, "{} bytes", message.len());
    // The SDK's panic line is "panicked at src/lib.rs:L:C:\n" plus the message.
    assert!(message.contains("bytes in all)"), "{message}");
    let in_all: usize = message
        .rsplit_once("… (")
        .and_then(|(_, tail)| tail.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(in_all > 1 << 20, "{message}");
    assert!(logs.iter().all(|l| l.message.len() < 1100));
}

#[test]
fn contract_text_reaches_the_host_without_control_characters() {
    let (runtime, storage, devices) = setup();
    let backend: Arc<dyn ContractStorage> = storage;
    let outcome = runtime
        .invoke(
            "hostile",
            &purchase(1, 1, 1, &[("attack", "control-chars")]),
            &backend,
            &devices,
        )
        .unwrap();
    let output = outcome.result.unwrap();
    assert_eq!(output.message, "served\\u{1b}[31m\\nERROR forged");
    assert_eq!(output.data, [("k\\r\\n".to_string(), "v\\u{7}".to_string())]);
    assert_eq!(outcome.logs.len(), 1);
    assert_eq!(outcome.logs[0].message, "\\u{1b}[2J\\nERROR node: forged line");
    let refusal = runtime
        .invoke(
            "hostile",
            &purchase(1, 1, 1, &[("attack", "control-refusal")]),
            &backend,
            &devices,
        )
        .unwrap()
        .result
        .unwrap_err();
    assert_eq!(refusal, "no\\u{1b}[2J\\nforged");
}

#[test]
fn nan_bit_patterns_are_canonical() {
    let (runtime, storage, devices) = setup();
    let backend: Arc<dyn ContractStorage> = storage;
    let output = runtime
        .invoke("hostile", &purchase(1, 1, 1, &[("attack", "nan")]), &backend, &devices)
        .unwrap()
        .result
        .unwrap();
    // x86 produces the negative NaN (ffc00000) without canonicalization.
    assert_eq!(output.get("f32"), Some("7fc00000"));
    assert_eq!(output.get("f64"), Some("7ff8000000000000"));
}

/// Relaxed SIMD lets each CPU give its own answer; the runtime lowers it
/// deterministically, i.e. as the matching non-relaxed instruction (what
/// aarch64 does natively). Without that, this x86-64 returns an operand
/// where a lane holds a NaN (`7fc00001 3f800000`), 0x80000000 for a NaN
/// truncated, and 0x8000 for -1 x -1 in Q15; `cargo xtask
/// cross-determinism` found these against aarch64.
#[test]
fn relaxed_simd_is_the_same_on_every_architecture() {
    let runtime = runtime();
    runtime.load_file(FLOATS).unwrap();
    let output = runtime
        .invoke(
            "floats",
            &purchase(4, 1, 3, &[("set", "relaxed")]),
            &crate::support::storage(),
            &Devices::new(),
        )
        .unwrap()
        .result
        .unwrap();
    assert_eq!(
        output.get("f32x4 relaxed_min"),
        Some("7fc000007fc0000080000000cf32d05e")
    );
    assert_eq!(
        output.get("i32x4 relaxed_trunc(b)"),
        Some("00000001000000000000000080000000")
    );
    assert_eq!(
        output.get("i16x8 relaxed_q15mulr(min,min)"),
        Some("7fff7fff7fff7fff7fff7fff7fff7fff")
    );
}

#[test]
fn recursion_through_call_indirect_is_labelled_as_such() {
    let (cause, _, _) = attack("indirect-recursion");
    let text = cause.to_string();
    assert!(text.contains("stack") || text.contains("recursion"), "{cause:?}");
}

/// The wall-clock backstop must never fire before fuel on the slowest
/// supported board (assumed 10x slower than this machine): measure how
/// fast the cheapest-fuel loop burns fuel here and check the default.
#[test]
fn the_default_backstop_outlasts_the_fuel_of_a_host_call_loop_on_a_slow_board() {
    let fuel = 20_000_000;
    let runtime = runtime_with(RuntimeConfig {
        limits: Limits {
            fuel_per_call: fuel,
            wall_time_max_ms: wallance_runtime::wall_time_for_fuel_ms(fuel),
            ..Limits::default()
        },
        ..RuntimeConfig::default()
    });
    runtime.load_file(HOSTILE).unwrap();
    // CPU time of this thread (the call runs on it), not wall time: the
    // other tests running beside this one must not make the machine look
    // slower than it is.
    let started = thread_cpu_time();
    let error = runtime
        .invoke(
            "hostile",
            &purchase(1, 1, 1, &[("attack", "host-call-loop")]),
            &crate::support::storage(),
            &Devices::new(),
        )
        .unwrap_err();
    let elapsed = thread_cpu_time() - started;
    assert_eq!(error.cause(), Some(&FailureCause::OutOfFuel { limit: fuel }));
    let fuel_per_s = fuel as f64 / elapsed.as_secs_f64();
    let defaults = Limits::default();
    let slow_board_s = defaults.fuel_per_call as f64 / fuel_per_s * 10.0;
    println!("host-call loop: {fuel_per_s:.0} fuel/s; default fuel on a 10x slower board: {slow_board_s:.1} s");
    assert!(
        defaults.wall_time_max_ms as f64 / 1000.0 > slow_board_s,
        "backstop {} ms fires before the fuel on a 10x slower board ({slow_board_s:.1} s)",
        defaults.wall_time_max_ms
    );
}

fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec, which `now` is.
    #[allow(unsafe_code)]
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0);
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}
