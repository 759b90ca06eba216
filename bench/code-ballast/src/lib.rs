//! The do-nothing filter (bench/noop-filter, compiled in as it is) and `BALLAST_FUNCTIONS`
//! generated functions that are never called: V8 compiles them all the same. `bash
//! scripts/bench.sh --memory --floor` loads it at several sizes to show what each megabyte of
//! compiled wasm costs an Envoy.

#[path = "../../noop-filter/src/lib.rs"]
mod noop;

include!(concat!(env!("OUT_DIR"), "/ballast.rs"));
