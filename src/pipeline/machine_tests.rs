//! The whole request machine natively: the executor driven callback by callback, event by
//! event, against a fake host (shared data, a clock the test moves) and a fake proxy that
//! records what was done. No Envoy: a miss, coalesced waiters, late and mismatched answers,
//! calls that fail, warm-up, an exchange after an introspection, the remote store, bodies.

use std::rc::Rc;

use crate::config::Config;
use crate::header_map::HeaderMap;
use crate::metrics::Counter;
use crate::testing::{answer, Did, FakeHost, FakeIo};
use crate::token::jwt::tests::make;
use crate::token::revocation;

use super::executor::{Executor, Flow, TICK_MS};
use super::io::{CallResponse, RequestParts};

const T0: u64 = 1_700_000_000_000;
const PHANTOM: &str = r#""phantom": {"cluster": "ts", "path": "/introspect", "client_id": "gw",
    "client_secret": "s"}"#;

struct Env {
    executor: Rc<Executor>,
    host: Rc<FakeHost>,
    io: FakeIo,
    /// The webdis calls answered by [`Env::pump`].
    pumped: std::cell::RefCell<std::collections::HashSet<u32>>,
}

impl Env {
    fn new(extra: &str) -> Self {
        let json = format!(r#"{{"required_scopes": ["read"], {PHANTOM}{extra}}}"#);
        Self::with(&json)
    }

    fn with(json: &str) -> Self {
        Self::on(Rc::new(FakeHost::at(T0)), json)
    }

    /// Another worker of the same process: its own executor and proxy, the same shared data.
    fn on(host: Rc<FakeHost>, json: &str) -> Self {
        let cfg = Config::from_slice(json.as_bytes()).unwrap();
        let env = Self {
            executor: Rc::new(Executor::new(cfg)),
            host,
            io: FakeIo::default(),
            pumped: std::cell::RefCell::default(),
        };
        env.executor.start(&*env.host, &env.io, 0);
        env
    }

    /// Request `id`'s headers arrive (a GET of `path` with these extra headers).
    fn request(
        &self,
        id: u32,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        end: bool,
    ) -> Flow {
        let mut pairs = vec![
            (":method", method),
            (":path", path),
            (":authority", "api.example.com"),
        ];
        pairs.extend_from_slice(extra);
        let parts = RequestParts {
            headers: HeaderMap::from_pairs(&pairs),
            ..RequestParts::default()
        };
        self.io.requests.borrow_mut().insert(id, parts.clone());
        self.io.enter(id);
        self.executor
            .on_request_headers(&*self.host, &self.io, id, &parts, end)
    }

    fn get(&self, id: u32, token: &str) -> Flow {
        let auth = format!("Bearer {token}");
        self.request(id, "GET", "/api", &[("authorization", &auth)], true)
    }

    /// The answer of call `call` arrives, in request `from`'s context.
    fn answer(&self, from: u32, call: u32, response: CallResponse) {
        *self.io.answer.borrow_mut() = response;
        self.io.enter(from);
        self.executor
            .on_call_response(&*self.host, &self.io, from, call, 1, 0);
    }

    fn tick(&self) {
        self.host.now.set(self.host.now.get() + TICK_MS);
        self.tick_only();
    }

    /// This worker's timer, the clock unmoved (another worker's tick moved it).
    fn tick_only(&self) {
        self.io.enter(0);
        self.executor.on_tick(&*self.host, &self.io, 0);
    }

    /// A request with this body (headers, then the whole body at once).
    fn post(&self, id: u32, path: &str, extra: &[(&str, &str)], body: &str) -> Flow {
        let flow = self.request(id, "POST", path, extra, body.is_empty());
        if body.is_empty() || flow != Flow::Pause {
            return flow;
        }
        self.io
            .bodies
            .borrow_mut()
            .insert(id, body.as_bytes().to_vec());
        self.io.enter(id);
        self.executor
            .on_request_body(&*self.host, &self.io, id, body.len(), true)
    }

    /// Request `id` is gone (done, or reset by its client).
    fn gone(&self, id: u32) {
        self.io.requests.borrow_mut().remove(&id);
        self.executor.on_done(id);
    }
}

fn jwt(scope: &str) -> String {
    make(&format!(r#"{{"scope":"{scope}","sub":"alice"}}"#))
}

fn status(io: &FakeIo, id: u32) -> Option<u32> {
    io.reply_of(id).map(|r| r.status)
}

#[test]
fn a_miss_makes_one_call_then_forwards_and_a_hit_makes_none() {
    let env = Env::new("");
    assert_eq!(env.get(1, "opaque"), Flow::Pause);
    let calls = env.io.dispatched();
    assert_eq!(calls.len(), 1);
    let (call, from, body) = calls[0].clone();
    assert_eq!((from, body.as_str()), (1, "token=opaque"));
    assert_eq!(env.executor.kept(), 1, "the paused request's state");
    let token = jwt("read");
    env.answer(1, call, answer("200", "application/jwt", token.as_bytes()));
    assert_eq!(
        env.io.header_of(1, "authorization"),
        Some(Some(format!("Bearer {token}")))
    );
    assert!(env.io.did.borrow().contains(&Did::Resume(1)));
    assert_eq!(env.executor.kept(), 0, "nothing kept once forwarded");
    env.io.take();
    // The same token again: served at once, no call, no resume (the callback goes on).
    assert_eq!(env.get(2, "opaque"), Flow::Continue);
    assert!(env.io.dispatched().is_empty());
    assert!(!env.io.did.borrow().contains(&Did::Resume(2)));
    assert_eq!(
        env.io.header_of(2, "authorization"),
        Some(Some(format!("Bearer {token}")))
    );
    assert_eq!(env.host.count_of(Counter::Allowed), 2);
}

#[test]
fn concurrent_requests_share_one_call_each_judged_under_its_own_policy() {
    let env = Env::new(
        r#", "policies": [{"name": "write", "match": {"path_prefix": "/w/"},
        "required_scopes": ["write"]}]"#,
    );
    let auth = "Bearer shared";
    env.request(1, "GET", "/api", &[("authorization", auth)], true);
    env.request(2, "GET", "/w/x", &[("authorization", auth)], true);
    env.request(3, "GET", "/api", &[("authorization", auth)], true);
    let calls = env.io.dispatched();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(env.host.count_of(Counter::Coalesced), 2);
    // The answer arrives in another request's context: each waiter is made current.
    env.answer(
        3,
        calls[0].0,
        answer("200", "application/jwt", jwt("read").as_bytes()),
    );
    assert!(env.io.did.borrow().contains(&Did::Resume(1)));
    assert!(env.io.did.borrow().contains(&Did::Resume(3)));
    assert_eq!(status(&env.io, 2), Some(403), "its policy needs write");
    assert_eq!(env.executor.kept(), 0);
}

#[test]
fn a_late_or_unknown_answer_is_ignored_and_a_leaders_reset_orphans_its_call() {
    let env = Env::new("");
    env.get(1, "tok");
    env.get(2, "tok");
    let (call, _, _) = env.io.dispatched()[0].clone();
    // An answer to a call nobody made.
    env.answer(
        1,
        call + 100,
        answer("200", "application/jwt", jwt("read").as_bytes()),
    );
    assert!(env.io.reply_of(1).is_none() && env.executor.kept() == 2);
    // The leader goes away (Envoy cancels its call): the root makes it again.
    env.gone(1);
    env.io.take();
    env.tick();
    let again = env.io.dispatched();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1, 0, "made from the root");
    // The cancelled call's answer, if it came anyway, is late: ignored.
    env.answer(
        0,
        call,
        answer("200", "application/jwt", jwt("read").as_bytes()),
    );
    assert!(env.io.header_of(2, "authorization").is_none());
    env.answer(
        0,
        again[0].0,
        answer("200", "application/jwt", jwt("read").as_bytes()),
    );
    assert!(env.io.did.borrow().contains(&Did::Resume(2)));
}

#[test]
fn a_call_that_cannot_be_made_or_fails_is_a_502_for_everyone_waiting() {
    let env = Env::new("");
    env.io.refuse_dispatch.set(true);
    assert_eq!(env.get(1, "a"), Flow::Pause);
    assert_eq!(status(&env.io, 1), Some(502));
    env.io.refuse_dispatch.set(false);
    env.get(2, "b");
    env.get(3, "b");
    let (call, _, _) = env.io.dispatched()[0].clone();
    // A reset call: no headers at all.
    env.answer(2, call, CallResponse::default());
    assert_eq!(status(&env.io, 2), Some(502));
    assert_eq!(status(&env.io, 3), Some(502));
    assert!(env.io.header_of(2, "authorization").is_none());
    // A synthesized 503 (no upstream header) is the token service unreachable: 502.
    env.get(4, "c");
    let (call, _, _) = *env.io.dispatched().last().unwrap();
    env.answer(
        4,
        call,
        CallResponse {
            headers: Some(HeaderMap::from_pairs(&[(":status", "503")])),
            body: Some(Vec::new()),
            body_size: 0,
        },
    );
    assert_eq!(status(&env.io, 4), Some(502));
}

#[test]
fn warm_up_requests_wait_for_the_first_key_set_then_are_decided_again() {
    use crate::token::jws::tests::{claims, jwks, keys};
    use jwt_simple::prelude::*;
    let keys = keys();
    let env = Env::with(&format!(
        r#"{{{PHANTOM}, "accept_jwt": true, "verify": {{"issuer": "https://login.example.com",
        "audiences": ["api.example.com"], "algorithms": ["ES256"],
        "jwks": {{"cluster": "ts", "path": "/jwks", "timeout_ms": 1000}}}},
        "claims_to_headers": [{{"claim": "sub", "header": "x-user-id"}}]}}"#
    ));
    let token = keys.ec.sign(claims().with_subject("alice")).unwrap();
    let auth = format!("Bearer {token}");
    // The headers need keys: parked, with an owned header it carries.
    let flow = env.request(
        1,
        "GET",
        "/api",
        &[("authorization", &auth), ("x_user_id", "mallory")],
        true,
    );
    assert_eq!(flow, Flow::Pause);
    assert!(env.io.reply_of(1).is_none(), "parked, not refused");
    // The tick starts the key set fetch; its answer loads the keys and wakes the request.
    env.tick();
    let (call, from, _) = env.io.dispatched()[0].clone();
    assert_eq!(from, 0);
    env.answer(
        0,
        call,
        answer("200", "application/json", jwks(&keys).as_bytes()),
    );
    assert_eq!(
        env.io.header_of(1, "authorization"),
        Some(Some(auth.clone())),
        "{:?} {:?}",
        env.io.logs.borrow(),
        env.io.did.borrow()
    );
    assert_eq!(
        env.io.header_of(1, "x_user_id"),
        Some(None),
        "owned: removed"
    );
    assert_eq!(env.io.header_of(1, "x-user-id"), Some(Some("alice".into())));
    assert!(env.io.did.borrow().contains(&Did::Resume(1)));
    // A key set that never comes: refused once the wait passes its bound.
    let late = Env::new(
        r#", "accept_jwt": true, "verify": {"issuer": "i", "audiences": ["a"],
        "algorithms": ["ES256"], "jwks": {"cluster": "ts", "path": "/jwks", "timeout_ms": 100}}"#,
    );
    late.request(1, "GET", "/api", &[("authorization", &auth)], true);
    for _ in 0..5 {
        late.tick();
    }
    assert_eq!(status(&late.io, 1), Some(502));
}

