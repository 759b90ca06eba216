//! DPoP state shared by every worker: the `jti`s seen (replay detection, RFC 9449 §11.1), each
//! proof key's share of them, and the key server nonces are made with (§8).
//!
//! Replay: slots in shared data (`dp:<slot>`), each holding at most one proof's key (SHA-256 of
//! the proof's key thumbprint and its `jti`) until the proof would be too old to be accepted
//! anyway. A proof's key picks [`WAYS`] consecutive slots; a new proof goes in a free or expired
//! one with a compare-and-swap. Exact within the window:
//! - a proof seen before, live in one of its slots, is a replay;
//! - two workers inserting the same proof at once: the compare-and-swap lets one write a slot
//!   and the other retry (and find it); if they wrote two different slots (one had just
//!   expired), each looks again after writing and the one in the lower slot wins. Exactly one
//!   passes;
//! - a live entry is never overwritten: with no free slot among its ways, the store answers
//!   [`Seen::Full`] and the request is refused (503), never accepted unchecked.
//!
//! Like the split store, the slots are created empty when the configuration loads (Envoy's
//! compare-and-swap only protects a key that exists), so the memory is allocated up front.
//!
//! **One store per VM, whatever the reloads.** The slot keys do not name a size: every
//! configuration that shares the VM (`vm_id`) shares the slots, and a configuration with
//! another `replay_entries` (a reload, another listener) reuses those that exist and creates
//! only the missing ones, so memory is bounded by the largest size configured. Where a proof
//! lives depends on a size, so the sizes in use are kept in a layout record (`dp:layout`), each
//! until the proofs inserted under it are too old to matter: every proof is inserted under the
//! largest live size (one set of ways for one proof: the compare-and-swap above is exact across
//! listeners), after looking in the ways of every other live size. A proof accepted before a
//! reload is a replay after it, whatever the new size.
//!
//! **One key's share** ([`KeyQuota`]): a proof is recorded only once its token is resolved,
//! active and bound to the proof's key (`pipeline/proof.rs`), and no key may hold more than
//! `dpop.max_proofs_per_key` live proofs: the count of proofs each key recorded in the current
//! and the previous time bucket (a bucket lasts as long as a proof lives), in a table of its
//! own (`dq:<slot>`, placed by a keyed hash under a random salt, so that nobody can aim keys
//! at one set). Past its share a key's requests are refused (429) while every other key keeps
//! its room: a client holding one valid bound token cannot fill the store for everyone.

use sha2::{Digest, Sha256};

use crate::hash::{constant_time_eq, slot_of, TokenHash};
use crate::host::Host;
use crate::storage::layout::{Layout, LayoutRecord};
use crate::storage::{record, slots};

/// Slots a proof may occupy.
pub const WAYS: u32 = 8;
/// Slots a key's counter may occupy in [`KeyQuota`]'s table.
pub const QUOTA_WAYS: u32 = 8;
const MAX_ATTEMPTS: usize = 16;
const MAGIC: &[u8; 3] = b"dp1";
const QUOTA_MAGIC: &[u8; 3] = b"dq1";
const KIND_SEEN: u8 = 1;
/// The longest a proof can be live under any configuration (`max_age_s` 3600, twice a skew of
/// 300, and a second), in ms: how long a replaced layout is still looked in.
pub const MAX_WINDOW_MS: u64 = (3_600 + 2 * 300 + 1) * 1_000;
/// Where the sizes in use are listed.
const LAYOUT: LayoutRecord = LayoutRecord {
    key: "dp:layout",
    magic: "dpl1",
};

/// What the store says of a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Never seen: recorded now, until it expires.
    Fresh,
    /// Seen before and still live: refused.
    Replayed,
    /// No room among its slots: refused, never forgotten.
    Full,
    /// Not seen, but its key holds its share of the store: refused, not recorded.
    OverQuota { retry_after_s: u64 },
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

