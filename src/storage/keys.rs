//! The verification key set (RFC 7517 JWK Set) of one Envoy process: fetched from the token
//! service by one worker at a time, shared with the others through shared data.
//!
//! Two shared-data keys per JWKS source (prefix [`JwksSource::namespace`]):
//!
//! - `<ns>lease`: the fetch schedule, `generation u64 | lease_until_ms u64 | last_start_ms u64 |
//!   next_due_ms u64 | early u8` (big-endian). Every write is a compare-and-swap, so exactly one
//!   worker wins the right to fetch (the *lease*, held until the call answers or
//!   `timeout_ms + 1 s` passes). `generation` counts successful fetches.
//! - `<ns>set`: the last good JWK Set document, as fetched (validated before it is written).
//!
//! Every worker calls [`on_tick`] on its timer: it loads the set when `generation` moved, and
//! starts a fetch when one is due and nobody holds the lease. A fetch is due every `refresh_s`,
//! and early, at most once per `min_refetch_s`, when a token named an unknown `kid` (key
//! rotation) or the last fetch failed. So a flood of random `kid`s costs the token service at
//! most one fetch per `min_refetch_s` for the whole process, and a failed fetch keeps the last
//! good set.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::host::Host;
use crate::metrics::Counter;
use crate::token::jws::{JwksError, KeySet, Policy};

/// Added to `timeout_ms` for the lease: the call has surely answered (or failed) by then.
const LEASE_MARGIN_MS: u64 = 1_000;
const LEASE_LEN: usize = 8 * 4 + 1;
const MAX_ATTEMPTS: usize = 16;

/// Where the key set comes from: fetched from the token service (`verify.jwks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksSource {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub refresh_s: u64,
    pub timeout_ms: u64,
    /// Least time between two fetches that are not the periodic refresh (an unknown `kid`,
    /// a failed fetch).
    pub min_refetch_s: u64,
    /// Prefix of the shared-data keys holding the key set and its fetch schedule.
    pub namespace: String,
}

/// What one worker knows about the keys.
#[derive(Default)]
pub struct KeyState {
    keys: RefCell<Option<Rc<KeySet>>>,
    generation: Cell<u64>,
    wants_refetch: Cell<bool>,
}

impl KeyState {
    /// A state with a fixed set (inline keys).
    pub fn with_keys(keys: Rc<KeySet>) -> Self {
        let s = Self::default();
        *s.keys.borrow_mut() = Some(keys);
        s
    }

    /// The current set; `None` until one was loaded.
    pub fn keys(&self) -> Option<Rc<KeySet>> {
        self.keys.borrow().clone()
    }

    pub fn set_keys(&self, keys: Rc<KeySet>) {
        *self.keys.borrow_mut() = Some(keys);
    }

    /// A token named a `kid` this worker does not know: ask for an early fetch.
    pub fn request_refetch(&self) {
        self.wants_refetch.set(true);
    }

