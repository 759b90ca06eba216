//! State kept between requests: shared data through [`crate::host::Host`] (the phantom cache,
//! the split store, the JWKS lease and set) and one worker's own state (keys, local copies,
//! calls in flight, held requests). Every key space is bounded.

pub mod dpop;
pub mod exchange_cache;
pub mod fleet;
pub mod held;
pub mod inflight;
pub mod keys;
pub mod layout;
pub mod local;
pub mod opened;
pub mod parked;
pub mod phantom_cache;
pub mod record;
pub mod remote;
pub mod revocation;
pub mod slots;
pub mod split_store;
pub mod verified;
