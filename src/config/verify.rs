//! `verify`: the rules and keys every JWT is checked against before it leaves the gateway.

use std::rc::Rc;

use serde::Deserialize;

use super::checks::*;
use super::*;
use crate::storage::keys::JwksSource;
use crate::token::jws::{Alg, KeySet, Policy};

/// The rules and keys every JWT is checked against.
#[derive(Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawVerify {
    /// The one accepted `iss`.
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 256)))]
    issuer: String,
    /// 1 to 16; the token's `aud` must contain at least one.
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 16)))]
    audiences: Vec<String>,
    /// Allow-list (exact case); `none` is refused; an `HS*` algorithm requires its secret in
    /// `jwks_inline`.
    #[cfg_attr(feature = "cli", schemars(extend("items" = {"type": "string", "enum": ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256", "HS384", "HS512"]}), length(min = 1)))]
    algorithms: Vec<String>,
    /// The JWK Set, fetched from a cluster (one of `jwks`, `jwks_inline`).
    jwks: Option<RawJwksSource>,
    /// A JWK Set pinned in the configuration (`{"keys": [...]}`); the only place an `oct` (HMAC)
    /// key is accepted.
    #[cfg_attr(
        feature = "cli",
        schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")
    )]
    jwks_inline: Option<Box<serde_json::value::RawValue>>,
    /// Tolerance for `exp`, `nbf` and `iat`, in seconds.
    #[cfg_attr(feature = "cli", schemars(range(min = 0, max = 300), extend("default" = 30)))]
    clock_skew_s: Option<u64>,
}

/// Where the JWK Set (RFC 7517) is fetched.
#[derive(Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawJwksSource {
    /// Envoy cluster serving the JWK Set.
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 256)))]
    cluster: String,
    /// `:authority` of the JWKS request; the cluster name by default.
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 256)))]
    authority: Option<String>,
    /// Path of the JWK Set.
    #[cfg_attr(feature = "cli", schemars(regex(pattern = r"^/[\x21-\x7e]*$")))]
    path: String,
    /// Fetch again after this long, in seconds.
    #[cfg_attr(feature = "cli", schemars(range(min = 1, max = 86400), extend("default" = 300)))]
    refresh_s: Option<u64>,
    /// JWKS request timeout, in milliseconds.
    #[cfg_attr(feature = "cli", schemars(range(min = 1, max = 60000), extend("default" = 2000)))]
    timeout_ms: Option<u64>,
    /// Least time between two early fetches (unknown `kid`, failed fetch), 1 to `refresh_s`.
    #[cfg_attr(feature = "cli", schemars(range(min = 1, max = 86400), extend("default" = 5)))]
    min_refetch_s: Option<u64>,
}

/// `verify`: every JWT is checked against these keys and claims before it leaves the gateway.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    pub policy: Policy,
    pub keys: KeySource,
    /// Identifies the rules and the keys (inline key material included).
    pub fingerprint: String,
}

/// Where the verification keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// Pinned in the configuration (`jwks_inline`).
    Inline(Rc<KeySet>),
    /// Fetched from the token service and shared by every worker (`jwks`).
    Remote(JwksSource),
}

