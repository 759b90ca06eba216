//! The token hash (SHA-256: the opaque token and the split signature are only ever kept as it),
//! the constant-time comparison every secret and stored hash goes through, and the slot a hash
//! picks in a fixed key space.

use sha2::{Digest, Sha256};

pub type TokenHash = [u8; 32];

pub fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// A token's key in this worker's own copies of recent tokens: SipHash-1-3 (128-bit) of the
/// token under a key drawn at random when the worker's state is made ([`Keyed`]). An attacker
/// who never sees the key cannot aim at another token's key (a PRF: 2^-128 per guess), and a
/// hit pays for a short keyed hash instead of a SHA-256 (about ten times the work in a VM
/// without SHA instructions). Never stored outside the worker, never logged.
pub type FastKey = u128;

/// The random key of [`FastKey`]s, one per worker state.
#[derive(Clone)]
pub struct Keyed {
    k0: u64,
    k1: u64,
}

impl Default for Keyed {
    fn default() -> Self {
        use jwt_simple::reexports::rand::RngCore as _;
        let mut rng = jwt_simple::reexports::rand::thread_rng();
        Self {
            k0: rng.next_u64(),
            k1: rng.next_u64(),
        }
    }
}

impl Keyed {
    pub fn key(&self, token: &str) -> FastKey {
        use siphasher::sip128::{Hasher128 as _, SipHasher13};
        use std::hash::Hasher as _;
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        h.write(token.as_bytes());
        h.finish128().into()
    }
}

/// The token a request came with, and its keys: the [`FastKey`] at once, the SHA-256 (shared
/// data, the split store, exchanges) only when a stage needs it.
#[derive(Debug, Clone)]
pub struct TokenKeys<'a> {
    pub token: &'a str,
    pub fast: FastKey,
    sha: std::cell::OnceCell<TokenHash>,
}

impl<'a> TokenKeys<'a> {
    pub fn new(keyed: &Keyed, token: &'a str) -> Self {
        Self {
            token,
            fast: keyed.key(token),
            sha: std::cell::OnceCell::new(),
        }
    }

    /// With its SHA-256 already known (an answer to a call made for it).
    pub fn with_sha(keyed: &Keyed, token: &'a str, sha: TokenHash) -> Self {
        let keys = Self::new(keyed, token);
        let _ = keys.sha.set(sha);
        keys
    }

    pub fn sha256(&self) -> &TokenHash {
        self.sha.get_or_init(|| token_hash(self.token))
    }
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

/// 32 random bytes (a salt or a key made by the first worker that needs it).
pub fn random_key() -> [u8; 32] {
    use jwt_simple::reexports::rand::RngCore as _;
    let mut key = [0u8; 32];
    jwt_simple::reexports::rand::thread_rng().fill_bytes(&mut key);
    key
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
    fn fast_keys_are_keyed_and_sha_is_lazy() {
        let (a, b) = (Keyed::default(), Keyed::default());
        assert_eq!(a.key("tok"), a.key("tok"));
        assert_ne!(a.key("tok"), a.key("tok2"));
        assert_ne!(a.key("tok"), b.key("tok"), "another worker, another key");
        let keys = TokenKeys::new(&a, "abc");
        assert!(keys.sha.get().is_none());
        assert_eq!(keys.sha256(), &token_hash("abc"));
        let known = TokenKeys::with_sha(&a, "abc", [7; 32]);
        assert_eq!(known.sha256(), &[7; 32]);
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
