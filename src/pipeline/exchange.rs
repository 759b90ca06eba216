//! Stage: token exchange (RFC 8693). Once the client's token is resolved and authorized (its
//! scopes, its binding), a policy with an `exchange` forwards a token made for its API instead:
//! this worker's copy first, then the exchange cache's slot, else a call to the token service
//! (concurrent requests for one token and policy share it). The client's token is never
//! forwarded when an exchange fails.

use std::rc::Rc;

use crate::config::ExchangeRule;
use crate::hash::{TokenHash, TokenKeys};
use crate::metrics::Counter;
use crate::reply::Denial;
use crate::storage::exchange_cache;
use crate::storage::local::Resolved;
use crate::storage::phantom_cache;
use crate::token::exchange::{Outcome, Refusal, SubjectToken};
use crate::token::introspection::CallFailure;

use crate::token::revocation::Identity;

use super::authorize::{resolved, Who};
use super::cached::{self, Found};
use super::verify::verify_with;
use super::{journey, revoke, Caller, Ctx, Step, Verdict, Worker};

/// The token a request came with, as sent, and its keys.
pub type Incoming<'a> = &'a TokenKeys<'a>;

/// A token the token service made for a policy's API, and until when it may be kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchanged {
    pub token: Rc<Resolved>,
    pub cache_until: Option<u64>,
}

/// The stage, on a verdict reached for `incoming`: unchanged unless it forwards under a policy
/// with an `exchange`.
pub fn stage(cx: &Ctx<'_>, caller: &Caller<'_>, incoming: Incoming<'_>, verdict: Verdict) -> Step {
    let (cfg, worker, host) = (cx.cfg, cx.worker, cx.host);
    let (Verdict::Forward(resolved_token), Some(rule), Some(x)) =
        (&verdict, &caller.policy.exchange, &cfg.token_exchange)
    else {
        return Step::Done(verdict);
    };
    let now = host.now_ms();
    // Keyed by what is asked for (endpoint, audience, scope, resource), never by a policy's
    // position: another policy, another listener or a reload never reads what this one made
    // unless it asks for exactly the same.
    let key = exchange_cache::key_of(incoming.sha256(), &rule.id);
    let found = cached::read(
        cx,
        &worker.local_exchange,
        &key,
        || exchange_cache::slot_key(&x.namespace, &key, cfg.cache.max_entries),
        |value| exchange_cache::lookup(value, &key, now),
        // Whose the token made is: the client's (a revocation names the client's token, its
        // subject or session).
        |_| resolved_token.identity.clone(),
        denial_of,
    );
    // A token kept with too little life left for this policy is exchanged again.
    let fresh = |token: &Resolved| journey::fresh_enough(caller.policy, token, now / 1_000);
    match found {
        Found::Local(token) if fresh(&token) => {
            host.count(Counter::ExchangeHit);
            return Step::Done(Verdict::Forward(token));
        }
        // Only a token made for this policy's audience is served; any other is exchanged
        // again.
        Found::Shared { token, until_ms } if rule.made_for(bearer_jwt(&token)) && fresh(&token) => {
            host.count(Counter::ExchangeHit);
            worker.local_exchange.put(&key, until_ms, token.clone());
            return Step::Done(Verdict::Forward(token));
        }
        Found::Refused(denial) => {
            host.count(Counter::ExchangeHit);
            return Step::Done(Verdict::Reject(denial));
        }
        Found::Local(_) | Found::Shared { .. } | Found::Miss => {}
    }
    host.count(Counter::ExchangeMiss);
    let subject = match x.subject {
        SubjectToken::AccessToken => incoming.token.to_owned(),
        SubjectToken::Jwt => bearer_jwt(resolved_token).to_owned(),
    };
    Step::Exchange {
        key,
        token: *incoming.sha256(),
        subject,
        client: resolved_token.identity.clone(),
    }
}

/// The JWT a resolved token forwards.
fn bearer_jwt(token: &Resolved) -> &str {
    token
        .authorization
        .strip_prefix("Bearer ")
        .unwrap_or_default()
}

