//! Plugin configuration: the JSON handed to the filter in Envoy's `configuration` field.
//!
//! Parsed in two steps: `serde` with `deny_unknown_fields` into raw structs (so a typo is an
//! error, reported with its JSON path), then validated into [`Config`], whose errors name the
//! field. A bad configuration makes `on_configure` fail, so Envoy refuses the filter: no request
//! is ever forwarded unauthenticated because of a configuration mistake.

mod cache;
mod checks;
mod cookies;
mod endpoint;
mod exchange;
mod fleet;
mod phantom;
mod policy;
mod proof;
mod revocation;
mod split;
mod verify;

use serde::Deserialize;

pub use self::cache::CacheConfig;
pub use self::cookies::{CookiesConfig, CorsConfig};
pub use self::endpoint::Endpoint;
pub use self::exchange::{ExchangeConfig, ExchangeRule};
pub use self::fleet::FleetConfig;
pub use self::phantom::PhantomConfig;
pub use self::policy::{
    segment_of, ClaimHeader, Credentials, Embedded, HostMatch, Match, PathMatch, Policies, Policy,
    TokenRule, DEFAULT_POLICY, MAX_POLICIES, METHOD_OVERRIDES,
};
pub use self::proof::{DpopConfig, MtlsConfig, ProofRule, DPOP_ALGORITHMS};
pub use self::revocation::{BackchannelConfig, RevocationConfig};
pub use self::split::{PublishConfig, SplitConfig};
pub use self::verify::{KeySource, VerifyConfig};
pub use crate::token::introspection::Contract;

use self::cache::RawCache;
use self::checks::{check_quotable, entries, in_range, namespace_of};
use self::cookies::RawCookies;
use self::exchange::{RawExchange, RawExchangeRule};
use self::phantom::RawPhantom;
use self::policy::{RawClaimHeader, RawMatch, RawPolicy};
use self::proof::{RawDpop, RawMtls};
use self::revocation::RawRevocation;
use self::split::RawSplit;
use self::verify::RawVerify;

/// Default `realm` in `WWW-Authenticate` (RFC 6750 §3).
pub const DEFAULT_REALM: &str = "api";
/// Default `phantom.timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 2_000;
/// Default `cache.max_ttl_s`.
pub const DEFAULT_MAX_TTL_S: u64 = 300;
/// Default `cache.negative_ttl_s`.
pub const DEFAULT_NEGATIVE_TTL_S: u64 = 5;
/// Default `cache.max_entries` and `split.max_entries`.
pub const DEFAULT_MAX_ENTRIES: u32 = 100_000;
/// Largest `split.max_entries`: every slot is created when the configuration loads.
pub const MAX_SPLIT_ENTRIES: u32 = 1_000_000;
/// Shortest `split.publish.secret`.
pub const MIN_PUBLISH_SECRET_LEN: usize = 16;
const MAX_SPLIT_PATHS: usize = 16;
/// Default `verify.clock_skew_s`.
pub const DEFAULT_CLOCK_SKEW_S: u64 = 30;
/// Default `verify.jwks.refresh_s`.
pub const DEFAULT_JWKS_REFRESH_S: u64 = 300;
/// Default `verify.jwks.min_refetch_s`.
pub const DEFAULT_JWKS_MIN_REFETCH_S: u64 = 5;
const MAX_CLOCK_SKEW_S: u64 = 300;
const MAX_AUDIENCES: usize = 16;

/// Largest configuration accepted, in bytes.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;
const MAX_TIMEOUT_MS: u64 = 60_000;
const MAX_TTL_S: u64 = 86_400;
const MAX_NEGATIVE_TTL_S: u64 = 3_600;
const MAX_ENTRIES: u32 = 10_000_000;
const MAX_SCOPES: usize = 64;
const MAX_MINT_CLAIMS: usize = 64;
/// Default `split.remote.timeout_ms`.
pub const DEFAULT_REMOTE_TIMEOUT_MS: u64 = 200;
/// Default `split.remote.local_ttl_s`.
pub const DEFAULT_LOCAL_TTL_S: u64 = 10;
/// Default `phantom.mint.max_lifetime_s`.
pub const DEFAULT_MINT_LIFETIME_S: u64 = 300;
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

