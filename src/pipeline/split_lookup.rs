//! Stage: the split token store. The presented token is a JWS signature; `header.payload`
//! waits in the store under its SHA-256 (level 1: shared data; level 2: `split.remote`).
//!
//! Before the store, this worker's copy of recent hits, by the token's keyed hash: trusted
//! only while the store's epoch ([`Host::split_epoch`], one number every worker reads at once)
//! has not moved since the copy was made. Every revocation and re-publication moves it, after
//! writing the slot, so a revoked token is refused by every worker from the next request on.

use crate::config::SplitConfig;
use crate::hash::{TokenHash, TokenKeys};
use crate::metrics::Counter;
use crate::reply::Denial;
use crate::storage::remote::{self, Got};
use crate::storage::split_store::{Found, Store, Stored};
use crate::token::jwt;
use crate::token::seal::{self, Kind, SealError};
use crate::token::split::{self, Entry};

use super::authorize::{authorize, resolved_bearer, Who};
use super::verify::check_jwt;
use super::{revoke, Caller, Ctx, Step, Verdict};

/// The stage: `None` to go on to the phantom flow (a miss with `fallback_to_phantom`).
pub fn lookup(
    cx: &Ctx<'_>,
    caller: &Caller<'_>,
    split: &SplitConfig,
    keys: &TokenKeys<'_>,
) -> Option<Step> {
    let cfg = cx.cfg;
    if let Some(verdict) = worker_copy(cx, caller, keys) {
        return Some(Step::Done(verdict));
    }
    if let Some(verdict) = local_lookup(cx, caller, split, keys) {
        return Some(Step::Done(verdict));
    }
    let (token, hash) = (keys.token, keys.sha256());
    // Only a base64url string can be a JWS signature, in any store.
    if split.remote.is_some() && jwt::is_segment(token) {
        return Some(Step::Remote {
            hash: *hash,
            token: token.to_owned(),
            key: split.hash_encoding.encode(hash),
        });
    }
    if split.fallback_to_phantom && cfg.phantom.is_some() {
        None
    } else {
        Some(Step::Done(Verdict::Reject(Denial::InvalidToken)))
    }
}

/// This worker's copy of a recent hit, when the store's epoch has not moved since it was made
/// (a moved epoch empties the copy first).
fn worker_copy(cx: &Ctx<'_>, caller: &Caller<'_>, keys: &TokenKeys<'_>) -> Option<Verdict> {
    let (cfg, worker, host) = (cx.cfg, cx.worker, cx.host);
    let epoch = host.split_epoch()?;
    if worker.split_epoch.get() != Some(epoch) {
        worker.split_local.clear();
        worker.split_epoch.set(Some(epoch));
        return None;
    }
    let known = worker.split_local.get(&keys.fast, host.now_ms())?;
    host.count(Counter::SplitHit);
    Some(authorize(cfg, caller, &known))
}

/// The gateway's own store. `None`: a miss to hand to the next level.
fn local_lookup(
    cx: &Ctx<'_>,
    caller: &Caller<'_>,
    split: &SplitConfig,
    keys: &TokenKeys<'_>,
) -> Option<Verdict> {
    let (worker, host) = (cx.worker, cx.host);
    let (token, hash) = (keys.token, keys.sha256());
    // Only a base64url string can be a JWS signature; anything else cannot be in the store.
    let found = if jwt::is_segment(token) {
        Store::new(split.max_entries).lookup(host, hash, host.now_ms())
    } else {
        Found::Miss
    };
    match found {
        Found::Hit(stored) => {
            host.count(Counter::SplitHit);
            let verdict = split_hit(cx, caller, token, hash, &stored, false);
            // Kept while the epoch read before this lookup holds (see `worker_copy`).
            if let (Verdict::Forward(resolved), Some(_)) = (&verdict, worker.split_epoch.get()) {
                worker
                    .split_local
                    .put(&keys.fast, stored.expires_at_ms, resolved.clone());
            }
            Some(verdict)
        }
        // An explicit revocation is final: no fallback.
        Found::Revoked => {
            host.count(Counter::SplitRevoked);
            Some(Verdict::Reject(Denial::InvalidToken))
        }
        Found::Expired => {
            host.count(Counter::SplitExpired);
            None
        }
        Found::Miss => {
            host.count(Counter::SplitMiss);
            None
        }
    }
}

