//! `policies`, `claims_to_headers`, `claims_to_filter_state`: per-route policy. Envoy 1.40 has
//! no per-route configuration for Wasm filters, so the filter chooses the policy itself: by the
//! route's metadata, else by the first policy whose `match` matches, else the top-level fields
//! (the policy named `default`).

use serde::Deserialize;

use super::checks::*;
use super::exchange::RawExchangeRule;
use super::proof::ProofRule;
use super::*;
use crate::token::claims::ClaimPath;
use crate::token::scope;

/// Method-override headers some frameworks honour (Rails, Express, ASP.NET...): with policies,
/// the filter owns them.
pub const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Most policies in one configuration.
pub const MAX_POLICIES: usize = 256;
/// Most `claims_to_headers` entries in one list, and most `claims_to_filter_state` claims.
pub const MAX_CLAIM_MAPPINGS: usize = 32;
const MAX_POLICY_NAME: usize = 64;
const MAX_MATCH_ITEMS: usize = 64;

/// Headers a claim may never be copied into: pseudo-headers are refused by their `:`, these by
/// name (credentials, routing, framing, hop-by-hop).
const FORBIDDEN_HEADERS: [&str; 15] = [
    "authorization",
    "proxy-authorization",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "content-encoding",
    "cookie",
    "dpop",
];

/// A policy as given; the top level's fields make the `default` policy's. Every rule is
/// optional: an unset one is the top level's (for a listed policy) or its default (for the top
/// level); `exchange` is never inherited.
#[derive(Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    /// Unique name, 1 to 64 characters of `[a-z0-9_-]`; `default` is the top level.
    #[cfg_attr(
        feature = "cli",
        schemars(length(min = 1, max = 64), regex(pattern = r"^[a-z0-9_-]+$"))
    )]
    pub name: String,
    /// The condition: every field given must hold.
    #[serde(rename = "match", default)]
    pub matcher: RawMatch,
    /// `required`, `optional` or `none` (as at the top level).
    #[cfg_attr(feature = "cli", schemars(extend("enum" = ["required", "optional", "none"])))]
    pub token: Option<String>,
    /// Scopes this route requires.
    pub required_scopes: Option<Vec<String>>,
    /// A bearer token that is a compact JWS is verified with `verify` and, when valid, forwarded as
    /// it is, without introspection.
    pub accept_jwt: Option<bool>,
    /// `required`: only tokens bound to a key, with their proof.
    #[cfg_attr(feature = "cli", schemars(extend("enum" = ["optional", "required"])))]
    pub proof: Option<String>,
    /// Replaces the top-level list for this policy.
    pub claims_to_headers: Option<Vec<RawClaimHeader>>,
    /// Token exchange for this policy's API (requires `token_exchange`).
    pub exchange: Option<RawExchangeRule>,
    /// Least life a forwarded JWT must have left, in seconds; 0: off.
    #[cfg_attr(feature = "cli", schemars(range(min = 0, max = 3600)))]
    pub min_remaining_lifetime_s: Option<u64>,
    /// Longest `exp - iat` of a forwarded JWT, in seconds.
    #[cfg_attr(feature = "cli", schemars(range(min = 1, max = 31536000)))]
    pub max_lifetime_s: Option<u64>,
    /// This policy's API receives the JWT the resolved one carries in a claim.
    pub embedded_token: Option<RawEmbedded>,
    /// Where the token may come from (with `cookies`): `bearer` (the `Authorization` header),
    /// `cookie` (the encrypted cookie), `either` (the default with `cookies`: the header when
    /// there is one, else the cookie).
    #[cfg_attr(feature = "cli", schemars(extend("enum" = ["bearer", "cookie", "either"])))]
    pub credentials: Option<String>,
}

/// `embedded_token`: forward the JWT found in a claim of the resolved JWT instead of it.
#[derive(Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawEmbedded {
    /// The top-level claim that carries the JWT.
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 256)))]
    claim: String,
    /// With `verify` (then required, 1 to 16): the embedded JWT is verified for these audiences.
    #[cfg_attr(feature = "cli", schemars(length(max = 16)))]
    #[serde(default)]
    audiences: Vec<String>,
}

/// A policy's condition; every field given must hold.
#[derive(Deserialize, Default)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawMatch {
    /// The canonical path, without its query, equals it.
    #[cfg_attr(feature = "cli", schemars(regex(pattern = r"^/[\x21-\x7e]*$")))]
    path_exact: Option<String>,
    /// The canonical path, without its query, starts with it.
    #[cfg_attr(feature = "cli", schemars(regex(pattern = r"^/[\x21-\x7e]*$")))]
    path_prefix: Option<String>,
    /// Upper-case methods, any of them.
    methods: Option<Vec<String>>,
    /// Host names, any of them: case-insensitive, port ignored; `*.example.com` matches every
    /// subdomain.
    hosts: Option<Vec<String>>,
    /// The Envoy route's `name` (`xds.route_name`).
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 256)))]
    route_name: Option<String>,
}

