//! HTTP context: one per request. Holds the request's single state and hands decisions to
//! the core.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, LogLevel, MapType};

use crate::hash::TokenHash;
use crate::header_map::HeaderMap;
use crate::host::Host as _;
use crate::pipeline::{self, Passage, RemoteAnswer, Step, TokenResponse, Verdict};
use crate::reply::{Denial, SplitReply};
use crate::storage::held::Kind;
use crate::storage::inflight::Waiter;
use crate::storage::remote::{self, Got};
use crate::token::bearer::Presented;
use crate::token::split::{self, ResponseGate, MAX_PUBLISH_BODY, MAX_TOKEN_RESPONSE};

use super::headers::{self, read_body, RequestParts};
use super::host::{log, Plugin};

/// What a verdict reached after a call needs of the request: `HEAD` (replies without a body),
/// the policy it is judged under, what it presented.
#[derive(Debug, Clone)]
struct Judged {
    head: bool,
    policy: usize,
    presented: Presented,
}

impl Judged {
    fn caller<'a>(&'a self, cfg: &'a crate::config::Config) -> pipeline::Caller<'a> {
        pipeline::Caller {
            policy: cfg.policies.get(self.policy),
            presented: &self.presented,
        }
    }
}

enum State {
    /// Headers not seen yet.
    Init,
    /// Paused, waiting for the introspection or the exchange of its token (its own call or
    /// another's; see `InFlight::is_waiting`).
    Waiting,
    /// Paused until the first key set is in (warm-up; see `storage::parked`), then decided
    /// again by the plugin, which may make it wait for a call as well.
    WaitingKeys,
    /// A publish API request, authenticated, its body being buffered.
    Publishing { method: String, body_size: usize },
    /// A token endpoint request, forwarded; its response will be examined.
    TokenRequest,
    /// A token endpoint response held (headers and body) until it is complete and split.
    SplittingResponse { body_size: usize },
    /// Paused, waiting for the remote split store's answer to a lookup.
    RemoteLookup {
        call: u32,
        hash: TokenHash,
        token: String,
        judged: Judged,
        started_ms: u64,
    },
    /// A publish or revocation applied locally, waiting for its remote write before answering.
    PublishWrite {
        call: u32,
        reply: SplitReply,
        delete: bool,
    },
    /// A split token response, waiting for its remote write before it is passed on.
    SplitWrite {
        call: u32,
        body: Vec<u8>,
        size: usize,
    },
    /// Forwarded or answered.
    Done,
}

pub struct Http {
    id: u32,
    shared: Option<Rc<Plugin>>,
    state: State,
}

impl Http {
    pub fn new(id: u32, shared: Option<Rc<Plugin>>) -> Self {
        Self {
            id,
            shared,
            state: State::Init,
        }
    }

    /// A request to `split.publish.path`: authenticated from its headers, answered once its
    /// body is complete, never forwarded.
    fn start_publish(
        &mut self,
        shared: &Plugin,
        headers: &HeaderMap,
        end_of_stream: bool,
    ) -> Action {
        let method = headers.get(":method").unwrap_or_default();
        let head = method == "HEAD";
        if let Err(refusal) = pipeline::publish_gate(
            &shared.cfg,
            &method,
            headers.get("authorization").as_deref(),
        ) {
            shared.answer_publish(self.id, head, &refusal);
            self.state = State::Done;
            return Action::Pause;
        }
        if end_of_stream {
            self.finish_publish(shared, &method, &[]);
        } else {
            self.hold(shared, Kind::Publish);
            self.state = State::Publishing {
                method,
                body_size: 0,
            };
        }
        Action::Pause
    }

    fn hold(&self, shared: &Plugin, kind: Kind) {
        let now = shared.now_ms();
        if let Ok(mut held) = shared.held.try_borrow_mut() {
            held.hold(self.id, kind, now);
        }
    }

    /// A body callback for a held request: false when the deadline already answered it.
    fn still_held(&mut self, shared: &Plugin) -> bool {
        let held = shared
            .held
            .try_borrow_mut()
            .is_ok_and(|mut h| h.saw_body(self.id));
        if !held {
            self.state = State::Done;
        }
        held
    }

    fn release(&self, shared: &Plugin) {
        if let Ok(mut held) = shared.held.try_borrow_mut() {
            held.release(self.id);
        }
    }

