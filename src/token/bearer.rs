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

/// The authentication scheme an access token comes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `Bearer` (RFC 6750).
    Bearer,
    /// `DPoP` (RFC 9449 §7.1): the token with a proof of possession of its key.
    Dpop,
}

/// What a request presents besides its token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presented {
    /// The scheme the token came with (`None`: no token).
    pub scheme: Option<Scheme>,
    /// The thumbprint of the key a valid DPoP proof was signed with.
    pub jkt: Option<String>,
    /// The client certificate's SHA-256, base64url (as `x5t#S256` is written).
    pub cert: Option<String>,
    /// The valid DPoP proof, to be recorded (replay, the key's share) only once the token is
    /// known to be active and bound to its key.
    pub proof: Option<ProofUse>,
}

/// A DPoP proof that passed every check of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProofUse {
    /// Its key in the replay store (its key's thumbprint and its `jti`).
    pub id: [u8; 32],
    /// SHA-256 of its key's thumbprint: whose share it counts against.
    pub key: [u8; 32],
    /// Until when it could be accepted, in ms: how long it is remembered.
    pub until_ms: u64,
}

/// Returns the bearer token of an `Authorization` header value.
pub fn parse_authorization(value: Option<&str>) -> Result<&str, BearerError> {
    parse_credentials(value, false).map(|(_, token)| token)
}

/// Returns the scheme and token of an `Authorization` header value: `Bearer`, or `DPoP` when
/// `dpop` accepts it (otherwise it is another scheme: no credentials). Both take the same
/// token grammar (RFC 6750 `b64token`, RFC 7235 `token68`); the scheme is case-insensitive.
pub fn parse_credentials(value: Option<&str>, dpop: bool) -> Result<(Scheme, &str), BearerError> {
    let value = value.ok_or(BearerError::Missing)?;
    if value.bytes().all(|b| b == b' ' || b == b'\t') {
        return Err(BearerError::Missing);
    }
    let scheme_end = value.find([' ', '\t']).unwrap_or(value.len());
    let (scheme, rest) = value.split_at(scheme_end);
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if dpop && scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        return Err(BearerError::Missing);
    };
    // 1*SP: spaces only; a tab or nothing at all after the scheme is malformed.
    let token = rest.trim_start_matches(' ');
    if token.len() == rest.len() || !is_b64token(token) {
        return Err(BearerError::Malformed);
    }
    Ok((scheme, token))
}

/// The RFC 6750 `b64token` grammar, with the [`MAX_TOKEN_LEN`] bound.
pub fn is_b64token(token: &str) -> bool {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return false;
    }
    let body = token.trim_end_matches('=');
    // One table lookup per byte, no early exit: the loop has no branch to mispredict.
    !body.is_empty()
        && body.bytes().fold(true, |ok, b| {
            ok & B64TOKEN.get(usize::from(b)).copied().unwrap_or(false)
        })
}

/// The bytes of the `b64token` grammar before its trailing `=`s.
// `b` < 256 is the loop's own bound (`get_mut` is not usable in a constant).
#[allow(clippy::indexing_slicing)]
const B64TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] =
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    table
};

/// Whether a request target carries an access token parameter (RFC 6750 §2.3), in the query
/// or as a path parameter. The filter never accepts a token there (URIs end up in logs and
/// `Referer`s), and never forwards one: such a request is refused as malformed.
///
/// Frameworks read parameter names loosely, so the rule is broad: a parameter is any piece of
/// the query between `&` or `;`, or any `;`-parameter of a path segment; its name (up to `=`),
/// percent-decoded up to three times (`+` as a space), is an access token parameter when its
/// letters and digits alone, in any case, spell `accesstoken`. That catches `access_token[]`
/// (PHP, Rails), ` access_token`, `access_token.`, `ACCESS_TOKEN`, `accessToken` and
/// `access.token` (PHP reads `.` and spaces as `_`), `access_token[0]` (what follows a `[` is an
/// array index), while `my_access_token` and
/// `access_token_hint` are other names.
pub fn uri_carries_access_token(target: &str) -> bool {
    // No parameter at all, even once decoded: no `?`, no `;` and no escape that could make one
    // (the common case, answered without allocating).
    if !target.bytes().any(|b| matches!(b, b'?' | b';' | b'%')) {
        return false;
    }
    let target = target.split('#').next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let in_query = query.split(['&', ';']).any(is_token_parameter);
    // Path parameters (`/a;access_token=T/b`, `/..;access_token=T`), also when the `;` or
    // `/` is percent-encoded and a framework decodes the path before splitting it.
    in_query
        || [path.to_owned(), decoded(path)].iter().any(|p| {
            p.split('/')
                .any(|segment| segment.split(';').skip(1).any(is_token_parameter))
        })
}

