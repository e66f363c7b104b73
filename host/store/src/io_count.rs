//! redb's file backend with counters: how many times the store synced its
//! files to disk and how many bytes it wrote, the redb file's and the
//! journal's together. On an SD card these are what wears the card and
//! what a commit waits for; the node shows them on `/metrics` and the
//! gateway benchmark divides them by its purchases.

use std::fs::File;
use std::io;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// What the store asked of the disk since it was opened.
#[derive(Debug, Default)]
pub struct IoCounters {
    syncs: AtomicU64,
    bytes_written: AtomicU64,
    writes: AtomicU64,
}

/// A copy of [`IoCounters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCount {
    /// `fdatasync` calls: a durable commit makes one (the journal's), a
    /// checkpoint one or two (redb's, two with quick repair).
    pub syncs: u64,
    /// Bytes handed to the kernel by the store's writes.
    pub bytes_written: u64,
    pub writes: u64,
}

impl IoCounters {
    pub fn get(&self) -> IoCount {
        IoCount {
            syncs: self.syncs.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
        }
    }

    /// One write of `bytes` to a file of the store other than redb's.
    pub(crate) fn add_write(&self, bytes: u64) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
    }

    /// One sync of a file (or directory) of the store other than redb's.
    pub(crate) fn add_sync(&self) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
    }
}

/// [`FileBackend`] that counts syncs and writes; every other call is
/// passed through unchanged (locks included).
#[derive(Debug)]
pub(crate) struct CountingBackend {
    inner: FileBackend,
    counters: Arc<IoCounters>,
}

impl CountingBackend {
    pub(crate) fn new(file: File, counters: Arc<IoCounters>) -> Result<Self, redb::DatabaseError> {
        Ok(Self {
            inner: FileBackend::new(file)?,
            counters,
        })
    }
}

impl StorageBackend for CountingBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), io::Error> {
        self.counters.syncs.fetch_add(1, Ordering::Relaxed);
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_written
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.inner.write(offset, data)
    }
    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }
    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
