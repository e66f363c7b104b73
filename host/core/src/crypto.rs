//! Identities, hashes and signatures.
//!
//! A member's ID is its Ed25519 public key (hole 3 of the paper notes): an
//! ID cannot be claimed without the matching secret key, and every request,
//! vote and share is signed. Signatures cover a 32-byte SHA-256 digest of the
//! canonical encoding, which is also the message's identity.

use std::fmt;

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::Signer;
use sha2::{Digest, Sha256, Sha512};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// SHA-256 over the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> Hash {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// A member: the 32 bytes of its Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MemberId(pub [u8; 32]);

impl MemberId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out).ok()?;
        Some(Self(out))
    }
    /// The first 4 bytes in hex: enough to tell members apart in logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Debug for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MemberId({})", self.short())
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl Default for Signature {
    fn default() -> Self {
        Self([0; 64])
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}..)", hex::encode(&self.0[..4]))
    }
}

/// A member's secret key. The core never creates one: keys come from the
/// node's key file or, in the simulator, from a seed.
#[derive(Clone)]
pub struct Keypair {
    signing: ed25519_dalek::SigningKey,
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.id().short())
    }
}

impl Keypair {
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            signing: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }
    pub fn id(&self) -> MemberId {
        MemberId(self.signing.verifying_key().to_bytes())
    }
    pub fn sign(&self, digest: &Hash) -> Signature {
        Signature(self.signing.sign(digest).to_bytes())
    }
}

/// Signatures a node has verified, so that a certificate never verifies
/// again the votes (and the request) this node checked when they arrived:
/// at 8 members a certificate carries 6 votes, at 48 about 33. It is also
/// where a batch lands ([`Self::verify_batch`]), and it keeps signers' keys
/// decoded (decoding one is a tenth of a verification).
///
/// An entry is the SHA-256 of (signer, digest, signature): only that exact
/// triple passes unchecked, and a forgery is never inserted (only a
/// signature that verified is). Bounded: past `capacity` the oldest entry is
/// forgotten, which costs a verification again, never a wrong answer.
#[derive(Debug)]
pub struct SigCache {
    seen: std::collections::HashSet<Hash>,
    order: std::collections::VecDeque<Hash>,
    capacity: usize,
    keys: std::collections::HashMap<MemberId, EdwardsPoint>,
    /// Mixed into a batch's coefficients, so signers cannot predict them.
    salt: Hash,
    /// Verifications skipped because the triple was here.
    pub hits: u64,
    /// Signatures checked: alone, plus every one put in a batch (whether
    /// the batch held or not). The work done, in signatures.
    pub checked: u64,
    /// Signatures verified in batches that held.
    pub batched: u64,
    /// Batches that did not hold (one signature or more was bad).
    pub batches_failed: u64,
}

/// Decoded keys a [`SigCache`] keeps; past it, a key is decoded each time.
const KEYS_KEPT: usize = 1 << 16;

impl SigCache {
    pub fn new(capacity: usize) -> Self {
        Self::with_salt(capacity, [0; 32])
    }

    /// `salt`: something signers do not know (the core derives it from its
    /// own secret key), mixed into each batch's random coefficients.
    pub fn with_salt(capacity: usize, salt: Hash) -> Self {
        Self {
            seen: std::collections::HashSet::with_capacity(capacity.min(1 << 16)),
            order: std::collections::VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity,
            keys: std::collections::HashMap::new(),
            salt,
            hits: 0,
            checked: 0,
            batched: 0,
            batches_failed: 0,
        }
    }

    fn key(signer: &MemberId, digest: &Hash, sig: &Signature) -> Hash {
        sha256(&[b"wallance/sig-cache/v1", &signer.0, digest, &sig.0])
    }

    fn point(&mut self, signer: &MemberId) -> Option<EdwardsPoint> {
        if let Some(p) = self.keys.get(signer) {
            return Some(*p);
        }
        let p = CompressedEdwardsY(signer.0).decompress()?;
        if self.keys.len() < KEYS_KEPT {
            self.keys.insert(*signer, p);
        }
        Some(p)
    }

    fn insert(&mut self, key: Hash) {
        if self.capacity == 0 || !self.seen.insert(key) {
            return;
        }
        if self.order.len() >= self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.order.push_back(key);
    }

