//! `token_exchange` and a policy's `exchange`: RFC 8693 token exchange, so that each API gets a
//! token made for it (its audience, its scopes) instead of the one every API gets.

use serde::Deserialize;

use super::checks::*;
use super::endpoint::raw_endpoint;
use super::*;
use crate::token::exchange::{self, SubjectToken};
use crate::token::jws;

/// The token endpoint tokens are exchanged at (RFC 8693).
#[derive(Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawExchange {
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
    /// What is sent as the subject token: the client's token as it sent it, or the JWT it resolved
    /// to (split tokens need `jwt`).
    #[cfg_attr(feature = "cli", schemars(extend("enum" = ["access_token", "jwt"]), extend("default" = "access_token")))]
    subject_token: Option<String>,
}

/// What a policy's API's token is made for.
#[derive(Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawExchangeRule {
    /// `audience` of the exchange request.
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 256)))]
    audience: Option<String>,
    /// `scope` of the exchange request.
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 1024)))]
    scope: Option<String>,
    /// `resource` of the exchange request: an absolute URI (RFC 8707).
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 2048)))]
    resource: Option<String>,
}

/// Where and how the gateway exchanges tokens (`token_exchange`).
#[derive(Clone, Debug)]
pub struct ExchangeConfig {
    /// The token endpoint and the gateway's client credentials.
    pub endpoint: Endpoint,
    /// What is sent as the subject token.
    pub subject: SubjectToken,
    /// Prefix of the exchange cache's shared-data keys.
    pub namespace: String,
}

impl ExchangeConfig {
    /// The headers of an exchange request.
    pub fn request_headers(&self) -> [(&str, &str); 6] {
        self.endpoint.request_headers("application/json")
    }
}

/// A policy's `exchange`: what its API's token is made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeRule {
    pub audience: Option<String>,
    pub scope: Option<String>,
    pub resource: Option<String>,
    /// The form parameters these add to the request, encoded once.
    pub form: String,
    /// What is asked for, as one value: SHA-256 of the token service's identity (endpoint,
    /// client, subject token type) and the form above (audience, scope, resource). With the
    /// client token's hash, the key of the tokens exchanged for it: two policies that ask for
    /// the same share them, two that ask for different ones never do, whatever their order
    /// (set once `token_exchange` is known, see [`ExchangeRule::identify`]).
    pub id: crate::hash::TokenHash,
    /// How the exchanged JWT is verified (with `verify`): `verify`'s rules, with `audience`
    /// as the only accepted audience when set.
    pub verify: Option<jws::Policy>,
}

impl RawExchange {
    pub(super) fn validate(self, has_phantom: bool) -> Result<ExchangeConfig, ConfigError> {
        let endpoint = raw_endpoint!(self).validate("token_exchange")?;
        let subject = match self.subject_token.as_deref().unwrap_or("access_token") {
            "access_token" => SubjectToken::AccessToken,
            "jwt" => SubjectToken::Jwt,
            _ => {
                return Err(ConfigError::new(
                    "token_exchange.subject_token",
                    "must be \"access_token\" or \"jwt\"",
                ))
            }
        };
        if subject == SubjectToken::AccessToken && !has_phantom {
            // A split token's client holds only a signature: no token service knows it.
            return Err(ConfigError::new(
                "token_exchange.subject_token",
                "must be \"jwt\" with split tokens alone (the client's token is a signature)",
            ));
        }
        let [cluster, authority, path, client_id] = endpoint.identity();
        let namespace = format!(
            "x{}",
            namespace_of(&[cluster, authority, path, client_id, subject.name()])
        );
        Ok(ExchangeConfig {
            endpoint,
            subject,
            namespace,
        })
    }
}

