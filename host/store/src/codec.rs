//! The store's own value formats: compact, not canonical.
//!
//! Messages (requests, votes, certificates, announces) are stored in their
//! wire encoding, which the core already checks. Wallets are the bulk of the
//! file (one per member, millions of them), so they get a denser format
//! than `Wallet::encode`: no member ID (the membership given to
//! [`Store::open`](crate::Store::open) maps index to ID), no State when it is
//! still the genesis State, and LEB128 varints for the counters, with the
//! running tallies stored as the difference from their committed value.
//! Every decoder rejects truncated, overlong or trailing input with a reason,
//! never a panic.

use wallance_core::msg::Vote;
use wallance_core::store_model::Escrow;
use wallance_core::{Hash, MemberId, Message, Params, Wallet};

/// Why a stored value could not be decoded.
pub(crate) type Reason = String;

/// Set when the State is the genesis State of the member, and omitted.
const FLAG_GENESIS_STATE: u8 = 1;
const KNOWN_FLAGS: u8 = FLAG_GENESIS_STATE;

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads values off a stored byte string.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Reason> {
        if self.bytes.len() < n {
            return Err(format!("truncated {what}: needs {n} bytes, {} left", self.bytes.len()));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, Reason> {
        Ok(self.take(1, what)?[0])
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], Reason> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn varint(&mut self, what: &str) -> Result<u64, Reason> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8(what)?;
            let bits = u64::from(b & 0x7f);
            // The tenth byte holds bit 63 only.
            if i == 9 && bits > 1 {
                return Err(format!("{what}: varint overflows 64 bits"));
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("{what}: varint longer than 10 bytes"))
    }

    pub(crate) fn rest(self) -> &'a [u8] {
        self.bytes
    }

    pub(crate) fn finish(self, what: &str) -> Result<(), Reason> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(format!("{} trailing bytes after {what}", self.bytes.len()))
        }
    }
}

/// Small signed differences become small unsigned numbers.
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// `value - base` as a zigzag varint. Wrapping arithmetic makes this a
/// bijection for every pair, so no wallet, however odd, fails to round-trip.
fn put_delta(out: &mut Vec<u8>, base: u64, value: u64) {
    put_varint(out, zigzag(value.wrapping_sub(base) as i64));
}

fn get_delta(c: &mut Cursor, base: u64, what: &str) -> Result<u64, Reason> {
    Ok(base.wrapping_add(unzigzag(c.varint(what)?) as u64))
}

/// The State a member's wallet starts from. `Wallet::genesis` only reads the
/// parameters for the balance, so the default ones give the right State.
pub(crate) fn genesis_state(id: &MemberId) -> Hash {
    Wallet::genesis(*id, &Params::default()).state
}

/// Compact wallet value. Layout (see README):
/// `flags u8 | version v | [state 32 unless genesis] | balance v |
///  shares_at_state v | received_at_state v | shares_seen Δ | received Δ |
///  settled Δversion | n v | settled_above Δ...`
pub(crate) fn encode_wallet(w: &Wallet) -> Vec<u8> {
    let mut out = Vec::with_capacity(80);
    // Only a wallet that never committed a purchase can still hold its
    // genesis State, so only those pay for the hash.
    let genesis = w.version == 0 && w.state == genesis_state(&w.id);
    out.push(if genesis { FLAG_GENESIS_STATE } else { 0 });
    put_varint(&mut out, w.version);
    if !genesis {
        out.extend_from_slice(&w.state);
    }
    put_varint(&mut out, w.balance);
    put_varint(&mut out, w.shares_at_state);
    put_varint(&mut out, w.received_at_state);
    put_delta(&mut out, w.shares_at_state, w.shares_seen);
    put_delta(&mut out, w.received_at_state, w.received);
    put_delta(&mut out, w.version, w.settled);
    put_versions_above(&mut out, w.settled, &w.settled_above);
    out
}

/// `count v | zz differences from the previous (the first from `base`)`:
/// a wallet's `settled_above`, or the versions of a light node's marks.
fn put_versions_above(out: &mut Vec<u8>, base: u64, versions: &[u64]) {
    put_varint(out, versions.len() as u64);
    let mut prev = base;
    for v in versions {
        put_delta(out, prev, *v);
        prev = *v;
    }
}

