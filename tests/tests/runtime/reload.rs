//! Hot reload of the contracts folder, and the compiled-code cache.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use wallance_runtime::{
    ContractStorage, DeviceGrants, Devices, EspressoMachine, InvokeError, Limits, LoadError, RegistryEvent, Runtime,
    RuntimeConfig,
};
use wallance_tests::{COMPUTE_RENTAL, ECHO_V1, ECHO_V2, ESPRESSO, RADIO_RENTAL, SQUATTER};

use crate::support::{memory, purchase, runtime, runtime_with, storage};

const PATIENCE: Duration = Duration::from_secs(10);

/// The next event other than `LoadFailed` (returned separately) or
/// `Cleared` (a deploy tool's temporary file going).
fn next_change(events: &Receiver<RegistryEvent>) -> RegistryEvent {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left).expect("no registry event in time") {
            RegistryEvent::LoadFailed { .. } | RegistryEvent::Cleared { .. } => continue,
            event => return event,
        }
    }
}

fn next_failure(events: &Receiver<RegistryEvent>) -> String {
    loop {
        match events.recv_timeout(PATIENCE).expect("no registry event in time") {
            RegistryEvent::LoadFailed { error, .. } => return error,
            // The entry of an earlier failure, gone now the file loads.
            RegistryEvent::Cleared { .. } => continue,
            other => panic!("expected a rejected file, got {other:?}"),
        }
    }
}

fn say(runtime: &Runtime, text: &str) -> String {
    let outcome = runtime
        .invoke(
            "echo",
            &purchase(1, 2, 1, &[("say", text)]),
            &storage(),
            &Devices::new(),
        )
        .expect("echo runs");
    outcome.result.expect("echo serves").message
}

/// Copies via a temporary name and a rename, as deploy tools do.
fn drop_in(source: &str, dir: &Path, name: &str) {
    let tmp = dir.join(format!(".{name}.partial"));
    std::fs::copy(source, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[test]
fn files_added_replaced_and_removed_are_picked_up_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().canonicalize().unwrap();
    let runtime = runtime();
    let events = runtime.subscribe();
    let _watcher = runtime.watch(&dir_path).unwrap();
    assert!(runtime.services().is_empty());

    // Added.
    drop_in(ECHO_V1, &dir_path, "echo.wasm");
    let RegistryEvent::Added(info) = next_change(&events) else {
        panic!("expected Added")
    };
    assert_eq!(
        (info.name.as_str(), info.price, info.version.as_str()),
        ("echo", 1, "1")
    );
    assert_eq!(info.source.as_deref(), Some(dir_path.join("echo.wasm").as_path()));
    assert_eq!(say(&runtime, "hi"), "v1: hi");

    // Our own reads of the file must not trigger reloads.
    assert!(events.recv_timeout(Duration::from_millis(300)).is_err());

    // Replaced in place (overwrite, not rename).
    std::fs::write(dir_path.join("echo.wasm"), std::fs::read(ECHO_V2).unwrap()).unwrap();
    let RegistryEvent::Replaced { previous, current } = next_change(&events) else {
        panic!("expected Replaced")
    };
    assert_eq!((previous.version.as_str(), current.version.as_str()), ("1", "2"));
    assert_eq!(current.price, 2);
    assert_ne!(previous.contract_hash, current.contract_hash);
    assert_eq!(say(&runtime, "hi"), "v2: hi");

    // A second service beside it.
    drop_in(ESPRESSO, &dir_path, "espresso.wasm");
    let RegistryEvent::Added(info) = next_change(&events) else {
        panic!("expected Added")
    };
    assert_eq!(info.name, "espresso");

    // Removed.
    std::fs::remove_file(dir_path.join("echo.wasm")).unwrap();
    let RegistryEvent::Removed(info) = next_change(&events) else {
        panic!("expected Removed")
    };
    assert_eq!(info.name, "echo");
    let error = runtime
        .invoke("echo", &purchase(1, 2, 1, &[]), &storage(), &Devices::new())
        .unwrap_err();
    assert!(matches!(error, InvokeError::UnknownService(_)));
    assert_eq!(runtime.services().len(), 1);
}

#[test]
fn half_written_and_garbage_files_keep_the_previous_version_serving() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().canonicalize().unwrap();
    std::fs::copy(ECHO_V1, dir_path.join("echo.wasm")).unwrap();
    let runtime = runtime();
    let events = runtime.subscribe();
    // Already there at start: loaded by the initial scan.
    let _watcher = runtime.watch(&dir_path).unwrap();
    assert!(matches!(next_change(&events), RegistryEvent::Added(_)));
    assert_eq!(say(&runtime, "a"), "v1: a");

    // A writer stalls halfway through v2: rejected, v1 keeps serving.
    let v2 = std::fs::read(ECHO_V2).unwrap();
    let mut file = std::fs::File::create(dir_path.join("echo.wasm")).unwrap();
    file.write_all(&v2[..v2.len() / 2]).unwrap();
    file.flush().unwrap();
    let error = next_failure(&events);
    assert!(!error.is_empty());
    assert_eq!(say(&runtime, "b"), "v1: b");
    // The writer finishes: v2 is loaded.
    file.write_all(&v2[v2.len() / 2..]).unwrap();
    drop(file);
    let RegistryEvent::Replaced { current, .. } = next_change(&events) else {
        panic!("expected Replaced")
    };
    assert_eq!(current.version, "2");
    assert_eq!(say(&runtime, "c"), "v2: c");

    // Garbage replaces it: rejected with a clear reason, v2 keeps serving.
    std::fs::write(dir_path.join("echo.wasm"), b"definitely not a contract").unwrap();
    let error = next_failure(&events);
    assert!(error.contains("not a WebAssembly file"), "{error}");
    assert_eq!(say(&runtime, "d"), "v2: d");

    // Files that are not .wasm are not loaded, and say so.
    std::fs::write(dir_path.join("notes.txt"), b"hello").unwrap();
    let error = next_failure(&events);
    assert!(error.contains("not a .wasm file"), "{error}");
    assert_eq!(say(&runtime, "e"), "v2: e");
    assert!(events.recv_timeout(Duration::from_millis(300)).is_err());
}