    /// [`verify`], answered from the cache when this triple verified before.
    pub fn verify(&mut self, signer: &MemberId, digest: &Hash, sig: &Signature) -> bool {
        let key = Self::key(signer, digest, sig);
        if self.seen.contains(&key) {
            self.hits += 1;
            return true;
        }
        let Some(a) = self.point(signer) else {
            return false;
        };
        self.checked += 1;
        if !verify_decoded(&a, signer, digest, sig) {
            return false;
        }
        self.insert(key);
        true
    }

    /// Verifies those of `items` not here in one batch ([`verify_batch`]),
    /// and keeps them all if it holds. On a failure nothing is kept: each
    /// is then verified alone when it is used, as if no batch had been
    /// tried. Returns how many the batch verified (0 if it failed).
    pub fn verify_batch(&mut self, items: &[(MemberId, Hash, Signature)]) -> usize {
        let mut todo = Vec::with_capacity(items.len());
        let mut keys = Vec::with_capacity(items.len());
        for (signer, digest, sig) in items {
            let key = Self::key(signer, digest, sig);
            if self.seen.contains(&key) || keys.contains(&key) {
                continue;
            }
            let Some(a) = self.point(signer) else {
                continue;
            };
            todo.push((a, *signer, *digest, *sig));
            keys.push(key);
        }
        if todo.is_empty() {
            return 0;
        }
        self.checked += todo.len() as u64;
        if !verify_batch(&todo, &self.salt) {
            self.batches_failed += 1;
            return 0;
        }
        self.batched += todo.len() as u64;
        for key in keys {
            self.insert(key);
        }
        todo.len()
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// Checks `sig` by `signer` over `digest`. False for keys that are not valid
/// curve points as well as for wrong signatures.
///
/// The rule is cofactored Ed25519, as ZIP 215 defines it: `s` canonical,
/// `R` and `A` any encodings of curve points, and `[8](sB - kA - R)` the
/// identity, with `k = SHA-512(R || A || digest)`. It is the rule a batch
/// checks too ([`verify_batch`]), and that is why it is used: with the usual
/// cofactorless check (`sB - kA = R`) a member could sign with an `R`
/// carrying a small-order part, which a batch may accept and a lone check
/// refuses, so that nodes batching different messages together would
/// disagree on whether one vote counts. Every signature an honest signer
/// makes verifies under both rules.
pub fn verify(signer: &MemberId, digest: &Hash, sig: &Signature) -> bool {
    let Some(a) = CompressedEdwardsY(signer.0).decompress() else {
        return false;
    };
    verify_decoded(&a, signer, digest, sig)
}

/// `R`, `s` and `k` of a signature, or `None` if `s` is not canonical or
/// `R` is not a curve point.
fn parse(signer: &MemberId, digest: &Hash, sig: &Signature) -> Option<(EdwardsPoint, Scalar, Scalar)> {
    let r_bytes: [u8; 32] = sig.0[..32].try_into().expect("64 bytes");
    let s_bytes: [u8; 32] = sig.0[32..].try_into().expect("64 bytes");
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))?;
    let r = CompressedEdwardsY(r_bytes).decompress()?;
    let k = Scalar::from_hash(
        Sha512::new()
            .chain_update(r_bytes)
            .chain_update(signer.0)
            .chain_update(digest),
    );
    Some((r, s, k))
}

/// [`verify`] with the signer's key already decoded into `a`.
fn verify_decoded(a: &EdwardsPoint, signer: &MemberId, digest: &Hash, sig: &Signature) -> bool {
    let Some((r, s, k)) = parse(signer, digest, sig) else {
        return false;
    };
    (EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &-a, &s) - r)
        .mul_by_cofactor()
        .is_identity()
}

