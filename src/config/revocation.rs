//! `revocation`: the revocation API, RFC 7009 requests seen on their way to the token service,
//! OpenID Connect back-channel logout, and the bounded marks they leave (`storage::revocation`).

use std::fmt;

use serde::Deserialize;

use super::checks::*;
use super::*;

/// Default `revocation.max_marks`.
pub const DEFAULT_MAX_MARKS: u32 = 100_000;
/// Largest `revocation.max_marks`: every slot is created when the configuration loads.
pub const MAX_MARKS: u32 = 1_000_000;
/// Default `revocation.mark_ttl_s`.
pub const DEFAULT_MARK_TTL_S: u64 = 86_400;
/// Longest `revocation.mark_ttl_s` (30 days).
pub const MAX_MARK_TTL_S: u64 = 30 * 86_400;
const MAX_OBSERVE_PATHS: usize = 16;

/// Revocation that reaches every cache of the process at once. Needs at least one of `path`,
/// `observe_paths`, `backchannel_logout`.
#[derive(Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawRevocation {
    /// The revocation API, answered by the filter (`POST`, form body); serve it on an internal
    /// listener.
    #[cfg_attr(
        feature = "cli",
        schemars(regex(pattern = r"^/[\x21-\x22\x24-\x3e\x40-\x7e]*$"))
    )]
    path: Option<String>,
    /// Bearer token the API's callers present (required with `path`): 16 to 1024 characters of
    /// `b64token`; compared in constant time; never logged.
    #[cfg_attr(
        feature = "cli",
        schemars(
            length(min = 16, max = 1024),
            regex(pattern = r"^[A-Za-z0-9._~+/-]+=*$")
        )
    )]
    secret: Option<String>,
    /// At most 16 RFC 7009 revocation endpoints of the token service, routed through the gateway:
    /// the token a request names is revoked here when the token service answers 200.
    #[cfg_attr(feature = "cli", schemars(length(max = 16), extend("default" = [])))]
    #[serde(default)]
    observe_paths: Vec<String>,
    /// Where the OpenID Provider posts logout tokens (OpenID Connect Back-Channel Logout 1.0);
    /// requires `verify`.
    backchannel_logout: Option<RawBackchannel>,
    /// Revocations kept at once (fixed slots, created when the configuration loads).
    #[cfg_attr(feature = "cli", schemars(range(min = 1, max = 1000000), extend("default" = 100000)))]
    max_marks: Option<u32>,
    /// How long a revocation is kept: at least the longest the gateway serves a token for
    /// (`cache.max_ttl_s`, `phantom.mint.max_lifetime_s`).
    #[cfg_attr(feature = "cli", schemars(range(min = 1, max = 2592000), extend("default" = 86400)))]
    mark_ttl_s: Option<u64>,
}

/// OpenID Connect Back-Channel Logout 1.0.
#[derive(Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackchannel {
    /// Where the provider posts `logout_token` (public, answered by the filter, never forwarded).
    #[cfg_attr(
        feature = "cli",
        schemars(regex(pattern = r"^/[\x21-\x22\x24-\x3e\x40-\x7e]*$"))
    )]
    path: String,
    /// 1 to 16 client ids of this relying party; a logout token's `aud` must contain one.
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 16)))]
    audiences: Vec<String>,
}

/// Revocation that reaches every cache of the process at once.
#[derive(Clone)]
pub struct RevocationConfig {
    /// The revocation API (`POST`, `Authorization: Bearer <secret>`); `None` without one.
    pub path: Option<String>,
    /// SHA-256 of the API's secret.
    pub secret_hash: [u8; 32],
    /// RFC 7009 revocation endpoints of the token service, on their way through the gateway.
    pub observe_paths: Vec<String>,
    pub backchannel_logout: Option<BackchannelConfig>,
    /// Marks kept at most (fixed slots).
    pub max_marks: u32,
    /// How long a subject's or session's mark lives, and a token's whose end is not known.
    pub mark_ttl_s: u64,
}

