//! The Wallance DDS transport: `wallance_core::Message`s over RTPS topics.
//!
//! Every message kind has its own topic, its own IDL struct
//! (`idl/wallance.idl`, mirrored by [`wire`]) and a QoS chosen for what it
//! carries ([`topics`]). Any DDS vendor that compiles the IDL can join.
//!
//! ```text
//! let transport = Transport::new(TransportConfig::new(domain_id))?;
//! let mut inbox = Vec::new();
//! loop {
//!     transport.recv_batch(&mut inbox, 1024, core.poll_timeout() - now);
//!     for msg in inbox.drain(..) { core.handle_message(now, msg) }
//!     while let Some(out) = core.poll_output() {
//!         if let Output::Send(msg) = out { transport.send(&msg)? }
//!     }
//! }
//! ```
//!
//! By default a dedicated thread takes samples the moment rustdds has them and
//! queues them for [`Transport::recv_batch`] (an `on_receive` hook can wake an
//! async task); [`Receiving::Direct`] polls the readers in `recv_batch`
//! instead, one thread wake-up faster. Reliable writers hold at most
//! [`topics::SEND_WINDOW`] unacknowledged samples, so `send` blocks up to
//! `send_block` and then fails with [`SendError::WouldBlock`] rather than
//! flooding a peer's socket.
//!
//! The transport checks shapes and bounds only; signatures, proof of work and
//! protocol rules stay in the core. A sample that does not decode, or breaks a
//! bound, is counted in [`TransportStats`] by topic and by [`Malformed`]
//! reason and dropped, never a panic. The log gets the first sample of each
//! reason and then at most one count per reason every 10 s ([`log_limit`]),
//! however fast a peer sends them.
//!
//! Anything that starts a participant in a test, benchmark or demo runs in a
//! private network namespace ([`netns`]): discovery multicasts on every
//! interface it may use.

pub mod log_limit;
pub mod netns;
pub mod topics;
pub mod transport;
pub mod wire;

pub use log_limit::{LogLimiter, Report};
pub use topics::{TopicId, TopicSpec};
pub use transport::{
    Malformed, Networks, OnReceive, Receiver, Receiving, SendError, TopicStats, Transport, TransportConfig,
    TransportError, TransportStats,
};
pub use wire::{WireError, WireMessage};
