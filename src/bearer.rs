//! Extraction of the access token from `Authorization: Bearer <token>` (RFC 6750 §2.1).
//!
//! ```text
//! credentials = "Bearer" 1*SP b64token
//! b64token    = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
//! ```
//!
//! The scheme is matched case-insensitively (RFC 7235 §2.1). Anything that claims to be a bearer
//! credential but does not follow the grammar, or is longer than [`MAX_TOKEN_LEN`], is malformed
//! and refused: it is never forwarded and never sent to the token service.

/// Longest token accepted. Opaque tokens are tens of bytes, JWT signatures a few hundred.
pub const MAX_TOKEN_LEN: usize = 4_096;

/// Why no token could be taken from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    /// No `Authorization` header, an empty one, or another scheme (e.g. `Basic`).
    Missing,
    /// A `Bearer` credential that breaks the grammar or the size bound.
    Malformed,
}

/// Returns the bearer token of an `Authorization` header value.
pub fn parse_authorization(value: Option<&str>) -> Result<&str, BearerError> {
    let value = value.ok_or(BearerError::Missing)?;
    if value.bytes().all(|b| b == b' ' || b == b'\t') {
        return Err(BearerError::Missing);
    }
    let scheme_end = value.find([' ', '\t']).unwrap_or(value.len());
    let (scheme, rest) = value.split_at(scheme_end);
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(BearerError::Missing);
    }
    // 1*SP: spaces only; a tab or nothing at all after the scheme is malformed.
    let token = rest.trim_start_matches(' ');
    if token.len() == rest.len() || !is_b64token(token) {
        return Err(BearerError::Malformed);
    }
    Ok(token)
}

/// The RFC 6750 `b64token` grammar, with the [`MAX_TOKEN_LEN`] bound.
pub fn is_b64token(token: &str) -> bool {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return false;
    }
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

/// Whether a request target carries an `access_token` query parameter (RFC 6750 §2.3). The
/// filter never accepts a token there (URIs end up in logs and `Referer`s), and never forwards
/// one: such a request is refused as malformed. The parameter name is compared after
/// percent-decoding, so `access%5Ftoken` is caught too.
pub fn query_has_access_token(path: &str) -> bool {
    let Some((_, query)) = path.split_once('?') else {
        return false;
    };
    let query = query.split('#').next().unwrap_or("");
    query.split('&').any(|pair| {
        let name = pair.split('=').next().unwrap_or("");
        name.len() >= 12 && percent_decoded_eq(name, b"access_token")
    })
}

/// `name`, percent-decoded (`+` as a space), equals `want`.
fn percent_decoded_eq(name: &str, want: &[u8]) -> bool {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |j: usize| bytes.get(j).and_then(|c| char::from(*c).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out == want
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_bearer_in_any_case_with_one_or_more_spaces() {
        for (header, token) in [
            ("Bearer abc", "abc"),
            ("bearer abc", "abc"),
            ("BEARER abc", "abc"),
            ("bEaReR abc", "abc"),
            ("Bearer    abc", "abc"),
            ("Bearer a+/b==", "a+/b=="),
            ("Bearer a-._~+/Z09", "a-._~+/Z09"),
            ("Bearer eyJh.eyJz.c2ln", "eyJh.eyJz.c2ln"),
        ] {
            assert_eq!(parse_authorization(Some(header)), Ok(token), "{header:?}");
        }
    }

    #[test]
    fn no_header_empty_header_or_other_scheme_is_missing() {
        for header in [
            None,
            Some(""),
            Some(" "),
            Some("\t "),
            Some("Basic Zm9vOmJhcg=="),
            Some("Bearerabc"),
            Some("Token abc"),
            Some("Digest x"),
        ] {
            assert_eq!(
                parse_authorization(header),
                Err(BearerError::Missing),
                "{header:?}"
            );
        }
    }

    #[test]
    fn rejects_malformed_bearer_credentials() {
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        for header in [
            "Bearer",
            "Bearer ",
            "Bearer\tabc",
            "Bearer \tabc",
            "Bearer abc def",
            "Bearer abc,Bearer def",
            "Bearer abc ",
            "Bearer ===",
            "Bearer =abc",
            "Bearer a=b",
            "Bearer a\"b",
            "Bearer a\u{0}b",
            "Bearer a\r\nX-Injected: 1",
            "Bearer tökén",
            "Bearer a;b",
            long.as_str(),
        ] {
            assert_eq!(
                parse_authorization(Some(header)),
                Err(BearerError::Malformed),
                "{header:?}"
            );
        }
    }

    #[test]
    fn token_length_bound_is_inclusive() {
        let max = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN));
        assert_eq!(
            parse_authorization(Some(&max)).map(str::len),
            Ok(MAX_TOKEN_LEN)
        );
    }

    #[test]
    fn access_token_in_the_query_is_found() {
        for path in [
            "/x?access_token=abc",
            "/x?a=1&access_token=abc",
            "/x?access_token",
            "/x?access%5Ftoken=abc",
            "/x?%61ccess_token=abc",
            "/x?b=2&access_token=&c=3",
        ] {
            assert!(query_has_access_token(path), "{path}");
        }
        for path in [
            "/x",
            "/access_token",
            "/x?my_access_token=1",
            "/x?access_token_hint=1",
            "/x?a=access_token",
            "/x#access_token=abc",
            "/x?access%5token=1",
            "/x?%",
        ] {
            assert!(!query_has_access_token(path), "{path}");
        }
    }
}
