//! The journal file on its own: what a reader makes of cut, garbled,
//! foreign and left-over records.

use super::*;
use wallance_core::msg::Vote;
use wallance_core::{Params, Signature, Wallet};

fn members() -> Vec<MemberId> {
    (1..=4u8).map(|i| MemberId([i; 32])).collect()
}

fn io() -> Arc<IoCounters> {
    Arc::new(IoCounters::default())
}

/// A small record whose content says which commit it is.
fn body(seq: u64) -> Vec<u8> {
    let mut w = Wallet::genesis(members()[1], &Params::default());
    w.version = seq;
    w.balance = seq * 7;
    let vote = Vote {
        voter: members()[2],
        request_id: [seq as u8; 32],
        remaining: seq,
        nonce: 3,
        sig: Signature([9; 64]),
    };
    let batch = [
        Change::Wallet { idx: 1, wallet: w },
        Change::PutVote(vote),
        Change::ShareSeq(seq),
    ];
    let kv = [("counter".to_string(), b"seq".to_vec(), Some(seq.to_le_bytes().to_vec()))];
    encode_body(&batch, &kv, &[([seq as u8; 32], b"{}".to_vec())]).unwrap()
}

const ID: [u8; 16] = [7; 16];

/// A journal with records `first..=last`, every third one lazy.
fn written(dir: &tempfile::TempDir, first: u64, last: u64) -> PathBuf {
    let path = dir.path().join("j");
    let mut j = Journal::open(path.clone(), ID, io()).unwrap();
    for seq in first..=last {
        if seq % 3 == 0 && seq != last {
            j.push_lazy(seq, &body(seq)).unwrap();
        } else {
            j.append_durable(seq, &body(seq)).unwrap();
        }
    }
    path
}

fn seqs(path: &Path, applied: u64) -> Vec<u64> {
    check(read(path, &ID, applied, &members()).unwrap())
}

/// The same, on a file's bytes.
fn seqs_in(bytes: &[u8], applied: u64) -> Vec<u64> {
    check(parse(bytes, &ID, applied, &members()).unwrap())
}

fn check(got: Vec<(u64, Record)>) -> Vec<u64> {
    for (seq, r) in &got {
        assert_eq!(*r, decode_body(&body(*seq), &members()).unwrap());
    }
    got.into_iter().map(|(s, _)| s).collect()
}

#[test]
fn records_come_back_in_order_above_the_applied_number() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(&dir, 1, 10);
    assert_eq!(seqs(&path, 0), (1..=10).collect::<Vec<_>>());
    assert_eq!(seqs(&path, 6), (7..=10).collect::<Vec<_>>());
    assert!(seqs(&path, 10).is_empty());
    assert!(
        seqs(&path, 50).is_empty(),
        "records at or below the applied number are skipped"
    );
    // No file: nothing to replay.
    assert!(seqs(&dir.path().join("none"), 0).is_empty());
}

#[test]
fn a_record_cut_anywhere_or_garbled_ends_the_chain_there() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(&dir, 1, 5);
    let good = std::fs::read(&path).unwrap();
    // Each record's content (header and body) and its end with padding.
    let mut spans = Vec::new();
    let mut at = 0;
    for (_, b) in chain(&good, &ID) {
        let pad = u16::from_le_bytes(good[at + 20..at + 22].try_into().unwrap()) as usize;
        spans.push((at + HEADER + b.len(), at + HEADER + b.len() + pad));
        at += HEADER + b.len() + pad;
    }
    assert_eq!(spans.len(), 5);
    assert!(spans.iter().any(|(c, e)| c < e), "some record is padded");
    let used = at;
    // The zeros after the records stand for the rest of the file.
    let mut good = good;
    good.truncate(used + 64);
    let mut checked = 0;
    // Every byte of the used part: zeroed from there on (a write that
    // never landed), flipped (a torn sector), or the file cut there.
    for k in 0..used {
        let intact = |n: usize| (1..=n as u64).collect::<Vec<_>>();
        let before_k = spans.iter().filter(|(content, _)| *content <= k).count();
        let mut zeroed = good.clone();
        zeroed[k..used].fill(0);
        assert_eq!(seqs_in(&zeroed, 0), intact(before_k), "zeroed from byte {k}");
        assert_eq!(seqs_in(&good[..k], 0), intact(before_k), "cut at byte {k}");
        let mut flipped = good.clone();
        flipped[k] ^= 0x5a;
        // A flipped padding byte changes nothing; any other ends the
        // chain at the record it is in.
        let in_pad = spans.iter().any(|(content, end)| (*content..*end).contains(&k));
        let expect = if in_pad {
            intact(5)
        } else {
            intact(spans.iter().filter(|(_, end)| *end <= k).count())
        };
        assert_eq!(seqs_in(&flipped, 0), expect, "flipped byte {k}");
        checked += 1;
    }
    assert!(checked > 5 * HEADER);
}

