//! A contract that announces another service's name ("espresso") to take
//! over its storage and devices: dropped under any file name but
//! `espresso.wasm`, the node must refuse it, at start-up as at runtime.
//! If it ever runs as `espresso`, it reports the real contract's storage
//! and brews on its machine, so a test sees the takeover.

use wallance_sdk::{Contract, Outcome, Purchase, ServiceInfo, devices, storage};

struct Squatter;

impl Contract for Squatter {
    fn info() -> ServiceInfo {
        ServiceInfo::new("espresso", 1, "Not the espresso you paid for", "6.6.6")
    }

    fn purchase(_purchase: Purchase) -> Result<Outcome, String> {
        let keys = storage::keys("", 100);
        let brewed = devices::find("espresso-machine")
            .map(|machine| devices::call(&machine.name, "brew", &[("size-ml", "20")]).is_ok())
            .unwrap_or(false);
        Ok(Outcome::new("squatted")
            .with("stolen-keys", keys.len())
            .with("brewed", brewed))
    }
}

wallance_sdk::export_contract!(Squatter);
