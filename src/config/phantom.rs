//! `phantom`: where and how opaque tokens are introspected, and how the gateway mints JWTs.

use serde::Deserialize;

use super::checks::*;
use super::endpoint::raw_endpoint;
use super::*;
use crate::token::introspection::Contract;
use crate::token::mint::{self, MintConfig, SigningKey};

/// Where and how opaque tokens are introspected.
#[derive(Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawPhantom {
    /// Envoy cluster of the endpoint.
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 256)))]
    cluster: String,
    /// `:authority` (Host) of the calls; the cluster name by default.
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 256)))]
    authority: Option<String>,
    /// Path of the endpoint, starting with `/` (a query is allowed).
    #[cfg_attr(feature = "cli", schemars(regex(pattern = r"^/[\x21-\x7e]*$")))]
    path: String,
    /// The gateway's client id (HTTP Basic, RFC 6749 §2.3.1).
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 1024)))]
    client_id: String,
    /// The gateway's client secret; never logged.
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 1024)))]
    client_secret: String,
    /// Timeout of each call, in milliseconds.
    #[cfg_attr(feature = "cli", schemars(range(min = 1, max = 60000), extend("default" = 2000)))]
    timeout_ms: Option<u64>,
    /// The introspection contract: `jwt` (Curity: the answer is the JWT), `json` (RFC 7662),
    /// `rfc9701` (signed answers; requires `verify` and `mint`).
    #[cfg_attr(feature = "cli", schemars(extend("enum" = ["jwt", "json", "rfc9701"]), extend("default" = "jwt")))]
    response: Option<String>,
    /// `json` only: a claim of the answer that carries a JWT to forward as it is; without it the
    /// gateway mints.
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 256)))]
    jwt_claim: Option<String>,
    /// How the gateway mints the JWT it forwards from introspected claims.
    mint: Option<RawMint>,
}

/// Minted JWTs.
#[derive(Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawMint {
    /// `iss` of minted JWTs.
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 256)))]
    issuer: String,
    /// `aud` of minted JWTs.
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 256)))]
    audience: String,
    /// Signature algorithm.
    #[cfg_attr(feature = "cli", schemars(extend("enum" = ["ES256", "EdDSA"])))]
    algorithm: String,
    /// PKCS#8 PEM private key (P-256 for ES256, SEC1 accepted too; Ed25519 for EdDSA); never
    /// logged, never served.
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 16384)))]
    private_key_pem: String,
    /// `kid` of minted JWTs and of the served JWK.
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 256)))]
    key_id: String,
    /// At most 64 claim names copied from the introspection when present (`iss`, `aud`, `iat`,
    /// `exp`, `nbf` are always the gateway's).
    #[cfg_attr(feature = "cli", schemars(length(max = 64), extend("default" = [])))]
    #[serde(default)]
    claims: Vec<String>,
    /// Minted `exp` = min(the token's `exp`, now + this).
    #[cfg_attr(feature = "cli", schemars(range(min = 1, max = 86400), extend("default" = 300)))]
    max_lifetime_s: Option<u64>,
    /// Path at which the filter answers `GET`/`HEAD` with the public JWK Set (never forwarded); not
    /// served when absent.
    #[cfg_attr(feature = "cli", schemars(regex(pattern = r"^/[\x21-\x7e]*$")))]
    jwks_path: Option<String>,
}

/// Where and how to introspect opaque tokens (RFC 7662, Curity's `application/jwt` variant,
/// RFC 9701).
#[derive(Clone, Debug)]
pub struct PhantomConfig {
    /// The introspection endpoint and the gateway's client credentials.
    pub endpoint: Endpoint,
    /// What the introspection answer is (`phantom.response`).
    pub contract: Contract,
    /// How the gateway mints a JWT from introspected claims (`phantom.mint`).
    pub mint: Option<MintConfig>,
}

impl PhantomConfig {
    /// The headers of an introspection request (RFC 7662 §2.1).
    pub fn request_headers(&self) -> [(&str, &str); 6] {
        self.endpoint.request_headers(self.contract.accept())
    }
}

