//! Contract memory where the address space is short: the runtime reserves
//! its whole instance pool at start, and when that reservation does not fit
//! (a 39-bit board running many things, an `ulimit -v`) it halves the pool
//! until it does, says so, and contracts still run. The short space is made
//! real: the test re-runs itself alone, and that process limits its own
//! address space with `prlimit --pid <itself> --as`.

use std::process::Command;

use wallance_runtime::{Devices, EspressoMachine, MIN_LIVE_INSTANCES, RuntimeConfig, pool_reservation_bytes};
use wallance_tests::ESPRESSO;

use crate::support::*;

/// Set in the re-run child, which holds the address-space limit.
const ENV_CHILD: &str = "WALLANCE_TEST_ADDRESS_LIMITED";

/// Virtual memory this process has mapped now, from /proc/self/status.
fn vm_size_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize in /proc/self/status");
    kb << 10
}

#[test]
fn a_pool_that_does_not_fit_the_address_space_is_halved_and_contracts_still_run() {
    let name = "memory::a_pool_that_does_not_fit_the_address_space_is_halved_and_contracts_still_run";
    let config = RuntimeConfig::default();
    let full = pool_reservation_bytes(&config.limits, config.max_live_instances);
    if std::env::var_os(ENV_CHILD).is_none() {
        // Alone in a process of its own: other tests' runtimes reserve
        // their pools in this one.
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(ENV_CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "the child failed:\n{stdout}\n{stderr}"
        );
        let plan = stderr
            .lines()
            .find(|l| l.starts_with("contract memory:"))
            .unwrap_or_default();
        eprintln!("under a limited address space: {plan}");
        assert!(plan.contains("reduced from 32 instances"), "{stderr}");
        return;
    }
    // Room for what this process maps already plus 3/4 of the pool: the
    // full pool cannot fit, half of it can.
    let limit = vm_size_bytes() + full * 3 / 4;
    let status = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--as={limit}"))
        .status()
        .expect("prlimit (util-linux) runs");
    assert!(status.success(), "prlimit --as={limit} failed");
    let runtime = runtime_with(config.clone());
    let plan = runtime.memory_plan().clone();
    eprintln!("{plan}");
    assert!(plan.live_instances < plan.requested_instances, "{plan:?}");
    assert!(plan.live_instances >= MIN_LIVE_INSTANCES, "{plan:?}");
    assert_eq!(runtime.config().max_live_instances, plan.live_instances);
    assert_eq!(
        plan.reserved_bytes,
        pool_reservation_bytes(&config.limits, plan.live_instances)
    );
    let why = plan.reduced_because.as_deref().expect("says why");
    assert!(why.contains("for 32 instances"), "{why}");
    // The smaller pool still runs contracts.
    runtime.load_file(ESPRESSO).unwrap();
    let devices = Devices::new().with("espresso", std::sync::Arc::new(EspressoMachine::new(150, 17)));
    let cup = served(&runtime, "espresso", &purchase(1, 2, 2_000, &[]), &memory(), &devices);
    assert_eq!(cup.result.unwrap().get("cup-number"), Some("1"));
}

#[test]
fn the_plan_says_what_it_reserved_in_which_address_space() {
    let runtime = runtime();
    let plan = runtime.memory_plan();
    // x86-64 and arm64 kernels give user space 39 to 48 bits (57 with
    // 5-level page tables); an address on the stack shows which.
    assert!((39..=57).contains(&plan.address_bits), "{plan:?}");
    assert_eq!(plan.live_instances, 32);
    assert_eq!(plan.reduced_because, None);
    let text = plan.to_string();
    assert!(text.contains("a pool of 32 live instances reserves 2.0 GiB"), "{text}");
    assert!(
        text.contains(&format!("{}-bit user space", plan.address_bits)),
        "{text}"
    );
}
