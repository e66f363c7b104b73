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
}

impl DiskCache {
    pub fn new(dir: PathBuf, fingerprint: String) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(DiskCache { dir, fingerprint })
    }

    fn path(&self, content_hash: &[u8; 32]) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", hex::encode(content_hash), self.fingerprint))
    }

    /// The cached component for `content_hash`, if a usable one exists.
    pub fn load(&self, engine: &Engine, content_hash: &[u8; 32]) -> Option<Component> {
        let path = self.path(content_hash);
        if !path.is_file() {
            return None;
        }
        // Read into memory rather than `deserialize_file`'s mmap: a mapped
        // cache file truncated behind our back (an operator clearing the
        // cache) would kill the node with SIGBUS.
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot read cache entry");
                return None;
            }
        };
        // SAFETY: `deserialize` runs native code from these bytes, so they
        // must be something wasmtime wrote. They come from the node's private
        // cache dir (never the contracts drop folder), were written by
        // `store` below through a rename (never half-written), and the file
        // name binds them to this engine's fingerprint; wasmtime also checks
        // the header and engine compatibility and fails instead of loading a
        // mismatched artifact.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize(engine, &bytes) };
        match loaded {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "dropping unusable cache entry");
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

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    // Unique per writer so two loads of the same contract never share a
    // temporary file.
    static N_WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N_WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}
