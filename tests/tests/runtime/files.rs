//! No file in the contracts folder can hurt the node: shape limits checked
//! before compiling, refusals remembered by content hash, the compiled
//! cache collected, contract-supplied names bounded, every folder entry that
//! is not loaded reported (and cleared when it goes), and a first scan that
//! does not hold up the caller.

use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use wallance_runtime::{FailureCause, Limits, LoadError, ModuleLimits, RegistryEvent, RuntimeConfig, folder_entry};
use wallance_tests::{ECHO_V1, ESPRESSO, INFO_LOOP, LONG_NAME, RADIO_RENTAL};
use wasm_encoder::{
    CodeSection, Component, ConstExpr, CustomSection, DataSection, ElementSection, Elements, EntityType, ExportKind,
    ExportSection, Function, FunctionSection, GlobalSection, GlobalType, ImportSection, Instruction, MemorySection,
    MemoryType, Module, ModuleSection, RefType, TableSection, TableType, TypeSection, ValType,
};

use crate::support::{runtime, runtime_with};

const PATIENCE: Duration = Duration::from_secs(10);

/// A core module with `n_functions` functions of type `() -> i32`, each
/// adding `n_adds` constants (3 bytes of code per addition).
fn module_with_functions(n_functions: u32, n_adds: u32) -> Module {
    let mut types = TypeSection::new();
    types.ty().function([], [ValType::I32]);
    let mut functions = FunctionSection::new();
    let mut code = CodeSection::new();
    for _ in 0..n_functions {
        functions.function(0);
        let mut body = Function::new([]);
        body.instruction(&Instruction::I32Const(1));
        for _ in 0..n_adds {
            body.instruction(&Instruction::I32Const(1));
            body.instruction(&Instruction::I32Add);
        }
        body.instruction(&Instruction::End);
        code.function(&body);
    }
    let mut module = Module::new();
    module.section(&types).section(&functions).section(&code);
    module
}

/// The module as the only thing inside a component: wasmtime compiles
/// every function of it before it finds out the component is no contract.
fn in_component(module: &Module) -> Vec<u8> {
    let mut component = Component::new();
    component.section(&ModuleSection(module));
    component.finish()
}

fn over_limit(error: &LoadError) -> (&'static str, u64, u64) {
    match error {
        LoadError::OverLimit { what, count, limit } => (*what, *count, *limit),
        other => panic!("expected a limit, got {other}"),
    }
}

#[test]
fn a_compile_bomb_is_refused_before_compiling() {
    // 30 000 functions of ~300 bytes: compiling this took 34-53 s on a
    // gateway (see the README for the figure on this machine).
    let bomb = in_component(&module_with_functions(30_000, 100));
    assert!(bomb.len() > 8 << 20);
    let runtime = runtime();
    let started = Instant::now();
    let error = runtime.load_bytes(&bomb).unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(over_limit(&error), ("functions", 30_000, 10_000), "{error}");
    assert!(error.to_string().contains("before compiling"), "{error}");
    assert!(elapsed < Duration::from_secs(1), "refusing took {elapsed:?}");

    // Few functions but one enormous body; and too much code in all.
    let one_huge = in_component(&module_with_functions(1, 200_000));
    let (what, count, limit) = over_limit(&runtime.load_bytes(&one_huge).unwrap_err());
    assert_eq!((what, limit), ("bytes in one function body", 512 << 10));
    assert!(count > 600_000, "{count}");
    let lots_of_code = in_component(&module_with_functions(20, 100_000));
    let (what, count, limit) = over_limit(&runtime.load_bytes(&lots_of_code).unwrap_err());
    assert_eq!((what, limit), ("code bytes", 2 << 20));
    assert!(count > 2 << 20, "{count}");
}