impl RawPhantom {
    pub(super) fn validate(self) -> Result<PhantomConfig, ConfigError> {
        let endpoint = raw_endpoint!(self).validate("phantom")?;
        if let Some(claim) = &self.jwt_claim {
            check_name("phantom.jwt_claim", claim)?;
        }
        let contract = match self.response.as_deref().unwrap_or("jwt") {
            "jwt" => Contract::Jwt,
            "json" => Contract::Json {
                jwt_claim: self.jwt_claim.clone(),
            },
            "rfc9701" => Contract::Rfc9701,
            _ => {
                return Err(ConfigError::new(
                    "phantom.response",
                    "must be \"jwt\", \"json\" or \"rfc9701\"",
                ))
            }
        };
        if self.jwt_claim.is_some() && !matches!(contract, Contract::Json { .. }) {
            return Err(ConfigError::new(
                "phantom.jwt_claim",
                "is only used with phantom.response \"json\"",
            ));
        }
        let mint = self.mint.map(RawMint::validate).transpose()?;
        match (&contract, &mint) {
            (Contract::Jwt, Some(_)) => {
                return Err(ConfigError::new(
                    "phantom.mint",
                    "is only used with phantom.response \"json\" or \"rfc9701\"",
                ))
            }
            (Contract::Rfc9701, None) => {
                return Err(ConfigError::new(
                    "phantom.mint",
                    "is required with phantom.response \"rfc9701\"",
                ))
            }
            (Contract::Json { jwt_claim: None }, None) => {
                return Err(ConfigError::new(
                    "phantom.mint",
                    "is required with phantom.response \"json\" unless phantom.jwt_claim is set",
                ))
            }
            _ => {}
        }
        Ok(PhantomConfig {
            endpoint,
            contract,
            mint,
        })
    }
}