/// A claim copied into a request header.
#[derive(Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawClaimHeader {
    /// The claim: a top-level name, or a dotted path into objects.
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 256)))]
    claim: String,
    /// The header: a lower-case token without `_`, not one the filter or the proxy owns.
    #[cfg_attr(
        feature = "cli",
        schemars(
            length(min = 1, max = 128),
            regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^`|~-]+$")
        )
    )]
    header: String,
}

/// What a route asks of the token (`token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRule {
    /// A valid token is required (the default).
    Required,
    /// No token: forwarded without `Authorization`; a token present must be valid.
    Optional,
    /// No lookup at all: the client's `Authorization` is removed.
    None,
}

impl TokenRule {
    fn parse(field: &str, value: Option<&str>) -> Result<Self, ConfigError> {
        match value.unwrap_or("required") {
            "required" => Ok(TokenRule::Required),
            "optional" => Ok(TokenRule::Optional),
            "none" => Ok(TokenRule::None),
            _ => Err(ConfigError::new(
                field,
                "must be \"required\", \"optional\" or \"none\"",
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TokenRule::Required => "required",
            TokenRule::Optional => "optional",
            TokenRule::None => "none",
        }
    }
}

/// A path condition, on the canonical path without its query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

/// A host condition: lower case, no port, no trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Exact(String),
    /// `*.example.com`: any subdomain of it (the suffix kept with its leading dot).
    Subdomain(String),
}

/// `match`: every condition given must hold; an empty match holds for every request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    pub path: Option<PathMatch>,
    pub methods: Vec<String>,
    pub hosts: Vec<HostMatch>,
    pub route_name: Option<String>,
}

/// A claim copied into a request header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimHeader {
    /// Index into [`Policies::claims`].
    pub claim: usize,
    pub header: String,
}

/// One policy, the top-level one (`default`) included.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub matcher: Match,
    pub token: TokenRule,
    pub required_scopes: Vec<String>,
    pub accept_jwt: bool,
    /// What is asked of unbound tokens (bound ones always need their proof).
    pub proof: ProofRule,
    pub claims_to_headers: Vec<ClaimHeader>,
    /// Token exchange (RFC 8693): the token this policy's API receives is made for it.
    pub exchange: Option<ExchangeRule>,
    /// Least time a forwarded JWT must have left (`exp` - now), in seconds; 0: no check.
    pub min_remaining_s: u64,
    /// Longest `exp` - `iat` of a forwarded JWT, in seconds.
    pub max_lifetime_s: Option<u64>,
    /// The narrower JWT the resolved one carries in a claim, forwarded instead of it.
    pub embedded: Option<Embedded>,
    /// Where the token may come from (`credentials`).
    pub credentials: Credentials,
}

/// Where a policy's token may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// `Authorization` only (the default without `cookies`).
    Bearer,
    /// The encrypted cookie only (a browser app's route).
    Cookie,
    /// `Authorization` when the request has one, else the cookie (the default with `cookies`).
    Either,
}

impl Credentials {
    pub fn name(self) -> &'static str {
        match self {
            Credentials::Bearer => "bearer",
            Credentials::Cookie => "cookie",
            Credentials::Either => "either",
        }
    }
}

impl Policy {
    /// Whether the journey stage has anything to check (most policies: nothing).
    pub fn checks_journey(&self) -> bool {
        self.min_remaining_s > 0 || self.max_lifetime_s.is_some() || self.embedded.is_some()
    }
}

/// `embedded_token`: the claim of the resolved JWT that carries the JWT this policy's API
/// receives.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// A top-level claim name.
    pub claim: String,
    /// Audiences the embedded JWT is verified for (with `verify`).
    pub audiences: Vec<String>,
    /// With `verify`: its rules with these audiences (set once the configuration is read).
    pub verify: Option<crate::token::jws::Policy>,
    /// Tells this rule's cached tokens apart from another's (a hash of the rule).
    pub id: u64,
}

