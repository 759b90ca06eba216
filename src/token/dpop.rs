//! DPoP proofs (RFC 9449): the checks of §4.3 on a proof, the key's RFC 7638 thumbprint that
//! binds a token to it (`cnf.jkt`), the access token hash (`ath`), the `htu` comparison after
//! RFC 3986 normalisation, and server nonces (§8: a stateless HMAC over a time window).
//!
//! What is not here: replay (a `jti` seen before) and each key's share of the store, which need
//! the store shared by every worker (`storage/dpop.rs`), and the binding of a token to a key,
//! which needs the token (`pipeline/proof.rs`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::hash::constant_time_eq;
use crate::token::jws::{self, Alg};
use crate::token::jwt;

/// Largest proof accepted.
pub const MAX_PROOF_LEN: usize = 8 * 1024;
/// Longest `jti` accepted.
pub const MAX_JTI_LEN: usize = 256;
/// Members a public JWK never has (RFC 7517 §9.2, RFC 7518 §6): a proof carrying one leaked
/// its private key, or is not what it claims.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Why a proof is refused (each is `invalid_dpop_proof` to the client; the reason is logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("not a compact JWS of at most {MAX_PROOF_LEN} bytes")]
    Shape,
    #[error("typ is not dpop+jwt")]
    Typ,
    #[error("crit names extensions that must be understood (none is)")]
    Crit,
    #[error("alg is not allowed (none, HMAC, or not in dpop.algorithms)")]
    Alg,
    #[error("jwk is missing, private, or not a key for alg")]
    Jwk,
    #[error("the signature does not verify with jwk")]
    Signature,
    #[error("htm is not the request's method")]
    Htm,
    #[error("htu is not the request's URL")]
    Htu,
    #[error("iat is missing, too old or in the future")]
    Iat,
    #[error("jti is missing or longer than {MAX_JTI_LEN} bytes")]
    Jti,
    #[error("ath is not the hash of the access token")]
    Ath,
    #[error("nonce is missing or not current")]
    Nonce,
}

/// What a proof must match: the request, the token, the time and the rules.
pub struct Expect<'a> {
    pub algorithms: &'a [Alg],
    /// The request's method (`htm`).
    pub method: &'a str,
    /// The request's URL without query and fragment, normalised ([`normalize_htu`]).
    pub htu: &'a str,
    /// The access token exactly as sent (`ath`).
    pub token: &'a str,
    pub now_s: u64,
    pub max_age_s: u64,
    pub clock_skew_s: u64,
    /// With `nonce: true`: whether a nonce is current.
    pub nonce: Option<&'a dyn Fn(&str) -> bool>,
}

/// A proof that passed every check but replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    /// RFC 7638 thumbprint of the proof's key.
    pub jkt: String,
    pub jti: String,
    pub iat: u64,
}

/// The algorithm a proof's `alg` names: a JWS name, or `Ed25519` (RFC 9864's fully-specified
/// name for EdDSA over Ed25519, which DPoP clients and servers use).
pub fn proof_alg(name: &str) -> Option<Alg> {
    match name {
        "Ed25519" => Some(Alg::EdDsa),
        _ => Alg::from_name(name),
    }
}

