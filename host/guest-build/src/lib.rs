//! Used by build scripts (`host/node`, `tests`) to compile guest
//! workspaces for `wasm32-unknown-unknown`, so the binaries and tests always
//! carry freshly built contracts.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root, from a crate's `CARGO_MANIFEST_DIR` `levels` below it.
pub fn repo_root(levels: usize) -> PathBuf {
    let mut dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    for _ in 0..levels {
        dir = dir.parent().expect("inside the repository").to_path_buf();
    }
    dir
}

/// One target dir for every guest workspace, beside the host's artifacts
/// (outside OUT_DIR, so it survives changes of a build script's fingerprint
/// and is shared by every crate that builds guests).
pub fn guest_target_dir(repo: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("wasm-guests"),
        None => repo.join("target").join("wasm-guests"),
    }
}

/// Where `crate_name` of a built workspace lands.
pub fn wasm_path(target_dir: &Path, crate_name: &str) -> PathBuf {
    target_dir
        .join("wasm32-unknown-unknown/release")
        .join(format!("{}.wasm", crate_name.replace('-', "_")))
}

/// Builds a guest workspace in release mode for wasm32, or panics with
/// cargo's error output (a build script has no other way to fail).
pub fn build_workspace(workspace_dir: &Path, target_dir: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace_dir)
        .arg("build")
        .arg("--release")
        .arg("--target")
        .arg("wasm32-unknown-unknown")
        .arg("--manifest-path")
        .arg(workspace_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    if let Ok(jobs) = std::env::var("NUM_JOBS") {
        command.arg("--jobs").arg(jobs);
    }
    // Cargo hands a build script the host build's settings (target, encoded
    // rustflags, wrappers such as clippy-driver, profile, features). Passed
    // on, they would build the guests for the wrong target or with host
    // flags; keep only the registry, network and jobserver settings.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let keep = key == "CARGO_HOME"
            || key == "CARGO_MAKEFLAGS"
            || key.starts_with("CARGO_REGISTRIES_")
            || key.starts_with("CARGO_REGISTRY_")
            || key.starts_with("CARGO_NET_")
            || key.starts_with("CARGO_HTTP_");
        let drop = (key.starts_with("CARGO_") && !keep)
            || key.starts_with("RUSTC_")
            || matches!(
                key,
                "RUSTFLAGS"
                    | "RUSTDOCFLAGS"
                    | "RUSTC"
                    | "RUSTDOC"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
                    | "OPT_LEVEL"
                    | "PROFILE"
                    | "DEBUG"
                    | "NUM_JOBS"
            );
        if drop {
            command.env_remove(key);
        }
    }
    let output = command.output().expect("run cargo to build the guests");
    if !output.status.success() {
        panic!(
            "building {} for wasm32 failed (is the target installed? \
             `rustup target add wasm32-unknown-unknown`):\n{}",
            workspace_dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Tells cargo to rerun the build script when `path` changes.
pub fn rerun_if_changed(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}
