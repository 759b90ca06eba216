//! Every denial becomes exactly one local reply, here (RFC 6750 §3 error codes and
//! `WWW-Authenticate` challenges; 502/503 when the token service fails).
//!
//! | denial | status | `WWW-Authenticate` |
//! |---|---|---|
//! | no credentials, or another scheme | 401 | `Bearer realm="api"` |
//! | malformed bearer credentials | 400 | `Bearer realm="api", error="invalid_request"` |
//! | inactive, unknown or expired token | 401 | `Bearer realm="api", error="invalid_token"` |
//! | a revoked token (its own mark, its subject's, its session's) | 401 | `Bearer realm="api", error="invalid_token"` |
//! | a JWT with less life left than `min_remaining_lifetime_s`, or issued for longer than `max_lifetime_s` | 401 | `Bearer realm="api", error="invalid_token", error_description="..."` |
//! | `embedded_token`: no such claim | 403 | `Bearer realm="api", error="insufficient_scope"` |
//! | `cookies`: an untrusted or missing `Origin`, a CSRF header that does not match | 401 | none |
//! | `cookies`: an access token cookie that does not decrypt | 401 | `Bearer realm="api", error="invalid_token"` |
//! | `embedded_token`: not a JWT, fails verification, outlives its token | 401 | `Bearer realm="api", error="invalid_token"` |
//! | a required scope missing | 403 | `Bearer realm="api", error="insufficient_scope", scope="..."` |
//! | token service unreachable, timeout, reset, unexpected status, malformed answer | 502 | none |
//! | token service answered 503 | 503 | none |
//! | `verify` configured but no key set loaded yet | 502 | none |
//! | signed introspection answer (RFC 9701) that fails verification | 502 | none |
//! | `split.remote` unreachable or failing, no phantom fallback (`store_unavailable`) | 502 | none |
//!
//! | CORS preflight with a body or a method-override header | 400 | none |
//! | the proxy refused to set `Authorization` (the gateway's own failure) | 500 | none |
//! | with policies: a path that is not canonical, a method not in upper case, an ambiguous host | 400 | none |
//! | the route's metadata names a policy the configuration lacks | 500 | none |
//! | a DPoP proof that fails a check, or a replay | 401 | `DPoP error="invalid_dpop_proof", algs="..."` |
//! | `dpop.nonce` and no current nonce | 401 | `DPoP error="use_dpop_nonce", algs="..."` and `DPoP-Nonce` |
//! | a bound token without its proof; `proof: "required"` and an unbound token | 401 | `DPoP error="invalid_token", algs="..."` |
//! | the DPoP replay store full | 503 | none |
//! | with `fleet`: Redis cannot say whether a DPoP proof was used at another gateway | 503 | none |
//! | the proof's key holds its share of the replay store (`dpop.max_proofs_per_key`) | 429 (`Retry-After`) | none |
//! | token exchange refused for this API (`invalid_target`, `invalid_scope`, ...) | 403 | `Bearer realm="api", error="insufficient_scope"` |
//! | token exchange failed (unreachable, 5xx, unusable answer) | 502 (503) | none |
//!
//! (Two `Authorization` headers and an `access_token` parameter in the URI are malformed
//! credentials: 400.)

use crate::metrics::Counter;
use crate::token::introspection::CallFailure;
use crate::token::jws::VerifyFailure;
use crate::token::split::PublishError;

