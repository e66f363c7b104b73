//! Announces a 1 MiB service name full of terminal escapes: the node must
//! refuse it and never echo it whole into its log or API.

use wallance_sdk::{Contract, Outcome, Purchase, ServiceInfo};

struct LongName;

impl Contract for LongName {
    fn info() -> ServiceInfo {
        ServiceInfo::new("\x1b[2J".repeat(1 << 18), 1, "long name", "1")
    }

    fn purchase(_: Purchase) -> Result<Outcome, String> {
        Ok(Outcome::new("unreachable: never loaded"))
    }
}

wallance_sdk::export_contract!(LongName);
