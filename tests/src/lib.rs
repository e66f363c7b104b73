//! End-to-end tests of the contract runtime: the real contracts and test
//! guests, compiled from source by `build.rs`, run in the real
//! `wallance-runtime`. The tests are in `tests/runtime/`; this library holds the
//! paths of the built `.wasm` files and the purchases they (and the
//! determinism binary) make.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// Every built contract, for tests that go over all of them.
pub const ALL: &[&str] = &[
    ESPRESSO,
    RADIO_RENTAL,
    COMPUTE_RENTAL,
    HOSTILE,
    ECHO_V1,
    ECHO_V2,
    BAD_INFO,
    INFO_LOOP,
    SQUATTER,
    FLOATS,
    CONTRACT_TEMPLATE,
];

use sha2::{Digest, Sha256};
use wallance_runtime::Purchase;

/// A purchase at `price` DCoin. Its id (`certificate`) hashes everything
/// else, so two purchases differ in id as real certificates do (devices
/// treat a repeated id as a re-run of the same purchase).
pub fn purchase(buyer: u8, price: u64, time_ms: u64, params: &[(&str, &str)]) -> Purchase {
    let mut id = Sha256::new();
    id.update([buyer]);
    id.update(price.to_le_bytes());
    id.update(time_ms.to_le_bytes());
    for (key, value) in params {
        for field in [key, value] {
            id.update((field.len() as u64).to_le_bytes());
            id.update(field.as_bytes());
        }
    }
    Purchase {
        buyer: [buyer; 32],
        price: price * 1_000_000,
        consensus_time_ms: time_ms,
        certificate: id.finalize().into(),
        params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}
