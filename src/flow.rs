//! The per-request decisions of the phantom token flow, free of any host call.
//!
//! ```text
//! request headers ──► CORS preflight? ──► Passthrough (Authorization removed)
//!        │
//!        ▼ parse bearer (RFC 6750) ──► Reject(NoCredentials | MalformedCredentials)
//!        ▼ cache slot
//!   hit: Active ──► scope check ──► Forward(Bearer JWT) | Reject(InsufficientScope)
//!   hit: Inactive ──► Reject(InvalidToken)
//!   miss ──► Introspect ── answer ──► on_introspection ──► Forward | Reject
//! ```
//!
//! Host effects (shared data, clock, counters) go through [`Host`], so the whole flow runs
//! natively in tests with a fake host and a fixed clock.

use crate::bearer::{self, BearerError};
use crate::cache::{self, Cached, TokenHash};
use crate::config::Config;
use crate::introspection::Outcome;
use crate::metrics::Counter;
use crate::reply::Denial;
use crate::scope;

/// What the core needs from the proxy.
pub trait Host {
    fn now_ms(&self) -> u64;
    fn shared_get(&self, key: &str) -> Option<Vec<u8>>;
    fn shared_set(&self, key: &str, value: &[u8]);
    fn count(&self, counter: Counter);
}

/// The final word on a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Replace `Authorization` with this value and continue.
    Forward {
        authorization: String,
    },
    Reject(Denial),
}

/// The next step for a request whose headers just arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A CORS preflight: continue unauthenticated, with any `Authorization` removed.
    Passthrough,
    Done(Verdict),
    /// Cache miss: ask the token service.
    Introspect {
        hash: TokenHash,
        token: String,
    },
}

/// A CORS preflight (Fetch standard): `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`. Browsers send it without credentials, so it passes
/// unauthenticated, as with Envoy's `jwt_authn`.
pub fn is_cors_preflight(method: &str, origin: Option<&str>, request_method: Option<&str>) -> bool {
    method == "OPTIONS"
        && origin.is_some_and(|o| !o.is_empty())
        && request_method.is_some_and(|m| !m.is_empty())
}

/// Decides what to do with a request given its `Authorization` header.
pub fn on_request(cfg: &Config, host: &dyn Host, authorization: Option<&str>) -> Step {
    let token = match bearer::parse_authorization(authorization) {
        Ok(token) => token,
        Err(BearerError::Missing) => return Step::Done(Verdict::Reject(Denial::NoCredentials)),
        Err(BearerError::Malformed) => {
            return Step::Done(Verdict::Reject(Denial::MalformedCredentials))
        }
    };
    let hash = cache::token_hash(token);
    let key = cache::slot_key(&cfg.cache.namespace, &hash, cfg.cache.max_entries);
    if let Some(value) = host.shared_get(&key) {
        match cache::lookup(&value, &hash, host.now_ms()) {
            Some(Cached::Active { jwt, scope }) => {
                host.count(Counter::CacheHit);
                return Step::Done(authorize(cfg, jwt, scope));
            }
            Some(Cached::Inactive) => {
                host.count(Counter::CacheHit);
                return Step::Done(Verdict::Reject(Denial::InvalidToken));
            }
            None => {}
        }
    }
    host.count(Counter::CacheMiss);
    Step::Introspect {
        hash,
        token: token.to_owned(),
    }
}

/// Turns the token service's answer into a verdict, caching it as the TTL rule allows.
pub fn on_introspection(
    cfg: &Config,
    host: &dyn Host,
    hash: &TokenHash,
    outcome: Outcome,
) -> Verdict {
    let now = host.now_ms();
    let key = || cache::slot_key(&cfg.cache.namespace, hash, cfg.cache.max_entries);
    match outcome {
        Outcome::Active { claims, .. }
            if claims
                .exp
                .is_some_and(|exp| exp.saturating_mul(1_000) <= now) =>
        {
            // The token service handed out an already expired JWT: the API would refuse it.
            cache_inactive(cfg, host, &key(), hash, now);
            Verdict::Reject(Denial::InvalidToken)
        }
        Outcome::Active {
            jwt,
            claims,
            max_age_s,
            no_store,
        } => {
            if !no_store {
                if let Some(until) =
                    cache::active_expiry(now, &claims, max_age_s, cfg.cache.max_ttl_s)
                {
                    host.shared_set(
                        &key(),
                        &cache::encode_active(hash, until, &claims.scope, &jwt),
                    );
                }
            }
            authorize(cfg, &jwt, &claims.scope)
        }
        Outcome::Inactive => {
            cache_inactive(cfg, host, &key(), hash, now);
            Verdict::Reject(Denial::InvalidToken)
        }
        Outcome::Failed(failure) => Verdict::Reject(Denial::TokenService(failure)),
    }
}

fn cache_inactive(cfg: &Config, host: &dyn Host, key: &str, hash: &TokenHash, now: u64) {
    if cfg.cache.negative_ttl_s > 0 {
        let until = now.saturating_add(cfg.cache.negative_ttl_s.saturating_mul(1_000));
        host.shared_set(key, &cache::encode_inactive(hash, until));
    }
}

/// Scopes are checked on every request, cache hit or not.
fn authorize(cfg: &Config, jwt: &str, granted: &str) -> Verdict {
    if scope::has_all(granted, &cfg.required_scopes) {
        Verdict::Forward {
            authorization: format!("Bearer {jwt}"),
        }
    } else {
        Verdict::Reject(Denial::InsufficientScope)
    }
}
