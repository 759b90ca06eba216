//! What revocation reads, pure: whose a token is ([`Identity`]), the revocation API's form
//! (RFC 7009's shape), the token in an RFC 7009 request on its way to the token service, and
//! the claims of an OpenID Connect back-channel logout token (section 2.4, checked as 2.6
//! requires once its signature, issuer, audience and times are verified by `jws`).

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::hash::TokenHash;
use crate::token::jwt::numeric_date;
use crate::token::split::HashEncoding;

/// Longest form body the revocation API reads (bytes).
pub const MAX_API_BODY: usize = 8 * 1024;
/// Longest RFC 7009 request body read on its way to the token service (bytes).
pub const MAX_OBSERVED_BODY: usize = 16 * 1024;
/// Longest back-channel logout request body (bytes).
pub const MAX_LOGOUT_BODY: usize = 16 * 1024;
/// Longest value of one form field.
const MAX_VALUE_LEN: usize = 4 * 1024;
/// Form fields read, at most.
const MAX_FIELDS: usize = 32;
/// The event a logout token carries (OpenID Connect Back-Channel Logout 1.0, 2.4).
pub const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Whose a token is: what a revocation can name. Read from the claims the gateway resolved the
/// token with (the JWT forwarded, or the introspection answer a JWT was minted from).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// SHA-256 of the token the client presents (an opaque token, a split signature, a JWT).
    pub token: TokenHash,
    /// [`subject_key`] of its `sub`.
    pub sub: Option<TokenHash>,
    /// [`session_key`] of its `sid`.
    pub sid: Option<TokenHash>,
    /// Its `iat`, whole seconds.
    pub iat: Option<u64>,
}

/// The mark key of a subject.
pub fn subject_key(sub: &str) -> TokenHash {
    keyed(b"sub", sub)
}

/// The mark key of a session.
pub fn session_key(sid: &str) -> TokenHash {
    keyed(b"sid", sid)
}

/// The mark key of a logout token's `jti` (of its issuer): seen once, never again.
pub fn logout_key(iss: &str, jti: &str) -> TokenHash {
    let mut h = Sha256::new();
    h.update(b"jti\0");
    h.update((iss.len() as u64).to_be_bytes());
    h.update(iss.as_bytes());
    h.update(jti.as_bytes());
    h.finalize().into()
}

fn keyed(kind: &[u8], value: &str) -> TokenHash {
    let mut h = Sha256::new();
    h.update(kind);
    h.update([0]);
    h.update(value.as_bytes());
    h.finalize().into()
}

const HAS_IAT: u8 = 1;
const HAS_SUB: u8 = 2;
const HAS_SID: u8 = 4;

impl Identity {
    /// The identity of the token `token` (its SHA-256) that `claims` describe.
    pub fn of(token: &TokenHash, claims: &Map<String, Value>) -> Self {
        let text = |name: &str| claims.get(name).and_then(Value::as_str);
        Self {
            token: *token,
            sub: text("sub").map(subject_key),
            sid: text("sid").map(session_key),
            iat: claims.get("iat").and_then(numeric_date),
        }
    }

    /// Bytes kept beside a cached token: `flags u8 | iat u64 | sub [32] | sid [32]`, each part
    /// only when present (the token's hash is the cache entry's own key).
    pub fn encode(&self) -> Vec<u8> {
        let mut flags = 0;
        let mut out = Vec::with_capacity(73);
        if let Some(iat) = self.iat {
            flags |= HAS_IAT;
            out.extend_from_slice(&iat.to_be_bytes());
        }
        if let Some(sub) = &self.sub {
            flags |= HAS_SUB;
            out.extend_from_slice(sub);
        }
        if let Some(sid) = &self.sid {
            flags |= HAS_SID;
            out.extend_from_slice(sid);
        }
        out.insert(0, flags);
        out
    }

