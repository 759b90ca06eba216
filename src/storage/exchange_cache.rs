//! The exchange cache: tokens made by token exchange, per (client token, what was asked for:
//! endpoint, audience, scope, resource; never a policy's position), in shared
//! data, with the phantom cache's guarantees: a fixed key space (`cache.max_entries` slots
//! `xc:<namespace>:<slot>`, direct-mapped), the full key compared in constant time (a slot
//! collision is a miss, never another token's entry), the client's token never stored.
//!
//! Entries use [`crate::storage::record`]'s layout with magic `xc1`: an issued token (the JWT
//! as the body, its scope), or a refusal, kept `cache.negative_ttl_s`, which remembers whether
//! the token service refused the token (401) or this API (403).

use sha2::{Digest, Sha256};

use crate::hash::{self, TokenHash};
use crate::storage::record;
use crate::token::exchange::Refusal;

const MAGIC: &[u8; 3] = b"xc1";
const KIND_ISSUED: u8 = 1;
const KIND_INVALID_GRANT: u8 = 2;
const KIND_FORBIDDEN: u8 = 3;

/// The key of the tokens exchanged for client token `token` under the rule `rule`
/// ([`crate::config::ExchangeRule::id`]).
pub fn key_of(token: &TokenHash, rule: &TokenHash) -> TokenHash {
    let mut h = Sha256::new();
    h.update(b"exchange");
    h.update(token);
    h.update(rule);
    h.finalize().into()
}

/// The shared-data key of the slot `key` maps to.
pub fn slot_key(namespace: &str, key: &TokenHash, max_entries: u32) -> String {
    let slot = hash::slot_of(key, u64::from(max_entries));
    format!("xc:{namespace}:{slot}")
}

/// A cached exchange: the token made, or the token service's refusal.
pub type Cached<'a> = record::Cached<'a, Refusal>;

pub fn encode_issued(key: &TokenHash, expires_at_ms: u64, scope: &str, jwt: &str) -> Vec<u8> {
    record::encode(MAGIC, KIND_ISSUED, key, expires_at_ms, scope, jwt)
}

pub fn encode_refused(key: &TokenHash, expires_at_ms: u64, refusal: Refusal) -> Vec<u8> {
    let kind = match refusal {
        Refusal::InvalidGrant => KIND_INVALID_GRANT,
        Refusal::Forbidden => KIND_FORBIDDEN,
    };
    record::encode(MAGIC, kind, key, expires_at_ms, "", "")
}

/// Reads a slot: anything but a well-formed, unexpired entry for exactly this key is a miss.
pub fn lookup<'a>(value: &'a [u8], key: &TokenHash, now_ms: u64) -> Option<Cached<'a>> {
    record::lookup(
        MAGIC,
        KIND_ISSUED,
        |kind| match kind {
            KIND_INVALID_GRANT => Some(Refusal::InvalidGrant),
            KIND_FORBIDDEN => Some(Refusal::Forbidden),
            _ => None,
        },
        false,
        value,
        key,
        now_ms,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::token_hash;

    #[test]
    fn entries_are_per_token_and_rule() {
        let t = token_hash("t");
        let (a, b) = (key_of(&t, &[0; 32]), key_of(&t, &[1; 32]));
        assert_ne!(a, b);
        assert_ne!(a, key_of(&token_hash("u"), &[0; 32]));
        let v = encode_issued(&a, 2_000, "read", "h.p.s");
        assert_eq!(
            lookup(&v, &a, 1_999),
            Some(Cached::Token {
                jwt: "h.p.s",
                scope: "read",
                expires_at_ms: 2_000,
                identity: &[],
            })
        );
        assert_eq!(lookup(&v, &a, 2_000), None, "expired");
        assert_eq!(lookup(&v, &b, 0), None, "another rule's key");
        for refusal in [Refusal::InvalidGrant, Refusal::Forbidden] {
            let v = encode_refused(&a, 2_000, refusal);
            assert_eq!(lookup(&v, &a, 0), Some(Cached::Refused(refusal)));
        }
        // The phantom cache's values are never read as exchanges.
        let phantom = crate::storage::phantom_cache::encode_active(
            &a,
            2_000,
            "read",
            &crate::token::revocation::Identity::default(),
            "h.p.s",
        );
        assert_eq!(lookup(&phantom, &a, 0), None);
        assert!(slot_key("ns", &a, 10).starts_with("xc:ns:"));
    }
}
