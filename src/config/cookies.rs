//! `cookies`: browser apps (the token handler pattern). The browser holds encrypted, HttpOnly
//! cookies written by an OAuth Agent; the filter turns them back into the token, after the
//! origin and CSRF checks, and answers CORS preflights from the trusted origins.

use std::fmt;

use serde::Deserialize;

use super::checks::*;
use super::*;
use crate::token::cookie;

/// Default `cookies.cors.allow_methods`.
pub const DEFAULT_CORS_METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
/// Default `cookies.cors.max_age_s`.
pub const DEFAULT_CORS_MAX_AGE_S: u64 = 86_400;
const MAX_KEYS: usize = 4;
const MAX_ORIGINS: usize = 16;
const MAX_CORS_ITEMS: usize = 32;

/// Browser apps: encrypted cookies instead of `Authorization`, trusted origins, CSRF, CORS.
#[derive(Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawCookies {
    /// The cookies are `<prefix>-at` (the access token) and `<prefix>-csrf`, the CSRF header
    /// `x-<prefix>-csrf`: 1 to 64 letters, digits and `-`.
    #[cfg_attr(
        feature = "cli",
        schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9-]+$"))
    )]
    name_prefix: String,
    /// AES-256-GCM keys, 64 hex characters each (1 to 4): the first is current, the others are
    /// accepted during a rotation. Never logged.
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 4), extend("items" = {"type": "string", "pattern": "^[0-9A-Fa-f]{64}$"})))]
    encryption_keys: Vec<String>,
    /// The web origins (`scheme://host[:port]`, no path, no `*`) whose pages may send cookie
    /// requests: 1 to 16.
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 16)))]
    trusted_web_origins: Vec<String>,
    /// The app is on another origin than the API: preflights from trusted origins are answered
    /// by the filter, and responses to them carry CORS headers with credentials.
    cors: Option<RawCors>,
    /// Remove the `-at` and `-csrf` cookies (and the CSRF header) before the request goes on.
    #[cfg_attr(feature = "cli", schemars(extend("default" = true)))]
    remove_cookies: Option<bool>,
}

/// CORS with credentials, for the trusted origins.
#[derive(Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawCors {
    /// Methods a preflight allows (upper case).
    #[cfg_attr(feature = "cli", schemars(length(max = 32), extend("default" = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])))]
    allow_methods: Option<Vec<String>>,
    /// Request headers a preflight allows; empty: those the preflight asks for. The CSRF header
    /// is always allowed.
    #[cfg_attr(feature = "cli", schemars(length(max = 32), extend("default" = [])))]
    allow_headers: Option<Vec<String>>,
    /// Response headers the page may read.
    #[cfg_attr(feature = "cli", schemars(length(max = 32), extend("default" = [])))]
    expose_headers: Option<Vec<String>>,
    /// How long a browser may keep a preflight's answer.
    #[cfg_attr(feature = "cli", schemars(range(min = 0, max = 86_400), extend("default" = 86_400)))]
    max_age_s: Option<u64>,
}

/// `cookies`, validated.
#[derive(Clone)]
pub struct CookiesConfig {
    /// `<prefix>-at`.
    pub access_cookie: String,
    /// `<prefix>-csrf`.
    pub csrf_cookie: String,
    /// `x-<prefix>-csrf`, lower case.
    pub csrf_header: String,
    pub keys: cookie::Keys,
    /// Lower case, as `scheme://host[:port]`.
    pub origins: Vec<String>,
    pub cors: Option<CorsConfig>,
    pub remove_cookies: bool,
}

/// `cookies.cors`, validated, with its header values made once.
#[derive(Debug, Clone)]
pub struct CorsConfig {
    pub allow_methods: String,
    /// Empty: echo what the preflight asks for (and the CSRF header).
    pub allow_headers: Vec<String>,
    pub expose_headers: String,
    pub max_age_s: u64,
}

impl fmt::Debug for CookiesConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookiesConfig")
            .field("access_cookie", &self.access_cookie)
            .field("csrf_cookie", &self.csrf_cookie)
            .field("keys", &format!("<{} redacted>", self.keys.len()))
            .field("origins", &self.origins)
            .field("cors", &self.cors)
            .field("remove_cookies", &self.remove_cookies)
            .finish()
    }
}

