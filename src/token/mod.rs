//! Token formats, pure: no host, no storage. What a bearer credential, a JWT, a signature
//! check, a minted JWT, an introspection answer and a split token response are.

pub mod bearer;
pub mod claims;
pub mod combs;
pub mod cookie;
pub mod dpop;
pub mod ed25519;
pub mod es256;
pub mod exchange;
pub mod host;
pub mod introspection;
pub mod jws;
pub mod jwt;
pub mod mint;
pub mod path;
pub mod revocation;
pub mod scope;
pub mod seal;
pub mod split;
