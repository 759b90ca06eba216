//! The two levels every token cache is read through: this worker's own copy first (no host
//! call, no copy, no decoding), then the token's shared-data slot (every worker's answers). One
//! read for the phantom cache, the cache of JWTs accepted as they are, and the exchange cache;
//! each stage counts and decides what a hit means for it.

use std::rc::Rc;

use crate::reply::Denial;
use crate::storage::local::{LocalCache, Resolved};
use crate::storage::record::Cached;

use crate::token::revocation::Identity;

use super::authorize::{resolved, Who};
use super::{revoke, Ctx};

/// Where a token was found.
pub(super) enum Found {
    /// This worker's copy (a token forwarded before: its scopes and binding still checked).
    Local(Rc<Resolved>),
    /// The shared slot's token, resolved, and until when this worker may keep it.
    Shared { token: Rc<Resolved>, until_ms: u64 },
    /// The shared slot's refusal.
    Refused(Denial),
    /// Neither level has it.
    Miss,
}

/// Reads `local` at `local_key`, then the shared slot `slot()` through `entry` (which checks
/// the full key and the expiry: a slot collision or an expired entry is a miss); a refusal it
/// holds is the denial `deny` says. With `revocation`, a shared entry says whose the token is
/// (`who`, from the entry's identity bytes) and is looked up in the marks: a revoked one is
/// refused ([`Denial::Revoked`]), never kept.
pub(super) fn read<K: Eq + std::hash::Hash + Copy, R>(
    cx: &Ctx<'_>,
    local: &LocalCache<K>,
    local_key: &K,
    slot: impl FnOnce() -> String,
    entry: impl for<'v> FnOnce(&'v [u8]) -> Option<Cached<'v, R>>,
    who: impl FnOnce(&[u8]) -> Option<Box<Identity>>,
    deny: impl FnOnce(R) -> Denial,
) -> Found {
    if let Some(token) = local.get(local_key, cx.host.now_ms()) {
        return Found::Local(token);
    }
    let Some(value) = cx.host.shared_get(&slot()) else {
        return Found::Miss;
    };
    match entry(&value) {
        Some(Cached::Token {
            jwt,
            scope,
            expires_at_ms,
            identity,
        }) => {
            let who = match &cx.cfg.revocation {
                Some(_) => who(identity),
                None => None,
            };
            let token = resolved(cx.cfg, jwt, scope, Who::Known(who));
            if revoke::refuses(cx, &token, false) {
                return Found::Refused(Denial::Revoked);
            }
            Found::Shared {
                token,
                until_ms: expires_at_ms,
            }
        }
        Some(Cached::Refused(refusal)) => Found::Refused(deny(refusal)),
        None => Found::Miss,
    }
}
