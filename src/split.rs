//! The Split Token pattern: the client holds only a JWT's signature; the gateway holds
//! `header.payload` under the SHA-256 of that signature and glues the JWT back together.
//!
//! This module is the pure part: the store key encodings publishers use, the publish API's
//! request parser, and the rewriter that splits tokens in token endpoint responses. The store
//! itself is [`crate::store`].

use std::borrow::Cow;
use std::fmt;

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::cache::{self, TokenHash, EXP_SKEW_MS};
use crate::jwt::{self, Claims, JwtError, MAX_JWT_LEN};

/// Longest `header.payload` accepted: with a signature of at most
/// [`crate::bearer::MAX_TOKEN_LEN`] bytes, the joined JWT stays within [`MAX_JWT_LEN`].
pub const MAX_HEADER_PAYLOAD_LEN: usize = MAX_JWT_LEN - crate::bearer::MAX_TOKEN_LEN - 1;
/// Longest `signature_hash` accepted in a publish request (hex of SHA-256 is 64).
pub const MAX_KEY_LEN: usize = 128;
/// Largest publish request body.
pub const MAX_PUBLISH_BODY: usize = 32 * 1024;
/// Largest token endpoint response the gateway splits; a larger one is refused, never passed
/// on (it could carry a whole JWT).
pub const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// How the SHA-256 of a signature is written as a store key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashEncoding {
    /// Standard alphabet, padded (RFC 4648 §4): what Curity's split-token publishers write.
    #[default]
    Base64,
    /// URL-safe alphabet, unpadded (RFC 4648 §5); padded input is accepted too.
    Base64url,
    /// Lowercase hexadecimal; uppercase input is accepted too.
    Hex,
}

impl HashEncoding {
    pub fn name(self) -> &'static str {
        match self {
            HashEncoding::Base64 => "base64",
            HashEncoding::Base64url => "base64url",
            HashEncoding::Hex => "hex",
        }
    }

    /// The canonical key for `hash`.
    pub fn encode(self, hash: &TokenHash) -> String {
        match self {
            HashEncoding::Base64 => STANDARD.encode(hash),
            HashEncoding::Base64url => URL_SAFE_NO_PAD.encode(hash),
            HashEncoding::Hex => hash.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// Reads a key; anything that does not decode to exactly 32 bytes is `None`.
    pub fn decode(self, key: &str) -> Option<TokenHash> {
        if key.len() > MAX_KEY_LEN {
            return None;
        }
        let bytes = match self {
            HashEncoding::Base64 => STANDARD.decode(key).ok()?,
            HashEncoding::Base64url => if key.ends_with('=') {
                URL_SAFE.decode(key)
            } else {
                URL_SAFE_NO_PAD.decode(key)
            }
            .ok()?,
            HashEncoding::Hex => {
                if !key.len().is_multiple_of(2) || !key.is_ascii() {
                    return None;
                }
                let mut out = Vec::with_capacity(key.len() / 2);
                for pair in key.as_bytes().chunks(2) {
                    let pair = std::str::from_utf8(pair).ok()?;
                    out.push(u8::from_str_radix(pair, 16).ok()?);
                }
                out
            }
        };
        bytes.try_into().ok()
    }
}

/// The store key of a presented signature: SHA-256 of its ASCII bytes.
pub fn signature_hash(signature: &str) -> TokenHash {
    cache::token_hash(signature)
}

/// What the store holds for one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub hash: TokenHash,
    pub header_payload: String,
    /// Served until this instant (ms since the epoch), exclusive.
    pub expires_at_ms: u64,
    /// Granted scopes, space-separated, read once when the entry is written.
    pub scope: String,
}

/// When a token may no longer be served: `limit_ms`, but never past `exp` minus the skew.
pub fn serve_until(limit_ms: u64, claims: &Claims) -> u64 {
    match claims.exp {
        Some(exp) => limit_ms.min(exp.saturating_mul(1_000).saturating_sub(EXP_SKEW_MS)),
        None => limit_ms,
    }
}

/// Checks `header.payload` (two base64url segments, JSON objects, an `alg` other than `none`)
/// and returns its claims.
pub fn parse_header_payload(header_payload: &str) -> Result<Claims, JwtError> {
    if header_payload.len() > MAX_HEADER_PAYLOAD_LEN {
        return Err(JwtError::TooLong);
    }
    let mut parts = header_payload.split('.');
    let (Some(h), Some(p), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Shape);
    };
    if !jwt::is_segment(h) || !jwt::is_segment(p) {
        return Err(JwtError::Shape);
    }
    jwt::parse_header_payload(h, p)
}

