//! `fleet`: what a fleet of gateways shares through Redis, spoken through webdis's URL protocol
//! (proxy-wasm can only make HTTP calls): the phantom cache (level 2, sealed entries),
//! revocation, DPoP replay and nonces. The split store is not shared through `fleet` yet
//! (issue 28; `split.remote` shares it as before): a configuration with both is refused,
//! rather than shared in part.

use serde::Deserialize;

use super::checks::*;
use super::*;
use crate::storage::remote::{RemoteConfig, Sealing};

/// Default `fleet.key_prefix`.
pub const DEFAULT_KEY_PREFIX: &str = "tf:";
/// Default `fleet.timeout_ms`.
pub const DEFAULT_FLEET_TIMEOUT_MS: u64 = 200;
/// Default `fleet.local_ttl_s`.
pub const DEFAULT_FLEET_LOCAL_TTL_S: u64 = 10;
/// Default `fleet.revocation_bound_ms`.
pub const DEFAULT_REVOCATION_BOUND_MS: u64 = 2_000;

/// The fleet's shared store.
#[derive(Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    /// Envoy cluster of webdis (in front of Redis).
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 256)))]
    cluster: String,
    /// `:authority` of its requests; the cluster name by default.
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 256)))]
    authority: Option<String>,
    /// Prefix of every key the filter writes: letters, digits, `:`, `_`, `.`, `-` (1 to 32).
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 32), regex(pattern = r"^[A-Za-z0-9:_.-]+$"), extend("default" = "tf:")))]
    key_prefix: Option<String>,
    /// Timeout of every fleet call, in milliseconds.
    #[cfg_attr(feature = "cli", schemars(range(min = 1, max = 60000), extend("default" = 200)))]
    timeout_ms: Option<u64>,
    /// Longest a gateway keeps a fleet entry in its own store: how late a change made
    /// elsewhere may be seen.
    #[cfg_attr(feature = "cli", schemars(range(min = 1, max = 86400), extend("default" = 10)))]
    local_ttl_s: Option<u64>,
    /// A revocation received by one gateway is enforced by every other within this bound, in
    /// milliseconds (at least 1000: the timer's period is 200 ms, and every worker applies a
    /// revocation on its next tick).
    #[cfg_attr(feature = "cli", schemars(range(min = 1000, max = 60000), extend("default" = 2000)))]
    revocation_bound_ms: Option<u64>,
    /// Accept split entries a token service wrote to Redis in the plain form (not sealed):
    /// weaker, a store breach reads their claims and can forge them.
    #[cfg_attr(feature = "cli", schemars(extend("default" = false)))]
    accept_plain_split: Option<bool>,
}

/// `fleet`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    pub cluster: String,
    pub authority: String,
    pub key_prefix: String,
    pub timeout_ms: u64,
    pub local_ttl_s: u64,
    pub revocation_bound_ms: u64,
    pub accept_plain_split: bool,
    /// What every gateway of the fleet knows and a client does not, mixed into every sealing
    /// key ([`FleetSecret::of`]).
    pub secret: FleetSecret,
}

/// The fleet's secret: the SHA-256 of the configuration's own secrets (the introspection
/// client's credentials, the publish API's secret), the same at every gateway of a fleet,
/// unknown to clients. Without it, a client holding a token who could also write to Redis
/// could seal an entry of its own for that token. Empty when the configuration has no secret
/// (split tokens split at issuance only): then `verify` is what refuses a forged entry.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct FleetSecret(pub Vec<u8>);

impl std::fmt::Debug for FleetSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "none"
        } else {
            "<redacted>"
        })
    }
}

