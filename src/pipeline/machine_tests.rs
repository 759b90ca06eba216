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

use super::executor::{Executor, Flow, TICK_MS};
use super::io::{CallResponse, RequestParts};

const T0: u64 = 1_700_000_000_000;
const PHANTOM: &str = r#""phantom": {"cluster": "ts", "path": "/introspect", "client_id": "gw",
    "client_secret": "s"}"#;

struct Env {
    executor: Rc<Executor>,
    host: FakeHost,
    io: FakeIo,
}

impl Env {
    fn new(extra: &str) -> Self {
        let json = format!(r#"{{"required_scopes": ["read"], {PHANTOM}{extra}}}"#);
        Self::with(&json)
    }

    fn with(json: &str) -> Self {
        let cfg = Config::from_slice(json.as_bytes()).unwrap();
        let env = Self {
            executor: Rc::new(Executor::new(cfg)),
            host: FakeHost::at(T0),
            io: FakeIo::default(),
        };
        env.executor.start(&env.host, &env.io, 0);
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
            .on_request_headers(&self.host, &self.io, id, &parts, end)
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
            .on_call_response(&self.host, &self.io, from, call, 1, 0);
    }

    fn tick(&self) {
        self.host.now.set(self.host.now.get() + TICK_MS);
        self.io.enter(0);
        self.executor.on_tick(&self.host, &self.io, 0);
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
            .on_request_body(&env.host, &env.io, 1, 10, false),
        Flow::Pause
    );
    assert!(env.io.reply_of(1).is_none());
    env.executor
        .on_request_body(&env.host, &env.io, 1, body.len(), true);
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
            .on_response_headers(&env.host, &env.io, 1, false),
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
            .on_response_body(&env.host, &env.io, 1, Some(body.len()), true),
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
            .on_request_body(&env.host, &env.io, 1, 5, false),
        Flow::Pause
    );
    let trailers = HeaderMap::from_pairs(&[("authorization", "Bearer wait"), ("x-ok", "1")]);
    assert_eq!(
        env.executor
            .on_request_trailers(&env.host, &env.io, 1, &trailers),
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
            .on_request_trailers(&env.host, &env.io, 3, &HeaderMap::default()),
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
