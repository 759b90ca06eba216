//! Stage: the JWT's journey, the last one. What the policy's API receives must be fit to
//! travel: with `embedded_token`, it is the narrower JWT the resolved one carries in a claim
//! (verified once per token, policy and worker, then kept with the token's other copies); it
//! must have enough life left for the API chain (`min_remaining_lifetime_s`: the client should
//! refresh first); and it must not have been issued for longer than the policy accepts
//! (`max_lifetime_s`). No host call but the clock: a policy with none of the three skips the
//! stage.

use std::rc::Rc;

use crate::config::{Embedded, Policy};
use crate::hash::{FastKey, TokenKeys};
use crate::metrics::Counter;
use crate::reply::Denial;
use crate::storage::local::Resolved;
use crate::token::claims;
use crate::token::jwt::{self, EXP_SKEW_MS};

use super::authorize::{resolved, Who};
use super::verify::verify_with;
use super::{Caller, Ctx, Verdict};

/// The stage, on a verdict reached for `incoming` under `caller`'s policy.
pub fn stage(
    cx: &Ctx<'_>,
    caller: &Caller<'_>,
    incoming: &TokenKeys<'_>,
    verdict: Verdict,
) -> Verdict {
    let policy = caller.policy;
    let Verdict::Forward(token) = verdict else {
        return verdict;
    };
    if !policy.checks_journey() {
        return Verdict::Forward(token);
    }
    let token = match &policy.embedded {
        Some(rule) => match embedded(cx, rule, incoming, &token) {
            Ok(inner) => inner,
            Err(denial) => return Verdict::Reject(denial),
        },
        None => token,
    };
    lifetime(cx, policy, token)
}

/// The lifetime rules alone, for a token already made for this API (an exchanged one).
pub fn lifetime(cx: &Ctx<'_>, policy: &Policy, token: Rc<Resolved>) -> Verdict {
    if let Err(denial) = lifetime_of(policy, &token, cx.host.now_ms() / 1_000) {
        return Verdict::Reject(denial);
    }
    if policy.embedded.is_some() {
        cx.host.count(Counter::EmbeddedForwarded);
    }
    Verdict::Forward(token)
}

/// Whether `token` may travel under `policy` at `now_s`.
pub fn lifetime_of(policy: &Policy, token: &Resolved, now_s: u64) -> Result<(), Denial> {
    if policy.min_remaining_s > 0 {
        // Without `exp` a JWT does not expire on its way.
        if let Some(exp) = token.exp {
            if exp.saturating_sub(now_s) < policy.min_remaining_s {
                return Err(Denial::ExpiresTooSoon);
            }
        }
    }
    if let Some(max) = policy.max_lifetime_s {
        match (token.iat, token.exp) {
            (Some(iat), Some(exp)) if exp >= iat && exp - iat <= max => {}
            // No `iat`: its lifetime cannot be told; no `exp`: it has none; an `exp` before
            // its `iat` (or one that is not a date, read as 0): not a lifetime at all.
            _ => return Err(Denial::LifetimeTooLong),
        }
    }
    Ok(())
}

/// Whether a token kept for `policy` still has enough life left to be served (an exchanged
/// one with too little is exchanged again rather than served).
pub fn fresh_enough(policy: &Policy, token: &Resolved, now_s: u64) -> bool {
    policy.min_remaining_s == 0
        || token
            .exp
            .is_none_or(|exp| exp.saturating_sub(now_s) >= policy.min_remaining_s)
}

/// The key of a token's embedded copy under one rule (the token's keyed hash, told apart per
/// rule; nobody without the worker's key can aim two at one).
fn key_of(incoming: &TokenKeys<'_>, rule: &Embedded) -> FastKey {
    incoming.fast ^ (u128::from(rule.id) << 64 | u128::from(rule.id.rotate_left(32)))
}