// ---------------------------------------------------------------------------------------------
// Publish API

/// A request to the publish path, once authenticated and parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishOp {
    Store(Entry),
    Revoke(TokenHash),
}

/// Why a publish request is refused with 400; the message is safe to return (it never
/// echoes a value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PublishError(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublish {
    signature_hash: String,
    header_payload: String,
    expires_at: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRevoke {
    signature_hash: String,
}

/// Parses a publish (`POST`) or revoke (`DELETE`) body. Other methods never reach here.
pub fn parse_publish(
    method: &str,
    body: &[u8],
    encoding: HashEncoding,
    now_ms: u64,
) -> Result<PublishOp, PublishError> {
    let refuse = |m: String| Err(PublishError(m));
    if body.len() > MAX_PUBLISH_BODY {
        return refuse(format!("body is larger than {MAX_PUBLISH_BODY} bytes"));
    }
    let key = |k: &str| {
        if k.len() > MAX_KEY_LEN {
            return Err(PublishError(format!(
                "signature_hash is longer than {MAX_KEY_LEN} characters"
            )));
        }
        encoding.decode(k).ok_or_else(|| {
            PublishError(format!(
                "signature_hash is not a {} SHA-256 hash",
                encoding.name()
            ))
        })
    };
    match method {
        "DELETE" => {
            let raw: RawRevoke = json_body(body)?;
            Ok(PublishOp::Revoke(key(&raw.signature_hash)?))
        }
        _ => {
            let raw: RawPublish = json_body(body)?;
            let hash = key(&raw.signature_hash)?;
            if raw.header_payload.len() > MAX_HEADER_PAYLOAD_LEN {
                return refuse(format!(
                    "header_payload is longer than {MAX_HEADER_PAYLOAD_LEN} bytes"
                ));
            }
            let claims = parse_header_payload(&raw.header_payload).map_err(|e| {
                PublishError(format!(
                    "header_payload is not a JWT header and payload: {e}"
                ))
            })?;
            let expires_at_ms = serve_until(raw.expires_at.saturating_mul(1_000), &claims);
            if expires_at_ms <= now_ms {
                return refuse("expires_at (or the payload's exp) is in the past".to_owned());
            }
            Ok(PublishOp::Store(Entry {
                hash,
                header_payload: raw.header_payload,
                expires_at_ms,
                scope: claims.scope,
            }))
        }
    }
}

/// Parses a JSON body into `T`; the error names the field but never its value.
fn json_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, PublishError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let what = match inner.classify() {
            serde_json::error::Category::Data => "has a missing, unknown or mistyped field",
            _ => "is not a JSON object",
        };
        // The path names a field of ours, or says nothing: an unknown key is the sender's
        // text and is not echoed.
        let known = ["signature_hash", "header_payload", "expires_at"];
        PublishError(if known.contains(&path.as_str()) {
            format!("body {what}: {path}")
        } else {
            format!("body {what}")
        })
    })?;
    de.end()
        .map_err(|_| PublishError("body has trailing characters".to_owned()))?;
    Ok(value)
}

// ---------------------------------------------------------------------------------------------
// Splitting at issuance

/// What to do with a token endpoint response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// Not a successful JSON response carrying a JWT `access_token`: pass it on as it is.
    Unchanged,
    /// Store `entry`, send `body` (the same JSON with `access_token` reduced to the signature).
    Split { body: Vec<u8>, entry: Entry },
    /// A JWT that cannot be split safely: never pass it on.
    Refuse(&'static str),
}

