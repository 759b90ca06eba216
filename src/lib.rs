//! Envoy proxy-wasm filter for the phantom token and split token patterns: clients present
//! opaque access tokens, APIs receive JWTs.
//!
//! The layers, each importing only from those below it (`tests/module_graph.rs` checks it):
//!
//! ```text
//! wasm/       the only code that calls proxy-wasm (compiled for wasm32 only): headers, host
//!             (Plugin: Host and Io over host calls), root, http
//! testing     (test support) a fake host with Envoy's shared-data rules, a fake proxy
//! pipeline/   the request path, one stage per file, the request machine (machine.rs) and the
//!             one executor (executor.rs) that carries its actions out through Io; decisions
//!             only, behind Host and Io
//! config/     parse, then validate, one file per section
//! storage/    state between requests: shared data through Host, and per-worker state
//! reply       every denial -> local reply and counter, in one table
//! token/      pure formats: bearer, scope, jwt, jws, es256, dpop, claims, mint, path, host,
//!             exchange, introspection, revocation, split/
//! host        the Host trait: clock, shared data, counters
//! metrics, hash, header_map, json_error
//! ```
//!
//! A request's story ([`pipeline::machine::step`], carried out by [`pipeline::Executor`]):
//!
//! ```text
//! headers ─► route ─► policy ─► extract ─► proof ─► accept_jwt ─► split_lookup ─► phantom_cache
//!   ─► (introspect: a call) ─► verify ─► authorize ─► proof record ─► (exchange: a call)
//!   ─► forward with edits | reply
//! (publish API, token endpoint, revocation requests: bodies held; JWK Set, preflights;
//!  warm-up: parked for keys; a revocation: answered once every worker applied it)
//! ```

#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
pub mod hash;
pub mod header_map;
pub mod host;
pub mod json_error;
pub mod metrics;
pub mod pipeline;
pub mod reply;
pub mod storage;
pub mod token;

#[cfg(any(test, feature = "test-support"))]
pub mod testing;

#[cfg(target_arch = "wasm32")]
mod wasm;
