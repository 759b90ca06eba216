//! Envoy proxy-wasm filter for the phantom token pattern: clients present opaque access tokens,
//! APIs receive JWTs.
//!
//! The core modules never name `proxy_wasm` and are tested natively; only [`wasm`] (compiled
//! for `wasm32`) talks to the host.

pub mod bearer;
pub mod cache;
pub mod config;
pub mod flow;
pub mod inflight;
pub mod introspection;
pub mod jwt;
pub mod metrics;
pub mod reply;
pub mod scope;

#[cfg(target_arch = "wasm32")]
mod wasm;
