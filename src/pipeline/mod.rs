//! The request path, one stage per file, in the order a request meets them. Every decision is
//! made here, free of any host call: shared data, the clock and counters go through
//! [`Host`], and this worker's own state travels as a [`Worker`], so the whole path runs
//! natively in tests with a fake host and a fixed clock.
//!
//! ```text
//! request headers
//!   │ route.rs          publish path ──► Step::Publish (answered by the filter, never forwarded)
//!   │                   token endpoint ──► Step::TokenRequest (its response: token_response.rs)
//!   │                   gateway JWK Set ──► Step::GatewayJwks
//!   │                   revocation API, back-channel logout, RFC 7009 observed ──►
//!   │                   Step::Revocation (revoke.rs)
//!   │                   access token in the URI ──► Reject(MalformedCredentials)
//!   │                   CORS preflight ──► Step::Preflight | Reject(InvalidPreflight)
//!   ▼ policy.rs         route metadata, else the first matching policy, else `default`; with
//!   │                   policies a non-canonical path or method ──► Reject(AmbiguousRequest)
//!   ▼ browser.rs        with `cookies`: the token from the encrypted cookie (origin, CSRF)
//!   ▼ extract.rs        Authorization: Bearer or DPoP, under the policy's `token` rule
//!   │                   ──► Anonymous ("none", "optional" without a token) | Reject(...)
//!   ▼ proof.rs          present: the DPoP proof's checks (replay aside) and the client
//!   │                   certificate ──► Presented | Reject(InvalidDpopProof, UseDpopNonce, ...)
//!   ▼ accept_jwt.rs     a JWS on an `accept_jwt` route: verified once, forwarded as it is
//!   ▼ split_lookup.rs   this worker's copy while the store's epoch holds; the split store by
//!   │                   SHA-256(signature); revoked ──► Reject(InvalidToken); a miss with
//!   │                   split.remote ──► Step::Remote; a miss ──► fallback or 401
//!   ▼ phantom_cache.rs  per-worker copy, then the shared slot (cached.rs: one two-level read)
//!   ▼ phantom_fleet.rs  with `fleet`: the fleet's sealed entry (one call, coalesced), before
//!   │                   introspecting; what an introspection cached, written there sealed
//!   ▼ introspect.rs     Step::Introspect; its answer (on_introspection, once for the worker):
//!   │                   verify.rs (a JWT) or mint; then, for each request waiting,
//!   │                   after_introspection under its own policy
//!   ▼ authorize.rs      proof.rs bind (cnf.jkt / x5t#S256), then the policy's scopes
//!   ▼ proof.rs record   the proof recorded (replay, the key's share) now that the token is
//!   │                   known to be active and bound
//!   ▼ exchange.rs       a policy with `exchange`: its API's own token (cached.rs), else
//!   │                   Step::Exchange; its answer: on_exchange, after_exchange
//!   ▼ journey.rs        what the API receives: the embedded token (`embedded_token`), enough
//!                       life left (`min_remaining_lifetime_s`), not issued for too long
//! ```
//!
//! Around the stages: machine.rs reads every `Step` (and every other event of a request's
//! life) and returns one `Action`; forward.rs says what a forwarded request's headers become;
//! executor.rs carries actions out through io.rs's `Io` and keeps what lives across callbacks.
//! Beside the request path: publish.rs (the publish API), token_response.rs (splitting at
//! issuance), revoke.rs (revocation: its requests, and the one question every resolved token
//! is asked, [`revoke::refuses`]), fleet_timer.rs (revocations across a fleet, on the
//! timer). A new stage is a new file here, and one call in [`on_request`] or in the stage
//! that leads to it.

mod accept_jwt;
mod authorize;
pub mod browser;
mod cached;
mod exchange;
pub mod executor;
mod extract;
pub mod fleet_timer;
pub mod forward;
mod introspect;
pub mod io;
mod journey;
pub mod machine;
mod phantom_cache;
mod phantom_fleet;
mod policy;
mod proof;
mod publish;
pub mod revoke;
mod route;
mod split_lookup;
mod token_response;
mod verify;

#[cfg(test)]
mod machine_tests;
#[cfg(test)]
mod tests;

use std::rc::Rc;

use crate::config::{Config, Policy};
use crate::hash::{FastKey, Keyed, TokenHash, TokenKeys};
use crate::header_map::HeaderMap;
use crate::host::Host;
use crate::reply::Denial;
use crate::storage::keys::KeyState;
use crate::storage::local::{LocalCache, Resolved};
use crate::storage::revocation::Follower;
use crate::storage::verified::Verified;

