//! The calls the filter makes with `dispatch_http_call`, and what their answers become: the
//! introspection and the token exchange (each answered to every request waiting for it), the
//! remote split store, the JWKS fetch. A failed call arrives as a synthesized 503 (connect), a 504 (timeout), or an answer
//! with no headers at all (reset): each is classified, never trusted.

use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, Status};

use crate::config::{Contract, KeySource};
use crate::hash::{self, TokenHash};
use crate::header_map::HeaderMap;
use crate::host::Host;
use crate::metrics::Counter;
use crate::pipeline::{self, Introspected};
use crate::reply::Denial;
use crate::storage::inflight::{CallKind, Completed, Join, Waiter};
use crate::storage::keys::{self, JwksSource};
use crate::storage::parked::Item;
use crate::storage::remote;
use crate::token::exchange;
use crate::token::introspection::{self, CallFailure, Response, MAX_RESPONSE_BYTES};
use crate::token::jws::MAX_JWKS_BYTES;

use super::headers::{self, read_body};
use super::host::{log, Plugin};

/// A call that could not be started.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{0} is not configured")]
    NotConfigured(&'static str),
    #[error("dispatch to cluster {cluster} failed: {status:?}")]
    Dispatch { cluster: String, status: Status },
}

impl Plugin {
    /// Starts the introspection call for `token` from the current context. The call belongs
    /// to that context in Envoy (cancelled if it goes away) and its answer is routed to it.
    pub fn dispatch(&self, token: &str) -> Result<u32, CallError> {
        let Some(p) = &self.cfg.phantom else {
            return Err(CallError::NotConfigured("phantom"));
        };
        let body = introspection::request_body(token);
        let call = hostcalls::dispatch_http_call(
            &p.cluster,
            p.request_headers().to_vec(),
            Some(&body),
            vec![],
            Duration::from_millis(p.timeout_ms),
        )
        .map_err(|status| CallError::Dispatch {
            cluster: p.cluster.clone(),
            status,
        })?;
        self.count(Counter::IntrospectionCalls);
        Ok(call)
    }

    /// Starts the exchange of `subject` for the API of policy `policy` (RFC 8693) from the
    /// current context.
    pub fn dispatch_exchange(&self, policy: usize, subject: &str) -> Result<u32, CallError> {
        let (Some(x), Some(rule)) = (
            &self.cfg.token_exchange,
            self.cfg.policies.get(policy).exchange.as_ref(),
        ) else {
            return Err(CallError::NotConfigured("token_exchange"));
        };
        let body = exchange::request_body(x.subject, subject, &rule.form);
        let call = hostcalls::dispatch_http_call(
            &x.cluster,
            x.request_headers().to_vec(),
            Some(&body),
            vec![],
            Duration::from_millis(x.timeout_ms),
        )
        .map_err(|status| CallError::Dispatch {
            cluster: x.cluster.clone(),
            status,
        })?;
        self.count(Counter::ExchangeCalls);
        Ok(call)
    }

    /// Starts the call `kind` asks for, sending `token`.
    pub fn dispatch_kind(&self, kind: CallKind, token: &str) -> Result<u32, CallError> {
        match kind {
            CallKind::Introspection => self.dispatch(token),
            CallKind::Exchange { policy, .. } => self.dispatch_exchange(policy, token),
        }
    }

