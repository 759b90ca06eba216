//! The split-token store: `header.payload` by signature hash, in Envoy's shared data, so every
//! worker (and every listener of the same `vm_id` and `split.max_entries`) sees one store.
//!
//! Shared data never frees a key, so the key space is fixed: `max_entries` slots
//! (`st<max_entries>:<slot>`). A signature hash maps to a window of [`WAYS`] consecutive slots
//! (4-way set associative). A write goes, in order, to the slot already holding that hash, a
//! free or expired slot, or the slot expiring soonest. Every write is a compare-and-swap on the
//! slot (retried a bounded number of times), so concurrent writers on different workers never
//! lose an update, and a reader sees either a complete old entry or a complete new one.
//!
//! Envoy's compare-and-swap only protects a key that exists (a write without a version always
//! succeeds), so [`Store::initialize`] creates every slot, empty, when the configuration is
//! loaded, before any request can write. The store's memory is therefore allocated up front
//! and never grows: `max_entries` keys, each holding at most one entry.
//!
//! Entries use [`crate::storage::record`]'s layout with magic `st1`; the body is `header.payload`. A
//! revoked entry keeps its expiry (so the slot frees itself when the token would have expired
//! anyway) and loses its `header.payload`.

use crate::hash::{constant_time_eq, TokenHash};
use crate::host::Host;
use crate::storage::record::{self, Record};
use crate::token::split::Entry;

/// Slots a hash may occupy.
pub const WAYS: u32 = 4;
/// Compare-and-swap attempts before a write gives up.
pub const MAX_ATTEMPTS: usize = 16;

const MAGIC: &[u8; 3] = b"st1";
const KIND_ACTIVE: u8 = 1;
const KIND_REVOKED: u8 = 2;

/// What the store holds for a signature hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Hit(Stored),
    Expired,
    Revoked,
    Miss,
}

/// A live entry read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    text: String,
    scope_len: usize,
    pub expires_at_ms: u64,
    /// The slot's shared-data version: changes with every write to the slot.
    pub version: Option<u32>,
}

impl Stored {
    /// An entry that is not (yet) in a slot: no version.
    pub fn new(scope: &str, header_payload: &str, expires_at_ms: u64) -> Self {
        Self {
            text: format!("{scope}{header_payload}"),
            scope_len: scope.len(),
            expires_at_ms,
            version: None,
        }
    }

    pub fn scope(&self) -> &str {
        self.text.get(..self.scope_len).unwrap_or("")
    }
    pub fn header_payload(&self) -> &str {
        self.text.get(self.scope_len..).unwrap_or("")
    }
}

/// The store could not complete a write: slots kept changing under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("store busy: slot kept changing after {MAX_ATTEMPTS} attempts")]
pub struct Busy;

/// Where a store lives: its size, which is also its key prefix (`st<max_entries>:`), so two
/// configurations of one `vm_id` with the same size share a store and others never meet. A
/// value, made where it is needed: the slots themselves are the store's only state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Store {
    max_entries: u32,
}

fn encode(kind: u8, hash: &TokenHash, expires_at_ms: u64, scope: &str, hp: &str) -> Vec<u8> {
    record::encode(MAGIC, kind, hash, expires_at_ms, scope, hp)
}

fn decode(value: &[u8]) -> Option<Record<'_>> {
    record::decode(MAGIC, value)
}

impl Store {
    pub fn new(max_entries: u32) -> Self {
        Self {
            max_entries: max_entries.max(1),
        }
    }

    fn key(&self, slot: impl std::fmt::Display) -> String {
        format!("st{}:{slot}", self.max_entries)
    }

    /// Creates every slot that does not exist yet, empty, and a marker so that later
    /// configurations (other workers, reloads) skip the work. Returns whether it did the work.
    pub fn initialize(&self, host: &dyn Host) -> bool {
        let marker = self.key("ready");
        if host.shared_get_cas(&marker).1.is_some() {
            return false;
        }
        crate::storage::slots::create(host, self.max_entries, |slot| self.key(slot));
        let _ = host.shared_set_cas(&marker, b"1", None);
        true
    }

