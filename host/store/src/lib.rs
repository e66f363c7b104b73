//! The node's durable state in one redb file.
//!
//! The core emits a [`Batch`] of [`Change`]s after each input; the node
//! makes it durable here, in one write transaction, before it sends anything
//! that depends on it. At start-up the store hands back the whole
//! [`Snapshot`] the core is rebuilt from.
//!
//! ```text
//! let (mut store, snapshot) = Store::open(path, membership.members())?;
//! let mut core = Core::new(config, key, snapshot, now_ms);
//! loop {
//!     ... core.handle_message(now, msg) ...
//!     while let Some(out) = core.poll_output() {
//!         match out {
//!             Output::Persist(batch) => store.commit(&batch)?,   // durable first
//!             ...
//!         }
//!     }
//! }
//! ```
//!
//! A durable commit (`commit`) applies the batch to redb without waiting
//! for the disk and appends it to a small journal beside the file, synced
//! once (see `journal`); every few hundred commits, at a checkpoint and
//! when the store is dropped, a redb durable commit (with redb's quick
//! repair) makes the journal redundant. The open after a `kill -9` replays
//! the journal, so no acknowledged commit is lost and the open does not
//! walk the whole file. `commit_lazy` skips the sync for batches a crash
//! may lose (`Change::needs_durability`), made durable by the next durable
//! commit. Commit semantics equal [`Snapshot::apply`] exactly (a
//! property test checks it). A `Change::RunDone` carries the contract's
//! key-value writes, applied in the same transaction, which makes a
//! contract run and its "done" marker land together or not at all. One
//! thread writes (`&mut Store`); others read committed data through a
//! [`StoreReader`]. The node's purchase records ride along in the same
//! transaction ([`Store::commit_with_purchases`]).

mod codec;
mod io_count;
mod journal;

pub use io_count::{IoCount, IoCounters};

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition,
    TableHandle, WriteTransaction,
};
use sha2::{Digest, Sha256};
use thiserror::Error;
use wallance_core::store_model::RunRecord;
use wallance_core::{Change, MemberId, Message, Snapshot};

/// Bumped on any change to a table layout or value format, or to what the
/// stored state means.
///
/// - 1: the first layout.
/// - 2: the `run_floor` and `marks` tables. The protocol's money rule
///   (what a purchase costs the requester) changed in the same release, so
///   wallets written under schema 1 hold balances the new rule would not
///   have produced: a schema-1 store is refused, not migrated.
/// - 3: the `escrows` table. A purchase's price is now held until its
///   verdict instead of paid to the provider at the commit, so credits in
///   a schema-2 store follow the old rule: refused, not migrated.
pub const SCHEMA_VERSION: u32 = 3;

/// Marks a redb file as ours, so another program's database is refused
/// rather than written into.
const MAGIC: &[u8] = b"wallance-store";

// Keys of the meta table.
const META_MAGIC: &str = "magic";
const META_SCHEMA: &str = "schema";
const META_MEMBERS: &str = "members";
const META_SHARE_SEQ: &str = "share_seq";
const META_ANNOUNCE_SEQ: &str = "announce_seq";
/// 16 random bytes binding the journal file to this store file.
const META_JOURNAL_ID: &str = "journal_id";
/// u64 LE: the number of the last commit applied (every commit has one,
/// written in its own transaction), so a journal record at or below it
/// is already in the file.
const META_JOURNAL_SEQ: &str = "journal_seq";

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Member index -> compact wallet (see `codec`). redb orders `u32` keys
/// numerically, so wallets inserted in index order append to the last leaf.
const WALLETS: TableDefinition<u32, &[u8]> = TableDefinition::new("wallets");
/// Requester index -> `version u64 LE | vote message`.
const MY_VOTES: TableDefinition<u32, &[u8]> = TableDefinition::new("my_votes");
/// Request id -> request message.
const REQUESTS: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("requests");
/// (request id, voter id) -> vote message.
const VOTES: TableDefinition<VoteKey, &[u8]> = TableDefinition::new("votes");
/// (wallet index, version) -> certificate message.
const CERTS: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("certs");
/// (wallet index, version) -> certificate message of a run owed.
const RUNS: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("runs");
/// (wallet index, version) -> `ok u8 | body`, once the run is done. Kept
/// apart from `runs` so marking a run done does not rewrite its certificate.
const RUN_OUTCOMES: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("run_outcomes");
/// Requester index -> `floor u64 LE`: its finished runs at or below the
/// floor were pruned (`Change::RunsPruned`).
const RUN_FLOOR: TableDefinition<u32, &[u8]> = TableDefinition::new("run_floor");
/// Wallet index -> settlement marks of a wallet this node does not keep
/// (`Change::Marks`): `settled v | count v | above zz...` (see `codec`).
const MARKS: TableDefinition<u32, &[u8]> = TableDefinition::new("marks");
/// Open escrows by verdict id (`Change::PutEscrow`, `DropEscrow`): see
/// `codec::encode_escrow`.
const ESCROWS: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("escrows");
/// Provider id -> announce message.
const ANNOUNCES: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("announces");
/// (contract name, key) -> value: contracts' own state.
const CONTRACT_KV: TableDefinition<KvKey, &[u8]> = TableDefinition::new("contract_kv");
/// Purchase id -> `seq u64 LE | record`: the node's record of a purchase
/// it made or served (opaque to the store; the node encodes it). Created
/// on first write, so a store from before it opens unchanged.
const PURCHASES: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("purchases");
/// seq -> purchase id, in order of first write: the retention order.
const PURCHASE_ORDER: TableDefinition<u64, [u8; 32]> = TableDefinition::new("purchase_order");

/// Keys of the votes table: (request id, voter id).
type VoteKey = ([u8; 32], [u8; 32]);
/// Keys of the contract table: (contract name, key).
type KvKey = (&'static str, &'static [u8]);

/// One contract key-value write: `(contract, key, Some(value))` sets,
/// `(contract, key, None)` deletes.
pub type KvWrite = (String, Vec<u8>, Option<Vec<u8>>);