impl RawMint {
    pub(super) fn validate(self) -> Result<MintConfig, ConfigError> {
        check_name("phantom.mint.issuer", &self.issuer)?;
        check_name("phantom.mint.audience", &self.audience)?;
        check_name("phantom.mint.key_id", &self.key_id)?;
        if !SigningKey::NAMES.contains(&self.algorithm.as_str()) {
            return Err(ConfigError::new(
                "phantom.mint.algorithm",
                format!("must be one of {}", SigningKey::NAMES.join(", ")),
            ));
        }
        // The error names the field, never the key.
        let key = SigningKey::from_pem(&self.algorithm, &self.private_key_pem, &self.key_id)
            .map_err(|e| ConfigError::new("phantom.mint.private_key_pem", e))?;
        if self.claims.len() > MAX_MINT_CLAIMS {
            return Err(ConfigError::new(
                "phantom.mint.claims",
                format!("has more than {MAX_MINT_CLAIMS} entries"),
            ));
        }
        for (i, c) in self.claims.iter().enumerate() {
            check_name(&format!("phantom.mint.claims[{i}]"), c)?;
        }
        let max_lifetime_s = in_range(
            "phantom.mint.max_lifetime_s",
            self.max_lifetime_s.unwrap_or(DEFAULT_MINT_LIFETIME_S),
            1,
            MAX_TTL_S,
        )?;
        if let Some(p) = &self.jwks_path {
            check_path("phantom.mint.jwks_path", p)?;
        }
        let jwks = mint::jwks_document(&key, &self.key_id);
        let fingerprint = namespace_of(&[
            &self.issuer,
            &self.audience,
            &self.key_id,
            &self.claims.join(" "),
            &max_lifetime_s.to_string(),
            &jwks,
        ]);
        Ok(MintConfig {
            issuer: self.issuer,
            audience: self.audience,
            key,
            key_id: self.key_id,
            claims: self.claims,
            max_lifetime_s,
            jwks_path: self.jwks_path,
            jwks,
            fingerprint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{err, mint_json, with_phantom, VERIFY};
    use super::super::*;

    #[test]
    fn response_contracts_and_minting() {
        let c = Config::from_slice(with_phantom(r#", "response": "json""#, "").as_bytes());
        assert_eq!(c.unwrap_err().field, "phantom.mint");
        let json = Config::from_slice(
            with_phantom(&format!(r#", "response": "json"{}"#, mint_json("")), "").as_bytes(),
        )
        .unwrap();
        let p = json.phantom.as_ref().unwrap();
        assert_eq!(p.contract, Contract::Json { jwt_claim: None });
        let m = p.mint.as_ref().unwrap();
        assert_eq!(m.max_lifetime_s, DEFAULT_MINT_LIFETIME_S);
        assert!(m.claims.is_empty() && m.jwks_path.is_none());
        // Neither the summary nor Debug shows the private key.
        for shown in [json.summary(), format!("{json:?}")] {
            assert!(
                !shown.contains("PRIVATE") && !shown.contains("MIGH"),
                "{shown}"
            );
        }
        let claim_only = Config::from_slice(
            with_phantom(r#", "response": "json", "jwt_claim": "jwt""#, "").as_bytes(),
        )
        .unwrap();
        assert_eq!(
            claim_only.phantom.unwrap().contract,
            Contract::Json {
                jwt_claim: Some("jwt".into())
            }
        );
        // Each contract caches under its own namespace.
        let jwt_default = Config::from_slice(with_phantom("", "").as_bytes()).unwrap();
        assert_ne!(jwt_default.cache.namespace, json.cache.namespace);
        assert_ne!(claim_only.cache.namespace, json.cache.namespace);

        let rfc = with_phantom(&format!(r#", "response": "rfc9701"{}"#, mint_json("")), "");
        assert_eq!(err(&rfc).field, "verify");
        let rfc = with_phantom(
            &format!(r#", "response": "rfc9701"{}"#, mint_json("")),
            VERIFY,
        );
        assert_eq!(
            Config::from_slice(rfc.as_bytes())
                .unwrap()
                .phantom
                .unwrap()
                .contract,
            Contract::Rfc9701
        );
        let cases = [
            (
                with_phantom(r#", "response": "JSON""#, ""),
                "phantom.response",
            ),
            (
                with_phantom(r#", "jwt_claim": "x""#, ""),
                "phantom.jwt_claim",
            ),
            (with_phantom(&mint_json(""), ""), "phantom.mint"),
            (
                with_phantom(r#", "response": "rfc9701""#, VERIFY),
                "phantom.mint",
            ),
            (
                with_phantom(
                    &format!(
                        r#", "response": "rfc9701", "jwt_claim": "x"{}"#,
                        mint_json("")
                    ),
                    VERIFY,
                ),
                "phantom.jwt_claim",
            ),
            (
                with_phantom(
                    &format!(
                        r#", "response": "json"{}"#,
                        mint_json(r#", "max_lifetime_s": 0"#)
                    ),
                    "",
                ),
                "phantom.mint.max_lifetime_s",
            ),
            (
                with_phantom(
                    &format!(
                        r#", "response": "json"{}"#,
                        mint_json(r#", "jwks_path": "/k?x""#)
                    ),
                    "",
                ),
                "phantom.mint.jwks_path",
            ),
            (
                with_phantom(
                    &format!(
                        r#", "response": "json"{}"#,
                        mint_json(r#", "claims": [""]"#)
                    ),
                    "",
                ),
                "phantom.mint.claims[0]",
            ),
            (
                with_phantom(
                    &format!(r#", "response": "json"{}"#, mint_json(r#", "color": 1"#)),
                    "",
                ),
                "phantom.mint.color",
            ),
        ];
        for (json, field) in cases {
            assert_eq!(err(&json).field, field, "{json}");
        }
        // A wrong algorithm or a key that does not load: the error names the field only.
        let wrong_alg = with_phantom(
            &format!(r#", "response": "json"{}"#, mint_json("")).replace("ES256", "RS256"),
            "",
        );
        assert_eq!(err(&wrong_alg).field, "phantom.mint.algorithm");
        let not_ed = with_phantom(
            &format!(r#", "response": "json"{}"#, mint_json("")).replace("ES256", "EdDSA"),
            "",
        );
        let e = err(&not_ed);
        assert_eq!(e.field, "phantom.mint.private_key_pem");
        assert!(
            !e.message.contains("MIGH") && !e.to_string().contains("MIGH"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s", "timeout": 5}}"#,
                "phantom.timeout",
            ),
            (
                r#"{"phantom": {"cluster": "", "path": "/i", "client_id": "gw", "client_secret": "s"}}"#,
                "phantom.cluster",
            ),
            (
                r#"{"phantom": {"cluster": "ts", "authority": "a b", "path": "/i", "client_id": "gw", "client_secret": "s"}}"#,
                "phantom.authority",
            ),
            (
                r#"{"phantom": {"cluster": "ts", "path": "i", "client_id": "gw", "client_secret": "s"}}"#,
                "phantom.path",
            ),
            (
                r#"{"phantom": {"cluster": "ts", "path": "/i", "client_id": "", "client_secret": "s"}}"#,
                "phantom.client_id",
            ),
            (
                r#"{"phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": ""}}"#,
                "phantom.client_secret",
            ),
            (
                r#"{"phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s", "timeout_ms": 0}}"#,
                "phantom.timeout_ms",
            ),
            (
                r#"{"phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s", "timeout_ms": 60001}}"#,
                "phantom.timeout_ms",
            ),
            (
                r#"{"phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s", "timeout_ms": -1}}"#,
                "phantom.timeout_ms",
            ),
        ];
        for (json, field) in cases {
            let e = err(json);
            assert_eq!(e.field, *field, "config {json} gave {e}");
            assert!(e.to_string().starts_with(field), "{e}");
        }
    }
}
