//! `cache`: the phantom cache's lifetimes and size.

use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    pub(super) max_ttl_s: Option<u64>,
    pub(super) negative_ttl_s: Option<u64>,
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