/// Why the store failed. Every variant names the file.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{path}: cannot open the database: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: Box<redb::DatabaseError>,
    },
    #[error("{path}: not a wallance store: {reason}")]
    NotAStore { path: PathBuf, reason: String },
    #[error("{path}: written by a newer wallance (schema {found}, this build reads {supported}); upgrade wallance")]
    NewerSchema { path: PathBuf, found: u32, supported: u32 },
    #[error(
        "{path}: written by an older wallance (schema {found}, this build reads {supported}) whose state this release cannot carry over; stop the node, move this file aside (only this file) and start again: a new, empty store is created in its place"
    )]
    OlderSchema { path: PathBuf, found: u32, supported: u32 },
    #[error(
        "{path}: written for a different membership ({found}), this node has {expected}; wallets are stored by member index, so they would land on the wrong members"
    )]
    MembershipChanged {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("{path}: corrupt row in table `{table}`, key {key}: {reason}")]
    Corrupt {
        path: PathBuf,
        table: &'static str,
        key: String,
        reason: String,
    },
    #[error("{path}: wallet for index {idx} has ID {found}, which is not the member at that index{note}")]
    WrongMember {
        path: PathBuf,
        idx: u32,
        found: String,
        /// Empty, or why no member is there.
        note: String,
    },
    #[error("{path}: cannot store {what}: a field is over its size limit")]
    TooLarge { path: PathBuf, what: &'static str },
    #[error("{path}: {context}: {source}")]
    Db {
        path: PathBuf,
        context: &'static str,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("{path}: journal record {record}: {reason}")]
    Journal { path: PathBuf, record: u64, reason: String },
    #[error("{path}: {context}: {source}")]
    Io {
        path: PathBuf,
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Space used by the wallets table and the whole file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// The file's length. redb grows a file below 4 GiB by doubling it and
    /// the new space is sparse, so this can be up to twice `disk_bytes`.
    pub file_bytes: u64,
    /// Blocks the file system holds for the file (unix `st_blocks`), the
    /// space it really takes; `file_bytes` where that is unknown.
    pub disk_bytes: u64,
    pub page_size: u64,
    /// Pages the allocator has handed out (live and not yet freed).
    pub allocated_pages: u64,
    pub wallets: u64,
    /// Bytes of wallet keys and values in leaves.
    pub wallet_stored_bytes: u64,
    /// Page headers, offsets and branch pages of the wallets tree.
    pub wallet_metadata_bytes: u64,
    /// Unused space inside the wallets tree's pages.
    pub wallet_fragmented_bytes: u64,
    pub wallet_leaf_pages: u64,
    pub wallet_branch_pages: u64,
}

impl StoreStats {
    /// Bytes the wallets tree occupies (its pages), per wallet.
    pub fn wallet_tree_bytes_per_wallet(&self) -> f64 {
        let pages = self.wallet_leaf_pages + self.wallet_branch_pages;
        (pages * self.page_size) as f64 / self.wallets.max(1) as f64
    }
    pub fn file_bytes_per_wallet(&self) -> f64 {
        self.file_bytes as f64 / self.wallets.max(1) as f64
    }
    pub fn disk_bytes_per_wallet(&self) -> f64 {
        self.disk_bytes as f64 / self.wallets.max(1) as f64
    }
}

/// How the store is opened. The defaults are what a node runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreOptions {
    /// Record redb's allocator state with every redb durable commit (a
    /// checkpoint), so reopening after a crash loads it instead of walking
    /// the whole file (milliseconds instead of seconds at 10 M wallets). It
    /// costs a second fsync per checkpoint (redb then commits in two
    /// phases); a commit through the journal syncs once either way.
    pub quick_repair: bool,
    /// redb's page cache, in bytes. The snapshot is held by the core
    /// anyway, so a small cache loses little.
    pub cache_bytes: usize,
    /// How many purchase records ([`Store::commit_with_purchases`]) are
    /// kept: beyond it the oldest (by first write) is forgotten.
    pub purchases_kept: usize,
    /// Durable commits go through the journal (one sync of the journal
    /// file), and a checkpoint (a redb durable commit) comes after this
    /// many journal records, or sooner when the journal file is full. 0:
    /// no journal, every durable commit is a redb durable commit.
    pub journal_records: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            quick_repair: true,
            cache_bytes: 64 << 20,
            purchases_kept: PURCHASES_KEPT,
            journal_records: JOURNAL_RECORDS,
        }
    }
}

impl StoreOptions {
    pub fn with_quick_repair(mut self, enabled: bool) -> Self {
        self.quick_repair = enabled;
        self
    }
    pub fn with_cache_bytes(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }
    pub fn with_purchases_kept(mut self, n: usize) -> Self {
        self.purchases_kept = n.max(1);
        self
    }
    pub fn with_journal_records(mut self, n: u32) -> Self {
        self.journal_records = n;
        self
    }
}

/// Journal records between checkpoints by default.
pub const JOURNAL_RECORDS: u32 = 512;

/// What the open replayed from the journal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalReplay {
    /// Commits found in the journal and not in the redb file.
    pub records: u64,
    /// Reading the journal, applying them and the checkpoint after.
    pub elapsed: Duration,
}

/// Purchase records kept by default: the newest 10 000 (a few MB).
pub const PURCHASES_KEPT: usize = 10_000;

/// The open store. One writer: `commit` takes `&mut self`. Other threads
/// read committed data through a [`StoreReader`] (redb's readers see the
/// last commit and never block the writer).
pub struct Store {
    db: Arc<Database>,
    /// Syncs and bytes written through redb's file backend.
    io: Arc<IoCounters>,
    path: PathBuf,
    /// The first 4 bytes of each member's ID, by index: enough to catch a
    /// wallet filed under the wrong index without a second copy of the
    /// membership (32 B per member; 320 MB at 10 M).
    id_tags: Vec<u32>,
    options: StoreOptions,
    /// The number of the last commit (`meta` `journal_seq`).
    seq: u64,
    /// `seq` at the last redb durable commit.
    checkpointed: u64,
    /// `None` when `options.journal_records` is 0.
    journal: Option<journal::Journal>,
    replayed: JournalReplay,
}

fn id_tag(id: &MemberId) -> u32 {
    u32::from_le_bytes([id.0[0], id.0[1], id.0[2], id.0[3]])
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("members", &self.id_tags.len())
            .finish_non_exhaustive()
    }
}

/// With quick repair, commits record the allocator state, so the open
/// after a crash reads it instead of walking every page. Two-phase commit
/// comes with it.
fn begin_write(db: &Database, path: &Path, options: &StoreOptions) -> Result<WriteTransaction, StoreError> {
    // Durability::Immediate (fsync before commit returns) is redb's default
    // for a write transaction; a commit through the journal lowers it.
    let mut txn = db.begin_write().map_err(db_err(path, "begin a write"))?;
    txn.set_quick_repair(options.quick_repair);
    Ok(txn)
}

fn db_err<E: Into<redb::Error>>(path: &Path, context: &'static str) -> impl FnOnce(E) -> StoreError {
    let path = path.to_owned();
    move |e| StoreError::Db {
        path,
        context,
        source: Box::new(e.into()),
    }
}

/// What the meta table records about the membership: its size and a hash
/// of every ID in order.
fn membership_fingerprint(members: &[MemberId]) -> [u8; 40] {
    let mut h = Sha256::new();
    h.update(b"wallance/store/members/v1");
    h.update((members.len() as u64).to_le_bytes());
    for id in members {
        h.update(id.0);
    }
    let mut out = [0u8; 40];
    out[..8].copy_from_slice(&(members.len() as u64).to_le_bytes());
    out[8..].copy_from_slice(&h.finalize());
    out
}

fn describe_fingerprint(bytes: &[u8]) -> String {
    if bytes.len() != 40 {
        return format!("an unreadable record of {} bytes", bytes.len());
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&bytes[..8]);
    format!(
        "{} members, digest {}",
        u64::from_le_bytes(n),
        hex::encode(&bytes[8..16])
    )
}

/// Opens the redb database in the existing file `path`.
fn open_db(path: &Path, io: Arc<IoCounters>, options: &StoreOptions) -> Result<Database, StoreError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| StoreError::Io {
            path: path.to_owned(),
            context: "open the file",
            source,
        })?;
    let not_empty = file.metadata().is_ok_and(|meta| meta.len() > 0);
    io_count::CountingBackend::new(file, io)
        .and_then(|backend| {
            Database::builder()
                .set_cache_size(options.cache_bytes)
                .create_with_backend(backend)
        })
        .map_err(|e| {
            // redb reports a file that is not a database as invalid data.
            if let redb::DatabaseError::Storage(redb::StorageError::Io(io)) = &e
                && not_empty
                && io.kind() == std::io::ErrorKind::InvalidData
            {
                return StoreError::NotAStore {
                    path: path.to_owned(),
                    reason: format!("not a redb database ({io})"),
                };
            }
            StoreError::Open {
                path: path.to_owned(),
                source: Box::new(e),
            }
        })
}

