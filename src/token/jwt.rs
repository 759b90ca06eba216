//! The JWT received from the token service (RFC 7519 compact JWS serialisation, RFC 7515 §7.1).
//!
//! No signature is checked here: with `verify`, the gateway verifies every JWT before it leaves
//! ([`crate::token::jws`]); without it, the token service reached through its cluster is
//! trusted and the APIs verify. This module checks the shape strictly before decoding anything (three
//! non-empty base64url segments, no padding, bounded size; RFC 8725 §3.11: reject what is not
//! exactly a JWS), and reads only what the gateway needs: `exp`, to bound caching, and `scope`,
//! for `required_scopes`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

/// Served JWTs stop `EXP_SKEW_MS` before their `exp`, so the API never receives one that
/// expires in flight.
pub const EXP_SKEW_MS: u64 = 1_000;

/// Longest JWT accepted from the token service.
pub const MAX_JWT_LEN: usize = 16 * 1024;
/// Longest `header.payload` of a split token: with a signature of at most
/// [`crate::token::bearer::MAX_TOKEN_LEN`] bytes, the joined JWT stays within [`MAX_JWT_LEN`].
pub const MAX_HEADER_PAYLOAD_LEN: usize = MAX_JWT_LEN - crate::token::bearer::MAX_TOKEN_LEN - 1;
/// Longest normalised `scope` kept for a token.
pub const MAX_SCOPE_LEN: usize = 4 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("longer than {MAX_JWT_LEN} bytes")]
    TooLong,
    #[error("not three non-empty base64url segments")]
    Shape,
    #[error("a segment is not valid base64url")]
    Encoding,
    #[error("header or payload is not a JSON object")]
    NotJson,
    #[error("header has no string `alg`, or `alg` is none")]
    Alg,
    #[error("`exp` is not a NumericDate")]
    Exp,
    #[error("`scope` is not a string or an array of scope tokens")]
    Scope,
}

/// What the gateway reads from a JWT's payload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Claims {
    /// `exp` in whole seconds since the epoch, if present.
    pub exp: Option<u64>,
    /// Granted scopes, space-separated.
    pub scope: String,
}

/// The three segments of a compact JWS, after the shape check.
pub fn segments(jwt: &str) -> Result<[&str; 3], JwtError> {
    if jwt.len() > MAX_JWT_LEN {
        return Err(JwtError::TooLong);
    }
    let mut parts = jwt.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Shape);
    };
    if ![h, p, s].into_iter().all(is_segment) {
        return Err(JwtError::Shape);
    }
    Ok([h, p, s])
}

/// A non-empty run of the base64url alphabet without padding (RFC 7515 §2).
pub fn is_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Segment `segment` decoded as a JSON object of which only the members `T` names are kept:
/// the others are skipped without being built (no map of every claim, on every cache miss).
/// A name that appears twice is refused, as RFC 7519 §4 allows.
fn decode_object<T: serde::de::DeserializeOwned>(segment: &str) -> Result<T, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| JwtError::Encoding)?;
    // serde would also read a JSON array into a struct, field by position.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(JwtError::NotJson);
    }
    serde_json::from_slice(&bytes).map_err(|_| JwtError::NotJson)
}

/// A member that is present, `null` included (an `Option<Value>` would read `null` as absent).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    serde::Deserialize::deserialize(d).map(Some)
}

/// The JWS header members the gateway reads.
#[derive(serde::Deserialize)]
struct Header {
    #[serde(default, deserialize_with = "present")]
    alg: Option<Value>,
}

/// The claims the gateway reads.
#[derive(serde::Deserialize)]
struct Payload {
    #[serde(default, deserialize_with = "present")]
    exp: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    scope: Option<Value>,
}

/// Checks the shape of `jwt` and returns the claims the gateway uses. An unsecured JWT
/// (RFC 7519 §6: `alg` `none`) is [`JwtError::Alg`] in both its forms, with a signature
/// segment or with the empty one the standard gives it: one rule, whatever the shape.
pub fn parse(jwt: &str) -> Result<Claims, JwtError> {
    let [header, payload, _signature] = match segments(jwt) {
        Ok(parts) => parts,
        Err(JwtError::Shape) if is_unsecured(jwt) => return Err(JwtError::Alg),
        Err(e) => return Err(e),
    };
    segment_claims(header, payload)
}

