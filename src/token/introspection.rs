//! The introspection call to the token service (RFC 7662), and the classification of its
//! answer under the configured contract ([`Contract`]).
//!
//! Request: `POST phantom.path`, `Content-Type: application/x-www-form-urlencoded`, an `Accept`
//! that names the contract (`application/jwt` for Curity's, `application/json` for RFC 7662,
//! `application/token-introspection+jwt` for RFC 9701), HTTP Basic client authentication
//! (RFC 6749 §2.3.1), body `token=<token>`. Nothing from the client's request is sent.
//!
//! Answers (`"jwt"`): `200 application/jwt` with a JWT is an active token; `204`, or
//! `200 application/json` `{"active":false}`, an inactive one. (`"json"`: the RFC 7662 object;
//! `"rfc9701"`: the signed answer, shape-checked here and verified before it is believed.)
//! Anything else is a failure of the token service, never a reason to forward the request. Envoy reports failed calls in three
//! shapes, all handled here: a synthesized `503` (connect failure), a synthesized `504`
//! (timeout), and a response without any header (reset).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::token::claims::{self, Binding};
use crate::token::jwt::{self, Claims, MAX_JWT_LEN};

/// The introspection response contract, `phantom.response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contract {
    /// `"jwt"`: `Accept: application/jwt`, the answer is the JWT to forward (Curity).
    Jwt,
    /// `"json"`: RFC 7662 JSON claims; the JWT is the claim `jwt_claim` when present, else
    /// minted by the gateway.
    Json { jwt_claim: Option<String> },
    /// `"rfc9701"`: a signed JWT response, verified with the `verify` keys; the JWT forwarded
    /// is minted.
    Rfc9701,
}

impl Contract {
    pub fn name(&self) -> &'static str {
        match self {
            Contract::Jwt => "jwt",
            Contract::Json { .. } => "json",
            Contract::Rfc9701 => "rfc9701",
        }
    }

    /// The `Accept` header of the introspection request.
    pub fn accept(&self) -> &'static str {
        match self {
            Contract::Jwt => "application/jwt",
            Contract::Json { .. } => "application/json",
            Contract::Rfc9701 => "application/token-introspection+jwt",
        }
    }
}

/// Largest response body read from the token service.
pub const MAX_RESPONSE_BYTES: usize = MAX_JWT_LEN;

/// `Authorization: Basic base64(urlenc(id) ":" urlenc(secret))` (RFC 6749 §2.3.1).
pub fn basic_authorization(client_id: &str, client_secret: &str) -> String {
    let pair = format!(
        "{}:{}",
        form_urlencode(client_id),
        form_urlencode(client_secret)
    );
    format!("Basic {}", STANDARD.encode(pair))
}

/// `application/x-www-form-urlencoded` serialisation of one value (WHATWG URL §5.2).
pub fn form_urlencode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Body of the introspection request.
pub fn request_body(token: &str) -> Vec<u8> {
    format!("token={}", form_urlencode(token)).into_bytes()
}

/// The parts of the token service's answer that matter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Response<'a> {
    /// `:status`, or `None` when the response has no headers at all (a reset).
    pub status: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub cache_control: Option<&'a str>,
    /// The body; `None` when it was larger than [`MAX_RESPONSE_BYTES`] and not read.
    pub body: Option<&'a [u8]>,
    /// True when Envoy made the response up (no upstream answered), see [`is_synthesized`].
    pub synthesized: bool,
}

/// Why the token service could not tell whether the token is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFailure {
    /// The call was reset: a response without headers.
    Reset,
    /// Envoy could not connect (synthesized 503).
    Unreachable,
    /// The call exceeded `timeout_ms` (504).
    Timeout,
    /// The token service itself answered 503.
    Unavailable,
    /// Any other status: 3xx, 401, 403, 404, 5xx ...
    Status(u16),
    /// A 200 whose body is not what the contract says.
    Malformed,
    /// A 200 with a JWT whose header has no usable `alg` (`none`, missing): unsigned. With
    /// `verify` configured it is a token that fails verification (401), else a bad answer.
    Unsigned,
    /// A signed introspection response (RFC 9701) that fails verification: the token service
    /// (or something in between) is at fault, not the client.
    Unverified,
}