#[test]
fn each_shape_limit_is_checked_and_named() {
    let limits = ModuleLimits {
        types_max: 3,
        imports_max: 3,
        exports_max: 3,
        globals_max: 3,
        tables_max: 1,
        memories_max: 1,
        data_segments_max: 3,
        element_segments_max: 3,
        custom_sections_max: 3,
        function_locals_max: 100,
        nested_modules_max: 2,
        ..ModuleLimits::default()
    };
    let runtime = runtime_with(RuntimeConfig {
        limits: Limits {
            module: limits,
            ..Limits::default()
        },
        ..RuntimeConfig::default()
    });
    let check = |bytes: Vec<u8>, expected: &str, count: u64| {
        let error = runtime.load_bytes(&bytes).unwrap_err();
        let (what, got, _) = over_limit(&error);
        assert_eq!((what, got), (expected, count), "{error}");
    };
    let build = |edit: &dyn Fn(&mut Module)| {
        let mut module = Module::new();
        edit(&mut module);
        module.finish()
    };

    check(
        build(&|m| {
            let mut types = TypeSection::new();
            for _ in 0..4 {
                types.ty().function([], []);
            }
            m.section(&types);
        }),
        "types",
        4,
    );
    check(
        build(&|m| {
            let mut imports = ImportSection::new();
            for i in 0..4 {
                imports.import(
                    "env",
                    &format!("g{i}"),
                    EntityType::Global(GlobalType {
                        val_type: ValType::I32,
                        mutable: false,
                        shared: false,
                    }),
                );
            }
            m.section(&imports);
        }),
        "imports",
        4,
    );
    check(
        build(&|m| {
            let mut globals = GlobalSection::new();
            for _ in 0..4 {
                globals.global(
                    GlobalType {
                        val_type: ValType::I32,
                        mutable: false,
                        shared: false,
                    },
                    &ConstExpr::i32_const(0),
                );
            }
            m.section(&globals);
        }),
        "globals",
        4,
    );
    let table = TableType {
        element_type: RefType::FUNCREF,
        table64: false,
        minimum: 1,
        maximum: None,
        shared: false,
    };
    check(
        build(&|m| {
            let mut tables = TableSection::new();
            tables.table(table).table(table);
            m.section(&tables);
        }),
        "tables",
        2,
    );
    check(
        build(&|m| {
            let mut tables = TableSection::new();
            tables.table(TableType {
                minimum: 1_000_000,
                ..table
            });
            m.section(&tables);
        }),
        "initial table elements",
        1_000_000,
    );
    let memory = MemoryType {
        minimum: 1,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    };
    check(
        build(&|m| {
            let mut memories = MemorySection::new();
            memories.memory(memory).memory(memory);
            m.section(&memories);
        }),
        "memories",
        2,
    );
    check(
        build(&|m| {
            let mut memories = MemorySection::new();
            memories.memory(MemoryType {
                minimum: 1_000,
                ..memory
            });
            m.section(&memories);
        }),
        "initial memory bytes",
        1_000 << 16,
    );
    check(
        build(&|m| {
            let mut memories = MemorySection::new();
            memories.memory(memory);
            let mut exports = ExportSection::new();
            for i in 0..4 {
                exports.export(&format!("m{i}"), ExportKind::Memory, 0);
            }
            m.section(&memories).section(&exports);
        }),
        "exports",
        4,
    );
    check(
        build(&|m| {
            let mut data = DataSection::new();
            for _ in 0..4 {
                data.passive([1u8, 2, 3]);
            }
            m.section(&data);
        }),
        "data segments",
        4,
    );
    check(
        build(&|m| {
            let mut elements = ElementSection::new();
            for _ in 0..4 {
                elements.passive(Elements::Functions(std::borrow::Cow::Borrowed(&[])));
            }
            m.section(&elements);
        }),
        "element segments",
        4,
    );
    check(
        build(&|m| {
            for i in 0..4 {
                m.section(&CustomSection {
                    name: format!("c{i}").into(),
                    data: std::borrow::Cow::Borrowed(&[0u8; 8]),
                });
            }
        }),
        "custom sections",
        4,
    );
    check(
        build(&|m| {
            let mut types = TypeSection::new();
            types.ty().function([], []);
            let mut functions = FunctionSection::new();
            functions.function(0);
            let mut code = CodeSection::new();
            let mut body = Function::new([(60, ValType::I32), (60, ValType::I64)]);
            body.instruction(&Instruction::End);
            code.function(&body);
            m.section(&types).section(&functions).section(&code);
        }),
        "locals in one function",
        120,
    );
    let mut component = Component::new();
    for _ in 0..3 {
        component.section(&ModuleSection(&Module::new()));
    }
    check(component.finish(), "nested modules and components", 3);
}

