//! Token exchange (RFC 8693): the request the gateway makes, and what the token service's
//! answer means. The answer's `access_token` must be a JWT (the gateway asks for one with
//! `requested_token_type`), never forwarded unless it is one.

use serde_json::{Map, Value};

use super::introspection::{form_urlencode, media_type, CallFailure, Response};
use super::jwt::{self, Claims, MAX_JWT_LEN};

/// Largest exchange answer read: a JWT and a few fields.
pub const MAX_RESPONSE_BYTES: usize = MAX_JWT_LEN + 1024;

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// What the gateway sends as `subject_token` (`token_exchange.subject_token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectToken {
    /// The client's token as it sent it (the opaque token).
    AccessToken,
    /// The JWT the client's token resolved to (the only choice for split tokens).
    Jwt,
}

impl SubjectToken {
    pub fn name(self) -> &'static str {
        match self {
            SubjectToken::AccessToken => "access_token",
            SubjectToken::Jwt => "jwt",
        }
    }

    fn type_uri(self) -> &'static str {
        match self {
            SubjectToken::AccessToken => TYPE_ACCESS_TOKEN,
            SubjectToken::Jwt => TYPE_JWT,
        }
    }
}

/// The form parameters of a policy's `exchange`, each when set, encoded once.
pub fn rule_form(audience: Option<&str>, scope: Option<&str>, resource: Option<&str>) -> String {
    let mut out = String::new();
    for (name, value) in [
        ("audience", audience),
        ("scope", scope),
        ("resource", resource),
    ] {
        if let Some(v) = value {
            out.push_str(&format!("&{name}={}", form_urlencode(v)));
        }
    }
    out
}

/// The body of an exchange request (RFC 8693 §2.1).
pub fn request_body(kind: SubjectToken, subject: &str, rule_form: &str) -> Vec<u8> {
    format!(
        "grant_type={}&subject_token={}&subject_token_type={}&requested_token_type={}{rule_form}",
        form_urlencode(GRANT_TYPE),
        form_urlencode(subject),
        form_urlencode(kind.type_uri()),
        form_urlencode(TYPE_JWT),
    )
    .into_bytes()
}

/// Why the token service would not make a token for this API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `invalid_grant`: the subject token is not good (401 to the client).
    InvalidGrant,
    /// `invalid_target`, `invalid_scope`, `unauthorized_client`: the token is good, but not
    /// for this API (403).
    Forbidden,
}

/// What an exchange answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Issued {
        jwt: String,
        claims: Claims,
        /// `expires_in`, when given.
        expires_in_s: Option<u64>,
    },
    Refused(Refusal),
    Failed(CallFailure),
}

/// Classifies the token service's answer to an exchange.
pub fn classify(resp: &Response<'_>) -> Outcome {
    let Some(status) = resp.status else {
        return Outcome::Failed(CallFailure::Reset);
    };
    let Ok(status) = status.parse::<u16>() else {
        return Outcome::Failed(CallFailure::Malformed);
    };
    match status {
        200 => issued(resp),
        // RFC 6749 §5.2: errors are 400 (401 for client authentication).
        400 | 401 | 403 => match error_code(resp).as_deref() {
            Some("invalid_grant") => Outcome::Refused(Refusal::InvalidGrant),
            Some("invalid_target" | "invalid_scope" | "unauthorized_client") => {
                Outcome::Refused(Refusal::Forbidden)
            }
            // invalid_client, invalid_request, unsupported_grant_type, ...: the gateway's
            // request or its credentials, not the client's token.
            _ => Outcome::Failed(CallFailure::Status(status)),
        },
        503 if resp.synthesized => Outcome::Failed(CallFailure::Unreachable),
        503 => Outcome::Failed(CallFailure::Unavailable),
        504 => Outcome::Failed(CallFailure::Timeout),
        other => Outcome::Failed(CallFailure::Status(other)),
    }
}