    /// Reads [`Identity::encode`]'s bytes; `None` when they are not exactly that.
    pub fn decode(token: &TokenHash, bytes: &[u8]) -> Option<Self> {
        let (&flags, mut rest) = bytes.split_first()?;
        if flags & !(HAS_IAT | HAS_SUB | HAS_SID) != 0 {
            return None;
        }
        let mut take = |n: usize| -> Option<&[u8]> {
            let (part, after) = rest.split_at_checked(n)?;
            rest = after;
            Some(part)
        };
        let iat = if flags & HAS_IAT != 0 {
            Some(u64::from_be_bytes(take(8)?.try_into().ok()?))
        } else {
            None
        };
        let mut hash = |flag: u8| -> Option<Option<TokenHash>> {
            if flags & flag == 0 {
                return Some(None);
            }
            Some(Some(take(32)?.try_into().ok()?))
        };
        let sub = hash(HAS_SUB)?;
        let sid = hash(HAS_SID)?;
        rest.is_empty().then_some(Self {
            token: *token,
            sub,
            sid,
            iat,
        })
    }
}

/// What the revocation API is asked to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoke {
    /// One token, by the SHA-256 of its value (given whole, or as the hash).
    Token(TokenHash),
    /// Every token of this subject issued at or before now.
    Subject(String),
    /// Every token of this session issued at or before now.
    Session(String),
}

/// Why a revocation API body is refused (400 `invalid_request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("the body is not a form (application/x-www-form-urlencoded)")]
    Malformed,
    #[error("exactly one of token, token_hash, sub, sid is required")]
    NotExactlyOne,
    #[error("a value is empty, too long or not text")]
    BadValue,
    #[error("token_hash is not a SHA-256 in the configured encoding")]
    BadHash,
}

/// The fields of an `application/x-www-form-urlencoded` body, decoded (`+` is a space, `%XX`
/// a byte, the result UTF-8). Bounded: at most [`MAX_FIELDS`] fields of at most
/// [`MAX_VALUE_LEN`] bytes.
pub fn form_fields(body: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    let text = std::str::from_utf8(body).map_err(|_| FormError::Malformed)?;
    let mut out = Vec::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        if out.len() == MAX_FIELDS {
            return Err(FormError::Malformed);
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        out.push((decode_component(name)?, decode_component(value)?));
    }
    Ok(out)
}

fn decode_component(part: &str) -> Result<String, FormError> {
    if part.len() > 3 * MAX_VALUE_LEN {
        return Err(FormError::BadValue);
    }
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(FormError::Malformed)?;
                let hex = std::str::from_utf8(hex).map_err(|_| FormError::Malformed)?;
                let byte = u8::from_str_radix(hex, 16).map_err(|_| FormError::Malformed)?;
                out.push(byte);
                i += 2;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    if out.len() > MAX_VALUE_LEN {
        return Err(FormError::BadValue);
    }
    String::from_utf8(out).map_err(|_| FormError::Malformed)
}

/// Reads a revocation API body: exactly one of `token`, `token_hash` (SHA-256 of the token in
/// `encoding`), `sub`, `sid`, once; other fields (RFC 7009's `token_type_hint`) are ignored.
/// A value is non-empty text without control characters.
pub fn parse_api(body: &[u8], encoding: HashEncoding) -> Result<Revoke, FormError> {
    let fields = form_fields(body)?;
    let mut named = fields
        .iter()
        .filter(|(n, _)| matches!(n.as_str(), "token" | "token_hash" | "sub" | "sid"));
    let (Some((name, value)), None) = (named.next(), named.next()) else {
        return Err(FormError::NotExactlyOne);
    };
    if value.is_empty() || value.chars().any(char::is_control) {
        return Err(FormError::BadValue);
    }
    Ok(match name.as_str() {
        "token" => Revoke::Token(crate::hash::token_hash(value)),
        "token_hash" => Revoke::Token(encoding.decode(value).ok_or(FormError::BadHash)?),
        "sub" => Revoke::Subject(value.clone()),
        _ => Revoke::Session(value.clone()),
    })
}

/// What an RFC 7009 revocation request's body names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// One `token` field: the SHA-256 of its value.
    One(TokenHash),
    /// No `token` field, or an empty one (the token service refuses it).
    Nothing,
    /// More than one `token` field: refused here, never forwarded (the token service could
    /// revoke any of them).
    Several,
}

