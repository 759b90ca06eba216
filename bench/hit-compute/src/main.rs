//! The filter's own compute on a phantom hit and a split hit (no host calls: a fake host),
//! best of rounds, for an A/B of two source trees in the same engine (V8 via Node's WASI).
use base64::Engine;
use envoy_token_filter::config::Config;
use envoy_token_filter::header_map::HeaderMap;
use envoy_token_filter::pipeline::io::{Body, CallResponse, Io, Level, Outgoing, RequestParts};
use envoy_token_filter::pipeline::{self, Executor, Flow, Request, Step, Verdict};
use envoy_token_filter::reply::LocalReply;
use envoy_token_filter::testing::FakeHost;
use envoy_token_filter::token::introspection::Outcome;
use envoy_token_filter::token::jwt::Claims;
use sha2::Digest;
use std::time::Instant;

const NOW: u64 = 1_800_000_000_000;
const JWT: &str = "eyJhbGciOiJFUzI1NiIsImtpZCI6ImJlbmNoIn0.eyJpc3MiOiJodHRwczovL2xvZ2luLmV4YW1wbGUuY29tIiwic3ViIjoiYmVuY2giLCJhdWQiOiJhcGkiLCJzY29wZSI6InJlYWQgd3JpdGUiLCJleHAiOjQxMDI0NDQ4MDAsImlhdCI6MTcwMDAwMDAwMCwianRpIjoiMDEyMzQ1Njc4OWFiY2RlZiJ9.MEUCIQDx5dZ3V2s1bGx0b3BhZGRpbmdwYWRkaW5ncGFkZGluZ3BhZGRpbmdwYWRkaW5ncGFkZGluZ3BhZGRpbmd";

fn headers(token: &str) -> HeaderMap {
    let auth = format!("Bearer {token}");
    HeaderMap::from_pairs(&[
        (":authority", "127.0.0.1:10000"),
        (":path", "/bench"),
        (":method", "GET"),
        (":scheme", "http"),
        ("authorization", auth.as_str()),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "0a5b0d2e-5e0e-4d3c-9a4e-3c2f1e0d9c8b"),
    ])
}

fn step(cfg: &Config, host: &FakeHost, map: &HeaderMap) -> Step {
    let req = Request {
        headers: map,
        end_of_stream: true,
        route_name: None,
        route_policy: None,
        client_cert_sha256: None,
        secure: false,
    };
    let cx = pipeline::Ctx {
        cfg,
        worker: &host.worker,
        host,
    };
    pipeline::on_request(&cx, &req).step
}

/// The whole hit as the glue runs it: the executor's headers callback (the stages, the
/// machine, the edits) and the request's end.
fn time_executor(name: &str, json: &[u8], host: &FakeHost, map: &HeaderMap, warm: impl Fn(&Executor)) {
    let executor = Executor::new(Config::from_slice(json).unwrap());
    warm(&executor);
    let n: u32 = std::env::var("HIT_N").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let mut best = f64::MAX;
    for _ in 0..7 {
        let t = Instant::now();
        for id in 0..n {
            let parts = RequestParts {
                headers: map.clone(),
                ..RequestParts::default()
            };
            let flow = executor.on_request_headers(host, &MissIo::default(), id, &parts, true);
            assert_eq!(flow, Flow::Continue);
            executor.on_done(id);
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e9 / f64::from(n));
    }
    println!("{name}: {best:.0} ns");
}

fn time(name: &str, cfg: &Config, host: &FakeHost, map: &HeaderMap) {
    let n: u32 = std::env::var("HIT_N").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let mut best = f64::MAX;
    for _ in 0..7 {
        let t = Instant::now();
        for _ in 0..n {
            let m = map.clone();
            assert!(matches!(
                step(cfg, host, &m),
                Step::Done(Verdict::Forward(_))
            ));
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e9 / f64::from(n));
    }
    println!("{name}: {best:.0} ns");
}