/// Why a request is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    NoCredentials,
    MalformedCredentials,
    InvalidToken,
    /// Revoked at the gateway (`revocation`): the token, its subject or its session.
    Revoked,
    /// The JWT would reach the API with less life left than the policy's
    /// `min_remaining_lifetime_s`: the client should refresh it first.
    ExpiresTooSoon,
    /// The JWT was issued for longer than the policy's `max_lifetime_s` (or has no `iat`).
    LifetimeTooLong,
    /// `embedded_token`: the resolved JWT has no such claim.
    EmbeddedMissing,
    /// `embedded_token`: the claim is not a JWT, fails verification, or outlives its token.
    EmbeddedInvalid,
    /// `cookies`: a cookie request from an origin that is not trusted (or without one where
    /// one is needed).
    OriginNotTrusted,
    /// `cookies`: a state-changing cookie request without the CSRF header matching its cookie.
    CsrfMismatch,
    /// `cookies`: the access token cookie does not decrypt under any key.
    CookieInvalid,
    InsufficientScope,
    TokenService(CallFailure),
    /// `verify` is configured but no key set was ever loaded.
    KeysUnavailable,
    /// `split.remote` could not be read (and no phantom fallback is configured).
    StoreUnavailable,
    /// A CORS preflight with a body or a method-override header.
    InvalidPreflight,
    /// A path or host a policy would have to guess at (`//`, `..`, `%2F`, an invalid host...).
    AmbiguousRequest,
    /// The route's metadata names a policy the configuration does not have.
    UnknownPolicy,
    /// A DPoP proof that fails a check of RFC 9449 §4.3, or was seen before.
    InvalidDpopProof,
    /// With `dpop.nonce`: the proof has no current server nonce (the reply gives one).
    UseDpopNonce,
    /// A bound token without its proof: the wrong scheme, no proof, another key or
    /// certificate, or a proof with a token not bound to its key.
    BoundTokenUnproven,
    /// `proof: "required"` and a token bound to nothing.
    ProofRequired,
    /// The DPoP replay store has no room for this proof: refused, never accepted unchecked.
    ReplayStoreFull,
    /// With `fleet`: Redis cannot say whether this DPoP proof was used at another gateway
    /// (`dpop.fleet_unavailable` "refuse").
    FleetUnavailable,
    /// The proof's key already holds its share of the replay store
    /// (`dpop.max_proofs_per_key`): that key's requests wait, every other key's go on.
    DpopKeyQuota {
        retry_after_s: u32,
    },
    /// Token exchange: the token service will not make a token for this API from this token
    /// (`invalid_target`, `invalid_scope`, `unauthorized_client`).
    ExchangeForbidden,
    /// Token exchange failed (the token service unreachable, failing, or its answer unusable).
    ExchangeFailed(CallFailure),
    /// The proxy refused an edit the filter must make (writing `Authorization`): the
    /// gateway's own failure, neither the client's nor the token service's.
    Internal,
}

/// The message (and `error_description`) of [`Denial::ExpiresTooSoon`].
const EXPIRES_TOO_SOON: &str = "The access token expires too soon; refresh it first";
/// The message (and `error_description`) of [`Denial::LifetimeTooLong`].
const LIFETIME_TOO_LONG: &str = "The access token was issued for longer than this API accepts";

/// How a denial is answered: the challenge it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Challenge {
    None,
    /// `Bearer realm=...` (with the row's `error`), and `DPoP algs=...` beside it with `dpop`:
    /// no credentials came, both schemes are offered.
    Both,
    /// `Bearer realm=..., error=...` (with the required scopes for `insufficient_scope`).
    Bearer,
    /// [`Challenge::Bearer`] with an `error_description` (the row's message): what the client
    /// should do about it.
    Described,
    /// `DPoP error=..., algs=...` with `dpop` (and the nonce for `use_dpop_nonce`), else a
    /// `Bearer` `invalid_token` one.
    Dpop,
    /// `Retry-After: 1` (a full store: retry soon).
    RetrySoon,
    /// `Retry-After` the seconds the denial says.
    RetryAfter,
}

/// One row of the table: everything a denial becomes.
struct Row {
    status: u32,
    /// RFC 6750 / RFC 9449 `error` of the challenge.
    error: Option<&'static str>,
    /// The body's `code`.
    code: &'static str,
    message: &'static str,
    counter: Counter,
    challenge: Challenge,
}