fn slot_key(slot: impl std::fmt::Display) -> String {
    format!("dp:{slot}")
}

/// The ways of `hash` in a store of `slots` slots.
fn ways(hash: &TokenHash, slots: u32) -> impl Iterator<Item = String> {
    let n = u64::from(slots.max(1));
    let base = slot_of(hash, n);
    (0..u64::from(WAYS.min(slots.max(1)))).map(move |i| slot_key((base + i) % n))
}

impl ReplayStore {
    pub fn new(slots: u32) -> Self {
        Self {
            slots: slots.max(1),
        }
    }

    /// Creates the slots this size needs that do not exist yet, and lists the size in the
    /// layout. Returns how many slots it created.
    pub fn initialize(&self, host: &dyn Host) -> u32 {
        let created = slots::create(host, self.slots, slot_key);
        let now = host.now_ms();
        LAYOUT.list(host, &[self.slots], now.saturating_add(MAX_WINDOW_MS), now);
        created
    }

    /// The layout in force (empty when there is none).
    pub fn layout(&self, host: &dyn Host) -> Layout {
        LAYOUT.load(host)
    }

    /// Records proof `hash`, live until `expires_at_ms`, unless it was seen: under the largest
    /// live size, after looking in the ways of every other live size. `admit` is asked once,
    /// with that size, when the proof is not a replay and has a free slot, just before it is
    /// written (its key's share, [`KeyQuota`]): a replay or a full store costs the key
    /// nothing.
    pub fn check_and_insert(
        &self,
        host: &dyn Host,
        hash: &TokenHash,
        expires_at_ms: u64,
        now_ms: u64,
        admit: impl FnOnce(u32) -> Result<(), u64>,
    ) -> Seen {
        let mut admit = Some(admit);
        let live = |value: &[u8]| {
            record::decode(MAGIC, value)
                .filter(|r| now_ms < r.expires_at_ms)
                .map(|r| constant_time_eq(r.hash, hash))
        };
        let mut layout = self.layout(host);
        let target = layout.target(self.slots, now_ms);
        // The size inserted under stays listed while it may hold this proof (renewed at half
        // the longest window, so the layout is written about once per half hour), and this
        // configuration's own size too, so that the largest is computed with it.
        let renew = now_ms.saturating_add(MAX_WINDOW_MS / 2).max(expires_at_ms);
        let listed = |l: &Layout, s: u32| l.until(s).is_some_and(|u| u >= renew);
        if !listed(&layout, target) || !listed(&layout, self.slots) {
            layout = LAYOUT.list(
                host,
                &[target, self.slots],
                now_ms.saturating_add(MAX_WINDOW_MS),
                now_ms,
            );
        }
        let target = layout.target(self.slots, now_ms);
        for size in layout.live(now_ms) {
            if size == target {
                continue;
            }
            let seen = ways(hash, size)
                .any(|k| host.shared_get(&k).as_deref().and_then(live) == Some(true));
            if seen {
                return Seen::Replayed;
            }
        }
        let keys: Vec<String> = ways(hash, target).collect();
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
            if let Some(admit) = admit.take() {
                if let Err(retry_after_s) = admit(target) {
                    return Seen::OverQuota { retry_after_s };
                }
            }
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

/// What [`KeyQuota::admit`] says of one more proof of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// The key holds its share: refused, to retry after this many seconds (when the oldest
    /// bucket it counted is over).
    Over {
        retry_after_s: u64,
    },
}

/// The count of proofs each key recorded, in the current and the previous bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyQuota {
    /// Slots of the table (`dq:<slot>`).
    pub slots: u32,
    /// Proofs one key may hold: `dpop.max_proofs_per_key`.
    pub limit: u32,
    /// A bucket's length: as long as a proof can live.
    pub bucket_s: u64,
}

fn quota_key(slot: impl std::fmt::Display) -> String {
    format!("dq:{slot}")
}

/// The name of the salt of [`KeyQuota`]'s placement.
const QUOTA_SALT: &str = "dq:salt";

