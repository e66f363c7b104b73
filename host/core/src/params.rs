//! Protocol parameters (the paper's Table I) and the membership.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::crypto::{Hash, MemberId, sha256};

/// Money is counted in integer units (hole 1): 1 DCoin = 1 000 000 units, so
/// a share worth 0.2 DCoin is exactly 200 000 units.
pub const UNITS_PER_COIN: u64 = 1_000_000;

/// Every parameter of Table I and the bounds the paper left open.
/// All nodes of a network must use the same values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// Quorum: strictly more than `threshold_num / threshold_den` of the
    /// members' weight must vote identically (paper: 2/3).
    pub threshold_num: u64,
    pub threshold_den: u64,
    /// LWPoW difficulty in zero nibbles for requests (paper: 1).
    pub difficulty: u8,
    /// LWPoW difficulty for votes (paper: the same as requests).
    pub vote_difficulty: u8,
    /// Shares that earn one DCoin (paper: 5).
    pub dcoin_rate: u64,
    /// The voter reward of one purchase (paper: 2 DCoin per voter, created
    /// at each commit). Here the requester pays it on top of the price, and
    /// it goes to one member drawn from the request id
    /// ([`Membership::reward_recipient`]): purchases never mint money.
    pub reward_units: u64,
    /// Units every wallet starts with.
    pub initial_units: u64,
    /// A request (and its votes) expires this long after its time.
    pub request_ttl_ms: u64,
    /// How far a request's time may be ahead of a voter's clock.
    pub max_clock_skew_ms: u64,
    /// The requester re-sends a pending request this often; voters answer a
    /// repeated request by re-sending their vote, which repairs lost votes.
    pub retry_ms: u64,
    /// The consensus period of the paper. Votes are checked as they arrive
    /// (hole 9); this timer only drives expiry.
    pub consensus_period_ms: u64,
    /// Anti-entropy: each node announces a digest of its wallets this often.
    pub sync_interval_ms: u64,
    /// Bounds on every queue (hole 7).
    pub max_pending_requests: usize,
    pub max_pending_decisions: usize,
    pub max_buffered_shares_per_member: u64,
    /// Certificates kept per wallet for peers that are catching up.
    pub certs_kept_per_wallet: usize,
    /// Own shares kept for re-sending to peers that missed them.
    pub own_shares_kept: usize,
    /// A purchase's price is held in escrow until a quorum settles it by a
    /// verdict (docs/protocol.md, Pay for service rendered). A member that
    /// has seen no outcome from the provider this long after the request's
    /// time votes for the refund; the provider runs a purchase only in the
    /// first half of this window and refunds it after.
    pub outcome_timeout_ms: u64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            threshold_num: 2,
            threshold_den: 3,
            difficulty: 1,
            vote_difficulty: 1,
            dcoin_rate: 5,
            reward_units: 2 * UNITS_PER_COIN,
            initial_units: 0,
            request_ttl_ms: 60_000,
            max_clock_skew_ms: 30_000,
            retry_ms: 1_000,
            consensus_period_ms: 2_000,
            sync_interval_ms: 5_000,
            max_pending_requests: 4_096,
            max_pending_decisions: 16_384,
            max_buffered_shares_per_member: 1_024,
            certs_kept_per_wallet: 8,
            own_shares_kept: 4_096,
            outcome_timeout_ms: 60_000,
        }
    }
}

impl Params {
    /// Units credited for the shares numbered `from+1 ..= to`. Computed from
    /// the running total so that no fraction is ever lost or counted twice:
    /// the sum over consecutive ranges equals one range over their union.
    pub fn share_credit(&self, from: u64, to: u64) -> u64 {
        debug_assert!(from <= to);
        let total = |n: u64| (u128::from(n) * u128::from(UNITS_PER_COIN)) / u128::from(self.dcoin_rate);
        u64::try_from(total(to) - total(from)).unwrap_or(u64::MAX)
    }