/// The filter's plugin configuration (Envoy's `configuration`, Istio's `pluginConfig`, Envoy
/// Gateway's Wasm `config`). At least one of `phantom` and `split` is required.
#[derive(Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// `realm` of the `WWW-Authenticate` challenge: printable ASCII without `"` or `\`.
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 256), extend("default" = "api")))]
    realm: Option<String>,
    /// Scopes the `default` policy requires: every one must be in the token's `scope`, checked on
    /// every request, cache hits included.
    #[cfg_attr(feature = "cli", schemars(extend("default" = [])))]
    #[serde(default)]
    required_scopes: Vec<String>,
    /// The `default` policy's token rule: `required` (a valid token is needed), `optional` (a
    /// request without credentials is forwarded without `Authorization`; a token that is there must
    /// be valid), `none` (no token; `Authorization` is removed).
    #[cfg_attr(feature = "cli", schemars(extend("enum" = ["required", "optional", "none"]), extend("default" = "required")))]
    token: Option<String>,
    /// The `default` policy accepts JWTs as they are (verified with `verify`, which it requires).
    #[cfg_attr(feature = "cli", schemars(extend("default" = false)))]
    accept_jwt: Option<bool>,
    /// Per-route policies, at most 256: the route metadata names one, else the first whose `match`
    /// holds, else the top level (`default`).
    #[cfg_attr(feature = "cli", schemars(extend("default" = [])))]
    #[serde(default)]
    policies: Vec<RawPolicy>,
    /// Claims of the forwarded JWT copied into request headers (at most 32), for the `default`
    /// policy.
    #[cfg_attr(feature = "cli", schemars(extend("default" = [])))]
    #[serde(default)]
    claims_to_headers: Vec<RawClaimHeader>,
    /// Claims set as Envoy filter state `wasm.token_filter.<claim>` (at most 32), with
    /// `wasm.token_filter.policy`.
    #[cfg_attr(feature = "cli", schemars(extend("default" = [])))]
    #[serde(default)]
    claims_to_filter_state: Vec<String>,
    /// Token exchange for the `default` policy's API (requires `token_exchange`); never inherited
    /// by policies.
    exchange: Option<RawExchangeRule>,
    /// Accept DPoP proofs (RFC 9449); without it a DPoP-bound token is refused.
    dpop: Option<RawDpop>,
    /// Accept certificate-bound tokens (RFC 8705); without it they are refused.
    mtls: Option<RawMtls>,
    /// The `default` policy's rule for unbound tokens: `required` accepts only tokens bound to a
    /// key, with their proof. A bound token always needs its proof.
    #[cfg_attr(feature = "cli", schemars(extend("enum" = ["optional", "required"]), extend("default" = "optional")))]
    proof: Option<String>,
    /// Introspection of opaque tokens (the phantom token pattern).
    phantom: Option<RawPhantom>,
    /// The token caches.
    #[serde(default)]
    cache: RawCache,
    /// Split tokens: a presented token is first looked up in the store by SHA-256 of the signature.
    split: Option<RawSplit>,
    /// Verify every JWT before it is forwarded or cached.
    verify: Option<RawVerify>,
    /// Where tokens are exchanged (RFC 8693) for the policies with an `exchange`.
    token_exchange: Option<RawExchange>,
    /// Revocation that reaches every cache of the process at once: the API, RFC 7009 observed,
    /// back-channel logout.
    revocation: Option<RawRevocation>,
    /// Least life a forwarded JWT must have left (`exp` - now), in seconds; 0: off. The `default`
    /// policy's, inherited by policies.
    #[cfg_attr(feature = "cli", schemars(range(min = 0, max = 3600), extend("default" = 0)))]
    min_remaining_lifetime_s: Option<u64>,
    /// Longest `exp - iat` of a forwarded JWT, in seconds (a JWT without `iat` or `exp` is
    /// refused). The `default` policy's, inherited by policies.
    #[cfg_attr(feature = "cli", schemars(range(min = 1, max = 31536000)))]
    max_lifetime_s: Option<u64>,
    /// The `default` policy's API receives the JWT the resolved one carries in a claim; never
    /// inherited.
    embedded_token: Option<policy::RawEmbedded>,
    /// Browser apps (the token handler pattern): the token in an encrypted cookie, trusted
    /// origins, CSRF, CORS with credentials.
    cookies: Option<RawCookies>,
    /// A fleet of gateways sharing their caches and stores through Redis (webdis).
    fleet: Option<fleet::RawFleet>,
    /// Where the `default` policy's token may come from (with `cookies`).
    #[cfg_attr(feature = "cli", schemars(extend("enum" = ["bearer", "cookie", "either"])))]
    credentials: Option<String>,
}

