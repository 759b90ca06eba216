//! `split`: the split token store, the publish API, splitting at issuance, the remote store.

use std::fmt;

use serde::Deserialize;

use super::checks::*;
use super::*;
use crate::storage::remote::RemoteConfig;
use crate::token::split::HashEncoding;

/// The split token store.
#[derive(Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawSplit {
    /// How publishers write the store key enc(SHA-256(signature)).
    #[cfg_attr(feature = "cli", schemars(extend("default" = "base64")))]
    #[serde(default)]
    hash_encoding: HashEncoding,
    /// Store slots, created when the configuration loads.
    #[cfg_attr(feature = "cli", schemars(range(min = 1, max = 1000000), extend("default" = 100000)))]
    max_entries: Option<u32>,
    /// On a store miss, introspect the token with `phantom` (which it requires).
    #[cfg_attr(feature = "cli", schemars(extend("default" = false)))]
    #[serde(default)]
    fallback_to_phantom: bool,
    /// The publish API, answered by the filter.
    publish: Option<RawPublish>,
    /// Token endpoint responses whose JWTs are split on their way to the client.
    split_responses: Option<RawSplitResponses>,
    /// A second-level store shared by a fleet of gateways (a key-value HTTP service).
    remote: Option<RawRemote>,
}

/// The fleet store of split tokens.
#[derive(Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawRemote {
    /// Envoy cluster of the key-value HTTP service (webdis in front of Redis, ...).
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 256)))]
    cluster: String,
    /// `:authority` of its requests; the cluster name by default.
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 256)))]
    authority: Option<String>,
    /// Read request path; `{key}` is the store key.
    #[cfg_attr(feature = "cli", schemars(regex(pattern = r"^/[\x21-\x7e]*$")))]
    get_path: String,
    /// Write request path; `{key}`, and `{ttl}` (seconds left in the token's life).
    #[cfg_attr(feature = "cli", schemars(regex(pattern = r"^/[\x21-\x7e]*$")))]
    put_path: String,
    /// Write method; the body is `header.payload`.
    #[cfg_attr(feature = "cli", schemars(extend("enum" = ["GET", "POST", "PUT", "DELETE"]), extend("default" = "PUT")))]
    put_method: Option<String>,
    /// Delete request path, with `{key}`.
    #[cfg_attr(feature = "cli", schemars(regex(pattern = r"^/[\x21-\x7e]*$")))]
    delete_path: String,
    /// Delete method (webdis takes `GET`).
    #[cfg_attr(feature = "cli", schemars(extend("enum" = ["GET", "POST", "PUT", "DELETE"]), extend("default" = "DELETE")))]
    delete_method: Option<String>,
    /// Timeout of every remote call, in milliseconds.
    #[cfg_attr(feature = "cli", schemars(range(min = 1, max = 60000), extend("default" = 200)))]
    timeout_ms: Option<u64>,
    /// Longest time an entry stays in a gateway's own store once written or read through `remote`:
    /// the bound on how late a revocation made elsewhere is seen.
    #[cfg_attr(feature = "cli", schemars(range(min = 1, max = 86400), extend("default" = 10)))]
    local_ttl_s: Option<u64>,
}

/// The publish API (`POST` stores, `DELETE` revokes); never forwarded.
#[derive(Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawPublish {
    /// Path answered by the filter.
    #[cfg_attr(
        feature = "cli",
        schemars(regex(pattern = r"^/[\x21-\x22\x24-\x3e\x40-\x7e]*$"))
    )]
    path: String,
    /// Bearer token publishers present: 16 to 1024 characters of RFC 6750 `b64token`; compared in
    /// constant time; never logged.
    #[cfg_attr(
        feature = "cli",
        schemars(
            length(min = 16, max = 1024),
            regex(pattern = r"^[A-Za-z0-9._~+/-]+=*$")
        )
    )]
    secret: String,
}

/// Token endpoint responses split on their way.
#[derive(Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawSplitResponses {
    /// Token endpoint paths (1 to 16, exact match, query ignored).
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 16)))]
    paths: Vec<String>,
}

/// The Split Token pattern: the client's token is a JWT's signature, the rest is in the store.
#[derive(Debug, Clone)]
pub struct SplitConfig {
    pub hash_encoding: HashEncoding,
    pub max_entries: u32,
    /// On a store miss, introspect the presented value (requires `phantom`).
    pub fallback_to_phantom: bool,
    pub publish: Option<PublishConfig>,
    /// Token endpoint paths whose responses are split; empty when none.
    pub split_responses: Vec<String>,
    /// The second-level store shared by a fleet of gateways (`split.remote`).
    pub remote: Option<RemoteConfig>,
}

/// The publish API, answered by the filter on `path`.
#[derive(Clone)]
pub struct PublishConfig {
    pub path: String,
    /// SHA-256 of the secret: compared in constant time to the hash of the presented bearer
    /// token, so neither the comparison time nor the length reveals anything.
    pub secret_hash: [u8; 32],
}

