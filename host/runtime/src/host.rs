//! The host side of the WIT world: the state each call's `Store` carries and
//! the capabilities (log, clock, storage, devices) a contract imports.

use std::collections::BTreeMap;

use wasmtime::component::HasSelf;
use wasmtime::{ResourceLimiter, component::Linker};

use crate::devices::{CallKey, Devices};
use crate::error::FailureCause;
use crate::storage::{Overlay, OverlayError, StorageQuotaError};
use crate::text::sanitize;

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "wallance:contract/contract",
    // Every import may stop the contract (log flood, storage quota, ...).
    imports: { default: trappable },
});

pub(crate) use self::wallance::contract::types as wit;

/// The `tracing` target of contract log lines; each line carries the
/// service's name in its `service` field. Filter with e.g.
/// `RUST_LOG=info,wallance::contract=debug`.
pub const CONTRACT_LOG_TARGET: &str = "wallance::contract";

/// One log line written by a contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub level: LogLevel,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// Per-call limits the host functions enforce.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallLimits {
    pub log_bytes_max: usize,
    pub log_lines_max: usize,
    pub device_calls_max: usize,
    pub keys_limit_max: u32,
}

/// Memory and table accounting for one store; also records the peak.
#[derive(Debug)]
pub(crate) struct Limiter {
    pub memory_bytes_max: usize,
    pub table_elements_max: usize,
    /// Sum of current sizes of all memories of the store.
    pub memory_bytes: usize,
    pub memory_bytes_peak: usize,
    /// Set when a limit was hit, so the resulting trap gets a clear cause
    /// even if the error is wrapped on its way out.
    pub exceeded: Option<FailureCause>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.memory_bytes - current.min(self.memory_bytes) + desired;
        if total > self.memory_bytes_max {
            let cause = FailureCause::MemoryLimit {
                limit_bytes: self.memory_bytes_max as u64,
                requested_bytes: total as u64,
            };
            self.exceeded = Some(cause.clone());
            // An error (not `Ok(false)`) stops the contract at once: a
            // contract that checks for failed growth would only limp on.
            return Err(wasmtime::Error::new(HostAbort(cause)));
        }
        self.memory_bytes = total;
        self.memory_bytes_peak = self.memory_bytes_peak.max(total);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.table_elements_max {
            let cause = FailureCause::TableLimit {
                limit_elements: self.table_elements_max as u64,
            };
            self.exceeded = Some(cause.clone());
            return Err(wasmtime::Error::new(HostAbort(cause)));
        }
        Ok(true)
    }

    // A contract is one component; a handful of core instances, memories
    // and tables covers what wit-component and the toolchains emit.
    fn instances(&self) -> usize {
        16
    }
    fn tables(&self) -> usize {
        16
    }
    fn memories(&self) -> usize {
        4
    }
}

/// An error a host function raises to stop the contract; the runtime turns
/// it back into its [`FailureCause`].
#[derive(Debug, Clone)]
pub(crate) struct HostAbort(pub FailureCause);

impl std::fmt::Display for HostAbort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for HostAbort {}

/// What one call's `Store` carries.
pub(crate) struct HostState {
    pub limiter: Limiter,
    pub limits: CallLimits,
    pub now_ms: u64,
    pub logs: Vec<LogEntry>,
    pub log_bytes: usize,
    pub log_lines: usize,
    /// Message of the last "panic: " log line, reported with the trap.
    pub panic_message: Option<String>,
    /// `None` while reading `info`: contracts have no storage then.
    pub storage: Option<Overlay>,
    pub devices: Devices,
    pub device_calls: usize,
    /// The purchase being served (`Purchase::certificate`): with
    /// `device_seq`, the idempotency key of each device call.
    pub purchase_id: [u8; 32],
    /// Calls made so far to each device in this call.
    pub device_seq: BTreeMap<String, u32>,
    pub service: String,
    pub aborted: Option<FailureCause>,
}

impl HostState {
    fn abort(&mut self, cause: FailureCause) -> wasmtime::Error {
        self.aborted = Some(cause.clone());
        wasmtime::Error::new(HostAbort(cause))
    }

    fn overlay(&mut self) -> wasmtime::Result<&mut Overlay> {
        if self.storage.is_none() {
            return Err(self.abort(FailureCause::Storage(StorageQuotaError::NotAvailable)));
        }
        // Checked just above; `as_mut` cannot fail.
        Ok(self.storage.as_mut().expect("storage present"))
    }

    fn storage_error(&mut self, error: OverlayError) -> wasmtime::Error {
        let cause = match error {
            OverlayError::Quota(quota) => FailureCause::Storage(quota),
            OverlayError::Backend(backend) => FailureCause::StorageBackend(backend.to_string()),
        };
        self.abort(cause)
    }
}

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    Contract::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
}