impl Store {
    /// Opens the store at `path`, creating it if missing, and loads the
    /// whole durable state.
    ///
    /// `members` is the membership in index order. Wallets are stored by
    /// index without their ID (it would be a third of each row); the store
    /// records a fingerprint of `members` and refuses to open with another.
    pub fn open(path: &Path, members: &[MemberId]) -> Result<(Store, Snapshot), StoreError> {
        Self::open_with(path, members, StoreOptions::default())
    }

    /// [`Store::open`] with options other than the defaults.
    pub fn open_with(
        path: &Path,
        members: &[MemberId],
        options: StoreOptions,
    ) -> Result<(Store, Snapshot), StoreError> {
        // A missing or empty file holds nothing: make a new store, whole,
        // before anything opens `path`.
        let empty = match std::fs::metadata(path) {
            Ok(meta) => meta.len() == 0,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(source) => {
                return Err(StoreError::Io {
                    path: path.to_owned(),
                    context: "read the file's metadata",
                    source,
                });
            }
        };
        if empty {
            Self::create(path, members, &options)?;
        }
        let io = Arc::new(IoCounters::default());
        let db = open_db(path, io.clone(), &options)?;
        let mut store = Store {
            db: Arc::new(db),
            io,
            path: path.to_owned(),
            id_tags: members.iter().map(id_tag).collect(),
            options,
            seq: 0,
            checkpointed: 0,
            journal: None,
            replayed: JournalReplay::default(),
        };
        store.check_or_init(members)?;
        store.recover(members)?;
        let snapshot = store.load(members)?;
        Ok((store, snapshot))
    }