fn get_versions_above(c: &mut Cursor, base: u64, what: &str) -> Result<Vec<u64>, Reason> {
    let n = c.varint(&format!("{what} count"))?;
    // Each entry takes at least one byte: refuse counts the value cannot hold
    // before allocating for them.
    if n > c.bytes.len() as u64 {
        return Err(format!("{what} count {n} exceeds the {} bytes left", c.bytes.len()));
    }
    let mut versions = Vec::with_capacity(n as usize);
    let mut prev = base;
    for _ in 0..n {
        prev = get_delta(c, prev, what)?;
        versions.push(prev);
    }
    Ok(versions)
}

pub(crate) fn decode_wallet(id: MemberId, bytes: &[u8]) -> Result<Wallet, Reason> {
    let mut c = Cursor::new(bytes);
    let flags = c.u8("flags")?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(format!("unknown wallet flags {flags:#04x}"));
    }
    let version = c.varint("version")?;
    let state = if flags & FLAG_GENESIS_STATE != 0 {
        if version != 0 {
            return Err("genesis State flag on a wallet past version 0".into());
        }
        genesis_state(&id)
    } else {
        c.array("state")?
    };
    let balance = c.varint("balance")?;
    let shares_at_state = c.varint("shares_at_state")?;
    let received_at_state = c.varint("received_at_state")?;
    let shares_seen = get_delta(&mut c, shares_at_state, "shares_seen")?;
    let received = get_delta(&mut c, received_at_state, "received")?;
    let settled = get_delta(&mut c, version, "settled")?;
    let settled_above = get_versions_above(&mut c, settled, "settled_above")?;
    c.finish("the wallet")?;
    Ok(Wallet {
        id,
        version,
        state,
        balance,
        shares_at_state,
        received_at_state,
        shares_seen,
        received,
        settled,
        settled_above,
    })
}

/// A message in its wire encoding; `None` when a field is over its limit.
pub(crate) fn encode_message(msg: &Message) -> Option<Vec<u8>> {
    msg.encode()
}

pub(crate) fn decode_message(bytes: &[u8]) -> Result<Message, Reason> {
    Message::decode(bytes).map_err(|e| e.to_string())
}

/// `version u64 LE | vote message`.
pub(crate) fn encode_my_vote(version: u64, vote: &Vote) -> Vec<u8> {
    let mut out = version.to_le_bytes().to_vec();
    // A vote has no variable fields, so its encoding cannot fail.
    out.extend(Message::Vote(*vote).encode().unwrap_or_default());
    out
}

pub(crate) fn decode_my_vote(bytes: &[u8]) -> Result<(u64, Vote), Reason> {
    let mut c = Cursor::new(bytes);
    let version = u64::from_le_bytes(c.array("version")?);
    match decode_message(c.rest())? {
        Message::Vote(v) => Ok((version, v)),
        other => Err(format!("expected a vote, found a {}", other.kind())),
    }
}

/// `ok u8 (0 or 1) | body UTF-8`.
pub(crate) fn encode_outcome(ok: bool, body: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + body.len());
    out.push(u8::from(ok));
    out.extend_from_slice(body.as_bytes());
    out
}

pub(crate) fn decode_outcome(bytes: &[u8]) -> Result<(bool, String), Reason> {
    let mut c = Cursor::new(bytes);
    let ok = match c.u8("ok")? {
        0 => false,
        1 => true,
        b => return Err(format!("ok flag is {b}, not 0 or 1")),
    };
    let body = String::from_utf8(c.rest().to_vec()).map_err(|_| "body is not UTF-8")?;
    Ok((ok, body))
}

/// `floor u64 LE`: finished runs of the requester at or below it were
/// pruned.
pub(crate) fn encode_run_floor(floor: u64) -> [u8; 8] {
    floor.to_le_bytes()
}

pub(crate) fn decode_run_floor(bytes: &[u8]) -> Result<u64, Reason> {
    let mut c = Cursor::new(bytes);
    let floor = u64::from_le_bytes(c.array("run floor")?);
    c.finish("the run floor")?;
    Ok(floor)
}

