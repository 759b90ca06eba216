//! Stage: a JWT accepted as it is (`accept_jwt`). On a route that accepts JWTs, a bearer token
//! that is a compact JWS is verified with `verify` (signature, `iss`, `aud`, `exp`) and, when
//! valid, forwarded unchanged, without introspection. Verification is paid once per token per
//! cache lifetime: the outcome is cached like an introspection's, in slots of its own
//! (`cache.jwt_namespace`), so a route that introspects never serves what a JWT route accepted.
//! Anything else (an opaque token, a split signature) goes on to the other stages.

use crate::hash::TokenKeys;
use crate::metrics::Counter;
use crate::reply::Denial;
use crate::storage::phantom_cache;
use crate::token::revocation::Identity;
use crate::token::{claims, jwt};

use super::authorize::{authorize, resolved, Who};
use super::cached::{self, Found};
use super::phantom_cache::stored_identity;
use super::verify::check_jwt;
use super::{revoke, Caller, Ctx, Verdict};

/// The stage: `None` when the policy does not accept JWTs or the token is not a JWS.
pub fn lookup(cx: &Ctx<'_>, caller: &Caller<'_>, keys: &TokenKeys<'_>) -> Option<Verdict> {
    let (cfg, worker, host) = (cx.cfg, cx.worker, cx.host);
    let token = keys.token;
    if !caller.policy.accept_jwt || jwt::segments(token).is_err() {
        return None;
    }
    let now = host.now_ms();
    let slot = || {
        phantom_cache::slot_key(
            &cfg.cache.jwt_namespace,
            keys.sha256(),
            cfg.cache.max_entries,
        )
    };
    let found = cached::read(
        cx,
        &worker.local_jwt,
        &keys.fast,
        slot,
        |value| phantom_cache::lookup(value, keys.sha256(), now),
        |bytes| Some(Box::new(stored_identity(keys.sha256(), bytes))),
        |()| Denial::InvalidToken,
    );
    match found {
        Found::Local(known) => {
            host.count(Counter::JwtCacheHit);
            return Some(authorize(cfg, caller, &known));
        }
        Found::Shared { token, until_ms } => {
            host.count(Counter::JwtCacheHit);
            let verdict = authorize(cfg, caller, &token);
            if matches!(verdict, Verdict::Forward(_)) {
                worker.local_jwt.put(&keys.fast, until_ms, token);
            }
            return Some(verdict);
        }
        Found::Refused(denial) => {
            host.count(Counter::JwtCacheHit);
            return Some(Verdict::Reject(denial));
        }
        Found::Miss => {}
    }
    let hash = keys.sha256();
    let key = slot();
    match check_jwt(cx, token) {
        // Not the token's fault: nothing cached.
        Err(Denial::KeysUnavailable) => Some(Verdict::Reject(Denial::KeysUnavailable)),
        Err(denial) => {
            if cfg.cache.negative_ttl_s > 0 {
                let until = now.saturating_add(cfg.cache.negative_ttl_s.saturating_mul(1_000));
                host.shared_set(&key, &phantom_cache::encode_inactive(hash, until));
            }
            Some(Verdict::Reject(denial))
        }
        Ok(()) => {
            // Verified by its signature; its claims read as this filter reads them, or refused
            // (an `exp` the verifier reads another way, a negative one, is not a date here).
            let Ok(claims) = jwt::parse(token) else {
                return Some(Verdict::Reject(Denial::InvalidToken));
            };
            let identity = claims::payload_of(token)
                .map(|p| Identity::of(hash, &p))
                .unwrap_or_else(|| stored_identity(hash, &[]));
            let token_ref = resolved(
                cfg,
                token,
                &claims.scope,
                Who::Known(Some(Box::new(identity.clone()))),
            );
            if revoke::refuses(cx, &token_ref, false) {
                return Some(Verdict::Reject(Denial::Revoked));
            }
            let verdict = authorize(cfg, caller, &token_ref);
            if let Some(until) =
                phantom_cache::active_expiry(now, &claims, None, cfg.cache.max_ttl_s)
            {
                host.shared_set(
                    &key,
                    &phantom_cache::encode_active(hash, until, &claims.scope, &identity, token),
                );
                if matches!(verdict, Verdict::Forward(_)) {
                    worker.local_jwt.put(&keys.fast, until, token_ref);
                }
            }
            Some(verdict)
        }
    }
}