/// Checks a DPoP proof (RFC 9449 §4.3 steps 1 to 11, replay aside).
pub fn verify(proof: &str, expect: &Expect<'_>) -> Result<Proven, ProofError> {
    if proof.len() > MAX_PROOF_LEN {
        return Err(ProofError::Shape);
    }
    let [header, payload, signature] = jwt::segments(proof).map_err(|_| ProofError::Shape)?;
    let object = |segment: &str| -> Option<Map<String, Value>> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).ok()?).ok()
    };
    let signing_input = &proof[..header.len() + 1 + payload.len()];
    let header = object(header).ok_or(ProofError::Shape)?;
    // RFC 7515 §4.1.9: `application/` may be left out of a `typ`, and media types compare
    // case-insensitively: `dpop+jwt` and `application/dpop+jwt` are one type.
    let typ = header.get("typ").and_then(Value::as_str).unwrap_or("");
    let typ = typ
        .get(..12)
        .filter(|p| p.eq_ignore_ascii_case("application/"))
        .map_or(typ, |_| typ.get(12..).unwrap_or(""));
    if !typ.eq_ignore_ascii_case("dpop+jwt") {
        return Err(ProofError::Typ);
    }
    // RFC 7515 §4.1.11: a `crit` the recipient does not understand makes the JWS invalid; the
    // filter understands no extension.
    if header.contains_key("crit") {
        return Err(ProofError::Crit);
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(proof_alg)
        .filter(|a| !a.is_hmac() && expect.algorithms.contains(a))
        .ok_or(ProofError::Alg)?;
    let jwk = header.get("jwk").ok_or(ProofError::Jwk)?;
    let members = jwk.as_object().ok_or(ProofError::Jwk)?;
    if PRIVATE_MEMBERS.iter().any(|m| members.contains_key(*m)) {
        return Err(ProofError::Jwk);
    }
    let jkt = thumbprint(jwk).ok_or(ProofError::Jwk)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| ProofError::Signature)?;
    jws::verify_with_jwk(jwk, alg, signing_input.as_bytes(), &signature).map_err(|e| match e {
        jws::VerifyFailure::BadSignature => ProofError::Signature,
        _ => ProofError::Jwk,
    })?;
    let claims = object(payload).ok_or(ProofError::Shape)?;
    let claim = |name: &str| claims.get(name).and_then(Value::as_str);
    if claim("htm") != Some(expect.method) {
        return Err(ProofError::Htm);
    }
    let htu = claim("htu")
        .and_then(normalize_htu)
        .ok_or(ProofError::Htu)?;
    if htu != expect.htu {
        return Err(ProofError::Htu);
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or(ProofError::Iat)?;
    let oldest = expect
        .now_s
        .saturating_sub(expect.max_age_s.saturating_add(expect.clock_skew_s));
    if iat < oldest || iat > expect.now_s.saturating_add(expect.clock_skew_s) {
        return Err(ProofError::Iat);
    }
    let jti = claim("jti").unwrap_or("");
    if jti.is_empty() || jti.len() > MAX_JTI_LEN {
        return Err(ProofError::Jti);
    }
    let ath = claim("ath").unwrap_or("");
    if !constant_time_eq(ath.as_bytes(), access_token_hash(expect.token).as_bytes()) {
        return Err(ProofError::Ath);
    }
    if let Some(current) = expect.nonce {
        if !claim("nonce").is_some_and(current) {
            return Err(ProofError::Nonce);
        }
    }
    Ok(Proven {
        jkt,
        jti: jti.to_owned(),
        iat,
    })
}

/// `ath`: base64url(SHA-256(the access token as sent)) (RFC 9449 §4.2).
pub fn access_token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

/// The RFC 7638 thumbprint of a public JWK: SHA-256 of its required members, in lexicographic
/// order, without whitespace; base64url. `None` for a key type or member it does not know.
pub fn thumbprint(jwk: &Value) -> Option<String> {
    let member = |name: &str| jwk.get(name).and_then(Value::as_str);
    let json = |pairs: &[(&str, &str)]| {
        let fields: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}:{}", Value::from(*k), Value::from(*v)))
            .collect();
        format!("{{{}}}", fields.join(","))
    };
    let canonical = match member("kty")? {
        "EC" => json(&[
            ("crv", member("crv")?),
            ("kty", "EC"),
            ("x", member("x")?),
            ("y", member("y")?),
        ]),
        "OKP" => json(&[("crv", member("crv")?), ("kty", "OKP"), ("x", member("x")?)]),
        "RSA" => json(&[("e", member("e")?), ("kty", "RSA"), ("n", member("n")?)]),
        _ => return None,
    };
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

