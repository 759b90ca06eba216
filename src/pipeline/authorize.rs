//! Stage: the policy's required scopes and the token's binding, checked on every request,
//! cache hit or not.

use std::rc::Rc;

use crate::config::Config;
use crate::reply::Denial;
use crate::storage::local::Resolved;
use crate::token::claims::{self, Binding, Claim};
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

/// A token resolved to `jwt`: what is forwarded, its scopes, and the claims the policies copy
/// (read from the JWT's payload only when some are configured).
pub fn resolved(cfg: &Config, jwt: &str, scope: &str) -> Rc<Resolved> {
    resolved_bearer(cfg, format!("{BEARER}{jwt}"), scope)
}

const BEARER: &str = "Bearer ";

/// [`resolved`], from the `Authorization` value already made.
pub fn resolved_bearer(cfg: &Config, authorization: String, scope: &str) -> Rc<Resolved> {
    let wanted = &cfg.policies.claims;
    let jwt = authorization.get(BEARER.len()..).unwrap_or("");
    // The payload is read whole only when it can bind the token or claims are wanted.
    let payload = claims::payload_of(jwt);
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
    Rc::new(Resolved {
        authorization,
        scope: scope.to_owned(),
        claims,
        binding,
    })
}
