//! A token service endpoint the gateway calls (`phantom` for introspection, `token_exchange`
//! for exchanges): where, and with which client credentials. One type, one validation, one
//! way to build its request headers.

use std::fmt;

use super::checks::*;
use super::*;

/// Where and as whom the gateway calls a token service endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub cluster: String,
    /// `:authority` of the calls (the cluster's name by default).
    pub authority: String,
    pub path: String,
    pub client_id: String,
    /// Precomputed `Authorization: Basic ...` value (RFC 6749 §2.3.1); holds the secret.
    pub basic_authorization: String,
    pub timeout_ms: u64,
}

// The secret is inside `basic_authorization`: never print it.
impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("cluster", &self.cluster)
            .field("authority", &self.authority)
            .field("path", &self.path)
            .field("client_id", &self.client_id)
            .field("basic_authorization", &"<redacted>")
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// The endpoint fields of a section as the configuration gives them (`phantom`,
/// `token_exchange`: the same six), moved out of it.
macro_rules! raw_endpoint {
    ($raw:expr) => {
        $crate::config::endpoint::RawEndpoint {
            cluster: $raw.cluster,
            authority: $raw.authority,
            path: $raw.path,
            client_id: $raw.client_id,
            client_secret: $raw.client_secret,
            timeout_ms: $raw.timeout_ms,
        }
    };
}
pub(super) use raw_endpoint;

/// An endpoint's fields as the configuration gives them.
pub(super) struct RawEndpoint {
    pub cluster: String,
    pub authority: Option<String>,
    pub path: String,
    pub client_id: String,
    pub client_secret: String,
    pub timeout_ms: Option<u64>,
}

impl RawEndpoint {
    /// Validated under `section` (`phantom`, `token_exchange`): errors name the field.
    pub(super) fn validate(self, section: &str) -> Result<Endpoint, ConfigError> {
        let field = |name: &str| format!("{section}.{name}");
        check_name(&field("cluster"), &self.cluster)?;
        let authority = self.authority.unwrap_or_else(|| self.cluster.clone());
        check_name(&field("authority"), &authority)?;
        // A call's path may carry a query; paths matched against requests may not.
        check_call_path(&field("path"), &self.path)?;
        check_credential(&field("client_id"), &self.client_id)?;
        check_credential(&field("client_secret"), &self.client_secret)?;
        let timeout_ms = in_range(
            &field("timeout_ms"),
            self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
            1,
            MAX_TIMEOUT_MS,
        )?;
        Ok(Endpoint {
            basic_authorization: crate::token::introspection::basic_authorization(
                &self.client_id,
                &self.client_secret,
            ),
            cluster: self.cluster,
            authority,
            path: self.path,
            client_id: self.client_id,
            timeout_ms,
        })
    }
}

impl Endpoint {
    /// The headers of a form POST to the endpoint (RFC 7662 §2.1, RFC 8693 §2.1), accepting
    /// `accept`.
    pub fn request_headers<'a>(&'a self, accept: &'a str) -> [(&'a str, &'a str); 6] {
        [
            (":method", "POST"),
            (":path", &self.path),
            (":authority", &self.authority),
            ("content-type", "application/x-www-form-urlencoded"),
            ("accept", accept),
            ("authorization", &self.basic_authorization),
        ]
    }

    /// What identifies the endpoint and its client (never the secret), for namespaces.
    pub fn identity(&self) -> [&str; 4] {
        [&self.cluster, &self.authority, &self.path, &self.client_id]
    }

    /// `<section>.cluster=... <section>.authority=...` for the configuration's log line.
    pub fn summary(&self, section: &str) -> String {
        format!(
            "{section}.cluster={} {section}.authority={} {section}.path={} \
             {section}.client_id={} {section}.timeout_ms={}",
            self.cluster, self.authority, self.path, self.client_id, self.timeout_ms
        )
    }
}
