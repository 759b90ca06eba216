//! A per-worker copy of recent phantom cache hits, in front of the shared-data cache: a hit
//! here costs no host call, no copy out of shared data and no string formatting.
//!
//! Only forwardable answers are kept (an active JWT whose scopes satisfy `required_scopes`),
//! as the final `Authorization` value, until the shared entry's own expiry; the shared cache
//! stays the source of truth for every other answer. Keyed by the token's SHA-256 (the token
//! itself is never kept). Bounded in entries and bytes: when either bound is reached the copy
//! is emptied and refills from the shared cache.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use crate::hash::TokenHash;

/// Entries kept per worker.
pub const MAX_ENTRIES: usize = 2_048;
/// Bytes of `Authorization` values kept per worker.
pub const MAX_BYTES: usize = 1024 * 1024;

/// The key is already a SHA-256: its first 8 bytes are as good as any hash of it.
#[derive(Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
}

struct Local {
    expires_at_ms: u64,
    authorization: Rc<str>,
}

#[derive(Default)]
pub struct LocalCache {
    inner: RefCell<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<TokenHash, Local, BuildHasherDefault<DigestHasher>>,
    bytes: usize,
}

impl LocalCache {
    /// The `Authorization` value to forward for `hash`, if a live copy is kept.
    pub fn get(&self, hash: &TokenHash, now_ms: u64) -> Option<Rc<str>> {
        let inner = self.inner.try_borrow().ok()?;
        let local = inner.map.get(hash)?;
        (now_ms < local.expires_at_ms).then(|| local.authorization.clone())
    }

    pub fn put(&self, hash: &TokenHash, expires_at_ms: u64, authorization: &str) {
        let Ok(mut inner) = self.inner.try_borrow_mut() else {
            return;
        };
        if inner.map.len() >= MAX_ENTRIES || inner.bytes + authorization.len() > MAX_BYTES {
            inner.map.clear();
            inner.bytes = 0;
        }
        let added = authorization.len();
        let old = inner.map.insert(
            *hash,
            Local {
                expires_at_ms,
                authorization: Rc::from(authorization),
            },
        );
        inner.bytes = inner.bytes + added - old.map_or(0, |o| o.authorization.len());
    }

    pub fn clear(&self) {
        if let Ok(mut inner) = self.inner.try_borrow_mut() {
            inner.map.clear();
            inner.bytes = 0;
        }
    }

    pub fn len(&self) -> usize {
        self.inner.borrow().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_until_expiry_and_stays_bounded() {
        let c = LocalCache::default();
        c.put(&[1; 32], 100, "Bearer a.b.c");
        assert_eq!(c.get(&[1; 32], 99).as_deref(), Some("Bearer a.b.c"));
        assert_eq!(c.get(&[1; 32], 100), None);
        assert_eq!(c.get(&[2; 32], 0), None);
        for i in 0..(MAX_ENTRIES as u32 + 10) {
            let mut h = [0u8; 32];
            h[..4].copy_from_slice(&i.to_be_bytes());
            c.put(&h, 100, "Bearer x");
        }
        assert!(c.len() <= MAX_ENTRIES);
        let big = "x".repeat(MAX_BYTES / 2 + 1);
        c.put(&[3; 32], 100, &big);
        c.put(&[4; 32], 100, &big);
        assert_eq!(c.len(), 1, "the byte bound empties the copy");
        assert_eq!(c.get(&[4; 32], 0).map(|a| a.len()), Some(big.len()));
    }
}
