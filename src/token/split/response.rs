//! Splitting at issuance: a token endpoint's success answer leaves the gateway with its JWT
//! access token reduced to the signature, `header.payload` kept for the store; or it is refused
//! (never passed on with a whole JWT in it).

use std::borrow::Cow;
use std::fmt;

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde::de::{self, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::key::*;
use crate::token::jwt;

// ---------------------------------------------------------------------------------------------
// Splitting at issuance

/// What to do with a token endpoint response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// Carries no JWT access token (an error status, an opaque token, no token at all): pass
    /// it on as it is.
    Unchanged,
    /// Store `entry`, send `body` (the same JSON with `access_token` reduced to the
    /// `signature`).
    Split {
        body: Vec<u8>,
        entry: Entry,
        signature: String,
    },
    /// A JWT that cannot be split safely, or a body the gateway cannot read that may carry one:
    /// never pass it on.
    Refuse(&'static str),
}

/// The fields of a token response the gateway reads, borrowed from the body so the
/// `access_token` value can be replaced in place. Every occurrence is kept: a duplicated
/// `access_token` is ambiguous and refused.
struct TokenFields<'a> {
    access_tokens: Vec<&'a RawValue>,
    expires_in: Option<Value>,
    /// Whether some other member holds an object or an array (which could nest an
    /// `access_token`): only then is the body walked whole.
    nested: bool,
}