impl ExchangeRule {
    /// Sets [`Self::id`] for the token service `x`, under `verify`'s fingerprint (its rules and
    /// inline keys: empty without `verify`).
    pub(super) fn identify(&mut self, x: &ExchangeConfig, verify: &str) {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let [cluster, authority, path, client_id] = x.endpoint.identity();
        for part in [
            "exchange-rule",
            cluster,
            authority,
            path,
            client_id,
            x.subject.name(),
            &self.form,
            verify,
            &format!("{:?}", self.verify),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        self.id = h.finalize().into();
    }

    /// Whether `jwt` was made for this rule's audience (when it names one): its `aud` is that
    /// audience or a list holding it. Checked on every token the exchange cache gives, so no
    /// entry can ever reach an API it was not made for.
    pub fn made_for(&self, jwt: &str) -> bool {
        let Some(audience) = &self.audience else {
            return true;
        };
        let Some(payload) = crate::token::claims::payload_of(jwt) else {
            return false;
        };
        match payload.get("aud") {
            Some(serde_json::Value::String(a)) => a == audience,
            Some(serde_json::Value::Array(list)) => {
                list.iter().any(|a| a.as_str() == Some(audience.as_str()))
            }
            _ => false,
        }
    }
}

impl RawExchangeRule {
    pub(super) fn validate(self, field: &str) -> Result<ExchangeRule, ConfigError> {
        if let Some(a) = &self.audience {
            check_name(&format!("{field}.audience"), a)?;
        }
        if let Some(s) = &self.scope {
            check_quotable(&format!("{field}.scope"), s)?;
        }
        if let Some(r) = &self.resource {
            // RFC 8707 §2: an absolute URI without a fragment.
            check_name(&format!("{field}.resource"), r)?;
            let absolute = r
                .split_once("://")
                .is_some_and(|(scheme, rest)| !scheme.is_empty() && !rest.is_empty());
            if !absolute || r.contains('#') {
                return Err(ConfigError::new(
                    &format!("{field}.resource"),
                    "must be an absolute URI without a fragment (RFC 8707)",
                ));
            }
        }
        let form = exchange::rule_form(
            self.audience.as_deref(),
            self.scope.as_deref(),
            self.resource.as_deref(),
        );
        Ok(ExchangeRule {
            audience: self.audience,
            scope: self.scope,
            resource: self.resource,
            form,
            id: [0; 32],
            verify: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::tests::cfg;

    const EXCHANGE: &str = r#", "token_exchange": {"cluster": "ts", "authority": "login.example.com",
        "path": "/oauth/v2/oauth-token", "client_id": "gateway", "client_secret": "xs",
        "timeout_ms": 2000, "subject_token": "access_token"}"#;

    #[test]
    fn the_documented_example_parses() {
        let c = cfg(&format!(
            r#"{EXCHANGE}, "policies": [{{"name": "orders", "match": {{"path_prefix": "/orders/"}},
            "exchange": {{"audience": "orders-api", "scope": "orders:read",
            "resource": "https://orders.internal/"}}}}]"#
        ))
        .unwrap();
        let x = c.token_exchange.as_ref().unwrap();
        assert_eq!(x.subject, SubjectToken::AccessToken);
        assert!(
            !format!("{x:?}").contains("xs"),
            "the secret is never printed"
        );
        let rule = c.policies.get(0).exchange.as_ref().unwrap();
        assert_ne!(rule.id, [0; 32]);
        assert_eq!(
            rule.form,
            "&audience=orders-api&scope=orders%3Aread&resource=https%3A%2F%2Forders.internal%2F"
        );
        assert!(c.policies.default.exchange.is_none());
        // The top level's own, for the default policy (after every other's index).
        let top = cfg(&format!(
            r#"{EXCHANGE}, "exchange": {{"audience": "api"}},
            "policies": [{{"name": "a", "match": {{"path_prefix": "/a/"}}}}]"#
        ))
        .unwrap();
        assert!(top.policies.default.exchange.is_some());
        assert!(top.policies.get(0).exchange.is_none(), "not inherited");
    }

