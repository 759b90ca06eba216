//! Stage: the access token from `Authorization: Bearer <token>` (RFC 6750 §2.1), under the
//! policy's `token` rule.

use crate::config::TokenRule;
use crate::reply::Denial;
use crate::token::bearer::{self, BearerError};

/// The bearer token; `None` when the request goes on without one (`token: "none"`, or
/// `"optional"` and no credentials); or why it is refused: no credentials (401) or malformed
/// ones (400). On an optional route a token that is there must be valid: a malformed one is
/// refused, never a silent downgrade.
pub fn bearer_token(rule: TokenRule, authorization: Option<&str>) -> Result<Option<&str>, Denial> {
    if rule == TokenRule::None {
        return Ok(None);
    }
    match bearer::parse_authorization(authorization) {
        Ok(token) => Ok(Some(token)),
        Err(BearerError::Missing) if rule == TokenRule::Optional => Ok(None),
        Err(BearerError::Missing) => Err(Denial::NoCredentials),
        Err(BearerError::Malformed) => Err(Denial::MalformedCredentials),
    }
}