/// The token an RFC 7009 revocation request names, read as leniently as any token service
/// reads a form: every field looked at (the body is bounded, the fields are not counted), a
/// `%` that starts no escape kept as it is, bytes that are not UTF-8 kept as bytes. Whatever
/// else the body holds (a client assertion of any size, a field that is not text), the token
/// the service revokes is the one seen here.
pub fn observed_token(body: &[u8]) -> Named {
    let mut found = None;
    for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (
                pair.get(..i).unwrap_or_default(),
                pair.get(i + 1..).unwrap_or_default(),
            ),
            None => (pair, &[][..]),
        };
        if lenient(name) != b"token" {
            continue;
        }
        if found.is_some() {
            return Named::Several;
        }
        found = Some(lenient(value));
    }
    match found {
        Some(value) if !value.is_empty() => {
            use sha2::{Digest, Sha256};
            Named::One(Sha256::digest(&value).into())
        }
        _ => Named::Nothing,
    }
}

/// A form component decoded the lenient way (`+` a space, `%XX` a byte, anything else as is).
fn lenient(part: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(part.len());
    let mut i = 0;
    while let Some(&b) = part.get(i) {
        let escaped = (b == b'%')
            .then(|| part.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(|_| part.get(i + 1).is_some_and(u8::is_ascii_hexdigit));
        match (b, escaped) {
            (_, Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (other, None) => {
                out.push(other);
                i += 1;
            }
        }
    }
    out
}

/// The `logout_token` of a back-channel logout request body (exactly one).
pub fn logout_token(body: &[u8]) -> Result<String, LogoutError> {
    let fields = form_fields(body).map_err(|_| LogoutError::NotAForm)?;
    let mut tokens = fields.into_iter().filter(|(n, _)| n == "logout_token");
    match (tokens.next(), tokens.next()) {
        (Some((_, token)), None) if !token.is_empty() => Ok(token),
        _ => Err(LogoutError::NoToken),
    }
}

/// What a valid logout token asks: the session and/or the subject signed out, and the token's
/// own `jti` (accepted once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logout {
    pub sub: Option<String>,
    pub sid: Option<String>,
    pub jti: String,
    /// When the provider issued it: the session's or subject's tokens issued until then are
    /// revoked (the provider's clock, which issued them).
    pub iat: u64,
}

/// Why a logout token is refused (400, never said to the caller beyond `invalid_request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LogoutError {
    #[error("the body is not a form")]
    NotAForm,
    #[error("no single logout_token")]
    NoToken,
    #[error("the signature, issuer, audience, typ or times do not verify")]
    Unverified,
    #[error("iat is missing")]
    NoIat,
    #[error("exp is missing")]
    NoExp,
    #[error("jti is missing")]
    NoJti,
    #[error("events lacks the back-channel logout member, or it is not an object")]
    NoEvent,
    #[error("neither sub nor sid")]
    NoSubjectOrSession,
    #[error("a nonce is present")]
    Nonce,
    #[error("the jti was accepted before")]
    Replayed,
}

