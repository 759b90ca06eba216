//! Revocation state shared by every worker of the VM: the marks (what is revoked), the log
//! (what changed, in order), and the participants (who has applied it). No host call is added
//! to a cache hit: each worker applies the log to its own copies on its timer, and a
//! revocation is answered only once every live worker says it has.
//!
//! **Marks** (`rvm:<bucket>`): a token (by the SHA-256 of its value), a subject or a session
//! (by [`crate::token::revocation::subject_key`] and `session_key`: with the time it was
//! revoked, so that a token issued later is served), and the `jti`s of logout tokens accepted
//! (each once). A mark's bucket of [`WAYS`] marks is picked by a keyed hash of its key, under
//! a random salt made once per VM (`rvm:salt`): nobody outside can aim marks at the bucket of
//! someone else's subject. A mark is written with a compare-and-swap on its bucket and lives
//! until its `until`. A mark made by the operator or the provider (the API, a logout) is never
//! dropped to make room: a full bucket refuses the new mark ([`Insert::Full`], answered 503).
//! A token's mark made from an observed RFC 7009 request ([`MarkKind::Observed`], which anyone
//! holding client credentials can cause) gives way to a new mark of the API or a logout, the
//! oldest first, never to another observed one: such requests can never fill a bucket against
//! the operator, nor push out a token revoked that way. Like the
//! replay store, the bucket keys do not name a size: the sizes in use are listed in a layout
//! record (`rvm:layout`, [`crate::storage::layout`]), marks are written under the largest and
//! looked for under every live one, so a reload to another `max_marks` forgets nothing.
//!
//! **Log** (`rvl:seq`, `rvl:<n>`): every revocation takes the next sequence number (a
//! compare-and-swap on `rvl:seq`), then writes its entry in the ring of [`LOG_SLOTS`]. A
//! worker that fell more than a ring behind (or reads an overwritten entry) drops all its
//! copies, which is always safe.
//!
//! **Participants** (`rvp:<n>`, [`PARTICIPANTS`] slots): each worker's configuration claims a
//! slot and, on each tick, writes the sequence number it has applied and the time. A slot
//! whose time is older than [`STALE_MS`] is a worker that is gone (a reloaded configuration):
//! it is not waited for, and its slot is taken again.

use std::cell::{Cell, RefCell};

use crate::hash::{constant_time_eq, slot_of, TokenHash};
use crate::host::Host;
use crate::storage::layout::{Layout, LayoutRecord};
use crate::storage::slots;
use crate::token::revocation::Identity;

/// Marks per bucket.
pub const WAYS: u32 = 8;
/// Entries of the log's ring: also how many revocations made here a fleet's Redis may not
/// have taken yet (`pipeline::fleet_timer`).
pub const LOG_SLOTS: u64 = 4096;
/// Participant slots.
pub const PARTICIPANTS: u32 = 128;
/// A participant that has not written for this long is gone.
pub const STALE_MS: u64 = 2_000;
const MAX_ATTEMPTS: usize = 16;
const MARKS_MAGIC: &[u8; 3] = b"rv2";
const MARK_LEN: usize = 1 + 32 + 8 + 8;
const LAYOUT: LayoutRecord = LayoutRecord {
    key: "rvm:layout",
    magic: "rvl2",
};
const SEQ_KEY: &str = "rvl:seq";
/// The salt of the marks' placement ([`slots::shared_secret`]).
const SALT_KEY: &str = "rvm:salt";

/// What a mark revokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkKind {
    Token = 1,
    Subject = 2,
    Session = 3,
    /// A logout token's `jti`, accepted once.
    Logout = 4,
    /// A token named by an RFC 7009 request the token service answered 200: like
    /// [`MarkKind::Token`], but it gives way to any new mark when its bucket is full.
    Observed = 5,
}

impl MarkKind {
    fn of(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => MarkKind::Token,
            2 => MarkKind::Subject,
            3 => MarkKind::Session,
            4 => MarkKind::Logout,
            5 => MarkKind::Observed,
            _ => return None,
        })
    }
}

