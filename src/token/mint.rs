//! JWTs minted by the gateway from introspected claims (RFC 7662 JSON, or the
//! `token_introspection` member of an RFC 9701 response), for token services that do not hand
//! out a JWT themselves.
//!
//! Only allow-listed claims are copied. `iss`, `aud`, `iat` and `exp` are always the
//! gateway's: `iss` and `aud` from the configuration, `iat` the time of minting, and `exp` the
//! earlier of the token's own `exp` and now plus `max_lifetime_s`. The header names the
//! configured `kid`; the APIs verify the JWT with the public key the filter serves as a JWK Set
//! at `jwks_path`. The private key is never printed (see the `Debug` impls).

use std::fmt;
use std::rc::Rc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_simple::prelude::*;
use serde_json::{json, Map, Value};

use crate::token::claims::Binding;
use crate::token::jwt::{self, Claims};

/// Claims the gateway always sets itself: naming them in `claims` has no effect.
pub const GATEWAY_CLAIMS: [&str; 5] = ["iss", "aud", "iat", "exp", "nbf"];
/// Largest introspected value copied into a minted JWT (one claim, serialised).
pub const MAX_CLAIM_BYTES: usize = 4 * 1024;

/// The signature algorithms the gateway mints with.
#[derive(Clone)]
pub enum SigningKey {
    Es256(Rc<ES256KeyPair>),
    EdDsa(Rc<Ed25519KeyPair>),
}

impl SigningKey {
    pub const NAMES: [&'static str; 2] = ["ES256", "EdDSA"];

    /// Loads a PKCS#8 PEM private key for `algorithm`. The error never includes the key.
    pub fn from_pem(algorithm: &str, pem: &str, kid: &str) -> Result<Self, &'static str> {
        match algorithm {
            "ES256" => ES256KeyPair::from_pem(pem)
                .map(|k| SigningKey::Es256(Rc::new(k.with_key_id(kid))))
                .map_err(|_| "is not a P-256 private key in PEM (PKCS#8 or SEC1)"),
            "EdDSA" => Ed25519KeyPair::from_pem(pem)
                .map(|k| SigningKey::EdDsa(Rc::new(k.with_key_id(kid))))
                .map_err(|_| "is not an Ed25519 private key in PEM (PKCS#8)"),
            _ => Err("unsupported algorithm"),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            SigningKey::Es256(_) => "ES256",
            SigningKey::EdDsa(_) => "EdDSA",
        }
    }

    /// The public key as a JWK (RFC 7517, RFC 7518 §6.2, RFC 8037 §2).
    pub fn public_jwk(&self, kid: &str) -> Value {
        match self {
            SigningKey::Es256(k) => {
                let point = k.public_key().public_key().to_bytes_uncompressed();
                // SEC1 uncompressed: 0x04 || x (32 bytes) || y (32 bytes).
                let (x, y) = point
                    .get(1..)
                    .unwrap_or(&[])
                    .split_at(32.min(point.len() / 2));
                json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(x),
                       "y": URL_SAFE_NO_PAD.encode(y), "kid": kid, "alg": "ES256", "use": "sig"})
            }
            SigningKey::EdDsa(k) => {
                let x = k.public_key().to_bytes();
                json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(x),
                       "kid": kid, "alg": "EdDSA", "use": "sig"})
            }
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(<private key redacted>)", self.name())
    }
}

/// `phantom.mint`, validated.
#[derive(Debug, Clone)]
pub struct MintConfig {
    pub issuer: String,
    pub audience: String,
    pub key: SigningKey,
    pub key_id: String,
    /// Claims copied from the introspection when present (the gateway's own claims removed).
    pub claims: Vec<String>,
    pub max_lifetime_s: u64,
    /// Where the filter answers with `jwks`; `None` when not served.
    pub jwks_path: Option<String>,
    /// The public JWK Set document.
    pub jwks: String,
    /// Identifies the minting rules and the public key: part of the cache namespace.
    pub fingerprint: String,
}

/// Why no JWT was minted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MintError {
    /// The introspected `exp` is in the past: the token is not active.
    Expired,
    /// An introspected claim the gateway reads (`exp`, `scope`) or copies is unusable.
    BadClaims,
    /// The signature could not be made.
    Signing,
}

/// A JWT minted for one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    pub jwt: String,
    /// `exp` of the minted JWT, and the scopes of the introspected token.
    pub claims: Claims,
}