    /// Starts a call to the remote split store (`split.remote`) from the current context; its
    /// answer comes back to that context.
    pub fn dispatch_remote(&self, call: &remote::Call) -> Result<u32, CallError> {
        let Some(r) = self.cfg.split.as_ref().and_then(|s| s.remote.as_ref()) else {
            return Err(CallError::NotConfigured("split.remote"));
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
        .map_err(|status| CallError::Dispatch {
            cluster: r.cluster.clone(),
            status,
        })
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
        if keys::on_tick(src, &verify.policy, self, &self.worker.keys) != keys::TickAction::Fetch {
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
                let _ = keys::on_fetched(src, &verify.policy, self, &self.worker.keys, None);
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
            headers::value(MapType::HttpCallResponseHeaders, ":status")
        };
        let body = if status.as_deref() == Some("200") {
            read_body(BufferType::HttpCallResponseBody, body_size, MAX_JWKS_BYTES)
        } else {
            None
        };
        let keys = &self.worker.keys;
        match keys::on_fetched(src, &verify.policy, self, keys, body.as_deref()) {
            Ok(_) => log(
                LogLevel::Info,
                &format!(
                    "#{context_id} JWKS loaded from {}{}: {}",
                    src.cluster,
                    src.path,
                    keys.keys().map_or_else(String::new, |k| k.describe())
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

    /// Handles the answer to an introspection or exchange call `call`, in whichever context
    /// received it.
    pub fn on_call_response(
        &self,
        context_id: u32,
        call: u32,
        num_headers: usize,
        body_size: usize,
    ) {
        let Some(done) = self.inflight.borrow_mut().complete(call) else {
            log(
                LogLevel::Debug,
                &format!("#{context_id} ignoring late answer to call {call}"),
            );
            return;
        };
        // One host call for all headers. Envoy hands header names lower-cased.
        let headers = if num_headers == 0 {
            HeaderMap::default()
        } else {
            headers::read(MapType::HttpCallResponseHeaders)
        };
        if let CallKind::Exchange { token, policy } = done.kind {
            self.on_exchange_response(context_id, &done, &token, policy, &headers, body_size);
            return;
        }
        let (hash, waiters) = (done.key, &done.waiters);
        let status = headers.get(":status");
        let content_type = headers.get("content-type");
        let cache_control = headers.get("cache-control");
        let synthesized =
            introspection::is_synthesized(headers.get("x-envoy-upstream-service-time").as_deref());
        let body = read_body(
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
        let answer =
            pipeline::on_introspection(&self.cfg, &self.worker, self, &hash, outcome.clone());
        if answer == Err(Denial::KeysUnavailable)
            && self.park(Item::Introspection {
                hash,
                token: done.token.clone(),
                waiters: waiters.clone(),
                outcome,
            })
        {
            // Warm-up: judged again once the first key set is in.
            return;
        }
        let level = match answer {
            Err(Denial::TokenService(_)) => LogLevel::Warn,
            _ => LogLevel::Debug,
        };
        if level == LogLevel::Warn || self.debug_logs.get() {
            log(
                level,
                &format!(
                    "#{context_id} introspection of token {} answered {} ({} bytes): {}, {} waiting",
                    hash::hash_prefix(&hash),
                    status.as_deref().unwrap_or("no headers"),
                    body_size,
                    describe(&answer),
                    waiters.len(),
                ),
            );
        }
        self.answer_waiters(context_id, &hash, &done.token, waiters, &answer);
    }

    /// The answer to an exchange: classified, cached, then applied to everyone waiting.
    fn on_exchange_response(
        &self,
        context_id: u32,
        done: &Completed,
        token: &TokenHash,
        policy: usize,
        headers: &HeaderMap,
        body_size: usize,
    ) {
        let status = headers.get(":status");
        let content_type = headers.get("content-type");
        let synthesized =
            introspection::is_synthesized(headers.get("x-envoy-upstream-service-time").as_deref());
        let body = read_body(
            BufferType::HttpCallResponseBody,
            body_size,
            exchange::MAX_RESPONSE_BYTES,
        );
        let outcome = exchange::classify(&Response {
            status: status.as_deref(),
            content_type: content_type.as_deref(),
            cache_control: None,
            body: body.as_deref(),
            synthesized,
        });
        let answer = match self.cfg.policies.get(policy).exchange.as_ref() {
            Some(rule) => pipeline::on_exchange(
                &self.cfg,
                rule,
                &self.worker,
                self,
                &done.key,
                outcome.clone(),
            ),
            None => Err(Denial::ExchangeFailed(CallFailure::Malformed)),
        };
        if answer == Err(Denial::KeysUnavailable)
            && self.park(Item::Exchange {
                key: done.key,
                token: *token,
                policy,
                waiters: done.waiters.clone(),
                outcome,
            })
        {
            return;
        }
        let failed = matches!(answer, Err(Denial::ExchangeFailed(_)));
        if failed || self.debug_logs.get() {
            log(
                if failed { LogLevel::Warn } else { LogLevel::Debug },
                &format!(
                    "#{context_id} exchange of token {} for policy {} answered {} ({} bytes): {}, {} waiting",
                    hash::hash_prefix(token),
                    self.cfg.policies.get(policy).name,
                    status.as_deref().unwrap_or("no headers"),
                    body_size,
                    match &answer {
                        Ok(_) => "issued".to_owned(),
                        Err(d) => format!("refused {d:?}"),
                    },
                    done.waiters.len(),
                ),
            );
        }
        self.answer_exchange_waiters(context_id, &done.key, &done.waiters, &answer);
    }

    /// Starts (or joins) the introspection of `token` for request `context_id`, which stays
    /// paused. False when the call could not be started: the request was answered (502).
    pub fn introspect(&self, waiter: Waiter, hash: TokenHash, token: &str) -> bool {
        self.join_call(waiter, hash, token, CallKind::Introspection)
    }

    /// Starts (or joins) the exchange `key` of the client's token (hash `token`) for the
    /// waiter's policy, sending `subject`. False when the call could not be started: the
    /// request was answered (502).
    pub fn exchange(
        &self,
        waiter: Waiter,
        key: TokenHash,
        token: TokenHash,
        subject: &str,
    ) -> bool {
        let kind = CallKind::Exchange {
            token,
            policy: waiter.policy,
        };
        self.join_call(waiter, key, subject, kind)
    }

    fn join_call(&self, waiter: Waiter, key: TokenHash, token: &str, kind: CallKind) -> bool {
        let context_id = waiter.context_id;
        let join = self.inflight.borrow_mut().join(key, token, kind, waiter);
        match join {
            Join::Wait => {
                self.count(Counter::Coalesced);
                true
            }
            Join::Lead => match self.dispatch_kind(kind, token) {
                Ok(call) => {
                    self.inflight.borrow_mut().started(&key, context_id, call);
                    true
                }
                Err(e) => {
                    log(LogLevel::Error, &format!("#{context_id} {e}"));
                    self.abandon(context_id, &key, kind);
                    false
                }
            },
        }
    }

    /// The call could not be started: everyone waiting on it gets a 502.
    pub fn abandon(&self, context_id: u32, key: &TokenHash, kind: CallKind) {
        let waiters = self.inflight.borrow_mut().abandon(key);
        match kind {
            CallKind::Introspection => {
                let failed = Err(Denial::TokenService(CallFailure::Unreachable));
                // The token is not needed: a failure goes to no exchange.
                self.answer_waiters(context_id, key, "", &waiters, &failed);
            }
            CallKind::Exchange { .. } => {
                let failed = Err(Denial::ExchangeFailed(CallFailure::Unreachable));
                self.answer_exchange_waiters(context_id, key, &waiters, &failed);
            }
        }
    }
}

fn describe(answer: &Result<Introspected, Denial>) -> String {
    match answer {
        Ok(_) => "active".to_owned(),
        Err(d) => format!("refused {d:?}"),
    }
}
