//! The runtime: one engine, a registry of loaded contracts, and invocation
//! of a contract on a fresh store under limits.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock, mpsc};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store, Trap};

use crate::cache::{CacheCollection, DiskCache, engine_fingerprint};
use crate::checks::{ModuleLimits, check_shape};
use crate::devices::Devices;
use crate::error::{FailureCause, InvokeError, LoadError, RuntimeError};
use crate::host::{self, CallLimits, ContractPre, HostAbort, HostState, Limiter, LogEntry, wit};
use crate::storage::{ContractStorage, Overlay, StorageLimits, StorageWrite};
use crate::text::{ECHO_BYTES_MAX, sanitize};

/// Limits applied to every contract. Fuel and memory limits are
/// deterministic: every node stops a contract at the same point, so every
/// node agrees whether a purchase was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel for one purchase (about one unit per WebAssembly instruction).
    pub fuel_per_call: u64,
    /// Fuel for the `info` call made at load time.
    pub fuel_for_info: u64,
    /// Wall-clock backstop for one call, in case a host function or the
    /// compiled code is far slower than its fuel suggests. Not
    /// deterministic: a node that hits it reports a failure the others may
    /// not see, so keep it well above what the fuel allows.
    pub wall_time_max_ms: u64,
    /// Linear memory of one call, all memories together.
    pub memory_bytes_max: u64,
    pub table_elements_max: u64,
    /// Native stack the contract may use; deep recursion stops here.
    pub wasm_stack_bytes_max: usize,
    pub log_bytes_max: usize,
    /// Log lines of one call, empty ones included.
    pub log_lines_max: usize,
    /// Output (message plus data, or the refusal reason) of one call.
    pub output_bytes_max: usize,
    /// Parameters of one purchase, keys and values together.
    pub params_bytes_max: usize,
    pub storage_key_bytes_max: usize,
    pub storage_value_bytes_max: usize,
    pub storage_writes_max: usize,
    /// Bytes (keys plus values) one service may keep in storage.
    pub storage_bytes_max: u64,
    /// Most keys one `keys` call returns.
    pub storage_keys_limit_max: u32,
    pub device_calls_max: usize,
    /// Largest `.wasm` file accepted.
    pub contract_bytes_max: u64,
    /// Shape of a contract file, checked before compiling.
    pub module: ModuleLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel_per_call: 500_000_000,
            fuel_for_info: 10_000_000,
            wall_time_max_ms: wall_time_for_fuel_ms(500_000_000),
            memory_bytes_max: 32 << 20,
            table_elements_max: 20_000,
            wasm_stack_bytes_max: 512 << 10,
            log_bytes_max: 16 << 10,
            log_lines_max: 256,
            output_bytes_max: 16 << 10,
            params_bytes_max: 8 << 10,
            storage_key_bytes_max: 256,
            storage_value_bytes_max: 64 << 10,
            storage_writes_max: 1_000,
            storage_bytes_max: 1 << 20,
            storage_keys_limit_max: 1_000,
            device_calls_max: 64,
            contract_bytes_max: 16 << 20,
            module: ModuleLimits::default(),
        }
    }
}

/// Fuel per second of the slowest code per unit of fuel we know of, a loop
/// of cheap host calls (`clock.now-ms`), on the development machine
/// (x86-64): 34 M/s measured in the test build (host code unoptimized),
/// 57 M/s reported for a release node (500 M fuel in 8.7 s); rounded down
/// from the slower. See the README, "Fuel and the wall-clock backstop",
/// and the hostile guest's `host-call-loop`.
pub const HOST_CALL_LOOP_FUEL_PER_S_X86: u64 = 30_000_000;
/// How much slower the slowest supported board (a Raspberry Pi 3,
/// Cortex-A53 at 1.2 GHz) runs the same code: assumed, not measured.
pub const SLOWEST_BOARD_SLOWDOWN: u64 = 10;
/// Head room on top (a busy board, a slower host call we did not measure).
pub const BACKSTOP_MARGIN: u64 = 2;

/// The wall-clock backstop for a call given `fuel`: the time the slowest
/// supported board needs to burn that fuel in the worst loop we know,
/// times a margin. Fuel then always stops a contract first, so whether a
/// call completes does not depend on the machine.
pub const fn wall_time_for_fuel_ms(fuel: u64) -> u64 {
    let ms = fuel as u128 * 1_000 * SLOWEST_BOARD_SLOWDOWN as u128 * BACKSTOP_MARGIN as u128
        / HOST_CALL_LOOP_FUEL_PER_S_X86 as u128;
    if ms > u64::MAX as u128 { u64::MAX } else { ms as u64 }
}

/// How to build a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled contracts are cached. `None` compiles at every load.
    pub cache_dir: Option<PathBuf>,
    pub limits: Limits,
    /// Meter fuel. Only the benchmark turns this off, to measure its cost.
    pub consume_fuel: bool,
    /// Period of the epoch ticker that drives the wall-clock backstop.
    pub epoch_tick_ms: u64,
    /// Quiet time the watcher waits for after a file event before loading.
    pub debounce_ms: u64,
    /// Contract instances that may be live at once (calls in flight plus
    /// loads). Instances come from a pre-reserved pool, which makes a call
    /// start several times faster than mapping fresh memory; a call beyond
    /// the pool fails with `FailureCause::Instantiate` instead of waiting.
    /// Each slot reserves `memory_bytes_max` of address space per memory.
    pub max_live_instances: u32,
    /// The compiled-code cache keeps an entry no loaded contract uses for
    /// this long after its last use ...
    pub cache_unused_keep: Duration,
    /// ... and holds at most this many bytes (entries in use always stay).
    pub cache_bytes_max: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            limits: Limits::default(),
            consume_fuel: true,
            epoch_tick_ms: 10,
            debounce_ms: 10,
            max_live_instances: 32,
            cache_unused_keep: Duration::from_secs(7 * 24 * 3600),
            cache_bytes_max: 256 << 20,
        }
    }
}

/// A service as the node announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    pub name: String,
    /// Integer DCoin units.
    pub price: u64,
    pub description: String,
    pub version: String,
    /// SHA-256 of the `.wasm` file as dropped (before the node turns a core
    /// module into a component): what voters compare.
    pub contract_hash: [u8; 32],
    /// The file it was loaded from, if any.
    pub source: Option<PathBuf>,
}