#[test]
fn calls_in_flight_finish_on_the_version_they_started_with() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().canonicalize().unwrap();
    std::fs::copy(ECHO_V1, dir_path.join("echo.wasm")).unwrap();
    let runtime = runtime_with(RuntimeConfig {
        limits: Limits {
            fuel_per_call: 20_000_000_000,
            wall_time_max_ms: 60_000,
            ..Limits::default()
        },
        ..RuntimeConfig::default()
    });
    let events = runtime.subscribe();
    let _watcher = runtime.watch(&dir_path).unwrap();
    assert!(matches!(next_change(&events), RegistryEvent::Added(_)));

    let long_call = {
        let runtime = runtime.clone();
        std::thread::spawn(move || {
            let purchase = purchase(1, 1, 1, &[("say", "slow"), ("spin", "150000000")]);
            let started = Instant::now();
            let outcome = runtime.invoke("echo", &purchase, &storage(), &Devices::new());
            (outcome, started.elapsed())
        })
    };
    // Let the call start, then replace the contract under it.
    std::thread::sleep(Duration::from_millis(50));
    drop_in(ECHO_V2, &dir_path, "echo.wasm");
    assert!(matches!(next_change(&events), RegistryEvent::Replaced { .. }));
    assert_eq!(say(&runtime, "new"), "v2: new");
    let (outcome, elapsed) = long_call.join().unwrap();
    let outcome = outcome.expect("the long call finishes");
    assert_eq!(outcome.result.unwrap().message, "v1: slow");
    assert!(
        elapsed > Duration::from_millis(60),
        "the call was not in flight: {elapsed:?}"
    );
}

#[test]
fn a_node_with_cached_contracts_starts_without_compiling() {
    let cache = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    };

    let first = runtime_with(config.clone());
    for path in [ESPRESSO, RADIO_RENTAL, COMPUTE_RENTAL] {
        assert!(!first.load_file(path).unwrap().from_cache);
    }
    drop(first);

    // A restarted node: every contract comes from the cache.
    let second = runtime_with(config.clone());
    for path in [ESPRESSO, RADIO_RENTAL, COMPUTE_RENTAL] {
        let report = second.load_file(path).unwrap();
        assert!(report.from_cache, "{path} was compiled again");
        assert!(report.componentize.is_zero());
    }
    let outcome = second
        .invoke(
            "compute",
            &purchase(1, 1, 1, &[("task", "prime-count"), ("below", "100")]),
            &storage(),
            &Devices::new(),
        )
        .unwrap();
    assert_eq!(outcome.result.unwrap().get("primes"), Some("25"));

    // A corrupt cache entry is dropped and the contract compiled again.
    // It is replaced, not written in place: the runtimes above still map
    // the old entry (`DiskCache::load`), and entries are read-only.
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"corrupt").unwrap();
    }
    let third = runtime_with(config.clone());
    assert!(!third.load_file(ESPRESSO).unwrap().from_cache);
    assert!(runtime_with(config).load_file(ESPRESSO).unwrap().from_cache);

    // A different engine configuration never reads the other's entries.
    let no_fuel = runtime_with(RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        consume_fuel: false,
        ..RuntimeConfig::default()
    });
    assert!(!no_fuel.load_file(ESPRESSO).unwrap().from_cache);
}

