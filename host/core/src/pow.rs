//! Lightweight proof of work (LWPoW): the SHA-256 of a message must start
//! with `difficulty` zero nibbles (hex digits).
//!
//! The nonce is the last field of every message that carries one, so the
//! solver hashes the fixed prefix once and, per try, only the nonce and the
//! padding: about one SHA-256 block per try instead of the whole message.

use sha2::{Digest, Sha256};

use crate::crypto::Hash;

/// True when `hash` starts with `difficulty` zero nibbles.
pub fn meets(hash: &Hash, difficulty: u8) -> bool {
    if usize::from(difficulty) > 2 * hash.len() {
        return false;
    }
    let full_bytes = usize::from(difficulty / 2);
    if hash[..full_bytes].iter().any(|b| *b != 0) {
        return false;
    }
    difficulty % 2 == 0 || hash[full_bytes] >> 4 == 0
}

/// Finds the first nonce from `start` whose hash of `prefix || nonce_le`
/// meets `difficulty`; returns the nonce and the hash. The search is bounded
/// by `max_tries` so a misconfigured difficulty cannot hang a node.
pub fn solve(prefix: &[u8], difficulty: u8, start: u64, max_tries: u64) -> Option<(u64, Hash)> {
    let mut base = Sha256::new();
    base.update(prefix);
    let mut nonce = start;
    for _ in 0..max_tries {
        let mut h = base.clone();
        h.update(nonce.to_le_bytes());
        let hash: Hash = h.finalize().into();
        if meets(&hash, difficulty) {
            return Some((nonce, hash));
        }
        nonce = nonce.wrapping_add(1);
    }
    None
}

/// The hash of `prefix || nonce_le`, as [`solve`] computes it.
pub fn hash_with_nonce(prefix: &[u8], nonce: u64) -> Hash {
    let mut h = Sha256::new();
    h.update(prefix);
    h.update(nonce.to_le_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nibbles_are_counted_from_the_high_half() {
        let mut h = [0xffu8; 32];
        assert!(meets(&h, 0));
        assert!(!meets(&h, 1));
        h[0] = 0x0f;
        assert!(meets(&h, 1));
        assert!(!meets(&h, 2));
        h[0] = 0;
        h[1] = 0x0a;
        assert!(meets(&h, 3));
        assert!(!meets(&h, 4));
        assert!(!meets(&[0u8; 32], 65));
        assert!(meets(&[0u8; 32], 64));
    }

    #[test]
    fn solved_nonces_verify_and_wrong_ones_mostly_do_not() {
        for difficulty in 0..=3 {
            let prefix = b"wallance test prefix".to_vec();
            let (nonce, hash) = solve(&prefix, difficulty, 7, 1 << 24).unwrap();
            assert_eq!(hash, hash_with_nonce(&prefix, nonce));
            assert!(meets(&hash, difficulty));
        }
        // At difficulty 2 a random nonce fails 255 times in 256.
        let failures = (0..64u64).filter(|n| !meets(&hash_with_nonce(b"x", *n), 2)).count();
        assert!(failures > 50, "{failures}");
    }
}