/// One revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub kind: MarkKind,
    pub key: TokenHash,
    /// When it was revoked, in whole seconds: a subject's or session's token issued later is
    /// not covered.
    pub at_s: u64,
    pub until_ms: u64,
}

impl Mark {
    /// Whether this mark refuses a token of `identity`. A subject's or session's mark covers
    /// its tokens issued (`iat`) at or before the revocation, and those without an `iat`.
    pub fn covers(&self, identity: &Identity) -> bool {
        let before = || identity.iat.is_none_or(|iat| iat <= self.at_s);
        let same = |key: &Option<TokenHash>| key.is_some_and(|k| constant_time_eq(&k, &self.key));
        match self.kind {
            MarkKind::Token | MarkKind::Observed => constant_time_eq(&identity.token, &self.key),
            MarkKind::Subject => same(&identity.sub) && before(),
            MarkKind::Session => same(&identity.sid) && before(),
            MarkKind::Logout => false,
        }
    }

    /// The mark's bytes ([`Mark::decode`] reads them back).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MARK_LEN);
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(self.kind as u8);
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&self.at_s.to_be_bytes());
        out.extend_from_slice(&self.until_ms.to_be_bytes());
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (&kind, rest) = bytes.split_first()?;
        let (key, rest) = rest.split_at_checked(32)?;
        let (at, until) = rest.split_at_checked(8)?;
        Some(Self {
            kind: MarkKind::of(kind)?,
            key: key.try_into().ok()?,
            at_s: u64::from_be_bytes(at.try_into().ok()?),
            until_ms: u64::from_be_bytes(until.try_into().ok()?),
        })
    }
}

/// What [`Marks::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// Written (or an earlier mark of the same key renewed).
    Added,
    /// Written in the place of the oldest [`MarkKind::Observed`] mark of a full bucket.
    Evicted,
    /// A logout token's `jti` accepted before, and still remembered: a replay.
    Replayed,
    /// No room in the mark's bucket (or the bucket kept changing): nothing written.
    Full,
}

/// The marks of one size (a value, made where it is needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marks {
    buckets: u32,
}

fn bucket_key(bucket: impl std::fmt::Display) -> String {
    format!("rvm:{bucket}")
}

/// The salt marks are placed with: made by the first worker that needs it, then read by all.
pub fn salt(host: &dyn Host) -> Option<[u8; 32]> {
    slots::shared_secret(host, SALT_KEY, crate::hash::random_key)
}

/// Where a mark's key is placed: a keyed hash, so that a key's bucket cannot be known
/// without the salt.
fn placed(salt: &[u8; 32], key: &TokenHash) -> TokenHash {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(salt);
    h.update(key);
    h.finalize().into()
}

/// Kinds whose marks of one key are one mark (a token revoked by the API and seen revoked).
fn family(kind: MarkKind) -> MarkKind {
    match kind {
        MarkKind::Observed => MarkKind::Token,
        other => other,
    }
}

fn decode_bucket(value: &[u8]) -> Vec<Mark> {
    let Some(body) = value.strip_prefix(MARKS_MAGIC) else {
        return Vec::new();
    };
    body.chunks_exact(MARK_LEN)
        .filter_map(Mark::decode)
        .collect()
}

fn encode_bucket(marks: &[Mark]) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + marks.len() * MARK_LEN);
    out.extend_from_slice(MARKS_MAGIC);
    for m in marks {
        m.encode_into(&mut out);
    }
    out
}

impl Marks {
    /// Room for `max_marks` marks.
    pub fn new(max_marks: u32) -> Self {
        Self {
            buckets: max_marks.div_ceil(WAYS).max(1),
        }
    }

    /// Creates the buckets this size needs that do not exist yet, and lists the size in the
    /// layout for `ttl_ms` (a mark lives at most that long). Returns how many it created.
    pub fn initialize(&self, host: &dyn Host, ttl_ms: u64) -> u32 {
        let created = slots::create(host, self.buckets, bucket_key);
        let now = host.now_ms();
        LAYOUT.list(host, &[self.buckets], now.saturating_add(ttl_ms), now);
        if host.shared_get_cas(SEQ_KEY).1.is_none() {
            let _ = host.shared_set_cas(SEQ_KEY, b"0", None);
        }
        created
    }

