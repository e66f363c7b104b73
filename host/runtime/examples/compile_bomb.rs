//! Time and memory a compile bomb costs, with and without the shape limits.
//!
//! `cargo run --release -p wallance-runtime --example compile_bomb [functions] [adds]`
//!
//! Builds a component holding one core module of `functions` (30 000)
//! functions of `adds` (100) additions each (about 300 bytes of code per
//! function, the shape reported in issue 9), then:
//! 1. loads it with the default limits (refused before compiling);
//! 2. loads it with the shape limits lifted (what the runtime did before:
//!    a full compile, then a refusal because it is no contract);
//! 3. loads the largest module of that shape the default limits accept.
//!
//! Prints wall time and the process's RSS (VmRSS) around each step.

use std::time::Instant;

use anyhow::Result;
use wallance_runtime::{Limits, ModuleLimits, Runtime, RuntimeConfig};
use wasm_encoder::{
    CodeSection, Component, Function, FunctionSection, Instruction, Module, ModuleSection, TypeSection, ValType,
};

fn bomb(n_functions: u32, n_adds: u32) -> Vec<u8> {
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
    let mut component = Component::new();
    component.section(&ModuleSection(&module));
    component.finish()
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn step(what: &str, runtime: &Runtime, bytes: &[u8]) {
    let before = rss_mib();
    let started = Instant::now();
    let result = runtime.load_bytes(bytes);
    let elapsed = started.elapsed();
    let error = result.err().map_or("loaded".to_string(), |e| {
        let text = e.to_string();
        text.chars().take(100).collect()
    });
    println!(
        "{what}: {:.3} s, RSS {before:.0} -> {:.0} MiB ({error})",
        elapsed.as_secs_f64(),
        rss_mib()
    );
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let n_functions: u32 = args.next().map_or(Ok(30_000), |a| a.parse())?;
    let n_adds: u32 = args.next().map_or(Ok(100), |a| a.parse())?;
    let bytes = bomb(n_functions, n_adds);
    println!("{n_functions} functions x {n_adds} additions: {} bytes", bytes.len());

    let limited = Runtime::new(RuntimeConfig::default())?;
    step("default limits", &limited, &bytes);

    let unlimited = Runtime::new(RuntimeConfig {
        limits: Limits {
            module: ModuleLimits {
                functions_max: u64::MAX,
                code_bytes_max: u64::MAX,
                ..ModuleLimits::default()
            },
            ..Limits::default()
        },
        ..RuntimeConfig::default()
    })?;
    step("shape limits lifted (the old behaviour)", &unlimited, &bytes);

    let defaults = ModuleLimits::default();
    let per_function = (bytes.len() as u64 / u64::from(n_functions)).max(1);
    let largest = (defaults.code_bytes_max / per_function).min(defaults.functions_max) as u32 - 1;
    step(
        &format!("largest accepted shape ({largest} functions)"),
        &limited,
        &bomb(largest, n_adds),
    );
    Ok(())
}
