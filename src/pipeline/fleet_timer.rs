//! Beside the request path: what a gateway's timer does with the fleet (one worker at a time,
//! by a claim in shared data: `storage::fleet::Cursors`). With `fleet` and `revocation`,
//! revocations across the fleet; with `fleet` and `dpop.nonce`, one nonce key for the fleet.
//! No fleet call is ever made on a request's path for either.
//!
//! - **Publish**: each revocation made here (the API, an observed RFC 7009 request, a
//!   back-channel logout: an entry of the local log, `storage::revocation`) is appended to the
//!   fleet's ring in Redis (one atomic `EVAL`), a token's sealed phantom entry deleted first.
//!   Until Redis takes it, it is tried again on every tick: late by at most a tick once Redis
//!   is back.
//! - **Read**: every `revocation_bound_ms` less two ticks (see [`read_period_ms`]), the ring's
//!   counter and the entries after this gateway's place are read in one `MGET`; each mark not
//!   held here already is applied as a local revocation (`revoke::from_fleet`: marks, log,
//!   every worker's copies), never published again.
//!
//! A mark names a token, subject or session by a hash (`token::revocation`): the ring holds no
//! token and no claim value.
//!
//! - **Nonce key**: the fleet's DPoP nonce key (`<prefix>dn`) is read (made by the first
//!   gateway that needs it: `SET ... NX GET`) when the configuration loads and every
//!   [`NONCE_KEY_PERIOD_MS`], and written over this Envoy's own (`storage::dpop::nonce_key`):
//!   a nonce made at one gateway is current at every other. Until it is read, nonces are this
//!   Envoy's (a client asked for one then is asked again, once).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::metrics::Counter;
use crate::storage::fleet::{self, Cursors, Previous, RingPage, Space, PAGE, RING};
use crate::storage::remote::Call;
use crate::storage::revocation::{self as store, Entry, Mark, MarkKind};

use super::executor::TICK_MS;
use super::{revoke, Ctx};

/// A fleet call of this job, and what its answer leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// A revoked token's phantom entry deleted (then the mark appended).
    Delete { seq: u64, mark: Mark },
    /// The mark of the local log's entry `seq` appended to the ring.
    Append { seq: u64, mark: Mark },
    /// The ring read after `after`.
    Read { after: u64 },
    /// The fleet's nonce key read, `offered` written if there is none.
    NonceKey { offered: String },
}

/// How often the fleet's nonce key is read again (after a Redis that lost it, every gateway
/// agrees again within this).
pub const NONCE_KEY_PERIOD_MS: u64 = 60_000;
/// How soon a nonce key read that failed is tried again.
const NONCE_KEY_RETRY_MS: u64 = 1_000;

/// The fleet's nonce key read, when it is due and this worker may read it.
pub fn next_nonce_key(cx: &Ctx<'_>) -> Option<(Job, Call)> {
    let (cfg, host) = (cx.cfg, cx.host);
    let fleet = cfg.fleet.as_ref()?;
    cfg.dpop.as_ref().filter(|d| d.nonce)?;
    let now = host.now_ms();
    Cursors::update(host, &nonce_cursors(cx), |c| {
        (c.next_nonce_ms <= now && c.nonce_claim_ms <= now).then_some(Cursors {
            nonce_claim_ms: now.saturating_add(claim_ms(cx)),
            ..c
        })
    })?;
    let offered = URL_SAFE_NO_PAD.encode(crate::hash::random_key());
    let call = fleet::nonce_key(&fleet.key_prefix, &offered);
    Some((Job::NonceKey { offered }, call))
}

/// The fleet's nonce key (`None`: not read), written over this Envoy's.
pub fn on_nonce_key(cx: &Ctx<'_>, key: Option<[u8; 32]>) {
    let host = cx.host;
    let now = host.now_ms();
    let next = match key {
        Some(key) => {
            let name = crate::storage::dpop::nonce_key_name(&cx.cfg.cache.jwt_namespace);
            if host.shared_get(&name).as_deref() != Some(&key[..]) {
                host.shared_set(&name, &key);
            }
            now.saturating_add(NONCE_KEY_PERIOD_MS)
        }
        None => {
            host.count(Counter::FleetError);
            now.saturating_add(NONCE_KEY_RETRY_MS)
        }
    };
    Cursors::update(host, &nonce_cursors(cx), |c| {
        Some(Cursors {
            next_nonce_ms: next,
            nonce_claim_ms: 0,
            ..c
        })
    });
}

/// How often the ring is read: the bound, less the tick a reading may wait for and the tick
/// every worker takes to apply what it read (at least a tick).
pub fn read_period_ms(bound_ms: u64) -> u64 {
    bound_ms.saturating_sub(2 * TICK_MS + 100).max(TICK_MS)
}

/// The shared-data key of this configuration's fleet cursors.
fn cursors(cx: &Ctx<'_>) -> String {
    cx.cfg.fleet.as_ref().map_or_else(String::new, |f| {
        fleet::cursors_key(&f.cluster, &f.authority, &f.key_prefix)
    })
}

