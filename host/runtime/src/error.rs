//! Errors of the runtime. None of them is fatal to the host: a bad contract
//! fails its own load or call and everything else goes on.

use std::path::PathBuf;

use crate::host::LogEntry;
use crate::storage::StorageQuotaError;

/// Why a contract call was stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FailureCause {
    #[error("ran out of fuel ({limit} units): endless loop or too much work for one call")]
    OutOfFuel { limit: u64 },
    #[error("exceeded the wall-clock backstop of {limit_ms} ms")]
    WallClock { limit_ms: u64 },
    #[error("memory limit exceeded: wanted {requested_bytes} bytes, limit is {limit_bytes}")]
    MemoryLimit { limit_bytes: u64, requested_bytes: u64 },
    #[error("table limit of {limit_elements} elements exceeded")]
    TableLimit { limit_elements: u64 },
    #[error("call stack exhausted (recursion too deep)")]
    StackOverflow,
    #[error("panicked: {0}")]
    Panic(String),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("logged more than {limit_bytes} bytes")]
    LogLimit { limit_bytes: u64 },
    /// Empty lines count: each costs the host an entry.
    #[error("logged more than {limit_lines} lines")]
    LogLineLimit { limit_lines: u64 },
    #[error("more than {limit} device calls in one call")]
    DeviceCallLimit { limit: u64 },
    #[error("output of {len_bytes} bytes exceeds the {limit_bytes} byte limit")]
    OutputTooLarge { len_bytes: u64, limit_bytes: u64 },
    #[error("storage: {0}")]
    Storage(StorageQuotaError),
    #[error("storage backend: {0}")]
    StorageBackend(String),
    #[error("could not instantiate: {0}")]
    Instantiate(String),
}

/// Errors of [`Runtime::invoke`](crate::Runtime::invoke).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvokeError {
    #[error("no service named {0:?} is loaded")]
    UnknownService(String),
    #[error("invalid purchase: {0}")]
    InvalidPurchase(String),
    /// The contract was stopped; its logs up to that point are kept.
    #[error("contract {service:?} failed: {cause}")]
    Failed {
        service: String,
        cause: FailureCause,
        fuel_used: u64,
        logs: Vec<LogEntry>,
    },
}

impl InvokeError {
    /// The cause, when the contract itself was stopped.
    pub fn cause(&self) -> Option<&FailureCause> {
        match self {
            InvokeError::Failed { cause, .. } => Some(cause),
            _ => None,
        }
    }
}

/// Why a contract could not be loaded. The previous version of the service,
/// if any, keeps serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("file of {len_bytes} bytes exceeds the {limit_bytes} byte limit for contracts")]
    TooLarge { len_bytes: u64, limit_bytes: u64 },
    /// The module's shape breaks one of the [`ModuleLimits`](crate::ModuleLimits),
    /// found before compiling anything.
    #[error("{what}: {count} exceeds the limit of {limit} (checked before compiling)")]
    OverLimit { what: &'static str, count: u64, limit: u64 },
    /// The same content (by SHA-256) was refused before for a reason that
    /// does not change; it is not compiled again.
    #[error("refused before (same content): {reason}")]
    Remembered { reason: String },
    /// Not a regular `.wasm` file of the contracts folder (a directory, a
    /// symbolic link, a FIFO, a file with another extension, ...).
    #[error("not loaded: {0}")]
    NotLoaded(String),
    #[error("not a WebAssembly file (bad magic bytes; half-written?)")]
    NotWasm,
    #[error("precompiled native code is never loaded from the contracts folder; drop the .wasm instead")]
    Precompiled,
    #[error("not a Wallance contract: {0}")]
    NotAContract(String),
    #[error("invalid WebAssembly: {0}")]
    Compile(String),
    #[error("contract imports something the node does not offer: {0}")]
    Link(String),
    #[error("reading the contract's info failed: {0}")]
    Info(FailureCause),
    #[error("invalid service info: {0}")]
    InvalidInfo(String),
    #[error("service {name:?} is already provided by {other}")]
    NameTaken { name: String, other: String },
    /// A contract file must be named `<service>.wasm`; this one's name is
    /// not a service name (checked before compiling).
    #[error(
        "file {file:?} is not named after a service: a contract file must be named <service>.wasm, \
         the service name being 1 to 64 of a-z, 0-9 and '-' (not starting with '-'){hint}"
    )]
    FileName { file: String, hint: String },
    /// The file offers the service named by its file name, and the
    /// contract announces another: storage and device grants belong to the
    /// name the operator gave the file, so the contract is refused.
    #[error(
        "file {file:?} offers service {file_service:?} (its file name) but the contract announces \
         {announced:?}; rename the file to {announced}.wasm to serve it under that name"
    )]
    NameMismatch {
        file: String,
        file_service: String,
        announced: String,
    },
}

impl LoadError {
    /// Whether loading the same bytes under the same limits would fail the
    /// same way: such refusals are remembered by content hash.
    pub(crate) fn is_deterministic(&self) -> bool {
        match self {
            LoadError::NotWasm
            | LoadError::Precompiled
            | LoadError::OverLimit { .. }
            | LoadError::NotAContract(_)
            | LoadError::Compile(_)
            | LoadError::Link(_)
            | LoadError::InvalidInfo(_) => true,
            LoadError::Info(cause) => !matches!(
                cause,
                FailureCause::WallClock { .. } | FailureCause::Instantiate(_) | FailureCause::StorageBackend(_)
            ),
            _ => false,
        }
    }
}

/// Errors creating a [`Runtime`](crate::Runtime).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    #[error("wasmtime engine: {0}")]
    Engine(String),
    #[error("cache directory {path}: {error}")]
    CacheDir { path: PathBuf, error: std::io::Error },
    #[error("invalid config: {0}")]
    Config(String),
}

/// Errors starting a [`ContractWatcher`](crate::ContractWatcher).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    #[error("cannot watch {path}: {error}")]
    Notify { path: PathBuf, error: notify::Error },
    #[error("cannot start the watcher thread: {0}")]
    Thread(std::io::Error),
}
