//! Verdicts and local replies, applied to requests. Every path ends in a resume (or `true`,
//! for the caller to continue) or a local reply, so no request is left hanging; every one is
//! counted through [`crate::reply::Outcome`].

use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MapType};

use std::rc::Rc;

use crate::hash::{TokenHash, TokenKeys};
use crate::host::Host;
use crate::metrics::Counter;
use crate::pipeline::{self, Caller, Exchanged, Introspected, Step, Verdict};
use crate::reply::{self, Denial, DpopChallenge, LocalReply, Outcome, SplitReply};
use crate::storage::held;
use crate::storage::inflight::Waiter;
use crate::storage::local::Resolved;
use crate::token::claims::Claim;

use super::headers;
use super::host::{log, Plugin};

impl Plugin {
    /// Applies the answer of the introspection of `token` (hash `hash`) to every request
    /// waiting for it, each under its own policy, from context `current` (the effective one).
    /// A request whose policy exchanges the token goes on to wait for its exchange.
    pub fn answer_waiters(
        &self,
        current: u32,
        hash: &TokenHash,
        token: &str,
        waiters: &[Waiter],
        answer: &Result<Introspected, Denial>,
    ) {
        let mut effective = current;
        for w in waiters {
            if !Self::make_effective(&mut effective, w.context_id) {
                continue;
            }
            let caller = Caller {
                policy: self.cfg.policies.get(w.policy),
                presented: &w.presented,
            };
            let incoming = TokenKeys::with_sha(&self.worker.keyed, token, *hash);
            match pipeline::after_introspection(
                &self.cfg,
                &caller,
                &self.worker,
                self,
                &incoming,
                answer,
            ) {
                Step::Done(verdict) => {
                    self.apply(w.context_id, w.head, w.policy, &verdict, true);
                }
                Step::Exchange {
                    key,
                    token,
                    subject,
                } => {
                    // Still paused: it now waits for the exchange (or was answered).
                    self.exchange(w.clone(), key, token, &subject);
                    // The exchange's own calls may have switched the effective context.
                    effective = 0;
                }
                _ => self.reject(w.context_id, w.head, w.policy, Denial::Internal),
            }
        }
    }

    /// Applies the answer of the exchange `key` to every request waiting for it.
    pub fn answer_exchange_waiters(
        &self,
        current: u32,
        key: &TokenHash,
        waiters: &[Waiter],
        answer: &Result<Exchanged, Denial>,
    ) {
        let mut effective = current;
        for w in waiters {
            if !Self::make_effective(&mut effective, w.context_id) {
                continue;
            }
            let verdict = pipeline::after_exchange(&self.worker, key, answer);
            self.apply(w.context_id, w.head, w.policy, &verdict, true);
        }
    }

    /// Acting on another request: make it the effective context first. False when it is gone
    /// (a client reset): skip it.
    fn make_effective(effective: &mut u32, context_id: u32) -> bool {
        if *effective != context_id {
            if hostcalls::set_effective_context(context_id).is_err() {
                return false;
            }
            *effective = context_id;
        }
        true
    }

    /// Applies a verdict to the current (effective) request, under policy `policy`: `true`
    /// when it may continue. `resume`: the request was paused and is resumed here.
    pub fn apply(
        &self,
        context_id: u32,
        head: bool,
        policy: usize,
        verdict: &Verdict,
        resume: bool,
    ) -> bool {
        let forwarded = match verdict {
            Verdict::Forward(token) => self.apply_forward(context_id, head, policy, Some(token)),
            Verdict::Anonymous => self.apply_forward(context_id, head, policy, None),
            Verdict::Reject(denial) => {
                self.reject(context_id, head, policy, *denial);
                false
            }
        };
        if forwarded && resume {
            if let Err(s) = hostcalls::resume_http_request() {
                log(
                    LogLevel::Debug,
                    &format!("#{context_id} resume failed: {s:?}"),
                );
            }
        }
        forwarded
    }

    /// Readies the current request to go on under `policy`: `Authorization` overwritten with
    /// the token's (never appended) or removed (no token), every claim header the filter owns
    /// written from the token's claims or removed, and the filter state set. False when the
    /// proxy refused an edit: the request was answered with a 500 instead.
    fn apply_forward(
        &self,
        context_id: u32,
        head: bool,
        policy: usize,
        token: Option<&Rc<Resolved>>,
    ) -> bool {
        let rules = self.cfg.policies.get(policy);
        let set = hostcalls::set_map_value(
            MapType::HttpRequestHeaders,
            "authorization",
            token.map(|t| t.authorization.as_str()),
        );
        if set.is_err() {
            log(
                LogLevel::Error,
                &format!("#{context_id} cannot set authorization header"),
            );
            self.reject(context_id, head, policy, Denial::Internal);
            return false;
        }
        let claims = token.map_or(&[][..], |t| t.claims.as_slice());
        let policies = &self.cfg.policies;
        for name in &policies.claim_headers {
            let value = rules
                .claims_to_headers
                .iter()
                .find(|h| h.header == *name)
                .map(|h| self.claim_text(claims, h.claim));
            let _ = hostcalls::set_map_value(
                MapType::HttpRequestHeaders,
                name,
                value.flatten().map(String::as_str),
            );
        }
        if !policies.filter_state.is_empty() {
            for (claim, name) in &policies.filter_state {
                if let Some(value) = self.claim_text(claims, *claim) {
                    headers::set_filter_state(&format!("token_filter.{name}"), value.as_bytes());
                }
            }
            headers::set_filter_state("token_filter.policy", rules.name.as_bytes());
        }
        let outcome = if token.is_some() {
            Outcome::Forwarded
        } else {
            Outcome::ForwardedAnonymous
        };
        self.count(outcome.counter());
        self.metrics.count_policy(policy, true);
        true
    }

    /// The text of claim `index` of a token's claims; a claim the rules refuse to copy is
    /// counted, and not copied.
    fn claim_text<'c>(&self, claims: &'c [Claim], index: usize) -> Option<&'c String> {
        match claims.get(index) {
            Some(Claim::Value(v)) => Some(v),
            Some(Claim::Refused) => {
                self.count(Counter::ClaimNotCopied);
                None
            }
            _ => None,
        }
    }

    /// A CORS preflight passes unauthenticated: never with the client's token (removed with
    /// every other header the filter owns, see `pipeline::owned_present`).
    pub fn pass_preflight(&self) {
        self.count(Outcome::PreflightPassed.counter());
    }

    pub fn reject(&self, context_id: u32, head: bool, policy: usize, denial: Denial) {
        self.count(Outcome::Denied(denial).counter());
        self.metrics.count_policy(policy, false);
        let scopes = &self.cfg.policies.get(policy).required_scopes;
        let nonce = (denial == Denial::UseDpopNonce)
            .then(|| pipeline::server_nonce(&self.cfg, self))
            .flatten();
        let challenge = self.cfg.dpop.as_ref().map(|d| DpopChallenge {
            algs: &d.algs,
            nonce: nonce.as_deref(),
        });
        let r = reply::local_reply_with(denial, &self.cfg.realm, scopes, challenge, head);
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