const PHANTOM: &[u8] = br#"{"required_scopes": ["read"], "phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s"}}"#;
const SPLIT: &[u8] = br#"{"required_scopes": ["read"], "split": {"max_entries": 1000, "publish": {"path": "/_p", "secret": "publisher-secret-1234567890"}}}"#;
/// The same with a `revocation` block (a tree that does not know it skips these).
const PHANTOM_RV: &[u8] = br#"{"required_scopes": ["read"], "phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s"}, "revocation": {"path": "/_revoke", "secret": "revocation-secret-123"}}"#;
const SPLIT_RV: &[u8] = br#"{"required_scopes": ["read"], "split": {"max_entries": 1000, "publish": {"path": "/_p", "secret": "publisher-secret-1234567890"}}, "revocation": {"path": "/_revoke", "secret": "revocation-secret-123"}}"#;

/// The same with a `fleet` (a tree that does not know it skips these).
const PHANTOM_FLEET: &[u8] = br#"{"required_scopes": ["read"], "phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s"}, "fleet": {"cluster": "webdis"}}"#;

/// What opening a fleet entry costs: HKDF from the token, then AES-256-GCM over a phantom
/// entry's size (the record of a 400-byte JWT).
fn fleet_open() {
    use envoy_token_filter::token::seal;
    let token = b"Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5";
    let key = "tf:p:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let plain = vec![7u8; 120 + JWT.len()];
    let sealed = seal::seal(seal::Kind::Phantom, b"fleet-secret", token, key, [9; seal::NONCE_LEN], &plain);
    let n: u32 = std::env::var("HIT_N").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000) / 10;
    let mut best = f64::MAX;
    for _ in 0..7 {
        let t = Instant::now();
        for _ in 0..n {
            assert!(seal::open(seal::Kind::Phantom, b"fleet-secret", token, key, sealed.as_bytes()).is_ok());
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e9 / f64::from(n));
    }
    println!("fleet_open_hit ({} bytes): {best:.0} ns", plain.len());
}

fn active() -> Outcome {
    Outcome::Active {
        jwt: JWT.to_owned(),
        claims: Claims {
            exp: None,
            scope: "read write".to_owned(),
        },
        max_age_s: None,
        no_store: false,
    }
}

/// A phantom hit on a policy with the journey's three rules (`journey`), and on the same
/// policy without them (`plain`): what the rules cost (a tree that does not know them skips
/// this).
fn journey() {
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let now_s = NOW / 1000;
    let header = b64(&serde_json::json!({"alg": "ES256"}));
    let inner = format!(
        "{header}.{}.c2ln",
        b64(&serde_json::json!({"scope": "pay", "iat": now_s - 10, "exp": now_s + 1800}))
    );
    let outer = format!(
        "{header}.{}.c2ln",
        b64(&serde_json::json!({"scope": "read write", "iat": now_s - 10, "exp": now_s + 3600, "pay": inner}))
    );
    let phantom = r#""phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s"}"#;
    let plain = format!(
        r#"{{"required_scopes": ["read"], {phantom}, "policies": [{{"name": "pay", "match": {{"path_prefix": "/bench"}}}}]}}"#
    );
    let rules = format!(
        r#"{{"required_scopes": ["read"], {phantom}, "policies": [{{"name": "pay", "match": {{"path_prefix": "/bench"}},
        "min_remaining_lifetime_s": 30, "max_lifetime_s": 7200, "embedded_token": {{"claim": "pay"}}}}]}}"#
    );
    if Config::from_slice(rules.as_bytes()).is_err() {
        return;
    }
    let token = "am91cm5leWpvdXJuZXlqb3VybmV5am91cm5leQ";
    let map = headers(token);
    for (name, json) in [("phantom_hit_plain_policy", &plain), ("phantom_hit_journey", &rules)] {
        let host = FakeHost::at(NOW);
        let outcome = || Outcome::Active {
            jwt: outer.clone(),
            claims: Claims {
                exp: Some(now_s + 3600),
                scope: "read write".to_owned(),
            },
            max_age_s: None,
            no_store: false,
        };
        time_executor(name, json.as_bytes(), &host, &map, |e| {
            let cx = pipeline::Ctx {
                cfg: &e.cfg,
                worker: &e.worker,
                host: &host,
            };
            let hash: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
            let _ = pipeline::on_introspection(&cx, &hash, outcome());
        });
    }
}