/// An authorized purchase, as consensus decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purchase {
    /// The buyer's Ed25519 public key.
    pub buyer: [u8; 32],
    /// Integer DCoin units.
    pub price: u64,
    pub consensus_time_ms: u64,
    /// Identity of the quorum certificate.
    pub certificate: [u8; 32],
    pub params: Vec<(String, String)>,
}

/// What a successful purchase delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractOutput {
    pub message: String,
    pub data: Vec<(String, String)>,
}

impl ContractOutput {
    /// The value of `key` in `data`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.data.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// The result of a call that ran to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub service: String,
    pub contract_hash: [u8; 32],
    /// `Err` is the contract's refusal (e.g. "the machine has no water");
    /// its storage writes were dropped.
    pub result: Result<ContractOutput, String>,
    /// Deterministic: the same on every node running the same contract.
    pub fuel_used: u64,
    pub peak_memory_bytes: u64,
    /// The call's storage writes, in first-write order (none on refusal or
    /// failure). The runtime never writes: the caller applies them, the
    /// node together with the run's outcome in one store transaction.
    pub writes: Vec<StorageWrite>,
    pub logs: Vec<LogEntry>,
    /// Wall time of the call including instantiation; not deterministic.
    pub elapsed: Duration,
}

/// Timings of one load, for logs and the benchmark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    pub info: ServiceInfo,
    /// Whether the compiled code came from the disk cache.
    pub from_cache: bool,
    /// Core module to component (zero for components and cache hits).
    pub componentize: Duration,
    /// Compile, or deserialize on a cache hit.
    pub compile: Duration,
    /// Linking plus the `info` call.
    pub link_and_info: Duration,
}

/// A change of the set of services, for the node to re-announce.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistryEvent {
    Added(ServiceInfo),
    Replaced {
        previous: ServiceInfo,
        current: ServiceInfo,
    },
    Removed(ServiceInfo),
    /// A file in the watched folder was rejected; any previous version of
    /// its service keeps serving.
    LoadFailed {
        path: PathBuf,
        error: String,
    },
    /// A path of the watched folder that had a `LoadFailed` entry is gone
    /// (or now loads): forget its entry.
    Cleared {
        path: PathBuf,
    },
}

pub(crate) struct LoadedContract {
    pub info: ServiceInfo,
    pre: ContractPre<HostState>,
}

#[derive(Clone, Default)]
pub(crate) struct Registry {
    by_name: BTreeMap<String, Arc<LoadedContract>>,
    by_file: BTreeMap<PathBuf, String>,
}

struct Shared {
    engine: Engine,
    memory: MemoryPlan,
    linker: Linker<HostState>,
    config: RuntimeConfig,
    cache: Option<DiskCache>,
    /// Swapped whole on every change, so a call holds the version it
    /// started with until it ends.
    registry: RwLock<Arc<Registry>>,
    /// Serializes changes to the registry (loads run outside it).
    install_lock: Mutex<()>,
    subscribers: Mutex<Vec<mpsc::Sender<RegistryEvent>>>,
    /// Content hashes refused for a reason that does not change, with the
    /// reason (also kept on disk when there is a cache dir). Bounded by
    /// `REMEMBERED_REFUSALS_MAX`.
    refusals: Mutex<HashMap<[u8; 32], String>>,
    /// Paths of the watched folder that are not loaded, with why: each has
    /// had a `LoadFailed` event, and gets a `Cleared` one when it goes.
    not_loaded: Mutex<BTreeMap<PathBuf, String>>,
    /// First scans of `watch_in_background` still running, and the
    /// condition `wait_for_first_scans` waits on.
    first_scans_running: Mutex<u32>,
    first_scans_done: Condvar,
}

/// Refusals remembered in memory (about 1 KiB each at most).
const REMEMBERED_REFUSALS_MAX: usize = 1024;
/// Folder entries reported as not loaded (about 1 KiB each at most); a
/// folder holding more junk than this gets one warning per further entry
/// but no event, so neither the runtime nor the node's list grows without
/// bound.
pub const NOT_LOADED_ENTRIES_MAX: usize = 1024;

/// Runs Wallance contracts. Cheap to clone; clones share everything.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use wallance_runtime::*;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let runtime = Runtime::new(RuntimeConfig {
///     cache_dir: Some("/var/lib/wallance/cache".into()),
///     ..RuntimeConfig::default()
/// })?;
/// let changes = runtime.subscribe();
/// let _watcher = runtime.watch("/var/lib/wallance/contracts")?;
/// for service in runtime.services() {
///     println!("{} at {}", service.name, service.price);
/// }
/// let storage: Arc<dyn ContractStorage> = Arc::new(MemoryStorage::new());
/// let purchase = Purchase {
///     buyer: [7; 32],
///     price: 2,
///     consensus_time_ms: 1_000,
///     certificate: [9; 32],
///     params: vec![("size".into(), "lungo".into())],
/// };
/// let outcome = runtime.invoke("espresso", &purchase, &storage, &Devices::new())?;
/// println!("{:?}, {} fuel", outcome.result, outcome.fuel_used);
/// # drop(changes);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("services", &self.services().len())
            .field("config", &self.shared.config)
            .finish()
    }
}

/// Guard after each linear memory (bounds are checked explicitly).
const MEMORY_GUARD_BYTES: u64 = 64 << 10;

/// The fewest live instances the runtime accepts when the address space
/// is short: a call and a load at once, twice over.
pub const MIN_LIVE_INSTANCES: u32 = 4;

/// How the runtime laid out contract memory, and why: the node logs it at
/// start (`Display`), since a board's address space decides what fits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Instances the pool holds (calls in flight plus loads).
    pub live_instances: u32,
    /// What the configuration asked for.
    pub requested_instances: u32,
    /// Address space the pool reserves: every memory slot (the most a call
    /// may use plus its guard) and every table slot.
    pub reserved_bytes: u64,
    /// Significant bits of an address on this thread's stack: user space is
    /// at least this large (39 on a Raspberry Pi's usual kernel, 47 on
    /// x86-64, 48 on most arm64 servers).
    pub address_bits: u32,
    /// Why fewer instances than requested: the reservation that failed.
    pub reduced_because: Option<String>,
}