    /// The sizes marks live under now (read again on each tick: a worker looks under the
    /// sizes it read last).
    pub fn layout(host: &dyn Host) -> Layout {
        LAYOUT.load(host)
    }

    /// Whether a live mark refuses a token of `identity`, under any of `sizes`.
    pub fn covering(
        host: &dyn Host,
        salt: &[u8; 32],
        sizes: &[u32],
        identity: &Identity,
        now_ms: u64,
    ) -> bool {
        let keys: Vec<TokenHash> = [Some(identity.token), identity.sub, identity.sid]
            .iter()
            .flatten()
            .map(|k| placed(salt, k))
            .collect();
        for &size in sizes {
            let mut read: Vec<u64> = Vec::with_capacity(3);
            for key in &keys {
                let bucket = slot_of(key, u64::from(size.max(1)));
                // Two keys in one bucket: read once.
                if read.contains(&bucket) {
                    continue;
                }
                read.push(bucket);
                let Some(value) = host.shared_get(&bucket_key(bucket)) else {
                    continue;
                };
                let covered = decode_bucket(&value)
                    .iter()
                    .any(|m| now_ms < m.until_ms && m.covers(identity));
                if covered {
                    return true;
                }
            }
        }
        false
    }

    /// Whether a live mark of `mark`'s kind and key is written under any live size (a logout
    /// token's `jti` accepted before).
    pub fn holds(host: &dyn Host, salt: &[u8; 32], mark: &Mark, now_ms: u64) -> bool {
        Self::held(host, salt, mark, now_ms, |_| true)
    }

    /// Whether a live mark of `mark`'s kind and key revokes at least as much as it: as late a
    /// revocation time, as late an end, and not one that gives way where it would not (a
    /// mark from another gateway already applied here).
    pub fn holds_as_much(host: &dyn Host, salt: &[u8; 32], mark: &Mark, now_ms: u64) -> bool {
        Self::held(host, salt, mark, now_ms, |m| {
            m.at_s >= mark.at_s
                && m.until_ms >= mark.until_ms
                && (m.kind != MarkKind::Observed || mark.kind == MarkKind::Observed)
        })
    }

    fn held(
        host: &dyn Host,
        salt: &[u8; 32],
        mark: &Mark,
        now_ms: u64,
        enough: impl Fn(&Mark) -> bool,
    ) -> bool {
        let at = placed(salt, &mark.key);
        LAYOUT.load(host).live(now_ms).any(|size| {
            host.shared_get(&bucket_key(slot_of(&at, u64::from(size))))
                .is_some_and(|v| {
                    decode_bucket(&v).iter().any(|m| {
                        now_ms < m.until_ms
                            && family(m.kind) == family(mark.kind)
                            && constant_time_eq(&m.key, &mark.key)
                            && enough(m)
                    })
                })
        })
    }