    fn finish_publish(&mut self, shared: &Plugin, method: &str, body: &[u8]) {
        self.release(shared);
        let (answer, remote) = pipeline::publish(&shared.cfg, shared, method, body);
        if let SplitReply::Invalid(why) = &answer {
            log(
                LogLevel::Info,
                &format!("#{} publish refused: {why}", self.id),
            );
        }
        if let Some(call) = remote {
            // Written through: answered once the remote store took it.
            match shared.dispatch_remote(&call) {
                Ok(id) => {
                    self.state = State::PublishWrite {
                        call: id,
                        reply: answer,
                        delete: method == "DELETE",
                    };
                    return;
                }
                Err(e) => {
                    log(LogLevel::Warn, &format!("#{} {e}", self.id));
                    let failed = pipeline::after_remote_write(shared, answer, false);
                    shared.send_split_reply(self.id, false, &failed);
                    self.state = State::Done;
                    return;
                }
            }
        }
        shared.send_split_reply(self.id, false, &answer);
        self.state = State::Done;
    }

    /// Buffers the publish body; answers when it is complete (or too large).
    fn publish_body(&mut self, shared: &Plugin, size: Option<usize>, complete: bool) -> Action {
        if !self.still_held(shared) {
            return Action::Pause;
        }
        let State::Publishing { body_size, .. } = &mut self.state else {
            return Action::Continue;
        };
        if let Some(size) = size {
            *body_size = size;
        }
        let size = *body_size;
        if size > MAX_PUBLISH_BODY {
            self.release(shared);
            shared.answer_publish(self.id, false, &SplitReply::TooLarge);
            self.state = State::Done;
            return Action::Pause;
        }
        if !complete {
            return Action::Pause;
        }
        let State::Publishing { method, .. } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Action::Continue;
        };
        // The size was checked against MAX_PUBLISH_BODY above.
        let body = read_body(BufferType::HttpRequestBody, size, usize::MAX).unwrap_or_default();
        self.finish_publish(shared, &method, &body);
        Action::Pause
    }

    /// Holds a token endpoint response until its body is complete, then splits it.
    fn split_body(&mut self, shared: &Plugin, size: Option<usize>, complete: bool) -> Action {
        if !self.still_held(shared) {
            return Action::Pause;
        }
        let State::SplittingResponse { body_size } = &mut self.state else {
            return Action::Continue;
        };
        if let Some(size) = size {
            *body_size = size;
        }
        let size = *body_size;
        if size > MAX_TOKEN_RESPONSE {
            self.release(shared);
            // It may carry a whole JWT: never pass it on.
            log(
                LogLevel::Warn,
                &format!(
                    "#{} token response over {MAX_TOKEN_RESPONSE} bytes refused",
                    self.id
                ),
            );
            shared.refuse_token_response(self.id, &SplitReply::SplitFailed);
            self.state = State::Done;
            return Action::Pause;
        }
        if !complete {
            return Action::Pause;
        }
        self.state = State::Done;
        self.release(shared);
        let body = read_body(BufferType::HttpResponseBody, size, usize::MAX).unwrap_or_default();
        let headers = headers::read(MapType::HttpResponseHeaders);
        let status = headers.get(":status");
        let coding = headers.get("content-encoding");
        match pipeline::on_token_response(
            &shared.cfg,
            shared,
            status.as_deref(),
            coding.as_deref(),
            &body,
        ) {
            TokenResponse::Unchanged => Action::Continue,
            TokenResponse::Replace {
                body: new_body,
                remote: Some(call),
            } => match shared.dispatch_remote(&call) {
                Ok(id) => {
                    self.state = State::SplitWrite {
                        call: id,
                        body: new_body,
                        size,
                    };
                    Action::Pause
                }
                Err(e) => {
                    log(LogLevel::Warn, &format!("#{} {e}", self.id));
                    if let Err(answer) = pipeline::split_write_done(shared, false) {
                        shared.send_split_reply(self.id, false, &answer);
                    }
                    Action::Pause
                }
            },
            TokenResponse::Replace {
                body: new_body,
                remote: None,
            } => {
                if self.replace_token_response(shared, size, &new_body) {
                    Action::Continue
                } else {
                    Action::Pause
                }
            }
            TokenResponse::Refuse(answer) => {
                log(
                    LogLevel::Warn,
                    &format!("#{} token response not split: {answer:?}", self.id),
                );
                shared.send_split_reply(self.id, false, &answer);
                Action::Pause
            }
        }
    }

    /// Puts the split body in place of the token response's (and `Content-Length` to match).
    /// False when that failed: the response was replaced by a 502.
    fn replace_token_response(&self, shared: &Plugin, size: usize, new_body: &[u8]) -> bool {
        let replaced = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, size, new_body);
        let length = new_body.len().to_string();
        let resized = if headers::value(MapType::HttpResponseHeaders, "content-length").is_some() {
            hostcalls::set_map_value(
                MapType::HttpResponseHeaders,
                "content-length",
                Some(&length),
            )
        } else {
            Ok(())
        };
        if replaced.is_err() || resized.is_err() {
            log(
                LogLevel::Error,
                &format!("#{} cannot rewrite the token response", self.id),
            );
            shared.send_split_reply(self.id, false, &SplitReply::SplitFailed);
            return false;
        }
        log(
            LogLevel::Debug,
            &format!(
                "#{} token response split ({size} -> {length} bytes)",
                self.id
            ),
        );
        true
    }

    /// Starts (or joins) the introspection of `token`; the request stays paused.
    fn introspect(&mut self, shared: &Plugin, hash: TokenHash, token: &str, judged: Judged) {
        let waiter = Waiter {
            context_id: self.id,
            head: judged.head,
            policy: judged.policy,
            presented: judged.presented,
        };
        self.state = if shared.introspect(waiter, hash, token) {
            State::Waiting
        } else {
            State::Done
        };
    }

    /// Starts (or joins) the exchange of the client's token for its policy's API; the request
    /// stays paused.
    fn exchange(
        &mut self,
        shared: &Plugin,
        key: TokenHash,
        token: TokenHash,
        subject: &str,
        judged: Judged,
    ) {
        let waiter = Waiter {
            context_id: self.id,
            head: judged.head,
            policy: judged.policy,
            presented: judged.presented,
        };
        self.state = if shared.exchange(waiter, key, token, subject) {
            State::Waiting
        } else {
            State::Done
        };
    }

    /// Acts on what a remote store read led to: a verdict, or the phantom fallback. `resume`:
    /// the request was paused (an answer that came later), else this is still its headers
    /// callback and the returned action is what Envoy does.
    fn after_remote_get(
        &mut self,
        shared: &Plugin,
        step: Step,
        judged: Judged,
        resume: bool,
    ) -> Action {
        let verdict = match step {
            Step::Introspect { hash, token } => {
                self.introspect(shared, hash, &token, judged);
                return Action::Pause;
            }
            Step::Exchange {
                key,
                token,
                subject,
            } => {
                self.exchange(shared, key, token, &subject, judged);
                return Action::Pause;
            }
            Step::Done(verdict) => verdict,
            // `on_remote_get` only answers with a verdict or the phantom fallback.
            _ => Verdict::Reject(Denial::StoreUnavailable),
        };
        self.state = State::Done;
        if shared.apply(self.id, judged.head, judged.policy, &verdict, resume) && !resume {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    /// Answers to this context's own calls to the remote split store. False when `call` is not
    /// one of them (an introspection call, handled by the shared state).
    fn on_remote_response(&mut self, shared: &Plugin, call: u32, body_size: usize) -> bool {
        let mine = match &self.state {
            State::RemoteLookup { call: c, .. }
            | State::PublishWrite { call: c, .. }
            | State::SplitWrite { call: c, .. } => *c == call,
            _ => false,
        };
        if !mine {
            return false;
        }
        let status = headers::value(MapType::HttpCallResponseHeaders, ":status");
        match std::mem::replace(&mut self.state, State::Done) {
            State::RemoteLookup {
                hash,
                token,
                judged,
                started_ms,
                ..
            } => {
                let body = read_body(
                    BufferType::HttpCallResponseBody,
                    body_size,
                    crate::token::jwt::MAX_HEADER_PAYLOAD_LEN,
                );
                let got = match body {
                    Some(body) => remote::classify_get(status.as_deref(), &body),
                    None => Got::Failed,
                };
                let latency = shared.now_ms().saturating_sub(started_ms);
                let step = pipeline::on_remote_get(
                    &shared.cfg,
                    &judged.caller(&shared.cfg),
                    &shared.worker,
                    shared,
                    &hash,
                    &token,
                    RemoteAnswer {
                        got,
                        latency_ms: latency,
                    },
                );
                self.after_remote_get(shared, step, judged, true);
            }
            State::PublishWrite { reply, delete, .. } => {
                let written = if delete {
                    remote::delete_succeeded(status.as_deref())
                } else {
                    remote::put_succeeded(status.as_deref())
                };
                let answer = pipeline::after_remote_write(shared, reply, written);
                shared.send_split_reply(self.id, false, &answer);
            }
            State::SplitWrite { body, size, .. } => {
                if remote::put_succeeded(status.as_deref()) {
                    // Written: the split body replaces the response.
                    if self.replace_token_response(shared, size, &body) {
                        let _ = hostcalls::resume_http_response();
                    }
                } else if let Err(answer) = pipeline::split_write_done(shared, false) {
                    shared.send_split_reply(self.id, false, &answer);
                }
            }
            other => self.state = other,
        }
        true
    }

    /// Starts the remote store read of a split token missing from the gateway's own store.
    fn remote_lookup(
        &mut self,
        shared: &Plugin,
        hash: TokenHash,
        token: String,
        key: &str,
        judged: Judged,
    ) -> Action {
        let call = shared
            .cfg
            .split
            .as_ref()
            .and_then(|s| s.remote.as_ref())
            .map(|r| r.get(key));
        match call.map(|c| shared.dispatch_remote(&c)) {
            Some(Ok(call)) => {
                self.state = State::RemoteLookup {
                    call,
                    hash,
                    token,
                    judged,
                    started_ms: shared.now_ms(),
                };
                Action::Pause
            }
            other => {
                if let Some(Err(e)) = other {
                    log(LogLevel::Error, &format!("#{} {e}", self.id));
                }
                let step = pipeline::on_remote_get(
                    &shared.cfg,
                    &judged.caller(&shared.cfg),
                    &shared.worker,
                    shared,
                    &hash,
                    &token,
                    RemoteAnswer {
                        got: Got::Failed,
                        latency_ms: 0,
                    },
                );
                self.after_remote_get(shared, step, judged, false)
            }
        }
    }

    /// Body and trailers must not flow while headers are paused: Envoy would continue the
    /// headers (with the client's Authorization) if a data callback returned Continue.
    fn hold_while_waiting(&mut self) -> Action {
        if matches!(self.state, State::RemoteLookup { .. }) {
            return Action::Pause;
        }
        if !matches!(self.state, State::Waiting | State::WaitingKeys) {
            return Action::Continue;
        }
        let still_waiting = self.shared.as_ref().is_some_and(|s| s.holds(self.id));
        if still_waiting {
            Action::Pause
        } else {
            self.state = State::Done;
            Action::Continue
        }
    }
}

impl Context for Http {
    fn on_http_call_response(
        &mut self,
        call: u32,
        num_headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        if let Some(shared) = self.shared.clone() {
            if !self.on_remote_response(&shared, call, body_size) {
                shared.on_call_response(self.id, call, num_headers, body_size);
            }
        }
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            // Not configured: never forward unauthenticated.
            let _ = hostcalls::send_http_response(500, vec![], None);
            return Action::Pause;
        };
        let parts = RequestParts::read(&shared.cfg);
        let (headers, route_policy) = (&parts.headers, &parts.route_policy);
        let request = parts.request(end_of_stream);
        let decision = pipeline::on_request(&shared.cfg, &shared.worker, shared.as_ref(), &request);
        let policy = decision.policy;
        if decision.step == Step::Done(Verdict::Reject(Denial::UnknownPolicy)) {
            shared.log_unknown_policy(self.id, route_policy.as_deref().unwrap_or(""));
        }
        // Whatever way the request goes on, what the filter owns goes no further than here:
        // removed now, while the request is paused (a request that waits for a call is
        // resumed with it gone).
        let passage = match &decision.step {
            Step::Done(Verdict::Reject(_)) | Step::Publish | Step::GatewayJwks => None,
            Step::Preflight => Some(Passage::Preflight),
            Step::TokenRequest => Some(Passage::TokenRequest),
            _ => Some(Passage::Api),
        };
        if let Some(passage) = passage {
            for name in pipeline::owned_present(&shared.cfg, passage, headers) {
                let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None);
            }
        }
        // The method is only read when a reply may be needed (no body for HEAD).
        let head = || headers.text(":method").as_deref() == Some("HEAD");
        if decision.step == Step::Done(Verdict::Reject(Denial::KeysUnavailable))
            && shared.wait_for_keys(Waiter {
                context_id: self.id,
                head: head(),
                policy,
                presented: decision.presented.clone(),
            })
        {
            // Warm-up: decided again once the first key set is in (or refused when it fails).
            self.state = State::WaitingKeys;
            return Action::Pause;
        }
        let judged = |presented| Judged {
            head: head(),
            policy,
            presented,
        };
        match decision.step {
            Step::Done(verdict) => {
                self.state = State::Done;
                // Decided synchronously: returning Continue is the resume.
                if shared.apply(self.id, head(), policy, &verdict, false) {
                    Action::Continue
                } else {
                    Action::Pause
                }
            }
            Step::Introspect { hash, token } => {
                self.introspect(&shared, hash, &token, judged(decision.presented));
                Action::Pause
            }
            Step::Exchange {
                key,
                token,
                subject,
            } => {
                self.exchange(&shared, key, token, &subject, judged(decision.presented));
                Action::Pause
            }
            Step::Remote { hash, token, key } => {
                self.remote_lookup(&shared, hash, token, &key, judged(decision.presented))
            }
            Step::Publish => self.start_publish(&shared, headers, end_of_stream),
            Step::TokenRequest => {
                // A token request authenticates the client to the token service; it carries
                // no access token. Forwarded, asking for an uncompressed answer: a compressed
                // one could not be split, and is refused.
                let identity = hostcalls::set_map_value(
                    MapType::HttpRequestHeaders,
                    "accept-encoding",
                    Some("identity"),
                );
                if identity.is_err() {
                    shared.refuse_token_response(self.id, &SplitReply::SplitFailed);
                    self.state = State::Done;
                    return Action::Pause;
                }
                self.state = State::TokenRequest;
                Action::Continue
            }
            Step::GatewayJwks => {
                let method = headers.get(":method").unwrap_or_default();
                shared.send_gateway_jwks(self.id, &method);
                self.state = State::Done;
                Action::Pause
            }
            Step::Preflight => {
                shared.pass_preflight();
                self.state = State::Done;
                Action::Continue
            }
        }
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        if let (State::Publishing { .. }, Some(shared)) = (&self.state, self.shared.clone()) {
            return self.publish_body(&shared, Some(size), end_of_stream);
        }
        self.hold_while_waiting()
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if let (State::Publishing { .. }, Some(shared)) = (&self.state, self.shared.clone()) {
            return self.publish_body(&shared, None, true);
        }
        // Trailers reach HTTP/2 and gRPC upstreams as they are: a header the filter owns must
        // not ride in them (the client's opaque token in an `authorization` trailer, beside
        // the JWT in the headers), under its name or with `_` for `-`.
        if let Some(shared) = self.shared.as_ref() {
            let passage = if matches!(self.state, State::TokenRequest) {
                Passage::TokenRequest
            } else {
                Passage::ApiTrailers
            };
            let trailers = headers::read(MapType::HttpRequestTrailers);
            for name in pipeline::owned_present(&shared.cfg, passage, &trailers) {
                let _ = hostcalls::set_map_value(MapType::HttpRequestTrailers, name, None);
            }
        }
        self.hold_while_waiting()
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if !matches!(self.state, State::TokenRequest) {
            return Action::Continue;
        }
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        let headers = headers::read(MapType::HttpResponseHeaders);
        let status = headers.get(":status");
        let coding = headers.get("content-encoding");
        match split::token_response_gate(status.as_deref(), coding.as_deref(), end_of_stream) {
            ResponseGate::Pass => {
                self.state = State::Done;
                Action::Continue
            }
            ResponseGate::Refuse(why) => {
                self.state = State::Done;
                log(
                    LogLevel::Warn,
                    &format!("#{} token response refused: {why}", self.id),
                );
                shared.refuse_token_response(self.id, &SplitReply::SplitFailed);
                Action::Pause
            }
            ResponseGate::Hold => {
                self.hold(&shared, Kind::TokenResponse);
                self.state = State::SplittingResponse { body_size: 0 };
                // Hold the headers too: Content-Length changes with the body.
                Action::Pause
            }
        }
    }

    fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        match (&self.state, self.shared.clone()) {
            (State::SplittingResponse { .. }, Some(shared)) => {
                self.split_body(&shared, Some(size), end_of_stream)
            }
            _ => Action::Continue,
        }
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        match (&self.state, self.shared.clone()) {
            (State::SplittingResponse { .. }, Some(shared)) => self.split_body(&shared, None, true),
            _ => Action::Continue,
        }
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        if let (State::Publishing { .. } | State::SplittingResponse { .. }, Some(shared)) =
            (&self.state, &self.shared)
        {
            self.release(shared);
        }
        if let (State::Waiting | State::WaitingKeys, Some(shared)) = (&self.state, &self.shared) {
            shared.leave(self.id);
        }
    }
}