/// Every policy, and what all of them need.
#[derive(Debug, Clone)]
pub struct Policies {
    /// In order: the first that matches applies.
    pub list: Vec<Policy>,
    /// The top-level fields, named `default`.
    pub default: Policy,
    /// Every claim some policy or the filter state reads, each once.
    pub claims: Vec<ClaimPath>,
    /// Every header some `claims_to_headers` writes: the filter owns them, on every route.
    pub claim_headers: Vec<String>,
    /// `claims_to_filter_state`: indices into [`Self::claims`], with the claim's name.
    pub filter_state: Vec<(usize, String)>,
    /// The policies a path could match, by the path's first segment: the first-match scan only
    /// visits these (and [`Self::any_path`]), not all of them.
    pub by_first_segment: std::collections::HashMap<String, Vec<usize>>,
    /// The policies whose path condition does not fix a first segment (no path condition,
    /// `path_prefix` `/` or `/ab`): candidates for every path. In order.
    pub any_path: Vec<usize>,
    /// Which request attributes some policy matches on (nothing else is read or checked).
    pub by_path: bool,
    pub by_methods: bool,
    pub by_hosts: bool,
    pub by_route_name: bool,
}

impl Policies {
    /// The policy `name` names (`default` included).
    pub fn named(&self, name: &str) -> Option<(usize, &Policy)> {
        if name == self.default.name {
            return Some((self.list.len(), &self.default));
        }
        self.list.iter().enumerate().find(|(_, p)| p.name == name)
    }

    /// The policy of an index [`Self::named`] or matching gave (`list.len()` is the default).
    pub fn get(&self, index: usize) -> &Policy {
        self.list.get(index).unwrap_or(&self.default)
    }

