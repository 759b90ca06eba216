//! JWT verification before a token leaves the gateway: JWS signatures (RFC 7515) with keys from
//! a JWK Set (RFC 7517/7518), and the claims RFC 8725 (JWT best current practices) asks a
//! recipient to check: `iss`, `aud`, `exp`, `nbf` (and `iat` not in the future).
//!
//! The algorithm is never taken from the token alone (RFC 8725 §3.1): a token's `alg` must be
//! in the configured allow-list *and* be the algorithm of a configured key, fixed when the key
//! set is loaded from the key's own `kty`/`crv`/`alg`. `kid` only selects among those keys;
//! `jku`, `x5u` and `jwk` in a token header are ignored. `none` is never accepted, and an HMAC
//! key only exists when configured inline: a key set fetched over HTTP never yields one, so a
//! public key can never be used as an HMAC secret (the classic algorithm confusion attack).
//!
//! Signatures are checked by `jwt-simple` (pure Rust, wasm32-wasip1); the time is passed in, so
//! the host's clock is the only clock.

use std::collections::HashSet;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;
use jwt_simple::JWTError;
use serde::{Deserialize, Serialize};

/// Largest JWK Set document accepted, in bytes.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Most keys kept from one JWK Set (the rest are ignored).
pub const MAX_KEYS: usize = 64;
/// Largest JWT verified, in bytes (the phantom and split flows bound it lower already).
const MAX_TOKEN_BYTES: usize = 64 * 1024;
/// Largest encoded JWT header, in bytes.
const MAX_HEADER_BYTES: usize = 4 * 1024;

/// The signature algorithms the filter can verify (RFC 7518 §3, RFC 8037 for `EdDSA`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
    Hs256,
    Hs384,
    Hs512,
}

impl Alg {
    pub const ALL: [Alg; 12] = [
        Alg::Rs256,
        Alg::Rs384,
        Alg::Rs512,
        Alg::Ps256,
        Alg::Ps384,
        Alg::Ps512,
        Alg::Es256,
        Alg::Es384,
        Alg::EdDsa,
        Alg::Hs256,
        Alg::Hs384,
        Alg::Hs512,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Ps256 => "PS256",
            Alg::Ps384 => "PS384",
            Alg::Ps512 => "PS512",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::EdDsa => "EdDSA",
            Alg::Hs256 => "HS256",
            Alg::Hs384 => "HS384",
            Alg::Hs512 => "HS512",
        }
    }

    /// Exact, case-sensitive names (RFC 7515 §4.1.1). `none` is not one.
    pub fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == name)
    }

    pub fn is_hmac(self) -> bool {
        matches!(self, Alg::Hs256 | Alg::Hs384 | Alg::Hs512)
    }

    /// The JWK `kty` (and `crv`, where there is one) a key for this algorithm has.
    pub fn key_type(self) -> (&'static str, Option<&'static str>) {
        match self {
            Alg::Rs256 | Alg::Rs384 | Alg::Rs512 | Alg::Ps256 | Alg::Ps384 | Alg::Ps512 => {
                ("RSA", None)
            }
            Alg::Es256 => ("EC", Some("P-256")),
            Alg::Es384 => ("EC", Some("P-384")),
            Alg::EdDsa => ("OKP", Some("Ed25519")),
            Alg::Hs256 | Alg::Hs384 | Alg::Hs512 => ("oct", None),
        }
    }
}

/// Why a JWT is refused. Each has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyFailure {
    /// The signature does not verify with any key that could have made it.
    BadSignature,
    /// No configured key has the token's `kid` (or, without `kid`, its algorithm).
    UnknownKey,
    /// `alg` is `none`, not allowed, or not the algorithm of the key named by `kid`.
    DisallowedAlgorithm,
    WrongIssuer,
    WrongAudience,
    Expired,
    /// `nbf` (or `iat`) later than now plus the allowed clock skew.
    NotYetValid,
    /// Not a well-formed JWS, unsupported `crit`, or no `exp`.
    Malformed,
}

/// Why a JWK Set was not loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("not a JWK Set: {0}")]
    Malformed(String),
    #[error("no usable key (checked {0} keys against the algorithm allow-list)")]
    NoUsableKey(usize),
}

/// The claim checks, fixed by configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Alg>,
    pub clock_skew_s: u64,
}

#[derive(Clone)]
enum PublicKey {
    Rs256(RS256PublicKey),
    Rs384(RS384PublicKey),
    Rs512(RS512PublicKey),
    Ps256(PS256PublicKey),
    Ps384(PS384PublicKey),
    Ps512(PS512PublicKey),
    Es256(ES256PublicKey),
    Es384(ES384PublicKey),
    EdDsa(Ed25519PublicKey),
    Hs256(HS256Key),
    Hs384(HS384Key),
    Hs512(HS512Key),
}

/// One usable key: an algorithm bound to key material, maybe named by a `kid`.
#[derive(Clone)]
struct Key {
    kid: Option<String>,
    alg: Alg,
    key: PublicKey,
}

/// The keys a token may be verified with.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

// Key material (an HMAC secret in particular) is never printed: `kid` and algorithm only.
impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.keys
                    .iter()
                    .map(|k| (k.kid.as_deref().unwrap_or("-"), k.alg.name())),
            )
            .finish()
    }
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<RawJwk>,
}

// Not `deny_unknown_fields`: JWKs carry members we do not use (`x5c`, `key_ops`, ...).
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    k: Option<String>,
}

fn b64(value: Option<&String>) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(value?.trim_end_matches('=')).ok()
}