    /// Whether an early fetch was asked for since the last call (and clears the request).
    pub fn take_refetch_request(&self) -> bool {
        self.wants_refetch.replace(false)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Lease {
    generation: u64,
    lease_until_ms: u64,
    last_start_ms: u64,
    next_due_ms: u64,
    early: bool,
}

impl Lease {
    fn decode(v: &[u8]) -> Option<Self> {
        if v.len() != LEASE_LEN {
            return None;
        }
        let word = |i: usize| {
            v.get(i * 8..i * 8 + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
        };
        Some(Self {
            generation: word(0)?,
            lease_until_ms: word(1)?,
            last_start_ms: word(2)?,
            next_due_ms: word(3)?,
            early: v.get(32) == Some(&1),
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(LEASE_LEN);
        for w in [
            self.generation,
            self.lease_until_ms,
            self.last_start_ms,
            self.next_due_ms,
        ] {
            out.extend_from_slice(&w.to_be_bytes());
        }
        out.push(u8::from(self.early));
        out
    }
}

fn lease_key(src: &JwksSource) -> String {
    format!("{}lease", src.namespace)
}

fn set_key(src: &JwksSource) -> String {
    format!("{}set", src.namespace)
}

/// Creates the lease key if it does not exist: Envoy's compare-and-swap only protects a key
/// that exists, and the lease must never be won by two workers.
pub fn initialize(src: &JwksSource, host: &dyn Host) {
    let key = lease_key(src);
    if host.shared_get_cas(&key).1.is_none() {
        let _ = host.shared_set_cas(&key, &Lease::default().encode(), None);
    }
}

/// What a worker's timer must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickAction {
    Idle,
    /// This worker holds the lease: fetch the JWKS now, then call [`on_fetched`].
    Fetch,
}

/// Loads a newer key set if another worker fetched one, then decides whether this worker
/// fetches.
pub fn on_tick(src: &JwksSource, policy: &Policy, host: &dyn Host, state: &KeyState) -> TickAction {
    let key = lease_key(src);
    let (value, cas) = host.shared_get_cas(&key);
    let Some(cas) = cas else {
        initialize(src, host);
        return TickAction::Idle;
    };
    let mut lease = value.as_deref().and_then(Lease::decode).unwrap_or_default();
    sync(src, policy, host, state, lease.generation);
    let now = host.now_ms();
    let mut changed = false;
    if state.take_refetch_request() && !lease.early {
        lease.early = true;
        changed = true;
    }
    let early_ok = lease.early
        && now
            >= lease
                .last_start_ms
                .saturating_add(src.min_refetch_s.saturating_mul(1_000));
    let due = now >= lease.next_due_ms || early_ok;
    let mut action = TickAction::Idle;
    if due && now >= lease.lease_until_ms {
        lease.lease_until_ms = now.saturating_add(src.timeout_ms + LEASE_MARGIN_MS);
        lease.last_start_ms = now;
        lease.early = false;
        changed = true;
        action = TickAction::Fetch;
    }
    if changed
        && host
            .shared_set_cas(&key, &lease.encode(), Some(cas))
            .is_err()
    {
        // Another worker wrote first: it fetches, or the next tick retries the request.
        if lease.early || action == TickAction::Fetch {
            state.request_refetch();
        }
        return TickAction::Idle;
    }
    action
}

/// Where the first fetch of a key set stands, for every worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstFetch {
    /// Not made yet, or in flight: requests that need keys may wait for it.
    Pending,
    /// Made, and it failed (no set was ever fetched): requests that need keys are refused.
    Failed,
    /// A set was fetched.
    Done,
}

/// Where the first fetch stands: read from the lease every worker shares.
pub fn first_fetch(src: &JwksSource, host: &dyn Host) -> FirstFetch {
    let lease = host
        .shared_get(&lease_key(src))
        .as_deref()
        .and_then(Lease::decode)
        .unwrap_or_default();
    if lease.generation > 0 {
        FirstFetch::Done
    } else if lease.last_start_ms > 0 && host.now_ms() >= lease.lease_until_ms {
        // Started, and its lease released (an answer that was no key set) or run out.
        FirstFetch::Failed
    } else {
        FirstFetch::Pending
    }
}

/// Loads the set another configuration or worker already fetched, if any: a reloaded filter
/// (a new configuration in the same VM, whose shared data stays) starts with its keys.
pub fn load_shared(src: &JwksSource, policy: &Policy, host: &dyn Host, state: &KeyState) {
    let generation = host
        .shared_get(&lease_key(src))
        .as_deref()
        .and_then(Lease::decode)
        .map_or(0, |l| l.generation);
    sync(src, policy, host, state, generation);
}

/// Loads the shared set when its generation differs from this worker's.
fn sync(src: &JwksSource, policy: &Policy, host: &dyn Host, state: &KeyState, generation: u64) {
    if generation == 0 || generation == state.generation.get() {
        return;
    }
    if let Some(body) = host.shared_get(&set_key(src)) {
        if let Ok(set) = KeySet::parse(&body, &policy.algorithms, false) {
            state.set_keys(Rc::new(set));
            state.generation.set(generation);
        }
    }
}

/// Records a fetch's outcome (`body`: a 200 answer's body; `None`: any failure). A good set
/// is shared and used at once; a failure keeps the last good set and retries after
/// `min_refetch_s`. Returns the number of keys loaded, or why nothing was.
pub fn on_fetched(
    src: &JwksSource,
    policy: &Policy,
    host: &dyn Host,
    state: &KeyState,
    body: Option<&[u8]>,
) -> Result<usize, JwksError> {
    let now = host.now_ms();
    let parsed = body
        .ok_or_else(|| JwksError::Malformed("no answer".to_owned()))
        .and_then(|b| KeySet::parse(b, &policy.algorithms, false).map(|s| (b, s)));
    let key = lease_key(src);
    let result = match parsed {
        Ok((bytes, set)) => {
            host.shared_set(&set_key(src), bytes);
            let n = set.len();
            state.set_keys(Rc::new(set));
            host.count(Counter::JwksFetched);
            Ok(n)
        }
        Err(e) => {
            host.count(Counter::JwksFetchFailed);
            Err(e)
        }
    };
    for _ in 0..MAX_ATTEMPTS {
        let (value, cas) = host.shared_get_cas(&key);
        let mut lease = value.as_deref().and_then(Lease::decode).unwrap_or_default();
        lease.lease_until_ms = 0;
        if result.is_ok() {
            lease.generation = lease.generation.saturating_add(1);
            lease.next_due_ms = now.saturating_add(src.refresh_s.saturating_mul(1_000));
            lease.early = false;
        } else {
            lease.next_due_ms = now.saturating_add(src.min_refetch_s.saturating_mul(1_000));
        }
        if host.shared_set_cas(&key, &lease.encode(), cas).is_ok() {
            if result.is_ok() {
                state.generation.set(lease.generation);
            }
            break;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeHost;
    use crate::token::jws::tests::{jwks, keys, policy};
    use crate::token::jws::Alg;

    const T0: u64 = 1_700_000_000_000;

    fn src() -> JwksSource {
        JwksSource {
            cluster: "ts".into(),
            authority: "ts".into(),
            path: "/jwks".into(),
            refresh_s: 300,
            timeout_ms: 2_000,
            min_refetch_s: 5,
            namespace: "jwks0:".into(),
        }
    }

    fn p() -> Policy {
        policy(&[Alg::Rs256, Alg::Es256, Alg::EdDsa])
    }

    #[test]
    fn one_worker_fetches_and_the_other_loads_the_shared_set() {
        let (host, s, p) = (FakeHost::at(T0), src(), p());
        let (a, b) = (KeyState::default(), KeyState::default());
        initialize(&s, &host);
        assert_eq!(on_tick(&s, &p, &host, &a), TickAction::Fetch);
        assert_eq!(
            on_tick(&s, &p, &host, &b),
            TickAction::Idle,
            "lease held by a"
        );
        let doc = jwks(&keys());
        assert_eq!(on_fetched(&s, &p, &host, &a, Some(doc.as_bytes())), Ok(3));
        assert!(a.keys().is_some() && b.keys().is_none());
        assert_eq!(on_tick(&s, &p, &host, &b), TickAction::Idle);
        assert_eq!(b.keys().map(|k| k.len()), Some(3), "b loaded a's fetch");
        host.now.set(T0 + 299_999);
        assert_eq!(on_tick(&s, &p, &host, &b), TickAction::Idle);
        host.now.set(T0 + 300_000);
        assert_eq!(on_tick(&s, &p, &host, &b), TickAction::Fetch, "refresh_s");
        assert_eq!(host.count_of(Counter::JwksFetched), 1);
    }

    #[test]
    fn a_failed_fetch_keeps_the_last_set_and_retries_after_min_refetch() {
        let (host, s, p) = (FakeHost::at(T0), src(), p());
        let a = KeyState::default();
        initialize(&s, &host);
        assert_eq!(on_tick(&s, &p, &host, &a), TickAction::Fetch);
        assert!(on_fetched(&s, &p, &host, &a, None).is_err());
        assert!(a.keys().is_none());
        host.now.set(T0 + 4_999);
        assert_eq!(on_tick(&s, &p, &host, &a), TickAction::Idle);
        host.now.set(T0 + 5_000);
        assert_eq!(on_tick(&s, &p, &host, &a), TickAction::Fetch);
        let doc = jwks(&keys());
        assert_eq!(on_fetched(&s, &p, &host, &a, Some(doc.as_bytes())), Ok(3));
        host.now.set(T0 + 305_000);
        assert_eq!(on_tick(&s, &p, &host, &a), TickAction::Fetch);
        assert!(on_fetched(&s, &p, &host, &a, Some(b"{\"keys\":[]}")).is_err());
        assert_eq!(a.keys().map(|k| k.len()), Some(3), "last good set kept");
        assert_eq!(host.count_of(Counter::JwksFetchFailed), 2);
    }

    #[test]
    fn unknown_kids_cause_at_most_one_fetch_per_min_refetch() {
        let (host, s, p) = (FakeHost::at(T0), src(), p());
        let a = KeyState::default();
        initialize(&s, &host);
        on_tick(&s, &p, &host, &a);
        on_fetched(&s, &p, &host, &a, Some(jwks(&keys()).as_bytes())).unwrap();
        let mut fetches = 0;
        // 60 s of ticks every 200 ms, each after a request with an unknown kid.
        for i in 1..=300 {
            host.now.set(T0 + i * 200);
            a.request_refetch();
            if on_tick(&s, &p, &host, &a) == TickAction::Fetch {
                fetches += 1;
                on_fetched(&s, &p, &host, &a, Some(jwks(&keys()).as_bytes())).unwrap();
            }
        }
        assert_eq!(fetches, 12, "one per 5 s over 60 s");
    }

    #[test]
    fn an_expired_lease_is_taken_over() {
        let (host, s, p) = (FakeHost::at(T0), src(), p());
        let (a, b) = (KeyState::default(), KeyState::default());
        initialize(&s, &host);
        assert_eq!(on_tick(&s, &p, &host, &a), TickAction::Fetch);
        host.now.set(T0 + 2_999);
        assert_eq!(on_tick(&s, &p, &host, &b), TickAction::Idle);
        host.now.set(T0 + 3_000);
        assert_eq!(
            on_tick(&s, &p, &host, &b),
            TickAction::Fetch,
            "a never answered"
        );
    }

    #[test]
    fn two_workers_racing_for_the_lease_never_both_win() {
        let (host, s, p) = (FakeHost::at(T0), src(), p());
        let (a, b) = (KeyState::default(), KeyState::default());
        initialize(&s, &host);
        let s2 = s.clone();
        let p2 = p.clone();
        let n = host.writes() + 1;
        // b's whole tick runs just before a's lease write.
        let won_b = std::rc::Rc::new(Cell::new(false));
        let flag = won_b.clone();
        host.interfere_at(n, move |h| {
            flag.set(on_tick(&s2, &p2, h, &b) == TickAction::Fetch);
        });
        let won_a = on_tick(&s, &p, &host, &a) == TickAction::Fetch;
        assert!(won_b.get() && !won_a);
    }

    #[test]
    fn the_first_fetch_pending_failed_done() {
        let (src, policy, host) = (src(), p(), FakeHost::at(T0));
        let state = KeyState::default();
        initialize(&src, &host);
        assert_eq!(first_fetch(&src, &host), FirstFetch::Pending);
        assert_eq!(on_tick(&src, &policy, &host, &state), TickAction::Fetch);
        assert_eq!(first_fetch(&src, &host), FirstFetch::Pending, "in flight");
        assert!(on_fetched(&src, &policy, &host, &state, None).is_err());
        assert_eq!(first_fetch(&src, &host), FirstFetch::Failed);
        host.now.set(T0 + 60_000);
        assert_eq!(on_tick(&src, &policy, &host, &state), TickAction::Fetch);
        let doc = jwks(&keys());
        assert!(on_fetched(&src, &policy, &host, &state, Some(doc.as_bytes())).is_ok());
        assert_eq!(first_fetch(&src, &host), FirstFetch::Done);
    }
}