impl Denial {
    /// The one table: each denial's status, challenge, body and counter.
    #[rustfmt::skip]
    fn row(self) -> Row {
        use Challenge as C;
        let row = |status, error, code, message, counter, challenge| Row {
            status,
            error,
            code,
            message,
            counter,
            challenge,
        };
        match self {
            Denial::NoCredentials => row(401, None, "unauthorized", "Missing access token", Counter::DeniedNoCredentials, C::Both),
            Denial::MalformedCredentials => row(400, Some("invalid_request"), "invalid_request", "Malformed access token", Counter::DeniedMalformed, C::Bearer),
            Denial::InvalidToken => row(401, Some("invalid_token"), "invalid_token", "Invalid or expired access token", Counter::DeniedInvalidToken, C::Bearer),
            Denial::Revoked => row(401, Some("invalid_token"), "invalid_token", "Invalid or expired access token", Counter::DeniedRevoked, C::Bearer),
            Denial::ExpiresTooSoon => row(401, Some("invalid_token"), "invalid_token", EXPIRES_TOO_SOON, Counter::DeniedExpiresTooSoon, C::Described),
            Denial::LifetimeTooLong => row(401, Some("invalid_token"), "invalid_token", LIFETIME_TOO_LONG, Counter::DeniedLifetimeTooLong, C::Described),
            Denial::EmbeddedMissing => row(403, Some("insufficient_scope"), "insufficient_scope", "The access token carries no token for this API", Counter::EmbeddedRefused, C::Bearer),
            Denial::OriginNotTrusted => row(401, None, "origin_not_trusted", "The request's origin is not trusted", Counter::DeniedOrigin, C::None),
            Denial::CsrfMismatch => row(401, None, "csrf_mismatch", "The CSRF header is missing or does not match", Counter::DeniedCsrf, C::None),
            Denial::CookieInvalid => row(401, Some("invalid_token"), "invalid_token", "Invalid or expired access token", Counter::CookieDecryptFailed, C::Bearer),
            Denial::EmbeddedInvalid => row(401, Some("invalid_token"), "invalid_token", "The token the access token carries for this API is not valid", Counter::EmbeddedRefused, C::Bearer),
            Denial::InsufficientScope => row(403, Some("insufficient_scope"), "insufficient_scope", "The access token lacks a required scope", Counter::DeniedInsufficientScope, C::Bearer),
            Denial::ExchangeForbidden => row(403, Some("insufficient_scope"), "insufficient_scope", "The access token is not valid for this API", Counter::DeniedInsufficientScope, C::Bearer),
            Denial::TokenService(CallFailure::Unavailable) => row(503, None, "token_service_unavailable", "The token service is unavailable", Counter::TokenServiceUnavailable, C::None),
            Denial::ExchangeFailed(CallFailure::Unavailable) => row(503, None, "token_service_unavailable", "The token service is unavailable", Counter::ExchangeError, C::None),
            Denial::TokenService(_) => row(502, None, "token_service_error", "The token service could not be reached or gave an invalid answer", Counter::TokenServiceError, C::None),
            Denial::ExchangeFailed(_) => row(502, None, "token_service_error", "The token service could not be reached or gave an invalid answer", Counter::ExchangeError, C::None),
            Denial::KeysUnavailable => row(502, None, "jwks_unavailable", "The keys to verify the token are not available yet", Counter::DeniedJwksUnavailable, C::None),
            Denial::StoreUnavailable => row(502, None, "store_unavailable", "The token store could not be reached", Counter::DeniedStoreUnavailable, C::None),
            Denial::InvalidPreflight => row(400, None, "invalid_request", "A CORS preflight has no body and no method override", Counter::DeniedMalformed, C::None),
            Denial::Internal => row(500, None, "internal_error", "The gateway could not complete the request", Counter::InternalError, C::None),
            Denial::AmbiguousRequest => row(400, None, "invalid_request", "The request's method, path or host is ambiguous", Counter::DeniedMalformed, C::None),
            Denial::UnknownPolicy => row(500, None, "filter_misconfigured", "The gateway is misconfigured", Counter::InternalError, C::None),
            Denial::InvalidDpopProof => row(401, Some("invalid_dpop_proof"), "invalid_dpop_proof", "The DPoP proof is invalid", Counter::DeniedInvalidToken, C::Dpop),
            Denial::UseDpopNonce => row(401, Some("use_dpop_nonce"), "use_dpop_nonce", "The DPoP proof must carry the server's nonce", Counter::DeniedInvalidToken, C::Dpop),
            Denial::BoundTokenUnproven => row(401, Some("invalid_token"), "invalid_token", "The access token is bound to a key the request does not prove", Counter::DeniedUnproven, C::Dpop),
            Denial::ProofRequired => row(401, Some("invalid_token"), "invalid_token", "This resource needs a token bound to a key, with its proof", Counter::DeniedUnproven, C::Dpop),
            Denial::ReplayStoreFull => row(503, None, "dpop_replay_store_full", "The gateway cannot record more DPoP proofs now; retry", Counter::DeniedReplayStoreFull, C::RetrySoon),
            Denial::FleetUnavailable => row(503, None, "fleet_unavailable", "The gateways' shared store cannot check this DPoP proof now; retry", Counter::DeniedFleetUnavailable, C::RetrySoon),
            Denial::DpopKeyQuota { .. } => row(429, None, "dpop_key_quota", "This DPoP key has sent too many proofs recently; retry later", Counter::DeniedDpopKeyQuota, C::RetryAfter),
        }
    }

