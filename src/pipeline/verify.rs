//! Stage: JWT verification (with `verify`), before a JWT is forwarded or cached: the JWT an
//! introspection returned, a JWT reassembled from the split store, a JWT accepted as it is, an
//! exchanged token (for its policy's audience), a signed introspection answer (RFC 9701). Paid
//! once per token per cache lifetime.

use crate::metrics::Counter;
use crate::reply::{self, Denial};
use crate::token::introspection::CallFailure;
use crate::token::jws::{self, VerifyFailure};

use super::Ctx;

/// Verifies a JWT when `verify` is configured, counting the outcome.
pub fn check_jwt(cx: &Ctx<'_>, jwt: &str) -> Result<(), Denial> {
    match &cx.cfg.verify {
        Some(verify) => verify_with(cx, &verify.policy, jwt),
        None => Ok(()),
    }
}

/// Verifies a JWT under `rules` with this worker's keys, counting the outcome (a failure by
/// its reason). An unknown `kid` asks for an early key set fetch (key rotation).
pub fn verify_with(cx: &Ctx<'_>, rules: &jws::Policy, jwt: &str) -> Result<(), Denial> {
    let Some(keys) = cx.worker.keys.keys() else {
        return Err(Denial::KeysUnavailable);
    };
    match keys.verify(rules, jwt, cx.host.now_ms() / 1_000) {
        Ok(()) => {
            cx.host.count(Counter::Verified);
            Ok(())
        }
        Err(failure) => Err(refused(cx, failure)),
    }
}

/// A JWT that failed verification: counted by reason, refused as an invalid token.
pub fn refused(cx: &Ctx<'_>, failure: VerifyFailure) -> Denial {
    if failure == VerifyFailure::UnknownKey {
        cx.worker.keys.request_refetch();
    }
    cx.host.count(reply::verify_failure_counter(failure));
    Denial::InvalidToken
}

/// Verifies a signed introspection response (RFC 9701) with the `verify` keys, its audience
/// being the gateway's client id. A failure is the token service's (502), not the client's.
pub fn check_signed_response(
    cx: &Ctx<'_>,
    jwt: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, Denial> {
    let (Some(verify), Some(phantom)) = (&cx.cfg.verify, &cx.cfg.phantom) else {
        return Err(Denial::TokenService(CallFailure::Unverified));
    };
    let Some(keys) = cx.worker.keys.keys() else {
        return Err(Denial::KeysUnavailable);
    };
    keys.verify_introspection(
        &verify.policy,
        &phantom.endpoint.client_id,
        jwt,
        cx.host.now_ms() / 1_000,
    )
    .map_err(|failure| {
        if failure == VerifyFailure::UnknownKey {
            cx.worker.keys.request_refetch();
        }
        cx.host.count(Counter::IntrospectionUnverified);
        Denial::TokenService(CallFailure::Unverified)
    })
}