/// Bytes of address space a pool of `instances` reserves (see
/// [`build_engine`]): two memories and eight tables per instance.
pub fn pool_reservation_bytes(limits: &Limits, instances: u32) -> u64 {
    let memory_slot = limits.memory_bytes_max + MEMORY_GUARD_BYTES;
    let table_slot = limits.table_elements_max * 8;
    u64::from(instances) * (2 * memory_slot + 8 * table_slot)
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

impl fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let space = 1u64.checked_shl(self.address_bits).unwrap_or(u64::MAX);
        write!(
            f,
            "contract memory: a pool of {} live instances reserves {} of address space \
             ({:.3} % of the {}-bit user space seen here); each memory is reserved whole \
             (never moved, bounds checked explicitly) so that boards with a 39-bit address space fit",
            self.live_instances,
            gib(self.reserved_bytes),
            self.reserved_bytes as f64 * 100.0 / space as f64,
            self.address_bits,
        )?;
        if let Some(why) = &self.reduced_because {
            write!(
                f,
                "; reduced from {} instances because that reservation failed ({why})",
                self.requested_instances
            )?;
        }
        Ok(())
    }
}

/// The significant bits of an address on this thread's stack. Stacks sit
/// near the top of user space, so this is (about) the address space's
/// width: a hint for the log, not a limit anything relies on.
fn stack_address_bits() -> u32 {
    let here = 0u8;
    let address = std::ptr::addr_of!(here) as usize;
    usize::BITS - address.leading_zeros()
}

/// Builds the engine, halving the pool while its reservation does not fit
/// (a short address space, or `ulimit -v`), down to [`MIN_LIVE_INSTANCES`].
fn plan_engine(config: &RuntimeConfig) -> Result<(Engine, MemoryPlan), RuntimeError> {
    let requested = config.max_live_instances;
    let mut instances = requested;
    let mut reduced_because = None;
    loop {
        match build_engine(config, instances) {
            Ok(engine) => {
                let plan = MemoryPlan {
                    live_instances: instances,
                    requested_instances: requested,
                    reserved_bytes: pool_reservation_bytes(&config.limits, instances),
                    address_bits: stack_address_bits(),
                    reduced_because,
                };
                return Ok((engine, plan));
            }
            Err(RuntimeError::Engine(e)) if instances / 2 >= MIN_LIVE_INSTANCES => {
                reduced_because.get_or_insert_with(|| {
                    format!(
                        "{} for {instances} instances: {e}",
                        gib(pool_reservation_bytes(&config.limits, instances))
                    )
                });
                instances /= 2;
            }
            Err(RuntimeError::Engine(e)) => {
                return Err(RuntimeError::Engine(format!(
                    "cannot start the contract engine even with {instances} live instances ({} reserved): {e}",
                    gib(pool_reservation_bytes(&config.limits, instances))
                )));
            }
            Err(other) => return Err(other),
        }
    }
}

