//! Stage: the policy's required scopes, checked on every request, cache hit or not.

use std::rc::Rc;

use crate::config::{Config, Policy};
use crate::reply::Denial;
use crate::storage::local::Resolved;
use crate::token::{claims, scope};

use super::Verdict;

/// Forwards `token` when its scopes hold every scope the policy requires.
pub fn authorize(policy: &Policy, token: &Rc<Resolved>) -> Verdict {
    if scope::has_all(&token.scope, &policy.required_scopes) {
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
    let claims = if wanted.is_empty() {
        Vec::new()
    } else {
        claims::of_jwt(authorization.get(BEARER.len()..).unwrap_or(""), wanted)
    };
    Rc::new(Resolved {
        authorization,
        scope: scope.to_owned(),
        claims,
    })
}
