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
        #[cfg(feature = "bench-dormant")]
        if std::env::var_os("ETF_DORMANT").is_some() {
            return Box::new(dormant::Dormant);
        }
        Box::new(root::Root::new(context_id))
    });
}}

/// `bench/memory.py --floor`: the same module, never configured or run, to tell what loading
/// the module costs from what running it does.
#[cfg(feature = "bench-dormant")]
mod dormant {
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::ContextType;

    pub struct Dormant;

    impl Context for Dormant {}

    impl RootContext for Dormant {
        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Dormant))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    impl HttpContext for Dormant {}
}