/// Builds the engine with a pool of `instances` live instances. The pool
/// reserves its address space here, at start, so a reservation that does
/// not fit fails now rather than at some later call.
fn build_engine(config: &RuntimeConfig, instances: u32) -> Result<Engine, RuntimeError> {
    let limits = &config.limits;
    let mut wasm = wasmtime::Config::new();
    wasm.wasm_component_model(true)
        .consume_fuel(config.consume_fuel)
        .epoch_interruption(true)
        .max_wasm_stack(limits.wasm_stack_bytes_max)
        // Pi boards run 39-bit address spaces (512 GiB): the default
        // 4 GiB reservation plus guards per memory would cap a node at
        // about a hundred live instances. Reserve what a call may use
        // at most, so memories never move, and pay for explicit bounds
        // checks instead.
        .memory_reservation(limits.memory_bytes_max)
        .memory_reservation_for_growth(0)
        .memory_guard_size(MEMORY_GUARD_BYTES)
        .guard_before_linear_memory(false)
        // NaN bit patterns differ between x86 and Arm (the sign of the
        // NaN a division produces); canonical NaNs make float results
        // the same on every gateway.
        .cranelift_nan_canonicalization(true)
        // Relaxed SIMD lets each CPU pick its own result (fused or
        // not, which operand a min returns, out-of-range conversions
        // and swizzles): `cargo xtask cross-determinism` saw six of
        // its instructions differ between x86-64 and aarch64. The
        // deterministic lowering gives one result everywhere.
        .relaxed_simd_deterministic(true)
        .cranelift_opt_level(wasmtime::OptLevel::Speed);
    // A component made by wit-component has a few core instances (the
    // contract, a shim and a fixup module), each with at most a table
    // and a memory.
    let memory_bytes = usize::try_from(limits.memory_bytes_max)
        .map_err(|_| RuntimeError::Config("memory_bytes_max too large".into()))?;
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(instances)
        .total_core_instances(instances * 8)
        .total_memories(instances * 2)
        .total_tables(instances * 8)
        .max_core_instances_per_component(8)
        .max_memories_per_component(2)
        .max_tables_per_component(8)
        .max_memories_per_module(1)
        .max_tables_per_module(1)
        .table_elements(usize::try_from(limits.table_elements_max).unwrap_or(usize::MAX))
        .max_memory_size(memory_bytes)
        // Reset the low memory of a slot with memset instead of
        // madvise: a call then finds its stack and data pages already
        // mapped. Page faults and madvise were two thirds of a call's
        // cost; this halves a call with the SDK's 64 KiB stack.
        .linear_memory_keep_resident(256 << 10)
        .table_keep_resident(64 << 10);
    wasm.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&wasm).map_err(|e| RuntimeError::Engine(e.to_string()))
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let limits = config.limits;
        if config.epoch_tick_ms == 0 || limits.wall_time_max_ms < config.epoch_tick_ms {
            return Err(RuntimeError::Config(
                "epoch_tick_ms must be positive and at most wall_time_max_ms".into(),
            ));
        }
        let (engine, memory) = plan_engine(&config)?;
        let mut config = config;
        config.max_live_instances = memory.live_instances;
        let mut linker = Linker::new(&engine);
        host::add_to_linker(&mut linker).map_err(|e| RuntimeError::Engine(e.to_string()))?;

        let cache = match &config.cache_dir {
            Some(dir) => {
                // The settings that change compiled code, on top of what
                // wasmtime's own compatibility hash covers.
                let tag = format!(
                    "fuel={} stack={} reservation={} nan=canonical relaxed-simd=deterministic",
                    config.consume_fuel, limits.wasm_stack_bytes_max, limits.memory_bytes_max
                );
                let fingerprint = engine_fingerprint(&engine, &tag);
                // A refusal holds only under the limits it was made with.
                let refusal_fingerprint = engine_fingerprint(&engine, &format!("{tag} {limits:?}"));
                Some(
                    DiskCache::new(dir.clone(), fingerprint, refusal_fingerprint).map_err(|error| {
                        RuntimeError::CacheDir {
                            path: dir.clone(),
                            error,
                        }
                    })?,
                )
            }
            None => None,
        };

        spawn_epoch_ticker(&engine, Duration::from_millis(config.epoch_tick_ms))
            .map_err(|e| RuntimeError::Engine(format!("cannot start the epoch ticker: {e}")))?;

        Ok(Runtime {
            shared: Arc::new(Shared {
                engine,
                memory,
                linker,
                config,
                cache,
                registry: RwLock::new(Arc::new(Registry::default())),
                install_lock: Mutex::new(()),
                subscribers: Mutex::new(Vec::new()),
                refusals: Mutex::new(HashMap::new()),
                not_loaded: Mutex::new(BTreeMap::new()),
                first_scans_running: Mutex::new(0),
                first_scans_done: Condvar::new(),
            }),
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.shared.config
    }

    /// How contract memory was laid out at start, and why.
    pub fn memory_plan(&self) -> &MemoryPlan {
        &self.shared.memory
    }

    /// Loaded services, sorted by name.
    pub fn services(&self) -> Vec<ServiceInfo> {
        self.registry().by_name.values().map(|c| c.info.clone()).collect()
    }

    pub fn service(&self, name: &str) -> Option<ServiceInfo> {
        self.registry().by_name.get(name).map(|c| c.info.clone())
    }

    /// Receives every later change of the set of services.
    pub fn subscribe(&self) -> mpsc::Receiver<RegistryEvent> {
        let (sender, receiver) = mpsc::channel();
        lock(&self.shared.subscribers).push(sender);
        receiver
    }

    /// Loads (or reloads) the contract in `path` and registers it as that
    /// file's service: `path` must be named `<service>.wasm` and the
    /// contract must announce that name (`LoadError::FileName`,
    /// `LoadError::NameMismatch` otherwise). A replaced version keeps
    /// serving the calls that already started on it.
    pub fn load_file(&self, path: impl AsRef<Path>) -> Result<LoadReport, LoadError> {
        let path = path.as_ref();
        let bytes = self.read_contract(path)?;
        self.load_read_file(path, &bytes)
    }

    /// Loads `bytes`, already read from `path`.
    ///
    /// A file offers exactly the service its name gives (`espresso.wasm`
    /// → `espresso`), so storage and device grants, which are keyed by
    /// service name, follow a name the operator chose, never the order in
    /// which files load. The same check runs at start-up and on every
    /// reload: every file load comes through here.
    pub(crate) fn load_read_file(&self, path: &Path, bytes: &[u8]) -> Result<LoadReport, LoadError> {
        // Cheap check first: a file that cannot be named for a service is
        // not compiled at all.
        let file_service = service_of_file(path)?;
        let prepared = self.prepare(bytes)?;
        let announced = &prepared.contract.info.name;
        if *announced != file_service {
            return Err(LoadError::NameMismatch {
                file: file_name(path),
                file_service,
                announced: announced.clone(),
            });
        }
        self.install(prepared, Some(path.to_path_buf()))
    }

    /// Loads a contract from bytes, not tied to a file.
    pub fn load_bytes(&self, bytes: &[u8]) -> Result<LoadReport, LoadError> {
        let prepared = self.prepare(bytes)?;
        self.install(prepared, None)
    }

    /// Loads every regular `*.wasm` file in `dir`, in name order (though
    /// the order decides nothing: each file can only offer the service it
    /// is named after). Every other entry (see [`folder_entry`] for the
    /// rules) and every file that fails to load is logged, reported as a
    /// `LoadFailed` event and listed by [`Runtime::not_loaded`]; it is
    /// returned with its error too.
    pub fn load_dir(&self, dir: impl AsRef<Path>) -> Vec<(PathBuf, Result<LoadReport, LoadError>)> {
        let mut paths = dir_entries(dir.as_ref());
        paths.sort();
        paths
            .into_iter()
            .filter_map(|path| {
                let result = folder_entry(&path)?.and_then(|()| self.load_file(&path));
                match &result {
                    Ok(_) => self.clear_not_loaded(&path),
                    Err(error) => self.report_not_loaded(&path, error),
                }
                Some((path, result))
            })
            .collect()
    }

    /// Withdraws a service. Calls in flight finish.
    pub fn unload(&self, name: &str) -> Option<ServiceInfo> {
        let _guard = lock(&self.shared.install_lock);
        let mut next = (*self.registry()).clone();
        let removed = next.by_name.remove(name)?;
        if let Some(source) = &removed.info.source {
            next.by_file.remove(source);
        }
        self.publish(next, vec![RegistryEvent::Removed(removed.info.clone())]);
        Some(removed.info.clone())
    }

    /// Withdraws the service loaded from `path`, if any.
    pub fn unload_file(&self, path: &Path) -> Option<ServiceInfo> {
        let name = self.registry().by_file.get(path).cloned()?;
        self.unload(&name)
    }

    /// Runs an authorized purchase of `service` on a fresh instance.
    ///
    /// `storage` is the node's contract storage (the runtime scopes it to
    /// the service); `devices` are those the operator granted to the service
    /// (see [`DeviceGrants::for_service`](crate::DeviceGrants::for_service)).
    /// `Ok` means the contract ran to its end (served or refused); `Err`
    /// means it was stopped or could not run, and nothing was written.
    pub fn invoke(
        &self,
        service: &str,
        purchase: &Purchase,
        storage: &Arc<dyn ContractStorage>,
        devices: &Devices,
    ) -> Result<Outcome, InvokeError> {
        let started = Instant::now();
        let limits = &self.shared.config.limits;
        let params_bytes: usize = purchase.params.iter().map(|(k, v)| k.len() + v.len()).sum();
        if params_bytes > limits.params_bytes_max {
            return Err(InvokeError::InvalidPurchase(format!(
                "parameters of {params_bytes} bytes exceed the {} byte limit",
                limits.params_bytes_max
            )));
        }
        // Holding this Arc keeps the version alive even if it is replaced
        // or removed while the call runs.
        let contract = self
            .registry()
            .by_name
            .get(service)
            .cloned()
            .ok_or_else(|| InvokeError::UnknownService(service.to_string()))?;
        let overlay = Overlay::new(
            storage.clone(),
            contract.info.name.clone(),
            StorageLimits {
                key_bytes_max: limits.storage_key_bytes_max,
                value_bytes_max: limits.storage_value_bytes_max,
                writes_max: limits.storage_writes_max,
                service_bytes_max: limits.storage_bytes_max,
            },
        );
        let mut store = self.new_store(
            &contract.info.name,
            purchase.consensus_time_ms,
            Some(overlay),
            devices.clone(),
            limits.fuel_per_call,
        );
        store.data_mut().purchase_id = purchase.certificate;
        let wit_purchase = wit::Purchase {
            buyer: purchase.buyer.to_vec(),
            price: purchase.price,
            consensus_time_ms: purchase.consensus_time_ms,
            certificate: purchase.certificate.to_vec(),
            params: purchase.params.clone(),
        };
        let result = contract
            .pre
            .instantiate(&mut store)
            .map_err(|e| (true, e))
            .and_then(|instance| {
                instance
                    .call_purchase(&mut store, &wit_purchase)
                    .map_err(|e| (false, e))
            });
        let fuel_used = self.fuel_used(&store, limits.fuel_per_call);
        let state = store.into_data();
        let service = contract.info.name.clone();

        let returned = match result {
            Ok(returned) => returned,
            Err((instantiating, error)) => {
                let cause = classify(&error, &state, limits, limits.fuel_per_call, instantiating);
                tracing::info!(%service, %cause, "contract call failed");
                return Err(InvokeError::Failed {
                    service,
                    cause,
                    fuel_used,
                    logs: state.logs,
                });
            }
        };
        let output_bytes = match &returned {
            Ok(outcome) => outcome.message.len() + outcome.data.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>(),
            Err(reason) => reason.len(),
        };
        if output_bytes > limits.output_bytes_max {
            return Err(InvokeError::Failed {
                service,
                cause: FailureCause::OutputTooLarge {
                    len_bytes: output_bytes as u64,
                    limit_bytes: limits.output_bytes_max as u64,
                },
                fuel_used,
                logs: state.logs,
            });
        }
        let mut writes = Vec::new();
        let result = match returned {
            Ok(outcome) => {
                if let Some(overlay) = state.storage {
                    writes = overlay.into_writes();
                }
                // Within the output limit already; escaping control
                // characters may lengthen it, the bound keeps it in check.
                let max = limits.output_bytes_max;
                Ok(ContractOutput {
                    message: sanitize(&outcome.message, max),
                    data: outcome
                        .data
                        .iter()
                        .map(|(k, v)| (sanitize(k, max), sanitize(v, max)))
                        .collect(),
                })
            }
            Err(reason) => Err(sanitize(&reason, limits.output_bytes_max)),
        };
        Ok(Outcome {
            service,
            contract_hash: contract.info.contract_hash,
            result,
            fuel_used,
            peak_memory_bytes: state.limiter.memory_bytes_peak as u64,
            writes,
            logs: state.logs,
            elapsed: started.elapsed(),
        })
    }

    fn registry(&self) -> Arc<Registry> {
        // Readers only clone the Arc; a poisoned lock still holds a whole
        // registry because writers replace it in one assignment.
        self.shared.registry.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn publish(&self, next: Registry, events: Vec<RegistryEvent>) {
        *self.shared.registry.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        let mut subscribers = lock(&self.shared.subscribers);
        for event in events {
            // The embedder reports these its own way (the node logs one
            // line per contract loaded, replaced or removed).
            tracing::debug!(?event, "services changed");
            subscribers.retain(|s| s.send(event.clone()).is_ok());
        }
    }

    pub(crate) fn emit(&self, event: RegistryEvent) {
        lock(&self.shared.subscribers).retain(|s| s.send(event.clone()).is_ok());
    }

    /// Hash of the file a service was loaded from, to skip no-op reloads.
    pub(crate) fn loaded_hash_of_file(&self, path: &Path) -> Option<[u8; 32]> {
        let registry = self.registry();
        let name = registry.by_file.get(path)?;
        registry.by_name.get(name).map(|c| c.info.contract_hash)
    }

    pub(crate) fn loaded_files(&self) -> Vec<PathBuf> {
        self.registry().by_file.keys().cloned().collect()
    }

    /// Reads a contract file: never blocks (a FIFO is refused, not
    /// opened for a blocking read), never reads more than the size limit,
    /// and reports the real size of an oversized file.
    pub(crate) fn read_contract(&self, path: &Path) -> Result<Vec<u8>, LoadError> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let limit = self.shared.config.limits.contract_bytes_max;
        let read_error = |error| LoadError::Read {
            path: path.to_path_buf(),
            error,
        };
        // O_NONBLOCK: opening a FIFO for reading would otherwise wait for
        // a writer for ever.
        let file = std::fs::File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(read_error)?;
        let meta = file.metadata().map_err(read_error)?;
        if !meta.is_file() {
            return Err(LoadError::NotLoaded(not_regular(&meta.file_type())));
        }
        if meta.len() > limit {
            return Err(LoadError::TooLarge {
                len_bytes: meta.len(),
                limit_bytes: limit,
            });
        }
        let mut bytes = Vec::new();
        // Read one byte past the limit: the file may still be growing.
        file.take(limit + 1).read_to_end(&mut bytes).map_err(read_error)?;
        if bytes.len() as u64 > limit {
            let len_bytes = std::fs::metadata(path).map_or(0, |m| m.len()).max(bytes.len() as u64);
            return Err(LoadError::TooLarge {
                len_bytes,
                limit_bytes: limit,
            });
        }
        Ok(bytes)
    }

    /// Compiles (or loads from cache), links and asks the contract its info.
    /// Cheap checks run first; a refusal that would repeat is remembered
    /// by content hash and returned again without compiling.
    fn prepare(&self, bytes: &[u8]) -> Result<Prepared, LoadError> {
        let limits = &self.shared.config.limits;
        if bytes.len() as u64 > limits.contract_bytes_max {
            return Err(LoadError::TooLarge {
                len_bytes: bytes.len() as u64,
                limit_bytes: limits.contract_bytes_max,
            });
        }
        if bytes.starts_with(b"\x7fELF") {
            return Err(LoadError::Precompiled);
        }
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(LoadError::NotWasm);
        }
        let contract_hash: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(reason) = self.remembered_refusal(&contract_hash) {
            return Err(LoadError::Remembered { reason });
        }
        let result = check_shape(
            bytes,
            &limits.module,
            limits.memory_bytes_max,
            limits.table_elements_max,
        )
        .and_then(|()| self.compile_and_link(bytes, contract_hash));
        if let Err(error) = &result
            && error.is_deterministic()
        {
            self.remember_refusal(&contract_hash, error);
        }
        result
    }

    fn remembered_refusal(&self, contract_hash: &[u8; 32]) -> Option<String> {
        if let Some(reason) = lock(&self.shared.refusals).get(contract_hash) {
            return Some(reason.clone());
        }
        let reason = self.shared.cache.as_ref()?.load_refusal(contract_hash)?;
        let reason = sanitize(&reason, 1 << 10);
        self.remember_in_memory(contract_hash, &reason);
        Some(reason)
    }

    fn remember_refusal(&self, contract_hash: &[u8; 32], error: &LoadError) {
        let reason = sanitize(&error.to_string(), 1 << 10);
        self.remember_in_memory(contract_hash, &reason);
        if let Some(cache) = &self.shared.cache {
            cache.store_refusal(contract_hash, &reason);
        }
    }

    fn remember_in_memory(&self, contract_hash: &[u8; 32], reason: &str) {
        let mut refusals = lock(&self.shared.refusals);
        if refusals.len() >= REMEMBERED_REFUSALS_MAX {
            // Forgetting only costs a recompile (or a disk read).
            refusals.clear();
        }
        refusals.insert(*contract_hash, reason.to_string());
    }

    fn compile_and_link(&self, bytes: &[u8], contract_hash: [u8; 32]) -> Result<Prepared, LoadError> {
        let limits = &self.shared.config.limits;
        let engine = &self.shared.engine;

        let mut componentize = Duration::ZERO;
        let started = Instant::now();
        let cached = self
            .shared
            .cache
            .as_ref()
            .and_then(|cache| cache.load(engine, &contract_hash));
        let from_cache = cached.is_some();
        let component = match cached {
            Some(component) => component,
            None => {
                let component_bytes = if is_core_module(bytes) {
                    let started = Instant::now();
                    let encoded = componentize_module(bytes)?;
                    componentize = started.elapsed();
                    encoded
                } else {
                    bytes.to_vec()
                };
                let compiled =
                    Component::from_binary(engine, &component_bytes).map_err(|e| LoadError::Compile(format!("{e:#}")));
                // Cranelift's scratch memory goes back to the allocator
                // after a compile; give it back to the system too, so a
                // big compile does not leave the node's RSS high for ever.
                release_free_memory();
                compiled?
            }
        };
        let compile = started.elapsed() - componentize;

        let started = Instant::now();
        let instance_pre = self
            .shared
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        // Links but lacks our exports: some other component or module.
        let pre = ContractPre::new(instance_pre).map_err(|e| LoadError::NotAContract(format!("{e:#}")))?;

        let mut store = self.new_store("(loading)", 0, None, Devices::new(), limits.fuel_for_info);
        let info = pre
            .instantiate(&mut store)
            .map_err(|e| (true, e))
            .and_then(|instance| instance.call_info(&mut store).map_err(|e| (false, e)))
            .map_err(|(instantiating, error)| {
                LoadError::Info(classify(
                    &error,
                    store.data(),
                    limits,
                    limits.fuel_for_info,
                    instantiating,
                ))
            })?;
        validate_info(&info)?;
        // Only accepted contracts are cached: a refused file must not
        // leave compiled code behind.
        if !from_cache && let Some(cache) = &self.shared.cache {
            cache.store(&contract_hash, &component);
        }
        let link_and_info = started.elapsed();
        Ok(Prepared {
            contract: LoadedContract {
                info: ServiceInfo {
                    name: info.name,
                    price: info.price,
                    description: info.description,
                    version: info.version,
                    contract_hash,
                    source: None,
                },
                pre,
            },
            from_cache,
            componentize,
            compile,
            link_and_info,
        })
    }

    /// Garbage-collects the compiled-code cache (see
    /// [`RuntimeConfig::cache_unused_keep`] and
    /// [`RuntimeConfig::cache_bytes_max`]): entries of loaded contracts
    /// stay. The watcher runs it after its first scan and after changes.
    pub fn collect_cache(&self) -> CacheCollection {
        let Some(cache) = &self.shared.cache else {
            return CacheCollection::default();
        };
        let in_use: HashSet<[u8; 32]> = self.registry().by_name.values().map(|c| c.info.contract_hash).collect();
        cache.collect(
            &in_use,
            self.shared.config.cache_unused_keep,
            self.shared.config.cache_bytes_max,
        )
    }

    /// Waits until the first scan of every folder watched with
    /// [`Runtime::watch_in_background`] is over, at most `timeout`; `true`
    /// if it is. A node that must not judge a purchase by a service that is
    /// still loading (after a restart) waits here before running contracts.
    pub fn wait_for_first_scans(&self, timeout: Duration) -> bool {
        let running = lock(&self.shared.first_scans_running);
        let (running, _) = self
            .shared
            .first_scans_done
            .wait_timeout_while(running, timeout, |n| *n > 0)
            .unwrap_or_else(|p| p.into_inner());
        *running == 0
    }

    pub(crate) fn first_scan_started(&self) {
        *lock(&self.shared.first_scans_running) += 1;
    }

    pub(crate) fn first_scan_finished(&self) {
        let mut running = lock(&self.shared.first_scans_running);
        *running = running.saturating_sub(1);
        self.shared.first_scans_done.notify_all();
    }

    /// Paths of the watched folder that are not loaded, with why.
    pub fn not_loaded(&self) -> Vec<(PathBuf, String)> {
        lock(&self.shared.not_loaded)
            .iter()
            .map(|(path, why)| (path.clone(), why.clone()))
            .collect()
    }

    /// Records that `path` is not loaded and why: a log line and a
    /// `LoadFailed` event (the reason is sanitized and bounded).
    /// Repeating the same reason for the same path (another event on a
    /// file that has not changed) is not reported again.
    pub(crate) fn report_not_loaded(&self, path: &Path, error: &LoadError) {
        let reason = sanitize(&error.to_string(), 1 << 10);
        {
            let mut not_loaded = lock(&self.shared.not_loaded);
            if not_loaded.get(path) == Some(&reason) {
                return;
            }
            if not_loaded.len() >= NOT_LOADED_ENTRIES_MAX && !not_loaded.contains_key(path) {
                tracing::warn!(
                    path = %sanitize(&path.display().to_string(), ECHO_BYTES_MAX),
                    error = %reason,
                    "contract file not loaded (too many such entries to list)"
                );
                return;
            }
            not_loaded.insert(path.to_path_buf(), reason.clone());
        }
        tracing::warn!(
            path = %sanitize(&path.display().to_string(), ECHO_BYTES_MAX),
            error = %reason,
            "contract file not loaded; the previous version, if any, keeps serving"
        );
        self.emit(RegistryEvent::LoadFailed {
            path: path.to_path_buf(),
            error: reason,
        });
    }

    /// Forgets the "not loaded" entry of `path`, if it has one.
    pub(crate) fn clear_not_loaded(&self, path: &Path) {
        if lock(&self.shared.not_loaded).remove(path).is_some() {
            self.emit(RegistryEvent::Cleared {
                path: path.to_path_buf(),
            });
        }
    }

    fn install(&self, prepared: Prepared, source: Option<PathBuf>) -> Result<LoadReport, LoadError> {
        let Prepared {
            mut contract,
            from_cache,
            componentize,
            compile,
            link_and_info,
        } = prepared;
        contract.info.source = source.clone();
        let info = contract.info.clone();
        let _guard = lock(&self.shared.install_lock);
        let mut next = (*self.registry()).clone();
        let mut events = Vec::new();

        if let Some(existing) = next.by_name.get(&info.name)
            && existing.info.source != source
        {
            return Err(LoadError::NameTaken {
                name: info.name.clone(),
                other: existing
                    .info
                    .source
                    .as_ref()
                    .map_or("a contract loaded from bytes".into(), |p| p.display().to_string()),
            });
        }
        // The file used to provide another service: withdraw it.
        if let Some(path) = &source
            && let Some(old_name) = next.by_file.get(path).cloned()
            && old_name != info.name
            && let Some(old) = next.by_name.remove(&old_name)
        {
            events.push(RegistryEvent::Removed(old.info.clone()));
        }
        let previous = next.by_name.insert(info.name.clone(), Arc::new(contract));
        if let Some(path) = source {
            next.by_file.insert(path, info.name.clone());
        }
        match previous {
            Some(previous) if previous.info == info => {}
            Some(previous) => events.push(RegistryEvent::Replaced {
                previous: previous.info.clone(),
                current: info.clone(),
            }),
            None => events.push(RegistryEvent::Added(info.clone())),
        }
        self.publish(next, events);
        Ok(LoadReport {
            info,
            from_cache,
            componentize,
            compile,
            link_and_info,
        })
    }

    fn new_store(
        &self,
        service: &str,
        now_ms: u64,
        storage: Option<Overlay>,
        devices: Devices,
        fuel: u64,
    ) -> Store<HostState> {
        let config = &self.shared.config;
        let limits = &config.limits;
        let mut store = Store::new(
            &self.shared.engine,
            HostState {
                limiter: Limiter {
                    memory_bytes_max: usize::try_from(limits.memory_bytes_max).unwrap_or(usize::MAX),
                    table_elements_max: usize::try_from(limits.table_elements_max).unwrap_or(usize::MAX),
                    memory_bytes: 0,
                    memory_bytes_peak: 0,
                    exceeded: None,
                },
                limits: CallLimits {
                    log_bytes_max: limits.log_bytes_max,
                    log_lines_max: limits.log_lines_max,
                    device_calls_max: limits.device_calls_max,
                    keys_limit_max: limits.storage_keys_limit_max,
                },
                now_ms,
                logs: Vec::new(),
                log_bytes: 0,
                log_lines: 0,
                panic_message: None,
                storage,
                devices,
                device_calls: 0,
                purchase_id: [0; 32],
                device_seq: BTreeMap::new(),
                service: service.to_string(),
                aborted: None,
            },
        );
        store.limiter(|state| &mut state.limiter);
        if config.consume_fuel {
            // Only fails when fuel is off, which this branch excludes.
            let _ = store.set_fuel(fuel);
        }
        store.set_epoch_deadline(limits.wall_time_max_ms.div_ceil(config.epoch_tick_ms));
        store.epoch_deadline_trap();
        store
    }

    fn fuel_used(&self, store: &Store<HostState>, limit: u64) -> u64 {
        if !self.shared.config.consume_fuel {
            return 0;
        }
        limit.saturating_sub(store.get_fuel().unwrap_or(0))
    }
}