#[test]
fn an_exchange_follows_the_introspection_and_its_token_is_forwarded() {
    let env = Env::new(
        r#", "token_exchange": {"cluster": "ts", "path": "/token", "client_id": "gw",
        "client_secret": "xs"}, "policies": [{"name": "orders", "match": {"path_prefix": "/orders/"},
        "exchange": {"audience": "orders-api"}}]"#,
    );
    env.request(
        1,
        "GET",
        "/orders/1",
        &[("authorization", "Bearer opaque")],
        true,
    );
    let (call, _, body) = env.io.dispatched()[0].clone();
    assert_eq!(body, "token=opaque");
    env.answer(
        1,
        call,
        answer("200", "application/jwt", jwt("read").as_bytes()),
    );
    // Still paused: now waiting for the exchange.
    assert!(env.io.header_of(1, "authorization").is_none());
    let (call, _, body) = env.io.dispatched()[1].clone();
    assert!(
        body.contains("subject_token=opaque") && body.contains("audience=orders-api"),
        "{body}"
    );
    let made = make(r#"{"aud":"orders-api","scope":"read"}"#);
    let doc = format!(
        r#"{{"access_token":"{made}","issued_token_type":"urn:ietf:params:oauth:token-type:jwt","token_type":"N_A","expires_in":60}}"#
    );
    env.answer(1, call, answer("200", "application/json", doc.as_bytes()));
    assert_eq!(
        env.io.header_of(1, "authorization"),
        Some(Some(format!("Bearer {made}")))
    );
}

#[test]
fn a_split_miss_reads_the_remote_store_and_serves_what_it_holds() {
    let env = Env::with(
        r#"{"required_scopes": ["read"], "split": {"max_entries": 100, "remote": {
        "cluster": "webdis", "get_path": "/GET/{key}", "put_path": "/SET/{key}",
        "delete_path": "/DEL/{key}"}}}"#,
    );
    let token = jwt("read");
    let (hp, sig) = token.rsplit_once('.').unwrap();
    env.get(1, sig);
    let calls = env.io.dispatched();
    assert_eq!(calls.len(), 1);
    env.answer(1, calls[0].0, answer("200", "text/plain", hp.as_bytes()));
    assert_eq!(
        env.io.header_of(1, "authorization"),
        Some(Some(format!("Bearer {token}")))
    );
    // Copied into the gateway's own store: the next request is a local hit.
    env.io.take();
    assert_eq!(env.get(2, sig), Flow::Continue);
    assert!(env.io.dispatched().is_empty());
    // A store that fails: 502 store_unavailable (no phantom fallback).
    env.get(3, "c2lnbmF0dXJlLW9mLWFub3RoZXItdG9rZW4");
    let (call, _, _) = env.io.dispatched()[0].clone();
    env.answer(3, call, answer("500", "text/plain", b"down"));
    assert_eq!(status(&env.io, 3), Some(502));
}

#[test]
fn a_publish_body_is_held_read_and_answered_or_timed_out() {
    let env = Env::with(
        r#"{"split": {"max_entries": 100, "publish": {"path": "/_p",
        "secret": "publisher-secret-1234567890"}}}"#,
    );
    let secret = [("authorization", "Bearer publisher-secret-1234567890")];
    assert_eq!(env.request(1, "POST", "/_p", &secret, false), Flow::Pause);
    let token = jwt("read");
    let (hp, sig) = token.rsplit_once('.').unwrap();
    let key =
        crate::token::split::HashEncoding::Base64.encode(&crate::token::split::signature_hash(sig));
    let body = format!(
        r#"{{"signature_hash":"{key}","header_payload":"{hp}","expires_at":{}}}"#,
        T0 / 1000 + 60
    );
    env.io
        .bodies
        .borrow_mut()
        .insert(1, body.clone().into_bytes());
    env.io.enter(1);
    assert_eq!(
        env.executor
            .on_request_body(&*env.host, &env.io, 1, 10, false),
        Flow::Pause
    );
    assert!(env.io.reply_of(1).is_none());
    env.executor
        .on_request_body(&*env.host, &env.io, 1, body.len(), true);
    assert_eq!(status(&env.io, 1), Some(204));
    assert_eq!(env.executor.kept(), 0);
    // Now served from the store.
    assert_eq!(env.get(2, sig), Flow::Continue);
    // A body that never comes: answered when its deadline passes.
    env.request(3, "POST", "/_p", &secret, false);
    for _ in 0..(crate::storage::held::BODY_DEADLINE_MS / TICK_MS + 1) {
        env.tick();
    }
    assert_eq!(status(&env.io, 3), Some(500), "no body ever delivered");
    assert!(env
        .io
        .logs
        .borrow()
        .iter()
        .any(|l| l.contains("allow_on_headers_stop_iteration")));
}

#[test]
fn a_token_response_is_held_and_its_body_replaced() {
    let env = Env::with(
        r#"{"split": {"max_entries": 100, "split_responses": {"paths": ["/oauth/token"]}},
        "claims_to_headers": [{"claim": "sub", "header": "x-user-id"}]}"#,
    );
    let flow = env.request(
        1,
        "POST",
        "/oauth/token",
        &[
            ("x-user-id", "mallory"),
            ("authorization", "Basic Y2xpZW50OnNlY3JldA=="),
        ],
        false,
    );
    assert_eq!(flow, Flow::Continue, "forwarded to the token service");
    assert_eq!(
        env.io.header_of(1, "accept-encoding"),
        Some(Some("identity".into()))
    );
    assert_eq!(env.io.header_of(1, "x-user-id"), Some(None));
    assert!(
        env.io.header_of(1, "authorization").is_none(),
        "the client's own"
    );
    env.io
        .responses
        .borrow_mut()
        .insert(1, HeaderMap::from_pairs(&[(":status", "200")]));
    assert_eq!(
        env.executor
            .on_response_headers(&*env.host, &env.io, 1, false),
        Flow::Pause
    );
    let token = make(&format!(r#"{{"scope":"read","exp":{}}}"#, T0 / 1000 + 300));
    let body = format!(r#"{{"access_token":"{token}","token_type":"Bearer"}}"#);
    env.io
        .bodies
        .borrow_mut()
        .insert(1, body.clone().into_bytes());
    assert_eq!(
        env.executor
            .on_response_body(&*env.host, &env.io, 1, Some(body.len()), true),
        Flow::Continue
    );
    let replaced = env.io.did.borrow().iter().find_map(|d| match d {
        Did::ReplaceBody { body, .. } => Some(String::from_utf8_lossy(body).into_owned()),
        _ => None,
    });
    let sig = token.rsplit_once('.').unwrap().1;
    assert_eq!(
        replaced,
        Some(format!(
            r#"{{"access_token":"{sig}","token_type":"Bearer"}}"#
        ))
    );
}

#[test]
fn a_paused_requests_body_and_trailers_wait_and_its_owned_trailers_are_removed() {
    let env = Env::new("");
    env.get(1, "wait");
    env.io.enter(1);
    assert_eq!(
        env.executor
            .on_request_body(&*env.host, &env.io, 1, 5, false),
        Flow::Pause
    );
    let trailers = HeaderMap::from_pairs(&[("authorization", "Bearer wait"), ("x-ok", "1")]);
    assert_eq!(
        env.executor
            .on_request_trailers(&*env.host, &env.io, 1, &trailers),
        Flow::Pause
    );
    assert!(env.io.did.borrow().contains(&Did::RemoveTrailer {
        id: 1,
        name: "authorization".into()
    }));
    // Once it went on (a hit), trailers flow.
    env.get(2, "other-hit-miss");
    assert_eq!(
        env.executor
            .on_request_trailers(&*env.host, &env.io, 3, &HeaderMap::default()),
        Flow::Continue
    );
}

#[test]
fn a_refused_authorization_edit_is_the_gateways_500() {
    let env = Env::new("");
    env.io.refuse_set.borrow_mut().push("authorization".into());
    env.get(1, "t");
    let (call, _, _) = env.io.dispatched()[0].clone();
    env.answer(
        1,
        call,
        answer("200", "application/jwt", jwt("read").as_bytes()),
    );
    assert_eq!(status(&env.io, 1), Some(500));
    assert!(!env.io.did.borrow().contains(&Did::Resume(1)));
    assert_eq!(env.host.count_of(Counter::InternalError), 1);
}

// ---- revocation --------------------------------------------------------------------------

const REVOKE_SECRET: &str = "revocation-secret-123";

fn revoking(extra: &str) -> String {
    format!(
        r#"{{"required_scopes": ["read"], {PHANTOM}, "revocation": {{"path": "/_revoke",
        "secret": "{REVOKE_SECRET}", "observe_paths": ["/oauth/revoke"]{extra}}}}}"#
    )
}

/// A JWT of `sub` (and `sid`) issued at `iat` (seconds).
fn issued(sub: &str, sid: &str, iat: u64) -> String {
    make(&format!(
        r#"{{"scope":"read","sub":"{sub}","sid":"{sid}","iat":{iat}}}"#
    ))
}

impl Env {
    /// `token` introspected (as request `id`) and answered with `jwt`: forwarded.
    fn resolve(&self, id: u32, token: &str, jwt: &str) {
        assert_eq!(self.get(id, token), Flow::Pause);
        let (call, ..) = self.io.dispatched().last().cloned().unwrap();
        self.answer(id, call, answer("200", "application/jwt", jwt.as_bytes()));
        assert_eq!(
            self.io.header_of(id, "authorization"),
            Some(Some(format!("Bearer {jwt}")))
        );
    }

    /// `token` introspected (as request `id`) and answered with `jwt`, which is revoked: 401.
    fn resolve_refused(&self, id: u32, token: &str, jwt: &str) {
        assert_eq!(self.get(id, token), Flow::Pause);
        let (call, ..) = self.io.dispatched().last().cloned().unwrap();
        self.answer(id, call, answer("200", "application/jwt", jwt.as_bytes()));
        assert_eq!(status(&self.io, id), Some(401));
    }

