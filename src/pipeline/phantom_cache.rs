//! Stage: the phantom cache. This worker's copy of recent forwarded hits first (no host call),
//! then the token's shared-data slot (every worker's introspections).

use crate::config::Config;
use crate::hash::TokenKeys;
use crate::host::Host;
use crate::metrics::Counter;
use crate::reply::Denial;
use crate::storage::phantom_cache::{self, Cached};

use super::authorize::{authorize, resolved};
use super::{Caller, Verdict, Worker};

/// The stage: a verdict on a hit, `None` on a miss (introspect).
pub fn lookup(
    cfg: &Config,
    caller: &Caller<'_>,
    worker: &Worker,
    host: &dyn Host,
    keys: &TokenKeys<'_>,
) -> Option<Verdict> {
    let now = host.now_ms();
    if let Some(known) = worker.local.get(&keys.fast, now) {
        host.count(Counter::CacheHit);
        return Some(authorize(cfg, caller, &known));
    }
    let hash = keys.sha256();
    let key = phantom_cache::slot_key(&cfg.cache.namespace, hash, cfg.cache.max_entries);
    let value = host.shared_get(&key);
    match value
        .as_deref()
        .and_then(|v| phantom_cache::lookup(v, hash, now))
    {
        Some(Cached::Active {
            jwt,
            scope,
            expires_at_ms,
        }) => {
            host.count(Counter::CacheHit);
            let token = resolved(cfg, jwt, scope);
            let verdict = authorize(cfg, caller, &token);
            if matches!(verdict, Verdict::Forward(_)) {
                worker.local.put(&keys.fast, expires_at_ms, token);
            }
            Some(verdict)
        }
        Some(Cached::Inactive) => {
            host.count(Counter::CacheHit);
            Some(Verdict::Reject(Denial::InvalidToken))
        }
        None => {
            host.count(Counter::CacheMiss);
            None
        }
    }
}