/// The shared-data key of the schedule of this configuration's nonce key (its own: the key it
/// writes is its namespace's).
fn nonce_cursors(cx: &Ctx<'_>) -> String {
    format!("{}:{}", cursors(cx), cx.cfg.cache.jwt_namespace)
}

/// How long a claim holds: a call's timeout twice, and a tick.
fn claim_ms(cx: &Ctx<'_>) -> u64 {
    cx.cfg
        .fleet
        .as_ref()
        .map_or(0, |f| f.timeout_ms.saturating_mul(2))
        .saturating_add(TICK_MS)
}

/// Revocations made here that Redis has not taken, at most, before the revocation API and
/// back-channel logouts are answered 503 (retry): the local log must not overwrite one
/// before it is published.
pub const BACKLOG_LIMIT: u64 = store::LOG_SLOTS - 256;

/// A local log number still unwritten when this many later ones are written is abandoned.
const ABANDONED_AFTER: u64 = 64;

/// How many revocations made here (or read from the fleet) the fleet has not taken yet.
pub fn backlog(cx: &Ctx<'_>) -> u64 {
    if cx.cfg.fleet.is_none() {
        return 0;
    }
    let out = Cursors::read(cx.host, &cursors(cx)).out;
    store::log_seq(cx.host).saturating_sub(out)
}

/// The next publishing call, when this worker may make it: the next revocation made here and
/// not published yet (entries from the fleet, expired or lost are passed over).
pub fn next_publish(cx: &Ctx<'_>) -> Option<(Job, Call)> {
    let (cfg, host) = (cx.cfg, cx.host);
    let fleet = cfg.fleet.as_ref()?;
    cfg.revocation.as_ref()?;
    let now = host.now_ms();
    let seq = store::log_seq(host);
    let claimed = Cursors::update(host, &cursors(cx), |c| {
        (c.out < seq && c.out_claim_ms <= now).then_some(Cursors {
            out_claim_ms: now.saturating_add(claim_ms(cx)),
            ..c
        })
    })?;
    let mut at = claimed.out;
    let found = loop {
        if at >= seq {
            break None;
        }
        match store::log_read(host, at + 1) {
            Entry::Mark {
                mark,
                from_fleet: false,
            } if mark.until_ms > now => break Some((at + 1, mark)),
            Entry::Mark { .. } => at += 1,
            Entry::Lost => {
                host.count(Counter::FleetRevocationLost);
                at += 1;
            }
            // A number left unwritten while many later ones were (its writer gone, or a log
            // of another layout): passed over, never waited for.
            Entry::NotYet if seq - (at + 1) > ABANDONED_AFTER => {
                host.count(Counter::FleetRevocationLost);
                at += 1;
            }
            Entry::NotYet => break None,
        }
    };
    let Some((seq, mark)) = found else {
        release_out(cx, claimed.out, at);
        return None;
    };
    if at > claimed.out {
        // Passed over: the claim kept.
        Cursors::update(host, &cursors(cx), |c| {
            Some(Cursors {
                out: c.out.max(at),
                ..c
            })
        });
    }
    Some(
        if matches!(mark.kind, MarkKind::Token | MarkKind::Observed) {
            let key = fleet::key(
                &fleet.key_prefix,
                Space::Phantom,
                &cfg.cache.namespace,
                &mark.key,
            );
            (Job::Delete { seq, mark }, fleet::delete(&key))
        } else {
            append(cx, seq, mark)?
        },
    )
}

fn append(cx: &Ctx<'_>, seq: u64, mark: Mark) -> Option<(Job, Call)> {
    let fleet = cx.cfg.fleet.as_ref()?;
    let ttl_ms = mark.until_ms.saturating_sub(cx.host.now_ms());
    let value = URL_SAFE_NO_PAD.encode(mark.encode());
    let random = crate::hash::random_key();
    let mut identity = [0u8; 8];
    identity.copy_from_slice(&random[..8]);
    // Never 0: the cursors' "none read yet".
    let identity = u64::from_be_bytes(identity).max(1);
    Some((
        Job::Append { seq, mark },
        fleet::ring_append(&fleet.key_prefix, &value, ttl_ms, identity),
    ))
}

/// Published up to `to` (from `from`), the claim let go.
fn release_out(cx: &Ctx<'_>, from: u64, to: u64) {
    Cursors::update(cx.host, &cursors(cx), |c| {
        Some(Cursors {
            out: if c.out == from { to } else { c.out.max(to) },
            out_claim_ms: 0,
            ..c
        })
    });
}

