//! Builds the contracts (`contracts/`) and the test guests (`tests/guests/`)
//! from source for wasm32, so the tests always run freshly built `.wasm`
//! files, and emits their paths as constants (see `src/lib.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// (workspace folder relative to the repository root, its crates).
const GUEST_WORKSPACES: &[(&str, &[&str])] = &[
    ("contracts", &["espresso", "radio-rental", "compute-rental"]),
    (
        "tests/guests",
        &["hostile", "echo-v1", "echo-v2", "bad-info", "info-loop"],
    ),
    ("examples/contract-template", &["contract-template"]),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let repo = manifest_dir.parent().expect("tests/ is inside the repository");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    // One target dir for both guest workspaces so the SDK compiles once;
    // beside the host's artifacts, outside OUT_DIR so it survives changes
    // of this build script's fingerprint.
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("wasm-guests"),
        None => repo.join("target").join("wasm-guests"),
    };

    let mut constants = String::new();
    for (workspace, crates) in GUEST_WORKSPACES {
        let workspace_dir = repo.join(workspace);
        build_workspace(&workspace_dir, &target_dir);
        for name in *crates {
            let file = target_dir
                .join("wasm32-unknown-unknown/release")
                .join(format!("{}.wasm", name.replace('-', "_")));
            assert!(file.is_file(), "{} was not built", file.display());
            let constant = name.replace('-', "_").to_uppercase();
            constants.push_str(&format!(
                "/// `{workspace}/{name}` built for wasm32.\npub const {constant}: &str = {:?};\n",
                file.display().to_string()
            ));
            rerun_if_changed(&workspace_dir.join(name).join("src"));
            rerun_if_changed(&workspace_dir.join(name).join("Cargo.toml"));
        }
        rerun_if_changed(&workspace_dir.join("Cargo.toml"));
        rerun_if_changed(&workspace_dir.join(".cargo/config.toml"));
    }
    rerun_if_changed(&repo.join("tests/guests/echo.rs"));
    rerun_if_changed(&repo.join("sdk/src"));
    rerun_if_changed(&repo.join("sdk/Cargo.toml"));
    rerun_if_changed(&repo.join("wit"));
    std::fs::write(out_dir.join("guests.rs"), constants).expect("write guests.rs");
}

fn build_workspace(workspace_dir: &Path, target_dir: &Path) {
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

fn rerun_if_changed(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}
