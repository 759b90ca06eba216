//! The second-level split token store: a key-value service reached over HTTP (proxy-wasm has no
//! sockets), such as Redis behind webdis, Consul KV or a Cloudflare-style KV API. Shared by every
//! gateway of a fleet, while Envoy shared data (level 1) is per Envoy process.
//!
//! The request shapes are templates: `{key}` is the store key (`enc(SHA-256(signature))` in the
//! configured hash encoding), percent-encoded as one path segment (standard base64 has `/`, `+`
//! and `=`); `{ttl}` is the entry's remaining lifetime in whole seconds.
//!
//! - get: `GET get_path`; `200` with a body is `header.payload`; `404` or an empty `200` is a
//!   miss; anything else (a reset, a timeout, 5xx, ...) is a store failure.
//! - put: `put_method put_path` with `header.payload` as the body; any `2xx` is success.
//! - delete: `delete_method delete_path`; any `2xx` or `404` is success.

/// `split.remote`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteConfig {
    pub cluster: String,
    pub authority: String,
    pub get_path: String,
    pub put_path: String,
    pub put_method: String,
    pub delete_path: String,
    pub delete_method: String,
    pub timeout_ms: u64,
    /// Longest time an entry stays in the gateway's own store (level 1) once read from, or
    /// written to, the remote store: the bound on how late a revocation elsewhere is seen.
    pub local_ttl_s: u64,
    /// With `fleet` (the store is the fleet's Redis): entries sealed under their signature.
    pub sealed: Option<Sealing>,
}

/// How a fleet's split entries are sealed (`token::seal`, kind `Split`): under a key derived
/// from the JWS signature the client holds, with the Redis key (`prefix` and the store key) as
/// associated data. `accept_plain`: a plain `header.payload` a token service wrote there is
/// accepted too (weaker: whoever writes to Redis can forge one).
#[derive(Clone, PartialEq, Eq)]
pub struct Sealing {
    pub prefix: String,
    pub accept_plain: bool,
    /// The fleet's secret (`config::FleetSecret`).
    pub secret: Vec<u8>,
}

// The fleet's secret is inside: never print it.
impl std::fmt::Debug for Sealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealing")
            .field("prefix", &self.prefix)
            .field("accept_plain", &self.accept_plain)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Sealing {
    /// The Redis key of the entry whose store key is `key` (the associated data).
    pub fn redis_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

/// One call to the remote store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub body: Option<Vec<u8>>,
}

/// What a get answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    Found(String),
    Missing,
    Failed,
}

/// Percent-encodes `value` as one path segment: everything but RFC 3986 unreserved characters.
pub fn encode_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b));
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn fill(template: &str, key: &str, ttl_s: u64) -> String {
    template
        .replace("{key}", &encode_segment(key))
        .replace("{ttl}", &ttl_s.to_string())
}

impl RemoteConfig {
    pub fn get(&self, key: &str) -> Call {
        Call {
            method: "GET".to_owned(),
            path: fill(&self.get_path, key, 0),
            body: None,
        }
    }

    /// Stores `header_payload` for `ttl_s` seconds (at least 1).
    pub fn put(&self, key: &str, header_payload: &str, ttl_s: u64) -> Call {
        Call {
            method: self.put_method.clone(),
            path: fill(&self.put_path, key, ttl_s.max(1)),
            body: Some(header_payload.as_bytes().to_vec()),
        }
    }

    pub fn delete(&self, key: &str) -> Call {
        Call {
            method: self.delete_method.clone(),
            path: fill(&self.delete_path, key, 0),
            body: None,
        }
    }
}

/// Classifies a get's answer. `status` is `None` for a reset; Envoy's synthesized 503 and 504
/// (connect failure, timeout) are failures like any other status.
pub fn classify_get(status: Option<&str>, body: &[u8]) -> Got {
    match status {
        Some("200") if body.is_empty() => Got::Missing,
        Some("200") => match std::str::from_utf8(body) {
            Ok(text) => Got::Found(text.trim_end_matches(['\r', '\n']).to_owned()),
            Err(_) => Got::Failed,
        },
        Some("404") => Got::Missing,
        _ => Got::Failed,
    }
}

/// Whether a put succeeded.
pub fn put_succeeded(status: Option<&str>) -> bool {
    status.is_some_and(|s| s.len() == 3 && s.starts_with('2'))
}

/// Whether a delete succeeded (absent already counts).
pub fn delete_succeeded(status: Option<&str>) -> bool {
    put_succeeded(status) || status == Some("404")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webdis() -> RemoteConfig {
        RemoteConfig {
            cluster: "webdis".into(),
            authority: "webdis".into(),
            get_path: "/GET/split:{key}.txt".into(),
            put_path: "/SETEX/split:{key}/{ttl}".into(),
            put_method: "PUT".into(),
            delete_path: "/DEL/split:{key}".into(),
            delete_method: "GET".into(),
            timeout_ms: 200,
            local_ttl_s: 10,
            sealed: None,
        }
    }

    #[test]
    fn keys_are_one_percent_encoded_segment() {
        let key = "ab/c+d=";
        assert_eq!(encode_segment(key), "ab%2Fc%2Bd%3D");
        assert_eq!(encode_segment("x-y_z.~"), "x-y_z.~");
        assert_eq!(encode_segment("a:b%c d"), "a%3Ab%25c%20d");
        let w = webdis();
        assert_eq!(w.get(key).path, "/GET/split:ab%2Fc%2Bd%3D.txt");
        assert_eq!(
            w.put(key, "h.p", 42),
            Call {
                method: "PUT".into(),
                path: "/SETEX/split:ab%2Fc%2Bd%3D/42".into(),
                body: Some(b"h.p".to_vec())
            }
        );
        assert_eq!(w.put(key, "h.p", 0).path, "/SETEX/split:ab%2Fc%2Bd%3D/1");
        let d = w.delete(key);
        assert_eq!(
            (d.method.as_str(), d.path.as_str()),
            ("GET", "/DEL/split:ab%2Fc%2Bd%3D")
        );
        // Consul KV shape.
        let consul = RemoteConfig {
            get_path: "/v1/kv/split/{key}?raw".into(),
            ..webdis()
        };
        assert_eq!(consul.get("k/1").path, "/v1/kv/split/k%2F1?raw");
    }

    #[test]
    fn get_answers() {
        assert_eq!(
            classify_get(Some("200"), b"h.p\r\n"),
            Got::Found("h.p".into())
        );
        assert_eq!(classify_get(Some("200"), b""), Got::Missing);
        assert_eq!(classify_get(Some("404"), b"nope"), Got::Missing);
        for s in [
            None,
            Some("503"),
            Some("504"),
            Some("500"),
            Some("302"),
            Some("401"),
        ] {
            assert_eq!(classify_get(s, b"h.p"), Got::Failed, "{s:?}");
        }
        assert_eq!(classify_get(Some("200"), &[0xff]), Got::Failed);
        assert!(put_succeeded(Some("200")) && put_succeeded(Some("204")));
        assert!(!put_succeeded(Some("404")) && !put_succeeded(None) && !put_succeeded(Some("2")));
        assert!(delete_succeeded(Some("404")) && !delete_succeeded(Some("503")));
    }
}