impl KeyQuota {
    /// The table for a replay store of `replay_entries`: one slot for every 8 of its entries
    /// (at least 64).
    pub fn table_slots(replay_entries: u32) -> u32 {
        (replay_entries / 8).max(64)
    }

    /// Creates the table's missing slots (the same on every reload of the same size; another
    /// size reuses what exists).
    pub fn initialize(&self, host: &dyn Host) -> u32 {
        slots::create(host, self.slots, quota_key)
    }

    /// Counts one more proof of the key whose thumbprint hashes to `key`, unless the key
    /// already holds its share. `salt`: the table's random salt ([`slots::shared_secret`]).
    ///
    /// A counter says when its current period started and how long periods last (the window
    /// of the configuration that started it): every configuration of the VM reads it the same
    /// way, whatever its own window.
    pub fn admit(&self, host: &dyn Host, key: &TokenHash, salt: &[u8; 32], now_ms: u64) -> Admit {
        let now_s = now_ms / 1_000;
        let mut placed = Sha256::new();
        placed.update(salt);
        placed.update(key);
        let placed: TokenHash = placed.finalize().into();
        let n = u64::from(self.slots.max(1));
        let base = slot_of(&placed, n);
        let keys: Vec<String> = (0..u64::from(QUOTA_WAYS.min(self.slots.max(1))))
            .map(|i| quota_key((base + i) % n))
            .collect();
        let fresh = Counts {
            start_s: now_s,
            period_s: self.bucket_s.max(1),
            current: 0,
            previous: 0,
        };
        for _ in 0..MAX_ATTEMPTS {
            let mut mine = None;
            // The slot to take when the key has none: a free one, else the one whose key
            // recorded the fewest proofs (a legitimate key loses at most its count; the key
            // that fills its share is never the one with the fewest).
            let mut take: Option<(usize, Option<u32>, u64)> = None;
            for (i, slot) in keys.iter().enumerate() {
                let (value, cas) = host.shared_get_cas(slot);
                if cas.is_none() {
                    let _ = host.shared_set_cas(slot, &[], None);
                    continue;
                }
                let counted = value
                    .as_deref()
                    .and_then(|v| record::decode(QUOTA_MAGIC, v))
                    .and_then(|r| Some((r, Counts::parse(r.body)?.at(now_s))));
                match counted {
                    Some((r, counts)) if constant_time_eq(r.hash, key) => {
                        mine = Some((i, cas, counts));
                        break;
                    }
                    Some((_, counts)) => {
                        let load = counts.live();
                        if take.is_none_or(|(_, _, l)| load < l) {
                            take = Some((i, cas, load));
                        }
                    }
                    None => {
                        if take.is_none_or(|(_, _, l)| l > 0) {
                            take = Some((i, cas, 0));
                        }
                    }
                }
            }
            let (slot, cas, counts) = match (mine, take) {
                (Some(m), _) => m,
                (None, Some((i, cas, _))) => (i, cas, fresh),
                (None, None) => continue,
            };
            if counts.live() >= u64::from(self.limit) {
                return Admit::Over {
                    retry_after_s: counts.retry_after(now_s, self.limit),
                };
            }
            let Some(name) = keys.get(slot) else {
                break;
            };
            let next = Counts {
                current: counts.current.saturating_add(1),
                ..counts
            };
            let until = next
                .start_s
                .saturating_add(2 * next.period_s)
                .saturating_mul(1_000);
            let value = record::encode(QUOTA_MAGIC, 1, key, until, "", &next.to_text());
            if host.shared_set_cas(name, &value, cas).is_ok() {
                return Admit::Yes;
            }
        }
        // The key's own requests kept racing for its counter: refused like an exceeded share.
        Admit::Over {
            retry_after_s: fresh.period_s,
        }
    }
}

