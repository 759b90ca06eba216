//! Stage: a JWT accepted as it is (`accept_jwt`). On a route that accepts JWTs, a bearer token
//! that is a compact JWS is verified with `verify` (signature, `iss`, `aud`, `exp`) and, when
//! valid, forwarded unchanged, without introspection. Verification is paid once per token per
//! cache lifetime: the outcome is cached like an introspection's, in slots of its own
//! (`cache.jwt_namespace`), so a route that introspects never serves what a JWT route accepted.
//! Anything else (an opaque token, a split signature) goes on to the other stages.

use crate::config::Config;
use crate::hash::TokenKeys;
use crate::host::Host;
use crate::metrics::Counter;
use crate::reply::Denial;
use crate::storage::phantom_cache::{self, Cached};
use crate::token::jwt;

use super::authorize::{authorize, resolved};
use super::verify::check_jwt;
use super::{Caller, Verdict, Worker};

/// The stage: `None` when the policy does not accept JWTs or the token is not a JWS.
pub fn lookup(
    cfg: &Config,
    caller: &Caller<'_>,
    worker: &Worker,
    host: &dyn Host,
    keys: &TokenKeys<'_>,
) -> Option<Verdict> {
    let token = keys.token;
    if !caller.policy.accept_jwt || jwt::segments(token).is_err() {
        return None;
    }
    let now = host.now_ms();
    if let Some(known) = worker.local_jwt.get(&keys.fast, now) {
        host.count(Counter::JwtCacheHit);
        return Some(authorize(cfg, caller, &known));
    }
    let hash = keys.sha256();
    let key = phantom_cache::slot_key(&cfg.cache.jwt_namespace, hash, cfg.cache.max_entries);
    let value = host.shared_get(&key);
    match value
        .as_deref()
        .and_then(|v| phantom_cache::lookup(v, hash, now))
    {
        Some(Cached::Active {
            jwt,
            scope,
            expires_at_ms,
        }) => {
            host.count(Counter::JwtCacheHit);
            let token = resolved(cfg, jwt, scope);
            let verdict = authorize(cfg, caller, &token);
            if matches!(verdict, Verdict::Forward(_)) {
                worker.local_jwt.put(&keys.fast, expires_at_ms, token);
            }
            return Some(verdict);
        }
        Some(Cached::Inactive) => {
            host.count(Counter::JwtCacheHit);
            return Some(Verdict::Reject(Denial::InvalidToken));
        }
        None => {}
    }
    match check_jwt(cfg, worker, host, token) {
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
            // Verified: its shape and claims are sound.
            let claims = jwt::parse(token).unwrap_or_default();
            let token_ref = resolved(cfg, token, &claims.scope);
            let verdict = authorize(cfg, caller, &token_ref);
            if let Some(until) =
                phantom_cache::active_expiry(now, &claims, None, cfg.cache.max_ttl_s)
            {
                host.shared_set(
                    &key,
                    &phantom_cache::encode_active(hash, until, &claims.scope, token),
                );
                if matches!(verdict, Verdict::Forward(_)) {
                    worker.local_jwt.put(&keys.fast, until, token_ref);
                }
            }
            Some(verdict)
        }
    }
}
