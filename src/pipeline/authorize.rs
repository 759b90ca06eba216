//! Stage: the policy's required scopes and the token's binding, checked on every request,
//! cache hit or not.

use std::rc::Rc;

use crate::config::Config;
use crate::reply::Denial;
use crate::storage::local::Resolved;
use crate::token::claims::{self, Binding, Claim};
use crate::token::revocation::Identity;
use crate::token::scope;

use super::{proof, Caller, Verdict};

/// Forwards `token` when its scopes hold every scope the policy requires and the caller proved
/// what the token is bound to.
pub fn authorize(cfg: &Config, caller: &Caller<'_>, token: &Rc<Resolved>) -> Verdict {
    if let Err(denial) = proof::bind(cfg, caller, token) {
        return Verdict::Reject(denial);
    }
    if scope::has_all(&token.scope, &caller.policy.required_scopes) {
        Verdict::Forward(token.clone())
    } else {
        Verdict::Reject(Denial::InsufficientScope)
    }
}

/// Whose a resolved token is (kept only with `revocation`).
pub enum Who<'a> {
    /// Read from the forwarded JWT's own claims; the token the client presents has this
    /// SHA-256 (a split token, a JWT accepted as it is).
    Payload(&'a crate::hash::TokenHash),
    /// Known already: the claims a JWT was minted from, a cache entry's record, the client's
    /// own token (for a token exchanged for it).
    Known(Option<Box<Identity>>),
}

/// A token resolved to `jwt`: what is forwarded, its scopes, the claims the policies copy
/// (read from the JWT's payload only when some are configured), and whose it is.
pub fn resolved(cfg: &Config, jwt: &str, scope: &str, who: Who<'_>) -> Rc<Resolved> {
    resolved_bearer(cfg, format!("{BEARER}{jwt}"), scope, who)
}

const BEARER: &str = "Bearer ";

/// [`resolved`], from the `Authorization` value already made.
pub fn resolved_bearer(
    cfg: &Config,
    authorization: String,
    scope: &str,
    who: Who<'_>,
) -> Rc<Resolved> {
    let wanted = &cfg.policies.claims;
    let jwt = authorization.get(BEARER.len()..).unwrap_or("");
    // Only the members read here are built: the fixed ones and the wanted claims'.
    let payload = claims::payload_members(jwt, &|member| {
        claims::READ.contains(&member) || wanted.iter().any(|path| path.reads(member))
    });
    let (claims, binding) = match &payload {
        Some(p) => (
            if wanted.is_empty() {
                Vec::new()
            } else {
                claims::of(p, wanted)
            },
            Binding::of(p),
        ),
        None => (vec![Claim::Absent; wanted.len()], Binding::default()),
    };
    let identity = match who {
        _ if cfg.revocation.is_none() => None,
        Who::Payload(token) => Some(Box::new(match &payload {
            Some(p) => Identity::of(token, p),
            None => Identity {
                token: *token,
                ..Identity::default()
            },
        })),
        Who::Known(identity) => identity,
    };
    // RFC 7519 NumericDates (a fraction allowed, truncated); one that is there but is not a
    // date reads as 0 (expired, issued at the epoch): refused by every rule that looks at it.
    let time = |name: &str| {
        payload
            .as_ref()
            .and_then(|p| p.get(name))
            .map(|v| crate::token::jwt::numeric_date(v).unwrap_or(0))
    };
    Rc::new(Resolved {
        exp: time("exp"),
        iat: time("iat"),
        authorization,
        scope: scope.to_owned(),
        claims,
        binding,
        identity,
    })
}
