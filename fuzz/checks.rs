//! The properties the fuzz targets check, one function per target. Shared by the cargo-fuzz
//! targets (`fuzz/fuzz_targets/*.rs`) and by `tests/fuzz_regressions.rs`, which replays every
//! committed seed and every input a fuzzer ever found in plain `cargo test`.
//!
//! Beyond "does not panic" (a panic traps the VM and takes the worker's filter down), each
//! function asserts what must hold for any input: a parsed token is a substring that obeys the
//! grammar, a split JWT joins back to the original, a JWT is never passed on unsplit, a random
//! string never verifies.

// Test code: an index out of range is a failed check, like any other assertion.
#![allow(clippy::indexing_slicing)]

use envoy_token_filter::config::{Config, Contract};
use envoy_token_filter::token::bearer::{self, MAX_TOKEN_LEN};
use envoy_token_filter::token::dpop::{self, Expect, MAX_JTI_LEN, MAX_PROOF_LEN};
use envoy_token_filter::token::introspection::{self, Outcome, Response};
use envoy_token_filter::token::jws::{Alg, KeySet, Policy};
use envoy_token_filter::token::jwt;
use envoy_token_filter::token::split::{self, HashEncoding, PublishOp, Rewrite};
use serde_json::Value;

/// A fixed instant (2030) for every check that needs a clock.
pub const NOW_MS: u64 = 1_900_000_000_000;

/// A property check over one input.
pub type Check = fn(&[u8]);

/// The targets, by name: the name of a corpus directory and its check.
pub const TARGETS: [(&str, Check); 8] = [
    ("bearer", bearer),
    ("jwt", jwt_split_join),
    ("introspection", introspection),
    ("publish", publish),
    ("token_response", token_response),
    ("config", config),
    ("jwks_verify", jwks_verify),
    ("dpop_proof", dpop_proof),
];

/// The RFC 6750 parser of `Authorization`.
pub fn bearer(data: &[u8]) {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = bearer::parse_authorization(Some(value)) {
        assert!(bearer::is_b64token(token));
        assert!(token.len() <= MAX_TOKEN_LEN);
        assert!(value.ends_with(token));
        let scheme = value
            .get(..value.len() - token.len())
            .unwrap_or("")
            .trim_end_matches(' ');
        assert!(scheme.eq_ignore_ascii_case("bearer"), "{value:?}");
    }
}

