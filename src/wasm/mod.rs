//! The only place that talks to the proxy (proxy-wasm ABI 0.2.1 through the `proxy-wasm`
//! crate). Everything here is glue: reading headers, calling the core, applying its verdicts.
//!
//! - `headers`: the FFI reader of a whole header map, and bodies.
//! - `host`: one plugin configuration on one worker ([`host::Plugin`]): the core's `Host` over
//!   host calls, the counters, the logs.
//! - `calls`: the calls the filter makes (introspection, remote store, JWKS) and their answers.
//! - `apply`: verdicts and local replies applied to requests.
//! - `root`: the root context (configuration, timer).
//! - `http`: the HTTP context: one request's state and its callbacks, nothing else.
//! - `warmup`: what waits for the first key set, decided again once it is in.

mod apply;
mod calls;
mod headers;
mod host;
mod http;
mod root;
mod warmup;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::Root::new(context_id))
    });
}}