/// The verdict for a live split entry: revocation, scopes, then verification (once per entry
/// and worker). `fresh`: an answer of the remote store, which may have been in flight while a
/// revocation was made.
fn split_hit(
    cx: &Ctx<'_>,
    caller: &Caller<'_>,
    token: &str,
    hash: &TokenHash,
    stored: &Stored,
    fresh: bool,
) -> Verdict {
    let (cfg, worker, host) = (cx.cfg, cx.worker, cx.host);
    let authorization = format!("Bearer {}.{token}", stored.header_payload());
    let resolved = resolved_bearer(cfg, authorization, stored.scope(), Who::Payload(hash));
    if revoke::refuses(cx, &resolved, fresh) {
        return Verdict::Reject(Denial::Revoked);
    }
    let verdict = authorize(cfg, caller, &resolved);
    let Verdict::Forward(resolved) = &verdict else {
        return verdict;
    };
    // Verified once per entry and worker: the memo is bound to the slot's version, so a
    // re-published or tampered entry is verified again.
    if cfg.verify.is_some() {
        let now = host.now_ms();
        if stored.version.is_none() || !worker.verified.is_verified(hash, stored.version, now) {
            let jwt = resolved.authorization.get("Bearer ".len()..).unwrap_or("");
            if let Err(denial) = check_jwt(cx, jwt) {
                return Verdict::Reject(denial);
            }
            if stored.version.is_some() {
                worker
                    .verified
                    .remember_verified(hash, stored.version, stored.expires_at_ms, now);
            }
        }
    }
    verdict
}

/// What the remote store answered a lookup, and how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAnswer {
    pub got: Got,
    pub latency_ms: u64,
}

/// The remote store's answer to a [`Step::Remote`] lookup. A found entry is copied into the
/// gateway's own store for at most `local_ttl_s`, then treated as a hit; a miss goes on to the
/// phantom fallback when configured (else 401); a store failure too (else 502).
pub fn on_remote_get(
    cx: &Ctx<'_>,
    caller: &Caller<'_>,
    hash: &TokenHash,
    token: &str,
    answer: RemoteAnswer,
) -> Step {
    let (cfg, host) = (cx.cfg, cx.host);
    let RemoteAnswer { got, latency_ms } = answer;
    let Some(split) = &cfg.split else {
        return Step::Done(Verdict::Reject(Denial::InvalidToken));
    };
    host.count_by(Counter::RemoteLatencyMs, latency_ms);
    let now = host.now_ms();
    let failed = || {
        host.count(Counter::RemoteError);
        fallback_or(cx, caller, split, hash, token, Denial::StoreUnavailable)
    };
    let header_payload = match got {
        Got::Found(value) => match opened(cx, split, hash, token, value) {
            Some(hp) => hp,
            None => return failed(),
        },
        Got::Missing => {
            host.count(Counter::RemoteMiss);
            return fallback_or(cx, caller, split, hash, token, Denial::InvalidToken);
        }
        Got::Failed => return failed(),
    };
    // Whatever the remote store holds is checked like a publish would be.
    let Ok(claims) = jwt::parse_header_payload(&header_payload) else {
        return failed();
    };
    let entry = Entry {
        hash: *hash,
        expires_at_ms: split::serve_until(u64::MAX, &claims),
        header_payload,
        scope: claims.scope,
    };
    if entry.expires_at_ms <= now {
        host.count(Counter::RemoteMiss);
        return fallback_or(cx, caller, split, hash, token, Denial::InvalidToken);
    }
    host.count(Counter::RemoteHit);
    let local = local_entry(split, &entry, now);
    // A failed copy only costs the next request another remote read.
    let _ = Store::new(split.max_entries).put(host, &local, now);
    let stored = Stored::new(&local.scope, &local.header_payload, local.expires_at_ms);
    let verdict = split_hit(cx, caller, token, hash, &stored, true);
    let incoming = TokenKeys::with_sha(&cx.worker.keyed, token, *hash);
    super::finish(cx, caller, &incoming, verdict)
}

