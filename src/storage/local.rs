//! A per-worker copy of recent phantom cache hits, in front of the shared-data cache: a hit
//! here costs no host call, no copy out of shared data, no decoding and no string formatting.
//!
//! Only tokens that were forwarded are kept, as a [`Resolved`] (the `Authorization` value to
//! forward, the scopes, the claims the policies copy), until the shared entry's own expiry;
//! scopes are checked again on every hit, against the policy of that request. The shared cache
//! stays the source of truth for every other answer. Keyed by the token's keyed hash
//! ([`crate::hash::FastKey`]), or by an exchange's key (the token itself is never kept). Bounded
//! in entries and bytes: when either bound is reached the copy is emptied and refills from the
//! shared cache. The same copy serves the split store's hits, the JWTs accepted as they are and
//! the exchanged tokens, each in a copy of its own.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use crate::hash::TokenHash;
use crate::token::claims::{Binding, Claim};
use crate::token::revocation::Identity;

/// A token the gateway resolved to a JWT: what to forward, and what policies read of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resolved {
    /// The `Authorization` value to forward: `Bearer <JWT>`.
    pub authorization: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// The configured claims' values (`Policies::claims`, in order); empty when none is.
    pub claims: Vec<Claim>,
    /// What the token is bound to (`cnf`): enforced on every request, hits included.
    pub binding: Binding,
    /// Whose it is, with `revocation` (`None` without): what a revocation can name, so that
    /// this worker's copies of it can be forgotten.
    pub identity: Option<Box<Identity>>,
    /// The forwarded JWT's `exp` and `iat` (whole seconds), for the policies' lifetime rules.
    pub exp: Option<u64>,
    pub iat: Option<u64>,
}

impl Resolved {
    /// Bytes it holds, for the bound.
    fn size(&self) -> usize {
        let claims: usize = self
            .claims
            .iter()
            .map(|c| match c {
                Claim::Value(v) => v.len(),
                _ => 0,
            })
            .sum();
        self.authorization.len() + self.scope.len() + claims
    }
}

/// Entries kept per worker.
pub const MAX_ENTRIES: usize = 2_048;
/// Bytes of `Authorization` values kept per worker.
pub const MAX_BYTES: usize = 1024 * 1024;

/// The key is already a hash (a SHA-256, or a keyed SipHash): its first 8 bytes are as good as
/// any hash of it.
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
    token: Rc<Resolved>,
}

/// Keyed by a token's SHA-256, or by one with a policy's index (exchanged tokens).
pub struct LocalCache<K = TokenHash> {
    inner: RefCell<Inner<K>>,
}

struct Inner<K> {
    map: HashMap<K, Local, BuildHasherDefault<DigestHasher>>,
    bytes: usize,
    /// Copies are kept (see [`LocalCache::keep`]).
    on: bool,
}

impl<K> Default for LocalCache<K> {
    fn default() -> Self {
        Self {
            inner: RefCell::new(Inner {
                map: HashMap::default(),
                bytes: 0,
                on: true,
            }),
        }
    }
}

impl<K: Eq + std::hash::Hash + Copy> LocalCache<K> {
    /// The token kept for `hash`, if a live copy is kept.
    pub fn get(&self, hash: &K, now_ms: u64) -> Option<Rc<Resolved>> {
        let inner = self.inner.try_borrow().ok()?;
        let local = inner.map.get(hash)?;
        (now_ms < local.expires_at_ms).then(|| local.token.clone())
    }

    pub fn put(&self, hash: &K, expires_at_ms: u64, token: Rc<Resolved>) {
        let Ok(mut inner) = self.inner.try_borrow_mut() else {
            return;
        };
        if !inner.on {
            return;
        }
        let added = token.size();
        if inner.map.len() >= MAX_ENTRIES || inner.bytes + added > MAX_BYTES {
            inner.map.clear();
            inner.bytes = 0;
        }
        let old = inner.map.insert(
            *hash,
            Local {
                expires_at_ms,
                token,
            },
        );
        inner.bytes = inner.bytes + added - old.map_or(0, |o| o.token.size());
    }

    pub fn clear(&self) {
        if let Ok(mut inner) = self.inner.try_borrow_mut() {
            inner.map.clear();
            inner.bytes = 0;
        }
    }

    /// Forgets the copies `forget` says of.
    pub fn forget(&self, forget: impl Fn(&Resolved) -> bool) {
        if let Ok(mut inner) = self.inner.try_borrow_mut() {
            let mut freed = 0;
            inner.map.retain(|_, local| {
                let gone = forget(&local.token);
                if gone {
                    freed += local.token.size();
                }
                !gone
            });
            inner.bytes = inner.bytes.saturating_sub(freed);
        }
    }

    /// Whether copies are kept at all: a worker that cannot take part in revocation keeps
    /// none (emptied now, nothing kept until it can).
    pub fn keep(&self, on: bool) {
        if let Ok(mut inner) = self.inner.try_borrow_mut() {
            inner.on = on;
            if !on {
                inner.map.clear();
                inner.bytes = 0;
            }
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
        let token = |authorization: &str| {
            Rc::new(Resolved {
                authorization: authorization.to_owned(),
                ..Resolved::default()
            })
        };
        c.put(&[1; 32], 100, token("Bearer a.b.c"));
        assert_eq!(
            c.get(&[1; 32], 99)
                .map(|t| t.authorization.clone())
                .as_deref(),
            Some("Bearer a.b.c")
        );
        assert_eq!(c.get(&[1; 32], 100), None);
        assert_eq!(c.get(&[2; 32], 0), None);
        for i in 0..(MAX_ENTRIES as u32 + 10) {
            let mut h = [0u8; 32];
            h[..4].copy_from_slice(&i.to_be_bytes());
            c.put(&h, 100, token("Bearer x"));
        }
        assert!(c.len() <= MAX_ENTRIES);
        let big = "x".repeat(MAX_BYTES / 2 + 1);
        c.put(&[3; 32], 100, token(&big));
        c.put(&[4; 32], 100, token(&big));
        assert_eq!(c.len(), 1, "the byte bound empties the copy");
        assert_eq!(
            c.get(&[4; 32], 0).map(|a| a.authorization.len()),
            Some(big.len())
        );
        c.forget(|t| t.authorization.len() == big.len());
        assert!(c.is_empty());
        c.keep(false);
        c.put(&[5; 32], 100, token("Bearer y"));
        assert!(c.is_empty(), "nothing kept while off");
        c.keep(true);
        c.put(&[5; 32], 100, token("Bearer y"));
        assert_eq!(c.len(), 1);
    }
}
