//! Plugin configuration: the JSON handed to the filter in Envoy's `configuration` field.
//!
//! Parsed in two steps: `serde` with `deny_unknown_fields` into raw structs (so a typo is an
//! error, reported with its JSON path), then validated into [`Config`], whose errors name the
//! field. A bad configuration makes `on_configure` fail, so Envoy refuses the filter: no request
//! is ever forwarded unauthenticated because of a configuration mistake.

use std::fmt;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::introspection;
use crate::scope;

/// Default `realm` in `WWW-Authenticate` (RFC 6750 §3).
pub const DEFAULT_REALM: &str = "api";
/// Default `phantom.timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 2_000;
/// Default `cache.max_ttl_s`.
pub const DEFAULT_MAX_TTL_S: u64 = 300;
/// Default `cache.negative_ttl_s`.
pub const DEFAULT_NEGATIVE_TTL_S: u64 = 5;
/// Default `cache.max_entries`.
pub const DEFAULT_MAX_ENTRIES: u32 = 100_000;

/// Largest configuration accepted, in bytes.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;
const MAX_TIMEOUT_MS: u64 = 60_000;
const MAX_TTL_S: u64 = 86_400;
const MAX_NEGATIVE_TTL_S: u64 = 3_600;
const MAX_ENTRIES: u32 = 10_000_000;
const MAX_SCOPES: usize = 64;
const MAX_NAME_LEN: usize = 256;
const MAX_SECRET_LEN: usize = 1_024;

/// A configuration error; the message always names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    realm: Option<String>,
    #[serde(default)]
    required_scopes: Vec<String>,
    phantom: Option<RawPhantom>,
    #[serde(default)]
    cache: RawCache,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhantom {
    cluster: String,
    authority: Option<String>,
    path: String,
    client_id: String,
    client_secret: String,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCache {
    max_ttl_s: Option<u64>,
    negative_ttl_s: Option<u64>,
    max_entries: Option<u32>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub realm: String,
    pub required_scopes: Vec<String>,
    pub phantom: PhantomConfig,
    pub cache: CacheConfig,
}

/// Where and how to introspect opaque tokens (RFC 7662, Curity's `application/jwt` variant).
#[derive(Clone)]
pub struct PhantomConfig {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub client_id: String,
    /// Precomputed `Authorization: Basic ...` value (RFC 6749 §2.3.1); holds the secret.
    pub basic_authorization: String,
    pub timeout_ms: u64,
}

// The secret is inside `basic_authorization`: never print it.
impl fmt::Debug for PhantomConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhantomConfig")
            .field("cluster", &self.cluster)
            .field("authority", &self.authority)
            .field("path", &self.path)
            .field("client_id", &self.client_id)
            .field("basic_authorization", &"<redacted>")
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub max_ttl_s: u64,
    pub negative_ttl_s: u64,
    pub max_entries: u32,
    /// Prefix of every shared-data key this configuration writes. Derived from the token
    /// service identity, so two filter configurations in one VM never read each other's
    /// entries, while identical configurations (one per worker) share them.
    pub namespace: String,
}