pub use self::authorize::authorize;
pub use self::exchange::{after_exchange, on_exchange, Exchanged, Incoming};
pub use self::executor::{Executor, Flow};
pub use self::introspect::{after_introspection, on_introspection, Introspected};
pub use self::proof::{server_nonce, NONCE_WINDOW_S};
pub use self::publish::{after_remote_write, count_publish, publish, publish_gate};
pub use self::route::{
    gateway_jwks, has_routes, owned_present, preflight, route, Passage, Preflight, Revocation,
    Route, METHOD_OVERRIDE_HEADERS,
};
pub use self::split_lookup::{on_remote_get, RemoteAnswer};
pub use self::token_response::{on_token_response, split_write_done, TokenResponse};
pub use crate::token::bearer::Presented;

/// What every stage works with: the configuration, this worker's own state, and the proxy
/// (clock, shared data, counters).
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub cfg: &'a Config,
    pub worker: &'a Worker,
    pub host: &'a dyn Host,
}

/// One worker's own state for one filter configuration, handed to every stage that needs it:
/// the verification keys it loaded, the split entries it verified, its copy of recent phantom
/// cache hits. Nothing in it is shared with other workers; shared state is behind [`Host`].
#[derive(Default)]
pub struct Worker {
    /// The key of this worker's copies of recent tokens (`local`, `local_jwt`).
    pub keyed: Keyed,
    pub keys: KeyState,
    pub verified: Verified,
    /// Recent phantom cache hits, by the token's keyed hash.
    pub local: LocalCache<FastKey>,
    /// Recent JWTs accepted as they are (`accept_jwt`): kept apart, so that a route that
    /// introspects never serves what a JWT route accepted.
    pub local_jwt: LocalCache<FastKey>,
    /// Recent tokens made by token exchange, by the exchange's key (the client's token and
    /// what was asked for).
    pub local_exchange: LocalCache<TokenHash>,
    /// Recent embedded tokens (`embedded_token`), by the carrying token's keyed hash and the
    /// rule.
    pub local_embedded: LocalCache<FastKey>,
    /// Recent split store hits, by the token's keyed hash, made under epoch `split_epoch`.
    pub split_local: LocalCache<FastKey>,
    pub split_epoch: std::cell::Cell<Option<u64>>,
    /// Its place in revocation: how far it applied the log to these copies.
    pub revocation: Follower,
    /// Browser cookies it opened recently (`cookies`), by the cookie value's keyed hash.
    pub opened: crate::storage::opened::Opened,
}

/// The final word on a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Replace `Authorization` with the token's value (and the policy's claim headers) and
    /// continue.
    Forward(Rc<Resolved>),
    /// Continue without credentials: the policy needs none (`token: "none"`, or
    /// `"optional"` and the request has none); `Authorization` is removed.
    Anonymous,
    Reject(Denial),
}

/// The next step for a request whose headers just arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Done(Verdict),
    /// Cache miss: ask the token service (then [`on_introspection`]).
    Introspect {
        hash: TokenHash,
        token: String,
    },
    /// The token resolved, its policy exchanges it and no exchange is cached: ask the token
    /// service for one (then [`on_exchange`]). `key`: the exchange's (token and policy);
    /// `token`: the client token's hash; `subject`: what is sent as the subject token.
    Exchange {
        key: TokenHash,
        token: TokenHash,
        subject: String,
        /// Whose the client's token is (with `revocation`).
        client: Option<Box<crate::token::revocation::Identity>>,
    },
    /// Split store miss with `split.remote`: ask the remote store (then [`on_remote_get`]).
    Remote {
        hash: TokenHash,
        token: String,
        key: String,
    },
    /// `split.publish.path`: the filter answers it once its body is in ([`publish`]).
    Publish,
    /// A token endpoint request: forwarded as it is, uncompressed; its response is split
    /// ([`on_token_response`]).
    TokenRequest,
    /// `phantom.mint.jwks_path`: the filter answers with the gateway's JWK Set.
    GatewayJwks,
    /// A CORS preflight: forwarded unauthenticated, without `Authorization`.
    Preflight,
    /// A CORS preflight with `cookies.cors`: answered by the filter (`browser.rs`).
    CorsPreflight,
    /// One of the `revocation` block's paths (`revoke.rs`).
    Revocation(Revocation),
}

/// A request as the pipeline sees it: its headers, whether they end the stream, and what the
/// proxy says of its route (read only when some policy needs it).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub headers: &'a HeaderMap,
    /// No body or trailers follow the headers.
    pub end_of_stream: bool,
    /// The Envoy route's name (`xds.route_name`).
    pub route_name: Option<&'a str>,
    /// The policy the route's metadata names (`token_filter` / `policy`).
    pub route_policy: Option<&'a str>,
    /// The client certificate's SHA-256 in hex (`connection.sha256_peer_certificate_digest`),
    /// read only with `mtls`.
    pub client_cert_sha256: Option<&'a str>,
    /// The connection is TLS (`connection.tls_version` is set): the scheme of a DPoP proof's
    /// `htu` without `dpop.origin`. Read only for DPoP requests; `false` when unknown.
    pub secure: bool,
}

