//! On-disk cache of compiled contracts, so a node restarts without
//! compiling.
//!
//! An entry is named `<sha256 of the dropped file>-<engine fingerprint>.cwasm`.
//! The fingerprint hashes wasmtime's own compatibility hash (wasmtime
//! version, compiler settings, target CPU features) with our engine config,
//! so an upgrade or a config change simply misses the old entries instead of
//! loading incompatible code. Entries are only ever read from the node's own
//! cache directory, never from the contracts folder: loading native code is
//! trusting it, and the drop folder is where untrusted files land.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Feeds `Hash` output into SHA-256, so the fingerprint is stable across
/// processes (unlike `DefaultHasher`, whose algorithm may change).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Fingerprint of everything that makes compiled code compatible.
pub(crate) fn engine_fingerprint(engine: &Engine, config_tag: &str) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    config_tag.hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..12])
}

#[derive(Debug)]
pub(crate) struct DiskCache {
    dir: PathBuf,
    fingerprint: String,
    refusal_fingerprint: String,
}

/// What one garbage collection of the cache folder did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCollection {
    pub removed_entries: u64,
    pub removed_bytes: u64,
    pub kept_entries: u64,
    pub kept_bytes: u64,
}

impl DiskCache {
    pub fn new(dir: PathBuf, fingerprint: String, refusal_fingerprint: String) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(DiskCache {
            dir,
            fingerprint,
            refusal_fingerprint,
        })
    }

    fn path(&self, content_hash: &[u8; 32]) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", hex::encode(content_hash), self.fingerprint))
    }

    fn refusal_path(&self, content_hash: &[u8; 32]) -> PathBuf {
        self.dir.join(format!(
            "{}-{}.refused",
            hex::encode(content_hash),
            self.refusal_fingerprint
        ))
    }

    /// Why this content was refused before, if it was.
    pub fn load_refusal(&self, content_hash: &[u8; 32]) -> Option<String> {
        use std::io::Read;
        let path = self.refusal_path(content_hash);
        let file = std::fs::File::open(&path).ok()?;
        let mut reason = String::new();
        // Written by us and short; the bound guards against a tampered file.
        file.take(4 << 10).read_to_string(&mut reason).ok()?;
        touch(&path);
        Some(reason)
    }

    /// Remembers why this content was refused. Failure only costs a
    /// recompile later.
    pub fn store_refusal(&self, content_hash: &[u8; 32], reason: &str) {
        let path = self.refusal_path(content_hash);
        if let Err(error) = write_atomically(&path, reason.as_bytes()) {
            tracing::warn!(path = %path.display(), %error, "could not remember a refusal");
        }
    }

    /// Removes entries not in `in_use` that were not used for `unused_keep`,
    /// then the least recently used unused ones until the folder holds at
    /// most `bytes_max`. Entries of other engine versions or settings are
    /// never used, so they age out the same way. Leftover temporary files
    /// older than `unused_keep` go too. Files that do not look like ours
    /// are left alone.
    pub fn collect(
        &self,
        in_use: &std::collections::HashSet<[u8; 32]>,
        unused_keep: std::time::Duration,
        bytes_max: u64,
    ) -> CacheCollection {
        let now = std::time::SystemTime::now();
        let mut report = CacheCollection::default();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return report;
        };
        // (last used, bytes, path) of unused entries still kept.
        let mut unused = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(hash) = entry_hash(name) else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let used_at = meta.modified().unwrap_or(now);
            let age = now.duration_since(used_at).unwrap_or_default();
            let current = name.ends_with(&format!("-{}.cwasm", self.fingerprint))
                || name.ends_with(&format!("-{}.refused", self.refusal_fingerprint));
            if current && hash.is_some_and(|h| in_use.contains(&h)) {
                report.kept_entries += 1;
                report.kept_bytes += meta.len();
            } else if age >= unused_keep {
                remove(&path, meta.len(), &mut report);
            } else {
                unused.push((used_at, meta.len(), path));
            }
        }
        let mut total: u64 = report.kept_bytes + unused.iter().map(|(_, len, _)| len).sum::<u64>();
        unused.sort();
        for (_, len, path) in unused {
            if total > bytes_max {
                remove(&path, len, &mut report);
                total -= len;
            } else {
                report.kept_entries += 1;
                report.kept_bytes += len;
            }
        }
        if report.removed_entries > 0 {
            tracing::info!(
                removed = report.removed_entries,
                removed_bytes = report.removed_bytes,
                kept = report.kept_entries,
                kept_bytes = report.kept_bytes,
                "contract cache collected"
            );
        }
        report
    }

    /// The cached component for `content_hash`, if a usable one exists.
    ///
    /// The entry is mapped, not read: wasmtime maps it privately and makes
    /// its text executable in place. A copy into fresh anonymous memory cost
    /// 112 µs of the 133 µs a cached load of espresso took (page faults on
    /// 207 KB, then TLB shootdowns when that memory turned executable);
    /// mapped, the load takes about 45 µs, and the code lives in the page
    /// cache instead of each node's private memory.
    ///
    /// The cost of mapping: if the file were truncated in place while a
    /// contract runs, touching a page past the new end would kill the node
    /// with SIGBUS. No path does that. The node only ever replaces an entry
    /// by a rename and removes one by unlinking it, and an unlinked file
    /// stays mapped until its contract is dropped. Entries are written
    /// read-only, so an accidental write to one fails. Only the node's own
    /// user, or root, can reach the cache dir, and the threat model gives
    /// an attacker no access to it (`shared/docs/threat-model.md`). The
    /// node's own executable is mapped the same way.
    pub fn load(&self, engine: &Engine, content_hash: &[u8; 32]) -> Option<Component> {
        let path = self.path(content_hash);
        let meta = std::fs::metadata(&path).ok()?;
        if !meta.is_file() {
            return None;
        }
        // SAFETY: `deserialize_file` runs native code from this file, so it
        // must be something wasmtime wrote and nothing may change it while
        // mapped. It comes from the node's private cache dir (never the
        // contracts drop folder), was written by `store` below through a
        // rename (never half-written), read-only, and is never modified in
        // place (above); the name binds it to this engine's fingerprint;
        // wasmtime also checks the header and engine compatibility and fails
        // instead of loading a mismatched artifact.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize_file(engine, &path) };
        match loaded {
            Ok(component) => {
                touch_if_stale(&path, &meta);
                Some(component)
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), error = %format!("{error:#}"), "dropping unusable cache entry");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores a compiled component. Failure only costs a recompile later.
    pub fn store(&self, content_hash: &[u8; 32], component: &Component) {
        let path = self.path(content_hash);
        let result = component
            .serialize()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|bytes| write_atomically(&path, &bytes));
        if let Err(error) = result {
            tracing::warn!(path = %path.display(), %error, "could not write cache entry");
        }
    }
}

