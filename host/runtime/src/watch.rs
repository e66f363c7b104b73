//! Hot reload: watch the contracts folder and load, replace or withdraw
//! services as `.wasm` files come and go.
//!
//! Rules that keep the watcher from fighting itself:
//! - On Linux, inotify reports our own reads of a contract as access events;
//!   reacting to them would reload forever. Only creations, data changes,
//!   renames, removals and "closed after writing" count.
//! - Events are debounced (a quiet period of `debounce_ms`), so a file
//!   written in several chunks is loaded once it is complete.
//! - A file whose content hash equals the loaded version is skipped.
//! - A file that fails to load (half-written, garbage, bad contract) is
//!   reported with a log line and a `LoadFailed` event; the previous version
//!   keeps serving. When the writer finishes, its close event triggers
//!   another attempt.
//! - Every other entry of the folder (see [`folder_entry`]) is reported the
//!   same way with why it is not loaded, and a `Cleared` event follows when
//!   it goes. Nothing but regular files is ever opened.
//! - [`Runtime::watch_in_background`] does the first scan on the watcher's
//!   thread, so whatever the folder holds, the caller goes on at once and
//!   services appear as events.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};

use crate::error::{LoadError, WatchError};
use crate::runtime::{RegistryEvent, Runtime, dir_entries, folder_entry};

/// Watches a contracts folder until dropped.
pub struct ContractWatcher {
    watcher: Option<RecommendedWatcher>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    dir: PathBuf,
}

impl std::fmt::Debug for ContractWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContractWatcher")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Drop for ContractWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.watcher.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Runtime {
    /// Loads every `.wasm` in `dir` now, then follows changes until the
    /// returned watcher is dropped. Subscribe first to see the initial
    /// loads as events too.
    pub fn watch(&self, dir: impl Into<PathBuf>) -> Result<ContractWatcher, WatchError> {
        self.start_watch(dir.into(), false)
    }

    /// Like [`Runtime::watch`], but returns at once: the first scan (and
    /// its compiles) runs on the watcher's thread and its results arrive
    /// as [`RegistryEvent`]s, so a node starts serving whatever the folder
    /// holds.
    pub fn watch_in_background(&self, dir: impl Into<PathBuf>) -> Result<ContractWatcher, WatchError> {
        self.start_watch(dir.into(), true)
    }

    fn start_watch(&self, dir: PathBuf, background: bool) -> Result<ContractWatcher, WatchError> {
        // Events name absolute paths; use the same form for the registry.
        let dir = dir.canonicalize().map_err(|error| WatchError::Notify {
            path: dir.clone(),
            error: notify::Error::io(error),
        })?;
        let (sender, receiver) = mpsc::channel::<notify::Result<Event>>();
        let mut watcher = notify::recommended_watcher(move |event| {
            // The receiver is gone only when the watcher is shutting down.
            let _ = sender.send(event);
        })
        .map_err(|error| WatchError::Notify {
            path: dir.clone(),
            error,
        })?;
        // Watch before the initial scan so no file slips between the two.
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|error| WatchError::Notify {
                path: dir.clone(),
                error,
            })?;
        if !background {
            self.load_dir(&dir);
            self.collect_cache();
        }

        if background {
            self.first_scan_started();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let runtime = self.clone();
            let dir = dir.clone();
            let stop = stop.clone();
            let debounce = Duration::from_millis(self.config().debounce_ms);
            std::thread::Builder::new()
                .name("wallance-contracts-watch".into())
                .spawn(move || {
                    if background {
                        let scanned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            runtime.load_dir(&dir);
                            runtime.collect_cache();
                        }));
                        if scanned.is_err() {
                            tracing::error!(dir = %dir.display(), "first scan of the contracts folder panicked");
                        }
                        runtime.first_scan_finished();
                    }
                    watch_loop(&runtime, &dir, &receiver, &stop, debounce)
                })
                .map_err(|error| {
                    if background {
                        self.first_scan_finished();
                    }
                    WatchError::Thread(error)
                })?
        };
        Ok(ContractWatcher {
            watcher: Some(watcher),
            stop,
            thread: Some(thread),
            dir,
        })
    }
}

