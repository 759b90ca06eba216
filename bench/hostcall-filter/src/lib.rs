//! Prices proxy-wasm host calls (`scripts/bench.sh --hostcalls`): on every request's headers,
//! makes the call named by the plugin configuration `"<call> <n>"` `n` times, and continues.
//! The gateway CPU per request over that of `"none 0"`, divided by `n`, is the cost of one call.
//!
//! Calls: `value` (read `Authorization`, which the request has), `missing` (read a header it
//! has not), `pairs` (read the whole header map), `clock` (the current time), `set` (replace
//! `Authorization` with a 340-byte value), `shared` (read a shared-data key that holds nothing),
//! `route_name` (the property `xds.route_name`), `route_policy` (the property
//! `xds.route_metadata.filter_metadata.token_filter.policy`, absent on the benchmark's route).
//!
//! Written against the ABI directly, without the SDK, so that the module exports only
//! `proxy_on_context_create` and `proxy_on_request_headers`: Envoy skips every callback a
//! module does not export, and the SDK exports them all. `none 0` is thus the floor of any
//! wasm filter, below the SDK's do-nothing filter (scenario `wasm_noop`).

use std::cell::Cell;
use std::ptr::null_mut;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_buffer_bytes(
        t: u32,
        start: usize,
        max: usize,
        rp: *mut *mut u8,
        rs: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map: u32,
        kp: *const u8,
        ks: usize,
        rp: *mut *mut u8,
        rs: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map: u32, rp: *mut *mut u8, rs: *mut usize) -> u32;
    fn proxy_replace_header_map_value(
        map: u32,
        kp: *const u8,
        ks: usize,
        vp: *const u8,
        vs: usize,
    ) -> u32;
    fn proxy_get_current_time_nanoseconds(t: *mut u64) -> u32;
    fn proxy_get_property(pp: *const u8, ps: usize, rp: *mut *mut u8, rs: *mut usize) -> u32;
    fn proxy_get_shared_data(
        kp: *const u8,
        ks: usize,
        rp: *mut *mut u8,
        rs: *mut usize,
        cas: *mut u32,
    ) -> u32;
}

const REQUEST_HEADERS: u32 = 0;
const PLUGIN_CONFIGURATION: u32 = 7;

#[derive(Clone, Copy)]
enum Call {
    None,
    Value,
    Missing,
    Pairs,
    Clock,
    Set,
    Shared,
    RouteName,
    RoutePolicy,
}

thread_local! {
    static CALL: Cell<(Call, usize)> = const { Cell::new((Call::None, 0)) };
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// Where the proxy puts what a host call returns; the caller owns it (see [`take`]).
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut v: Vec<u8> = Vec::with_capacity(size);
    let p = v.as_mut_ptr();
    std::mem::forget(v);
    p
}

/// The buffer a host call returned, freed when dropped.
fn take(p: *mut u8, size: usize) -> Vec<u8> {
    if p.is_null() {
        return Vec::new();
    }
    // SAFETY: allocated by `proxy_on_memory_allocate` with capacity `size`, filled by the proxy.
    unsafe { Vec::from_raw_parts(p, size, size) }
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(_root: u32, size: usize) -> u32 {
    let (mut p, mut s) = (null_mut(), 0);
    // SAFETY: out-pointers to locals.
    unsafe { proxy_get_buffer_bytes(PLUGIN_CONFIGURATION, 0, size, &mut p, &mut s) };
    let config = String::from_utf8(take(p, s)).unwrap_or_default();
    let mut words = config.split_whitespace();
    let call = match words.next().unwrap_or("none") {
        "value" => Call::Value,
        "missing" => Call::Missing,
        "pairs" => Call::Pairs,
        "clock" => Call::Clock,
        "set" => Call::Set,
        "shared" => Call::Shared,
        "route_name" => Call::RouteName,
        "route_policy" => Call::RoutePolicy,
        _ => Call::None,
    };
    let n = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    CALL.with(|c| c.set((call, n)));
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(_context_id: u32, _parent: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_ctx: u32, _headers: usize, _eos: u32) -> u32 {
    let (call, n) = CALL.with(Cell::get);
    let value = [b'x'; 340];
    let mut seen = 0usize;
    for _ in 0..n {
        let (mut p, mut s) = (null_mut(), 0);
        // SAFETY: pointers to locals and constants, lengths of what they point to.
        unsafe {
            match call {
                Call::None => {}
                Call::Value | Call::Missing => {
                    let k: &[u8] = if matches!(call, Call::Value) {
                        b"authorization"
                    } else {
                        b"x-not-there"
                    };
                    proxy_get_header_map_value(
                        REQUEST_HEADERS,
                        k.as_ptr(),
                        k.len(),
                        &mut p,
                        &mut s,
                    );
                }
                Call::Pairs => {
                    proxy_get_header_map_pairs(REQUEST_HEADERS, &mut p, &mut s);
                }
                Call::Clock => {
                    let mut t = 0u64;
                    proxy_get_current_time_nanoseconds(&mut t);
                    seen = seen.wrapping_add(t as usize);
                }
                Call::Set => {
                    let k = b"authorization";
                    proxy_replace_header_map_value(
                        REQUEST_HEADERS,
                        k.as_ptr(),
                        k.len(),
                        value.as_ptr(),
                        value.len(),
                    );
                }
                Call::Shared => {
                    let k = b"hostcall-bench-nothing";
                    let mut cas = 0u32;
                    proxy_get_shared_data(k.as_ptr(), k.len(), &mut p, &mut s, &mut cas);
                }
                Call::RouteName | Call::RoutePolicy => {
                    let path: &[u8] = if matches!(call, Call::RouteName) {
                        b"xds\0route_name"
                    } else {
                        b"xds\0route_metadata\0filter_metadata\0token_filter\0policy"
                    };
                    proxy_get_property(path.as_ptr(), path.len(), &mut p, &mut s);
                }
            }
        }
        seen = seen.wrapping_add(take(p, s).len());
    }
    std::hint::black_box(seen);
    0 // Continue
}
