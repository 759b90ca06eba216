//! Reading from the proxy: a whole header map with one host call, bodies, properties, and the
//! filter state the filter sets.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};

use crate::config::Config;
use crate::header_map::HeaderMap;
use crate::pipeline::io::RequestParts;

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

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
}

/// Map `map` of the current context, read whole with one call to the proxy (see
/// [`crate::header_map`]): headers are looked up in it rather than read one by one, as every
/// value read is the proxy calling back into the VM to allocate it. Empty when the proxy has
/// none to give.
pub(crate) fn read(map: MapType) -> HeaderMap {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the proxy writes the address and size of a buffer it allocated in this VM
    // through `proxy_on_memory_allocate` (a boxed slice of exactly `size` bytes), which
    // becomes ours; the SDK takes these buffers over the same way.
    let status = unsafe { proxy_get_header_map_pairs(map, &mut data, &mut size) };
    // 0 is `Ok`; the status is read as a number, never as a Rust enum that a value it does not
    // list would make undefined.
    if status != 0 || data.is_null() {
        return HeaderMap::default();
    }
    HeaderMap::from_bytes(unsafe { Vec::from_raw_parts(data, size, size) })
}

/// A property of the current request (`xds.route_name`, ...), as text; `None` when the proxy
/// has none, or answers anything but `Ok`. The SDK's own getter panics on a status it does not
/// expect, which would trap the VM: the status is read as a number here.
pub(crate) fn property(path: &[&str]) -> Option<String> {
    let path = path.join("\0");
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: as for `proxy_get_header_map_pairs`: a buffer the proxy allocated in this VM.
    let status = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
    if status != 0 || data.is_null() {
        return None;
    }
    let bytes = unsafe { Vec::from_raw_parts(data, size, size) };
    Some(
        String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    )
}

/// Sets filter state `wasm.<name>` (Envoy prefixes `wasm.`) for the current request. False when
/// the proxy refused it; the SDK's own setter panics then.
pub(crate) fn set_filter_state(name: &str, value: &[u8]) -> bool {
    // SAFETY: both buffers are ours and outlive the call.
    let status =
        unsafe { proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) };
    status == 0
}

/// The property path of the policy a route's metadata names: `filter_metadata`, namespace
/// `token_filter`, key `policy` (the top-level `route_metadata` attribute is gone since 1.33).
const ROUTE_POLICY: [&str; 5] = [
    "xds",
    "route_metadata",
    "filter_metadata",
    "token_filter",
    "policy",
];

/// What the pipeline reads of the current request: its headers (one read of the whole map:
/// each header read separately costs as much), and what the proxy says of its route and
/// connection, read only when the configuration needs it.
pub(crate) fn request_parts(cfg: &Config) -> RequestParts {
    let policies = &cfg.policies;
    let headers = read(MapType::HttpRequestHeaders);
    // A DPoP proof names the URL with the connection's scheme (unless `dpop.origin` fixes it):
    // read only for requests that come with the DPoP scheme. `tls_version` is only set on a
    // TLS connection.
    let secure = cfg.dpop.as_ref().is_some_and(|d| d.origin.is_none())
        && headers
            .text("authorization")
            .is_some_and(|a| a.get(..5).is_some_and(|s| s.eq_ignore_ascii_case("dpop ")))
        && property(&["connection", "tls_version"]).is_some_and(|v| !v.is_empty());
    RequestParts {
        secure,
        route_name: policies
            .by_route_name
            .then(|| property(&["xds", "route_name"]))
            .flatten(),
        route_policy: (!policies.is_empty())
            .then(|| property(&ROUTE_POLICY))
            .flatten(),
        // The client certificate's digest, only where a bound token may need it.
        client_cert: cfg
            .mtls
            .as_ref()
            .filter(|m| !m.forwarded_client_cert)
            .and_then(|_| property(&["connection", "sha256_peer_certificate_digest"])),
        headers,
    }
}