/// OpenID Connect Back-Channel Logout 1.0: where the provider posts its logout tokens, and
/// the audiences (this relying party's client ids) one of which they must name.
#[derive(Debug, Clone)]
pub struct BackchannelConfig {
    pub path: String,
    pub audiences: Vec<String>,
}

impl fmt::Debug for RevocationConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationConfig")
            .field("path", &self.path)
            .field("secret", &"<redacted>")
            .field("observe_paths", &self.observe_paths)
            .field("backchannel_logout", &self.backchannel_logout)
            .field("max_marks", &self.max_marks)
            .field("mark_ttl_s", &self.mark_ttl_s)
            .finish()
    }
}

impl RevocationConfig {
    /// Every path the block answers or watches.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.path
            .as_deref()
            .into_iter()
            .chain(self.observe_paths.iter().map(String::as_str))
            .chain(self.backchannel_logout.as_ref().map(|b| b.path.as_str()))
    }
}

/// What the block is checked against: the longest a token is served from a cache, or a JWT
/// the gateway mints lives; whether `verify` is configured; the paths the filter already owns.
pub(super) struct Around<'a> {
    pub longest_s: u64,
    pub has_verify: bool,
    pub owned_paths: Vec<&'a str>,
}

impl RawRevocation {
    pub(super) fn validate(self, around: &Around<'_>) -> Result<RevocationConfig, ConfigError> {
        let path = match self.path {
            Some(p) => {
                check_path("revocation.path", &p)?;
                Some(p)
            }
            None => None,
        };
        let secret_hash = match (&path, &self.secret) {
            (Some(_), Some(secret)) => secret_hash("revocation.secret", secret)?,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "revocation.secret",
                    "is required with revocation.path",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "revocation.secret",
                    "is set but revocation.path is not",
                ))
            }
            (None, None) => [0; 32],
        };
        if self.observe_paths.len() > MAX_OBSERVE_PATHS {
            return Err(ConfigError::new(
                "revocation.observe_paths",
                format!("must hold at most {MAX_OBSERVE_PATHS} paths"),
            ));
        }
        for (i, p) in self.observe_paths.iter().enumerate() {
            check_path(&format!("revocation.observe_paths[{i}]"), p)?;
        }
        let backchannel_logout = match self.backchannel_logout {
            None => None,
            Some(b) => {
                if !around.has_verify {
                    return Err(ConfigError::new(
                        "revocation.backchannel_logout",
                        "needs verify: a logout token is verified with its keys and issuer",
                    ));
                }
                check_path("revocation.backchannel_logout.path", &b.path)?;
                if b.audiences.is_empty() || b.audiences.len() > MAX_AUDIENCES {
                    return Err(ConfigError::new(
                        "revocation.backchannel_logout.audiences",
                        format!("must hold 1 to {MAX_AUDIENCES} audiences"),
                    ));
                }
                for (i, a) in b.audiences.iter().enumerate() {
                    check_name(&format!("revocation.backchannel_logout.audiences[{i}]"), a)?;
                }
                Some(BackchannelConfig {
                    path: b.path,
                    audiences: b.audiences,
                })
            }
        };
        if path.is_none() && self.observe_paths.is_empty() && backchannel_logout.is_none() {
            return Err(ConfigError::new(
                "revocation",
                "needs path, observe_paths or backchannel_logout",
            ));
        }
        let max_marks = entries(
            "revocation.max_marks",
            self.max_marks.unwrap_or(DEFAULT_MAX_MARKS),
            MAX_MARKS,
        )?;
        let mark_ttl_s = in_range(
            "revocation.mark_ttl_s",
            self.mark_ttl_s.unwrap_or(DEFAULT_MARK_TTL_S),
            around.longest_s.max(1),
            MAX_MARK_TTL_S,
        )
        .map_err(|_| {
            ConfigError::new(
                "revocation.mark_ttl_s",
                format!(
                    "must be between {} (the longest the gateway serves a token for: \
                     cache.max_ttl_s, phantom.mint.max_lifetime_s) and {MAX_MARK_TTL_S}",
                    around.longest_s.max(1)
                ),
            )
        })?;
        let config = RevocationConfig {
            path,
            secret_hash,
            observe_paths: self.observe_paths,
            backchannel_logout,
            max_marks,
            mark_ttl_s,
        };
        let mine: Vec<&str> = config.paths().collect();
        for (i, p) in mine.iter().enumerate() {
            let repeated = mine.iter().take(i).any(|q| q == p);
            if repeated || around.owned_paths.contains(p) {
                return Err(ConfigError::new(
                    "revocation",
                    "each path must be its own: not another of the block's, nor one the \
                     filter already answers (publish, split responses, the gateway's JWK Set)",
                ));
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{cfg, VERIFY};

    fn with(revocation: &str) -> String {
        format!(r#", "revocation": {revocation}"#)
    }

    #[test]
    fn the_contract_and_its_defaults() {
        let c = cfg(&with(
            r#"{"path": "/_revoke", "secret": "0123456789abcdef", "observe_paths": ["/oauth/revoke"]}"#,
        ))
        .unwrap();
        let r = c.revocation.unwrap();
        assert_eq!(r.path.as_deref(), Some("/_revoke"));
        assert_eq!(r.max_marks, super::DEFAULT_MAX_MARKS);
        assert_eq!(r.mark_ttl_s, super::DEFAULT_MARK_TTL_S);
        assert_eq!(r.observe_paths, ["/oauth/revoke"]);
        assert!(
            !format!("{r:?}").contains("0123456789abcdef"),
            "secret redacted"
        );
    }

    #[test]
    #[rustfmt::skip]
    fn refuses_what_cannot_work() {
        let cases = [
            (r#"{"path": "/r"}"#, "revocation.secret"),
            (r#"{"path": "/r", "secret": "short"}"#, "revocation.secret"),
            (r#"{"path": "/r", "secret": "0123456789abcdef!"}"#, "revocation.secret"),
            (r#"{"secret": "0123456789abcdef"}"#, "revocation.secret"),
            (r#"{}"#, "revocation"),
            (r#"{"path": "r", "secret": "0123456789abcdef"}"#, "revocation.path"),
            (r#"{"observe_paths": ["/a?b"]}"#, "revocation.observe_paths[0]"),
            (r#"{"observe_paths": ["/a", "/a"]}"#, "revocation"),
            (r#"{"path": "/a", "secret": "0123456789abcdef", "observe_paths": ["/a"]}"#, "revocation"),
            (r#"{"path": "/r", "secret": "0123456789abcdef", "max_marks": 0}"#, "revocation.max_marks"),
            (r#"{"path": "/r", "secret": "0123456789abcdef", "mark_ttl_s": 299}"#, "revocation.mark_ttl_s"),
            (r#"{"path": "/r", "secret": "0123456789abcdef", "mark_ttl_s": 99999999}"#, "revocation.mark_ttl_s"),
            (r#"{"backchannel_logout": {"path": "/bcl", "audiences": ["web"]}}"#, "revocation.backchannel_logout"),
            (r#"{"path": "/r", "secret": "0123456789abcdef", "nope": 1}"#, "revocation.nope"),
        ];
        for (block, field) in cases {
            let e = cfg(&with(block)).unwrap_err();
            assert!(e.field.starts_with(field), "{block}: {e}");
            assert!(!e.to_string().contains("0123456789abcdef"), "{e}");
        }
    }

    #[test]
    fn backchannel_logout_needs_verify_and_audiences() {
        let verified = |block: &str| cfg(&format!("{VERIFY}{}", with(block)));
        let c = verified(r#"{"backchannel_logout": {"path": "/bcl", "audiences": ["web"]}}"#);
        let b = c.unwrap().revocation.unwrap().backchannel_logout.unwrap();
        assert_eq!(b.audiences, ["web"]);
        let e = verified(r#"{"backchannel_logout": {"path": "/bcl", "audiences": []}}"#);
        assert_eq!(
            e.unwrap_err().field,
            "revocation.backchannel_logout.audiences"
        );
    }
}
