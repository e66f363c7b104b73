//! Embeds the espresso contract (built from `contracts/espresso`) so that
//! `wallance demo` runs from the binary alone.

use wallance_guest_build::*;

fn main() {
    let repo = repo_root(2);
    let target = guest_target_dir(&repo);
    build_workspace(&repo.join("contracts"), &target);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    let wasm = out.join("espresso.wasm");
    std::fs::copy(wasm_path(&target, "espresso"), &wasm).expect("copy espresso.wasm");
    // Integration tests install the same contract into their nodes.
    println!("cargo:rustc-env=WALLANCE_ESPRESSO_WASM={}", wasm.display());
    // `wallance bench-gateway` installs the three shipped contracts from here.
    let shipped = wasm_path(&target, "espresso");
    println!(
        "cargo:rustc-env=WALLANCE_CONTRACTS_WASM_DIR={}",
        shipped.parent().expect("a folder").display()
    );
    for p in [
        "contracts/espresso/src",
        "contracts/espresso/Cargo.toml",
        "contracts/Cargo.toml",
        "contracts/.cargo/config.toml",
        "sdk/src",
        "sdk/Cargo.toml",
        "wit",
    ] {
        rerun_if_changed(&repo.join(p));
    }
}
