//! The pipeline's tests: whole requests through the stages, with a fake host (Envoy's
//! shared-data rules, a clock the test moves) that carries the worker's state too.

use super::*;
use crate::hash::TokenHash;
use crate::metrics::Counter;
use crate::reply::SplitReply;
use crate::testing::FakeHost;
use crate::token::introspection::{CallFailure as Failure, Outcome};
use crate::token::jwt::tests::make;
use crate::token::jwt::Claims;
use crate::token::split;

/// A GET of `/api` with this `Authorization`, through every stage, under the default policy.
fn on_request(cfg: &Config, host: &FakeHost, authorization: Option<&str>) -> Step {
    let mut pairs = vec![
        (":method", "GET"),
        (":path", "/api"),
        (":authority", "api.example.com"),
    ];
    if let Some(value) = authorization {
        pairs.push(("authorization", value));
    }
    let headers = HeaderMap::from_pairs(&pairs);
    let decision = super::on_request(
        &cx(cfg, host),
        &Request {
            headers: &headers,
            end_of_stream: true,
            route_name: None,
            route_policy: None,
            client_cert_sha256: None,
            secure: false,
        },
    );
    assert_eq!(
        decision.policy,
        cfg.policies.list.len(),
        "the default policy"
    );
    bare_step(decision.step)
}

/// The answer of an introspection for one request waiting, under the default policy.
fn on_introspection(cfg: &Config, host: &FakeHost, hash: &TokenHash, outcome: Outcome) -> Verdict {
    let answer = super::on_introspection(&cx(cfg, host), hash, outcome);
    judge(cfg, &cfg.policies.default, host, hash, &answer)
}

/// The verdict on an introspection answer for a request under `policy` that presented no
/// proof.
fn judge(
    cfg: &Config,
    policy: &crate::config::Policy,
    host: &FakeHost,
    hash: &TokenHash,
    answer: &Result<Introspected, Denial>,
) -> Verdict {
    let presented = Presented::default();
    let caller = Caller {
        policy,
        presented: &presented,
    };
    let token = INTROSPECTED.with(|m| m.borrow().get(hash).cloned());
    let token = token.unwrap_or_else(|| "the-token".to_owned());
    let incoming = crate::hash::TokenKeys::with_sha(&host.worker.keyed, &token, *hash);
    match after_introspection(&cx(cfg, host), &caller, &incoming, answer) {
        Step::Done(verdict) => bare(verdict),
        other => panic!("not a verdict: {other:?}"),
    }
}

fn on_remote_get(
    cfg: &Config,
    host: &FakeHost,
    hash: &TokenHash,
    token: &str,
    got: crate::storage::remote::Got,
    latency_ms: u64,
) -> Step {
    let presented = Presented::default();
    let caller = Caller {
        policy: &cfg.policies.default,
        presented: &presented,
    };
    bare_step(super::on_remote_get(
        &cx(cfg, host),
        &caller,
        hash,
        token,
        RemoteAnswer { got, latency_ms },
    ))
}

/// A forward of exactly this `Authorization` value (what these tests compare).
fn forward_of(authorization: String) -> Verdict {
    Verdict::Forward(std::rc::Rc::new(crate::storage::local::Resolved {
        authorization,
        ..Default::default()
    }))
}

/// A verdict with only what these tests compare: the `Authorization` forwarded.
fn bare(v: Verdict) -> Verdict {
    match v {
        Verdict::Forward(token) => forward_of(token.authorization.clone()),
        other => other,
    }
}

fn bare_step(step: Step) -> Step {
    match step {
        Step::Done(v) => Step::Done(bare(v)),
        other => other,
    }
}

const T0: u64 = 1_700_000_000_000;

/// The stages' context: `cfg`, and the fake host and the worker it carries.
fn cx<'a>(cfg: &'a Config, host: &'a FakeHost) -> Ctx<'a> {
    Ctx {
        cfg,
        worker: &host.worker,
        host,
    }
}

fn config(extra: &str) -> Config {
    let json = format!(
        r#"{{"required_scopes": ["read"], "phantom": {{"cluster": "ts", "path": "/i",
        "client_id": "gw", "client_secret": "s"}}{extra}}}"#
    );
    Config::from_slice(json.as_bytes()).unwrap()
}

fn active(jwt: &str, exp: Option<u64>, scope: &str) -> Outcome {
    Outcome::Active {
        jwt: jwt.to_owned(),
        claims: Claims {
            exp,
            scope: scope.to_owned(),
        },
        max_age_s: None,
        no_store: false,
    }
}

thread_local! {
    /// The tokens [`introspect`] saw, by hash: the answer's verdict keeps the token in the
    /// worker's copy by its keyed hash, as the filter does with the token it called for.
    static INTROSPECTED: std::cell::RefCell<std::collections::HashMap<TokenHash, String>> =
        std::cell::RefCell::default();
}

fn introspect(cfg: &Config, host: &FakeHost, header: &str) -> TokenHash {
    match on_request(cfg, host, Some(header)) {
        Step::Introspect { hash, token } => {
            assert_eq!(format!("Bearer {token}"), header);
            INTROSPECTED.with(|m| m.borrow_mut().insert(hash, token));
            hash
        }
        other => panic!("expected a cache miss for {header}, got {other:?}"),
    }
}

fn forward(jwt: &str) -> Step {
    Step::Done(forward_of(format!("Bearer {jwt}")))
}

#[test]
fn missing_and_malformed_credentials_never_reach_the_cache() {
    let (cfg, host) = (config(""), FakeHost::at(T0));
    assert_eq!(
        on_request(&cfg, &host, None),
        Step::Done(Verdict::Reject(Denial::NoCredentials))
    );
    assert_eq!(
        on_request(&cfg, &host, Some("Bearer a b")),
        Step::Done(Verdict::Reject(Denial::MalformedCredentials))
    );
    assert_eq!(host.count_of(Counter::CacheMiss), 0);
    assert_eq!(host.key_count(), 0);
}

