//! `cargo xtask demo`: the main job (a local network buying an espresso).
//! `cargo xtask ci`: everything CI checks, in the order a developer wants
//! to hear about it, starting with `cargo xtask tidy` (docs true to the
//! code, the core free of the OS: see tidy.rs). `cargo xtask setup` installs what a fresh machine lacks
//! (the wasm32 target; Debian packages when run as root).
//! `cargo xtask cross-determinism`: the same purchases on x86-64 and on
//! aarch64 (under qemu-user), outcomes, storage and fuel compared bit for bit.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

mod deb;
mod tidy;

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("could not start {program}"))?;
    if !status.success() {
        bail!("{program} {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn has(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

fn setup() -> anyhow::Result<()> {
    // Contracts build for wasm32; rustup adds the target in seconds.
    run("rustup", &["target", "add", "wasm32-unknown-unknown"])?;
    // DDS tests run in private network namespaces: unshare and ip.
    let missing: Vec<&str> = [("ip", "iproute2"), ("unshare", "util-linux")]
        .iter()
        .filter(|(bin, _)| !has(bin))
        .map(|(_, pkg)| *pkg)
        .collect();
    if !missing.is_empty() {
        if !is_root() {
            bail!("missing Debian packages {missing:?}: install them with apt-get as root");
        }
        run("apt-get", &["update", "-q"])?;
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend(missing);
        run("apt-get", &args)?;
    }
    Ok(())
}

fn ci() -> anyhow::Result<()> {
    setup()?;
    tidy::tidy(&tidy::repository_root())?;
    run("cargo", &["fmt", "--all", "--check"])?;
    run(
        "cargo",
        &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"],
    )?;
    run("cargo", &["test", "--workspace"])?;
    // The gateway's architecture: an aarch64 node under qemu-user in a
    // mixed network, and the same contract calls compared bit for bit.
    // .ci/run installs the cross toolchain and sets WALLANCE_CROSS=required.
    let missing = cross_prerequisites();
    let mut gateway_bench = vec!["run", "--quiet", "-p", "wallance", "--", "bench-gateway", "--short"];
    let arm_node;
    if missing.is_empty() {
        cross_network()?;
        cross_determinism()?;
        arm_node = target_dir()?.join(AARCH64).join("debug/wallance");
        gateway_bench.extend(["--aarch64", arm_node.to_str().context("target dir")?]);
    } else if std::env::var("WALLANCE_CROSS").as_deref() == Ok("required") {
        bail!("WALLANCE_CROSS=required but missing:\n  - {}", missing.join("\n  - "));
    } else {
        eprintln!(
            "skipping the aarch64 tests (cross-network, cross-determinism); missing:\n  - {}",
            missing.join("\n  - ")
        );
    }
    // Every benchmark the README lists, in a short mode, so none can rot.
    run("cargo", &gateway_bench)?;
    bench_smoke()?;
    // The package installed and run under a real systemd, in a throwaway
    // overlay of the machine (packaging/debian/test-in-systemd.sh): root only.
    if is_root() {
        let target = target_dir()?;
        let binary = target.join("debug/wallance");
        run(
            "cargo",
            &[
                "xtask",
                "deb",
                "--profile",
                "dev",
                "--binary",
                binary.to_str().context("target dir")?,
            ],
        )?;
        let version = env!("CARGO_PKG_VERSION");
        let deb = target.join(format!("deb/dev/wallance_{version}_amd64.deb"));
        let espresso = target.join("wasm-guests/wasm32-unknown-unknown/release/espresso.wasm");
        if std::env::consts::ARCH == "x86_64" {
            run(
                "sh",
                &[
                    "packaging/debian/test-in-systemd.sh",
                    deb.to_str().context("target dir")?,
                    espresso.to_str().context("target dir")?,
                ],
            )?;
        }
    } else {
        eprintln!("skipping packaging/debian/test-in-systemd.sh: it needs root");
    }
    // Interop with another DDS vendor needs Python with Eclipse Cyclone DDS
    // (`pip install cyclonedds`); .ci/run sets it up and names it here.
    if std::env::var_os("WALLANCE_INTEROP_PYTHON").is_some() {
        run(
            "cargo",
            &["test", "-p", "wallance-dds", "--test", "interop", "--", "--ignored"],
        )?;
        // Bounded under attack: the same Cyclone peer replays a recorded,
        // mutated flood at 4 real nodes for 30 s (host/node/tests/flood.rs).
        run(
            "cargo",
            &["test", "-p", "wallance", "--test", "flood", "--", "--ignored"],
        )?;
    } else {
        eprintln!(
            "skipping the Cyclone DDS interop and flood tests: set WALLANCE_INTEROP_PYTHON to a python with cyclonedds"
        );
    }
    Ok(())
}

const AARCH64: &str = "aarch64-unknown-linux-gnu";
/// Where Debian's `libc6-arm64-cross` puts the aarch64 loader and libc.
const AARCH64_SYSROOT: &str = "/usr/aarch64-linux-gnu";

/// What `cross-determinism` needs and installs nothing of: each missing
/// piece with the command that adds it.
fn cross_prerequisites() -> Vec<String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut missing = Vec::new();
    for target in ["wasm32-unknown-unknown", AARCH64] {
        if !installed.lines().any(|l| l.trim() == target) {
            missing.push(format!("the Rust target {target}: rustup target add {target}"));
        }
    }
    let apt = "apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user";
    if !has("aarch64-linux-gnu-gcc") {
        missing.push(format!(
            "the aarch64 linker aarch64-linux-gnu-gcc (Debian gcc-aarch64-linux-gnu): {apt}"
        ));
    }
    if !Path::new(AARCH64_SYSROOT).join("lib/ld-linux-aarch64.so.1").is_file() {
        missing.push(format!(
            "the aarch64 C library in {AARCH64_SYSROOT} (Debian libc6-dev-arm64-cross): {apt}"
        ));
    }
    if !has("qemu-aarch64") {
        missing.push(format!("qemu-aarch64 (Debian qemu-user): {apt}"));
    }
    missing
}

/// Every benchmark the README's "Measuring" lists, with few iterations and
/// in the test build (the figures mean nothing; that they run does). The
/// gateway benchmark and `cross-determinism` run in `ci` beside it.
fn bench_smoke() -> anyhow::Result<()> {
    let commands: [&[&str]; 6] = [
        &["run", "--quiet", "-p", "wallance", "--", "bench", "--no-sim"],
        &[
            "run",
            "--quiet",
            "-p",
            "wallance",
            "--",
            "bench-net",
            "--sizes",
            "4",
            "--purchases",
            "4",
            "--throughput-secs",
            "1",
        ],
        &[
            "run",
            "--quiet",
            "-p",
            "wallance-dds",
            "--example",
            "dds_bench",
            "--",
            "--samples",
            "200",
        ],
        &[
            "run",
            "--quiet",
            "-p",
            "wallance-store",
            "--example",
            "store_bench",
            "--",
            "--wallets",
            "2000",
            "--commits",
            "50",
        ],
        &["run", "--quiet", "-p", "wallance-runtime", "--example", "bench"],
        &[
            "run",
            "--quiet",
            "-p",
            "wallance",
            "--",
            "simulate",
            "--nodes",
            "10",
            "--byzantine",
            "3",
            "--faults",
            "--net",
            "faulty",
        ],
    ];
    for args in commands {
        let took = timed(Command::new("cargo").args(args).stdout(std::process::Stdio::null()))?;
        eprintln!("  ran in {:.1} s", took.as_secs_f64());
    }
    Ok(())
}

/// `cargo build` for aarch64 with Debian's cross toolchain.
fn cross_cargo(args: &[&str]) -> Command {
    let mut cargo = Command::new("cargo");
    cargo
        .args(args)
        .args(["--target", AARCH64])
        .env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER", "aarch64-linux-gnu-gcc")
        .env("CC_aarch64_unknown_linux_gnu", "aarch64-linux-gnu-gcc");
    cargo
}

fn require_cross(verb: &str) -> anyhow::Result<()> {
    let missing = cross_prerequisites();
    if !missing.is_empty() {
        bail!(
            "{verb} needs (`cargo xtask setup` as root installs them; it installs nothing itself otherwise):\n  - {}",
            missing.join("\n  - ")
        );
    }
    Ok(())
}

/// `cargo xtask cross-build [--release]`: the node for aarch64
/// (Raspberry Pi 3/4/5 with a 64-bit OS). The contracts are wasm32, built
/// once by the host build; nothing of them is built again. Returns the
/// binary's path.
fn cross_build(release: bool) -> anyhow::Result<PathBuf> {
    require_cross("cross-build")?;
    let mut cargo = cross_cargo(&["build", "-p", "wallance"]);
    if release {
        cargo.arg("--release");
    } else {
        // No debug info for the dev copy: nobody debugs it here, and it
        // halves the disk and link time of wasmtime's tree.
        cargo.env("CARGO_PROFILE_DEV_DEBUG", "false");
    }
    let took = timed(&mut cargo)?;
    let binary = target_dir()?
        .join(AARCH64)
        .join(if release { "release" } else { "debug" })
        .join("wallance");
    let bytes = std::fs::metadata(&binary)
        .with_context(|| format!("{} was not built", binary.display()))?
        .len();
    eprintln!(
        "built {} ({:.1} MB) in {:.0} s",
        binary.display(),
        bytes as f64 / 1e6,
        took.as_secs_f64()
    );
    Ok(binary)
}

/// `cargo xtask cross-network`: an aarch64 node under qemu-user beside
/// x86-64 nodes, in a private network namespace
/// (`host/node/tests/mixed_arch.rs`).
fn cross_network() -> anyhow::Result<()> {
    let node = cross_build(false)?;
    let status = Command::new("cargo")
        .args([
            "test",
            "-p",
            "wallance",
            "--test",
            "mixed_arch",
            "--",
            "--ignored",
            "--nocapture",
        ])
        .env("WALLANCE_AARCH64_NODE", &node)
        .status()
        .context("could not start cargo test")?;
    if !status.success() {
        bail!("the mixed x86-64/aarch64 network test failed ({status})");
    }
    Ok(())
}

/// Runs a command and returns how long it took.
fn timed(command: &mut Command) -> anyhow::Result<Duration> {
    eprintln!("$ {command:?}");
    let started = Instant::now();
    let status = command
        .status()
        .with_context(|| format!("could not start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(started.elapsed())
}

/// Runs a command and returns its standard output and how long it took.
fn captured(command: &mut Command) -> anyhow::Result<(String, Duration)> {
    eprintln!("$ {command:?}");
    let started = Instant::now();
    let output = command
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("could not start {command:?}"))?;
    if !output.status.success() {
        bail!("{command:?} failed ({})", output.status);
    }
    Ok((String::from_utf8(output.stdout)?, started.elapsed()))
}

fn target_dir() -> anyhow::Result<PathBuf> {
    let (metadata, _) = captured(Command::new("cargo").args(["metadata", "--format-version", "1", "--no-deps"]))?;
    let key = "\"target_directory\":\"";
    let start = metadata.find(key).context("cargo metadata names no target_directory")? + key.len();
    let end = start + metadata[start..].find('"').context("unterminated target_directory")?;
    Ok(PathBuf::from(&metadata[start..end]))
}

/// The first line where two documents differ, with the purchase it
/// belongs to (the nearest `"call"` line above it).
fn first_difference(native: &str, emulated: &str) -> Option<String> {
    let (a, b): (Vec<&str>, Vec<&str>) = (native.lines().collect(), emulated.lines().collect());
    let line = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i))?;
    let call = a[..line.min(a.len())]
        .iter()
        .rev()
        .find(|l| l.trim_start().starts_with("\"call\":"))
        .map_or("(before the first call)", |l| l.trim());
    let context = line.checked_sub(1).and_then(|i| a.get(i)).map_or("", |l| l.trim());
    Some(format!(
        "line {}, in {call}, after {context}\n  x86_64:  {}\n  aarch64: {}",
        line + 1,
        a.get(line).map_or("(end of document)", |l| l.trim()),
        b.get(line).map_or("(end of document)", |l| l.trim()),
    ))
}

