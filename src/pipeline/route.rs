//! Stage: what a request is, before any token is looked at. The filter's own paths (the publish
//! API, the gateway's JWK Set), token endpoint requests, an access token in the URI (refused),
//! and CORS preflights (passed unauthenticated, when they are real ones).

use crate::config::Config;
use crate::header_map::HeaderMap;
use crate::reply::Denial;
use crate::token::{bearer, path};

use super::{Request, Step, Verdict};

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
    /// One of the `revocation` block's paths.
    Revocation(Revocation),
    /// A path that is not one of the filter's own but that a lenient server could read as one
    /// (`/_Revoke`, `/_revoke/`, `/x/../_revoke`): refused, never forwarded with the secret or
    /// the token it may carry.
    NearMiss,
}

/// Which of the `revocation` block's paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// `revocation.path`: the revocation API, answered by the filter.
    Api,
    /// `revocation.backchannel_logout.path`: answered by the filter.
    Logout,
    /// One of `revocation.observe_paths`: forwarded to the token service as it is; the token
    /// it names is revoked here when the token service answers 200.
    Observed,
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

pub use crate::config::METHOD_OVERRIDES as METHOD_OVERRIDE_HEADERS;

/// The stage: `None` for a protected request, which goes on to the token stages.
pub fn decide(cfg: &Config, request: &Request<'_>) -> Option<Step> {
    let headers = request.headers;
    let path = headers.text(":path").unwrap_or_default();
    if has_routes(cfg) {
        match route(cfg, &path) {
            Route::Protected => {}
            Route::Publish => return Some(Step::Publish),
            Route::TokenEndpoint => return Some(Step::TokenRequest),
            Route::GatewayJwks => return Some(Step::GatewayJwks),
            Route::Revocation(r) => return Some(Step::Revocation(r)),
            Route::NearMiss => return Some(Step::Done(Verdict::Reject(Denial::AmbiguousRequest))),
        }
    }
    // A token in the URI is never accepted nor forwarded (RFC 6750 §2.3).
    if bearer::uri_carries_access_token(&path) {
        return Some(Step::Done(Verdict::Reject(Denial::MalformedCredentials)));
    }
    let method = headers.text(":method").unwrap_or_default();
    if method != "OPTIONS" {
        return None;
    }
    // A method override under any spelling (`x_http_method_override` too).
    let has_override = headers
        .names()
        .any(|n| METHOD_OVERRIDE_HEADERS.iter().any(|h| same_header(n, h)));
    match preflight(
        &method,
        headers.get("origin").as_deref(),
        headers.get("access-control-request-method").as_deref(),
        !request.end_of_stream,
        has_override,
    ) {
        Preflight::No => None,
        // A browser app on another origin: its preflights are answered here, never forwarded.
        Preflight::Pass if cfg.cookies.as_ref().is_some_and(|c| c.cors.is_some()) => {
            Some(Step::CorsPreflight)
        }
        Preflight::Pass => Some(Step::Preflight),
        Preflight::Refuse => Some(Step::Done(Verdict::Reject(Denial::InvalidPreflight))),
    }
}

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

/// Where a request the filter lets through goes, which decides what it may carry of the
/// headers the filter owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passage {
    /// To the API: the forward writes `Authorization` and the claim headers over the client's
    /// (those exact names are the forward's), everything else the filter owns is removed.
    Api,
    /// To the API, in the trailers: nothing the filter owns rides along.
    ApiTrailers,
    /// A CORS preflight, to the API unauthenticated: nothing the filter owns.
    Preflight,
    /// To the token service: the client's own `Authorization` (its client authentication)
    /// and `DPoP` (the proof that binds the token it issues, RFC 9449 §5) go on; nothing else
    /// the filter owns does.
    TokenRequest,
}

/// The headers of `headers` to remove before the request goes on, named as the map has them:
/// every header the filter owns (`Authorization`, `DPoP` unless `dpop.forward_proof`, every
/// header a `claims_to_headers` writes, and with policies the method overrides), under its own
/// name or with `_` for `-` (`x_user_id`: servers that read `_` as `-` would see
/// `x-user-id`). Allocates only when one is there.
pub fn owned_present<'h>(cfg: &Config, passage: Passage, headers: &'h HeaderMap) -> Vec<&'h str> {
    let dpop = cfg.dpop.as_ref().is_some_and(|d| !d.forward_proof);
    let overrides = !cfg.policies.is_empty();
    let csrf = cfg
        .cookies
        .as_ref()
        .filter(|c| c.remove_cookies)
        .map(|c| c.csrf_header.as_str());
    let mut out = Vec::new();
    for name in headers.names() {
        // Most headers are of no owned name's length: one test each.
        let bit = u32::try_from(name.len())
            .ok()
            .and_then(|n| 1u64.checked_shl(n));
        if bit.is_none_or(|b| cfg.owned_lengths & b == 0) {
            continue;
        }
        let owned = |own: &str| same_header(name, own);
        let claim = cfg.policies.claim_headers.iter().any(|h| owned(h));
        let method_override = overrides && METHOD_OVERRIDE_HEADERS.iter().any(|h| owned(h));
        let csrf_header = csrf.is_some_and(&owned);
        let hit = csrf_header
            || match passage {
                Passage::TokenRequest => claim || method_override,
                _ => {
                    // The exact names the forward writes itself are left to it.
                    let written_by_forward = passage == Passage::Api && !name.contains(&b'_');
                    ((owned("authorization") || claim) && !written_by_forward)
                        || (dpop && owned("dpop"))
                        || method_override
                }
            };
        if hit {
            if let Ok(name) = std::str::from_utf8(name) {
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
    }
    out
}

/// Whether header name `present` is `owned`, or `owned` with `_` in place of some `-`.
fn same_header(present: &[u8], owned: &str) -> bool {
    present.len() == owned.len()
        && present
            .iter()
            .zip(owned.bytes())
            .all(|(&p, o)| p == o || (p == b'_' && o == b'-'))
}

/// Whether some path is the filter's own (split routes, the gateway's JWK Set, revocation).
pub fn has_routes(cfg: &Config) -> bool {
    gateway_jwks(cfg).is_some()
        || cfg.revocation.is_some()
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
    if let Some(rv) = &cfg.revocation {
        if rv.path.as_deref() == Some(path) {
            return Route::Revocation(Revocation::Api);
        }
        if rv
            .backchannel_logout
            .as_ref()
            .is_some_and(|b| b.path == path)
        {
            return Route::Revocation(Revocation::Logout);
        }
        if rv.observe_paths.iter().any(|p| p == path) {
            return Route::Revocation(Revocation::Observed);
        }
    }
    if let Some(split) = &cfg.split {
        if split.publish.as_ref().is_some_and(|p| p.path == path) {
            return Route::Publish;
        }
        if split.split_responses.iter().any(|p| p == path) {
            return Route::TokenEndpoint;
        }
    }
    let own = &cfg.own_paths_folded;
    let near = if path::plain(path) {
        own.iter().any(|p| p == path)
    } else {
        own.contains(&path::fold(path))
    };
    if near {
        Route::NearMiss
    } else {
        Route::Protected
    }
}