    /// Makes a new store at `<path>.creating` and renames it to `path`
    /// once it is complete and on disk. A node killed while redb lays out a
    /// new file (its first start) therefore never leaves a half-made
    /// database at `path`, which redb would refuse at every later start
    /// ("magic number mismatch"): the next start begins again.
    fn create(path: &Path, members: &[MemberId], options: &StoreOptions) -> Result<(), StoreError> {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".creating");
        let tmp = path.with_file_name(name);
        let io_error = |context: &'static str| {
            let tmp = tmp.clone();
            move |source| StoreError::Io {
                path: tmp,
                context,
                source,
            }
        };
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("remove a half-made store")(e)),
        }
        std::fs::File::create_new(&tmp).map_err(io_error("create the new store"))?;
        let io = Arc::new(IoCounters::default());
        let store = Store {
            db: Arc::new(open_db(&tmp, io.clone(), options)?),
            io,
            path: tmp.clone(),
            id_tags: members.iter().map(id_tag).collect(),
            options: *options,
            seq: 0,
            checkpointed: 0,
            journal: None,
            replayed: JournalReplay::default(),
        };
        store.init(&membership_fingerprint(members))?;
        drop(store);
        std::fs::File::open(&tmp)
            .and_then(|file| file.sync_all())
            .map_err(io_error("sync the new store"))?;
        std::fs::rename(&tmp, path).map_err(io_error("rename the new store into place"))?;
        // The rename itself must survive a power cut.
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error("sync the store's folder"))
    }

    /// What this open replayed from the journal (nothing after a clean
    /// close).
    pub fn replayed(&self) -> JournalReplay {
        self.replayed
    }

    /// Applies the journal's records the file does not hold, then opens
    /// the journal for appending.
    fn recover(&mut self, members: &[MemberId]) -> Result<(), StoreError> {
        let started = Instant::now();
        let (id, applied) = self.journal_meta()?;
        self.seq = applied;
        let jpath = journal::path_for(&self.path);
        let records = journal::read(&jpath, &id, applied, members).map_err(|e| match e {
            journal::ReadError::Io(source) => StoreError::Io {
                path: jpath.clone(),
                context: "read the journal",
                source,
            },
            journal::ReadError::Gap { first, applied } => StoreError::Journal {
                path: jpath.clone(),
                record: first,
                reason: format!(
                    "the store file holds commits up to {applied}: the ones between are missing (was the store file replaced by an older copy?)"
                ),
            },
            journal::ReadError::Corrupt { seq, reason } => StoreError::Journal {
                path: jpath.clone(),
                record: seq,
                reason,
            },
        })?;
        if let Some(&(last, _)) = records.last() {
            let txn = begin_write(&self.db, &self.path, &self.options)?;
            for (seq, r) in &records {
                apply_record(
                    &txn,
                    &self.path,
                    &self.id_tags,
                    &self.options,
                    &r.batch,
                    &r.kv,
                    &r.purchases,
                    *seq,
                )?;
            }
            txn.commit()
                .map_err(db_err(&self.path, "commit the journal's records"))?;
            self.seq = last;
            self.replayed = JournalReplay {
                records: records.len() as u64,
                elapsed: started.elapsed(),
            };
        }
        self.checkpointed = self.seq;
        if self.options.journal_records > 0 {
            let journal =
                journal::Journal::open(jpath.clone(), id, self.io.clone()).map_err(|source| StoreError::Io {
                    path: jpath,
                    context: "create the journal",
                    source,
                })?;
            self.journal = Some(journal);
        }
        Ok(())
    }

    /// The journal id and the number of the last commit, from `meta`; a
    /// store from before the journal gets an id (one durable commit).
    fn journal_meta(&self) -> Result<([u8; 16], u64), StoreError> {
        let path = &self.path;
        let read = |key: &str| -> Result<Option<Vec<u8>>, StoreError> {
            let txn = self.db.begin_read().map_err(db_err(path, "begin a read"))?;
            let meta = txn.open_table(META).map_err(db_err(path, "open meta"))?;
            Ok(meta
                .get(key)
                .map_err(db_err(path, "read meta"))?
                .map(|v| v.value().to_vec()))
        };
        let corrupt = |key: &str, bytes: &[u8], want: usize| StoreError::Corrupt {
            path: path.clone(),
            table: "meta",
            key: key.into(),
            reason: format!("{} bytes, expected {want}", bytes.len()),
        };
        let seq = match read(META_JOURNAL_SEQ)? {
            None => 0,
            Some(b) => u64::from_le_bytes(b.as_slice().try_into().map_err(|_| corrupt(META_JOURNAL_SEQ, &b, 8))?),
        };
        let id = match read(META_JOURNAL_ID)? {
            Some(b) => <[u8; 16]>::try_from(b.as_slice()).map_err(|_| corrupt(META_JOURNAL_ID, &b, 16))?,
            None => {
                let id = new_journal_id(path);
                let txn = begin_write(&self.db, path, &self.options)?;
                {
                    let mut meta = txn.open_table(META).map_err(db_err(path, "open meta"))?;
                    meta.insert(META_JOURNAL_ID, id.as_slice())
                        .map_err(db_err(path, "write meta"))?;
                    meta.insert(META_JOURNAL_SEQ, seq.to_le_bytes().as_slice())
                        .map_err(db_err(path, "write meta"))?;
                }
                txn.commit().map_err(db_err(path, "commit the journal id"))?;
                id
            }
        };
        Ok((id, seq))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file syncs and writes this store made since it was opened.
    pub fn io(&self) -> Arc<IoCounters> {
        self.io.clone()
    }

    /// Checks the meta table, or lays out a new store in an empty file.
    fn check_or_init(&self, members: &[MemberId]) -> Result<(), StoreError> {
        let path = &self.path;
        let fingerprint = membership_fingerprint(members);
        let txn = self.db.begin_read().map_err(db_err(path, "begin a read"))?;
        let names: Vec<String> = txn
            .list_tables()
            .map_err(db_err(path, "list tables"))?
            .map(|t| t.name().to_string())
            .collect();
        if names.is_empty() {
            drop(txn);
            return self.init(&fingerprint);
        }
        if !names.iter().any(|n| n == META.name()) {
            return Err(StoreError::NotAStore {
                path: path.clone(),
                reason: format!("a redb database without a `meta` table (it has {})", names.join(", ")),
            });
        }
        let meta = txn.open_table(META).map_err(db_err(path, "open meta"))?;
        let get = |key: &str| -> Result<Option<Vec<u8>>, StoreError> {
            Ok(meta
                .get(key)
                .map_err(db_err(path, "read meta"))?
                .map(|v| v.value().to_vec()))
        };
        if get(META_MAGIC)?.as_deref() != Some(MAGIC) {
            return Err(StoreError::NotAStore {
                path: path.clone(),
                reason: "its meta table has no wallance mark".into(),
            });
        }
        let schema = get(META_SCHEMA)?.ok_or_else(|| StoreError::Corrupt {
            path: path.clone(),
            table: "meta",
            key: META_SCHEMA.into(),
            reason: "missing".into(),
        })?;
        let found = <[u8; 4]>::try_from(schema.as_slice())
            .map(u32::from_le_bytes)
            .map_err(|_| StoreError::Corrupt {
                path: path.clone(),
                table: "meta",
                key: META_SCHEMA.into(),
                reason: format!("{} bytes, expected 4", schema.len()),
            })?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: path.clone(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found < SCHEMA_VERSION {
            return Err(StoreError::OlderSchema {
                path: path.clone(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        let recorded = get(META_MEMBERS)?.unwrap_or_default();
        if recorded != fingerprint {
            return Err(StoreError::MembershipChanged {
                path: path.clone(),
                found: describe_fingerprint(&recorded),
                expected: describe_fingerprint(&fingerprint),
            });
        }
        Ok(())
    }

    /// Creates every table, so readers never meet a missing one, and marks
    /// the file as ours, all in one commit.
    fn init(&self, fingerprint: &[u8; 40]) -> Result<(), StoreError> {
        let path = &self.path;
        let txn = begin_write(&self.db, path, &self.options)?;
        {
            let e = db_err::<redb::TableError>;
            let mut meta = txn.open_table(META).map_err(e(path, "create meta"))?;
            let put = |meta: &mut redb::Table<&str, &[u8]>, k: &str, v: &[u8]| {
                meta.insert(k, v).map(drop).map_err(db_err(path, "write meta"))
            };
            put(&mut meta, META_MAGIC, MAGIC)?;
            put(&mut meta, META_SCHEMA, &SCHEMA_VERSION.to_le_bytes())?;
            put(&mut meta, META_MEMBERS, fingerprint)?;
            put(&mut meta, META_SHARE_SEQ, &0u64.to_le_bytes())?;
            put(&mut meta, META_ANNOUNCE_SEQ, &0u64.to_le_bytes())?;
            put(&mut meta, META_JOURNAL_ID, &new_journal_id(path))?;
            put(&mut meta, META_JOURNAL_SEQ, &0u64.to_le_bytes())?;
            txn.open_table(WALLETS).map_err(e(path, "create wallets"))?;
            txn.open_table(MY_VOTES).map_err(e(path, "create my_votes"))?;
            txn.open_table(REQUESTS).map_err(e(path, "create requests"))?;
            txn.open_table(VOTES).map_err(e(path, "create votes"))?;
            txn.open_table(CERTS).map_err(e(path, "create certs"))?;
            txn.open_table(RUNS).map_err(e(path, "create runs"))?;
            txn.open_table(RUN_OUTCOMES).map_err(e(path, "create run_outcomes"))?;
            txn.open_table(RUN_FLOOR).map_err(e(path, "create run_floor"))?;
            txn.open_table(MARKS).map_err(e(path, "create marks"))?;
            txn.open_table(ESCROWS).map_err(e(path, "create escrows"))?;
            txn.open_table(ANNOUNCES).map_err(e(path, "create announces"))?;
            txn.open_table(CONTRACT_KV).map_err(e(path, "create contract_kv"))?;
        }
        txn.commit().map_err(db_err(path, "commit the new store"))
    }

    /// Applies a whole batch in one transaction, exactly as
    /// [`Snapshot::apply`] would (a `Change::RunDone` also applies the
    /// contract writes it carries). Returns once it is on disk: in the
    /// journal (one sync), or, every [`StoreOptions::journal_records`]
    /// commits, in a redb durable commit (a checkpoint). Readers see it
    /// once it is durable. An empty batch is a [`Store::checkpoint`].
    pub fn commit(&mut self, batch: &[Change]) -> Result<(), StoreError> {
        self.commit_all(batch, &[], &[], true)
    }

    /// [`Store::commit`] plus contract key-value writes outside any run, in
    /// the same transaction: for tools and tests. The node's contract
    /// writes travel inside their run's `Change::RunDone`.
    pub fn commit_with_kv(&mut self, batch: &[Change], kv: &[KvWrite]) -> Result<(), StoreError> {
        self.commit_all(batch, kv, &[], true)
    }

    /// Commits `batch` without waiting for the disk (`Durability::None`;
    /// its journal record stays in memory): for changes a crash may lose
    /// (see `Change::needs_durability`). The next durable commit makes it
    /// durable too, in order; the file stays consistent either way.
    pub fn commit_lazy(&mut self, batch: &[Change]) -> Result<(), StoreError> {
        self.commit_all(batch, &[], &[], false)
    }

    /// [`Store::commit`] (or [`Store::commit_lazy`] when `durable` is false)
    /// plus the node's purchase records, `(purchase id, record)`, in the
    /// same transaction. A record replaces the one of the same id; beyond
    /// [`StoreOptions::purchases_kept`] the oldest records are forgotten.
    pub fn commit_with_purchases(
        &mut self,
        batch: &[Change],
        purchases: &[([u8; 32], Vec<u8>)],
        durable: bool,
    ) -> Result<(), StoreError> {
        self.commit_all(batch, &[], purchases, durable)
    }

    fn commit_all(
        &mut self,
        batch: &[Change],
        kv: &[KvWrite],
        purchases: &[([u8; 32], Vec<u8>)],
        durable: bool,
    ) -> Result<(), StoreError> {
        if durable && batch.is_empty() && kv.is_empty() && purchases.is_empty() {
            return self.checkpoint();
        }
        let seq = self.seq + 1;
        let limit = u64::from(self.options.journal_records);
        // The journal takes the commit unless a record is missing from it
        // or a checkpoint is due; a record too large for it (or a message
        // over its wire limit, which fails below anyway) goes to redb.
        let body = self
            .journal
            .as_ref()
            .filter(|j| !j.broken && (!durable || j.records < limit))
            .and_then(|_| journal::encode_body(batch, kv, purchases))
            .filter(|b| self.journal.as_ref().is_some_and(|j| j.fits(b.len(), durable)));
        let path = &self.path;
        if durable && body.is_none() {
            // A checkpoint carrying the batch.
            let txn = begin_write(&self.db, path, &self.options)?;
            apply_record(&txn, path, &self.id_tags, &self.options, batch, kv, purchases, seq)?;
            txn.commit().map_err(db_err(path, "commit"))?;
            self.seq = seq;
            self.after_checkpoint();
            return Ok(());
        }
        let mut txn = begin_write(&self.db, path, &self.options)?;
        txn.set_durability(redb::Durability::None)
            .map_err(db_err(path, "set durability"))?;
        // Dropping an uncommitted transaction on an error aborts it.
        apply_record(&txn, path, &self.id_tags, &self.options, batch, kv, purchases, seq)?;
        match (&mut self.journal, body) {
            (Some(j), Some(body)) if durable => {
                // On disk before readers can see it.
                if let Err(source) = j.append_durable(seq, &body) {
                    txn.abort().map_err(db_err(path, "abort"))?;
                    return Err(StoreError::Io {
                        path: j.path().to_owned(),
                        context: "write the journal",
                        source,
                    });
                }
                if let Err(e) = txn.commit() {
                    // The record is in the journal; the next durable
                    // commit checkpoints past it.
                    j.broken = true;
                    return Err(db_err(path, "commit")(e));
                }
            }
            (journal, body) => {
                txn.commit().map_err(db_err(path, "commit"))?;
                if let Some(j) = journal {
                    match body {
                        // A failed write marks the journal broken: the
                        // next durable commit is then a checkpoint, which
                        // makes this one durable too.
                        Some(body) => drop(j.push_lazy(seq, &body)),
                        None => j.broken = true,
                    }
                }
            }
        }
        self.seq = seq;
        Ok(())
    }

    /// A redb durable commit of everything committed so far (quick repair
    /// as [`StoreOptions::quick_repair`] says); the journal starts over.
    /// `commit(&[])` does the same. The store also checkpoints when it is
    /// dropped.
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        let path = &self.path;
        let txn = begin_write(&self.db, path, &self.options)?;
        Tables::new(&txn, path).set_seq(self.seq)?;
        txn.commit().map_err(db_err(path, "commit a checkpoint"))?;
        self.after_checkpoint();
        Ok(())
    }

    fn after_checkpoint(&mut self) {
        self.checkpointed = self.seq;
        if let Some(j) = &mut self.journal {
            j.reset();
        }
    }

    /// A handle other threads read committed data through.
    pub fn reader(&self) -> StoreReader {
        StoreReader {
            db: self.db.clone(),
            path: self.path.clone(),
        }
    }

    /// A contract's stored value for `key`, as of the last commit.
    pub fn kv_get(&self, contract: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.reader().kv_get(contract, key)
    }

    /// Keys of `contract` starting with `prefix`, in order, at most `limit`.
    pub fn kv_keys(&self, contract: &str, prefix: &[u8], limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        self.reader().kv_keys(contract, prefix, limit)
    }

    /// Bytes `contract` holds: the sum of its keys' and values' lengths.
    pub fn kv_usage(&self, contract: &str) -> Result<u64, StoreError> {
        self.reader().kv_usage(contract)
    }

    /// Rewrites the file so pages are full and free space returns to the
    /// file system. Slow on a big store (it copies every page); for
    /// maintenance and measurements, not the commit path.
    pub fn compact(&mut self) -> Result<bool, StoreError> {
        // redb compacts only after a durable commit. Not when nothing is
        // pending: a checkpoint writes a page, and compaction would then
        // never run out of pages to move.
        if self.seq != self.checkpointed {
            self.checkpoint()?;
        }
        let path = &self.path;
        // redb compacts only with no reader open: a `StoreReader` handed
        // out keeps the database shared.
        let Some(db) = Arc::get_mut(&mut self.db) else {
            return Ok(false);
        };
        db.compact().map_err(db_err(path, "compact"))
    }

    /// Space used, from redb's own accounting and the file length.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let path = &self.path;
        let txn = begin_write(&self.db, path, &self.options)?;
        let db_stats = txn.stats().map_err(db_err(path, "read stats"))?;
        let (wallets, t) = {
            let table = txn.open_table(WALLETS).map_err(db_err(path, "open wallets"))?;
            let n = table.len().map_err(db_err(path, "count wallets"))?;
            (n, table.stats().map_err(db_err(path, "read stats"))?)
        };
        // Nothing was written; aborting leaves the file as it was.
        txn.abort().map_err(db_err(path, "abort"))?;
        let metadata = std::fs::metadata(path).map_err(|source| StoreError::Io {
            path: path.clone(),
            context: "stat the file",
            source,
        })?;
        let file_bytes = metadata.len();
        #[cfg(unix)]
        let disk_bytes = std::os::unix::fs::MetadataExt::blocks(&metadata) * 512;
        #[cfg(not(unix))]
        let disk_bytes = file_bytes;
        Ok(StoreStats {
            file_bytes,
            disk_bytes,
            page_size: db_stats.page_size() as u64,
            allocated_pages: db_stats.allocated_pages(),
            wallets,
            wallet_stored_bytes: t.stored_bytes(),
            wallet_metadata_bytes: t.metadata_bytes(),
            wallet_fragmented_bytes: t.fragmented_bytes(),
            wallet_leaf_pages: t.leaf_pages(),
            wallet_branch_pages: t.branch_pages(),
        })
    }

    /// Reads every table back into a [`Snapshot`].
    fn load(&self, members: &[MemberId]) -> Result<Snapshot, StoreError> {
        let txn = self.db.begin_read().map_err(db_err(&self.path, "begin a read"))?;
        let r = Loader {
            txn: &txn,
            path: &self.path,
        };
        let mut snap = Snapshot::default();

        r.each(WALLETS, "wallets", |idx, bytes| {
            let id = members
                .get(idx as usize)
                .ok_or_else(|| format!("index {idx} is past the membership's {} members", members.len()))?;
            snap.wallets.insert(idx, codec::decode_wallet(*id, bytes)?);
            Ok(())
        })?;
        r.each(MY_VOTES, "my_votes", |idx, bytes| {
            snap.my_votes.insert(idx, codec::decode_my_vote(bytes)?);
            Ok(())
        })?;
        r.each(REQUESTS, "requests", |id, bytes| {
            match codec::decode_message(bytes)? {
                Message::Request(req) => snap.requests.insert(id, req),
                other => return Err(format!("expected a request, found a {}", other.kind())),
            };
            Ok(())
        })?;
        r.each(VOTES, "votes", |(request_id, voter), bytes| {
            match codec::decode_message(bytes)? {
                Message::Vote(v) if v.request_id == request_id && v.voter.0 == voter => {
                    snap.votes.insert((request_id, voter), v)
                }
                Message::Vote(_) => return Err("vote does not match its key".into()),
                other => return Err(format!("expected a vote, found a {}", other.kind())),
            };
            Ok(())
        })?;
        r.each(CERTS, "certs", |key, bytes| {
            snap.certs.insert(key, decode_cert(bytes)?);
            Ok(())
        })?;
        r.each(RUNS, "runs", |key, bytes| {
            let cert = decode_cert(bytes)?;
            snap.runs.insert(key, RunRecord { cert, done: None });
            Ok(())
        })?;
        r.each(RUN_OUTCOMES, "run_outcomes", |key, bytes| {
            let run = snap
                .runs
                .get_mut(&key)
                .ok_or("an outcome for a run that was never pending")?;
            run.done = Some(codec::decode_outcome(bytes)?);
            Ok(())
        })?;
        r.each(RUN_FLOOR, "run_floor", |idx, bytes| {
            snap.run_floor.insert(idx, codec::decode_run_floor(bytes)?);
            Ok(())
        })?;
        r.each(MARKS, "marks", |idx, bytes| {
            snap.marks.insert(idx, codec::decode_marks(bytes)?);
            Ok(())
        })?;
        r.each(ESCROWS, "escrows", |key, bytes| {
            let e = codec::decode_escrow(bytes)?;
            if wallance_core::msg::verdict_id(&e.purchase) != key {
                return Err("escrow does not match its key".into());
            }
            snap.escrows.insert(key, e);
            Ok(())
        })?;
        r.each(ANNOUNCES, "announces", |provider, bytes| {
            match codec::decode_message(bytes)? {
                Message::Announce(a) if a.provider.0 == provider => snap.announces.insert(provider, a),
                Message::Announce(_) => return Err("announce does not match its key".into()),
                other => return Err(format!("expected an announce, found a {}", other.kind())),
            };
            Ok(())
        })?;
        snap.share_seq = r.meta_u64(META_SHARE_SEQ)?;
        snap.announce_seq = r.meta_u64(META_ANNOUNCE_SEQ)?;
        Ok(snap)
    }
}

impl Drop for Store {
    /// Checkpoints, so the journal holds nothing the file lacks after a
    /// clean close (an error is left for the next open's replay).
    fn drop(&mut self) {
        if self.seq != self.checkpointed {
            let _ = self.checkpoint();
        }
    }
}

/// A random id for a new journal: this store file's records only.
fn new_journal_id(path: &Path) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"wallance/store/journal-id/v1");
    h.update(path.as_os_str().as_encoded_bytes());
    h.update(std::process::id().to_le_bytes());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.update(t.as_nanos().to_le_bytes());
    }
    let stack = 0u8;
    h.update((&stack as *const u8 as usize).to_le_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&h.finalize()[..16]);
    id
}

