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

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};

/// A body of `size` bytes (a request, a response, a call's answer): `None` when it is larger
/// than `max` and is not read at all; empty when it could not be read.
pub(crate) fn read_body(buffer: BufferType, size: usize, max: usize) -> Option<Vec<u8>> {
    if size > max {
        return None;
    }
    if size == 0 {
        return Some(Vec::new());
    }
    Some(
        hostcalls::get_buffer(buffer, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default(),
    )
}

/// A header map read whole, with one call to the proxy (see [`crate::header_map`]): a request's
/// headers are looked up here rather than read one by one, as every value read is the proxy
/// calling back into the VM to allocate it.
pub(crate) struct Headers(Vec<u8>);

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
}

impl Headers {
    /// Map `map` of the current context; empty when the proxy has none to give.
    pub(crate) fn read(map: MapType) -> Self {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: the proxy writes the address and size of a buffer it allocated in this VM
        // through `proxy_on_memory_allocate` (a boxed slice of exactly `size` bytes), which
        // becomes ours; the SDK takes these buffers over the same way.
        let status = unsafe { proxy_get_header_map_pairs(map, &mut data, &mut size) };
        // 0 is `Ok`; the status is read as a number, never as a Rust enum that a value it does not
        // list would make undefined.
        if status != 0 || data.is_null() {
            return Self(Vec::new());
        }
        Self(unsafe { Vec::from_raw_parts(data, size, size) })
    }

    /// Header `name` (lowercase) as text. Values are bytes: the SDK's string getters unwrap
    /// `String::from_utf8` and would trap the VM (taking the worker's filter down) on a value
    /// with obs-text bytes, which HTTP allows and Envoy passes on. Invalid UTF-8 becomes U+FFFD,
    /// which no grammar the filter checks accepts (an `Authorization` with it is malformed: 400).
    pub(crate) fn get(&self, name: &str) -> Option<String> {
        crate::header_map::get(&self.0, name).map(|v| text(v.into_owned()))
    }

    /// No headers (a call answered without any).
    pub(crate) fn empty() -> Self {
        Self(Vec::new())
    }
}

/// One header of `map`, as [`Headers::get`] reads it (reading the whole map costs the same).
pub(crate) fn map_value(map: MapType, name: &str) -> Option<String> {
    Headers::read(map).get(name)
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}