    fn revoke(&self, id: u32, form: &str) -> Flow {
        let secret = format!("Bearer {REVOKE_SECRET}");
        self.post(id, "/_revoke", &[("authorization", &secret)], form)
    }
}

#[test]
fn a_revoked_token_is_refused_on_every_worker_once_the_api_answers() {
    let a = Env::with(&revoking(""));
    let b = Env::on(a.host.clone(), &revoking(""));
    let jwt = issued("alice", "s-1", T0 / 1000 - 10);
    a.resolve(1, "opaque", &jwt);
    assert_eq!(
        b.get(2, "opaque"),
        Flow::Continue,
        "a shared hit, kept by b"
    );
    assert_eq!(a.get(3, "opaque"), Flow::Continue, "a's own copy");
    // b revokes: it waits until a has applied the revocation.
    assert_eq!(b.revoke(4, "token=opaque"), Flow::Pause);
    assert_eq!(status(&b.io, 4), None, "not before every worker applied it");
    a.tick();
    b.tick_only();
    assert_eq!(status(&b.io, 4), Some(200));
    assert_eq!(b.io.reply_of(4).unwrap().body, b"");
    // Refused everywhere, from every copy, with no fallback to introspection.
    let calls = a.io.dispatched().len();
    assert_eq!(a.get(5, "opaque"), Flow::Pause);
    assert_eq!(status(&a.io, 5), Some(401));
    assert_eq!(b.get(6, "opaque"), Flow::Pause);
    assert_eq!(status(&b.io, 6), Some(401));
    assert_eq!(a.io.dispatched().len(), calls, "no introspection");
    assert_eq!(a.host.count_of(Counter::DeniedRevoked), 2);
    assert_eq!(a.host.count_of(Counter::RevokedToken), 1);
    let challenge = a.io.reply_of(5).unwrap().headers;
    assert!(challenge
        .iter()
        .any(|(n, v)| *n == "www-authenticate" && v.contains("invalid_token")));
}

#[test]
fn a_hit_on_a_workers_own_copy_reads_no_shared_data_even_after_revocations() {
    let env = Env::with(&revoking(""));
    env.resolve(1, "kept", &issued("alice", "s-1", T0 / 1000 - 10));
    env.revoke(2, "sub=bob");
    env.revoke(3, "token=other");
    env.tick();
    let (reads, writes) = (env.host.reads(), env.host.writes());
    for id in 10..20 {
        assert_eq!(env.get(id, "kept"), Flow::Continue);
    }
    assert_eq!(env.host.reads(), reads, "no shared-data read on a hit");
    assert_eq!(env.host.writes(), writes);
}

#[test]
fn the_api_is_strict_about_who_asks_and_what() {
    let env = Env::with(&revoking(""));
    let secret = format!("Bearer {REVOKE_SECRET}");
    let auth = [("authorization", secret.as_str())];
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, u32);
    let cases: [Case<'_>; 7] = [
        (
            "POST",
            &[("authorization", "Bearer wrong-secret-1234567")],
            "token=a",
            401,
        ),
        ("POST", &[], "token=a", 401),
        ("GET", &auth, "", 405),
        ("POST", &auth, "", 400),
        ("POST", &auth, "token=a&sub=b", 400),
        ("POST", &auth, "token_hash=not-a-hash", 400),
        ("POST", &auth, "token=never-seen", 200),
    ];
    for (i, (method, headers, body, want)) in cases.into_iter().enumerate() {
        let id = 10 + i as u32;
        if method == "POST" {
            env.post(id, "/_revoke", headers, body);
        } else {
            env.request(id, method, "/_revoke", headers, true);
        }
        assert_eq!(status(&env.io, id), Some(want), "{method} {body}");
        let reply = env.io.reply_of(id).unwrap();
        assert!(reply
            .headers
            .iter()
            .any(|(n, v)| *n == "cache-control" && v == "no-store"));
        if want != 200 {
            let error: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
            assert!(error["error"].is_string(), "{error}");
        }
    }
    let big = format!("token={}", "a".repeat(revocation::MAX_API_BODY));
    env.post(30, "/_revoke", &auth, &big);
    assert_eq!(status(&env.io, 30), Some(413));
    assert_eq!(env.host.count_of(Counter::RevocationRefused), 7);
}

#[test]
fn a_subject_revocation_spares_tokens_issued_after_it() {
    let env = Env::with(&revoking(""));
    let now_s = T0 / 1000;
    let old = issued("alice", "s-1", now_s - 100);
    env.resolve(1, "old", &old);
    let other = issued("bob", "s-2", now_s - 100);
    env.resolve(2, "other", &other);
    env.revoke(3, "sub=alice");
    assert_eq!(
        status(&env.io, 3),
        Some(200),
        "one worker: confirmed at once"
    );
    assert_eq!(env.get(4, "old"), Flow::Pause);
    assert_eq!(status(&env.io, 4), Some(401));
    assert_eq!(env.get(5, "other"), Flow::Continue, "bob is not alice");
    // Issued within the clock skew after it: refused (a token service whose clock runs
    // ahead must not slip a token past the revocation).
    env.tick();
    let skewed = issued("alice", "s-3", now_s + 1);
    env.resolve_refused(20, "skewed", &skewed);
    // Issued after that: served.
    let later = crate::config::DEFAULT_CLOCK_SKEW_S + 1;
    let new = issued("alice", "s-3", now_s + later);
    env.resolve(6, "new", &new);
    assert_eq!(env.get(7, "new"), Flow::Continue);
    // A session: only its tokens.
    env.revoke(8, "sid=s-2");
    assert_eq!(status(&env.io, 8), Some(200));
    assert_eq!(env.get(9, "other"), Flow::Pause);
    assert_eq!(status(&env.io, 9), Some(401));
    assert_eq!(env.host.count_of(Counter::RevokedSubject), 1);
    assert_eq!(env.host.count_of(Counter::RevokedSession), 1);
}

#[test]
fn an_introspection_in_flight_when_its_token_is_revoked_is_refused_and_kept_nowhere() {
    let a = Env::with(&revoking(""));
    let b = Env::on(a.host.clone(), &revoking(""));
    assert_eq!(a.get(1, "slow"), Flow::Pause);
    let (call, ..) = a.io.dispatched()[0].clone();
    b.revoke(2, "token=slow");
    a.tick();
    b.tick_only();
    assert_eq!(status(&b.io, 2), Some(200));
    let jwt = issued("alice", "s-1", T0 / 1000 - 10);
    a.answer(1, call, answer("200", "application/jwt", jwt.as_bytes()));
    assert_eq!(status(&a.io, 1), Some(401));
    // Nothing was kept: the next request asks again, and is refused again.
    a.io.take();
    assert_eq!(a.get(3, "slow"), Flow::Pause);
    let (call, ..) = a.io.dispatched()[0].clone();
    a.answer(3, call, answer("200", "application/jwt", jwt.as_bytes()));
    assert_eq!(status(&a.io, 3), Some(401));
}

#[test]
fn a_revocation_seen_on_its_way_to_the_token_service_applies_when_it_answers_200() {
    let a = Env::with(&revoking(""));
    let b = Env::on(a.host.clone(), &revoking(""));
    a.resolve(1, "opaque", &issued("alice", "s-1", T0 / 1000 - 10));
    let client = [
        ("authorization", "Basic YXBwOnNlY3JldA=="),
        ("x_user_id", "x"),
    ];
    // Forwarded once its body is read (the client's own authentication goes on).
    assert_eq!(
        a.post(
            2,
            "/oauth/revoke",
            &client,
            "token=opaque&token_type_hint=access_token"
        ),
        Flow::Continue
    );
    assert!(
        a.io.header_of(2, "authorization").is_none(),
        "left as it is"
    );
    let respond = |env: &Env, id: u32, status: &str| {
        env.io
            .responses
            .borrow_mut()
            .insert(id, HeaderMap::from_pairs(&[(":status", status)]));
        env.io.enter(id);
        env.executor
            .on_response_headers(&*env.host, &env.io, id, true)
    };
    // The token service answers 200: held until b has applied it too.
    assert_eq!(respond(&a, 2, "200"), Flow::Pause);
    b.tick();
    a.tick_only();
    assert!(a.io.did.borrow().contains(&Did::ResumeResponse(2)));
    assert_eq!(a.get(3, "opaque"), Flow::Pause);
    assert_eq!(status(&a.io, 3), Some(401));
    // Refused by the token service (or not naming one token): nothing is revoked.
    a.resolve(4, "kept", &issued("carol", "s-9", T0 / 1000 - 10));
    a.post(5, "/oauth/revoke", &client, "token=kept");
    assert_eq!(respond(&a, 5, "401"), Flow::Continue);
    // Two tokens named: refused here, never forwarded (the token service might revoke one).
    let before = a.io.dispatched().len();
    a.post(6, "/oauth/revoke", &client, "token=kept&token=other");
    assert_eq!(status(&a.io, 6), Some(400));
    assert_eq!(a.io.dispatched().len(), before);
    assert_eq!(a.get(7, "kept"), Flow::Continue);
    assert_eq!(a.host.count_of(Counter::RevokedToken), 1);
}