/// A cached contract's code is mapped from its entry (`DiskCache::load`):
/// clearing the cache, as an operator or the collector does, must not pull
/// it from under a contract that serves, and entries are read-only so that
/// nothing writes one in place.
#[test]
fn a_contract_loaded_from_the_cache_serves_after_the_cache_is_cleared() {
    let cache = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(cache.path().join("cache")),
        ..RuntimeConfig::default()
    };
    assert!(
        !runtime_with(config.clone())
            .load_file(COMPUTE_RENTAL)
            .unwrap()
            .from_cache
    );
    let runtime = runtime_with(config.clone());
    assert!(runtime.load_file(COMPUTE_RENTAL).unwrap().from_cache);
    let entries: Vec<_> = std::fs::read_dir(cache.path().join("cache"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert!(!entries.is_empty());
    for entry in &entries {
        let permissions = std::fs::metadata(entry).unwrap().permissions();
        assert!(permissions.readonly(), "{} is writable", entry.display());
    }

    std::fs::remove_dir_all(cache.path().join("cache")).unwrap();
    for (below, primes) in [("100", "25"), ("1000", "168"), ("10000", "1229")] {
        let outcome = runtime
            .invoke(
                "compute",
                &purchase(1, 1, 1, &[("task", "prime-count"), ("below", below)]),
                &storage(),
                &Devices::new(),
            )
            .unwrap();
        assert_eq!(outcome.result.unwrap().get("primes"), Some(primes));
    }
    // A restart compiles again, and caches again.
    assert!(
        !runtime_with(config.clone())
            .load_file(COMPUTE_RENTAL)
            .unwrap()
            .from_cache
    );
    assert!(runtime_with(config).load_file(COMPUTE_RENTAL).unwrap().from_cache);
}

#[test]
fn precompiled_artifacts_in_the_drop_folder_are_refused() {
    // Even a genuine artifact from our own cache is refused when it comes
    // through the contracts folder.
    let cache = tempfile::tempdir().unwrap();
    let runtime = runtime_with(RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    });
    runtime.load_file(ESPRESSO).unwrap();
    let artifact = std::fs::read_dir(cache.path()).unwrap().next().unwrap().unwrap().path();
    let drop_dir = tempfile::tempdir().unwrap();
    let dropped = drop_dir.path().join("sneaky.wasm");
    std::fs::copy(artifact, &dropped).unwrap();
    let error = runtime.load_file(&dropped).unwrap_err();
    assert!(
        error.to_string().contains("precompiled native code is never loaded"),
        "{error}"
    );
}

/// The events of a start-up: one per file, in no promised order.
fn start_up_events(events: &Receiver<RegistryEvent>, n_files: usize) -> Vec<RegistryEvent> {
    (0..n_files)
        .map(|_| events.recv_timeout(PATIENCE).expect("an event per file"))
        .collect()
}

fn espresso_source(runtime: &Runtime) -> Option<std::path::PathBuf> {
    runtime.service("espresso").and_then(|s| s.source)
}