impl Config {
    /// Parses and validates the plugin configuration bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.is_empty() {
            return Err(ConfigError::new("configuration", "is empty"));
        }
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::new(
                "configuration",
                format!("is larger than {MAX_CONFIG_BYTES} bytes"),
            ));
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let raw: RawConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "configuration" } else { &path };
            ConfigError::new(field, e.inner().to_string())
        })?;
        de.end()
            .map_err(|e| ConfigError::new("configuration", e.to_string()))?;
        raw.validate()
    }

    /// One log line describing the configuration, without the secret.
    pub fn summary(&self) -> String {
        format!(
            "realm={} required_scopes={:?} phantom.cluster={} phantom.authority={} phantom.path={} \
             phantom.client_id={} phantom.timeout_ms={} cache.max_ttl_s={} cache.negative_ttl_s={} \
             cache.max_entries={}",
            self.realm,
            self.required_scopes,
            self.phantom.cluster,
            self.phantom.authority,
            self.phantom.path,
            self.phantom.client_id,
            self.phantom.timeout_ms,
            self.cache.max_ttl_s,
            self.cache.negative_ttl_s,
            self.cache.max_entries,
        )
    }
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let realm = self.realm.unwrap_or_else(|| DEFAULT_REALM.to_owned());
        check_quotable("realm", &realm)?;

        if self.required_scopes.len() > MAX_SCOPES {
            return Err(ConfigError::new(
                "required_scopes",
                format!("has more than {MAX_SCOPES} entries"),
            ));
        }
        for (i, s) in self.required_scopes.iter().enumerate() {
            if !scope::is_scope_token(s) {
                return Err(ConfigError::new(
                    &format!("required_scopes[{i}]"),
                    "must be a non-empty scope token (RFC 6749 §3.3: printable ASCII, no space, '\"' or '\\')",
                ));
            }
        }

        let raw = self
            .phantom
            .ok_or_else(|| ConfigError::new("phantom", "is required"))?;
        check_name("phantom.cluster", &raw.cluster)?;
        let authority = raw.authority.unwrap_or_else(|| raw.cluster.clone());
        check_name("phantom.authority", &authority)?;
        if !raw.path.starts_with('/')
            || raw.path.len() > 2_048
            || !raw.path.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ConfigError::new(
                "phantom.path",
                "must start with '/' and contain only visible ASCII (at most 2048 bytes)",
            ));
        }
        check_credential("phantom.client_id", &raw.client_id)?;
        check_credential("phantom.client_secret", &raw.client_secret)?;
        let timeout_ms = in_range(
            "phantom.timeout_ms",
            raw.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
            1,
            MAX_TIMEOUT_MS,
        )?;

        let max_ttl_s = in_range(
            "cache.max_ttl_s",
            self.cache.max_ttl_s.unwrap_or(DEFAULT_MAX_TTL_S),
            0,
            MAX_TTL_S,
        )?;
        let negative_ttl_s = in_range(
            "cache.negative_ttl_s",
            self.cache.negative_ttl_s.unwrap_or(DEFAULT_NEGATIVE_TTL_S),
            0,
            MAX_NEGATIVE_TTL_S,
        )?;
        let max_entries = in_range(
            "cache.max_entries",
            u64::from(self.cache.max_entries.unwrap_or(DEFAULT_MAX_ENTRIES)),
            1,
            u64::from(MAX_ENTRIES),
        )?;
        let max_entries = u32::try_from(max_entries).unwrap_or(MAX_ENTRIES);

        let namespace = namespace_of(&raw.cluster, &authority, &raw.path, &raw.client_id);
        Ok(Config {
            realm,
            required_scopes: self.required_scopes,
            phantom: PhantomConfig {
                basic_authorization: introspection::basic_authorization(
                    &raw.client_id,
                    &raw.client_secret,
                ),
                cluster: raw.cluster,
                authority,
                path: raw.path,
                client_id: raw.client_id,
                timeout_ms,
            },
            cache: CacheConfig {
                max_ttl_s,
                negative_ttl_s,
                max_entries,
                namespace,
            },
        })
    }
}

fn namespace_of(cluster: &str, authority: &str, path: &str, client_id: &str) -> String {
    let mut h = Sha256::new();
    for part in [cluster, authority, path, client_id] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    digest
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
}

fn in_range(field: &str, value: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::new(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ))
    }
}

/// Cluster names and authorities: non-empty, bounded, no whitespace or control characters.
fn check_name(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty()
        || value.len() > MAX_NAME_LEN
        || !value.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ConfigError::new(
            field,
            format!("must be 1 to {MAX_NAME_LEN} visible ASCII characters"),
        ));
    }
    Ok(())
}

/// Values placed in a quoted-string of a header (RFC 7230 §3.2.6): no `"`, `\` or controls.
fn check_quotable(field: &str, value: &str) -> Result<(), ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_NAME_LEN
        && value
            .bytes()
            .all(|b| (b == b' ' || b.is_ascii_graphic()) && b != b'"' && b != b'\\');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("must be 1 to {MAX_NAME_LEN} printable ASCII characters without '\"' or '\\'"),
        ))
    }
}

