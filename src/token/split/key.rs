//! Split store keys: how the SHA-256 of a signature is written by publishers (hex, base64,
//! base64url), and what the store holds for one token.

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde::Deserialize;

use crate::hash::TokenHash;
use crate::token::jwt::{Claims, EXP_SKEW_MS};

/// Longest `signature_hash` accepted in a publish request (hex of SHA-256 is 64).
pub const MAX_KEY_LEN: usize = 128;
/// Largest publish request body.
pub const MAX_PUBLISH_BODY: usize = 32 * 1024;
/// Largest token endpoint response the gateway splits; a larger one is refused, never passed
/// on (it could carry a whole JWT).
pub const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// How the SHA-256 of a signature is written as a store key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum HashEncoding {
    /// Standard alphabet, padded (RFC 4648 §4): what Curity's split-token publishers write.
    #[default]
    Base64,
    /// URL-safe alphabet, unpadded (RFC 4648 §5); padded input is accepted too.
    Base64url,
    /// Lowercase hexadecimal; uppercase input is accepted too.
    Hex,
}

impl HashEncoding {
    pub fn name(self) -> &'static str {
        match self {
            HashEncoding::Base64 => "base64",
            HashEncoding::Base64url => "base64url",
            HashEncoding::Hex => "hex",
        }
    }

    /// The canonical key for `hash`.
    pub fn encode(self, hash: &TokenHash) -> String {
        match self {
            HashEncoding::Base64 => STANDARD.encode(hash),
            HashEncoding::Base64url => URL_SAFE_NO_PAD.encode(hash),
            HashEncoding::Hex => hash.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// Reads a key; anything that does not decode to exactly 32 bytes is `None`.
    pub fn decode(self, key: &str) -> Option<TokenHash> {
        if key.len() > MAX_KEY_LEN {
            return None;
        }
        let bytes = match self {
            HashEncoding::Base64 => STANDARD.decode(key).ok()?,
            HashEncoding::Base64url => if key.ends_with('=') {
                URL_SAFE.decode(key)
            } else {
                URL_SAFE_NO_PAD.decode(key)
            }
            .ok()?,
            HashEncoding::Hex => {
                if !key.len().is_multiple_of(2) || !key.is_ascii() {
                    return None;
                }
                let mut out = Vec::with_capacity(key.len() / 2);
                for pair in key.as_bytes().chunks(2) {
                    let pair = std::str::from_utf8(pair).ok()?;
                    out.push(u8::from_str_radix(pair, 16).ok()?);
                }
                out
            }
        };
        bytes.try_into().ok()
    }
}

/// The store key of a presented signature: SHA-256 of its ASCII bytes.
pub fn signature_hash(signature: &str) -> TokenHash {
    crate::hash::token_hash(signature)
}

/// What the store holds for one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub hash: TokenHash,
    pub header_payload: String,
    /// Served until this instant (ms since the epoch), exclusive.
    pub expires_at_ms: u64,
    /// Granted scopes, space-separated, read once when the entry is written.
    pub scope: String,
}

/// When a token may no longer be served: `limit_ms`, but never past `exp` minus the skew.
pub fn serve_until(limit_ms: u64, claims: &Claims) -> u64 {
    match claims.exp {
        Some(exp) => limit_ms.min(exp.saturating_mul(1_000).saturating_sub(EXP_SKEW_MS)),
        None => limit_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_encodings_match_fixed_vectors() {
        // SHA-256("abc") = ba7816bf 8f01cfea 414140de 5dae2223 b00361a3 96177a9c b410ff61 f20015ad
        let h = signature_hash("abc");
        let cases = [
            (
                HashEncoding::Base64,
                "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=",
            ),
            (
                HashEncoding::Base64url,
                "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0",
            ),
            (
                HashEncoding::Hex,
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
        ];
        for (enc, key) in cases {
            assert_eq!(enc.encode(&h), key, "{enc:?}");
            assert_eq!(enc.decode(key), Some(h), "{enc:?}");
        }
        // A real JWS signature (RFC 7515 A.1's HS256 example); keys computed with Python's
        // hashlib and base64, independently of this code.
        let h = signature_hash("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        assert_eq!(
            HashEncoding::Base64.encode(&h),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM="
        );
        assert_eq!(
            HashEncoding::Base64url.encode(&h),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(
            HashEncoding::Hex.encode(&h),
            "13d31e961a1ad8ec2f16b10c4c982e0876a878ad6df144566ee1894acb70f9c3"
        );
    }

    #[test]
    fn decoding_accepts_only_32_byte_keys_in_the_configured_encoding() {
        let h = signature_hash("abc");
        // Lenient where it cannot matter: uppercase hex, padded base64url.
        assert_eq!(
            HashEncoding::Hex.decode(&HashEncoding::Hex.encode(&h).to_uppercase()),
            Some(h)
        );
        assert_eq!(
            HashEncoding::Base64url.decode("ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0="),
            Some(h)
        );
        for (enc, key) in [
            (HashEncoding::Base64, ""),
            // the base64url form is not standard base64
            (
                HashEncoding::Base64,
                "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0=",
            ),
            // unpadded standard base64
            (
                HashEncoding::Base64,
                "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0",
            ),
            // standard alphabet given to base64url
            (
                HashEncoding::Base64url,
                "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0",
            ),
            // 31 and 33 bytes
            (HashEncoding::Hex, &"ab".repeat(31)),
            (HashEncoding::Hex, &"ab".repeat(33)),
            (HashEncoding::Hex, &"a".repeat(63)),
            (HashEncoding::Hex, &"zz".repeat(32)),
            (HashEncoding::Hex, &"é".repeat(32)),
            (HashEncoding::Base64, &"A".repeat(200)),
        ] {
            assert_eq!(enc.decode(key), None, "{enc:?} {key:?}");
        }
    }
}
