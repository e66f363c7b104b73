//! The Wallance protocol as a deterministic, sans-IO state machine.
//!
//! No sockets, no files, no clock, no randomness: a [`Core`] is driven by
//! inputs that carry the time, and answers with [`Output`]s (persist this,
//! send that, run this contract). The same state machine runs in the
//! `wallance` daemon, in the simulator and in the tests.
//!
//! ```text
//! loop {
//!     core.handle_message(now, msg)   // or handle_timeout, buy, publish_share
//!     while let Some(out) = core.poll_output() {
//!         match out {
//!             Output::Persist(batch) => store.commit(batch)?,  // durable first
//!             Output::Send(msg) => net.broadcast(msg),
//!             Output::Event(e) => operator.show(e),
//!         }
//!     }
//!     sleep_until(core.poll_timeout())
//! }
//! ```

pub mod core;
pub mod crypto;
pub mod encode;
pub mod msg;
pub mod params;
pub mod pow;
pub mod store_model;
pub mod wallet;

pub use crate::core::{BuyError, Core, CoreConfig, Event, Output, Reject, Stats};
pub use crate::crypto::{Hash, Keypair, MemberId, Signature};
pub use crate::msg::Message;
pub use crate::params::{Membership, Params, UNITS_PER_COIN};
pub use crate::store_model::{Batch, Change, ContractWrite, Snapshot};
pub use crate::wallet::Wallet;
