//! The token hash (SHA-256: the opaque token and the split signature are only ever kept as it),
//! the constant-time comparison every secret and stored hash goes through, and the slot a hash
//! picks in a fixed key space.

use sha2::{Digest, Sha256};

pub type TokenHash = [u8; 32];

pub fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// First bytes of the hash in hex: enough to correlate log lines, useless to an attacker.
pub fn hash_prefix(hash: &TokenHash) -> String {
    hash.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// The slot `hash` picks among `slots` (at least 1): its first 8 bytes, big-endian, modulo
/// `slots`. A SHA-256 is uniform, so this is as good as any hash of it.
pub fn slot_of(hash: &TokenHash, slots: u64) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(hash.get(..8).unwrap_or(&[0; 8]));
    u64::from_be_bytes(first) % slots.max(1)
}

/// Compares two byte strings in time that depends only on their length.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hash_is_sha256() {
        // sha256("abc")
        assert_eq!(hash_prefix(&token_hash("abc")), "ba7816bf",);
    }

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn slots_stay_in_range() {
        let h = token_hash("abc");
        assert_eq!(slot_of(&h, 1), 0);
        assert_eq!(slot_of(&h, 0), 0);
        assert!((0..1000).all(|i| slot_of(&token_hash(&i.to_string()), 7) < 7));
    }
}
