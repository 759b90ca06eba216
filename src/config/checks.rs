//! The value checks every section uses; each error names the field, never the value.

use sha2::{Digest, Sha256};

use super::{ConfigError, MAX_NAME_LEN, MAX_SECRET_LEN, MIN_PUBLISH_SECRET_LEN};
use crate::token::bearer;

pub(super) fn entries(field: &str, value: u32, max: u32) -> Result<u32, ConfigError> {
    let v = in_range(field, u64::from(value), 1, u64::from(max))?;
    Ok(u32::try_from(v).unwrap_or(max))
}

/// The path of a call the filter makes (introspection, JWKS): starts with `/`, visible ASCII; a
/// query is allowed.
pub(super) fn check_call_path(field: &str, value: &str) -> Result<(), ConfigError> {
    if !value.starts_with('/')
        || value.len() > 2_048
        || !value.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ConfigError::new(
            field,
            "must start with '/' and contain only visible ASCII (at most 2048 bytes)",
        ));
    }
    Ok(())
}

/// A request path matched exactly: starts with `/`, visible ASCII, no query or fragment.
pub(super) fn check_path(field: &str, value: &str) -> Result<(), ConfigError> {
    if !value.starts_with('/')
        || value.len() > 2_048
        || value.contains(['?', '#'])
        || !value.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ConfigError::new(
            field,
            "must start with '/' and contain only visible ASCII, without '?' or '#' (at most 2048 bytes)",
        ));
    }
    Ok(())
}

pub(super) fn namespace_of(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    digest
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
}

pub(super) fn in_range(field: &str, value: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::new(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ))
    }
}

/// Cluster names and authorities: non-empty, bounded, no whitespace or control characters.
pub(super) fn check_name(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty()
        || value.len() > MAX_NAME_LEN
        || !value.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ConfigError::new(
            field,
            format!("must be 1 to {MAX_NAME_LEN} visible ASCII characters"),
        ));
    }
    Ok(())
}

/// Values placed in a quoted-string of a header (RFC 7230 §3.2.6): no `"`, `\` or controls.
pub(super) fn check_quotable(field: &str, value: &str) -> Result<(), ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_NAME_LEN
        && value
            .bytes()
            .all(|b| (b == b' ' || b.is_ascii_graphic()) && b != b'"' && b != b'\\');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("must be 1 to {MAX_NAME_LEN} printable ASCII characters without '\"' or '\\'"),
        ))
    }
}

/// Client credentials: the message never echoes the value (it may be the secret).
pub(super) fn check_credential(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > MAX_SECRET_LEN || value.chars().any(char::is_control) {
        return Err(ConfigError::new(
            field,
            format!("must be 1 to {MAX_SECRET_LEN} bytes without control characters"),
        ));
    }
    Ok(())
}

/// A shared secret presented as a bearer token (the publish and revocation APIs): at least
/// [`MIN_PUBLISH_SECRET_LEN`] characters of RFC 6750's `b64token`. Only its SHA-256 is kept,
/// compared in constant time to the hash of what is presented, so neither the comparison time
/// nor the length reveals anything.
pub(super) fn secret_hash(field: &str, value: &str) -> Result<[u8; 32], ConfigError> {
    if value.len() < MIN_PUBLISH_SECRET_LEN
        || value.len() > MAX_SECRET_LEN
        || !bearer::is_b64token(value)
    {
        return Err(ConfigError::new(
            field,
            format!(
                "must be {MIN_PUBLISH_SECRET_LEN} to {MAX_SECRET_LEN} characters, usable as a \
                 bearer token (letters, digits, -._~+/ and trailing =)"
            ),
        ));
    }
    Ok(crate::hash::token_hash(value))
}
