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
    difficulty.is_multiple_of(2) || hash[full_bytes] >> 4 == 0
}

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// Finds the first nonce from `start` whose hash of `prefix || nonce_le`
/// meets `difficulty`; returns the nonce and the hash. The search is bounded
/// by `max_tries` so a misconfigured difficulty cannot hang a node.
///
/// The prefix's whole 64-byte blocks are compressed once; each try then
/// writes the nonce into the pre-padded last block(s) and runs the
/// compression function on them alone (one block when the tail fits).
pub fn solve(prefix: &[u8], difficulty: u8, start: u64, max_tries: u64) -> Option<(u64, Hash)> {
    use sha2::digest::generic_array::GenericArray;

    let full = prefix.len() / 64 * 64;
    let mut mid = IV;
    for block in prefix[..full].chunks_exact(64) {
        sha2::compress256(&mut mid, &[*GenericArray::from_slice(block)]);
    }
    // Tail: rest of the prefix, nonce, 0x80, zeros, bit length (big-endian).
    let rest = &prefix[full..];
    let n_tail = if rest.len() + 8 + 9 <= 64 { 1 } else { 2 };
    let mut tail = [0u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len() + 8] = 0x80;
    let bits = ((prefix.len() as u64) + 8) * 8;
    tail[n_tail * 64 - 8..n_tail * 64].copy_from_slice(&bits.to_be_bytes());
    let mut nonce = start;
    for _ in 0..max_tries {
        tail[rest.len()..rest.len() + 8].copy_from_slice(&nonce.to_le_bytes());
        let mut state = mid;
        let last = [
            *GenericArray::from_slice(&tail[..64]),
            *GenericArray::from_slice(&tail[64..]),
        ];
        sha2::compress256(&mut state, &last[..n_tail]);
        // Difficulty counts leading nibbles: the first word decides up to 8.
        if difficulty > 8 || (state[0] as u64) < (1u64 << (32 - 4 * u32::from(difficulty))) {
            let mut hash = [0u8; 32];
            for (i, w) in state.iter().enumerate() {
                hash[4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes());
            }
            if meets(&hash, difficulty) {
                return Some((nonce, hash));
            }
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
    fn the_midstate_solver_hashes_exactly_like_sha256_at_every_length() {
        // Every tail length, including the ones that need two blocks.
        for len in 0..200usize {
            let prefix: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let (nonce, hash) = solve(&prefix, 0, 12_345, 1).unwrap();
            assert_eq!(nonce, 12_345);
            assert_eq!(hash, hash_with_nonce(&prefix, nonce), "length {len}");
        }
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
