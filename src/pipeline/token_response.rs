//! Beside the request path: splitting at issuance. A token endpoint's success answer leaves
//! the gateway with its JWT access token reduced to the signature (`header.payload` stored),
//! or is refused; the full JWT never reaches the client.

use crate::config::Config;
use crate::host::Host;
use crate::metrics::Counter;
use crate::reply::{Outcome, SplitReply};
use crate::storage::remote;
use crate::storage::split_store::Store;
use crate::token::split::{self, Rewrite};

use super::split_lookup::{local_entry, remote_put};

/// What to do with a token endpoint response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenResponse {
    Unchanged,
    /// Send this body instead (`Content-Length` to match); with `split.remote`, only once the
    /// remote write succeeded.
    Replace {
        body: Vec<u8>,
        remote: Option<remote::Call>,
    },
    /// Replace the response with a local reply: the JWT must not reach the client.
    Refuse(SplitReply),
}

/// Splits the JWT in a token endpoint response, storing `header.payload`.
pub fn on_token_response(
    cfg: &Config,
    host: &dyn Host,
    status: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
) -> TokenResponse {
    let Some(split) = &cfg.split else {
        return TokenResponse::Unchanged;
    };
    let now = host.now_ms();
    match split::rewrite_token_response(status, content_encoding, body, now) {
        Rewrite::Unchanged => TokenResponse::Unchanged,
        Rewrite::Refuse(_) => {
            host.count(Outcome::TokenResponseRefused.counter());
            TokenResponse::Refuse(SplitReply::SplitFailed)
        }
        Rewrite::Split {
            body,
            entry,
            signature,
        } => {
            let local = local_entry(split, &entry, now);
            match Store::new(split.max_entries).put(host, &local, now) {
                Ok(()) => {
                    host.count(Counter::ResponsesSplit);
                    TokenResponse::Replace {
                        body,
                        remote: remote_put(split, &entry, Some(&signature), now),
                    }
                }
                Err(_) => {
                    host.count(Outcome::TokenResponseRefused.counter());
                    TokenResponse::Refuse(SplitReply::Busy)
                }
            }
        }
    }
}

/// The remote write of a split token response is done: `Err` with the reply that replaces the
/// response when it failed (the entry is only in this gateway's store; passing the signature
/// on would give the client a token other gateways cannot serve).
pub fn split_write_done(host: &dyn Host, succeeded: bool) -> Result<(), SplitReply> {
    if succeeded {
        return Ok(());
    }
    host.count(Counter::RemoteWriteFailed);
    host.count(Outcome::TokenResponseRefused.counter());
    Err(SplitReply::StoreUnavailable)
}