impl RawJwk {
    /// The key for `alg`, if this JWK can be one.
    fn key(&self, alg: Alg) -> Option<PublicKey> {
        let rsa = || Some((b64(self.n.as_ref())?, b64(self.e.as_ref())?));
        let ec = |len: usize| {
            let (x, y) = (b64(self.x.as_ref())?, b64(self.y.as_ref())?);
            if x.len() != len || y.len() != len {
                return None;
            }
            let mut sec1 = Vec::with_capacity(1 + 2 * len);
            sec1.push(4);
            sec1.extend_from_slice(&x);
            sec1.extend_from_slice(&y);
            Some(sec1)
        };
        let secret = || {
            let k = b64(self.k.as_ref())?;
            // RFC 7518 §3.2: a key at least as long as the hash output.
            let min = match alg {
                Alg::Hs384 => 48,
                Alg::Hs512 => 64,
                _ => 32,
            };
            (k.len() >= min).then_some(k)
        };
        macro_rules! rsa_key {
            ($variant:ident, $ty:ty) => {{
                let (n, e) = rsa()?;
                PublicKey::$variant(<$ty>::from_components(&n, &e).ok()?)
            }};
        }
        Some(match alg {
            Alg::Rs256 => rsa_key!(Rs256, RS256PublicKey),
            Alg::Rs384 => rsa_key!(Rs384, RS384PublicKey),
            Alg::Rs512 => rsa_key!(Rs512, RS512PublicKey),
            Alg::Ps256 => rsa_key!(Ps256, PS256PublicKey),
            Alg::Ps384 => rsa_key!(Ps384, PS384PublicKey),
            Alg::Ps512 => rsa_key!(Ps512, PS512PublicKey),
            Alg::Es256 => PublicKey::Es256(ES256PublicKey::from_bytes(&ec(32)?).ok()?),
            Alg::Es384 => PublicKey::Es384(ES384PublicKey::from_bytes(&ec(48)?).ok()?),
            Alg::EdDsa => {
                PublicKey::EdDsa(Ed25519PublicKey::from_bytes(&b64(self.x.as_ref())?).ok()?)
            }
            Alg::Hs256 => PublicKey::Hs256(HS256Key::from_bytes(&secret()?)),
            Alg::Hs384 => PublicKey::Hs384(HS384Key::from_bytes(&secret()?)),
            Alg::Hs512 => PublicKey::Hs512(HS512Key::from_bytes(&secret()?)),
        })
    }
}

