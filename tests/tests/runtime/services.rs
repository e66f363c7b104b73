//! Each shipped service, end to end.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use wallance_runtime::{
    CallKey, Device, DeviceAnswer, DeviceGrants, Devices, EspressoMachine, LogLevel, Radio, RadioKind,
};
use wallance_tests::{COMPUTE_RENTAL, ESPRESSO, RADIO_RENTAL};

use crate::support::{memory, purchase, refused, runtime, served};

#[test]
fn all_three_services_load_and_announce_themselves() {
    let runtime = runtime();
    for (path, name, price) in [
        (ESPRESSO, "espresso", 2),
        (RADIO_RENTAL, "radio-rental", 10),
        (COMPUTE_RENTAL, "compute", 1),
    ] {
        let report = runtime.load_file(path).expect("load");
        assert_eq!(report.info.name, name);
        assert_eq!(report.info.price, price * 1_000_000, "{name} is priced in DCoin");
        assert_eq!(report.info.version, "0.1.0");
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(report.info.contract_hash, <[u8; 32]>::from(Sha256::digest(&bytes)));
    }
    let names: Vec<String> = runtime.services().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["compute", "espresso", "radio-rental"]);
}

#[test]
fn espresso_brews_counts_cups_and_refuses_without_water_or_beans() {
    let runtime = runtime();
    runtime.load_file(ESPRESSO).unwrap();
    let storage = memory();
    // Water for a lungo and an espresso, beans for two cups.
    let machine = Arc::new(EspressoMachine::new(150, 17));
    let devices = Devices::new().with("espresso", machine.clone());

    let lungo = served(
        &runtime,
        "espresso",
        &purchase(1, 2, 1_000, &[("size", "lungo")]),
        &storage,
        &devices,
    );
    let output = lungo.result.unwrap();
    assert_eq!(output.message, "brewed a 110 ml lungo");
    assert_eq!(output.get("cup-number"), Some("1"));
    assert_eq!(output.get("water-ml-left"), Some("40"));
    assert_eq!(output.get("beans-g-left"), Some("7"));
    assert!(lungo.fuel_used > 0);
    assert!(lungo.peak_memory_bytes >= 64 << 10);
    assert_eq!(lungo.writes.len(), 2);
    assert!(
        lungo
            .logs
            .iter()
            .any(|l| l.level == LogLevel::Info && l.message.contains("lungo"))
    );

    let espresso = served(&runtime, "espresso", &purchase(1, 2, 2_000, &[]), &storage, &devices);
    let output = espresso.result.unwrap();
    assert_eq!(output.get("cup-number"), Some("2"));
    assert_eq!(output.get("cups-for-buyer"), Some("2"));
    assert_eq!(machine.state().water_ml, 0);

    // No water left: refused, nothing counted.
    let reason = refused(&runtime, "espresso", &purchase(2, 2, 3_000, &[]), &storage, &devices);
    assert_eq!(reason, "the machine has no water");
    machine.refill(500, 0);
    let reason = refused(&runtime, "espresso", &purchase(2, 2, 4_000, &[]), &storage, &devices);
    assert_eq!(reason, "the machine has no beans");
    machine.refill(0, 100);
    let cup = served(
        &runtime,
        "espresso",
        &purchase(2, 2, 5_000, &[("size-ml", "30")]),
        &storage,
        &devices,
    );
    let output = cup.result.unwrap();
    assert_eq!(output.get("cup-number"), Some("3"));
    assert_eq!(output.get("cups-for-buyer"), Some("1"));
    assert_eq!(machine.state().cups, 3);

    // Bad inputs are refusals with a reason, not failures.
    assert!(
        refused(
            &runtime,
            "espresso",
            &purchase(2, 2, 6_000, &[("size", "bucket")]),
            &storage,
            &devices
        )
        .contains("unknown size")
    );
    assert!(refused(&runtime, "espresso", &purchase(2, 1, 6_000, &[]), &storage, &devices).contains("costs 2"));
    assert!(
        refused(
            &runtime,
            "espresso",
            &purchase(2, 2, 6_000, &[]),
            &storage,
            &Devices::new()
        )
        .contains("no espresso machine")
    );
    assert_eq!(machine.state().cups, 3);
}