struct Prepared {
    contract: LoadedContract,
    from_cache: bool,
    componentize: Duration,
    compile: Duration,
    link_and_info: Duration,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section here leaves its data whole (single pushes and
    // assignments), so a poisoned lock is safe to keep using.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Increments the engine's epoch every `tick`; stops once the engine is
/// gone.
fn spawn_epoch_ticker(engine: &Engine, tick: Duration) -> std::io::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wallance-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(tick);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .map(|_| ())
}

/// A core module has layer 0 and version 1 after the magic; a component
/// has version 0x0d and layer 1.
fn is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[4..8] == [1, 0, 0, 0]
}

fn componentize_module(bytes: &[u8]) -> Result<Vec<u8>, LoadError> {
    // wit-component trusts its input's structure (it panics on some
    // truncated modules), so validate first.
    wasmparser::Validator::new()
        .validate_all(bytes)
        .map_err(|e| LoadError::Compile(e.to_string()))?;
    // Belt and braces: a panic inside wit-component on input that passed
    // validation must still only reject this file.
    let encoded = std::panic::catch_unwind(|| {
        wit_component::ComponentEncoder::default()
            .validate(true)
            .module(bytes)
            .and_then(|mut encoder| encoder.encode())
    })
    .map_err(|_| LoadError::NotAContract("wit-component panicked on this module".into()))?;
    encoded.map_err(|e| LoadError::NotAContract(format!("{e:#}")))
}

