//! The publish API's requests (`split.publish.path`): a publish (`POST`) stores a token's
//! `header.payload` under its signature's key, a revoke (`DELETE`) takes the key only.

use serde::Deserialize;

use super::key::*;
use crate::hash::TokenHash;
use crate::token::jwt::JwtError;
use crate::token::jwt::{parse_header_payload, MAX_HEADER_PAYLOAD_LEN};

// ---------------------------------------------------------------------------------------------
// Publish API

/// A request to the publish path, once authenticated and parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishOp {
    /// Store the entry; `signature`: the JWS signature itself, when the publisher sent it
    /// (checked against `signature_hash`; with `fleet`, entries are sealed under it).
    Store(Entry, Option<String>),
    Revoke(TokenHash),
}

/// Why a publish request is refused with 400; the message is safe to return (it never
/// echoes a value: a field is named only when it is one of ours).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("body is larger than {MAX_PUBLISH_BODY} bytes")]
    TooLarge,
    #[error("body is not a JSON object")]
    NotJson,
    #[error("body has a missing, unknown or mistyped field{}", field.map(|f| format!(": {f}")).unwrap_or_default())]
    Field { field: Option<&'static str> },
    #[error("body has trailing characters")]
    Trailing,
    #[error("signature_hash is longer than {MAX_KEY_LEN} characters")]
    KeyTooLong,
    #[error("signature_hash is not a {0} SHA-256 hash")]
    BadKey(&'static str),
    #[error("header_payload is longer than {MAX_HEADER_PAYLOAD_LEN} bytes")]
    HeaderPayloadTooLong,
    #[error("header_payload is not a JWT header and payload: {0}")]
    NotHeaderPayload(JwtError),
    #[error("expires_at (or the payload's exp) is in the past")]
    Expired,
    #[error("signature is not the JWS signature whose SHA-256 is signature_hash")]
    SignatureMismatch,
    #[error("signature is required: with fleet, an entry is sealed under its signature")]
    SignatureRequired,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublish {
    signature_hash: String,
    header_payload: String,
    expires_at: u64,
    signature: Option<String>,
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
    if body.len() > MAX_PUBLISH_BODY {
        return Err(PublishError::TooLarge);
    }
    let key = |k: &str| {
        if k.len() > MAX_KEY_LEN {
            return Err(PublishError::KeyTooLong);
        }
        encoding
            .decode(k)
            .ok_or(PublishError::BadKey(encoding.name()))
    };
    match method {
        "DELETE" => {
            let raw: RawRevoke = json_body(body)?;
            Ok(PublishOp::Revoke(key(&raw.signature_hash)?))
        }
        _ => {
            let raw: RawPublish = json_body(body)?;
            let hash = key(&raw.signature_hash)?;
            if let Some(signature) = &raw.signature {
                let named = crate::token::jwt::is_segment(signature)
                    && crate::hash::constant_time_eq(&super::signature_hash(signature), &hash);
                if !named {
                    return Err(PublishError::SignatureMismatch);
                }
            }
            if raw.header_payload.len() > MAX_HEADER_PAYLOAD_LEN {
                return Err(PublishError::HeaderPayloadTooLong);
            }
            let claims = parse_header_payload(&raw.header_payload)
                .map_err(PublishError::NotHeaderPayload)?;
            let expires_at_ms = serve_until(raw.expires_at.saturating_mul(1_000), &claims);
            if expires_at_ms <= now_ms {
                return Err(PublishError::Expired);
            }
            Ok(PublishOp::Store(
                Entry {
                    hash,
                    header_payload: raw.header_payload,
                    expires_at_ms,
                    scope: claims.scope,
                },
                raw.signature,
            ))
        }
    }
}

/// Parses a JSON body into `T`; the error names the field but never its value.
fn json_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, PublishError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = T::deserialize(&mut de).map_err(|e| {
        if e.classify() != serde_json::error::Category::Data {
            return PublishError::NotJson;
        }
        // The path names a field of ours, or says nothing: an unknown key is the sender's
        // text and is not echoed.
        let field = match crate::json_error::path_at(body, &e).as_slice() {
            [crate::json_error::Step::Key(key)] => {
                ["signature_hash", "header_payload", "expires_at"]
                    .into_iter()
                    .find(|known| known == key)
            }
            _ => None,
        };
        PublishError::Field { field }
    })?;
    de.end().map_err(|_| PublishError::Trailing)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine as _;

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
            Ok(PublishOp::Store(
                Entry {
                    hash: signature_hash(SIG),
                    header_payload: hp(&jwt).to_owned(),
                    expires_at_ms: exp * 1000,
                    scope: "read write".into(),
                },
                None
            ))
        );
        // With the signature itself (for a fleet, which seals under it): it must be the one.
        let with = |sig: &str| {
            serde_json::json!({"signature_hash": key_of(SIG), "header_payload": hp(&jwt),
                "expires_at": exp, "signature": sig})
            .to_string()
        };
        let Ok(PublishOp::Store(_, Some(sig))) = publish(&with(SIG)) else {
            panic!("refused")
        };
        assert_eq!(sig, SIG);
        for wrong in ["c2lnbmF0dXJlLXR3bw", "not/base64url", ""] {
            assert_eq!(publish(&with(wrong)), Err(PublishError::SignatureMismatch));
        }
    }

    #[test]
    fn publish_never_serves_past_the_payload_exp() {
        let exp = NOW / 1000 + 30;
        let jwt = make(&format!(r#"{{"exp":{exp}}}"#));
        let body = serde_json::json!({
            "signature_hash": key_of(SIG), "header_payload": hp(&jwt), "expires_at": exp + 3600,
        })
        .to_string();
        let Ok(PublishOp::Store(e, _)) = publish(&body) else {
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
                !e.to_string().contains(&key) && !e.to_string().contains(&good_hp),
                "{name}: {e}"
            );
        }
        // expired payload even though expires_at is in the future
        let expired = make(&format!(r#"{{"exp":{}}}"#, NOW / 1000));
        assert!(publish(&obj(&key, hp(&expired), future.into())).is_err());
    }
}
