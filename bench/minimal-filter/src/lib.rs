//! The reference point of the benchmark's targets: the least a token filter must do on a cache
//! hit. It reads `Authorization`, hashes it (SHA-256), reads one shared-data value by that hash
//! and replaces the header with it. No parsing, no expiry, no scopes, no counters: not a
//! usable filter, a yardstick (`scripts/bench.sh`, scenario `wasm_minimal`).

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};
use sha2::{Digest, Sha256};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Minimal))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Minimal;

impl Context for Minimal {}

impl HttpContext for Minimal {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Ok(Some(auth)) = hostcalls::get_map_value(MapType::HttpRequestHeaders, "authorization")
        else {
            return Action::Continue;
        };
        let digest = Sha256::digest(auth.as_bytes());
        let key: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let value = match hostcalls::get_shared_data(&key) {
            Ok((Some(v), _)) => v,
            _ => {
                // First sight of this token: store a stand-in JWT (as long as the benchmark's
                // real one, about 320 bytes), as a cache would.
                let jwt = format!("Bearer eyJhbGciOiJFUzI1NiJ9.{}.{key}", "A".repeat(280));
                let _ = hostcalls::set_shared_data(&key, Some(jwt.as_bytes()), None);
                jwt.into_bytes()
            }
        };
        if let Ok(v) = std::str::from_utf8(&value) {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "authorization", Some(v));
        }
        Action::Continue
    }
}
