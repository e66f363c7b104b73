//! Identities, hashes and signatures.
//!
//! A member's ID is its Ed25519 public key (hole 3 of the paper notes): an
//! ID cannot be claimed without the matching secret key, and every request,
//! vote and share is signed. Signatures cover a 32-byte SHA-256 digest of the
//! canonical encoding, which is also the message's identity.

use std::fmt;

use ed25519_dalek::{Signer, Verifier};
use sha2::{Digest, Sha256};

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
/// at 8 members a certificate carries 6 votes, at 48 about 33.
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
    /// Verifications skipped because the triple was here.
    pub hits: u64,
}

impl SigCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: std::collections::HashSet::with_capacity(capacity.min(1 << 16)),
            order: std::collections::VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity,
            hits: 0,
        }
    }

    fn key(signer: &MemberId, digest: &Hash, sig: &Signature) -> Hash {
        sha256(&[b"wallance/sig-cache/v1", &signer.0, digest, &sig.0])
    }

    /// [`verify`], answered from the cache when this triple verified before.
    pub fn verify(&mut self, signer: &MemberId, digest: &Hash, sig: &Signature) -> bool {
        let key = Self::key(signer, digest, sig);
        if self.seen.contains(&key) {
            self.hits += 1;
            return true;
        }
        if !verify(signer, digest, sig) {
            return false;
        }
        if self.capacity > 0 {
            if self.order.len() >= self.capacity
                && let Some(old) = self.order.pop_front()
            {
                self.seen.remove(&old);
            }
            self.seen.insert(key);
            self.order.push_back(key);
        }
        true
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
pub fn verify(signer: &MemberId, digest: &Hash, sig: &Signature) -> bool {
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&signer.0) else {
        return false;
    };
    let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
    key.verify(digest, &sig).is_ok()
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
}
