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

/// A header value as text. The SDK's string getters unwrap `String::from_utf8` and would trap
/// the VM (taking the worker's filter down) on a value with obs-text bytes, which HTTP allows and
/// Envoy passes on: values are read as bytes, and invalid UTF-8 becomes U+FFFD, which no
/// grammar the filter checks accepts (an `Authorization` with it is malformed: 400).
pub(crate) fn map_value(map: MapType, name: &str) -> Option<String> {
    let bytes = hostcalls::get_map_value_bytes(map, name).ok().flatten()?;
    Some(text(bytes))
}

/// Every header of `map`, values as in [`map_value`]. (Names are tokens: Envoy's codecs refuse
/// any other byte in a header name.)
pub(crate) fn map_pairs(map: MapType) -> Vec<(String, String)> {
    hostcalls::get_map_bytes(map)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, text(v)))
        .collect()
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}
