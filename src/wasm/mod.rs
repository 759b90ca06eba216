//! The only place that talks to the proxy (proxy-wasm ABI 0.2.1 through the `proxy-wasm`
//! crate). Everything here is glue: reading headers, calling the core, applying its verdicts.

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
