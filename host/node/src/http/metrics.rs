//! Prometheus metrics at `/metrics`, in the OpenMetrics text format written
//! by `prometheus-client`.
//!
//! Nothing here touches the consensus loop. Counters and gauges are rendered
//! at scrape time from the latest [`View`] the loop published (its stats are
//! cumulative since the node started). The commit latency histogram is the
//! one thing a snapshot cannot give, since the view keeps only the last 200
//! commits: [`Metrics::follow`] watches every published view and observes
//! each commit the first time it appears, so the histogram's counts only
//! ever grow, as Prometheus' `rate()` and `histogram_quantile()` expect.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::view::{SharedView, View};

/// The content type of what [`Metrics::render`] returns.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the commit latency buckets, in seconds: the paper
/// measured 0.3 s with eight Raspberry Pis; a slow network takes seconds.
const LATENCY_BUCKETS_S: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
];

type Labels = Vec<(String, String)>;

/// What survives between scrapes: the latency histogram and the commits it
/// has already counted (a commit is known by its request id and version).
#[derive(Debug)]
pub struct Metrics {
    commit_latency: Histogram,
    seen: Mutex<HashSet<(String, u64)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            commit_latency: Histogram::new(LATENCY_BUCKETS_S),
            seen: Mutex::new(HashSet::new()),
        }
    }
}

