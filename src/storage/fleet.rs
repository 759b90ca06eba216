//! The fleet's shared store (`fleet`): Redis, spoken through webdis's URL protocol (proxy-wasm
//! can only make HTTP calls). Every value written is sealed ([`crate::token::seal`]) under a key
//! derived from the token the client holds; the store key is a hash of the token's hash under
//! a label of its own (never the sealing key), so a dump of Redis holds no token, no claim,
//! and nothing that opens without the client's token.
//!
//! Calls (webdis): `GET /GET/<key>.txt` (`200` with the value, `404` for none), `PUT
//! /SETEX/<key>/<ttl>` with the value as its body, `GET /DEL/<key>`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::hash::TokenHash;
use crate::storage::remote::Call;

/// What a key holds: each kind has its own key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// The phantom cache's entries, by the opaque token's SHA-256.
    Phantom,
}

impl Space {
    fn tag(self) -> &'static str {
        match self {
            Space::Phantom => "p:",
        }
    }

    fn label(self) -> &'static [u8] {
        match self {
            Space::Phantom => b"envoy-token-filter fleet v1 phantom key\0",
        }
    }
}

/// The store key of the entry of the token whose SHA-256 is `hash`: `fleet.key_prefix`, a tag, and the
/// base64url of SHA-256(label | hash). It travels in a URL path as it is (letters, digits,
/// `-`, `_`, and the prefix's `:`, `.`).
pub fn key(prefix: &str, space: Space, hash: &TokenHash) -> String {
    let digest = Sha256::new()
        .chain_update(space.label())
        .chain_update(hash)
        .finalize();
    let mut key = String::with_capacity(prefix.len() + 2 + 43);
    key.push_str(prefix);
    key.push_str(space.tag());
    URL_SAFE_NO_PAD.encode_string(digest, &mut key);
    key
}

/// Reads `key`'s value.
pub fn get(key: &str) -> Call {
    Call {
        method: "GET".to_owned(),
        path: format!("/GET/{key}.txt"),
        body: None,
    }
}

/// Stores `value` under `key` for `ttl_ms` (rounded up to whole seconds, at least 1).
pub fn put(key: &str, value: String, ttl_ms: u64) -> Call {
    Call {
        method: "PUT".to_owned(),
        path: format!("/SETEX/{key}/{}", ttl_ms.div_ceil(1_000).max(1)),
        body: Some(value.into_bytes()),
    }
}

/// Deletes `key`.
pub fn delete(key: &str) -> Call {
    Call {
        method: "GET".to_owned(),
        path: format!("/DEL/{key}"),
        body: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::token_hash;

    #[test]
    fn keys_are_bounded_url_safe_and_not_the_token_hash() {
        let h = token_hash("opaque");
        let k = key("tf:", Space::Phantom, &h);
        assert!(k.starts_with("tf:p:") && k.len() == 5 + 43, "{k}");
        assert!(k[5..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert!(!k.contains(&URL_SAFE_NO_PAD.encode(h)));
        assert_eq!(k, key("tf:", Space::Phantom, &h));
        assert_ne!(k, key("tf:", Space::Phantom, &token_hash("other")));
        assert!(key("gw.1:", Space::Phantom, &h).starts_with("gw.1:p:"));
    }

    #[test]
    fn webdis_calls() {
        assert_eq!(get("tf:p:x").path, "/GET/tf:p:x.txt");
        let p = put("tf:p:x", "sealed".into(), 1_001);
        assert_eq!(
            (p.method.as_str(), p.path.as_str(), p.body.as_deref()),
            ("PUT", "/SETEX/tf:p:x/2", Some(&b"sealed"[..]))
        );
        assert_eq!(put("k", String::new(), 0).path, "/SETEX/k/1");
        assert_eq!(delete("k").path, "/DEL/k");
    }
}