impl KeySet {
    /// Loads the keys of a JWK Set that can verify one of `algorithms`. A key's algorithm is
    /// its own `alg` when it has one, else every allowed algorithm of its `kty` (and `crv`).
    /// Keys with a `use` other than `sig`, unknown types, and malformed keys are skipped.
    /// Symmetric (`oct`) keys are only loaded with `allow_secrets` (inline configuration).
    pub fn parse(json: &[u8], algorithms: &[Alg], allow_secrets: bool) -> Result<Self, JwksError> {
        if json.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge);
        }
        let raw: RawJwks = serde_json::from_slice(json)
            .map_err(|e| JwksError::Malformed(crate::json_error::describe(&e)))?;
        let mut keys = Vec::new();
        for jwk in &raw.keys {
            if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
                continue;
            }
            for &alg in algorithms {
                let (kty, crv) = alg.key_type();
                if jwk.kty != kty
                    || (alg.is_hmac() && !allow_secrets)
                    || crv.is_some_and(|c| jwk.crv.as_deref() != Some(c))
                    || jwk.alg.as_deref().is_some_and(|a| a != alg.name())
                {
                    continue;
                }
                if let Some(key) = jwk.key(alg) {
                    if keys.len() < MAX_KEYS {
                        keys.push(Key {
                            kid: jwk.kid.clone(),
                            alg,
                            key,
                        });
                    }
                }
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey(raw.keys.len()));
        }
        Ok(Self { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `kid`s and algorithms, for a log line.
    pub fn describe(&self) -> String {
        format!("{self:?}")
    }

    /// Verifies `jwt` (signature first, then claims) at `now_s`.
    pub fn verify(&self, policy: &Policy, jwt: &str, now_s: u64) -> Result<(), VerifyFailure> {
        let claims = self.verify_as(policy, jwt, options(policy, now_s))?;
        // RFC 8725 §3.10 leaves it to the application; a gateway caches by `exp`, so it is
        // required.
        if claims.expires_at.is_none() {
            return Err(VerifyFailure::Malformed);
        }
        Ok(())
    }

    /// Verifies a signed introspection response (RFC 9701 §5) and returns its
    /// `token_introspection` member: `typ` must be `token-introspection+jwt`, `iss` the
    /// policy's issuer, `aud` the gateway's own client id (`audience`), and `iat` present and
    /// recent ([`INTROSPECTION_MAX_AGE_S`] plus the clock skew). `exp` is optional here.
    pub fn verify_introspection(
        &self,
        policy: &Policy,
        audience: &str,
        jwt: &str,
        now_s: u64,
    ) -> Result<serde_json::Map<String, serde_json::Value>, VerifyFailure> {
        check_typ(jwt, "token-introspection+jwt", true)?;
        let mut o = options(policy, now_s);
        o.allowed_audiences = Some(HashSet::from([audience.to_owned()]));
        o.max_validity = Some(Duration::from_secs(
            INTROSPECTION_MAX_AGE_S + policy.clock_skew_s,
        ));
        let claims = self.verify_as(policy, jwt, o)?;
        match (claims.issued_at, claims.custom.token_introspection) {
            (Some(_), Some(serde_json::Value::Object(introspection))) => Ok(introspection),
            _ => Err(VerifyFailure::Malformed),
        }
    }

    /// Verifies an OpenID Connect back-channel logout token (Back-Channel Logout 1.0, 2.6):
    /// `typ`, when present, `logout+jwt`; the signature, with the policy's keys and
    /// algorithms; `iss` the policy's issuer; `aud` naming one of `audiences`; `iat` not in the
    /// future and `exp` not past (within the clock skew). Returns its claims, for the rules
    /// that remain ([`crate::token::revocation::logout_claims`]).
    pub fn verify_logout(
        &self,
        policy: &Policy,
        audiences: &[String],
        jwt: &str,
        now_s: u64,
    ) -> Result<serde_json::Map<String, serde_json::Value>, VerifyFailure> {
        check_typ(jwt, "logout+jwt", false)?;
        let mut o = options(policy, now_s);
        o.allowed_audiences = Some(audiences.iter().cloned().collect());
        self.verify_as(policy, jwt, o)?;
        crate::token::claims::payload_of(jwt).ok_or(VerifyFailure::Malformed)
    }

    fn verify_as(
        &self,
        policy: &Policy,
        jwt: &str,
        options: VerificationOptions,
    ) -> Result<JWTClaims<Custom>, VerifyFailure> {
        if jwt.len() > MAX_TOKEN_BYTES {
            return Err(VerifyFailure::Malformed);
        }
        let meta = Token::decode_metadata(jwt).map_err(|_| VerifyFailure::Malformed)?;
        let alg = Alg::from_name(meta.algorithm())
            .filter(|a| policy.algorithms.contains(a))
            .ok_or(VerifyFailure::DisallowedAlgorithm)?;
        let kid = meta.key_id();
        let mut named = false;
        let mut last = VerifyFailure::UnknownKey;
        for key in &self.keys {
            if kid.is_some() && key.kid.as_deref() != kid {
                continue;
            }
            named = true;
            if key.alg != alg {
                continue;
            }
            match check(&key.key, jwt, &options) {
                // Anything but a bad signature means the signature was good (jwt-simple
                // checks it before the claims): that is the answer. Otherwise try the next
                // key.
                Err(VerifyFailure::BadSignature) => last = VerifyFailure::BadSignature,
                other => return other,
            }
        }
        Err(match last {
            // A key has the token's `kid` but is for another algorithm.
            VerifyFailure::UnknownKey if named && kid.is_some() => {
                VerifyFailure::DisallowedAlgorithm
            }
            other => other,
        })
    }
}

/// Verifies a JWS signature (`signature`, decoded) over `signing_input` with the public key
/// `jwk` for algorithm `alg`: a key the token carries itself, as a DPoP proof's `jwk` header.
/// `jwt-simple` cannot read such a header (it takes `jwk` for a string), so the signature is
/// checked with the primitives directly: ES256 (P-256, `r || s`), EdDSA (Ed25519), RS256 and
/// PS256 (SHA-256). Never HMAC: a shared secret cannot prove possession. The JWK's `kty` (and
/// `crv`) must be the algorithm's; its `alg`, if any, must be `alg`.
pub fn verify_with_jwk(
    jwk: &serde_json::Value,
    alg: Alg,
    signing_input: &[u8],
    signature: &[u8],
) -> Result<(), VerifyFailure> {
    let raw: RawJwk = serde_json::from_value(jwk.clone()).map_err(|_| VerifyFailure::Malformed)?;
    let (kty, crv) = alg.key_type();
    if alg.is_hmac()
        || raw.kty != kty
        || crv.is_some_and(|c| raw.crv.as_deref() != Some(c))
        || raw
            .alg
            .as_deref()
            .is_some_and(|a| a != alg.name() && !(alg == Alg::EdDsa && a == "Ed25519"))
    {
        return Err(VerifyFailure::DisallowedAlgorithm);
    }
    match alg {
        Alg::Es256 => {
            let (x, y) = (b64(raw.x.as_ref()), b64(raw.y.as_ref()));
            let (Some(x), Some(y)) = (x, y) else {
                return Err(VerifyFailure::Malformed);
            };
            if x.len() != 32 || y.len() != 32 {
                return Err(VerifyFailure::Malformed);
            }
            let mut sec1 = vec![4u8];
            sec1.extend_from_slice(&x);
            sec1.extend_from_slice(&y);
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                .map_err(|_| VerifyFailure::Malformed)?;
            if super::es256::verify(&key, signing_input, signature) {
                Ok(())
            } else {
                Err(VerifyFailure::BadSignature)
            }
        }
        Alg::EdDsa => {
            // RFC 8032's strict verification: small-order keys and non-canonical encodings of
            // the key or the signature are refused.
            let x = b64(raw.x.as_ref()).ok_or(VerifyFailure::Malformed)?;
            let x: [u8; 32] = x.try_into().map_err(|_| VerifyFailure::Malformed)?;
            super::ed25519::verify(&x, signing_input, signature).map_err(|e| match e {
                super::ed25519::Refused::Key => VerifyFailure::Malformed,
                super::ed25519::Refused::Signature => VerifyFailure::BadSignature,
            })
        }
        Alg::Rs256 | Alg::Ps256 => {
            use superboring::hash::MessageDigest;
            use superboring::pkey::PKey;
            use superboring::rsa::Padding;
            use superboring::sign::Verifier;
            let (n, e) = (b64(raw.n.as_ref()), b64(raw.e.as_ref()));
            let (Some(n), Some(e)) = (n, e) else {
                return Err(VerifyFailure::Malformed);
            };
            if !rsa_key_is_sound(&n, &e) {
                return Err(VerifyFailure::Malformed);
            }
            let key =
                RS256PublicKey::from_components(&n, &e).map_err(|_| VerifyFailure::Malformed)?;
            let pkey = PKey::from_rsa(key.public_key().as_ref().clone())
                .map_err(|_| VerifyFailure::Malformed)?;
            let mut verifier = Verifier::new(MessageDigest::sha256(), &pkey)
                .map_err(|_| VerifyFailure::Malformed)?;
            let padding = if alg == Alg::Rs256 {
                Padding::PKCS1
            } else {
                Padding::PKCS1_PSS
            };
            verifier
                .set_rsa_padding(padding)
                .map_err(|_| VerifyFailure::Malformed)?;
            verifier
                .update(signing_input)
                .map_err(|_| VerifyFailure::Malformed)?;
            match verifier.verify(signature) {
                Ok(true) => Ok(()),
                _ => Err(VerifyFailure::BadSignature),
            }
        }
        _ => Err(VerifyFailure::DisallowedAlgorithm),
    }
}

/// A key a client brings (a DPoP proof's `jwk`): a modulus of 2048 to 4096 bits (smaller is
/// weak; larger costs every request a slow verification) and an odd public exponent of at
/// least 3 that fits in 32 bits.
fn rsa_key_is_sound(n: &[u8], e: &[u8]) -> bool {
    let strip = |b: &[u8]| -> Vec<u8> { b.iter().copied().skip_while(|x| *x == 0).collect() };
    let (n, e) = (strip(n), strip(e));
    let bits = (n.len() * 8).saturating_sub(n.first().map_or(0, |b| b.leading_zeros() as usize));
    let exponent = e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    (2048..=4096).contains(&bits) && e.len() <= 4 && exponent >= 3 && exponent % 2 == 1
}

/// How old a signed introspection response may be (its `iat`), before the clock skew: it was
/// made for this very request.
pub const INTROSPECTION_MAX_AGE_S: u64 = 60;

/// The custom claims the gateway reads: `token_introspection` of an RFC 9701 response. Every
/// verification reads this one type, so that jwt-simple's verification, generic over it, is
/// compiled once (a copy per type cost 60 KB of the module); other JWTs simply lack it.
#[derive(Serialize, Deserialize, Default)]
struct Custom {
    #[serde(default)]
    token_introspection: Option<serde_json::Value>,
}

/// The JWS header's `typ` is `want` (RFC 7515 §4.1.9: an `application/` prefix may be
/// present; media types are case-insensitive). `required`: a header without `typ` is refused.
fn check_typ(jwt: &str, want: &str, required: bool) -> Result<(), VerifyFailure> {
    if jwt.len() > MAX_TOKEN_BYTES {
        return Err(VerifyFailure::Malformed);
    }
    let meta = Token::decode_metadata(jwt).map_err(|_| VerifyFailure::Malformed)?;
    let Some(typ) = meta.signature_type() else {
        return if required {
            Err(VerifyFailure::Malformed)
        } else {
            Ok(())
        };
    };
    let typ = typ.to_ascii_lowercase();
    if typ.strip_prefix("application/").unwrap_or(&typ) == want {
        Ok(())
    } else {
        Err(VerifyFailure::Malformed)
    }
}

fn options(policy: &Policy, now_s: u64) -> VerificationOptions {
    VerificationOptions {
        allowed_issuers: Some(HashSet::from([policy.issuer.clone()])),
        allowed_audiences: Some(policy.audiences.iter().cloned().collect()),
        time_tolerance: Some(Duration::from_secs(policy.clock_skew_s)),
        artificial_time: Some(UnixTimeStamp::from_secs(now_s)),
        max_token_length: Some(MAX_TOKEN_BYTES),
        max_header_length: Some(MAX_HEADER_BYTES),
        accept_future: false,
        ..VerificationOptions::default()
    }
}

fn check(
    key: &PublicKey,
    jwt: &str,
    options: &VerificationOptions,
) -> Result<JWTClaims<Custom>, VerifyFailure> {
    // One function per algorithm, never inlined into this one: twelve inlined `verify_token`s
    // made a 65 KB function, and V8's optimising compiler needs memory in proportion to the
    // largest function it compiles (BENCHMARKS.md, issue 32).
    macro_rules! each {
        ($($variant:ident($key:ty) => $f:ident,)*) => {{
            $(
                #[inline(never)]
                fn $f(
                    k: &$key,
                    jwt: &str,
                    o: Option<VerificationOptions>,
                ) -> Result<JWTClaims<Custom>, jwt_simple::Error> {
                    k.verify_token::<Custom>(jwt, o)
                }
            )*
            let o = Some(options.clone());
            match key {
                $(PublicKey::$variant(k) => $f(k, jwt, o),)*
            }
        }};
    }
    each! {
        Rs256(RS256PublicKey) => rs256,
        Rs384(RS384PublicKey) => rs384,
        Rs512(RS512PublicKey) => rs512,
        Ps256(PS256PublicKey) => ps256,
        Ps384(PS384PublicKey) => ps384,
        Ps512(PS512PublicKey) => ps512,
        Es256(ES256PublicKey) => es256,
        Es384(ES384PublicKey) => es384,
        EdDsa(Ed25519PublicKey) => eddsa,
        Hs256(HS256Key) => hs256,
        Hs384(HS384Key) => hs384,
        Hs512(HS512Key) => hs512,
    }
    .map_err(|e| classify(&e))
}

fn classify(e: &jwt_simple::Error) -> VerifyFailure {
    match e.downcast_ref::<JWTError>() {
        Some(JWTError::InvalidSignature | JWTError::InvalidAuthenticationTag) => {
            VerifyFailure::BadSignature
        }
        Some(JWTError::AlgorithmMismatch) => VerifyFailure::DisallowedAlgorithm,
        Some(JWTError::TokenHasExpired) => VerifyFailure::Expired,
        Some(JWTError::TokenNotValidYet | JWTError::ClockDrift) => VerifyFailure::NotYetValid,
        Some(JWTError::RequiredIssuerMismatch | JWTError::RequiredIssuerMissing) => {
            VerifyFailure::WrongIssuer
        }
        Some(JWTError::RequiredAudienceMismatch | JWTError::RequiredAudienceMissing) => {
            VerifyFailure::WrongAudience
        }
        Some(_) => VerifyFailure::Malformed,
        // Undecodable JSON is a malformed token; any other error comes from the signature
        // primitive (a signature of the wrong length or out of range): a bad signature.
        None if e.downcast_ref::<serde_json::Error>().is_some() => VerifyFailure::Malformed,
        None => VerifyFailure::BadSignature,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 2048-bit RSA key generated for these tests only (`openssl genpkey`); never used anywhere
    /// else.
    const RSA_PEM: &str = include_str!("testdata/rsa2048-test-only.pem");
    pub const NOW: u64 = 1_700_000_000;
    pub const ISS: &str = "https://login.example.com";

    pub fn policy(algorithms: &[Alg]) -> Policy {
        Policy {
            issuer: ISS.into(),
            audiences: vec!["api.example.com".into(), "other".into()],
            algorithms: algorithms.to_vec(),
            clock_skew_s: 30,
        }
    }

    /// Claims valid at [`NOW`]: `{"iss": ISS, "aud": "api.example.com", "exp": NOW+300, "iat": NOW}`.
    pub fn claims() -> JWTClaims<NoCustomClaims> {
        let mut c = Claims::create(Duration::from_secs(300))
            .with_issuer(ISS)
            .with_audience("api.example.com");
        c.issued_at = Some(UnixTimeStamp::from_secs(NOW));
        c.invalid_before = Some(UnixTimeStamp::from_secs(NOW));
        c.expires_at = Some(UnixTimeStamp::from_secs(NOW + 300));
        c
    }

    pub struct Keys {
        pub rsa: RS256KeyPair,
        pub ec: ES256KeyPair,
        pub ed: Ed25519KeyPair,
    }

    pub fn keys() -> Keys {
        Keys {
            rsa: RS256KeyPair::from_pem(RSA_PEM)
                .unwrap()
                .with_key_id("rsa-1"),
            ec: ES256KeyPair::generate().with_key_id("ec-1"),
            ed: Ed25519KeyPair::generate().with_key_id("ed-1"),
        }
    }

    fn b64u(b: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(b)
    }

    /// The public JWK Set of `keys`, as a token service publishes it.
    pub fn jwks(k: &Keys) -> String {
        let rsa = k.rsa.public_key().to_components();
        let ec = k.ec.public_key().public_key().to_bytes_uncompressed();
        let ed = k.ed.public_key().to_bytes();
        serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "rsa-1", "use": "sig", "n": b64u(&rsa.n), "e": b64u(&rsa.e)},
            {"kty": "EC", "kid": "ec-1", "crv": "P-256", "alg": "ES256",
             "x": b64u(&ec[1..33]), "y": b64u(&ec[33..])},
            {"kty": "OKP", "kid": "ed-1", "crv": "Ed25519", "x": b64u(&ed)},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": b64u(&rsa.n), "e": b64u(&rsa.e)},
            {"kty": "oct", "kid": "secret", "k": b64u(&[7u8; 32])},
        ]})
        .to_string()
    }

    fn all() -> Vec<Alg> {
        vec![Alg::Rs256, Alg::Es256, Alg::EdDsa]
    }

    fn set(k: &Keys) -> KeySet {
        KeySet::parse(jwks(k).as_bytes(), &all(), false).unwrap()
    }

    /// Replaces the JWT's header with `header` (JSON), keeping payload and signature.
    fn with_header(jwt: &str, header: &str) -> String {
        let mut parts = jwt.splitn(2, '.');
        parts.next();
        format!("{}.{}", b64u(header.as_bytes()), parts.next().unwrap())
    }

    #[test]
    fn loads_only_signing_keys_for_allowed_algorithms() {
        let k = keys();
        let s = set(&k);
        assert_eq!(
            s.describe(),
            r#"[("rsa-1", "RS256"), ("ec-1", "ES256"), ("ed-1", "EdDSA")]"#
        );
        let only_ec = KeySet::parse(jwks(&k).as_bytes(), &[Alg::Es256, Alg::Hs256], false).unwrap();
        assert_eq!(
            only_ec.len(),
            1,
            "oct keys are not loaded from a fetched set"
        );
        let with_secret = KeySet::parse(jwks(&k).as_bytes(), &[Alg::Hs256], true).unwrap();
        assert_eq!(with_secret.describe(), r#"[("secret", "HS256")]"#);
        let rsa_both =
            KeySet::parse(jwks(&k).as_bytes(), &[Alg::Rs256, Alg::Ps256], false).unwrap();
        assert_eq!(
            rsa_both.len(),
            2,
            "an RSA key without alg serves each allowed RSA algorithm"
        );
        assert_eq!(
            KeySet::parse(jwks(&k).as_bytes(), &[Alg::Es384], false).unwrap_err(),
            JwksError::NoUsableKey(5)
        );
        assert!(matches!(
            KeySet::parse(b"{}", &all(), false),
            Err(JwksError::Malformed(_))
        ));
        assert!(matches!(
            KeySet::parse(b"[", &all(), false),
            Err(JwksError::Malformed(_))
        ));
        let big = vec![b' '; MAX_JWKS_BYTES + 1];
        assert_eq!(
            KeySet::parse(&big, &all(), false).unwrap_err(),
            JwksError::TooLarge
        );
        let bad_ec = r#"{"keys":[{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"}]}"#;
        assert_eq!(
            KeySet::parse(bad_ec.as_bytes(), &all(), false).unwrap_err(),
            JwksError::NoUsableKey(1)
        );
    }

    #[test]
    fn valid_rs256_es256_and_eddsa_tokens_verify() {
        let k = keys();
        let (s, p) = (set(&k), policy(&all()));
        for jwt in [
            k.rsa.sign(claims()).unwrap(),
            k.ec.sign(claims()).unwrap(),
            k.ed.sign(claims()).unwrap(),
        ] {
            assert_eq!(s.verify(&p, &jwt, NOW), Ok(()), "{}", &jwt[..20]);
        }
        // Without a kid, every key of the token's algorithm is tried.
        let ec = ES256KeyPair::from_bytes(&k.ec.to_bytes()).unwrap();
        assert_eq!(s.verify(&p, &ec.sign(claims()).unwrap(), NOW), Ok(()));
    }

    #[test]
    fn every_supported_asymmetric_algorithm_verifies() {
        let es384 = ES384KeyPair::generate().with_key_id("p384");
        let p384 = es384.public_key().public_key().to_bytes_uncompressed();
        let rsa = RS256KeyPair::from_pem(RSA_PEM)
            .unwrap()
            .public_key()
            .to_components();
        let doc = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "rsa", "n": b64u(&rsa.n), "e": b64u(&rsa.e)},
            {"kty": "EC", "kid": "p384", "crv": "P-384", "x": b64u(&p384[1..49]), "y": b64u(&p384[49..])},
        ]})
        .to_string();
        let algs = [
            Alg::Rs256,
            Alg::Rs384,
            Alg::Rs512,
            Alg::Ps256,
            Alg::Ps384,
            Alg::Ps512,
            Alg::Es384,
        ];
        let s = KeySet::parse(doc.as_bytes(), &algs, false).unwrap();
        assert_eq!(s.len(), 7, "{}", s.describe());
        let p = policy(&algs);
        let tokens = [
            (
                "RS384",
                RS384KeyPair::from_pem(RSA_PEM)
                    .unwrap()
                    .with_key_id("rsa")
                    .sign(claims()),
            ),
            (
                "RS512",
                RS512KeyPair::from_pem(RSA_PEM)
                    .unwrap()
                    .with_key_id("rsa")
                    .sign(claims()),
            ),
            (
                "PS256",
                PS256KeyPair::from_pem(RSA_PEM)
                    .unwrap()
                    .with_key_id("rsa")
                    .sign(claims()),
            ),
            (
                "PS384",
                PS384KeyPair::from_pem(RSA_PEM)
                    .unwrap()
                    .with_key_id("rsa")
                    .sign(claims()),
            ),
            (
                "PS512",
                PS512KeyPair::from_pem(RSA_PEM)
                    .unwrap()
                    .with_key_id("rsa")
                    .sign(claims()),
            ),
            ("ES384", es384.sign(claims())),
        ];
        for (name, jwt) in tokens {
            assert_eq!(s.verify(&p, &jwt.unwrap(), NOW), Ok(()), "{name}");
        }
    }

    #[test]
    fn refuses_each_bad_token_with_its_reason() {
        let k = keys();
        let (s, p) = (set(&k), policy(&all()));
        let good = k.ec.sign(claims()).unwrap();
        let other = ES256KeyPair::generate().with_key_id("ec-1");
        let c = |f: fn(&mut JWTClaims<NoCustomClaims>)| {
            let mut c = claims();
            f(&mut c);
            k.ec.sign(c).unwrap()
        };
        let cases: Vec<(&str, String, VerifyFailure)> = vec![
            (
                "bad signature",
                other.sign(claims()).unwrap(),
                VerifyFailure::BadSignature,
            ),
            (
                "signature of another token",
                {
                    let other_sig = c(|c| c.subject = Some("x".into()));
                    let (hp, _) = good.rsplit_once('.').unwrap();
                    format!("{hp}.{}", other_sig.rsplit_once('.').unwrap().1)
                },
                VerifyFailure::BadSignature,
            ),
            (
                "truncated signature",
                good[..good.len() - 4].to_owned(),
                VerifyFailure::BadSignature,
            ),
            (
                "unknown kid",
                ES256KeyPair::generate()
                    .with_key_id("new")
                    .sign(claims())
                    .unwrap(),
                VerifyFailure::UnknownKey,
            ),
            (
                "alg none",
                with_header(&good, r#"{"alg":"none","kid":"ec-1"}"#),
                VerifyFailure::DisallowedAlgorithm,
            ),
            (
                "alg lower case",
                with_header(&good, r#"{"alg":"es256","kid":"ec-1"}"#),
                VerifyFailure::DisallowedAlgorithm,
            ),
            (
                "disallowed algorithm",
                {
                    let ps = PS256KeyPair::from_pem(RSA_PEM)
                        .unwrap()
                        .with_key_id("rsa-1");
                    ps.sign(claims()).unwrap()
                },
                VerifyFailure::DisallowedAlgorithm,
            ),
            (
                "kid of a key for another algorithm",
                with_header(&good, r#"{"alg":"ES256","kid":"rsa-1"}"#),
                VerifyFailure::DisallowedAlgorithm,
            ),
            (
                "wrong issuer",
                c(|c| c.issuer = Some("https://evil.example.com".into())),
                VerifyFailure::WrongIssuer,
            ),
            (
                "no issuer",
                c(|c| c.issuer = None),
                VerifyFailure::WrongIssuer,
            ),
            (
                "wrong audience",
                c(|c| c.audiences = Some(Audiences::AsString("other-api".into()))),
                VerifyFailure::WrongAudience,
            ),
            (
                "no audience",
                c(|c| c.audiences = None),
                VerifyFailure::WrongAudience,
            ),
            (
                "expired",
                c(|c| c.expires_at = Some(UnixTimeStamp::from_secs(NOW - 31))),
                VerifyFailure::Expired,
            ),
            (
                "nbf in the future",
                c(|c| c.invalid_before = Some(UnixTimeStamp::from_secs(NOW + 31))),
                VerifyFailure::NotYetValid,
            ),
            (
                "iat in the future",
                c(|c| {
                    c.issued_at = Some(UnixTimeStamp::from_secs(NOW + 31));
                    c.invalid_before = None;
                }),
                VerifyFailure::NotYetValid,
            ),
            (
                "no exp",
                c(|c| c.expires_at = None),
                VerifyFailure::Malformed,
            ),
            (
                "two segments",
                good.rsplit_once('.').unwrap().0.to_owned(),
                VerifyFailure::Malformed,
            ),
            (
                "crit",
                with_header(&good, r#"{"alg":"ES256","kid":"ec-1","crit":["x"]}"#),
                VerifyFailure::Malformed,
            ),
            ("empty", String::new(), VerifyFailure::Malformed),
        ];
        for (name, jwt, want) in cases {
            assert_eq!(s.verify(&p, &jwt, NOW), Err(want), "{name}");
        }
    }

    #[test]
    fn skew_is_allowed_both_ways() {
        let k = keys();
        let (s, p) = (set(&k), policy(&all()));
        let mut c = claims();
        c.expires_at = Some(UnixTimeStamp::from_secs(NOW - 30));
        c.invalid_before = Some(UnixTimeStamp::from_secs(NOW + 30));
        assert_eq!(s.verify(&p, &k.ed.sign(c).unwrap(), NOW), Ok(()));
    }

    #[test]
    fn hs256_signed_with_the_public_key_is_refused() {
        // The classic confusion attack: HMAC keyed with the RSA public key's bytes. Refused
        // whether or not HS256 is allowed, since no HMAC key comes from a fetched set.
        let k = keys();
        let pem = k.rsa.public_key().to_pem().unwrap();
        let forged = HS256Key::from_bytes(pem.as_bytes())
            .with_key_id("rsa-1")
            .authenticate(claims())
            .unwrap();
        assert_eq!(
            set(&k).verify(&policy(&all()), &forged, NOW),
            Err(VerifyFailure::DisallowedAlgorithm)
        );
        let with_hs = [Alg::Rs256, Alg::Hs256];
        let s = KeySet::parse(jwks(&k).as_bytes(), &with_hs, false).unwrap();
        assert_eq!(
            s.verify(&policy(&with_hs), &forged, NOW),
            Err(VerifyFailure::DisallowedAlgorithm)
        );
        let forged_no_kid = HS256Key::from_bytes(pem.as_bytes())
            .authenticate(claims())
            .unwrap();
        assert_eq!(
            s.verify(&policy(&with_hs), &forged_no_kid, NOW),
            Err(VerifyFailure::UnknownKey)
        );
    }

    #[test]
    fn an_inline_hmac_key_verifies_when_configured() {
        let k = keys();
        let s = KeySet::parse(jwks(&k).as_bytes(), &[Alg::Hs256], true).unwrap();
        let key = HS256Key::from_bytes(&[7u8; 32]).with_key_id("secret");
        let jwt = key.authenticate(claims()).unwrap();
        assert_eq!(s.verify(&policy(&[Alg::Hs256]), &jwt, NOW), Ok(()));
        let wrong = HS256Key::from_bytes(&[8u8; 32]).with_key_id("secret");
        assert_eq!(
            s.verify(
                &policy(&[Alg::Hs256]),
                &wrong.authenticate(claims()).unwrap(),
                NOW
            ),
            Err(VerifyFailure::BadSignature)
        );
    }

    #[test]
    fn jku_and_x5u_in_the_header_are_ignored() {
        let k = keys();
        let attacker = ES256KeyPair::generate().with_key_id("ec-1");
        let jwt = attacker.sign(claims()).unwrap();
        let (_, rest) = jwt.split_once('.').unwrap();
        let header =
            r#"{"alg":"ES256","kid":"ec-1","jku":"https://evil/jwks","x5u":"https://evil/c"}"#;
        let forged = format!("{}.{rest}", b64u(header.as_bytes()));
        assert_eq!(
            set(&k).verify(&policy(&all()), &forged, NOW),
            Err(VerifyFailure::BadSignature)
        );
    }

    /// An RFC 9701 response as a token service signs it: `typ`, `iss`, `aud` = the gateway's
    /// client id, `iat`, and the introspection under `token_introspection`.
    pub fn signed_introspection(
        key: &ES256KeyPair,
        typ: &str,
        aud: &str,
        iat: Option<u64>,
        active: bool,
    ) -> String {
        let mut c = Claims::with_custom_claims(
            serde_json::json!({"token_introspection": {
                "active": active, "sub": "alice", "scope": "read", "exp": NOW + 600,
                "client_id": "app", "iss": ISS}}),
            Duration::from_secs(60),
        )
        .with_issuer(ISS)
        .with_audience(aud);
        c.issued_at = iat.map(UnixTimeStamp::from_secs);
        c.expires_at = None;
        c.invalid_before = None;
        let opts = HeaderOptions {
            signature_type: Some(typ.to_owned()),
            ..HeaderOptions::default()
        };
        key.sign_with_options(c, &opts).unwrap()
    }

    /// A back-channel logout token as an OpenID Provider signs it, with `change` applied to
    /// its claims and `typ` in its header.
    pub fn logout_token(
        key: &ES256KeyPair,
        typ: Option<&str>,
        change: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
    ) -> String {
        let mut claims = serde_json::json!({
            "iss": ISS, "aud": "web", "iat": NOW, "exp": NOW + 120, "jti": "j-1",
            "sub": "alice", "sid": "s-1",
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        })
        .as_object()
        .unwrap()
        .clone();
        change(&mut claims);
        let mut header = serde_json::json!({"alg": "ES256", "kid": "ec-1"});
        if let Some(typ) = typ {
            header["typ"] = typ.into();
        }
        es256_jws(key, &header, &serde_json::Value::Object(claims))
    }

    /// A compact JWS of `claims` under `header`, signed with `key` (ES256).
    pub fn es256_jws(
        key: &ES256KeyPair,
        header: &serde_json::Value,
        claims: &serde_json::Value,
    ) -> String {
        use p256::ecdsa::signature::Signer as _;
        let input = format!(
            "{}.{}",
            b64u(header.to_string().as_bytes()),
            b64u(claims.to_string().as_bytes())
        );
        let signer = p256::ecdsa::SigningKey::from_slice(&key.to_bytes()).unwrap();
        let signature: p256::ecdsa::Signature = signer.sign(input.as_bytes());
        format!("{input}.{}", b64u(&signature.to_bytes()))
    }

    #[test]
    fn logout_tokens_are_verified_per_backchannel_logout() {
        let k = keys();
        let keys = set(&k);
        let p = policy(&all());
        let audiences = ["web".to_owned(), "spa".to_owned()];
        let verify = |jwt: &str| keys.verify_logout(&p, &audiences, jwt, NOW + 5);
        for typ in [None, Some("logout+jwt"), Some("application/Logout+JWT")] {
            let good = logout_token(&k.ec, typ, |_| {});
            assert_eq!(verify(&good).unwrap()["sub"], "alice", "{typ:?}");
        }
        let set = |name: &str, value: serde_json::Value| {
            let name = name.to_owned();
            move |c: &mut serde_json::Map<String, serde_json::Value>| drop(c.insert(name, value))
        };
        let cases = [
            (
                "typ of an ID token",
                logout_token(&k.ec, Some("JWT"), |_| {}),
                VerifyFailure::Malformed,
            ),
            (
                "another audience",
                logout_token(&k.ec, None, set("aud", "api".into())),
                VerifyFailure::WrongAudience,
            ),
            (
                "another issuer",
                logout_token(&k.ec, None, set("iss", "https://evil".into())),
                VerifyFailure::WrongIssuer,
            ),
            (
                "issued in the future",
                logout_token(&k.ec, None, set("iat", (NOW + 600).into())),
                VerifyFailure::NotYetValid,
            ),
            (
                "expired",
                logout_token(&k.ec, None, set("exp", (NOW - 600).into())),
                VerifyFailure::Expired,
            ),
            (
                "signed by another key",
                logout_token(&ES256KeyPair::generate(), None, |_| {}),
                VerifyFailure::BadSignature,
            ),
        ];
        for (what, jwt, failure) in cases {
            assert_eq!(verify(&jwt).err(), Some(failure), "{what}");
        }
        let audience_list = logout_token(&k.ec, None, set("aud", serde_json::json!(["x", "spa"])));
        assert!(
            verify(&audience_list).is_ok(),
            "one of the audiences suffices"
        );
    }

    #[test]
    fn signed_introspection_responses_are_checked_per_rfc9701() {
        let k = keys();
        let keys = set(&k);
        let p = policy(&all());
        let good = signed_introspection(&k.ec, "token-introspection+jwt", "gw", Some(NOW), true);
        let claims = keys.verify_introspection(&p, "gw", &good, NOW + 5).unwrap();
        assert_eq!(claims["active"], true);
        assert_eq!(claims["sub"], "alice");
        let prefixed = signed_introspection(
            &k.ec,
            "application/token-introspection+JWT",
            "gw",
            Some(NOW),
            false,
        );
        assert_eq!(
            keys.verify_introspection(&p, "gw", &prefixed, NOW).unwrap()["active"],
            false
        );
        let cases = [
            // Wrong audience: made for another client (or a token for the APIs).
            (
                signed_introspection(
                    &k.ec,
                    "token-introspection+jwt",
                    "api.example.com",
                    Some(NOW),
                    true,
                ),
                NOW,
                VerifyFailure::WrongAudience,
            ),
            // Wrong type: an access token or ID token is not an introspection response.
            (
                signed_introspection(&k.ec, "JWT", "gw", Some(NOW), true),
                NOW,
                VerifyFailure::Malformed,
            ),
            // No iat, and a replayed old answer.
            (
                signed_introspection(&k.ec, "token-introspection+jwt", "gw", None, true),
                NOW,
                VerifyFailure::Malformed,
            ),
            (
                good.clone(),
                NOW + INTROSPECTION_MAX_AGE_S + 31,
                VerifyFailure::Malformed,
            ),
            // From the future.
            (good.clone(), NOW - 31, VerifyFailure::NotYetValid),
        ];
        for (jwt, at, want) in cases {
            assert_eq!(keys.verify_introspection(&p, "gw", &jwt, at), Err(want));
        }
        // A forged signature: the payload of an active answer on an inactive one's signature.
        let inactive =
            signed_introspection(&k.ec, "token-introspection+jwt", "gw", Some(NOW), false);
        let g: Vec<&str> = good.split('.').collect();
        let i: Vec<&str> = inactive.split('.').collect();
        let forged = format!("{}.{}.{}", g[0], g[1], i[2]);
        assert_eq!(
            keys.verify_introspection(&p, "gw", &forged, NOW),
            Err(VerifyFailure::BadSignature)
        );
        // Signed by a key that is not in the set.
        let stranger = ES256KeyPair::generate().with_key_id("ec-1");
        let other =
            signed_introspection(&stranger, "token-introspection+jwt", "gw", Some(NOW), true);
        assert_eq!(
            keys.verify_introspection(&p, "gw", &other, NOW),
            Err(VerifyFailure::BadSignature)
        );
    }

    #[test]
    fn signatures_with_a_carried_jwk_rs256_and_ps256() {
        use superboring::hash::MessageDigest;
        use superboring::pkey::PKey;
        use superboring::rsa::Padding;
        use superboring::sign::Signer;
        let pair = RS256KeyPair::from_pem(RSA_PEM).unwrap();
        let c = pair.public_key().to_components();
        let jwk = serde_json::json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(&c.n),
                                     "e": URL_SAFE_NO_PAD.encode(&c.e)});
        let pkey = PKey::from_rsa(pair.key_pair().as_ref().clone()).unwrap();
        for (alg, padding) in [
            (Alg::Rs256, Padding::PKCS1),
            (Alg::Ps256, Padding::PKCS1_PSS),
        ] {
            let mut signer = Signer::new(MessageDigest::sha256(), &pkey).unwrap();
            signer.set_rsa_padding(padding).unwrap();
            signer.update(b"h.p").unwrap();
            let sig = signer.sign_to_vec().unwrap();
            assert_eq!(verify_with_jwk(&jwk, alg, b"h.p", &sig), Ok(()), "{alg:?}");
            assert_eq!(
                verify_with_jwk(&jwk, alg, b"h.q", &sig),
                Err(VerifyFailure::BadSignature),
                "{alg:?}"
            );
        }
        // A key of another type, or HMAC, never verifies.
        assert_eq!(
            verify_with_jwk(&jwk, Alg::Es256, b"h.p", b"x"),
            Err(VerifyFailure::DisallowedAlgorithm)
        );
        assert_eq!(
            verify_with_jwk(
                &serde_json::json!({"kty": "oct", "k": "AAAA"}),
                Alg::Hs256,
                b"h.p",
                b"x"
            ),
            Err(VerifyFailure::DisallowedAlgorithm)
        );
    }

    #[test]
    fn weak_carried_keys_never_verify() {
        use sha2::{Digest, Sha256};
        // RSA with e = 1: the PKCS#1 v1.5 encoding of the hash is its own signature.
        let digest_info: [u8; 19] = [
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ];
        let hash = Sha256::digest(b"h.p");
        let mut em = vec![0x00, 0x01];
        em.resize(256 - 19 - 32 - 1, 0xff);
        em.push(0x00);
        em.extend_from_slice(&digest_info);
        em.extend_from_slice(&hash);
        let n = vec![0xffu8; 256];
        let e1 = serde_json::json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(&n), "e": "AQ"});
        assert!(verify_with_jwk(&e1, Alg::Rs256, b"h.p", &em).is_err());
        // Moduli too small to trust, or too large to verify cheaply.
        for bits in [1024usize, 8192] {
            let n = vec![0xffu8; bits / 8];
            let jwk =
                serde_json::json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(&n), "e": "AQAB"});
            assert_eq!(
                verify_with_jwk(&jwk, Alg::Rs256, b"h.p", &vec![1u8; bits / 8]),
                Err(VerifyFailure::Malformed),
                "{bits}"
            );
        }
        let empty = serde_json::json!({"kty": "RSA", "n": "", "e": ""});
        assert_eq!(
            verify_with_jwk(&empty, Alg::Rs256, b"h.p", &[1]),
            Err(VerifyFailure::Malformed)
        );
        // Ed25519's identity point with the signature (R = identity, S = 0): valid for any
        // message under a lax verifier.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut sig = [0u8; 64];
        sig[0] = 1;
        let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(identity)});
        assert!(verify_with_jwk(&jwk, Alg::EdDsa, b"h.p", &sig).is_err());
        // P-256: r = s = 0, and a point not on the curve.
        let ec = serde_json::json!({"kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode([1u8; 32]), "y": URL_SAFE_NO_PAD.encode([2u8; 32])});
        assert!(verify_with_jwk(&ec, Alg::Es256, b"h.p", &[0u8; 64]).is_err());
    }
}
