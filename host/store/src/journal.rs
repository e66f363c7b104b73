//! The decision journal: an append-only file beside the redb file that
//! makes a commit durable with one `fdatasync` of a few hundred bytes,
//! instead of a redb durable commit (dirty B-tree pages, one or two syncs).
//!
//! A commit is applied to redb without waiting for the disk
//! (`Durability::None`) and its batch is appended here as one record; a
//! durable commit syncs the journal before the redb transaction commits,
//! so readers never see what is not durable. Every commit transaction
//! also writes its record number to the `meta` table (`journal_seq`), so
//! the redb file itself says which records it holds. A checkpoint (a redb
//! durable commit) makes every record so far redundant and the journal
//! starts over at offset 0; older records left behind in the file are
//! never replayed because their numbers are at or below `journal_seq`.
//!
//! On open, redb is back at its last durable commit (number `S`); the
//! records `S+1, S+2, ...` found from offset 0 are applied in order, then
//! a checkpoint. The chain stops at the first record that is cut, fails
//! its checksum or does not carry the next number: garbage, a torn tail
//! and records of an earlier pass through the file all end it.
//!
//! File layout: records back to back from offset 0. A record is
//!
//! ```text
//! check 16 | len u32 LE | pad u16 LE | seq u64 LE | body (len bytes) | pad zero bytes
//! ```
//!
//! `check` is the first 16 bytes of SHA-256 over the store's journal id
//! (16 random bytes kept in `meta`), `len`, `pad`, `seq` and the body, so
//! a journal left over from another store file never matches. A synced
//! write ends on a 4 KiB boundary (`pad`): a later append never rewrites a
//! page holding an acknowledged record. The file is filled with zeros to
//! its full size when created, so a sync carries no size or extent change.
//!
//! The body is the commit's arguments: the batch of `Change`s, the
//! contract key-value writes and the purchase records (see
//! [`encode_body`]), in the store's own value encodings.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wallance_core::store_model::{ContractWrite, Escrow};
use wallance_core::{Change, MemberId, Message};

use crate::KvWrite;
use crate::codec::{self, Cursor, Reason, put_varint};
use crate::io_count::IoCounters;

/// The journal's size, written in full when it is created.
pub(crate) const JOURNAL_BYTES: u64 = 4 << 20;
/// A synced write ends on this boundary.
const PAGE: u64 = 4096;
const HEADER: usize = 16 + 4 + 2 + 8;
/// Lazy records are kept in memory until a durable one (or this much).
const BUFFERED: usize = 64 << 10;

/// What one commit carries: the batch, contract writes outside any run and
/// purchase records.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Record {
    pub(crate) batch: Vec<Change>,
    pub(crate) kv: Vec<KvWrite>,
    pub(crate) purchases: Vec<([u8; 32], Vec<u8>)>,
}

/// The journal file of an open store.
pub(crate) struct Journal {
    file: File,
    path: PathBuf,
    pub(crate) id: [u8; 16],
    /// Where `buf` goes in the file.
    offset: u64,
    /// Records appended but not written yet (lazy ones).
    buf: Vec<u8>,
    /// Records since the last checkpoint.
    pub(crate) records: u64,
    /// A commit since the last checkpoint is missing from the journal (it
    /// did not fit, or a write failed): records after it cannot be
    /// replayed, so the next durable commit must be a checkpoint.
    pub(crate) broken: bool,
    io: Arc<IoCounters>,
}

/// The journal's file name: the store's file name with `-journal`.
pub(crate) fn path_for(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push("-journal");
    PathBuf::from(name)
}

/// The records found in the journal file of `store` numbered above
/// `applied`, in order, with the number of the first one. A record with a
/// valid checksum whose body does not decode is an error; everything else
/// that is not the next record ends the chain.
pub(crate) fn read(
    path: &Path,
    id: &[u8; 16],
    applied: u64,
    members: &[MemberId],
) -> Result<Vec<(u64, Record)>, ReadError> {
    match std::fs::read(path) {
        Ok(bytes) => parse(&bytes, id, applied, members),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(ReadError::Io(e)),
    }
}

