//! Golden tests: the shared-data key and value formats, byte for byte.
//!
//! Envoy keeps shared data across a configuration reload (and across listeners of one `vm_id`):
//! a filter built from other code reads what the previous one wrote. A change to any of these
//! formats would make a reload serve garbage or miss everything, so each is pinned here. A
//! change that is meant must change the magic (`pt2`, `st1`, `dp1`, `rv1`) or the key prefix, and this file.

use envoy_token_filter::config::{Config, KeySource};
use envoy_token_filter::hash;
use envoy_token_filter::storage::keys;
use envoy_token_filter::storage::phantom_cache as cache;
use envoy_token_filter::storage::revocation::{self, Mark, MarkKind, Marks};
use envoy_token_filter::storage::split_store::Store;
use envoy_token_filter::testing::FakeHost;
use envoy_token_filter::token::revocation::Identity;
use envoy_token_filter::token::split::Entry;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256("abc"), the hash every value below is keyed by.
const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

#[test]
fn token_hash_is_sha256_of_the_token() {
    assert_eq!(hex(&hash::token_hash("abc")), ABC);
}

#[test]
fn phantom_cache_slot_keys() {
    let h = hash::token_hash("abc");
    assert_eq!(cache::slot_key("a1b2c3d4", &h, 100_000), "pt:a1b2c3d4:74");
    assert_eq!(cache::slot_key("a1b2c3d4", &h, 1), "pt:a1b2c3d4:0");
}

#[test]
fn phantom_cache_values() {
    let h = hash::token_hash("abc");
    let identity = Identity {
        token: h,
        sub: Some(h),
        sid: None,
        iat: Some(1_700_000_000),
    };
    let active = cache::encode_active(&h, 1_700_000_000_123, "read write", &identity, "h.p.s");
    // magic "pt2" | kind 1 | expires_at_ms u64 BE | sha256 | scope_len u16 BE | scope |
    // identity_len u8 | identity (flags u8: 1 iat, 2 sub, 4 sid | iat u64 BE | sub) | jwt
    let want = [
        "707432",
        "01",
        "0000018bcfe5687b",
        ABC,
        "000a",
        "72656164207772697465",
        "29",
        "03",
        "000000006553f100",
        ABC,
        "682e702e73",
    ]
    .concat();
    assert_eq!(hex(&active), want);
    let inactive = cache::encode_inactive(&h, 1_700_000_000_123);
    let want = ["707432", "02", "0000018bcfe5687b", ABC, "0000"].concat();
    assert_eq!(hex(&inactive), want);
}

#[test]
fn namespaces_derived_from_the_configuration() {
    let cfg = Config::from_slice(
        br#"{"phantom": {"cluster": "ts", "authority": "login.example.com", "path": "/i",
        "client_id": "gw", "client_secret": "s"},
        "verify": {"issuer": "i", "audiences": ["a"], "algorithms": ["ES256"],
        "jwks": {"cluster": "ts", "path": "/jwks"}}}"#,
    )
    .unwrap();
    assert_eq!(cfg.cache.namespace, "daf71959");
    let Some(KeySource::Remote(src)) = cfg.verify.as_ref().map(|v| &v.keys) else {
        panic!("remote keys")
    };
    assert_eq!(src.namespace, "jwksb22b7c58:");
}

