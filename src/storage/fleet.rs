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
use crate::host::Host;
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

/// The store key of the entry of the token whose SHA-256 is `hash`, made under the
/// configuration `namespace` (its cache's: gateways of another configuration, in a rolling
/// change, keep apart): `fleet.key_prefix`, a tag, and the base64url of SHA-256(label |
/// namespace | 0 | hash). It travels in a URL path as it is (letters, digits, `-`, `_`, and
/// the prefix's `:`, `.`).
pub fn key(prefix: &str, space: Space, namespace: &str, hash: &TokenHash) -> String {
    let digest = Sha256::new()
        .chain_update(space.label())
        .chain_update(namespace.as_bytes())
        .chain_update([0])
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

/// Slots of the fleet's revocation ring (`<prefix>rv:<n mod RING>`): how many revocations a
/// gateway may fall behind (Redis unreachable from it) before it misses some.
pub const RING: u64 = 4096;
/// Ring entries read per poll (and the counter with them).
pub const PAGE: u64 = 64;

/// Appends one revocation to the ring, atomically (a Lua script through `EVAL`): the ring's
/// identity `<prefix>rv:id` written if there is none (the appender's random offer), the
/// counter `<prefix>rv` incremented, the entry `n:<value>` (`n` in decimal digits, whatever its
/// size) written at `<prefix>rv:<n mod RING>` with its remaining life. A reader never sees a
/// number taken but not written; a Redis that lost the ring has another identity.
const APPEND: &str = "redis.call('SET',KEYS[1]..':id',ARGV[3],'NX') \
    local n=redis.call('INCR',KEYS[1]) \
    redis.call('SET',KEYS[1]..':'..(n%4096),string.format('%d',n)..':'..ARGV[1],'EX',ARGV[2]) \
    return n";

fn ring_key(prefix: &str) -> String {
    format!("{prefix}rv")
}

/// Appends `value` (base64url) to the revocation ring, kept `ttl_ms`; `identity`: the ring's
/// identity offered, should there be none.
pub fn ring_append(prefix: &str, value: &str, ttl_ms: u64, identity: u64) -> Call {
    Call {
        method: "GET".to_owned(),
        path: format!(
            "/EVAL/{}/1/{}/{value}/{}/{identity:016x}",
            super::remote::encode_segment(APPEND),
            ring_key(prefix),
            ttl_ms.div_ceil(1_000).max(1)
        ),
        body: None,
    }
}

/// Reads the ring's counter, its identity, the entry `after` (read last time: is it still the
/// one?) and the [`PAGE`] entries after it.
pub fn ring_read(prefix: &str, after: u64) -> Call {
    let ring = ring_key(prefix);
    let mut path = format!("/MGET/{ring}/{ring}:id/{ring}:{}", after % RING);
    for n in after + 1..=after + PAGE {
        path.push_str(&format!("/{ring}:{}", n % RING));
    }
    Call {
        method: "GET".to_owned(),
        path,
        body: None,
    }
}

/// What a ring read found: the counter, and the entries after the cursor (in order, each
/// `None` when absent: expired, or overwritten a ring later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingPage {
    pub counter: u64,
    /// The ring's identity (`None`: no append since Redis started).
    pub identity: Option<u64>,
    /// The entry `after` as it is now.
    pub previous: Previous,
    pub entries: Vec<Option<Vec<u8>>>,
}

/// The entry a reader read last, as the ring holds it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Previous {
    /// Gone (expired, or a Redis that lost it): nothing to compare.
    Absent,
    /// Another number in its slot, or not an entry.
    Other,
    /// That number's entry (its mark's bytes).
    Entry(Vec<u8>),
}

/// What names the entry `n` holding `mark` (compared at the next read: a Redis put back to an
/// older state holds another entry under that number).
pub fn entry_tag(n: u64, mark: &[u8]) -> u64 {
    let digest = Sha256::new()
        .chain_update(n.to_be_bytes())
        .chain_update(mark)
        .finalize();
    let mut tag = [0u8; 8];
    for (t, d) in tag.iter_mut().zip(digest.iter()) {
        *t = *d;
    }
    u64::from_be_bytes(tag).max(1)
}