/// A phantom hit from a browser (the token in the encrypted `-at` cookie, a trusted Origin, a
/// GET) and the same hit with `Authorization`, under one configuration with `cookies`: what the
/// cookie costs (its AES-256-GCM, the origin check). A tree without `cookies` skips this.
fn cookie() {
    const KEY: &str = "4e4636356d65563e4c73233847503e3b21436e6f7629724950526f4b5e2e4e50";
    // The token below, sealed under KEY as the OAuth Agent seals it (tests/oidc/seal.mjs).
    const SEALED: &str = "AZnxROlb_mYUCWKibz-fYpZ0QYxcdoWYHB4O2za9Hp1Q8qsmIlWMsarpfRpb_2AnsO6iUPY98PTmN8i4Rc14ZIlT4V6j";
    let token = "Y29va2llY29va2llY29va2llY29va2llY29va2ll";
    let json = format!(
        r#"{{"required_scopes": ["read"], "phantom": {{"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s"}},
        "cookies": {{"name_prefix": "example", "encryption_keys": ["{KEY}"], "trusted_web_origins": ["https://www.example.com"]}}}}"#
    );
    if Config::from_slice(json.as_bytes()).is_err() {
        return;
    }
    let bearer = headers(token);
    let cookie = HeaderMap::from_pairs(&[
        (":authority", "127.0.0.1:10000"),
        (":path", "/bench"),
        (":method", "GET"),
        (":scheme", "http"),
        ("origin", "https://www.example.com"),
        ("cookie", &format!("theme=dark; example-at={SEALED}; lang=en")),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "0a5b0d2e-5e0e-4d3c-9a4e-3c2f1e0d9c8b"),
    ]);
    for (name, map) in [("phantom_hit_bearer_with_cookies", &bearer), ("phantom_hit_cookie", &cookie)] {
        let host = FakeHost::at(NOW);
        time_executor(name, json.as_bytes(), &host, map, |e| {
            let cx = pipeline::Ctx {
                cfg: &e.cfg,
                worker: &e.worker,
                host: &host,
            };
            let hash: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
            let _ = pipeline::on_introspection(&cx, &hash, active());
        });
    }
}

/// A proxy that does nothing but count the calls made and hand over `answer` (a hit makes no
/// call; a miss's answer is a JWT as the token service's would be, Envoy's headers included).
#[derive(Default)]
struct MissIo {
    calls: std::cell::Cell<u32>,
    answer: CallResponse,
}

impl Io for MissIo {
    fn select(&self, _: u32) -> bool {
        true
    }
    fn request(&self) -> RequestParts {
        RequestParts::default()
    }
    fn set_header(&self, _: &str, _: Option<&str>) -> bool {
        true
    }
    fn remove_trailer(&self, _: &str) {}
    fn set_filter_state(&self, _: &str, _: &[u8]) {}
    fn resume_request(&self) {}
    fn resume_response(&self) {}
    fn reply(&self, _: &LocalReply) {}
    fn read_body(&self, _: Body, _: usize) -> Vec<u8> {
        Vec::new()
    }
    fn response_headers(&self) -> HeaderMap {
        HeaderMap::default()
    }
    fn replace_response_body(&self, _: usize, _: &[u8]) -> bool {
        true
    }
    fn dispatch(&self, _: &Outgoing<'_>) -> Result<u32, String> {
        self.calls.set(self.calls.get() + 1);
        Ok(self.calls.get())
    }
    fn call_response(&self, _: usize, _: usize, _: usize) -> CallResponse {
        self.answer.clone()
    }
    fn log(&self, _: Level, _: std::fmt::Arguments<'_>) {}
    /// As the benchmark's Envoy logs: warnings and worse.
    fn enabled(&self, level: Level) -> bool {
        level >= Level::Warn
    }
}

/// The filter's own compute on a miss (issue 32): a new token's headers (the stages, the call
/// made), then the token service's answer (classified, cached, the request forwarded), through
/// the executor, with a cache of 10 000 slots as the benchmark's `phantom_miss`.
fn miss() {
    const MISS: &[u8] = br#"{"required_scopes": ["read"], "phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s"}, "cache": {"max_entries": 10000}}"#;
    let executor = Executor::new(Config::from_slice(MISS).unwrap());
    let host = FakeHost::at(NOW);
    let io = MissIo {
        calls: std::cell::Cell::new(0),
        answer: CallResponse {
            headers: Some(HeaderMap::from_pairs(&[
                (":status", "200"),
                ("content-type", "application/jwt"),
                ("content-length", "323"),
                ("date", "Sat, 05 Dec 2026 05:00:00 GMT"),
                ("server", "envoy"),
                ("x-envoy-upstream-service-time", "0"),
            ])),
            body: Some(JWT.as_bytes().to_vec()),
            body_size: JWT.len(),
        },
    };
    let n: u32 = std::env::var("HIT_N").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000) / 4;
    let mut best = f64::MAX;
    let mut id = 0u32;
    for _ in 0..7 {
        let t = Instant::now();
        for _ in 0..n {
            id += 1;
            let parts = RequestParts {
                headers: headers(&format!("miss-1764910000-123456-{id}")),
                ..RequestParts::default()
            };
            let flow = executor.on_request_headers(&host, &io, id, &parts, true);
            assert_eq!(flow, Flow::Pause);
            executor.on_call_response(&host, &io, id, io.calls.get(), 6, JWT.len());
            executor.on_done(id);
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e9 / f64::from(n));
    }
    assert_eq!(executor.kept(), 0);
    println!("phantom_miss_executor: {best:.0} ns");
}

