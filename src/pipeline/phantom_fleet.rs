//! Stage (with `fleet`): the phantom cache's level 2, shared by every gateway of a fleet. A
//! token missed by this gateway's cache is looked up in the fleet (one call, coalesced like an
//! introspection: `storage::inflight`'s `FleetRead`) before it is introspected; what this
//! gateway's introspection cached (an active token, or an inactive one for `negative_ttl_s`) is
//! written to the fleet, sealed under the client's token, for the rest of its life.
//!
//! An entry from the fleet is trusted no more than the gateway's own: it must open under the
//! client's token and its store key (a value changed, truncated, copied under another key, or
//! sealed for another token is counted and introspected again, never forwarded), name the
//! token's own hash, be unexpired, pass `verify` (a token service's JWT: as at introspection)
//! and the revocation marks. This gateway keeps its copy for at most `fleet.local_ttl_s`.

use crate::config::Config;
use crate::hash::TokenHash;
use crate::metrics::Counter;
use crate::reply::Denial;
use crate::storage::fleet::{self, Space};
use crate::storage::phantom_cache;
use crate::storage::record::Cached;
use crate::storage::remote::{Call, Got};
use crate::token::seal::{self, Kind};

use super::authorize::{resolved, Who};
use super::phantom_cache::stored_identity;
use super::verify::check_jwt;
use super::{revoke, Ctx, Introspected};

/// The fleet read of `hash`'s entry.
pub fn read(cfg: &Config, hash: &TokenHash) -> Option<Call> {
    let fleet = cfg.fleet.as_ref()?;
    let namespace = &cfg.cache.namespace;
    Some(fleet::get(&fleet::key(
        &fleet.key_prefix,
        Space::Phantom,
        namespace,
        hash,
    )))
}

/// The fleet's answer for the client's `token` (hash `hash`): `Some` answer on a hit, as the
/// introspection would have answered (this gateway's cache now holds it too); `None` to
/// introspect (a miss, a failure, a value that does not open or does not hold: each counted).
pub fn on_read(
    cx: &Ctx<'_>,
    hash: &TokenHash,
    token: &str,
    got: Got,
) -> Option<Result<Introspected, Denial>> {
    let (cfg, host) = (cx.cfg, cx.host);
    let fleet = cfg.fleet.as_ref()?;
    let value = match got {
        Got::Found(value) => value,
        Got::Missing => {
            host.count(Counter::FleetMiss);
            return None;
        }
        Got::Failed => {
            host.count(Counter::FleetError);
            return None;
        }
    };
    let key = fleet::key(
        &fleet.key_prefix,
        Space::Phantom,
        &cfg.cache.namespace,
        hash,
    );
    let secret = &fleet.secret.0;
    let Ok(plain) = seal::open(
        Kind::Phantom,
        secret,
        token.as_bytes(),
        &key,
        value.as_bytes(),
    ) else {
        host.count(Counter::FleetSealFailed);
        return None;
    };
    let now = host.now_ms();
    let (Some(cached), Some(expires_at_ms)) = (
        phantom_cache::lookup(&plain, hash, now),
        phantom_cache::expires_at(&plain),
    ) else {
        // Expired, or (sealed by the token's holder) not this token's entry.
        host.count(Counter::FleetMiss);
        return None;
    };
    let until = expires_at_ms.min(now.saturating_add(fleet.local_ttl_s.saturating_mul(1_000)));
    let slot = phantom_cache::slot_key(&cfg.cache.namespace, hash, cfg.cache.max_entries);
    let answer = match cached {
        Cached::Refused(()) => {
            host.shared_set(&slot, &phantom_cache::encode_inactive(hash, until));
            Err(Denial::InvalidToken)
        }
        Cached::Token {
            jwt,
            scope,
            identity,
            ..
        } => {
            // A token service's JWT is verified as its introspection was (a gateway's own,
            // minted, is not the token service's to verify): a holder of the token who can
            // write to Redis gains nothing.
            let minted = cfg.phantom.as_ref().is_some_and(|p| p.mint.is_some());
            if !minted && check_jwt(cx, jwt).is_err() {
                host.count(Counter::FleetSealFailed);
                return None;
            }
            let identity = stored_identity(hash, identity);
            let resolved = resolved(
                cfg,
                jwt,
                scope,
                Who::Known(Some(Box::new(identity.clone()))),
            );
            if revoke::refuses(cx, &resolved, true) {
                host.count(Counter::FleetHit);
                return Some(Err(Denial::Revoked));
            }
            host.shared_set(
                &slot,
                &phantom_cache::encode_active(hash, until, scope, &identity, jwt),
            );
            Ok(Introspected {
                token: resolved,
                cache_until: Some(until),
            })
        }
    };
    host.count(Counter::FleetHit);
    Some(answer)
}

/// What this gateway's cache holds for `hash` (just introspected: `active` or not), sealed
/// under the client's `token` and written to the fleet for the rest of its life; `None` when
/// it holds nothing of the kind for it (not cached: `no-store`, `negative_ttl_s` 0, a slot
/// taken since).
pub fn write(cx: &Ctx<'_>, hash: &TokenHash, token: &str, active: bool) -> Option<Call> {
    let (cfg, host) = (cx.cfg, cx.host);
    let fleet = cfg.fleet.as_ref()?;
    let slot = phantom_cache::slot_key(&cfg.cache.namespace, hash, cfg.cache.max_entries);
    let value = host.shared_get(&slot)?;
    let now = host.now_ms();
    let cached = phantom_cache::lookup(&value, hash, now)?;
    if matches!(cached, Cached::Token { .. }) != active {
        return None;
    }
    let ttl_ms = phantom_cache::expires_at(&value)?.saturating_sub(now);
    let key = fleet::key(
        &fleet.key_prefix,
        Space::Phantom,
        &cfg.cache.namespace,
        hash,
    );
    let random = crate::hash::random_key();
    let mut nonce = [0u8; seal::NONCE_LEN];
    nonce.copy_from_slice(&random[..seal::NONCE_LEN]);
    let secret = &fleet.secret.0;
    let sealed = seal::seal(Kind::Phantom, secret, token.as_bytes(), &key, nonce, &value);
    Some(fleet::put(&key, sealed, ttl_ms))
}