#[test]
fn active_answer_is_cached_and_served_until_exp_minus_skew() {
    let (cfg, host) = (config(""), FakeHost::at(T0));
    let jwt = make(r#"{"scope":"read"}"#);
    let exp = T0 / 1000 + 60;
    let hash = introspect(&cfg, &host, "Bearer opaque");
    let v = on_introspection(&cfg, &host, &hash, active(&jwt, Some(exp), "read"));
    assert_eq!(v, forward_of(format!("Bearer {jwt}")));
    assert_eq!(
        on_request(&cfg, &host, Some("Bearer opaque")),
        forward(&jwt)
    );
    assert_eq!(host.count_of(Counter::CacheHit), 1);
    host.now
        .set(exp * 1000 - crate::token::jwt::EXP_SKEW_MS - 1);
    assert_eq!(
        on_request(&cfg, &host, Some("Bearer opaque")),
        forward(&jwt)
    );
    host.now.set(exp * 1000 - crate::token::jwt::EXP_SKEW_MS);
    introspect(&cfg, &host, "Bearer opaque");
    let stored: Vec<u8> = host.values().remove(0);
    assert!(
        !stored.windows(6).any(|w| w == b"opaque"),
        "the opaque token is never stored"
    );
}

#[test]
fn scopes_are_checked_on_cache_hits() {
    let (cfg, host) = (config(""), FakeHost::at(T0));
    let hash = introspect(&cfg, &host, "Bearer t");
    let v = on_introspection(&cfg, &host, &hash, active("a.b.c", None, "write"));
    assert_eq!(v, Verdict::Reject(Denial::InsufficientScope));
    assert_eq!(
        on_request(&cfg, &host, Some("Bearer t")),
        Step::Done(Verdict::Reject(Denial::InsufficientScope))
    );
    assert_eq!(host.count_of(Counter::CacheHit), 1);
}

#[test]
fn inactive_answers_are_cached_for_negative_ttl() {
    let (cfg, host) = (
        config(r#", "cache": {"negative_ttl_s": 5}"#),
        FakeHost::at(T0),
    );
    let hash = introspect(&cfg, &host, "Bearer t");
    assert_eq!(
        on_introspection(&cfg, &host, &hash, Outcome::Inactive),
        Verdict::Reject(Denial::InvalidToken)
    );
    assert_eq!(
        on_request(&cfg, &host, Some("Bearer t")),
        Step::Done(Verdict::Reject(Denial::InvalidToken))
    );
    host.now.set(T0 + 5_000);
    introspect(&cfg, &host, "Bearer t");
}

#[test]
fn negative_ttl_zero_and_failures_and_no_store_are_not_cached() {
    let cfg = config(r#", "cache": {"negative_ttl_s": 0}"#);
    let host = FakeHost::at(T0);
    let hash = introspect(&cfg, &host, "Bearer t");
    on_introspection(&cfg, &host, &hash, Outcome::Inactive);
    let v = on_introspection(&cfg, &host, &hash, Outcome::Failed(Failure::Timeout));
    assert_eq!(v, Verdict::Reject(Denial::TokenService(Failure::Timeout)));
    let no_store = Outcome::Active {
        jwt: "a.b.c".into(),
        claims: Claims {
            exp: None,
            scope: "read".into(),
        },
        max_age_s: None,
        no_store: true,
    };
    assert!(matches!(
        on_introspection(&cfg, &host, &hash, no_store),
        Verdict::Forward(_)
    ));
    assert_eq!(host.key_count(), 0);
}

#[test]
fn an_already_expired_jwt_is_an_invalid_token() {
    let (cfg, host) = (config(""), FakeHost::at(T0));
    let hash = introspect(&cfg, &host, "Bearer t");
    let v = on_introspection(
        &cfg,
        &host,
        &hash,
        active("a.b.c", Some(T0 / 1000 - 1), "read"),
    );
    assert_eq!(v, Verdict::Reject(Denial::InvalidToken));
}

#[test]
fn a_slot_holds_one_token_and_collisions_are_misses() {
    let (cfg, host) = (config(r#", "cache": {"max_entries": 1}"#), FakeHost::at(T0));
    let a = introspect(&cfg, &host, "Bearer a");
    on_introspection(&cfg, &host, &a, active("a.a.a", None, "read"));
    let b = introspect(&cfg, &host, "Bearer b");
    on_introspection(&cfg, &host, &b, active("b.b.b", None, "read"));
    assert_eq!(host.key_count(), 1, "one slot, one key");
    assert_eq!(on_request(&cfg, &host, Some("Bearer b")), forward("b.b.b"));
    // This worker still has a's JWT in its local copy (valid until its expiry); another
    // worker (no local copy) finds the slot taken by b: a miss.
    assert_eq!(on_request(&cfg, &host, Some("Bearer a")), forward("a.a.a"));
    host.worker.local.clear();
    introspect(&cfg, &host, "Bearer a");
}

#[test]
fn cache_hits_are_served_from_the_local_copy_after_the_first() {
    let (cfg, host) = (config(""), FakeHost::at(T0));
    let exp = T0 / 1000 + 60;
    let hash = introspect(&cfg, &host, "Bearer t");
    on_introspection(&cfg, &host, &hash, active("x.y.z", Some(exp), "read"));
    assert_eq!(host.worker.local.len(), 1, "filled by the answer");
    // The shared entry is gone (another token took the slot): the local copy still serves.
    for key in host.data_keys() {
        host.remove(&key);
    }
    assert_eq!(on_request(&cfg, &host, Some("Bearer t")), forward("x.y.z"));
    // Never past the shared entry's expiry.
    host.now.set(exp * 1000 - crate::token::jwt::EXP_SKEW_MS);
    introspect(&cfg, &host, "Bearer t");
    // A forbidden scope is not kept locally.
    host.worker.local.clear();
    let h2 = introspect(&cfg, &host, "Bearer w");
    on_introspection(&cfg, &host, &h2, active("w.w.w", Some(exp + 60), "write"));
    assert!(host.worker.local.is_empty());
}

#[test]
fn cors_preflight_detection() {
    let p = |m, o, r, body, ovr| preflight(m, o, r, body, ovr);
    assert_eq!(
        p("OPTIONS", Some("https://a"), Some("POST"), false, false),
        Preflight::Pass
    );
    assert_eq!(
        p("OPTIONS", Some("https://a"), None, false, false),
        Preflight::No
    );
    assert_eq!(
        p("OPTIONS", None, Some("POST"), false, false),
        Preflight::No
    );
    assert_eq!(
        p("OPTIONS", Some(""), Some("POST"), false, false),
        Preflight::No
    );
    assert_eq!(
        p("GET", Some("https://a"), Some("POST"), false, false),
        Preflight::No
    );
    // A body or a method override makes it something no browser sends.
    assert_eq!(
        p("OPTIONS", Some("https://a"), Some("POST"), true, false),
        Preflight::Refuse
    );
    assert_eq!(
        p("OPTIONS", Some("https://a"), Some("POST"), false, true),
        Preflight::Refuse
    );
    assert_eq!(
        p("GET", Some("https://a"), Some("POST"), true, true),
        Preflight::No
    );
    // A method override under its `_` spelling is a method override.
    let (cfg, host) = (config(""), FakeHost::at(T0));
    let headers = HeaderMap::from_pairs(&[
        (":method", "OPTIONS"),
        (":path", "/api"),
        ("origin", "https://app.example.com"),
        ("access-control-request-method", "DELETE"),
        ("x_http_method_override", "DELETE"),
    ]);
    let request = Request {
        headers: &headers,
        end_of_stream: true,
        route_name: None,
        route_policy: None,
        client_cert_sha256: None,
        secure: false,
    };
    assert_eq!(
        super::on_request(&cx(&cfg, &host), &request).step,
        Step::Done(Verdict::Reject(Denial::InvalidPreflight))
    );
}

/// Every header the filter owns is removed from every request it lets through, under its own
/// name or with `_` for `-`; a token request keeps the client's `Authorization` and `DPoP`.
#[test]
fn owned_headers_are_removed_whatever_way_the_request_goes() {
    let cfg = config(
        r#", "dpop": {}, "policies": [{"name": "p", "match": {"path_prefix": "/p/"}}],
        "claims_to_headers": [{"claim": "sub", "header": "x-user-id"}]"#,
    );
    let headers = HeaderMap::from_pairs(&[
        (":path", "/x"),
        ("authorization", "Bearer t"),
        ("authorization", "Bearer u"),
        ("dpop", "proof"),
        ("x-user-id", "mallory"),
        ("x_user_id", "mallory"),
        ("x_user-id", "mallory"),
        ("x-http-method-override", "GET"),
        ("x_http_method_override", "GET"),
        ("x-request-id", "keep"),
        ("x_request_id", "keep"),
        ("x-user-idx", "keep"),
    ]);
    let owned = |passage| owned_present(&cfg, passage, &headers);
    // To the API: `authorization` and `x-user-id` are the forward's to write.
    assert_eq!(
        owned(Passage::Api),
        [
            "dpop",
            "x_user_id",
            "x_user-id",
            "x-http-method-override",
            "x_http_method_override"
        ]
    );
    let everything = [
        "authorization",
        "dpop",
        "x-user-id",
        "x_user_id",
        "x_user-id",
        "x-http-method-override",
        "x_http_method_override",
    ];
    assert_eq!(owned(Passage::Preflight), everything);
    assert_eq!(owned(Passage::ApiTrailers), everything);
    assert_eq!(
        owned(Passage::TokenRequest),
        [
            "x-user-id",
            "x_user_id",
            "x_user-id",
            "x-http-method-override",
            "x_http_method_override"
        ]
    );
    // Without policies the method overrides are not the filter's; `forward_proof` keeps DPoP.
    let plain = config(r#", "dpop": {"forward_proof": true}"#);
    assert!(owned_present(&plain, Passage::Api, &headers).is_empty());
    assert_eq!(
        owned_present(&plain, Passage::Preflight, &headers),
        ["authorization"]
    );
}

// ---- split token ------------------------------------------------------------------------

const SECRET: &str = "publisher-secret";

fn split_config(split: &str, with_phantom: bool) -> Config {
    let phantom = if with_phantom {
        r#""phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s"},"#
    } else {
        ""
    };
    let json = format!(
        r#"{{"required_scopes": ["read"], {phantom} "split": {{"max_entries": 64,
        "publish": {{"path": "/_split-token", "secret": "{SECRET}"}},
        "split_responses": {{"paths": ["/oauth/token"]}} {split}}}}}"#
    );
    Config::from_slice(json.as_bytes()).unwrap()
}

/// The key a publisher writes for `signature`, in the configured encoding.
fn store_key(cfg: &Config, signature: &str) -> String {
    let split = cfg.split.as_ref().unwrap();
    split
        .hash_encoding
        .encode(&split::signature_hash(signature))
}

/// Publishes `jwt` through the publish API; returns its signature.
fn publish_jwt(cfg: &Config, host: &FakeHost, jwt: &str, expires_at: u64) -> String {
    let (hp, sig) = jwt.rsplit_once('.').unwrap();
    let key = store_key(cfg, sig);
    let body = serde_json::json!({
        "signature_hash": key, "header_payload": hp, "expires_at": expires_at,
    });
    assert_eq!(
        publish_gate(cfg, "POST", Some(&format!("Bearer {SECRET}"))),
        Ok(())
    );
    assert_eq!(
        publish(cfg, host, "POST", body.to_string().as_bytes()),
        (SplitReply::Accepted, None)
    );
    sig.to_owned()
}

fn revoke(cfg: &Config, host: &FakeHost, sig: &str) -> SplitReply {
    let body = serde_json::json!({ "signature_hash": store_key(cfg, sig) }).to_string();
    publish(cfg, host, "DELETE", body.as_bytes()).0
}

fn signed(payload: &str, sig: &str) -> String {
    let jwt = make(payload);
    format!("{}.{sig}", jwt.rsplit_once('.').unwrap().0)
}

#[test]
fn published_split_token_is_reassembled() {
    let (cfg, host) = (split_config("", false), FakeHost::at(T0));
    let jwt = signed(r#"{"sub":"a","scope":"read"}"#, "U2lnbmF0dXJlT25l");
    let sig = publish_jwt(&cfg, &host, &jwt, T0 / 1000 + 60);
    assert_eq!(
        on_request(&cfg, &host, Some(&format!("Bearer {sig}"))),
        forward(&jwt)
    );
    assert_eq!(host.count_of(Counter::SplitHit), 1);
    assert_eq!(host.count_of(Counter::PublishAccepted), 1);
}

#[test]
fn split_refusals() {
    let (cfg, host) = (split_config("", false), FakeHost::at(T0));
    let good = signed(r#"{"scope":"read"}"#, "QUJDREVGR0hJSktM");
    let sig = publish_jwt(&cfg, &host, &good, T0 / 1000 + 60);
    let noscope = signed(r#"{"scope":"write"}"#, "Tm9TY29wZVNpZw");
    let noscope_sig = publish_jwt(&cfg, &host, &noscope, T0 / 1000 + 60);
    // One character changed.
    let tampered = format!("{}N", &sig[..sig.len() - 1]);
    assert_ne!(tampered, sig);
    let reject = |d| Step::Done(Verdict::Reject(d));
    let cases: Vec<(&str, String, Step)> = vec![
        ("tampered", tampered, reject(Denial::InvalidToken)),
        ("unknown", "VW5rbm93bg".into(), reject(Denial::InvalidToken)),
        (
            "not base64url",
            "abc+/=".into(),
            reject(Denial::InvalidToken),
        ),
        ("whole jwt", good.clone(), reject(Denial::InvalidToken)),
        ("scope", noscope_sig, reject(Denial::InsufficientScope)),
    ];
    for (name, token, want) in cases {
        assert_eq!(
            on_request(&cfg, &host, Some(&format!("Bearer {token}"))),
            want,
            "{name}"
        );
    }
    assert_eq!(host.count_of(Counter::SplitMiss), 4);
    // Expired, then revoked.
    host.now.set((T0 / 1000 + 60) * 1000);
    assert_eq!(
        on_request(&cfg, &host, Some(&format!("Bearer {sig}"))),
        reject(Denial::InvalidToken)
    );
    assert_eq!(host.count_of(Counter::SplitExpired), 1);
    host.now.set(T0);
    assert_eq!(revoke(&cfg, &host, &sig), SplitReply::Accepted);
    assert_eq!(
        on_request(&cfg, &host, Some(&format!("Bearer {sig}"))),
        reject(Denial::InvalidToken)
    );
    assert_eq!(host.count_of(Counter::SplitRevoked), 1);
    assert_eq!(host.count_of(Counter::Revocations), 1);
}

#[test]
fn split_hits_are_served_from_the_worker_copy_while_the_epoch_holds() {
    let (cfg, host) = (split_config("", false), FakeHost::at(T0));
    let jwt = signed(r#"{"scope":"read"}"#, "V29ya2VyQ29weQ");
    let sig = publish_jwt(&cfg, &host, &jwt, T0 / 1000 + 60);
    let bearer = format!("Bearer {sig}");
    assert_eq!(on_request(&cfg, &host, Some(&bearer)), forward(&jwt));
    assert_eq!(host.worker.split_local.len(), 1, "kept by this worker");
    // The copy serves without the store: the slot is gone (another entry took it)...
    let saved: Vec<(String, Vec<u8>)> = host
        .data_keys()
        .into_iter()
        .filter_map(|k| host.shared_get(&k).map(|v| (k, v)))
        .collect();
    for (key, _) in &saved {
        host.remove(key);
    }
    assert_eq!(on_request(&cfg, &host, Some(&bearer)), forward(&jwt));
    // ... until a revocation moves the epoch: even one the store no longer holds empties
    // every worker's copy.
    assert_eq!(revoke(&cfg, &host, &sig), SplitReply::Accepted);
    assert_eq!(host.split_epoch.get(), Some(1));
    assert_eq!(
        on_request(&cfg, &host, Some(&bearer)),
        Step::Done(Verdict::Reject(Denial::InvalidToken))
    );
    assert_eq!(host.worker.split_local.len(), 0);
    // A re-publication of a signature moves it too; a new signature does not.
    for (key, value) in &saved {
        host.shared_set(key, value);
    }
    assert_eq!(on_request(&cfg, &host, Some(&bearer)), forward(&jwt));
    assert_eq!(host.worker.split_local.len(), 1);
    let other = signed(r#"{"scope":"read"}"#, "QW5vdGhlclNpZw");
    publish_jwt(&cfg, &host, &other, T0 / 1000 + 60);
    assert_eq!(host.split_epoch.get(), Some(1), "a new entry");
    publish_jwt(&cfg, &host, &jwt, T0 / 1000 + 60);
    assert_eq!(host.split_epoch.get(), Some(2), "a re-publication");
    // Never past the entry's expiry.
    assert_eq!(on_request(&cfg, &host, Some(&bearer)), forward(&jwt));
    host.now.set((T0 / 1000 + 60) * 1000);
    assert_ne!(on_request(&cfg, &host, Some(&bearer)), forward(&jwt));
}

#[test]
fn without_a_readable_epoch_every_split_hit_reads_its_slot() {
    let (cfg, host) = (split_config("", false), FakeHost::at(T0));
    host.split_epoch.set(None);
    let jwt = signed(r#"{"scope":"read"}"#, "Tm9FcG9jaA");
    let sig = publish_jwt(&cfg, &host, &jwt, T0 / 1000 + 60);
    let bearer = format!("Bearer {sig}");
    assert_eq!(on_request(&cfg, &host, Some(&bearer)), forward(&jwt));
    assert_eq!(host.worker.split_local.len(), 0, "nothing kept");
    for key in host.data_keys() {
        host.remove(&key);
    }
    assert_eq!(
        on_request(&cfg, &host, Some(&bearer)),
        Step::Done(Verdict::Reject(Denial::InvalidToken))
    );
}

#[test]
fn miss_falls_back_to_phantom_only_when_configured() {
    let host = FakeHost::at(T0);
    let with = split_config(r#", "fallback_to_phantom": true"#, true);
    let without = split_config("", true);
    introspect(&with, &host, "Bearer opaque-token");
    assert_eq!(
        on_request(&without, &host, Some("Bearer opaque-token")),
        Step::Done(Verdict::Reject(Denial::InvalidToken))
    );
    // A revocation is final, even with the fallback.
    let jwt = signed(r#"{"scope":"read"}"#, "UmV2b2tlZA");
    let sig = publish_jwt(&with, &host, &jwt, T0 / 1000 + 60);
    revoke(&with, &host, &sig);
    assert_eq!(
        on_request(&with, &host, Some(&format!("Bearer {sig}"))),
        Step::Done(Verdict::Reject(Denial::InvalidToken))
    );
}

#[test]
fn publish_gate_checks_method_and_secret() {
    let cfg = split_config("", false);
    let ok = format!("Bearer {SECRET}");
    assert_eq!(publish_gate(&cfg, "POST", Some(&ok)), Ok(()));
    assert_eq!(publish_gate(&cfg, "DELETE", Some(&ok)), Ok(()));
    let cases: Vec<(&str, Option<String>, SplitReply)> = vec![
        ("GET", Some(ok.clone()), SplitReply::MethodNotAllowed),
        ("PUT", Some(ok.clone()), SplitReply::MethodNotAllowed),
        ("POST", None, SplitReply::Unauthorized),
        (
            "POST",
            Some("Bearer publisher-secreT".into()),
            SplitReply::Unauthorized,
        ),
        (
            "POST",
            Some("Bearer publisher-secret2".into()),
            SplitReply::Unauthorized,
        ),
        (
            "POST",
            Some(format!("Basic {SECRET}")),
            SplitReply::Unauthorized,
        ),
        ("POST", Some(SECRET.into()), SplitReply::Unauthorized),
    ];
    for (method, auth, want) in cases {
        assert_eq!(
            publish_gate(&cfg, method, auth.as_deref()),
            Err(want),
            "{method} {auth:?}"
        );
    }
}

#[test]
fn refused_publish_leaves_the_store_unchanged() {
    let (cfg, host) = (split_config("", false), FakeHost::at(T0));
    let before = host.writes();
    let (reply, _) = publish(&cfg, &host, "POST", b"{\"signature_hash\": 1}");
    assert!(matches!(reply, SplitReply::Invalid(_)), "{reply:?}");
    assert_eq!(host.writes(), before);
    assert_eq!(host.count_of(Counter::PublishRefused), 1);
}

#[test]
fn routes_by_path_without_query() {
    let cfg = split_config("", false);
    assert!(has_routes(&cfg));
    assert!(!has_routes(&config("")));
    for (path, want) in [
        ("/_split-token", Route::Publish),
        ("/_split-token?x=1", Route::Publish),
        ("/oauth/token", Route::TokenEndpoint),
        ("/oauth/token#f", Route::TokenEndpoint),
        ("/oauth/tokens", Route::Protected),
        ("/api", Route::Protected),
        ("/api/", Route::Protected),
        ("/API/x/../y", Route::Protected),
        // Near misses of the filter's own paths: refused, never forwarded.
        ("/_split-token/", Route::NearMiss),
        ("/_Split-Token", Route::NearMiss),
        ("//_split-token", Route::NearMiss),
        ("/%5Fsplit-token", Route::NearMiss),
        ("/_split-token;x", Route::NearMiss),
        ("/./_split-token", Route::NearMiss),
        ("/x/../_split-token?q", Route::NearMiss),
        ("/x\\..\\_split-token", Route::NearMiss),
        ("/OAuth/Token", Route::NearMiss),
        ("/oauth/token/", Route::NearMiss),
        ("/_split-token%00", Route::NearMiss),
        ("/_split-token%00.json", Route::NearMiss),
        ("/_split-token%20", Route::NearMiss),
        ("/_split-token%09", Route::NearMiss),
        ("/_split-token.", Route::NearMiss),
        ("/_split-token. ./", Route::NearMiss),
        // Not near: other paths that start or end alike.
        ("/_split-token.json", Route::Protected),
        ("/_split-tokens", Route::Protected),
        ("/api/_split-token", Route::Protected),
        ("/_split-token/x", Route::Protected),
        ("/oauth/token-info", Route::Protected),
    ] {
        assert_eq!(route(&cfg, path), want, "{path}");
    }
    assert_eq!(route(&config(""), "/_split-token"), Route::Protected);
}

#[test]
fn issued_token_is_split_and_then_works() {
    let (cfg, host) = (split_config("", false), FakeHost::at(T0));
    let jwt = signed(
        &format!(r#"{{"scope":"read","exp":{}}}"#, T0 / 1000 + 60),
        "SXNzdWVk",
    );
    let body = format!(r#"{{"access_token":"{jwt}","token_type":"Bearer","expires_in":60}}"#);
    let TokenResponse::Replace {
        body: out,
        remote: None,
    } = on_token_response(&cfg, &host, Some("200"), None, body.as_bytes())
    else {
        panic!("not split")
    };
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"access_token":"SXNzdWVk","token_type":"Bearer","expires_in":60}"#
    );
    assert_eq!(
        on_request(&cfg, &host, Some("Bearer SXNzdWVk")),
        forward(&jwt)
    );
    assert_eq!(host.count_of(Counter::ResponsesSplit), 1);
    assert_eq!(
        on_token_response(&cfg, &host, Some("401"), None, body.as_bytes()),
        TokenResponse::Unchanged
    );
    let no_lifetime = format!(r#"{{"access_token":"{}"}}"#, signed("{}", "Tm9MaWZl"));
    assert_eq!(
        on_token_response(&cfg, &host, Some("200"), None, no_lifetime.as_bytes()),
        TokenResponse::Refuse(SplitReply::SplitFailed)
    );
}

mod verification {
    use super::*;
    use crate::token::jws::tests::{claims, jwks, keys, Keys};
    use jwt_simple::prelude::*;

    /// Phantom and split with `verify` on inline keys (the host holds them, as the
    /// root context would after configuration).
    fn setup(k: &Keys, jwks_json: Option<&str>) -> (Config, FakeHost) {
        let doc = jwks_json.map_or_else(|| jwks(k), str::to_owned);
        let json = format!(
            r#"{{"required_scopes": ["read"],
            "phantom": {{"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s"}},
            "split": {{"max_entries": 64, "fallback_to_phantom": true,
              "publish": {{"path": "/_split-token", "secret": "{SECRET}"}}}},
            "verify": {{"issuer": "https://login.example.com", "audiences": ["api.example.com"],
              "algorithms": ["RS256", "ES256", "EdDSA"], "jwks_inline": {doc}}}}}"#
        );
        let cfg = Config::from_slice(json.as_bytes()).unwrap();
        let host = FakeHost::at(T0);
        if let Some(crate::config::KeySource::Inline(keys)) = cfg.verify.as_ref().map(|v| &v.keys) {
            host.worker.keys.set_keys(keys.clone());
        }
        (cfg, host)
    }

    fn with_scope() -> JWTClaims<serde_json::Value> {
        let c = claims();
        let mut out = jwt_simple::claims::Claims::with_custom_claims(
            serde_json::json!({"scope": "read"}),
            Duration::from_secs(300),
        );
        out.issuer = c.issuer;
        out.audiences = c.audiences;
        out.issued_at = c.issued_at;
        out.invalid_before = c.invalid_before;
        out.expires_at = c.expires_at;
        out
    }

    fn introspected(cfg: &Config, host: &FakeHost, opaque: &str, jwt: &str) -> Verdict {
        let hash = introspect(cfg, host, &format!("Bearer {opaque}"));
        let claims = crate::token::jwt::parse(jwt).unwrap();
        on_introspection(cfg, host, &hash, active(jwt, claims.exp, &claims.scope))
    }

    #[test]
    fn a_verified_jwt_is_cached_and_hits_do_not_verify_again() {
        let k = keys();
        let (cfg, host) = setup(&k, None);
        let jwt = k.rsa.sign(with_scope()).unwrap();
        let want = forward_of(format!("Bearer {jwt}"));
        assert_eq!(introspected(&cfg, &host, "opaque", &jwt), want);
        for _ in 0..3 {
            assert_eq!(
                on_request(&cfg, &host, Some("Bearer opaque")),
                forward(&jwt)
            );
        }
        assert_eq!(host.count_of(Counter::Verified), 1);
        assert_eq!(host.count_of(Counter::CacheHit), 3);
    }

    #[test]
    fn a_jwt_that_fails_is_neither_forwarded_nor_cached() {
        let k = keys();
        let (cfg, host) = setup(&k, None);
        let forged = ES256KeyPair::generate()
            .with_key_id("ec-1")
            .sign(with_scope())
            .unwrap();
        assert_eq!(
            introspected(&cfg, &host, "opaque", &forged),
            Verdict::Reject(Denial::InvalidToken)
        );
        assert_eq!(host.count_of(Counter::VerifyBadSignature), 1);
        introspect(&cfg, &host, "Bearer opaque");
        let unknown = ES256KeyPair::generate()
            .with_key_id("rotated")
            .sign(with_scope())
            .unwrap();
        assert_eq!(
            introspected(&cfg, &host, "other", &unknown),
            Verdict::Reject(Denial::InvalidToken)
        );
        assert_eq!(host.count_of(Counter::VerifyUnknownKey), 1);
        assert!(
            host.worker.keys.take_refetch_request(),
            "unknown kid asks for a fetch"
        );
    }

    #[test]
    fn without_keys_requests_fail_closed_with_502() {
        let k = keys();
        let (cfg, _) = setup(&k, None);
        let host = FakeHost::at(T0);
        let jwt = k.ed.sign(with_scope()).unwrap();
        assert_eq!(
            introspected(&cfg, &host, "opaque", &jwt),
            Verdict::Reject(Denial::KeysUnavailable)
        );
        introspect(&cfg, &host, "Bearer opaque");
    }

    #[test]
    fn split_entries_are_verified_once_and_poisoned_entries_refused() {
        let k = keys();
        let (cfg, host) = setup(&k, None);
        let jwt = k.ec.sign(with_scope()).unwrap();
        let exp = T0 / 1000 + 300;
        let sig = publish_jwt(&cfg, &host, &jwt, exp);
        for _ in 0..3 {
            assert_eq!(
                on_request(&cfg, &host, Some(&format!("Bearer {sig}"))),
                forward(&jwt)
            );
        }
        assert_eq!(host.count_of(Counter::Verified), 1);
        // Poisoned: a payload with more privileges under the same signature hash.
        let richer_jwt = {
            let mut c = with_scope();
            c.custom = serde_json::json!({"scope": "read admin"});
            k.ec.sign(c).unwrap()
        };
        let poisoned = format!("{}.{sig}", richer_jwt.rsplit_once('.').unwrap().0);
        publish_jwt(&cfg, &host, &poisoned, exp);
        assert_eq!(
            on_request(&cfg, &host, Some(&format!("Bearer {sig}"))),
            Step::Done(Verdict::Reject(Denial::InvalidToken)),
            "no fallback to phantom for an entry that fails verification"
        );
        assert_eq!(host.count_of(Counter::VerifyBadSignature), 1);
        // Re-published correctly: verified again, and served.
        publish_jwt(&cfg, &host, &jwt, exp);
        assert_eq!(
            on_request(&cfg, &host, Some(&format!("Bearer {sig}"))),
            forward(&jwt)
        );
        assert_eq!(host.count_of(Counter::Verified), 2);
    }
}

/// `split.remote`: the second-level store.
mod remote_store {
    use super::*;
    use crate::storage::remote::Got;

    const REMOTE: &str = r#", "remote": {"cluster": "webdis", "get_path": "/GET/s:{key}.txt",
        "put_path": "/SETEX/s:{key}/{ttl}", "delete_path": "/DEL/s:{key}",
        "delete_method": "GET", "local_ttl_s": 10}"#;

    fn remote_step(cfg: &Config, host: &FakeHost, sig: &str) -> (TokenHash, String) {
        match on_request(cfg, host, Some(&format!("Bearer {sig}"))) {
            Step::Remote { hash, token, key } => {
                assert_eq!(token, sig);
                assert_eq!(key, store_key(cfg, sig));
                (hash, token)
            }
            other => panic!("expected a remote lookup, got {other:?}"),
        }
    }

    #[test]
    fn a_local_miss_asks_the_remote_store_and_keeps_a_bounded_copy() {
        let (cfg, host) = (split_config(REMOTE, false), FakeHost::at(T0));
        let hp = signed(
            &format!(r#"{{"scope":"read","exp":{}}}"#, T0 / 1000 + 600),
            "",
        );
        let hp = hp.trim_end_matches('.');
        let (hash, token) = remote_step(&cfg, &host, "UmVtb3Rl");
        let step = on_remote_get(&cfg, &host, &hash, &token, Got::Found(hp.into()), 3);
        assert_eq!(step, forward(&format!("{hp}.UmVtb3Rl")));
        assert_eq!(host.count_of(Counter::RemoteHit), 1);
        assert_eq!(host.count_of(Counter::RemoteLatencyMs), 3);
        // Served locally for local_ttl_s (10 s), then asked again.
        host.now.set(T0 + 9_000);
        assert_eq!(
            on_request(&cfg, &host, Some("Bearer UmVtb3Rl")),
            forward(&format!("{hp}.UmVtb3Rl"))
        );
        host.now.set(T0 + 10_001);
        remote_step(&cfg, &host, "UmVtb3Rl");
    }

    #[test]
    fn misses_failures_and_garbage() {
        let (cfg, host) = (split_config(REMOTE, false), FakeHost::at(T0));
        let (hash, token) = remote_step(&cfg, &host, "TWlzcw");
        let reject = |d| Step::Done(Verdict::Reject(d));
        assert_eq!(
            on_remote_get(&cfg, &host, &hash, &token, Got::Missing, 1),
            reject(Denial::InvalidToken)
        );
        assert_eq!(
            on_remote_get(&cfg, &host, &hash, &token, Got::Failed, 1),
            reject(Denial::StoreUnavailable)
        );
        // Not a header.payload, or an expired one: never forwarded.
        assert_eq!(
            on_remote_get(&cfg, &host, &hash, &token, Got::Found("x".into()), 1),
            reject(Denial::StoreUnavailable)
        );
        let old = signed(
            &format!(r#"{{"scope":"read","exp":{}}}"#, T0 / 1000 - 5),
            "",
        );
        let old = Got::Found(old.trim_end_matches('.').into());
        assert_eq!(
            on_remote_get(&cfg, &host, &hash, &token, old, 1),
            reject(Denial::InvalidToken)
        );
        // With the phantom fallback, misses and failures are introspected instead.
        let (cfg, host) = (
            split_config(&format!(r#", "fallback_to_phantom": true{REMOTE}"#), true),
            FakeHost::at(T0),
        );
        let (hash, token) = remote_step(&cfg, &host, "RmFsbA");
        for got in [Got::Missing, Got::Failed] {
            assert!(matches!(
                on_remote_get(&cfg, &host, &hash, &token, got, 1),
                Step::Introspect { .. }
            ));
        }
        // Once introspected, that token is served from the phantom cache: the remote store's
        // miss does not mean another introspection.
        let jwt = signed(
            &format!(r#"{{"scope":"read","exp":{}}}"#, T0 / 1000 + 600),
            "",
        );
        let answered = on_introspection(
            &cfg,
            &host,
            &hash,
            active(&jwt, Some(T0 / 1000 + 600), "read"),
        );
        assert!(matches!(answered, Verdict::Forward(_)));
        for got in [Got::Missing, Got::Failed] {
            assert!(
                matches!(
                    on_remote_get(&cfg, &host, &hash, &token, got, 1),
                    Step::Done(Verdict::Forward(_))
                ),
                "a phantom cache hit after the remote store"
            );
        }
        // Not a signature at all: no remote read, straight to the fallback.
        assert!(matches!(
            on_request(&cfg, &host, Some("Bearer not~a~signature")),
            Step::Introspect { .. }
        ));
    }

    #[test]
    fn publish_revoke_and_issuance_write_through() {
        let (cfg, host) = (split_config(REMOTE, false), FakeHost::at(T0));
        let jwt = signed(
            &format!(r#"{{"scope":"read","exp":{}}}"#, T0 / 1000 + 600),
            "U2ln",
        );
        let hp = jwt.rsplit_once('.').unwrap().0.to_owned();
        let key = store_key(&cfg, "U2ln");
        let body = serde_json::json!({"signature_hash": key, "header_payload": hp,
                                      "expires_at": T0 / 1000 + 3600});
        let (reply, call) = publish(&cfg, &host, "POST", body.to_string().as_bytes());
        assert_eq!(reply, SplitReply::Accepted);
        let call = call.unwrap();
        let enc = crate::storage::remote::encode_segment(&key);
        // The remote TTL is the token's own (exp minus the skew), not local_ttl_s.
        assert_eq!(call.method, "PUT");
        assert!(
            call.path.starts_with(&format!("/SETEX/s:{enc}/")),
            "{}",
            call.path
        );
        let ttl: u64 = call.path.rsplit('/').next().unwrap().parse().unwrap();
        assert!((595..=600).contains(&ttl), "{ttl}");
        assert_eq!(call.body.as_deref(), Some(hp.as_bytes()));
        // Not counted until the remote write is done.
        assert_eq!(host.count_of(Counter::PublishAccepted), 0);
        assert_eq!(
            after_remote_write(&host, reply.clone(), false),
            SplitReply::StoreUnavailable
        );
        assert_eq!(host.count_of(Counter::RemoteWriteFailed), 1);
        assert_eq!(after_remote_write(&host, reply, true), SplitReply::Accepted);
        let (reply, call) = publish(
            &cfg,
            &host,
            "DELETE",
            serde_json::json!({"signature_hash": key})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(reply, SplitReply::Accepted);
        let call = call.unwrap();
        assert_eq!(
            (call.method.as_str(), call.path),
            ("GET", format!("/DEL/s:{enc}"))
        );
        let body = format!(r#"{{"access_token":"{jwt}","expires_in":600}}"#);
        let TokenResponse::Replace {
            remote: Some(put), ..
        } = on_token_response(&cfg, &host, Some("200"), None, body.as_bytes())
        else {
            panic!("not split with a remote write")
        };
        assert!(put.path.starts_with(&format!("/SETEX/s:{enc}/")));
    }
}

/// `phantom.response` "json" and "rfc9701": JWTs from introspected claims.
mod contracts {
    use super::*;
    use crate::token::introspection::{classify, Response};
    use crate::token::jws::tests::{jwks, keys, signed_introspection, Keys};
    use crate::token::jws::{Alg, KeySet, Policy};
    use crate::token::mint::tests::EC_PEM;

    const GATEWAY: &str = "https://gateway.example.com";

    fn setup(k: &Keys, response: &str, extra_phantom: &str) -> (Config, FakeHost) {
        let pem = EC_PEM.replace('\n', "\\n");
        let verify = if response == "rfc9701" {
            format!(
                r#", "verify": {{"issuer": "https://login.example.com",
                "audiences": ["api.example.com"], "algorithms": ["ES256"],
                "jwks_inline": {}}}"#,
                jwks(k)
            )
        } else {
            String::new()
        };
        let json = format!(
            r#"{{"required_scopes": ["read"],
            "phantom": {{"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s",
              "response": "{response}" {extra_phantom},
              "mint": {{"issuer": "{GATEWAY}", "audience": "internal-apis",
                "algorithm": "ES256", "private_key_pem": "{pem}", "key_id": "gw-1",
                "claims": ["sub", "scope", "client_id"], "max_lifetime_s": 120,
                "jwks_path": "/.well-known/gateway-jwks.json"}}}}{verify}}}"#
        );
        let cfg = Config::from_slice(json.as_bytes()).unwrap();
        let host = FakeHost::at(T0);
        if let Some(crate::config::KeySource::Inline(keys)) = cfg.verify.as_ref().map(|v| &v.keys) {
            host.worker.keys.set_keys(keys.clone());
        }
        (cfg, host)
    }

    fn answer(cfg: &Config, content_type: &str, body: &str) -> Outcome {
        classify(
            &Response {
                status: Some("200"),
                content_type: Some(content_type),
                body: Some(body.as_bytes()),
                ..Response::default()
            },
            &cfg.phantom.as_ref().unwrap().contract,
        )
    }

    /// The minted JWT in a forward verdict, checked against the gateway's served JWK Set.
    fn minted(cfg: &Config, v: &Verdict) -> serde_json::Value {
        let Verdict::Forward(token) = v else {
            panic!("expected a forward, got {v:?}");
        };
        let jwt = token.authorization.strip_prefix("Bearer ").unwrap();
        let (_, doc) = gateway_jwks(cfg).unwrap();
        let keys = KeySet::parse(doc.as_bytes(), &[Alg::Es256], false).unwrap();
        let policy = Policy {
            issuer: GATEWAY.into(),
            audiences: vec!["internal-apis".into()],
            algorithms: vec![Alg::Es256],
            clock_skew_s: 0,
        };
        keys.verify(&policy, jwt, T0 / 1_000).unwrap();
        let payload = jwt.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn json_claims_are_minted_once_and_cached() {
        let k = keys();
        let (cfg, host) = setup(&k, "json", "");
        let hash = introspect(&cfg, &host, "Bearer opaque-1");
        let body = r#"{"active":true,"sub":"alice","scope":"read write","client_id":"app",
            "exp":1700000600,"iat":1699999000,"iss":"https://as","token_type":"Bearer"}"#;
        let v = on_introspection(&cfg, &host, &hash, answer(&cfg, "application/json", body));
        let p = minted(&cfg, &v);
        assert_eq!(p["sub"], "alice");
        assert_eq!(p["client_id"], "app");
        assert_eq!(p["iss"], GATEWAY);
        assert_eq!(p["aud"], "internal-apis");
        // Capped at max_lifetime_s (the token lives 600 s).
        assert_eq!(p["exp"], T0 / 1_000 + 120);
        assert!(p.get("token_type").is_none());
        // Cache hits forward the same JWT and mint nothing.
        for _ in 0..3 {
            assert_eq!(
                on_request(&cfg, &host, Some("Bearer opaque-1")),
                Step::Done(v.clone())
            );
        }
        assert_eq!(host.count_of(Counter::Minted), 1);
    }

    #[test]
    fn json_scopes_inactive_and_expired_answers() {
        let k = keys();
        let (cfg, host) = setup(&k, "json", "");
        let mut n = 0;
        let mut run = |body: &str| {
            n += 1;
            let hash = introspect(&cfg, &host, &format!("Bearer t{n}"));
            on_introspection(&cfg, &host, &hash, answer(&cfg, "application/json", body))
        };
        // Scopes are the introspected ones.
        assert_eq!(
            run(r#"{"active":true,"scope":"write"}"#),
            Verdict::Reject(Denial::InsufficientScope)
        );
        assert_eq!(
            run(r#"{"active":false}"#),
            Verdict::Reject(Denial::InvalidToken)
        );
        assert_eq!(
            run(r#"{"active":true,"scope":"read","exp":1699999999}"#),
            Verdict::Reject(Denial::InvalidToken)
        );
        // Not a usable RFC 7662 answer: the token service is at fault.
        for bad in [
            r#"{"active":"true"}"#,
            r#"{"scope":"read"}"#,
            r#"{"active":true,"scope":7}"#,
            r#"{"active":true,"exp":"soon"}"#,
            "[]",
        ] {
            assert_eq!(
                run(bad),
                Verdict::Reject(Denial::TokenService(Failure::Malformed)),
                "{bad}"
            );
        }
        assert_eq!(host.count_of(Counter::Minted), 1);
    }

    #[test]
    fn json_with_a_jwt_claim_forwards_that_jwt() {
        let k = keys();
        let (cfg, host) = setup(&k, "json", r#", "jwt_claim": "access_token_jwt""#);
        let jwt = make(r#"{"exp":1700000300,"scope":"read"}"#);
        let hash = introspect(&cfg, &host, "Bearer with-claim");
        let body = format!(r#"{{"active":true,"scope":"read","access_token_jwt":"{jwt}"}}"#);
        assert_eq!(
            on_introspection(&cfg, &host, &hash, answer(&cfg, "application/json", &body)),
            forward_of(format!("Bearer {jwt}"))
        );
        // Without the claim, the gateway mints.
        let hash = introspect(&cfg, &host, "Bearer without-claim");
        let v = on_introspection(
            &cfg,
            &host,
            &hash,
            answer(
                &cfg,
                "application/json",
                r#"{"active":true,"scope":"read"}"#,
            ),
        );
        assert_eq!(minted(&cfg, &v)["scope"], "read");
        // A claim that is not a JWT is a broken answer.
        let hash = introspect(&cfg, &host, "Bearer broken-claim");
        let body = r#"{"active":true,"scope":"read","access_token_jwt":"not-a-jwt"}"#;
        assert_eq!(
            on_introspection(&cfg, &host, &hash, answer(&cfg, "application/json", body)),
            Verdict::Reject(Denial::TokenService(Failure::Malformed))
        );
    }

    #[test]
    fn rfc9701_answers_are_verified_then_minted() {
        let k = keys();
        let (cfg, host) = setup(&k, "rfc9701", "");
        let ct = "application/token-introspection+jwt";
        let now = T0 / 1_000;
        let good = signed_introspection(&k.ec, "token-introspection+jwt", "gw", Some(now), true);
        let hash = introspect(&cfg, &host, "Bearer signed");
        let v = on_introspection(&cfg, &host, &hash, answer(&cfg, ct, &good));
        let p = minted(&cfg, &v);
        assert_eq!(p["sub"], "alice");
        assert_eq!(p["client_id"], "app");
        assert_eq!(host.count_of(Counter::Minted), 1);
        assert_eq!(
            on_request(&cfg, &host, Some("Bearer signed")),
            Step::Done(v.clone())
        );
        // Inactive: 401, cached as inactive.
        let off = signed_introspection(&k.ec, "token-introspection+jwt", "gw", Some(now), false);
        let hash = introspect(&cfg, &host, "Bearer revoked");
        assert_eq!(
            on_introspection(&cfg, &host, &hash, answer(&cfg, ct, &off)),
            Verdict::Reject(Denial::InvalidToken)
        );
        assert_eq!(
            on_request(&cfg, &host, Some("Bearer revoked")),
            Step::Done(Verdict::Reject(Denial::InvalidToken))
        );
        // Wrong audience, wrong type, unsigned JSON, a forged signature: 502, not cached.
        let g: Vec<&str> = good.split('.').collect();
        let o: Vec<&str> = off.split('.').collect();
        let bad = [
            (
                ct,
                signed_introspection(
                    &k.ec,
                    "token-introspection+jwt",
                    "api.example.com",
                    Some(now),
                    true,
                ),
            ),
            (
                ct,
                signed_introspection(&k.ec, "JWT", "gw", Some(now), true),
            ),
            (ct, format!("{}.{}.{}", o[0], g[1], o[2])),
            (
                "application/json",
                r#"{"active":true,"sub":"alice","scope":"read"}"#.to_owned(),
            ),
            ("application/jwt", good.clone()),
        ];
        for (i, (content_type, body)) in bad.iter().enumerate() {
            let token = format!("Bearer bad-{i}");
            let hash = introspect(&cfg, &host, &token);
            assert_eq!(
                on_introspection(&cfg, &host, &hash, answer(&cfg, content_type, body)),
                Verdict::Reject(Denial::TokenService(if i < 3 {
                    Failure::Unverified
                } else {
                    Failure::Malformed
                })),
                "case {i}"
            );
            // Not cached: the next request asks again.
            introspect(&cfg, &host, &token);
        }
        assert_eq!(host.count_of(Counter::IntrospectionUnverified), 3);
        assert_eq!(host.count_of(Counter::Minted), 1);
    }

    #[test]
    fn rfc9701_without_keys_fails_closed() {
        let k = keys();
        let (cfg, _) = setup(&k, "rfc9701", "");
        let host = FakeHost::at(T0);
        let good = signed_introspection(
            &k.ec,
            "token-introspection+jwt",
            "gw",
            Some(T0 / 1_000),
            true,
        );
        let hash = introspect(&cfg, &host, "Bearer early");
        assert_eq!(
            on_introspection(
                &cfg,
                &host,
                &hash,
                answer(&cfg, "application/token-introspection+jwt", &good)
            ),
            Verdict::Reject(Denial::KeysUnavailable)
        );
    }

    #[test]
    fn gateway_jwks_route() {
        let k = keys();
        let (cfg, _) = setup(&k, "json", "");
        assert!(has_routes(&cfg));
        assert_eq!(
            route(&cfg, "/.well-known/gateway-jwks.json?x=1"),
            Route::GatewayJwks
        );
        assert_eq!(
            route(&cfg, "/.well-known/gateway-jwks.jsonx"),
            Route::Protected
        );
        let doc: serde_json::Value = serde_json::from_str(gateway_jwks(&cfg).unwrap().1).unwrap();
        let key = &doc["keys"][0];
        assert_eq!(key["kid"], "gw-1");
        assert_eq!(key["kty"], "EC");
        // Public only: no private member.
        assert!(key.get("d").is_none());
        assert!(!doc.to_string().contains("PRIVATE"));
    }
}

/// Per-route policy: which policy applies, what it asks of the token, and what cannot bypass it.
mod policies {
    use super::*;
    use crate::token::claims::Claim;
    use crate::token::jws::tests::{claims, jwks, keys};
    use jwt_simple::prelude::*;

    const POLICIES: &str = r#""policies": [
        {"name": "health", "match": {"path_exact": "/healthz"}, "token": "none"},
        {"name": "catalog", "match": {"path_prefix": "/catalog/", "methods": ["GET", "HEAD"]},
         "token": "optional"},
        {"name": "orders-write", "match": {"path_prefix": "/orders/",
         "methods": ["POST", "PUT", "PATCH", "DELETE"]}, "required_scopes": ["orders:write"]},
        {"name": "admin", "match": {"hosts": ["admin.example.com", "*.admin.example.com"]},
         "required_scopes": ["admin"]},
        {"name": "reports", "match": {"route_name": "reports"}, "required_scopes": ["reports"]}
    ]"#;

    fn cfg(extra: &str) -> Config {
        config(&format!(", {POLICIES}{extra}"))
    }

    struct Req<'a> {
        method: &'a str,
        path: &'a str,
        authority: &'a str,
        authorization: Option<&'a str>,
        route_name: Option<&'a str>,
        route_policy: Option<&'a str>,
    }

    const GET: Req<'static> = Req {
        method: "GET",
        path: "/api",
        authority: "api.example.com",
        authorization: None,
        route_name: None,
        route_policy: None,
    };

    fn decide(cfg: &Config, host: &FakeHost, r: Req<'_>) -> (String, Step) {
        let mut pairs = vec![
            (":method", r.method),
            (":path", r.path),
            (":authority", r.authority),
        ];
        if let Some(a) = r.authorization {
            pairs.push(("authorization", a));
        }
        let headers = HeaderMap::from_pairs(&pairs);
        let d = super::super::on_request(
            &cx(cfg, host),
            &Request {
                headers: &headers,
                end_of_stream: true,
                route_name: r.route_name,
                route_policy: r.route_policy,
                client_cert_sha256: None,
                secure: false,
            },
        );
        (cfg.policies.get(d.policy).name.clone(), bare_step(d.step))
    }

    fn policy_of(cfg: &Config, host: &FakeHost, r: Req<'_>) -> String {
        decide(cfg, host, r).0
    }

    #[test]
    fn the_first_matching_policy_applies_else_default() {
        let (cfg, host) = (cfg(""), FakeHost::at(T0));
        let cases = [
            ("GET", "/healthz", "api.example.com", None, "health"),
            ("GET", "/healthz?probe=1", "api.example.com", None, "health"),
            ("GET", "/healthz/x", "api.example.com", None, "default"),
            ("GET", "/catalog/1", "api.example.com", None, "catalog"),
            ("HEAD", "/catalog/1", "api.example.com", None, "catalog"),
            ("POST", "/catalog/1", "api.example.com", None, "default"),
            ("POST", "/orders/1", "api.example.com", None, "orders-write"),
            ("GET", "/orders/1", "api.example.com", None, "default"),
            ("GET", "/x", "admin.example.com", None, "admin"),
            ("GET", "/x", "ADMIN.Example.com:8443", None, "admin"),
            ("GET", "/x", "admin.example.com.", None, "admin"),
            ("GET", "/x", "eu.admin.example.com", None, "admin"),
            ("GET", "/x", "a.b.admin.example.com", None, "admin"),
            ("GET", "/x", "evil-admin.example.com", None, "default"),
            ("GET", "/x", "admin.example.com.evil", None, "default"),
            ("GET", "/x", "api.example.com", Some("reports"), "reports"),
            ("GET", "/x", "api.example.com", Some("other"), "default"),
            // Earlier policies win: /healthz on the admin host is still `health`.
            ("GET", "/healthz", "admin.example.com", None, "health"),
        ];
        for (method, path, authority, route_name, want) in cases {
            let r = Req {
                method,
                path,
                authority,
                route_name,
                ..GET
            };
            assert_eq!(
                policy_of(&cfg, &host, r),
                want,
                "{method} {path} {authority}"
            );
        }
    }

    #[test]
    fn the_segment_index_keeps_the_configured_order() {
        // Policies that fix a first segment and policies that do not, interleaved: the first in
        // configuration order still wins.
        let cfg = config(
            r#", "policies": [
            {"name": "any-post", "match": {"path_prefix": "/", "methods": ["POST"]}},
            {"name": "orders", "match": {"path_prefix": "/orders/"}},
            {"name": "ord", "match": {"path_prefix": "/ord"}},
            {"name": "orders-exact", "match": {"path_exact": "/orders"}},
            {"name": "hosts", "match": {"hosts": ["a.example.com"]}}
        ]"#,
        );
        let host = FakeHost::at(T0);
        for (method, path, authority, want) in [
            ("POST", "/orders/1", "b.example.com", "any-post"),
            ("GET", "/orders/1", "b.example.com", "orders"),
            ("GET", "/ordinal", "b.example.com", "ord"),
            ("GET", "/orders", "b.example.com", "ord"),
            ("GET", "/x", "a.example.com", "hosts"),
            ("GET", "/x", "b.example.com", "default"),
        ] {
            let r = Req {
                method,
                path,
                authority,
                ..GET
            };
            assert_eq!(policy_of(&cfg, &host, r), want, "{method} {path}");
        }
    }

    #[test]
    fn route_metadata_names_the_policy_first() {
        let (cfg, host) = (cfg(""), FakeHost::at(T0));
        let r = |route_policy| Req {
            path: "/healthz",
            route_policy,
            ..GET
        };
        assert_eq!(policy_of(&cfg, &host, r(Some("admin"))), "admin");
        assert_eq!(policy_of(&cfg, &host, r(Some("default"))), "default");
        // A name the configuration lacks: refused, never a guess.
        assert_eq!(
            decide(&cfg, &host, r(Some("no-such-policy"))).1,
            Step::Done(Verdict::Reject(Denial::UnknownPolicy))
        );
    }

    #[test]
    fn ambiguous_paths_and_hosts_are_refused_or_made_canonical() {
        let (cfg, host) = (cfg(""), FakeHost::at(T0));
        // Paths Envoy routes one way and the API reads another: refused, whatever chooses the
        // policy (here route metadata and a route name, which Envoy chose on the raw path).
        for (path, route_policy, route_name) in [
            ("/%6Frders/1", None, None),
            ("/orders/%31", None, None),
            ("/%6frders/1?x=y", None, None),
            ("/%72eports/q1", Some("default"), None),
            ("/%6Deta-admin/x", None, Some("other")),
            ("/x/../reports/q1", Some("default"), None),
            ("//reports/q1", None, Some("other")),
            ("/reports;x/q1", Some("default"), None),
            ("/x/%2e%2e/meta-admin/x", Some("default"), None),
            ("/x%2f..%2fmeta-admin/x", Some("default"), None),
            ("/x\\..\\meta-admin/x", Some("default"), None),
        ] {
            let r = Req {
                method: "POST",
                path,
                route_policy,
                route_name,
                authorization: Some("Bearer t"),
                ..GET
            };
            assert_eq!(
                decide(&cfg, &host, r).1,
                Step::Done(Verdict::Reject(Denial::AmbiguousRequest)),
                "{path}"
            );
        }
        // A method's case never picks a policy: `post` is refused, not matched as "not POST".
        for method in ["post", "Post", "gEt"] {
            let r = Req {
                method,
                path: "/orders/1",
                authorization: Some("Bearer t"),
                ..GET
            };
            assert_eq!(
                decide(&cfg, &host, r).1,
                Step::Done(Verdict::Reject(Denial::AmbiguousRequest)),
                "{method}"
            );
        }
        // Everything two servers could read two ways is refused, whatever the policy.
        for path in [
            "//orders/1",
            "/orders//1",
            "/public/../orders/1",
            "/./orders/1",
            "/%2e%2e/orders/1",
            "/catalog/%2e%2e/orders/1",
            "/orders%2F1",
            "/orders%5c1",
            "/orders\\1",
            "/orders;x=1/1",
            "/orders/1#frag",
            "/orders/%252F",
        ] {
            let r = Req {
                method: "POST",
                path,
                authorization: Some("Bearer t"),
                ..GET
            };
            assert_eq!(
                decide(&cfg, &host, r).1,
                Step::Done(Verdict::Reject(Denial::AmbiguousRequest)),
                "{path}"
            );
        }
        for authority in [
            "admin example.com",
            "admin..example.com",
            "user@admin.example.com",
            "",
        ] {
            let r = Req { authority, ..GET };
            assert_eq!(
                decide(&cfg, &host, r).1,
                Step::Done(Verdict::Reject(Denial::AmbiguousRequest)),
                "{authority:?}"
            );
        }
    }

    #[test]
    fn token_none_and_optional() {
        let (cfg, host) = (cfg(""), FakeHost::at(T0));
        // `none`: no lookup, even with a token (the glue removes it).
        let r = Req {
            path: "/healthz",
            authorization: Some("Bearer opaque"),
            ..GET
        };
        assert_eq!(decide(&cfg, &host, r).1, Step::Done(Verdict::Anonymous));
        assert_eq!(host.count_of(Counter::CacheMiss), 0, "no lookup");
        // `optional`: anonymous without a token (or with another scheme)...
        for authorization in [None, Some("Basic dXNlcjpwYXNz")] {
            let r = Req {
                path: "/catalog/1",
                authorization,
                ..GET
            };
            assert_eq!(decide(&cfg, &host, r).1, Step::Done(Verdict::Anonymous));
        }
        // ...but a token that is there must be valid: never a silent downgrade.
        let r = Req {
            path: "/catalog/1",
            authorization: Some("Bearer a b"),
            ..GET
        };
        assert_eq!(
            decide(&cfg, &host, r).1,
            Step::Done(Verdict::Reject(Denial::MalformedCredentials))
        );
        let r = Req {
            path: "/catalog/1",
            authorization: Some("Bearer opaque"),
            ..GET
        };
        let Step::Introspect { hash, .. } = decide(&cfg, &host, r).1 else {
            panic!("a token on an optional route is looked up")
        };
        let answer = super::super::on_introspection(&cx(&cfg, &host), &hash, Outcome::Inactive);
        let catalog = cfg.policies.named("catalog").unwrap().1;
        assert_eq!(
            judge(&cfg, catalog, &host, &hash, &answer),
            Verdict::Reject(Denial::InvalidToken)
        );
        // `required` (the default): 401 without a token.
        assert_eq!(
            decide(&cfg, &host, GET).1,
            Step::Done(Verdict::Reject(Denial::NoCredentials))
        );
    }

    #[test]
    fn each_policy_checks_its_own_scopes_on_cache_hits_too() {
        let (cfg, host) = (cfg(""), FakeHost::at(T0));
        let jwt = make(r#"{"scope":"read orders:write"}"#);
        let write = |method| Req {
            method,
            path: "/orders/1",
            authorization: Some("Bearer t"),
            ..GET
        };
        let Step::Introspect { hash, .. } = decide(&cfg, &host, write("POST")).1 else {
            panic!("miss")
        };
        let answer = super::super::on_introspection(
            &cx(&cfg, &host),
            &hash,
            active(&jwt, None, "read orders:write"),
        );
        let orders = cfg.policies.named("orders-write").unwrap().1;
        assert!(matches!(
            judge(&cfg, orders, &host, &hash, &answer),
            Verdict::Forward(_)
        ));
        // The same token (now in this worker's copy) on the admin host: no `admin` scope.
        let admin = Req {
            authority: "admin.example.com",
            authorization: Some("Bearer t"),
            ..GET
        };
        assert_eq!(
            decide(&cfg, &host, admin).1,
            Step::Done(Verdict::Reject(Denial::InsufficientScope))
        );
        assert_eq!(decide(&cfg, &host, write("PUT")).1, forward(&jwt));
    }

    #[test]
    fn claims_are_read_once_per_token_for_headers_and_filter_state() {
        let cfg = cfg(
            r#", "claims_to_headers": [{"claim": "sub", "header": "x-user-id"},
            {"claim": "realm_access.roles", "header": "X-Roles"}],
            "claims_to_filter_state": ["sub", "scope"]"#,
        );
        let host = FakeHost::at(T0);
        assert_eq!(cfg.policies.claim_headers, ["x-user-id", "x-roles"]);
        let names: Vec<&str> = cfg.policies.claims.iter().map(|c| c.name()).collect();
        assert_eq!(names, ["sub", "realm_access.roles", "scope"]);
        let jwt = make(
            r#"{"sub":"alice","scope":"read","realm_access":{"roles":["a","b"]},"x":{"y":1}}"#,
        );
        let hash = introspect(&cfg, &host, "Bearer t");
        let answer =
            super::super::on_introspection(&cx(&cfg, &host), &hash, active(&jwt, None, "read"));
        let Ok(found) = answer else { panic!("active") };
        assert_eq!(
            found.token.claims,
            vec![
                Claim::Value("alice".into()),
                Claim::Value("a,b".into()),
                Claim::Value("read".into())
            ]
        );
    }

    #[test]
    fn accept_jwt_forwards_a_verified_jwt_as_it_is_once_verified() {
        let k = keys();
        let json = format!(
            r#"{{"required_scopes": [], "phantom": {{"cluster": "ts", "path": "/i",
            "client_id": "gw", "client_secret": "s"}},
            "verify": {{"issuer": "https://login.example.com", "audiences": ["api.example.com"],
              "algorithms": ["ES256"], "jwks_inline": {}}},
            "policies": [{{"name": "reports", "match": {{"path_prefix": "/reports/"}},
              "accept_jwt": true}}]}}"#,
            jwks(&k)
        );
        let cfg = Config::from_slice(json.as_bytes()).unwrap();
        let host = FakeHost::at(T0);
        if let Some(crate::config::KeySource::Inline(keys)) = cfg.verify.as_ref().map(|v| &v.keys) {
            host.worker.keys.set_keys(keys.clone());
        }
        let jwt = k.ec.sign(claims()).unwrap();
        let on = |path, token: &str| {
            let authorization = format!("Bearer {token}");
            decide(
                &cfg,
                &host,
                Req {
                    path,
                    authorization: Some(&authorization),
                    ..GET
                },
            )
            .1
        };
        for _ in 0..3 {
            assert_eq!(on("/reports/1", &jwt), forward(&jwt));
        }
        assert_eq!(host.count_of(Counter::Verified), 1, "verified once");
        assert_eq!(host.count_of(Counter::JwtCacheHit), 2);
        // A JWT that fails: 401, and cached as such for negative_ttl_s.
        let forged = ES256KeyPair::generate()
            .with_key_id("ec-1")
            .sign(claims())
            .unwrap();
        for _ in 0..2 {
            assert_eq!(
                on("/reports/2", &forged),
                Step::Done(Verdict::Reject(Denial::InvalidToken))
            );
        }
        assert_eq!(host.count_of(Counter::VerifyBadSignature), 1);
        // Elsewhere the same JWT is an opaque token like any other: introspected.
        assert!(matches!(on("/orders/1", &jwt), Step::Introspect { .. }));
        // On the JWT route, what is not a JWS goes on to the other flows.
        assert!(matches!(
            on("/reports/3", "opaque"),
            Step::Introspect { .. }
        ));
    }
}

/// Proof of possession: DPoP-bound and certificate-bound tokens, on every flow's hits.
mod possession {
    use super::*;
    use crate::token::dpop::tests::ProofKey;
    use crate::token::dpop::{access_token_hash, nonce};

    const HTU: &str = "https://api.example.com/orders/1";

    fn cfg(extra: &str) -> Config {
        config(&format!(
            r#", "dpop": {{"max_age_s": 60, "replay_entries": 1000}}, "mtls": {{}}{extra}"#
        ))
    }

    /// A JWT bound with this `cnf`.
    fn bound_jwt(cnf: &str) -> String {
        make(&format!(r#"{{"scope":"read","cnf":{cnf}}}"#))
    }

    struct Call<'a> {
        authorization: String,
        proofs: Vec<String>,
        cert: Option<&'a str>,
        xfcc: Option<&'a str>,
        /// The connection is TLS (the proofs name `https://`).
        secure: bool,
    }

    fn send(cfg: &Config, host: &FakeHost, c: &Call<'_>) -> Decision {
        let mut pairs = vec![
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", "api.example.com"),
            (":path", "/orders/1?x=1"),
            ("authorization", c.authorization.as_str()),
        ];
        for p in &c.proofs {
            pairs.push(("dpop", p.as_str()));
        }
        if let Some(x) = c.xfcc {
            pairs.push(("x-forwarded-client-cert", x));
        }
        let headers = HeaderMap::from_pairs(&pairs);
        let mut d = super::super::on_request(
            &cx(cfg, host),
            &Request {
                headers: &headers,
                end_of_stream: true,
                route_name: None,
                route_policy: None,
                client_cert_sha256: c.cert,
                secure: c.secure,
            },
        );
        d.step = bare_step(d.step);
        d
    }

    /// Resolves `token` to `jwt` through an introspection, as a DPoP request with `key`.
    fn introspected(cfg: &Config, host: &FakeHost, token: &str, jwt: &str) {
        let hash = crate::hash::token_hash(token);
        let answer =
            super::super::on_introspection(&cx(cfg, host), &hash, active(jwt, None, "read"));
        assert!(answer.is_ok());
    }

    fn dpop(key: &ProofKey, token: &str, jti: &str) -> Call<'static> {
        Call {
            authorization: format!("DPoP {token}"),
            proofs: vec![key.proof("POST", HTU, token, T0 / 1000, jti)],
            cert: None,
            xfcc: None,
            secure: true,
        }
    }

    fn bearer(token: &str) -> Call<'static> {
        Call {
            authorization: format!("Bearer {token}"),
            proofs: vec![],
            cert: None,
            xfcc: None,
            secure: true,
        }
    }

    fn rejected(d: &Decision) -> Option<Denial> {
        match &d.step {
            Step::Done(Verdict::Reject(denial)) => Some(*denial),
            _ => None,
        }
    }

    #[test]
    fn a_dpop_bound_token_needs_its_proof_on_every_hit() {
        let (cfg, host) = (cfg(""), FakeHost::at(T0));
        let key = ProofKey::es256(7);
        let jwt = bound_jwt(&format!(r#"{{"jkt":"{}"}}"#, key.jkt()));
        introspected(&cfg, &host, "opaque-dpop", &jwt);
        // With its proof: forwarded, as Bearer <JWT> (the JWT keeps cnf).
        let d = send(&cfg, &host, &dpop(&key, "opaque-dpop", "j1"));
        assert_eq!(d.step, forward(&jwt));
        assert_eq!(d.presented.jkt.as_deref(), Some(key.jkt().as_str()));
        // The same proof again: a replay.
        assert_eq!(
            rejected(&send(&cfg, &host, &dpop(&key, "opaque-dpop", "j1"))),
            Some(Denial::InvalidDpopProof)
        );
        assert_eq!(host.count_of(Counter::DpopReplayed), 1);
        // Sent as Bearer (RFC 9449 §7.2), or proven with another key: refused.
        assert_eq!(
            rejected(&send(&cfg, &host, &bearer("opaque-dpop"))),
            Some(Denial::BoundTokenUnproven)
        );
        let other = ProofKey::eddsa(8);
        assert_eq!(
            rejected(&send(&cfg, &host, &dpop(&other, "opaque-dpop", "j2"))),
            Some(Denial::BoundTokenUnproven)
        );
        // No proof, two proofs, a proof for another token.
        let mut none = dpop(&key, "opaque-dpop", "j3");
        none.proofs.clear();
        assert_eq!(
            rejected(&send(&cfg, &host, &none)),
            Some(Denial::InvalidDpopProof)
        );
        let mut two = dpop(&key, "opaque-dpop", "j4");
        two.proofs
            .push(key.proof("POST", HTU, "opaque-dpop", T0 / 1000, "j5"));
        assert_eq!(
            rejected(&send(&cfg, &host, &two)),
            Some(Denial::MalformedCredentials)
        );
        let mut wrong_ath = dpop(&key, "opaque-dpop", "j6");
        wrong_ath.proofs = vec![key.proof("POST", HTU, "another-token", T0 / 1000, "j6")];
        assert_eq!(
            rejected(&send(&cfg, &host, &wrong_ath)),
            Some(Denial::InvalidDpopProof)
        );
        assert!(access_token_hash("x") != access_token_hash("y"));
    }

    /// A proof is recorded only once its token is resolved, active and bound to its key:
    /// proofs sent with worthless tokens, or with tokens bound to another key, take no room.
    #[test]
    fn proofs_with_worthless_tokens_take_no_room_in_the_replay_store() {
        let tiny =
            config(r#", "dpop": {"max_age_s": 60, "replay_entries": 8, "max_proofs_per_key": 4}"#);
        let host = FakeHost::at(T0);
        let key = ProofKey::es256(7);
        let jwt = bound_jwt(&format!(r#"{{"jkt":"{}"}}"#, key.jkt()));
        introspected(&tiny, &host, "good", &jwt);
        let _ = super::super::on_introspection(
            &cx(&tiny, &host),
            &crate::hash::token_hash("worthless"),
            Outcome::Inactive,
        );
        introspected(
            &tiny,
            &host,
            "other-key",
            &bound_jwt(r#"{"jkt":"someone-else"}"#),
        );
        for i in 0..50 {
            let worthless = send(&tiny, &host, &dpop(&key, "worthless", &format!("w{i}")));
            assert_eq!(rejected(&worthless), Some(Denial::InvalidToken));
            let unbound = send(&tiny, &host, &dpop(&key, "other-key", &format!("o{i}")));
            assert_eq!(rejected(&unbound), Some(Denial::BoundTokenUnproven));
        }
        // A token not looked up yet: its proof waits for the answer, unrecorded.
        assert!(matches!(
            send(&tiny, &host, &dpop(&key, "unknown", "u1")).step,
            Step::Introspect { .. }
        ));
        for i in 0..4 {
            let ok = send(&tiny, &host, &dpop(&key, "good", &format!("g{i}")));
            assert_eq!(ok.step, forward(&jwt), "proof {i}");
        }
    }

    /// One key holds at most `max_proofs_per_key` proofs: past it, that key is refused (429)
    /// and every other key goes on.
    #[test]
    fn one_key_cannot_hold_more_than_its_share() {
        let cfg =
            config(r#", "dpop": {"max_age_s": 60, "replay_entries": 64, "max_proofs_per_key": 3}"#);
        let host = FakeHost::at(T0);
        let (heavy, light) = (ProofKey::es256(7), ProofKey::eddsa(9));
        let heavy_jwt = bound_jwt(&format!(r#"{{"jkt":"{}"}}"#, heavy.jkt()));
        let light_jwt = bound_jwt(&format!(r#"{{"jkt":"{}"}}"#, light.jkt()));
        introspected(&cfg, &host, "heavy", &heavy_jwt);
        introspected(&cfg, &host, "light", &light_jwt);
        for i in 0..3 {
            let d = send(&cfg, &host, &dpop(&heavy, "heavy", &format!("h{i}")));
            assert_eq!(d.step, forward(&heavy_jwt));
        }
        let over = send(&cfg, &host, &dpop(&heavy, "heavy", "h3"));
        assert!(
            matches!(rejected(&over), Some(Denial::DpopKeyQuota { retry_after_s }) if retry_after_s > 0),
            "{over:?}"
        );
        assert_eq!(host.count_of(Counter::DpopProofAccepted), 3);
        for i in 0..3 {
            let d = send(&cfg, &host, &dpop(&light, "light", &format!("l{i}")));
            assert_eq!(d.step, forward(&light_jwt));
        }
        let reply = crate::reply::local_reply(
            Denial::DpopKeyQuota { retry_after_s: 42 },
            "api",
            &[],
            false,
        );
        assert_eq!(reply.status, 429);
        assert!(reply.headers.contains(&("retry-after", "42".to_owned())));
    }

    /// The scheme of `htu` is the connection's: a plain-text request claiming `https` (an
    /// HTTP/2 `:scheme`, an absolute-form target) does not make an `https://` proof pass.
    #[test]
    fn the_scheme_a_proof_names_is_the_connections() {
        let (cfg, host) = (cfg(""), FakeHost::at(T0));
        let key = ProofKey::es256(7);
        let jwt = bound_jwt(&format!(r#"{{"jkt":"{}"}}"#, key.jkt()));
        introspected(&cfg, &host, "s", &jwt);
        let mut plain = dpop(&key, "s", "s1");
        plain.secure = false;
        assert_eq!(
            rejected(&send(&cfg, &host, &plain)),
            Some(Denial::InvalidDpopProof)
        );
        assert_eq!(
            send(&cfg, &host, &dpop(&key, "s", "s2")).step,
            forward(&jwt)
        );
    }

    #[test]
    fn without_the_dpop_block_a_bound_token_is_refused() {
        let cfg = config(r#", "mtls": {}"#);
        let host = FakeHost::at(T0);
        let key = ProofKey::es256(7);
        introspected(
            &cfg,
            &host,
            "t",
            &bound_jwt(&format!(r#"{{"jkt":"{}"}}"#, key.jkt())),
        );
        assert_eq!(
            rejected(&send(&cfg, &host, &bearer("t"))),
            Some(Denial::BoundTokenUnproven)
        );
        // The DPoP scheme is not even accepted: no credentials.
        assert_eq!(
            rejected(&send(&cfg, &host, &dpop(&key, "t", "j"))),
            Some(Denial::NoCredentials)
        );
    }

    #[test]
    fn unbound_tokens_under_optional_and_required() {
        let cfg = cfg(
            r#", "policies": [{"name": "payments", "match": {"path_prefix": "/orders/"}, "proof": "required"}]"#,
        );
        let host = FakeHost::at(T0);
        let plain = make(r#"{"scope":"read"}"#);
        introspected(&cfg, &host, "plain", &plain);
        assert_eq!(
            rejected(&send(&cfg, &host, &bearer("plain"))),
            Some(Denial::ProofRequired)
        );
        // A valid proof with an unbound token proves nothing.
        let key = ProofKey::eddsa(1);
        assert_eq!(
            rejected(&send(&cfg, &host, &dpop(&key, "plain", "j"))),
            Some(Denial::BoundTokenUnproven)
        );
        // Under `optional` (the default elsewhere), an unbound token is a bearer token.
        let optional = self::cfg("");
        introspected(&optional, &host, "plain", &plain);
        assert_eq!(
            send(&optional, &host, &bearer("plain")).step,
            forward(&plain)
        );
    }

    #[test]
    fn a_certificate_bound_token_needs_its_certificate() {
        let hex = "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20";
        let x5t = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA";
        let (cfg, host) = (cfg(""), FakeHost::at(T0));
        let jwt = bound_jwt(&format!(r#"{{"x5t#S256":"{x5t}"}}"#));
        introspected(&cfg, &host, "mtls-token", &jwt);
        let mut c = bearer("mtls-token");
        c.cert = Some(hex);
        assert_eq!(send(&cfg, &host, &c).step, forward(&jwt));
        c.cert = Some("ff02030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20");
        assert_eq!(
            rejected(&send(&cfg, &host, &c)),
            Some(Denial::BoundTokenUnproven)
        );
        c.cert = None;
        assert_eq!(
            rejected(&send(&cfg, &host, &c)),
            Some(Denial::BoundTokenUnproven)
        );
        // XFCC is never trusted unless configured...
        c.xfcc = Some("Hash=0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20");
        assert_eq!(
            rejected(&send(&cfg, &host, &c)),
            Some(Denial::BoundTokenUnproven)
        );
        // ...and then only its first element.
        let trusted = config(r#", "mtls": {"forwarded_client_cert": true}"#);
        introspected(&trusted, &host, "mtls-token", &jwt);
        assert_eq!(send(&trusted, &host, &c).step, forward(&jwt));
        c.xfcc =
            Some("Hash=ffff,Hash=0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20");
        assert_eq!(
            rejected(&send(&trusted, &host, &c)),
            Some(Denial::BoundTokenUnproven)
        );
    }

    #[test]
    fn nonces_are_required_when_configured() {
        let cfg = config(r#", "dpop": {"nonce": true}"#);
        let host = FakeHost::at(T0);
        let key = ProofKey::es256(3);
        introspected(
            &cfg,
            &host,
            "n",
            &bound_jwt(&format!(r#"{{"jkt":"{}"}}"#, key.jkt())),
        );
        assert_eq!(
            rejected(&send(&cfg, &host, &dpop(&key, "n", "j1"))),
            Some(Denial::UseDpopNonce)
        );
        let secret =
            crate::storage::dpop::nonce_key(&host, &cfg.cache.jwt_namespace, || [0; 32]).unwrap();
        let current = nonce(&secret, T0 / 1000 / super::super::NONCE_WINDOW_S);
        let proof = key.proof_with(
            &serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.jwk()}),
            &serde_json::json!({"htm": "POST", "htu": HTU, "iat": T0 / 1000, "jti": "j2",
                                "ath": access_token_hash("n"), "nonce": current}),
        );
        let mut c = dpop(&key, "n", "j2");
        c.proofs = vec![proof];
        assert!(matches!(
            send(&cfg, &host, &c).step,
            Step::Done(Verdict::Forward(_))
        ));
    }
}

mod exchange {
    use super::*;
    use crate::token::exchange::{Outcome as Answer, Refusal};

    const X: &str = r#", "token_exchange": {"cluster": "ts", "path": "/token", "client_id": "gw",
        "client_secret": "xs"}, "policies": [
        {"name": "orders", "match": {"path_prefix": "/orders/"},
         "exchange": {"audience": "orders-api", "scope": "orders:read"}},
        {"name": "billing", "match": {"path_prefix": "/billing/"},
         "exchange": {"audience": "billing-api"}}]"#;

    fn get(cfg: &Config, host: &FakeHost, path: &str, token: &str) -> Decision {
        let authorization = format!("Bearer {token}");
        let headers = HeaderMap::from_pairs(&[
            (":method", "GET"),
            (":path", path),
            (":authority", "api.example.com"),
            ("authorization", authorization.as_str()),
        ]);
        super::super::on_request(
            &cx(cfg, host),
            &Request {
                headers: &headers,
                end_of_stream: true,
                route_name: None,
                route_policy: None,
                client_cert_sha256: None,
                secure: false,
            },
        )
    }

    fn issued(jwt: &str, exp: Option<u64>, expires_in_s: Option<u64>) -> Answer {
        Answer::Issued {
            jwt: jwt.to_owned(),
            claims: Claims {
                exp,
                scope: "orders:read".to_owned(),
            },
            expires_in_s,
        }
    }

    /// Resolves `token` to `jwt` through an introspection first (the phantom cache).
    fn resolve(cfg: &Config, host: &FakeHost, token: &str, jwt: &str) {
        resolve_with(cfg, host, token, jwt, "read");
    }

    fn resolve_with(cfg: &Config, host: &FakeHost, token: &str, jwt: &str, scope: &str) {
        let hash = crate::hash::token_hash(token);
        let _ = super::super::on_introspection(&cx(cfg, host), &hash, active(jwt, None, scope));
    }

    /// The exchange step a request on `path` leads to.
    fn exchange_step(
        cfg: &Config,
        host: &FakeHost,
        path: &str,
        token: &str,
    ) -> (usize, TokenHash, TokenHash, String) {
        let d = get(cfg, host, path, token);
        match d.step {
            Step::Exchange {
                key,
                token: hash,
                subject,
                ..
            } => (d.policy, key, hash, subject),
            other => panic!("expected an exchange on {path}, got {other:?}"),
        }
    }

    fn answer(
        cfg: &Config,
        host: &FakeHost,
        policy: usize,
        key: &TokenHash,
        token: &TokenHash,
        outcome: Answer,
    ) -> Verdict {
        let rule = cfg.policies.get(policy).exchange.as_ref().unwrap();
        let made = super::super::on_exchange(&cx(cfg, host), rule, key, None, outcome);
        let _ = token;
        bare(super::super::after_exchange(&host.worker, key, &made))
    }

    #[test]
    fn each_api_gets_its_own_token_exchanged_once() {
        let (cfg, host) = (config(X), FakeHost::at(T0));
        let original = make(r#"{"scope":"read"}"#);
        resolve(&cfg, &host, "opaque-1", &original);
        // A route without `exchange` gets the resolved JWT as before.
        assert_eq!(
            bare_step(get(&cfg, &host, "/api", "opaque-1").step),
            forward(&original)
        );
        // The client's token as sent is the subject (`subject_token: "access_token"`).
        let (policy, key, hash, subject) = exchange_step(&cfg, &host, "/orders/1", "opaque-1");
        assert_eq!(
            (cfg.policies.get(policy).name.as_str(), subject.as_str()),
            ("orders", "opaque-1")
        );
        let orders = make(r#"{"aud":"orders-api","scope":"orders:read"}"#);
        assert_eq!(
            answer(
                &cfg,
                &host,
                policy,
                &key,
                &hash,
                issued(&orders, None, Some(60))
            ),
            forward_of(format!("Bearer {orders}"))
        );
        assert_eq!(host.count_of(Counter::ExchangeMiss), 1);
        // Again: served from this worker's copy, no call.
        assert_eq!(
            bare_step(get(&cfg, &host, "/orders/2", "opaque-1").step),
            forward(&orders)
        );
        // Another worker reads the shared slot.
        host.worker.local_exchange.clear();
        assert_eq!(
            bare_step(get(&cfg, &host, "/orders/3", "opaque-1").step),
            forward(&orders)
        );
        assert_eq!(host.count_of(Counter::ExchangeHit), 2);
        // Another policy, another key, another call.
        let (p2, key2, _, _) = exchange_step(&cfg, &host, "/billing/1", "opaque-1");
        assert_eq!(cfg.policies.get(p2).name, "billing");
        assert_ne!(key, key2);
        // `expires_in` bounds the entry.
        host.now.set(host.now.get() + 60_000);
        host.worker.local_exchange.clear();
        let _ = exchange_step(&cfg, &host, "/orders/4", "opaque-1");
    }

    /// Two configurations on one VM (two listeners, or a reload) with the same policies in
    /// another order share the exchange cache: each API still only gets tokens made for it.
    #[test]
    fn exchanged_tokens_never_cross_to_another_api_whatever_the_order() {
        const REORDERED: &str = r#", "token_exchange": {"cluster": "ts", "path": "/token",
            "client_id": "gw", "client_secret": "xs"}, "policies": [
            {"name": "billing", "match": {"path_prefix": "/billing/"},
             "exchange": {"audience": "billing-api"}},
            {"name": "orders", "match": {"path_prefix": "/orders/"},
             "exchange": {"audience": "orders-api", "scope": "orders:read"}}]"#;
        let (a, b) = (config(X), config(REORDERED));
        let host = FakeHost::at(T0);
        let original = make(r#"{"scope":"read"}"#);
        resolve(&a, &host, "opaque-x", &original);
        let (policy, key, hash, _) = exchange_step(&a, &host, "/orders/1", "opaque-x");
        let orders = make(r#"{"aud":"orders-api","scope":"orders:read"}"#);
        assert_eq!(
            answer(
                &a,
                &host,
                policy,
                &key,
                &hash,
                issued(&orders, None, Some(60))
            ),
            forward_of(format!("Bearer {orders}"))
        );
        // The other configuration's billing policy sits where orders was: it must exchange.
        host.worker.local_exchange.clear();
        let (p, billing_key, _, _) = exchange_step(&b, &host, "/billing/1", "opaque-x");
        assert_eq!(b.policies.get(p).name, "billing");
        assert_ne!(billing_key, key);
        // Its orders policy, asking for the same thing, shares the token made for orders.
        assert_eq!(
            bare_step(get(&b, &host, "/orders/2", "opaque-x").step),
            forward(&orders)
        );
        // A refusal cached for billing is never orders' answer either.
        let (p, billing_key, hash, _) = exchange_step(&b, &host, "/billing/2", "opaque-x");
        assert_eq!(
            answer(
                &b,
                &host,
                p,
                &billing_key,
                &hash,
                Answer::Refused(Refusal::Forbidden)
            ),
            Verdict::Reject(Denial::ExchangeForbidden)
        );
        host.worker.local_exchange.clear();
        assert_eq!(
            bare_step(get(&a, &host, "/orders/3", "opaque-x").step),
            forward(&orders)
        );
    }

    #[test]
    fn a_token_for_another_audience_is_never_forwarded_nor_served() {
        let (cfg, host) = (config(X), FakeHost::at(T0));
        resolve(&cfg, &host, "opaque-aud", &make(r#"{"scope":"read"}"#));
        let (policy, key, hash, _) = exchange_step(&cfg, &host, "/orders/1", "opaque-aud");
        // The token service made it for billing: refused, not cached.
        let wrong = make(r#"{"aud":"billing-api","scope":"orders:read"}"#);
        assert_eq!(
            answer(
                &cfg,
                &host,
                policy,
                &key,
                &hash,
                issued(&wrong, None, Some(60))
            ),
            Verdict::Reject(Denial::ExchangeFailed(Failure::Malformed))
        );
        // A slot that holds it anyway (written by something else) is not served either.
        let x = cfg.token_exchange.as_ref().unwrap();
        let slot =
            crate::storage::exchange_cache::slot_key(&x.namespace, &key, cfg.cache.max_entries);
        host.shared_set(
            &slot,
            &crate::storage::exchange_cache::encode_issued(
                &key,
                T0 + 60_000,
                "orders:read",
                &wrong,
            ),
        );
        assert!(matches!(
            get(&cfg, &host, "/orders/1", "opaque-aud").step,
            Step::Exchange { .. }
        ));
        // As a list holding it, the audience is right.
        let listed = make(r#"{"aud":["x","orders-api"],"scope":"orders:read"}"#);
        assert_eq!(
            answer(
                &cfg,
                &host,
                policy,
                &key,
                &hash,
                issued(&listed, None, Some(60))
            ),
            forward_of(format!("Bearer {listed}"))
        );
    }

    #[test]
    fn refusals_are_cached_failures_are_not_and_the_original_never_goes_on() {
        let (cfg, host) = (config(X), FakeHost::at(T0));
        let original = make(r#"{"scope":"read"}"#);
        resolve(&cfg, &host, "opaque-2", &original);
        let (policy, key, hash, _) = exchange_step(&cfg, &host, "/orders/1", "opaque-2");
        assert_eq!(
            answer(
                &cfg,
                &host,
                policy,
                &key,
                &hash,
                Answer::Refused(Refusal::Forbidden)
            ),
            Verdict::Reject(Denial::ExchangeForbidden)
        );
        // Cached for negative_ttl_s (5 s): no call, same answer.
        assert_eq!(
            get(&cfg, &host, "/orders/1", "opaque-2").step,
            Step::Done(Verdict::Reject(Denial::ExchangeForbidden))
        );
        host.now.set(host.now.get() + 5_000);
        let (_, key, hash, _) = exchange_step(&cfg, &host, "/orders/1", "opaque-2");
        assert_eq!(
            answer(
                &cfg,
                &host,
                policy,
                &key,
                &hash,
                Answer::Refused(Refusal::InvalidGrant)
            ),
            Verdict::Reject(Denial::InvalidToken)
        );
        host.now.set(host.now.get() + 5_000);
        let (_, key, hash, _) = exchange_step(&cfg, &host, "/orders/1", "opaque-2");
        let failure = Answer::Failed(Failure::Timeout);
        assert_eq!(
            answer(&cfg, &host, policy, &key, &hash, failure),
            Verdict::Reject(Denial::ExchangeFailed(Failure::Timeout))
        );
        // A failure is not cached: the next request asks again.
        let _ = exchange_step(&cfg, &host, "/orders/1", "opaque-2");
        // An already expired token is not forwarded.
        let expired = make(r#"{"scope":"orders:read"}"#);
        assert_eq!(
            answer(
                &cfg,
                &host,
                policy,
                &key,
                &hash,
                issued(&expired, Some(T0 / 1_000 - 1), None)
            ),
            Verdict::Reject(Denial::ExchangeFailed(Failure::Malformed))
        );
        assert_eq!(host.count_of(Counter::ExchangeRefused), 2);
        assert_eq!(host.count_of(Counter::ExchangeError), 1);
    }

    #[test]
    fn scopes_are_checked_before_any_exchange_and_jwt_subjects() {
        let cfg = config(&X.replace(
            r#""client_secret": "xs"}"#,
            r#""client_secret": "xs", "subject_token": "jwt"}"#,
        ));
        let host = FakeHost::at(T0);
        let unscoped = make(r#"{"scope":"write"}"#);
        resolve_with(&cfg, &host, "opaque-3", &unscoped, "write");
        assert_eq!(
            get(&cfg, &host, "/orders/1", "opaque-3").step,
            Step::Done(Verdict::Reject(Denial::InsufficientScope)),
            "no exchange for a token the policy refuses"
        );
        let original = make(r#"{"scope":"read"}"#);
        resolve(&cfg, &host, "opaque-4", &original);
        let (_, _, _, subject) = exchange_step(&cfg, &host, "/orders/1", "opaque-4");
        assert_eq!(subject, original, "the resolved JWT is the subject");
    }

    #[test]
    fn a_top_level_exchange_serves_the_default_policy_only() {
        let cfg = config(&X.replace(
            r#""policies": ["#,
            r#""exchange": {"audience": "everything-else"}, "policies": ["#,
        ));
        let host = FakeHost::at(T0);
        resolve(&cfg, &host, "opaque-5", &make(r#"{"scope":"read"}"#));
        let (policy, _, _, _) = exchange_step(&cfg, &host, "/api", "opaque-5");
        assert_eq!(policy, cfg.policies.list.len(), "the default policy");
        let rule = cfg.policies.default.exchange.as_ref().unwrap();
        assert_eq!(rule.audience.as_deref(), Some("everything-else"));
        let (policy, _, _, _) = exchange_step(&cfg, &host, "/billing/1", "opaque-5");
        assert_eq!(cfg.policies.get(policy).name, "billing");
    }

    /// What the exchange stage adds to a cache hit when both caches hit, natively: the same
    /// request on the same token with and without a top-level `exchange`. `cargo test --release
    /// --lib exchange_hit_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement"]
    fn exchange_hit_cost() {
        let x = r#", "token_exchange": {"cluster": "ts", "path": "/token", "client_id": "gw",
            "client_secret": "xs"}"#;
        let plain = config(x);
        let exchanging = config(&format!(r#"{x}, "exchange": {{"audience": "a"}}"#));
        let original = make(r#"{"scope":"read"}"#);
        let mut best = [f64::MAX; 2];
        for (i, cfg) in [&plain, &exchanging].into_iter().enumerate() {
            let host = FakeHost::at(T0);
            resolve(cfg, &host, "opaque", &original);
            if let Step::Exchange { key, token, .. } = get(cfg, &host, "/api", "opaque").step {
                let _ = answer(
                    cfg,
                    &host,
                    cfg.policies.list.len(),
                    &key,
                    &token,
                    issued(&original, None, None),
                );
            }
            for _ in 0..5 {
                let n = 200_000;
                let start = std::time::Instant::now();
                for _ in 0..n {
                    assert!(matches!(
                        get(cfg, &host, "/api", "opaque").step,
                        Step::Done(Verdict::Forward(_))
                    ));
                }
                best[i] = best[i].min(start.elapsed().as_secs_f64() * 1e9 / f64::from(n));
            }
        }
        println!(
            "exchange_hit_cost plain {:.0} ns exchanging {:.0} ns added {:.0} ns",
            best[0],
            best[1],
            best[1] - best[0]
        );
    }
}

/// Where a phantom cache hit's compute goes, natively: `cargo test --release --lib
/// phantom_hit_cost -- --ignored --nocapture` (under `perf record` for the breakdown).
mod cost {
    use super::*;

    #[test]
    #[ignore = "a measurement"]
    fn phantom_hit_cost() {
        let cfg = config("");
        let host = FakeHost::at(T0);
        let token = "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5";
        let hash = crate::hash::token_hash(token);
        let _ = super::super::on_introspection(
            &cx(&cfg, &host),
            &hash,
            active(&make(r#"{"scope":"read"}"#), None, "read"),
        );
        let authorization = format!("Bearer {token}");
        let pairs = [
            (":authority", "127.0.0.1:10000"),
            (":path", "/bench"),
            (":method", "GET"),
            (":scheme", "http"),
            ("authorization", authorization.as_str()),
            ("x-forwarded-proto", "http"),
            ("x-request-id", "0a5b0d2e-5e0e-4d3c-9a4e-3c2f1e0d9c8b"),
        ];
        let bytes = HeaderMap::from_pairs(&pairs);
        let n: u32 = std::env::var("HIT_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200_000);
        let mut best = f64::MAX;
        for _ in 0..5 {
            let start = std::time::Instant::now();
            for _ in 0..n {
                let headers = bytes.clone();
                let d = super::super::on_request(
                    &cx(&cfg, &host),
                    &Request {
                        headers: &headers,
                        end_of_stream: true,
                        route_name: None,
                        route_policy: None,
                        client_cert_sha256: None,
                        secure: false,
                    },
                );
                assert!(matches!(d.step, Step::Done(Verdict::Forward(_))));
            }
            best = best.min(start.elapsed().as_secs_f64() * 1e9 / f64::from(n));
        }
        println!("phantom_hit_cost {best:.0} ns");
    }
}
