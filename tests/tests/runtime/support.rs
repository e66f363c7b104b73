//! Helpers shared by the runtime tests.

use std::sync::Arc;

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

/// Storage a test reads back: [`served`] applies each call's writes to it,
/// as the node's store does with the run's outcome.
pub fn memory() -> Arc<MemoryStorage> {
    Arc::new(MemoryStorage::new())
}

pub use wallance_tests::purchase;

/// Invokes and expects the contract to serve the purchase.
pub fn served(
    runtime: &Runtime,
    service: &str,
    purchase: &Purchase,
    storage: &Arc<MemoryStorage>,
    devices: &Devices,
) -> Outcome {
    let backend: Arc<dyn ContractStorage> = storage.clone();
    let outcome = runtime
        .invoke(service, purchase, &backend, devices)
        .unwrap_or_else(|e| panic!("{service} failed: {e}"));
    assert!(outcome.result.is_ok(), "{service} refused: {:?}", outcome.result);
    storage.apply(service, &outcome.writes);
    outcome
}

/// Invokes and expects a refusal; returns its reason.
pub fn refused(
    runtime: &Runtime,
    service: &str,
    purchase: &Purchase,
    storage: &Arc<MemoryStorage>,
    devices: &Devices,
) -> String {
    let backend: Arc<dyn ContractStorage> = storage.clone();
    let outcome = runtime
        .invoke(service, purchase, &backend, devices)
        .unwrap_or_else(|e| panic!("{service} failed: {e}"));
    match outcome.result {
        Ok(output) => panic!("{service} served instead of refusing: {output:?}"),
        Err(reason) => {
            assert!(outcome.writes.is_empty(), "a refusal wrote {:?}", outcome.writes);
            reason
        }
    }
}

/// Collects what `tracing` writes, for tests of the node's log.
#[derive(Clone, Default)]
pub struct CapturedLog(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLog {
    type Writer = CapturedLog;
    fn make_writer(&'a self) -> CapturedLog {
        self.clone()
    }
}

impl CapturedLog {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// Runs `f` with an info-level subscriber writing here: what an
    /// operator sees with the node's default filter.
    pub fn at_info<T>(&self, f: impl FnOnce() -> T) -> T {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f)
    }
}
