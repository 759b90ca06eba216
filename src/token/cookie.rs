//! Browser credentials, pure: the encrypted cookies of the token handler pattern, in the format
//! Curity's OAuth Agent writes and its OAuth proxy modules read (base64url without padding of
//! version byte `1`, a 12-byte IV, the AES-256-GCM ciphertext and its 16-byte tag; the key is
//! 32 bytes, configured as 64 hex characters), the `Cookie` headers they come in (HTTP/1.1's one
//! header, HTTP/2's one crumb per header), and the `Origin` rule.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// The only version of the format.
const VERSION: u8 = 1;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Longest cookie value read (bytes, as sent).
pub const MAX_COOKIE_LEN: usize = 8 * 1024;

/// Why a cookie credential is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieError {
    /// One of the filter's cookies appears twice: which one to trust cannot be told.
    Duplicate,
    /// A cookie of the filter's over [`MAX_COOKIE_LEN`].
    TooLarge,
    /// Not base64url, the wrong version, too short, or no key opens it.
    Undecryptable,
}

/// An AES-256-GCM key, from its 64 hex characters.
pub fn key_from_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        let pair = hex.get(2 * i..2 * i + 2)?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(key)
}

/// The keys cookies are opened with, each made ready once (its AES key schedule and GHASH key),
/// when the configuration loads: a request pays only for its own cookie. Never printed.
#[derive(Clone)]
pub struct Keys(Vec<Aes256Gcm>);

