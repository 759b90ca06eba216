//! Envoy proxy-wasm filter for the phantom token and split token patterns: clients present
//! opaque access tokens, APIs receive JWTs.
//!
//! The layers, each importing only from those below it (`tests/module_graph.rs` checks it):
//!
//! ```text
//! wasm/       the only code that calls proxy-wasm (compiled for wasm32 only): headers, host
//!             (Plugin: one configuration on one worker), calls, apply, root, http
//! testing     (test support) a fake host with Envoy's shared-data rules
//! pipeline/   the request path, one stage per file; decisions only, behind Host
//! config/     parse, then validate, one file per section
//! storage/    state between requests: shared data through Host, and per-worker state
//! reply       every outcome -> local reply and counter, in one table
//! token/      pure formats: bearer, scope, jwt, jws, es256, dpop, claims, mint, introspection,
//!             split
//! host        the Host trait: clock, shared data, counters
//! metrics, hash, header_map, json_error
//! ```
//!
//! The request path ([`pipeline::on_request`], one call per stage):
//!
//! ```text
//! route ─► policy ─► extract ─► proof ─► accept_jwt ─► split_lookup ─► phantom_cache
//!   ─► introspect ─► verify ─► authorize (proof binding, scopes) ─► forward
//! (publish API, token endpoint, JWK Set, URI token, CORS)   (mint)
//! ```

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