/// One commit's writes, in an open transaction: the batch, contract
/// writes, purchase records, and its number in `meta`.
#[allow(clippy::too_many_arguments)]
fn apply_record(
    txn: &WriteTransaction,
    path: &Path,
    id_tags: &[u32],
    options: &StoreOptions,
    batch: &[Change],
    kv: &[KvWrite],
    purchases: &[([u8; 32], Vec<u8>)],
    seq: u64,
) -> Result<(), StoreError> {
    {
        let mut tables = Tables::new(txn, path);
        for change in batch {
            tables.apply(id_tags, change)?;
        }
        for (contract, key, value) in kv {
            tables.kv_write(contract, key, value.as_deref())?;
        }
        tables.set_seq(seq)?;
    }
    if !purchases.is_empty() {
        put_purchases(txn, path, purchases, options.purchases_kept)?;
    }
    Ok(())
}

fn decode_cert(bytes: &[u8]) -> Result<wallance_core::msg::Certificate, String> {
    match codec::decode_message(bytes)? {
        Message::Certificate(c) => Ok(*c),
        other => Err(format!("expected a certificate, found a {}", other.kind())),
    }
}

/// How a key is named in an error.
trait ShowKey {
    fn show(&self) -> String;
}
impl ShowKey for u32 {
    fn show(&self) -> String {
        self.to_string()
    }
}
impl ShowKey for [u8; 32] {
    fn show(&self) -> String {
        hex::encode(self)
    }
}
impl ShowKey for ([u8; 32], [u8; 32]) {
    fn show(&self) -> String {
        format!("({}, {})", hex::encode(self.0), hex::encode(self.1))
    }
}
impl ShowKey for (u32, u64) {
    fn show(&self) -> String {
        format!("({}, {})", self.0, self.1)
    }
}