/// [`read`] on the file's bytes.
fn parse(bytes: &[u8], id: &[u8; 16], applied: u64, members: &[MemberId]) -> Result<Vec<(u64, Record)>, ReadError> {
    let mut out = Vec::new();
    let mut prev: Option<u64> = None;
    for (seq, body) in chain(bytes, id) {
        match prev {
            Some(p) if seq != p.wrapping_add(1) => break,
            // The first record: one at or below `applied` is an old pass
            // whose chain may still lead to `applied + 1`; one above it
            // means records are missing.
            None if seq > applied.saturating_add(1) => {
                return Err(ReadError::Gap { first: seq, applied });
            }
            _ => {}
        }
        prev = Some(seq);
        if seq > applied {
            let record = decode_body(body, members).map_err(|reason| ReadError::Corrupt { seq, reason })?;
            out.push((seq, record));
        }
    }
    Ok(out)
}

#[derive(Debug)]
pub(crate) enum ReadError {
    Io(io::Error),
    /// The first record follows a record the store does not hold.
    Gap {
        first: u64,
        applied: u64,
    },
    /// A record with a valid checksum that does not decode.
    Corrupt {
        seq: u64,
        reason: Reason,
    },
}

/// The records with a valid checksum from offset 0, each followed by the
/// next in the file, as `(seq, body)`; ends at the first one that is not.
fn chain<'a>(bytes: &'a [u8], id: &'a [u8; 16]) -> impl Iterator<Item = (u64, &'a [u8])> + 'a {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let header = bytes.get(at..at.checked_add(HEADER)?)?;
        let check = &header[..16];
        let len = u32::from_le_bytes(header[16..20].try_into().ok()?) as usize;
        let pad = u16::from_le_bytes(header[20..22].try_into().ok()?) as usize;
        let seq = u64::from_le_bytes(header[22..30].try_into().ok()?);
        if pad >= PAGE as usize {
            return None;
        }
        let body_at = at + HEADER;
        let body = bytes.get(body_at..body_at.checked_add(len)?)?;
        if check != checksum(id, &header[16..], body) {
            return None;
        }
        at = body_at + len + pad;
        Some((seq, body))
    })
}

fn checksum(id: &[u8; 16], fields: &[u8], body: &[u8]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(id);
    h.update(fields);
    h.update(body);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize()[..16]);
    out
}

/// One record: header, body, then `pad` zero bytes.
fn frame(id: &[u8; 16], seq: u64, body: &[u8], pad: usize, out: &mut Vec<u8>) {
    let mut fields = [0u8; HEADER - 16];
    fields[..4].copy_from_slice(&(body.len() as u32).to_le_bytes());
    fields[4..6].copy_from_slice(&(pad as u16).to_le_bytes());
    fields[6..].copy_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&checksum(id, &fields, body));
    out.extend_from_slice(&fields);
    out.extend_from_slice(body);
    out.resize(out.len() + pad, 0);
}

