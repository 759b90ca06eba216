//! The per-request decisions of the phantom token flow, free of any host call.
//!
//! ```text
//! request headers ──► CORS preflight? ──► continue unauthenticated (Authorization removed)
//!        │
//!        ▼ parse bearer (RFC 6750) ──► Reject(NoCredentials | MalformedCredentials)
//!        ▼ cache slot
//!   hit: Active ──► scope check ──► Forward(Bearer JWT) | Reject(InsufficientScope)
//!   hit: Inactive ──► Reject(InvalidToken)
//!   miss ──► Introspect ── answer ──► on_introspection ──► Forward | Reject
//! ```
//!
//! Host effects (shared data, clock, counters) go through [`Host`], so the whole flow runs
//! natively in tests with a fake host and a fixed clock.

use crate::bearer::{self, BearerError};
use crate::cache::{self, Cached, TokenHash};
use crate::config::Config;
use crate::introspection::Outcome;
use crate::metrics::Counter;
use crate::reply::Denial;
use crate::scope;

/// What the core needs from the proxy.
pub trait Host {
    fn now_ms(&self) -> u64;
    fn shared_get(&self, key: &str) -> Option<Vec<u8>>;
    fn shared_set(&self, key: &str, value: &[u8]);
    fn count(&self, counter: Counter);
}

/// The final word on a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Replace `Authorization` with this value and continue.
    Forward {
        authorization: String,
    },
    Reject(Denial),
}

/// The next step for a request whose headers just arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Done(Verdict),
    /// Cache miss: ask the token service.
    Introspect {
        hash: TokenHash,
        token: String,
    },
}

/// A CORS preflight (Fetch standard): `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`. Browsers send it without credentials, so it passes
/// unauthenticated, as with Envoy's `jwt_authn`.
pub fn is_cors_preflight(method: &str, origin: Option<&str>, request_method: Option<&str>) -> bool {
    method == "OPTIONS"
        && origin.is_some_and(|o| !o.is_empty())
        && request_method.is_some_and(|m| !m.is_empty())
}

/// Decides what to do with a request given its `Authorization` header.
pub fn on_request(cfg: &Config, host: &dyn Host, authorization: Option<&str>) -> Step {
    let token = match bearer::parse_authorization(authorization) {
        Ok(token) => token,
        Err(BearerError::Missing) => return Step::Done(Verdict::Reject(Denial::NoCredentials)),
        Err(BearerError::Malformed) => {
            return Step::Done(Verdict::Reject(Denial::MalformedCredentials))
        }
    };
    let hash = cache::token_hash(token);
    let key = cache::slot_key(&cfg.cache.namespace, &hash, cfg.cache.max_entries);
    if let Some(value) = host.shared_get(&key) {
        match cache::lookup(&value, &hash, host.now_ms()) {
            Some(Cached::Active { jwt, scope }) => {
                host.count(Counter::CacheHit);
                return Step::Done(authorize(cfg, jwt, scope));
            }
            Some(Cached::Inactive) => {
                host.count(Counter::CacheHit);
                return Step::Done(Verdict::Reject(Denial::InvalidToken));
            }
            None => {}
        }
    }
    host.count(Counter::CacheMiss);
    Step::Introspect {
        hash,
        token: token.to_owned(),
    }
}

/// Turns the token service's answer into a verdict, caching it as the TTL rule allows.
pub fn on_introspection(
    cfg: &Config,
    host: &dyn Host,
    hash: &TokenHash,
    outcome: Outcome,
) -> Verdict {
    let now = host.now_ms();
    let key = || cache::slot_key(&cfg.cache.namespace, hash, cfg.cache.max_entries);
    match outcome {
        Outcome::Active { claims, .. }
            if claims
                .exp
                .is_some_and(|exp| exp.saturating_mul(1_000) <= now) =>
        {
            // The token service handed out an already expired JWT: the API would refuse it.
            cache_inactive(cfg, host, &key(), hash, now);
            Verdict::Reject(Denial::InvalidToken)
        }
        Outcome::Active {
            jwt,
            claims,
            max_age_s,
            no_store,
        } => {
            if !no_store {
                if let Some(until) =
                    cache::active_expiry(now, &claims, max_age_s, cfg.cache.max_ttl_s)
                {
                    host.shared_set(
                        &key(),
                        &cache::encode_active(hash, until, &claims.scope, &jwt),
                    );
                }
            }
            authorize(cfg, &jwt, &claims.scope)
        }
        Outcome::Inactive => {
            cache_inactive(cfg, host, &key(), hash, now);
            Verdict::Reject(Denial::InvalidToken)
        }
        Outcome::Failed(failure) => Verdict::Reject(Denial::TokenService(failure)),
    }
}

