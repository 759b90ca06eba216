//! The per-request decisions of the phantom and split token flows, free of any host call.
//!
//! ```text
//! request headers ──► route: publish path ──► publish API (answered here, never forwarded)
//!        │                   token endpoint ──► forwarded as is; its response is split
//!        ▼ CORS preflight? ──► continue unauthenticated (Authorization removed)
//!        ▼ parse bearer (RFC 6750) ──► Reject(NoCredentials | MalformedCredentials)
//!        ▼ split configured: store lookup by SHA-256 of the signature
//!   hit ──► scope check ──► Forward(Bearer header.payload.signature)
//!   revoked ──► Reject(InvalidToken)
//!   miss or expired ──► fallback_to_phantom ? phantom below : Reject(InvalidToken)
//!        ▼ phantom: cache slot
//!   hit: Active ──► scope check ──► Forward(Bearer JWT) | Reject(InsufficientScope)
//!   hit: Inactive ──► Reject(InvalidToken)
//!   miss ──► Introspect ── answer ──► on_introspection ──► Forward | Reject
//!            (answer "jwt": verify, forward; "json": JWT claim or mint; "rfc9701": verify
//!             the signed answer, then mint)
//! ```
//!
//! Host effects (shared data, clock, counters) go through [`Host`], so the whole flow runs
//! natively in tests with a fake host and a fixed clock.

use crate::config::{Config, SplitConfig};
use crate::hash::TokenHash;
use crate::host::Host;
use crate::metrics::Counter;
use crate::reply::{Denial, SplitReply};
use crate::storage::phantom_cache::{self, Cached};
use crate::storage::remote::{self, Got};
use crate::storage::split_store::{Found, Stored};
use crate::token::bearer::{self, BearerError};
use crate::token::introspection::{Failure as CallFailure, Outcome};
use crate::token::jws::Failure;
use crate::token::jwt;
use crate::token::mint::{self, MintError, Minted};
use crate::token::scope;
use crate::token::split::Entry;
use crate::token::split::{self, PublishOp, Rewrite};

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
    Done(Verdict),
    /// Cache miss: ask the token service.
    Introspect {
        hash: TokenHash,
        token: String,
    },
    /// Split store miss with `split.remote`: ask the remote store (then [`on_remote_get`]).
    Remote {
        hash: TokenHash,
        token: String,
        key: String,
    },
}

/// What a request that may be a CORS preflight is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preflight {
    /// Not a preflight: authenticate it like any request.
    No,
    /// A preflight (Fetch standard: `OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`). Browsers send it without credentials, so it passes
    /// unauthenticated, as with Envoy's `jwt_authn`.
    Pass,
    /// Shaped like a preflight but with a body or a method-override header, which no browser
    /// sends: an API that honours overrides on `OPTIONS` would act on it unauthenticated.
    Refuse,
}

/// Method-override headers some frameworks honour (Rails, Express, ASP.NET...).
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Classifies a request as a CORS preflight. `has_body`: the request has a body or trailers
/// (its headers did not end the stream); `has_override`: one of
/// [`METHOD_OVERRIDE_HEADERS`] is present.
pub fn preflight(
    method: &str,
    origin: Option<&str>,
    request_method: Option<&str>,
    has_body: bool,
    has_override: bool,
) -> Preflight {
    let shaped = method == "OPTIONS"
        && origin.is_some_and(|o| !o.is_empty())
        && request_method.is_some_and(|m| !m.is_empty());
    match (shaped, has_body || has_override) {
        (false, _) => Preflight::No,
        (true, false) => Preflight::Pass,
        (true, true) => Preflight::Refuse,
    }
}