/// A web origin: `http` or `https`, a host (letters, digits, `-`, `.`), an optional port; no
/// path, query, user or `*`. Lower case.
fn origin(field: &str, value: &str) -> Result<String, ConfigError> {
    let refuse = || {
        ConfigError::new(
            field,
            "must be an origin: http:// or https://, a host, an optional :port; no path, no '*'",
        )
    };
    let lower = value.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .ok_or_else(refuse)?;
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !host.starts_with(['.', '-'])
        && !host.ends_with('.');
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok_and(|n| n > 0));
    if host_ok && port_ok {
        Ok(lower)
    } else {
        Err(refuse())
    }
}

fn tokens(field: &str, list: Vec<String>, upper: bool) -> Result<Vec<String>, ConfigError> {
    if list.len() > MAX_CORS_ITEMS {
        return Err(ConfigError::new(
            field,
            format!("must hold at most {MAX_CORS_ITEMS} names"),
        ));
    }
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^`|~".contains(&b);
    for (i, v) in list.iter().enumerate() {
        let ok = !v.is_empty()
            && v.len() <= 128
            && v.bytes().all(tchar)
            && (!upper || !v.bytes().any(|b| b.is_ascii_lowercase()));
        if !ok {
            return Err(ConfigError::new(
                &format!("{field}[{i}]"),
                if upper {
                    "must be an upper-case method name"
                } else {
                    "must be a header name (token characters, no '_')"
                },
            ));
        }
    }
    Ok(list)
}

impl RawCookies {
    pub(super) fn validate(self) -> Result<CookiesConfig, ConfigError> {
        let prefix = &self.name_prefix;
        if prefix.is_empty()
            || prefix.len() > 64
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(ConfigError::new(
                "cookies.name_prefix",
                "must be 1 to 64 letters, digits and '-'",
            ));
        }
        if self.encryption_keys.is_empty() || self.encryption_keys.len() > MAX_KEYS {
            return Err(ConfigError::new(
                "cookies.encryption_keys",
                format!("must hold 1 to {MAX_KEYS} keys"),
            ));
        }
        let mut keys = Vec::with_capacity(self.encryption_keys.len());
        for (i, hex) in self.encryption_keys.iter().enumerate() {
            keys.push(cookie::key_from_hex(hex).ok_or_else(|| {
                ConfigError::new(
                    &format!("cookies.encryption_keys[{i}]"),
                    "must be 64 hex characters (a 32-byte AES-256-GCM key)",
                )
            })?);
        }
        if self.trusted_web_origins.is_empty() || self.trusted_web_origins.len() > MAX_ORIGINS {
            return Err(ConfigError::new(
                "cookies.trusted_web_origins",
                format!("must hold 1 to {MAX_ORIGINS} origins"),
            ));
        }
        let mut origins = Vec::with_capacity(self.trusted_web_origins.len());
        for (i, o) in self.trusted_web_origins.iter().enumerate() {
            origins.push(origin(&format!("cookies.trusted_web_origins[{i}]"), o)?);
        }
        let cors = match self.cors {
            None => None,
            Some(c) => {
                let methods = match c.allow_methods {
                    Some(m) => tokens("cookies.cors.allow_methods", m, true)?,
                    None => DEFAULT_CORS_METHODS
                        .iter()
                        .map(|m| (*m).to_owned())
                        .collect(),
                };
                let allow_headers = tokens(
                    "cookies.cors.allow_headers",
                    c.allow_headers.unwrap_or_default(),
                    false,
                )?;
                let expose = tokens(
                    "cookies.cors.expose_headers",
                    c.expose_headers.unwrap_or_default(),
                    false,
                )?;
                let max_age_s = in_range(
                    "cookies.cors.max_age_s",
                    c.max_age_s.unwrap_or(DEFAULT_CORS_MAX_AGE_S),
                    0,
                    86_400,
                )?;
                Some(CorsConfig {
                    allow_methods: methods.join(", "),
                    allow_headers: allow_headers
                        .iter()
                        .map(|h| h.to_ascii_lowercase())
                        .collect(),
                    expose_headers: expose.join(", "),
                    max_age_s,
                })
            }
        };
        Ok(CookiesConfig {
            access_cookie: format!("{prefix}-at"),
            csrf_cookie: format!("{prefix}-csrf"),
            csrf_header: format!("x-{}-csrf", prefix.to_ascii_lowercase()),
            keys: cookie::Keys::new(&keys),
            origins,
            cors,
            remove_cookies: self.remove_cookies.unwrap_or(true),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::cfg;

    const KEY: &str = "4e4636356d65563e4c73233847503e3b21436e6f7629724950526f4b5e2e4e50";

    fn with(block: &str) -> String {
        format!(r#", "cookies": {block}"#)
    }

    #[test]
    fn the_contract_and_its_defaults() {
        let c = cfg(&with(&format!(
            r#"{{"name_prefix": "example", "encryption_keys": ["{KEY}"],
                "trusted_web_origins": ["https://WWW.example.com"], "cors": {{}}}}"#
        )))
        .unwrap();
        let k = c.cookies.unwrap();
        assert_eq!(
            (k.access_cookie.as_str(), k.csrf_cookie.as_str()),
            ("example-at", "example-csrf")
        );
        assert_eq!(k.csrf_header, "x-example-csrf");
        assert_eq!(k.origins, ["https://www.example.com"]);
        assert!(k.remove_cookies);
        let cors = k.cors.unwrap();
        assert_eq!(cors.allow_methods, "GET, HEAD, POST, PUT, PATCH, DELETE");
        assert_eq!(cors.max_age_s, 86_400);
        assert!(!format!("{:?}", c.policies.default).is_empty());
    }

    #[test]
    #[rustfmt::skip]
    fn refuses_what_cannot_work_and_never_echoes_a_key() {
        let good_key = format!("[\"{KEY}\"]");
        let cases = [
            (format!(r#"{{"name_prefix": "", "encryption_keys": {good_key}, "trusted_web_origins": ["https://a.example"]}}"#), "cookies.name_prefix"),
            (format!(r#"{{"name_prefix": "a_b", "encryption_keys": {good_key}, "trusted_web_origins": ["https://a.example"]}}"#), "cookies.name_prefix"),
            (r#"{"name_prefix": "ex", "encryption_keys": ["abcd"], "trusted_web_origins": ["https://a.example"]}"#.to_owned(), "cookies.encryption_keys[0]"),
            (r#"{"name_prefix": "ex", "encryption_keys": [], "trusted_web_origins": ["https://a.example"]}"#.to_owned(), "cookies.encryption_keys"),
            (format!(r#"{{"name_prefix": "ex", "encryption_keys": {good_key}, "trusted_web_origins": []}}"#), "cookies.trusted_web_origins"),
            (format!(r#"{{"name_prefix": "ex", "encryption_keys": {good_key}, "trusted_web_origins": ["https://a.example/"]}}"#), "cookies.trusted_web_origins[0]"),
            (format!(r#"{{"name_prefix": "ex", "encryption_keys": {good_key}, "trusted_web_origins": ["*"]}}"#), "cookies.trusted_web_origins[0]"),
            (format!(r#"{{"name_prefix": "ex", "encryption_keys": {good_key}, "trusted_web_origins": ["https://*.example.com"]}}"#), "cookies.trusted_web_origins[0]"),
            (format!(r#"{{"name_prefix": "ex", "encryption_keys": {good_key}, "trusted_web_origins": ["ftp://a.example"]}}"#), "cookies.trusted_web_origins[0]"),
            (format!(r#"{{"name_prefix": "ex", "encryption_keys": {good_key}, "trusted_web_origins": ["https://a.example:0"]}}"#), "cookies.trusted_web_origins[0]"),
            (format!(r#"{{"name_prefix": "ex", "encryption_keys": {good_key}, "trusted_web_origins": ["https://a.example"], "cors": {{"allow_methods": ["get"]}}}}"#), "cookies.cors.allow_methods[0]"),
            (format!(r#"{{"name_prefix": "ex", "encryption_keys": {good_key}, "trusted_web_origins": ["https://a.example"], "cors": {{"max_age_s": 86401}}}}"#), "cookies.cors.max_age_s"),
        ];
        for (block, field) in cases {
            let e = cfg(&with(&block)).unwrap_err();
            assert_eq!(e.field, field, "{block}");
            assert!(!e.to_string().contains(&KEY[..16]), "{e}");
        }
    }
}
