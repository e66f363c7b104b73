//! The store applies batches exactly as `Snapshot::apply` does, across
//! reopens and across crashes (the journal replayed).

mod common;

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use wallance_core::{Change, Snapshot};
use wallance_store::Store;

/// The journal beside a store file.
fn journal(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-journal");
    name.into()
}

/// Commits `batches` to a new store and to `Snapshot::apply`, reopening
/// the store every `reopen_every` batches and at the end, and compares.
/// Bit `i` of `lazy` commits batch `i` lazily; bit `k` of `crash` turns
/// the `k`-th reopen into a crash: the store file and its journal are
/// copied as they are (what a `kill -9` leaves: the redb file at its last
/// checkpoint, the journal up to the last durable commit) and the copy is
/// opened, which must hold every batch up to the last durable one.
fn check(batches: &[Vec<Change>], reopen_every: usize, lazy: u64, crash: u64) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut path = dir.path().join("node.redb");
    let members = common::members();
    let mut model = Snapshot::default();
    // The model as of the last durable commit.
    let mut durable = Snapshot::default();
    let (mut store, loaded) = Store::open(&path, &members).unwrap();
    prop_assert_eq!(&loaded, &model);
    let mut reopens = 0;
    for (i, batch) in batches.iter().enumerate() {
        model.apply(batch);
        if lazy >> (i % 64) & 1 == 1 {
            store.commit_lazy(batch).unwrap();
        } else {
            store.commit(batch).unwrap();
            durable = model.clone();
        }
        if (i + 1) % reopen_every == 0 {
            let crashed = crash >> (reopens % 64) & 1 == 1;
            reopens += 1;
            if crashed {
                let image = dir.path().join(format!("crash-{reopens}.redb"));
                std::fs::copy(&path, &image).unwrap();
                std::fs::copy(journal(&path), journal(&image)).unwrap();
                drop(store);
                path = image;
                model = durable.clone();
            } else {
                drop(store);
            }
            let (reopened, loaded) = Store::open(&path, &members).unwrap();
            prop_assert_eq!(&loaded, &model, "after batch {}, crashed: {}", i, crashed);
            durable = model.clone();
            store = reopened;
        }
    }
    drop(store);
    let (_, loaded) = Store::open(&path, &members).unwrap();
    prop_assert_eq!(loaded, model);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_snapshot_apply(batches in common::batches(), reopen_every in 1usize..5,
        lazy in any::<u64>(), crash in any::<u64>()) {
        check(&batches, reopen_every, lazy, crash)?;
    }

    #[test]
    fn run_pruning_matches_snapshot_apply(batches in common::run_batches(), reopen_every in 1usize..5,
        crash in any::<u64>()) {
        check(&batches, reopen_every, 0, crash)?;
    }
}
