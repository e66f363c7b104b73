//! A member's wallet: the only thing a node keeps per member.

use crate::crypto::{Hash, MemberId, sha256};
use crate::encode::{DecodeError, Reader, Writer};
use crate::params::Params;

/// The current version of one member's wallet.
///
/// `balance`, `state`, `version`, `shares_at_state` and `received_at_state`
/// are fixed by the member's last committed purchase, identically on every
/// honest node. `shares_seen` and `received` are this node's running tallies
/// of what it has credited since (sensor shares, and rewards or payments
/// from certificates). A request names how far it counts them
/// (`shares_upto`, `received_upto`), so every honest voter computes the same
/// remaining balance whatever it has seen beyond that point (hole 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wallet {
    pub id: MemberId,
    /// Purchases committed so far.
    pub version: u64,
    /// Hash chained from the previous State and the committed decision.
    pub state: Hash,
    /// Units left after the last committed purchase.
    pub balance: u64,
    /// Sensor shares counted into `balance`.
    pub shares_at_state: u64,
    /// Cumulative rewards and payments counted into `balance`.
    pub received_at_state: u64,
    /// Highest share number credited here with no gap before it.
    pub shares_seen: u64,
    /// Rewards and payments credited here, cumulative.
    pub received: u64,
    /// Certificates settled (their rewards and payment applied): every
    /// version up to `settled` ...
    pub settled: u64,
    /// ... and these above it, out of order (bounded by the certificates a
    /// node keeps per wallet).
    pub settled_above: Vec<u64>,
}

impl Wallet {
    /// A member's first wallet. The genesis State binds the ID so two
    /// wallets never share a State.
    pub fn genesis(id: MemberId, params: &Params) -> Self {
        Self {
            id,
            version: 0,
            state: sha256(&[b"wallance/genesis/v1", &id.0]),
            balance: params.initial_units,
            shares_at_state: 0,
            received_at_state: 0,
            shares_seen: 0,
            received: 0,
            settled: 0,
            settled_above: Vec::new(),
        }
    }

    /// What the member can spend now, as this node sees it.
    pub fn spendable(&self, params: &Params) -> u64 {
        self.balance
            .saturating_add(params.share_credit(self.shares_at_state, self.shares_seen.max(self.shares_at_state)))
            .saturating_add(self.received.saturating_sub(self.received_at_state))
    }

    /// The balance a request counting shares up to `shares_upto` and credits
    /// up to `received_upto` has before paying, or `None` when the claim goes
    /// back before the last commit.
    pub fn available_for(&self, params: &Params, shares_upto: u64, received_upto: u64) -> Option<u64> {
        if shares_upto < self.shares_at_state || received_upto < self.received_at_state {
            return None;
        }
        Some(
            self.balance
                .saturating_add(params.share_credit(self.shares_at_state, shares_upto))
                .saturating_add(received_upto - self.received_at_state),
        )
    }

    pub fn is_settled(&self, version: u64) -> bool {
        is_marked(self.settled, &self.settled_above, version)
    }

    /// Marks a certificate's effects applied: see [`mark`].
    pub fn mark_settled(&mut self, version: u64) -> Mark {
        mark(&mut self.settled, &mut self.settled_above, version)
    }

