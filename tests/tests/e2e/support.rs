//! Helpers shared by the end-to-end tests.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use wallance_runtime::{ContractStorage, Devices, MemoryStorage, Outcome, Purchase, Runtime, RuntimeConfig};

pub fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig::default()).expect("runtime")
}

pub fn runtime_with(config: RuntimeConfig) -> Runtime {
    Runtime::new(config).expect("runtime")
}

pub fn storage() -> Arc<dyn ContractStorage> {
    Arc::new(MemoryStorage::new())
}

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

/// Invokes and expects the contract to serve the purchase.
pub fn served(
    runtime: &Runtime,
    service: &str,
    purchase: &Purchase,
    storage: &Arc<dyn ContractStorage>,
    devices: &Devices,
) -> Outcome {
    let outcome = runtime
        .invoke(service, purchase, storage, devices)
        .unwrap_or_else(|e| panic!("{service} failed: {e}"));
    assert!(outcome.result.is_ok(), "{service} refused: {:?}", outcome.result);
    outcome
}

/// Invokes and expects a refusal; returns its reason.
pub fn refused(
    runtime: &Runtime,
    service: &str,
    purchase: &Purchase,
    storage: &Arc<dyn ContractStorage>,
    devices: &Devices,
) -> String {
    let outcome = runtime
        .invoke(service, purchase, storage, devices)
        .unwrap_or_else(|e| panic!("{service} failed: {e}"));
    match outcome.result {
        Ok(output) => panic!("{service} served instead of refusing: {output:?}"),
        Err(reason) => reason,
    }
}
