//! The node's record of each purchase it made (as the buyer) or served (as
//! the provider): one [`PurchaseView`] per purchase id, updated from what
//! the loop does and the core's events, and committed in the same store
//! transaction as the step that changed it. So a purchase and its outcome
//! are queryable by id after any restart, for the newest
//! `wallance_store::PURCHASES_KEPT` purchases.

use std::collections::BTreeMap;

use tracing::warn;
use wallance_core::msg::Request;
use wallance_core::{Event, Hash, MemberId};
use wallance_store::StoreReader;

use crate::cmd::{RunDone, now_ms};
use crate::config::NetworkFile;
use crate::http::view::{PurchaseCommit, PurchaseOutcome, PurchaseVerdict, PurchaseView};

/// Records changed since the last commit, read through from the store.
#[derive(Debug)]
pub(super) struct Book {
    reader: StoreReader,
    me: MemberId,
    changed: BTreeMap<Hash, PurchaseView>,
}

impl Book {
    pub(super) fn new(reader: StoreReader, me: MemberId) -> Self {
        Self {
            reader,
            me,
            changed: BTreeMap::new(),
        }
    }

    /// The record of `id`, as last changed (committed or not).
    fn get(&self, id: &Hash) -> Option<PurchaseView> {
        if let Some(p) = self.changed.get(id) {
            return Some(p.clone());
        }
        let bytes = match self.reader.purchase(id) {
            Ok(b) => b?,
            Err(e) => {
                warn!("cannot read purchase record {}: {e}", hex::encode(id));
                return None;
            }
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| warn!("unreadable purchase record {}: {e}", hex::encode(id)))
            .ok()
    }

    fn update(&mut self, id: Hash, fill: impl FnOnce(&mut PurchaseView)) {
        let mut p = self.get(&id).unwrap_or_else(|| PurchaseView {
            request_id: hex::encode(id),
            ..PurchaseView::default()
        });
        fill(&mut p);
        p.refresh_status();
        self.changed.insert(id, p);
    }

    /// This node's wallet asked for `request` (durable in the same commit).
    pub(super) fn bought(&mut self, request: &Request, network: &NetworkFile) {
        self.update(request.id(), |p| {
            p.service = request.service.clone();
            p.provider = network.display_name(&request.provider);
            p.provider_id = request.provider.to_hex();
            p.requester = network.display_name(&request.requester);
            p.requester_id = request.requester.to_hex();
            p.price = request.price;
            p.params = request.params.clone();
            p.requested_at_ms = Some(request.time_ms);
        });
    }

    /// The contract ran here, as the provider.
    pub(super) fn ran(&mut self, done: &RunDone) {
        let outcome = PurchaseOutcome {
            ok: done.ok,
            body: done.body.clone(),
            at_ms: now_ms(),
            logs: done.logs.clone(),
            fuel_used: Some(done.fuel_used),
            elapsed_us: Some(done.elapsed_us),
        };
        self.update(done.request_id, |p| {
            p.service = done.service.clone();
            p.outcome = Some(outcome);
        });
    }

    /// Updates the records an event concerns: commits, outcomes and
    /// verdicts of purchases this node made or serves.
    pub(super) fn on_event(&mut self, e: &Event, network: &NetworkFile) {
        match e {
            Event::Committed {
                requester,
                version,
                request_id,
                service,
                provider,
                price,
                latency_ms,
                from_certificate,
                ..
            } if *requester == self.me || *provider == self.me => {
                self.update(*request_id, |p| {
                    p.service = service.clone();
                    p.provider = network.display_name(provider);
                    p.provider_id = provider.to_hex();
                    p.requester = network.display_name(requester);
                    p.requester_id = requester.to_hex();
                    p.price = *price;
                    p.commit = Some(PurchaseCommit {
                        version: *version,
                        at_ms: now_ms(),
                        latency_ms: *latency_ms,
                        from_certificate: *from_certificate,
                    });
                });
            }
            // The core accepts one outcome per purchase, from its provider;
            // at a node that is its own provider the run's record (with the
            // logs) is already there.
            Event::Outcome(o) if o.requester == self.me => {
                let outcome = PurchaseOutcome {
                    ok: o.ok,
                    body: o.body.clone(),
                    at_ms: now_ms(),
                    logs: Vec::new(),
                    fuel_used: None,
                    elapsed_us: None,
                };
                self.update(o.request_id, |p| {
                    p.outcome.get_or_insert(outcome);
                });
            }
            Event::Settled {
                purchase,
                requester,
                provider,
                paid,
                ..
            } if *requester == self.me || *provider == self.me => {
                self.update(*purchase, |p| {
                    p.verdict = Some(PurchaseVerdict {
                        paid: *paid,
                        at_ms: now_ms(),
                    });
                });
            }
            _ => {}
        }
    }

    /// Records changed and not yet taken for a commit.
    pub(super) fn has_changes(&self) -> bool {
        !self.changed.is_empty()
    }

    /// The records changed since the last call, encoded for the store. Taken
    /// only for the commit itself: until then [`Book::get`] must find them
    /// here, since the store does not have them yet.
    pub(super) fn take(&mut self) -> Vec<([u8; 32], Vec<u8>)> {
        std::mem::take(&mut self.changed)
            .into_iter()
            .filter_map(|(id, p)| Some((id, serde_json::to_vec(&p).ok()?)))
            .collect()
    }

    /// The newest `n` records, newest first.
    pub(super) fn recent(&self, n: usize) -> Vec<PurchaseView> {
        self.reader
            .recent_purchases(n)
            .unwrap_or_default()
            .iter()
            .filter_map(|b| serde_json::from_slice(b).ok())
            .collect()
    }
}
