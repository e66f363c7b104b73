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

/// Checks `sig` by `signer` over `digest`. False for keys that are not valid
/// curve points as well as for wrong signatures.
pub fn verify(signer: &MemberId, digest: &Hash, sig: &Signature) -> bool {
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&signer.0) else {
        return false;
    };
    let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
    key.verify(digest, &sig).is_ok()
}