fn json_object(resp: &Response<'_>) -> Option<Map<String, Value>> {
    if media_type(resp.content_type).as_deref() != Some("application/json") {
        return None;
    }
    match serde_json::from_slice::<Value>(resp.body?) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

fn error_code(resp: &Response<'_>) -> Option<String> {
    json_object(resp)?
        .get("error")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// RFC 8693 §2.2.1: `access_token`, `issued_token_type`, `token_type`, optional `expires_in`.
fn issued(resp: &Response<'_>) -> Outcome {
    let malformed = Outcome::Failed(CallFailure::Malformed);
    let Some(answer) = json_object(resp) else {
        return malformed;
    };
    let Some(Value::String(token)) = answer.get("access_token") else {
        return malformed;
    };
    match answer.get("issued_token_type").and_then(Value::as_str) {
        Some(TYPE_JWT | TYPE_ACCESS_TOKEN) => {}
        _ => return malformed,
    }
    let expires_in_s = match answer.get("expires_in") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(s) => Some(s),
            None => return malformed,
        },
    };
    match jwt::parse(token) {
        Ok(claims) => Outcome::Issued {
            jwt: token.clone(),
            claims,
            expires_in_s,
        },
        Err(jwt::JwtError::Alg) => Outcome::Failed(CallFailure::Unsigned),
        // Not a JWT: the gateway asked for one, and forwards nothing else.
        Err(_) => malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp<'a>(status: &'a str, content_type: &'a str, body: &'a [u8]) -> Response<'a> {
        Response {
            status: Some(status),
            content_type: Some(content_type),
            cache_control: None,
            body: Some(body),
            synthesized: false,
        }
    }

    const JWT: &str = "eyJhbGciOiJFUzI1NiJ9.eyJhdWQiOiJvcmRlcnMiLCJzY29wZSI6InJlYWQiLCJleHAiOjE5MDAwMDAwMDB9.c2ln";

    #[test]
    fn the_request() {
        let body = request_body(
            SubjectToken::AccessToken,
            "tok+/=",
            &rule_form(Some("orders-api"), Some("orders:read"), None),
        );
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange\
             &subject_token=tok%2B%2F%3D\
             &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token\
             &requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt\
             &audience=orders-api&scope=orders%3Aread"
        );
    }

    #[test]
    fn answers() {
        let ok = format!(
            r#"{{"access_token": "{JWT}", "issued_token_type": "{TYPE_JWT}",
            "token_type": "N_A", "expires_in": 60}}"#
        );
        match classify(&resp(
            "200",
            "application/json; charset=utf-8",
            ok.as_bytes(),
        )) {
            Outcome::Issued {
                jwt,
                claims,
                expires_in_s,
            } => {
                assert_eq!(jwt, JWT);
                assert_eq!(claims.scope, "read");
                assert_eq!(expires_in_s, Some(60));
            }
            other => panic!("{other:?}"),
        }
        let error = |code: &str| format!(r#"{{"error": "{code}"}}"#);
        for (status, body, want) in [
            (
                "400",
                error("invalid_grant"),
                Outcome::Refused(Refusal::InvalidGrant),
            ),
            (
                "400",
                error("invalid_target"),
                Outcome::Refused(Refusal::Forbidden),
            ),
            (
                "400",
                error("invalid_scope"),
                Outcome::Refused(Refusal::Forbidden),
            ),
            (
                "400",
                error("unauthorized_client"),
                Outcome::Refused(Refusal::Forbidden),
            ),
            (
                "400",
                error("invalid_request"),
                Outcome::Failed(CallFailure::Status(400)),
            ),
            (
                "401",
                error("invalid_client"),
                Outcome::Failed(CallFailure::Status(401)),
            ),
            (
                "400",
                "not json".into(),
                Outcome::Failed(CallFailure::Status(400)),
            ),
            (
                "503",
                "{}".into(),
                Outcome::Failed(CallFailure::Unavailable),
            ),
            ("504", "{}".into(), Outcome::Failed(CallFailure::Timeout)),
            (
                "500",
                "{}".into(),
                Outcome::Failed(CallFailure::Status(500)),
            ),
        ] {
            assert_eq!(
                classify(&resp(status, "application/json", body.as_bytes())),
                want,
                "{status} {body}"
            );
        }
        let malformed = Outcome::Failed(CallFailure::Malformed);
        for body in [
            "not json".to_owned(),
            "[]".to_owned(),
            format!(r#"{{"issued_token_type": "{TYPE_JWT}"}}"#),
            format!(r#"{{"access_token": "opaque-token", "issued_token_type": "{TYPE_JWT}"}}"#),
            format!(r#"{{"access_token": "{JWT}"}}"#),
            format!(r#"{{"access_token": "{JWT}", "issued_token_type": "urn:x"}}"#),
            format!(
                r#"{{"access_token": "{JWT}", "issued_token_type": "{TYPE_JWT}", "expires_in": "60"}}"#
            ),
            format!(r#"{{"access_token": 7, "issued_token_type": "{TYPE_JWT}"}}"#),
        ] {
            assert_eq!(
                classify(&resp("200", "application/json", body.as_bytes())),
                malformed,
                "{body}"
            );
        }
        let ok = format!(r#"{{"access_token": "{JWT}", "issued_token_type": "{TYPE_JWT}"}}"#);
        assert_eq!(
            classify(&resp("200", "text/plain", ok.as_bytes())),
            malformed
        );
        let too_big = Response {
            body: None,
            ..resp("200", "application/json", b"")
        };
        assert_eq!(classify(&too_big), malformed);
        let reset = Response {
            status: None,
            ..resp("200", "application/json", b"")
        };
        assert_eq!(classify(&reset), Outcome::Failed(CallFailure::Reset));
    }
}