    /// What a purchase at `price` takes from the requester: the price for
    /// the provider plus the voter reward. Rewards are paid by the requester,
    /// never created (only sensor shares create DCoin).
    pub fn cost(&self, price: u64) -> Option<u64> {
        price.checked_add(self.reward_units)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.threshold_den == 0 || self.threshold_num == 0 || self.threshold_num >= self.threshold_den {
            return Err("threshold must be a fraction strictly between 0 and 1".into());
        }
        // Two quorums must share more than a third of the weight, so that an
        // honest member is in both while Byzantine members hold less than a
        // third: any threshold below 2/3 lets them commit two successors of
        // one State.
        if 3 * u128::from(self.threshold_num) < 2 * u128::from(self.threshold_den) {
            return Err("threshold below 2/3 lets Byzantine members below a third commit a double spend".into());
        }
        if self.dcoin_rate == 0 {
            return Err("dcoin_rate must be at least 1".into());
        }
        if self.difficulty > 16 || self.vote_difficulty > 16 {
            return Err("difficulty above 16 nibbles cannot be solved by an IoT node".into());
        }
        if self.request_ttl_ms == 0 || self.retry_ms == 0 || self.sync_interval_ms == 0 {
            return Err("request_ttl_ms, retry_ms and sync_interval_ms must be positive".into());
        }
        if self.max_pending_requests == 0 || self.max_pending_decisions == 0 {
            return Err("queue bounds must be positive".into());
        }
        // The provider's half of the window must leave room for a run and a
        // few re-sends of its outcome before members vote for the refund.
        if self.outcome_timeout_ms < 4 * self.retry_ms {
            return Err("outcome_timeout_ms must be at least 4 retry_ms".into());
        }
        Ok(())
    }
}

/// The configured members, in a fixed order that all nodes share. A member's
/// index in this list is its short name in certificates and in the store.
/// Cheap to clone: a simulator of 10 000 nodes shares one list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    inner: Arc<MembershipInner>,
}

#[derive(Debug, PartialEq, Eq)]
struct MembershipInner {
    members: Vec<MemberId>,
    weights: Vec<u64>,
    index: HashMap<MemberId, u32>,
    /// Running totals of the weights: `cumulative[i]` = weights of members `0..=i`.
    cumulative: Vec<u64>,
    total_weight: u64,
}

impl Membership {
    /// Every member with weight 1.
    pub fn new(members: Vec<MemberId>) -> Result<Self, String> {
        let weights = vec![1; members.len()];
        Self::weighted(members, weights)
    }

    pub fn weighted(members: Vec<MemberId>, weights: Vec<u64>) -> Result<Self, String> {
        if members.is_empty() {
            return Err("membership is empty".into());
        }
        if members.len() != weights.len() {
            return Err("one weight per member".into());
        }
        if u32::try_from(members.len()).is_err() {
            return Err("too many members".into());
        }
        let mut index = HashMap::with_capacity(members.len());
        for (i, m) in members.iter().enumerate() {
            if index.insert(*m, i as u32).is_some() {
                return Err(format!("member {m} is listed twice"));
            }
        }
        if weights.contains(&0) {
            return Err("a member's weight must be positive".into());
        }
        let mut cumulative = Vec::with_capacity(weights.len());
        let mut total_weight = 0u64;
        for w in &weights {
            total_weight = total_weight.checked_add(*w).ok_or("weights overflow")?;
            cumulative.push(total_weight);
        }
        Ok(Self {
            inner: Arc::new(MembershipInner {
                members,
                weights,
                index,
                cumulative,
                total_weight,
            }),
        })
    }

    pub fn len(&self) -> usize {
        self.inner.members.len()
    }
    pub fn is_empty(&self) -> bool {
        self.inner.members.is_empty()
    }
    pub fn members(&self) -> &[MemberId] {
        &self.inner.members
    }
    pub fn index_of(&self, id: &MemberId) -> Option<u32> {
        self.inner.index.get(id).copied()
    }
    pub fn id(&self, idx: u32) -> Option<MemberId> {
        self.inner.members.get(idx as usize).copied()
    }
    pub fn weight(&self, idx: u32) -> u64 {
        self.inner.weights.get(idx as usize).copied().unwrap_or(0)
    }
    pub fn total_weight(&self) -> u64 {
        self.inner.total_weight
    }

