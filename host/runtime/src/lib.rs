//! Runs Wallance service contracts: WebAssembly components written against
//! the WIT world `wallance:contract/contract` (repository folder `wit/`),
//! usually with the `wallance-sdk` crate.
//!
//! The node uses it like this:
//!
//! 1. [`Runtime::new`] once, with a cache directory and [`Limits`].
//! 2. [`Runtime::subscribe`] to learn of services appearing, changing or
//!    going away ([`RegistryEvent`]), and announce them (name, price,
//!    contract hash).
//! 3. [`Runtime::watch`] the contracts folder (or [`Runtime::load_file`] /
//!    [`Runtime::load_dir`] without hot reload).
//! 4. For each authorized purchase, [`Runtime::invoke`] with the node's
//!    [`ContractStorage`] and the [`Devices`] granted to that service
//!    ([`DeviceGrants::for_service`]). The [`Outcome`] carries the
//!    contract's result, the fuel used and the peak memory; an
//!    [`InvokeError`] says why a contract was stopped.
//!
//! See `README.md` beside this crate for the design choices.

mod cache;
mod checks;
mod devices;
mod error;
mod host;
mod runtime;
mod storage;
mod text;
mod watch;

pub use cache::CacheCollection;
pub use checks::ModuleLimits;
pub use devices::{
    CallKey, Device, DeviceAnswer, DeviceConfig, DeviceGrants, Devices, EspressoMachine, EspressoState, Radio,
    RadioKind, RecentCalls, SimulatedKind,
};
pub use error::{FailureCause, InvokeError, LoadError, RuntimeError, WatchError};
pub use host::{CONTRACT_LOG_TARGET, LogEntry, LogLevel};
pub use runtime::{
    BACKSTOP_MARGIN, ContractOutput, HOST_CALL_LOOP_FUEL_PER_S_X86, Limits, LoadReport, MIN_LIVE_INSTANCES, MemoryPlan,
    NOT_LOADED_ENTRIES_MAX, Outcome, Purchase, RegistryEvent, Runtime, RuntimeConfig, SLOWEST_BOARD_SLOWDOWN,
    ServiceInfo, folder_entry, pool_reservation_bytes, wall_time_for_fuel_ms,
};
pub use storage::{ContractStorage, MemoryStorage, StorageError, StorageQuotaError, StorageWrite};
pub use text::{ECHO_BYTES_MAX, sanitize};
pub use watch::ContractWatcher;
