//! DPoP state shared by every worker: the `jti`s seen (replay detection, RFC 9449 §11.1) and
//! the key server nonces are made with (§8).
//!
//! Replay: `replay_entries` slots in shared data (`dp<replay_entries>:<slot>`), each holding at
//! most one proof's key (SHA-256 of the proof's key thumbprint and its `jti`) until the proof
//! would be too old to be accepted anyway. A proof's key picks [`WAYS`] consecutive slots; a
//! new proof goes in a free or expired one with a compare-and-swap. Exact within the window:
//! - a proof seen before, live in one of its slots, is a replay;
//! - two workers inserting the same proof at once: the compare-and-swap lets one write a slot
//!   and the other retry (and find it); if they wrote two different slots (one had just
//!   expired), each looks again after writing and the one in the lower slot wins. Exactly one
//!   passes;
//! - a live entry is never overwritten: with no free slot among its ways, the store answers
//!   [`Seen::Full`] and the request is refused (503), never accepted unchecked.
//!
//! Like the split store, the slots are created empty when the configuration loads (Envoy's
//! compare-and-swap only protects a key that exists), so the memory is allocated up front:
//! `replay_entries` keys of at most [`crate::storage::record::HEADER_LEN`] bytes.

use sha2::{Digest, Sha256};

use crate::hash::{constant_time_eq, slot_of, TokenHash};
use crate::host::Host;
use crate::storage::record;

/// Slots a proof may occupy.
pub const WAYS: u32 = 8;
const MAX_ATTEMPTS: usize = 16;
const MAGIC: &[u8; 3] = b"dp1";
const KIND_SEEN: u8 = 1;

/// What the store says of a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Never seen: recorded now, until it expires.
    Fresh,
    /// Seen before and still live: refused.
    Replayed,
    /// No room among its slots: refused, never forgotten.
    Full,
}

/// The replay store of one size (a value, made where it is needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayStore {
    slots: u32,
}

/// The store key of a proof: its key's thumbprint and its `jti` (a `jti` is unique per key).
pub fn proof_hash(jkt: &str, jti: &str) -> TokenHash {
    let mut h = Sha256::new();
    h.update((jkt.len() as u64).to_be_bytes());
    h.update(jkt.as_bytes());
    h.update(jti.as_bytes());
    h.finalize().into()
}

impl ReplayStore {
    pub fn new(slots: u32) -> Self {
        Self {
            slots: slots.max(1),
        }
    }

    fn key(&self, slot: impl std::fmt::Display) -> String {
        format!("dp{}:{slot}", self.slots)
    }

    /// Creates every slot, empty, and a marker (see the split store's). Returns whether it
    /// did the work.
    pub fn initialize(&self, host: &dyn Host) -> bool {
        let marker = self.key("ready");
        if host.shared_get_cas(&marker).1.is_some() {
            return false;
        }
        for slot in 0..self.slots {
            let key = self.key(slot);
            if host.shared_get_cas(&key).1.is_none() {
                let _ = host.shared_set_cas(&key, &[], None);
            }
        }
        let _ = host.shared_set_cas(&marker, b"1", None);
        true
    }

    fn ways(&self, hash: &TokenHash) -> Vec<String> {
        let n = u64::from(self.slots);
        let base = slot_of(hash, n);
        (0..u64::from(WAYS.min(self.slots)))
            .map(|i| self.key((base + i) % n))
            .collect()
    }