/// `Some(content hash)` for a cache entry, `Some(None)` for one of our
/// temporary files, `None` for anything else.
fn entry_hash(name: &str) -> Option<Option<[u8; 32]>> {
    if name.contains(".tmp") {
        return Some(None);
    }
    if !(name.ends_with(".cwasm") || name.ends_with(".refused")) {
        return None;
    }
    let mut hash = [0u8; 32];
    hex::decode_to_slice(name.get(..64)?, &mut hash).ok()?;
    Some(Some(hash))
}

fn remove(path: &Path, len: u64, report: &mut CacheCollection) {
    match std::fs::remove_file(path) {
        Ok(()) => {
            report.removed_entries += 1;
            report.removed_bytes += len;
        }
        Err(error) => tracing::warn!(path = %path.display(), %error, "cannot remove cache entry"),
    }
}

/// Marks an entry as used now (its modification time), for the collector.
fn touch(path: &Path) {
    let now = std::time::SystemTime::now();
    // Entries are read-only; their owner may still set their times.
    let _ = std::fs::File::open(path).and_then(|file| file.set_modified(now));
}

/// `touch`, unless the entry was marked within the last hour: the collector
/// keeps unused entries for days (`cache_unused_keep`), so a finer mark buys
/// nothing, and a cache hit saves the open and the write.
fn touch_if_stale(path: &Path, meta: &std::fs::Metadata) {
    let fresh = meta
        .modified()
        .ok()
        .and_then(|at| std::time::SystemTime::now().duration_since(at).ok())
        .is_some_and(|age| age < TOUCH_EVERY);
    if !fresh {
        touch(path);
    }
}

const TOUCH_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    // Unique per writer so two loads of the same contract never share a
    // temporary file.
    static N_WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N_WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    // Read-only: a loaded entry is mapped, and must never change in place
    // (`DiskCache::load`).
    let mut permissions = file.metadata()?.permissions();
    permissions.set_readonly(true);
    file.set_permissions(permissions)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}
