//! Stage: JWT verification (with `verify`), before a JWT is forwarded or cached: the JWT an
//! introspection returned, a JWT reassembled from the split store, a signed introspection
//! answer (RFC 9701). Paid once per token per cache lifetime.

use crate::config::Config;
use crate::host::Host;
use crate::metrics::Counter;
use crate::reply::{self, Denial};
use crate::token::introspection::CallFailure;
use crate::token::jws::VerifyFailure;

use super::Worker;

/// Verifies a JWT when `verify` is configured, counting the outcome. An unknown `kid` asks
/// for an early key set fetch (key rotation).
pub fn check_jwt(cfg: &Config, worker: &Worker, host: &dyn Host, jwt: &str) -> Result<(), Denial> {
    let Some(verify) = &cfg.verify else {
        return Ok(());
    };
    let Some(keys) = worker.keys.keys() else {
        return Err(Denial::KeysUnavailable);
    };
    match keys.verify(&verify.policy, jwt, host.now_ms() / 1_000) {
        Ok(()) => {
            host.count(Counter::Verified);
            Ok(())
        }
        Err(failure) => Err(refused(worker, host, failure)),
    }
}

/// A JWT that failed verification: counted by reason, refused as an invalid token.
pub fn refused(worker: &Worker, host: &dyn Host, failure: VerifyFailure) -> Denial {
    if failure == VerifyFailure::UnknownKey {
        worker.keys.request_refetch();
    }
    host.count(reply::verify_failure_counter(failure));
    Denial::InvalidToken
}

/// Verifies a signed introspection response (RFC 9701) with the `verify` keys, its audience
/// being the gateway's client id. A failure is the token service's (502), not the client's.
pub fn check_signed_response(
    cfg: &Config,
    worker: &Worker,
    host: &dyn Host,
    jwt: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, Denial> {
    let (Some(verify), Some(phantom)) = (&cfg.verify, &cfg.phantom) else {
        return Err(Denial::TokenService(CallFailure::Unverified));
    };
    let Some(keys) = worker.keys.keys() else {
        return Err(Denial::KeysUnavailable);
    };
    keys.verify_introspection(
        &verify.policy,
        &phantom.client_id,
        jwt,
        host.now_ms() / 1_000,
    )
    .map_err(|failure| {
        if failure == VerifyFailure::UnknownKey {
            worker.keys.request_refetch();
        }
        host.count(Counter::IntrospectionUnverified);
        Denial::TokenService(CallFailure::Unverified)
    })
}