    /// The counter bumped for each reply of this kind.
    pub fn counter(self) -> Counter {
        self.row().counter
    }
}

/// What became of a request the filter is done with: the one table of terminal outcomes and
/// their counters. (The events inside a stage, such as a cache hit or a call made, are counted
/// by that stage; a verification failure's reason by [`verify_failure_counter`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// Forwarded with the filter's `Authorization`.
    Forwarded,
    /// Forwarded without credentials, as the policy allows (`token` `none` or `optional`).
    ForwardedAnonymous,
    /// A CORS preflight forwarded unauthenticated.
    PreflightPassed,
    /// Refused with the denial's local reply.
    Denied(Denial),
    /// A publish API request answered.
    PublishAnswered(&'a SplitReply),
    /// A token endpoint response replaced by a local reply (the JWT never left).
    TokenResponseRefused,
    /// The gateway's JWK Set served.
    GatewayJwksServed,
}

impl Outcome<'_> {
    pub fn counter(&self) -> Counter {
        match self {
            Outcome::Forwarded => Counter::Allowed,
            Outcome::ForwardedAnonymous => Counter::AllowedAnonymous,
            Outcome::PreflightPassed => Counter::CorsPreflight,
            Outcome::Denied(denial) => denial.counter(),
            Outcome::PublishAnswered(SplitReply::Accepted) => Counter::PublishAccepted,
            Outcome::PublishAnswered(_) => Counter::PublishRefused,
            Outcome::TokenResponseRefused => Counter::SplitRefused,
            Outcome::GatewayJwksServed => Counter::GatewayJwksServed,
        }
    }
}

/// The counter of each reason a JWT fails verification (counted beside the
/// `denied_invalid_token` of the reply).
pub fn verify_failure_counter(failure: VerifyFailure) -> Counter {
    match failure {
        VerifyFailure::BadSignature => Counter::VerifyBadSignature,
        VerifyFailure::UnknownKey => Counter::VerifyUnknownKey,
        VerifyFailure::DisallowedAlgorithm => Counter::VerifyDisallowedAlgorithm,
        VerifyFailure::WrongIssuer => Counter::VerifyWrongIssuer,
        VerifyFailure::WrongAudience => Counter::VerifyWrongAudience,
        VerifyFailure::Expired => Counter::VerifyExpired,
        VerifyFailure::NotYetValid => Counter::VerifyNotYetValid,
        VerifyFailure::Malformed => Counter::VerifyMalformed,
    }
}

/// A local reply, ready for `send_http_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// How the `DPoP` scheme is answered when the filter accepts it: the algorithms of its
/// challenge, and a fresh server nonce for `use_dpop_nonce`.
#[derive(Debug, Clone, Copy)]
pub struct DpopChallenge<'a> {
    pub algs: &'a str,
    pub nonce: Option<&'a str>,
}

/// [`local_reply_with`], for a filter that does not accept `DPoP`.
pub fn local_reply(
    denial: Denial,
    realm: &str,
    required_scopes: &[String],
    head: bool,
) -> LocalReply {
    local_reply_with(denial, realm, required_scopes, None, head)
}