/// Turns the token service's answer to the exchange `key` for `rule` into the token made, or
/// why there is none, caching it (refusals for `cache.negative_ttl_s`). `client`: whose the
/// client's token is (with `revocation`): revoked while the call was in flight, the answer is
/// refused and never kept.
pub fn on_exchange(
    cx: &Ctx<'_>,
    rule: &ExchangeRule,
    key: &TokenHash,
    client: Option<&Identity>,
    outcome: Outcome,
) -> Result<Exchanged, Denial> {
    let (cfg, host) = (cx.cfg, cx.host);
    let Some(x) = &cfg.token_exchange else {
        return Err(Denial::ExchangeFailed(CallFailure::Malformed));
    };
    let now = host.now_ms();
    let slot = || exchange_cache::slot_key(&x.namespace, key, cfg.cache.max_entries);
    match outcome {
        Outcome::Issued {
            jwt,
            claims,
            expires_in_s,
        } => {
            if let Err(denial) = check(cx, rule, &jwt) {
                host.count(Counter::ExchangeError);
                return Err(denial);
            }
            if !rule.made_for(&jwt) {
                // Not for this policy's audience: never forwarded, never cached.
                host.count(Counter::ExchangeError);
                return Err(Denial::ExchangeFailed(CallFailure::Malformed));
            }
            let cache_until =
                phantom_cache::active_expiry(now, &claims, expires_in_s, cfg.cache.max_ttl_s);
            if claims
                .exp
                .is_some_and(|exp| exp.saturating_mul(1_000) <= now)
            {
                // Already expired: the API would refuse it.
                host.count(Counter::ExchangeError);
                return Err(Denial::ExchangeFailed(CallFailure::Malformed));
            }
            let token = resolved(
                cfg,
                &jwt,
                &claims.scope,
                Who::Known(client.cloned().map(Box::new)),
            );
            if revoke::refuses(cx, &token, true) {
                return Err(Denial::Revoked);
            }
            if let Some(until) = cache_until {
                host.shared_set(
                    &slot(),
                    &exchange_cache::encode_issued(key, until, &claims.scope, &jwt),
                );
            }
            Ok(Exchanged { token, cache_until })
        }
        Outcome::Refused(refusal) => {
            host.count(Counter::ExchangeRefused);
            if cfg.cache.negative_ttl_s > 0 {
                let until = now.saturating_add(cfg.cache.negative_ttl_s.saturating_mul(1_000));
                host.shared_set(
                    &slot(),
                    &exchange_cache::encode_refused(key, until, refusal),
                );
            }
            Err(denial_of(refusal))
        }
        Outcome::Failed(failure) => Err(Denial::ExchangeFailed(failure)),
    }
}

/// The verdict for one request waiting for the exchange `key` (of its token, for its
/// policy's rule): a token made is kept in this worker's copy.
pub fn after_exchange(
    worker: &Worker,
    key: &TokenHash,
    answer: &Result<Exchanged, Denial>,
) -> Verdict {
    match answer {
        Err(denial) => Verdict::Reject(*denial),
        Ok(made) => {
            if let Some(until) = made.cache_until {
                worker.local_exchange.put(key, until, made.token.clone());
            }
            Verdict::Forward(made.token.clone())
        }
    }
}

/// With `verify`, the JWT made is verified like any other, for the policy's audience; one that
/// fails is the token service's fault (502), never forwarded.
fn check(cx: &Ctx<'_>, rule: &ExchangeRule, jwt: &str) -> Result<(), Denial> {
    let Some(rules) = &rule.verify else {
        return Ok(());
    };
    match verify_with(cx, rules, jwt) {
        Err(Denial::KeysUnavailable) => Err(Denial::KeysUnavailable),
        // Counted by reason, like any JWT that fails; the token service's fault (502).
        Err(_) => Err(Denial::ExchangeFailed(CallFailure::Unverified)),
        Ok(()) => Ok(()),
    }
}

fn denial_of(refusal: Refusal) -> Denial {
    match refusal {
        Refusal::InvalidGrant => Denial::InvalidToken,
        Refusal::Forbidden => Denial::ExchangeForbidden,
    }
}
