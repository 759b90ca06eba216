//! HTTP context: one per request. Every callback hands what the proxy gave to the executor,
//! which decides and acts; this only turns its answer into what the callback returns.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

use crate::pipeline::Flow;

use super::headers;
use super::host::Plugin;

pub struct Http {
    id: u32,
    plugin: Option<Rc<Plugin>>,
}

impl Http {
    pub fn new(id: u32, plugin: Option<Rc<Plugin>>) -> Self {
        Self { id, plugin }
    }
}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

impl Context for Http {
    fn on_http_call_response(&mut self, call: u32, num_headers: usize, body_size: usize, _: usize) {
        if let Some(p) = &self.plugin {
            let p = p.as_ref();
            p.begin();
            p.executor
                .on_call_response(p, p, self.id, call, num_headers, body_size);
        }
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(p) = &self.plugin else {
            // Not configured: never forward unauthenticated.
            let _ = hostcalls::send_http_response(500, vec![], None);
            return Action::Pause;
        };
        let p = p.as_ref();
        p.begin();
        let parts = headers::request_parts(&p.executor.cfg);
        action(
            p.executor
                .on_request_headers(p, p, self.id, &parts, end_of_stream),
        )
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        match &self.plugin {
            Some(p) => {
                let p = p.as_ref();
                p.begin();
                action(
                    p.executor
                        .on_request_body(p, p, self.id, size, end_of_stream),
                )
            }
            None => Action::Pause,
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        match &self.plugin {
            Some(p) => {
                let p = p.as_ref();
                p.begin();
                let trailers = headers::read(MapType::HttpRequestTrailers);
                action(p.executor.on_request_trailers(p, p, self.id, &trailers))
            }
            None => Action::Pause,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        match &self.plugin {
            Some(p) => {
                let p = p.as_ref();
                p.begin();
                action(p.executor.on_response_headers(p, p, self.id, end_of_stream))
            }
            None => Action::Continue,
        }
    }

    fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        match &self.plugin {
            Some(p) => {
                let p = p.as_ref();
                p.begin();
                action(
                    p.executor
                        .on_response_body(p, p, self.id, Some(size), end_of_stream),
                )
            }
            None => Action::Continue,
        }
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        match &self.plugin {
            Some(p) => {
                let p = p.as_ref();
                p.begin();
                action(p.executor.on_response_body(p, p, self.id, None, true))
            }
            None => Action::Continue,
        }
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        if let Some(p) = &self.plugin {
            p.begin();
            p.executor.on_done(self.id);
        }
    }
}
