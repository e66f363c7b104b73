//! Builds the contracts (`contracts/`) and the test guests (`tests/guests/`)
//! from source for wasm32, so the tests always run freshly built `.wasm`
//! files, and emits their paths as constants (see `src/lib.rs`).

use std::path::PathBuf;

use wallance_guest_build::*;

/// (workspace folder relative to the repository root, its crates, each
/// with the name its file gets: the service it announces, because a node
/// serves a contract file only under its own file name).
const GUEST_WORKSPACES: &[(&str, &[(&str, &str)])] = &[
    (
        "contracts",
        &[
            ("espresso", "espresso"),
            ("radio-rental", "radio-rental"),
            ("compute-rental", "compute"),
        ],
    ),
    (
        "tests/guests",
        &[
            ("hostile", "hostile"),
            ("echo-v1", "echo"),
            ("echo-v2", "echo"),
            // Announces an invalid name; its file name is a valid one so the
            // test reaches the info check.
            ("bad-info", "bad-info"),
            ("info-loop", "info-loop"),
            // Announces a 1 MiB name; its file name is a valid one.
            ("long-name", "long-name"),
            ("squatter", "squatter"),
            // Float results as raw bits, for `cargo xtask cross-determinism`.
            ("floats", "floats"),
        ],
    ),
    ("examples/contract-template", &[("contract-template", "guest-book")]),
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
        for (name, service) in *crates {
            let built = wasm_path(&target_dir, name);
            assert!(built.is_file(), "{} was not built", built.display());
            // One folder per crate: echo-v1 and echo-v2 are both echo.wasm.
            let folder = out_dir.join("guests").join(name);
            std::fs::create_dir_all(&folder).expect("create the guest folder");
            let file = folder.join(format!("{service}.wasm"));
            std::fs::copy(&built, &file).expect("copy the built guest");
            let constant = name.replace('-', "_").to_uppercase();
            constants.push_str(&format!(
                "/// `{workspace}/{name}` built for wasm32, as `{service}.wasm`.\npub const {constant}: &str = {:?};\n",
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