/// The JWT `token` carries in the rule's claim: this worker's copy, else read, checked and
/// kept. A missing claim is `403` (the token is not for this API); one that is not a JWS,
/// fails verification or outlives its token is `401`.
fn embedded(
    cx: &Ctx<'_>,
    rule: &Embedded,
    incoming: &TokenKeys<'_>,
    token: &Rc<Resolved>,
) -> Result<Rc<Resolved>, Denial> {
    let (worker, host) = (cx.worker, cx.host);
    let key = key_of(incoming, rule);
    let now = host.now_ms();
    if let Some(inner) = worker.local_embedded.get(&key, now) {
        return Ok(inner);
    }
    // Refusals are counted with their reply (`embedded_refused`).
    let refused = |denial| denial;
    let outer = token.authorization.strip_prefix("Bearer ").unwrap_or("");
    let payload = claims::payload_of(outer).ok_or_else(|| refused(Denial::EmbeddedMissing))?;
    let inner = match payload.get(&rule.claim) {
        None | Some(serde_json::Value::Null) => return Err(refused(Denial::EmbeddedMissing)),
        Some(serde_json::Value::String(inner)) if jwt::segments(inner).is_ok() => inner,
        Some(_) => return Err(refused(Denial::EmbeddedInvalid)),
    };
    if let Some(rules) = &rule.verify {
        match verify_with(cx, rules, inner) {
            Ok(()) => {}
            // Not the token's fault (warm-up): refused as such.
            Err(Denial::KeysUnavailable) => return Err(Denial::KeysUnavailable),
            Err(_) => return Err(refused(Denial::EmbeddedInvalid)),
        }
    }
    let parsed = jwt::parse(inner).map_err(|_| refused(Denial::EmbeddedInvalid))?;
    // It must not outlive the token that carries it.
    let outlives = match (parsed.exp, token.exp) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(inner_exp), Some(outer_exp)) => inner_exp > outer_exp,
    };
    if outlives {
        return Err(refused(Denial::EmbeddedInvalid));
    }
    // Whose it is: the carrying token's (a revocation of it forgets this copy too).
    let made = resolved(
        cx.cfg,
        inner,
        &parsed.scope,
        Who::Known(token.identity.clone()),
    );
    let until = parsed.exp.map_or(u64::MAX, |exp| {
        exp.saturating_mul(1_000).saturating_sub(EXP_SKEW_MS)
    });
    if until > now {
        worker.local_embedded.put(&key, until, made.clone());
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min: u64, max: Option<u64>) -> Policy {
        let mut p = crate::config::Config::from_slice(
            br#"{"phantom": {"cluster": "c", "path": "/i", "client_id": "g", "client_secret": "s"}}"#,
        )
        .unwrap()
        .policies
        .default;
        p.min_remaining_s = min;
        p.max_lifetime_s = max;
        p
    }

    fn token(iat: Option<u64>, exp: Option<u64>) -> Resolved {
        Resolved {
            iat,
            exp,
            ..Resolved::default()
        }
    }

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn min_remaining_lifetime_refuses_what_expires_on_its_way() {
        let p = policy(30, None);
        assert_eq!(lifetime_of(&p, &token(None, Some(NOW + 30)), NOW), Ok(()));
        assert_eq!(
            lifetime_of(&p, &token(None, Some(NOW + 29)), NOW),
            Err(Denial::ExpiresTooSoon)
        );
        assert_eq!(
            lifetime_of(&p, &token(None, Some(NOW - 5)), NOW),
            Err(Denial::ExpiresTooSoon)
        );
        assert_eq!(lifetime_of(&p, &token(None, None), NOW), Ok(()), "no exp");
        // Control: the rule off.
        assert_eq!(
            lifetime_of(&policy(0, None), &token(None, Some(NOW + 1)), NOW),
            Ok(())
        );
        assert!(fresh_enough(&p, &token(None, Some(NOW + 30)), NOW));
        assert!(!fresh_enough(&p, &token(None, Some(NOW + 29)), NOW));
    }

    #[test]
    fn max_lifetime_refuses_long_lived_tokens_and_those_it_cannot_tell() {
        let p = policy(0, Some(900));
        assert_eq!(
            lifetime_of(&p, &token(Some(NOW), Some(NOW + 900)), NOW),
            Ok(())
        );
        assert_eq!(
            lifetime_of(&p, &token(Some(NOW), Some(NOW + 901)), NOW),
            Err(Denial::LifetimeTooLong)
        );
        assert_eq!(
            lifetime_of(&p, &token(None, Some(NOW + 60)), NOW),
            Err(Denial::LifetimeTooLong),
            "no iat"
        );
        assert_eq!(
            lifetime_of(&p, &token(Some(NOW), None), NOW),
            Err(Denial::LifetimeTooLong),
            "no exp"
        );
        // Control: the rule off.
        assert_eq!(
            lifetime_of(&policy(0, None), &token(None, None), NOW),
            Ok(())
        );
    }
}