struct Loader<'a> {
    txn: &'a ReadTransaction,
    path: &'a Path,
}

impl Loader<'_> {
    /// Calls `f` on every row of a table whose keys are plain values; a row
    /// `f` rejects becomes a `Corrupt` error naming the table and key.
    fn each<K, F>(
        &self,
        def: TableDefinition<K, &'static [u8]>,
        table: &'static str,
        mut f: F,
    ) -> Result<(), StoreError>
    where
        K: redb::Key + 'static,
        for<'b> K: redb::Value<SelfType<'b> = K>,
        K: ShowKey,
        F: FnMut(K, &[u8]) -> Result<(), String>,
    {
        let t = self.txn.open_table(def).map_err(db_err(self.path, "open a table"))?;
        for row in t.iter().map_err(db_err(self.path, "read a table"))? {
            let (k, v) = row.map_err(db_err(self.path, "read a row"))?;
            let key = k.value();
            let shown = key.show();
            f(key, v.value()).map_err(|reason| StoreError::Corrupt {
                path: self.path.to_owned(),
                table,
                key: shown,
                reason,
            })?;
        }
        Ok(())
    }

    fn meta_u64(&self, key: &str) -> Result<u64, StoreError> {
        let t = self.txn.open_table(META).map_err(db_err(self.path, "open meta"))?;
        let corrupt = |reason: String| StoreError::Corrupt {
            path: self.path.to_owned(),
            table: "meta",
            key: key.to_string(),
            reason,
        };
        let v = t
            .get(key)
            .map_err(db_err(self.path, "read meta"))?
            .ok_or_else(|| corrupt("missing".into()))?;
        let bytes = v.value();
        <[u8; 8]>::try_from(bytes)
            .map(u64::from_le_bytes)
            .map_err(|_| corrupt(format!("{} bytes, expected 8", bytes.len())))
    }
}

/// The tables of one write transaction, each opened on first use and kept
/// open for the rest of the batch (opening is a lookup in redb's table tree,
/// not free when a bulk load writes a million wallets).
struct Tables<'t> {
    txn: &'t WriteTransaction,
    path: &'t Path,
    meta: Option<Table<'t, &'static str, &'static [u8]>>,
    wallets: Option<Table<'t, u32, &'static [u8]>>,
    my_votes: Option<Table<'t, u32, &'static [u8]>>,
    requests: Option<Table<'t, [u8; 32], &'static [u8]>>,
    votes: Option<Table<'t, VoteKey, &'static [u8]>>,
    certs: Option<Table<'t, (u32, u64), &'static [u8]>>,
    runs: Option<Table<'t, (u32, u64), &'static [u8]>>,
    run_outcomes: Option<Table<'t, (u32, u64), &'static [u8]>>,
    run_floor: Option<Table<'t, u32, &'static [u8]>>,
    marks: Option<Table<'t, u32, &'static [u8]>>,
    escrows: Option<Table<'t, [u8; 32], &'static [u8]>>,
    announces: Option<Table<'t, [u8; 32], &'static [u8]>>,
    contract_kv: Option<Table<'t, KvKey, &'static [u8]>>,
}

