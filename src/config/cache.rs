//! `cache`: the phantom cache's lifetimes and size.

use serde::Deserialize;

/// The phantom cache (and the caches of JWTs accepted as they are and of exchanged tokens).
#[derive(Deserialize, Default)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    /// Longest time a JWT is served from the cache, 0 (no caching) to 86400.
    #[cfg_attr(feature = "cli", schemars(range(min = 0, max = 86_400), extend("default" = 300)))]
    pub(super) max_ttl_s: Option<u64>,
    /// How long an inactive answer is cached.
    #[cfg_attr(feature = "cli", schemars(range(min = 0, max = 3_600), extend("default" = 5)))]
    pub(super) negative_ttl_s: Option<u64>,
    /// Cache slots (the bound on shared-data keys).
    #[cfg_attr(feature = "cli", schemars(range(min = 1, max = 10_000_000), extend("default" = 100_000)))]
    pub(super) max_entries: Option<u32>,
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
    /// Prefix of the entries of JWTs accepted as they are (`accept_jwt`), from the `verify`
    /// rules they were checked against.
    pub jwt_namespace: String,
}
