//! Stage: the access token from `Authorization: Bearer <token>` (RFC 6750 §2.1).

use crate::reply::Denial;
use crate::token::bearer::{self, BearerError};

/// The bearer token, or why there is none: no credentials (401) or malformed ones (400).
pub fn bearer_token(authorization: Option<&str>) -> Result<&str, Denial> {
    bearer::parse_authorization(authorization).map_err(|e| match e {
        BearerError::Missing => Denial::NoCredentials,
        BearerError::Malformed => Denial::MalformedCredentials,
    })
}
