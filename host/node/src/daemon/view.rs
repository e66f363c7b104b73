//! The [`View`] the loop publishes, built from the core, the transport and
//! what the loop keeps (the HTTP side only ever reads it).

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use wallance_core::{Core, Keypair};
use wallance_dds::Transport;
use wallance_runtime::ServiceInfo;

use crate::config::NetworkFile;
use crate::http::view::{
    CommitView, ContractState, LastCommit, OutcomeView, PeersView, PendingView, ServiceView, StatsView, View,
    WalletView,
};

/// A file of the contracts folder that loaded.
pub(super) fn contract_loaded(info: &ServiceInfo) -> ContractState {
    ContractState {
        file: info
            .source
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        service: Some(info.name.clone()),
        price: Some(info.price),
        description: Some(info.description.clone()),
        version: Some(info.version.clone()),
        contract_hash: Some(hex::encode(info.contract_hash)),
        status: "loaded".into(),
        error: None,
        at_ms: crate::cmd::now_ms(),
    }
}

/// A path of the contracts folder that is not loaded, and why.
pub(super) fn contract_rejected(path: &Path, error: &str) -> ContractState {
    ContractState {
        file: path.display().to_string(),
        service: None,
        price: None,
        description: None,
        version: None,
        contract_hash: None,
        status: "rejected".into(),
        error: Some(error.to_string()),
        at_ms: crate::cmd::now_ms(),
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn build(
    core: &Core,
    network: &NetworkFile,
    key: &Keypair,
    commits: &VecDeque<Arc<CommitView>>,
    outcomes: &VecDeque<Arc<OutcomeView>>,
    produced: &VecDeque<Arc<OutcomeView>>,
    contracts: &[ContractState],
    transport: &Transport,
    dds_participants: usize,
    store_path: &Path,
    store_io: (wallance_store::IoCount, super::StoreCommits),
    started: Instant,
) -> View {
    let name = |id: &wallance_core::MemberId| network.display_name(id);
    let params = core.params();
    let s = core.stats();
    let t = transport.stats();
    let store_bytes = std::fs::metadata(store_path).map(|m| m.len()).unwrap_or(0);
    let runs = core.runs();
    // Each wallet's newest commit, in one pass (the list is newest first).
    let mut last_commits: HashMap<&str, &CommitView> = HashMap::new();
    for c in commits {
        last_commits.entry(c.requester_id.as_str()).or_insert(c);
    }
    View {
        me: name(&key.id()),
        id: key.id().to_hex(),
        uptime_s: started.elapsed().as_secs(),
        members: core.membership().len(),
        quorum: core.membership().quorum_count(params),
        reward_units: params.reward_units,
        wallets: core
            .wallets()
            .map(|w| WalletView {
                name: name(&w.id),
                id: w.id.to_hex(),
                version: w.version,
                state: hex::encode(w.state),
                balance: w.balance,
                spendable: w.spendable(params),
                shares: w.shares_seen,
                received: w.received,
                last_commit: last_commits.get(w.id.to_hex().as_str()).map(|c| LastCommit {
                    request_id: c.request_id.clone(),
                    service: c.service.clone(),
                    price: c.price,
                    at_ms: c.at_ms,
                }),
            })
            .collect(),
        pending: core
            .pending_requests()
            .map(|(r, parked)| PendingView {
                request_id: hex::encode(r.id()),
                requester: name(&r.requester),
                service: r.service.clone(),
                price: r.price,
                version: r.version,
                waiting: parked,
                time_ms: r.time_ms,
            })
            .collect(),
        commits: commits.iter().cloned().collect(),
        outcomes: outcomes.iter().cloned().collect(),
        produced: produced.iter().cloned().collect(),
        services: core
            .services()
            .map(|(p, s)| ServiceView {
                name: s.name.clone(),
                price: s.price,
                provider: name(p),
                provider_id: p.to_hex(),
                contract_hash: hex::encode(s.contract_hash),
            })
            .collect(),
        contracts: contracts.to_vec(),
        peers: PeersView { dds_participants },
        stats: StatsView {
            rejected: s.rejected.clone(),
            votes_sent: s.votes_sent,
            votes_received: s.votes_received,
            shares_received: s.shares_received,
            commits: s.commits,
            certificates_applied: s.certificates_applied,
            duplicates: s.duplicates,
            signatures_cached: s.signatures_cached,
            signatures_batched: s.signatures_batched,
            batches_failed: s.batches_failed,
            signatures_checked: s.signatures_checked,
            tallies_adopted: s.tallies_adopted,
            credits_vouched: s.credits_vouched,
            messages_sent: s.messages_sent,
            dds_received: t.received(),
            dds_malformed: t.malformed(),
            dds_malformed_by_reason: t
                .malformed_by_reason
                .iter()
                .map(|(r, n)| (r.as_str().to_string(), *n))
                .collect(),
            dds_send_failures: t
                .send_failed_by_reason
                .iter()
                .map(|(r, n)| (r.to_string(), *n))
                .collect(),
            store_bytes,
            store_syncs: store_io.0.syncs,
            store_written_bytes: store_io.0.bytes_written,
            store_commits_durable: store_io.1.durable,
            store_commits_lazy: store_io.1.lazy,
            store_steps: store_io.1.steps,
            contract_runs: runs.values().filter(|r| r.done.is_some()).count() as u64,
            contract_failures: runs.values().filter(|r| matches!(&r.done, Some((false, _)))).count() as u64,
            verdicts_paid: s.verdicts_paid,
            verdicts_refunded: s.verdicts_refunded,
            escrows_open: core.escrows().count() as u64,
        },
    }
}