/// The service name charset (documented in `wit/contract.wit` and the
/// SDK): 1 to 64 of `a-z`, `0-9` and `-`, not starting with `-`.
fn is_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// The service a contract file offers: its name without `.wasm`, exactly.
/// `_` is not mapped to `-` (cargo writes `radio-rental` as
/// `radio_rental.wasm`): with one spelling per service, two files in one
/// folder can never claim the same name, so no rule has to pick between
/// them and deleting one never uncovers another.
pub(crate) fn service_of_file(path: &Path) -> Result<String, LoadError> {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if path.extension().is_some_and(|ext| ext == "wasm") && is_service_name(stem) {
        return Ok(stem.to_string());
    }
    let lowered = stem.to_ascii_lowercase().replace('_', "-");
    let hint = if lowered != stem && is_service_name(&lowered) {
        format!("; did you mean {lowered}.wasm? (cargo writes '-' in crate names as '_')")
    } else {
        String::new()
    };
    Err(LoadError::FileName {
        file: file_name(path),
        hint,
    })
}

fn validate_info(info: &wit::ServiceInfo) -> Result<(), LoadError> {
    if !is_service_name(&info.name) {
        // Echo only the start: the name may be a megabyte of escapes.
        return Err(LoadError::InvalidInfo(format!(
            "name \"{}\" must be 1 to 64 of a-z, 0-9 and '-', not starting with '-'",
            sanitize(&info.name, 64)
        )));
    }
    if info.description.len() > 256 {
        return Err(LoadError::InvalidInfo(format!(
            "description of {} bytes is longer than 256 bytes",
            info.description.len()
        )));
    }
    if info.version.is_empty() || info.version.len() > 64 {
        return Err(LoadError::InvalidInfo(format!(
            "version must be 1 to 64 bytes, not {}",
            info.version.len()
        )));
    }
    for (what, text) in [("description", &info.description), ("version", &info.version)] {
        if text.chars().any(char::is_control) {
            return Err(LoadError::InvalidInfo(format!(
                "{what} \"{}\" contains control characters",
                sanitize(text, ECHO_BYTES_MAX)
            )));
        }
    }
    Ok(())
}