/// Writes purchase records and forgets the oldest beyond `kept`.
fn put_purchases(
    txn: &WriteTransaction,
    path: &Path,
    purchases: &[([u8; 32], Vec<u8>)],
    kept: usize,
) -> Result<(), StoreError> {
    let mut records = txn.open_table(PURCHASES).map_err(db_err(path, "open purchases"))?;
    let mut order = txn
        .open_table(PURCHASE_ORDER)
        .map_err(db_err(path, "open purchase_order"))?;
    let mut next = order
        .last()
        .map_err(db_err(path, "read purchase_order"))?
        .map_or(0, |(k, _)| k.value() + 1);
    for (id, record) in purchases {
        let seq = match records.get(id).map_err(db_err(path, "read a purchase"))? {
            Some(old) => {
                let mut seq = [0u8; 8];
                seq.copy_from_slice(&old.value()[..8]);
                u64::from_le_bytes(seq)
            }
            None => {
                let seq = next;
                next += 1;
                order.insert(seq, id).map_err(db_err(path, "write purchase_order"))?;
                seq
            }
        };
        let mut row = Vec::with_capacity(8 + record.len());
        row.extend_from_slice(&seq.to_le_bytes());
        row.extend_from_slice(record);
        records
            .insert(id, row.as_slice())
            .map_err(db_err(path, "write a purchase"))?;
    }
    let mut len = order.len().map_err(db_err(path, "count purchases"))?;
    while len > kept as u64 {
        let Some((_, id)) = order.pop_first().map_err(db_err(path, "forget a purchase"))? else {
            break;
        };
        records.remove(id.value()).map_err(db_err(path, "forget a purchase"))?;
        len -= 1;
    }
    Ok(())
}

/// Reads committed data from any thread: contract storage for the contract
/// worker, purchase records for the API. Each call sees the last commit.
#[derive(Clone)]
pub struct StoreReader {
    db: Arc<Database>,
    path: PathBuf,
}

impl fmt::Debug for StoreReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreReader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl StoreReader {
    fn begin(&self) -> Result<ReadTransaction, StoreError> {
        self.db.begin_read().map_err(db_err(&self.path, "begin a read"))
    }

    /// A contract's stored value for `key`, as of the last commit.
    pub fn kv_get(&self, contract: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let path = &self.path;
        let txn = self.begin()?;
        let table = txn.open_table(CONTRACT_KV).map_err(db_err(path, "open contract_kv"))?;
        Ok(table
            .get((contract, key))
            .map_err(db_err(path, "read contract_kv"))?
            .map(|v| v.value().to_vec()))
    }

    /// Keys of `contract` starting with `prefix`, in order, at most `limit`.
    pub fn kv_keys(&self, contract: &str, prefix: &[u8], limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let path = &self.path;
        let txn = self.begin()?;
        let table = txn.open_table(CONTRACT_KV).map_err(db_err(path, "open contract_kv"))?;
        let mut out = Vec::new();
        for row in table
            .range((contract, prefix)..)
            .map_err(db_err(path, "scan contract_kv"))?
        {
            let (k, _) = row.map_err(db_err(path, "scan contract_kv"))?;
            let (c, key) = k.value();
            if c != contract || !key.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push(key.to_vec());
        }
        Ok(out)
    }

    /// Bytes `contract` holds: the sum of its keys' and values' lengths.
    pub fn kv_usage(&self, contract: &str) -> Result<u64, StoreError> {
        let path = &self.path;
        let txn = self.begin()?;
        let table = txn.open_table(CONTRACT_KV).map_err(db_err(path, "open contract_kv"))?;
        let mut total = 0u64;
        for row in table
            .range((contract, &b""[..])..)
            .map_err(db_err(path, "scan contract_kv"))?
        {
            let (k, v) = row.map_err(db_err(path, "scan contract_kv"))?;
            if k.value().0 != contract {
                break;
            }
            total += (k.value().1.len() + v.value().len()) as u64;
        }
        Ok(total)
    }

    /// The record of purchase `id`, if kept.
    pub fn purchase(&self, id: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        let path = &self.path;
        let txn = self.begin()?;
        let table = match txn.open_table(PURCHASES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(db_err(path, "open purchases")(e)),
        };
        Ok(table
            .get(id)
            .map_err(db_err(path, "read a purchase"))?
            .map(|v| v.value()[8..].to_vec()))
    }

    /// The newest `limit` purchase records, newest first.
    pub fn recent_purchases(&self, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let path = &self.path;
        let txn = self.begin()?;
        let (order, records) = match (txn.open_table(PURCHASE_ORDER), txn.open_table(PURCHASES)) {
            (Ok(o), Ok(r)) => (o, r),
            (Err(redb::TableError::TableDoesNotExist(_)), _) | (_, Err(redb::TableError::TableDoesNotExist(_))) => {
                return Ok(Vec::new());
            }
            (Err(e), _) | (_, Err(e)) => return Err(db_err(path, "open purchases")(e)),
        };
        let mut out = Vec::new();
        for row in order.iter().map_err(db_err(path, "scan purchase_order"))?.rev() {
            if out.len() >= limit {
                break;
            }
            let (_, id) = row.map_err(db_err(path, "scan purchase_order"))?;
            if let Some(r) = records.get(id.value()).map_err(db_err(path, "read a purchase"))? {
                out.push(r.value()[8..].to_vec());
            }
        }
        Ok(out)
    }
}

fn table<'s, 't, K: redb::Key + 'static, V: redb::Value + 'static>(
    slot: &'s mut Option<Table<'t, K, V>>,
    txn: &'t WriteTransaction,
    path: &Path,
    def: TableDefinition<K, V>,
) -> Result<&'s mut Table<'t, K, V>, StoreError> {
    if slot.is_none() {
        *slot = Some(txn.open_table(def).map_err(db_err(path, "open a table"))?);
    }
    // Set just above when it was empty.
    Ok(slot.as_mut().expect("table is open"))
}

impl<'t> Tables<'t> {
    fn new(txn: &'t WriteTransaction, path: &'t Path) -> Self {
        Self {
            txn,
            path,
            meta: None,
            wallets: None,
            my_votes: None,
            requests: None,
            votes: None,
            certs: None,
            runs: None,
            run_outcomes: None,
            run_floor: None,
            marks: None,
            escrows: None,
            announces: None,
            contract_kv: None,
        }
    }