/// What an introspection answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Active {
        jwt: String,
        claims: Claims,
        /// `Cache-Control: max-age`, if the response carried one.
        max_age_s: Option<u64>,
        /// `Cache-Control: no-store` or `no-cache`: forward, but do not cache.
        no_store: bool,
    },
    /// `"json"`: an active token's introspected claims, for the gateway to mint a JWT from.
    /// (`Cache-Control: no-store` is not read for these contracts, see [`json_max_age`].)
    Claims {
        claims: Map<String, Value>,
        max_age_s: Option<u64>,
    },
    /// `"rfc9701"`: the signed response, to be verified before anything in it is believed.
    Signed {
        jwt: String,
        max_age_s: Option<u64>,
    },
    Inactive,
    Failed(CallFailure),
}

/// Whether a response was synthesized by Envoy rather than sent by the token service. Envoy's
/// router adds `x-envoy-upstream-service-time` to every response that came from an upstream;
/// its own local replies (connect failure, timeout) do not carry it.
pub fn is_synthesized(upstream_service_time: Option<&str>) -> bool {
    upstream_service_time.is_none()
}

/// Classifies the token service's answer under the configured contract.
pub fn classify(resp: &Response<'_>, contract: &Contract) -> Outcome {
    let Some(status) = resp.status else {
        return Outcome::Failed(CallFailure::Reset);
    };
    let Ok(status) = status.parse::<u16>() else {
        return Outcome::Failed(CallFailure::Malformed);
    };
    match status {
        200 => match contract {
            Contract::Jwt => classify_ok(resp),
            Contract::Json { jwt_claim } => classify_json(resp, jwt_claim.as_deref()),
            Contract::Rfc9701 => classify_signed(resp),
        },
        204 => Outcome::Inactive,
        503 if resp.synthesized => Outcome::Failed(CallFailure::Unreachable),
        503 => Outcome::Failed(CallFailure::Unavailable),
        504 => Outcome::Failed(CallFailure::Timeout),
        other => Outcome::Failed(CallFailure::Status(other)),
    }
}

fn classify_ok(resp: &Response<'_>) -> Outcome {
    let malformed = Outcome::Failed(CallFailure::Malformed);
    let Some(body) = resp.body else {
        return malformed;
    };
    match media_type(resp.content_type).as_deref() {
        Some("application/jwt") => {
            let Ok(text) = std::str::from_utf8(body) else {
                return malformed;
            };
            match jwt::parse(text) {
                Ok(claims) => {
                    let (max_age_s, no_store) = cache_control(resp.cache_control);
                    Outcome::Active {
                        jwt: text.to_owned(),
                        claims,
                        max_age_s,
                        no_store,
                    }
                }
                Err(jwt::JwtError::Alg) => Outcome::Failed(CallFailure::Unsigned),
                Err(_) => malformed,
            }
        }
        Some("application/json") => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) if map.get("active") == Some(&Value::Bool(false)) => {
                Outcome::Inactive
            }
            // `active: true` without a JWT: this contract has nothing to forward.
            _ => malformed,
        },
        _ => malformed,
    }
}

/// RFC 7662 §2.2: a JSON object whose `active` is a boolean.
fn classify_json(resp: &Response<'_>, jwt_claim: Option<&str>) -> Outcome {
    let malformed = Outcome::Failed(CallFailure::Malformed);
    let Some(body) = resp.body else {
        return malformed;
    };
    if media_type(resp.content_type).as_deref() != Some("application/json") {
        return malformed;
    }
    let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(body) else {
        return malformed;
    };
    match claims.get("active") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Outcome::Inactive,
        _ => return malformed,
    }
    let max_age_s = json_max_age(resp.cache_control);
    // A JWT the token service put in a claim is forwarded as it is (and verified with
    // `verify`, like any JWT from the token service). A claim that is there but is not a JWT
    // is a broken answer, never a reason to mint.
    if let Some(value) = jwt_claim.and_then(|name| claims.get(name)) {
        let Value::String(text) = value else {
            return malformed;
        };
        // The JWT must carry the binding the answer states: the gateway enforces what the
        // forwarded JWT says.
        let stated = Binding::of(&claims);
        if stated.is_bound() && claims::payload_of(text).map(|p| Binding::of(&p)) != Some(stated) {
            return malformed;
        }
        return match jwt::parse(text) {
            Ok(parsed) => Outcome::Active {
                jwt: text.clone(),
                claims: parsed,
                max_age_s,
                no_store: false,
            },
            Err(jwt::JwtError::Alg) => Outcome::Failed(CallFailure::Unsigned),
            Err(_) => malformed,
        };
    }
    Outcome::Claims { claims, max_age_s }
}

