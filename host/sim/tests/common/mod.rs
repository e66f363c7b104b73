//! Checks the simulator tests share.

use std::collections::BTreeSet;

use wallance_sim::{Report, describe};

/// What light nodes are about, checked on a finished run: each keeps only
/// the wallets it tracks (and its own), fewer than a full node, and stores
/// no wallet row of the others, only their settlement marks; it agrees with
/// a full node on every field of every wallet it keeps and, through those
/// marks, on which commits of every other wallet are settled (and some
/// light node did settle commits of wallets it does not keep); it never commits a purchase of a
/// wallet it does not keep; and its own purchases commit.
pub fn check_light_nodes(r: &Report, light: usize) {
    let why = describe(r);
    let members = r.node_rows.len();
    let lights: Vec<usize> = (0..members).filter(|i| r.node_rows[*i].light).collect();
    assert_eq!(lights.len(), light, "light nodes configured: {why}");
    let full = (0..members)
        .find(|i| {
            let n = &r.node_rows[*i];
            !n.light && !n.byzantine && n.up
        })
        .expect("a full honest node");
    let reference = &r.node_rows[full].wallets;
    assert_eq!(reference.len(), members, "a full node keeps every wallet: {why}");
    let mut settled_elsewhere = 0;
    for &i in &lights {
        let node = &r.node_rows[i];
        assert!(node.up, "light node {i} is down at the end: {why}");
        let tracked = node.tracked.clone().expect("a light node has a tracked set");
        let mut expect: BTreeSet<u32> = tracked;
        expect.insert(i as u32);
        let kept: BTreeSet<u32> = node.wallets.keys().copied().collect();
        assert_eq!(
            kept, expect,
            "light node {i} keeps the tracked wallets and its own: {why}"
        );
        assert!(
            kept.len() < members,
            "light node {i} keeps fewer wallets than a full node: {why}"
        );
        assert!(
            node.stored_wallets.is_subset(&kept),
            "light node {i} stored wallet rows {:?}, it keeps {kept:?}: {why}",
            node.stored_wallets
        );
        assert!(
            node.stored_marks.keys().all(|m| !kept.contains(m)),
            "light node {i} stored marks {:?} for wallets it keeps: {why}",
            node.stored_marks.keys()
        );
        for (idx, w) in &node.wallets {
            let mut a = reference[idx].clone();
            if r.node_rows[*idx as usize].byzantine {
                // Shares of a Byzantine member may honestly differ.
                a.shares_seen = w.shares_seen;
            }
            assert_eq!(&a, w, "light node {i} and full node {full} on wallet {idx}: {why}");
        }
        for (idx, a) in reference.iter().filter(|(idx, _)| !kept.contains(idx)) {
            let marks = node.stored_marks.get(idx).cloned().unwrap_or_default();
            assert_eq!(
                marks,
                (a.settled, a.settled_above.clone()),
                "light node {i}'s marks of wallet {idx} and full node {full}'s settlement: {why}"
            );
            settled_elsewhere += a.settled;
        }
        for p in r.purchases.iter().filter(|p| !kept.contains(&p.requester)) {
            assert!(
                !p.committed_by.contains(&i),
                "light node {i} committed purchase {}/v{} of a wallet it does not keep: {why}",
                p.requester,
                p.version
            );
        }
        let own = r.purchases.iter().filter(|p| p.requester == i as u32).count() as u64;
        assert!(own > 0, "no purchase of light node {i} committed: {why}");
        assert_eq!(
            reference[&(i as u32)].version,
            own,
            "light node {i}'s wallet version and its committed purchases: {why}"
        );
    }
    assert!(
        settled_elsewhere > 0,
        "no light node settled a commit of a wallet it does not keep: {why}"
    );
}
