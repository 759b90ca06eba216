//! The one layout of a value in a shared-data slot, used by the phantom cache and the split
//! store (each with its own magic, so neither ever reads the other's values).
//!
//! Layout (big-endian): `magic [3] | kind u8 | expires_at_ms u64 | sha256 [32] | scope_len u16 |
//! scope | body`. A token cache whose entries say whose the token is (the phantom cache, for
//! revocation) writes its body as `identity_len u8 | identity | jwt`.

use crate::hash::TokenHash;

/// Bytes before the scope.
pub const HEADER_LEN: usize = 3 + 1 + 8 + 32 + 2;

/// A decoded slot value, borrowing from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: u8,
    pub expires_at_ms: u64,
    pub hash: &'a [u8],
    pub scope: &'a [u8],
    pub body: &'a [u8],
}

/// A token cache's entry (the phantom cache, the cache of JWTs accepted as they are, the
/// exchange cache): a token with its scopes and the time it may be served until, or a refusal
/// remembered for a while (`R` says which).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached<'a, R> {
    Token {
        jwt: &'a str,
        scope: &'a str,
        expires_at_ms: u64,
        /// Whose the token is ([`crate::token::revocation::Identity::encode`]); empty for a
        /// cache that does not say.
        identity: &'a [u8],
    },
    Refused(R),
}

/// Reads a token cache's slot (records of `magic`, tokens of kind `token`, refusals of the
/// kinds `refusal` knows; `identified`: bodies carry an identity): anything but a
/// well-formed, unexpired entry for exactly `key` is a miss (an empty or foreign value, a slot
/// collision, an expired entry, an unknown kind).
pub fn lookup<'a, R>(
    magic: &[u8; 3],
    token: u8,
    refusal: impl Fn(u8) -> Option<R>,
    identified: bool,
    value: &'a [u8],
    key: &TokenHash,
    now_ms: u64,
) -> Option<Cached<'a, R>> {
    let r = decode(magic, value)?;
    if !crate::hash::constant_time_eq(r.hash, key) || now_ms >= r.expires_at_ms {
        return None;
    }
    if r.kind != token {
        return refusal(r.kind).map(Cached::Refused);
    }
    let scope = std::str::from_utf8(r.scope).ok()?;
    let (identity, body) = if identified {
        let (&len, rest) = r.body.split_first()?;
        rest.split_at_checked(usize::from(len))?
    } else {
        (&[][..], r.body)
    };
    let jwt = std::str::from_utf8(body).ok()?;
    (!jwt.is_empty()).then_some(Cached::Token {
        jwt,
        scope,
        expires_at_ms: r.expires_at_ms,
        identity,
    })
}

/// Encodes a value; a scope longer than `u16::MAX` bytes is cut (scopes are bounded far below).
pub fn encode(
    magic: &[u8; 3],
    kind: u8,
    hash: &TokenHash,
    expires_at_ms: u64,
    scope: &str,
    body: &str,
) -> Vec<u8> {
    encode_with(magic, kind, hash, expires_at_ms, scope, None, body)
}

/// [`encode`], the body preceded by an identity (at most 255 bytes) when one is given.
pub fn encode_with(
    magic: &[u8; 3],
    kind: u8,
    hash: &TokenHash,
    expires_at_ms: u64,
    scope: &str,
    identity: Option<&[u8]>,
    body: &str,
) -> Vec<u8> {
    let scope = scope
        .get(..scope.len().min(usize::from(u16::MAX)))
        .unwrap_or("");
    let identity = identity.map(|i| i.get(..i.len().min(255)).unwrap_or_default());
    let extra = identity.map_or(0, |i| 1 + i.len());
    let mut out = Vec::with_capacity(HEADER_LEN + scope.len() + extra + body.len());
    out.extend_from_slice(magic);
    out.push(kind);
    out.extend_from_slice(&expires_at_ms.to_be_bytes());
    out.extend_from_slice(hash);
    out.extend_from_slice(&u16::try_from(scope.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(scope.as_bytes());
    if let Some(identity) = identity {
        out.push(u8::try_from(identity.len()).unwrap_or(0));
        out.extend_from_slice(identity);
    }
    out.extend_from_slice(body.as_bytes());
    out
}

/// Decodes a value; `None` for anything not well formed with this magic (empty, foreign,
/// truncated).
pub fn decode<'a>(magic: &[u8; 3], value: &'a [u8]) -> Option<Record<'a>> {
    let (header, rest) = value.split_at_checked(HEADER_LEN)?;
    let (found, header) = header.split_at_checked(3)?;
    if found != magic {
        return None;
    }
    let (&kind, header) = header.split_first()?;
    let (expires, header) = header.split_at_checked(8)?;
    let (hash, scope_len) = header.split_at_checked(32)?;
    let scope_len = usize::from(u16::from_be_bytes(scope_len.try_into().ok()?));
    let (scope, body) = rest.split_at_checked(scope_len)?;
    Some(Record {
        kind,
        expires_at_ms: u64::from_be_bytes(expires.try_into().ok()?),
        hash,
        scope,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_foreign_or_truncated_values() {
        let hash = [7u8; 32];
        let v = encode(b"xx1", 2, &hash, 42, "read", "a.b");
        assert_eq!(
            decode(b"xx1", &v),
            Some(Record {
                kind: 2,
                expires_at_ms: 42,
                hash: &hash,
                scope: b"read",
                body: b"a.b"
            })
        );
        assert_eq!(decode(b"yy1", &v), None, "another magic");
        assert_eq!(decode(b"xx1", &v[..HEADER_LEN - 1]), None);
        assert_eq!(decode(b"xx1", &v[..HEADER_LEN + 2]), None, "scope cut");
        assert_eq!(decode(b"xx1", b""), None);
    }
}