#[test]
fn radio_rental_leases_refuses_overlaps_and_reports_holders() {
    let runtime = runtime();
    runtime.load_file(RADIO_RENTAL).unwrap();
    let storage = memory();
    let lora = Arc::new(Radio::new(RadioKind::Lora));
    let devices = Devices::new()
        .with("lora0", lora.clone())
        .with("ble0", Arc::new(Radio::new(RadioKind::Ble)))
        .with("zigbee0", Arc::new(Radio::new(RadioKind::Zigbee)));
    let alice = 0xa1;
    let bob = 0xb0;
    let alice_hex = hex::encode([alice; 32]);

    // Alice pays 10: ten minutes from consensus time 1 000.
    let lease = served(
        &runtime,
        "radio-rental",
        &purchase(alice, 10, 1_000, &[("radio", "lora")]),
        &storage,
        &devices,
    );
    let output = lease.result.unwrap();
    assert_eq!(output.get("radio"), Some("lora0"));
    assert_eq!(output.get("until-ms"), Some("601000"));
    assert_eq!(lora.assignment(), Some((alice_hex.clone(), 601_000)));

    // Bob wants the same radio while Alice holds it: refused.
    let reason = refused(
        &runtime,
        "radio-rental",
        &purchase(bob, 10, 2_000, &[("radio", "lora0")]),
        &storage,
        &devices,
    );
    assert!(
        reason.contains("no free radio") && reason.contains("601000"),
        "{reason}"
    );
    // Bob takes the BLE radio instead.
    served(
        &runtime,
        "radio-rental",
        &purchase(bob, 20, 2_000, &[("radio", "ble")]),
        &storage,
        &devices,
    );

    // Alice extends her lease: it continues from its end.
    let extension = served(
        &runtime,
        "radio-rental",
        &purchase(alice, 15, 3_000, &[("radio", "lora")]),
        &storage,
        &devices,
    );
    assert_eq!(extension.result.unwrap().get("until-ms"), Some("1501000"));

    // Who holds which radio until when.
    let status = served(
        &runtime,
        "radio-rental",
        &purchase(bob, 10, 4_000, &[("action", "status")]),
        &storage,
        &devices,
    );
    let output = status.result.unwrap();
    assert_eq!(output.get("radio/lora0"), Some(format!("{alice_hex}@1501000").as_str()));
    assert_eq!(
        output.get("radio/ble0"),
        Some(format!("{}@1202000", hex::encode([bob; 32])).as_str())
    );
    assert_eq!(output.get("radio/zigbee0"), Some("free"));

    // After Alice's lease ends, Bob gets the LoRa radio.
    let later = served(
        &runtime,
        "radio-rental",
        &purchase(bob, 10, 1_501_000, &[("radio", "lora")]),
        &storage,
        &devices,
    );
    assert_eq!(later.result.unwrap().get("until-ms"), Some("2101000"));
    assert!(
        refused(
            &runtime,
            "radio-rental",
            &purchase(bob, 5, 1, &[("radio", "lora")]),
            &storage,
            &devices
        )
        .contains("minimum price")
    );
}