/// An `htu` as compared (RFC 9449 §4.3 step 9, RFC 3986 §6.2.2): the scheme and host
/// lower-cased, the default port removed, an empty path made `/`. `None` when it is not an
/// absolute `http`/`https` URL, or carries a query or a fragment (an `htu` never does).
pub fn normalize_htu(url: &str) -> Option<String> {
    if url.contains(['?', '#']) || url.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
        return None;
    }
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    Some(format!("{scheme}://{authority}{path}"))
}

/// The URL a proof for this request must name: `origin` (or the request's `:scheme` and
/// `:authority`) and the path without its query.
pub fn request_htu(
    origin: Option<&str>,
    scheme: &str,
    authority: &str,
    path: &str,
) -> Option<String> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    match origin {
        Some(origin) => normalize_htu(&format!("{}{path}", origin.trim_end_matches('/'))),
        None => normalize_htu(&format!("{scheme}://{authority}{path}")),
    }
}

/// A server nonce (RFC 9449 §8) for time window `window`: HMAC-SHA256 of the window under a key
/// every worker shares. Stateless: any worker checks any worker's nonce.
pub fn nonce(key: &[u8; 32], window: u64) -> String {
    URL_SAFE_NO_PAD.encode(hmac_sha256(key, &window.to_be_bytes()))
}