    /// Every policy with its index, the default last.
    pub fn all(&self) -> impl Iterator<Item = (usize, &Policy)> {
        self.list
            .iter()
            .chain(std::iter::once(&self.default))
            .enumerate()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// What a configuration needs to know of itself to validate policies.
pub(super) struct Needs {
    pub has_verify: bool,
    pub has_exchange: bool,
    pub has_cookies: bool,
}

/// The claims some policy or the filter state reads, each once, and the headers some policy
/// writes: gathered while the policies are validated.
#[derive(Default)]
struct Claims {
    paths: Vec<ClaimPath>,
    headers: Vec<String>,
}

impl Claims {
    fn intern(&mut self, path: ClaimPath) -> usize {
        if let Some(i) = self.paths.iter().position(|c| *c == path) {
            return i;
        }
        self.paths.push(path);
        self.paths.len() - 1
    }

    /// A `claims_to_headers` list (named `field`), validated.
    fn headers_of(
        &mut self,
        field: &str,
        list: &[RawClaimHeader],
    ) -> Result<Vec<ClaimHeader>, ConfigError> {
        if list.len() > MAX_CLAIM_MAPPINGS {
            return Err(ConfigError::new(
                field,
                format!("has more than {MAX_CLAIM_MAPPINGS} entries"),
            ));
        }
        let mut out: Vec<ClaimHeader> = Vec::with_capacity(list.len());
        for (i, entry) in list.iter().enumerate() {
            let claim = ClaimPath::parse(&entry.claim)
                .ok_or_else(|| ConfigError::new(&format!("{field}[{i}].claim"), CLAIM_RULE))?;
            let header = check_claim_header(&format!("{field}[{i}].header"), &entry.header)?;
            if out.iter().any(|h| h.header == header) {
                return Err(ConfigError::new(
                    &format!("{field}[{i}].header"),
                    "is named twice in this list",
                ));
            }
            if !self.headers.contains(&header) {
                self.headers.push(header.clone());
            }
            out.push(ClaimHeader {
                claim: self.intern(claim),
                header,
            });
        }
        Ok(out)
    }
}

/// One policy's rules, validated: the same checks for the top level (`prefix` empty) and for
/// each listed policy (`prefix` `policies[i].`).
fn rules(
    prefix: &str,
    raw: RawPolicy,
    matcher: Match,
    inherit: Option<&Policy>,
    needs: &Needs,
    claims: &mut Claims,
) -> Result<Policy, ConfigError> {
    let field = |f: &str| format!("{prefix}{f}");
    let token = match (raw.token, inherit) {
        (Some(t), _) => TokenRule::parse(&field("token"), Some(&t))?,
        (None, Some(p)) => p.token,
        (None, None) => TokenRule::parse(&field("token"), None)?,
    };
    let required_scopes = match (raw.required_scopes, inherit) {
        (Some(s), _) => check_scopes(&field("required_scopes"), s)?,
        (None, Some(p)) => p.required_scopes.clone(),
        (None, None) => Vec::new(),
    };
    let accept_jwt = raw
        .accept_jwt
        .or(inherit.map(|p| p.accept_jwt))
        .unwrap_or(false);
    if accept_jwt && !needs.has_verify {
        return Err(ConfigError::new(
            &field("accept_jwt"),
            "requires verify: a JWT is only accepted once its signature and claims check out",
        ));
    }
    let proof = match (raw.proof, inherit) {
        (Some(rule), _) => ProofRule::parse(&field("proof"), Some(&rule))?,
        (None, Some(p)) => p.proof,
        (None, None) => ProofRule::parse(&field("proof"), None)?,
    };
    let claims_to_headers = match (raw.claims_to_headers, inherit) {
        (Some(list), _) => claims.headers_of(&field("claims_to_headers"), &list)?,
        (None, Some(p)) => p.claims_to_headers.clone(),
        (None, None) => Vec::new(),
    };
    let exchange = match raw.exchange {
        Some(_) if !needs.has_exchange => {
            return Err(ConfigError::new(
                &field("exchange"),
                "requires token_exchange (where tokens are exchanged)",
            ))
        }
        Some(rule) => Some(rule.validate(&field("exchange"))?),
        None => None,
    };
    let min_remaining_s = match (raw.min_remaining_lifetime_s, inherit) {
        (Some(s), _) => in_range(
            &field("min_remaining_lifetime_s"),
            s,
            0,
            MAX_MIN_REMAINING_S,
        )?,
        (None, Some(p)) => p.min_remaining_s,
        (None, None) => 0,
    };
    let max_lifetime_s = match (raw.max_lifetime_s, inherit) {
        (Some(s), _) => Some(in_range(
            &field("max_lifetime_s"),
            s,
            1,
            MAX_TOKEN_LIFETIME_S,
        )?),
        (None, Some(p)) => p.max_lifetime_s,
        (None, None) => None,
    };
    let embedded = match raw.embedded_token {
        None => None,
        Some(_) if exchange.is_some() => {
            return Err(ConfigError::new(
                &field("embedded_token"),
                "and exchange are two ways of giving the API its own token: one per policy",
            ))
        }
        Some(e) => Some(embedded(&field("embedded_token"), e, needs)?),
    };
    let credentials = match (raw.credentials.as_deref(), inherit) {
        (Some(c), _) => {
            let parsed = match c {
                "bearer" => Credentials::Bearer,
                "cookie" => Credentials::Cookie,
                "either" => Credentials::Either,
                _ => {
                    return Err(ConfigError::new(
                        &field("credentials"),
                        "must be \"bearer\", \"cookie\" or \"either\"",
                    ))
                }
            };
            if parsed != Credentials::Bearer && !needs.has_cookies {
                return Err(ConfigError::new(
                    &field("credentials"),
                    "needs cookies (how the cookies are read)",
                ));
            }
            parsed
        }
        (None, Some(p)) => p.credentials,
        (None, None) if needs.has_cookies => Credentials::Either,
        (None, None) => Credentials::Bearer,
    };
    Ok(Policy {
        name: raw.name,
        matcher,
        token,
        required_scopes,
        accept_jwt,
        proof,
        claims_to_headers,
        exchange,
        min_remaining_s,
        max_lifetime_s,
        embedded,
        credentials,
    })
}

/// Largest `min_remaining_lifetime_s`.
const MAX_MIN_REMAINING_S: u64 = 3_600;
/// Largest `max_lifetime_s` (a year).
const MAX_TOKEN_LIFETIME_S: u64 = 31_536_000;

fn embedded(field: &str, raw: RawEmbedded, needs: &Needs) -> Result<Embedded, ConfigError> {
    let claim = &raw.claim;
    if claim.is_empty() || claim.len() > 256 || !claim.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::new(
            &format!("{field}.claim"),
            "must be 1 to 256 visible ASCII characters (a top-level claim name)",
        ));
    }
    match (needs.has_verify, raw.audiences.len()) {
        (true, 0) => {
            return Err(ConfigError::new(
                &format!("{field}.audiences"),
                "is required with verify: the embedded JWT is verified for these audiences",
            ))
        }
        (false, n) if n > 0 => {
            return Err(ConfigError::new(
                &format!("{field}.audiences"),
                "needs verify (nothing would check them)",
            ))
        }
        (_, n) if n > 16 => {
            return Err(ConfigError::new(
                &format!("{field}.audiences"),
                "must hold at most 16 audiences",
            ))
        }
        _ => {}
    }
    for (i, a) in raw.audiences.iter().enumerate() {
        super::checks::check_name(&format!("{field}.audiences[{i}]"), a)?;
    }
    let mut id = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&(claim, &raw.audiences), &mut id);
    Ok(Embedded {
        claim: raw.claim,
        audiences: raw.audiences,
        verify: None,
        id: std::hash::Hasher::finish(&id),
    })
}

