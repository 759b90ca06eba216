//! Stage: the access token from `Authorization` (RFC 6750 §2.1 `Bearer`, RFC 9449 §7.1
//! `DPoP` when `dpop` is configured), under the policy's `token` rule.

use crate::config::{Config, TokenRule};
use crate::reply::Denial;
use crate::token::bearer::{self, BearerError, Scheme};

/// The scheme and token; `None` when the request goes on without one (`token: "none"`, or
/// `"optional"` and no credentials); or why it is refused: no credentials (401) or malformed
/// ones (400). On an optional route a token that is there must be valid: a malformed one is
/// refused, never a silent downgrade.
pub fn token<'a>(
    cfg: &Config,
    rule: TokenRule,
    authorization: Option<&'a str>,
) -> Result<Option<(Scheme, &'a str)>, Denial> {
    if rule == TokenRule::None {
        return Ok(None);
    }
    match bearer::parse_credentials(authorization, cfg.dpop.is_some()) {
        Ok(credentials) => Ok(Some(credentials)),
        Err(BearerError::Missing) if rule == TokenRule::Optional => Ok(None),
        Err(BearerError::Missing) => Err(Denial::NoCredentials),
        Err(BearerError::Malformed) => Err(Denial::MalformedCredentials),
    }
}