    /// Writes `mark` under the largest live size (a logout `jti` looked for under the others
    /// first). A mark of the same key is renewed: the later revocation time, the later end (and
    /// a token's mark made by the API no longer gives way). When the bucket is full, the
    /// oldest [`MarkKind::Observed`] mark gives way to a mark of another kind; without one (or
    /// for an observed mark), nothing is written.
    pub fn insert(&self, host: &dyn Host, salt: &[u8; 32], mark: &Mark, now_ms: u64) -> Insert {
        let live = |m: &Mark| now_ms < m.until_ms;
        let same =
            |m: &Mark| family(m.kind) == family(mark.kind) && constant_time_eq(&m.key, &mark.key);
        let mut layout = LAYOUT.load(host);
        let target = layout.target(self.buckets, now_ms);
        let listed = |l: &Layout, s: u32| l.until(s).is_some_and(|u| u >= mark.until_ms);
        if !listed(&layout, target) || !listed(&layout, self.buckets) {
            layout = LAYOUT.list(host, &[target, self.buckets], mark.until_ms, now_ms);
        }
        let target = layout.target(self.buckets, now_ms);
        let at = placed(salt, &mark.key);
        if mark.kind == MarkKind::Logout {
            for size in layout.live(now_ms).filter(|s| *s != target) {
                let key = bucket_key(slot_of(&at, u64::from(size)));
                let seen = host
                    .shared_get(&key)
                    .is_some_and(|v| decode_bucket(&v).iter().any(|m| live(m) && same(m)));
                if seen {
                    return Insert::Replayed;
                }
            }
        }
        let key = bucket_key(slot_of(&at, u64::from(target)));
        for _ in 0..MAX_ATTEMPTS {
            let (value, cas) = host.shared_get_cas(&key);
            if cas.is_none() {
                // Not created by `initialize` (it should have been): create it empty, so that
                // the write below can be a compare-and-swap like any other.
                let _ = host.shared_set_cas(&key, &[], None);
                continue;
            }
            let mut marks: Vec<Mark> = value
                .as_deref()
                .map(decode_bucket)
                .unwrap_or_default()
                .into_iter()
                .filter(live)
                .collect();
            let full = marks.len() >= WAYS as usize;
            let mut outcome = Insert::Added;
            match marks.iter_mut().find(|m| same(m)) {
                Some(_) if mark.kind == MarkKind::Logout => return Insert::Replayed,
                Some(existing) => {
                    existing.at_s = existing.at_s.max(mark.at_s);
                    existing.until_ms = existing.until_ms.max(mark.until_ms);
                    if mark.kind != MarkKind::Observed {
                        existing.kind = mark.kind;
                    }
                }
                None if !full => marks.push(*mark),
                // An observed mark never takes another's place: a flood of them cannot push
                // out a token revoked that way.
                None if mark.kind == MarkKind::Observed => return Insert::Full,
                None => {
                    let oldest = marks
                        .iter_mut()
                        .filter(|m| m.kind == MarkKind::Observed)
                        .min_by_key(|m| (m.at_s, m.until_ms));
                    let Some(oldest) = oldest else {
                        return Insert::Full;
                    };
                    *oldest = *mark;
                    outcome = Insert::Evicted;
                }
            }
            if host
                .shared_set_cas(&key, &encode_bucket(&marks), cas)
                .is_ok()
            {
                return outcome;
            }
        }
        Insert::Full
    }
}

// ---- the log ---------------------------------------------------------------------------------

fn log_key(seq: u64) -> String {
    format!("rvl:{}", seq % LOG_SLOTS)
}

/// The last sequence number taken (0: no revocation yet).
pub fn log_seq(host: &dyn Host) -> u64 {
    host.shared_get(SEQ_KEY)
        .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
        .unwrap_or(0)
}

/// Appends `mark` to the log; its sequence number, or `None` when the log kept changing.
/// `from_fleet`: a mark another gateway made (applied here, never published again).
pub fn log_append(host: &dyn Host, mark: &Mark, from_fleet: bool) -> Option<u64> {
    for _ in 0..MAX_ATTEMPTS {
        let (value, cas) = host.shared_get_cas(SEQ_KEY);
        let seq = value
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        if host
            .shared_set_cas(SEQ_KEY, seq.to_string().as_bytes(), cas)
            .is_ok()
        {
            let mut entry = seq.to_be_bytes().to_vec();
            mark.encode_into(&mut entry);
            entry.push(u8::from(from_fleet));
            host.shared_set(&log_key(seq), &entry);
            return Some(seq);
        }
    }
    None
}

/// What the log holds at a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// A revocation (`from_fleet`: made at another gateway).
    Mark { mark: Mark, from_fleet: bool },
    /// Taken, not written yet: read it again later.
    NotYet,
    /// Overwritten by a later entry: the reader fell a ring behind.
    Lost,
}

pub fn log_read(host: &dyn Host, seq: u64) -> Entry {
    let Some(value) = host.shared_get(&log_key(seq)) else {
        return Entry::NotYet;
    };
    let Some((at, mark)) = value.split_at_checked(8) else {
        return Entry::Lost;
    };
    let written = at.try_into().map(u64::from_be_bytes).unwrap_or(0);
    let from_fleet = mark.get(MARK_LEN) == Some(&1);
    let mark = mark.get(..MARK_LEN).and_then(Mark::decode);
    match (written.cmp(&seq), mark) {
        (std::cmp::Ordering::Equal, Some(mark)) => Entry::Mark { mark, from_fleet },
        (std::cmp::Ordering::Less, _) => Entry::NotYet,
        _ => Entry::Lost,
    }
}

