//! The reference points of the benchmark's targets: the least a token filter must do.
//!
//! - Configuration `""` (scenario `wasm_minimal`), a cache hit: read `Authorization`, hash it
//!   (SHA-256), read one shared-data value by that hash, replace the header.
//! - Configuration `"floor"` (scenario `wasm_floor`), the floor of a hit: read the request's
//!   headers (the whole map, one host call) and replace `Authorization` with a constant JWT as
//!   long as the benchmark's. What any token filter pays on a hit before any work of its own.
//! - Configuration `"call"` (scenario `wasm_minimal_call`), a miss on every request: read
//!   `Authorization`, call cluster `token_service` (`POST /introspect`), put the answer's body in
//!   `Authorization` and resume.
//! - Configuration `"call_cache"` (scenario `wasm_minimal_call_cache`), a miss as a cache
//!   makes it: `"call"`, plus the SHA-256 of the token and a shared-data read of the slot it
//!   picks among 10 000 (a miss) before the call, and on the answer all its headers read and
//!   the JWT written to that slot.
//!
//! No parsing, no expiry, no scopes, no counters, no error handling worth the name: not a usable
//! filter, a yardstick (`scripts/bench.sh`).

use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};
use sha2::{Digest, Sha256};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { mode: Mode::Minimal })
    });
}}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Minimal,
    Floor,
    Call,
    CallCache,
}

struct Root {
    mode: Mode,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        self.mode = match config.as_slice() {
            b"call" => Mode::Call,
            b"call_cache" => Mode::CallCache,
            b"floor" => Mode::Floor,
            _ => Mode::Minimal,
        };
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Minimal {
            mode: self.mode,
            key: String::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Minimal {
    mode: Mode,
    /// `"call_cache"`: the shared-data key of the request's token.
    key: String,
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(map_type: u32, data: *mut *mut u8, size: *mut usize) -> u32;
}

/// A constant stand-in for the JWT a hit forwards (the benchmark's is 323 bytes).
const FLOOR_JWT: &str = concat!(
    "Bearer eyJhbGciOiJFUzI1NiIsImtpZCI6ImJlbmNoIn0.",
    "eyJpc3MiOiJodHRwczovL2xvZ2luLmV4YW1wbGUuY29tIiwic3ViIjoiYmVuY2giLCJhdWQiOiJhcGkiLCJzY29w",
    "ZSI6InJlYWQgd3JpdGUiLCJleHAiOjQxMDI0NDQ4MDAsImlhdCI6MTcwMDAwMDAwMCwianRpIjoiMDEyMzQ1Njc4",
    "OWFiY2RlZiJ9.",
    "MEUCIQDx5dZ3V2s1bGx0b3BhZGRpbmdwYWRkaW5ncGFkZGluZ3BhZGRpbmdwYWRkaW5ncGFkZGluZ3BhZGRpbmd",
    "wYWRkaW5ncGFkZGluZ3BhZA"
);

impl Context for Minimal {
    fn on_http_call_response(&mut self, _token: u32, _headers: usize, body_size: usize, _t: usize) {
        if self.mode == Mode::CallCache {
            let _ = hostcalls::get_map(MapType::HttpCallResponseHeaders);
        }
        if let Ok(Some(body)) =
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
        {
            if let Ok(jwt) = std::str::from_utf8(&body) {
                let v = format!("Bearer {jwt}");
                if self.mode == Mode::CallCache {
                    let _ = hostcalls::set_shared_data(&self.key, Some(v.as_bytes()), None);
                }
                let _ = hostcalls::set_map_value(
                    MapType::HttpRequestHeaders,
                    "authorization",
                    Some(&v),
                );
            }
        }
        let _ = hostcalls::resume_http_request();
    }
}

impl HttpContext for Minimal {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.mode == Mode::Floor {
            let mut data: *mut u8 = std::ptr::null_mut();
            let mut size: usize = 0;
            // SAFETY: the proxy hands over a buffer it allocated in this VM (as the SDK's
            // getters do); it is freed at once.
            unsafe {
                if proxy_get_header_map_pairs(0, &mut data, &mut size) == 0 && !data.is_null() {
                    drop(Vec::from_raw_parts(data, size, size));
                }
            }
            let _ = hostcalls::set_map_value(
                MapType::HttpRequestHeaders,
                "authorization",
                Some(FLOOR_JWT),
            );
            return Action::Continue;
        }
        let Ok(Some(auth)) = hostcalls::get_map_value(MapType::HttpRequestHeaders, "authorization")
        else {
            return Action::Continue;
        };
        if self.mode == Mode::CallCache {
            let digest = Sha256::digest(auth.as_bytes());
            // A bounded key space, as a cache's slots (the benchmark's `max_entries` 10 000).
            let mut first = [0u8; 8];
            first.copy_from_slice(&digest[..8]);
            self.key = format!("m:{}", u64::from_be_bytes(first) % 10_000);
            let _ = hostcalls::get_shared_data(&self.key);
        }
        if matches!(self.mode, Mode::Call | Mode::CallCache) {
            let body = format!("token={}", auth.trim_start_matches("Bearer "));
            let headers = vec![
                (":method", "POST"),
                (":path", "/introspect"),
                (":authority", "token_service"),
                ("content-type", "application/x-www-form-urlencoded"),
                ("accept", "application/jwt"),
            ];
            return match hostcalls::dispatch_http_call(
                "token_service",
                headers,
                Some(body.as_bytes()),
                vec![],
                Duration::from_secs(2),
            ) {
                Ok(_) => Action::Pause,
                Err(_) => Action::Continue,
            };
        }
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