pub(super) fn validate(
    defaults: RawPolicy,
    raw: Vec<RawPolicy>,
    filter_state: Vec<String>,
    needs: &Needs,
) -> Result<Policies, ConfigError> {
    if raw.len() > MAX_POLICIES {
        return Err(ConfigError::new(
            "policies",
            format!("has more than {MAX_POLICIES} policies"),
        ));
    }
    let mut claims = Claims::default();
    let default = rules("", defaults, Match::default(), None, needs, &mut claims)?;
    let mut list: Vec<Policy> = Vec::with_capacity(raw.len());
    for (i, mut p) in raw.into_iter().enumerate() {
        let prefix = format!("policies[{i}].");
        check_policy_name(&format!("{prefix}name"), &p.name)?;
        if p.name == DEFAULT_POLICY || list.iter().any(|q| q.name == p.name) {
            return Err(ConfigError::new(
                &format!("{prefix}name"),
                "must be unique (and not \"default\", the top-level policy)",
            ));
        }
        let matcher = validate_match(&format!("{prefix}match"), std::mem::take(&mut p.matcher))?;
        list.push(rules(
            &prefix,
            p,
            matcher,
            Some(&default),
            needs,
            &mut claims,
        )?);
    }
    if filter_state.len() > MAX_CLAIM_MAPPINGS {
        return Err(ConfigError::new(
            "claims_to_filter_state",
            format!("has more than {MAX_CLAIM_MAPPINGS} entries"),
        ));
    }
    let mut state = Vec::with_capacity(filter_state.len());
    for (i, name) in filter_state.into_iter().enumerate() {
        let field = format!("claims_to_filter_state[{i}]");
        let claim = ClaimPath::parse(&name).ok_or_else(|| ConfigError::new(&field, CLAIM_RULE))?;
        // `wasm.token_filter.policy` is the policy's name.
        if name == "policy" || state.iter().any(|(_, n)| *n == name) {
            return Err(ConfigError::new(
                &field,
                "must be unique, and not \"policy\" (the filter state key of the policy's name)",
            ));
        }
        state.push((claims.intern(claim), name));
    }
    let mut by_first_segment: std::collections::HashMap<String, Vec<usize>> =
        std::collections::HashMap::new();
    let mut any_path = Vec::new();
    for (i, p) in list.iter().enumerate() {
        match p.matcher.path.as_ref().and_then(first_segment) {
            Some(segment) => by_first_segment.entry(segment).or_default().push(i),
            None => any_path.push(i),
        }
    }
    Ok(Policies {
        by_first_segment,
        any_path,
        by_path: list.iter().any(|p| p.matcher.path.is_some()),
        by_methods: list.iter().any(|p| !p.matcher.methods.is_empty()),
        by_hosts: list.iter().any(|p| !p.matcher.hosts.is_empty()),
        by_route_name: list.iter().any(|p| p.matcher.route_name.is_some()),
        list,
        default,
        claims: claims.paths,
        claim_headers: claims.headers,
        filter_state: state,
    })
}

/// The first segment every path this condition matches starts with (`/orders/` and
/// `/orders` exact: `orders`), or `None` when it does not fix one (`/`, a prefix `/ord`).
fn first_segment(path: &PathMatch) -> Option<String> {
    let (p, exact) = match path {
        PathMatch::Exact(p) => (p, true),
        PathMatch::Prefix(p) => (p, false),
    };
    let rest = p.strip_prefix('/')?;
    match rest.split_once('/') {
        Some((segment, _)) => Some(segment.to_owned()),
        None if exact => Some(rest.to_owned()),
        None => None,
    }
}

/// The first segment of a request path, as [`first_segment`] keys it.
pub fn segment_of(path: &str) -> &str {
    let rest = path.strip_prefix('/').unwrap_or(path);
    rest.split('/').next().unwrap_or("")
}

/// The name of the top-level policy.
pub const DEFAULT_POLICY: &str = "default";

const CLAIM_RULE: &str =
    "must be a claim name, or a dotted path into objects (realm_access.roles): \
     1 to 256 visible ASCII characters, no empty part";

fn check_policy_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_POLICY_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("must be 1 to {MAX_POLICY_NAME} characters of [a-z0-9_-]"),
        ))
    }
}

fn check_scopes(field: &str, scopes: Vec<String>) -> Result<Vec<String>, ConfigError> {
    if scopes.len() > MAX_SCOPES {
        return Err(ConfigError::new(
            field,
            format!("has more than {MAX_SCOPES} entries"),
        ));
    }
    for (i, s) in scopes.iter().enumerate() {
        if !scope::is_scope_token(s) {
            return Err(ConfigError::new(
                &format!("{field}[{i}]"),
                "must be a non-empty scope token (RFC 6749 §3.3: printable ASCII, no space, '\"' or '\\')",
            ));
        }
    }
    Ok(scopes)
}