impl wallance::contract::types::Host for HostState {}

impl wallance::contract::log::Host for HostState {
    fn log(&mut self, level: wallance::contract::log::Level, message: String) -> wasmtime::Result<()> {
        use wallance::contract::log::Level;
        let level = match level {
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        // Bounded and with control characters escaped (a contract cannot
        // forge a line of the node's own with a newline).
        let message = self.admit_log(level, message)?;
        // The operator sees what contracts say, under the service's name;
        // the lines also come back with the outcome. Debug lines stay at
        // debug: the contract marked them as such.
        match level {
            LogLevel::Debug => tracing::debug!(target: CONTRACT_LOG_TARGET, service = %self.service, "{message}"),
            LogLevel::Info => tracing::info!(target: CONTRACT_LOG_TARGET, service = %self.service, "{message}"),
            LogLevel::Warn => tracing::warn!(target: CONTRACT_LOG_TARGET, service = %self.service, "{message}"),
            LogLevel::Error => tracing::error!(target: CONTRACT_LOG_TARGET, service = %self.service, "{message}"),
        }
        self.logs.push(LogEntry { level, message });
        Ok(())
    }
}

impl wallance::contract::clock::Host for HostState {
    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(self.now_ms)
    }
}

impl wallance::contract::storage::Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        let result = self.overlay()?.get(&key);
        result.map_err(|e| self.storage_error(e))
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<()> {
        let result = self.overlay()?.set(key, Some(value));
        result.map_err(|e| self.storage_error(e))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        let result = self.overlay()?.set(key, None);
        result.map_err(|e| self.storage_error(e))
    }

    fn keys(&mut self, prefix: String, limit: u32) -> wasmtime::Result<Vec<String>> {
        let limit = limit.min(self.limits.keys_limit_max) as usize;
        let result = self.overlay()?.keys(&prefix, limit);
        result.map_err(|e| self.storage_error(e))
    }
}

impl wallance::contract::devices::Host for HostState {
    fn granted(&mut self) -> wasmtime::Result<Vec<wallance::contract::devices::DeviceInfo>> {
        Ok(self
            .devices
            .list()
            .into_iter()
            .map(|(name, kind)| wallance::contract::devices::DeviceInfo { name, kind })
            .collect())
    }

    fn call(
        &mut self,
        name: String,
        command: String,
        args: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<Vec<(String, String)>, String>> {
        self.device_calls += 1;
        if self.device_calls > self.limits.device_calls_max {
            return Err(self.abort(FailureCause::DeviceCallLimit {
                limit: self.limits.device_calls_max as u64,
            }));
        }
        let Some(device) = self.devices.get(&name) else {
            return Ok(Err(format!("no device {name:?} is granted to this service")));
        };
        // The n-th call of this purchase to this device: a re-run after a
        // crash makes the same calls in the same order, so the device
        // recognises them and does not act twice.
        let seq = self.device_seq.entry(name.clone()).or_insert(0);
        let key = CallKey {
            purchase_id: self.purchase_id,
            seq: *seq,
        };
        *seq += 1;
        let answer = device.call(&key, &command, &args);
        tracing::debug!(service = %self.service, device = %name, %command, seq = key.seq, ok = answer.is_ok(), "device call");
        Ok(answer)
    }
}

/// Longest panic message kept (the rest is cut, saying how long it was).
const PANIC_BYTES_MAX: usize = 1 << 10;

impl HostState {
    /// Applies the per-call log bounds to one line and returns it
    /// sanitized. Every line counts, empty ones included (each costs the
    /// host an entry). The first `panic: ` line is kept whatever the byte
    /// budget says, cut to `PANIC_BYTES_MAX`: it says why the contract
    /// stops, and the SDK sends it just before trapping.
    fn admit_log(&mut self, level: LogLevel, message: String) -> wasmtime::Result<String> {
        self.log_lines += 1;
        if self.log_lines > self.limits.log_lines_max {
            return Err(self.abort(FailureCause::LogLineLimit {
                limit_lines: self.limits.log_lines_max as u64,
            }));
        }
        if level == LogLevel::Error
            && self.panic_message.is_none()
            && let Some(panic) = message.strip_prefix("panic: ")
        {
            let panic = sanitize(panic, PANIC_BYTES_MAX);
            let line = format!("panic: {panic}");
            self.log_bytes = self.log_bytes.saturating_add(line.len());
            self.panic_message = Some(panic);
            return Ok(line);
        }
        self.log_bytes = self.log_bytes.saturating_add(message.len());
        if self.log_bytes > self.limits.log_bytes_max {
            return Err(self.abort(FailureCause::LogLimit {
                limit_bytes: self.limits.log_bytes_max as u64,
            }));
        }
        Ok(sanitize(&message, self.limits.log_bytes_max))
    }
}
