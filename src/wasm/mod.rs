//! The only place that talks to the proxy (proxy-wasm ABI 0.2.1 through the `proxy-wasm`
//! crate). Everything here is glue: reading headers, calling the core, applying its verdicts.
//!
//! - `headers`: the FFI reader of a whole header map, bodies, properties, filter state.
//! - `host`: one plugin configuration on one worker ([`host::Plugin`]): the core's `Host` and
//!   `Io` over host calls, the counters, the logs.
//! - `root`: the root context (configuration, timer).
//! - `http`: the HTTP context: each callback handed to the executor.
//!
//! Every decision, and every action carried out, is the executor's (`pipeline::executor`).

mod headers;
mod host;
mod http;
mod root;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::Root::new(context_id))
    });
}}