/// The request headers the filter owns: whatever a client sends under these names is replaced
/// or removed, in the headers and in the trailers, so it never reaches the API as sent.
pub fn owned_request_headers(_cfg: &Config) -> impl Iterator<Item = &str> {
    ["authorization"].into_iter()
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
    // One hash serves both flows: the split store key is the SHA-256 of the signature, the
    // phantom cache key the SHA-256 of the opaque token.
    let hash = crate::hash::token_hash(token);
    if let Some(split) = &cfg.split {
        if let Some(verdict) = split_lookup(cfg, split, host, token, &hash) {
            return Step::Done(verdict);
        }
        // Only a base64url string can be a JWS signature, in any store.
        if split.remote.is_some() && jwt::is_segment(token) {
            return Step::Remote {
                hash,
                token: token.to_owned(),
                key: split.hash_encoding.encode(&hash),
            };
        }
        if !(split.fallback_to_phantom && cfg.phantom.is_some()) {
            return Step::Done(Verdict::Reject(Denial::InvalidToken));
        }
    }
    if cfg.phantom.is_none() {
        return Step::Done(Verdict::Reject(Denial::InvalidToken));
    }
    let now = host.now_ms();
    if let Some(authorization) = host.local_cache().get(&hash, now) {
        host.count(Counter::CacheHit);
        return Step::Done(Verdict::Forward {
            authorization: authorization.as_ref().to_owned(),
        });
    }
    let key = phantom_cache::slot_key(&cfg.cache.namespace, &hash, cfg.cache.max_entries);
    if let Some(value) = host.shared_get(&key) {
        match phantom_cache::lookup(&value, &hash, now) {
            Some(Cached::Active {
                jwt,
                scope,
                expires_at_ms,
            }) => {
                host.count(Counter::CacheHit);
                let verdict = authorize(cfg, jwt, scope);
                if let Verdict::Forward { authorization } = &verdict {
                    host.local_cache().put(&hash, expires_at_ms, authorization);
                }
                return Step::Done(verdict);
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

/// The split token lookup. `None`: a miss to hand to the phantom flow.
fn split_lookup(
    cfg: &Config,
    split: &SplitConfig,
    host: &dyn Host,
    token: &str,
    hash: &TokenHash,
) -> Option<Verdict> {
    // Only a base64url string can be a JWS signature; anything else cannot be in the store.
    let found = if jwt::is_segment(token) {
        split.store.lookup(host, hash, host.now_ms())
    } else {
        Found::Miss
    };
    match found {
        Found::Hit(stored) => {
            host.count(Counter::SplitHit);
            Some(split_hit(cfg, host, token, hash, &stored))
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

/// The verdict for a live split entry: scopes, then verification (once per entry and worker).
fn split_hit(
    cfg: &Config,
    host: &dyn Host,
    token: &str,
    hash: &TokenHash,
    stored: &Stored,
) -> Verdict {
    if !scope::has_all(stored.scope(), &cfg.required_scopes) {
        return Verdict::Reject(Denial::InsufficientScope);
    }
    let authorization = format!("Bearer {}.{token}", stored.header_payload());
    // Verified once per entry and worker: the memo is bound to the slot's version, so a
    // re-published or tampered entry is verified again.
    if cfg.verify.is_some() {
        let state = host.key_state();
        let now = host.now_ms();
        if stored.version.is_none() || !state.is_verified(hash, stored.version, now) {
            let jwt = authorization.get(BEARER_PREFIX.len()..).unwrap_or("");
            if let Err(denial) = check_jwt(cfg, host, jwt) {
                return Verdict::Reject(denial);
            }
            if stored.version.is_some() {
                state.remember_verified(hash, stored.version, stored.expires_at_ms, now);
            }
        }
    }
    Verdict::Forward { authorization }
}

/// The remote store's answer to a [`Step::Remote`] lookup. A found entry is copied into the
/// gateway's own store for at most `local_ttl_s`, then treated as a hit; a miss goes on to the
/// phantom fallback when configured (else 401); a store failure too (else 502).
pub fn on_remote_get(
    cfg: &Config,
    host: &dyn Host,
    hash: &TokenHash,
    token: &str,
    got: Got,
    latency_ms: u64,
) -> Step {
    let Some(split) = &cfg.split else {
        return Step::Done(Verdict::Reject(Denial::InvalidToken));
    };
    host.count_by(Counter::RemoteLatencyMs, latency_ms);
    let now = host.now_ms();
    let failed = || {
        host.count(Counter::RemoteError);
        fallback_or(cfg, split, hash, token, Denial::StoreUnavailable)
    };
    let header_payload = match got {
        Got::Found(hp) => hp,
        Got::Missing => {
            host.count(Counter::RemoteMiss);
            return fallback_or(cfg, split, hash, token, Denial::InvalidToken);
        }
        Got::Failed => return failed(),
    };
    // Whatever the remote store holds is checked like a publish would be.
    let Ok(claims) = split::parse_header_payload(&header_payload) else {
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
        return fallback_or(cfg, split, hash, token, Denial::InvalidToken);
    }
    host.count(Counter::RemoteHit);
    let local = local_entry(split, &entry, now);
    // A failed copy only costs the next request another remote read.
    let _ = split.store.put(host, &local, now);
    let stored = Stored::new(&local.scope, &local.header_payload, local.expires_at_ms);
    Step::Done(split_hit(cfg, host, token, hash, &stored))
}

fn fallback_or(
    cfg: &Config,
    split: &SplitConfig,
    hash: &TokenHash,
    token: &str,
    denial: Denial,
) -> Step {
    if split.fallback_to_phantom && cfg.phantom.is_some() {
        Step::Introspect {
            hash: *hash,
            token: token.to_owned(),
        }
    } else {
        Step::Done(Verdict::Reject(denial))
    }
}

/// The copy of `entry` kept in the gateway's own store: with a remote store, at most
/// `local_ttl_s`, so that a revocation made at another gateway is seen within that bound.
fn local_entry(split: &SplitConfig, entry: &Entry, now: u64) -> Entry {
    let mut local = entry.clone();
    if let Some(remote) = &split.remote {
        let bound = now.saturating_add(remote.local_ttl_s.saturating_mul(1_000));
        local.expires_at_ms = local.expires_at_ms.min(bound);
    }
    local
}

/// The remote write that stores `entry` for the rest of its life.
fn remote_put(split: &SplitConfig, entry: &Entry, now: u64) -> Option<remote::Call> {
    let remote = split.remote.as_ref()?;
    let ttl_s = entry.expires_at_ms.saturating_sub(now).div_ceil(1_000);
    Some(remote.put(
        &split.hash_encoding.encode(&entry.hash),
        &entry.header_payload,
        ttl_s,
    ))
}

/// Where a request goes, by its path (query and fragment ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// An API request: a token is required.
    Protected,
    /// `split.publish.path`: answered by the filter.
    Publish,
    /// One of `split.split_responses.paths`: forwarded without a token check; the response
    /// is split.
    TokenEndpoint,
    /// `phantom.mint.jwks_path`: the public keys of the gateway's minted JWTs, answered by
    /// the filter and never forwarded.
    GatewayJwks,
}

/// Whether the path must be read at all: only when the filter answers or treats some path
/// itself (split routes, the gateway's JWK Set).
pub fn has_routes(cfg: &Config) -> bool {
    gateway_jwks(cfg).is_some()
        || cfg
            .split
            .as_ref()
            .is_some_and(|s| s.publish.is_some() || !s.split_responses.is_empty())
}

/// `(path, document)` of the JWK Set of the gateway's minting key, when it is served.
pub fn gateway_jwks(cfg: &Config) -> Option<(&str, &str)> {
    let mint = cfg.phantom.as_ref()?.mint.as_ref()?;
    Some((mint.jwks_path.as_deref()?, mint.jwks.as_str()))
}

pub fn route(cfg: &Config, path: &str) -> Route {
    let path = path.split(['?', '#']).next().unwrap_or("");
    if gateway_jwks(cfg).is_some_and(|(p, _)| p == path) {
        return Route::GatewayJwks;
    }
    let Some(split) = &cfg.split else {
        return Route::Protected;
    };
    if split.publish.as_ref().is_some_and(|p| p.path == path) {
        Route::Publish
    } else if split.split_responses.iter().any(|p| p == path) {
        Route::TokenEndpoint
    } else {
        Route::Protected
    }
}

/// Checks a publish request's method and secret, before its body is read.
pub fn publish_gate(
    cfg: &Config,
    method: &str,
    authorization: Option<&str>,
) -> Result<(), SplitReply> {
    let Some(publish) = cfg.split.as_ref().and_then(|s| s.publish.as_ref()) else {
        return Err(SplitReply::MethodNotAllowed);
    };
    if method != "POST" && method != "DELETE" {
        return Err(SplitReply::MethodNotAllowed);
    }
    let presented =
        bearer::parse_authorization(authorization).map_err(|_| SplitReply::Unauthorized)?;
    let presented = crate::hash::token_hash(presented);
    if crate::hash::constant_time_eq(&presented, &publish.secret_hash) {
        Ok(())
    } else {
        Err(SplitReply::Unauthorized)
    }
}

/// Applies an authenticated publish (`POST`) or revoke (`DELETE`) request's body. With
/// `split.remote`, an accepted operation also returns the remote write to make before
/// answering (written through: the publisher's 204 means every gateway can see it).
pub fn publish(
    cfg: &Config,
    host: &dyn Host,
    method: &str,
    body: &[u8],
) -> (SplitReply, Option<remote::Call>) {
    let Some(split) = &cfg.split else {
        return (SplitReply::MethodNotAllowed, None);
    };
    let now = host.now_ms();
    let (reply, call) = match split::parse_publish(method, body, split.hash_encoding, now) {
        Err(e) => (SplitReply::Invalid(e.0), None),
        Ok(PublishOp::Store(entry)) => {
            match split.store.put(host, &local_entry(split, &entry, now), now) {
                Ok(()) => (SplitReply::Accepted, remote_put(split, &entry, now)),
                Err(_) => (SplitReply::Busy, None),
            }
        }
        Ok(PublishOp::Revoke(hash)) => match split.store.revoke(host, &hash, now) {
            Ok(_) => {
                host.count(Counter::Revocations);
                let call = split
                    .remote
                    .as_ref()
                    .map(|r| r.delete(&split.hash_encoding.encode(&hash)));
                (SplitReply::Accepted, call)
            }
            Err(_) => (SplitReply::Busy, None),
        },
    };
    if call.is_none() {
        count_publish(host, &reply);
    }
    (reply, call)
}

/// The answer to a publish once its remote write is done.
pub fn after_remote_write(host: &dyn Host, reply: SplitReply, succeeded: bool) -> SplitReply {
    let reply = if succeeded {
        reply
    } else {
        host.count(Counter::RemoteWriteFailed);
        SplitReply::StoreUnavailable
    };
    count_publish(host, &reply);
    reply
}

/// Counts a publish API answer.
pub fn count_publish(host: &dyn Host, reply: &SplitReply) {
    host.count(if *reply == SplitReply::Accepted {
        Counter::PublishAccepted
    } else {
        Counter::PublishRefused
    });
}

/// What to do with a token endpoint response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenResponse {
    Unchanged,
    /// Send this body instead (`Content-Length` to match); with `split.remote`, only once the
    /// remote write succeeded.
    Replace {
        body: Vec<u8>,
        remote: Option<remote::Call>,
    },
    /// Replace the response with a local reply: the JWT must not reach the client.
    Refuse(SplitReply),
}

/// Splits the JWT in a token endpoint response, storing `header.payload`.
pub fn on_token_response(
    cfg: &Config,
    host: &dyn Host,
    status: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
) -> TokenResponse {
    let Some(split) = &cfg.split else {
        return TokenResponse::Unchanged;
    };
    let now = host.now_ms();
    match split::rewrite_token_response(status, content_encoding, body, now) {
        Rewrite::Unchanged => TokenResponse::Unchanged,
        Rewrite::Refuse(_) => {
            host.count(Counter::SplitRefused);
            TokenResponse::Refuse(SplitReply::SplitFailed)
        }
        Rewrite::Split { body, entry } => {
            match split.store.put(host, &local_entry(split, &entry, now), now) {
                Ok(()) => {
                    host.count(Counter::ResponsesSplit);
                    TokenResponse::Replace {
                        body,
                        remote: remote_put(split, &entry, now),
                    }
                }
                Err(_) => {
                    host.count(Counter::SplitRefused);
                    TokenResponse::Refuse(SplitReply::Busy)
                }
            }
        }
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
    let key = || phantom_cache::slot_key(&cfg.cache.namespace, hash, cfg.cache.max_entries);
    let inactive = || {
        cache_inactive(cfg, host, &key(), hash, now);
        Verdict::Reject(Denial::InvalidToken)
    };
    let (jwt, claims, max_age_s, no_store) = match outcome {
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
            if let Err(denial) = check_jwt(cfg, host, &jwt) {
                return Verdict::Reject(denial);
            }
            (jwt, claims, max_age_s, no_store)
        }
        Outcome::Claims { claims, max_age_s } => match mint_for(cfg, host, &claims) {
            Ok(Some(m)) => (m.jwt, m.claims, max_age_s, false),
            Ok(None) => return inactive(),
            Err(denial) => return Verdict::Reject(denial),
        },
        Outcome::Signed { jwt, max_age_s } => {
            let introspected = match check_signed_response(cfg, host, &jwt) {
                Ok(claims) => claims,
                Err(denial) => return Verdict::Reject(denial),
            };
            // RFC 9701 §5: inactive tokens are answered with 200 too.
            match introspected.get("active") {
                Some(serde_json::Value::Bool(true)) => {}
                Some(serde_json::Value::Bool(false)) => return inactive(),
                _ => return Verdict::Reject(Denial::TokenService(CallFailure::Malformed)),
            }
            match mint_for(cfg, host, &introspected) {
                Ok(Some(m)) => (m.jwt, m.claims, max_age_s, false),
                Ok(None) => return inactive(),
                Err(denial) => return Verdict::Reject(denial),
            }
        }
        Outcome::Inactive => return inactive(),
        Outcome::Failed(CallFailure::Unsigned) if cfg.verify.is_some() => {
            host.count(Counter::VerifyDisallowedAlgorithm);
            return Verdict::Reject(Denial::InvalidToken);
        }
        Outcome::Failed(failure) => return Verdict::Reject(Denial::TokenService(failure)),
    };
    let verdict = authorize(cfg, &jwt, &claims.scope);
    if !no_store {
        if let Some(until) =
            phantom_cache::active_expiry(now, &claims, max_age_s, cfg.cache.max_ttl_s)
        {
            host.shared_set(
                &key(),
                &phantom_cache::encode_active(hash, until, &claims.scope, &jwt),
            );
            if let Verdict::Forward { authorization } = &verdict {
                host.local_cache().put(hash, until, authorization);
            }
        }
    }
    verdict
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

/// Verifies a signed introspection response (RFC 9701) with the `verify` keys, its audience
/// being the gateway's client id. A failure is the token service's (502), not the client's.
fn check_signed_response(
    cfg: &Config,
    host: &dyn Host,
    jwt: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, Denial> {
    let (Some(verify), Some(phantom)) = (&cfg.verify, &cfg.phantom) else {
        return Err(Denial::TokenService(CallFailure::Unverified));
    };
    let state = host.key_state();
    let Some(keys) = state.keys() else {
        return Err(Denial::KeysUnavailable);
    };
    keys.verify_introspection(
        &verify.policy,
        &phantom.client_id,
        jwt,
        host.now_ms() / 1_000,
    )
    .map_err(|failure| {
        if failure == Failure::UnknownKey {
            state.request_refetch();
        }
        host.count(Counter::IntrospectionUnverified);
        Denial::TokenService(CallFailure::Unverified)
    })
}

fn cache_inactive(cfg: &Config, host: &dyn Host, key: &str, hash: &TokenHash, now: u64) {
    if cfg.cache.negative_ttl_s > 0 {
        let until = now.saturating_add(cfg.cache.negative_ttl_s.saturating_mul(1_000));
        host.shared_set(key, &phantom_cache::encode_inactive(hash, until));
    }
}

const BEARER_PREFIX: &str = "Bearer ";

/// Verifies a JWT when `verify` is configured, counting the outcome. An unknown `kid` asks
/// for an early key set fetch (key rotation).
fn check_jwt(cfg: &Config, host: &dyn Host, jwt: &str) -> Result<(), Denial> {
    let Some(verify) = &cfg.verify else {
        return Ok(());
    };
    let state = host.key_state();
    let Some(keys) = state.keys() else {
        return Err(Denial::KeysUnavailable);
    };
    match keys.verify(&verify.policy, jwt, host.now_ms() / 1_000) {
        Ok(()) => {
            host.count(Counter::Verified);
            Ok(())
        }
        Err(failure) => {
            if failure == Failure::UnknownKey {
                state.request_refetch();
            }
            host.count(match failure {
                Failure::BadSignature => Counter::VerifyBadSignature,
                Failure::UnknownKey => Counter::VerifyUnknownKey,
                Failure::DisallowedAlgorithm => Counter::VerifyDisallowedAlgorithm,
                Failure::WrongIssuer => Counter::VerifyWrongIssuer,
                Failure::WrongAudience => Counter::VerifyWrongAudience,
                Failure::Expired => Counter::VerifyExpired,
                Failure::NotYetValid => Counter::VerifyNotYetValid,
                Failure::Malformed => Counter::VerifyMalformed,
            });
            Err(Denial::InvalidToken)
        }
    }
}

/// Scopes are checked on every request, cache hit or not.
fn authorize(cfg: &Config, jwt: &str, granted: &str) -> Verdict {
    authorize_with(cfg, granted, || format!("Bearer {jwt}"))
}

fn authorize_with(cfg: &Config, granted: &str, authorization: impl FnOnce() -> String) -> Verdict {
    if scope::has_all(granted, &cfg.required_scopes) {
        Verdict::Forward {
            authorization: authorization(),
        }
    } else {
        Verdict::Reject(Denial::InsufficientScope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeHost;
    use crate::token::introspection::Failure;
    use crate::token::jwt::tests::make;
    use crate::token::jwt::Claims;

    const T0: u64 = 1_700_000_000_000;

    fn config(extra: &str) -> Config {
        let json = format!(
            r#"{{"required_scopes": ["read"], "phantom": {{"cluster": "ts", "path": "/i",
            "client_id": "gw", "client_secret": "s"}}{extra}}}"#
        );
        Config::from_slice(json.as_bytes()).unwrap()
    }

    fn active(jwt: &str, exp: Option<u64>, scope: &str) -> Outcome {
        Outcome::Active {
            jwt: jwt.to_owned(),
            claims: Claims {
                exp,
                scope: scope.to_owned(),
            },
            max_age_s: None,
            no_store: false,
        }
    }

    fn introspect(cfg: &Config, host: &FakeHost, header: &str) -> TokenHash {
        match on_request(cfg, host, Some(header)) {
            Step::Introspect { hash, token } => {
                assert_eq!(format!("Bearer {token}"), header);
                hash
            }
            other => panic!("expected a cache miss for {header}, got {other:?}"),
        }
    }

    fn forward(jwt: &str) -> Step {
        Step::Done(Verdict::Forward {
            authorization: format!("Bearer {jwt}"),
        })
    }

    #[test]
    fn missing_and_malformed_credentials_never_reach_the_cache() {
        let (cfg, host) = (config(""), FakeHost::at(T0));
        assert_eq!(
            on_request(&cfg, &host, None),
            Step::Done(Verdict::Reject(Denial::NoCredentials))
        );
        assert_eq!(
            on_request(&cfg, &host, Some("Bearer a b")),
            Step::Done(Verdict::Reject(Denial::MalformedCredentials))
        );
        assert_eq!(host.count_of(Counter::CacheMiss), 0);
        assert_eq!(host.key_count(), 0);
    }

    #[test]
    fn active_answer_is_cached_and_served_until_exp_minus_skew() {
        let (cfg, host) = (config(""), FakeHost::at(T0));
        let jwt = make(r#"{"scope":"read"}"#);
        let exp = T0 / 1000 + 60;
        let hash = introspect(&cfg, &host, "Bearer opaque");
        let v = on_introspection(&cfg, &host, &hash, active(&jwt, Some(exp), "read"));
        assert_eq!(
            v,
            Verdict::Forward {
                authorization: format!("Bearer {jwt}")
            }
        );
        assert_eq!(
            on_request(&cfg, &host, Some("Bearer opaque")),
            forward(&jwt)
        );
        assert_eq!(host.count_of(Counter::CacheHit), 1);
        host.now
            .set(exp * 1000 - crate::token::jwt::EXP_SKEW_MS - 1);
        assert_eq!(
            on_request(&cfg, &host, Some("Bearer opaque")),
            forward(&jwt)
        );
        host.now.set(exp * 1000 - crate::token::jwt::EXP_SKEW_MS);
        introspect(&cfg, &host, "Bearer opaque");
        let stored: Vec<u8> = host.values().remove(0);
        assert!(
            !stored.windows(6).any(|w| w == b"opaque"),
            "the opaque token is never stored"
        );
    }

    #[test]
    fn scopes_are_checked_on_cache_hits() {
        let (cfg, host) = (config(""), FakeHost::at(T0));
        let hash = introspect(&cfg, &host, "Bearer t");
        let v = on_introspection(&cfg, &host, &hash, active("a.b.c", None, "write"));
        assert_eq!(v, Verdict::Reject(Denial::InsufficientScope));
        assert_eq!(
            on_request(&cfg, &host, Some("Bearer t")),
            Step::Done(Verdict::Reject(Denial::InsufficientScope))
        );
        assert_eq!(host.count_of(Counter::CacheHit), 1);
    }

    #[test]
    fn inactive_answers_are_cached_for_negative_ttl() {
        let (cfg, host) = (
            config(r#", "cache": {"negative_ttl_s": 5}"#),
            FakeHost::at(T0),
        );
        let hash = introspect(&cfg, &host, "Bearer t");
        assert_eq!(
            on_introspection(&cfg, &host, &hash, Outcome::Inactive),
            Verdict::Reject(Denial::InvalidToken)
        );
        assert_eq!(
            on_request(&cfg, &host, Some("Bearer t")),
            Step::Done(Verdict::Reject(Denial::InvalidToken))
        );
        host.now.set(T0 + 5_000);
        introspect(&cfg, &host, "Bearer t");
    }

    #[test]
    fn negative_ttl_zero_and_failures_and_no_store_are_not_cached() {
        let cfg = config(r#", "cache": {"negative_ttl_s": 0}"#);
        let host = FakeHost::at(T0);
        let hash = introspect(&cfg, &host, "Bearer t");
        on_introspection(&cfg, &host, &hash, Outcome::Inactive);
        let v = on_introspection(&cfg, &host, &hash, Outcome::Failed(Failure::Timeout));
        assert_eq!(v, Verdict::Reject(Denial::TokenService(Failure::Timeout)));
        let no_store = Outcome::Active {
            jwt: "a.b.c".into(),
            claims: Claims {
                exp: None,
                scope: "read".into(),
            },
            max_age_s: None,
            no_store: true,
        };
        assert!(matches!(
            on_introspection(&cfg, &host, &hash, no_store),
            Verdict::Forward { .. }
        ));
        assert_eq!(host.key_count(), 0);
    }

    #[test]
    fn an_already_expired_jwt_is_an_invalid_token() {
        let (cfg, host) = (config(""), FakeHost::at(T0));
        let hash = introspect(&cfg, &host, "Bearer t");
        let v = on_introspection(
            &cfg,
            &host,
            &hash,
            active("a.b.c", Some(T0 / 1000 - 1), "read"),
        );
        assert_eq!(v, Verdict::Reject(Denial::InvalidToken));
    }

    #[test]
    fn a_slot_holds_one_token_and_collisions_are_misses() {
        let (cfg, host) = (config(r#", "cache": {"max_entries": 1}"#), FakeHost::at(T0));
        let a = introspect(&cfg, &host, "Bearer a");
        on_introspection(&cfg, &host, &a, active("a.a.a", None, "read"));
        let b = introspect(&cfg, &host, "Bearer b");
        on_introspection(&cfg, &host, &b, active("b.b.b", None, "read"));
        assert_eq!(host.key_count(), 1, "one slot, one key");
        assert_eq!(on_request(&cfg, &host, Some("Bearer b")), forward("b.b.b"));
        // This worker still has a's JWT in its local copy (valid until its expiry); another
        // worker (no local copy) finds the slot taken by b: a miss.
        assert_eq!(on_request(&cfg, &host, Some("Bearer a")), forward("a.a.a"));
        host.local.clear();
        introspect(&cfg, &host, "Bearer a");
    }

    #[test]
    fn cache_hits_are_served_from_the_local_copy_after_the_first() {
        let (cfg, host) = (config(""), FakeHost::at(T0));
        let exp = T0 / 1000 + 60;
        let hash = introspect(&cfg, &host, "Bearer t");
        on_introspection(&cfg, &host, &hash, active("x.y.z", Some(exp), "read"));
        assert_eq!(host.local.len(), 1, "filled by the answer");
        // The shared entry is gone (another token took the slot): the local copy still serves.
        for key in host.data_keys() {
            host.remove(&key);
        }
        assert_eq!(on_request(&cfg, &host, Some("Bearer t")), forward("x.y.z"));
        // Never past the shared entry's expiry.
        host.now.set(exp * 1000 - crate::token::jwt::EXP_SKEW_MS);
        introspect(&cfg, &host, "Bearer t");
        // A forbidden scope is not kept locally.
        host.local.clear();
        let h2 = introspect(&cfg, &host, "Bearer w");
        on_introspection(&cfg, &host, &h2, active("w.w.w", Some(exp + 60), "write"));
        assert!(host.local.is_empty());
    }

    #[test]
    fn cors_preflight_detection() {
        let p = |m, o, r, body, ovr| preflight(m, o, r, body, ovr);
        assert_eq!(
            p("OPTIONS", Some("https://a"), Some("POST"), false, false),
            Preflight::Pass
        );
        assert_eq!(
            p("OPTIONS", Some("https://a"), None, false, false),
            Preflight::No
        );
        assert_eq!(
            p("OPTIONS", None, Some("POST"), false, false),
            Preflight::No
        );
        assert_eq!(
            p("OPTIONS", Some(""), Some("POST"), false, false),
            Preflight::No
        );
        assert_eq!(
            p("GET", Some("https://a"), Some("POST"), false, false),
            Preflight::No
        );
        // A body or a method override makes it something no browser sends.
        assert_eq!(
            p("OPTIONS", Some("https://a"), Some("POST"), true, false),
            Preflight::Refuse
        );
        assert_eq!(
            p("OPTIONS", Some("https://a"), Some("POST"), false, true),
            Preflight::Refuse
        );
        assert_eq!(
            p("GET", Some("https://a"), Some("POST"), true, true),
            Preflight::No
        );
    }

    // ---- split token ------------------------------------------------------------------------

    const SECRET: &str = "publisher-secret";

    fn split_config(split: &str, with_phantom: bool) -> Config {
        let phantom = if with_phantom {
            r#""phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s"},"#
        } else {
            ""
        };
        let json = format!(
            r#"{{"required_scopes": ["read"], {phantom} "split": {{"max_entries": 64,
            "publish": {{"path": "/_split-token", "secret": "{SECRET}"}},
            "split_responses": {{"paths": ["/oauth/token"]}} {split}}}}}"#
        );
        Config::from_slice(json.as_bytes()).unwrap()
    }

    /// The key a publisher writes for `signature`, in the configured encoding.
    fn store_key(cfg: &Config, signature: &str) -> String {
        let split = cfg.split.as_ref().unwrap();
        split
            .hash_encoding
            .encode(&split::signature_hash(signature))
    }

    /// Publishes `jwt` through the publish API; returns its signature.
    fn publish_jwt(cfg: &Config, host: &FakeHost, jwt: &str, expires_at: u64) -> String {
        let (hp, sig) = jwt.rsplit_once('.').unwrap();
        let key = store_key(cfg, sig);
        let body = serde_json::json!({
            "signature_hash": key, "header_payload": hp, "expires_at": expires_at,
        });
        assert_eq!(
            publish_gate(cfg, "POST", Some(&format!("Bearer {SECRET}"))),
            Ok(())
        );
        assert_eq!(
            publish(cfg, host, "POST", body.to_string().as_bytes()),
            (SplitReply::Accepted, None)
        );
        sig.to_owned()
    }

    fn revoke(cfg: &Config, host: &FakeHost, sig: &str) -> SplitReply {
        let body = serde_json::json!({ "signature_hash": store_key(cfg, sig) }).to_string();
        publish(cfg, host, "DELETE", body.as_bytes()).0
    }

    fn signed(payload: &str, sig: &str) -> String {
        let jwt = make(payload);
        format!("{}.{sig}", jwt.rsplit_once('.').unwrap().0)
    }

    #[test]
    fn published_split_token_is_reassembled() {
        let (cfg, host) = (split_config("", false), FakeHost::at(T0));
        let jwt = signed(r#"{"sub":"a","scope":"read"}"#, "U2lnbmF0dXJlT25l");
        let sig = publish_jwt(&cfg, &host, &jwt, T0 / 1000 + 60);
        assert_eq!(
            on_request(&cfg, &host, Some(&format!("Bearer {sig}"))),
            forward(&jwt)
        );
        assert_eq!(host.count_of(Counter::SplitHit), 1);
        assert_eq!(host.count_of(Counter::PublishAccepted), 1);
    }

    #[test]
    fn split_refusals() {
        let (cfg, host) = (split_config("", false), FakeHost::at(T0));
        let good = signed(r#"{"scope":"read"}"#, "QUJDREVGR0hJSktM");
        let sig = publish_jwt(&cfg, &host, &good, T0 / 1000 + 60);
        let noscope = signed(r#"{"scope":"write"}"#, "Tm9TY29wZVNpZw");
        let noscope_sig = publish_jwt(&cfg, &host, &noscope, T0 / 1000 + 60);
        // One character changed.
        let tampered = format!("{}N", &sig[..sig.len() - 1]);
        assert_ne!(tampered, sig);
        let reject = |d| Step::Done(Verdict::Reject(d));
        let cases: Vec<(&str, String, Step)> = vec![
            ("tampered", tampered, reject(Denial::InvalidToken)),
            ("unknown", "VW5rbm93bg".into(), reject(Denial::InvalidToken)),
            (
                "not base64url",
                "abc+/=".into(),
                reject(Denial::InvalidToken),
            ),
            ("whole jwt", good.clone(), reject(Denial::InvalidToken)),
            ("scope", noscope_sig, reject(Denial::InsufficientScope)),
        ];
        for (name, token, want) in cases {
            assert_eq!(
                on_request(&cfg, &host, Some(&format!("Bearer {token}"))),
                want,
                "{name}"
            );
        }
        assert_eq!(host.count_of(Counter::SplitMiss), 4);
        // Expired, then revoked.
        host.now.set((T0 / 1000 + 60) * 1000);
        assert_eq!(
            on_request(&cfg, &host, Some(&format!("Bearer {sig}"))),
            reject(Denial::InvalidToken)
        );
        assert_eq!(host.count_of(Counter::SplitExpired), 1);
        host.now.set(T0);
        assert_eq!(revoke(&cfg, &host, &sig), SplitReply::Accepted);
        assert_eq!(
            on_request(&cfg, &host, Some(&format!("Bearer {sig}"))),
            reject(Denial::InvalidToken)
        );
        assert_eq!(host.count_of(Counter::SplitRevoked), 1);
        assert_eq!(host.count_of(Counter::Revocations), 1);
    }

    #[test]
    fn miss_falls_back_to_phantom_only_when_configured() {
        let host = FakeHost::at(T0);
        let with = split_config(r#", "fallback_to_phantom": true"#, true);
        let without = split_config("", true);
        introspect(&with, &host, "Bearer opaque-token");
        assert_eq!(
            on_request(&without, &host, Some("Bearer opaque-token")),
            Step::Done(Verdict::Reject(Denial::InvalidToken))
        );
        // A revocation is final, even with the fallback.
        let jwt = signed(r#"{"scope":"read"}"#, "UmV2b2tlZA");
        let sig = publish_jwt(&with, &host, &jwt, T0 / 1000 + 60);
        revoke(&with, &host, &sig);
        assert_eq!(
            on_request(&with, &host, Some(&format!("Bearer {sig}"))),
            Step::Done(Verdict::Reject(Denial::InvalidToken))
        );
    }

    #[test]
    fn publish_gate_checks_method_and_secret() {
        let cfg = split_config("", false);
        let ok = format!("Bearer {SECRET}");
        assert_eq!(publish_gate(&cfg, "POST", Some(&ok)), Ok(()));
        assert_eq!(publish_gate(&cfg, "DELETE", Some(&ok)), Ok(()));
        let cases: Vec<(&str, Option<String>, SplitReply)> = vec![
            ("GET", Some(ok.clone()), SplitReply::MethodNotAllowed),
            ("PUT", Some(ok.clone()), SplitReply::MethodNotAllowed),
            ("POST", None, SplitReply::Unauthorized),
            (
                "POST",
                Some("Bearer publisher-secreT".into()),
                SplitReply::Unauthorized,
            ),
            (
                "POST",
                Some("Bearer publisher-secret2".into()),
                SplitReply::Unauthorized,
            ),
            (
                "POST",
                Some(format!("Basic {SECRET}")),
                SplitReply::Unauthorized,
            ),
            ("POST", Some(SECRET.into()), SplitReply::Unauthorized),
        ];
        for (method, auth, want) in cases {
            assert_eq!(
                publish_gate(&cfg, method, auth.as_deref()),
                Err(want),
                "{method} {auth:?}"
            );
        }
    }

    #[test]
    fn refused_publish_leaves_the_store_unchanged() {
        let (cfg, host) = (split_config("", false), FakeHost::at(T0));
        let before = host.writes();
        let (reply, _) = publish(&cfg, &host, "POST", b"{\"signature_hash\": 1}");
        assert!(matches!(reply, SplitReply::Invalid(_)), "{reply:?}");
        assert_eq!(host.writes(), before);
        assert_eq!(host.count_of(Counter::PublishRefused), 1);
    }

    #[test]
    fn routes_by_path_without_query() {
        let cfg = split_config("", false);
        assert!(has_routes(&cfg));
        assert!(!has_routes(&config("")));
        for (path, want) in [
            ("/_split-token", Route::Publish),
            ("/_split-token?x=1", Route::Publish),
            ("/_split-token/", Route::Protected),
            ("/oauth/token", Route::TokenEndpoint),
            ("/oauth/token#f", Route::TokenEndpoint),
            ("/oauth/tokens", Route::Protected),
            ("/api", Route::Protected),
        ] {
            assert_eq!(route(&cfg, path), want, "{path}");
        }
        assert_eq!(route(&config(""), "/_split-token"), Route::Protected);
    }

    #[test]
    fn issued_token_is_split_and_then_works() {
        let (cfg, host) = (split_config("", false), FakeHost::at(T0));
        let jwt = signed(
            &format!(r#"{{"scope":"read","exp":{}}}"#, T0 / 1000 + 60),
            "SXNzdWVk",
        );
        let body = format!(r#"{{"access_token":"{jwt}","token_type":"Bearer","expires_in":60}}"#);
        let TokenResponse::Replace {
            body: out,
            remote: None,
        } = on_token_response(&cfg, &host, Some("200"), None, body.as_bytes())
        else {
            panic!("not split")
        };
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"access_token":"SXNzdWVk","token_type":"Bearer","expires_in":60}"#
        );
        assert_eq!(
            on_request(&cfg, &host, Some("Bearer SXNzdWVk")),
            forward(&jwt)
        );
        assert_eq!(host.count_of(Counter::ResponsesSplit), 1);
        assert_eq!(
            on_token_response(&cfg, &host, Some("401"), None, body.as_bytes()),
            TokenResponse::Unchanged
        );
        let no_lifetime = format!(r#"{{"access_token":"{}"}}"#, signed("{}", "Tm9MaWZl"));
        assert_eq!(
            on_token_response(&cfg, &host, Some("200"), None, no_lifetime.as_bytes()),
            TokenResponse::Refuse(SplitReply::SplitFailed)
        );
    }

    mod verification {
        use super::*;
        use crate::token::jws::tests::{claims, jwks, keys, Keys};
        use jwt_simple::prelude::*;

        /// Phantom and split with `verify` on inline keys (the host holds them, as the
        /// root context would after configuration).
        fn setup(k: &Keys, jwks_json: Option<&str>) -> (Config, FakeHost) {
            let doc = jwks_json.map_or_else(|| jwks(k), str::to_owned);
            let json = format!(
                r#"{{"required_scopes": ["read"],
                "phantom": {{"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s"}},
                "split": {{"max_entries": 64, "fallback_to_phantom": true,
                  "publish": {{"path": "/_split-token", "secret": "{SECRET}"}}}},
                "verify": {{"issuer": "https://login.example.com", "audiences": ["api.example.com"],
                  "algorithms": ["RS256", "ES256", "EdDSA"], "jwks_inline": {doc}}}}}"#
            );
            let cfg = Config::from_slice(json.as_bytes()).unwrap();
            let host = FakeHost::at(T0);
            if let Some(crate::config::KeySource::Inline(keys)) =
                cfg.verify.as_ref().map(|v| &v.keys)
            {
                host.keys.set_keys(keys.clone());
            }
            (cfg, host)
        }

        fn with_scope() -> JWTClaims<serde_json::Value> {
            let c = claims();
            let mut out = jwt_simple::claims::Claims::with_custom_claims(
                serde_json::json!({"scope": "read"}),
                Duration::from_secs(300),
            );
            out.issuer = c.issuer;
            out.audiences = c.audiences;
            out.issued_at = c.issued_at;
            out.invalid_before = c.invalid_before;
            out.expires_at = c.expires_at;
            out
        }

        fn introspected(cfg: &Config, host: &FakeHost, opaque: &str, jwt: &str) -> Verdict {
            let hash = introspect(cfg, host, &format!("Bearer {opaque}"));
            let claims = crate::token::jwt::parse(jwt).unwrap();
            on_introspection(cfg, host, &hash, active(jwt, claims.exp, &claims.scope))
        }

        #[test]
        fn a_verified_jwt_is_cached_and_hits_do_not_verify_again() {
            let k = keys();
            let (cfg, host) = setup(&k, None);
            let jwt = k.rsa.sign(with_scope()).unwrap();
            let want = Verdict::Forward {
                authorization: format!("Bearer {jwt}"),
            };
            assert_eq!(introspected(&cfg, &host, "opaque", &jwt), want);
            for _ in 0..3 {
                assert_eq!(
                    on_request(&cfg, &host, Some("Bearer opaque")),
                    forward(&jwt)
                );
            }
            assert_eq!(host.count_of(Counter::Verified), 1);
            assert_eq!(host.count_of(Counter::CacheHit), 3);
        }

        #[test]
        fn a_jwt_that_fails_is_neither_forwarded_nor_cached() {
            let k = keys();
            let (cfg, host) = setup(&k, None);
            let forged = ES256KeyPair::generate()
                .with_key_id("ec-1")
                .sign(with_scope())
                .unwrap();
            assert_eq!(
                introspected(&cfg, &host, "opaque", &forged),
                Verdict::Reject(Denial::InvalidToken)
            );
            assert_eq!(host.count_of(Counter::VerifyBadSignature), 1);
            introspect(&cfg, &host, "Bearer opaque");
            let unknown = ES256KeyPair::generate()
                .with_key_id("rotated")
                .sign(with_scope())
                .unwrap();
            assert_eq!(
                introspected(&cfg, &host, "other", &unknown),
                Verdict::Reject(Denial::InvalidToken)
            );
            assert_eq!(host.count_of(Counter::VerifyUnknownKey), 1);
            assert!(
                host.keys.take_refetch_request(),
                "unknown kid asks for a fetch"
            );
        }

        #[test]
        fn without_keys_requests_fail_closed_with_502() {
            let k = keys();
            let (cfg, _) = setup(&k, None);
            let host = FakeHost::at(T0);
            let jwt = k.ed.sign(with_scope()).unwrap();
            assert_eq!(
                introspected(&cfg, &host, "opaque", &jwt),
                Verdict::Reject(Denial::KeysUnavailable)
            );
            introspect(&cfg, &host, "Bearer opaque");
        }

        #[test]
        fn split_entries_are_verified_once_and_poisoned_entries_refused() {
            let k = keys();
            let (cfg, host) = setup(&k, None);
            let jwt = k.ec.sign(with_scope()).unwrap();
            let exp = T0 / 1000 + 300;
            let sig = publish_jwt(&cfg, &host, &jwt, exp);
            for _ in 0..3 {
                assert_eq!(
                    on_request(&cfg, &host, Some(&format!("Bearer {sig}"))),
                    forward(&jwt)
                );
            }
            assert_eq!(host.count_of(Counter::Verified), 1);
            // Poisoned: a payload with more privileges under the same signature hash.
            let richer_jwt = {
                let mut c = with_scope();
                c.custom = serde_json::json!({"scope": "read admin"});
                k.ec.sign(c).unwrap()
            };
            let poisoned = format!("{}.{sig}", richer_jwt.rsplit_once('.').unwrap().0);
            publish_jwt(&cfg, &host, &poisoned, exp);
            assert_eq!(
                on_request(&cfg, &host, Some(&format!("Bearer {sig}"))),
                Step::Done(Verdict::Reject(Denial::InvalidToken)),
                "no fallback to phantom for an entry that fails verification"
            );
            assert_eq!(host.count_of(Counter::VerifyBadSignature), 1);
            // Re-published correctly: verified again, and served.
            publish_jwt(&cfg, &host, &jwt, exp);
            assert_eq!(
                on_request(&cfg, &host, Some(&format!("Bearer {sig}"))),
                forward(&jwt)
            );
            assert_eq!(host.count_of(Counter::Verified), 2);
        }
    }

    /// `split.remote`: the second-level store.
    mod remote_store {
        use super::*;
        use crate::storage::remote::Got;

        const REMOTE: &str = r#", "remote": {"cluster": "webdis", "get_path": "/GET/s:{key}.txt",
            "put_path": "/SETEX/s:{key}/{ttl}", "delete_path": "/DEL/s:{key}",
            "delete_method": "GET", "local_ttl_s": 10}"#;

        fn remote_step(cfg: &Config, host: &FakeHost, sig: &str) -> (TokenHash, String) {
            match on_request(cfg, host, Some(&format!("Bearer {sig}"))) {
                Step::Remote { hash, token, key } => {
                    assert_eq!(token, sig);
                    assert_eq!(key, store_key(cfg, sig));
                    (hash, token)
                }
                other => panic!("expected a remote lookup, got {other:?}"),
            }
        }

        #[test]
        fn a_local_miss_asks_the_remote_store_and_keeps_a_bounded_copy() {
            let (cfg, host) = (split_config(REMOTE, false), FakeHost::at(T0));
            let hp = signed(
                &format!(r#"{{"scope":"read","exp":{}}}"#, T0 / 1000 + 600),
                "",
            );
            let hp = hp.trim_end_matches('.');
            let (hash, token) = remote_step(&cfg, &host, "UmVtb3Rl");
            let step = on_remote_get(&cfg, &host, &hash, &token, Got::Found(hp.into()), 3);
            assert_eq!(step, forward(&format!("{hp}.UmVtb3Rl")));
            assert_eq!(host.count_of(Counter::RemoteHit), 1);
            assert_eq!(host.count_of(Counter::RemoteLatencyMs), 3);
            // Served locally for local_ttl_s (10 s), then asked again.
            host.now.set(T0 + 9_000);
            assert_eq!(
                on_request(&cfg, &host, Some("Bearer UmVtb3Rl")),
                forward(&format!("{hp}.UmVtb3Rl"))
            );
            host.now.set(T0 + 10_001);
            remote_step(&cfg, &host, "UmVtb3Rl");
        }

        #[test]
        fn misses_failures_and_garbage() {
            let (cfg, host) = (split_config(REMOTE, false), FakeHost::at(T0));
            let (hash, token) = remote_step(&cfg, &host, "TWlzcw");
            let reject = |d| Step::Done(Verdict::Reject(d));
            assert_eq!(
                on_remote_get(&cfg, &host, &hash, &token, Got::Missing, 1),
                reject(Denial::InvalidToken)
            );
            assert_eq!(
                on_remote_get(&cfg, &host, &hash, &token, Got::Failed, 1),
                reject(Denial::StoreUnavailable)
            );
            // Not a header.payload, or an expired one: never forwarded.
            assert_eq!(
                on_remote_get(&cfg, &host, &hash, &token, Got::Found("x".into()), 1),
                reject(Denial::StoreUnavailable)
            );
            let old = signed(
                &format!(r#"{{"scope":"read","exp":{}}}"#, T0 / 1000 - 5),
                "",
            );
            let old = Got::Found(old.trim_end_matches('.').into());
            assert_eq!(
                on_remote_get(&cfg, &host, &hash, &token, old, 1),
                reject(Denial::InvalidToken)
            );
            // With the phantom fallback, misses and failures are introspected instead.
            let (cfg, host) = (
                split_config(&format!(r#", "fallback_to_phantom": true{REMOTE}"#), true),
                FakeHost::at(T0),
            );
            let (hash, token) = remote_step(&cfg, &host, "RmFsbA");
            for got in [Got::Missing, Got::Failed] {
                assert!(matches!(
                    on_remote_get(&cfg, &host, &hash, &token, got, 1),
                    Step::Introspect { .. }
                ));
            }
            // Not a signature at all: no remote read, straight to the fallback.
            assert!(matches!(
                on_request(&cfg, &host, Some("Bearer not~a~signature")),
                Step::Introspect { .. }
            ));
        }

        #[test]
        fn publish_revoke_and_issuance_write_through() {
            let (cfg, host) = (split_config(REMOTE, false), FakeHost::at(T0));
            let jwt = signed(
                &format!(r#"{{"scope":"read","exp":{}}}"#, T0 / 1000 + 600),
                "U2ln",
            );
            let hp = jwt.rsplit_once('.').unwrap().0.to_owned();
            let key = store_key(&cfg, "U2ln");
            let body = serde_json::json!({"signature_hash": key, "header_payload": hp,
                                          "expires_at": T0 / 1000 + 3600});
            let (reply, call) = publish(&cfg, &host, "POST", body.to_string().as_bytes());
            assert_eq!(reply, SplitReply::Accepted);
            let call = call.unwrap();
            let enc = crate::storage::remote::encode_segment(&key);
            // The remote TTL is the token's own (exp minus the skew), not local_ttl_s.
            assert_eq!(call.method, "PUT");
            assert!(
                call.path.starts_with(&format!("/SETEX/s:{enc}/")),
                "{}",
                call.path
            );
            let ttl: u64 = call.path.rsplit('/').next().unwrap().parse().unwrap();
            assert!((595..=600).contains(&ttl), "{ttl}");
            assert_eq!(call.body.as_deref(), Some(hp.as_bytes()));
            // Not counted until the remote write is done.
            assert_eq!(host.count_of(Counter::PublishAccepted), 0);
            assert_eq!(
                after_remote_write(&host, reply.clone(), false),
                SplitReply::StoreUnavailable
            );
            assert_eq!(host.count_of(Counter::RemoteWriteFailed), 1);
            assert_eq!(after_remote_write(&host, reply, true), SplitReply::Accepted);
            let (reply, call) = publish(
                &cfg,
                &host,
                "DELETE",
                serde_json::json!({"signature_hash": key})
                    .to_string()
                    .as_bytes(),
            );
            assert_eq!(reply, SplitReply::Accepted);
            let call = call.unwrap();
            assert_eq!(
                (call.method.as_str(), call.path),
                ("GET", format!("/DEL/s:{enc}"))
            );
            let body = format!(r#"{{"access_token":"{jwt}","expires_in":600}}"#);
            let TokenResponse::Replace {
                remote: Some(put), ..
            } = on_token_response(&cfg, &host, Some("200"), None, body.as_bytes())
            else {
                panic!("not split with a remote write")
            };
            assert!(put.path.starts_with(&format!("/SETEX/s:{enc}/")));
        }
    }

    /// `phantom.response` "json" and "rfc9701": JWTs from introspected claims.
    mod contracts {
        use super::*;
        use crate::token::introspection::{classify, Response};
        use crate::token::jws::tests::{jwks, keys, signed_introspection, Keys};
        use crate::token::jws::{Alg, KeySet, Policy};
        use crate::token::mint::tests::EC_PEM;

        const GATEWAY: &str = "https://gateway.example.com";

        fn setup(k: &Keys, response: &str, extra_phantom: &str) -> (Config, FakeHost) {
            let pem = EC_PEM.replace('\n', "\\n");
            let verify = if response == "rfc9701" {
                format!(
                    r#", "verify": {{"issuer": "https://login.example.com",
                    "audiences": ["api.example.com"], "algorithms": ["ES256"],
                    "jwks_inline": {}}}"#,
                    jwks(k)
                )
            } else {
                String::new()
            };
            let json = format!(
                r#"{{"required_scopes": ["read"],
                "phantom": {{"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s",
                  "response": "{response}" {extra_phantom},
                  "mint": {{"issuer": "{GATEWAY}", "audience": "internal-apis",
                    "algorithm": "ES256", "private_key_pem": "{pem}", "key_id": "gw-1",
                    "claims": ["sub", "scope", "client_id"], "max_lifetime_s": 120,
                    "jwks_path": "/.well-known/gateway-jwks.json"}}}}{verify}}}"#
            );
            let cfg = Config::from_slice(json.as_bytes()).unwrap();
            let host = FakeHost::at(T0);
            if let Some(crate::config::KeySource::Inline(keys)) =
                cfg.verify.as_ref().map(|v| &v.keys)
            {
                host.keys.set_keys(keys.clone());
            }
            (cfg, host)
        }

        fn answer(cfg: &Config, content_type: &str, body: &str) -> Outcome {
            classify(
                &Response {
                    status: Some("200"),
                    content_type: Some(content_type),
                    body: Some(body.as_bytes()),
                    ..Response::default()
                },
                &cfg.phantom.as_ref().unwrap().contract,
            )
        }

        /// The minted JWT in a forward verdict, checked against the gateway's served JWK Set.
        fn minted(cfg: &Config, v: &Verdict) -> serde_json::Value {
            let Verdict::Forward { authorization } = v else {
                panic!("expected a forward, got {v:?}");
            };
            let jwt = authorization.strip_prefix("Bearer ").unwrap();
            let (_, doc) = gateway_jwks(cfg).unwrap();
            let keys = KeySet::parse(doc.as_bytes(), &[Alg::Es256], false).unwrap();
            let policy = Policy {
                issuer: GATEWAY.into(),
                audiences: vec!["internal-apis".into()],
                algorithms: vec![Alg::Es256],
                clock_skew_s: 0,
            };
            keys.verify(&policy, jwt, T0 / 1_000).unwrap();
            let payload = jwt.split('.').nth(1).unwrap();
            serde_json::from_slice(
                &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
                    .unwrap(),
            )
            .unwrap()
        }

        #[test]
        fn json_claims_are_minted_once_and_cached() {
            let k = keys();
            let (cfg, host) = setup(&k, "json", "");
            let hash = introspect(&cfg, &host, "Bearer opaque-1");
            let body = r#"{"active":true,"sub":"alice","scope":"read write","client_id":"app",
                "exp":1700000600,"iat":1699999000,"iss":"https://as","token_type":"Bearer"}"#;
            let v = on_introspection(&cfg, &host, &hash, answer(&cfg, "application/json", body));
            let p = minted(&cfg, &v);
            assert_eq!(p["sub"], "alice");
            assert_eq!(p["client_id"], "app");
            assert_eq!(p["iss"], GATEWAY);
            assert_eq!(p["aud"], "internal-apis");
            // Capped at max_lifetime_s (the token lives 600 s).
            assert_eq!(p["exp"], T0 / 1_000 + 120);
            assert!(p.get("token_type").is_none());
            // Cache hits forward the same JWT and mint nothing.
            for _ in 0..3 {
                assert_eq!(
                    on_request(&cfg, &host, Some("Bearer opaque-1")),
                    Step::Done(v.clone())
                );
            }
            assert_eq!(host.count_of(Counter::Minted), 1);
        }

        #[test]
        fn json_scopes_inactive_and_expired_answers() {
            let k = keys();
            let (cfg, host) = setup(&k, "json", "");
            let mut n = 0;
            let mut run = |body: &str| {
                n += 1;
                let hash = introspect(&cfg, &host, &format!("Bearer t{n}"));
                on_introspection(&cfg, &host, &hash, answer(&cfg, "application/json", body))
            };
            // Scopes are the introspected ones.
            assert_eq!(
                run(r#"{"active":true,"scope":"write"}"#),
                Verdict::Reject(Denial::InsufficientScope)
            );
            assert_eq!(
                run(r#"{"active":false}"#),
                Verdict::Reject(Denial::InvalidToken)
            );
            assert_eq!(
                run(r#"{"active":true,"scope":"read","exp":1699999999}"#),
                Verdict::Reject(Denial::InvalidToken)
            );
            // Not a usable RFC 7662 answer: the token service is at fault.
            for bad in [
                r#"{"active":"true"}"#,
                r#"{"scope":"read"}"#,
                r#"{"active":true,"scope":7}"#,
                r#"{"active":true,"exp":"soon"}"#,
                "[]",
            ] {
                assert_eq!(
                    run(bad),
                    Verdict::Reject(Denial::TokenService(Failure::Malformed)),
                    "{bad}"
                );
            }
            assert_eq!(host.count_of(Counter::Minted), 1);
        }

        #[test]
        fn json_with_a_jwt_claim_forwards_that_jwt() {
            let k = keys();
            let (cfg, host) = setup(&k, "json", r#", "jwt_claim": "access_token_jwt""#);
            let jwt = make(r#"{"exp":1700000300,"scope":"read"}"#);
            let hash = introspect(&cfg, &host, "Bearer with-claim");
            let body = format!(r#"{{"active":true,"scope":"read","access_token_jwt":"{jwt}"}}"#);
            assert_eq!(
                on_introspection(&cfg, &host, &hash, answer(&cfg, "application/json", &body)),
                Verdict::Forward {
                    authorization: format!("Bearer {jwt}")
                }
            );
            // Without the claim, the gateway mints.
            let hash = introspect(&cfg, &host, "Bearer without-claim");
            let v = on_introspection(
                &cfg,
                &host,
                &hash,
                answer(
                    &cfg,
                    "application/json",
                    r#"{"active":true,"scope":"read"}"#,
                ),
            );
            assert_eq!(minted(&cfg, &v)["scope"], "read");
            // A claim that is not a JWT is a broken answer.
            let hash = introspect(&cfg, &host, "Bearer broken-claim");
            let body = r#"{"active":true,"scope":"read","access_token_jwt":"not-a-jwt"}"#;
            assert_eq!(
                on_introspection(&cfg, &host, &hash, answer(&cfg, "application/json", body)),
                Verdict::Reject(Denial::TokenService(Failure::Malformed))
            );
        }

        #[test]
        fn rfc9701_answers_are_verified_then_minted() {
            let k = keys();
            let (cfg, host) = setup(&k, "rfc9701", "");
            let ct = "application/token-introspection+jwt";
            let now = T0 / 1_000;
            let good =
                signed_introspection(&k.ec, "token-introspection+jwt", "gw", Some(now), true);
            let hash = introspect(&cfg, &host, "Bearer signed");
            let v = on_introspection(&cfg, &host, &hash, answer(&cfg, ct, &good));
            let p = minted(&cfg, &v);
            assert_eq!(p["sub"], "alice");
            assert_eq!(p["client_id"], "app");
            assert_eq!(host.count_of(Counter::Minted), 1);
            assert_eq!(
                on_request(&cfg, &host, Some("Bearer signed")),
                Step::Done(v.clone())
            );
            // Inactive: 401, cached as inactive.
            let off =
                signed_introspection(&k.ec, "token-introspection+jwt", "gw", Some(now), false);
            let hash = introspect(&cfg, &host, "Bearer revoked");
            assert_eq!(
                on_introspection(&cfg, &host, &hash, answer(&cfg, ct, &off)),
                Verdict::Reject(Denial::InvalidToken)
            );
            assert_eq!(
                on_request(&cfg, &host, Some("Bearer revoked")),
                Step::Done(Verdict::Reject(Denial::InvalidToken))
            );
            // Wrong audience, wrong type, unsigned JSON, a forged signature: 502, not cached.
            let g: Vec<&str> = good.split('.').collect();
            let o: Vec<&str> = off.split('.').collect();
            let bad = [
                (
                    ct,
                    signed_introspection(
                        &k.ec,
                        "token-introspection+jwt",
                        "api.example.com",
                        Some(now),
                        true,
                    ),
                ),
                (
                    ct,
                    signed_introspection(&k.ec, "JWT", "gw", Some(now), true),
                ),
                (ct, format!("{}.{}.{}", o[0], g[1], o[2])),
                (
                    "application/json",
                    r#"{"active":true,"sub":"alice","scope":"read"}"#.to_owned(),
                ),
                ("application/jwt", good.clone()),
            ];
            for (i, (content_type, body)) in bad.iter().enumerate() {
                let token = format!("Bearer bad-{i}");
                let hash = introspect(&cfg, &host, &token);
                assert_eq!(
                    on_introspection(&cfg, &host, &hash, answer(&cfg, content_type, body)),
                    Verdict::Reject(Denial::TokenService(if i < 3 {
                        Failure::Unverified
                    } else {
                        Failure::Malformed
                    })),
                    "case {i}"
                );
                // Not cached: the next request asks again.
                introspect(&cfg, &host, &token);
            }
            assert_eq!(host.count_of(Counter::IntrospectionUnverified), 3);
            assert_eq!(host.count_of(Counter::Minted), 1);
        }

        #[test]
        fn rfc9701_without_keys_fails_closed() {
            let k = keys();
            let (cfg, _) = setup(&k, "rfc9701", "");
            let host = FakeHost::at(T0);
            let good = signed_introspection(
                &k.ec,
                "token-introspection+jwt",
                "gw",
                Some(T0 / 1_000),
                true,
            );
            let hash = introspect(&cfg, &host, "Bearer early");
            assert_eq!(
                on_introspection(
                    &cfg,
                    &host,
                    &hash,
                    answer(&cfg, "application/token-introspection+jwt", &good)
                ),
                Verdict::Reject(Denial::KeysUnavailable)
            );
        }

        #[test]
        fn gateway_jwks_route() {
            let k = keys();
            let (cfg, _) = setup(&k, "json", "");
            assert!(has_routes(&cfg));
            assert_eq!(
                route(&cfg, "/.well-known/gateway-jwks.json?x=1"),
                Route::GatewayJwks
            );
            assert_eq!(
                route(&cfg, "/.well-known/gateway-jwks.jsonx"),
                Route::Protected
            );
            let doc: serde_json::Value =
                serde_json::from_str(gateway_jwks(&cfg).unwrap().1).unwrap();
            let key = &doc["keys"][0];
            assert_eq!(key["kid"], "gw-1");
            assert_eq!(key["kty"], "EC");
            // Public only: no private member.
            assert!(key.get("d").is_none());
            assert!(!doc.to_string().contains("PRIVATE"));
        }
    }
}
