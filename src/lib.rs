//! Envoy proxy-wasm filter for the phantom token and split token patterns: clients present
//! opaque access tokens, APIs receive JWTs.
//!
//! The core modules never name `proxy_wasm` and are tested natively; only [`wasm`] (compiled
//! for `wasm32`) talks to the host.

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
