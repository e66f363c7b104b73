//! What a durable commit costs the disk, as the kernel counts it: a commit
//! that writes one journal page must dirty about that much page cache.
//!
//! The journal file used to be zero-filled in 1 MiB writes, so the page
//! cache held it in large folios, and each later 4 KiB record dirtied (and
//! counted in `/proc/<pid>/io` `write_bytes`) a whole folio: about a GB in
//! seconds on a gateway benchmark, for a few MB of records. The store's own
//! counters (`Store::io`) did not see it: only the kernel's do. This test
//! compares the two on this thread (`/proc/thread-self/io`), in a folder on
//! the build's disk (tmpfs would count nothing).

mod common;

use common::{members, request};
use wallance_core::Change;
use wallance_store::Store;

fn thread_write_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/thread-self/io").expect("/proc/thread-self/io");
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("write_bytes")
}

#[test]
fn a_durable_commit_dirties_about_what_it_writes() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a folder on the build's disk");
    let path = dir.path().join("store.redb");
    let (mut store, _) = Store::open(&path, &members()).expect("open");
    // Warm: the first commits lay out tables.
    for n in 0..4u8 {
        store
            .commit(&[Change::PutRequest(Box::new(request(n, 100)))])
            .expect("commit");
    }
    let counted = store.io().get();
    let kernel = thread_write_bytes();
    const COMMITS: u64 = 64;
    for i in 0..COMMITS {
        store
            .commit(&[Change::PutRequest(Box::new(request((i % 4) as u8, 200 + i)))])
            .expect("commit");
    }
    let counted = store.io().get().bytes_written - counted.bytes_written;
    let kernel = thread_write_bytes() - kernel;
    println!(
        "{COMMITS} durable commits: the store wrote {counted} B, the kernel counted {kernel} B dirtied ({} B per commit)",
        kernel / COMMITS
    );
    if kernel == 0 {
        // A file system without writeback (tmpfs): nothing to compare.
        return;
    }
    assert!(
        kernel <= 2 * counted + 64 * 1024,
        "{kernel} B of page cache dirtied for {counted} B written: large folios again?"
    );

    // After a restart with a cold page cache, the open reads the journal
    // (readahead may cache it in large folios): the same must hold.
    drop(store);
    let journal = dir.path().join("store.redb-journal");
    drop_cache(&journal);
    let _ = std::fs::read(&journal).expect("read the journal");
    let (mut store, _) = Store::open(&path, &members()).expect("reopen");
    let counted = store.io().get();
    let kernel = thread_write_bytes();
    for i in 0..COMMITS {
        store
            .commit(&[Change::PutRequest(Box::new(request((i % 4) as u8, 300 + i)))])
            .expect("commit");
    }
    let counted = store.io().get().bytes_written - counted.bytes_written;
    let kernel = thread_write_bytes() - kernel;
    println!("after a cold reopen: the store wrote {counted} B, the kernel counted {kernel} B dirtied");
    assert!(
        kernel <= 2 * counted + 64 * 1024,
        "{kernel} B of page cache dirtied for {counted} B written after a cold reopen"
    );
}

/// Drops `path`'s clean pages from the page cache, as a reboot would.
fn drop_cache(path: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).expect("open");
    file.sync_all().expect("sync");
    // SAFETY: a plain advice call on a file descriptor we own.
    #[allow(unsafe_code)]
    let r = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0, "posix_fadvise");
}