/// The one mapping from a denial to what the client sees. `realm` and scopes were validated
/// at configuration time to be safe inside a quoted-string. With `dpop`, the challenges name
/// the `DPoP` scheme too (RFC 9449 §7.1): beside `Bearer` when no credentials came, alone for
/// what concerns a proof.
pub fn local_reply_with(
    denial: Denial,
    realm: &str,
    required_scopes: &[String],
    dpop: Option<DpopChallenge<'_>>,
    head: bool,
) -> LocalReply {
    let row = denial.row();
    let mut headers = Vec::with_capacity(4);
    let bearer = |error: Option<&str>| {
        let mut challenge = format!("Bearer realm=\"{realm}\"");
        if let Some(error) = error {
            challenge.push_str(&format!(", error=\"{error}\""));
        }
        if denial == Denial::InsufficientScope {
            challenge.push_str(&format!(", scope=\"{}\"", required_scopes.join(" ")));
        }
        challenge
    };
    let dpop_challenge = |d: DpopChallenge<'_>, error: Option<&str>| {
        let mut challenge = String::from("DPoP");
        if let Some(error) = error {
            challenge.push_str(&format!(" error=\"{error}\","));
        }
        challenge.push_str(&format!(" algs=\"{}\"", d.algs));
        challenge
    };
    match row.challenge {
        Challenge::None => {}
        Challenge::Both => {
            headers.push(("www-authenticate", bearer(row.error)));
            if let Some(d) = dpop {
                headers.push(("www-authenticate", dpop_challenge(d, None)));
            }
        }
        Challenge::Bearer => headers.push(("www-authenticate", bearer(row.error))),
        Challenge::Described => headers.push((
            "www-authenticate",
            format!(
                "{}, error_description=\"{}\"",
                bearer(row.error),
                row.message
            ),
        )),
        Challenge::Dpop => match dpop {
            Some(d) => {
                headers.push(("www-authenticate", dpop_challenge(d, row.error)));
                if denial == Denial::UseDpopNonce {
                    if let Some(nonce) = d.nonce {
                        headers.push(("dpop-nonce", nonce.to_owned()));
                    }
                }
            }
            None => headers.push(("www-authenticate", bearer(Some("invalid_token")))),
        },
        Challenge::RetrySoon => headers.push(("retry-after", "1".to_owned())),
        Challenge::RetryAfter => {
            if let Denial::DpopKeyQuota { retry_after_s } = denial {
                headers.push(("retry-after", retry_after_s.to_string()));
            }
        }
    }
    json_reply(row.status, headers, row.code, row.message, head)
}