/// The configuration's JSON Schema (draft 2020-12), made from the types it is read into: every
/// field, its type, description, default, range and allowed values. Rules between fields (one
/// of two fields, a field that needs another section, uniqueness) are the validation's alone:
/// [`SCHEMA_CANNOT_SAY`] lists them.
#[cfg(feature = "cli")]
pub fn schema() -> serde_json::Value {
    let raw = serde_json::to_string(&schemars::schema_for!(RawConfig)).unwrap_or_default();
    // The types are named `Raw...` in the code; the schema names them by what they are.
    let named = raw
        .replace("\"#/$defs/Raw", "\"#/$defs/")
        .replace("\"Raw", "\"");
    let mut schema: serde_json::Value = serde_json::from_str(&named).unwrap_or_default();
    if let Some(root) = schema.as_object_mut() {
        root.insert(
            "$id".to_owned(),
            "https://github.com/envoy-token-filter/envoy-token-filter/token-filter.schema.json"
                .into(),
        );
        root.insert(
            "title".to_owned(),
            "envoy-token-filter configuration".into(),
        );
    }
    schema
}

/// What the JSON Schema cannot express, and only `check` (the validation) refuses.
pub const SCHEMA_CANNOT_SAY: &[&str] = &[
    "phantom or split: at least one",
    "verify.jwks or verify.jwks_inline: exactly one; an HS* algorithm needs its secret inline",
    "accept_jwt, phantom.response \"rfc9701\", revocation.backchannel_logout: need verify",
    "phantom.response \"rfc9701\": needs phantom.mint; phantom.jwt_claim: with phantom.response \"json\" only",
    "exchange: needs token_exchange; embedded_token and exchange: not both in one policy",
    "embedded_token.audiences: required with verify, refused without",
    "split.fallback_to_phantom, token_exchange with subject_token access_token: need phantom",
    "policies[].name: unique, not \"default\"; claims_to_headers headers unique per list",
    "policies[].match: path_exact or path_prefix, not both",
    "dpop.max_proofs_per_key: at most replay_entries / 2",
    "verify.jwks.min_refetch_s: at most refresh_s",
    "revocation: path and secret together; at least one of path, observe_paths, backchannel_logout; every path its own",
    "revocation.mark_ttl_s: at least cache.max_ttl_s and phantom.mint.max_lifetime_s",
    "phantom.mint.private_key_pem: a key of the algorithm's curve",
    "verify.jwks_inline: a JWK Set with a usable key; realm and scopes: no quote or backslash",
    "paths matched against requests (publish, revocation, split responses, jwks_path): no '?' or '#'",
    "fleet and split.remote: not both (the fleet is the split store's level 2)",
    "credentials \"cookie\" or \"either\": needs cookies; cookies.trusted_web_origins: origins (http(s), a host, an optional port)",
];

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub realm: String,
    /// The policies, the top-level one (`default`: `required_scopes`, `token`, `accept_jwt`,
    /// `claims_to_headers`) included, and what they need.
    pub policies: Policies,
    /// Introspection of opaque tokens; `None` when only split tokens are accepted.
    pub phantom: Option<PhantomConfig>,
    pub cache: CacheConfig,
    pub split: Option<SplitConfig>,
    /// JWT verification before any JWT is forwarded or cached.
    pub verify: Option<VerifyConfig>,
    /// DPoP proofs (RFC 9449); without it a DPoP-bound token is refused.
    pub dpop: Option<DpopConfig>,
    /// Certificate-bound tokens (RFC 8705); without it a certificate-bound token is refused.
    pub mtls: Option<MtlsConfig>,
    /// Token exchange (RFC 8693), for the policies with an `exchange`.
    pub token_exchange: Option<ExchangeConfig>,
    /// Revocation that reaches every cache of the process (the API, RFC 7009 observed,
    /// back-channel logout); `None`: tokens are forgotten when their cache entries end.
    pub revocation: Option<RevocationConfig>,
    /// Browser apps: the token in an encrypted cookie.
    pub cookies: Option<CookiesConfig>,
    /// What a fleet of gateways shares (the phantom cache, level 2).
    pub fleet: Option<FleetConfig>,
    /// The lengths of the names of the headers the filter may own, as bits (bit `n`: a name
    /// of `n` bytes): a request header of any other length is none of them, at the cost of
    /// one test.
    pub owned_lengths: u64,
    /// The filter's own paths (split, the gateway's JWK Set, revocation), folded
    /// ([`crate::token::path::fold`]): a request whose path folds to one of them, but is not
    /// it, is refused.
    pub own_paths_folded: Vec<String>,
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
        let raw: RawConfig = serde::Deserialize::deserialize(&mut de).map_err(|e| {
            // Keys the path names are printed only when they are names (a key may carry a
            // value: `client_secret:VALUE`).
            let mut path = String::new();
            for step in crate::json_error::path_at(bytes, &e) {
                match step {
                    crate::json_error::Step::Index(index) => path.push_str(&format!("[{index}]")),
                    crate::json_error::Step::Key(key) => {
                        if !path.is_empty() {
                            path.push('.');
                        }
                        path.push_str(&crate::json_error::key_name(key));
                    }
                }
            }
            let field = if path.is_empty() {
                "configuration"
            } else {
                &path
            };
            ConfigError::new(field, crate::json_error::describe(&e))
        })?;
        de.end()
            .map_err(|e| ConfigError::new("configuration", crate::json_error::describe(&e)))?;
        raw.validate()
    }

    /// One log line describing the configuration, without the secrets.
    pub fn summary(&self) -> String {
        let d = &self.policies.default;
        let mut out = format!(
            "realm={} required_scopes={:?} token={} accept_jwt={} policies={:?}",
            self.realm,
            d.required_scopes,
            d.token.name(),
            d.accept_jwt,
            self.policies
                .list
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
        );
        if let Some(p) = &self.phantom {
            out.push_str(&format!(
                " {} phantom.response={} cache.max_ttl_s={} cache.negative_ttl_s={} \
                 cache.max_entries={}",
                p.endpoint.summary("phantom"),
                p.contract.name(),
                self.cache.max_ttl_s,
                self.cache.negative_ttl_s,
                self.cache.max_entries,
            ));
        }
        if let Some(m) = self.phantom.as_ref().and_then(|p| p.mint.as_ref()) {
            out.push_str(&format!(
                " phantom.mint.issuer={} phantom.mint.audience={} phantom.mint.algorithm={} \
                 phantom.mint.key_id={} phantom.mint.claims={:?} phantom.mint.max_lifetime_s={} \
                 phantom.mint.jwks_path={}",
                m.issuer,
                m.audience,
                m.key.name(),
                m.key_id,
                m.claims,
                m.max_lifetime_s,
                m.jwks_path.as_deref().unwrap_or("-"),
            ));
        }
        if let Some(sp) = &self.split {
            out.push_str(&format!(
                " split.hash_encoding={} split.max_entries={} split.fallback_to_phantom={} \
                 split.publish.path={} split.split_responses.paths={:?}",
                sp.hash_encoding.name(),
                sp.max_entries,
                sp.fallback_to_phantom,
                sp.publish.as_ref().map_or("-", |p| p.path.as_str()),
                sp.split_responses,
            ));
        }
        if let Some(x) = &self.token_exchange {
            let exchanging: Vec<&str> = self
                .policies
                .list
                .iter()
                .chain(std::iter::once(&self.policies.default))
                .filter(|p| p.exchange.is_some())
                .map(|p| p.name.as_str())
                .collect();
            out.push_str(&format!(
                " {} token_exchange.subject_token={} exchanging_policies={exchanging:?}",
                x.endpoint.summary("token_exchange"),
                x.subject.name(),
            ));
        }
        if let Some(v) = &self.verify {
            let algs: Vec<&str> = v.policy.algorithms.iter().map(|a| a.name()).collect();
            out.push_str(&format!(
                " verify.issuer={} verify.audiences={:?} verify.algorithms={:?} \
                 verify.clock_skew_s={}",
                v.policy.issuer, v.policy.audiences, algs, v.policy.clock_skew_s
            ));
            match &v.keys {
                KeySource::Inline(keys) => {
                    out.push_str(&format!(" verify.jwks_inline={}", keys.describe()));
                }
                KeySource::Remote(j) => out.push_str(&format!(
                    " verify.jwks.cluster={} verify.jwks.path={} verify.jwks.refresh_s={} \
                     verify.jwks.min_refetch_s={}",
                    j.cluster, j.path, j.refresh_s, j.min_refetch_s
                )),
            }
        }
        out
    }
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let realm = self.realm.unwrap_or_else(|| DEFAULT_REALM.to_owned());
        check_quotable("realm", &realm)?;

        if self.phantom.is_none() && self.split.is_none() {
            return Err(ConfigError::new(
                "phantom",
                "is required unless split is configured",
            ));
        }
        let phantom = self.phantom.map(RawPhantom::validate).transpose()?;

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
        let max_entries = entries(
            "cache.max_entries",
            self.cache.max_entries.unwrap_or(DEFAULT_MAX_ENTRIES),
            MAX_ENTRIES,
        )?;
        let verify = self.verify.map(RawVerify::validate).transpose()?;
        if phantom
            .as_ref()
            .is_some_and(|p| p.contract == Contract::Rfc9701)
            && verify.is_none()
        {
            return Err(ConfigError::new(
                "verify",
                "is required with phantom.response \"rfc9701\": the signed introspection \
                 response is verified with its keys",
            ));
        }
        // A cache filled without verification (or with other rules) is never read by a
        // configuration that verifies: the rules are part of the namespace.
        let fingerprint = verify
            .as_ref()
            .map_or_else(String::new, |v| v.fingerprint.clone());
        let namespace = phantom.as_ref().map_or_else(String::new, |p| {
            let [cluster, authority, path, client_id] = p.endpoint.identity();
            namespace_of(&[
                cluster,
                authority,
                path,
                client_id,
                &fingerprint,
                &format!("{:?}", p.contract),
                p.mint.as_ref().map_or("", |m| m.fingerprint.as_str()),
            ])
        });
        let split = self
            .split
            .map(|raw| raw.validate(phantom.is_some()))
            .transpose()?;
        let token_exchange = self
            .token_exchange
            .map(|raw| raw.validate(phantom.is_some()))
            .transpose()?;
        let mut policies = policy::validate(
            RawPolicy {
                name: DEFAULT_POLICY.to_owned(),
                matcher: RawMatch::default(),
                required_scopes: Some(self.required_scopes),
                token: self.token,
                accept_jwt: self.accept_jwt,
                proof: self.proof,
                claims_to_headers: Some(self.claims_to_headers),
                exchange: self.exchange,
                min_remaining_lifetime_s: self.min_remaining_lifetime_s,
                max_lifetime_s: self.max_lifetime_s,
                embedded_token: self.embedded_token,
                credentials: self.credentials,
            },
            self.policies,
            self.claims_to_filter_state,
            &policy::Needs {
                has_verify: verify.is_some(),
                has_exchange: token_exchange.is_some(),
                has_cookies: self.cookies.is_some(),
            },
        )?;
        for (embedded, v) in policies
            .list
            .iter_mut()
            .chain(std::iter::once(&mut policies.default))
            .filter_map(|p| p.embedded.as_mut())
            .zip(std::iter::repeat(verify.as_ref()))
        {
            if let Some(v) = v {
                // Verified like any JWT, for the policy's audiences.
                let mut rules = v.policy.clone();
                rules.audiences = embedded.audiences.clone();
                embedded.verify = Some(rules);
            }
        }
        let all = policies
            .list
            .iter_mut()
            .chain(std::iter::once(&mut policies.default));
        for rule in all.filter_map(|p| p.exchange.as_mut()) {
            if let Some(v) = &verify {
                // An exchanged JWT is verified like any other, for its policy's audience.
                let mut rules = v.policy.clone();
                if let Some(audience) = &rule.audience {
                    rules.audiences = vec![audience.clone()];
                }
                rule.verify = Some(rules);
            }
            if let Some(x) = &token_exchange {
                // How the token made is verified is part of what is asked for: a
                // configuration that verifies (or with other keys) never serves what one
                // without it cached.
                rule.identify(x, &fingerprint);
            }
        }
        // JWTs accepted as they are (`accept_jwt`) are cached apart from introspected ones: a
        // route that introspects never serves an entry a JWT route made.
        let jwt_namespace = format!("j{}", namespace_of(&["accept_jwt", &fingerprint]));
        let cookies = self.cookies.map(RawCookies::validate).transpose()?;
        let mut fleet = self.fleet.map(fleet::RawFleet::validate).transpose()?;
        if let Some(fleet) = fleet.as_mut() {
            let mut parts: Vec<&[u8]> = Vec::new();
            if let Some(p) = &phantom {
                parts.push(p.endpoint.basic_authorization.as_bytes());
            }
            if let Some(publish) = split.as_ref().and_then(|s| s.publish.as_ref()) {
                parts.push(&publish.secret_hash);
            }
            fleet.secret = fleet::FleetSecret::of(&parts);
        }
        // With a fleet, the split store's level 2 is the fleet's Redis (sealed entries).
        let mut split = split;
        if let (Some(fleet), Some(split)) = (&fleet, split.as_mut()) {
            if split.remote.is_some() {
                return Err(ConfigError::new(
                    "split.remote",
                    "with fleet, the fleet is the split store's level 2 (its entries sealed): \
                     remove split.remote",
                ));
            }
            split.remote = Some(fleet.split_remote());
        }
        let dpop = self.dpop.map(RawDpop::validate).transpose()?;
        let mtls = self.mtls.map(RawMtls::validate);
        let mint = phantom.as_ref().and_then(|p| p.mint.as_ref());
        let revocation = match self.revocation {
            None => None,
            Some(raw) => {
                let mut owned_paths: Vec<&str> = Vec::new();
                if let Some(split) = &split {
                    owned_paths.extend(split.publish.as_ref().map(|p| p.path.as_str()));
                    owned_paths.extend(split.split_responses.iter().map(String::as_str));
                }
                owned_paths.extend(mint.and_then(|m| m.jwks_path.as_deref()));
                let around = revocation::Around {
                    longest_s: max_ttl_s.max(mint.map_or(0, |m| m.max_lifetime_s)),
                    has_verify: verify.is_some(),
                    owned_paths,
                };
                Some(raw.validate(&around)?)
            }
        };
        // Those of `pipeline::owned_present`: DPoP unless it is forwarded, the method
        // overrides with policies.
        let dpop_owned = dpop.as_ref().is_some_and(|d| !d.forward_proof);
        let overrides = if policies.is_empty() {
            &[][..]
        } else {
            &policy::METHOD_OVERRIDES[..]
        };
        let owned_lengths = std::iter::once("authorization")
            .chain(dpop_owned.then_some("dpop"))
            .chain(cookies.as_ref().map(|c| c.csrf_header.as_str()))
            .chain(overrides.iter().copied())
            .chain(policies.claim_headers.iter().map(String::as_str))
            .fold(0u64, |bits, name| {
                bits | u32::try_from(name.len())
                    .ok()
                    .and_then(|n| 1u64.checked_shl(n))
                    .unwrap_or(0)
            });
        let mut own_paths_folded: Vec<String> = Vec::new();
        if let Some(split) = &split {
            own_paths_folded.extend(split.publish.as_ref().map(|p| p.path.clone()));
            own_paths_folded.extend(split.split_responses.iter().cloned());
        }
        own_paths_folded.extend(mint.and_then(|m| m.jwks_path.clone()));
        if let Some(rv) = &revocation {
            own_paths_folded.extend(rv.paths().map(str::to_owned));
        }
        for path in &mut own_paths_folded {
            *path = crate::token::path::fold(path);
        }
        Ok(Config {
            own_paths_folded,
            owned_lengths,
            realm,
            policies,
            dpop,
            mtls,
            token_exchange,
            revocation,
            cookies,
            fleet,
            phantom,
            cache: CacheConfig {
                max_ttl_s,
                negative_ttl_s,
                max_entries,
                namespace,
                jwt_namespace,
            },
            split,
            verify,
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::token::split::HashEncoding;
    use sha2::{Digest, Sha256};

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
      "cache": { "max_ttl_s": 300, "negative_ttl_s": 5, "max_entries": 100000 },
      "split": {
        "hash_encoding": "base64",
        "max_entries": 100000,
        "fallback_to_phantom": false,
        "publish": { "path": "/_split-token", "secret": "publisher-secret" },
        "split_responses": { "paths": ["/oauth/token"] }
      }
    }"#;

    const MINIMAL: &str = r#"{"phantom": {"cluster": "ts", "path": "/i",
        "client_id": "gw", "client_secret": "s3cr3t-value"}}"#;

    /// A configuration with a phantom section and `extra` top-level fields.
    pub(super) fn cfg(extra: &str) -> Result<Config, ConfigError> {
        Config::from_slice(
            format!(
                r#"{{"phantom": {{"cluster": "ts", "path": "/i", "client_id": "gw",
                "client_secret": "s"}} {extra}}}"#
            )
            .as_bytes(),
        )
    }

    pub(super) fn err(json: &str) -> ConfigError {
        Config::from_slice(json.as_bytes()).expect_err(json)
    }

    #[test]
    fn parses_the_documented_example() {
        let c = Config::from_slice(FULL.as_bytes()).unwrap();
        let p = c.phantom.clone().unwrap();
        assert_eq!(c.realm, "api");
        assert_eq!(c.policies.default.required_scopes, vec!["read"]);
        let p = &p.endpoint;
        assert_eq!(p.cluster, "token_service");
        assert_eq!(p.authority, "login.example.com");
        assert_eq!(p.path, "/oauth/v2/oauth-introspect");
        assert_eq!(p.timeout_ms, 2000);
        assert_eq!(p.basic_authorization, "Basic Z2F0ZXdheTpzZWNyZXQ=");
        assert_eq!(c.cache.max_ttl_s, 300);
        assert_eq!(c.cache.negative_ttl_s, 5);
        assert_eq!(c.cache.max_entries, 100_000);
        let sp = c.split.unwrap();
        assert_eq!(sp.hash_encoding, HashEncoding::Base64);
        assert_eq!(sp.max_entries, 100_000);
        assert!(!sp.fallback_to_phantom);
        let publish = sp.publish.unwrap();
        assert_eq!(publish.path, "/_split-token");
        assert_eq!(
            publish.secret_hash,
            <[u8; 32]>::from(Sha256::digest(b"publisher-secret"))
        );
        assert_eq!(sp.split_responses, vec!["/oauth/token"]);
    }

    pub(super) fn with_phantom(phantom_extra: &str, rest: &str) -> String {
        format!(
            r#"{{"phantom": {{"cluster": "ts", "path": "/i", "client_id": "gw",
            "client_secret": "s" {phantom_extra}}} {rest}}}"#
        )
    }

    pub(super) fn mint_json(extra: &str) -> String {
        let pem = crate::token::mint::tests::EC_PEM.replace('\n', "\\n");
        format!(
            r#", "mint": {{"issuer": "gw-iss", "audience": "apis", "algorithm": "ES256",
            "private_key_pem": "{pem}", "key_id": "k1" {extra}}}"#
        )
    }

    pub(super) const VERIFY: &str = r#", "verify": {"issuer": "i", "audiences": ["a"], "algorithms": ["ES256"],
        "jwks": {"cluster": "ts", "path": "/jwks"}}"#;

    #[test]
    fn applies_named_defaults() {
        let c = Config::from_slice(MINIMAL.as_bytes()).unwrap();
        let p = c.phantom.clone().unwrap();
        assert_eq!(c.realm, DEFAULT_REALM);
        assert!(c.policies.default.required_scopes.is_empty());
        assert_eq!(
            p.endpoint.authority, "ts",
            "authority defaults to the cluster"
        );
        assert_eq!(p.endpoint.timeout_ms, DEFAULT_TIMEOUT_MS);
        assert_eq!(c.cache.max_ttl_s, DEFAULT_MAX_TTL_S);
        assert_eq!(c.cache.negative_ttl_s, DEFAULT_NEGATIVE_TTL_S);
        assert_eq!(c.cache.max_entries, DEFAULT_MAX_ENTRIES);
        assert!(c.split.is_none());
        let split_only = Config::from_slice(br#"{"split": {}}"#).unwrap();
        assert!(split_only.phantom.is_none());
        let sp = split_only.split.unwrap();
        assert_eq!(sp.hash_encoding, HashEncoding::Base64);
        assert_eq!(sp.max_entries, DEFAULT_MAX_ENTRIES);
        assert!(!sp.fallback_to_phantom && sp.publish.is_none() && sp.split_responses.is_empty());
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
                r#"{"phantom": {"cluster": "ts", "path": "/i", "client_id": "gw"}}"#,
                "phantom",
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
        let encoded = c.phantom.clone().unwrap().endpoint.basic_authorization;
        for text in [format!("{c:?}"), c.summary()] {
            assert!(!text.contains("s3cr3t-value"), "{text}");
            assert!(!text.contains(&encoded), "{text}");
        }
        let e = err(
            r#"{"phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s3cr3t\u0001"}}"#,
        );
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        let c = Config::from_slice(FULL.as_bytes()).unwrap();
        for text in [format!("{c:?}"), c.summary()] {
            assert!(!text.contains("publisher-secret"), "{text}");
        }
        // Found by a probe: a key without its `:`, then a secret that looks like a name. The
        // syntax error's position takes in the secret's opening quote: no path is read from it.
        let e = err(
            r#"{"phantom": {"cluster": "c", "client_secret" "Zx3_kP9-qL2mN8vB4cR7tY1uW6oE5aS0dF3gH"}}"#,
        );
        assert_eq!(e.field, "configuration");
        assert!(!e.to_string().contains("Zx3_kP9"), "{e}");
        // Nor from an error deep inside a raw value (`jwks_inline`, which serde_json skips
        // without a depth limit): the field stays short.
        let deep = format!(r#"{{"verify": {{"jwks_inline": {}"#, "[".repeat(60_000));
        assert_eq!(err(&deep).field, "configuration");
    }

    #[test]
    fn a_wrong_typed_secret_is_never_echoed() {
        // Every field that holds a secret (or a key), given a number, an array, an object or a
        // boolean holding the "secret" digits: refused, naming the field, never the value.
        const SECRET: &str = "7777123456789";
        let wrong = [
            SECRET.to_owned(),
            format!("-{SECRET}"),
            format!("{SECRET}.5"),
            format!("[{SECRET}]"),
            format!(r#"{{"{SECRET}": 1}}"#),
            format!(r#"["{SECRET}"]"#),
        ];
        let mint = |v: &str| {
            format!(
                r#"{{"phantom": {{"cluster": "ts", "path": "/i", "client_id": "gw",
                "client_secret": "s", "response": "json", "mint": {{"issuer": "i",
                "audience": "a", "algorithm": "ES256", "key_id": "k", "private_key_pem": {v}}}}}}}"#
            )
        };
        type Make = Box<dyn Fn(&str) -> String>;
        let fields: [(&str, Make); 5] = [
            (
                "phantom.client_secret",
                Box::new(|v| {
                    format!(
                        r#"{{"phantom": {{"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": {v}}}}}"#
                    )
                }),
            ),
            (
                "phantom.client_id",
                Box::new(|v| {
                    format!(
                        r#"{{"phantom": {{"cluster": "ts", "path": "/i", "client_id": {v}, "client_secret": "s"}}}}"#
                    )
                }),
            ),
            ("phantom.mint.private_key_pem", Box::new(mint)),
            (
                "split.publish.secret",
                Box::new(|v| {
                    format!(r#"{{"split": {{"publish": {{"path": "/p", "secret": {v}}}}}}}"#)
                }),
            ),
            (
                "verify.jwks_inline",
                Box::new(|v| {
                    with_verify(&format!(
                        r#"{{"issuer": "i", "audiences": ["a"], "algorithms": ["HS256"],
                        "jwks_inline": {{"keys": [{{"kty": "oct", "k": {v}}}]}}}}"#
                    ))
                }),
            ),
        ];
        for (field, json) in &fields {
            for v in &wrong {
                let json = json(v);
                let e = err(&json);
                assert!(e.field.starts_with(field), "{field} {v}: {e}");
                assert!(!e.to_string().contains(SECRET), "{field} {v}: {e}");
            }
        }
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

    pub(super) fn with_verify(verify: &str) -> String {
        format!(
            r#"{{"phantom": {{"cluster": "ts", "path": "/i", "client_id": "gw",
            "client_secret": "s"}}, "verify": {verify}}}"#
        )
    }

    pub(super) const REMOTE: &str = r#""jwks": {"cluster": "token_service", "path": "/jwks"}"#;
}