#[test]
fn compute_rental_computes_within_the_budget_bought() {
    let runtime = runtime();
    runtime.load_file(COMPUTE_RENTAL).unwrap();
    let storage = memory();
    let devices = Devices::new();

    let chain = served(
        &runtime,
        "compute",
        &purchase(
            3,
            2,
            1,
            &[("task", "sha256-chain"), ("input", "wallance"), ("rounds", "20000")],
        ),
        &storage,
        &devices,
    );
    let mut expected: [u8; 32] = Sha256::digest(b"wallance").into();
    for _ in 1..20_000 {
        expected = Sha256::digest(expected).into();
    }
    let output = chain.result.unwrap();
    assert_eq!(output.get("digest"), Some(hex::encode(expected).as_str()));
    assert_eq!(output.get("job"), Some("1"));

    let primes = served(
        &runtime,
        "compute",
        &purchase(3, 10, 2, &[("task", "prime-count"), ("below", "100000")]),
        &storage,
        &devices,
    );
    assert_eq!(primes.result.unwrap().get("primes"), Some("9592"));
    // More work costs more fuel: the sieve over 100 000 numbers against
    // 20 000 hash rounds is not comparable, so compare two chains.
    let short = served(
        &runtime,
        "compute",
        &purchase(3, 1, 3, &[("task", "sha256-chain"), ("input", "x"), ("rounds", "100")]),
        &storage,
        &devices,
    );
    assert!(short.fuel_used * 10 < chain.fuel_used);

    let reason = refused(
        &runtime,
        "compute",
        &purchase(3, 1, 4, &[("task", "prime-count"), ("below", "20000")]),
        &storage,
        &devices,
    );
    assert!(reason.contains("exceed the 10000 bought by price 1"), "{reason}");
    assert!(
        refused(
            &runtime,
            "compute",
            &purchase(3, 1, 4, &[("task", "mine-bitcoin")]),
            &storage,
            &devices
        )
        .contains("unknown task")
    );
}

#[test]
fn fuel_is_deterministic_across_runtimes() {
    // Every node must stop a contract at the same point: the same call
    // costs the same fuel on two independent runtimes.
    let fuel = |_: u8| {
        let runtime = runtime();
        runtime.load_file(COMPUTE_RENTAL).unwrap();
        served(
            &runtime,
            "compute",
            &purchase(3, 1, 1, &[("task", "sha256-chain"), ("input", "a"), ("rounds", "500")]),
            &memory(),
            &Devices::new(),
        )
        .fuel_used
    };
    assert_eq!(fuel(0), fuel(1));
}

#[test]
fn devices_are_granted_by_the_operator_config() {
    let runtime = runtime();
    runtime.load_file(ESPRESSO).unwrap();
    let machine = Arc::new(EspressoMachine::new(1000, 100));
    let mut grants = DeviceGrants::new();
    grants.add("espresso".into(), machine.clone(), vec!["espresso".into()]);
    grants.add(
        "lora0".into(),
        Arc::new(Radio::new(RadioKind::Lora)),
        vec!["radio-rental".into()],
    );
    let storage = memory();
    served(
        &runtime,
        "espresso",
        &purchase(1, 2, 1, &[]),
        &storage,
        &grants.for_service("espresso"),
    );
    assert_eq!(machine.state().cups, 1);
    // Granted to another service only: the espresso contract cannot see it.
    assert_eq!(grants.for_service("espresso").list().len(), 1);
    assert_eq!(machine.kind(), "espresso-machine");
}

#[test]
fn the_contract_template_builds_and_serves() {
    let runtime = runtime();
    let report = runtime.load_file(wallance_tests::CONTRACT_TEMPLATE).unwrap();
    assert_eq!(report.info.name, "guest-book");
    let storage = memory();
    let devices = Devices::new();
    served(
        &runtime,
        "guest-book",
        &purchase(1, 1, 10, &[("message", "first")]),
        &storage,
        &devices,
    );
    let second = served(
        &runtime,
        "guest-book",
        &purchase(2, 1, 20, &[("message", "second")]),
        &storage,
        &devices,
    );
    let output = second.result.unwrap();
    assert_eq!(output.message, "you are signature number 2");
    assert_eq!(output.get("entry/0000000002"), Some("02020202: second"));
    assert_eq!(output.get("entry/0000000001"), Some("01010101: first"));
    assert!(
        refused(&runtime, "guest-book", &purchase(3, 1, 30, &[]), &storage, &devices).contains("missing parameter")
    );
}

