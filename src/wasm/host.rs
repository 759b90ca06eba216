//! Host adapter: the core's [`Host`] trait over proxy-wasm host calls, the counters, and the
//! application of verdicts to requests. Host calls that can fail return `Result` and failures
//! are handled: a panic would trap the VM and take the worker's filter down.

use std::cell::{Cell, RefCell};
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType};

use crate::config::{Config, Contract, JwksSource, KeySource};
use crate::hash::TokenHash;
use crate::host::{CasMismatch, Host};
use crate::metrics::Counter;
use crate::pipeline::{self, Verdict};
use crate::reply::{self, Denial, LocalReply, SplitReply};
use crate::storage::held::{self, Held};
use crate::storage::inflight::{InFlight, Waiter};
use crate::storage::keys::{self, KeyState};
use crate::storage::local::LocalCache;

use crate::storage::remote;
use crate::token::introspection::{self, Failure, Response, MAX_RESPONSE_BYTES};
use crate::token::jws::MAX_JWKS_BYTES;

pub fn log(level: LogLevel, message: &str) {
    // Nothing sensible to do if logging itself fails.
    let _ = hostcalls::log(level, message);
}

/// Metric ids, defined once per VM and plugin, and the increments not yet handed to Envoy.
///
/// A metric increment is a host call that costs about as much as the rest of a cache hit
/// (measured with `scripts/bench.py --compare-wasm`: 3.9 µs of gateway CPU per request for the
/// two counters of a hit), so counts are added up in the VM and flushed on the root context's
/// timer (every 200 ms): Envoy's counters lag by at most that.
pub struct Metrics {
    ids: [u32; Counter::ALL.len()],
    pending: [Cell<u64>; Counter::ALL.len()],
}

impl Metrics {
    pub fn define() -> Result<Self, String> {
        let mut ids = [0u32; Counter::ALL.len()];
        for (slot, counter) in ids.iter_mut().zip(Counter::ALL) {
            *slot = hostcalls::define_metric(MetricType::Counter, counter.name())
                .map_err(|s| format!("cannot define metric {}: {s:?}", counter.name()))?;
        }
        Ok(Self {
            ids,
            pending: std::array::from_fn(|_| Cell::new(0)),
        })
    }

    pub fn count(&self, counter: Counter) {
        self.count_by(counter, 1);
    }

    pub fn count_by(&self, counter: Counter, by: u64) {
        if let Some(n) = self.pending.get(counter.index()) {
            n.set(n.get().saturating_add(by));
        }
    }

    /// Hands the pending increments to Envoy.
    pub fn flush(&self) {
        for (id, n) in self.ids.iter().zip(&self.pending) {
            let value = n.replace(0);
            if value > 0 {
                let _ = hostcalls::increment_metric(*id, i64::try_from(value).unwrap_or(i64::MAX));
            }
        }
    }
}

/// Per plugin configuration, shared by the root context and its HTTP contexts (one worker).
pub struct Shared {
    pub root_id: u32,
    pub cfg: Config,
    pub metrics: Metrics,
    pub inflight: RefCell<InFlight>,
    /// Requests held for a body (publish requests, token responses), with deadlines.
    pub held: RefCell<Held>,
    /// Verification keys (shared set loaded per worker) and the verified-entry memo.
    pub keys: KeyState,
    /// Recent phantom cache hits, in front of shared data.
    pub local: LocalCache,
    /// Whether Envoy logs the filter at debug level (read on every timer tick): debug lines
    /// are neither formatted nor sent otherwise.
    pub debug_logs: Cell<bool>,
}

impl Host for Shared {
    fn now_ms(&self) -> u64 {
        // A clock failure makes every entry look expired and nothing cacheable: fail closed.
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .and_then(|d| u64::try_from(d.as_millis()).ok())
            .unwrap_or(u64::MAX)
    }

    fn shared_get(&self, key: &str) -> Option<Vec<u8>> {
        match hostcalls::get_shared_data(key) {
            Ok((value, _cas)) => value,
            Err(_) => None,
        }
    }

