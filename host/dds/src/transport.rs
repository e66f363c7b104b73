//! The daemon's view of DDS: `send(&Message)` and batches of received messages.
//!
//! One participant, one writer and one reader per topic (two topics carry
//! every message kind, see [`crate::topics`]). A dedicated thread
//! owns the readers, waits on them with `mio` and takes every available sample
//! at once, in batches, into a bounded inbox the daemon drains with
//! [`Receiver::recv_batch`]. Taking immediately matters: rustdds drops the
//! oldest untaken samples once a reader's cache is full, silently, even on a
//! reliable topic (see the README).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustdds::dds::result::{ReadError, WriteError};
use rustdds::mio1::{Events, Interest, Poll, Token, Waker};
use rustdds::{
    CDRDeserializerAdapter, CDRSerializerAdapter, DomainParticipant, DomainParticipantBuilder, GUID, RTPSEntity,
    Subscriber, Topic, no_key,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use wallance_core::Message;

use crate::log_limit::{LogLimiter, Report};
use crate::topics::TopicId;
use crate::wire::{self, WireError, WireMessage};

/// Which interfaces the participant may use and advertise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Networks {
    /// rustdds' default: every interface.
    All,
    /// 127.0.0.1 only: discovery multicast and locators stay on `lo`.
    Loopback,
    /// Only these addresses.
    Only(Vec<IpAddr>),
}

/// Called from the reader thread after new messages reach the inbox; for
/// example `move || notify.notify_one()` with a `tokio::sync::Notify`.
pub type OnReceive = Arc<dyn Fn() + Send + Sync>;

/// Everything [`Transport::new`] needs.
#[derive(Clone)]
pub struct TransportConfig {
    pub domain_id: u16,
    pub networks: Networks,
    /// Messages buffered between the reader thread and the daemon. When full,
    /// the reader thread stops taking until the daemon drains it.
    pub inbox_capacity: usize,
    /// How long `send` on a reliable topic may wait for the send window.
    pub send_block: Duration,
    /// Deliver messages this participant wrote itself (off for the daemon:
    /// the core already knows what it sent).
    pub deliver_own: bool,
    /// How samples reach `recv_batch`; see [`Receiving`].
    pub receiving: Receiving,
    pub on_receive: Option<OnReceive>,
    /// How long the first attempt at creating the participant and its
    /// endpoints may take before [`Transport::new`] abandons it and starts
    /// another (each next one may take twice as long), and how many
    /// attempts it makes. rustdds 0.15.1 can deadlock while
    /// endpoints are created and discovery matches more than 32 remote
    /// endpoints at once (a node starting or restarting among dozens of
    /// running peers): see [`Transport::new`].
    pub start_timeout: Duration,
    pub start_attempts: u32,
}

/// Where readers are polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receiving {
    /// A dedicated thread takes samples the moment they arrive into a
    /// bounded inbox; `recv_batch` drains the inbox. Nothing is lost while
    /// the daemon is busy (up to `inbox_capacity`), and `on_receive` can wake
    /// an async task. The default.
    Thread,
    /// `recv_batch` polls and takes from the readers itself: one thread hop
    /// less (lower latency), but samples wait in rustdds' caches while the
    /// caller is busy, so it must call `recv_batch` often; `on_receive` and
    /// `inbox_capacity` are unused.
    Direct,
}

impl std::fmt::Debug for TransportConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportConfig")
            .field("domain_id", &self.domain_id)
            .field("networks", &self.networks)
            .field("inbox_capacity", &self.inbox_capacity)
            .field("send_block", &self.send_block)
            .field("deliver_own", &self.deliver_own)
            .field("receiving", &self.receiving)
            .field("on_receive", &self.on_receive.is_some())
            .field("start_timeout", &self.start_timeout)
            .field("start_attempts", &self.start_attempts)
            .finish()
    }
}

impl TransportConfig {
    /// Defaults for a node: all interfaces, 65 536 buffered messages, sends
    /// blocking at most 1 s for the window, own messages not delivered.
    pub fn new(domain_id: u16) -> Self {
        Self {
            domain_id,
            networks: Networks::All,
            inbox_capacity: 65_536,
            // A flood fills the window legitimately and the writer's event
            // loop needs time to drain it (100 ms was too short for a debug
            // build under load). A peer that died holds the window until its
            // lease expires (50 s); each send then waits this long and fails:
            // lower it where stalling matters more than flood throughput.
            send_block: Duration::from_secs(1),
            deliver_own: false,
            receiving: Receiving::Thread,
            on_receive: None,
            // Creation takes milliseconds; seconds when dozens of nodes
            // start at once on two cores. 4, 8 then 16 s.
            start_timeout: Duration::from_secs(4),
            start_attempts: 3,
        }
    }