/// An open escrow: `purchase 32 | requester v | version v | provider v |
/// price v | deadline v | verdict u8 (0 open, 1 refunded, 2 paid) |
/// has_vote u8 | vote message (if any)`.
pub(crate) fn encode_escrow(e: &Escrow) -> Vec<u8> {
    let mut out = Vec::with_capacity(80);
    out.extend_from_slice(&e.purchase);
    for v in [
        u64::from(e.requester_idx),
        e.version,
        u64::from(e.provider_idx),
        e.price,
        e.deadline_ms,
    ] {
        put_varint(&mut out, v);
    }
    out.push(match e.verdict {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    });
    match &e.my_vote {
        None => out.push(0),
        Some(vote) => {
            out.push(1);
            out.extend(Message::Vote(*vote).encode().unwrap_or_default());
        }
    }
    out
}

pub(crate) fn decode_escrow(bytes: &[u8]) -> Result<Escrow, Reason> {
    let mut c = Cursor::new(bytes);
    let purchase = c.array("purchase")?;
    let idx = |c: &mut Cursor, what: &str| -> Result<u32, Reason> {
        u32::try_from(c.varint(what)?).map_err(|_| format!("{what} is not a member index"))
    };
    let requester_idx = idx(&mut c, "requester")?;
    let version = c.varint("version")?;
    let provider_idx = idx(&mut c, "provider")?;
    let price = c.varint("price")?;
    let deadline_ms = c.varint("deadline")?;
    let verdict = match c.u8("verdict")? {
        0 => None,
        1 => Some(false),
        2 => Some(true),
        n => return Err(format!("verdict is {n}, expected 0, 1 or 2")),
    };
    let my_vote = match c.u8("has_vote")? {
        0 => {
            c.finish("the escrow")?;
            None
        }
        1 => match decode_message(c.rest())? {
            Message::Vote(v) => Some(v),
            other => return Err(format!("expected a vote, found a {}", other.kind())),
        },
        n => return Err(format!("has_vote is {n}, expected 0 or 1")),
    };
    Ok(Escrow {
        purchase,
        requester_idx,
        version,
        provider_idx,
        price,
        deadline_ms,
        my_vote,
        verdict,
    })
}

/// A light node's settlement marks of a wallet it does not keep:
/// `settled v | count v | above: zz differences from the previous (the
/// first from settled)`, the layout of a wallet's `settled_above`.
pub(crate) fn encode_marks(settled: u64, above: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + above.len());
    put_varint(&mut out, settled);
    put_versions_above(&mut out, settled, above);
    out
}