/// Reads a ring read's answer (webdis JSON: `{"MGET": ["<counter>", "<identity>",
/// "<entry after>", "<n>:<value>", null, ...]}`) for the entries after `after`; `None` when it
/// is not one.
pub fn ring_page(status: Option<&str>, body: &[u8], after: u64) -> Option<RingPage> {
    if status != Some("200") {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let values = json.get("MGET")?.as_array()?;
    let (counter, rest) = values.split_first()?;
    let (identity, rest) = rest.split_first()?;
    let (previous, slots) = rest.split_first()?;
    let entry = |value: &serde_json::Value, n: u64| -> Option<Vec<u8>> {
        let (at, value) = value.as_str()?.split_once(':')?;
        if at.parse::<u64>().ok()? != n {
            return None;
        }
        URL_SAFE_NO_PAD.decode(value).ok()
    };
    let previous = match previous {
        serde_json::Value::Null => Previous::Absent,
        value => entry(value, after).map_or(Previous::Other, Previous::Entry),
    };
    let counter = match counter {
        serde_json::Value::Null => 0,
        value => value.as_str()?.parse().ok()?,
    };
    let identity = match identity {
        serde_json::Value::Null => None,
        value => Some(u64::from_str_radix(value.as_str()?, 16).ok()?),
    };
    let entries = slots
        .iter()
        .zip(after + 1..)
        .map(|(value, n)| entry(value, n))
        .collect();
    Some(RingPage {
        counter,
        identity,
        previous,
        entries,
    })
}

/// Whether a ring append was made (`{"EVAL": <n>}`).
pub fn appended(status: Option<&str>, body: &[u8]) -> bool {
    status == Some("200")
        && serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("EVAL")?.as_u64())
            .is_some()
}

// ---- DPoP: proofs claimed once in the fleet, one nonce key --------------------------------------

/// Claims a DPoP proof (its [`crate::storage::dpop::proof_hash`]) for `ttl_ms`:
/// `SET <prefix>dj:<id> 1 NX PX <ttl>`, taken only if no gateway took it first.
pub fn claim(prefix: &str, proof: &TokenHash, ttl_ms: u64) -> Call {
    Call {
        method: "GET".to_owned(),
        path: format!(
            "/SET/{prefix}dj:{}/1/NX/PX/{}",
            URL_SAFE_NO_PAD.encode(proof),
            ttl_ms.max(1)
        ),
        body: None,
    }
}

/// What a claim answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// Taken here: the proof's first use in the fleet.
    Fresh,
    /// Taken before, at some gateway: a replay.
    Taken,
    /// No answer, or not one.
    Failed,
}

/// Reads a claim's answer (webdis JSON: `{"SET": [true, "OK"]}` taken, `{"SET": null}` taken
/// before).
pub fn claimed(status: Option<&str>, body: &[u8]) -> Claimed {
    if status != Some("200") {
        return Claimed::Failed;
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Claimed::Failed;
    };
    match json.get("SET") {
        Some(serde_json::Value::Null) => Claimed::Taken,
        Some(serde_json::Value::Array(a))
            if a.first() == Some(&serde_json::Value::Bool(true))
                && a.get(1).and_then(|v| v.as_str()) == Some("OK") =>
        {
            Claimed::Fresh
        }
        _ => Claimed::Failed,
    }
}

/// The fleet's DPoP nonce key: `offered` (base64url of 32 random bytes) written if there is
/// none, the one there read back in the same call (`SET <prefix>dn <offered> NX GET`).
pub fn nonce_key(prefix: &str, offered: &str) -> Call {
    Call {
        method: "GET".to_owned(),
        path: format!("/SET/{prefix}dn/{offered}/NX/GET"),
        body: None,
    }
}

/// The fleet's nonce key from [`nonce_key`]'s answer (`{"SET": null}`: `offered` was taken).
pub fn nonce_key_of(status: Option<&str>, body: &[u8], offered: &str) -> Option<[u8; 32]> {
    if status != Some("200") {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let key = match json.get("SET")? {
        serde_json::Value::Null => offered,
        serde_json::Value::String(there) => there.as_str(),
        _ => return None,
    };
    URL_SAFE_NO_PAD.decode(key).ok()?.try_into().ok()
}

// ---- this gateway's place in the fleet's revocations (shared data) ----------------------------

/// Where this gateway (this VM) stands with one fleet's revocations, kept in shared data
/// (`fl:rv:<cluster>:<key_prefix>`, [`cursors_key`]: two configurations of one VM on two fleets
/// keep apart; written with a compare-and-swap): its own revocations published up to `out` (a
/// number of the local log), the fleet's applied up to `seen` (a number of the ring), when to
/// read the ring next, and who works on each until when (one worker at a time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursors {
    pub out: u64,
    pub out_claim_ms: u64,
    pub seen: u64,
    pub seen_claim_ms: u64,
    pub next_read_ms: u64,
    /// When the fleet's DPoP nonce key is read next, and who reads it until when.
    pub next_nonce_ms: u64,
    pub nonce_claim_ms: u64,
    /// The identity of the ring `seen` counts in (0: none read yet).
    pub ring: u64,
    /// [`entry_tag`] of the entry `seen` (0: unknown).
    pub last: u64,
}