    fn shared_get_cas(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn shared_set_cas(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasMismatch> {
        hostcalls::set_shared_data(key, Some(value), cas).map_err(|_| CasMismatch)
    }

    fn shared_set(&self, key: &str, value: &[u8]) {
        if let Err(s) = hostcalls::set_shared_data(key, Some(value), None) {
            log(LogLevel::Warn, &format!("cache write failed: {s:?}"));
        }
    }

    fn count_by(&self, counter: Counter, n: u64) {
        self.metrics.count_by(counter, n);
    }

    fn key_state(&self) -> &KeyState {
        &self.keys
    }

    fn local_cache(&self) -> &LocalCache {
        &self.local
    }
}

impl Shared {
    /// Starts the introspection call for `token` from the current context. The call belongs
    /// to that context in Envoy (cancelled if it goes away) and its answer is routed to it.
    pub fn dispatch(&self, token: &str) -> Result<u32, String> {
        let Some(p) = &self.cfg.phantom else {
            return Err("phantom is not configured".to_owned());
        };
        let body = introspection::request_body(token);
        let call = hostcalls::dispatch_http_call(
            &p.cluster,
            introspection::request_headers(p).to_vec(),
            Some(&body),
            vec![],
            Duration::from_millis(p.timeout_ms),
        )
        .map_err(|s| format!("dispatch to cluster {} failed: {s:?}", p.cluster))?;
        self.count(Counter::IntrospectionCalls);
        Ok(call)
    }

    /// Starts a call to the remote split store (`split.remote`) from the current context; its
    /// answer comes back to that context.
    pub fn dispatch_remote(&self, call: &remote::Call) -> Result<u32, String> {
        let Some(r) = self.cfg.split.as_ref().and_then(|s| s.remote.as_ref()) else {
            return Err("split.remote is not configured".to_owned());
        };
        let length = call.body.as_ref().map_or(0, Vec::len).to_string();
        let mut headers = vec![
            (":method", call.method.as_str()),
            (":path", call.path.as_str()),
            (":authority", r.authority.as_str()),
        ];
        if call.body.is_some() {
            headers.push(("content-length", length.as_str()));
            headers.push(("content-type", "text/plain"));
        }
        hostcalls::dispatch_http_call(
            &r.cluster,
            headers,
            call.body.as_deref(),
            vec![],
            Duration::from_millis(r.timeout_ms),
        )
        .map_err(|s| format!("dispatch to cluster {} failed: {s:?}", r.cluster))
    }

    /// The remote key set source, when `verify.jwks` is configured.
    pub fn jwks_source(&self) -> Option<&JwksSource> {
        match self.cfg.verify.as_ref().map(|v| &v.keys) {
            Some(KeySource::Remote(src)) => Some(src),
            _ => None,
        }
    }

    /// Runs the key set schedule on a timer tick; starts a fetch when this worker holds the
    /// lease. Returns the call id of a fetch started.
    pub fn jwks_tick(&self, context_id: u32) -> Option<u32> {
        let (src, verify) = (self.jwks_source()?, self.cfg.verify.as_ref()?);
        if keys::on_tick(src, &verify.policy, self, &self.keys) != keys::TickAction::Fetch {
            return None;
        }
        let headers = vec![
            (":method", "GET"),
            (":path", src.path.as_str()),
            (":authority", src.authority.as_str()),
            ("accept", "application/json, application/jwk-set+json"),
        ];
        match hostcalls::dispatch_http_call(
            &src.cluster,
            headers,
            None,
            vec![],
            Duration::from_millis(src.timeout_ms),
        ) {
            Ok(call) => Some(call),
            Err(s) => {
                log(
                    LogLevel::Warn,
                    &format!(
                        "#{context_id} JWKS fetch from cluster {} failed to start: {s:?}",
                        src.cluster
                    ),
                );
                let _ = keys::on_fetched(src, &verify.policy, self, &self.keys, None);
                None
            }
        }
    }

    /// Handles the answer to a JWKS fetch: a 200 with a usable JWK Set replaces the keys of
    /// every worker; anything else keeps the last good set.
    pub fn on_jwks_response(&self, context_id: u32, num_headers: usize, body_size: usize) {
        let (Some(src), Some(verify)) = (self.jwks_source(), self.cfg.verify.as_ref()) else {
            return;
        };
        let status = if num_headers == 0 {
            None
        } else {
            super::map_value(MapType::HttpCallResponseHeaders, ":status")
        };
        let body = if status.as_deref() == Some("200") {
            super::read_body(BufferType::HttpCallResponseBody, body_size, MAX_JWKS_BYTES)
        } else {
            None
        };
        match keys::on_fetched(src, &verify.policy, self, &self.keys, body.as_deref()) {
            Ok(_) => log(
                LogLevel::Info,
                &format!(
                    "#{context_id} JWKS loaded from {}{}: {}",
                    src.cluster,
                    src.path,
                    self.keys.keys().map_or_else(String::new, |k| k.describe())
                ),
            ),
            Err(e) => log(
                LogLevel::Warn,
                &format!(
                    "#{context_id} JWKS fetch from {}{} failed (status {}, {body_size} bytes): \
                     {e}; keeping the last good key set",
                    src.cluster,
                    src.path,
                    status.as_deref().unwrap_or("none"),
                ),
            ),
        }
    }

    /// Reads Envoy's current log level for the filter.
    pub fn refresh_log_level(&self) {
        let level = hostcalls::get_log_level().unwrap_or(LogLevel::Trace);
        self.debug_logs
            .set(matches!(level, LogLevel::Trace | LogLevel::Debug));
    }

    /// Handles the answer to introspection call `call`, in whichever context received it.
    pub fn on_call_response(
        &self,
        context_id: u32,
        call: u32,
        num_headers: usize,
        body_size: usize,
    ) {
        let Some((hash, waiters)) = self.inflight.borrow_mut().complete(call) else {
            log(
                LogLevel::Debug,
                &format!("#{context_id} ignoring late introspection answer {call}"),
            );
            return;
        };
        // One host call for all headers. Envoy hands header names lower-cased.
        let headers = if num_headers == 0 {
            super::Headers::empty()
        } else {
            super::Headers::read(MapType::HttpCallResponseHeaders)
        };
        let header = |name: &str| headers.get(name);
        let status = header(":status");
        let content_type = header("content-type");
        let cache_control = header("cache-control");
        let synthesized =
            introspection::is_synthesized(header("x-envoy-upstream-service-time").as_deref());
        let body = super::read_body(
            BufferType::HttpCallResponseBody,
            body_size,
            MAX_RESPONSE_BYTES,
        );
        let contract = self.cfg.phantom.as_ref().map(|p| &p.contract);
        let outcome = introspection::classify(
            &Response {
                status: status.as_deref(),
                content_type: content_type.as_deref(),
                cache_control: cache_control.as_deref(),
                body: body.as_deref(),
                synthesized,
            },
            contract.unwrap_or(&Contract::Jwt),
        );
        let verdict = pipeline::on_introspection(&self.cfg, self, &hash, outcome);
        let level = match verdict {
            Verdict::Reject(Denial::TokenService(_)) => LogLevel::Warn,
            _ => LogLevel::Debug,
        };
        if level == LogLevel::Warn || self.debug_logs.get() {
            log(
                level,
                &format!(
                "#{context_id} introspection of token {} answered {} ({} bytes): {}, {} waiting",
                crate::hash::hash_prefix(&hash),
                status.as_deref().unwrap_or("no headers"),
                body_size,
                describe(&verdict),
                waiters.len(),
            ),
            );
        }
        self.apply_all(context_id, &waiters, &verdict);
    }

    /// The call could not be started: everyone waiting on it gets a 502.
    pub fn abandon(&self, context_id: u32, hash: &TokenHash) {
        let waiters = self.inflight.borrow_mut().abandon(hash);
        self.apply_all(
            context_id,
            &waiters,
            &Verdict::Reject(Denial::TokenService(Failure::Unreachable)),
        );
    }

    /// Applies `verdict` to every waiter, from context `current` (the effective one).
    fn apply_all(&self, current: u32, waiters: &[Waiter], verdict: &Verdict) {
        let mut effective = current;
        for w in waiters {
            // Acting on another request: make it the effective context first. A context that
            // is gone (client reset) is skipped.
            if w.context_id != effective {
                if hostcalls::set_effective_context(w.context_id).is_err() {
                    continue;
                }
                effective = w.context_id;
            }
            self.apply(w.context_id, w.head, verdict, true);
        }
    }

    /// Applies a verdict to the current (effective) request. Every path ends in a resume (or
    /// `true`, for the caller to continue) or a local reply, so no request is left hanging.
    pub fn apply(&self, context_id: u32, head: bool, verdict: &Verdict, resume: bool) -> bool {
        match verdict {
            Verdict::Forward { authorization } => {
                if !self.apply_forward(context_id, head, authorization) {
                    return false;
                }
                if resume {
                    if let Err(s) = hostcalls::resume_http_request() {
                        log(
                            LogLevel::Debug,
                            &format!("#{context_id} resume failed: {s:?}"),
                        );
                    }
                }
                true
            }
            Verdict::Reject(denial) => {
                self.reject(context_id, head, *denial);
                false
            }
        }
    }

    /// Sets `authorization` on the current request (overwritten, never appended: any
    /// client-sent value is replaced). False when the header could not be set: the request was
    /// answered with a 502 instead.
    pub fn apply_forward(&self, context_id: u32, head: bool, authorization: &str) -> bool {
        let set = hostcalls::set_map_value(
            MapType::HttpRequestHeaders,
            "authorization",
            Some(authorization),
        );
        if set.is_err() {
            log(
                LogLevel::Error,
                &format!("#{context_id} cannot set authorization header"),
            );
            self.reject(context_id, head, Denial::TokenService(Failure::Malformed));
            return false;
        }
        self.count(Counter::Allowed);
        true
    }

    fn reject(&self, context_id: u32, head: bool, denial: Denial) {
        self.count(denial.counter());
        let r = reply::local_reply(denial, &self.cfg.realm, &self.cfg.required_scopes, head);
        Self::send(context_id, &r);
    }

    /// Answers the held requests whose body did not arrive in time.
    pub fn expire_held(&self) {
        let expired = match self.held.try_borrow_mut() {
            Ok(mut held) => held.expire(self.now_ms()),
            Err(_) => return,
        };
        for e in expired {
            if e.never_saw_body {
                log(
                    LogLevel::Error,
                    &format!(
                        "#{} no body reached the filter: set allow_on_headers_stop_iteration: \
                         true in the Wasm PluginConfig of listeners that use split.publish or \
                         split.split_responses",
                        e.context_id
                    ),
                );
            } else {
                log(
                    LogLevel::Info,
                    &format!("#{} body not complete in time: {:?}", e.context_id, e.reply),
                );
            }
            self.count(match e.kind {
                held::Kind::Publish => Counter::PublishRefused,
                held::Kind::TokenResponse => Counter::SplitRefused,
            });
            if hostcalls::set_effective_context(e.context_id).is_ok() {
                self.send_split_reply(e.context_id, false, &e.reply);
            }
        }
    }

    /// Answers a publish request, or replaces a token response that could not be split.
    pub fn send_split_reply(&self, context_id: u32, head: bool, answer: &SplitReply) {
        Self::send(context_id, &answer.local_reply(&self.cfg.realm, head));
    }

    /// Answers a request for the gateway's JWK Set.
    pub fn send_gateway_jwks(&self, context_id: u32, method: &str) {
        if let Some((_, jwks)) = pipeline::gateway_jwks(&self.cfg) {
            self.metrics.count(Counter::GatewayJwksServed);
            Self::send(context_id, &reply::gateway_jwks_reply(method, jwks));
        }
    }

    fn send(context_id: u32, r: &LocalReply) {
        let headers: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let body = (!r.body.is_empty()).then_some(r.body.as_slice());
        if let Err(s) = hostcalls::send_http_response(r.status, headers, body) {
            log(
                LogLevel::Debug,
                &format!("#{context_id} local reply failed: {s:?}"),
            );
        }
    }
}

fn describe(v: &Verdict) -> String {
    match v {
        Verdict::Forward { .. } => "forward".to_owned(),
        Verdict::Reject(d) => format!("reject {d:?}"),
    }
}