#[test]
fn split_store_keys_and_values() {
    let h = hash::token_hash("abc");
    let store = Store::new(64);
    let keys: Vec<String> = store.slot_keys(&h).collect();
    assert_eq!(keys, ["st64:42", "st64:43", "st64:44", "st64:45"]);
    let data = FakeHost::at(1_700_000_000_000);
    assert!(store.initialize(&data));
    assert_eq!(data.key_count(), 65, "64 slots and the marker");
    assert_eq!(data.value("st64:ready").unwrap(), b"1");
    assert!(data.value("st64:0").unwrap().is_empty());
    let entry = Entry {
        hash: h,
        header_payload: "h.p".to_owned(),
        expires_at_ms: 1_700_000_000_123,
        scope: "read".to_owned(),
    };
    store.put(&data, &entry, 1_700_000_000_000).unwrap();
    // magic "st1" | kind 1 (live) | expires_at_ms | sha256 | scope_len | scope | header.payload
    let live = [
        "737431",
        "01",
        "0000018bcfe5687b",
        ABC,
        "0004",
        "72656164",
        "682e70",
    ]
    .concat();
    assert_eq!(hex(&data.value(&keys[0]).unwrap()), live);
    store.revoke(&data, &h, 1_700_000_000_000).unwrap();
    // kind 2 (revoked): the expiry stays, scope and header.payload go.
    let revoked = ["737431", "02", "0000018bcfe5687b", ABC, "0000"].concat();
    assert_eq!(hex(&data.value(&keys[0]).unwrap()), revoked);
}

#[test]
fn jwks_lease_and_set_keys() {
    let cfg = Config::from_slice(
        br#"{"phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s"},
        "verify": {"issuer": "i", "audiences": ["a"], "algorithms": ["ES256"],
        "jwks": {"cluster": "ts", "path": "/jwks"}}}"#,
    )
    .unwrap();
    let Some(KeySource::Remote(src)) = cfg.verify.as_ref().map(|v| &v.keys) else {
        panic!("remote keys")
    };
    let data = FakeHost::at(1_700_000_000_000);
    keys::initialize(src, &data);
    assert_eq!(data.data_keys(), [format!("{}lease", src.namespace)]);
    let value = data.value(&format!("{}lease", src.namespace)).unwrap();
    // generation | lease_until_ms | last_start_ms | next_due_ms (u64 BE each) | early u8
    assert_eq!(hex(&value), "00".repeat(33));
}

#[test]
fn dpop_replay_and_nonce_keys() {
    use envoy_token_filter::storage::dpop::{self, Admit, KeyQuota, ReplayStore, Seen};
    let data = FakeHost::at(1_700_000_000_000);
    let store = ReplayStore::new(64);
    assert_eq!(store.initialize(&data), 64);
    let mut keys = data.data_keys();
    keys.sort();
    assert_eq!(keys.len(), 65);
    // The slots do not name the size (a reload to another size reuses them); the layout
    // record lists the sizes in use, largest first: "dpl1[ <size>@<until_ms>]...".
    assert!(keys.contains(&"dp:0".to_owned()) && keys.contains(&"dp:63".to_owned()));
    let until = 1_700_000_000_000 + dpop::MAX_WINDOW_MS;
    let layout = || String::from_utf8(data.value("dp:layout").unwrap()).unwrap();
    assert_eq!(layout(), format!("dpl1 64@{until}"));
    assert_eq!(ReplayStore::new(128).initialize(&data), 64);
    assert_eq!(layout(), format!("dpl1 128@{until} 64@{until}"));
    assert_eq!(data.key_count(), 129);
    assert_eq!(store.initialize(&data), 0);
    // The proof's key: SHA-256(len(jkt) u64 BE | jkt | jti) (computed apart with Python).
    let h = dpop::proof_hash("jkt", "jti");
    assert_eq!(
        hex(&h),
        "85c1f913d3eea18f1a4f3a0badfead829ce1971173edd91b3e270b03e0ffcb18"
    );
    assert_eq!(
        store.check_and_insert(&data, &h, 1_700_000_000_123, 1_700_000_000_000, |_| Ok(())),
        Seen::Fresh
    );
    let written: Vec<Vec<u8>> = data
        .values()
        .into_iter()
        .filter(|v| !v.is_empty() && !v.starts_with(b"dpl1"))
        .collect();
    // magic "dp1" | kind 1 | expires_at_ms u64 BE | sha256 | scope_len 0
    let want = ["647031", "01", "0000018bcfe5687b", &hex(&h), "0000"].concat();
    assert_eq!(written.iter().map(|v| hex(v)).collect::<Vec<_>>(), [want]);
    assert_eq!(dpop::nonce_key_name("a1b2c3d4"), "dpna1b2c3d4:key");

    // A key's share: slots dq:<slot>, magic "dq1", the SHA-256 of the key's thumbprint, the end
    // of the period after this one as expiry, and "<start_s> <period_s> <current> <previous>"
    // as body.
    let quota = KeyQuota {
        slots: 64,
        limit: 2,
        bucket_s: 100,
    };
    let data = FakeHost::at(1_700_000_000_000);
    assert_eq!(quota.initialize(&data), 64);
    assert!(data.data_keys().iter().all(|k| k.starts_with("dq:")));
    let key = [5u8; 32];
    assert_eq!(
        quota.admit(&data, &key, &[0; 32], 1_700_000_000_000),
        Admit::Yes
    );
    let written: Vec<Vec<u8>> = data
        .values()
        .into_iter()
        .filter(|v| !v.is_empty())
        .collect();
    // The period starts now (1 700 000 000 s) and lasts 100 s: expiry 1 700 000 200 s in ms.
    let want = [
        "647131",
        "01",
        "0000018bcfe87540",
        &"05".repeat(32),
        "0000",
        &hex(b"1700000000 100 1 0"),
    ]
    .concat();
    assert_eq!(written.iter().map(|v| hex(v)).collect::<Vec<_>>(), [want]);
    assert!(dpop::quota_salt(&data, || [3; 32]).is_some());
    assert!(data.data_keys().contains(&"dq:salt".to_owned()));
}