impl Metrics {
    /// Observes the commits of `view` not seen in an earlier view.
    pub fn observe(&self, view: &View) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        for c in &view.commits {
            if seen.insert((c.request_id.clone(), c.version)) {
                self.commit_latency.observe(c.latency_ms as f64 / 1000.0);
            }
        }
        // A scrape may observe an older view than the follower already did,
        // so the set keeps the union; commits only leave a view from the old
        // end, so once it grows large, what the view holds is enough.
        if seen.len() > 4 * view.commits.len().max(200) {
            let now: HashSet<(String, u64)> = view.commits.iter().map(|c| (c.request_id.clone(), c.version)).collect();
            seen.retain(|k| now.contains(k));
        }
    }

    /// Observes every view the loop publishes until the node stops.
    pub async fn follow(self: Arc<Self>, hub: SharedView) {
        let mut rx = hub.version.subscribe();
        loop {
            self.observe(&hub.get());
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// The metrics text for the latest view.
    pub fn render(&self, view: &View) -> String {
        self.observe(view);
        let mut r = Registry::with_prefix("wallance");
        let counter = |r: &mut Registry, name: &str, help: &str, value: u64| {
            let c: Counter = Counter::default();
            c.inc_by(value);
            r.register(name, help, c);
        };
        let gauge = |r: &mut Registry, name: &str, help: &str, unit: Option<Unit>, value: i64| {
            let g: Gauge = Gauge::default();
            g.set(value);
            match unit {
                Some(u) => r.register_with_unit(name, help, u, g),
                None => r.register(name, help, g),
            }
        };
        let s = &view.stats;
        r.register_with_unit(
            "commit_latency",
            "Time from a purchase request to its commit at this node",
            Unit::Seconds,
            self.commit_latency.clone(),
        );
        counter(&mut r, "votes_sent", "Votes this node sent", s.votes_sent);
        counter(&mut r, "votes_received", "Votes this node received", s.votes_received);
        let rejected = Family::<Labels, Counter>::default();
        for (reason, n) in &s.rejected {
            rejected
                .get_or_create(&vec![("reason".to_string(), reason.clone())])
                .inc_by(*n);
        }
        r.register("rejected_messages", "Peer messages rejected, by reason", rejected);
        counter(
            &mut r,
            "sensor_shares_received",
            "Sensor shares credited to members",
            s.shares_received,
        );
        counter(&mut r, "commits", "Purchases committed", s.commits);
        counter(
            &mut r,
            "certificates_applied",
            "Provider certificates applied",
            s.certificates_applied,
        );
        counter(&mut r, "duplicate_messages", "Messages received twice", s.duplicates);
        counter(
            &mut r,
            "signatures_cached",
            "Signature checks answered from the cache of verified signatures",
            s.signatures_cached,
        );
        counter(
            &mut r,
            "signatures_batched",
            "Signatures verified in Ed25519 batches that held",
            s.signatures_batched,
        );
        counter(
            &mut r,
            "signature_batches_failed",
            "Signature batches that did not hold: each of their signatures was then verified alone",
            s.batches_failed,
        );
        counter(
            &mut r,
            "tallies_adopted",
            "Vouched catch-ups: settlement and credit tallies taken from heads more than a third of the weight reported",
            s.tallies_adopted,
        );
        counter(
            &mut r,
            "credits_vouched",
            "Votes on credits this node could not check, vouched for by more than a third of the weight",
            s.credits_vouched,
        );
        counter(&mut r, "messages_sent", "Protocol messages sent", s.messages_sent);
        counter(
            &mut r,
            "contract_invocations",
            "Contract runs finished on this node",
            s.contract_runs,
        );
        counter(
            &mut r,
            "contract_failures",
            "Contract runs that refused or failed",
            s.contract_failures,
        );
        let verdicts = Family::<Labels, Counter>::default();
        for (verdict, n) in [("paid", s.verdicts_paid), ("refunded", s.verdicts_refunded)] {
            verdicts
                .get_or_create(&vec![("verdict".to_string(), verdict.to_string())])
                .inc_by(n);
        }
        r.register(
            "verdicts",
            "Purchases settled here: the price paid to the provider or refunded",
            verdicts,
        );
        gauge(
            &mut r,
            "escrows_open",
            "Purchase prices held until their verdict",
            None,
            to_i64(s.escrows_open),
        );
        counter(&mut r, "dds_received_samples", "DDS samples received", s.dds_received);
        let malformed = Family::<Labels, Counter>::default();
        // Every reason, zeros included: a fixed label set.
        for reason in wallance_dds::Malformed::ALL.map(|r| r.as_str()) {
            malformed
                .get_or_create(&vec![("reason".to_string(), reason.to_string())])
                .inc_by(s.dds_malformed_by_reason.get(reason).copied().unwrap_or(0));
        }
        r.register(
            "dds_malformed_samples",
            "DDS samples dropped before the core (did not decode or broke a bound), by reason",
            malformed,
        );
        let send_failures = Family::<Labels, Counter>::default();
        for reason in wallance_dds::SendError::REASONS {
            send_failures
                .get_or_create(&vec![("reason".to_string(), reason.to_string())])
                .inc_by(s.dds_send_failures.get(reason).copied().unwrap_or(0));
        }
        r.register(
            "dds_send_failures",
            "Messages this node failed to send over DDS, by reason",
            send_failures,
        );
        gauge(
            &mut r,
            "store",
            "Size of the redb store file",
            Some(Unit::Bytes),
            to_i64(s.store_bytes),
        );
        counter(
            &mut r,
            "store_syncs",
            "File syncs (fdatasync) of the store: one per durable commit (its journal page), one or two per checkpoint",
            s.store_syncs,
        );
        counter(
            &mut r,
            "store_written_bytes",
            "Bytes the store wrote to its file and its journal",
            s.store_written_bytes,
        );
        let commits = Family::<Labels, Counter>::default();
        for (durability, n) in [("immediate", s.store_commits_durable), ("lazy", s.store_commits_lazy)] {
            commits
                .get_or_create(&vec![("durability".to_string(), durability.to_string())])
                .inc_by(n);
        }
        r.register(
            "store_commits",
            "Store commits, with fsync (immediate) or without (lazy)",
            commits,
        );
        gauge(
            &mut r,
            "uptime",
            "Time since the node started",
            Some(Unit::Seconds),
            to_i64(view.uptime_s),
        );
        gauge(
            &mut r,
            "members",
            "Members of the network",
            None,
            to_i64(view.members as u64),
        );
        gauge(
            &mut r,
            "quorum",
            "Votes needed to commit",
            None,
            to_i64(view.quorum as u64),
        );
        gauge(
            &mut r,
            "dds_participants",
            "DDS participants discovered",
            None,
            to_i64(view.peers.dds_participants as u64),
        );
        gauge(
            &mut r,
            "pending_requests",
            "Purchase requests waiting for votes",
            None,
            to_i64(view.pending.len() as u64),
        );
        gauge(
            &mut r,
            "services",
            "Services offered on the network",
            None,
            to_i64(view.services.len() as u64),
        );
        let contracts = Family::<Labels, Gauge>::default();
        for status in ["loaded", "rejected"] {
            let n = view.contracts.iter().filter(|c| c.status == status).count();
            contracts
                .get_or_create(&vec![("status".to_string(), status.to_string())])
                .set(to_i64(n as u64));
        }
        r.register("contracts", "Files in the contracts folder, by status", contracts);
        let balances = Family::<Labels, Gauge>::default();
        let versions = Family::<Labels, Gauge>::default();
        for w in &view.wallets {
            let labels = vec![("member".to_string(), w.name.clone())];
            balances.get_or_create(&labels).set(to_i64(w.balance));
            versions.get_or_create(&labels).set(to_i64(w.version));
        }
        r.register(
            "wallet_balance_units",
            "Committed balance of each wallet (1 DCoin = 1000000 units)",
            balances,
        );
        r.register("wallet_version", "Committed purchases of each wallet", versions);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &r);
        out
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::view::CommitView;

    fn commit(id: &str, latency_ms: u64) -> std::sync::Arc<CommitView> {
        std::sync::Arc::new(CommitView {
            requester: "node-2".into(),
            requester_id: "00".into(),
            version: 1,
            request_id: id.into(),
            service: "espresso".into(),
            provider: "node-1".into(),
            provider_id: String::new(),
            price: 1,
            remaining: 1,
            latency_ms,
            from_certificate: false,
            at_ms: 0,
        })
    }

    #[test]
    fn every_commit_is_counted_once() {
        let m = Metrics::default();
        let mut v = View::default();
        v.commits.push(commit("a", 300));
        m.observe(&v);
        m.observe(&v);
        v.commits.insert(0, commit("b", 40));
        let text = m.render(&v);
        assert!(text.contains("wallance_commit_latency_seconds_count 2"), "{text}");
        assert!(
            text.contains("wallance_commit_latency_seconds_bucket{le=\"0.05\"} 1"),
            "{text}"
        );
        // Commits leaving the view do not uncount them.
        v.commits.clear();
        assert!(m.render(&v).contains("wallance_commit_latency_seconds_count 2"));
    }

    #[test]
    fn counters_and_labels_render() {
        let m = Metrics::default();
        let mut v = View::default();
        v.stats.votes_sent = 7;
        v.stats.rejected.insert("bad signature".into(), 3);
        v.stats.dds_malformed_by_reason.insert("too_long".into(), 5);
        let text = m.render(&v);
        assert!(text.contains("wallance_votes_sent_total 7"), "{text}");
        assert!(
            text.contains("wallance_dds_malformed_samples_total{reason=\"too_long\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("wallance_dds_malformed_samples_total{reason=\"undecodable\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("wallance_dds_send_failures_total{reason=\"window_full\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("wallance_rejected_messages_total{reason=\"bad signature\"} 3"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn the_grafana_example_only_queries_metrics_the_node_exports() {
        let grafana = include_str!("../../../../examples/grafana/wallance.json");
        let mut v = View::default();
        v.commits.push(commit("a", 300));
        v.stats.rejected.insert("stale".into(), 1);
        v.wallets.push(crate::http::view::WalletView {
            name: "node-1".into(),
            id: "00".into(),
            version: 0,
            state: String::new(),
            balance: 0,
            spendable: 0,
            shares: 0,
            received: 0,
            last_commit: None,
        });
        let text = Metrics::default().render(&v);
        let mut checked = 0;
        for (i, _) in grafana.match_indices("wallance_") {
            let name: String = grafana[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(text.contains(&format!("\n{name}")), "{name} is not exported:\n{text}");
            checked += 1;
        }
        assert!(checked >= 10, "only {checked} metric names found in the dashboard");
    }
}
