//! What crosses the channels between the node's threads: the commands the
//! loop is woken with, and the clock. A leaf: it imports nothing from the
//! rest of the crate, so the daemon, the HTTP API and the CLI all build on
//! it without importing each other in a circle.

use std::time::{SystemTime, UNIX_EPOCH};

use wallance_core::{BuyError, ContractWrite, Hash, MemberId};

/// Wall clock in ms since the Unix epoch: the only clock the core sees.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where a purchase's request id (or the core's refusal) goes once the
/// request is durable.
pub type BuyReply = tokio::sync::oneshot::Sender<Result<Hash, BuyError>>;

/// What the loop is woken by.
#[derive(Debug)]
pub enum Cmd {
    /// DDS samples are waiting.
    Net,
    /// A purchase from this node's wallet (HTTP API).
    Buy {
        service: String,
        provider: Option<MemberId>,
        price: u64,
        params: Vec<(String, String)>,
        reply: BuyReply,
    },
    /// The contract worker finished a run.
    RunDone(Box<RunDone>),
}

/// A finished contract run: its outcome and its storage writes, which the
/// loop hands to the core (`Core::contract_done`), so they become durable
/// in the run's own `Change::RunDone` or not at all.
#[derive(Debug)]
pub struct RunDone {
    pub idx: u32,
    pub version: u64,
    pub ok: bool,
    pub body: String,
    pub service: String,
    pub requester: MemberId,
    pub request_id: Hash,
    /// The contract's log lines (bounded and escaped by the runtime).
    pub logs: Vec<String>,
    pub writes: Vec<ContractWrite>,
    pub fuel_used: u64,
    pub elapsed_us: u64,
    /// Signalled once the run's batch is durable: the worker reads storage
    /// for its next run only after that.
    pub ack: std::sync::mpsc::SyncSender<()>,
}