#[test]
fn full_marks_refuse_a_revocation_and_forget_none() {
    let env = Env::with(&revoking(r#", "max_marks": 8"#));
    for i in 0..8 {
        env.revoke(100 + i, &format!("token=t{i}"));
        assert_eq!(status(&env.io, 100 + i), Some(200));
    }
    env.revoke(200, "token=one-too-many");
    let reply = env.io.reply_of(200).unwrap();
    assert_eq!(reply.status, 503);
    assert!(reply.headers.iter().any(|(n, _)| *n == "retry-after"));
    assert_eq!(env.host.count_of(Counter::RevocationMarksFull), 1);
    // Every mark is kept: a token revoked before is still refused.
    assert_eq!(env.get(201, "t3"), Flow::Pause);
    let (call, ..) = env.io.dispatched().last().cloned().unwrap();
    let jwt = issued("x", "y", T0 / 1000);
    env.answer(201, call, answer("200", "application/jwt", jwt.as_bytes()));
    assert_eq!(status(&env.io, 201), Some(401));
}

#[test]
fn observed_marks_give_way_and_never_block_the_operator() {
    let env = Env::with(&revoking(r#", "max_marks": 8"#));
    let client = [("authorization", "Basic Y2xpZW50OnNlY3JldA==")];
    let respond = |id: u32| {
        env.io
            .responses
            .borrow_mut()
            .insert(id, HeaderMap::from_pairs(&[(":status", "200")]));
        env.io.enter(id);
        env.executor
            .on_response_headers(&*env.host, &env.io, id, true)
    };
    // A stranger fills the one bucket with values the token service answers 200 for.
    for i in 0..8 {
        env.host.now.set(T0 + u64::from(i) * 1_000);
        env.post(100 + i, "/oauth/revoke", &client, &format!("token=junk{i}"));
        respond(100 + i);
    }
    assert_eq!(env.host.count_of(Counter::RevokedToken), 8);
    // Another observed one never takes their place (a flood cannot push out a token revoked
    // that way): 503, and nothing given way.
    env.post(150, "/oauth/revoke", &client, "token=junk-flood");
    assert_eq!(respond(150), Flow::Pause);
    assert_eq!(status(&env.io, 150), Some(503));
    assert_eq!(env.host.count_of(Counter::RevocationObservedEvicted), 0);
    // The operator's revocations still land, each in the place of the oldest observed mark.
    for i in 0..8 {
        env.revoke(200 + i, &format!("sub=user{i}"));
        assert_eq!(status(&env.io, 200 + i), Some(200), "revocation {i}");
    }
    assert_eq!(env.host.count_of(Counter::RevocationObservedEvicted), 8);
    // Its own marks are never dropped: the ninth has no room.
    env.revoke(300, "sub=one-too-many");
    assert_eq!(status(&env.io, 300), Some(503));
    // And an observed one finds none either.
    env.post(301, "/oauth/revoke", &client, "token=more-junk");
    assert_eq!(respond(301), Flow::Pause);
    assert_eq!(status(&env.io, 301), Some(503));
}

#[test]
fn a_logout_refused_for_want_of_room_can_be_sent_again() {
    use crate::token::jws::tests::{jwks, keys, logout_token, ISS};
    let k = keys();
    let json = format!(
        r#"{{"required_scopes": ["read"], {PHANTOM},
        "verify": {{"issuer": "{ISS}", "audiences": ["api"], "algorithms": ["ES256"],
                   "jwks_inline": {}}},
        "revocation": {{"path": "/_revoke", "secret": "{REVOKE_SECRET}", "max_marks": 8,
                       "mark_ttl_s": 600,
                       "backchannel_logout": {{"path": "/_bcl", "audiences": ["web"]}}}}}}"#,
        jwks(&k)
    );
    let env = Env::with(&json);
    for i in 0..8 {
        env.revoke(100 + i, &format!("token=t{i}"));
        assert_eq!(status(&env.io, 100 + i), Some(200));
    }
    let logout = logout_token(&k.ec, Some("logout+jwt"), |c| {
        c.insert("exp".into(), (T0 / 1000 + 3600).into());
    });
    let form = format!("logout_token={logout}");
    env.post(1, "/_bcl", &[], &form);
    assert_eq!(
        status(&env.io, 1),
        Some(503),
        "no room for the session's mark"
    );
    // The provider sends it again once there is room: not a replay.
    env.host.now.set(T0 + 601_000);
    env.post(2, "/_bcl", &[], &form);
    assert_eq!(status(&env.io, 2), Some(200));
    env.post(3, "/_bcl", &[], &form);
    assert_eq!(status(&env.io, 3), Some(400), "now it is one");
}

#[test]
fn a_backchannel_logout_signs_a_session_out_once() {
    use crate::token::jws::tests::{es256_jws, jwks, keys, logout_token, ISS};
    let k = keys();
    let json = format!(
        r#"{{"required_scopes": ["read"], {PHANTOM},
        "verify": {{"issuer": "{ISS}", "audiences": ["api"], "algorithms": ["ES256"],
                   "jwks_inline": {}}},
        "revocation": {{"backchannel_logout": {{"path": "/_bcl", "audiences": ["web"]}}}}}}"#,
        jwks(&k)
    );
    let env = Env::with(&json);
    let now_s = T0 / 1000;
    let access = |sid: &str| {
        es256_jws(
            &k.ec,
            &serde_json::json!({"alg": "ES256", "kid": "ec-1"}),
            &serde_json::json!({"iss": ISS, "aud": "api", "sub": "alice", "sid": sid,
                "scope": "read", "iat": now_s - 10, "exp": now_s + 600}),
        )
    };
    env.resolve(1, "opaque", &access("s-1"));
    env.resolve(2, "other-session", &access("s-2"));
    let logout = logout_token(&k.ec, Some("logout+jwt"), |c| {
        c.remove("sub");
    });
    let form = format!("logout_token={logout}");
    env.post(3, "/_bcl", &[], &form);
    let reply = env.io.reply_of(3).unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply
        .headers
        .contains(&("cache-control", "no-store".into())));
    assert_eq!(env.get(4, "opaque"), Flow::Pause);
    assert_eq!(status(&env.io, 4), Some(401), "session s-1 signed out");
    assert_eq!(env.get(5, "other-session"), Flow::Continue, "s-2 goes on");
    // The same logout token again: a replay.
    env.post(6, "/_bcl", &[], &form);
    let reply = env.io.reply_of(6).unwrap();
    assert_eq!(reply.status, 400);
    let error: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(error["error"], "invalid_request");
    // Hostile ones: each refused, none revokes anything.
    let hostile = [
        logout_token(&k.ec, None, |c| drop(c.insert("nonce".into(), "n".into()))),
        logout_token(&k.ec, None, |c| drop(c.insert("aud".into(), "api".into()))),
        logout_token(&k.ec, Some("JWT"), |c| {
            drop(c.insert("jti".into(), "j-2".into()))
        }),
        logout_token(&k.ec, None, |c| drop(c.remove("events"))),
    ];
    for (i, token) in hostile.iter().enumerate() {
        let id = 10 + i as u32;
        env.post(id, "/_bcl", &[], &format!("logout_token={token}"));
        assert_eq!(status(&env.io, id), Some(400), "hostile {i}");
    }
    env.request(20, "GET", "/_bcl", &[], true);
    assert_eq!(status(&env.io, 20), Some(405));
    assert_eq!(env.get(21, "other-session"), Flow::Continue);
    assert_eq!(env.host.count_of(Counter::BackchannelLogoutAccepted), 1);
    assert_eq!(env.host.count_of(Counter::BackchannelLogoutRefused), 5);
    // Without a sid: every session of the subject.
    let everyone = logout_token(&k.ec, None, |c| {
        c.remove("sid");
        c.insert("jti".into(), "j-all".into());
    });
    env.post(22, "/_bcl", &[], &format!("logout_token={everyone}"));
    assert_eq!(status(&env.io, 22), Some(200));
    assert_eq!(env.get(23, "other-session"), Flow::Pause);
    assert_eq!(status(&env.io, 23), Some(401));
    assert_eq!(env.host.count_of(Counter::RevokedSubject), 1);
}

// ---- the JWT's journey ---------------------------------------------------------------------