/// Checks the claims of a logout token whose signature, `iss`, `aud`, `exp` and `iat` (not in
/// the future, `exp` not past) were verified: `iat`, `exp` and `jti` present, `events` with
/// the back-channel logout member whose value is a JSON object, `sub` or `sid` (strings), and
/// no `nonce` (section 2.6, steps 3 to 7).
pub fn logout_claims(claims: &Map<String, Value>) -> Result<Logout, LogoutError> {
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
    let iat = claims
        .get("iat")
        .and_then(numeric_date)
        .ok_or(LogoutError::NoIat)?;
    if claims.get("exp").and_then(numeric_date).is_none() {
        return Err(LogoutError::NoExp);
    }
    let jti = text("jti")
        .filter(|j| !j.is_empty())
        .ok_or(LogoutError::NoJti)?;
    let event = claims
        .get("events")
        .and_then(Value::as_object)
        .and_then(|e| e.get(LOGOUT_EVENT));
    if !matches!(event, Some(Value::Object(_))) {
        return Err(LogoutError::NoEvent);
    }
    if claims.contains_key("nonce") {
        return Err(LogoutError::Nonce);
    }
    let sub = text("sub").filter(|s| !s.is_empty());
    let sid = text("sid").filter(|s| !s.is_empty());
    if sub.is_none() && sid.is_none() {
        return Err(LogoutError::NoSubjectOrSession);
    }
    Ok(Logout { sub, sid, jti, iat })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_identity_round_trips_whatever_it_holds() {
        let token = [9u8; 32];
        let full = Identity::of(
            &token,
            json!({"sub": "alice", "sid": "s-1", "iat": 1_700_000_000u64})
                .as_object()
                .unwrap(),
        );
        assert_eq!(full.sub, Some(subject_key("alice")));
        assert_eq!(full.sid, Some(session_key("s-1")));
        assert_eq!(full.iat, Some(1_700_000_000));
        for identity in [
            full.clone(),
            Identity {
                token,
                ..Identity::default()
            },
            Identity {
                sid: None,
                ..full.clone()
            },
        ] {
            assert_eq!(Identity::decode(&token, &identity.encode()), Some(identity));
        }
        let bytes = full.encode();
        assert_eq!(Identity::decode(&token, &bytes[..bytes.len() - 1]), None);
        assert_eq!(Identity::decode(&token, &[8]), None, "unknown flag");
        assert_eq!(Identity::decode(&token, &[]), None);
        // A subject and a session of the same text are different marks.
        assert_ne!(subject_key("x"), session_key("x"));
        // Claims of the wrong type name nobody.
        let odd = Identity::of(&token, json!({"sub": 7, "iat": "1"}).as_object().unwrap());
        assert_eq!((odd.sub, odd.iat), (None, None));
    }

    #[test]
    fn the_api_form_names_exactly_one_thing() {
        let b64 = HashEncoding::Base64url;
        assert_eq!(
            parse_api(b"token=abc", b64),
            Ok(Revoke::Token(crate::hash::token_hash("abc")))
        );
        assert_eq!(
            parse_api(b"token=a%2Bb+c&token_type_hint=access_token", b64),
            Ok(Revoke::Token(crate::hash::token_hash("a+b c")))
        );
        let hash = crate::hash::token_hash("abc");
        let encoded = format!("token_hash={}", b64.encode(&hash));
        assert_eq!(parse_api(encoded.as_bytes(), b64), Ok(Revoke::Token(hash)));
        assert_eq!(
            parse_api(b"sub=alice", b64),
            Ok(Revoke::Subject("alice".into()))
        );
        assert_eq!(parse_api(b"sid=s1", b64), Ok(Revoke::Session("s1".into())));
        for (body, error) in [
            (&b""[..], FormError::NotExactlyOne),
            (b"token_type_hint=x", FormError::NotExactlyOne),
            (b"token=a&sub=b", FormError::NotExactlyOne),
            (b"token=a&token=a", FormError::NotExactlyOne),
            (b"token=", FormError::BadValue),
            (b"sub=a%0Ab", FormError::BadValue),
            (b"token=%zz", FormError::Malformed),
            (b"token=%4", FormError::Malformed),
            (b"token=%ff", FormError::Malformed),
            (b"token_hash=abc", FormError::BadHash),
            (b"\xff=1", FormError::Malformed),
        ] {
            assert_eq!(parse_api(body, b64), Err(error), "{body:?}");
        }
        let long = format!("token={}", "a".repeat(MAX_VALUE_LEN + 1));
        assert_eq!(parse_api(long.as_bytes(), b64), Err(FormError::BadValue));
        let many = "x=1&".repeat(MAX_FIELDS + 1);
        assert_eq!(parse_api(many.as_bytes(), b64), Err(FormError::Malformed));
    }

    #[test]
    fn an_observed_request_names_its_token_once_whatever_else_it_holds() {
        let one = |t: &[u8]| {
            use sha2::{Digest, Sha256};
            Named::One(Sha256::digest(t).into())
        };
        assert_eq!(
            observed_token(b"token=abc&token_type_hint=access_token"),
            one(b"abc")
        );
        assert_eq!(observed_token(b"%74oken=a%2Bb+c"), one(b"a+b c"));
        assert_eq!(observed_token(b"token=a&token=b"), Named::Several);
        assert_eq!(observed_token(b"token=a&token=a"), Named::Several);
        assert_eq!(observed_token(b"token="), Named::Nothing);
        assert_eq!(observed_token(b"client_id=x"), Named::Nothing);
        // What a strict reader refuses and a token service reads: the token is still seen.
        assert_eq!(observed_token(b"token=abc&junk=%zz"), one(b"abc"));
        assert_eq!(observed_token(b"token=abc&junk=%ff%fe"), one(b"abc"));
        assert_eq!(observed_token(b"token=a%zzb%"), one(b"a%zzb%"));
        assert_eq!(observed_token(b"token=a%+1"), one(b"a% 1"));
        let many = "x=1&".repeat(MAX_FIELDS * 4) + "token=abc";
        assert_eq!(observed_token(many.as_bytes()), one(b"abc"));
        let big = format!(
            "client_assertion={}&token=abc",
            "e".repeat(MAX_VALUE_LEN * 3)
        );
        assert_eq!(observed_token(big.as_bytes()), one(b"abc"));
    }

    fn logout() -> Map<String, Value> {
        json!({
            "iss": "https://op", "aud": "web", "iat": 1_700_000_000u64, "exp": 1_700_000_120u64,
            "jti": "j-1", "sub": "alice", "sid": "s-1",
            "events": {LOGOUT_EVENT: {}},
        })
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn a_logout_token_is_checked_rule_by_rule() {
        assert_eq!(
            logout_claims(&logout()),
            Ok(Logout {
                sub: Some("alice".into()),
                sid: Some("s-1".into()),
                jti: "j-1".into(),
                iat: 1_700_000_000,
            })
        );
        // Each case differs from the valid token above in one rule only.
        type Change = fn(&mut Map<String, Value>);
        let cases: [(&str, Change, LogoutError); 10] = [
            ("no iat", |c| drop(c.remove("iat")), LogoutError::NoIat),
            (
                "iat not a number",
                |c| drop(c.insert("iat".into(), json!("1"))),
                LogoutError::NoIat,
            ),
            ("no exp", |c| drop(c.remove("exp")), LogoutError::NoExp),
            ("no jti", |c| drop(c.remove("jti")), LogoutError::NoJti),
            (
                "no events",
                |c| drop(c.remove("events")),
                LogoutError::NoEvent,
            ),
            (
                "another event",
                |c| drop(c.insert("events".into(), json!({"x": {}}))),
                LogoutError::NoEvent,
            ),
            (
                "event not an object",
                |c| drop(c.insert("events".into(), json!({LOGOUT_EVENT: "yes"}))),
                LogoutError::NoEvent,
            ),
            (
                "a nonce",
                |c| drop(c.insert("nonce".into(), json!("n"))),
                LogoutError::Nonce,
            ),
            (
                "neither sub nor sid",
                |c| {
                    c.remove("sub");
                    c.remove("sid");
                },
                LogoutError::NoSubjectOrSession,
            ),
            (
                "sub not text, no sid",
                |c| {
                    c.insert("sub".into(), json!(1));
                    c.remove("sid");
                },
                LogoutError::NoSubjectOrSession,
            ),
        ];
        for (what, change, error) in cases {
            let mut claims = logout();
            change(&mut claims);
            assert_eq!(logout_claims(&claims), Err(error), "{what}");
        }
        let mut only_sid = logout();
        only_sid.remove("sub");
        assert_eq!(logout_claims(&only_sid).map(|l| l.sub), Ok(None));
    }

    #[test]
    fn a_logout_body_carries_one_token() {
        assert_eq!(logout_token(b"logout_token=a.b.c").as_deref(), Ok("a.b.c"));
        assert_eq!(
            logout_token(b"logout_token=a&logout_token=b"),
            Err(LogoutError::NoToken)
        );
        assert_eq!(logout_token(b"x=1"), Err(LogoutError::NoToken));
        assert_eq!(logout_token(b"logout_token=%"), Err(LogoutError::NotAForm));
    }
}
