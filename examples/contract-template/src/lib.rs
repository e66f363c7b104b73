//! A guest book: each buyer signs it with a message; the contract answers
//! with the signature number and the last few signers.
//!
//! Everything a contract needs is in `wallance_sdk`: implement `Contract`
//! and export it with `export_contract!`.

use wallance_sdk::{Contract, Outcome, Purchase, ServiceInfo, coins, log, storage};

/// What one signature costs, in integer DCoin units.
/// One DCoin a signature (`coins` turns DCoin into integer units).
const PRICE: u64 = coins(1);
/// Longest message kept, in bytes.
const MESSAGE_MAX: usize = 140;

struct GuestBook;

impl Contract for GuestBook {
    fn info() -> ServiceInfo {
        // The name buyers use: lowercase letters, digits and '-'.
        ServiceInfo::new(
            "guest-book",
            PRICE,
            "Sign the node's guest book",
            env!("CARGO_PKG_VERSION"),
        )
    }

    fn purchase(purchase: Purchase) -> Result<Outcome, String> {
        // Refusals are plain `Err(reason)`: the buyer sees the reason and
        // nothing this call wrote to storage is kept.
        let message = purchase.param("message").ok_or("missing parameter \"message\"")?;
        if message.len() > MESSAGE_MAX {
            return Err(format!("messages are limited to {MESSAGE_MAX} bytes"));
        }

        // Storage is private to this service and kept by the node.
        let number = storage::get_u64("count").unwrap_or(0) + 1;
        storage::set_u64("count", number);
        // Zero-padded keys sort in signing order.
        let key = format!("entry/{number:010}");
        let signer = purchase.buyer_hex();
        storage::set_string(&key, &format!("{}: {message}", &signer[..8]));

        let mut outcome = Outcome::new(format!("you are signature number {number}"))
            .with("number", number)
            .with("signed-at-ms", purchase.consensus_time_ms);
        for key in storage::keys("entry/", 1000).iter().rev().take(3) {
            if let Some(entry) = storage::get_string(key) {
                outcome = outcome.with(key.clone(), entry);
            }
        }
        log::info(&format!("signature {number} by {}", &signer[..8]));
        Ok(outcome)
    }
}

wallance_sdk::export_contract!(GuestBook);
