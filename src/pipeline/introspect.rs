//! Stage: the token service's answer to an introspection (RFC 7662, Curity's
//! `application/jwt`, RFC 9701), turned into a verdict and cached as the TTL rule allows. The
//! call itself is made by the glue from [`crate::config::PhantomConfig`]; concurrent requests
//! for one token share it.

use std::rc::Rc;

use crate::config::Config;
use crate::hash::TokenHash;
use crate::host::Host;
use crate::metrics::Counter;
use crate::reply::Denial;
use crate::storage::local::Resolved;
use crate::storage::phantom_cache;
use crate::token::introspection::{CallFailure, Outcome};
use crate::token::jws::VerifyFailure;
use crate::token::mint::{self, MintError, Minted};

use crate::token::claims;
use crate::token::revocation::Identity;

use super::authorize::{authorize, resolved, Who};
use super::exchange::Incoming;
use super::phantom_cache::stored_identity;
use super::verify::{check_jwt, check_signed_response, refused};
use super::{revoke, Caller, Ctx, Step, Verdict};

/// A token the token service vouched for: what it resolved to, and until when this worker may
/// keep it ([`after_introspection`]); `None` when it is not cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Introspected {
    pub token: Rc<Resolved>,
    pub cache_until: Option<u64>,
}

/// Turns the token service's answer into the token it resolves to (or why there is none),
/// caching it as the TTL rule allows. The same answer serves every request waiting for it:
/// each is then judged under its own policy ([`after_introspection`]).
pub fn on_introspection(
    cx: &Ctx<'_>,
    hash: &TokenHash,
    outcome: Outcome,
) -> Result<Introspected, Denial> {
    let (cfg, host) = (cx.cfg, cx.host);
    let now = host.now_ms();
    let key = || phantom_cache::slot_key(&cfg.cache.namespace, hash, cfg.cache.max_entries);
    let inactive = || {
        cache_inactive(cfg, host, &key(), hash, now);
        Err(Denial::InvalidToken)
    };
    // Whose the token is: read from the JWT the token service made, or from the claims the
    // gateway mints from (a minted JWT's `iat` is the gateway's; the token's own is wanted).
    let (jwt, claims, max_age_s, no_store, identity) = match outcome {
        Outcome::Active { claims, .. }
            if claims
                .exp
                .is_some_and(|exp| exp.saturating_mul(1_000) <= now) =>
        {
            // The token service handed out an already expired JWT: the API would refuse it.
            return inactive();
        }
        Outcome::Active {
            jwt,
            claims,
            max_age_s,
            no_store,
        } => {
            // Verified before it is cached: a cache hit never verifies again, and a JWT
            // that fails is neither cached nor forwarded.
            check_jwt(cx, &jwt)?;
            let identity = stored_identity(hash, &[]);
            let identity = claims::payload_members(&jwt, &|m| claims::READ.contains(&m))
                .map_or(identity, |p| Identity::of(hash, &p));
            (jwt, claims, max_age_s, no_store, identity)
        }
        Outcome::Claims {
            claims: introspected,
            max_age_s,
        } => match mint_for(cfg, host, &introspected) {
            Ok(Some(m)) => {
                let identity = Identity::of(hash, &introspected);
                (m.jwt, m.claims, max_age_s, false, identity)
            }
            Ok(None) => return inactive(),
            Err(denial) => return Err(denial),
        },
        Outcome::Signed { jwt, max_age_s } => {
            let introspected = check_signed_response(cx, &jwt)?;
            // RFC 9701 §5: inactive tokens are answered with 200 too.
            match introspected.get("active") {
                Some(serde_json::Value::Bool(true)) => {}
                Some(serde_json::Value::Bool(false)) => return inactive(),
                _ => return Err(Denial::TokenService(CallFailure::Malformed)),
            }
            match mint_for(cfg, host, &introspected) {
                Ok(Some(m)) => {
                    let identity = Identity::of(hash, &introspected);
                    (m.jwt, m.claims, max_age_s, false, identity)
                }
                Ok(None) => return inactive(),
                Err(denial) => return Err(denial),
            }
        }
        Outcome::Inactive => return inactive(),
        // An unsigned JWT (`alg: none`) is a token that fails verification when the gateway
        // verifies; without `verify` it is a broken answer.
        Outcome::Failed(CallFailure::Unsigned) if cfg.verify.is_some() => {
            return Err(refused(cx, VerifyFailure::DisallowedAlgorithm));
        }
        Outcome::Failed(failure) => return Err(Denial::TokenService(failure)),
    };
    let token = resolved(
        cfg,
        &jwt,
        &claims.scope,
        Who::Known(Some(Box::new(identity.clone()))),
    );
    // Revoked while the call was in flight: refused, and kept nowhere.
    if revoke::refuses(cx, &token, true) {
        return Err(Denial::Revoked);
    }
    let cache_until = if no_store {
        None
    } else {
        phantom_cache::active_expiry(now, &claims, max_age_s, cfg.cache.max_ttl_s)
    };
    if let Some(until) = cache_until {
        host.shared_set(
            &key(),
            &phantom_cache::encode_active(hash, until, &claims.scope, &identity, &jwt),
        );
    }
    Ok(Introspected { token, cache_until })
}

/// What to do with one request waiting for the introspection of `token` (hash `hash`), under
/// its policy: a token it forwards is kept in this worker's copy of recent hits, then goes to
/// the exchange stage.
pub fn after_introspection(
    cx: &Ctx<'_>,
    caller: &Caller<'_>,
    incoming: Incoming<'_>,
    answer: &Result<Introspected, Denial>,
) -> Step {
    let verdict = match answer {
        Err(denial) => Verdict::Reject(*denial),
        Ok(found) => {
            let verdict = authorize(cx.cfg, caller, &found.token);
            if let (Verdict::Forward(_), Some(until)) = (&verdict, found.cache_until) {
                cx.worker
                    .local
                    .put(&incoming.fast, until, found.token.clone());
            }
            verdict
        }
    };
    super::finish(cx, caller, incoming, verdict)
}

/// Mints the JWT for an active token from its introspected claims; `None` when the claims
/// say it has expired. Signing is paid once per token per cache lifetime.
fn mint_for(
    cfg: &Config,
    host: &dyn Host,
    introspected: &serde_json::Map<String, serde_json::Value>,
) -> Result<Option<Minted>, Denial> {
    let Some(mint_cfg) = cfg.phantom.as_ref().and_then(|p| p.mint.as_ref()) else {
        // `json` with `jwt_claim` and no `mint`: the claim was missing.
        return Err(Denial::TokenService(CallFailure::Malformed));
    };
    match mint::mint(mint_cfg, introspected, host.now_ms() / 1_000) {
        Ok(m) => {
            host.count(Counter::Minted);
            Ok(Some(m))
        }
        Err(MintError::Expired) => Ok(None),
        Err(MintError::BadClaims | MintError::Signing) => {
            Err(Denial::TokenService(CallFailure::Malformed))
        }
    }
}

fn cache_inactive(cfg: &Config, host: &dyn Host, key: &str, hash: &TokenHash, now: u64) {
    if cfg.cache.negative_ttl_s > 0 {
        let until = now.saturating_add(cfg.cache.negative_ttl_s.saturating_mul(1_000));
        host.shared_set(key, &phantom_cache::encode_inactive(hash, until));
    }
}