impl RawVerify {
    pub(super) fn validate(self) -> Result<VerifyConfig, ConfigError> {
        check_name("verify.issuer", &self.issuer)?;
        if self.audiences.is_empty() || self.audiences.len() > MAX_AUDIENCES {
            return Err(ConfigError::new(
                "verify.audiences",
                format!("must hold 1 to {MAX_AUDIENCES} audiences"),
            ));
        }
        for (i, a) in self.audiences.iter().enumerate() {
            check_name(&format!("verify.audiences[{i}]"), a)?;
        }
        if self.algorithms.is_empty() {
            return Err(ConfigError::new("verify.algorithms", "must not be empty"));
        }
        let mut algorithms = Vec::with_capacity(self.algorithms.len());
        for (i, name) in self.algorithms.iter().enumerate() {
            let alg = Alg::from_name(name).ok_or_else(|| {
                let supported: Vec<&str> = Alg::ALL.iter().map(|a| a.name()).collect();
                ConfigError::new(
                    &format!("verify.algorithms[{i}]"),
                    format!("must be one of {} (never none)", supported.join(", ")),
                )
            })?;
            if !algorithms.contains(&alg) {
                algorithms.push(alg);
            }
        }
        let clock_skew_s = in_range(
            "verify.clock_skew_s",
            self.clock_skew_s.unwrap_or(DEFAULT_CLOCK_SKEW_S),
            0,
            MAX_CLOCK_SKEW_S,
        )?;
        let policy = Policy {
            issuer: self.issuer,
            audiences: self.audiences,
            algorithms,
            clock_skew_s,
        };
        let inline_json = self.jwks_inline.as_ref().map_or("", |j| j.get());
        let remote = self.jwks.as_ref().map_or_else(String::new, |j| {
            format!("{} {:?} {}", j.cluster, j.authority, j.path)
        });
        let fingerprint = namespace_of(&[&format!("{policy:?}"), inline_json, &remote]);
        let keys = match (self.jwks, self.jwks_inline) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(ConfigError::new(
                    "verify.jwks",
                    "exactly one of verify.jwks and verify.jwks_inline is required",
                ))
            }
            (None, Some(inline)) => {
                let set = KeySet::parse(inline.get().as_bytes(), &policy.algorithms, true)
                    .map_err(|e| ConfigError::new("verify.jwks_inline", e.to_string()))?;
                KeySource::Inline(Rc::new(set))
            }
            (Some(remote), None) => KeySource::Remote(remote.validate()?),
        };
        // HMAC needs a shared secret: only ever one configured on purpose (RFC 8725 §3.1).
        if let Some(hmac) = policy.algorithms.iter().find(|a| a.is_hmac()) {
            if !matches!(keys, KeySource::Inline(_)) {
                return Err(ConfigError::new(
                    "verify.algorithms",
                    format!(
                        "{} needs its secret in verify.jwks_inline (a fetched key set never \
                         provides HMAC keys)",
                        hmac.name()
                    ),
                ));
            }
        }
        Ok(VerifyConfig {
            policy,
            keys,
            fingerprint,
        })
    }
}