#[test]
fn an_oversized_file_is_refused_with_its_real_size_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.wasm");
    // Sparse: 50 MB of size, no data.
    std::fs::File::create(&path).unwrap().set_len(50_000_000).unwrap();
    let error = runtime().load_file(&path).unwrap_err();
    assert!(
        matches!(
            error,
            LoadError::TooLarge {
                len_bytes: 50_000_000,
                limit_bytes: 16_777_216
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("50000000 bytes"), "{error}");
}

fn cache_files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

#[test]
fn refusals_are_remembered_by_content_hash_across_restarts() {
    let cache = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    };
    let first = runtime_with(config.clone());
    let error = first.load_file(INFO_LOOP).unwrap_err();
    assert!(
        matches!(error, LoadError::Info(FailureCause::OutOfFuel { .. })),
        "{error}"
    );
    // Refused code leaves no compiled entry, only the refusal.
    assert!(cache_files(cache.path(), "cwasm").is_empty());
    assert_eq!(cache_files(cache.path(), "refused").len(), 1);

    // Again in the same process: not compiled, not run.
    let started = Instant::now();
    let error = first.load_file(INFO_LOOP).unwrap_err();
    let LoadError::Remembered { reason } = &error else {
        panic!("expected a remembered refusal, got {error}");
    };
    assert!(reason.contains("ran out of fuel"), "{reason}");
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );

    // After a restart too, from the cache dir.
    drop(first);
    let second = runtime_with(config.clone());
    let error = second.load_file(INFO_LOOP).unwrap_err();
    assert!(matches!(error, LoadError::Remembered { .. }), "{error}");

    // Other limits, other verdict: the file is tried again.
    let generous = runtime_with(RuntimeConfig {
        limits: Limits {
            fuel_for_info: 20_000_000,
            ..Limits::default()
        },
        ..config
    });
    let error = generous.load_file(INFO_LOOP).unwrap_err();
    assert!(
        matches!(error, LoadError::Info(FailureCause::OutOfFuel { limit: 20_000_000 })),
        "{error}"
    );
    // Good contracts still load, and are cached.
    second.load_file(ESPRESSO).unwrap();
    assert_eq!(cache_files(cache.path(), "cwasm").len(), 1);
}

#[test]
fn the_compiled_cache_is_collected() {
    let cache = tempfile::tempdir().unwrap();
    let folder = tempfile::tempdir().unwrap();
    for (source, name) in [
        (ESPRESSO, "espresso.wasm"),
        (ECHO_V1, "echo.wasm"),
        (RADIO_RENTAL, "radio-rental.wasm"),
    ] {
        std::fs::copy(source, folder.path().join(name)).unwrap();
    }
    let config = RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        cache_unused_keep: Duration::ZERO,
        ..RuntimeConfig::default()
    };
    let runtime = runtime_with(config.clone());
    for result in runtime.load_dir(folder.path()) {
        result.1.unwrap();
    }
    assert_eq!(cache_files(cache.path(), "cwasm").len(), 3);
    // A leftover of another engine version, and a file that is not ours.
    let foreign = cache
        .path()
        .join(format!("{}-0123456789abcdef01234567.cwasm", "ab".repeat(32)));
    std::fs::write(&foreign, [0u8; 1000]).unwrap();
    std::fs::write(cache.path().join("README"), "operator notes").unwrap();

    // Everything in use stays; the foreign entry is unused and old enough.
    let collected = runtime.collect_cache();
    assert_eq!(
        (collected.removed_entries, collected.kept_entries),
        (1, 3),
        "{collected:?}"
    );
    assert!(!foreign.exists());
    assert!(cache.path().join("README").exists());

    // Withdrawn contracts' entries go.
    runtime.unload("echo").unwrap();
    runtime.unload("radio-rental").unwrap();
    let collected = runtime.collect_cache();
    assert_eq!(
        (collected.removed_entries, collected.kept_entries),
        (2, 1),
        "{collected:?}"
    );

    // Recently used but over the size bound: the oldest unused go first,
    // entries in use never.
    let bounded = runtime_with(RuntimeConfig {
        cache_unused_keep: Duration::from_secs(3600),
        cache_bytes_max: 1,
        ..config
    });
    bounded.load_file(folder.path().join("echo.wasm")).unwrap();
    bounded.load_file(folder.path().join("radio-rental.wasm")).unwrap();
    bounded.unload("echo").unwrap();
    let collected = bounded.collect_cache();
    // Only radio-rental is loaded in `bounded`: espresso's and echo's
    // entries go although they are recent.
    assert_eq!(
        (collected.removed_entries, collected.kept_entries),
        (2, 1),
        "{collected:?}"
    );
    assert_eq!(cache_files(cache.path(), "cwasm").len(), 1);
}

