//! HTTP context: one per request. Holds the request's single state and hands decisions to
//! the core.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel, MapType};

use crate::cache::TokenHash;
use crate::flow::{self, Step};
use crate::inflight::{Join, Waiter};
use crate::metrics::Counter;

use super::host::{log, Shared};

enum State {
    /// Headers not seen yet.
    Init,
    /// Paused, waiting for the introspection of this token (its own call or another's).
    Waiting(TokenHash),
    /// Forwarded or answered.
    Done,
}

pub struct Http {
    id: u32,
    shared: Option<Rc<Shared>>,
    state: State,
}

impl Http {
    pub fn new(id: u32, shared: Option<Rc<Shared>>) -> Self {
        Self {
            id,
            shared,
            state: State::Init,
        }
    }

    fn header(name: &str) -> Option<String> {
        hostcalls::get_map_value(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
    }

    /// Body and trailers must not flow while headers are paused: Envoy would continue the
    /// headers (with the client's Authorization) if a data callback returned Continue.
    fn hold_while_waiting(&mut self) -> Action {
        let State::Waiting(hash) = &self.state else {
            return Action::Continue;
        };
        let still_waiting = self.shared.as_ref().is_some_and(|s| {
            s.inflight
                .try_borrow()
                .is_ok_and(|f| f.is_waiting(hash, self.id))
        });
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
        if let Some(shared) = &self.shared {
            shared.on_call_response(self.id, call, num_headers, body_size);
        }
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            // Not configured: never forward unauthenticated.
            let _ = hostcalls::send_http_response(500, vec![], None);
            return Action::Pause;
        };
        let method = Self::header(":method").unwrap_or_default();
        if method == "OPTIONS"
            && flow::is_cors_preflight(
                &method,
                Self::header("origin").as_deref(),
                Self::header("access-control-request-method").as_deref(),
            )
        {
            // Never forward the opaque token, even on a preflight.
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "authorization", None);
            shared.metrics.count(Counter::CorsPreflight);
            self.state = State::Done;
            return Action::Continue;
        }
        let head = method == "HEAD";
        let authorization = Self::header("authorization");
        let step = flow::on_request(&shared.cfg, shared.as_ref(), authorization.as_deref());
        match step {
            Step::Done(verdict) => {
                self.state = State::Done;
                // Decided synchronously: returning Continue is the resume.
                if shared.apply(self.id, head, &verdict, false) {
                    Action::Continue
                } else {
                    Action::Pause
                }
            }
            Step::Introspect { hash, token } => {
                let waiter = Waiter {
                    context_id: self.id,
                    head,
                };
                let join = shared.inflight.borrow_mut().join(hash, &token, waiter);
                self.state = State::Waiting(hash);
                match join {
                    Join::Wait => shared.metrics.count(Counter::Coalesced),
                    Join::Lead => match shared.dispatch(&token) {
                        Ok(call) => shared.inflight.borrow_mut().started(&hash, self.id, call),
                        Err(e) => {
                            log(LogLevel::Error, &format!("#{} {e}", self.id));
                            self.state = State::Done;
                            shared.abandon(&hash);
                        }
                    },
                }
                Action::Pause
            }
        }
    }

    fn on_http_request_body(&mut self, _size: usize, _end_of_stream: bool) -> Action {
        self.hold_while_waiting()
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.hold_while_waiting()
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        if let (State::Waiting(hash), Some(shared)) = (&self.state, &self.shared) {
            if let Ok(mut inflight) = shared.inflight.try_borrow_mut() {
                inflight.leave(hash, self.id);
            }
        }
    }
}