    /// One change, written exactly as `Snapshot::apply` applies it.
    fn apply(&mut self, id_tags: &[u32], change: &Change) -> Result<(), StoreError> {
        let (txn, path) = (self.txn, self.path);
        let write = |what: &'static str| db_err::<redb::StorageError>(path, what);
        let encode = |msg: Message, what: &'static str| {
            codec::encode_message(&msg).ok_or_else(|| StoreError::TooLarge {
                path: path.to_owned(),
                what,
            })
        };
        match change {
            Change::Wallet { idx, wallet } | Change::Tally { idx, wallet } => {
                // The ID is not stored but taken from the membership on
                // load, so a wallet under another member's index must not
                // get in.
                let expected = id_tags.get(*idx as usize);
                if expected != Some(&id_tag(&wallet.id)) {
                    return Err(StoreError::WrongMember {
                        path: path.to_owned(),
                        idx: *idx,
                        found: wallet.id.to_hex(),
                        note: match expected {
                            Some(_) => String::new(),
                            None => format!(" (the membership has {} members)", id_tags.len()),
                        },
                    });
                }
                table(&mut self.wallets, txn, path, WALLETS)?
                    .insert(*idx, codec::encode_wallet(wallet).as_slice())
                    .map_err(write("write a wallet"))?;
            }
            Change::MyVote {
                requester_idx,
                version,
                vote,
            } => {
                table(&mut self.my_votes, txn, path, MY_VOTES)?
                    .insert(*requester_idx, codec::encode_my_vote(*version, vote).as_slice())
                    .map_err(write("write my vote"))?;
            }
            Change::PutRequest(r) => {
                let bytes = encode(Message::Request((**r).clone()), "a request")?;
                table(&mut self.requests, txn, path, REQUESTS)?
                    .insert(r.id(), bytes.as_slice())
                    .map_err(write("write a request"))?;
            }
            Change::DropRequest(id) => {
                table(&mut self.requests, txn, path, REQUESTS)?
                    .remove(id)
                    .map_err(write("drop a request"))?;
            }
            Change::PutVote(v) => {
                let bytes = encode(Message::Vote(*v), "a vote")?;
                table(&mut self.votes, txn, path, VOTES)?
                    .insert((v.request_id, v.voter.0), bytes.as_slice())
                    .map_err(write("write a vote"))?;
            }
            Change::DropVotes(id) => {
                let t = table(&mut self.votes, txn, path, VOTES)?;
                let keys = t
                    .range((*id, [0; 32])..=(*id, [0xff; 32]))
                    .map_err(write("find votes"))?
                    .map(|row| row.map(|(k, _)| k.value()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(write("find votes"))?;
                for k in keys {
                    t.remove(k).map_err(write("drop a vote"))?;
                }
            }
            Change::PutCert { idx, version, cert } => {
                let bytes = encode(Message::Certificate(cert.clone()), "a certificate")?;
                table(&mut self.certs, txn, path, CERTS)?
                    .insert((*idx, *version), bytes.as_slice())
                    .map_err(write("write a certificate"))?;
            }
            Change::DropCert { idx, version } => {
                table(&mut self.certs, txn, path, CERTS)?
                    .remove((*idx, *version))
                    .map_err(write("drop a certificate"))?;
            }
            Change::RunPending { idx, version, cert } => {
                let t = table(&mut self.runs, txn, path, RUNS)?;
                // A run is recorded once: a repeat keeps the first
                // certificate and whatever outcome it has.
                if t.get((*idx, *version)).map_err(write("read a run"))?.is_none() {
                    let bytes = encode(Message::Certificate(cert.clone()), "a certificate")?;
                    t.insert((*idx, *version), bytes.as_slice())
                        .map_err(write("write a run"))?;
                }
            }
            Change::RunDone {
                idx,
                version,
                ok,
                body,
                writes,
            } => {
                let pending = table(&mut self.runs, txn, path, RUNS)?
                    .get((*idx, *version))
                    .map_err(write("read a run"))?
                    .is_some();
                // An outcome for a run never recorded is dropped, as in the
                // core, and so are its contract writes: they land with the
                // marker or not at all.
                if pending {
                    table(&mut self.run_outcomes, txn, path, RUN_OUTCOMES)?
                        .insert((*idx, *version), codec::encode_outcome(*ok, body).as_slice())
                        .map_err(write("write a run outcome"))?;
                    for w in writes {
                        self.kv_write(&w.contract, &w.key, w.value.as_deref())?;
                    }
                }
            }
            Change::RunsPruned { idx, upto } => {
                // The finished runs are the ones with an outcome: an outcome
                // is written only for a run recorded (`RunDone` above), and
                // both rows leave only together, here.
                let range = (*idx, 0)..=(*idx, *upto);
                let outcomes = table(&mut self.run_outcomes, txn, path, RUN_OUTCOMES)?;
                let finished = outcomes
                    .range(range)
                    .map_err(write("find finished runs"))?
                    .map(|row| row.map(|(k, _)| k.value()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(write("find finished runs"))?;
                for key in &finished {
                    outcomes.remove(*key).map_err(write("drop a run outcome"))?;
                }
                let runs = table(&mut self.runs, txn, path, RUNS)?;
                for key in &finished {
                    runs.remove(*key).map_err(write("drop a run"))?;
                }
                let floors = table(&mut self.run_floor, txn, path, RUN_FLOOR)?;
                let old = match floors.get(*idx).map_err(write("read a run floor"))? {
                    None => 0,
                    Some(v) => codec::decode_run_floor(v.value()).map_err(|reason| StoreError::Corrupt {
                        path: path.to_owned(),
                        table: "run_floor",
                        key: idx.show(),
                        reason,
                    })?,
                };
                // Written even when it stays 0: `Snapshot::apply` records a
                // floor for every requester pruned.
                floors
                    .insert(*idx, codec::encode_run_floor(old.max(*upto)).as_slice())
                    .map_err(write("write a run floor"))?;
            }
            Change::Marks { idx, settled, above } => {
                table(&mut self.marks, txn, path, MARKS)?
                    .insert(*idx, codec::encode_marks(*settled, above).as_slice())
                    .map_err(write("write marks"))?;
            }
            Change::PutEscrow(e) => {
                table(&mut self.escrows, txn, path, ESCROWS)?
                    .insert(
                        wallance_core::msg::verdict_id(&e.purchase),
                        codec::encode_escrow(e).as_slice(),
                    )
                    .map_err(write("write an escrow"))?;
            }
            Change::DropEscrow(key) => {
                table(&mut self.escrows, txn, path, ESCROWS)?
                    .remove(key)
                    .map_err(write("remove an escrow"))?;
            }
            Change::Announce(a) => {
                let bytes = encode(Message::Announce(a.clone()), "an announce")?;
                table(&mut self.announces, txn, path, ANNOUNCES)?
                    .insert(a.provider.0, bytes.as_slice())
                    .map_err(write("write an announce"))?;
            }
            Change::ShareSeq(s) => {
                table(&mut self.meta, txn, path, META)?
                    .insert(META_SHARE_SEQ, s.to_le_bytes().as_slice())
                    .map_err(write("write share_seq"))?;
            }
            Change::AnnounceSeq(s) => {
                table(&mut self.meta, txn, path, META)?
                    .insert(META_ANNOUNCE_SEQ, s.to_le_bytes().as_slice())
                    .map_err(write("write announce_seq"))?;
            }
        }
        Ok(())
    }

    fn set_seq(&mut self, seq: u64) -> Result<(), StoreError> {
        let (txn, path) = (self.txn, self.path);
        table(&mut self.meta, txn, path, META)?
            .insert(META_JOURNAL_SEQ, seq.to_le_bytes().as_slice())
            .map_err(db_err(path, "write journal_seq"))?;
        Ok(())
    }

    fn kv_write(&mut self, contract: &str, key: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
        let (txn, path) = (self.txn, self.path);
        let t = table(&mut self.contract_kv, txn, path, CONTRACT_KV)?;
        let k = (contract, key);
        match value {
            Some(v) => t.insert(k, v).map(drop),
            None => t.remove(k).map(drop),
        }
        .map_err(db_err(path, "write contract_kv"))
    }
}

#[cfg(test)]
mod tests;