#[test]
fn a_huge_service_name_is_refused_without_being_echoed() {
    let runtime = runtime();
    let error = runtime.load_file(LONG_NAME).unwrap_err();
    assert!(matches!(error, LoadError::InvalidInfo(_)), "{error}");
    let text = error.to_string();
    assert!(text.len() < 400, "{} bytes", text.len());
    assert!(!text.chars().any(char::is_control), "{text:?}");
    assert!(text.contains("1048576 bytes in all"), "{text}");
}

fn next_event(events: &Receiver<RegistryEvent>) -> RegistryEvent {
    events.recv_timeout(PATIENCE).expect("no registry event in time")
}

fn make_fifo(path: &Path) {
    let status = std::process::Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

#[test]
fn every_folder_entry_that_is_not_loaded_is_reported_then_cleared() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("espresso.wasm");
    std::fs::copy(ESPRESSO, &target).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    std::fs::copy(ECHO_V1, dir.join("echo.wasm")).unwrap();
    std::fs::create_dir(dir.join("sub.wasm")).unwrap();
    make_fifo(&dir.join("pipe.wasm"));
    std::os::unix::fs::symlink(&target, dir.join("link.wasm")).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a contract").unwrap();
    std::fs::write(dir.join("garbage.wasm"), "not wasm either").unwrap();
    std::fs::write(dir.join(".echo.wasm.partial"), "a deploy tool's temporary file").unwrap();

    let runtime = runtime();
    let events = runtime.subscribe();
    // Returns although a FIFO sits in the folder: it is never opened.
    let watcher = runtime.watch(&dir).unwrap();
    let names: Vec<String> = runtime.services().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["echo"]);
    let not_loaded = runtime.not_loaded();
    let reason = |name: &str| {
        not_loaded
            .iter()
            .find(|(path, _)| path == &dir.join(name))
            .map(|(_, why)| why.clone())
            .unwrap_or_else(|| panic!("no entry for {name}: {not_loaded:?}"))
    };
    assert!(reason("sub.wasm").contains("a directory"));
    assert!(reason("pipe.wasm").contains("a FIFO"));
    assert!(reason("link.wasm").contains("symbolic link"));
    assert!(reason("notes.txt").contains("not a .wasm file"));
    assert!(reason("garbage.wasm").contains("not a WebAssembly file"));
    assert_eq!(not_loaded.len(), 5, "{not_loaded:?}");
    let mut failed = Vec::new();
    while let Ok(event) = events.recv_timeout(Duration::from_millis(200)) {
        if let RegistryEvent::LoadFailed { path, .. } = event {
            failed.push(path);
        }
    }
    failed.sort();
    let mut expected: Vec<PathBuf> = not_loaded.iter().map(|(p, _)| p.clone()).collect();
    expected.sort();
    assert_eq!(failed, expected);
    assert_eq!(folder_entry(&dir.join(".echo.wasm.partial")).map(|r| r.is_ok()), None);

    // Each entry goes when its file goes.
    for name in ["sub.wasm", "pipe.wasm", "link.wasm", "notes.txt", "garbage.wasm"] {
        let path = dir.join(name);
        if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
        let event = next_event(&events);
        assert_eq!(event, RegistryEvent::Cleared { path }, "after removing {name}");
    }
    assert!(runtime.not_loaded().is_empty());

    // A FIFO created while watching is reported, not read.
    make_fifo(&dir.join("late.wasm"));
    let RegistryEvent::LoadFailed { path, error } = next_event(&events) else {
        panic!("expected LoadFailed")
    };
    assert_eq!(path, dir.join("late.wasm"));
    assert!(error.contains("a FIFO"), "{error}");
    // And the watcher still serves the folder.
    std::fs::copy(ESPRESSO, dir.join("espresso.wasm")).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while runtime.service("espresso").is_none() {
        assert!(Instant::now() < deadline, "espresso never loaded");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(watcher);
}