    pub fn loopback(domain_id: u16) -> Self {
        Self {
            networks: Networks::Loopback,
            ..Self::new(domain_id)
        }
    }
}

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    #[error("DDS participant, topic or endpoint creation failed: {0}")]
    Create(String),
    #[error("reader thread setup failed: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "{what}: none of {attempts} attempts finished, the first within {timeout:?}, each next within twice as long (rustdds deadlocked?)"
    )]
    Stuck {
        what: &'static str,
        attempts: u32,
        timeout: Duration,
    },
}

/// Runs `attempt(i)` for i = 0, 1 ... on a thread of its own and waits
/// `timeout` for the first, twice as long for each next. An attempt that has not returned by then is
/// abandoned, its thread and whatever it holds leaked, and the next one
/// starts; an attempt that returns, with a value or an error, ends the
/// matter. After `attempts` abandoned attempts: [`TransportError::Stuck`].
pub(crate) fn with_deadline<T: Send + 'static>(
    what: &'static str,
    timeout: Duration,
    attempts: u32,
    attempt: impl Fn(u32) -> Result<T, TransportError> + Send + Sync + 'static,
) -> Result<T, TransportError> {
    let attempt = Arc::new(attempt);
    for i in 0..attempts.max(1) {
        let (tx, rx) = std::sync::mpsc::channel();
        let run = attempt.clone();
        std::thread::Builder::new()
            .name(format!("wallance-dds-start-{i}"))
            .spawn(move || {
                let _ = tx.send(run(i));
            })?;
        let waited = timeout.saturating_mul(1 << i.min(16));
        match rx.recv_timeout(waited) {
            Ok(result) => return result,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(TransportError::Create(format!("{what}: the attempt's thread panicked")));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => tracing::warn!(
                attempt = i + 1,
                "{what}: not done after {waited:?}; abandoning this attempt (its threads stay blocked) \
                 and starting again with a new participant"
            ),
        }
    }
    Err(TransportError::Stuck {
        what,
        attempts: attempts.max(1),
        timeout,
    })
}

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    #[error("{kind} cannot be put on the wire: {source}")]
    Wire { kind: &'static str, source: WireError },
    #[error("{0} not sent: the reliable send window stayed full for the whole send_block")]
    WouldBlock(&'static str),
    #[error("{kind} not sent: {reason}")]
    Dds { kind: &'static str, reason: String },
}

impl SendError {
    /// Every value of [`SendError::reason`].
    pub const REASONS: [&'static str; 3] = ["window_full", "dds_error", "not_encodable"];

    /// A fixed short name of the failure, to count and rate-limit it by.
    pub fn reason(&self) -> &'static str {
        Self::REASONS[self.reason_index()]
    }

    fn reason_index(&self) -> usize {
        match self {
            SendError::WouldBlock(_) => 0,
            SendError::Dds { .. } => 1,
            SendError::Wire { .. } => 2,
        }
    }
}

/// Counters of one topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicStats {
    pub sent: u64,
    pub send_failed: u64,
    pub received: u64,
    /// Samples that did not decode or broke a bound; dropped.
    pub malformed: u64,
    /// Samples this participant wrote itself, skipped (`deliver_own` off).
    pub own_skipped: u64,
}

/// Why a received sample was dropped: the `reason` label of the node's
/// `wallance_dds_malformed_samples_total`. A fixed set, so a peer cannot
/// invent label values or log keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Malformed {
    /// The bytes do not decode as the topic's type (CDR), or use an
    /// encoding rustdds does not read.
    Undecodable,
    /// A string, byte sequence or list over its bound.
    TooLong,
    /// A name (an IDL string) with a NUL byte inside.
    NulByte,
    /// Free text that is not UTF-8.
    NotUtf8,
    /// rustdds could not read its own cache (poisoned lock, internal error):
    /// not the peer's doing.
    ReadFailed,
}

impl Malformed {
    pub const ALL: [Malformed; 5] = [
        Malformed::Undecodable,
        Malformed::TooLong,
        Malformed::NulByte,
        Malformed::NotUtf8,
        Malformed::ReadFailed,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Malformed::Undecodable => "undecodable",
            Malformed::TooLong => "too_long",
            Malformed::NulByte => "nul_byte",
            Malformed::NotUtf8 => "not_utf8",
            Malformed::ReadFailed => "read_failed",
        }
    }
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&WireError> for Malformed {
    fn from(e: &WireError) -> Self {
        match e {
            WireError::TooLong { .. } => Malformed::TooLong,
            WireError::Nul(_) => Malformed::NulByte,
            WireError::Utf8(_) => Malformed::NotUtf8,
        }
    }
}