// ---- participants ----------------------------------------------------------------------------

fn participant_key(slot: impl std::fmt::Display) -> String {
    format!("rvp:{slot}")
}

/// One participant's record: who, when it last wrote, what it applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Participant {
    id: u64,
    beat_ms: u64,
    acked: u64,
}

impl Participant {
    fn decode(v: &[u8]) -> Option<Self> {
        let n = |i: usize| {
            v.get(i * 8..i * 8 + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
        };
        (v.len() == 24).then_some(())?;
        Some(Self {
            id: n(0)?,
            beat_ms: n(1)?,
            acked: n(2)?,
        })
    }

    fn encode(&self) -> Vec<u8> {
        [self.id, self.beat_ms, self.acked]
            .iter()
            .flat_map(|n| n.to_be_bytes())
            .collect()
    }

    fn live(&self, now_ms: u64) -> bool {
        self.beat_ms.saturating_add(STALE_MS) > now_ms
    }
}

/// Creates the participant slots that do not exist yet.
pub fn create_participants(host: &dyn Host) -> u32 {
    slots::create(host, PARTICIPANTS, participant_key)
}

/// Claims a slot for participant `id` (an empty one, or one whose participant is gone) and
/// writes what it applied; `None` when every slot is live.
pub fn join(host: &dyn Host, id: u64, acked: u64, now_ms: u64) -> Option<u32> {
    let me = Participant {
        id,
        beat_ms: now_ms,
        acked,
    };
    for slot in 0..PARTICIPANTS {
        let key = participant_key(slot);
        let (value, cas) = host.shared_get_cas(&key);
        let taken = value
            .as_deref()
            .and_then(Participant::decode)
            .is_some_and(|p| p.live(now_ms) && p.id != id);
        if !taken && host.shared_set_cas(&key, &me.encode(), cas).is_ok() {
            return Some(slot);
        }
    }
    None
}

/// Writes participant `id`'s time and what it applied in its `slot`; false when the slot was
/// taken by another (this one was taken for gone): then it must join again.
pub fn beat(host: &dyn Host, slot: u32, id: u64, acked: u64, now_ms: u64) -> bool {
    let key = participant_key(slot);
    let (value, cas) = host.shared_get_cas(&key);
    let ours = value
        .as_deref()
        .and_then(Participant::decode)
        .is_some_and(|p| p.id == id);
    if !ours {
        return false;
    }
    let me = Participant {
        id,
        beat_ms: now_ms,
        acked,
    };
    host.shared_set_cas(&key, &me.encode(), cas).is_ok()
}

/// Whether every live participant has applied the log up to `seq`.
pub fn all_applied(host: &dyn Host, seq: u64, now_ms: u64) -> bool {
    (0..PARTICIPANTS).all(|slot| {
        host.shared_get(&participant_key(slot))
            .as_deref()
            .and_then(Participant::decode)
            .is_none_or(|p| !p.live(now_ms) || p.acked >= seq)
    })
}

// ---- one worker's place -----------------------------------------------------------------------

/// One worker's own revocation state (never shared): its participant id and slot, how far it
/// applied the log, the sizes it looks for marks under.
#[derive(Debug)]
pub struct Follower {
    pub id: u64,
    pub slot: Cell<Option<u32>>,
    /// The last log entry applied to this worker's copies.
    pub applied: Cell<u64>,
    /// A revocation happened since the VM started: shared cache reads look for marks.
    pub seen: Cell<bool>,
    pub sizes: RefCell<Vec<u32>>,
    /// A sequence number found taken but not written on the last tick.
    pub unwritten: Cell<Option<u64>>,
    /// The marks' placement salt, once read ([`salt`]).
    pub salt: Cell<Option<[u8; 32]>>,
}

impl Default for Follower {
    fn default() -> Self {
        use jwt_simple::reexports::rand::RngCore as _;
        Self {
            id: jwt_simple::reexports::rand::thread_rng().next_u64(),
            slot: Cell::new(None),
            applied: Cell::new(0),
            seen: Cell::new(false),
            sizes: RefCell::new(Vec::new()),
            unwritten: Cell::new(None),
            salt: Cell::new(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeHost;
    use crate::token::revocation::{session_key, subject_key};

    const T0: u64 = 1_700_000_000_000;
    const SALT: [u8; 32] = [3; 32];

    fn mark(kind: MarkKind, key: TokenHash, until_ms: u64) -> Mark {
        Mark {
            kind,
            key,
            at_s: T0 / 1_000,
            until_ms,
        }
    }

    fn alice(iat: Option<u64>) -> Identity {
        Identity {
            token: [1; 32],
            sub: Some(subject_key("alice")),
            sid: Some(session_key("s-1")),
            iat,
        }
    }

    #[test]
    fn marks_cover_tokens_subjects_and_sessions_issued_before() {
        let host = FakeHost::at(T0);
        let marks = Marks::new(64);
        marks.initialize(&host, 86_400_000);
        let sizes: Vec<u32> = Marks::layout(&host).live(T0).collect();
        let covered = |identity: &Identity| Marks::covering(&host, &SALT, &sizes, identity, T0 + 1);
        let before = alice(Some(T0 / 1_000 - 10));
        let same_second = alice(Some(T0 / 1_000));
        let after = alice(Some(T0 / 1_000 + 1));
        assert!(!covered(&before));
        let until = T0 + 60_000;
        assert_eq!(
            marks.insert(
                &host,
                &SALT,
                &mark(MarkKind::Subject, subject_key("alice"), until),
                T0
            ),
            Insert::Added
        );
        assert!(covered(&before) && covered(&same_second));
        assert!(!covered(&after), "issued after the revocation");
        assert!(covered(&alice(None)), "no iat: refused");
        let bob = Identity {
            token: [2; 32],
            sub: Some(subject_key("bob")),
            sid: None,
            iat: None,
        };
        assert!(!covered(&bob));
        marks.insert(&host, &SALT, &mark(MarkKind::Token, [2; 32], until), T0);
        assert!(covered(&bob));
        let carol = Identity {
            token: [3; 32],
            sub: None,
            sid: Some(session_key("s-9")),
            iat: Some(1),
        };
        marks.insert(
            &host,
            &SALT,
            &mark(MarkKind::Session, session_key("s-9"), until),
            T0,
        );
        assert!(covered(&carol));
        assert!(
            !Marks::covering(&host, &SALT, &sizes, &carol, until),
            "expired with its mark"
        );
    }

    #[test]
    fn a_marks_bucket_depends_on_the_salt() {
        // Whoever does not know the salt cannot tell which keys share a bucket.
        let keys: Vec<TokenHash> = (0..32u8).map(|i| [i; 32]).collect();
        let bucket = |salt: &[u8; 32], k: &TokenHash| slot_of(&placed(salt, k), 1_000);
        let moved = keys
            .iter()
            .filter(|k| bucket(&[1; 32], k) != bucket(&[2; 32], k))
            .count();
        assert!(moved >= 28, "{moved} of 32 moved");
        let unkeyed = keys
            .iter()
            .filter(|k| bucket(&[1; 32], k) == slot_of(k, 1_000))
            .count();
        assert!(
            unkeyed <= 2,
            "{unkeyed} of 32 where an unkeyed hash puts them"
        );
        let host = FakeHost::at(T0);
        let made = salt(&host).unwrap();
        assert_eq!(salt(&host), Some(made), "one salt per VM");
    }

    #[test]
    fn a_full_bucket_refuses_and_forgets_nothing() {
        let host = FakeHost::at(T0);
        let marks = Marks::new(WAYS); // one bucket
        marks.initialize(&host, 86_400_000);
        let until = T0 + 60_000;
        for i in 0..WAYS {
            let m = mark(MarkKind::Token, [i as u8 + 1; 32], until);
            assert_eq!(marks.insert(&host, &SALT, &m, T0), Insert::Added);
        }
        let extra = mark(MarkKind::Token, [99; 32], until);
        assert_eq!(marks.insert(&host, &SALT, &extra, T0), Insert::Full);
        let sizes = [1];
        for i in 0..WAYS {
            let id = Identity {
                token: [i as u8 + 1; 32],
                ..Identity::default()
            };
            assert!(
                Marks::covering(&host, &SALT, &sizes, &id, T0),
                "mark {i} kept"
            );
        }
        // Renewing a mark already there needs no room.
        assert_eq!(
            marks.insert(&host, &SALT, &mark(MarkKind::Token, [1; 32], until + 1), T0),
            Insert::Added
        );
        // Once marks expire, their room is taken again.
        assert_eq!(marks.insert(&host, &SALT, &extra, until), Insert::Added);
    }

    #[test]
    fn a_logout_jti_is_accepted_once_whatever_the_size() {
        let host = FakeHost::at(T0);
        let small = Marks::new(16);
        small.initialize(&host, 86_400_000);
        let jti = mark(MarkKind::Logout, [7; 32], T0 + 86_400_000);
        assert_eq!(small.insert(&host, &SALT, &jti, T0), Insert::Added);
        assert_eq!(small.insert(&host, &SALT, &jti, T0), Insert::Replayed);
        // A reload to a larger size: marks go under the new size, the old one is still read.
        let big = Marks::new(4096);
        big.initialize(&host, 86_400_000);
        assert_eq!(big.insert(&host, &SALT, &jti, T0 + 1), Insert::Replayed);
        assert_eq!(small.insert(&host, &SALT, &jti, T0 + 1), Insert::Replayed);
        let token = mark(MarkKind::Token, [8; 32], T0 + 60_000);
        assert_eq!(small.insert(&host, &SALT, &token, T0), Insert::Added);
        let sizes: Vec<u32> = Marks::layout(&host).live(T0).collect();
        assert_eq!(sizes.len(), 2);
        let id = Identity {
            token: [8; 32],
            ..Identity::default()
        };
        assert!(Marks::covering(&host, &SALT, &sizes, &id, T0));
    }

    #[test]
    fn the_log_is_read_in_order_and_a_lap_behind_is_lost() {
        let host = FakeHost::at(T0);
        Marks::new(8).initialize(&host, 1_000);
        assert_eq!(log_seq(&host), 0);
        assert_eq!(log_read(&host, 1), Entry::NotYet);
        let m = mark(MarkKind::Token, [5; 32], T0 + 1);
        assert_eq!(log_append(&host, &m, false), Some(1));
        let ours = Entry::Mark {
            mark: m,
            from_fleet: false,
        };
        assert_eq!(log_read(&host, 1), ours);
        assert_eq!(log_seq(&host), 1);
        for _ in 0..LOG_SLOTS {
            log_append(&host, &m, true);
        }
        assert_eq!(log_read(&host, 1), Entry::Lost, "overwritten a lap later");
        assert_eq!(
            log_read(&host, LOG_SLOTS + 1),
            Entry::Mark {
                mark: m,
                from_fleet: true
            }
        );
    }

    #[test]
    fn participants_are_waited_for_until_they_are_gone() {
        let host = FakeHost::at(T0);
        create_participants(&host);
        let a = join(&host, 1, 0, T0).unwrap();
        let b = join(&host, 2, 0, T0).unwrap();
        assert_ne!(a, b);
        assert!(all_applied(&host, 0, T0));
        assert!(!all_applied(&host, 1, T0));
        assert!(beat(&host, a, 1, 1, T0 + 100));
        assert!(!all_applied(&host, 1, T0 + 100), "b has not applied it");
        assert!(beat(&host, b, 2, 1, T0 + 150));
        assert!(all_applied(&host, 1, T0 + 150));
        // b goes silent: after STALE_MS it is not waited for, and its slot is taken again.
        assert!(beat(&host, a, 1, 2, T0 + 1_000));
        assert!(!all_applied(&host, 2, T0 + 1_000));
        assert!(all_applied(&host, 2, T0 + 150 + STALE_MS));
        let c = join(&host, 3, 2, T0 + 150 + STALE_MS).unwrap();
        assert_eq!(c, b);
        assert!(
            !beat(&host, b, 2, 2, T0 + 150 + STALE_MS),
            "b must join again"
        );
    }
}