impl Journal {
    /// Opens the journal file, creating it (full size, zero-filled,
    /// synced with its directory entry) if needed. Its content is not
    /// read: call after [`read`] and the checkpoint that follows it.
    pub(crate) fn open(path: PathBuf, id: [u8; 16], io: Arc<IoCounters>) -> io::Result<Journal> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let len = file.metadata()?.len();
        if len < JOURNAL_BYTES {
            // Real zeros, not a sparse or fallocated range: a later sync
            // then only carries data, never a block allocation. Written a
            // page at a time: a bigger write makes the page cache hold the
            // file in large folios, and each later 4 KiB record would then
            // dirty (and count in /proc/<pid>/io write_bytes) a whole folio
            // (measured: a GB of write_bytes in seconds with 1 MiB writes).
            let zeros = vec![0u8; PAGE as usize];
            let mut at = len;
            while at < JOURNAL_BYTES {
                let n = (JOURNAL_BYTES - at).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], at)?;
                io.add_write(n as u64);
                at += n as u64;
            }
            file.sync_all()?;
            io.add_sync();
            if len == 0 {
                // The new file's directory entry, or a power cut could
                // take the whole journal.
                if let Some(dir) = path.parent() {
                    let dir = if dir.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        dir
                    };
                    File::open(dir)?.sync_all()?;
                    io.add_sync();
                }
            }
        }
        Ok(Journal {
            file,
            path,
            id,
            offset: 0,
            buf: Vec::new(),
            records: 0,
            broken: false,
            io,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a record with a body of `len` bytes, synced (padded to a
    /// page) or not, fits after what the journal holds.
    pub(crate) fn fits(&self, len: usize, synced: bool) -> bool {
        let extra = if synced { PAGE } else { 0 };
        self.offset + (self.buf.len() + HEADER + len) as u64 + extra <= JOURNAL_BYTES
    }

    /// Appends a lazy record: kept in memory (written, unsynced, once
    /// enough piles up); the next durable append makes it durable.
    pub(crate) fn push_lazy(&mut self, seq: u64, body: &[u8]) -> io::Result<()> {
        frame(&self.id, seq, body, 0, &mut self.buf);
        self.records += 1;
        if self.buf.len() >= BUFFERED {
            let r = self.write_buf();
            if r.is_err() {
                self.fail();
            }
            return r;
        }
        Ok(())
    }

    /// Appends a record and makes it, and every record before it, durable:
    /// one write ending on a page boundary, one `fdatasync`.
    pub(crate) fn append_durable(&mut self, seq: u64, body: &[u8]) -> io::Result<()> {
        let end = self.offset + (self.buf.len() + HEADER + body.len()) as u64;
        let pad = (end.next_multiple_of(PAGE) - end) as usize;
        frame(&self.id, seq, body, pad, &mut self.buf);
        let r = self.write_buf().and_then(|()| {
            self.io.add_sync();
            self.file.sync_data()
        });
        match r {
            Ok(()) => self.records += 1,
            Err(_) => self.fail(),
        }
        r
    }

    fn write_buf(&mut self) -> io::Result<()> {
        self.file.write_all_at(&self.buf, self.offset)?;
        self.io.add_write(self.buf.len() as u64);
        self.offset += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// A write failed: what it held may or may not be in the file, so
    /// nothing may be appended until a checkpoint.
    fn fail(&mut self) {
        self.buf.clear();
        self.broken = true;
    }

    /// After a checkpoint: every record so far is in redb, durably.
    pub(crate) fn reset(&mut self) {
        self.offset = 0;
        self.buf.clear();
        self.records = 0;
        self.broken = false;
    }
}

// ---------------------------------------------------------------------------
// Record bodies.

const T_WALLET: u8 = 0;
const T_TALLY: u8 = 1;
const T_MY_VOTE: u8 = 2;
const T_PUT_REQUEST: u8 = 3;
const T_DROP_REQUEST: u8 = 4;
const T_PUT_VOTE: u8 = 5;
const T_DROP_VOTES: u8 = 6;
const T_PUT_CERT: u8 = 7;
const T_DROP_CERT: u8 = 8;
const T_RUN_PENDING: u8 = 9;
const T_RUN_DONE: u8 = 10;
const T_RUNS_PRUNED: u8 = 11;
const T_MARKS: u8 = 12;
const T_ANNOUNCE: u8 = 13;
const T_SHARE_SEQ: u8 = 14;
const T_ANNOUNCE_SEQ: u8 = 15;
const T_PUT_ESCROW: u8 = 16;
const T_DROP_ESCROW: u8 = 17;

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_message(out: &mut Vec<u8>, msg: Message) -> Option<()> {
    put_bytes(out, &codec::encode_message(&msg)?);
    Some(())
}

/// `count v | changes... | count v | kv writes... | count v | purchases...`;
/// each change a tag byte and its fields, messages in their wire encoding,
/// wallets, escrows and marks in the store's row encodings. `None` when a
/// message is over its wire limits (the commit fails on it anyway).
pub(crate) fn encode_body(batch: &[Change], kv: &[KvWrite], purchases: &[([u8; 32], Vec<u8>)]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(512);
    put_varint(&mut out, batch.len() as u64);
    for change in batch {
        match change {
            Change::Wallet { idx, wallet } | Change::Tally { idx, wallet } => {
                out.push(if matches!(change, Change::Wallet { .. }) {
                    T_WALLET
                } else {
                    T_TALLY
                });
                put_varint(&mut out, u64::from(*idx));
                put_bytes(&mut out, &codec::encode_wallet(wallet));
            }
            Change::MyVote {
                requester_idx,
                version,
                vote,
            } => {
                out.push(T_MY_VOTE);
                put_varint(&mut out, u64::from(*requester_idx));
                put_bytes(&mut out, &codec::encode_my_vote(*version, vote));
            }
            Change::PutRequest(r) => {
                out.push(T_PUT_REQUEST);
                put_message(&mut out, Message::Request((**r).clone()))?;
            }
            Change::DropRequest(id) => {
                out.push(T_DROP_REQUEST);
                out.extend_from_slice(id);
            }
            Change::PutVote(v) => {
                out.push(T_PUT_VOTE);
                put_message(&mut out, Message::Vote(*v))?;
            }
            Change::DropVotes(id) => {
                out.push(T_DROP_VOTES);
                out.extend_from_slice(id);
            }
            Change::PutCert { idx, version, cert } | Change::RunPending { idx, version, cert } => {
                out.push(if matches!(change, Change::PutCert { .. }) {
                    T_PUT_CERT
                } else {
                    T_RUN_PENDING
                });
                put_varint(&mut out, u64::from(*idx));
                put_varint(&mut out, *version);
                put_message(&mut out, Message::Certificate(cert.clone()))?;
            }
            Change::DropCert { idx, version } => {
                out.push(T_DROP_CERT);
                put_varint(&mut out, u64::from(*idx));
                put_varint(&mut out, *version);
            }
            Change::RunDone {
                idx,
                version,
                ok,
                body,
                writes,
            } => {
                out.push(T_RUN_DONE);
                put_varint(&mut out, u64::from(*idx));
                put_varint(&mut out, *version);
                put_bytes(&mut out, &codec::encode_outcome(*ok, body));
                put_varint(&mut out, writes.len() as u64);
                for w in writes {
                    put_kv(&mut out, &w.contract, &w.key, w.value.as_deref());
                }
            }
            Change::RunsPruned { idx, upto } => {
                out.push(T_RUNS_PRUNED);
                put_varint(&mut out, u64::from(*idx));
                put_varint(&mut out, *upto);
            }
            Change::Marks { idx, settled, above } => {
                out.push(T_MARKS);
                put_varint(&mut out, u64::from(*idx));
                put_bytes(&mut out, &codec::encode_marks(*settled, above));
            }
            Change::Announce(a) => {
                out.push(T_ANNOUNCE);
                put_message(&mut out, Message::Announce(a.clone()))?;
            }
            Change::ShareSeq(s) => {
                out.push(T_SHARE_SEQ);
                put_varint(&mut out, *s);
            }
            Change::AnnounceSeq(s) => {
                out.push(T_ANNOUNCE_SEQ);
                put_varint(&mut out, *s);
            }
            Change::PutEscrow(e) => {
                out.push(T_PUT_ESCROW);
                put_bytes(&mut out, &codec::encode_escrow(e));
            }
            Change::DropEscrow(key) => {
                out.push(T_DROP_ESCROW);
                out.extend_from_slice(key);
            }
        }
    }
    put_varint(&mut out, kv.len() as u64);
    for (contract, key, value) in kv {
        put_kv(&mut out, contract, key, value.as_deref());
    }
    put_varint(&mut out, purchases.len() as u64);
    for (id, record) in purchases {
        out.extend_from_slice(id);
        put_bytes(&mut out, record);
    }
    Some(out)
}

fn put_kv(out: &mut Vec<u8>, contract: &str, key: &[u8], value: Option<&[u8]>) {
    put_bytes(out, contract.as_bytes());
    put_bytes(out, key);
    match value {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            put_bytes(out, v);
        }
    }
}

fn get_bytes<'a>(c: &mut Cursor<'a>, what: &str) -> Result<&'a [u8], Reason> {
    let n = c.varint(what)?;
    let n = usize::try_from(n).map_err(|_| format!("{what}: length {n} too large"))?;
    c.take(n, what)
}