impl fmt::Debug for PublishConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishConfig")
            .field("path", &self.path)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl RawSplit {
    pub(super) fn validate(self, has_phantom: bool) -> Result<SplitConfig, ConfigError> {
        let max_entries = entries(
            "split.max_entries",
            self.max_entries.unwrap_or(DEFAULT_MAX_ENTRIES),
            MAX_SPLIT_ENTRIES,
        )?;
        if self.fallback_to_phantom && !has_phantom {
            return Err(ConfigError::new(
                "split.fallback_to_phantom",
                "is true but phantom is not configured",
            ));
        }
        let publish = match self.publish {
            None => None,
            Some(p) => {
                check_path("split.publish.path", &p.path)?;
                let secret_hash = secret_hash("split.publish.secret", &p.secret)?;
                Some(PublishConfig {
                    path: p.path,
                    secret_hash,
                })
            }
        };
        let split_responses = match self.split_responses {
            None => Vec::new(),
            Some(r) => {
                if r.paths.is_empty() || r.paths.len() > MAX_SPLIT_PATHS {
                    return Err(ConfigError::new(
                        "split.split_responses.paths",
                        format!("must hold 1 to {MAX_SPLIT_PATHS} paths"),
                    ));
                }
                for (i, path) in r.paths.iter().enumerate() {
                    let field = format!("split.split_responses.paths[{i}]");
                    check_path(&field, path)?;
                    if publish.as_ref().is_some_and(|p| &p.path == path) {
                        return Err(ConfigError::new(&field, "is also split.publish.path"));
                    }
                }
                r.paths
            }
        };
        Ok(SplitConfig {
            hash_encoding: self.hash_encoding,
            max_entries,
            fallback_to_phantom: self.fallback_to_phantom,
            publish,
            split_responses,
            remote: self.remote.map(RawRemote::validate).transpose()?,
        })
    }
}

impl RawRemote {
    pub(super) fn validate(self) -> Result<RemoteConfig, ConfigError> {
        check_name("split.remote.cluster", &self.cluster)?;
        let authority = self.authority.unwrap_or_else(|| self.cluster.clone());
        check_name("split.remote.authority", &authority)?;
        for (field, path) in [
            ("split.remote.get_path", &self.get_path),
            ("split.remote.put_path", &self.put_path),
            ("split.remote.delete_path", &self.delete_path),
        ] {
            check_call_path(field, path)?;
            if !path.contains("{key}") {
                return Err(ConfigError::new(field, "must contain {key}"));
            }
        }
        let method = |field: &str, value: Option<String>, default: &str| {
            let m = value.unwrap_or_else(|| default.to_owned());
            if ["GET", "POST", "PUT", "DELETE"].contains(&m.as_str()) {
                Ok(m)
            } else {
                Err(ConfigError::new(field, "must be GET, POST, PUT or DELETE"))
            }
        };
        Ok(RemoteConfig {
            put_method: method("split.remote.put_method", self.put_method, "PUT")?,
            delete_method: method("split.remote.delete_method", self.delete_method, "DELETE")?,
            timeout_ms: in_range(
                "split.remote.timeout_ms",
                self.timeout_ms.unwrap_or(DEFAULT_REMOTE_TIMEOUT_MS),
                1,
                MAX_TIMEOUT_MS,
            )?,
            local_ttl_s: in_range(
                "split.remote.local_ttl_s",
                self.local_ttl_s.unwrap_or(DEFAULT_LOCAL_TTL_S),
                1,
                MAX_TTL_S,
            )?,
            sealed: None,
            cluster: self.cluster,
            authority,
            get_path: self.get_path,
            put_path: self.put_path,
            delete_path: self.delete_path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::err;

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"split": {"hash_encoding": "base32"}}"#,
                "split.hash_encoding",
            ),
            (r#"{"split": {"max_entries": 0}}"#, "split.max_entries"),
            (
                r#"{"split": {"max_entries": 1000001}}"#,
                "split.max_entries",
            ),
            (
                r#"{"split": {"fallback_to_phantom": true}}"#,
                "split.fallback_to_phantom",
            ),
            (r#"{"split": {"fallback": true}}"#, "split.fallback"),
            (r#"{"split": {"publish": {"path": "/p"}}}"#, "split.publish"),
            (
                r#"{"split": {"publish": {"path": "p", "secret": "0123456789abcdef"}}}"#,
                "split.publish.path",
            ),
            (
                r#"{"split": {"publish": {"path": "/p?x", "secret": "0123456789abcdef"}}}"#,
                "split.publish.path",
            ),
            (
                r#"{"split": {"publish": {"path": "/p", "secret": "short"}}}"#,
                "split.publish.secret",
            ),
            (
                r#"{"split": {"publish": {"path": "/p", "secret": "has a space in it!"}}}"#,
                "split.publish.secret",
            ),
            (
                r#"{"split": {"split_responses": {"paths": []}}}"#,
                "split.split_responses.paths",
            ),
            (
                r#"{"split": {"split_responses": {"paths": ["/t", "t"]}}}"#,
                "split.split_responses.paths[1]",
            ),
            (
                r#"{"split": {"split_responses": {"paths": ["/p"]}, "publish": {"path": "/p", "secret": "0123456789abcdef"}}}"#,
                "split.split_responses.paths[0]",
            ),
        ];
        for (json, field) in cases {
            let e = err(json);
            assert_eq!(e.field, *field, "config {json} gave {e}");
            assert!(e.to_string().starts_with(field), "{e}");
        }
    }
}
