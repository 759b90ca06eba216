//! Stage: the phantom cache. This worker's copy of recent forwarded hits first (no host call),
//! then the token's shared-data slot (every worker's introspections).

use crate::hash::TokenKeys;
use crate::metrics::Counter;
use crate::reply::Denial;
use crate::storage::phantom_cache::{self, Cached};

use super::authorize::authorize;
use super::cached::{self, Entry, Found};
use super::{Caller, Ctx, Verdict};

/// The stage: a verdict on a hit, `None` on a miss (introspect).
pub fn lookup(cx: &Ctx<'_>, caller: &Caller<'_>, keys: &TokenKeys<'_>) -> Option<Verdict> {
    let (cfg, worker, host) = (cx.cfg, cx.worker, cx.host);
    let namespace = &cfg.cache.namespace;
    let found = cached::read(
        cx,
        &worker.local,
        &keys.fast,
        || phantom_cache::slot_key(namespace, keys.sha256(), cfg.cache.max_entries),
        |value| entry(value, keys, host.now_ms()),
    );
    match found {
        Found::Local(token) => {
            host.count(Counter::CacheHit);
            Some(authorize(cfg, caller, &token))
        }
        Found::Shared { token, until_ms } => {
            host.count(Counter::CacheHit);
            let verdict = authorize(cfg, caller, &token);
            if matches!(verdict, Verdict::Forward(_)) {
                worker.local.put(&keys.fast, until_ms, token);
            }
            Some(verdict)
        }
        Found::Refused(denial) => {
            host.count(Counter::CacheHit);
            Some(Verdict::Reject(denial))
        }
        Found::Miss => {
            host.count(Counter::CacheMiss);
            None
        }
    }
}

/// A phantom cache slot (the same layout holds JWTs accepted as they are) as an [`Entry`].
pub(super) fn entry<'v>(value: &'v [u8], keys: &TokenKeys<'_>, now_ms: u64) -> Option<Entry<'v>> {
    match phantom_cache::lookup(value, keys.sha256(), now_ms)? {
        Cached::Active {
            jwt,
            scope,
            expires_at_ms,
        } => Some(Entry::Token {
            jwt,
            scope,
            until_ms: expires_at_ms,
        }),
        Cached::Inactive => Some(Entry::Refused(Denial::InvalidToken)),
    }
}