#[test]
fn a_token_that_would_expire_on_its_way_is_refused_with_a_reason() {
    let env = Env::new(r#", "min_remaining_lifetime_s": 30, "max_lifetime_s": 900"#);
    let now_s = T0 / 1000;
    let soon = make(&format!(
        r#"{{"scope":"read","iat":{},"exp":{}}}"#,
        now_s - 10,
        now_s + 5
    ));
    let later = make(&format!(
        r#"{{"scope":"read","iat":{},"exp":{}}}"#,
        now_s - 10,
        now_s + 60
    ));
    let long = make(&format!(
        r#"{{"scope":"read","iat":{},"exp":{}}}"#,
        now_s - 10,
        now_s + 3600
    ));
    for (id, token, jwt) in [(1, "soon", &soon), (2, "later", &later), (3, "long", &long)] {
        env.get(id, token);
        let (call, ..) = env.io.dispatched().last().cloned().unwrap();
        env.answer(id, call, answer("200", "application/jwt", jwt.as_bytes()));
    }
    let reply = env.io.reply_of(1).unwrap();
    assert_eq!(reply.status, 401);
    let challenge = &reply
        .headers
        .iter()
        .find(|(n, _)| *n == "www-authenticate")
        .unwrap()
        .1;
    assert!(
        challenge.contains("error_description=\"The access token expires too soon"),
        "{challenge}"
    );
    assert_eq!(
        env.io.header_of(2, "authorization"),
        Some(Some(format!("Bearer {later}")))
    );
    assert_eq!(
        status(&env.io, 3),
        Some(401),
        "issued for an hour, 900 s allowed"
    );
    // A hit is judged again: with time, `later` is refused too.
    env.host.now.set(T0 + 31_000);
    assert_eq!(env.get(4, "later"), Flow::Pause);
    assert_eq!(status(&env.io, 4), Some(401));
    assert_eq!(env.host.count_of(Counter::DeniedExpiresTooSoon), 2);
    assert_eq!(env.host.count_of(Counter::DeniedLifetimeTooLong), 1);
}

#[test]
fn numeric_dates_with_a_fraction_are_dates() {
    // RFC 7519 §2: a NumericDate may have a fraction; it is never read as "no exp". One that
    // is not a date is refused.
    let env = Env::new(r#", "min_remaining_lifetime_s": 30"#);
    let now_s = T0 / 1000;
    for (id, exp) in [
        (5, format!("{}.5", now_s + 5)),
        (6, r#""soon""#.to_owned()),
        (7, format!("{}.25", now_s + 600)),
    ] {
        let jwt = make(&format!(
            r#"{{"scope":"read","iat":{},"exp":{exp}}}"#,
            now_s - 10
        ));
        env.get(id, &format!("frac-{id}"));
        let (call, ..) = env.io.dispatched().last().cloned().unwrap();
        env.answer(id, call, answer("200", "application/jwt", jwt.as_bytes()));
    }
    assert_eq!(status(&env.io, 5), Some(401), "5.5 s left, 30 s required");
    assert_eq!(
        status(&env.io, 6),
        Some(502),
        "an answer whose exp is not a date"
    );
    assert!(env.io.header_of(7, "authorization").is_some(), "600 s left");
}

#[test]
fn an_embedded_token_is_what_the_api_receives() {
    let env = Env::new(
        r#", "claims_to_headers": [{"claim": "sub", "header": "x-sub"}],
        "policies": [{"name": "pay", "match": {"path_prefix": "/pay/"},
                      "embedded_token": {"claim": "pay_token"}}]"#,
    );
    let now_s = T0 / 1000;
    let inner = make(&format!(
        r#"{{"sub":"inner","scope":"pay","exp":{}}}"#,
        now_s + 60
    ));
    let outer = |claim: &str| {
        make(&format!(
            r#"{{"sub":"outer","scope":"read","exp":{}{claim}}}"#,
            now_s + 300
        ))
    };
    let cases = [
        ("good", outer(&format!(r#","pay_token":"{inner}""#))),
        ("missing", outer("")),
        ("not-a-jwt", outer(r#","pay_token":"opaque-value""#)),
        (
            "outlives",
            outer(&format!(
                r#","pay_token":"{}""#,
                make(&format!(r#"{{"sub":"x","exp":{}}}"#, now_s + 3600))
            )),
        ),
    ];
    for (i, (token, jwt)) in cases.iter().enumerate() {
        let id = 10 + i as u32;
        let auth = format!("Bearer {token}");
        env.request(id, "GET", "/pay/1", &[("authorization", &auth)], true);
        let (call, ..) = env.io.dispatched().last().cloned().unwrap();
        env.answer(id, call, answer("200", "application/jwt", jwt.as_bytes()));
    }
    assert_eq!(
        env.io.header_of(10, "authorization"),
        Some(Some(format!("Bearer {inner}")))
    );
    assert_eq!(
        env.io.header_of(10, "x-sub"),
        Some(Some("inner".into())),
        "claims of the forwarded token"
    );
    assert_eq!(status(&env.io, 11), Some(403));
    assert_eq!(status(&env.io, 12), Some(401));
    assert_eq!(status(&env.io, 13), Some(401));
    // Again: this worker's copy; and elsewhere the outer token itself.
    let auth = "Bearer good";
    assert_eq!(
        env.request(20, "GET", "/pay/2", &[("authorization", auth)], true),
        Flow::Continue
    );
    assert_eq!(
        env.io.header_of(20, "authorization"),
        Some(Some(format!("Bearer {inner}")))
    );
    assert_eq!(
        env.request(21, "GET", "/api", &[("authorization", auth)], true),
        Flow::Continue
    );
    assert_eq!(
        env.io.header_of(21, "authorization"),
        Some(Some(format!("Bearer {}", cases[0].1)))
    );
    assert_eq!(env.host.count_of(Counter::EmbeddedForwarded), 2);
    assert_eq!(env.host.count_of(Counter::EmbeddedRefused), 3);
}

#[test]
fn an_exchanged_token_with_too_little_life_left_is_exchanged_again() {
    let env = Env::new(
        r#", "token_exchange": {"cluster": "ts", "path": "/token", "client_id": "gw",
        "client_secret": "xs"}, "policies": [{"name": "orders", "match": {"path_prefix": "/orders/"},
        "exchange": {"audience": "orders-api"}, "min_remaining_lifetime_s": 30}]"#,
    );
    let now_s = T0 / 1000;
    let made = |exp: u64| {
        let jwt = make(&format!(
            r#"{{"aud":"orders-api","scope":"read","exp":{exp}}}"#
        ));
        let doc = format!(
            r#"{{"access_token":"{jwt}","issued_token_type":"urn:ietf:params:oauth:token-type:jwt","token_type":"N_A"}}"#
        );
        (jwt, doc)
    };
    let auth = [("authorization", "Bearer opaque")];
    env.request(1, "GET", "/orders/1", &auth, true);
    let (call, ..) = env.io.dispatched()[0].clone();
    env.answer(
        1,
        call,
        answer("200", "application/jwt", jwt("read").as_bytes()),
    );
    let (short, doc) = made(now_s + 40);
    let (call, ..) = env.io.dispatched()[1].clone();
    env.answer(1, call, answer("200", "application/json", doc.as_bytes()));
    assert_eq!(
        env.io.header_of(1, "authorization"),
        Some(Some(format!("Bearer {short}")))
    );
    // 15 s later it has 25 s left: exchanged again rather than served.
    env.host.now.set(T0 + 15_000);
    assert_eq!(env.request(2, "GET", "/orders/2", &auth, true), Flow::Pause);
    assert_eq!(env.io.dispatched().len(), 3, "a new exchange");
    let (call, ..) = env.io.dispatched()[2].clone();
    // The new one is short too: refused.
    let (_, doc) = made(now_s + 15 + 20);
    env.answer(2, call, answer("200", "application/json", doc.as_bytes()));
    assert_eq!(status(&env.io, 2), Some(401));
    env.request(3, "GET", "/orders/3", &auth, true);
    let (call, ..) = env.io.dispatched()[3].clone();
    let (long, doc) = made(now_s + 600);
    env.answer(3, call, answer("200", "application/json", doc.as_bytes()));
    assert_eq!(
        env.io.header_of(3, "authorization"),
        Some(Some(format!("Bearer {long}")))
    );
}

// ---- browser apps (`cookies`) ------------------------------------------------------------------

const COOKIE_KEY: &str = "4e4636356d65563e4c73233847503e3b21436e6f7629724950526f4b5e2e4e50";

fn browser_env(cors: bool) -> Env {
    let cors = if cors {
        r#", "cors": {"max_age_s": 600}"#
    } else {
        ""
    };
    Env::new(&format!(
        r#", "cookies": {{"name_prefix": "ex", "encryption_keys": ["{COOKIE_KEY}"],
        "trusted_web_origins": ["https://app.example.com"]{cors}}},
        "policies": [{{"name": "mobile", "match": {{"path_prefix": "/mobile/"}}, "credentials": "bearer"}},
                     {{"name": "web", "match": {{"path_prefix": "/web/"}}, "credentials": "cookie"}}]"#
    ))
}

fn sealed(plain: &str, iv: u8) -> String {
    let key = crate::token::cookie::key_from_hex(COOKIE_KEY).unwrap();
    crate::token::cookie::encrypt(&key, &[iv; 12], plain)
}

impl Env {
    /// A browser request: its cookies, its origin, its method and extra headers.
    fn browse(
        &self,
        id: u32,
        method: &str,
        path: &str,
        cookies: &str,
        extra: &[(&str, &str)],
    ) -> Flow {
        let mut headers = vec![("cookie", cookies)];
        headers.extend_from_slice(extra);
        self.request(id, method, path, &headers, true)
    }
}

#[test]
fn a_browser_cookie_becomes_the_token_after_the_origin_and_csrf_checks() {
    let env = browser_env(false);
    let jwt = jwt("read");
    env.resolve(1, "opaque-1", &jwt);
    let at = sealed("opaque-1", 1);
    let csrf = sealed("csrf-value-1", 2);
    let cookies = format!("theme=dark; ex-at={at}; ex-csrf={csrf}");
    let origin = ("origin", "https://app.example.com");
    // A same-origin read: no Origin needed without `cors`.
    assert_eq!(env.browse(2, "GET", "/api", &cookies, &[]), Flow::Continue);
    assert_eq!(
        env.io.header_of(2, "authorization"),
        Some(Some(format!("Bearer {jwt}")))
    );
    assert_eq!(
        env.io.header_of(2, "cookie"),
        Some(Some("theme=dark".into())),
        "ours removed"
    );
    // A write needs the trusted origin and the CSRF header matching the cookie.
    let good = [origin, ("x-ex-csrf", "csrf-value-1")];
    assert_eq!(
        env.browse(3, "POST", "/api", &cookies, &good),
        Flow::Continue
    );
    assert_eq!(
        env.io.header_of(3, "x-ex-csrf"),
        Some(None),
        "the CSRF header removed"
    );
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], u32);
    let cases: [Case<'_>; 5] = [
        ("no CSRF header", &[origin], 401),
        (
            "another CSRF value",
            &[origin, ("x-ex-csrf", "csrf-value-2")],
            401,
        ),
        ("no origin", &[("x-ex-csrf", "csrf-value-1")], 401),
        (
            "an untrusted origin",
            &[
                ("origin", "https://evil.example.com"),
                ("x-ex-csrf", "csrf-value-1"),
            ],
            401,
        ),
        (
            "a look-alike origin",
            &[
                ("origin", "https://app.example.com.evil.com"),
                ("x-ex-csrf", "csrf-value-1"),
            ],
            401,
        ),
    ];
    for (i, (what, headers, want)) in cases.iter().enumerate() {
        let id = 10 + i as u32;
        env.browse(id, "POST", "/api", &cookies, headers);
        assert_eq!(status(&env.io, id), Some(*want), "{what}");
    }
    // A tampered cookie, a cookie twice, a cookie under another key.
    let tampered = format!("ex-at={}A", &at[..at.len() - 1]);
    env.browse(20, "GET", "/api", &tampered, &[]);
    assert_eq!(status(&env.io, 20), Some(401));
    env.browse(
        21,
        "GET",
        "/api",
        &format!("ex-at={at}"),
        &[("cookie", &format!("ex-at={at}"))],
    );
    assert_eq!(status(&env.io, 21), Some(400), "the same cookie twice");
    // With `Authorization`, the cookies are not read (a bad one does not matter).
    let bearer = "Bearer opaque-1".to_owned();
    assert_eq!(
        env.browse(22, "GET", "/api", &tampered, &[("authorization", &bearer)]),
        Flow::Continue
    );
    // Per policy: a bearer-only route ignores cookies; a cookie-only route refuses a bearer.
    env.browse(23, "GET", "/mobile/x", &cookies, &[]);
    assert_eq!(status(&env.io, 23), Some(401));
    assert_eq!(
        env.browse(24, "GET", "/web/x", &cookies, &[]),
        Flow::Continue
    );
    env.request(25, "GET", "/web/x", &[("authorization", &bearer)], true);
    assert_eq!(status(&env.io, 25), Some(401));
    assert_eq!(env.host.count_of(Counter::DeniedCsrf), 2);
    assert_eq!(env.host.count_of(Counter::DeniedOrigin), 3);
    assert_eq!(env.host.count_of(Counter::CookieDecryptFailed), 1);
}

#[test]
fn cors_preflights_are_answered_and_responses_carry_cors_headers() {
    let env = browser_env(true);
    let jwt = jwt("read");
    env.resolve(1, "opaque-2", &jwt);
    let cookies = format!("ex-at={}", sealed("opaque-2", 3));
    let preflight = [
        ("origin", "https://app.example.com"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "content-type, x-trace"),
    ];
    env.request(2, "OPTIONS", "/api", &preflight, true);
    let reply = env.io.reply_of(2).unwrap();
    assert_eq!(reply.status, 204);
    let header = |r: &crate::reply::LocalReply, n: &str| {
        r.headers
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        header(&reply, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(
        header(&reply, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert_eq!(
        header(&reply, "access-control-allow-headers").as_deref(),
        Some("content-type, x-trace, x-ex-csrf")
    );
    assert_eq!(
        header(&reply, "access-control-max-age").as_deref(),
        Some("600")
    );
    env.request(
        3,
        "OPTIONS",
        "/api",
        &[
            ("origin", "https://evil.example.com"),
            ("access-control-request-method", "GET"),
        ],
        true,
    );
    let refused = env.io.reply_of(3).unwrap();
    assert_eq!(refused.status, 403);
    assert!(header(&refused, "access-control-allow-origin").is_none());
    // With `cors`, a read without Origin is refused; with it, its response gets the headers.
    env.browse(4, "GET", "/api", &cookies, &[]);
    assert_eq!(status(&env.io, 4), Some(401));
    assert_eq!(
        env.browse(
            5,
            "GET",
            "/api",
            &cookies,
            &[("origin", "https://app.example.com")]
        ),
        Flow::Continue
    );
    env.io
        .responses
        .borrow_mut()
        .insert(5, HeaderMap::from_pairs(&[(":status", "200")]));
    env.io.enter(5);
    assert_eq!(
        env.executor
            .on_response_headers(&*env.host, &env.io, 5, false),
        Flow::Continue
    );
    let set: Vec<String> = env
        .io
        .did
        .borrow()
        .iter()
        .filter_map(|d| match d {
            Did::SetResponse { id: 5, name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        set,
        [
            "access-control-allow-origin",
            "access-control-allow-credentials",
            "vary"
        ]
    );
    // The API's own `vary` is added to, never replaced.
    env.browse(
        7,
        "GET",
        "/api",
        &cookies,
        &[("origin", "https://app.example.com")],
    );
    env.io.responses.borrow_mut().insert(
        7,
        HeaderMap::from_pairs(&[(":status", "200"), ("vary", "accept-encoding")]),
    );
    env.io.enter(7);
    env.executor
        .on_response_headers(&*env.host, &env.io, 7, false);
    let vary: Vec<Option<String>> = env
        .io
        .did
        .borrow()
        .iter()
        .filter_map(|d| match d {
            Did::SetResponse { id: 7, name, value } if name == "vary" => Some(value.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(vary, [Some("accept-encoding, origin".to_owned())]);
    // An error for a trusted origin carries them too.
    env.browse(
        6,
        "POST",
        "/api",
        &cookies,
        &[("origin", "https://app.example.com")],
    );
    let denied = env.io.reply_of(6).unwrap();
    assert_eq!(denied.status, 401);
    assert_eq!(
        header(&denied, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(env.host.count_of(Counter::CorsPreflightAnswered), 1);
    assert_eq!(env.host.count_of(Counter::CorsPreflightRefused), 1);
}

// ---- the fleet (phantom cache, level 2) ----------------------------------------------------

const FLEET: &str = r#", "cache": {"negative_ttl_s": 30}, "fleet": {"cluster": "webdis"}"#;

/// The calls made so far: (call id, cluster, path, body).
fn calls_of(io: &FakeIo) -> Vec<(u32, String, String, String)> {
    io.did
        .borrow()
        .iter()
        .filter_map(|d| match d {
            Did::Dispatch {
                call,
                cluster,
                path,
                body,
                ..
            } => Some((*call, cluster.clone(), path.clone(), body.clone())),
            _ => None,
        })
        .collect()
}

/// Gateway `env` introspects `token` (the fleet has nothing): the token service answers
/// `answered`; returns the sealed value it writes to the fleet, and the write's path.
fn introspected_and_written(
    env: &Env,
    id: u32,
    token: &str,
    answered: CallResponse,
) -> (String, String) {
    env.get(id, token);
    let calls = calls_of(&env.io);
    let read = calls.last().unwrap().clone();
    assert_eq!(read.1, "webdis");
    assert!(
        read.2.starts_with("/GET/tf:p:") && read.2.ends_with(".txt"),
        "{read:?}"
    );
    env.answer(id, read.0, answer("404", "text/plain", b""));
    let calls = calls_of(&env.io);
    let introspection = calls.last().unwrap().clone();
    assert_eq!(
        (introspection.1.as_str(), introspection.3.clone()),
        ("ts", format!("token={token}"))
    );
    env.answer(id, introspection.0, answered);
    let write = calls_of(&env.io).last().unwrap().clone();
    assert_eq!(write.1, "webdis");
    assert!(write.2.starts_with("/SETEX/tf:p:"), "{write:?}");
    assert_eq!(
        write.2[7..write.2.rfind('/').unwrap()],
        read.2[5..read.2.len() - 4]
    );
    env.answer(
        id,
        write.0,
        answer("200", "application/json", b"{\"SETEX\":[true,\"OK\"]}"),
    );
    (write.3, write.2)
}

#[test]
fn a_fleet_introspects_a_token_once_and_its_entries_are_sealed() {
    let (a, b) = (Env::new(FLEET), Env::new(FLEET));
    let token = jwt("read");
    let (sealed, path) = introspected_and_written(
        &a,
        1,
        "opaque-1",
        answer("200", "application/jwt", token.as_bytes()),
    );
    assert_eq!(
        a.io.header_of(1, "authorization"),
        Some(Some(format!("Bearer {token}")))
    );
    assert_eq!(a.host.count_of(Counter::FleetWrites), 1);
    assert_eq!(a.host.count_of(Counter::FleetWriteFailed), 0);
    // Nothing readable: not the token, not a JWT part, not a claim.
    for part in token.split('.').chain(["opaque-1", "alice"]) {
        assert!(!sealed.contains(part) && !path.contains(part));
    }
    let ttl: u64 = path.rsplit('/').next().unwrap().parse().unwrap();
    assert!(
        (1..=300).contains(&ttl),
        "the entry's remaining life: {ttl}"
    );
    // Gateway B: the fleet's entry, no introspection.
    b.get(1, "opaque-1");
    let read = calls_of(&b.io)[0].clone();
    b.answer(1, read.0, answer("200", "text/plain", sealed.as_bytes()));
    assert_eq!(
        b.io.header_of(1, "authorization"),
        Some(Some(format!("Bearer {token}")))
    );
    assert_eq!(calls_of(&b.io).len(), 1, "no introspection, no write");
    assert_eq!(b.host.count_of(Counter::FleetHit), 1);
    // Its own copy: no call. Kept at most local_ttl_s (10 s): then read again.
    b.io.take();
    assert_eq!(b.get(2, "opaque-1"), Flow::Continue);
    assert!(calls_of(&b.io).is_empty());
    b.host.now.set(T0 + 10_001);
    b.executor.worker.local.clear();
    assert_eq!(b.get(3, "opaque-1"), Flow::Pause);
    assert!(calls_of(&b.io)[0].2.starts_with("/GET/tf:p:"));
}

#[test]
fn a_fleet_shares_inactive_answers_for_negative_ttl() {
    let (a, b) = (Env::new(FLEET), Env::new(FLEET));
    let inactive = answer("200", "application/json", br#"{"active":false}"#);
    let (sealed, _) = introspected_and_written(&a, 1, "revoked-1", inactive);
    assert_eq!(status(&a.io, 1), Some(401));
    b.get(1, "revoked-1");
    let read = calls_of(&b.io)[0].clone();
    b.answer(1, read.0, answer("200", "text/plain", sealed.as_bytes()));
    assert_eq!(status(&b.io, 1), Some(401));
    assert_eq!(calls_of(&b.io).len(), 1, "no introspection");
}

#[test]
fn a_fleet_value_that_does_not_open_is_never_forwarded_but_introspected() {
    let a = Env::new(FLEET);
    let token = jwt("read");
    let (sealed, _) = introspected_and_written(
        &a,
        1,
        "opaque-2",
        answer("200", "application/jwt", token.as_bytes()),
    );
    let (other, _) = introspected_and_written(
        &a,
        2,
        "opaque-3",
        answer("200", "application/jwt", jwt("read write").as_bytes()),
    );
    let mut flipped = sealed.clone().into_bytes();
    let i = flipped.len() / 2;
    flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
    let (hp, _) = token.rsplit_once('.').unwrap();
    let forged: Vec<(&str, CallResponse)> = vec![
        ("bit flip", answer("200", "text/plain", &flipped)),
        (
            "truncated",
            answer("200", "text/plain", &sealed.as_bytes()[..sealed.len() - 3]),
        ),
        (
            "another entry's value",
            answer("200", "text/plain", other.as_bytes()),
        ),
        (
            "a plain header.payload",
            answer("200", "text/plain", hp.as_bytes()),
        ),
        ("a plain JWT", answer("200", "text/plain", token.as_bytes())),
    ];
    let failures: Vec<(&str, CallResponse, Counter)> = vec![
        (
            "a 503 (connect)",
            answer("503", "text/plain", b"no healthy upstream"),
            Counter::FleetError,
        ),
        (
            "a 504 (timeout)",
            answer("504", "text/plain", b""),
            Counter::FleetError,
        ),
        (
            "a reset",
            CallResponse {
                headers: None,
                body: None,
                body_size: 0,
            },
            Counter::FleetError,
        ),
        (
            "garbage",
            answer("200", "text/plain", &[0xff, 0xfe]),
            Counter::FleetError,
        ),
    ];
    let rows = forged
        .into_iter()
        .map(|(n, r)| (n, r, Counter::FleetSealFailed))
        .chain(failures);
    for (name, response, counter) in rows {
        let c = Env::new(FLEET);
        c.get(1, "opaque-2");
        let read = calls_of(&c.io)[0].clone();
        c.answer(1, read.0, response);
        assert_eq!(c.host.count_of(counter), 1, "{name}");
        assert_eq!(
            c.io.header_of(1, "authorization"),
            None,
            "{name}: nothing forwarded"
        );
        let calls = calls_of(&c.io);
        assert_eq!(calls.len(), 2, "{name}");
        assert_eq!(
            (calls[1].1.as_str(), calls[1].3.as_str()),
            ("ts", "token=opaque-2"),
            "{name}"
        );
        c.answer(
            1,
            calls[1].0,
            answer("200", "application/jwt", token.as_bytes()),
        );
        assert_eq!(
            c.io.header_of(1, "authorization"),
            Some(Some(format!("Bearer {token}"))),
            "{name}"
        );
    }
    // A fleet that cannot be called at all: the introspection.
    let d = Env::new(FLEET);
    d.io.refuse_dispatch.set(true);
    d.get(1, "opaque-2");
    assert_eq!(d.host.count_of(Counter::FleetError), 1);
    assert_eq!(status(&d.io, 1), Some(502), "nor the token service: 502");
}

#[test]
fn concurrent_misses_share_one_fleet_read_and_one_introspection() {
    let a = Env::new(FLEET);
    a.get(1, "opaque-4");
    a.get(2, "opaque-4");
    a.get(3, "opaque-4");
    let calls = calls_of(&a.io);
    assert_eq!(calls.len(), 1, "{calls:?}");
    a.answer(1, calls[0].0, answer("404", "text/plain", b""));
    // The leader goes away before the introspection answers: its call is made again.
    let calls = calls_of(&a.io);
    assert_eq!(calls.len(), 2);
    a.gone(1);
    a.io.take();
    a.tick();
    let again = calls_of(&a.io);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].3, "token=opaque-4");
    let token = jwt("read");
    a.answer(
        0,
        again[0].0,
        answer("200", "application/jwt", token.as_bytes()),
    );
    for id in [2, 3] {
        assert_eq!(
            a.io.header_of(id, "authorization"),
            Some(Some(format!("Bearer {token}")))
        );
    }
    // The cancelled call, and the one made again.
    assert_eq!(a.host.count_of(Counter::IntrospectionCalls), 2);
    assert_eq!(a.host.count_of(Counter::FleetReads), 1);
}

// ---- revocation across the fleet -------------------------------------------------------------

/// Redis behind webdis, as the filter speaks to it: `GET <key>.txt`, `SETEX` (PUT), `DEL`, the
/// ring's `EVAL` and `MGET`. `down`: every call answered 503 (webdis without Redis).
#[derive(Default)]
struct FakeRedis {
    kv: std::cell::RefCell<std::collections::HashMap<String, String>>,
    counter: std::cell::Cell<u64>,
    down: std::cell::Cell<bool>,
}

impl FakeRedis {
    fn serve(&self, path: &str, body: &str) -> CallResponse {
        if self.down.get() {
            return answer("503", "text/plain", b"no redis");
        }
        let parts: Vec<String> = path
            .split('/')
            .skip(1)
            .map(percent_encoding_decode)
            .collect();
        let mut kv = self.kv.borrow_mut();
        let json =
            |v: serde_json::Value| answer("200", "application/json", v.to_string().as_bytes());
        match parts[0].as_str() {
            "GET" => match kv.get(parts[1].trim_end_matches(".txt")) {
                Some(v) => answer("200", "text/plain", v.as_bytes()),
                None => answer("404", "text/plain", b""),
            },
            "SETEX" => {
                kv.insert(parts[1].clone(), body.to_owned());
                json(serde_json::json!({"SETEX": [true, "OK"]}))
            }
            "DEL" => json(serde_json::json!({"DEL": u8::from(kv.remove(&parts[1]).is_some())})),
            "EVAL" => {
                assert!(parts[1].contains("INCR"), "the ring's append");
                kv.entry(format!("{}:id", parts[3]))
                    .or_insert_with(|| parts[6].clone());
                let n = self.counter.get() + 1;
                self.counter.set(n);
                kv.insert(
                    format!("{}:{}", parts[3], n % 4096),
                    format!("{n}:{}", parts[4]),
                );
                json(serde_json::json!({"EVAL": n}))
            }
            "SET" => {
                let (key, value) = (parts[1].clone(), parts[2].clone());
                let there = kv.get(&key).cloned();
                let get = parts.iter().any(|p| p == "GET");
                if there.is_none() {
                    kv.insert(key, value);
                }
                match (get, there) {
                    (true, there) => json(serde_json::json!({ "SET": there })),
                    (false, None) => json(serde_json::json!({"SET": [true, "OK"]})),
                    (false, Some(_)) => json(serde_json::json!({ "SET": null })),
                }
            }
            "MGET" => {
                let values: Vec<serde_json::Value> = parts[1..]
                    .iter()
                    .map(|k| {
                        if !k.contains("rv:") {
                            return serde_json::json!(self.counter.get().to_string());
                        }
                        kv.get(k)
                            .map_or(serde_json::Value::Null, |v| v.clone().into())
                    })
                    .collect();
                json(serde_json::json!({ "MGET": values }))
            }
            other => panic!("webdis command {other}"),
        }
    }
}

fn percent_encoding_decode(p: &str) -> String {
    let bytes = p.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

impl Env {
    /// Answers every call this gateway made to webdis, from `redis`, until none is left.
    fn pump(&self, redis: &FakeRedis) {
        loop {
            let pending: Vec<(u32, u32, String, String)> = self
                .io
                .did
                .borrow()
                .iter()
                .filter_map(|d| match d {
                    Did::Dispatch {
                        from,
                        call,
                        cluster,
                        path,
                        body,
                    } if cluster == "webdis" && !self.pumped.borrow().contains(call) => {
                        Some((*from, *call, path.clone(), body.clone()))
                    }
                    _ => None,
                })
                .collect();
            if pending.is_empty() {
                return;
            }
            for (from, call, path, body) in pending {
                self.pumped.borrow_mut().insert(call);
                self.answer(from, call, redis.serve(&path, &body));
            }
        }
    }

    /// `token` resolved through the fleet (read; introspected as `jwt` when missing).
    fn resolve_in_fleet(&self, id: u32, token: &str, jwt: &str, redis: &FakeRedis) {
        assert_eq!(self.get(id, token), Flow::Pause);
        self.pump(redis);
        if let Some((call, _, _, body)) = calls_of(&self.io)
            .into_iter()
            .rev()
            .find(|c| c.1 == "ts" && !self.pumped.borrow().contains(&c.0))
        {
            assert_eq!(body, format!("token={token}"));
            self.pumped.borrow_mut().insert(call);
            self.answer(id, call, answer("200", "application/jwt", jwt.as_bytes()));
            self.pump(redis);
        }
        assert_eq!(
            self.io.header_of(id, "authorization"),
            Some(Some(format!("Bearer {jwt}")))
        );
    }

    /// The clock moved by `ms`, then this gateway's timer (its fleet calls answered).
    fn tick_fleet(&self, ms: u64, redis: &FakeRedis) {
        self.host.now.set(self.host.now.get() + ms);
        self.tick_only();
        self.pump(redis);
    }
}

fn fleet_revoking() -> String {
    revoking(r#"}, "fleet": {"cluster": "webdis", "revocation_bound_ms": 1000"#)
}

#[test]
fn a_revocation_at_one_gateway_is_refused_at_the_others_within_the_bound() {
    let redis = FakeRedis::default();
    let (a, b) = (Env::with(&fleet_revoking()), Env::with(&fleet_revoking()));
    let jwt = issued("alice", "s-1", T0 / 1000 - 10);
    a.resolve_in_fleet(1, "opaque", &jwt, &redis);
    b.resolve_in_fleet(1, "opaque", &jwt, &redis);
    assert_eq!(
        b.host.count_of(Counter::IntrospectionCalls),
        0,
        "a fleet hit"
    );
    let entries = redis.kv.borrow().len();
    assert_eq!(entries, 1, "the sealed phantom entry");
    // A revokes: answered once its own workers applied it; published on its timer.
    assert_eq!(a.revoke(2, "token=opaque"), Flow::Pause);
    a.tick_fleet(TICK_MS, &redis);
    assert_eq!(status(&a.io, 2), Some(200));
    assert_eq!(a.host.count_of(Counter::FleetRevocationsPublished), 1);
    assert!(
        !redis.kv.borrow().keys().any(|k| k.starts_with("tf:p:")),
        "its sealed entry deleted"
    );
    // B still serves its own copy until its next read of the ring, due within the bound.
    assert_eq!(b.get(3, "opaque"), Flow::Continue);
    let mut waited = 0;
    while b.host.count_of(Counter::FleetRevocationsApplied) == 0 {
        b.tick_fleet(TICK_MS, &redis);
        waited += TICK_MS;
        assert!(
            waited <= 1_000 - TICK_MS,
            "read within the bound less a tick"
        );
    }
    assert_eq!(b.get(4, "opaque"), Flow::Pause);
    assert_eq!(status(&b.io, 4), Some(401));
    // Read again: applied once (held already), and never published back.
    b.tick_fleet(2_000, &redis);
    assert_eq!(b.host.count_of(Counter::FleetRevocationsApplied), 1);
    assert_eq!(b.host.count_of(Counter::FleetRevocationsPublished), 0);
    assert_eq!(redis.counter.get(), 1);
}

#[test]
fn a_subject_revoked_while_redis_is_down_reaches_the_fleet_once_it_is_back() {
    let redis = FakeRedis::default();
    let (a, b) = (Env::with(&fleet_revoking()), Env::with(&fleet_revoking()));
    let old = issued("alice", "s-1", T0 / 1000 - 10);
    b.resolve_in_fleet(1, "opaque-a", &old, &redis);
    redis.down.set(true);
    assert_eq!(a.revoke(2, "sub=alice"), Flow::Pause);
    a.tick_fleet(TICK_MS, &redis);
    assert_eq!(status(&a.io, 2), Some(200), "revoked here at once");
    assert_eq!(a.host.count_of(Counter::FleetRevocationsPublished), 0);
    assert!(a.host.count_of(Counter::FleetError) >= 1);
    b.tick_fleet(2_000, &redis);
    assert_eq!(b.get(3, "opaque-a"), Flow::Continue, "B cannot know yet");
    redis.down.set(false);
    a.tick_fleet(TICK_MS, &redis);
    assert_eq!(a.host.count_of(Counter::FleetRevocationsPublished), 1);
    b.tick_fleet(1_000, &redis);
    assert_eq!(b.get(4, "opaque-a"), Flow::Pause);
    assert_eq!(status(&b.io, 4), Some(401));
    // A token of alice issued after the revocation (and its clock skew) is served.
    let later = issued("alice", "s-2", T0 / 1000 + 3_000);
    b.resolve_in_fleet(5, "opaque-b", &later, &redis);
}

// ---- DPoP across the fleet -------------------------------------------------------------------

fn fleet_dpop(dpop: &str) -> String {
    format!(
        r#"{{"required_scopes": ["read"], {PHANTOM}, "dpop": {{{dpop}}},
        "fleet": {{"cluster": "webdis"}}}}"#
    )
}

const DPOP_HTU: &str = "http://api.example.com/api";

impl Env {
    /// A DPoP request (`id`) with `token` and a proof of `key` named `jti`.
    fn dpop_get(
        &self,
        id: u32,
        key: &crate::token::dpop::tests::ProofKey,
        token: &str,
        jti: &str,
    ) -> Flow {
        let proof = key.proof("GET", DPOP_HTU, token, T0 / 1000, jti);
        let auth = format!("DPoP {token}");
        self.request(
            id,
            "GET",
            "/api",
            &[("authorization", &auth), ("dpop", &proof)],
            true,
        )
    }

    /// Introspections not answered yet, answered with `jwt`.
    fn introspect_as(&self, id: u32, jwt: &str) {
        for (call, cluster, ..) in calls_of(&self.io) {
            if cluster == "ts" && self.pumped.borrow_mut().insert(call) {
                self.answer(id, call, answer("200", "application/jwt", jwt.as_bytes()));
            }
        }
    }

    fn forwarded(&self, id: u32) -> bool {
        self.io.did.borrow().contains(&Did::Resume(id))
            || matches!(self.io.header_of(id, "authorization"), Some(Some(_)))
    }
}

#[test]
fn a_dpop_proof_is_accepted_once_in_the_whole_fleet() {
    use crate::token::dpop::tests::ProofKey;
    let redis = FakeRedis::default();
    let (a, b) = (Env::with(&fleet_dpop("")), Env::with(&fleet_dpop("")));
    let key = ProofKey::es256(7);
    let jwt = make(&format!(
        r#"{{"scope":"read","sub":"alice","cnf":{{"jkt":"{}"}}}}"#,
        key.jkt()
    ));
    assert_eq!(a.dpop_get(1, &key, "opaque-d", "jti-1"), Flow::Pause);
    a.pump(&redis);
    a.introspect_as(1, &jwt);
    assert!(!a.forwarded(1), "not before the fleet took the proof");
    a.pump(&redis);
    assert!(a.forwarded(1));
    assert!(redis.kv.borrow().keys().any(|k| k.starts_with("tf:dj:")));
    // The same proof at B (the token from the fleet): a replay.
    b.dpop_get(1, &key, "opaque-d", "jti-1");
    b.pump(&redis);
    assert_eq!(status(&b.io, 1), Some(401));
    assert_eq!(b.host.count_of(Counter::FleetDpopReplayed), 1);
    assert_eq!(b.host.count_of(Counter::IntrospectionCalls), 0);
    // A new proof at B: its first use.
    b.dpop_get(2, &key, "opaque-d", "jti-2");
    b.pump(&redis);
    assert!(b.forwarded(2));
    // Redis down: refused 503, or with "process" this Envoy alone decides (counted).
    redis.down.set(true);
    b.dpop_get(3, &key, "opaque-d", "jti-3");
    b.pump(&redis);
    assert_eq!(status(&b.io, 3), Some(503));
    assert_eq!(b.host.count_of(Counter::DeniedFleetUnavailable), 1);
    let c = Env::with(&fleet_dpop(r#""fleet_unavailable": "process""#));
    c.dpop_get(1, &key, "opaque-d", "jti-4");
    c.pump(&redis);
    c.introspect_as(1, &jwt);
    c.pump(&redis);
    assert!(c.forwarded(1));
    assert_eq!(c.host.count_of(Counter::FleetDpopProcessOnly), 1);
    // This Envoy's own replay store still refuses a replay, Redis or not.
    c.dpop_get(2, &key, "opaque-d", "jti-4");
    assert_eq!(status(&c.io, 2), Some(401));
}

#[test]
fn a_nonce_made_at_one_gateway_is_current_at_every_other() {
    let redis = FakeRedis::default();
    let (a, b) = (
        Env::with(&fleet_dpop(r#""nonce": true"#)),
        Env::with(&fleet_dpop(r#""nonce": true"#)),
    );
    let nonce = |env: &Env| super::proof::server_nonce(&env.executor.cfg, &*env.host).unwrap();
    assert_ne!(
        nonce(&a),
        nonce(&b),
        "each Envoy's own key until the fleet's is read"
    );
    a.tick_fleet(TICK_MS, &redis);
    b.tick_fleet(TICK_MS, &redis);
    assert_eq!(nonce(&a), nonce(&b));
    assert!(redis.kv.borrow().contains_key("tf:dn"));
    // Read again a period later; Redis down meanwhile changes nothing.
    redis.down.set(true);
    let name = crate::storage::dpop::nonce_key_name(&a.executor.cfg.cache.jwt_namespace);
    let before = a.host.value(&name);
    a.tick_fleet(super::fleet_timer::NONCE_KEY_PERIOD_MS, &redis);
    assert_eq!(a.host.value(&name), before);
    assert!(a.host.count_of(Counter::FleetError) >= 1);
}

// ---- the split store's level 2 in the fleet (sealed) ---------------------------------------

fn fleet_split(fleet: &str) -> String {
    format!(
        r#"{{"required_scopes": ["read"], "split": {{"max_entries": 100, "publish": {{"path": "/_p",
        "secret": "publisher-secret-1234567890"}}}}, "fleet": {{"cluster": "webdis"{fleet}}}}}"#
    )
}

impl Env {
    fn publish_split(&self, id: u32, jwt: &str, with_signature: bool, redis: &FakeRedis) -> u32 {
        let (hp, sig) = jwt.rsplit_once('.').unwrap();
        let key = crate::token::split::HashEncoding::Base64
            .encode(&crate::token::split::signature_hash(sig));
        let mut body = serde_json::json!({"signature_hash": key, "header_payload": hp,
            "expires_at": T0 / 1000 + 60});
        if with_signature {
            body["signature"] = sig.into();
        }
        let secret = [("authorization", "Bearer publisher-secret-1234567890")];
        self.post(id, "/_p", &secret, &body.to_string());
        self.pump(redis);
        status(&self.io, id).unwrap_or_else(|| panic!("{:?}", self.io.did.borrow()))
    }
}

#[test]
fn split_entries_in_the_fleet_are_sealed_under_their_signature() {
    let redis = FakeRedis::default();
    let (a, b) = (Env::with(&fleet_split("")), Env::with(&fleet_split("")));
    let token = jwt("read");
    let (hp, sig) = token.rsplit_once('.').unwrap();
    // Without the signature, a publish cannot be sealed: refused.
    assert_eq!(a.publish_split(1, &token, false, &redis), 400);
    assert_eq!(a.publish_split(2, &token, true, &redis), 204);
    let stored = redis.kv.borrow().clone();
    let (key, value) = stored.iter().next().unwrap();
    assert!(key.starts_with("tf:s:"), "{key}");
    assert!(!value.contains(hp) && !value.contains(sig), "sealed");
    // Gateway B glues the signature to what it opens.
    assert_eq!(b.get(1, sig), Flow::Pause);
    b.pump(&redis);
    assert_eq!(
        b.io.header_of(1, "authorization"),
        Some(Some(format!("Bearer {token}")))
    );
    // A plain header.payload (a forged one) under that key: never forwarded (a store failure).
    let forged = jwt("read write admin");
    let forged_hp = forged.rsplit_once('.').unwrap().0.to_owned();
    redis.kv.borrow_mut().insert(key.clone(), forged_hp.clone());
    let c = Env::with(&fleet_split(""));
    c.get(1, sig);
    c.pump(&redis);
    assert_eq!(status(&c.io, 1), Some(502));
    assert_eq!(c.io.header_of(1, "authorization"), None);
    assert_eq!(c.host.count_of(Counter::FleetSealFailed), 1);
    // Another entry's value under this key: the same.
    let bob = make(r#"{"scope":"read","sub":"bob"}"#);
    let other = format!("{}.c2lnbmF0dXJlLW9mLWJvYg", bob.rsplit_once('.').unwrap().0);
    let other_sig = other.rsplit_once('.').unwrap().1;
    assert_eq!(a.publish_split(3, &other, true, &redis), 204);
    let other_key = redis
        .kv
        .borrow()
        .keys()
        .find(|k| *k != key)
        .cloned()
        .unwrap();
    let other_value = redis.kv.borrow()[&other_key].clone();
    redis.kv.borrow_mut().insert(key.clone(), other_value);
    let d = Env::with(&fleet_split(""));
    d.get(1, sig);
    d.pump(&redis);
    assert_eq!(status(&d.io, 1), Some(502));
    assert_ne!(other_sig, sig);
    // With accept_plain_split, a plain entry is read as it is (documented as weaker).
    redis.kv.borrow_mut().insert(key.clone(), hp.to_owned());
    let e = Env::with(&fleet_split(r#", "accept_plain_split": true"#));
    e.get(1, sig);
    e.pump(&redis);
    assert_eq!(
        e.io.header_of(1, "authorization"),
        Some(Some(format!("Bearer {token}")))
    );
}

#[test]
fn a_revocation_after_redis_lost_its_ring_still_reaches_the_fleet() {
    let redis = FakeRedis::default();
    let (a, b) = (Env::with(&fleet_revoking()), Env::with(&fleet_revoking()));
    let jwt = issued("alice", "s-1", T0 / 1000 - 10);
    b.resolve_in_fleet(1, "opaque-1", &jwt, &redis);
    b.resolve_in_fleet(2, "opaque-2", &jwt, &redis);
    a.revoke(1, "token=opaque-1");
    a.tick_fleet(TICK_MS, &redis);
    b.tick_fleet(1_000, &redis);
    assert_eq!(b.host.count_of(Counter::FleetRevocationsApplied), 1);
    // Redis restarts empty: the new ring's first number is the one B has read already.
    redis.kv.borrow_mut().clear();
    redis.counter.set(0);
    a.revoke(2, "token=opaque-2");
    a.tick_fleet(TICK_MS, &redis);
    assert_eq!(a.host.count_of(Counter::FleetRevocationsPublished), 2);
    // The read that finds another ring starts over from its beginning on the next tick.
    b.tick_fleet(1_000, &redis);
    b.tick_fleet(TICK_MS, &redis);
    assert_eq!(b.host.count_of(Counter::FleetRevocationsApplied), 2);
    assert_eq!(b.host.count_of(Counter::FleetRevocationGap), 1);
    assert_eq!(b.get(3, "opaque-2"), Flow::Pause);
    assert_eq!(status(&b.io, 3), Some(401));
}

#[test]
fn a_redis_put_back_to_an_older_state_is_told_by_the_entry_read_last() {
    let redis = FakeRedis::default();
    let (a, b) = (Env::with(&fleet_revoking()), Env::with(&fleet_revoking()));
    let jwt = issued("alice", "s-1", T0 / 1000 - 10);
    for (id, token) in [(1, "opaque-1"), (2, "opaque-2"), (3, "opaque-3")] {
        b.resolve_in_fleet(id, token, &jwt, &redis);
    }
    a.revoke(1, "token=opaque-1");
    a.tick_fleet(TICK_MS, &redis);
    a.revoke(2, "token=opaque-2");
    a.tick_fleet(TICK_MS, &redis);
    b.tick_fleet(1_000, &redis);
    assert_eq!(b.host.count_of(Counter::FleetRevocationsApplied), 2);
    // Redis put back to when it held one entry (same identity): the next revocation takes
    // number 2 again, the number B read last.
    redis.counter.set(1);
    redis.kv.borrow_mut().retain(|k, _| k != "tf:rv:2");
    a.revoke(3, "token=opaque-3");
    a.tick_fleet(TICK_MS, &redis);
    assert_eq!(redis.counter.get(), 2);
    b.tick_fleet(1_000, &redis);
    b.tick_fleet(TICK_MS, &redis);
    assert_eq!(b.host.count_of(Counter::FleetRevocationGap), 1);
    assert_eq!(b.get(4, "opaque-3"), Flow::Pause);
    assert_eq!(status(&b.io, 4), Some(401));
}