/// The fields of a token response the gateway reads, borrowed from the body so the
/// `access_token` value can be replaced in place. Every occurrence is kept: a duplicated
/// `access_token` is ambiguous and refused.
struct TokenFields<'a> {
    access_tokens: Vec<&'a RawValue>,
    expires_in: Option<Value>,
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
                };
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match key.as_ref() {
                        "access_token" => out.access_tokens.push(map.next_value()?),
                        "expires_in" => out.expires_in = Some(map.next_value()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// `application/json` or any `+json` media type, parameters allowed.
fn is_json(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return false };
    let essence = ct.split(';').next().unwrap_or("").trim();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (sub.eq_ignore_ascii_case("json")
            || sub.len() > 5
                && sub
                    .get(sub.len() - 5..)
                    .is_some_and(|s| s.eq_ignore_ascii_case("+json")))
}

/// Whether a response with this status and content type could carry a token to split: the
/// only ones whose body is held and examined.
pub fn may_split(status: Option<&str>, content_type: Option<&str>) -> bool {
    status == Some("200") && is_json(content_type)
}

const ACCESS_TOKEN: &[u8] = b"access_token";

/// Splits the JWT access token of a token endpoint response (RFC 6749 §5.1).
pub fn rewrite_token_response(
    status: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
    now_ms: u64,
) -> Rewrite {
    if !may_split(status, content_type) {
        return Rewrite::Unchanged;
    }
    if body.len() > MAX_TOKEN_RESPONSE {
        return Rewrite::Refuse("token response too large to split");
    }
    let Ok(fields) = serde_json::from_slice::<TokenFields<'_>>(body) else {
        // Not JSON the gateway can read. If it may carry an access token (a lenient client
        // could still find a JWT in it), fail closed rather than pass it on.
        if body.windows(ACCESS_TOKEN.len()).any(|w| w == ACCESS_TOKEN) {
            return Rewrite::Refuse("token response with an access_token is not valid JSON");
        }
        return Rewrite::Unchanged;
    };
    let raw = match fields.access_tokens.as_slice() {
        [] => return Rewrite::Unchanged,
        [one] => *one,
        _ => return Rewrite::Refuse("access_token appears more than once"),
    };
    let Ok(token) = serde_json::from_str::<String>(raw.get()) else {
        return Rewrite::Unchanged;
    };
    let Ok([header, payload, signature]) = jwt::segments(&token) else {
        // Opaque (or too long to be ours): not a JWT, nothing to split.
        return Rewrite::Unchanged;
    };
    let Ok(claims) = jwt::parse_header_payload(header, payload) else {
        return Rewrite::Refuse("access_token has the shape of a JWT but is not a valid one");
    };
    if signature.len() > crate::bearer::MAX_TOKEN_LEN {
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
    let mut out = Vec::with_capacity(before.len() + signature.len() + 2 + after.len());
    out.extend_from_slice(before);
    out.push(b'"');
    out.extend_from_slice(signature.as_bytes());
    out.push(b'"');
    out.extend_from_slice(after);
    let header_payload_len = header.len() + 1 + payload.len();
    Rewrite::Split {
        body: out,
        entry: Entry {
            hash: signature_hash(signature),
            header_payload: token.get(..header_payload_len).unwrap_or("").to_owned(),
            expires_at_ms,
            scope: claims.scope,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::tests::make;

    const NOW: u64 = 1_700_000_000_000;

    /// The signature of [`make`]'s fixtures.
    const SIG: &str = "c2lnbmF0dXJl";

    fn hp(jwt: &str) -> &str {
        jwt.rsplit_once('.').unwrap().0
    }

    #[test]
    fn hash_encodings_match_fixed_vectors() {
        // SHA-256("abc") = ba7816bf 8f01cfea 414140de 5dae2223 b00361a3 96177a9c b410ff61 f20015ad
        let h = signature_hash("abc");
        let cases = [
            (
                HashEncoding::Base64,
                "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=",
            ),
            (
                HashEncoding::Base64url,
                "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0",
            ),
            (
                HashEncoding::Hex,
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
        ];
        for (enc, key) in cases {
            assert_eq!(enc.encode(&h), key, "{enc:?}");
            assert_eq!(enc.decode(key), Some(h), "{enc:?}");
        }
        // A real JWS signature (RFC 7515 A.1's HS256 example); keys computed with Python's
        // hashlib and base64, independently of this code.
        let h = signature_hash("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        assert_eq!(
            HashEncoding::Base64.encode(&h),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM="
        );
        assert_eq!(
            HashEncoding::Base64url.encode(&h),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(
            HashEncoding::Hex.encode(&h),
            "13d31e961a1ad8ec2f16b10c4c982e0876a878ad6df144566ee1894acb70f9c3"
        );
    }

    #[test]
    fn decoding_accepts_only_32_byte_keys_in_the_configured_encoding() {
        let h = signature_hash("abc");
        // Lenient where it cannot matter: uppercase hex, padded base64url.
        assert_eq!(
            HashEncoding::Hex.decode(&HashEncoding::Hex.encode(&h).to_uppercase()),
            Some(h)
        );
        assert_eq!(
            HashEncoding::Base64url.decode("ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0="),
            Some(h)
        );
        for (enc, key) in [
            (HashEncoding::Base64, ""),
            // the base64url form is not standard base64
            (
                HashEncoding::Base64,
                "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0=",
            ),
            // unpadded standard base64
            (
                HashEncoding::Base64,
                "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0",
            ),
            // standard alphabet given to base64url
            (
                HashEncoding::Base64url,
                "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0",
            ),
            // 31 and 33 bytes
            (HashEncoding::Hex, &"ab".repeat(31)),
            (HashEncoding::Hex, &"ab".repeat(33)),
            (HashEncoding::Hex, &"a".repeat(63)),
            (HashEncoding::Hex, &"zz".repeat(32)),
            (HashEncoding::Hex, &"é".repeat(32)),
            (HashEncoding::Base64, &"A".repeat(200)),
        ] {
            assert_eq!(enc.decode(key), None, "{enc:?} {key:?}");
        }
    }

    fn publish(body: &str) -> Result<PublishOp, PublishError> {
        parse_publish("POST", body.as_bytes(), HashEncoding::Base64, NOW)
    }

    fn key_of(sig: &str) -> String {
        HashEncoding::Base64.encode(&signature_hash(sig))
    }

    #[test]
    fn publish_stores_header_payload_until_expires_at() {
        let jwt = make(r#"{"sub":"a","scope":"read write"}"#);
        let exp = NOW / 1000 + 60;
        let body = serde_json::json!({
            "signature_hash": key_of(SIG), "header_payload": hp(&jwt), "expires_at": exp,
        })
        .to_string();
        assert_eq!(
            publish(&body),
            Ok(PublishOp::Store(Entry {
                hash: signature_hash(SIG),
                header_payload: hp(&jwt).to_owned(),
                expires_at_ms: exp * 1000,
                scope: "read write".into(),
            }))
        );
    }

    #[test]
    fn publish_never_serves_past_the_payload_exp() {
        let exp = NOW / 1000 + 30;
        let jwt = make(&format!(r#"{{"exp":{exp}}}"#));
        let body = serde_json::json!({
            "signature_hash": key_of(SIG), "header_payload": hp(&jwt), "expires_at": exp + 3600,
        })
        .to_string();
        let Ok(PublishOp::Store(e)) = publish(&body) else {
            panic!("refused")
        };
        assert_eq!(e.expires_at_ms, exp * 1000 - EXP_SKEW_MS);
    }

    #[test]
    fn revoke_takes_only_the_key() {
        let body = format!(r#"{{"signature_hash": "{}"}}"#, key_of(SIG));
        assert_eq!(
            parse_publish("DELETE", body.as_bytes(), HashEncoding::Base64, NOW),
            Ok(PublishOp::Revoke(signature_hash(SIG)))
        );
        assert!(parse_publish("DELETE", b"{}", HashEncoding::Base64, NOW).is_err());
    }

    #[test]
    fn publish_refuses_bad_bodies_without_echoing_values() {
        let jwt = make("{}");
        let good_hp = hp(&jwt).to_owned();
        let key = key_of(SIG);
        let future = NOW / 1000 + 60;
        let obj = |k: &str, h: &str, e: serde_json::Value| {
            serde_json::json!({"signature_hash": k, "header_payload": h, "expires_at": e})
                .to_string()
        };
        let long_hp = format!("{good_hp}{}", "A".repeat(MAX_HEADER_PAYLOAD_LEN));
        let cases: Vec<(&str, String)> = vec![
            ("empty body", String::new()),
            ("not json", "signature_hash=x".into()),
            ("array", "[]".into()),
            (
                "trailing",
                format!("{} x", obj(&key, &good_hp, future.into())),
            ),
            (
                "missing expires_at",
                serde_json::json!({"signature_hash": key, "header_payload": good_hp}).to_string(),
            ),
            (
                "unknown field",
                serde_json::json!({"signature_hash": key, "header_payload": good_hp,
                    "expires_at": future, "jwt": "x"})
                .to_string(),
            ),
            (
                "duplicate field",
                format!(
                    r#"{{"signature_hash":"{key}","signature_hash":"{key}","header_payload":"{good_hp}","expires_at":{future}}}"#
                ),
            ),
            ("key not base64", obj("not a key!", &good_hp, future.into())),
            (
                "key of 31 bytes",
                obj(&STANDARD.encode([0u8; 31]), &good_hp, future.into()),
            ),
            (
                "key too long",
                obj(&"A".repeat(MAX_KEY_LEN + 4), &good_hp, future.into()),
            ),
            (
                "hex key for base64",
                obj(
                    &HashEncoding::Hex.encode(&signature_hash(SIG)),
                    &good_hp,
                    future.into(),
                ),
            ),
            ("full jwt", obj(&key, &jwt, future.into())),
            (
                "one segment",
                obj(&key, "eyJhbGciOiJIUzI1NiJ9", future.into()),
            ),
            ("padding", obj(&key, &format!("{good_hp}="), future.into())),
            ("not json segments", obj(&key, "YQ.YQ", future.into())),
            (
                "alg none",
                obj(
                    &key,
                    &format!("{}.e30", URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#)),
                    future.into(),
                ),
            ),
            (
                "header_payload too long",
                obj(&key, &long_hp, future.into()),
            ),
            (
                "expires_at past",
                obj(&key, &good_hp, (NOW / 1000 - 1).into()),
            ),
            ("expires_at now", obj(&key, &good_hp, (NOW / 1000).into())),
            ("expires_at negative", obj(&key, &good_hp, (-5).into())),
            ("expires_at string", obj(&key, &good_hp, "soon".into())),
            ("expires_at float", obj(&key, &good_hp, 1.5e9.into())),
            ("body too large", " ".repeat(MAX_PUBLISH_BODY + 1)),
        ];
        for (name, body) in cases {
            let e = publish(&body).expect_err(name);
            assert!(
                !e.0.contains(&key) && !e.0.contains(&good_hp),
                "{name}: {e}"
            );
        }
        // expired payload even though expires_at is in the future
        let expired = make(&format!(r#"{{"exp":{}}}"#, NOW / 1000));
        assert!(publish(&obj(&key, hp(&expired), future.into())).is_err());
    }

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
        let Rewrite::Split { body: out, entry } = rewrite_token_response(
            Some("200"),
            Some("application/json;charset=UTF-8"),
            &body,
            NOW,
        ) else {
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
        let Rewrite::Split { entry, .. } = rewrite_token_response(
            Some("200"),
            Some("application/json"),
            &token_response(&jwt, ""),
            NOW,
        ) else {
            panic!("not split")
        };
        assert_eq!(entry.expires_at_ms, NOW + 300_000);
    }

    #[test]
    fn unescapes_the_access_token_before_splitting() {
        let jwt = make("{}");
        let escaped = jwt.replace('e', "\\u0065");
        let body = token_response(&escaped, "");
        let Rewrite::Split { body: out, entry } =
            rewrite_token_response(Some("200"), Some("application/json"), &body, NOW)
        else {
            panic!("not split")
        };
        assert_eq!(out, token_response(SIG, ""));
        assert_eq!(entry.header_payload, hp(&jwt));
    }

    #[test]
    fn leaves_other_responses_unchanged() {
        let jwt = make("{}");
        let ok = token_response(&jwt, "");
        type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Vec<u8>);
        let cases: Vec<Case> = vec![
            (
                "error status",
                Some("400"),
                Some("application/json"),
                ok.clone(),
            ),
            ("no status", None, Some("application/json"), ok.clone()),
            ("html", Some("200"), Some("text/html"), ok.clone()),
            ("no content type", Some("200"), None, ok.clone()),
            (
                "opaque token",
                Some("200"),
                Some("application/json"),
                token_response("2YotnFZFEjr1zCsicMWpAA", ""),
            ),
            (
                "no access_token",
                Some("200"),
                Some("application/json"),
                br#"{"error":"invalid_grant"}"#.to_vec(),
            ),
            (
                "number access_token",
                Some("200"),
                Some("application/json"),
                br#"{"access_token":5}"#.to_vec(),
            ),
            (
                "not json",
                Some("200"),
                Some("application/json"),
                b"token_type=x".to_vec(),
            ),
            (
                "array",
                Some("200"),
                Some("application/json"),
                b"[1]".to_vec(),
            ),
            ("empty", Some("200"), Some("application/json"), Vec::new()),
        ];
        for (name, status, ct, body) in cases {
            assert_eq!(
                rewrite_token_response(status, ct, &body, NOW),
                Rewrite::Unchanged,
                "{name}"
            );
        }
        assert!(is_json(Some("application/vnd.example+json")));
        assert!(!is_json(Some("application/jsonx")));
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
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "unreadable JSON with an access_token",
                format!(r#"{{"access_token":"{jwt}","expires_in":60}} trailing"#).into_bytes(),
            ),
            (
                "form-encoded as JSON",
                format!("access_token={jwt}").into_bytes(),
            ),
            (
                "duplicate access_token",
                format!(r#"{{"access_token":"x","access_token":"{jwt}","expires_in":60}}"#)
                    .into_bytes(),
            ),
            (
                "no lifetime",
                format!(r#"{{"access_token":"{jwt}"}}"#).into_bytes(),
            ),
            ("expired", token_response(&expired, "")),
            ("alg none", token_response(&none, "")),
            (
                "too large",
                token_response(
                    &jwt,
                    &format!(r#","pad":"{}""#, "x".repeat(MAX_TOKEN_RESPONSE)),
                ),
            ),
        ];
        for (name, body) in cases {
            assert!(
                matches!(
                    rewrite_token_response(Some("200"), Some("application/json"), &body, NOW),
                    Rewrite::Refuse(_)
                ),
                "{name}"
            );
        }
    }
}