    /// True when `weight` is strictly more than the threshold of the total
    /// configured weight (hole 10: never of the members a node has seen).
    pub fn is_quorum(&self, params: &Params, weight: u64) -> bool {
        u128::from(weight) * u128::from(params.threshold_den)
            > u128::from(self.inner.total_weight) * u128::from(params.threshold_num)
    }

    /// The member a purchase's voter reward goes to: drawn from the request
    /// id, with probability proportional to weight. Every node computes the
    /// same member from the request alone, so no one (a provider, whoever
    /// assembles a certificate) chooses who is rewarded, and nothing can be
    /// rewarded twice or to a superset.
    pub fn reward_recipient(&self, request_id: &Hash) -> u32 {
        let h = sha256(&[b"wallance/reward/v1", request_id]);
        let draw = u64::from_le_bytes(h[..8].try_into().expect("8 bytes")) % self.inner.total_weight;
        self.inner.cumulative.partition_point(|c| *c <= draw) as u32
    }

    /// The smallest number of equal-weight votes that is a quorum.
    pub fn quorum_count(&self, params: &Params) -> usize {
        (1..=self.len())
            .find(|n| self.is_quorum(params, *n as u64))
            .unwrap_or(self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn members(n: usize) -> Membership {
        Membership::new(
            (0..n)
                .map(|i| {
                    let mut b = [0u8; 32];
                    b[..8].copy_from_slice(&(i as u64).to_le_bytes());
                    MemberId(b)
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn quorum_is_strictly_more_than_two_thirds() {
        let p = Params::default();
        assert_eq!(members(3).quorum_count(&p), 3);
        assert_eq!(members(4).quorum_count(&p), 3);
        // The paper (and its code) took 5 of 8 = 62.5 %; we need 6.
        assert_eq!(members(8).quorum_count(&p), 6);
        assert_eq!(members(9).quorum_count(&p), 7);
        assert_eq!(members(48).quorum_count(&p), 33);
        assert_eq!(members(1000).quorum_count(&p), 667);
    }

    #[test]
    fn share_credit_is_exact_at_rate_five_and_three() {
        let mut p = Params::default();
        assert_eq!(p.share_credit(0, 1), 200_000);
        assert_eq!(p.share_credit(0, 5), UNITS_PER_COIN);
        p.dcoin_rate = 3;
        let stepwise: u64 = (0..30).map(|i| p.share_credit(i, i + 1)).sum();
        assert_eq!(stepwise, p.share_credit(0, 30));
        assert_eq!(stepwise, 10 * UNITS_PER_COIN);
    }

    proptest! {
        #[test]
        fn share_credit_is_additive(rate in 1u64..1000, a in 0u64..1_000_000, b in 0u64..1000, c in 0u64..1000) {
            let p = Params { dcoin_rate: rate, ..Params::default() };
            prop_assert_eq!(p.share_credit(a, a + b) + p.share_credit(a + b, a + b + c), p.share_credit(a, a + b + c));
        }

        #[test]
        fn two_quorums_always_share_more_than_a_third(n in 1usize..300, w in proptest::collection::vec(1u64..5, 300)) {
            let ids = (0..n).map(|i| { let mut b = [0u8; 32]; b[..8].copy_from_slice(&(i as u64).to_le_bytes()); MemberId(b) }).collect();
            let m = Membership::weighted(ids, w[..n].to_vec()).unwrap();
            let p = Params::default();
            // The smallest quorum weight q: any two quorums overlap by 2q - total,
            // which must exceed total/3 so an honest member is in both.
            let q = (0..=m.total_weight()).find(|x| m.is_quorum(&p, *x)).unwrap();
            prop_assert!(3 * (2 * q - m.total_weight()) > m.total_weight());
        }
    }
}