/// The shared-data key of the cursors for the fleet reached through `cluster` and
/// `authority`, under `prefix` (each length-prefixed, hashed: no two fleets share one).
pub fn cursors_key(cluster: &str, authority: &str, prefix: &str) -> String {
    let mut h = Sha256::new();
    for part in [cluster, authority, prefix] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    let short: Vec<u8> = digest.iter().take(12).copied().collect();
    format!("fl:rv:{}", URL_SAFE_NO_PAD.encode(short))
}
const CAS_ATTEMPTS: usize = 16;

impl Cursors {
    fn decode(v: &[u8]) -> Option<Self> {
        let n = |i: usize| {
            v.get(i * 8..i * 8 + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
        };
        (v.len() == 72).then_some(())?;
        Some(Self {
            out: n(0)?,
            out_claim_ms: n(1)?,
            seen: n(2)?,
            seen_claim_ms: n(3)?,
            next_read_ms: n(4)?,
            next_nonce_ms: n(5)?,
            nonce_claim_ms: n(6)?,
            ring: n(7)?,
            last: n(8)?,
        })
    }

    fn encode(&self) -> Vec<u8> {
        [
            self.out,
            self.out_claim_ms,
            self.seen,
            self.seen_claim_ms,
            self.next_read_ms,
            self.next_nonce_ms,
            self.nonce_claim_ms,
            self.ring,
            self.last,
        ]
        .iter()
        .flat_map(|n| n.to_be_bytes())
        .collect()
    }

    /// The record as it is now.
    pub fn read(host: &dyn Host, key: &str) -> Self {
        host.shared_get(key)
            .as_deref()
            .and_then(Self::decode)
            .unwrap_or_default()
    }

    /// Changes the record with `change` (which answers `None` to leave it as it is), with a
    /// compare-and-swap: the record written, or `None`.
    pub fn update(
        host: &dyn Host,
        key: &str,
        change: impl Fn(Self) -> Option<Self>,
    ) -> Option<Self> {
        for _ in 0..CAS_ATTEMPTS {
            let (value, cas) = host.shared_get_cas(key);
            let now = value.as_deref().and_then(Self::decode).unwrap_or_default();
            let next = change(now)?;
            if host.shared_set_cas(key, &next.encode(), cas).is_ok() {
                return Some(next);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::token_hash;

    #[test]
    fn keys_are_bounded_url_safe_and_not_the_token_hash() {
        let h = token_hash("opaque");
        let k = key("tf:", Space::Phantom, "ns", &h);
        assert!(k.starts_with("tf:p:") && k.len() == 5 + 43, "{k}");
        assert!(k[5..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert!(!k.contains(&URL_SAFE_NO_PAD.encode(h)));
        assert_eq!(k, key("tf:", Space::Phantom, "ns", &h));
        assert_ne!(k, key("tf:", Space::Phantom, "ns", &token_hash("other")));
        assert!(key("gw.1:", Space::Phantom, "ns", &h).starts_with("gw.1:p:"));
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

    #[test]
    fn the_revocation_ring() {
        let a = ring_append("tf:", "AAEC", 1_500, 0xab);
        assert!(a.path.starts_with("/EVAL/redis.call"), "{}", a.path);
        assert!(a.path.contains("string.format"), "{}", a.path);
        assert!(
            a.path.ends_with("/1/tf:rv/AAEC/2/00000000000000ab"),
            "{}",
            a.path
        );
        let r = ring_read("tf:", 4094);
        assert!(r
            .path
            .starts_with("/MGET/tf:rv/tf:rv:id/tf:rv:4094/tf:rv:4095/tf:rv:0/tf:rv:1/"));
        assert_eq!(r.path.matches('/').count(), 4 + PAGE as usize);
        let body = br#"{"MGET":["4097","00000000000000ab","4094:AAED","4095:AAEC",null,"1:AAEC","3:AAEC"]}"#;
        let page = ring_page(Some("200"), body, 4094).unwrap();
        assert_eq!((page.counter, page.identity), (4097, Some(0xab)));
        assert_eq!(page.previous, Previous::Entry(vec![0, 1, 3]));
        let other = br#"{"MGET":["4097","00000000000000ab","12:AAED"]}"#;
        assert_eq!(
            ring_page(Some("200"), other, 4094).unwrap().previous,
            Previous::Other
        );
        assert_eq!(
            page.entries,
            vec![Some(vec![0, 1, 2]), None, None, None],
            "an entry is the number it says it is (a ring later: absent)"
        );
        assert_eq!(
            ring_page(Some("200"), br#"{"MGET":[null,null,null]}"#, 0).unwrap(),
            RingPage {
                counter: 0,
                identity: None,
                previous: Previous::Absent,
                entries: Vec::new()
            }
        );
        assert_ne!(entry_tag(1, b"m"), entry_tag(2, b"m"));
        assert_ne!(entry_tag(1, b"m"), entry_tag(1, b"n"));
        for (status, body) in [
            (Some("503"), &br#"{"MGET":["1",null]}"#[..]),
            (Some("200"), b"garbage"),
            (Some("200"), br#"{"MGET":[]}"#),
            (Some("200"), br#"{"MGET":["1",null]}"#),
            (Some("200"), br#"{"MGET":["x",null,null]}"#),
            (Some("200"), br#"{"MGET":["1","not-hex",null]}"#),
            (None, b""),
        ] {
            assert_eq!(ring_page(status, body, 0), None, "{body:?}");
        }
        assert!(appended(Some("200"), br#"{"EVAL":7}"#));
        assert!(!appended(Some("200"), br#"{"EVAL":[false,"ERR"]}"#));
        assert!(!appended(Some("503"), br#"{"EVAL":7}"#));
    }

    #[test]
    fn cursors_change_by_compare_and_swap() {
        let host = crate::testing::FakeHost::at(0);
        let key = cursors_key("webdis", "webdis", "tf:");
        assert_eq!(Cursors::read(&host, &key), Cursors::default());
        let claimed = Cursors::update(&host, &key, |c| {
            (c.out_claim_ms <= 5).then_some(Cursors {
                out_claim_ms: 100,
                ..c
            })
        });
        assert_eq!(claimed.unwrap().out_claim_ms, 100);
        assert_eq!(
            Cursors::update(&host, &key, |c| (c.out_claim_ms <= 5).then_some(c)),
            None,
            "claimed by another"
        );
        Cursors::update(&host, &key, |c| Some(Cursors { seen: 7, ..c }));
        assert_eq!(Cursors::read(&host, &key).seen, 7);
        assert_eq!(Cursors::read(&host, &key).out_claim_ms, 100);
        assert_ne!(
            cursors_key("r:a", "x", "tf:"),
            cursors_key("r", "x", "a:tf:"),
            "no two fleets share a key"
        );
        assert_ne!(cursors_key("r", "x", "tf:"), cursors_key("r", "y", "tf:"));
        let other = cursors_key("webdis", "webdis", "gw2:");
        assert_eq!(
            Cursors::read(&host, &other),
            Cursors::default(),
            "another fleet's"
        );
    }

    #[test]
    fn dpop_claims_and_the_nonce_key() {
        let c = claim("tf:", &[0xfb; 32], 301_000);
        assert_eq!(
            c.path,
            format!(
                "/SET/tf:dj:{}/1/NX/PX/301000",
                URL_SAFE_NO_PAD.encode([0xfb; 32])
            )
        );
        assert_eq!(
            claimed(Some("200"), br#"{"SET":[true,"OK"]}"#),
            Claimed::Fresh
        );
        assert_eq!(claimed(Some("200"), br#"{"SET":null}"#), Claimed::Taken);
        for (status, body) in [
            (Some("503"), &br#"{"SET":[true,"OK"]}"#[..]),
            (Some("200"), br#"{"SET":[false,"ERR"]}"#),
            (Some("200"), b"OK"),
            (None, b""),
        ] {
            assert_eq!(claimed(status, body), Claimed::Failed, "{body:?}");
        }
        let offered = URL_SAFE_NO_PAD.encode([1u8; 32]);
        let there = URL_SAFE_NO_PAD.encode([2u8; 32]);
        assert_eq!(
            nonce_key("tf:", &offered).path,
            format!("/SET/tf:dn/{offered}/NX/GET")
        );
        assert_eq!(
            nonce_key_of(Some("200"), br#"{"SET":null}"#, &offered),
            Some([1; 32])
        );
        let answer = format!(r#"{{"SET":"{there}"}}"#);
        assert_eq!(
            nonce_key_of(Some("200"), answer.as_bytes(), &offered),
            Some([2; 32])
        );
        assert_eq!(
            nonce_key_of(Some("200"), br#"{"SET":"short"}"#, &offered),
            None
        );
        assert_eq!(nonce_key_of(Some("503"), b"", &offered), None);
    }
}