/// Whether a `name=value` (or bare `name`) parameter names an access token.
fn is_token_parameter(parameter: &str) -> bool {
    let name = parameter.split('=').next().unwrap_or("");
    // Cheap exit: the shortest spelling has 11 letters.
    if name.len() < 11 {
        return false;
    }
    // PHP and Rails read `name[...]` as the array `name`: what follows a `[` is not the name.
    let letters = |s: &str| -> String {
        let s = s.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
        s.split('[')
            .next()
            .unwrap_or("")
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let mut name = name.to_owned();
    for _ in 0..3 {
        if letters(&name) == "accesstoken" {
            return true;
        }
        let next = decoded(&name);
        if next == name {
            return false;
        }
        name = next;
    }
    letters(&name) == "accesstoken"
}

/// `s` percent-decoded once, `+` read as a space; invalid escapes and bytes that do not form
/// UTF-8 are kept as they are (lossily).
fn decoded(s: &str) -> String {
    let bytes = s.as_bytes();
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
    String::from_utf8_lossy(&out).into_owned()
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
    fn dpop_scheme_only_when_accepted() {
        assert_eq!(
            parse_credentials(Some("DPoP abc"), true),
            Ok((Scheme::Dpop, "abc"))
        );
        assert_eq!(
            parse_credentials(Some("dpop  abc"), true),
            Ok((Scheme::Dpop, "abc"))
        );
        assert_eq!(
            parse_credentials(Some("Bearer abc"), true),
            Ok((Scheme::Bearer, "abc"))
        );
        assert_eq!(
            parse_credentials(Some("DPoP abc"), false),
            Err(BearerError::Missing)
        );
        assert_eq!(
            parse_credentials(Some("DPoP a b"), true),
            Err(BearerError::Malformed)
        );
        // Both schemes at once (two headers, joined by the proxy): malformed.
        assert_eq!(
            parse_credentials(Some("Bearer abc, DPoP abc"), true),
            Err(BearerError::Malformed)
        );
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
    fn access_token_in_the_uri_is_found() {
        for path in [
            "/x?access_token=abc",
            "/x?a=1&access_token=abc",
            "/x?access_token",
            "/x?access%5Ftoken=abc",
            "/x?%61ccess_token=abc",
            "/x?b=2&access_token=&c=3",
            // The issue's variants, each forwarded before.
            "/x?a=1;access_token=T",
            "/x?access_token[]=T",
            "/x?access_token%5B%5D=T",
            "/x?%20access_token=T",
            "/x?access_token.=T",
            "/..;access_token=T",
            // And their relatives.
            "/x;access_token=T",
            "/a;v=1;access_token=T/b",
            "/a%3Baccess_token=T",
            "/x?ACCESS_TOKEN=T",
            "/x?accessToken=T",
            "/x?access.token=T",
            "/x?access+token=T",
            "/x?access_token[0]=T",
            "/x?access%255Ftoken=T",
            "/x?access%25255Ftoken=T",
            "/x?a=1&&access_token=T",
        ] {
            assert!(uri_carries_access_token(path), "{path}");
        }
        for path in [
            "/x",
            "/access_token",
            "/access_token/x",
            "/x?my_access_token=1",
            "/x?access_token_hint=1",
            "/x?a=access_token",
            "/x#access_token=abc",
            "/x?access%5token=1",
            "/x?%",
            "/x;a=access_token",
            "/x?refresh_token=1",
        ] {
            assert!(!uri_carries_access_token(path), "{path}");
        }
    }
}