/// Who asks, and under which rules: the policy the request is judged under, and what the
/// caller presented besides the token (scheme, proof of possession).
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub policy: &'a Policy,
    pub presented: &'a Presented,
}

/// What [`on_request`] decided, and under which policy (an index of
/// [`crate::config::Policies::get`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub policy: usize,
    /// What the request presented: every later verdict on it (after a call) needs it.
    pub presented: Presented,
    pub step: Step,
}

/// Decides what to do with a request whose headers just arrived: one call per stage.
pub fn on_request(cx: &Ctx<'_>, request: &Request<'_>) -> Decision {
    let cfg = cx.cfg;
    let default = cfg.policies.list.len();
    let decided = |policy, step| Decision {
        policy,
        presented: Presented::default(),
        step,
    };
    if let Some(step) = route::decide(cfg, request) {
        return decided(default, step);
    }
    let policy = match policy::choose(cfg, request) {
        Ok(index) => index,
        Err(denial) => return decided(default, Step::Done(Verdict::Reject(denial))),
    };
    let (presented, step) = authenticate(cx, policy, request);
    Decision {
        policy,
        presented,
        step,
    }
}

/// The token stages, under the chosen policy.
fn authenticate(cx: &Ctx<'_>, policy: usize, request: &Request<'_>) -> (Presented, Step) {
    let cfg = cx.cfg;
    let rules = cfg.policies.get(policy);
    let header = request.headers.text("authorization");
    let reject = |denial| (Presented::default(), Step::Done(Verdict::Reject(denial)));
    // A browser's cookie stands in for `Authorization` (checked, decrypted) where the policy
    // takes it.
    let from_cookie = match cfg.cookies {
        None => None,
        Some(_) => match browser::credentials(cx, rules, request, header.is_some()) {
            Ok(token) => token.map(|t| format!("Bearer {t}")),
            Err(denial) => return reject(denial),
        },
    };
    let authorization = from_cookie.as_deref().or(header.as_deref());
    let (scheme, token) = match extract::token(cfg, rules.token, authorization) {
        Ok(Some(credentials)) => credentials,
        Ok(None) => return (Presented::default(), Step::Done(Verdict::Anonymous)),
        Err(denial) => return reject(denial),
    };
    let presented = match proof::present(cx, request, scheme, token) {
        Ok(presented) => presented,
        Err(denial) => return reject(denial),
    };
    let caller = Caller {
        policy: rules,
        presented: &presented,
    };
    // This worker's copies are keyed by the token's keyed hash; one SHA-256, made only when a
    // stage needs it, serves every shared key: the split store's (of the signature), the
    // phantom cache's (of the opaque token), the JWT cache's (of the JWT).
    let keys = TokenKeys::new(&cx.worker.keyed, token);
    let step = match lookup(cx, &caller, &keys) {
        Step::Done(verdict) => finish(cx, &caller, &keys, verdict),
        other => other,
    };
    (presented, step)
}

/// The last stages of a verdict reached for `incoming`, however it was reached (a hit, an
/// introspection's answer, the remote store's): a forward records the request's DPoP proof
/// (only now that the token is known to be active and bound to its key), then goes to the
/// exchange stage, then to the journey stage (what the API receives: embedded, lifetime).
fn finish(
    cx: &Ctx<'_>,
    caller: &Caller<'_>,
    incoming: exchange::Incoming<'_>,
    verdict: Verdict,
) -> Step {
    if let Verdict::Forward(_) = verdict {
        if let Err(denial) = proof::record(cx, caller) {
            return Step::Done(Verdict::Reject(denial));
        }
    }
    match exchange::stage(cx, caller, incoming, verdict) {
        Step::Done(verdict) => Step::Done(journey::stage(cx, caller, incoming, verdict)),
        call => call,
    }
}

/// The token lookups: a JWT accepted as it is, the split store, the phantom cache, else an
/// introspection.
fn lookup(cx: &Ctx<'_>, caller: &Caller<'_>, keys: &TokenKeys<'_>) -> Step {
    let cfg = cx.cfg;
    if let Some(verdict) = accept_jwt::lookup(cx, caller, keys) {
        return Step::Done(verdict);
    }
    if let Some(split) = &cfg.split {
        if let Some(step) = split_lookup::lookup(cx, caller, split, keys) {
            return step;
        }
    }
    if cfg.phantom.is_none() {
        return Step::Done(Verdict::Reject(Denial::InvalidToken));
    }
    if let Some(verdict) = phantom_cache::lookup(cx, caller, keys) {
        return Step::Done(verdict);
    }
    Step::Introspect {
        hash: *keys.sha256(),
        token: keys.token.to_owned(),
    }
}