/// Builds `tests/src/bin/determinism.rs` natively and for aarch64, runs
/// both on the same .wasm files (aarch64 under qemu-user, in a 39-bit
/// address space like a Raspberry Pi's kernel gives) and compares the
/// JSON they print.
fn cross_determinism() -> anyhow::Result<()> {
    require_cross("cross-determinism")?;
    let bin = ["build", "-p", "wallance-tests", "--bin", "determinism"];
    // Native build: the test profile `cargo test` already built; its build
    // script builds the wasm guests (contracts and tests/guests).
    let native_build = timed(Command::new("cargo").args(bin))?;
    // No debug info for the aarch64 copy (as in `cross-build`).
    let cross_build = timed(cross_cargo(&bin).env("CARGO_PROFILE_DEV_DEBUG", "false"))?;
    let target = target_dir()?;
    let native = target.join("debug/determinism");
    let emulated = target.join(AARCH64).join("debug/determinism");
    let work = std::env::temp_dir().join(format!("wallance-cross-determinism-{}", std::process::id()));
    let guests = work.join("guests");
    run(
        native.to_str().context("target dir")?,
        &["guests", guests.to_str().context("temp dir")?],
    )?;
    let guests = guests.to_str().context("temp dir")?;
    let (native_json, native_run) = captured(Command::new(&native).args(["run", guests]))?;
    // -R 512G: the guest sees a 39-bit address space, as on a Pi's kernel.
    let (emulated_json, emulated_run) = captured(
        Command::new("qemu-aarch64")
            .args(["-L", AARCH64_SYSROOT, "-R", "512G"])
            .arg(&emulated)
            .args(["run", guests]),
    )?;
    std::fs::write(work.join("x86_64.json"), &native_json)?;
    std::fs::write(work.join("aarch64.json"), &emulated_json)?;
    eprintln!(
        "times: native build {:.1} s, aarch64 build {:.1} s, native run {:.2} s, emulated aarch64 run {:.2} s",
        native_build.as_secs_f64(),
        cross_build.as_secs_f64(),
        native_run.as_secs_f64(),
        emulated_run.as_secs_f64()
    );
    match first_difference(&native_json, &emulated_json) {
        None => {
            let calls = native_json.matches("\"call\":").count();
            eprintln!(
                "x86_64 and aarch64 agree bit for bit: {calls} calls, {} bytes of JSON",
                native_json.len()
            );
            std::fs::remove_dir_all(&work)?;
            Ok(())
        }
        Some(difference) => bail!(
            "x86_64 and aarch64 differ at {difference}\n(both documents are in {})",
            work.display()
        ),
    }
}

fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("ci") => ci(),
        Some("setup") => setup(),
        Some("tidy") => tidy::tidy(&tidy::repository_root()),
        Some("cross-determinism") => cross_determinism(),
        Some("cross-build") => {
            let release = std::env::args().skip(2).any(|a| a == "--release");
            cross_build(release).map(|_| ())
        }
        Some("cross-network") => cross_network(),
        Some("bench-smoke") => bench_smoke(),
        Some("deb") => deb::main(&std::env::args().skip(2).collect::<Vec<_>>()),
        Some("test") => {
            setup()?;
            run("cargo", &["test", "--workspace"])
        }
        Some("demo") => {
            setup()?;
            let extra: Vec<String> = std::env::args().skip(2).collect();
            // The dev profile (only the hot dependencies optimized, see Cargo.toml) shares
            // its build with `cargo xtask ci`: a newcomer compiles once.
            let mut args = vec!["run", "--quiet", "-p", "wallance", "--", "demo"];
            args.extend(extra.iter().map(String::as_str));
            run("cargo", &args)
        }
        _ => bail!(
            "usage: cargo xtask demo | ci | tidy | setup | test | cross-build [--release] | cross-network | cross-determinism | deb | bench-smoke"
        ),
    }
}
