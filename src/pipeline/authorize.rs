//! Stage: the required scopes, checked on every request, cache hit or not.

use crate::config::Config;
use crate::reply::Denial;
use crate::token::scope;

use super::Verdict;

/// Forwards `jwt` when `granted` holds every required scope.
pub fn authorize(cfg: &Config, jwt: &str, granted: &str) -> Verdict {
    authorize_with(cfg, granted, || format!("Bearer {jwt}"))
}

/// Forwards the `Authorization` value `authorization` makes, when `granted` holds every
/// required scope (the value is only built when forwarded).
pub fn authorize_with(
    cfg: &Config,
    granted: &str,
    authorization: impl FnOnce() -> String,
) -> Verdict {
    if scope::has_all(granted, &cfg.required_scopes) {
        Verdict::Forward {
            authorization: authorization(),
        }
    } else {
        Verdict::Reject(Denial::InsufficientScope)
    }
}
