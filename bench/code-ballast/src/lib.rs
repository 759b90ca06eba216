//! The do-nothing filter (bench/noop-filter) and `BALLAST_FUNCTIONS` generated functions that
//! are never called: V8 compiles them all the same. `bash scripts/bench.sh --memory --floor`
//! loads it at several sizes to show what each megabyte of compiled wasm costs an Envoy.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

include!(concat!(env!("OUT_DIR"), "/ballast.rs"));

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Noop))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Noop;

impl Context for Noop {}

impl HttpContext for Noop {}