/// Client credentials: the message never echoes the value (it may be the secret).
fn check_credential(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > MAX_SECRET_LEN || value.chars().any(char::is_control) {
        return Err(ConfigError::new(
            field,
            format!("must be 1 to {MAX_SECRET_LEN} bytes without control characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{
      "realm": "api",
      "required_scopes": ["read"],
      "phantom": {
        "cluster": "token_service",
        "authority": "login.example.com",
        "path": "/oauth/v2/oauth-introspect",
        "client_id": "gateway",
        "client_secret": "secret",
        "timeout_ms": 2000
      },
      "cache": { "max_ttl_s": 300, "negative_ttl_s": 5, "max_entries": 100000 }
    }"#;

    const MINIMAL: &str = r#"{"phantom": {"cluster": "ts", "path": "/i",
        "client_id": "gw", "client_secret": "s3cr3t-value"}}"#;

    fn err(json: &str) -> ConfigError {
        Config::from_slice(json.as_bytes()).expect_err(json)
    }

    #[test]
    fn parses_the_documented_example() {
        let c = Config::from_slice(FULL.as_bytes()).unwrap();
        assert_eq!(c.realm, "api");
        assert_eq!(c.required_scopes, vec!["read"]);
        assert_eq!(c.phantom.cluster, "token_service");
        assert_eq!(c.phantom.authority, "login.example.com");
        assert_eq!(c.phantom.path, "/oauth/v2/oauth-introspect");
        assert_eq!(c.phantom.timeout_ms, 2000);
        assert_eq!(c.phantom.basic_authorization, "Basic Z2F0ZXdheTpzZWNyZXQ=");
        assert_eq!(c.cache.max_ttl_s, 300);
        assert_eq!(c.cache.negative_ttl_s, 5);
        assert_eq!(c.cache.max_entries, 100_000);
    }

    #[test]
    fn applies_named_defaults() {
        let c = Config::from_slice(MINIMAL.as_bytes()).unwrap();
        assert_eq!(c.realm, DEFAULT_REALM);
        assert!(c.required_scopes.is_empty());
        assert_eq!(
            c.phantom.authority, "ts",
            "authority defaults to the cluster"
        );
        assert_eq!(c.phantom.timeout_ms, DEFAULT_TIMEOUT_MS);
        assert_eq!(c.cache.max_ttl_s, DEFAULT_MAX_TTL_S);
        assert_eq!(c.cache.negative_ttl_s, DEFAULT_NEGATIVE_TTL_S);
        assert_eq!(c.cache.max_entries, DEFAULT_MAX_ENTRIES);
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            ("", "configuration"),
            ("not json", "configuration"),
            ("[]", "configuration"),
            (
                r#"{"phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s"}} x"#,
                "configuration",
            ),
            ("{}", "phantom"),
            (
                r#"{"realm": "a\"b", "phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s"}}"#,
                "realm",
            ),
            (
                r#"{"realm": "", "phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s"}}"#,
                "realm",
            ),
            (
                r#"{"surprise": 1, "phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s"}}"#,
                "surprise",
            ),
            (
                r#"{"phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s", "timeout": 5}}"#,
                "phantom.timeout",
            ),
            (
                r#"{"phantom": {"cluster": "ts", "path": "/i", "client_id": "gw"}}"#,
                "phantom",
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
            (
                r#"{"phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s"}, "cache": {"max_entries": 0}}"#,
                "cache.max_entries",
            ),
            (
                r#"{"phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s"}, "cache": {"max_ttl_s": 86401}}"#,
                "cache.max_ttl_s",
            ),
            (
                r#"{"phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s"}, "cache": {"negative_ttl_s": 3601}}"#,
                "cache.negative_ttl_s",
            ),
            (
                r#"{"phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s"}, "cache": {"ttl": 1}}"#,
                "cache.ttl",
            ),
            (
                r#"{"required_scopes": ["read", "a b"], "phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s"}}"#,
                "required_scopes[1]",
            ),
            (
                r#"{"required_scopes": "read", "phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s"}}"#,
                "required_scopes",
            ),
        ];
        for (json, field) in cases {
            let e = err(json);
            assert_eq!(e.field, *field, "config {json} gave {e}");
            assert!(e.to_string().starts_with(field), "{e}");
        }
    }

    #[test]
    fn unknown_fields_are_named_in_the_message() {
        let e = err(
            r#"{"phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s", "timeout": 5}}"#,
        );
        assert!(e.message.contains("unknown field `timeout`"), "{e}");
    }

    #[test]
    fn secret_never_appears_in_debug_summary_or_errors() {
        let c = Config::from_slice(MINIMAL.as_bytes()).unwrap();
        let encoded = c.phantom.basic_authorization.clone();
        for text in [format!("{c:?}"), c.summary()] {
            assert!(!text.contains("s3cr3t-value"), "{text}");
            assert!(!text.contains(&encoded), "{text}");
        }
        let e = err(
            r#"{"phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s3cr3t\u0001"}}"#,
        );
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }

    #[test]
    fn namespace_depends_on_token_service_identity_only() {
        let a = Config::from_slice(MINIMAL.as_bytes()).unwrap();
        let b = Config::from_slice(
            br#"{"realm": "other", "phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "x"}}"#,
        )
        .unwrap();
        let c = Config::from_slice(
            br#"{"phantom": {"cluster": "ts", "path": "/j", "client_id": "gw", "client_secret": "s3cr3t-value"}}"#,
        )
        .unwrap();
        assert_eq!(a.cache.namespace, b.cache.namespace);
        assert_ne!(a.cache.namespace, c.cache.namespace);
        assert_eq!(a.cache.namespace.len(), 8);
    }
}