/// `header.payload.` whose header says `alg: none`: the standard form of an unsecured JWT.
fn is_unsecured(jwt: &str) -> bool {
    let Some(header_payload) = jwt.strip_suffix('.') else {
        return false;
    };
    let mut parts = header_payload.split('.');
    let (Some(h), Some(p), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    if !is_segment(h) || !is_segment(p) {
        return false;
    }
    matches!(
        decode_object::<Header>(h).map(|header| header.alg),
        Ok(Some(Value::String(alg))) if alg.eq_ignore_ascii_case("none")
    )
}

/// Checks a split token's `header.payload` (two base64url segments, at most
/// [`MAX_HEADER_PAYLOAD_LEN`] bytes, JSON objects, an `alg` other than `none`) and returns its
/// claims: what a store may hold, from the publish API, the remote store or a token response.
pub fn parse_header_payload(header_payload: &str) -> Result<Claims, JwtError> {
    if header_payload.len() > MAX_HEADER_PAYLOAD_LEN {
        return Err(JwtError::TooLong);
    }
    let mut parts = header_payload.split('.');
    let (Some(h), Some(p), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Shape);
    };
    if !is_segment(h) || !is_segment(p) {
        return Err(JwtError::Shape);
    }
    segment_claims(h, p)
}

/// The claims of a JWS header and payload segment, already shape-checked.
fn segment_claims(header: &str, payload: &str) -> Result<Claims, JwtError> {
    let header: Header = decode_object(header)?;
    match header.alg {
        Some(Value::String(alg)) if !alg.eq_ignore_ascii_case("none") => {}
        _ => return Err(JwtError::Alg),
    }
    let payload: Payload = decode_object(payload)?;
    claims_from(payload.exp.as_ref(), payload.scope.as_ref())
}

/// Reads `exp` and `scope` from a JWT payload or an introspection response (RFC 7662 §2.2
/// uses the same names and types).
pub fn claims_of(payload: &serde_json::Map<String, Value>) -> Result<Claims, JwtError> {
    claims_from(payload.get("exp"), payload.get("scope"))
}

fn claims_from(exp: Option<&Value>, scope: Option<&Value>) -> Result<Claims, JwtError> {
    let exp = match exp {
        None => None,
        Some(v) => Some(numeric_date(v).ok_or(JwtError::Exp)?),
    };
    let scope = match scope {
        None => String::new(),
        Some(Value::String(s)) => normalise_scope(s.split(' ').filter(|s| !s.is_empty()))?,
        Some(Value::Array(items)) => {
            let mut names = Vec::with_capacity(items.len());
            for item in items {
                names.push(item.as_str().ok_or(JwtError::Scope)?);
            }
            normalise_scope(names.into_iter())?
        }
        Some(_) => return Err(JwtError::Scope),
    };
    Ok(Claims { exp, scope })
}

/// RFC 7519 §2 NumericDate: seconds, possibly fractional; truncated to whole seconds.
/// An RFC 7519 NumericDate in whole seconds: an integer, or a number with a fraction
/// (truncated); `None` for anything else, negative or absurd.
pub fn numeric_date(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let f = v.as_f64()?;
    // `as` saturates; the range check keeps nonsense (negative, NaN) out.
    (0.0..1.0e15).contains(&f).then_some(f as u64)
}

