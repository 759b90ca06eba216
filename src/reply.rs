//! Every denial becomes exactly one local reply, here (RFC 6750 §3 error codes and
//! `WWW-Authenticate` challenges; 502/503 when the token service fails).
//!
//! | denial | status | `WWW-Authenticate` |
//! |---|---|---|
//! | no credentials, or another scheme | 401 | `Bearer realm="api"` |
//! | malformed bearer credentials | 400 | `Bearer realm="api", error="invalid_request"` |
//! | inactive, unknown or expired token | 401 | `Bearer realm="api", error="invalid_token"` |
//! | a required scope missing | 403 | `Bearer realm="api", error="insufficient_scope", scope="..."` |
//! | token service unreachable, timeout, reset, unexpected status, malformed answer | 502 | none |
//! | token service answered 503 | 503 | none |

use crate::introspection::Failure;
use crate::metrics::Counter;

/// Why a request is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    NoCredentials,
    MalformedCredentials,
    InvalidToken,
    InsufficientScope,
    TokenService(Failure),
}

impl Denial {
    /// The counter bumped for each reply of this kind.
    pub fn counter(self) -> Counter {
        match self {
            Denial::NoCredentials => Counter::DeniedNoCredentials,
            Denial::MalformedCredentials => Counter::DeniedMalformed,
            Denial::InvalidToken => Counter::DeniedInvalidToken,
            Denial::InsufficientScope => Counter::DeniedInsufficientScope,
            Denial::TokenService(Failure::Unavailable) => Counter::TokenServiceUnavailable,
            Denial::TokenService(_) => Counter::TokenServiceError,
        }
    }
}

/// A local reply, ready for `send_http_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// The one mapping from a denial to what the client sees. `realm` and scopes were validated
/// at configuration time to be safe inside a quoted-string.
pub fn local_reply(
    denial: Denial,
    realm: &str,
    required_scopes: &[String],
    head: bool,
) -> LocalReply {
    let (status, error, code, message) = match denial {
        Denial::NoCredentials => (401, None, "unauthorized", "Missing access token"),
        Denial::MalformedCredentials => (
            400,
            Some("invalid_request"),
            "invalid_request",
            "Malformed access token",
        ),
        Denial::InvalidToken => (
            401,
            Some("invalid_token"),
            "invalid_token",
            "Invalid or expired access token",
        ),
        Denial::InsufficientScope => (
            403,
            Some("insufficient_scope"),
            "insufficient_scope",
            "The access token lacks a required scope",
        ),
        Denial::TokenService(Failure::Unavailable) => (
            503,
            None,
            "token_service_unavailable",
            "The token service is unavailable",
        ),
        Denial::TokenService(_) => (
            502,
            None,
            "token_service_error",
            "The token service could not be reached or gave an invalid answer",
        ),
    };
    let mut headers = Vec::with_capacity(3);
    if status == 401 || status == 400 || status == 403 {
        let mut challenge = format!("Bearer realm=\"{realm}\"");
        if let Some(error) = error {
            challenge.push_str(&format!(", error=\"{error}\""));
        }
        if denial == Denial::InsufficientScope {
            challenge.push_str(&format!(", scope=\"{}\"", required_scopes.join(" ")));
        }
        headers.push(("www-authenticate", challenge));
    }
    headers.push(("cache-control", "no-store".to_owned()));
    let body = if head {
        Vec::new()
    } else {
        headers.push(("content-type", "application/json".to_owned()));
        serde_json::json!({ "code": code, "message": message })
            .to_string()
            .into_bytes()
    };
    LocalReply {
        status,
        headers,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn www(r: &LocalReply) -> Option<&str> {
        r.headers
            .iter()
            .find(|(k, _)| *k == "www-authenticate")
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn reply_table() {
        let scopes = vec!["read".to_owned(), "write".to_owned()];
        let cases: &[(Denial, u32, Option<&str>, &str)] = &[
            (
                Denial::NoCredentials,
                401,
                Some(r#"Bearer realm="api""#),
                "unauthorized",
            ),
            (
                Denial::MalformedCredentials,
                400,
                Some(r#"Bearer realm="api", error="invalid_request""#),
                "invalid_request",
            ),
            (
                Denial::InvalidToken,
                401,
                Some(r#"Bearer realm="api", error="invalid_token""#),
                "invalid_token",
            ),
            (
                Denial::InsufficientScope,
                403,
                Some(r#"Bearer realm="api", error="insufficient_scope", scope="read write""#),
                "insufficient_scope",
            ),
            (
                Denial::TokenService(Failure::Reset),
                502,
                None,
                "token_service_error",
            ),
            (
                Denial::TokenService(Failure::Unreachable),
                502,
                None,
                "token_service_error",
            ),
            (
                Denial::TokenService(Failure::Timeout),
                502,
                None,
                "token_service_error",
            ),
            (
                Denial::TokenService(Failure::Status(401)),
                502,
                None,
                "token_service_error",
            ),
            (
                Denial::TokenService(Failure::Status(500)),
                502,
                None,
                "token_service_error",
            ),
            (
                Denial::TokenService(Failure::Malformed),
                502,
                None,
                "token_service_error",
            ),
            (
                Denial::TokenService(Failure::Unavailable),
                503,
                None,
                "token_service_unavailable",
            ),
        ];
        for (denial, status, challenge, code) in cases {
            let r = local_reply(*denial, "api", &scopes, false);
            assert_eq!(r.status, *status, "{denial:?}");
            assert_eq!(www(&r), *challenge, "{denial:?}");
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(body["code"], *code, "{denial:?}");
            assert!(body["message"].is_string(), "{denial:?}");
            assert!(
                r.headers
                    .contains(&("content-type", "application/json".into())),
                "{denial:?}"
            );
        }
    }

    #[test]
    fn head_replies_have_no_body() {
        let r = local_reply(Denial::InvalidToken, "api", &[], true);
        assert!(r.body.is_empty());
        assert!(!r.headers.iter().any(|(k, _)| *k == "content-type"));
        assert_eq!(
            www(&r),
            Some(r#"Bearer realm="api", error="invalid_token""#)
        );
    }

    #[test]
    fn realm_is_configurable() {
        let r = local_reply(Denial::NoCredentials, "orders", &[], false);
        assert_eq!(www(&r), Some(r#"Bearer realm="orders""#));
    }

    #[test]
    fn each_denial_has_its_counter() {
        assert_eq!(
            Denial::TokenService(Failure::Unavailable).counter(),
            Counter::TokenServiceUnavailable
        );
        assert_eq!(
            Denial::TokenService(Failure::Timeout).counter(),
            Counter::TokenServiceError
        );
        assert_eq!(
            Denial::InsufficientScope.counter(),
            Counter::DeniedInsufficientScope
        );
    }
}