fn main() {
    miss();
    cookie();
    journey();
    // Phantom hit.
    let cfg = Config::from_slice(PHANTOM).unwrap();
    let host = FakeHost::at(NOW);
    let token = "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5";
    let map = headers(token);
    let Step::Introspect { hash, .. } = step(&cfg, &host, &map) else {
        panic!("no miss")
    };
    let cx = pipeline::Ctx {
        cfg: &cfg,
        worker: &host.worker,
        host: &host,
    };
    let _ = pipeline::on_introspection(&cx, &hash, active());
    time("phantom_hit", &cfg, &host, &map);
    let executor_host = FakeHost::at(NOW);
    time_executor("phantom_hit_executor", PHANTOM, &executor_host, &map, |e| {
        let cx = pipeline::Ctx {
            cfg: &e.cfg,
            worker: &e.worker,
            host: &executor_host,
        };
        let _ = pipeline::on_introspection(&cx, &hash, active());
    });
    if Config::from_slice(PHANTOM_RV).is_ok() {
        let rv_host = FakeHost::at(NOW);
        time_executor("phantom_hit_executor_revocation", PHANTOM_RV, &rv_host, &map, |e| {
            let cx = pipeline::Ctx {
                cfg: &e.cfg,
                worker: &e.worker,
                host: &rv_host,
            };
            let _ = pipeline::on_introspection(&cx, &hash, active());
        });
    }
    if Config::from_slice(PHANTOM_FLEET).is_ok() {
        let fleet_host = FakeHost::at(NOW);
        time_executor("phantom_hit_executor_fleet", PHANTOM_FLEET, &fleet_host, &map, |e| {
            let cx = pipeline::Ctx {
                cfg: &e.cfg,
                worker: &e.worker,
                host: &fleet_host,
            };
            let _ = pipeline::on_introspection(&cx, &hash, active());
        });
        fleet_open();
    }
    // Split hit.
    let cfg = Config::from_slice(SPLIT).unwrap();
    let host = FakeHost::at(NOW);
    let (hp, sig) = JWT.rsplit_once('.').unwrap();
    let key =
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(sig.as_bytes()));
    let body = serde_json::json!({"signature_hash": key, "header_payload": hp, "expires_at": NOW / 1000 + 3600}).to_string();
    let (reply, _) = pipeline::publish(&cfg, &host, "POST", body.as_bytes());
    println!("publish: {reply:?}");
    time("split_hit", &cfg, &host, &headers(sig));
    time_executor("split_hit_executor", SPLIT, &host, &headers(sig), |_| {});
    if Config::from_slice(SPLIT_RV).is_ok() {
        time_executor("split_hit_executor_revocation", SPLIT_RV, &host, &headers(sig), |_| {});
    }
}