impl FleetSecret {
    /// The secret of a configuration whose secrets are `parts` (none: empty).
    pub fn of(parts: &[&[u8]]) -> Self {
        use sha2::{Digest, Sha256};
        if parts.is_empty() {
            return Self::default();
        }
        let mut h = Sha256::new();
        h.update(b"envoy-token-filter fleet v1 secret\0");
        for part in parts {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        Self(h.finalize().to_vec())
    }
}

impl RawFleet {
    pub(super) fn validate(self) -> Result<FleetConfig, ConfigError> {
        check_name("fleet.cluster", &self.cluster)?;
        let authority = self.authority.unwrap_or_else(|| self.cluster.clone());
        check_name("fleet.authority", &authority)?;
        let key_prefix = self
            .key_prefix
            .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
        let prefix_ok = (1..=32).contains(&key_prefix.len())
            && key_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.' | b'-'));
        if !prefix_ok {
            return Err(ConfigError::new(
                "fleet.key_prefix",
                "must be 1 to 32 letters, digits, ':', '_', '.' or '-'",
            ));
        }
        Ok(FleetConfig {
            cluster: self.cluster,
            authority,
            key_prefix,
            timeout_ms: in_range(
                "fleet.timeout_ms",
                self.timeout_ms.unwrap_or(DEFAULT_FLEET_TIMEOUT_MS),
                1,
                60_000,
            )?,
            local_ttl_s: in_range(
                "fleet.local_ttl_s",
                self.local_ttl_s.unwrap_or(DEFAULT_FLEET_LOCAL_TTL_S),
                1,
                86_400,
            )?,
            revocation_bound_ms: in_range(
                "fleet.revocation_bound_ms",
                self.revocation_bound_ms
                    .unwrap_or(DEFAULT_REVOCATION_BOUND_MS),
                1_000,
                60_000,
            )?,
            accept_plain_split: self.accept_plain_split.unwrap_or(false),
            secret: FleetSecret::default(),
        })
    }
}

impl FleetConfig {
    /// The split store's level 2 in the fleet's Redis: webdis's request shapes, entries under
    /// `<key_prefix>s:<the store key>`, sealed.
    pub fn split_remote(&self) -> RemoteConfig {
        let prefix = format!("{}s:", self.key_prefix);
        RemoteConfig {
            cluster: self.cluster.clone(),
            authority: self.authority.clone(),
            get_path: format!("/GET/{prefix}{{key}}.txt"),
            put_path: format!("/SETEX/{prefix}{{key}}/{{ttl}}"),
            put_method: "PUT".to_owned(),
            delete_path: format!("/DEL/{prefix}{{key}}"),
            delete_method: "GET".to_owned(),
            timeout_ms: self.timeout_ms,
            local_ttl_s: self.local_ttl_s,
            sealed: Some(Sealing {
                prefix,
                accept_plain: self.accept_plain_split,
                secret: self.secret.0.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<FleetConfig, ConfigError> {
        serde_json::from_str::<RawFleet>(json)
            .map_err(|e| ConfigError::new("fleet", e.to_string()))?
            .validate()
    }

    #[test]
    fn the_contract_and_its_defaults() {
        let f = parse(r#"{"cluster": "webdis"}"#).unwrap();
        assert_eq!(
            f,
            FleetConfig {
                cluster: "webdis".into(),
                authority: "webdis".into(),
                key_prefix: "tf:".into(),
                timeout_ms: 200,
                local_ttl_s: 10,
                revocation_bound_ms: 2000,
                accept_plain_split: false,
                secret: FleetSecret::default(),
            }
        );
        let full = parse(
            r#"{"cluster": "webdis", "authority": "redis.internal", "key_prefix": "gw1:",
                "timeout_ms": 150, "local_ttl_s": 5, "revocation_bound_ms": 1000,
                "accept_plain_split": true}"#,
        )
        .unwrap();
        assert_eq!(full.authority, "redis.internal");
        assert!(full.accept_plain_split);
    }

    #[test]
    fn refuses_what_cannot_work_naming_the_field() {
        for (json, field) in [
            (r#"{"cluster": ""}"#, "fleet.cluster"),
            (
                r#"{"cluster": "w", "key_prefix": "a/b"}"#,
                "fleet.key_prefix",
            ),
            (r#"{"cluster": "w", "key_prefix": ""}"#, "fleet.key_prefix"),
            (r#"{"cluster": "w", "timeout_ms": 0}"#, "fleet.timeout_ms"),
            (
                r#"{"cluster": "w", "revocation_bound_ms": 999}"#,
                "fleet.revocation_bound_ms",
            ),
            (r#"{"cluster": "w", "local_ttl_s": 0}"#, "fleet.local_ttl_s"),
        ] {
            assert_eq!(parse(json).unwrap_err().field, field, "{json}");
        }
        assert!(parse(r#"{"cluster": "w", "extra": 1}"#).is_err());
    }

    #[test]
    fn a_fleet_shares_every_feature_present() {
        let phantom =
            r#""phantom": {"cluster": "ts", "path": "/i", "client_id": "c", "client_secret": "s"}"#;
        let fleet = r#""fleet": {"cluster": "webdis"}"#;
        let ok = format!("{{{phantom}, {fleet}}}");
        assert!(Config::from_slice(ok.as_bytes()).unwrap().fleet.is_some());
        // The split store's level 2 is the fleet's: split.remote beside it is refused.
        let remote = r#""remote": {"cluster": "w", "get_path": "/g/{key}", "put_path": "/p/{key}",
            "delete_path": "/d/{key}"}"#;
        let both = format!(r#"{{{phantom}, {fleet}, "split": {{"max_entries": 10, {remote}}}}}"#);
        let e = Config::from_slice(both.as_bytes()).unwrap_err();
        assert_eq!(e.field, "split.remote");
        assert!(e.message.contains("fleet"), "{e:?}");
        for shared in [
            r#""split": {"max_entries": 10}"#,
            r#""revocation": {"observe_paths": ["/revoke"]}"#,
            r#""dpop": {"nonce": true, "fleet_unavailable": "process"}"#,
        ] {
            let json = format!("{{{phantom}, {fleet}, {shared}}}");
            assert!(Config::from_slice(json.as_bytes()).is_ok(), "{shared}");
        }
        let wrong = format!(r#"{{{phantom}, {fleet}, "dpop": {{"fleet_unavailable": "open"}}}}"#);
        let e = Config::from_slice(wrong.as_bytes()).unwrap_err();
        assert_eq!(e.field, "dpop.fleet_unavailable");
        let split_only = format!(r#"{{"split": {{"max_entries": 10}}, {fleet}}}"#);
        let cfg = Config::from_slice(split_only.as_bytes()).unwrap();
        let remote = cfg.split.unwrap().remote.unwrap();
        assert_eq!(remote.get_path, "/GET/tf:s:{key}.txt");
        assert_eq!(remote.sealed.unwrap().redis_key("k"), "tf:s:k");
    }
}