    #[test]
    fn exchanged_tokens_are_verified_for_the_policys_audience() {
        let c = cfg(&format!(
            r#"{EXCHANGE}, "verify": {{"issuer": "i", "audiences": ["gw-api"], "algorithms": ["ES256"],
            "jwks": {{"cluster": "ts", "path": "/jwks"}}}},
            "policies": [{{"name": "a", "exchange": {{"audience": "a-api"}}}},
                         {{"name": "b", "exchange": {{"scope": "read"}}}}]"#
        ))
        .unwrap();
        let a = c.policies.get(0).exchange.as_ref().unwrap();
        assert_eq!(a.verify.as_ref().unwrap().audiences, ["a-api"]);
        let b = c.policies.get(1).exchange.as_ref().unwrap();
        assert_eq!(b.verify.as_ref().unwrap().audiences, ["gw-api"]);
        // What is asked for includes how its answer is verified: a configuration without
        // `verify`, or with other keys or audiences, never shares these exchanged tokens.
        let plain = cfg(&format!(
            r#"{EXCHANGE}, "policies": [{{"name": "a", "exchange": {{"audience": "a-api"}}}}]"#
        ))
        .unwrap();
        assert_ne!(plain.policies.get(0).exchange.as_ref().unwrap().id, a.id);
        let other_audiences = cfg(&format!(
            r#"{EXCHANGE}, "verify": {{"issuer": "i", "audiences": ["other-api"], "algorithms": ["ES256"],
            "jwks": {{"cluster": "ts", "path": "/jwks"}}}},
            "policies": [{{"name": "a", "exchange": {{"audience": "a-api"}}}},
                         {{"name": "b", "exchange": {{"scope": "read"}}}}]"#
        ))
        .unwrap();
        assert_ne!(
            other_audiences
                .policies
                .get(1)
                .exchange
                .as_ref()
                .unwrap()
                .id,
            b.id
        );
    }

    #[test]
    fn errors_name_the_field() {
        for (extra, field) in [
            (
                r#", "policies": [{"name": "a", "exchange": {"audience": "x"}}]"#,
                "policies[0].exchange",
            ),
            (r#", "exchange": {"audience": "x"}"#, "exchange"),
            (
                r#", "token_exchange": {"cluster": "ts", "path": "/t", "client_id": "g",
                "client_secret": "s", "subject_token": "id_token"}"#,
                "token_exchange.subject_token",
            ),
            (
                r#", "token_exchange": {"cluster": "ts", "path": "t", "client_id": "g",
                "client_secret": "s"}"#,
                "token_exchange.path",
            ),
            (
                r#", "token_exchange": {"cluster": "ts", "path": "/t", "client_id": "g",
                "client_secret": "s", "timeout_ms": 0}"#,
                "token_exchange.timeout_ms",
            ),
            (
                &format!(
                    r#"{EXCHANGE}, "policies": [{{"name": "a", "exchange": {{"resource": "orders"}}}}]"#
                ),
                "policies[0].exchange.resource",
            ),
            (
                &format!(
                    r#"{EXCHANGE}, "policies": [{{"name": "a", "exchange": {{"scope": "a\"b"}}}}]"#
                ),
                "policies[0].exchange.scope",
            ),
            (
                &format!(
                    r#"{EXCHANGE}, "policies": [{{"name": "a", "exchange": {{"audiences": "x"}}}}]"#
                ),
                "policies[0].exchange.audiences",
            ),
        ] {
            assert_eq!(cfg(extra).map(|_| ()).unwrap_err().field, field, "{extra}");
        }
        // Split tokens alone: the client's token is a signature, only the JWT can be sent.
        let split_only = Config::from_slice(
            br#"{"split": {}, "token_exchange": {"cluster": "ts", "path": "/t",
            "client_id": "g", "client_secret": "s"}}"#,
        );
        assert_eq!(
            split_only.map(|_| ()).unwrap_err().field,
            "token_exchange.subject_token"
        );
    }
}