/// Mints the JWT forwarded for an active token described by `introspected`.
pub fn mint(
    cfg: &MintConfig,
    introspected: &Map<String, Value>,
    now_s: u64,
) -> Result<Minted, MintError> {
    // `exp` and `scope` are read with the same rules as a JWT's.
    let read = jwt::claims_of(introspected).map_err(|_| MintError::BadClaims)?;
    let cap = now_s.saturating_add(cfg.max_lifetime_s);
    let exp = match read.exp {
        Some(exp) if exp <= now_s => return Err(MintError::Expired),
        Some(exp) => exp.min(cap),
        None => cap,
    };
    // RFC 9449 §6.2: a DPoP-bound token is introspected with `token_type` DPoP and `cnf.jkt`;
    // one without the other is not an answer to trust.
    let binding = Binding::of(introspected);
    let dpop_type = introspected
        .get("token_type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("dpop"));
    if dpop_type && binding.jkt.is_none() {
        return Err(MintError::BadClaims);
    }
    let mut custom = Map::new();
    // The binding always travels with the token, whatever `claims` says: the API sees it, and
    // the gateway enforces it on every hit (it is read back from the minted JWT).
    if let Some(cnf) = introspected.get("cnf") {
        custom.insert("cnf".to_owned(), cnf.clone());
    }
    for name in &cfg.claims {
        if GATEWAY_CLAIMS.contains(&name.as_str()) {
            continue;
        }
        if let Some(value) = introspected.get(name) {
            if serde_json::to_vec(value).map_or(true, |v| v.len() > MAX_CLAIM_BYTES) {
                return Err(MintError::BadClaims);
            }
            custom.insert(name.clone(), value.clone());
        }
    }
    // The struct's own fields carry only the gateway's claims: `sub`, `jti` and `nonce`, when
    // copied, are in `custom` and the struct leaves them out, so no member appears twice.
    let claims = JWTClaims {
        issued_at: Some(UnixTimeStamp::from_secs(now_s)),
        expires_at: Some(UnixTimeStamp::from_secs(exp)),
        invalid_before: None,
        issuer: Some(cfg.issuer.clone()),
        subject: None,
        audiences: Some(Audiences::AsString(cfg.audience.clone())),
        jwt_id: None,
        nonce: None,
        custom,
    };
    let jwt = match &cfg.key {
        SigningKey::Es256(k) => k.sign(claims),
        SigningKey::EdDsa(k) => k.sign(claims),
    }
    .map_err(|_| MintError::Signing)?;
    Ok(Minted {
        jwt,
        claims: Claims {
            exp: Some(exp),
            scope: read.scope,
        },
    })
}

/// The JWK Set served at `jwks_path`.
pub fn jwks_document(key: &SigningKey, kid: &str) -> String {
    json!({ "keys": [key.public_jwk(kid)] }).to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::token::jws::{Alg, KeySet, Policy};

    /// Test-only keys, generated for these tests (`openssl genpkey`); never used anywhere else.
    pub(crate) const EC_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgzO0CeVC5OUGdNTIS
U1FCBy1eTAnnwIvi+XjVv7d+1FOhRANCAARDwFFSuZUrUFkQEL5QSVVdSaUaztwV
zdNdzUcR6g3iBRM+ImoDCMmhYuo7XNRY3mZmxR0uA0PPCFdE7C8qWmoB
-----END PRIVATE KEY-----";

    pub(crate) fn config(key: SigningKey, claims: &[&str]) -> MintConfig {
        let jwks = jwks_document(&key, "gw-1");
        MintConfig {
            issuer: "https://gateway.example.com".into(),
            audience: "internal-apis".into(),
            key,
            key_id: "gw-1".into(),
            claims: claims.iter().map(|c| (*c).to_owned()).collect(),
            max_lifetime_s: 300,
            jwks_path: Some("/.well-known/gateway-jwks.json".into()),
            jwks,
            fingerprint: String::new(),
        }
    }

    fn es256() -> SigningKey {
        SigningKey::from_pem("ES256", EC_PEM, "gw-1").unwrap()
    }

    fn ed25519() -> SigningKey {
        let pem = Ed25519KeyPair::generate().to_pem();
        SigningKey::from_pem("EdDSA", &pem, "gw-1").unwrap()
    }

    fn introspected(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    fn payload(jwt: &str) -> String {
        let p = jwt.split('.').nth(1).unwrap();
        String::from_utf8(URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
    }

    fn gateway_policy(alg: Alg) -> Policy {
        Policy {
            issuer: "https://gateway.example.com".into(),
            audiences: vec!["internal-apis".into()],
            algorithms: vec![alg],
            clock_skew_s: 0,
        }
    }

    const NOW: u64 = 1_900_000_000;

    #[test]
    fn minted_jwts_verify_against_the_served_jwks() {
        for (key, alg) in [(es256(), Alg::Es256), (ed25519(), Alg::EdDsa)] {
            let cfg = config(key, &["sub", "scope", "client_id"]);
            let m = mint(
                &cfg,
                &introspected(r#"{"active":true,"sub":"alice","scope":"read write","exp":1900000100,"client_id":"app","iss":"https://as"}"#),
                NOW,
            )
            .unwrap();
            let keys = KeySet::parse(cfg.jwks.as_bytes(), &[alg], false).unwrap();
            assert_eq!(keys.len(), 1);
            keys.verify(&gateway_policy(alg), &m.jwt, NOW + 1).unwrap();
            // The verification keys of another party do not verify it.
            let other = KeySet::parse(
                crate::token::jws::tests::jwks(&crate::token::jws::tests::keys()).as_bytes(),
                &[alg],
                false,
            )
            .unwrap();
            assert!(other.verify(&gateway_policy(alg), &m.jwt, NOW).is_err());
            assert_eq!(
                m.claims,
                Claims {
                    exp: Some(1_900_000_100),
                    scope: "read write".into()
                }
            );
            let header = String::from_utf8(
                URL_SAFE_NO_PAD
                    .decode(m.jwt.split('.').next().unwrap())
                    .unwrap(),
            )
            .unwrap();
            assert!(header.contains(r#""kid":"gw-1""#), "{header}");
        }
    }

    #[test]
    fn only_allow_listed_claims_are_copied_and_gateway_claims_win() {
        let cfg = config(
            es256(),
            &["sub", "scope", "aud", "iss", "exp", "iat", "jti"],
        );
        let m = mint(
            &cfg,
            &introspected(
                r#"{"active":true,"sub":"alice","scope":"read","exp":1900000100,"iat":1,
                    "aud":"someone-else","iss":"https://as","jti":"j1","secret":"s","client_id":"app"}"#,
            ),
            NOW,
        )
        .unwrap();
        let p: Map<String, Value> = serde_json::from_str(&payload(&m.jwt)).unwrap();
        let names: Vec<&str> = p.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["aud", "exp", "iat", "iss", "jti", "scope", "sub"],
            "{p:?}"
        );
        assert_eq!(p["iss"], "https://gateway.example.com");
        assert_eq!(p["aud"], "internal-apis");
        assert_eq!(p["iat"], NOW);
        assert_eq!(p["sub"], "alice");
        assert_eq!(p["jti"], "j1");
        // Each member once: the raw JSON has no duplicate key.
        let raw = payload(&m.jwt);
        for name in names {
            assert_eq!(raw.matches(&format!("\"{name}\":")).count(), 1, "{raw}");
        }
    }

    #[test]
    fn lifetime_is_capped_and_expired_tokens_are_not_minted() {
        let cfg = config(es256(), &["sub"]);
        let far = mint(&cfg, &introspected(r#"{"exp":2000000000}"#), NOW).unwrap();
        assert_eq!(far.claims.exp, Some(NOW + 300));
        let none = mint(&cfg, &introspected(r#"{"sub":"x"}"#), NOW).unwrap();
        assert_eq!(none.claims.exp, Some(NOW + 300));
        let soon = mint(&cfg, &introspected(r#"{"exp":1900000010}"#), NOW).unwrap();
        assert_eq!(soon.claims.exp, Some(NOW + 10));
        assert_eq!(
            mint(&cfg, &introspected(r#"{"exp":1900000000}"#), NOW),
            Err(MintError::Expired)
        );
        assert_eq!(
            mint(&cfg, &introspected(r#"{"exp":5}"#), NOW),
            Err(MintError::Expired)
        );
    }

    #[test]
    fn unusable_claims_are_refused() {
        let cfg = config(es256(), &["sub", "big"]);
        for bad in [
            r#"{"exp":"tomorrow"}"#,
            r#"{"scope":7}"#,
            r#"{"scope":"a\"b"}"#,
        ] {
            assert_eq!(
                mint(&cfg, &introspected(bad), NOW),
                Err(MintError::BadClaims),
                "{bad}"
            );
        }
        let big = format!(r#"{{"big":"{}"}}"#, "x".repeat(MAX_CLAIM_BYTES));
        assert_eq!(
            mint(&cfg, &introspected(&big), NOW),
            Err(MintError::BadClaims)
        );
    }

    #[test]
    fn key_errors_never_show_the_key_and_debug_redacts_it() {
        let err = SigningKey::from_pem(
            "ES256",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
            "k",
        )
        .unwrap_err();
        assert!(!err.contains("AAAA"));
        // An EC key is not an Ed25519 key.
        assert!(SigningKey::from_pem("EdDSA", EC_PEM, "k").is_err());
        let shown = format!("{:?}", config(es256(), &[]));
        assert!(shown.contains("redacted"));
        assert!(!shown.contains("MIGH"), "{shown}");
    }

    #[test]
    fn the_binding_always_travels_and_dpop_tokens_must_be_bound() {
        let cfg = config(es256(), &["sub"]);
        let now = 1_700_000_000;
        let m = mint(
            &cfg,
            &introspected(
                r#"{"active": true, "sub": "a", "token_type": "DPoP", "cnf": {"jkt": "abc"}}"#,
            ),
            now,
        )
        .unwrap();
        assert!(
            payload(&m.jwt).contains(r#""cnf":{"jkt":"abc"}"#),
            "{}",
            payload(&m.jwt)
        );
        assert_eq!(
            mint(
                &cfg,
                &introspected(r#"{"active": true, "token_type": "dpop"}"#),
                now
            ),
            Err(MintError::BadClaims)
        );
    }
}