/// RFC 9701 §5: `application/token-introspection+jwt`, one compact JWS. It is only shape
/// checked here; it says nothing until its signature is verified.
fn classify_signed(resp: &Response<'_>) -> Outcome {
    let malformed = Outcome::Failed(CallFailure::Malformed);
    let Some(body) = resp.body else {
        return malformed;
    };
    if media_type(resp.content_type).as_deref() != Some("application/token-introspection+jwt") {
        return malformed;
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return malformed;
    };
    if jwt::segments(text).is_err() {
        return malformed;
    }
    Outcome::Signed {
        jwt: text.to_owned(),
        max_age_s: json_max_age(resp.cache_control),
    }
}

/// The cache bound of an RFC 7662 or RFC 9701 answer. Such servers (oidc-provider, and the
/// token endpoint practice of RFC 6749 §5.1) send `Cache-Control: no-store` on every answer, as
/// an instruction to HTTP caches: honoured by the gateway it would forbid caching altogether,
/// so only `max-age` is read. `cache.max_ttl_s: 0` turns caching off.
fn json_max_age(cache_control_value: Option<&str>) -> Option<u64> {
    cache_control(cache_control_value).0
}

/// `type/subtype` of a `Content-Type`, lower-cased, parameters dropped.
pub(crate) fn media_type(content_type: Option<&str>) -> Option<String> {
    let ct = content_type?;
    let main = ct.split(';').next().unwrap_or("").trim();
    Some(main.to_ascii_lowercase())
}