#[test]
fn a_purchase_run_again_after_a_crash_reuses_the_device_answers() {
    // A provider killed after the contract brewed and before the run was
    // recorded as done runs the purchase again on restart; its storage
    // writes were never committed, so the re-run starts from the same
    // storage. The machine must recognise the purchase and pour nothing.
    let runtime = runtime();
    runtime.load_file(ESPRESSO).unwrap();
    let machine = Arc::new(EspressoMachine::new(1000, 100));
    let devices = Devices::new().with("espresso", machine.clone());
    let paid = purchase(1, 2, 1_000, &[("size", "lungo")]);

    let first = served(&runtime, "espresso", &paid, &memory(), &devices);
    assert_eq!(machine.state().cups, 1);
    let again = served(&runtime, "espresso", &paid, &memory(), &devices);
    assert_eq!(machine.state().cups, 1, "the re-run brewed a second cup");
    assert_eq!(machine.state().water_ml, 890);
    assert_eq!(again.result, first.result);
    assert_eq!(again.fuel_used, first.fuel_used);
    assert_eq!(again.logs, first.logs);

    // Another purchase is another cup, even with the same parameters.
    let next = purchase(1, 2, 2_000, &[("size", "lungo")]);
    served(&runtime, "espresso", &next, &memory(), &devices);
    assert_eq!(machine.state().cups, 2);
}

#[test]
fn contract_log_lines_reach_the_node_log_at_info_under_the_service_name() {
    let runtime = runtime();
    runtime.load_file(ESPRESSO).unwrap();
    let machine = Arc::new(EspressoMachine::new(1000, 100));
    let devices = Devices::new().with("espresso", machine);
    let captured = crate::support::CapturedLog::default();
    // What an operator sees by default: info and above.
    let outcome = captured.at_info(|| served(&runtime, "espresso", &purchase(1, 2, 1, &[]), &memory(), &devices));
    let log = captured.text();
    let line = log
        .lines()
        .find(|line| line.contains("cup 1: espresso (40 ml)"))
        .unwrap_or_else(|| panic!("the contract's line is not in the node log:\n{log}"));
    assert!(line.contains(" INFO "), "{line}");
    assert!(line.contains(wallance_runtime::CONTRACT_LOG_TARGET), "{line}");
    assert!(line.contains("service=espresso"), "{line}");
    // And the same line comes back with the outcome, for the node to keep.
    assert_eq!(outcome.logs.len(), 1);
    assert_eq!(outcome.logs[0].level, LogLevel::Info);
    assert_eq!(outcome.logs[0].message, "cup 1: espresso (40 ml)");
}

/// An espresso machine that also records the key of every call it gets.
#[derive(Debug, Default)]
struct KeyRecorder {
    machine: Option<EspressoMachine>,
    keys: std::sync::Mutex<Vec<(CallKey, String)>>,
}

impl Device for KeyRecorder {
    fn kind(&self) -> &str {
        "espresso-machine"
    }
    fn call(&self, key: &CallKey, command: &str, args: &[(String, String)]) -> DeviceAnswer {
        self.keys.lock().unwrap().push((*key, command.to_string()));
        self.machine
            .as_ref()
            .expect("a machine inside")
            .call(key, command, args)
    }
}

#[test]
fn each_device_call_carries_the_purchase_id_and_its_position() {
    let runtime = runtime();
    runtime.load_file(ESPRESSO).unwrap();
    let recorder = Arc::new(KeyRecorder {
        machine: Some(EspressoMachine::new(1000, 100)),
        ..KeyRecorder::default()
    });
    let devices = Devices::new().with("espresso", recorder.clone());
    let first = purchase(1, 2, 1, &[]);
    let second = purchase(2, 2, 2, &[]);
    served(&runtime, "espresso", &first, &memory(), &devices);
    served(&runtime, "espresso", &second, &memory(), &devices);
    let key = |purchase: &wallance_runtime::Purchase, seq| CallKey {
        purchase_id: purchase.certificate,
        seq,
    };
    assert_eq!(
        *recorder.keys.lock().unwrap(),
        [
            (key(&first, 0), "status".to_string()),
            (key(&first, 1), "brew".to_string()),
            (key(&second, 0), "status".to_string()),
            (key(&second, 1), "brew".to_string()),
        ]
    );
}
