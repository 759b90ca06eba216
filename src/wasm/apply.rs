//! Verdicts and local replies, applied to requests. Every path ends in a resume (or `true`,
//! for the caller to continue) or a local reply, so no request is left hanging; every one is
//! counted through [`crate::reply::Outcome`].

use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MapType};

use crate::host::Host;
use crate::pipeline::{self, Verdict};
use crate::reply::{self, Denial, LocalReply, Outcome, SplitReply};
use crate::storage::held;
use crate::storage::inflight::Waiter;

use super::host::{log, Plugin};

impl Plugin {
    /// Applies `verdict` to every waiter, from context `current` (the effective one).
    pub fn apply_all(&self, current: u32, waiters: &[Waiter], verdict: &Verdict) {
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

    /// Applies a verdict to the current (effective) request: `true` when it may continue.
    /// `resume`: the request was paused and is resumed here.
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
    /// answered with a 500 instead (the gateway's failure, not the token service's).
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
            self.reject(context_id, head, Denial::Internal);
            return false;
        }
        self.count(Outcome::Forwarded.counter());
        true
    }

    /// A CORS preflight passes unauthenticated: never with the client's token.
    pub fn pass_preflight(&self) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "authorization", None);
        self.count(Outcome::PreflightPassed.counter());
    }

    pub fn reject(&self, context_id: u32, head: bool, denial: Denial) {
        self.count(Outcome::Denied(denial).counter());
        let r = reply::local_reply(denial, &self.cfg.realm, &self.cfg.required_scopes, head);
        Self::send(context_id, &r);
    }

    /// Answers a publish request (counted), or a held request of either kind.
    pub fn answer_publish(&self, context_id: u32, head: bool, answer: &SplitReply) {
        pipeline::count_publish(self, answer);
        self.send_split_reply(context_id, head, answer);
    }

    /// Replaces a token response the filter will not pass on (counted).
    pub fn refuse_token_response(&self, context_id: u32, answer: &SplitReply) {
        self.count(Outcome::TokenResponseRefused.counter());
        self.send_split_reply(context_id, false, answer);
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
            // Counted whether or not the request is still there to answer.
            let counter = match e.kind {
                held::Kind::Publish => Outcome::PublishAnswered(&e.reply).counter(),
                held::Kind::TokenResponse => Outcome::TokenResponseRefused.counter(),
            };
            self.count(counter);
            if hostcalls::set_effective_context(e.context_id).is_ok() {
                self.send_split_reply(e.context_id, false, &e.reply);
            }
        }
    }

    /// Sends a publish API answer, or the reply that replaces a token response.
    pub fn send_split_reply(&self, context_id: u32, head: bool, answer: &SplitReply) {
        Self::send(context_id, &answer.local_reply(&self.cfg.realm, head));
    }

    /// Answers a request for the gateway's JWK Set.
    pub fn send_gateway_jwks(&self, context_id: u32, method: &str) {
        if let Some((_, jwks)) = pipeline::gateway_jwks(&self.cfg) {
            self.count(Outcome::GatewayJwksServed.counter());
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