/// True if every signature in `items` (key decoded, signer, digest,
/// signature) passes [`verify`]. A batch with a bad signature passes only
/// with probability about 2^-125: each equation is scaled by a random
/// 128-bit `z`, drawn from a hash of `salt` and the whole batch, and
/// `[8](sum z(sB - kA - R))` is checked in one multiscalar multiplication.
/// About twice as fast per signature as [`verify`] from 8 signatures on
/// (the `bench` command measures it).
pub fn verify_batch(items: &[(EdwardsPoint, MemberId, Hash, Signature)], salt: &Hash) -> bool {
    let mut transcript = Sha512::new().chain_update(b"wallance/batch/v1").chain_update(salt);
    for (_, signer, digest, sig) in items {
        transcript.update(signer.0);
        transcript.update(digest);
        transcript.update(sig.0);
    }
    let seed = transcript.finalize();
    let mut b_coefficient = Scalar::ZERO;
    let mut scalars = Vec::with_capacity(2 * items.len() + 1);
    let mut points = Vec::with_capacity(2 * items.len() + 1);
    scalars.push(Scalar::ZERO);
    points.push(ED25519_BASEPOINT_POINT);
    for (i, (a, signer, digest, sig)) in items.iter().enumerate() {
        let Some((r, s, k)) = parse(signer, digest, sig) else {
            return false;
        };
        let draw = Sha512::new()
            .chain_update(seed)
            .chain_update((i as u64).to_le_bytes())
            .finalize();
        let z = Scalar::from(u128::from_le_bytes(draw[..16].try_into().expect("64 bytes")));
        b_coefficient += z * s;
        scalars.push(-(z * k));
        points.push(*a);
        scalars.push(-z);
        points.push(r);
    }
    scalars[0] = b_coefficient;
    EdwardsPoint::vartime_multiscalar_mul(scalars, points)
        .mul_by_cofactor()
        .is_identity()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_cache_answers_only_for_a_triple_that_verified() {
        let k = Keypair::from_seed([3; 32]);
        let other = Keypair::from_seed([4; 32]);
        let digest = [7u8; 32];
        let sig = k.sign(&digest);
        let mut cache = SigCache::new(2);
        assert!(cache.verify(&k.id(), &digest, &sig));
        assert_eq!(cache.hits, 0);
        assert!(cache.verify(&k.id(), &digest, &sig));
        assert_eq!(cache.hits, 1, "the second check comes from the cache");
        // Any other signer, digest or signature is verified, and fails.
        assert!(!cache.verify(&other.id(), &digest, &sig));
        assert!(!cache.verify(&k.id(), &[8; 32], &sig));
        let mut forged = sig;
        forged.0[0] ^= 1;
        assert!(!cache.verify(&k.id(), &digest, &forged));
        assert!(!cache.verify(&k.id(), &digest, &forged), "a failure is never cached");
        assert_eq!(cache.hits, 1);
        assert_eq!(cache.len(), 1);
        // Bounded: the oldest is forgotten and verified again.
        let (d2, d3) = ([9u8; 32], [10u8; 32]);
        assert!(cache.verify(&k.id(), &d2, &k.sign(&d2)));
        assert!(cache.verify(&k.id(), &d3, &k.sign(&d3)));
        assert_eq!(cache.len(), 2);
        assert!(cache.verify(&k.id(), &digest, &sig));
        assert_eq!(cache.hits, 1, "evicted, so verified again");
    }

    /// `k`'s secret scalar `a`, as Ed25519 expands a seed.
    fn secret_scalar(k: &Keypair) -> Scalar {
        let h = Sha512::digest(k.seed());
        Scalar::from_bytes_mod_order(curve25519_dalek::scalar::clamp_integer(h[..32].try_into().unwrap()))
    }

    /// What a Byzantine signer can make: `R = rB + T` with `T` of order 8.
    /// The cofactorless check refuses it; the cofactored rule accepts it.
    fn torsioned(k: &Keypair, digest: &Hash) -> Signature {
        let r = Scalar::from_bytes_mod_order([42; 32]);
        let big_r = ED25519_BASEPOINT_POINT * r + curve25519_dalek::constants::EIGHT_TORSION[1];
        let r_bytes = big_r.compress().to_bytes();
        let kk = Scalar::from_hash(
            Sha512::new()
                .chain_update(r_bytes)
                .chain_update(k.id().0)
                .chain_update(digest),
        );
        let s = r + kk * secret_scalar(k);
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&r_bytes);
        sig[32..].copy_from_slice(s.as_bytes());
        Signature(sig)
    }

    fn dalek_verify(signer: &MemberId, digest: &Hash, sig: &Signature) -> bool {
        use ed25519_dalek::Verifier;
        ed25519_dalek::VerifyingKey::from_bytes(&signer.0).is_ok_and(|key| {
            key.verify(digest, &ed25519_dalek::Signature::from_bytes(&sig.0))
                .is_ok()
        })
    }

    fn item(k: &Keypair, digest: Hash, sig: Signature) -> (EdwardsPoint, MemberId, Hash, Signature) {
        (CompressedEdwardsY(k.id().0).decompress().unwrap(), k.id(), digest, sig)
    }

    #[test]
    fn a_lone_check_and_a_batch_agree_on_a_signature_with_a_small_order_part() {
        let k = Keypair::from_seed([5; 32]);
        let digest = [1u8; 32];
        let odd = torsioned(&k, &digest);
        // The construction is right: the usual check refuses it.
        assert!(!dalek_verify(&k.id(), &digest, &odd));
        assert!(verify(&k.id(), &digest, &odd));
        let honest: Vec<_> = (0..7u8)
            .map(|i| {
                let signer = Keypair::from_seed([10 + i; 32]);
                let d = [i; 32];
                item(&signer, d, signer.sign(&d))
            })
            .collect();
        for at in 0..=honest.len() {
            let mut batch = honest.clone();
            batch.insert(at, item(&k, digest, odd));
            assert!(
                verify_batch(&batch, &[9; 32]),
                "accepted alone, so accepted in any batch"
            );
        }
        // And one the lone check refuses, the batch refuses wherever it sits.
        let mut bad = odd;
        bad.0[40] ^= 1;
        assert!(!verify(&k.id(), &digest, &bad));
        for at in 0..=honest.len() {
            let mut batch = honest.clone();
            batch.insert(at, item(&k, digest, bad));
            assert!(!verify_batch(&batch, &[9; 32]));
        }
    }

    #[test]
    fn a_batch_keeps_nothing_when_one_signature_is_bad() {
        let keys: Vec<Keypair> = (0..8u8).map(|i| Keypair::from_seed([20 + i; 32])).collect();
        let mut items: Vec<(MemberId, Hash, Signature)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.id(), [i as u8; 32], k.sign(&[i as u8; 32])))
            .collect();
        items[5].2.0[63] ^= 0x10;
        let mut cache = SigCache::with_salt(64, [3; 32]);
        assert_eq!(cache.verify_batch(&items), 0);
        assert_eq!((cache.len(), cache.batches_failed), (0, 1));
        // Each is then verified alone: the good ones pass, the bad one not.
        for (i, (signer, digest, sig)) in items.iter().enumerate() {
            assert_eq!(cache.verify(signer, digest, sig), i != 5);
        }
        assert_eq!(cache.hits, 0);
        // Without it the batch holds, and what it verified is cached.
        items.remove(5);
        let mut cache = SigCache::with_salt(64, [3; 32]);
        assert_eq!(cache.verify_batch(&items), 7);
        assert_eq!(cache.verify_batch(&items), 0, "all cached: nothing to verify");
        for (signer, digest, sig) in &items {
            assert!(cache.verify(signer, digest, sig));
        }
        assert_eq!((cache.hits, cache.batched), (7, 7));
        // A key that is not a curve point is skipped, never cached.
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        assert!(CompressedEdwardsY(not_a_point).decompress().is_none());
        assert_eq!(
            cache.verify_batch(&[(MemberId(not_a_point), [0; 32], Signature::default())]),
            0
        );
        assert!(!cache.verify(&MemberId(not_a_point), &[0; 32], &Signature::default()));
    }

    proptest::proptest! {
        /// Random byte flips in valid signatures, digests and keys: the
        /// rule here, the usual check and a batch give one answer.
        #[test]
        fn mutations_get_one_answer_from_every_check(
            seeds in proptest::collection::vec(proptest::prelude::any::<[u8; 32]>(), 1..10),
            flips in proptest::collection::vec((0usize..10, 0usize..128, 1u8..=255), 0..4),
        ) {
            let keys: Vec<Keypair> = seeds.iter().map(|s| Keypair::from_seed(*s)).collect();
            let mut items: Vec<(MemberId, Hash, Signature)> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| { let d = sha256(&[&[i as u8]]); (k.id(), d, k.sign(&d)) })
                .collect();
            for (which, at, x) in flips {
                let Some((signer, digest, sig)) = items.get_mut(which % keys.len()) else { continue };
                match at {
                    0..64 => sig.0[at] ^= x,
                    64..96 => digest[at - 64] ^= x,
                    _ => signer.0[at - 96] ^= x,
                }
            }
            let mut all = true;
            let mut decoded = Vec::new();
            for (signer, digest, sig) in &items {
                let ours = verify(signer, digest, sig);
                proptest::prop_assert_eq!(ours, dalek_verify(signer, digest, sig));
                all &= ours;
                if let Some(a) = CompressedEdwardsY(signer.0).decompress() {
                    decoded.push((a, *signer, *digest, *sig));
                }
            }
            if decoded.len() == items.len() {
                proptest::prop_assert_eq!(verify_batch(&decoded, &[1; 32]), all);
            }
        }
    }
}