/// Turns a wasmtime error into the reason the contract was stopped.
fn classify(
    error: &wasmtime::Error,
    state: &HostState,
    limits: &Limits,
    fuel_limit: u64,
    instantiating: bool,
) -> FailureCause {
    if let Some(cause) = state.aborted.clone().or_else(|| state.limiter.exceeded.clone()) {
        return cause;
    }
    if let Some(HostAbort(cause)) = error.downcast_ref::<HostAbort>() {
        return cause.clone();
    }
    if let Some(trap) = error.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => FailureCause::OutOfFuel { limit: fuel_limit },
            Trap::Interrupt => FailureCause::WallClock {
                limit_ms: limits.wall_time_max_ms,
            },
            Trap::StackOverflow => FailureCause::StackOverflow,
            other => match &state.panic_message {
                Some(message) => FailureCause::Panic(message.clone()),
                None => FailureCause::Trap(trap_reason(*other)),
            },
        };
    }
    let text = sanitize(&format!("{error:#}"), 1 << 10);
    if instantiating {
        FailureCause::Instantiate(text)
    } else {
        FailureCause::Trap(text)
    }
}

/// What a trap code means for a contract author.
fn trap_reason(trap: Trap) -> String {
    let why = match trap {
        // Rust keeps locals whose address is taken (arrays, structs passed
        // by reference, function pointers' frames) on a stack inside linear
        // memory, 64 KiB with the SDK's settings. Recursion through such
        // frames (typically through `call_indirect`) runs that stack below
        // address 0, and the next store lands far out of bounds.
        Trap::MemoryOutOfBounds => {
            "out-of-bounds memory access: a bad pointer, or the contract's own stack (in linear memory) \
             overflowing from deep recursion"
        }
        Trap::HeapMisaligned => "misaligned atomic memory access",
        Trap::TableOutOfBounds => "out-of-bounds table access (bad function pointer)",
        Trap::IndirectCallToNull => "call through a null function pointer",
        Trap::BadSignature => "call through a function pointer of the wrong type",
        Trap::IntegerOverflow => "integer overflow",
        Trap::IntegerDivisionByZero => "integer division by zero",
        Trap::BadConversionToInteger => "invalid conversion of a float to an integer",
        Trap::UnreachableCodeReached => "unreachable code reached (an abort without a panic message)",
        other => return other.to_string(),
    };
    why.to_string()
}

