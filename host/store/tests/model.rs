//! The store applies batches exactly as `Snapshot::apply` does, across
//! reopens.

mod common;

use proptest::prelude::*;
use wallance_core::{Change, Snapshot};
use wallance_store::Store;

/// Commits `batches` to a new store and to `Snapshot::apply`, reopening
/// the store every `reopen_every` batches and at the end, and compares.
fn check(batches: &[Vec<Change>], reopen_every: usize) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.redb");
    let members = common::members();
    let mut model = Snapshot::default();
    let (mut store, loaded) = Store::open(&path, &members).unwrap();
    prop_assert_eq!(&loaded, &model);
    for (i, batch) in batches.iter().enumerate() {
        model.apply(batch);
        store.commit(batch).unwrap();
        if (i + 1) % reopen_every == 0 {
            drop(store);
            let (reopened, loaded) = Store::open(&path, &members).unwrap();
            prop_assert_eq!(&loaded, &model, "after batch {}", i);
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
    fn store_matches_snapshot_apply(batches in common::batches(), reopen_every in 1usize..5) {
        check(&batches, reopen_every)?;
    }

    #[test]
    fn run_pruning_matches_snapshot_apply(batches in common::run_batches(), reopen_every in 1usize..5) {
        check(&batches, reopen_every)?;
    }
}