/// A JSON error reply `{"code": ..., "message": ...}`, never cached; no body for `HEAD`.
fn json_reply(
    status: u32,
    mut headers: Vec<(&'static str, String)>,
    code: &str,
    message: &str,
    head: bool,
) -> LocalReply {
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

/// The answer at `phantom.mint.jwks_path`: the gateway's public JWK Set for `GET` and `HEAD`
/// (RFC 7517 §8.5 media type; cacheable for five minutes), 405 for any other method.
pub fn gateway_jwks_reply(method: &str, jwks: &str) -> LocalReply {
    let head = method == "HEAD";
    if method != "GET" && !head {
        return json_reply(
            405,
            vec![("allow", "GET, HEAD".to_owned())],
            "method_not_allowed",
            "Use GET to read the gateway's JWK Set",
            false,
        );
    }
    LocalReply {
        status: 200,
        headers: vec![
            ("content-type", "application/jwk-set+json".to_owned()),
            ("cache-control", "public, max-age=300".to_owned()),
        ],
        body: if head {
            Vec::new()
        } else {
            jwks.as_bytes().to_vec()
        },
    }
}

/// How the filter answers the revocation API (`revocation.path`), a back-channel logout
/// (`revocation.backchannel_logout.path`), and an observed RFC 7009 request it cannot
/// complete. Errors are OAuth error objects (`{"error": ...}`), never cached.
///
/// | answer | status | `error` |
/// |---|---|---|
/// | revoked, and every worker's copies forgotten | 200 (no body) | |
/// | logout accepted, and every worker's copies forgotten | 200 (no body) | |
/// | API: none or several of token, token_hash, sub, sid; malformed | 400 | `invalid_request` |
/// | logout token refused (any rule) | 400 | `invalid_request` |
/// | API: missing or wrong secret | 401 (`WWW-Authenticate: Bearer realm=...`) | `invalid_client` |
/// | not `POST` | 405 (`Allow: POST`) | `invalid_request` |
/// | body over the size limit | 413 | `invalid_request` |
/// | the marks are full (a live mark is never dropped) | 503 (`Retry-After: 1`) | `temporarily_unavailable` |
/// | not every worker confirmed in time; the logout's keys not loaded | 503 (`Retry-After: 1`) | `temporarily_unavailable` |
/// | body not complete within 5 s | 408 | `invalid_request` |
/// | body never delivered to the filter (`allow_on_headers_stop_iteration` missing) | 500 | `server_error` |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationReply {
    Revoked,
    Invalid(&'static str),
    Unauthorized,
    MethodNotAllowed,
    TooLarge,
    Full,
    Unavailable(&'static str),
    BodyTimeout,
    BodyNotDelivered,
}

impl RevocationReply {
    pub fn local_reply(&self, realm: &str) -> LocalReply {
        let retry = || vec![("retry-after", "1".to_owned())];
        let (status, headers, error, description) = match *self {
            RevocationReply::Revoked => {
                return LocalReply {
                    status: 200,
                    headers: vec![("cache-control", "no-store".to_owned())],
                    body: Vec::new(),
                }
            }
            RevocationReply::Invalid(why) => (400, vec![], "invalid_request", why),
            RevocationReply::Unauthorized => (
                401,
                vec![("www-authenticate", format!("Bearer realm=\"{realm}\""))],
                "invalid_client",
                "missing or wrong credentials",
            ),
            RevocationReply::MethodNotAllowed => (
                405,
                vec![("allow", "POST".to_owned())],
                "invalid_request",
                "use POST",
            ),
            RevocationReply::TooLarge => (413, vec![], "invalid_request", "the body is too large"),
            RevocationReply::Full => (
                503,
                retry(),
                "temporarily_unavailable",
                "the gateway holds as many revocations as it can; retry",
            ),
            RevocationReply::Unavailable(why) => (503, retry(), "temporarily_unavailable", why),
            RevocationReply::BodyTimeout => (
                408,
                vec![],
                "invalid_request",
                "the body did not arrive in time",
            ),
            RevocationReply::BodyNotDelivered => {
                (500, vec![], "server_error", "the gateway is misconfigured")
            }
        };
        oauth_error(status, headers, error, description)
    }
}

/// An OAuth error object (RFC 6749 §5.2), never cached.
fn oauth_error(
    status: u32,
    mut headers: Vec<(&'static str, String)>,
    error: &str,
    description: &str,
) -> LocalReply {
    headers.push(("cache-control", "no-store".to_owned()));
    headers.push(("content-type", "application/json".to_owned()));
    LocalReply {
        status,
        headers,
        body: serde_json::json!({ "error": error, "error_description": description })
            .to_string()
            .into_bytes(),
    }
}

/// How the filter answers a request to `split.publish.path`, and a token endpoint response it
/// cannot split.
///
/// | answer | status | body `code` |
/// |---|---|---|
/// | stored or revoked | 204 | none |
/// | missing or wrong secret | 401 (`WWW-Authenticate: Bearer realm=...`) | `unauthorized` |
/// | not `POST` or `DELETE` | 405 (`Allow: POST, DELETE`) | `method_not_allowed` |
/// | body over the size limit | 413 | `payload_too_large` |
/// | malformed body, bad key, bad `header_payload`, `expires_at` in the past | 400 | `invalid_request` |
/// | store kept changing under the write | 503 | `store_busy` |
/// | body not complete within 5 s | 408 | `request_timeout` |
/// | body never delivered to the filter (`allow_on_headers_stop_iteration` missing) | 500 | `filter_misconfigured` |
/// | token response with a JWT that cannot be split safely | 502 | `token_split_failed` |
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitReply {
    Accepted,
    Unauthorized,
    MethodNotAllowed,
    TooLarge,
    Invalid(PublishError),
    Busy,
    BodyTimeout,
    BodyNotDelivered,
    SplitFailed,
    /// The remote store (`split.remote`) did not take the write.
    StoreUnavailable,
}

impl SplitReply {
    /// The counter of a publish API answer.
    pub fn publish_counter(&self) -> Counter {
        Outcome::PublishAnswered(self).counter()
    }

    pub fn local_reply(&self, realm: &str, head: bool) -> LocalReply {
        match self {
            SplitReply::Accepted => LocalReply {
                status: 204,
                headers: vec![("cache-control", "no-store".to_owned())],
                body: Vec::new(),
            },
            SplitReply::Unauthorized => json_reply(
                401,
                vec![("www-authenticate", format!("Bearer realm=\"{realm}\""))],
                "unauthorized",
                "Missing or wrong publisher credentials",
                head,
            ),
            SplitReply::MethodNotAllowed => json_reply(
                405,
                vec![("allow", "POST, DELETE".to_owned())],
                "method_not_allowed",
                "Use POST to publish and DELETE to revoke",
                head,
            ),
            SplitReply::TooLarge => json_reply(
                413,
                vec![],
                "payload_too_large",
                "The request body is too large",
                head,
            ),
            SplitReply::Invalid(why) => {
                json_reply(400, vec![], "invalid_request", &why.to_string(), head)
            }
            SplitReply::Busy => json_reply(
                503,
                vec![("retry-after", "1".to_owned())],
                "store_busy",
                "The token store is busy; retry",
                head,
            ),
            SplitReply::BodyTimeout => json_reply(
                408,
                vec![],
                "request_timeout",
                "The request body did not arrive in time",
                head,
            ),
            SplitReply::BodyNotDelivered => json_reply(
                500,
                vec![],
                "filter_misconfigured",
                "The gateway is misconfigured",
                head,
            ),
            SplitReply::SplitFailed => json_reply(
                502,
                vec![],
                "token_split_failed",
                "The token service issued a token the gateway cannot split",
                head,
            ),
            SplitReply::StoreUnavailable => json_reply(
                502,
                vec![],
                "store_unavailable",
                "The shared token store did not take the write; retry",
                head,
            ),
        }
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
                Denial::TokenService(CallFailure::Reset),
                502,
                None,
                "token_service_error",
            ),
            (
                Denial::TokenService(CallFailure::Unreachable),
                502,
                None,
                "token_service_error",
            ),
            (
                Denial::TokenService(CallFailure::Timeout),
                502,
                None,
                "token_service_error",
            ),
            (
                Denial::TokenService(CallFailure::Status(401)),
                502,
                None,
                "token_service_error",
            ),
            (
                Denial::TokenService(CallFailure::Status(500)),
                502,
                None,
                "token_service_error",
            ),
            (
                Denial::TokenService(CallFailure::Malformed),
                502,
                None,
                "token_service_error",
            ),
            (
                Denial::TokenService(CallFailure::Unavailable),
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
            Denial::TokenService(CallFailure::Unavailable).counter(),
            Counter::TokenServiceUnavailable
        );
        assert_eq!(
            Denial::TokenService(CallFailure::Timeout).counter(),
            Counter::TokenServiceError
        );
        assert_eq!(
            Denial::InsufficientScope.counter(),
            Counter::DeniedInsufficientScope
        );
        assert_eq!(Denial::Internal.counter(), Counter::InternalError);
        let r = local_reply(Denial::Internal, "api", &[], false);
        assert_eq!(r.status, 500);
        assert_eq!(www(&r), None);
        // A split store outage is the store's, not the token service's.
        assert_eq!(
            Denial::StoreUnavailable.counter(),
            Counter::DeniedStoreUnavailable
        );
    }
}