pub(crate) fn decode_marks(bytes: &[u8]) -> Result<(u64, Vec<u64>), Reason> {
    let mut c = Cursor::new(bytes);
    let settled = c.varint("settled")?;
    let above = get_versions_above(&mut c, settled, "above")?;
    c.finish("the marks")?;
    Ok((settled, above))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn wallet_strategy() -> impl Strategy<Value = Wallet> {
        (
            any::<[u8; 32]>(),
            any::<u64>(),
            any::<[u8; 32]>(),
            any::<[u64; 7]>(),
            proptest::collection::vec(any::<u64>(), 0..40),
            any::<bool>(),
        )
            .prop_map(|(id, version, state, n, above, genesis)| {
                let id = MemberId(id);
                Wallet {
                    id,
                    version: if genesis { 0 } else { version },
                    state: if genesis { genesis_state(&id) } else { state },
                    balance: n[0],
                    shares_at_state: n[1],
                    received_at_state: n[2],
                    shares_seen: n[3],
                    received: n[4],
                    settled: n[5],
                    settled_above: above,
                }
            })
    }

    proptest! {
        #[test]
        fn wallet_round_trips(w in wallet_strategy()) {
            let bytes = encode_wallet(&w);
            prop_assert_eq!(decode_wallet(w.id, &bytes).unwrap(), w);
        }

        #[test]
        fn truncated_wallet_is_an_error_not_a_panic(w in wallet_strategy()) {
            let bytes = encode_wallet(&w);
            for n in 0..bytes.len() {
                prop_assert!(decode_wallet(w.id, &bytes[..n]).is_err());
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_wallet(MemberId([3; 32]), &bytes);
            let _ = decode_my_vote(&bytes);
            let _ = decode_outcome(&bytes);
            let _ = decode_run_floor(&bytes);
            let _ = decode_marks(&bytes);
        }

        #[test]
        fn marks_round_trip(settled in any::<u64>(), above in proptest::collection::vec(any::<u64>(), 0..40)) {
            let bytes = encode_marks(settled, &above);
            prop_assert_eq!(decode_marks(&bytes).unwrap(), (settled, above));
        }

        #[test]
        fn truncated_or_extended_marks_are_errors(
            settled in any::<u64>(),
            above in proptest::collection::vec(any::<u64>(), 0..40),
        ) {
            let bytes = encode_marks(settled, &above);
            for n in 0..bytes.len() {
                prop_assert!(decode_marks(&bytes[..n]).is_err());
            }
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert!(decode_marks(&longer).unwrap_err().contains("trailing"));
        }

        #[test]
        fn run_floor_round_trips(floor in any::<u64>()) {
            prop_assert_eq!(decode_run_floor(&encode_run_floor(floor)).unwrap(), floor);
        }

        #[test]
        fn varint_round_trips(v in any::<u64>()) {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut c = Cursor::new(&out);
            prop_assert_eq!(c.varint("v").unwrap(), v);
            prop_assert!(c.finish("v").is_ok());
        }
    }

    #[test]
    fn varint_rejects_overflow_and_overlong() {
        let eleven = [0x80u8; 10].iter().chain(&[0]).copied().collect::<Vec<_>>();
        assert!(Cursor::new(&eleven).varint("x").is_err());
        let mut too_big = vec![0xffu8; 9];
        too_big.push(0x02);
        assert!(Cursor::new(&too_big).varint("x").unwrap_err().contains("overflow"));
    }

    #[test]
    fn short_or_long_run_floor_is_an_error() {
        let bytes = encode_run_floor(7);
        for n in 0..bytes.len() {
            let err = decode_run_floor(&bytes[..n]).unwrap_err();
            assert!(err.contains("truncated run floor"), "{err}");
        }
        let err = decode_run_floor(&[0; 9]).unwrap_err();
        assert!(err.contains("trailing"), "{err}");
    }

    #[test]
    fn marks_rows_are_small_and_reject_impossible_counts() {
        // settled 1 000 (2 bytes), two versions just above it.
        assert_eq!(encode_marks(1_000, &[1_002, 1_005]), vec![0xe8, 0x07, 2, 4, 6]);
        assert_eq!(encode_marks(0, &[]), vec![0, 0]);
        let err = decode_marks(&[5, 0x7f]).unwrap_err();
        assert!(err.contains("above count 127 exceeds"), "{err}");
    }

    #[test]
    fn vote_rows_have_the_sizes_the_readme_gives() {
        let vote = Vote {
            voter: MemberId([1; 32]),
            request_id: [2; 32],
            remaining: 3,
            nonce: 4,
            sig: wallance_core::Signature([5; 64]),
        };
        let row = encode_my_vote(9, &vote);
        assert_eq!(row.len(), 8 + 145);
        assert_eq!(decode_my_vote(&row).unwrap(), (9, vote));
    }

    #[test]
    fn typical_wallet_is_small() {
        // A member who bought 40 times, earned shares and payments: the
        // figures the README quotes for the value size.
        let w = Wallet {
            id: MemberId([9; 32]),
            version: 40,
            state: [0xab; 32],
            balance: 57_300_000,
            shares_at_state: 120_000,
            received_at_state: 830_000_000,
            shares_seen: 120_050,
            received: 830_400_000,
            settled: 40,
            settled_above: vec![],
        };
        let bytes = encode_wallet(&w);
        assert_eq!(bytes.len(), 1 + 1 + 32 + 4 + 3 + 5 + 1 + 3 + 1 + 1);
        let genesis = Wallet::genesis(MemberId([9; 32]), &Params::default());
        // flags, version, balance (0 by default), five counters, count.
        assert_eq!(encode_wallet(&genesis).len(), 9);
    }
}