    /// The shared-data keys of the slots `hash` may occupy, in probe order.
    pub fn slot_keys(&self, hash: &TokenHash) -> impl Iterator<Item = String> + '_ {
        let n = u64::from(self.max_entries);
        let base = crate::hash::slot_of(hash, n);
        (0..u64::from(WAYS.min(self.max_entries))).map(move |i| self.key((base + i) % n))
    }

    /// Looks a signature hash up. Stops at the first slot holding that hash.
    pub fn lookup(&self, host: &dyn Host, hash: &TokenHash, now_ms: u64) -> Found {
        for key in self.slot_keys(hash) {
            let (Some(value), version) = host.shared_get_cas(&key) else {
                continue;
            };
            let Some(slot) = decode(&value) else { continue };
            if !constant_time_eq(slot.hash, hash) {
                continue;
            }
            if now_ms >= slot.expires_at_ms {
                return Found::Expired;
            }
            return match slot.kind {
                KIND_ACTIVE if !slot.body.is_empty() => {
                    let scope_len = slot.scope.len();
                    let mut bytes = Vec::with_capacity(scope_len + slot.body.len());
                    bytes.extend_from_slice(slot.scope);
                    bytes.extend_from_slice(slot.body);
                    match String::from_utf8(bytes) {
                        Ok(text) => Found::Hit(Stored {
                            text,
                            scope_len,
                            expires_at_ms: slot.expires_at_ms,
                            version,
                        }),
                        Err(_) => Found::Miss,
                    }
                }
                KIND_REVOKED => Found::Revoked,
                _ => Found::Miss,
            };
        }
        Found::Miss
    }

    /// Stores (or replaces) an entry.
    pub fn put(&self, host: &dyn Host, entry: &Entry, now_ms: u64) -> Result<(), Busy> {
        let value = encode(
            KIND_ACTIVE,
            &entry.hash,
            entry.expires_at_ms,
            &entry.scope,
            &entry.header_payload,
        );
        for _ in 0..MAX_ATTEMPTS {
            let (key, cas, same) = self.choose(host, &entry.hash, now_ms);
            match cas {
                // Not created by `initialize` (it should have been): create it empty, then
                // compare-and-swap against that version like any other write.
                None => {
                    let _ = host.shared_set_cas(&key, &[], None);
                }
                Some(cas) => {
                    if host.shared_set_cas(&key, &value, Some(cas)).is_ok() {
                        if same {
                            // A re-publication: workers' copies of the old entry go.
                            host.bump_split_epoch();
                        }
                        return Ok(());
                    }
                }
            }
        }
        Err(Busy)
    }

    /// Revokes the entry for `hash`, if the store holds a live one. Returns whether it did.
    /// The epoch moves whatever the store held, after the tombstone is written: a worker may
    /// still have the entry in its own copy after another entry took its slot.
    pub fn revoke(&self, host: &dyn Host, hash: &TokenHash, now_ms: u64) -> Result<bool, Busy> {
        let revoked = self.revoke_slots(host, hash, now_ms);
        host.bump_split_epoch();
        revoked
    }

    fn revoke_slots(&self, host: &dyn Host, hash: &TokenHash, now_ms: u64) -> Result<bool, Busy> {
        'attempt: for _ in 0..MAX_ATTEMPTS {
            let mut revoked = false;
            for key in self.slot_keys(hash) {
                let (value, cas) = host.shared_get_cas(&key);
                let Some(slot) = value.as_deref().and_then(decode) else {
                    continue;
                };
                if !constant_time_eq(slot.hash, hash)
                    || slot.kind != KIND_ACTIVE
                    || now_ms >= slot.expires_at_ms
                {
                    continue;
                }
                let tombstone = encode(KIND_REVOKED, hash, slot.expires_at_ms, "", "");
                if host.shared_set_cas(&key, &tombstone, cas).is_err() {
                    continue 'attempt;
                }
                revoked = true;
            }
            return Ok(revoked);
        }
        Err(Busy)
    }

    /// Picks the slot a write of `hash` goes to, with the version it was read at (`None`:
    /// the key was never written) and whether it holds `hash` already.
    fn choose(
        &self,
        host: &dyn Host,
        hash: &TokenHash,
        now_ms: u64,
    ) -> (String, Option<u32>, bool) {
        // (key, cas, rank): lower rank wins; the same hash beats a free slot beats the live
        // entry that expires soonest.
        let mut best: Option<(String, Option<u32>, (u8, u64))> = None;
        for key in self.slot_keys(hash) {
            let (value, cas) = host.shared_get_cas(&key);
            let rank = match value.as_deref().map(decode) {
                None | Some(None) => (1, 0),
                Some(Some(slot)) if constant_time_eq(slot.hash, hash) => (0, 0),
                Some(Some(slot)) if now_ms >= slot.expires_at_ms => (1, 0),
                Some(Some(slot)) => (2, slot.expires_at_ms),
            };
            if rank == (0, 0) {
                return (key, cas, true);
            }
            if best.as_ref().is_none_or(|(_, _, r)| rank < *r) {
                best = Some((key, cas, rank));
            }
        }
        match best {
            Some((key, cas, _)) => (key, cas, false),
            // WAYS >= 1 and max_entries >= 1: there is always a slot.
            None => (self.key(0), None, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeHost;
    use crate::token::split::signature_hash;

    const NOW: u64 = 1_700_000_000_000;

    fn entry(sig: &str, hp: &str, expires_at_ms: u64) -> Entry {
        Entry {
            hash: signature_hash(sig),
            header_payload: hp.to_owned(),
            expires_at_ms,
            scope: "read".to_owned(),
        }
    }

    fn hit(found: Found) -> String {
        match found {
            Found::Hit(s) => {
                assert_eq!(s.scope(), "read");
                s.header_payload().to_owned()
            }
            other => panic!("expected a hit, got {other:?}"),
        }
    }

    #[test]
    fn stores_replaces_expires_and_revokes() {
        let (store, host) = (Store::new(100), FakeHost::at(NOW));
        let h = signature_hash("sig");
        assert_eq!(store.lookup(&host, &h, NOW), Found::Miss);
        store
            .put(&host, &entry("sig", "h.p1", NOW + 10), NOW)
            .unwrap();
        assert_eq!(hit(store.lookup(&host, &h, NOW)), "h.p1");
        store
            .put(&host, &entry("sig", "h.p2", NOW + 10), NOW)
            .unwrap();
        assert_eq!(
            hit(store.lookup(&host, &h, NOW)),
            "h.p2",
            "re-publish replaces"
        );
        assert_eq!(store.lookup(&host, &h, NOW + 10), Found::Expired);
        assert_eq!(store.revoke(&host, &h, NOW), Ok(true));
        assert_eq!(store.lookup(&host, &h, NOW), Found::Revoked);
        assert_eq!(store.revoke(&host, &h, NOW), Ok(false), "already revoked");
        assert_eq!(
            store.revoke(&host, &signature_hash("other"), NOW),
            Ok(false)
        );
        assert_eq!(store.lookup(&host, &h, NOW + 10), Found::Expired);
        store
            .put(&host, &entry("sig", "h.p3", NOW + 20), NOW)
            .unwrap();
        assert_eq!(
            hit(store.lookup(&host, &h, NOW)),
            "h.p3",
            "published again after a revocation"
        );
    }

    #[test]
    fn key_space_is_bounded_and_newest_entries_survive() {
        let (store, host) = (Store::new(50), FakeHost::at(NOW));
        for i in 0..500u64 {
            // Later tokens expire later, as they do in practice.
            let e = entry(&format!("sig{i}"), &format!("h.p{i}"), NOW + 1_000 + i);
            store.put(&host, &e, NOW).unwrap();
        }
        assert_eq!(host.key_count(), 50, "exactly max_entries keys");
        let newest = (490..500u64)
            .filter(|i| {
                matches!(
                    store.lookup(&host, &signature_hash(&format!("sig{i}")), NOW),
                    Found::Hit(_)
                )
            })
            .count();
        assert_eq!(newest, 10, "the 10 newest entries are all readable");
    }

    #[test]
    fn expired_slots_are_reused_before_live_ones_are_evicted() {
        let (store, host) = (Store::new(4), FakeHost::at(NOW));
        for i in 0..3 {
            let e = entry(&format!("live{i}"), "h.p", NOW + 60_000);
            store.put(&host, &e, NOW).unwrap();
        }
        store
            .put(&host, &entry("old", "h.p", NOW + 10), NOW)
            .unwrap();
        // `old` has expired by now + 20: the new entry takes its slot, the live ones stay.
        store
            .put(&host, &entry("new", "h.p", NOW + 60_000), NOW + 20)
            .unwrap();
        for sig in ["live0", "live1", "live2", "new"] {
            hit(store.lookup(&host, &signature_hash(sig), NOW + 20));
        }
    }

    #[test]
    fn a_racing_writer_is_not_lost() {
        let (store, host) = (Store::new(2), FakeHost::at(NOW));
        store.initialize(&host);
        store
            .put(&host, &entry("a", "h.a", NOW + 100), NOW)
            .unwrap();
        store
            .put(&host, &entry("d", "h.d", NOW + 200), NOW)
            .unwrap();
        // Writing `c` evicts `a` (expires soonest). Another worker does the same with `b`
        // between our read and our write: our compare-and-swap fails, we read again and evict
        // `d` instead. A blind write would have replaced `b`.
        let store2 = store;
        host.interfere_at(host.writes() + 1, move |h| {
            store2.put(h, &entry("b", "h.b", NOW + 300), NOW).unwrap();
        });
        store
            .put(&host, &entry("c", "h.c", NOW + 400), NOW)
            .unwrap();
        assert_eq!(hit(store.lookup(&host, &signature_hash("b"), NOW)), "h.b");
        assert_eq!(hit(store.lookup(&host, &signature_hash("c"), NOW)), "h.c");
        for evicted in ["a", "d"] {
            assert_eq!(
                store.lookup(&host, &signature_hash(evicted), NOW),
                Found::Miss
            );
        }
    }

    #[test]
    fn concurrent_first_writes_to_a_fresh_slot_keep_both() {
        let (store, host) = (Store::new(2), FakeHost::at(NOW));
        // Both hashes share the window of two never-created slots; the racing writer fills
        // the slot we picked between our read and our write. We must not overwrite it.
        let a = entry("x1", "h.x1", NOW + 100);
        let b = entry("x2", "h.x2", NOW + 100);
        let store2 = store;
        let b2 = b.clone();
        host.interfere_at(2, move |h| store2.put(h, &b2, NOW).unwrap());
        store.put(&host, &a, NOW).unwrap();
        assert_eq!(hit(store.lookup(&host, &a.hash, NOW)), "h.x1");
        assert_eq!(hit(store.lookup(&host, &b.hash, NOW)), "h.x2");
    }

    #[test]
    fn garbage_in_a_slot_is_a_miss_and_is_overwritten() {
        let (store, host) = (Store::new(1), FakeHost::at(NOW));
        host.shared_set("st1:0", b"st1\x01garbage");
        let h = signature_hash("s");
        assert_eq!(store.lookup(&host, &h, NOW), Found::Miss);
        store.put(&host, &entry("s", "h.p", NOW + 5), NOW).unwrap();
        assert_eq!(hit(store.lookup(&host, &h, NOW)), "h.p");
    }

    #[test]
    fn initialize_creates_every_slot_once_and_keeps_entries() {
        let (store, host) = (Store::new(20), FakeHost::at(NOW));
        assert!(store.initialize(&host));
        assert_eq!(host.key_count(), 21, "20 slots and the marker");
        store.put(&host, &entry("s", "h.p", NOW + 5), NOW).unwrap();
        assert!(!store.initialize(&host), "second configuration skips");
        host.remove("st20:ready");
        assert!(store.initialize(&host));
        hit(store.lookup(&host, &signature_hash("s"), NOW));
    }

    #[test]
    fn slot_keys_stay_in_range_and_in_the_namespace() {
        let store = Store::new(3);
        let keys: Vec<String> = store.slot_keys(&signature_hash("s")).collect();
        assert_eq!(keys.len(), 3, "window capped at max_entries");
        assert!(keys
            .iter()
            .all(|k| ["st3:0", "st3:1", "st3:2"].contains(&k.as_str())));
        assert_eq!(Store::new(1000).slot_keys(&signature_hash("s")).count(), 4);
    }
}
