//! Envoy proxy-wasm filter for the phantom token and split token patterns: clients present
//! opaque access tokens, APIs receive JWTs.
//!
//! The core modules never name `proxy_wasm` and are tested natively; only [`wasm`] (compiled
//! for `wasm32`) talks to the host.

pub mod bearer;
pub mod cache;
pub mod config;
pub mod flow;
pub mod held;
pub mod inflight;
pub mod introspection;
pub mod json_error;
pub mod jwks;
pub mod jwt;
pub mod local;
pub mod metrics;
pub mod mint;
pub mod pairs;
pub mod record;
pub mod remote;
pub mod reply;
pub mod scope;
pub mod split;
pub mod store;
pub mod verify;

#[cfg(test)]
mod testing;

#[cfg(target_arch = "wasm32")]
mod wasm;