/// The JWT shape check and the split/join of `header.payload` and the signature, and the
/// store key encodings.
pub fn jwt_split_join(data: &[u8]) {
    if let Some(hash) = data.get(..32).and_then(|h| <[u8; 32]>::try_from(h).ok()) {
        for enc in [
            HashEncoding::Base64,
            HashEncoding::Base64url,
            HashEncoding::Hex,
        ] {
            assert_eq!(enc.decode(&enc.encode(&hash)), Some(hash));
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok([h, p, s]) = jwt::segments(text) {
        assert_eq!(format!("{h}.{p}.{s}"), text);
        let header_payload = format!("{h}.{p}");
        if header_payload.len() <= jwt::MAX_HEADER_PAYLOAD_LEN {
            assert_eq!(jwt::parse_header_payload(&header_payload), jwt::parse(text));
        }
        assert_eq!(split::signature_hash(s), split::signature_hash(s));
    } else {
        assert!(jwt::parse(text).is_err());
    }
    let _ = jwt::parse_header_payload(text);
}

const STATUSES: [Option<&str>; 8] = [
    Some("200"),
    Some("204"),
    Some("503"),
    Some("504"),
    Some("302"),
    Some("2OO"),
    None,
    Some(""),
];
const CONTENT_TYPES: [Option<&str>; 8] = [
    Some("application/jwt"),
    Some("application/json"),
    Some("application/token-introspection+jwt"),
    Some("Application/JSON; charset=utf-8"),
    Some("text/plain"),
    Some("application/problem+json"),
    Some(""),
    None,
];

/// The introspection answer classifier, under every contract.
pub fn introspection(data: &[u8]) {
    let (Some(&a), Some(&b)) = (data.first(), data.get(1)) else {
        return;
    };
    let body = data.get(2..).unwrap_or(&[]);
    let status = STATUSES[usize::from(a) % STATUSES.len()];
    let resp = Response {
        status,
        content_type: CONTENT_TYPES[usize::from(b) % CONTENT_TYPES.len()],
        cache_control: Some("max-age=60"),
        body: if b & 0x80 == 0 { Some(body) } else { None },
        synthesized: a & 0x80 != 0,
    };
    for contract in [
        Contract::Jwt,
        Contract::Json { jwt_claim: None },
        Contract::Json {
            jwt_claim: Some("jwt".to_owned()),
        },
        Contract::Rfc9701,
    ] {
        let out = introspection::classify(&resp, &contract);
        let is_200 = status == Some("200");
        match &out {
            Outcome::Active { jwt, .. } => {
                assert!(is_200 && resp.body.is_some());
                assert!(jwt::parse(jwt).is_ok());
                if contract == Contract::Jwt {
                    assert_eq!(Some(jwt.as_bytes()), resp.body);
                }
            }
            Outcome::Claims { claims, .. } => {
                assert!(is_200 && matches!(contract, Contract::Json { .. }));
                assert_eq!(claims.get("active"), Some(&Value::Bool(true)));
            }
            Outcome::Signed { jwt, .. } => {
                assert!(is_200 && contract == Contract::Rfc9701);
                assert_eq!(Some(jwt.as_bytes()), resp.body);
                assert!(jwt::segments(jwt).is_ok());
            }
            Outcome::Inactive | Outcome::Failed(_) => {}
        }
    }
}

/// The publish API's body parser.
pub fn publish(data: &[u8]) {
    let Some(&a) = data.first() else {
        return;
    };
    let body = data.get(1..).unwrap_or(&[]);
    let method = if a & 1 == 0 { "POST" } else { "DELETE" };
    let enc = [
        HashEncoding::Base64,
        HashEncoding::Base64url,
        HashEncoding::Hex,
    ][usize::from(a >> 1) % 3];
    match split::parse_publish(method, body, enc, NOW_MS) {
        Ok(PublishOp::Store(entry, signature)) => {
            assert_eq!(method, "POST");
            if let Some(signature) = signature {
                assert_eq!(split::signature_hash(&signature), entry.hash);
            }
            assert!(entry.expires_at_ms > NOW_MS);
            assert!(jwt::parse_header_payload(&entry.header_payload).is_ok());
        }
        Ok(PublishOp::Revoke(_)) => assert_eq!(method, "DELETE"),
        Err(e) => {
            // The message never echoes the body's values.
            assert!(e.to_string().len() < 200, "{e}");
        }
    }
}

/// The token endpoint response rewriter: a JWT access token is split, or the response is
/// refused; it never passes on unsplit.
pub fn token_response(data: &[u8]) {
    let Some(&a) = data.first() else {
        return;
    };
    let body = data.get(1..).unwrap_or(&[]);
    // Whatever the body, a success with a content coding never passes.
    let coding = if a & 1 == 0 { "gzip" } else { "deflate" };
    assert!(matches!(
        split::rewrite_token_response(Some("201"), Some(coding), body, NOW_MS),
        Rewrite::Refuse(_)
    ));
    match split::rewrite_token_response(Some("200"), None, body, NOW_MS) {
        Rewrite::Split {
            body: out,
            entry,
            signature,
        } => {
            assert!(entry.expires_at_ms > NOW_MS);
            assert_eq!(split::signature_hash(&signature), entry.hash);
            // Exactly one `header.payload.` left the body, replaced by the signature alone.
            let count = |hay: &[u8]| {
                let needle = format!("{}.", entry.header_payload);
                hay.windows(needle.len())
                    .filter(|w| *w == needle.as_bytes())
                    .count()
            };
            assert_eq!(count(&out) + 1, count(body));
            assert_eq!(out.len() + entry.header_payload.len() + 1, body.len());
            let (Ok(Value::Object(mut o)), Ok(Value::Object(mut r))) = (
                serde_json::from_slice::<Value>(body),
                serde_json::from_slice::<Value>(&out),
            ) else {
                // Bytes serde_json skips leniently (invalid UTF-8 in an ignored string) make
                // the body unreadable as a whole; the byte-level checks above still hold.
                return;
            };
            let pair = (o.remove("access_token"), r.remove("access_token"));
            assert!(
                matches!(pair, (Some(Value::String(_)), Some(Value::String(_)))),
                "a split response must keep a string access_token"
            );
            let (Some(Value::String(jwt)), Some(Value::String(sig))) = pair else {
                return;
            };
            assert_eq!(format!("{}.{sig}", entry.header_payload), jwt);
            assert_eq!(split::signature_hash(&sig), entry.hash);
            // Everything but the access token is unchanged.
            assert_eq!(o, r);
        }
        Rewrite::Unchanged => {
            // Never a JWT: if the body is an object with a string access_token, it is not one.
            // Read the way a lenient client would: invalid UTF-8 replaced, values kept raw (no
            // number range checks on values it does not need).
            type Raw = std::collections::HashMap<String, Box<serde_json::value::RawValue>>;
            match serde_json::from_str::<Raw>(&String::from_utf8_lossy(body)) {
                Ok(fields) => {
                    if let Some(raw) = fields.get("access_token") {
                        if let Ok(token) = serde_json::from_str::<String>(raw.get()) {
                            assert!(jwt::segments(&token).is_err(), "a JWT passed on unsplit");
                        }
                    }
                }
                Err(_) => assert!(
                    !body.windows(12).any(|w| w == b"access_token"),
                    "an unreadable body with an access_token passed on"
                ),
            }
        }
        Rewrite::Refuse(_) => {}
    }
}

/// The configuration parser.
pub fn config(data: &[u8]) {
    if let Ok(cfg) = Config::from_slice(data) {
        let again = Config::from_slice(data).map(|c| c.summary());
        assert_eq!(again.ok(), Some(cfg.summary()));
        if let Some(p) = &cfg.phantom {
            assert!(!cfg.summary().contains(&p.endpoint.basic_authorization));
        }
    }
}

/// A hostile JWK Set, then a hostile token against a fixed key set: loading never panics, and
/// nothing made up verifies.
pub fn jwks_verify(data: &[u8]) {
    let all = Alg::ALL;
    let _ = KeySet::parse(data, &all, true);
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let keys = fixed_keys();
    let policy = Policy {
        issuer: "iss".into(),
        audiences: vec!["aud".into()],
        algorithms: all.to_vec(),
        clock_skew_s: 30,
    };
    assert!(keys.verify(&policy, token, NOW_MS / 1_000).is_err());
    assert!(keys
        .verify_introspection(&policy, "gw", token, NOW_MS / 1_000)
        .is_err());
}

fn fixed_keys() -> KeySet {
    // Public keys whose private halves are nowhere in this repository.
    let jwks = format!(
        r#"{{"keys": [
            {{"kty": "EC", "crv": "P-256", "kid": "ec", "x": "{x}", "y": "{y}"}},
            {{"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "{ed}"}}
        ]}}"#,
        x = "tiZQoDDhI_YHc69yP5i3VdlaDN-JBxkWDL625vaGu1E",
        y = "03nLwH3xH6aJ82mPPvZ2rvZNluz0wrsevG82wkW4pMY",
        ed = "ess7FTCKHBCsCzIOlUuULySbSjgp55bM95YFp6UhpqI",
    );
    KeySet::parse(jwks.as_bytes(), &Alg::ALL, true).unwrap_or_default()
}

/// The thumbprints of the keys that signed the committed seeds (`fuzz/corpus/dpop_proof`): the
/// only keys whose signatures a fuzzer has to start from.
const DPOP_SEED_KEYS: [&str; 2] = [
    "4UnDTnPesO6_GmSiI0MVDAiJ33iips4gaTGktaY6Tc0",
    "IoC-Ne7ngPyO393L-P_90OXv6FHXEiOCTuApFgi2tUM",
];

/// The DPoP proof checks (RFC 9449 §4.3): any input is refused unless it is a proof the seed
/// keys signed, for exactly this request; what passes obeys every bound.
pub fn dpop_proof(data: &[u8]) {
    let Ok(proof) = std::str::from_utf8(data) else {
        return;
    };
    let now_s = 1_900_000_000;
    let expect = Expect {
        algorithms: &[Alg::Es256, Alg::EdDsa, Alg::Rs256, Alg::Ps256],
        method: "POST",
        htu: "https://api.example.com/orders/1",
        token: "tok",
        now_s,
        max_age_s: 300,
        clock_skew_s: 5,
        nonce: None,
    };
    let _ = dpop::normalize_htu(proof);
    if let Ok(proven) = dpop::verify(proof, &expect) {
        assert!(
            DPOP_SEED_KEYS.contains(&proven.jkt.as_str()),
            "{}",
            proven.jkt
        );
        assert!(proof.len() <= MAX_PROOF_LEN);
        assert!(!proven.jti.is_empty() && proven.jti.len() <= MAX_JTI_LEN);
        assert!(proven.iat + 305 >= now_s && proven.iat <= now_s + 5);
    }
}
