// Shared by echo-v1 and echo-v2: the same service name in two versions, to
// test replacing a contract while it serves.

use wallance_sdk::{Contract, Outcome, Purchase, ServiceInfo};

struct Echo;

impl Contract for Echo {
    fn info() -> ServiceInfo {
        ServiceInfo::new("echo", PRICE, "Echoes the parameter `say`", VERSION)
    }

    fn purchase(purchase: Purchase) -> Result<Outcome, String> {
        // `spin` burns fuel so a test can keep a call in flight while the
        // contract is replaced.
        let spin: u64 = purchase.param("spin").and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut acc = 0u64;
        for i in 0..spin {
            acc = std::hint::black_box(acc.wrapping_mul(31).wrapping_add(i));
        }
        let say = purchase.param("say").unwrap_or("");
        Ok(Outcome::new(format!("v{VERSION}: {say}")).with("version", VERSION).with("acc", acc))
    }
}

wallance_sdk::export_contract!(Echo);