impl From<&ReadError> for Malformed {
    fn from(e: &ReadError) -> Self {
        match e {
            ReadError::Deserialization { .. } => Malformed::Undecodable,
            _ => Malformed::ReadFailed,
        }
    }
}

/// A snapshot of [`Transport::stats`].
#[derive(Debug, Clone, Default)]
pub struct TransportStats {
    pub topics: Vec<(TopicId, TopicStats)>,
    /// Per topic, why its latest malformed sample was dropped.
    pub last_malformed: Vec<(TopicId, String)>,
    /// Malformed samples over all topics, by reason: every reason of
    /// [`Malformed::ALL`], in that order, zeros included.
    pub malformed_by_reason: Vec<(Malformed, u64)>,
    /// Failed sends over all topics by [`SendError::reason`]: every reason
    /// of [`SendError::REASONS`], zeros included. Unlike the per-topic
    /// `send_failed`, this counts messages that could not be encoded too.
    pub send_failed_by_reason: Vec<(&'static str, u64)>,
}

impl TransportStats {
    pub fn topic(&self, topic: TopicId) -> TopicStats {
        self.topics
            .iter()
            .find(|(t, _)| *t == topic)
            .map(|(_, s)| *s)
            .unwrap_or_default()
    }
    pub fn last_malformed(&self, topic: TopicId) -> Option<&str> {
        self.last_malformed
            .iter()
            .find(|(t, _)| *t == topic)
            .map(|(_, r)| r.as_str())
    }
    pub fn malformed(&self) -> u64 {
        self.topics.iter().map(|(_, s)| s.malformed).sum()
    }
    /// Malformed samples over all topics dropped for `reason`.
    pub fn malformed_for(&self, reason: Malformed) -> u64 {
        self.malformed_by_reason
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }
    pub fn received(&self) -> u64 {
        self.topics.iter().map(|(_, s)| s.received).sum()
    }
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    send_failed: AtomicU64,
    received: AtomicU64,
    malformed: AtomicU64,
    own_skipped: AtomicU64,
}

struct Stats {
    topics: Vec<Counters>,
    last_malformed: Mutex<Vec<(TopicId, String)>>,
    /// Indexed like [`Malformed::ALL`].
    by_reason: [AtomicU64; Malformed::ALL.len()],
    /// Indexed like [`SendError::REASONS`].
    send_failed_by_reason: [AtomicU64; SendError::REASONS.len()],
    /// A peer can send malformed samples as fast as the network carries
    /// them: the log gets the first of each reason, then a count per reason
    /// at most once per interval.
    log: Mutex<LogLimiter<Malformed>>,
}

impl Stats {
    fn new() -> Self {
        Self {
            topics: TopicId::ALL.iter().map(|_| Counters::default()).collect(),
            last_malformed: Mutex::new(Vec::new()),
            by_reason: Default::default(),
            send_failed_by_reason: Default::default(),
            log: Mutex::new(LogLimiter::default()),
        }
    }
    fn of(&self, t: TopicId) -> &Counters {
        &self.topics[t as usize]
    }
    fn malformed(&self, t: TopicId, reason: Malformed, detail: &dyn std::fmt::Display) {
        self.of(t).malformed.fetch_add(1, Ordering::Relaxed);
        self.by_reason[reason as usize].fetch_add(1, Ordering::Relaxed);
        let detail = detail.to_string();
        let report = lock(&self.log).record(reason, Instant::now());
        match report {
            Some(Report::First) => tracing::warn!(
                topic = t.name(),
                %reason,
                "dropped a malformed DDS sample: {}; more for this reason are counted and summarised every {} s",
                detail.escape_debug(),
                LogLimiter::<Malformed>::DEFAULT_INTERVAL.as_secs()
            ),
            Some(summary) => log_summary(reason, summary),
            None => {}
        }
        let mut last = lock(&self.last_malformed);
        match last.iter_mut().find(|(topic, _)| *topic == t) {
            Some(slot) => slot.1 = detail,
            None => last.push((t, detail)),
        }
    }
    /// Logs the summaries due (all of them when `stopping`).
    fn log_due(&self, stopping: bool) {
        let now = Instant::now();
        let due = {
            let mut log = lock(&self.log);
            if stopping { log.finish(now) } else { log.due(now) }
        };
        for (reason, summary) in due {
            log_summary(reason, summary);
        }
    }
}

fn log_summary(reason: Malformed, summary: Report) {
    if let Report::Summary { count, over } = summary {
        tracing::warn!(
            %reason,
            count,
            "{count} more malformed DDS samples ({reason}) in the last {} s",
            over.as_secs_f64().round()
        );
    }
}

/// The bounded queue between the reader thread and the daemon.
struct Inbox {
    queue: Mutex<VecDeque<Message>>,
    not_empty: Condvar,
    not_full: Condvar,
    capacity: usize,
}

impl Inbox {
    /// Blocks while full, unless `stop` is raised.
    fn push_all(&self, batch: &mut Vec<Message>, stop: &AtomicBool) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        for msg in batch.drain(..) {
            while q.len() >= self.capacity {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                q = self
                    .not_full
                    .wait_timeout(q, Duration::from_millis(100))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            q.push_back(msg);
        }
        self.not_empty.notify_all();
    }