/// `(max-age, no-store)` from a `Cache-Control` header (RFC 9111 §5.2).
fn cache_control(value: Option<&str>) -> (Option<u64>, bool) {
    let Some(value) = value else {
        return (None, false);
    };
    let mut max_age = None;
    let mut no_store = false;
    for directive in value.split(',') {
        let directive = directive.trim();
        let (name, arg) = match directive.split_once('=') {
            Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
            None => (directive, None),
        };
        if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            no_store = true;
        } else if name.eq_ignore_ascii_case("max-age") {
            // An unparseable max-age is treated as 0 (RFC 9111 §4.2.1: invalid means stale).
            let secs = arg.and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
            max_age = Some(max_age.map_or(secs, |m: u64| m.min(secs)));
        }
    }
    (max_age, no_store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, PhantomConfig};

    /// The request headers for a configuration's `phantom` section.
    fn request_headers(p: &PhantomConfig) -> [(&str, &str); 6] {
        p.request_headers()
    }
    use crate::token::jwt::tests::make;

    /// The default contract (`"jwt"`).
    fn classify(resp: &Response<'_>) -> Outcome {
        super::classify(resp, &Contract::Jwt)
    }

    fn ok(content_type: &str, body: &[u8]) -> Outcome {
        classify(&Response {
            status: Some("200"),
            content_type: Some(content_type),
            body: Some(body),
            ..Response::default()
        })
    }

    #[test]
    fn form_urlencodes_token_characters() {
        assert_eq!(form_urlencode("a+b/c=="), "a%2Bb%2Fc%3D%3D");
        assert_eq!(form_urlencode("A-z_0.9*~ é"), "A-z_0.9*%7E+%C3%A9");
        assert_eq!(request_body("x+/="), b"token=x%2B%2F%3D");
    }

    #[test]
    fn basic_auth_follows_rfc6749() {
        // base64("gateway:secret")
        assert_eq!(
            basic_authorization("gateway", "secret"),
            "Basic Z2F0ZXdheTpzZWNyZXQ="
        );
        // base64("my+id:p%40ss%3Aword") : the parts are form-urlencoded first.
        assert_eq!(
            basic_authorization("my id", "p@ss:word"),
            format!("Basic {}", STANDARD.encode("my+id:p%40ss%3Aword"))
        );
    }

    #[test]
    fn request_is_curitys_contract() {
        let c = Config::from_slice(br#"{"phantom": {"cluster": "ts", "authority": "login.example.com", "path": "/introspect", "client_id": "gateway", "client_secret": "secret"}}"#).unwrap();
        let h = request_headers(c.phantom.as_ref().unwrap());
        assert_eq!(
            h,
            [
                (":method", "POST"),
                (":path", "/introspect"),
                (":authority", "login.example.com"),
                ("content-type", "application/x-www-form-urlencoded"),
                ("accept", "application/jwt"),
                ("authorization", "Basic Z2F0ZXdheTpzZWNyZXQ="),
            ]
        );
    }

    #[test]
    fn accept_follows_the_contract() {
        for (contract, accept) in [
            (Contract::Jwt, "application/jwt"),
            (Contract::Json { jwt_claim: None }, "application/json"),
            (Contract::Rfc9701, "application/token-introspection+jwt"),
        ] {
            let mut c = Config::from_slice(br#"{"phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s"}}"#).unwrap();
            let p = c.phantom.as_mut().unwrap();
            p.contract = contract;
            assert_eq!(request_headers(p)[4], ("accept", accept));
        }
    }

    #[test]
    fn json_and_signed_contracts_classify_by_media_type_and_shape() {
        let json = Contract::Json { jwt_claim: None };
        let ok_as = |contract: &Contract, ct: &str, body: &str| {
            super::classify(
                &Response {
                    status: Some("200"),
                    content_type: Some(ct),
                    body: Some(body.as_bytes()),
                    ..Response::default()
                },
                contract,
            )
        };
        assert!(matches!(
            ok_as(
                &json,
                "application/json; charset=utf-8",
                r#"{"active":true,"sub":"a"}"#
            ),
            Outcome::Claims { .. }
        ));
        assert_eq!(
            ok_as(&json, "application/json", r#"{"active":false}"#),
            Outcome::Inactive
        );
        // `no-store` is what these servers send on every answer: only `max-age` bounds caching.
        let with_cc = super::classify(
            &Response {
                status: Some("200"),
                content_type: Some("application/json"),
                cache_control: Some("no-store, max-age=30"),
                body: Some(br#"{"active":true}"#),
                synthesized: false,
            },
            &json,
        );
        assert!(matches!(
            with_cc,
            Outcome::Claims {
                max_age_s: Some(30),
                ..
            }
        ));
        let m = Outcome::Failed(CallFailure::Malformed);
        for (ct, body) in [
            ("application/jwt", r#"{"active":true}"#),
            ("application/json", r#"{"active":1}"#),
            ("application/json", r#"{"active":true"#),
            ("application/json", "\u{0}"),
        ] {
            assert_eq!(ok_as(&json, ct, body), m, "{ct} {body}");
        }
        let jwt = make("{}");
        let signed = "application/token-introspection+jwt";
        assert!(matches!(
            ok_as(&Contract::Rfc9701, signed, &jwt),
            Outcome::Signed { .. }
        ));
        for (ct, body) in [
            (signed, format!("{jwt}.x")),
            (signed, format!("{jwt}\r\n")),
            (signed, String::new()),
            ("application/json", r#"{"active":true}"#.to_owned()),
            ("application/jwt", jwt.clone()),
        ] {
            assert_eq!(ok_as(&Contract::Rfc9701, ct, &body), m, "{ct} {body}");
        }
    }

    #[test]
    fn active_jwt_with_cache_control() {
        let jwt = make(r#"{"exp":2000000000,"scope":"read"}"#);
        let out = classify(&Response {
            status: Some("200"),
            content_type: Some("Application/JWT; charset=utf-8"),
            cache_control: Some("private, max-age=60"),
            body: Some(jwt.as_bytes()),
            synthesized: false,
        });
        assert_eq!(
            out,
            Outcome::Active {
                jwt,
                claims: Claims {
                    exp: Some(2_000_000_000),
                    scope: "read".into()
                },
                max_age_s: Some(60),
                no_store: false
            }
        );
    }

    #[test]
    fn cache_control_directives() {
        assert_eq!(cache_control(None), (None, false));
        assert_eq!(cache_control(Some("max-age=10")), (Some(10), false));
        assert_eq!(cache_control(Some("MAX-AGE = \"7\"")), (Some(7), false));
        assert_eq!(cache_control(Some("max-age=abc")), (Some(0), false));
        assert_eq!(
            cache_control(Some("max-age=9, max-age=3")),
            (Some(3), false)
        );
        assert_eq!(cache_control(Some("no-store")), (None, true));
        assert_eq!(cache_control(Some("public, no-cache")), (None, true));
    }

    #[test]
    fn inactive_answers() {
        let r204 = classify(&Response {
            status: Some("204"),
            ..Response::default()
        });
        assert_eq!(r204, Outcome::Inactive);
        assert_eq!(
            ok("application/json", br#"{"active":false}"#),
            Outcome::Inactive
        );
        assert_eq!(
            ok(
                "application/json; charset=UTF-8",
                br#"{"active": false, "x": 1}"#
            ),
            Outcome::Inactive
        );
    }

    #[test]
    fn malformed_200_answers_are_failures() {
        let jwt = make("{}");
        let m = Outcome::Failed(CallFailure::Malformed);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("application/jwt", vec![]),
            (
                "application/jwt",
                format!("{jwt} trailing garbage").into_bytes(),
            ),
            ("application/jwt", format!("{jwt}\r\n").into_bytes()),
            ("application/jwt", format!("{jwt}.x").into_bytes()),
            ("application/jwt", vec![0xff, 0xfe, b'.', b'a', b'.', b'b']),
            ("application/jwt", br#"{"active":true}"#.to_vec()),
            ("text/plain", jwt.clone().into_bytes()),
            ("application/json", jwt.clone().into_bytes()),
            ("application/json", br#"{"active":true,"sub":"x"}"#.to_vec()),
            ("application/json", br#"{"active":"false"}"#.to_vec()),
            ("application/json", b"[]".to_vec()),
        ];
        for (ct, body) in cases {
            assert_eq!(
                ok(ct, &body),
                m,
                "{ct} {:?}",
                String::from_utf8_lossy(&body)
            );
        }
        let no_ct = classify(&Response {
            status: Some("200"),
            body: Some(jwt.as_bytes()),
            ..Response::default()
        });
        assert_eq!(no_ct, m);
        let too_big = classify(&Response {
            status: Some("200"),
            content_type: Some("application/jwt"),
            body: None,
            ..Response::default()
        });
        assert_eq!(too_big, m);
    }

    #[test]
    fn failures_by_status_and_shape() {
        let f = |status: Option<&str>, synthesized: bool| {
            classify(&Response {
                status,
                synthesized,
                ..Response::default()
            })
        };
        assert_eq!(f(None, true), Outcome::Failed(CallFailure::Reset));
        assert_eq!(
            f(Some("503"), true),
            Outcome::Failed(CallFailure::Unreachable)
        );
        assert_eq!(
            f(Some("503"), false),
            Outcome::Failed(CallFailure::Unavailable)
        );
        assert_eq!(f(Some("504"), true), Outcome::Failed(CallFailure::Timeout));
        assert_eq!(
            f(Some("abc"), false),
            Outcome::Failed(CallFailure::Malformed)
        );
        for s in [301u16, 302, 400, 401, 403, 404, 500, 502] {
            assert_eq!(
                f(Some(&s.to_string()), false),
                Outcome::Failed(CallFailure::Status(s)),
                "{s}"
            );
        }
    }

    #[test]
    fn synthesized_means_no_upstream_service_time() {
        assert!(is_synthesized(None));
        assert!(!is_synthesized(Some("3")));
    }
}