/// Whether `presented` is the nonce of the current window or the one before (a nonce issued
/// just before a window ends stays usable for one more window).
pub fn nonce_is_current(key: &[u8; 32], now_s: u64, window_s: u64, presented: &str) -> bool {
    let window = now_s / window_s.max(1);
    [window, window.saturating_sub(1)]
        .iter()
        .any(|w| constant_time_eq(nonce(key, *w).as_bytes(), presented.as_bytes()))
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let mut inner = Sha256::new();
    let mut outer = Sha256::new();
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        if let (Some(a), Some(b)) = (ipad.get_mut(i), opad.get_mut(i)) {
            *a ^= k;
            *b ^= k;
        }
    }
    inner.update(ipad);
    inner.update(message);
    outer.update(opad);
    outer.update(inner.finalize());
    outer.finalize().into()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer as _;
    use serde_json::json;

    pub const NOW: u64 = 1_700_000_000;
    pub const HTU: &str = "https://api.example.com/orders/1";

    /// A test-only signing key for proofs, and its public JWK.
    pub enum ProofKey {
        Es256(p256::ecdsa::SigningKey),
        EdDsa(ed25519_dalek::SigningKey),
    }

    impl ProofKey {
        pub fn es256(seed: u8) -> Self {
            let bytes = [seed.max(1); 32];
            ProofKey::Es256(p256::ecdsa::SigningKey::from_bytes(&bytes.into()).unwrap())
        }

        pub fn eddsa(seed: u8) -> Self {
            ProofKey::EdDsa(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
        }

        pub fn alg(&self) -> &'static str {
            match self {
                ProofKey::Es256(_) => "ES256",
                ProofKey::EdDsa(_) => "EdDSA",
            }
        }

        pub fn jwk(&self) -> Value {
            match self {
                ProofKey::Es256(k) => {
                    let point = k.verifying_key().to_encoded_point(false);
                    json!({"kty": "EC", "crv": "P-256",
                           "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
                           "y": URL_SAFE_NO_PAD.encode(point.y().unwrap())})
                }
                ProofKey::EdDsa(k) => {
                    json!({"kty": "OKP", "crv": "Ed25519",
                           "x": URL_SAFE_NO_PAD.encode(k.verifying_key().as_bytes())})
                }
            }
        }

        pub fn jkt(&self) -> String {
            thumbprint(&self.jwk()).unwrap()
        }

        pub fn sign(&self, input: &[u8]) -> Vec<u8> {
            match self {
                ProofKey::Es256(k) => {
                    let sig: p256::ecdsa::Signature = k.sign(input);
                    sig.to_bytes().to_vec()
                }
                ProofKey::EdDsa(k) => k.sign(input).to_bytes().to_vec(),
            }
        }

        /// A proof with this header and these claims, signed by this key.
        pub fn proof_with(&self, header: &Value, claims: &Value) -> String {
            let h = URL_SAFE_NO_PAD.encode(header.to_string());
            let p = URL_SAFE_NO_PAD.encode(claims.to_string());
            let sig = self.sign(format!("{h}.{p}").as_bytes());
            format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(sig))
        }

        /// A valid proof for `method` `htu` and `token` at `iat`.
        pub fn proof(&self, method: &str, htu: &str, token: &str, iat: u64, jti: &str) -> String {
            self.proof_with(
                &json!({"typ": "dpop+jwt", "alg": self.alg(), "jwk": self.jwk()}),
                &json!({"htm": method, "htu": htu, "iat": iat, "jti": jti,
                        "ath": access_token_hash(token)}),
            )
        }
    }

    fn expect<'a>(token: &'a str, nonce: Option<&'a dyn Fn(&str) -> bool>) -> Expect<'a> {
        Expect {
            algorithms: &[Alg::Es256, Alg::EdDsa, Alg::Rs256],
            method: "POST",
            htu: HTU,
            token,
            now_s: NOW,
            max_age_s: 300,
            clock_skew_s: 5,
            nonce,
        }
    }

    #[test]
    fn rfc7638_thumbprint_vector() {
        // RFC 7638 §3.1.
        let jwk = json!({"kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"});
        assert_eq!(
            thumbprint(&jwk).as_deref(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
    }

    #[test]
    fn valid_proofs_with_each_algorithm() {
        for key in [ProofKey::es256(1), ProofKey::eddsa(2)] {
            let proof = key.proof("POST", HTU, "tok", NOW - 10, "j-1");
            let proven = verify(&proof, &expect("tok", None)).unwrap();
            assert_eq!(proven.jkt, key.jkt(), "{}", key.alg());
            assert_eq!((proven.jti.as_str(), proven.iat), ("j-1", NOW - 10));
            // The htu of the proof is normalised before it is compared.
            let loose = key.proof(
                "POST",
                "HTTPS://API.Example.com:443/orders/1",
                "tok",
                NOW,
                "j",
            );
            assert!(
                verify(&loose, &expect("tok", None)).is_ok(),
                "{}",
                key.alg()
            );
        }
        // RFC 9864's name for EdDSA over Ed25519, as the `dpop` npm client signs.
        let key = ProofKey::eddsa(6);
        let claims = json!({"htm": "POST", "htu": HTU, "iat": NOW, "jti": "j",
                            "ath": access_token_hash("tok")});
        let named = key.proof_with(
            &json!({"typ": "dpop+jwt", "alg": "Ed25519", "jwk": key.jwk()}),
            &claims,
        );
        assert_eq!(verify(&named, &expect("tok", None)).unwrap().jkt, key.jkt());
        let mislabelled = ProofKey::es256(7).proof_with(
            &json!({"typ": "dpop+jwt", "alg": "Ed25519", "jwk": ProofKey::es256(7).jwk()}),
            &claims,
        );
        assert!(verify(&mislabelled, &expect("tok", None)).is_err());
        // RFC 7515 §4.1.9: `application/dpop+jwt` is `dpop+jwt`.
        for typ in ["application/dpop+jwt", "Application/DPoP+JWT", "DPOP+JWT"] {
            let typed = key.proof_with(
                &json!({"typ": typ, "alg": "EdDSA", "jwk": key.jwk()}),
                &claims,
            );
            assert!(verify(&typed, &expect("tok", None)).is_ok(), "{typ}");
        }
    }

    #[test]
    fn every_check_refuses() {
        let key = ProofKey::es256(3);
        let other = ProofKey::es256(4);
        let good_claims = json!({"htm": "POST", "htu": HTU, "iat": NOW, "jti": "j", "ath": access_token_hash("tok")});
        let header = |over: Value| {
            let mut h = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.jwk()});
            for (k, v) in over.as_object().unwrap() {
                if v.is_null() {
                    h.as_object_mut().unwrap().remove(k);
                } else {
                    h[k] = v.clone();
                }
            }
            h
        };
        let claims = |over: Value| {
            let mut c = good_claims.clone();
            for (k, v) in over.as_object().unwrap() {
                c[k] = v.clone();
            }
            c
        };
        let mut private = key.jwk();
        private["d"] = json!("AAAA");
        let cases: Vec<(&str, String, ProofError)> = vec![
            (
                "another method",
                key.proof("GET", HTU, "tok", NOW, "j"),
                ProofError::Htm,
            ),
            (
                "another URL",
                key.proof("POST", "https://api.example.com/orders/2", "tok", NOW, "j"),
                ProofError::Htu,
            ),
            (
                "another host",
                key.proof("POST", "https://evil.example.com/orders/1", "tok", NOW, "j"),
                ProofError::Htu,
            ),
            (
                "a query in htu",
                key.proof("POST", &format!("{HTU}?a=1"), "tok", NOW, "j"),
                ProofError::Htu,
            ),
            (
                "stale iat",
                key.proof("POST", HTU, "tok", NOW - 306, "j"),
                ProofError::Iat,
            ),
            (
                "future iat",
                key.proof("POST", HTU, "tok", NOW + 6, "j"),
                ProofError::Iat,
            ),
            (
                "another token",
                key.proof("POST", HTU, "other", NOW, "j"),
                ProofError::Ath,
            ),
            (
                "no jti",
                key.proof_with(&header(json!({})), &claims(json!({"jti": ""}))),
                ProofError::Jti,
            ),
            (
                "long jti",
                key.proof("POST", HTU, "tok", NOW, &"j".repeat(MAX_JTI_LEN + 1)),
                ProofError::Jti,
            ),
            (
                "signed by another key",
                other.proof_with(&header(json!({})), &good_claims),
                ProofError::Signature,
            ),
            (
                "private jwk",
                key.proof_with(&header(json!({"jwk": private})), &good_claims),
                ProofError::Jwk,
            ),
            (
                "no jwk",
                key.proof_with(&header(json!({"jwk": null})), &good_claims),
                ProofError::Jwk,
            ),
            (
                "jwk of another type",
                key.proof_with(
                    &header(json!({"jwk": ProofKey::eddsa(1).jwk()})),
                    &good_claims,
                ),
                ProofError::Jwk,
            ),
            (
                "alg none",
                key.proof_with(&header(json!({"alg": "none"})), &good_claims),
                ProofError::Alg,
            ),
            (
                "alg HS256",
                key.proof_with(&header(json!({"alg": "HS256"})), &good_claims),
                ProofError::Alg,
            ),
            (
                "alg not allowed",
                key.proof_with(&header(json!({"alg": "ES384"})), &good_claims),
                ProofError::Alg,
            ),
            (
                "no typ",
                key.proof_with(&header(json!({"typ": null})), &good_claims),
                ProofError::Typ,
            ),
            (
                "typ JWT",
                key.proof_with(&header(json!({"typ": "JWT"})), &good_claims),
                ProofError::Typ,
            ),
            (
                "typ application/ alone",
                key.proof_with(&header(json!({"typ": "application/"})), &good_claims),
                ProofError::Typ,
            ),
            (
                "typ text/dpop+jwt",
                key.proof_with(&header(json!({"typ": "text/dpop+jwt"})), &good_claims),
                ProofError::Typ,
            ),
            (
                "crit",
                key.proof_with(&header(json!({"crit": ["exp"]})), &good_claims),
                ProofError::Crit,
            ),
            (
                "crit empty",
                key.proof_with(&header(json!({"crit": []})), &good_claims),
                ProofError::Crit,
            ),
            (
                "oversized",
                key.proof_with(
                    &header(json!({})),
                    &claims(json!({"pad": "x".repeat(MAX_PROOF_LEN)})),
                ),
                ProofError::Shape,
            ),
            ("not a JWS", "abc.def".to_owned(), ProofError::Shape),
        ];
        for (name, proof, want) in cases {
            assert_eq!(verify(&proof, &expect("tok", None)), Err(want), "{name}");
        }
    }

    #[test]
    fn nonces() {
        let key = [9u8; 32];
        let current = nonce(&key, NOW / 60);
        let ok = |n: &str| nonce_is_current(&key, NOW, 60, n);
        assert!(ok(&current));
        assert!(ok(&nonce(&key, NOW / 60 - 1)), "the window before");
        assert!(!ok(&nonce(&key, NOW / 60 - 2)));
        assert!(!ok(&nonce(&[8; 32], NOW / 60)), "another key");
        assert!(!ok(""));
        let proof_key = ProofKey::eddsa(5);
        let with = |n: Option<&str>| {
            let mut c = json!({"htm": "POST", "htu": HTU, "iat": NOW, "jti": "j",
                               "ath": access_token_hash("tok")});
            if let Some(n) = n {
                c["nonce"] = json!(n);
            }
            proof_key.proof_with(
                &json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": proof_key.jwk()}),
                &c,
            )
        };
        let check: &dyn Fn(&str) -> bool = &ok;
        assert!(verify(&with(Some(&current)), &expect("tok", Some(check))).is_ok());
        assert_eq!(
            verify(&with(None), &expect("tok", Some(check))),
            Err(ProofError::Nonce)
        );
        assert_eq!(
            verify(&with(Some("old")), &expect("tok", Some(check))),
            Err(ProofError::Nonce)
        );
    }

    #[test]
    fn htu_normalisation() {
        for (url, want) in [
            (
                "https://api.example.com/x",
                Some("https://api.example.com/x"),
            ),
            (
                "HTTPS://API.EXAMPLE.COM:443/x",
                Some("https://api.example.com/x"),
            ),
            ("http://api.example.com:80", Some("http://api.example.com/")),
            (
                "http://api.example.com:8080/x",
                Some("http://api.example.com:8080/x"),
            ),
            (
                "https://api.example.com/X",
                Some("https://api.example.com/X"),
            ),
            ("https://api.example.com/x?q=1", None),
            ("https://api.example.com/x#f", None),
            ("ftp://api.example.com/x", None),
            ("//api.example.com/x", None),
            ("https://user@api.example.com/x", None),
            ("https:///x", None),
        ] {
            assert_eq!(normalize_htu(url).as_deref(), want, "{url}");
        }
        assert_eq!(
            request_htu(None, "https", "API.example.com", "/orders/1?x=2").as_deref(),
            Some(HTU)
        );
        assert_eq!(
            request_htu(
                Some("https://api.example.com/"),
                "http",
                "10.0.0.1:8080",
                "/orders/1"
            )
            .as_deref(),
            Some(HTU)
        );
    }

    /// The cost of checking one proof natively, per algorithm (`bash scripts/bench.sh` compares
    /// it with the cost inside Envoy: bench/bench.py, `print_proof_costs`). `cargo test
    /// --release --lib native_proof_cost -- --ignored --nocapture`; prints `native_proof_cost
    /// <alg> <µs per proof>`.
    #[test]
    #[ignore = "a measurement, run by bench/bench.py"]
    fn native_proof_cost() {
        for key in [ProofKey::es256(11), ProofKey::eddsa(12)] {
            let n = 400;
            let proofs: Vec<String> = (0..n)
                .map(|i| key.proof("POST", HTU, "tok", NOW, &format!("j-{i}")))
                .collect();
            let mut best = f64::MAX;
            for _ in 0..5 {
                let start = std::time::Instant::now();
                for p in &proofs {
                    assert!(verify(p, &expect("tok", None)).is_ok());
                }
                best = best.min(start.elapsed().as_secs_f64() * 1e6 / f64::from(n));
            }
            println!("native_proof_cost {} {best:.1}", key.alg());
        }
    }
}