impl<'de: 'a, 'a> Deserialize<'de> for TokenFields<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = TokenFields<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut out = TokenFields {
                    access_tokens: Vec::new(),
                    expires_in: None,
                    nested: false,
                };
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match key.as_ref() {
                        "access_token" => out.access_tokens.push(map.next_value()?),
                        "expires_in" => out.expires_in = Some(map.next_value()?),
                        _ => {
                            let raw: &'de RawValue = map.next_value()?;
                            out.nested |= raw.get().starts_with(['{', '[']);
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// What the gateway does with a token endpoint response, once its headers are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseGate {
    /// Not a success: it carries no token. Passed on as it is.
    Pass,
    /// A success: its body is held until complete, then split (or refused).
    Hold,
    /// A success the gateway cannot read: never passed on.
    Refuse(&'static str),
}

/// Whether an HTTP status is a success (2xx).
fn is_success(status: Option<&str>) -> bool {
    status
        .and_then(|s| s.parse::<u16>().ok())
        .is_some_and(|s| (200..300).contains(&s))
}

/// Whether a `Content-Encoding` leaves the body as it is. Any coding (gzip, deflate, br, a
/// list...) hides the token from the rewriter, so it would pass on unsplit.
fn is_identity(content_encoding: Option<&str>) -> bool {
    content_encoding.is_none_or(|e| {
        let e = e.trim();
        e.is_empty() || e.eq_ignore_ascii_case("identity")
    })
}

/// The decision on a token endpoint response's headers. Every success is held and examined,
/// whatever its `Content-Type` (a misbehaving token service may send JSON as anything); a
/// success with a content coding is refused (token requests go upstream with
/// `Accept-Encoding: identity`, so only a token service that ignores it sends one).
pub fn token_response_gate(
    status: Option<&str>,
    content_encoding: Option<&str>,
    end_of_stream: bool,
) -> ResponseGate {
    if !is_success(status) {
        ResponseGate::Pass
    } else if !is_identity(content_encoding) {
        ResponseGate::Refuse("token response with a content coding")
    } else if end_of_stream {
        ResponseGate::Pass
    } else {
        ResponseGate::Hold
    }
}

const ACCESS_TOKEN: &[u8] = b"access_token";

/// Splits the JWT access token of a token endpoint response (RFC 6749 §5.1).
///
/// A success (2xx, any `Content-Type`) leaves with no JWT access token in it: split, or
/// refused when it cannot be split safely or cannot be read. Other statuses pass unchanged.
pub fn rewrite_token_response(
    status: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
    now_ms: u64,
) -> Rewrite {
    if !is_success(status) {
        return Rewrite::Unchanged;
    }
    if !is_identity(content_encoding) {
        return Rewrite::Refuse("token response with a content coding");
    }
    if body.len() > MAX_TOKEN_RESPONSE {
        return Rewrite::Refuse("token response too large to split");
    }
    let Ok(fields) = serde_json::from_slice::<TokenFields<'_>>(body) else {
        // Not JSON the gateway can read (another syntax, UTF-16, a byte order mark, trailing
        // bytes). If a lenient client could still find a token in it, fail closed.
        if may_carry_token(body) {
            return Rewrite::Refuse("unreadable token response that may carry a token");
        }
        return Rewrite::Unchanged;
    };
    if fields.nested && nests_a_jwt_access_token(body) {
        return Rewrite::Refuse("a nested access_token holds a JWT");
    }
    let raw = match fields.access_tokens.as_slice() {
        [] => return Rewrite::Unchanged,
        [one] => *one,
        _ => return Rewrite::Refuse("access_token appears more than once"),
    };
    let Ok(token) = serde_json::from_str::<String>(raw.get()) else {
        return Rewrite::Unchanged;
    };
    let Ok([header, payload, signature]) = jwt::segments(&token) else {
        if looks_like_jwt(&token) {
            return Rewrite::Refuse("access_token has the shape of a JWT but is not a valid one");
        }
        // Opaque: not a JWT, nothing to split.
        return Rewrite::Unchanged;
    };
    let Ok(claims) = jwt::parse(&token) else {
        return Rewrite::Refuse("access_token has the shape of a JWT but is not a valid one");
    };
    if signature.len() > crate::token::bearer::MAX_TOKEN_LEN {
        return Rewrite::Refuse("access_token signature is too long to be a bearer token");
    }
    let lifetime_limit = match (
        claims.exp,
        fields.expires_in.as_ref().and_then(Value::as_u64),
    ) {
        (Some(_), _) => u64::MAX,
        (None, Some(expires_in)) => now_ms.saturating_add(expires_in.saturating_mul(1_000)),
        (None, None) => return Rewrite::Refuse("access_token has neither exp nor expires_in"),
    };
    let expires_at_ms = serve_until(lifetime_limit, &claims);
    if expires_at_ms <= now_ms {
        return Rewrite::Refuse("access_token is already expired");
    }
    // The raw value borrows from `body`: its offset is where the JSON string starts.
    let start = (raw.get().as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
    let end = start.saturating_add(raw.get().len());
    let (Some(before), Some(after)) = (body.get(..start), body.get(end..)) else {
        return Rewrite::Refuse("cannot locate access_token in the response");
    };
    let header_payload_len = header.len() + 1 + payload.len();
    let header_payload = token.get(..header_payload_len).unwrap_or("");
    // The same JWT elsewhere in the body (another member echoing it) would undo the split.
    if contains(before, header_payload.as_bytes()) || contains(after, header_payload.as_bytes()) {
        return Rewrite::Refuse("the access_token's JWT appears twice in the response");
    }
    let mut out = Vec::with_capacity(before.len() + signature.len() + 2 + after.len());
    out.extend_from_slice(before);
    out.push(b'"');
    out.extend_from_slice(signature.as_bytes());
    out.push(b'"');
    out.extend_from_slice(after);
    Rewrite::Split {
        body: out,
        signature: signature.to_owned(),
        entry: Entry {
            hash: signature_hash(signature),
            header_payload: header_payload.to_owned(),
            expires_at_ms,
            scope: claims.scope,
        },
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether a value has the shape of a JWS or JWE a lenient reader could take for a JWT: a
/// `.`-separated value whose first segment (base64url or base64, padded or not) decodes to a
/// JSON object, as every JOSE header does.
pub fn looks_like_jwt(value: &str) -> bool {
    match value.split_once('.') {
        Some((first, rest)) => !rest.is_empty() && is_jose_header(first),
        None => false,
    }
}

/// A segment that decodes (base64url or base64, padding ignored) to a JSON object.
fn is_jose_header(segment: &str) -> bool {
    let segment = segment.trim_matches('=');
    if segment.len() < 4 {
        return false;
    }
    let decoded = URL_SAFE_NO_PAD
        .decode(segment)
        .or_else(|_| STANDARD_NO_PAD.decode(segment));
    decoded.is_ok_and(|d| d.trim_ascii_start().first() == Some(&b'{'))
}

/// Whether an unreadable body could still carry a token to a lenient client, once NUL bytes
/// are dropped (UTF-16 and UTF-32 text is ASCII with NULs between): the name `access_token` in
/// any case, or a run of three or more `.`-separated segments of the base64 alphabets one of
/// which is a JOSE header (or holds `eyJ`, the start of one, for a client that searches).
fn may_carry_token(body: &[u8]) -> bool {
    let text: Vec<u8> = body.iter().copied().filter(|&b| b != 0).collect();
    if text
        .windows(ACCESS_TOKEN.len())
        .any(|w| w.eq_ignore_ascii_case(ACCESS_TOKEN))
    {
        return true;
    }
    text.split(|&b| !(b.is_ascii_alphanumeric() || b"-_+/=.".contains(&b)))
        .filter_map(|run| std::str::from_utf8(run).ok())
        .any(|run| {
            let segments: Vec<&str> = run.split('.').collect();
            segments.len() >= 3
                && segments
                    .windows(2)
                    .any(|w| matches!(w, [s, next] if !next.is_empty() && (is_jose_header(s) || s.contains("eyJ"))))
        })
}

/// Whether an `access_token` below the top level of a JSON body holds a JWT-shaped string.
fn nests_a_jwt_access_token(body: &[u8]) -> bool {
    fn walk(v: &Value, depth: usize) -> bool {
        match v {
            Value::Object(map) => map.iter().any(|(k, v)| {
                (depth > 0 && k == "access_token" && v.as_str().is_some_and(looks_like_jwt))
                    || walk(v, depth + 1)
            }),
            Value::Array(items) => items.iter().any(|v| walk(v, depth + 1)),
            _ => false,
        }
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => walk(&v, 0),
        // It parsed as an object of raw values a moment ago: only depth limits can fail here.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    fn token_response(jwt: &str, extra: &str) -> Vec<u8> {
        format!(
            r#"{{"token_type":"Bearer", "access_token" : "{jwt}","expires_in":300,"scope":"read"{extra}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn splits_a_jwt_access_token_in_place() {
        let exp = NOW / 1000 + 120;
        let jwt = make(&format!(r#"{{"exp":{exp},"scope":"read"}}"#));
        let body = token_response(&jwt, r#","refresh_token":"r1","n":1.50"#);
        let Rewrite::Split {
            body: out, entry, ..
        } = rewrite_token_response(Some("200"), None, &body, NOW)
        else {
            panic!("not split")
        };
        let want =
            String::from_utf8(token_response(SIG, r#","refresh_token":"r1","n":1.50"#)).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            want,
            "only access_token changes"
        );
        assert_eq!(entry.hash, signature_hash(SIG));
        assert_eq!(entry.header_payload, hp(&jwt));
        assert_eq!(entry.expires_at_ms, exp * 1000 - EXP_SKEW_MS);
        assert_eq!(entry.scope, "read");
    }

    #[test]
    fn uses_expires_in_when_the_jwt_has_no_exp() {
        let jwt = make(r#"{"sub":"a"}"#);
        let Rewrite::Split { entry, .. } =
            rewrite_token_response(Some("200"), None, &token_response(&jwt, ""), NOW)
        else {
            panic!("not split")
        };
        assert_eq!(entry.expires_at_ms, NOW + 300_000);
    }

    #[test]
    fn unescapes_the_access_token_before_splitting() {
        let jwt = make("{}");
        let escaped = jwt.replace('e', "\\u0065");
        let body = token_response(&escaped, "");
        let Rewrite::Split {
            body: out, entry, ..
        } = rewrite_token_response(Some("200"), None, &body, NOW)
        else {
            panic!("not split")
        };
        assert_eq!(out, token_response(SIG, ""));
        assert_eq!(entry.header_payload, hp(&jwt));
    }

    #[test]
    fn leaves_responses_without_a_jwt_access_token_unchanged() {
        let jwt = make("{}");
        let ok = token_response(&jwt, "");
        // (name, status, content coding, body)
        type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Vec<u8>);
        let cases: Vec<Case> = vec![
            ("error status", Some("400"), None, ok.clone()),
            ("redirect", Some("302"), None, ok.clone()),
            (
                "server error, compressed",
                Some("500"),
                Some("gzip"),
                ok.clone(),
            ),
            ("no status", None, None, ok.clone()),
            ("not a number", Some("2xx"), None, ok.clone()),
            (
                "identity coding",
                Some("200"),
                Some(" Identity "),
                token_response("opaque", ""),
            ),
            (
                "empty coding",
                Some("200"),
                Some(""),
                token_response("opaque", ""),
            ),
            (
                "opaque token",
                Some("200"),
                None,
                token_response("2YotnFZFEjr1zCsicMWpAA", ""),
            ),
            (
                "dotted opaque token",
                Some("200"),
                None,
                token_response("v2.Zm9vYmFy", ""),
            ),
            (
                "no access_token",
                Some("200"),
                None,
                br#"{"error":"invalid_grant"}"#.to_vec(),
            ),
            (
                "number access_token",
                Some("200"),
                None,
                br#"{"access_token":5}"#.to_vec(),
            ),
            ("not json", Some("200"), None, b"token_type=x".to_vec()),
            (
                "html page",
                Some("200"),
                None,
                b"<html><p>signed in</p></html>".to_vec(),
            ),
            ("array", Some("200"), None, b"[1]".to_vec()),
            ("empty", Some("200"), None, Vec::new()),
            (
                "an id_token beside an opaque access token",
                Some("200"),
                None,
                format!(r#"{{"access_token":"opaque","id_token":"{jwt}"}}"#).into_bytes(),
            ),
            (
                "nested opaque access_token",
                Some("200"),
                None,
                br#"{"data":{"access_token":"opaque"}}"#.to_vec(),
            ),
        ];
        for (name, status, coding, body) in cases {
            assert_eq!(
                rewrite_token_response(status, coding, &body, NOW),
                Rewrite::Unchanged,
                "{name}"
            );
        }
    }

    #[test]
    fn splits_whatever_the_content_type_and_for_any_success() {
        // The content type is not even an argument: a 201 or a text/json answer is split too.
        let jwt = make(r#"{"scope":"read"}"#);
        for status in ["200", "201", "203", "299"] {
            assert!(
                matches!(
                    rewrite_token_response(Some(status), None, &token_response(&jwt, ""), NOW),
                    Rewrite::Split { .. }
                ),
                "{status}"
            );
        }
    }

    #[test]
    fn the_response_gate_holds_every_success_and_refuses_content_codings() {
        use ResponseGate::*;
        let cases = [
            (Some("200"), None, false, Hold),
            (Some("201"), Some("identity"), false, Hold),
            (Some("204"), None, true, Pass),
            (Some("400"), None, false, Pass),
            (Some("500"), Some("gzip"), false, Pass),
            (None, None, false, Pass),
            (Some("200"), Some("gzip"), false, Refuse("")),
            (Some("200"), Some("deflate"), true, Refuse("")),
            (Some("200"), Some("br"), false, Refuse("")),
            (Some("200"), Some("identity, gzip"), false, Refuse("")),
            (Some("200"), Some("x-anything"), false, Refuse("")),
        ];
        for (status, coding, eos, want) in cases {
            let got = token_response_gate(status, coding, eos);
            let same = match (got, want) {
                (Refuse(_), Refuse(_)) => true,
                (a, b) => a == b,
            };
            assert!(same, "{status:?} {coding:?} {eos}: {got:?}");
        }
    }

    #[test]
    fn refuses_jwts_it_cannot_split_safely() {
        let jwt = make("{}");
        let expired = make(&format!(r#"{{"exp":{}}}"#, NOW / 1000));
        let none = format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(b"{}")
        );
        let utf16 = |text: &[u8]| -> Vec<u8> {
            let mut out = vec![0xff, 0xfe];
            for &b in text {
                out.extend_from_slice(&[b, 0]);
            }
            out
        };
        let ok = token_response(&jwt, "");
        let mut bom = b"\xef\xbb\xbf".to_vec();
        bom.extend_from_slice(&ok);
        let cases: Vec<(&str, Option<&str>, Vec<u8>)> = vec![
            (
                "unreadable JSON with an access_token",
                None,
                format!(r#"{{"access_token":"{jwt}","expires_in":60}} trailing"#).into_bytes(),
            ),
            (
                "form-encoded",
                None,
                format!("access_token={jwt}").into_bytes(),
            ),
            (
                "name in capitals",
                None,
                format!("ACCESS_TOKEN: {jwt}").into_bytes(),
            ),
            ("a bare JWT as text", None, jwt.clone().into_bytes()),
            ("UTF-16 JSON", None, utf16(&ok)),
            ("UTF-8 with a byte order mark", None, bom),
            ("gzip", Some("gzip"), ok.clone()),
            ("deflate", Some("deflate"), ok.clone()),
            (
                "duplicate access_token",
                None,
                format!(r#"{{"access_token":"x","access_token":"{jwt}","expires_in":60}}"#)
                    .into_bytes(),
            ),
            (
                "nested access_token",
                None,
                format!(r#"{{"data":{{"access_token":"{jwt}","expires_in":60}}}}"#).into_bytes(),
            ),
            (
                "access_token in an array",
                None,
                format!(r#"{{"tokens":[{{"access_token":"{jwt}"}}]}}"#).into_bytes(),
            ),
            (
                "the JWT echoed in another member",
                None,
                token_response(&jwt, &format!(r#","token":"{jwt}""#)),
            ),
            ("padded JWT", None, token_response(&format!("{jwt}="), "")),
            (
                "no lifetime",
                None,
                format!(r#"{{"access_token":"{jwt}"}}"#).into_bytes(),
            ),
            ("expired", None, token_response(&expired, "")),
            ("alg none", None, token_response(&none, "")),
            (
                "too large",
                None,
                token_response(
                    &jwt,
                    &format!(r#","pad":"{}""#, "x".repeat(MAX_TOKEN_RESPONSE)),
                ),
            ),
        ];
        for (name, coding, body) in cases {
            assert!(
                matches!(
                    rewrite_token_response(Some("200"), coding, &body, NOW),
                    Rewrite::Refuse(_)
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn jwt_shapes() {
        let jwt = make("{}");
        assert!(looks_like_jwt(&jwt));
        assert!(looks_like_jwt(&format!("{jwt}==")));
        assert!(looks_like_jwt("eyJhbGciOiJub25lIn0.e30."));
        assert!(!looks_like_jwt("a.b.c"));
        assert!(!looks_like_jwt("2YotnFZFEjr1zCsicMWpAA"));
        assert!(!looks_like_jwt("eyJhbGciOiJub25lIn0."));
    }
}
