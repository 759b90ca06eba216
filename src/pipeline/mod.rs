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
//!   │                   access token in the URI ──► Reject(MalformedCredentials)
//!   │                   CORS preflight ──► Step::Preflight | Reject(InvalidPreflight)
//!   ▼ extract.rs        Authorization: Bearer (RFC 6750) ──► Reject(NoCredentials | Malformed)
//!   ▼ split_lookup.rs   split store by SHA-256(signature) ──► hit: verify.rs, authorize.rs
//!   │                   revoked ──► Reject(InvalidToken); a local miss with split.remote ──►
//!   │                   Step::Remote (answer: on_remote_get); a miss ──► fallback or 401
//!   ▼ phantom_cache.rs  per-worker copy, then the shared slot ──► hit: authorize.rs
//!   ▼ introspect.rs     Step::Introspect; its answer (on_introspection): verify.rs (a JWT) or
//!   │                   mint (claims, RFC 9701 after verify.rs), cache, authorize.rs
//!   ▼ authorize.rs      required scopes ──► Forward(Bearer JWT) | Reject(InsufficientScope)
//! ```
//!
//! Beside the request path: publish.rs (the publish API), token_response.rs (splitting at
//! issuance). A new stage is a new file here, and one call in [`on_request`] or in the stage
//! that leads to it.

mod authorize;
mod extract;
mod introspect;
mod phantom_cache;
mod publish;
mod route;
mod split_lookup;
mod token_response;
mod verify;

#[cfg(test)]
mod tests;

use crate::config::Config;
use crate::hash::{self, TokenHash};
use crate::header_map::HeaderMap;
use crate::host::Host;
use crate::reply::Denial;
use crate::storage::keys::KeyState;
use crate::storage::local::LocalCache;
use crate::storage::verified::Verified;

pub use self::introspect::on_introspection;
pub use self::publish::{after_remote_write, count_publish, publish, publish_gate};
pub use self::route::{
    gateway_jwks, has_routes, owned_request_headers, preflight, route, Preflight, Route,
    METHOD_OVERRIDE_HEADERS,
};
pub use self::split_lookup::on_remote_get;
pub use self::token_response::{on_token_response, split_write_done, TokenResponse};

/// One worker's own state for one filter configuration, handed to every stage that needs it:
/// the verification keys it loaded, the split entries it verified, its copy of recent phantom
/// cache hits. Nothing in it is shared with other workers; shared state is behind [`Host`].
#[derive(Default)]
pub struct Worker {
    pub keys: KeyState,
    pub verified: Verified,
    pub local: LocalCache,
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
    Done(Verdict),
    /// Cache miss: ask the token service (then [`on_introspection`]).
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
    /// `split.publish.path`: the filter answers it once its body is in ([`publish`]).
    Publish,
    /// A token endpoint request: forwarded as it is, uncompressed; its response is split
    /// ([`on_token_response`]).
    TokenRequest,
    /// `phantom.mint.jwks_path`: the filter answers with the gateway's JWK Set.
    GatewayJwks,
    /// A CORS preflight: forwarded unauthenticated, without `Authorization`.
    Preflight,
}

/// A request as the pipeline sees it: its headers, and whether they end the stream.
pub struct Request<'a> {
    pub headers: &'a HeaderMap,
    /// No body or trailers follow the headers.
    pub end_of_stream: bool,
}

/// Decides what to do with a request whose headers just arrived: one call per stage.
pub fn on_request(cfg: &Config, worker: &Worker, host: &dyn Host, request: &Request<'_>) -> Step {
    if let Some(step) = route::decide(cfg, request) {
        return step;
    }
    let authorization = request.headers.get("authorization");
    let token = match extract::bearer_token(authorization.as_deref()) {
        Ok(token) => token,
        Err(denial) => return Step::Done(Verdict::Reject(denial)),
    };
    // One hash serves both flows: the split store key is the SHA-256 of the signature, the
    // phantom cache key the SHA-256 of the opaque token.
    let hash = hash::token_hash(token);
    if let Some(split) = &cfg.split {
        if let Some(step) = split_lookup::lookup(cfg, split, worker, host, token, &hash) {
            return step;
        }
    }
    if cfg.phantom.is_none() {
        return Step::Done(Verdict::Reject(Denial::InvalidToken));
    }
    if let Some(verdict) = phantom_cache::lookup(cfg, worker, host, &hash) {
        return Step::Done(verdict);
    }
    Step::Introspect {
        hash,
        token: token.to_owned(),
    }
}