    /// Canonical encoding: what the State chain and the digests hash. The
    /// store keeps wallets in its own compact format (see `wallance-store`).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(&self.id.0)
            .u64(self.version)
            .raw(&self.state)
            .u64(self.balance)
            .u64(self.shares_at_state)
            .u64(self.received_at_state)
            .u64(self.shares_seen)
            .u64(self.received)
            .u64(self.settled)
            .u8(u8::try_from(self.settled_above.len()).unwrap_or(u8::MAX));
        for v in self.settled_above.iter().take(255) {
            w.u64(*v);
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let id = MemberId(r.array()?);
        let version = r.u64()?;
        let state = r.array()?;
        let balance = r.u64()?;
        let shares_at_state = r.u64()?;
        let received_at_state = r.u64()?;
        let shares_seen = r.u64()?;
        let received = r.u64()?;
        let settled = r.u64()?;
        let n = r.u8()?;
        let settled_above = (0..n).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
        r.finish()?;
        Ok(Self {
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
}

/// Versions settled out of order that a node holds at most per wallet. A
/// node only settles versions it has proof of (a quorum certificate), so
/// the list holds the commits it learned of ahead of a gap; past this bound
/// it settles nothing more of that wallet until the gap fills (a catch-up
/// fetches the missing certificates), so memory stays bounded whatever
/// peers send.
pub const MAX_SETTLED_ABOVE: usize = 256;

/// What marking a version settled did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Newly settled: apply its payment and reward now.
    New,
    /// Settled before: apply nothing.
    Already,
    /// Too many versions above the gap: not settled, try again later.
    Full,
}

/// Settlement marks of one wallet that a node does not keep (a light node
/// still settles every certificate once, whoever the requester is).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks {
    pub settled: u64,
    pub above: Vec<u64>,
}

impl Marks {
    pub fn is_settled(&self, version: u64) -> bool {
        is_marked(self.settled, &self.above, version)
    }
    pub fn mark(&mut self, version: u64) -> Mark {
        mark(&mut self.settled, &mut self.above, version)
    }
}

fn is_marked(settled: u64, above: &[u64], version: u64) -> bool {
    version <= settled || above.binary_search(&version).is_ok()
}

/// Marks `version` settled: every version up to `settled`, plus the sorted
/// list `above`. The floor advances as gaps fill.
pub fn mark(settled: &mut u64, above: &mut Vec<u64>, version: u64) -> Mark {
    if is_marked(*settled, above, version) {
        return Mark::Already;
    }
    if version != *settled + 1 && above.len() >= MAX_SETTLED_ABOVE {
        return Mark::Full;
    }
    let at = above.binary_search(&version).unwrap_or_else(|i| i);
    above.insert(at, version);
    let contiguous = above
        .iter()
        .enumerate()
        .take_while(|(i, v)| **v == *settled + 1 + *i as u64)
        .count();
    if contiguous > 0 {
        *settled += contiguous as u64;
        above.drain(..contiguous);
    }
    Mark::New
}

/// The State that follows `prev` once `decision` commits. It hashes only
/// what every honest node agrees on (hole 4): the previous State and the
/// decision (request identity and remaining balance), never the votes seen.
pub fn next_state(prev: &Hash, decision: &Hash) -> Hash {
    sha256(&[b"wallance/state/v1", prev, decision])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_genesis_wallet_encoding() {
        let w = Wallet::genesis(MemberId([7; 32]), &Params::default());
        let bytes = w.encode();
        assert_eq!(bytes.len(), 32 + 8 + 32 + 8 * 6 + 1);
        assert_eq!(
            hex::encode(&bytes),
            // id, version 0, State = SHA-256("wallance/genesis/v1" || id)
            // (checked with Python's hashlib), then six zero counters and
            // an empty list of out-of-order settled versions.
            concat!(
                "0707070707070707070707070707070707070707070707070707070707070707",
                "0000000000000000",
                "d69cbccbc1cd8c6bea6a74e54002db7048a2cf4330bc68ee6a21c9b22eb651db",
                "0000000000000000",
                "0000000000000000",
                "0000000000000000",
                "0000000000000000",
                "0000000000000000",
                "0000000000000000",
                "00"
            )
        );
        assert_eq!(Wallet::decode(&bytes).unwrap(), w);
    }

    #[test]
    fn settling_out_of_order_advances_the_floor() {
        let mut w = Wallet::genesis(MemberId([1; 32]), &Params::default());
        assert_eq!(w.mark_settled(2), Mark::New);
        assert_eq!(w.mark_settled(2), Mark::Already);
        assert_eq!((w.settled, w.settled_above.clone()), (0, vec![2]));
        assert_eq!(w.mark_settled(1), Mark::New);
        assert_eq!((w.settled, w.settled_above.len()), (2, 0));
    }

    #[test]
    fn versions_above_a_gap_are_bounded() {
        let mut m = Marks::default();
        for v in 0..MAX_SETTLED_ABOVE as u64 {
            assert_eq!(m.mark(10 + v), Mark::New);
        }
        assert_eq!(m.mark(5_000), Mark::Full);
        assert!(!m.is_settled(5_000));
        // The gap itself can always be filled, and the floor then advances.
        for v in 1..10 {
            assert_eq!(m.mark(v), Mark::New);
        }
        assert_eq!((m.settled, m.above.len()), (9 + MAX_SETTLED_ABOVE as u64, 0));
        assert_eq!(m.mark(5_000), Mark::New);
    }

    #[test]
    fn truncated_wallet_is_an_error() {
        let bytes = Wallet::genesis(MemberId([1; 32]), &Params::default()).encode();
        for n in 0..bytes.len() {
            assert!(Wallet::decode(&bytes[..n]).is_err());
        }
    }
}