/// A publishing call answered (`ok`): the next call, if any (the mark after a deletion, the
/// next revocation after an append).
pub fn on_publish(cx: &Ctx<'_>, job: Job, ok: bool) -> Option<(Job, Call)> {
    match job {
        // A deletion that failed leaves an entry every gateway refuses once the mark reaches
        // it: the mark goes on.
        Job::Delete { seq, mark } => append(cx, seq, mark),
        Job::Append { seq, .. } if ok => {
            cx.host.count(Counter::FleetRevocationsPublished);
            release_out(cx, seq - 1, seq);
            next_publish(cx)
        }
        Job::Append { seq, .. } => {
            cx.host.count(Counter::FleetError);
            // Tried again on the next tick.
            release_out(cx, seq - 1, seq - 1);
            None
        }
        Job::Read { .. } | Job::NonceKey { .. } => None,
    }
}

/// The next ring read, when it is due and this worker may make it.
pub fn next_read(cx: &Ctx<'_>) -> Option<(Job, Call)> {
    let (cfg, host) = (cx.cfg, cx.host);
    let fleet = cfg.fleet.as_ref()?;
    cfg.revocation.as_ref()?;
    let now = host.now_ms();
    let claimed = Cursors::update(host, &cursors(cx), |c| {
        (c.next_read_ms <= now && c.seen_claim_ms <= now).then_some(Cursors {
            seen_claim_ms: now.saturating_add(claim_ms(cx)),
            ..c
        })
    })?;
    let after = claimed.seen;
    Some((
        Job::Read { after },
        fleet::ring_read(&fleet.key_prefix, after),
    ))
}

/// The ring's answer to a read after `after` (`None`: no answer, or not one): each mark
/// applied, the place moved on; the next read at once when there is more to read.
pub fn on_read(cx: &Ctx<'_>, after: u64, page: Option<RingPage>) -> Option<(Job, Call)> {
    let (cfg, host) = (cx.cfg, cx.host);
    let fleet = cfg.fleet.as_ref()?;
    let now = host.now_ms();
    let period = read_period_ms(fleet.revocation_bound_ms);
    let Some(page) = page else {
        host.count(Counter::FleetError);
        let last = Cursors::read(host, &cursors(cx)).last;
        moved(cx, after, after, now.saturating_add(period), None, last);
        return None;
    };
    let place = Cursors::read(host, &cursors(cx));
    let known = place.ring;
    // A ring of another identity; or the first identity seen by a gateway that has read
    // entries already (of a ring that had none); or the entry read last no longer what it was
    // (a Redis put back to an older state, a replica that had not seen it): read again from
    // the ring's oldest entry (applying a mark twice is nothing).
    let another = match page.identity {
        Some(id) => id != known && (known != 0 || after > 0),
        None => false,
    };
    let moved_back = after > 0
        && place.last != 0
        && match &page.previous {
            Previous::Entry(mark) => fleet::entry_tag(after, mark) != place.last,
            Previous::Other => true,
            Previous::Absent => false,
        };
    let another = another || moved_back;
    let seen = if page.counter < after || another {
        // Redis lost the ring (restarted empty, flushed, put back): from the oldest entry of
        // the one it holds now.
        host.count(Counter::FleetRevocationGap);
        page.counter.saturating_sub(RING)
    } else if page.counter > after.saturating_add(RING) {
        // Fell more than a ring behind (Redis unreachable from here that long): what was
        // overwritten is missed.
        if after > 0 {
            host.count(Counter::FleetRevocationGap);
        }
        page.counter - RING
    } else {
        let last = page.counter.min(after + PAGE);
        for entry in page.entries.iter().take((last - after) as usize).flatten() {
            if let Some(mark) = Mark::decode(entry) {
                if revoke::from_fleet(cx, &mark) {
                    host.count(Counter::FleetRevocationsApplied);
                }
            }
        }
        last
    };
    let next = if another {
        // At most one read a tick after a gap: a ring whose identity keeps changing (two
        // Redis servers behind one webdis, a hostile writer) is no loop.
        now.saturating_add(TICK_MS)
    } else if page.counter > seen {
        now
    } else {
        now.saturating_add(period)
    };
    // What names the entry read last, for the next read to compare.
    let last = match seen.checked_sub(after + 1) {
        Some(i) if !another => page
            .entries
            .get(i as usize)
            .and_then(|e| e.as_deref())
            .map_or(0, |mark| fleet::entry_tag(seen, mark)),
        _ if seen == after && !another => place.last,
        _ => 0,
    };
    moved(cx, after, seen, next, page.identity, last);
    if next <= now {
        return next_read(cx);
    }
    None
}

/// The ring read up to `seen` (from `after`), in the ring of identity `ring` (`None`:
/// unchanged), its entry `seen` named `last`; the claim let go.
fn moved(cx: &Ctx<'_>, after: u64, seen: u64, next_read_ms: u64, ring: Option<u64>, last: u64) {
    Cursors::update(cx.host, &cursors(cx), |c| {
        let ours = c.seen == after;
        Some(Cursors {
            seen: if ours { seen } else { c.seen },
            ring: match ring {
                Some(ring) if ours => ring,
                _ => c.ring,
            },
            last: if ours { last } else { c.last },
            seen_claim_ms: 0,
            next_read_ms,
            ..c
        })
    });
}
