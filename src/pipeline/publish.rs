//! Beside the request path: the publish API (`split.publish.path`), with which the token
//! service stores (`POST`) and revokes (`DELETE`) split tokens. Answered by the filter, never
//! forwarded.

use crate::config::Config;
use crate::hash::{self, constant_time_eq};
use crate::host::Host;
use crate::metrics::Counter;
use crate::reply::SplitReply;
use crate::storage::remote;
use crate::storage::split_store::Store;
use crate::token::bearer;
use crate::token::split::{self, PublishOp};

use super::split_lookup::{local_entry, remote_put};

/// Checks a publish request's method and secret, before its body is read.
pub fn publish_gate(
    cfg: &Config,
    method: &str,
    authorization: Option<&str>,
) -> Result<(), SplitReply> {
    let Some(publish) = cfg.split.as_ref().and_then(|s| s.publish.as_ref()) else {
        return Err(SplitReply::MethodNotAllowed);
    };
    if method != "POST" && method != "DELETE" {
        return Err(SplitReply::MethodNotAllowed);
    }
    let presented =
        bearer::parse_authorization(authorization).map_err(|_| SplitReply::Unauthorized)?;
    let presented = hash::token_hash(presented);
    if constant_time_eq(&presented, &publish.secret_hash) {
        Ok(())
    } else {
        Err(SplitReply::Unauthorized)
    }
}

/// Applies an authenticated publish (`POST`) or revoke (`DELETE`) request's body. With
/// `split.remote`, an accepted operation also returns the remote write to make before
/// answering (written through: the publisher's 204 means every gateway can see it); the answer
/// is counted once that write is done ([`after_remote_write`]).
pub fn publish(
    cfg: &Config,
    host: &dyn Host,
    method: &str,
    body: &[u8],
) -> (SplitReply, Option<remote::Call>) {
    let Some(split) = &cfg.split else {
        return (SplitReply::MethodNotAllowed, None);
    };
    let store = Store::new(split.max_entries);
    let now = host.now_ms();
    let (reply, call) = match split::parse_publish(method, body, split.hash_encoding, now) {
        Err(e) => (SplitReply::Invalid(e), None),
        // Sealed under its signature (`fleet`): a publish without it cannot be shared.
        Ok(PublishOp::Store(_, None)) if sealed(split) => (
            SplitReply::Invalid(split::PublishError::SignatureRequired),
            None,
        ),
        Ok(PublishOp::Store(entry, signature)) => {
            match store.put(host, &local_entry(split, &entry, now), now) {
                Ok(()) => (
                    SplitReply::Accepted,
                    remote_put(split, &entry, signature.as_deref(), now),
                ),
                Err(_) => (SplitReply::Busy, None),
            }
        }
        Ok(PublishOp::Revoke(hash)) => match store.revoke(host, &hash, now) {
            Ok(_) => {
                host.count(Counter::Revocations);
                let call = split
                    .remote
                    .as_ref()
                    .map(|r| r.delete(&split.hash_encoding.encode(&hash)));
                (SplitReply::Accepted, call)
            }
            Err(_) => (SplitReply::Busy, None),
        },
    };
    if call.is_none() {
        count_publish(host, &reply);
    }
    (reply, call)
}

fn sealed(split: &crate::config::SplitConfig) -> bool {
    split.remote.as_ref().is_some_and(|r| r.sealed.is_some())
}

/// The answer to a publish once its remote write is done.
pub fn after_remote_write(host: &dyn Host, reply: SplitReply, succeeded: bool) -> SplitReply {
    let reply = if succeeded {
        reply
    } else {
        host.count(Counter::RemoteWriteFailed);
        SplitReply::StoreUnavailable
    };
    count_publish(host, &reply);
    reply
}

/// Counts a publish API answer (the table is [`SplitReply::publish_counter`]).
pub fn count_publish(host: &dyn Host, reply: &SplitReply) {
    host.count(reply.publish_counter());
}