#[test]
fn a_file_announcing_another_files_service_is_refused_at_start_up_exactly_as_at_runtime() {
    // A squatter announces "espresso" from a file whose name sorts before
    // espresso.wasm. It must never get the espresso storage or machine:
    // not at start-up (where it used to win by loading first), not when
    // dropped at runtime, and deleting it must not hide the real one.
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().canonicalize().unwrap();
    let squatter_path = dir_path.join("0-espresso.wasm");
    std::fs::copy(SQUATTER, &squatter_path).unwrap();
    std::fs::copy(ESPRESSO, dir_path.join("espresso.wasm")).unwrap();
    let mut grants = DeviceGrants::new();
    let machine = Arc::new(EspressoMachine::new(1_000, 100));
    grants.add("espresso".into(), machine.clone(), vec!["espresso".into()]);
    let storage = memory();
    let backend: Arc<dyn ContractStorage> = storage.clone();
    let buy = |runtime: &Runtime, n: u8| {
        let outcome = runtime
            .invoke(
                "espresso",
                &purchase(n, 2, u64::from(n), &[]),
                &backend,
                &grants.for_service("espresso"),
            )
            .expect("espresso runs");
        // As the node does: the run's writes land with its outcome.
        storage.apply("espresso", &outcome.writes);
        outcome.result.expect("espresso serves")
    };

    let runtime = runtime();
    let events = runtime.subscribe();
    let watcher = runtime.watch(&dir_path).unwrap();
    let at_start_up = start_up_events(&events, 2);
    let refusal_at_start_up = at_start_up
        .iter()
        .find_map(|event| match event {
            RegistryEvent::LoadFailed { path, error } if *path == squatter_path => Some(error.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("the squatter was not refused at start-up: {at_start_up:?}"));
    assert!(
        refusal_at_start_up.contains("offers service \"0-espresso\"")
            && refusal_at_start_up.contains("announces \"espresso\""),
        "{refusal_at_start_up}"
    );
    assert_eq!(espresso_source(&runtime), Some(dir_path.join("espresso.wasm")));
    let cup = buy(&runtime, 1);
    assert_eq!(cup.message, "brewed a 40 ml espresso");
    assert_eq!(cup.get("cup-number"), Some("1"));

    // At runtime: the same file dropped again gets the same refusal.
    std::fs::remove_file(&squatter_path).unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left).expect("the removal is noticed") {
            RegistryEvent::Cleared { path } if path == squatter_path => break,
            _ => continue,
        }
    }
    drop_in(SQUATTER, &dir_path, "0-espresso.wasm");
    assert_eq!(next_failure(&events), refusal_at_start_up);
    assert_eq!(espresso_source(&runtime), Some(dir_path.join("espresso.wasm")));

    // Deleting the squatter leaves the real espresso serving, storage and
    // machine included.
    std::fs::remove_file(&squatter_path).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(buy(&runtime, 2).get("cup-number"), Some("2"));
    assert_eq!(machine.state().cups, 2);

    // A restart with the squatter back in the folder: the same again.
    drop(watcher);
    std::fs::copy(SQUATTER, &squatter_path).unwrap();
    let restarted = self::runtime();
    let events = restarted.subscribe();
    let _watcher = restarted.watch(&dir_path).unwrap();
    let refusals: Vec<String> = start_up_events(&events, 2)
        .into_iter()
        .filter_map(|event| match event {
            RegistryEvent::LoadFailed { error, .. } => Some(error),
            _ => None,
        })
        .collect();
    assert_eq!(refusals, [refusal_at_start_up]);
    assert_eq!(espresso_source(&restarted), Some(dir_path.join("espresso.wasm")));
    assert_eq!(buy(&restarted, 3).get("cup-number"), Some("3"));
    assert_eq!(machine.state().cups, 3);
}

#[test]
fn a_file_serves_only_under_its_own_name() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().canonicalize().unwrap();
    let runtime = runtime();
    // Under its own name the squatter is just another service: its own
    // storage namespace, no device granted to "espresso".
    let own = dir_path.join("espresso-free.wasm");
    std::fs::copy(SQUATTER, &own).unwrap();
    let error = runtime.load_file(&own).unwrap_err();
    assert!(matches!(error, LoadError::NameMismatch { .. }), "{error}");
    // cargo's spelling of a hyphenated crate is refused before compiling,
    // with the name to use.
    let cargo_name = dir_path.join("radio_rental.wasm");
    std::fs::copy(RADIO_RENTAL, &cargo_name).unwrap();
    let error = runtime.load_file(&cargo_name).unwrap_err();
    assert!(matches!(error, LoadError::FileName { .. }), "{error}");
    assert!(error.to_string().contains("did you mean radio-rental.wasm?"), "{error}");
    let upper = dir_path.join("Echo.wasm");
    std::fs::copy(ECHO_V1, &upper).unwrap();
    assert!(matches!(runtime.load_file(&upper), Err(LoadError::FileName { .. })));
    assert!(runtime.services().is_empty());
    // Renamed as the error says, it loads.
    std::fs::rename(&cargo_name, dir_path.join("radio-rental.wasm")).unwrap();
    runtime.load_file(dir_path.join("radio-rental.wasm")).unwrap();
    assert_eq!(runtime.services().len(), 1);
}
