//! Builds the contracts (`contracts/`) and the test guests (`tests/guests/`)
//! from source for wasm32, so the tests always run freshly built `.wasm`
//! files, and emits their paths as constants (see `src/lib.rs`).

use std::path::PathBuf;

use wallance_guest_build::*;

/// (workspace folder relative to the repository root, its crates).
const GUEST_WORKSPACES: &[(&str, &[&str])] = &[
    ("contracts", &["espresso", "radio-rental", "compute-rental"]),
    (
        "tests/guests",
        &["hostile", "echo-v1", "echo-v2", "bad-info", "info-loop", "long-name"],
    ),
    ("examples/contract-template", &["contract-template"]),
];

fn main() {
    let repo = repo_root(1);
    let repo = repo.as_path();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    // One target dir for every guest workspace (shared with host/node's
    // build script) so the SDK compiles once.
    let target_dir = guest_target_dir(repo);

    let mut constants = String::new();
    for (workspace, crates) in GUEST_WORKSPACES {
        let workspace_dir = repo.join(workspace);
        build_workspace(&workspace_dir, &target_dir);
        for name in *crates {
            let file = wasm_path(&target_dir, name);
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
