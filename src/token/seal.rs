//! Sealed fleet entries (issue 28): what a gateway writes to a shared store (Redis) is useless
//! without the token the client holds. Each value is encrypted and authenticated with
//! XChaCha20-Poly1305 under a key derived from that token (HKDF-SHA256, with a label per kind of
//! entry), with the store key as associated data: the store holds neither a usable token nor a
//! readable claim, and a value changed, truncated, or copied under another key fails to open.
//! The lookup key is never the encryption key (it is a hash of the token under another label).
//!
//! Format (base64url without padding, so that it travels in a URL path through webdis):
//! version byte `1`, a random 24-byte nonce, the ciphertext, its 16-byte tag.
//!
//! XChaCha20-Poly1305 rather than AES-256-GCM: wasm has no AES instructions, and the software
//! AES a fleet hit would pay is about 18 µs in V8 for a phantom entry, against a few for
//! ChaCha20 (BENCHMARKS.md, "A fleet of gateways"); its 24-byte nonces are safe at random.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;

const VERSION: u8 = 1;
/// Bytes of a nonce.
pub const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Longest sealed value read (bytes, as stored).
pub const MAX_SEALED_LEN: usize = 64 * 1024;

/// What an entry is, bound into its key: an entry of one kind never opens as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A phantom cache entry (the introspection's answer), keyed by the opaque token.
    Phantom,
    /// A split store entry (`header.payload`), keyed by the split signature.
    Split,
    /// A token made by token exchange, keyed by the client's token and what was asked.
    Exchange,
}

impl Kind {
    fn label(self) -> &'static [u8] {
        match self {
            Kind::Phantom => b"envoy-token-filter fleet v1 phantom",
            Kind::Split => b"envoy-token-filter fleet v1 split",
            Kind::Exchange => b"envoy-token-filter fleet v1 exchange",
        }
    }
}

/// Why a sealed value does not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealError {
    /// Not base64url, the wrong version, too short or too long.
    Malformed,
    /// It does not authenticate under this token and this key: changed, truncated, copied
    /// from another key, or sealed for another token.
    Forged,
}

/// The AEAD key of `kind`'s entries for the client's `token`, under the fleet's `secret`
/// (HKDF's salt: what every gateway of the fleet knows and a client does not; empty without
/// one).
fn cipher(kind: Kind, secret: &[u8], token: &[u8]) -> XChaCha20Poly1305 {
    let hk = Hkdf::<Sha256>::new(Some(secret), token);
    let mut key = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit: `expand` cannot fail here.
    let _ = hk.expand(kind.label(), &mut key);
    XChaCha20Poly1305::new(&key.into())
}

/// Seals `plain` for the holder of `token`, stored under `store_key`. `nonce`: random bytes,
/// new for every value.
pub fn seal(
    kind: Kind,
    secret: &[u8],
    token: &[u8],
    store_key: &str,
    nonce: [u8; NONCE_LEN],
    plain: &[u8],
) -> String {
    let sealed = cipher(kind, secret, token)
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plain,
                aad: store_key.as_bytes(),
            },
        )
        .unwrap_or_default();
    let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    URL_SAFE_NO_PAD.encode(out)
}

/// Opens a value read from under `store_key` with the client's `token`.
pub fn open(
    kind: Kind,
    secret: &[u8],
    token: &[u8],
    store_key: &str,
    value: &[u8],
) -> Result<Vec<u8>, SealError> {
    if value.len() > MAX_SEALED_LEN {
        return Err(SealError::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| SealError::Malformed)?;
    let (&version, rest) = bytes.split_first().ok_or(SealError::Malformed)?;
    if version != VERSION || rest.len() < NONCE_LEN + TAG_LEN {
        return Err(SealError::Malformed);
    }
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Malformed)?;
    cipher(kind, secret, token)
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: sealed,
                aad: store_key.as_bytes(),
            },
        )
        .map_err(|_| SealError::Forged)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &[u8] = b"opaque-token-of-the-client";

    #[test]
    fn opens_only_for_the_token_the_key_and_the_kind_it_was_sealed_for() {
        let sealed = seal(
            Kind::Phantom,
            b"fleet",
            TOKEN,
            "tf:p:abc",
            [7; NONCE_LEN],
            b"{\"jwt\":\"x\"}",
        );
        assert_eq!(
            open(
                Kind::Phantom,
                b"fleet",
                TOKEN,
                "tf:p:abc",
                sealed.as_bytes()
            )
            .as_deref(),
            Ok(&b"{\"jwt\":\"x\"}"[..])
        );
        assert!(!sealed.contains("jwt"), "nothing readable");
        for (kind, token, key) in [
            (Kind::Split, TOKEN, "tf:p:abc"),
            (Kind::Phantom, &b"another-token"[..], "tf:p:abc"),
            (Kind::Phantom, TOKEN, "tf:p:abd"),
        ] {
            assert_eq!(
                open(kind, b"fleet", token, key, sealed.as_bytes()),
                Err(SealError::Forged)
            );
        }
        // Whoever holds the token but not the fleet's secret can neither open nor make one.
        assert_eq!(
            open(Kind::Phantom, b"", TOKEN, "tf:p:abc", sealed.as_bytes()),
            Err(SealError::Forged)
        );
        let forged = seal(Kind::Phantom, b"", TOKEN, "tf:p:abc", [7; NONCE_LEN], b"x");
        assert_eq!(
            open(
                Kind::Phantom,
                b"fleet",
                TOKEN,
                "tf:p:abc",
                forged.as_bytes()
            ),
            Err(SealError::Forged)
        );
    }

    #[test]
    fn every_change_is_refused() {
        let sealed = seal(
            Kind::Split,
            b"",
            TOKEN,
            "k",
            [1; NONCE_LEN],
            b"header.payload",
        );
        let bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        for i in 1..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x80;
            let v = URL_SAFE_NO_PAD.encode(&flipped);
            assert_eq!(
                open(Kind::Split, b"", TOKEN, "k", v.as_bytes()),
                Err(SealError::Forged),
                "flip at {i}"
            );
        }
        for n in [0, 1, NONCE_LEN, NONCE_LEN + 16, bytes.len() - 1] {
            let v = URL_SAFE_NO_PAD.encode(&bytes[..n]);
            assert!(
                open(Kind::Split, b"", TOKEN, "k", v.as_bytes()).is_err(),
                "cut at {n}"
            );
        }
        assert_eq!(
            open(Kind::Split, b"", TOKEN, "k", b"plain header.payload"),
            Err(SealError::Malformed)
        );
    }
}