/// After the remote store: the phantom flow as from the start (its cache first: a token that
/// is not a split token is introspected once, not on every request), else `denial`.
fn fallback_or(
    cx: &Ctx<'_>,
    caller: &Caller<'_>,
    split: &SplitConfig,
    hash: &TokenHash,
    token: &str,
    denial: Denial,
) -> Step {
    if !split.fallback_to_phantom || cx.cfg.phantom.is_none() {
        return Step::Done(Verdict::Reject(denial));
    }
    let incoming = TokenKeys::with_sha(&cx.worker.keyed, token, *hash);
    if let Some(verdict) = super::phantom_cache::lookup(cx, caller, &incoming) {
        return super::finish(cx, caller, &incoming, verdict);
    }
    Step::Introspect {
        hash: *hash,
        token: token.to_owned(),
    }
}

/// The copy of `entry` kept in the gateway's own store: with a remote store, at most
/// `local_ttl_s`, so that a revocation made at another gateway is seen within that bound.
pub(super) fn local_entry(split: &SplitConfig, entry: &Entry, now: u64) -> Entry {
    let mut local = entry.clone();
    if let Some(remote) = &split.remote {
        let bound = now.saturating_add(remote.local_ttl_s.saturating_mul(1_000));
        local.expires_at_ms = local.expires_at_ms.min(bound);
    }
    local
}

/// The remote write that stores `entry` for the rest of its life: with `fleet`, sealed under
/// its `signature` (none: nothing written; the publish API refuses that first).
pub(super) fn remote_put(
    split: &SplitConfig,
    entry: &Entry,
    signature: Option<&str>,
    now: u64,
) -> Option<remote::Call> {
    let remote = split.remote.as_ref()?;
    let ttl_s = entry.expires_at_ms.saturating_sub(now).div_ceil(1_000);
    let key = split.hash_encoding.encode(&entry.hash);
    let value = match &remote.sealed {
        None => entry.header_payload.clone(),
        Some(sealing) => {
            let random = crate::hash::random_key();
            let mut nonce = [0u8; seal::NONCE_LEN];
            nonce.copy_from_slice(&random[..seal::NONCE_LEN]);
            seal::seal(
                Kind::Split,
                &sealing.secret,
                signature?.as_bytes(),
                &sealing.redis_key(&key),
                nonce,
                entry.header_payload.as_bytes(),
            )
        }
    };
    Some(remote.put(&key, &value, ttl_s))
}

/// What a remote store's value holds: `header.payload`, opened under the client's `signature`
/// when sealed (a plain value only with `accept_plain_split`); `None` when it does not open
/// (counted: a store failure, never forwarded).
fn opened(
    cx: &Ctx<'_>,
    split: &SplitConfig,
    hash: &TokenHash,
    signature: &str,
    value: String,
) -> Option<String> {
    let Some(sealing) = split.remote.as_ref().and_then(|r| r.sealed.as_ref()) else {
        return Some(value);
    };
    let key = sealing.redis_key(&split.hash_encoding.encode(hash));
    match seal::open(
        Kind::Split,
        &sealing.secret,
        signature.as_bytes(),
        &key,
        value.as_bytes(),
    ) {
        Ok(plain) => String::from_utf8(plain).ok(),
        Err(SealError::Malformed) if sealing.accept_plain => Some(value),
        Err(_) => {
            cx.host.count(Counter::FleetSealFailed);
            None
        }
    }
}