    fn take(&self, out: &mut Vec<Message>, max: usize, timeout: Option<Duration>) -> usize {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        while q.is_empty() {
            let Some(deadline) = deadline else { return 0 };
            let now = Instant::now();
            if now >= deadline {
                return 0;
            }
            q = self
                .not_empty
                .wait_timeout(q, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let n = q.len().min(max);
        out.extend(q.drain(..n));
        self.not_full.notify_all();
        n
    }
}

/// The receiving half; cheap to clone, usable from any thread (for example
/// inside `tokio::task::spawn_blocking`, or after an `on_receive` wake-up).
#[derive(Clone)]
pub struct Receiver {
    source: Source,
}

#[derive(Clone)]
enum Source {
    Inbox(Arc<Inbox>),
    Direct(Arc<Mutex<ReaderSet>>),
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

impl Receiver {
    /// Appends up to `max` messages to `out`, waiting up to `timeout` for the
    /// first one. Returns how many were appended (0 on timeout).
    pub fn recv_batch(&self, out: &mut Vec<Message>, max: usize, timeout: Duration) -> usize {
        match &self.source {
            Source::Inbox(inbox) => inbox.take(out, max, Some(timeout)),
            Source::Direct(set) => lock(set).recv(out, max, Some(timeout)),
        }
    }

    /// Like [`Receiver::recv_batch`] without waiting.
    pub fn try_recv_batch(&self, out: &mut Vec<Message>, max: usize) -> usize {
        match &self.source {
            Source::Inbox(inbox) => inbox.take(out, max, None),
            Source::Direct(set) => lock(set).recv(out, max, None),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves the readers usable: take over.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The readers and the `mio` poll that watches them.
struct ReaderSet {
    poll: Poll,
    events: Events,
    readers: Vec<Box<dyn Drain>>,
    /// Readers to drain next.
    ready: Vec<bool>,
    /// For the malformed-sample summaries, logged from `wait`.
    stats: Arc<Stats>,
}

impl ReaderSet {
    /// Waits up to `timeout` and marks the readers that signalled; after a
    /// quiet timeout marks all, which covers any notification that raced with
    /// an earlier drain.
    fn wait(&mut self, timeout: Duration) -> std::io::Result<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Err(e) if e.kind() != std::io::ErrorKind::Interrupted => return Err(e),
            _ => {}
        }
        self.stats.log_due(false);
        if self.events.is_empty() {
            self.ready.fill(true);
        }
        for e in self.events.iter() {
            if let Some(r) = self.ready.get_mut(e.token().0) {
                *r = true;
            }
        }
        Ok(())
    }

    /// Takes from the marked readers, at most `per_reader` samples each. A
    /// reader stays marked when it may hold more. Returns whether any does.
    fn drain_ready(&mut self, out: &mut Vec<Message>, per_reader: usize) -> bool {
        let mut more = false;
        for (r, ready) in self.readers.iter_mut().zip(self.ready.iter_mut()) {
            if *ready {
                *ready = r.drain(out, per_reader) >= per_reader;
                more |= *ready;
            }
        }
        more
    }

    /// `recv_batch` of [`Receiving::Direct`].
    fn recv(&mut self, out: &mut Vec<Message>, max: usize, timeout: Option<Duration>) -> usize {
        let start = out.len();
        let deadline = timeout.map(|t| Instant::now() + t);
        // No `ready.fill(true)` here: marks persist between calls (a reader
        // that may hold more stays marked) and every new sample raises an
        // event, so draining only the marked readers misses nothing and saves
        // a lock round on both caches per call.
        loop {
            while out.len() - start < max && self.drain_ready(out, max - (out.len() - start)) {}
            if out.len() > start {
                return out.len() - start;
            }
            let Some(deadline) = deadline else { return 0 };
            let now = Instant::now();
            if now >= deadline {
                return 0;
            }
            if let Err(e) = self.wait(deadline - now) {
                tracing::error!(error = %e, "DDS reader poll failed");
                return 0;
            }
        }
    }
}

type NoKeyWriter<W> = no_key::DataWriter<W, CDRSerializerAdapter<W>>;

struct Writers {
    /// Requests, votes and certificates (`topics::CONSENSUS_TOPIC`).
    consensus: NoKeyWriter<wire::Consensus>,
    /// Everything else (`topics::SYNC_TOPIC`).
    sync: NoKeyWriter<wire::Sync>,
}

/// A DDS participant speaking the Wallance topics.
pub struct Transport {
    // Fields drop in this order, and the participant must go last: a
    // rustdds writer or reader dropped after it cannot deregister from the
    // participant's stopped event loop, and rustdds logs an ERROR for each
    // ("Cannot remove Writer ..."). `Drop` stops the reader thread (and so
    // drops the readers) before any field goes.
    writers: Writers,
    receiver: Receiver,
    stats: Arc<Stats>,
    /// The reader thread of [`Receiving::Thread`].
    thread: Option<ReaderThread>,
    participant: DomainParticipant,
}

struct ReaderThread {
    stop: Arc<AtomicBool>,
    waker: Waker,
    inbox: Arc<Inbox>,
    handle: JoinHandle<()>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("domain_id", &self.participant.domain_id())
            .field("participant_id", &self.participant.participant_id())
            .finish_non_exhaustive()
    }
}

fn create<T, E: std::fmt::Debug>(what: &str, r: Result<T, E>) -> Result<T, TransportError> {
    r.map_err(|e| TransportError::Create(format!("{what}: {e:?}")))
}

/// Takes available samples from one reader into decoded messages.
trait Drain: Send {
    fn source(&mut self) -> &mut dyn rustdds::mio1::event::Source;
    /// Appends at most `max` messages; returns how many samples it consumed.
    fn drain(&mut self, out: &mut Vec<Message>, max: usize) -> usize;
}

struct Ctx {
    topic: TopicId,
    own: GUID,
    deliver_own: bool,
    stats: Arc<Stats>,
}

impl Ctx {
    /// Counts and converts one decoded sample.
    /// Counted under the message's kind (several share the sync topic).
    fn accept<W>(&self, writer: GUID, sample: W, convert: fn(W) -> WireMessage, out: &mut Vec<Message>) {
        let wire = convert(sample);
        let topic = wire.topic();
        let c = self.stats.of(topic);
        if !self.deliver_own && writer.prefix == self.own.prefix {
            c.own_skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match wire.into_message() {
            Ok(m) => {
                c.received.fetch_add(1, Ordering::Relaxed);
                out.push(m);
            }
            Err(e) => self.stats.malformed(topic, Malformed::from(&e), &e),
        }
    }
}

struct NoKeyReader<W: 'static> {
    reader: no_key::SimpleDataReader<W, CDRDeserializerAdapter<W>>,
    convert: fn(W) -> WireMessage,
    ctx: Ctx,
}

impl<W: DeserializeOwned + Send + 'static> Drain for NoKeyReader<W> {
    fn source(&mut self) -> &mut dyn rustdds::mio1::event::Source {
        &mut self.reader
    }
    fn drain(&mut self, out: &mut Vec<Message>, max: usize) -> usize {
        // Clear readiness before taking, so a sample arriving meanwhile
        // raises a fresh event instead of being missed.
        self.reader.drain_read_notifications();
        let mut n = 0;
        while n < max {
            match self.reader.try_take_one() {
                Ok(Some(dcc)) => {
                    n += 1;
                    let writer = dcc.writer_guid();
                    self.ctx.accept(writer, dcc.into_value(), self.convert, out);
                }
                Ok(None) => break,
                // try_take_one has already moved past the bad sample.
                Err(e) => {
                    n += 1;
                    self.ctx.stats.malformed(self.ctx.topic, Malformed::from(&e), &e);
                }
            }
        }
        n
    }
}

impl Transport {
    /// Joins the domain, creates every topic, writer and reader, and starts
    /// the reader thread.
    ///
    /// Each attempt runs on a thread of its own, given `start_timeout`
    /// (then twice, four times as long) before another begins
    /// (`with_deadline`): rustdds 0.15.1 can
    /// deadlock while an endpoint is created. Its discovery thread, holding
    /// the discovery database's read lock, announces a new local endpoint
    /// to the participant's event loop once per matching remote endpoint,
    /// over a channel that holds 32; with more than 32 (a node joining
    /// dozens of running peers) it waits for the event loop to drain it.
    /// The event loop waits for the read lock, which the next endpoint's
    /// creation, queued for the write lock, holds back; and that creation
    /// waits for the discovery thread. Seen once in a few 48-node starts
    /// (a node hung for good before its API came up). The participant of
    /// an abandoned attempt stays, silent, until the process exits; peers
    /// treat it as a peer that died.
    pub fn new(config: TransportConfig) -> Result<Self, TransportError> {
        let (timeout, attempts) = (config.start_timeout, config.start_attempts);
        with_deadline("DDS participant and endpoints", timeout, attempts, move |_| {
            Self::start(config.clone())
        })
    }

    fn start(config: TransportConfig) -> Result<Self, TransportError> {
        let mut builder = DomainParticipantBuilder::new(config.domain_id);
        match &config.networks {
            Networks::All => {}
            Networks::Loopback => builder = builder.with_only_networks([IpAddr::V4(Ipv4Addr::LOCALHOST)]),
            Networks::Only(addrs) => builder = builder.with_only_networks(addrs.clone()),
        }
        let participant = create("participant", builder.build())?;
        let own = participant.guid();
        let stats = Arc::new(Stats::new());

        // The two topics, each named by the kinds it carries.
        let topic = |t: TopicId| {
            create(
                t.name(),
                participant.create_topic(
                    t.name().to_string(),
                    t.spec().topic_type.to_string(),
                    &t.qos(config.send_block),
                    t.kind(),
                ),
            )
        };
        // A kind of each topic stands for it: its QoS is the topic's.
        let (consensus, sync) = (TopicId::Vote, TopicId::Digest);
        let (consensus_topic, sync_topic) = (topic(consensus)?, topic(sync)?);

        let publisher = create(
            "publisher",
            participant.create_publisher(&rustdds::QosPolicyBuilder::new().build()),
        )?;
        fn writer<W: Serialize>(
            p: &rustdds::Publisher,
            topic: &Topic,
            t: TopicId,
            send_block: Duration,
        ) -> Result<NoKeyWriter<W>, TransportError> {
            let qos = Some(t.writer_qos(send_block));
            create(t.name(), p.create_datawriter_no_key_cdr::<W>(topic, qos))
        }
        let writers = Writers {
            consensus: writer(&publisher, &consensus_topic, consensus, config.send_block)?,
            sync: writer(&publisher, &sync_topic, sync, config.send_block)?,
        };

        let subscriber = create(
            "subscriber",
            participant.create_subscriber(&rustdds::QosPolicyBuilder::new().build()),
        )?;
        let ctx = |topic| Ctx {
            topic,
            own,
            deliver_own: config.deliver_own,
            stats: stats.clone(),
        };
        fn reader<W: DeserializeOwned + Send + 'static>(
            s: &Subscriber,
            topic: &Topic,
            t: TopicId,
            send_block: Duration,
            convert: fn(W) -> WireMessage,
            ctx: Ctx,
        ) -> Result<Box<dyn Drain>, TransportError> {
            let qos = Some(t.qos(send_block));
            let reader = create(
                t.name(),
                s.create_simple_datareader_no_key::<W, CDRDeserializerAdapter<W>>(topic, qos),
            )?;
            Ok(Box::new(NoKeyReader { reader, convert, ctx }))
        }
        // Every sample is counted under its message's kind; one that does
        // not decode, under the kind standing for its topic (Vote, Digest).
        let mut readers: Vec<Box<dyn Drain>> = vec![
            reader::<wire::Consensus>(
                &subscriber,
                &consensus_topic,
                consensus,
                config.send_block,
                WireMessage::from,
                ctx(consensus),
            )?,
            reader::<wire::Sync>(
                &subscriber,
                &sync_topic,
                sync,
                config.send_block,
                WireMessage::from,
                ctx(sync),
            )?,
        ];

        let poll = Poll::new()?;
        for (i, r) in readers.iter_mut().enumerate() {
            poll.registry().register(r.source(), Token(i), Interest::READABLE)?;
        }
        let waker = Waker::new(poll.registry(), Token(usize::MAX))?;
        let ready = vec![true; readers.len()];
        let set = ReaderSet {
            poll,
            events: Events::with_capacity(64),
            readers,
            ready,
            stats: stats.clone(),
        };
        let (receiver, thread) = match config.receiving {
            Receiving::Direct => (
                Receiver {
                    source: Source::Direct(Arc::new(Mutex::new(set))),
                },
                None,
            ),
            Receiving::Thread => {
                let inbox = Arc::new(Inbox {
                    queue: Mutex::new(VecDeque::new()),
                    not_empty: Condvar::new(),
                    not_full: Condvar::new(),
                    capacity: config.inbox_capacity.max(1),
                });
                let stop = Arc::new(AtomicBool::new(false));
                let handle = {
                    let inbox = inbox.clone();
                    let stop = stop.clone();
                    let on_receive = config.on_receive.clone();
                    std::thread::Builder::new()
                        .name(format!("wallance-dds-rx-{}", config.domain_id))
                        .spawn(move || reader_loop(set, &inbox, &stop, on_receive))?
                };
                (
                    Receiver {
                        source: Source::Inbox(inbox.clone()),
                    },
                    Some(ReaderThread {
                        stop,
                        waker,
                        inbox,
                        handle,
                    }),
                )
            }
        };

        Ok(Self {
            writers,
            receiver,
            stats,
            thread,
            participant,
        })
    }

    /// Publishes `msg` on its topic. Never blocks longer than `send_block`.
    pub fn send(&self, msg: &Message) -> Result<(), SendError> {
        let result = self.write(msg);
        if let Err(e) = &result {
            self.stats.send_failed_by_reason[e.reason_index()].fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn write(&self, msg: &Message) -> Result<(), SendError> {
        let kind = msg.kind();
        let topic = topic_of(msg);
        let wire = WireMessage::from_message(msg).map_err(|source| SendError::Wire { kind, source })?;
        let result = match wire::Sample::from(wire) {
            wire::Sample::Consensus(m) => nk_write(&self.writers.consensus, m),
            wire::Sample::Sync(m) => nk_write(&self.writers.sync, m),
        };
        let c = self.stats.of(topic);
        match result {
            Ok(()) => {
                c.sent.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                c.send_failed.fetch_add(1, Ordering::Relaxed);
                Err(match e {
                    Failure::WouldBlock => SendError::WouldBlock(kind),
                    Failure::Other(reason) => SendError::Dds { kind, reason },
                })
            }
        }
    }

    /// The receiving half, for another thread or task.
    pub fn receiver(&self) -> Receiver {
        self.receiver.clone()
    }

    /// See [`Receiver::recv_batch`].
    pub fn recv_batch(&self, out: &mut Vec<Message>, max: usize, timeout: Duration) -> usize {
        self.receiver.recv_batch(out, max, timeout)
    }

    /// See [`Receiver::try_recv_batch`].
    pub fn try_recv_batch(&self, out: &mut Vec<Message>, max: usize) -> usize {
        self.receiver.try_recv_batch(out, max)
    }

    pub fn stats(&self) -> TransportStats {
        TransportStats {
            topics: TopicId::ALL
                .iter()
                .map(|&t| {
                    let c = self.stats.of(t);
                    (
                        t,
                        TopicStats {
                            sent: c.sent.load(Ordering::Relaxed),
                            send_failed: c.send_failed.load(Ordering::Relaxed),
                            received: c.received.load(Ordering::Relaxed),
                            malformed: c.malformed.load(Ordering::Relaxed),
                            own_skipped: c.own_skipped.load(Ordering::Relaxed),
                        },
                    )
                })
                .collect(),
            last_malformed: lock(&self.stats.last_malformed).clone(),
            malformed_by_reason: Malformed::ALL
                .iter()
                .map(|&r| (r, self.stats.by_reason[r as usize].load(Ordering::Relaxed)))
                .collect(),
            send_failed_by_reason: SendError::REASONS
                .iter()
                .zip(&self.stats.send_failed_by_reason)
                .map(|(&r, n)| (r, n.load(Ordering::Relaxed)))
                .collect(),
        }
    }

    /// How many remote participants discovery has found (for readiness checks).
    pub fn discovered_participants(&self) -> usize {
        let own = self.participant.guid();
        // GUIDs with the participant's entity id stand for their prefixes,
        // whose type rustdds does not export.
        let mut prefixes: Vec<GUID> = self
            .participant
            .discovered_writers()
            .iter()
            .map(|w| GUID {
                entity_id: own.entity_id,
                ..w.writer_proxy.remote_writer_guid
            })
            .filter(|g| g.prefix != own.prefix)
            .collect();
        prefixes.sort();
        prefixes.dedup();
        prefixes.len()
    }

    /// How many readers of other participants discovery has found on
    /// `topic`. A volatile sample written before a reader is found never
    /// reaches it, so tests and tools wait on this before sending.
    pub fn remote_readers(&self, topic: TopicId) -> usize {
        let own = self.participant.guid();
        self.participant
            .discovered_readers()
            .iter()
            .filter(|r| {
                r.subscription_topic_data.topic_name() == topic.name()
                    && r.reader_proxy.remote_reader_guid.prefix != own.prefix
            })
            .count()
    }

    /// Waits until every topic has at least `n` remote readers, or `timeout`.
    /// Returns whether it got there.
    pub fn wait_for_readers(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if TopicId::ALL.iter().all(|&t| self.remote_readers(t) >= n) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The underlying participant, for tests and tools that need raw access.
    pub fn participant(&self) -> &DomainParticipant {
        &self.participant
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            t.stop.store(true, Ordering::Relaxed);
            // If waking fails the thread still sees `stop` at its next poll timeout.
            let _ = t.waker.wake();
            t.inbox.not_full.notify_all();
            let _ = t.handle.join();
        }
        // A `Receiver` clone may outlive the transport: its readers must
        // not outlive the participant (see the field order above).
        if let Source::Direct(set) = &self.receiver.source {
            lock(set).readers.clear();
        }
        self.stats.log_due(true);
    }
}

fn topic_of(msg: &Message) -> TopicId {
    match msg {
        Message::Share(_) => TopicId::Share,
        Message::Request(_) => TopicId::Request,
        Message::Vote(_) => TopicId::Vote,
        Message::Certificate(_) => TopicId::Certificate,
        Message::Announce(_) => TopicId::Announce,
        Message::Outcome(_) => TopicId::Outcome,
        Message::Digest(_) => TopicId::Digest,
        Message::HeadsRequest(_) => TopicId::HeadsRequest,
        Message::Heads(_) => TopicId::Heads,
        Message::CertFetch(_) => TopicId::CertFetch,
        Message::ShareFetch(_) => TopicId::ShareFetch,
    }
}

enum Failure {
    WouldBlock,
    Other(String),
}

fn failure<D>(e: WriteError<D>) -> Failure {
    match e {
        WriteError::WouldBlock { .. } => Failure::WouldBlock,
        WriteError::Serialization { reason, .. }
        | WriteError::Poisoned { reason, .. }
        | WriteError::Internal { reason } => Failure::Other(reason),
        WriteError::Io(e) => Failure::Other(e.to_string()),
    }
}

fn nk_write<W: Serialize>(w: &NoKeyWriter<W>, m: W) -> Result<(), Failure> {
    w.write(m, None).map_err(failure)
}

/// Upper bound on samples taken per reader per round, so one busy topic
/// cannot starve the others.
const BATCH: usize = 256;

fn reader_loop(mut set: ReaderSet, inbox: &Inbox, stop: &AtomicBool, on_receive: Option<OnReceive>) {
    let mut batch = Vec::with_capacity(BATCH * set.readers.len());
    while !stop.load(Ordering::Relaxed) {
        // The timeout is a safety net: a missed readiness event costs at most
        // this much latency, never a stuck sample.
        if let Err(e) = set.wait(Duration::from_millis(50)) {
            tracing::error!(error = %e, "DDS reader poll failed; reader thread stops");
            return;
        }
        loop {
            let more = set.drain_ready(&mut batch, BATCH);
            if !batch.is_empty() {
                inbox.push_all(&mut batch, stop);
                if let Some(f) = &on_receive {
                    f();
                }
            }
            if !more || stop.load(Ordering::Relaxed) {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An attempt that never returns, as a deadlocked rustdds would not.
    fn hang<T>() -> Result<T, TransportError> {
        loop {
            std::thread::park();
        }
    }

    #[test]
    fn an_attempt_that_hangs_is_abandoned_and_the_next_one_is_used() {
        let started = Instant::now();
        let got = with_deadline("test", Duration::from_millis(100), 3, |i| {
            if i < 2 { hang() } else { Ok(i) }
        });
        assert_eq!(got.expect("the third attempt"), 2);
        // 100 ms, then 200 ms.
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn attempts_that_all_hang_end_in_an_error_not_a_hang() {
        let got = with_deadline::<()>("test", Duration::from_millis(50), 2, |_| hang());
        match got {
            Err(TransportError::Stuck {
                what,
                attempts,
                timeout,
            }) => {
                assert_eq!((what, attempts, timeout), ("test", 2, Duration::from_millis(50)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_attempt_that_fails_is_not_retried() {
        let tries = Arc::new(AtomicU64::new(0));
        let counted = tries.clone();
        let got = with_deadline::<()>("test", Duration::from_secs(5), 3, move |_| {
            counted.fetch_add(1, Ordering::Relaxed);
            Err(TransportError::Create("no".into()))
        });
        assert!(matches!(got, Err(TransportError::Create(_))));
        assert_eq!(tries.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_panicking_attempt_is_an_error() {
        let got = with_deadline::<()>("test", Duration::from_secs(5), 3, |_| panic!("boom"));
        assert!(matches!(got, Err(TransportError::Create(e)) if e.contains("panicked")));
    }
}
