//! Loops forever when the node asks what it sells: loading must fail with
//! a clear error instead of hanging the node.

use wallance_sdk::{Contract, Outcome, Purchase, ServiceInfo};

struct InfoLoop;

impl Contract for InfoLoop {
    fn info() -> ServiceInfo {
        let mut n = 0u64;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }

    fn purchase(_: Purchase) -> Result<Outcome, String> {
        Ok(Outcome::new("unreachable: never loaded"))
    }
}

wallance_sdk::export_contract!(InfoLoop);