#[test]
fn the_first_scan_can_run_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    for (source, name) in [
        (ESPRESSO, "espresso.wasm"),
        (ECHO_V1, "echo.wasm"),
        (RADIO_RENTAL, "radio-rental.wasm"),
    ] {
        std::fs::copy(source, dir.join(name)).unwrap();
    }
    // A module that compiles for about half a second here (the largest
    // the default limits let through takes a few seconds), next to the
    // contracts.
    std::fs::write(dir.join("slow.wasm"), in_component(&module_with_functions(1_000, 100))).unwrap();

    let runtime = runtime();
    let events = runtime.subscribe();
    let started = Instant::now();
    let _watcher = runtime.watch_in_background(&dir).unwrap();
    let returned_after = started.elapsed();
    assert!(returned_after < Duration::from_millis(200), "{returned_after:?}");

    let mut added = Vec::new();
    let mut failed = Vec::new();
    while added.len() + failed.len() < 4 {
        match next_event(&events) {
            RegistryEvent::Added(info) => added.push(info.name),
            RegistryEvent::LoadFailed { path, .. } => failed.push(path),
            other => panic!("unexpected {other:?}"),
        }
    }
    added.sort();
    assert_eq!(added, ["echo", "espresso", "radio-rental"]);
    assert_eq!(failed, [dir.join("slow.wasm")]);
    let scanned_after = started.elapsed();
    assert!(
        scanned_after > returned_after * 5,
        "{scanned_after:?} vs {returned_after:?}"
    );
    assert!(runtime.wait_for_first_scans(PATIENCE));

    // A caller that must not act before the folder is loaded can wait.
    let later = runtime_with(RuntimeConfig::default());
    let _watcher = later.watch_in_background(&dir).unwrap();
    assert!(later.wait_for_first_scans(PATIENCE));
    assert_eq!(later.services().len(), 3);
}

#[test]
fn a_folder_full_of_junk_is_listed_up_to_a_bound() {
    let dir = tempfile::tempdir().unwrap();
    let n_junk = wallance_runtime::NOT_LOADED_ENTRIES_MAX + 10;
    for i in 0..n_junk {
        std::fs::write(dir.path().join(format!("junk-{i}.txt")), b"").unwrap();
    }
    std::fs::copy(ECHO_V1, dir.path().join("echo.wasm")).unwrap();
    let runtime = runtime();
    let events = runtime.subscribe();
    let results = runtime.load_dir(dir.path());
    assert_eq!(results.len(), n_junk + 1);
    assert_eq!(runtime.service("echo").map(|s| s.name), Some("echo".into()));
    assert_eq!(runtime.not_loaded().len(), wallance_runtime::NOT_LOADED_ENTRIES_MAX);
    let n_failed = events
        .try_iter()
        .filter(|e| matches!(e, RegistryEvent::LoadFailed { .. }))
        .count();
    assert_eq!(n_failed, wallance_runtime::NOT_LOADED_ENTRIES_MAX);
}