fn normalise_scope<'a>(names: impl Iterator<Item = &'a str>) -> Result<String, JwtError> {
    let mut out = String::new();
    for name in names {
        if !crate::token::scope::is_scope_token(name) {
            return Err(JwtError::Scope);
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(name);
        if out.len() > MAX_SCOPE_LEN {
            return Err(JwtError::Scope);
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds an unsigned-looking test JWT: `{"alg":"HS256"}` + the given payload + a dummy
    /// signature. Test fixture only; never verified.
    pub(crate) fn make(payload: &str) -> String {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let p = URL_SAFE_NO_PAD.encode(payload.as_bytes());
        format!("{h}.{p}.c2lnbmF0dXJl")
    }

    #[test]
    fn reads_exp_and_string_scope() {
        // payload: {"sub":"alice","exp":1700000000,"scope":"read  write"}
        let c = parse(&make(
            r#"{"sub":"alice","exp":1700000000,"scope":"read  write"}"#,
        ))
        .unwrap();
        assert_eq!(
            c,
            Claims {
                exp: Some(1_700_000_000),
                scope: "read write".into()
            }
        );
    }

    #[test]
    fn reads_array_scope_and_fractional_exp() {
        let c = parse(&make(r#"{"exp":1700000000.75,"scope":["read","write"]}"#)).unwrap();
        assert_eq!(
            c,
            Claims {
                exp: Some(1_700_000_000),
                scope: "read write".into()
            }
        );
    }

    #[test]
    fn exp_and_scope_are_optional() {
        assert_eq!(parse(&make(r#"{"sub":"x"}"#)).unwrap(), Claims::default());
    }

    #[test]
    fn rejects_bad_shapes() {
        let good = make("{}");
        let cases: Vec<(String, JwtError)> = vec![
            (String::new(), JwtError::Shape),
            ("abc".into(), JwtError::Shape),
            ("a.b".into(), JwtError::Shape),
            ("a.b.c.d".into(), JwtError::Shape),
            ("a..c".into(), JwtError::Shape),
            (format!("{good}."), JwtError::Shape),
            (format!("{good}\r\n"), JwtError::Shape),
            (format!("{good} "), JwtError::Shape),
            (format!("{good}garbage!"), JwtError::Shape),
            (good.replacen('.', "=.", 1), JwtError::Shape),
            (good.replacen('e', "+", 1), JwtError::Shape),
            ("a".repeat(MAX_JWT_LEN + 1), JwtError::TooLong),
            ("YQ.YQ.YQ".into(), JwtError::NotJson),
            ("A.e30.c2ln".into(), JwtError::Encoding),
        ];
        for (jwt, want) in cases {
            assert_eq!(parse(&jwt), Err(want), "{jwt:?}");
        }
    }

    #[test]
    fn rejects_alg_none_and_bad_claims() {
        let none = format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(b"{}")
        );
        assert_eq!(parse(&none), Err(JwtError::Alg));
        // The unsecured form RFC 7519 §6.1 gives it (empty signature): the same answer.
        let (unsecured, _) = none.rsplit_once('.').unwrap();
        assert_eq!(parse(&format!("{unsecured}.")), Err(JwtError::Alg));
        // An empty signature under a signing algorithm is just a bad shape.
        let (signed, _) = make("{}")
            .rsplit_once('.')
            .map(|(a, b)| (a.to_owned(), b))
            .unwrap();
        assert_eq!(parse(&format!("{signed}.")), Err(JwtError::Shape));
        let no_alg = format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(b"{}"),
            URL_SAFE_NO_PAD.encode(b"{}")
        );
        assert_eq!(parse(&no_alg), Err(JwtError::Alg));
        for header in [&br#"{"alg":5}"#[..], br#"{"alg":null}"#] {
            let odd = format!(
                "{}.{}.c2ln",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(b"{}")
            );
            assert_eq!(parse(&odd), Err(JwtError::Alg));
        }
        let twice = format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(b"{}")
        );
        assert_eq!(parse(&twice), Err(JwtError::NotJson));
        for (payload, want) in [
            (r#"{"exp":"soon"}"#, JwtError::Exp),
            (r#"{"exp":-1}"#, JwtError::Exp),
            (r#"{"scope":5}"#, JwtError::Scope),
            (r#"{"scope":["read",5]}"#, JwtError::Scope),
            (r#"{"scope":"a\"b"}"#, JwtError::Scope),
            ("[1,2]", JwtError::NotJson),
            (" [1,2]", JwtError::NotJson),
            // RFC 7519 §4: a claim named twice is refused rather than one of them picked.
            (r#"{"exp":1700000000,"exp":1}"#, JwtError::NotJson),
            // Present but null is not absent.
            (r#"{"exp":null}"#, JwtError::Exp),
            (r#"{"scope":null}"#, JwtError::Scope),
        ] {
            assert_eq!(parse(&make(payload)), Err(want), "{payload}");
        }
    }

    #[test]
    fn accepts_an_8kb_jwt() {
        let payload = format!(r#"{{"pad":"{}"}}"#, "x".repeat(6000));
        let jwt = make(&payload);
        assert!(jwt.len() > 8_000);
        assert!(parse(&jwt).is_ok());
    }
}