/// What to do after a batch of events.
#[derive(Default)]
struct Pending {
    paths: BTreeSet<PathBuf>,
    rescan: bool,
}

impl Pending {
    fn add(&mut self, event: notify::Result<Event>, dir: &Path) {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, "contracts watcher error; rescanning");
                self.rescan = true;
                return;
            }
        };
        if event.need_rescan() {
            self.rescan = true;
            return;
        }
        if !is_relevant(&event.kind) {
            return;
        }
        for path in event.paths {
            if path.parent() == Some(dir) {
                self.paths.insert(path);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.paths.is_empty() && !self.rescan
    }
}

fn is_relevant(kind: &EventKind) -> bool {
    match kind {
        // A writer closing the file: it is complete now.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        // Reads, including our own: reacting to them would loop.
        EventKind::Access(_) => false,
        // Permission or timestamp changes do not change the contract.
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
        EventKind::Any | EventKind::Other => true,
    }
}

fn watch_loop(
    runtime: &Runtime,
    dir: &Path,
    receiver: &mpsc::Receiver<notify::Result<Event>>,
    stop: &AtomicBool,
    debounce: Duration,
) {
    // Wake up now and then to notice `stop` even without events.
    let idle_poll = Duration::from_millis(100);
    while !stop.load(Ordering::Relaxed) {
        let mut pending = Pending::default();
        match receiver.recv_timeout(idle_poll) {
            Ok(event) => pending.add(event, dir),
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if pending.is_empty() {
            continue;
        }
        // Debounce: wait until the folder is quiet.
        loop {
            match receiver.recv_timeout(debounce) {
                Ok(event) => pending.add(event, dir),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        if pending.rescan {
            pending.paths.extend(dir_entries(dir));
            pending.paths.extend(runtime.loaded_files());
            pending
                .paths
                .extend(runtime.not_loaded().into_iter().map(|(path, _)| path));
        }
        for path in pending.paths {
            // The watcher must outlive any bug a file can trigger.
            let reloaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                reload(runtime, &path);
            }));
            if reloaded.is_err() {
                tracing::error!(path = %path.display(), "reloading panicked; file skipped");
                runtime.emit(RegistryEvent::LoadFailed {
                    path,
                    error: "internal error while loading (see the node log)".into(),
                });
            }
        }
        runtime.collect_cache();
    }
}

fn reload(runtime: &Runtime, path: &Path) {
    let entry = match folder_entry(path) {
        // Gone (or hidden): withdraw what it provided, forget its entry.
        None => {
            if let Some(info) = runtime.unload_file(path) {
                tracing::debug!(path = %path.display(), service = %info.name, "contract removed");
            }
            runtime.clear_not_loaded(path);
            return;
        }
        Some(entry) => entry,
    };
    let result = entry.and_then(|()| runtime.read_contract(path)).and_then(|bytes| {
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        if runtime.loaded_hash_of_file(path) == Some(hash) {
            return Ok(None);
        }
        runtime.load_read_file(path, &bytes).map(Some)
    });
    match result {
        Ok(Some(report)) => {
            tracing::debug!(
                path = %path.display(),
                service = %report.info.name,
                hash = %hex::encode(report.info.contract_hash),
                "contract loaded"
            );
            runtime.clear_not_loaded(path);
        }
        Ok(None) => {}
        Err(error) => {
            // A regular file replaced by a directory or a link no longer
            // provides its service.
            if matches!(error, LoadError::NotLoaded(_))
                && let Some(info) = runtime.unload_file(path)
            {
                tracing::debug!(path = %path.display(), service = %info.name, "contract removed");
            }
            runtime.report_not_loaded(path, &error);
        }
    }
}
