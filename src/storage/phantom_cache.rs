//! The token cache: entries in Envoy's shared data, so every worker benefits from one
//! introspection.
//!
//! Shared data cannot delete a key and has no TTL: a key written once lives as long as the VM.
//! The key space is therefore fixed: a token's SHA-256 picks one of `cache.max_entries` slots
//! (`<namespace>:<slot>`), and a new token landing on a taken slot replaces the old entry (a
//! direct-mapped cache). The entry carries the full token hash, compared in constant time, so a
//! slot collision is a miss, never another token's JWT. The opaque token itself is never stored.
//!
//! Entries use [`crate::storage::record`]'s layout with magic `pt2`; the body is whose the
//! token is ([`Identity`]: what a revocation can name, read back by every worker) and the
//! JWT.

use crate::hash::{self, TokenHash};
use crate::storage::record;
use crate::token::jwt::EXP_SKEW_MS;

use crate::token::jwt::Claims;
use crate::token::revocation::Identity;

const MAGIC: &[u8; 3] = b"pt2";
const KIND_ACTIVE: u8 = 1;
const KIND_INACTIVE: u8 = 2;

/// The shared-data key of the slot a token hash maps to.
pub fn slot_key(namespace: &str, hash: &TokenHash, max_entries: u32) -> String {
    let slot = hash::slot_of(hash, u64::from(max_entries));
    format!("pt:{namespace}:{slot}")
}

/// When a JWT obtained now may no longer be served from the cache, or `None` when it must not
/// be cached at all: the earliest of `exp - EXP_SKEW_MS`, `max-age` and `max_ttl_s`.
pub fn active_expiry(
    now_ms: u64,
    claims: &Claims,
    max_age_s: Option<u64>,
    max_ttl_s: u64,
) -> Option<u64> {
    let mut until = now_ms.saturating_add(max_ttl_s.saturating_mul(1_000));
    if let Some(exp) = claims.exp {
        until = until.min(exp.saturating_mul(1_000).saturating_sub(EXP_SKEW_MS));
    }
    if let Some(age) = max_age_s {
        until = until.min(now_ms.saturating_add(age.saturating_mul(1_000)));
    }
    (until > now_ms).then_some(until)
}

/// A cached answer for one token: active (its JWT), or inactive.
pub type Cached<'a> = record::Cached<'a, ()>;

pub fn encode_active(
    hash: &TokenHash,
    expires_at_ms: u64,
    scope: &str,
    identity: &Identity,
    jwt: &str,
) -> Vec<u8> {
    let identity = identity.encode();
    record::encode_with(
        MAGIC,
        KIND_ACTIVE,
        hash,
        expires_at_ms,
        scope,
        Some(&identity),
        jwt,
    )
}

pub fn encode_inactive(hash: &TokenHash, expires_at_ms: u64) -> Vec<u8> {
    record::encode(MAGIC, KIND_INACTIVE, hash, expires_at_ms, "", "")
}

/// Reads a slot. Anything but a well-formed, unexpired entry for exactly this token is a miss
/// (an empty or foreign value, a slot collision, an expired entry).
pub fn lookup<'a>(value: &'a [u8], hash: &TokenHash, now_ms: u64) -> Option<Cached<'a>> {
    record::lookup(
        MAGIC,
        KIND_ACTIVE,
        |kind| (kind == KIND_INACTIVE).then_some(()),
        true,
        value,
        hash,
        now_ms,
    )
}

/// Until when an entry (read by [`lookup`] already) may be served.
pub fn expires_at(value: &[u8]) -> Option<u64> {
    record::decode(MAGIC, value).map(|r| r.expires_at_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::token_hash;

    const NOW: u64 = 1_700_000_000_000;

    fn claims(exp: Option<u64>) -> Claims {
        Claims {
            exp,
            scope: String::new(),
        }
    }

    #[test]
    fn slot_key_is_bounded_and_stable() {
        let h = token_hash("t");
        assert_eq!(slot_key("ns", &h, 10), slot_key("ns", &h, 10));
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000 {
            seen.insert(slot_key("ns", &token_hash(&i.to_string()), 100));
        }
        assert_eq!(seen.len(), 100, "10000 tokens use exactly the 100 slots");
        assert!(seen.iter().all(|k| k.starts_with("pt:ns:")));
    }

    #[test]
    fn ttl_rule_takes_the_earliest_bound() {
        // max_ttl only
        assert_eq!(
            active_expiry(NOW, &claims(None), None, 300),
            Some(NOW + 300_000)
        );
        // exp earlier than max_ttl: exp minus skew
        let exp = NOW / 1000 + 10;
        assert_eq!(
            active_expiry(NOW, &claims(Some(exp)), None, 300),
            Some(exp * 1000 - EXP_SKEW_MS)
        );
        // max-age earliest
        assert_eq!(
            active_expiry(NOW, &claims(Some(exp)), Some(2), 300),
            Some(NOW + 2_000)
        );
        // max_ttl earliest
        assert_eq!(
            active_expiry(NOW, &claims(Some(exp)), Some(20), 5),
            Some(NOW + 5_000)
        );
        // nothing left: do not cache
        assert_eq!(
            active_expiry(NOW, &claims(Some(NOW / 1000)), None, 300),
            None
        );
        assert_eq!(active_expiry(NOW, &claims(None), Some(0), 300), None);
        assert_eq!(active_expiry(NOW, &claims(None), None, 0), None);
    }

    #[test]
    fn round_trips_entries() {
        let h = token_hash("tok");
        let identity = Identity {
            token: h,
            sub: Some([3; 32]),
            sid: None,
            iat: Some(7),
        };
        let v = encode_active(&h, NOW + 5, "read write", &identity, "a.b.c");
        assert_eq!(
            lookup(&v, &h, NOW),
            Some(Cached::Token {
                jwt: "a.b.c",
                scope: "read write",
                expires_at_ms: NOW + 5,
                identity: &identity.encode(),
            })
        );
        let v = encode_inactive(&h, NOW + 5);
        assert_eq!(lookup(&v, &h, NOW), Some(Cached::Refused(())));
    }

    #[test]
    fn expired_foreign_and_corrupt_entries_are_misses() {
        let h = token_hash("tok");
        let other = token_hash("other");
        let v = encode_active(&h, NOW + 5, "", &Identity::default(), "a.b.c");
        assert_eq!(lookup(&v, &h, NOW + 5), None, "expiry is exclusive");
        assert_eq!(lookup(&v, &other, NOW), None, "slot collision");
        assert_eq!(lookup(b"", &h, NOW), None, "shared data 'removed' value");
        assert_eq!(
            lookup(&v[..crate::storage::record::HEADER_LEN - 1], &h, NOW),
            None
        );
        let mut bad = v.clone();
        bad[0] = b'x';
        assert_eq!(lookup(&bad, &h, NOW), None);
        let mut bad = v.clone();
        bad[3] = 9;
        assert_eq!(lookup(&bad, &h, NOW), None);
        let empty_jwt = encode_active(&h, NOW + 5, "", &Identity::default(), "");
        assert_eq!(lookup(&empty_jwt, &h, NOW), None);
        let mut long_scope = encode_active(&h, NOW + 5, "", &Identity::default(), "a.b.c");
        long_scope[crate::storage::record::HEADER_LEN - 2] = 0xff;
        assert_eq!(lookup(&long_scope, &h, NOW), None);
    }
}
