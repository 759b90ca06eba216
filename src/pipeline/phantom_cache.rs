//! Stage: the phantom cache. This worker's copy of recent forwarded hits first (no host call),
//! then the token's shared-data slot (every worker's introspections).

use crate::hash::TokenKeys;
use crate::metrics::Counter;
use crate::reply::Denial;
use crate::storage::phantom_cache;
use crate::token::revocation::Identity;

use super::authorize::authorize;
use super::cached::{self, Found};
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
        |value| phantom_cache::lookup(value, keys.sha256(), host.now_ms()),
        |bytes| Some(Box::new(stored_identity(keys.sha256(), bytes))),
        |()| Denial::InvalidToken,
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

/// Whose a cached token is, as its entry says (an entry that cannot say names the token only).
pub(super) fn stored_identity(token: &crate::hash::TokenHash, bytes: &[u8]) -> Identity {
    Identity::decode(token, bytes).unwrap_or(Identity {
        token: *token,
        ..Identity::default()
    })
}
