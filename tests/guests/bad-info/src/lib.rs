//! Announces a service name the node must reject.

use wallance_sdk::{Contract, Outcome, Purchase, ServiceInfo};

struct BadInfo;

impl Contract for BadInfo {
    fn info() -> ServiceInfo {
        ServiceInfo::new("Not A Valid Name!", 1, "bad", "1")
    }

    fn purchase(_: Purchase) -> Result<Outcome, String> {
        Ok(Outcome::new("unreachable: never loaded"))
    }
}

wallance_sdk::export_contract!(BadInfo);