    /// Records proof `hash`, live until `expires_at_ms`, unless it was seen.
    pub fn check_and_insert(
        &self,
        host: &dyn Host,
        hash: &TokenHash,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Seen {
        let keys = self.ways(hash);
        let live = |value: &[u8]| {
            record::decode(MAGIC, value)
                .filter(|r| now_ms < r.expires_at_ms)
                .map(|r| constant_time_eq(r.hash, hash))
        };
        let value = record::encode(MAGIC, KIND_SEEN, hash, expires_at_ms, "", "");
        for _ in 0..MAX_ATTEMPTS {
            let mut free = None;
            let mut created = false;
            for (i, key) in keys.iter().enumerate() {
                let (stored, cas) = host.shared_get_cas(key);
                if cas.is_none() {
                    created = true;
                    // Not created by `initialize` (it should have been): create it empty, so
                    // that the write below can be a compare-and-swap like any other.
                    let _ = host.shared_set_cas(key, &[], None);
                    continue;
                }
                match stored.as_deref().and_then(live) {
                    Some(true) => return Seen::Replayed,
                    Some(false) => {}
                    None => {
                        if free.is_none() {
                            free = Some((i, cas));
                        }
                    }
                }
            }
            let Some((mine, cas)) = free else {
                if created {
                    continue;
                }
                return Seen::Full;
            };
            let Some(key) = keys.get(mine) else {
                return Seen::Full;
            };
            if host.shared_set_cas(key, &value, cas).is_err() {
                // Another proof (or this one) took the slot first: look again.
                continue;
            }
            // Written. The same proof written at once into a lower slot wins.
            let earlier = keys.iter().take(mine).any(|k| {
                host.shared_get(k)
                    .as_deref()
                    .and_then(live)
                    .unwrap_or(false)
            });
            return if earlier { Seen::Replayed } else { Seen::Fresh };
        }
        Seen::Full
    }
}

/// The shared-data key of the nonce key of a configuration.
pub fn nonce_key_name(namespace: &str) -> String {
    format!("dpn{namespace}:key")
}

/// The key server nonces are made with, shared by every worker: made by the first worker that
/// needs it (`random`), then read by all. Two workers making one at once both write, and both
/// read back the one that stayed: nonces are checked against that one.
pub fn nonce_key(
    host: &dyn Host,
    namespace: &str,
    random: impl FnOnce() -> [u8; 32],
) -> Option<[u8; 32]> {
    let name = nonce_key_name(namespace);
    if let Some(v) = host.shared_get(&name) {
        return v.try_into().ok();
    }
    let _ = host.shared_set_cas(&name, &random(), None);
    host.shared_get(&name).and_then(|v| v.try_into().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeHost;

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn a_proof_passes_once_within_its_window() {
        let (host, store) = (FakeHost::at(T0), ReplayStore::new(64));
        assert!(store.initialize(&host));
        let h = proof_hash("jkt", "j-1");
        assert_eq!(
            store.check_and_insert(&host, &h, T0 + 10_000, T0),
            Seen::Fresh
        );
        assert_eq!(
            store.check_and_insert(&host, &h, T0 + 10_000, T0 + 9_999),
            Seen::Replayed
        );
        // Another key, same jti: another proof.
        let other = proof_hash("jkt2", "j-1");
        assert_eq!(
            store.check_and_insert(&host, &other, T0 + 10_000, T0),
            Seen::Fresh
        );
        // Past its window the slot is free again (the proof itself is too old by then).
        assert_eq!(
            store.check_and_insert(&host, &h, T0 + 20_000, T0 + 10_000),
            Seen::Fresh
        );
    }

    #[test]
    fn a_full_store_refuses_and_forgets_nothing() {
        let (host, store) = (FakeHost::at(T0), ReplayStore::new(WAYS));
        store.initialize(&host);
        let hashes: Vec<TokenHash> = (0..WAYS).map(|i| proof_hash("k", &i.to_string())).collect();
        for h in &hashes {
            assert_eq!(
                store.check_and_insert(&host, h, T0 + 1_000, T0),
                Seen::Fresh
            );
        }
        let more = proof_hash("k", "one more");
        assert_eq!(
            store.check_and_insert(&host, &more, T0 + 1_000, T0),
            Seen::Full
        );
        for h in &hashes {
            assert_eq!(
                store.check_and_insert(&host, h, T0 + 1_000, T0),
                Seen::Replayed
            );
        }
        assert_eq!(
            store.check_and_insert(&host, &more, T0 + 2_000, T0 + 1_000),
            Seen::Fresh
        );
    }

    #[test]
    fn two_workers_inserting_one_proof_at_once_let_exactly_one_pass() {
        // The other worker writes the same proof between this worker's read and its write.
        let (host, store) = (FakeHost::at(T0), ReplayStore::new(64));
        store.initialize(&host);
        let h = proof_hash("jkt", "raced");
        let writes = host.writes();
        host.interfere_at(writes + 1, move |h2| {
            assert_eq!(
                ReplayStore::new(64).check_and_insert(
                    h2,
                    &proof_hash("jkt", "raced"),
                    T0 + 1_000,
                    T0
                ),
                Seen::Fresh
            );
        });
        assert_eq!(
            store.check_and_insert(&host, &h, T0 + 1_000, T0),
            Seen::Replayed
        );
    }

    #[test]
    fn the_nonce_key_is_made_once_and_shared() {
        let host = FakeHost::at(T0);
        let a = nonce_key(&host, "ns", || [1; 32]).unwrap();
        let b = nonce_key(&host, "ns", || [2; 32]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, [1; 32]);
    }
}