impl Keys {
    pub fn new(keys: &[[u8; 32]]) -> Self {
        Self(
            keys.iter()
                .filter_map(|k| Aes256Gcm::new_from_slice(k).ok())
                .collect(),
        )
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Opens a cookie value under the first of `keys` that authenticates it; its plaintext.
pub fn decrypt(keys: &Keys, value: &str) -> Result<String, CookieError> {
    if value.len() > MAX_COOKIE_LEN {
        return Err(CookieError::TooLarge);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|_| CookieError::Undecryptable)?;
    let (&version, rest) = bytes.split_first().ok_or(CookieError::Undecryptable)?;
    if version != VERSION || rest.len() <= IV_LEN + TAG_LEN {
        return Err(CookieError::Undecryptable);
    }
    let (iv, sealed) = rest.split_at(IV_LEN);
    let iv: [u8; IV_LEN] = iv.try_into().map_err(|_| CookieError::Undecryptable)?;
    let nonce = Nonce::from(iv);
    for cipher in &keys.0 {
        // The ciphertext followed by its tag: what `decrypt` expects.
        if let Ok(plain) = cipher.decrypt(&nonce, sealed) {
            return String::from_utf8(plain).map_err(|_| CookieError::Undecryptable);
        }
    }
    Err(CookieError::Undecryptable)
}

/// Seals `plaintext` as the OAuth Agent does (tests and the demo only; the gateway never
/// writes cookies). `iv` must be new for every value.
pub fn encrypt(key: &[u8; 32], iv: &[u8; IV_LEN], plaintext: &str) -> String {
    let Ok(cipher) = Aes256Gcm::new_from_slice(key) else {
        return String::new();
    };
    let sealed = cipher
        .encrypt(&Nonce::from(*iv), plaintext.as_bytes())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(1 + IV_LEN + sealed.len());
    out.push(VERSION);
    out.extend_from_slice(iv);
    out.extend_from_slice(&sealed);
    URL_SAFE_NO_PAD.encode(out)
}

/// The values of the cookies named `names` in `headers` (every `Cookie` header: HTTP/2 sends
/// each crumb alone), each `None` when absent. A value in double quotes is unquoted; spaces
/// around crumbs are ignored; other cookies are skipped. One of `names` twice is refused.
pub fn find<'a, const N: usize>(
    headers: impl Iterator<Item = &'a str>,
    names: [&str; N],
) -> Result<[Option<&'a str>; N], CookieError> {
    let mut found: [Option<&'a str>; N] = [None; N];
    for header in headers {
        for crumb in header.split(';') {
            let crumb = crumb.trim_matches([' ', '\t']);
            let Some((name, value)) = crumb.split_once('=') else {
                continue;
            };
            let Some(i) = names.iter().position(|n| *n == name.trim_end()) else {
                continue;
            };
            let value = value.trim_start();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            if value.len() > MAX_COOKIE_LEN {
                return Err(CookieError::TooLarge);
            }
            let Some(slot) = found.get_mut(i) else {
                continue;
            };
            if slot.is_some() {
                return Err(CookieError::Duplicate);
            }
            *slot = Some(value);
        }
    }
    Ok(found)
}

/// `headers`' cookies without those named `names`, as one `Cookie` value (`None`: none is
/// left, the header goes). Other cookies stay as they were sent, in order.
pub fn without<'a>(headers: impl Iterator<Item = &'a str>, names: &[&str]) -> Option<String> {
    let mut kept: Vec<&str> = Vec::new();
    for header in headers {
        for crumb in header.split(';') {
            let crumb = crumb.trim_matches([' ', '\t']);
            if crumb.is_empty() {
                continue;
            }
            let name = crumb.split_once('=').map_or(crumb, |(n, _)| n.trim_end());
            if !names.contains(&name) {
                kept.push(crumb);
            }
        }
    }
    (!kept.is_empty()).then(|| kept.join("; "))
}

/// Whether `origin` (the request's `Origin`) is one of `trusted` (normalised at configuration:
/// lower case, no trailing `/`): exact, case-insensitive.
pub fn origin_trusted(trusted: &[String], origin: &str) -> bool {
    trusted.iter().any(|t| t.eq_ignore_ascii_case(origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "4e4636356d65563e4c73233847503e3b21436e6f7629724950526f4b5e2e4e50";
    const OLD: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn key(hex: &str) -> [u8; 32] {
        key_from_hex(hex).unwrap()
    }

    #[test]
    fn opens_what_the_oauth_agent_seals_under_the_current_or_previous_key() {
        let sealed = encrypt(&key(KEY), &[7; 12], "opaque-token-123");
        assert_eq!(
            decrypt(&Keys::new(&[key(KEY)]), &sealed).as_deref(),
            Ok("opaque-token-123")
        );
        let old = encrypt(&key(OLD), &[8; 12], "from-before-the-rotation");
        assert_eq!(
            decrypt(&Keys::new(&[key(KEY), key(OLD)]), &old).as_deref(),
            Ok("from-before-the-rotation"),
            "the previous key during a rotation"
        );
        assert_eq!(
            decrypt(&Keys::new(&[key(KEY)]), &old),
            Err(CookieError::Undecryptable)
        );
    }

    #[test]
    fn refuses_every_altered_value() {
        let sealed = encrypt(&key(KEY), &[7; 12], "opaque-token-123");
        let bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 1;
            let v = URL_SAFE_NO_PAD.encode(&flipped);
            assert_eq!(
                decrypt(&Keys::new(&[key(KEY)]), &v),
                Err(CookieError::Undecryptable),
                "bit flip at {i}"
            );
        }
        for n in [0, 1, 13, 29, bytes.len() - 1] {
            let v = URL_SAFE_NO_PAD.encode(&bytes[..n]);
            assert_eq!(
                decrypt(&Keys::new(&[key(KEY)]), &v),
                Err(CookieError::Undecryptable),
                "cut at {n}"
            );
        }
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert_eq!(
            decrypt(&Keys::new(&[key(KEY)]), &URL_SAFE_NO_PAD.encode(&v2)),
            Err(CookieError::Undecryptable)
        );
        assert_eq!(
            decrypt(&Keys::new(&[key(KEY)]), "not base64url!"),
            Err(CookieError::Undecryptable)
        );
        assert_eq!(
            decrypt(&Keys::new(&[key(KEY)]), &"A".repeat(MAX_COOKIE_LEN + 1)),
            Err(CookieError::TooLarge)
        );
        assert_eq!(key_from_hex(&KEY[..62]), None);
        assert_eq!(key_from_hex(&format!("{}zz", &KEY[..62])), None);
    }

    #[test]
    fn reads_cookies_in_http1_and_http2_form() {
        let names = ["ex-at", "ex-csrf"];
        let one = ["theme=dark; ex-at=AAA;ex-csrf=\"BBB\" ;  lang=en"];
        assert_eq!(find(one.into_iter(), names), Ok([Some("AAA"), Some("BBB")]));
        let crumbs = ["theme=dark", "ex-at=AAA", "ex-csrf=BBB"];
        assert_eq!(
            find(crumbs.into_iter(), names),
            Ok([Some("AAA"), Some("BBB")])
        );
        assert_eq!(
            find(["ex-atx=1; xex-at=2"].into_iter(), names),
            Ok([None, None])
        );
        assert_eq!(
            find(["ex-at=1", "ex-at=2"].into_iter(), names),
            Err(CookieError::Duplicate)
        );
        assert_eq!(
            find(["ex-at=1; ex-at=1"].into_iter(), names),
            Err(CookieError::Duplicate)
        );
        let big = format!("ex-at={}", "a".repeat(MAX_COOKIE_LEN + 1));
        assert_eq!(
            find([big.as_str()].into_iter(), names),
            Err(CookieError::TooLarge)
        );
        assert_eq!(
            without(
                ["theme=dark; ex-at=AAA", "ex-csrf=B", "lang=en"].into_iter(),
                &names
            ),
            Some("theme=dark; lang=en".to_owned())
        );
        assert_eq!(without(["ex-at=AAA; ex-csrf=B"].into_iter(), &names), None);
    }

    #[test]
    fn origins_match_exactly_whatever_the_case() {
        let trusted = ["https://www.example.com".to_owned()];
        assert!(origin_trusted(&trusted, "https://WWW.example.com"));
        assert!(!origin_trusted(
            &trusted,
            "https://www.example.com.evil.com"
        ));
        assert!(!origin_trusted(&trusted, "http://www.example.com"));
        assert!(!origin_trusted(&trusted, "https://www.example.com:444"));
        assert!(!origin_trusted(&trusted, "null"));
    }
}