fn cache_inactive(cfg: &Config, host: &dyn Host, key: &str, hash: &TokenHash, now: u64) {
    if cfg.cache.negative_ttl_s > 0 {
        let until = now.saturating_add(cfg.cache.negative_ttl_s.saturating_mul(1_000));
        host.shared_set(key, &cache::encode_inactive(hash, until));
    }
}

/// Scopes are checked on every request, cache hit or not.
fn authorize(cfg: &Config, jwt: &str, granted: &str) -> Verdict {
    if scope::has_all(granted, &cfg.required_scopes) {
        Verdict::Forward {
            authorization: format!("Bearer {jwt}"),
        }
    } else {
        Verdict::Reject(Denial::InsufficientScope)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    use super::*;
    use crate::introspection::Failure;
    use crate::jwt::tests::make;
    use crate::jwt::Claims;

    const T0: u64 = 1_700_000_000_000;

    /// Shared data as a map, a clock the test moves, counters it can read.
    #[derive(Default)]
    struct FakeHost {
        now: Cell<u64>,
        data: RefCell<HashMap<String, Vec<u8>>>,
        counts: RefCell<HashMap<Counter, u32>>,
    }

    impl Host for FakeHost {
        fn now_ms(&self) -> u64 {
            self.now.get()
        }
        fn shared_get(&self, key: &str) -> Option<Vec<u8>> {
            self.data.borrow().get(key).cloned()
        }
        fn shared_set(&self, key: &str, value: &[u8]) {
            self.data
                .borrow_mut()
                .insert(key.to_owned(), value.to_vec());
        }
        fn count(&self, counter: Counter) {
            *self.counts.borrow_mut().entry(counter).or_default() += 1;
        }
    }

    impl FakeHost {
        fn at(now: u64) -> Self {
            let h = Self::default();
            h.now.set(now);
            h
        }
        fn count_of(&self, c: Counter) -> u32 {
            self.counts.borrow().get(&c).copied().unwrap_or(0)
        }
    }

    fn config(extra: &str) -> Config {
        let json = format!(
            r#"{{"required_scopes": ["read"], "phantom": {{"cluster": "ts", "path": "/i",
            "client_id": "gw", "client_secret": "s"}}{extra}}}"#
        );
        Config::from_slice(json.as_bytes()).unwrap()
    }

    fn active(jwt: &str, exp: Option<u64>, scope: &str) -> Outcome {
        Outcome::Active {
            jwt: jwt.to_owned(),
            claims: Claims {
                exp,
                scope: scope.to_owned(),
            },
            max_age_s: None,
            no_store: false,
        }
    }

    fn introspect(cfg: &Config, host: &FakeHost, header: &str) -> TokenHash {
        match on_request(cfg, host, Some(header)) {
            Step::Introspect { hash, token } => {
                assert_eq!(format!("Bearer {token}"), header);
                hash
            }
            other => panic!("expected a cache miss for {header}, got {other:?}"),
        }
    }

    fn forward(jwt: &str) -> Step {
        Step::Done(Verdict::Forward {
            authorization: format!("Bearer {jwt}"),
        })
    }

    #[test]
    fn missing_and_malformed_credentials_never_reach_the_cache() {
        let (cfg, host) = (config(""), FakeHost::at(T0));
        assert_eq!(
            on_request(&cfg, &host, None),
            Step::Done(Verdict::Reject(Denial::NoCredentials))
        );
        assert_eq!(
            on_request(&cfg, &host, Some("Bearer a b")),
            Step::Done(Verdict::Reject(Denial::MalformedCredentials))
        );
        assert_eq!(host.count_of(Counter::CacheMiss), 0);
        assert!(host.data.borrow().is_empty());
    }

    #[test]
    fn active_answer_is_cached_and_served_until_exp_minus_skew() {
        let (cfg, host) = (config(""), FakeHost::at(T0));
        let jwt = make(r#"{"scope":"read"}"#);
        let exp = T0 / 1000 + 60;
        let hash = introspect(&cfg, &host, "Bearer opaque");
        let v = on_introspection(&cfg, &host, &hash, active(&jwt, Some(exp), "read"));
        assert_eq!(
            v,
            Verdict::Forward {
                authorization: format!("Bearer {jwt}")
            }
        );
        assert_eq!(
            on_request(&cfg, &host, Some("Bearer opaque")),
            forward(&jwt)
        );
        assert_eq!(host.count_of(Counter::CacheHit), 1);
        host.now.set(exp * 1000 - crate::cache::EXP_SKEW_MS - 1);
        assert_eq!(
            on_request(&cfg, &host, Some("Bearer opaque")),
            forward(&jwt)
        );
        host.now.set(exp * 1000 - crate::cache::EXP_SKEW_MS);
        introspect(&cfg, &host, "Bearer opaque");
        let stored: Vec<u8> = host.data.borrow().values().next().unwrap().clone();
        assert!(
            !stored.windows(6).any(|w| w == b"opaque"),
            "the opaque token is never stored"
        );
    }

    #[test]
    fn scopes_are_checked_on_cache_hits() {
        let (cfg, host) = (config(""), FakeHost::at(T0));
        let hash = introspect(&cfg, &host, "Bearer t");
        let v = on_introspection(&cfg, &host, &hash, active("a.b.c", None, "write"));
        assert_eq!(v, Verdict::Reject(Denial::InsufficientScope));
        assert_eq!(
            on_request(&cfg, &host, Some("Bearer t")),
            Step::Done(Verdict::Reject(Denial::InsufficientScope))
        );
        assert_eq!(host.count_of(Counter::CacheHit), 1);
    }

    #[test]
    fn inactive_answers_are_cached_for_negative_ttl() {
        let (cfg, host) = (
            config(r#", "cache": {"negative_ttl_s": 5}"#),
            FakeHost::at(T0),
        );
        let hash = introspect(&cfg, &host, "Bearer t");
        assert_eq!(
            on_introspection(&cfg, &host, &hash, Outcome::Inactive),
            Verdict::Reject(Denial::InvalidToken)
        );
        assert_eq!(
            on_request(&cfg, &host, Some("Bearer t")),
            Step::Done(Verdict::Reject(Denial::InvalidToken))
        );
        host.now.set(T0 + 5_000);
        introspect(&cfg, &host, "Bearer t");
    }

    #[test]
    fn negative_ttl_zero_and_failures_and_no_store_are_not_cached() {
        let cfg = config(r#", "cache": {"negative_ttl_s": 0}"#);
        let host = FakeHost::at(T0);
        let hash = introspect(&cfg, &host, "Bearer t");
        on_introspection(&cfg, &host, &hash, Outcome::Inactive);
        let v = on_introspection(&cfg, &host, &hash, Outcome::Failed(Failure::Timeout));
        assert_eq!(v, Verdict::Reject(Denial::TokenService(Failure::Timeout)));
        let no_store = Outcome::Active {
            jwt: "a.b.c".into(),
            claims: Claims {
                exp: None,
                scope: "read".into(),
            },
            max_age_s: None,
            no_store: true,
        };
        assert!(matches!(
            on_introspection(&cfg, &host, &hash, no_store),
            Verdict::Forward { .. }
        ));
        assert!(host.data.borrow().is_empty());
    }

    #[test]
    fn an_already_expired_jwt_is_an_invalid_token() {
        let (cfg, host) = (config(""), FakeHost::at(T0));
        let hash = introspect(&cfg, &host, "Bearer t");
        let v = on_introspection(
            &cfg,
            &host,
            &hash,
            active("a.b.c", Some(T0 / 1000 - 1), "read"),
        );
        assert_eq!(v, Verdict::Reject(Denial::InvalidToken));
    }

    #[test]
    fn a_slot_holds_one_token_and_collisions_are_misses() {
        let (cfg, host) = (config(r#", "cache": {"max_entries": 1}"#), FakeHost::at(T0));
        let a = introspect(&cfg, &host, "Bearer a");
        on_introspection(&cfg, &host, &a, active("a.a.a", None, "read"));
        let b = introspect(&cfg, &host, "Bearer b");
        on_introspection(&cfg, &host, &b, active("b.b.b", None, "read"));
        assert_eq!(host.data.borrow().len(), 1, "one slot, one key");
        assert_eq!(on_request(&cfg, &host, Some("Bearer b")), forward("b.b.b"));
        introspect(&cfg, &host, "Bearer a");
    }

    #[test]
    fn cors_preflight_detection() {
        assert!(is_cors_preflight(
            "OPTIONS",
            Some("https://a"),
            Some("POST")
        ));
        assert!(!is_cors_preflight("OPTIONS", Some("https://a"), None));
        assert!(!is_cors_preflight("OPTIONS", None, Some("POST")));
        assert!(!is_cors_preflight("GET", Some("https://a"), Some("POST")));
        assert!(!is_cors_preflight("OPTIONS", Some(""), Some("POST")));
    }
}