/// A key's counter: the proofs it recorded in the current period (from `start_s`, lasting
/// `period_s`) and in the one before. Proofs live at most a period, so the two hold every
/// live proof of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    start_s: u64,
    period_s: u64,
    current: u32,
    previous: u32,
}

impl Counts {
    fn parse(body: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(body).ok()?;
        let mut parts = text.split(' ');
        let counts = Self {
            start_s: parts.next()?.parse().ok()?,
            period_s: parts.next()?.parse().ok().filter(|p| *p > 0)?,
            current: parts.next()?.parse().ok()?,
            previous: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(counts)
    }

    fn to_text(self) -> String {
        format!(
            "{} {} {} {}",
            self.start_s, self.period_s, self.current, self.previous
        )
    }

    /// The counts as of `now_s`: periods that ended are shifted out.
    fn at(self, now_s: u64) -> Self {
        let elapsed = now_s.saturating_sub(self.start_s) / self.period_s;
        let start_s = self.start_s.saturating_add(elapsed * self.period_s);
        match elapsed {
            0 => self,
            1 => Self {
                start_s,
                current: 0,
                previous: self.current,
                ..self
            },
            _ => Self {
                start_s,
                current: 0,
                previous: 0,
                ..self
            },
        }
    }

    fn live(self) -> u64 {
        u64::from(self.current) + u64::from(self.previous)
    }

    /// Seconds until the key holds less than `limit`: the end of this period (the previous
    /// one's proofs forgotten), or of the next one when this period alone filled it.
    fn retry_after(self, now_s: u64, limit: u32) -> u64 {
        let periods = if self.current >= limit { 2 } else { 1 };
        self.start_s
            .saturating_add(periods * self.period_s)
            .saturating_sub(now_s)
            .max(1)
    }
}

/// The shared-data key of the nonce key of a configuration.
pub fn nonce_key_name(namespace: &str) -> String {
    format!("dpn{namespace}:key")
}

/// The key server nonces are made with ([`slots::shared_secret`] of the configuration's namespace):
/// nonces are checked against the one every worker reads.
pub fn nonce_key(
    host: &dyn Host,
    namespace: &str,
    random: impl FnOnce() -> [u8; 32],
) -> Option<[u8; 32]> {
    slots::shared_secret(host, &nonce_key_name(namespace), random)
}

/// The salt of [`KeyQuota`]'s placement.
pub fn quota_salt(host: &dyn Host, random: impl FnOnce() -> [u8; 32]) -> Option<[u8; 32]> {
    slots::shared_secret(host, QUOTA_SALT, random)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeHost;

    const T0: u64 = 1_700_000_000_000;

    /// Every key has room (the share is [`KeyQuota`]'s, tested below).
    fn admit_all(_: u32) -> Result<(), u64> {
        Ok(())
    }

    #[test]
    fn a_proof_passes_once_within_its_window() {
        let (host, store) = (FakeHost::at(T0), ReplayStore::new(64));
        assert_eq!(store.initialize(&host), 64);
        let h = proof_hash("jkt", "j-1");
        assert_eq!(
            store.check_and_insert(&host, &h, T0 + 10_000, T0, admit_all),
            Seen::Fresh
        );
        assert_eq!(
            store.check_and_insert(&host, &h, T0 + 10_000, T0 + 9_999, admit_all),
            Seen::Replayed
        );
        // Another key, same jti: another proof.
        let other = proof_hash("jkt2", "j-1");
        assert_eq!(
            store.check_and_insert(&host, &other, T0 + 10_000, T0, admit_all),
            Seen::Fresh
        );
        // Past its window the slot is free again (the proof itself is too old by then).
        assert_eq!(
            store.check_and_insert(&host, &h, T0 + 20_000, T0 + 10_000, admit_all),
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
                store.check_and_insert(&host, h, T0 + 1_000, T0, admit_all),
                Seen::Fresh
            );
        }
        let more = proof_hash("k", "one more");
        assert_eq!(
            store.check_and_insert(&host, &more, T0 + 1_000, T0, admit_all),
            Seen::Full
        );
        for h in &hashes {
            assert_eq!(
                store.check_and_insert(&host, h, T0 + 1_000, T0, admit_all),
                Seen::Replayed
            );
        }
        assert_eq!(
            store.check_and_insert(&host, &more, T0 + 2_000, T0 + 1_000, admit_all),
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
                    T0,
                    admit_all
                ),
                Seen::Fresh
            );
        });
        assert_eq!(
            store.check_and_insert(&host, &h, T0 + 1_000, T0, admit_all),
            Seen::Replayed
        );
    }

    #[test]
    fn a_proof_accepted_before_a_reload_to_another_size_is_a_replay_after_it() {
        let host = FakeHost::at(T0);
        let (small, big) = (ReplayStore::new(64), ReplayStore::new(256));
        assert_eq!(small.initialize(&host), 64);
        let hashes: Vec<TokenHash> = (0..32).map(|i| proof_hash("k", &i.to_string())).collect();
        for h in &hashes {
            assert_eq!(
                small.check_and_insert(&host, h, T0 + 60_000, T0, admit_all),
                Seen::Fresh
            );
        }
        // Reload: 256 slots (192 more). Every proof seen under 64 is still a replay, for
        // both sizes' configurations (a draining listener still runs the old one).
        assert_eq!(big.initialize(&host), 192);
        for h in &hashes {
            assert_eq!(
                big.check_and_insert(&host, h, T0 + 60_000, T0 + 1, admit_all),
                Seen::Replayed
            );
            assert_eq!(
                small.check_and_insert(&host, h, T0 + 60_000, T0 + 1, admit_all),
                Seen::Replayed
            );
        }
        // Every configuration inserts under the largest live size: one set of ways per proof.
        let new = proof_hash("k", "new");
        assert_eq!(
            small.check_and_insert(&host, &new, T0 + 60_000, T0 + 2, admit_all),
            Seen::Fresh
        );
        assert_eq!(
            big.check_and_insert(&host, &new, T0 + 60_000, T0 + 2, admit_all),
            Seen::Replayed
        );
        assert_eq!(big.layout(&host).target(64, T0 + 2), 256);
        // Back and forth: no slot is ever created twice; memory is the largest size's.
        let keys = host.key_count();
        assert_eq!(small.initialize(&host), 0);
        assert_eq!(big.initialize(&host), 0);
        assert_eq!(host.key_count(), keys, "no new slot for sizes seen before");
        // A size is looked in only while it may hold a live proof: once nobody inserted under
        // it for the longest window, it is gone from the layout.
        let late = T0 + MAX_WINDOW_MS + 1;
        let h = proof_hash("k", "late");
        assert_eq!(
            small.check_and_insert(&host, &h, late + 1_000, late, admit_all),
            Seen::Fresh
        );
        let layout = small.layout(&host);
        assert_eq!(
            layout.target(64, late),
            64,
            "256 expired: nobody inserts there"
        );
        assert!(layout.sizes.iter().all(|(s, u)| *s == 64 || *u <= late));
    }

    #[test]
    fn one_key_holds_at_most_its_share_and_others_keep_theirs() {
        let host = FakeHost::at(T0);
        let quota = KeyQuota {
            slots: 64,
            limit: 3,
            bucket_s: 100,
        };
        quota.initialize(&host);
        let salt = [9; 32];
        let (attacker, other) = ([1; 32], [2; 32]);
        for _ in 0..3 {
            assert_eq!(quota.admit(&host, &attacker, &salt, T0), Admit::Yes);
        }
        // The period alone filled the share: two periods to wait.
        let over = quota.admit(&host, &attacker, &salt, T0 + 1_000);
        assert_eq!(over, Admit::Over { retry_after_s: 199 });
        assert_eq!(quota.admit(&host, &other, &salt, T0), Admit::Yes);
        // The next period still counts the previous one's proofs (they are still live)...
        let next = T0 + 100_000;
        assert_eq!(
            quota.admit(&host, &attacker, &salt, next),
            Admit::Over { retry_after_s: 100 }
        );
        // ...and the one after has forgotten them.
        assert_eq!(
            quota.admit(&host, &attacker, &salt, next + 100_000),
            Admit::Yes
        );
    }

    /// Configurations with other windows (`max_age_s`, `clock_skew_s`) read one counter the
    /// same way: its own period, written in it.
    #[test]
    fn the_share_holds_across_configurations_with_other_windows() {
        let host = FakeHost::at(T0);
        let (long, short) = (
            KeyQuota {
                slots: 64,
                limit: 4,
                bucket_s: 311,
            },
            KeyQuota {
                slots: 64,
                limit: 4,
                bucket_s: 71,
            },
        );
        long.initialize(&host);
        let (salt, key) = ([9; 32], [1; 32]);
        let mut accepted = 0;
        for i in 0..24 {
            let quota = if i % 2 == 0 { &long } else { &short };
            if quota.admit(&host, &key, &salt, T0 + i * 1_000) == Admit::Yes {
                accepted += 1;
            }
        }
        assert_eq!(accepted, 4);
    }

    /// A replayed proof, or one refused for a full store, costs its key nothing: a capture of
    /// someone's proof cannot lock its owner out.
    #[test]
    fn replays_and_a_full_store_cost_the_key_nothing() {
        let host = FakeHost::at(T0);
        let store = ReplayStore::new(WAYS);
        store.initialize(&host);
        let asked = std::cell::Cell::new(0);
        let count = |_: u32| {
            asked.set(asked.get() + 1);
            Ok(())
        };
        let first = proof_hash("k", "1");
        assert_eq!(
            store.check_and_insert(&host, &first, T0 + 1_000, T0, count),
            Seen::Fresh
        );
        for _ in 0..5 {
            assert_eq!(
                store.check_and_insert(&host, &first, T0 + 1_000, T0, count),
                Seen::Replayed
            );
        }
        for i in 2..=WAYS {
            let h = proof_hash("k", &i.to_string());
            assert_eq!(
                store.check_and_insert(&host, &h, T0 + 1_000, T0, count),
                Seen::Fresh
            );
        }
        let more = proof_hash("k", "more");
        assert_eq!(
            store.check_and_insert(&host, &more, T0 + 1_000, T0, count),
            Seen::Full
        );
        assert_eq!(
            asked.get(),
            WAYS,
            "asked once per proof recorded, never for the others"
        );
        let over = |size: u32| {
            assert_eq!(size, WAYS, "the store's size, for the table's placement");
            Err(42)
        };
        let late = proof_hash("k", "late");
        assert_eq!(
            store.check_and_insert(&host, &late, T0 + 2_000, T0 + 1_000, over),
            Seen::OverQuota { retry_after_s: 42 }
        );
    }

    #[test]
    fn a_full_quota_set_gives_way_to_the_least_loaded_key_never_the_heavy_one() {
        let host = FakeHost::at(T0);
        let quota = KeyQuota {
            slots: QUOTA_WAYS,
            limit: 100,
            bucket_s: 100,
        };
        quota.initialize(&host);
        let salt = [0; 32];
        let heavy = [0xee; 32];
        for _ in 0..50 {
            assert_eq!(quota.admit(&host, &heavy, &salt, T0), Admit::Yes);
        }
        // Every other way taken by light keys, then more keys come: the heavy key's count stays.
        for k in 0..(3 * QUOTA_WAYS as u8) {
            assert_eq!(quota.admit(&host, &[k; 32], &salt, T0), Admit::Yes);
        }
        for _ in 0..50 {
            assert_eq!(quota.admit(&host, &heavy, &salt, T0), Admit::Yes);
        }
        assert!(matches!(
            quota.admit(&host, &heavy, &salt, T0),
            Admit::Over { .. }
        ));
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