impl RawJwksSource {
    pub(super) fn validate(self) -> Result<JwksSource, ConfigError> {
        check_name("verify.jwks.cluster", &self.cluster)?;
        let authority = self.authority.unwrap_or_else(|| self.cluster.clone());
        check_name("verify.jwks.authority", &authority)?;
        check_call_path("verify.jwks.path", &self.path)?;
        let refresh_s = in_range(
            "verify.jwks.refresh_s",
            self.refresh_s.unwrap_or(DEFAULT_JWKS_REFRESH_S),
            1,
            MAX_TTL_S,
        )?;
        let timeout_ms = in_range(
            "verify.jwks.timeout_ms",
            self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
            1,
            MAX_TIMEOUT_MS,
        )?;
        let min_refetch_s = in_range(
            "verify.jwks.min_refetch_s",
            self.min_refetch_s.unwrap_or(DEFAULT_JWKS_MIN_REFETCH_S),
            1,
            refresh_s,
        )?;
        let namespace = format!(
            "jwks{}:",
            namespace_of(&[&self.cluster, &authority, &self.path])
        );
        Ok(JwksSource {
            cluster: self.cluster,
            authority,
            path: self.path,
            refresh_s,
            timeout_ms,
            min_refetch_s,
            namespace,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{err, with_verify, REMOTE};
    use super::super::*;
    use crate::token::jws::Alg;

    #[test]
    fn verify_defaults_and_namespaces() {
        let json = with_verify(&format!(
            r#"{{"issuer": "https://login.example.com", "audiences": ["api"],
            "algorithms": ["ES256", "RS256", "ES256"], {REMOTE}}}"#
        ));
        let c = Config::from_slice(json.as_bytes()).unwrap();
        let v = c.verify.as_ref().unwrap();
        assert_eq!(v.policy.algorithms, vec![Alg::Es256, Alg::Rs256]);
        assert_eq!(v.policy.clock_skew_s, DEFAULT_CLOCK_SKEW_S);
        let KeySource::Remote(src) = &v.keys else {
            panic!("remote expected")
        };
        assert_eq!(
            (
                src.refresh_s,
                src.min_refetch_s,
                src.timeout_ms,
                src.authority.as_str()
            ),
            (300, 5, 2_000, "token_service")
        );
        let plain = Config::from_slice(with_verify("null").as_bytes()).unwrap();
        assert_ne!(
            plain.cache.namespace, c.cache.namespace,
            "a verifying configuration never reads a cache filled without verification"
        );
    }

    #[test]
    fn verify_errors_name_the_field() {
        let base = r#""issuer": "i", "audiences": ["a"]"#;
        let inline = r#""jwks_inline": {"keys": [{"kty": "oct", "kid": "k",
            "k": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}"#;
        let cases = [
            (
                format!(r#"{{{base}, "algorithms": ["none"], {REMOTE}}}"#),
                "verify.algorithms[0]",
            ),
            (
                format!(r#"{{{base}, "algorithms": ["rs256"], {REMOTE}}}"#),
                "verify.algorithms[0]",
            ),
            (
                format!(r#"{{{base}, "algorithms": [], {REMOTE}}}"#),
                "verify.algorithms",
            ),
            (
                format!(r#"{{{base}, "algorithms": ["HS256"], {REMOTE}}}"#),
                "verify.algorithms",
            ),
            (
                format!(r#"{{{base}, "algorithms": ["ES256"]}}"#),
                "verify.jwks",
            ),
            (
                format!(r#"{{{base}, "algorithms": ["ES256"], {REMOTE}, {inline}}}"#),
                "verify.jwks",
            ),
            (
                format!(r#"{{{base}, "algorithms": ["ES256"], {inline}}}"#),
                "verify.jwks_inline",
            ),
            (
                format!(r#"{{"issuer": "i", "audiences": [], "algorithms": ["ES256"], {REMOTE}}}"#),
                "verify.audiences",
            ),
            (
                format!(r#"{{{base}, "algorithms": ["ES256"], "clock_skew_s": 301, {REMOTE}}}"#),
                "verify.clock_skew_s",
            ),
            (
                format!(
                    r#"{{{base}, "algorithms": ["ES256"], "jwks": {{"cluster": "c", "path": "x"}}}}"#
                ),
                "verify.jwks.path",
            ),
            (
                format!(
                    r#"{{{base}, "algorithms": ["ES256"], "jwks": {{"cluster": "c", "path": "/x", "refresh_s": 10, "min_refetch_s": 11}}}}"#
                ),
                "verify.jwks.min_refetch_s",
            ),
            (
                format!(r#"{{{base}, "algorithms": ["ES256"], {REMOTE}, "jku": "x"}}"#),
                "verify",
            ),
        ];
        for (verify, field) in cases {
            let e = err(&with_verify(&verify));
            assert!(e.field.starts_with(field), "{verify}: {e}");
        }
        // HS256 with its secret inline is the one way to allow it.
        let ok = with_verify(&format!(r#"{{{base}, "algorithms": ["HS256"], {inline}}}"#));
        let c = Config::from_slice(ok.as_bytes()).unwrap();
        assert!(matches!(c.verify.unwrap().keys, KeySource::Inline(_)));
        // The secret is not in the debug output.
        let dbg = format!("{:?}", Config::from_slice(ok.as_bytes()).unwrap());
        assert!(!dbg.contains("AAAAAAAAAAAAAAAA"), "{dbg}");
    }
}