#[test]
fn revocation_marks_log_and_participants() {
    let data = FakeHost::at(1_700_000_000_000);
    let marks = Marks::new(16);
    marks.initialize(&data, 86_400_000);
    assert_eq!(data.value("rvm:layout").unwrap(), b"rvl2 2@1700086400000");
    assert_eq!(data.value("rvl:seq").unwrap(), b"0");
    let h = hash::token_hash("abc");
    let mark = Mark {
        kind: MarkKind::Token,
        key: h,
        at_s: 1_700_000_000,
        until_ms: 1_700_000_060_000,
    };
    let salt = [3; 32];
    marks.insert(&data, &salt, &mark, 1_700_000_000_000);
    // magic "rv2" | (kind u8 | key [32] | at_s u64 BE | until_ms u64 BE) per mark; the bucket
    // is the slot of SHA-256(salt | key) among max_marks / 8 buckets (the first 8 bytes, BE).
    let placed: [u8; 32] = {
        use sha2::{Digest, Sha256};
        Sha256::new()
            .chain_update(salt)
            .chain_update(h)
            .finalize()
            .into()
    };
    let bucket = u64::from_be_bytes(placed[..8].try_into().unwrap()) % 2;
    let want = ["727632", "01", ABC, "000000006553f100", "0000018bcfe65260"].concat();
    assert_eq!(hex(&data.value(&format!("rvm:{bucket}")).unwrap()), want);
    // The salt: 32 random bytes, made once per VM.
    assert_eq!(revocation::salt(&data).map(|s| s.len()), Some(32));
    assert_eq!(data.value("rvm:salt").map(|v| v.len()), Some(32));
    assert_eq!(revocation::log_append(&data, &mark, false), Some(1));
    // seq u64 BE | the mark | from the fleet u8 (0: made here)
    let want = [
        "0000000000000001",
        "01",
        ABC,
        "000000006553f100",
        "0000018bcfe65260",
        "00",
    ]
    .concat();
    assert_eq!(hex(&data.value("rvl:1").unwrap()), want);
    assert_eq!(data.value("rvl:seq").unwrap(), b"1");
    revocation::create_participants(&data);
    let slot = revocation::join(&data, 7, 1, 1_700_000_000_000).unwrap();
    // id u64 | beat_ms u64 | applied u64, all BE
    let want = ["0000000000000007", "0000018bcfe56800", "0000000000000001"].concat();
    assert_eq!(hex(&data.value(&format!("rvp:{slot}")).unwrap()), want);
}
