//! The Split Token pattern: the client holds only a JWT's signature; the gateway holds
//! `header.payload` under the SHA-256 of that signature and glues the JWT back together.
//!
//! The pure part, one file per concern: [`key`] (the store key encodings publishers use, what
//! an entry holds), [`publish`] (the publish API's request parser), [`response`] (the rewriter
//! that splits tokens in token endpoint responses). The store itself is
//! [`crate::storage::split_store`].

pub mod key;
pub mod publish;
pub mod response;

pub use self::key::*;
pub use self::publish::*;
pub use self::response::*;

/// What the tests of the three files share: the clock, and [`make`]'s fixtures.
///
/// [`make`]: crate::token::jwt::tests::make
#[cfg(test)]
pub(crate) mod fixtures {
    pub(crate) use crate::token::jwt::tests::make;
    pub use crate::token::jwt::EXP_SKEW_MS;

    pub const NOW: u64 = 1_700_000_000_000;

    /// The signature of [`make`]'s fixtures.
    pub const SIG: &str = "c2lnbmF0dXJl";

    pub fn hp(jwt: &str) -> &str {
        jwt.rsplit_once('.').map_or(jwt, |(hp, _)| hp)
    }
}