fn get_idx(c: &mut Cursor, what: &str) -> Result<u32, Reason> {
    let v = c.varint(what)?;
    u32::try_from(v).map_err(|_| format!("{what}: {v} is not a member index"))
}

fn get_message(c: &mut Cursor, what: &str) -> Result<Message, Reason> {
    codec::decode_message(get_bytes(c, what)?).map_err(|e| format!("{what}: {e}"))
}

fn get_kv(c: &mut Cursor) -> Result<KvWrite, Reason> {
    let contract = String::from_utf8(get_bytes(c, "contract")?.to_vec()).map_err(|_| "contract name is not UTF-8")?;
    let key = get_bytes(c, "key")?.to_vec();
    let value = match c.u8("value flag")? {
        0 => None,
        1 => Some(get_bytes(c, "value")?.to_vec()),
        n => return Err(format!("value flag is {n}, expected 0 or 1")),
    };
    Ok((contract, key, value))
}

/// A count of items each at least one byte long: never more than the
/// bytes left, so a corrupt count cannot ask for a huge allocation.
fn get_count(c: &mut Cursor, what: &str, left: usize) -> Result<usize, Reason> {
    let n = c.varint(what)?;
    usize::try_from(n)
        .ok()
        .filter(|&n| n <= left)
        .ok_or_else(|| format!("{what}: {n} items in {left} bytes"))
}