#[test]
fn garbage_after_the_last_record_is_ignored_and_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(&dir, 1, 4);
    let good = std::fs::read(&path).unwrap();
    let used = chain(&good, &ID).count();
    assert_eq!(used, 4);
    let mut end = 0;
    for (_, b) in chain(&good, &ID) {
        let pad = u16::from_le_bytes(good[end + 20..end + 22].try_into().unwrap()) as usize;
        end += HEADER + b.len() + pad;
    }
    let mut good = good;
    good.truncate(2 * end + 8192);
    let mut x = 0x1234_5678_9abc_def0u64;
    for round in 0..200 {
        let mut bytes = good.clone();
        let n = 1 + (round * 37) % 5000;
        for b in &mut bytes[end..end + n] {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        // Sometimes a plausible header: a length past the file, a huge pad.
        if round % 4 == 0 {
            bytes[end + 16..end + 20].copy_from_slice(&u32::MAX.to_le_bytes());
        }
        if round % 4 == 1 {
            bytes[end + 20..end + 22].copy_from_slice(&u16::MAX.to_le_bytes());
            bytes[end + 22..end + 30].copy_from_slice(&5u64.to_le_bytes());
        }
        assert_eq!(seqs_in(&bytes, 0), [1, 2, 3, 4], "round {round}");
        // And garbage from the very start: nothing.
        let mut bytes = bytes.clone();
        bytes[..end].copy_from_slice(&good[end..2 * end].iter().map(|b| b ^ 0xa5).collect::<Vec<_>>());
        assert!(seqs_in(&bytes, 0).is_empty());
    }
}

#[test]
fn a_new_pass_over_old_records_reads_only_the_new_pass() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let mut j = Journal::open(path.clone(), ID, io()).unwrap();
    // A long first pass, a checkpoint at 20, then a short second pass
    // over its start: the old records 10.. are still in the file after it.
    for seq in 1..=20 {
        j.append_durable(seq, &body(seq)).unwrap();
    }
    j.reset();
    for seq in 21..=23 {
        j.append_durable(seq, &body(seq)).unwrap();
    }
    assert_eq!(seqs(&path, 20), [21, 22, 23]);
    // Before the second pass's first record landed, the reader sees the
    // first pass, all at or below the checkpoint: nothing to replay.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..PAGE as usize].fill(0);
    let old = dir.path().join("old");
    std::fs::write(&old, &bytes).unwrap();
    assert!(seqs(&old, 20).is_empty());
    let mut bytes = std::fs::read(&path).unwrap();
    let first_pass = dir.path().join("first");
    let mut j = Journal::open(first_pass.clone(), ID, io()).unwrap();
    for seq in 1..=20 {
        j.append_durable(seq, &body(seq)).unwrap();
    }
    drop(j);
    bytes[..PAGE as usize].copy_from_slice(&std::fs::read(&first_pass).unwrap()[..PAGE as usize]);
    std::fs::write(&old, &bytes).unwrap();
    assert!(seqs(&old, 20).is_empty(), "the old chain holds nothing above 20");
}

#[test]
fn records_of_another_store_are_not_read_and_a_gap_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(&dir, 5, 8);
    assert!(
        read(&path, &[8; 16], 0, &members()).unwrap().is_empty(),
        "another journal id"
    );
    match read(&path, &ID, 2, &members()) {
        Err(ReadError::Gap { first: 5, applied: 2 }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(seqs(&path, 4), [5, 6, 7, 8]);
}

#[test]
fn a_valid_record_that_does_not_decode_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let mut j = Journal::open(path.clone(), ID, io()).unwrap();
    j.append_durable(1, &body(1)).unwrap();
    j.append_durable(2, &[1, 99]).unwrap();
    match read(&path, &ID, 0, &members()) {
        Err(ReadError::Corrupt { seq: 2, reason }) => assert!(reason.contains("tag 99"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // Every truncation of a body is an error, not a panic.
    let b = body(3);
    for k in 0..b.len() {
        assert!(decode_body(&b[..k], &members()).is_err(), "{k}");
    }
    let mut long = b.clone();
    long.push(0);
    assert!(decode_body(&long, &members()).is_err());
}

#[test]
fn synced_appends_end_on_a_page_and_the_journal_knows_when_it_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let counters = io();
    let mut j = Journal::open(dir.path().join("j"), ID, counters.clone()).unwrap();
    let created = counters.get();
    assert_eq!(created.bytes_written, JOURNAL_BYTES);
    assert_eq!(created.syncs, 2, "the file and its directory");
    j.push_lazy(1, &body(1)).unwrap();
    assert_eq!(counters.get(), created, "a lazy record stays in memory");
    j.append_durable(2, &body(2)).unwrap();
    let after = counters.get();
    assert_eq!(
        (after.syncs - created.syncs, after.bytes_written - created.bytes_written),
        (1, PAGE)
    );
    assert_eq!(j.offset, PAGE);
    // Lazy records pile up in memory, then are written unsynced.
    let before = counters.get();
    let mut seq = 3;
    while j.buf.len() < BUFFERED - 2 * body(seq).len() - 2 * HEADER {
        j.push_lazy(seq, &body(seq)).unwrap();
        seq += 1;
    }
    assert_eq!(counters.get(), before);
    j.push_lazy(seq, &body(seq)).unwrap();
    j.push_lazy(seq + 1, &body(seq + 1)).unwrap();
    let flushed = counters.get();
    assert_eq!(flushed.syncs, before.syncs);
    assert!(flushed.bytes_written >= before.bytes_written + BUFFERED as u64);
    assert!(j.fits(1000, true));
    assert!(!j.fits(JOURNAL_BYTES as usize, false));
    j.reset();
    assert!(j.fits(JOURNAL_BYTES as usize - HEADER - PAGE as usize, true));
    assert!(!j.fits(JOURNAL_BYTES as usize - HEADER - PAGE as usize + 1, true));
}