fn validate_match(field: &str, raw: RawMatch) -> Result<Match, ConfigError> {
    let path = match (raw.path_exact, raw.path_prefix) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                field,
                "path_exact and path_prefix cannot both be given",
            ))
        }
        (Some(p), None) => {
            check_path(&format!("{field}.path_exact"), &p)?;
            Some(PathMatch::Exact(p))
        }
        (None, Some(p)) => {
            check_path(&format!("{field}.path_prefix"), &p)?;
            Some(PathMatch::Prefix(p))
        }
        (None, None) => None,
    };
    let methods = raw.methods.unwrap_or_default();
    if methods.len() > MAX_MATCH_ITEMS {
        return Err(ConfigError::new(
            &format!("{field}.methods"),
            format!("has more than {MAX_MATCH_ITEMS} entries"),
        ));
    }
    for (i, m) in methods.iter().enumerate() {
        let ok = !m.is_empty() && m.len() <= 32 && m.bytes().all(|b| b.is_ascii_uppercase());
        if !ok {
            return Err(ConfigError::new(
                &format!("{field}.methods[{i}]"),
                "must be an upper-case method name (GET, POST, ...)",
            ));
        }
    }
    let raw_hosts = raw.hosts.unwrap_or_default();
    if raw_hosts.len() > MAX_MATCH_ITEMS {
        return Err(ConfigError::new(
            &format!("{field}.hosts"),
            format!("has more than {MAX_MATCH_ITEMS} entries"),
        ));
    }
    let mut hosts = Vec::with_capacity(raw_hosts.len());
    for (i, h) in raw_hosts.iter().enumerate() {
        let lower = h.to_ascii_lowercase();
        let (pattern, name) = match lower.strip_prefix("*.") {
            Some(rest) => (HostMatch::Subdomain(format!(".{rest}")), rest.to_owned()),
            None => (HostMatch::Exact(lower.clone()), lower.clone()),
        };
        if crate::token::host::canonical(&name).as_deref() != Some(name.as_str()) {
            return Err(ConfigError::new(
                &format!("{field}.hosts[{i}]"),
                "must be a host name (letters, digits, '-' and '.'; no port), optionally starting \
                 with \"*.\"",
            ));
        }
        hosts.push(pattern);
    }
    if let Some(name) = &raw.route_name {
        check_name(&format!("{field}.route_name"), name)?;
    }
    Ok(Match {
        path,
        methods,
        hosts,
        route_name: raw.route_name,
    })
}