/// Every entry of `dir` (empty if it cannot be read).
pub(crate) fn dir_entries(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .collect()
}

/// What the contracts folder does with an entry, from its own metadata
/// (a symbolic link is not followed):
/// - `None`: nothing, silently. It is gone, or it is hidden (its name
///   starts with '.'): deploy tools and editors write `.name.partial` or
///   `.name.swp` beside the real file and rename it into place.
/// - `Some(Ok(()))`: a regular `.wasm` file, to load.
/// - `Some(Err(NotLoaded))`: anything else, with the reason: a directory
///   (subfolders are not scanned), a symbolic link (refused, see the
///   README: a change to its target would go unseen, and the folder is
///   where untrusted files land), a FIFO, socket or device (never opened),
///   or a file with another extension.
pub fn folder_entry(path: &Path) -> Option<Result<(), LoadError>> {
    let name = path.file_name()?;
    if name.as_encoded_bytes().starts_with(b".") {
        return None;
    }
    let meta = std::fs::symlink_metadata(path).ok()?;
    let kind = meta.file_type();
    let why = if kind.is_symlink() {
        "a symbolic link: links are not followed (a change to the target would go unseen); \
         copy or move the contract into the folder"
            .to_string()
    } else if kind.is_dir() {
        "a directory: subfolders are not scanned".to_string()
    } else if !kind.is_file() {
        not_regular(&kind)
    } else if !is_wasm_path(path) {
        "not a .wasm file".to_string()
    } else {
        return Some(Ok(()));
    };
    Some(Err(LoadError::NotLoaded(why)))
}

fn not_regular(kind: &std::fs::FileType) -> String {
    use std::os::unix::fs::FileTypeExt;
    let what = if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    };
    format!("{what}: only regular files are read")
}

pub(crate) fn is_wasm_path(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "wasm")
}

/// Gives memory the allocator holds free back to the system (glibc keeps
/// it otherwise: RSS stayed 300 MB up after one big compile).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it touches no
    // memory in use.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}