/// The inverse of [`encode_body`]; a wallet's ID is the member at its index.
pub(crate) fn decode_body(bytes: &[u8], members: &[MemberId]) -> Result<Record, Reason> {
    let mut c = Cursor::new(bytes);
    let mut record = Record::default();
    let n = get_count(&mut c, "changes", bytes.len())?;
    for _ in 0..n {
        let change = match c.u8("change tag")? {
            tag @ (T_WALLET | T_TALLY) => {
                let idx = get_idx(&mut c, "wallet index")?;
                let id = members
                    .get(idx as usize)
                    .ok_or_else(|| format!("wallet index {idx} is past the membership's {}", members.len()))?;
                let wallet = codec::decode_wallet(*id, get_bytes(&mut c, "wallet")?)?;
                if tag == T_WALLET {
                    Change::Wallet { idx, wallet }
                } else {
                    Change::Tally { idx, wallet }
                }
            }
            T_MY_VOTE => {
                let requester_idx = get_idx(&mut c, "requester")?;
                let (version, vote) = codec::decode_my_vote(get_bytes(&mut c, "my vote")?)?;
                Change::MyVote {
                    requester_idx,
                    version,
                    vote,
                }
            }
            T_PUT_REQUEST => match get_message(&mut c, "request")? {
                Message::Request(r) => Change::PutRequest(Box::new(r)),
                other => return Err(format!("expected a request, found a {}", other.kind())),
            },
            T_DROP_REQUEST => Change::DropRequest(c.array("request id")?),
            T_PUT_VOTE => match get_message(&mut c, "vote")? {
                Message::Vote(v) => Change::PutVote(v),
                other => return Err(format!("expected a vote, found a {}", other.kind())),
            },
            T_DROP_VOTES => Change::DropVotes(c.array("request id")?),
            tag @ (T_PUT_CERT | T_RUN_PENDING) => {
                let idx = get_idx(&mut c, "index")?;
                let version = c.varint("version")?;
                let cert = match get_message(&mut c, "certificate")? {
                    Message::Certificate(cert) => cert,
                    other => return Err(format!("expected a certificate, found a {}", other.kind())),
                };
                if tag == T_PUT_CERT {
                    Change::PutCert { idx, version, cert }
                } else {
                    Change::RunPending { idx, version, cert }
                }
            }
            T_DROP_CERT => Change::DropCert {
                idx: get_idx(&mut c, "index")?,
                version: c.varint("version")?,
            },
            T_RUN_DONE => {
                let idx = get_idx(&mut c, "index")?;
                let version = c.varint("version")?;
                let (ok, body) = codec::decode_outcome(get_bytes(&mut c, "outcome")?)?;
                let n = get_count(&mut c, "contract writes", bytes.len())?;
                let mut writes = Vec::with_capacity(n);
                for _ in 0..n {
                    let (contract, key, value) = get_kv(&mut c)?;
                    writes.push(ContractWrite { contract, key, value });
                }
                Change::RunDone {
                    idx,
                    version,
                    ok,
                    body,
                    writes,
                }
            }
            T_RUNS_PRUNED => Change::RunsPruned {
                idx: get_idx(&mut c, "index")?,
                upto: c.varint("upto")?,
            },
            T_MARKS => {
                let idx = get_idx(&mut c, "index")?;
                let (settled, above) = codec::decode_marks(get_bytes(&mut c, "marks")?)?;
                Change::Marks { idx, settled, above }
            }
            T_ANNOUNCE => match get_message(&mut c, "announce")? {
                Message::Announce(a) => Change::Announce(a),
                other => return Err(format!("expected an announce, found a {}", other.kind())),
            },
            T_SHARE_SEQ => Change::ShareSeq(c.varint("share seq")?),
            T_ANNOUNCE_SEQ => Change::AnnounceSeq(c.varint("announce seq")?),
            T_PUT_ESCROW => {
                let e: Escrow = codec::decode_escrow(get_bytes(&mut c, "escrow")?)?;
                Change::PutEscrow(Box::new(e))
            }
            T_DROP_ESCROW => Change::DropEscrow(c.array("escrow key")?),
            tag => return Err(format!("unknown change tag {tag}")),
        };
        record.batch.push(change);
    }
    let n = get_count(&mut c, "kv writes", bytes.len())?;
    for _ in 0..n {
        record.kv.push(get_kv(&mut c)?);
    }
    let n = get_count(&mut c, "purchases", bytes.len())?;
    for _ in 0..n {
        let id = c.array("purchase id")?;
        record
            .purchases
            .push((id, get_bytes(&mut c, "purchase record")?.to_vec()));
    }
    c.finish("the record")?;
    Ok(record)
}

#[cfg(test)]
mod tests;