/// A header name a claim may be written into: a token (RFC 9110 §5.6.2) without `_`, lower
/// case, not a pseudo-header and not one of [`FORBIDDEN_HEADERS`]. No `_`: some servers read
/// `x_user_id` as `x-user-id`, and the filter removes every spelling of the headers it owns by
/// reading `_` in a request as `-`, never the other way.
fn check_claim_header(field: &str, name: &str) -> Result<String, ConfigError> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let lower = name.to_ascii_lowercase();
    if name.is_empty() || name.len() > 128 || !name.bytes().all(tchar) || name.contains('_') {
        return Err(ConfigError::new(
            field,
            "must be a header name (1 to 128 token characters, no ':' and no '_')",
        ));
    }
    if FORBIDDEN_HEADERS.contains(&lower.as_str()) || lower.starts_with("x-envoy-") {
        return Err(ConfigError::new(
            field,
            "names a header the filter or the proxy owns (authorization, host, hop-by-hop, \
             framing, cookie, dpop, x-envoy-*)",
        ));
    }
    Ok(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::tests::cfg;

    fn field_of(extra: &str) -> String {
        match cfg(extra) {
            Ok(_) => panic!("accepted: {extra}"),
            Err(e) => e.field,
        }
    }

    #[test]
    fn journey_rules_are_inherited_and_checked() {
        let c = cfg(r#", "min_remaining_lifetime_s": 30, "max_lifetime_s": 900,
            "policies": [{"name": "p", "match": {"path_prefix": "/p/"}},
                         {"name": "q", "match": {"path_prefix": "/q/"}, "min_remaining_lifetime_s": 0,
                          "embedded_token": {"claim": "q_token"}}]"#)
        .unwrap();
        let (p, q) = (&c.policies.list[0], &c.policies.list[1]);
        assert_eq!(
            (p.min_remaining_s, p.max_lifetime_s),
            (30, Some(900)),
            "inherited"
        );
        assert_eq!(q.min_remaining_s, 0);
        assert!(p.embedded.is_none(), "embedded_token is never inherited");
        assert_eq!(q.embedded.as_ref().unwrap().claim, "q_token");
        assert!(q.embedded.as_ref().unwrap().verify.is_none(), "no verify");
        assert!(c.policies.default.embedded.is_none());
        let with_verify = cfg(&format!(
            r#"{}, "embedded_token": {{"claim": "t", "audiences": ["pay"]}}"#,
            super::super::tests::VERIFY
        ))
        .unwrap();
        let e = with_verify.policies.default.embedded.unwrap();
        assert_eq!(e.verify.unwrap().audiences, ["pay"]);
    }

    #[test]
    #[rustfmt::skip]
    fn journey_rules_refuse_what_cannot_work() {
        let verify = super::super::tests::VERIFY;
        let cases = [
            (r#", "min_remaining_lifetime_s": 3601"#.to_owned(), "min_remaining_lifetime_s"),
            (r#", "max_lifetime_s": 0"#.to_owned(), "max_lifetime_s"),
            (r#", "policies": [{"name": "p", "max_lifetime_s": 31536001}]"#.to_owned(), "policies[0].max_lifetime_s"),
            (r#", "embedded_token": {"claim": ""}"#.to_owned(), "embedded_token.claim"),
            (r#", "embedded_token": {"claim": "t", "audiences": ["a"]}"#.to_owned(), "embedded_token.audiences"),
            (format!(r#"{verify}, "embedded_token": {{"claim": "t"}}"#), "embedded_token.audiences"),
            (r#", "embedded_token": {"claim": "t", "nope": 1}"#.to_owned(), "embedded_token.nope"),
        ];
        for (extra, field) in cases {
            assert_eq!(field_of(&extra), field, "{extra}");
        }
        let both = r#", "token_exchange": {"cluster": "ts", "path": "/t", "client_id": "gw", "client_secret": "s"},
            "policies": [{"name": "p", "exchange": {"audience": "a"}, "embedded_token": {"claim": "t"}}]"#;
        assert_eq!(field_of(both), "policies[0].embedded_token");
    }

    #[test]
    fn the_documented_example_parses() {
        let c = cfg(r#", "required_scopes": ["read"],
          "policies": [
            { "name": "health",  "match": { "path_exact": "/healthz" }, "token": "none" },
            { "name": "catalog", "match": { "path_prefix": "/catalog/", "methods": ["GET", "HEAD"] }, "token": "optional" },
            { "name": "orders-write", "match": { "path_prefix": "/orders/", "methods": ["POST", "PUT", "PATCH", "DELETE"] },
              "required_scopes": ["orders:write"] },
            { "name": "admin",   "match": { "hosts": ["admin.example.com", "*.admin.example.com"] }, "required_scopes": ["admin"] },
            { "name": "reports", "match": { "route_name": "reports" }, "required_scopes": ["reports"],
              "claims_to_headers": [ { "claim": "sub", "header": "x-report-user" } ] }
          ],
          "claims_to_headers": [ { "claim": "sub", "header": "x-user-id" }, { "claim": "client_id", "header": "x-client-id" } ],
          "claims_to_filter_state": ["sub", "client_id", "scope"]"#)
        .unwrap();
        let p = &c.policies;
        assert_eq!(p.list.len(), 5);
        assert_eq!(p.default.name, "default");
        assert_eq!(p.default.required_scopes, ["read"]);
        assert_eq!(p.get(0).token, TokenRule::None);
        assert_eq!(p.get(1).token, TokenRule::Optional);
        assert_eq!(p.get(2).token, TokenRule::Required);
        assert_eq!(p.get(2).required_scopes, ["orders:write"]);
        assert_eq!(
            p.get(1).required_scopes,
            ["read"],
            "defaults to the top level"
        );
        assert_eq!(
            p.get(3).matcher.hosts,
            [
                HostMatch::Exact("admin.example.com".into()),
                HostMatch::Subdomain(".admin.example.com".into())
            ]
        );
        // Each list replaces the top-level one; every header is owned.
        assert_eq!(p.get(4).claims_to_headers.len(), 1);
        assert_eq!(p.get(1).claims_to_headers.len(), 2);
        assert_eq!(
            p.claim_headers,
            ["x-user-id", "x-client-id", "x-report-user"]
        );
        let names: Vec<&str> = p.claims.iter().map(|c| c.name()).collect();
        assert_eq!(names, ["sub", "client_id", "scope"]);
        assert_eq!(p.filter_state.len(), 3);
        assert!(p.by_path && p.by_methods && p.by_hosts && p.by_route_name);
        assert_eq!(p.named("reports").map(|(i, _)| i), Some(4));
        assert_eq!(p.named("default").map(|(i, _)| i), Some(5));
        assert!(c.summary().contains("policies=[\"health\""));
    }

    #[test]
    fn errors_name_the_field() {
        let many: Vec<String> = (0..=MAX_POLICIES)
            .map(|i| format!(r#"{{"name": "p{i}"}}"#))
            .collect();
        let many = format!(r#", "policies": [{}]"#, many.join(","));
        let cases = [
            (
                r#", "policies": [{"name": "Bad Name"}]"#,
                "policies[0].name",
            ),
            (r#", "policies": [{"name": ""}]"#, "policies[0].name"),
            (
                r#", "policies": [{"name": "a"}, {"name": "a"}]"#,
                "policies[1].name",
            ),
            (r#", "policies": [{"name": "default"}]"#, "policies[0].name"),
            (&many, "policies"),
            (
                r#", "policies": [{"name": "a", "match": {"path_prefix": "orders"}}]"#,
                "policies[0].match.path_prefix",
            ),
            (
                r#", "policies": [{"name": "a", "match": {"path_exact": "/a?b"}}]"#,
                "policies[0].match.path_exact",
            ),
            (
                r#", "policies": [{"name": "a", "match": {"path_exact": "/a", "path_prefix": "/b"}}]"#,
                "policies[0].match",
            ),
            (
                r#", "policies": [{"name": "a", "match": {"methods": ["get"]}}]"#,
                "policies[0].match.methods[0]",
            ),
            (
                r#", "policies": [{"name": "a", "match": {"hosts": ["a b"]}}]"#,
                "policies[0].match.hosts[0]",
            ),
            (
                r#", "policies": [{"name": "a", "match": {"hosts": ["a.com:80"]}}]"#,
                "policies[0].match.hosts[0]",
            ),
            (
                r#", "policies": [{"name": "a", "match": {"route_name": ""}}]"#,
                "policies[0].match.route_name",
            ),
            (
                r#", "policies": [{"name": "a", "match": {"path": "/x"}}]"#,
                "policies[0].match.path",
            ),
            (
                r#", "policies": [{"name": "a", "token": "maybe"}]"#,
                "policies[0].token",
            ),
            (
                r#", "policies": [{"name": "a", "accept_jwt": true}]"#,
                "policies[0].accept_jwt",
            ),
            (r#", "accept_jwt": true"#, "accept_jwt"),
            (r#", "token": "sometimes""#, "token"),
            (
                r#", "policies": [{"name": "a", "required_scopes": ["a b"]}]"#,
                "policies[0].required_scopes[0]",
            ),
            (
                r#", "claims_to_headers": [{"claim": "sub", "header": ":path"}]"#,
                "claims_to_headers[0].header",
            ),
            (
                r#", "claims_to_headers": [{"claim": "sub", "header": "Authorization"}]"#,
                "claims_to_headers[0].header",
            ),
            (
                r#", "claims_to_headers": [{"claim": "sub", "header": "host"}]"#,
                "claims_to_headers[0].header",
            ),
            (
                r#", "claims_to_headers": [{"claim": "sub", "header": "connection"}]"#,
                "claims_to_headers[0].header",
            ),
            (
                r#", "claims_to_headers": [{"claim": "sub", "header": "transfer-encoding"}]"#,
                "claims_to_headers[0].header",
            ),
            (
                r#", "claims_to_headers": [{"claim": "sub", "header": "x-envoy-original-path"}]"#,
                "claims_to_headers[0].header",
            ),
            (
                r#", "claims_to_headers": [{"claim": "sub", "header": "x user"}]"#,
                "claims_to_headers[0].header",
            ),
            (
                r#", "claims_to_headers": [{"claim": "sub", "header": "x_user_id"}]"#,
                "claims_to_headers[0].header",
            ),
            (
                r#", "claims_to_headers": [{"claim": "sub", "header": "x-a"}, {"claim": "c", "header": "X-A"}]"#,
                "claims_to_headers[1].header",
            ),
            (
                r#", "claims_to_headers": [{"claim": "a..b", "header": "x-a"}]"#,
                "claims_to_headers[0].claim",
            ),
            (
                r#", "policies": [{"name": "a", "claims_to_headers": [{"claim": "sub", "header": "cookie"}]}]"#,
                "policies[0].claims_to_headers[0].header",
            ),
            (
                r#", "claims_to_filter_state": ["policy"]"#,
                "claims_to_filter_state[0]",
            ),
            (
                r#", "claims_to_filter_state": ["sub", "sub"]"#,
                "claims_to_filter_state[1]",
            ),
            (
                r#", "claims_to_filter_state": [""]"#,
                "claims_to_filter_state[0]",
            ),
        ];
        for (extra, field) in cases {
            assert_eq!(field_of(extra), field, "{extra}");
        }
    }
}
