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
        version <= self.settled || self.settled_above.contains(&version)
    }

    /// Marks a certificate's effects applied; returns false if they already were.
    pub fn mark_settled(&mut self, version: u64) -> bool {
        if self.is_settled(version) {
            return false;
        }
        self.settled_above.push(version);
        self.settled_above.sort_unstable();
        while self.settled_above.first() == Some(&(self.settled + 1)) {
            self.settled_above.remove(0);
            self.settled += 1;
        }
        true
    }

    /// Canonical encoding (also the store's value format).
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
        assert!(w.mark_settled(2));
        assert!(!w.mark_settled(2));
        assert_eq!((w.settled, w.settled_above.clone()), (0, vec![2]));
        assert!(w.mark_settled(1));
        assert_eq!((w.settled, w.settled_above.len()), (2, 0));
    }

    #[test]
    fn truncated_wallet_is_an_error() {
        let bytes = Wallet::genesis(MemberId([1; 32]), &Params::default()).encode();
        for n in 0..bytes.len() {
            assert!(Wallet::decode(&bytes[..n]).is_err());
        }
    }
}
