//! The contract worker: runs contracts one at a time, off the consensus
//! loop. It reads contract storage through a `StoreReader` (committed data
//! only) and hands each run's outcome and storage writes back to the loop
//! as data ([`Cmd::RunDone`]); the core puts the writes in the run's own
//! `Change::RunDone`, so a run's effects are durable with its "done" marker
//! or not at all. The worker waits for that commit before its next run
//! reads storage.

use std::sync::Arc;
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use tracing::warn;
use wallance_core::ContractWrite;
use wallance_core::msg::Certificate;
use wallance_runtime::{ContractStorage, DeviceGrants, Purchase, Runtime, StorageError};
use wallance_store::StoreReader;

use crate::cmd::{Cmd, RunDone, now_ms};

/// Contract storage over the node's redb store: reads only. A run's writes
/// come back in its `Outcome`.
#[derive(Debug)]
pub(super) struct NodeStorage {
    pub(super) reader: StoreReader,
}

impl ContractStorage for NodeStorage {
    fn get(&self, service: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.reader
            .kv_get(service, key.as_bytes())
            .map_err(|e| StorageError::Backend(e.to_string()))
    }
    fn keys(&self, service: &str, prefix: &str, limit: usize) -> Result<Vec<String>, StorageError> {
        let keys = self
            .reader
            .kv_keys(service, prefix.as_bytes(), limit)
            .map_err(|e| StorageError::Backend(e.to_string()))?;
        Ok(keys.into_iter().filter_map(|k| String::from_utf8(k).ok()).collect())
    }
    fn usage_bytes(&self, service: &str) -> Result<u64, StorageError> {
        self.reader
            .kv_usage(service)
            .map_err(|e| StorageError::Backend(e.to_string()))
    }
}

/// Runs contracts one at a time, off the consensus loop. Each run waits for
/// its effects to be committed before the next one reads the store.
pub(super) fn spawn(
    runtime: Runtime,
    storage: NodeStorage,
    grants: DeviceGrants,
    membership: wallance_core::Membership,
    outcome_timeout_ms: u64,
    tx: Sender<Cmd>,
) -> Sender<Box<Certificate>> {
    let (jobs_tx, jobs_rx) = mpsc::channel::<Box<Certificate>>();
    std::thread::Builder::new()
        .name("contracts".into())
        .spawn(move || {
            let storage: Arc<dyn ContractStorage> = Arc::new(storage);
            // Runs owed from before a restart arrive while the folder is
            // still being loaded in the background: a purchase must not be
            // refunded as "not loaded" only because its file was not
            // compiled yet. Bounded, since a run later than half its outcome
            // window is refunded anyway.
            let mut scanned = false;
            for cert in jobs_rx {
                if !scanned {
                    scanned = true;
                    if !runtime.wait_for_first_scans(Duration::from_millis(outcome_timeout_ms / 4)) {
                        warn!("the contracts folder is still loading; running owed purchases with what is loaded");
                    }
                }
                let Some(idx) = membership.index_of(&cert.request.requester) else {
                    continue;
                };
                let version = cert.new_version();
                let purchase = Purchase {
                    buyer: cert.request.requester.0,
                    price: cert.request.price,
                    consensus_time_ms: cert.request.time_ms,
                    certificate: cert.digest(),
                    params: cert.request.params.clone(),
                };
                let service = cert.request.service.clone();
                let devices = grants.for_service(&service);
                // The purchase pinned a contract: a file replaced since
                // (hot reload) must not serve it. Refused, so refunded.
                let pinned = runtime
                    .service(&service)
                    .is_some_and(|s| s.contract_hash == cert.request.contract_hash);
                // Members vote the refund once the outcome window ends: a run
                // started after half of it (a long queue, a slow board) is
                // refunded instead, exactly as the core refuses to ask for it.
                let late = now_ms() > cert.request.time_ms.saturating_add(outcome_timeout_ms / 2);
                let mut logs = Vec::new();
                let mut writes = Vec::new();
                let (ok, body, fuel_used, elapsed_us) = if late {
                    (
                        false,
                        "not run: the purchase waited past half its outcome window; its price is refunded".to_string(),
                        0,
                        0,
                    )
                } else if !pinned {
                    (
                        false,
                        format!(
                            "not run: the contract of {service:?} bought (announcement {}) is no longer loaded; its price is refunded",
                            cert.request.announce_seq
                        ),
                        0,
                        0,
                    )
                } else {
                    match runtime.invoke(&service, &purchase, &storage, &devices) {
                        Ok(outcome) => {
                            let fuel = outcome.fuel_used;
                            let us = outcome.elapsed.as_micros() as u64;
                            logs = render_logs(&outcome.logs);
                            writes = outcome
                                .writes
                                .into_iter()
                                .map(|w| ContractWrite {
                                    contract: service.clone(),
                                    key: w.key.into_bytes(),
                                    value: w.value,
                                })
                                .collect();
                            match outcome.result {
                                Ok(out) => (true, render_output(&out), fuel, us),
                                Err(refusal) => (false, refusal, fuel, us),
                            }
                        }
                        Err(e) => {
                            if let wallance_runtime::InvokeError::Failed { logs: l, .. } = &e {
                                logs = render_logs(l);
                            }
                            (false, format!("the contract failed: {e}"), 0, 0)
                        }
                    }
                };
                let (ack_tx, ack_rx) = mpsc::sync_channel(1);
                let done = RunDone {
                    idx,
                    version,
                    ok,
                    body,
                    service: service.clone(),
                    requester: cert.request.requester,
                    request_id: cert.request.id(),
                    logs,
                    writes,
                    fuel_used,
                    elapsed_us,
                    ack: ack_tx,
                };
                if tx.send(Cmd::RunDone(Box::new(done))).is_err() {
                    return;
                }
                if ack_rx.recv().is_err() {
                    return;
                }
            }
        })
        .expect("spawning a thread only fails when the OS is out of resources");
    jobs_tx
}

fn render_logs(logs: &[wallance_runtime::LogEntry]) -> Vec<String> {
    use wallance_runtime::LogLevel;
    logs.iter()
        .map(|l| {
            let level = match l.level {
                LogLevel::Debug => "debug",
                LogLevel::Info => "info",
                LogLevel::Warn => "warn",
                LogLevel::Error => "error",
            };
            format!("{level}: {}", l.message)
        })
        .collect()
}

fn render_output(out: &wallance_runtime::ContractOutput) -> String {
    if out.data.is_empty() {
        return out.message.clone();
    }
    let data: Vec<String> = out.data.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{} ({})", out.message, data.join(", "))
}
