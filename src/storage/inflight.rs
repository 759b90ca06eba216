//! Coalescing of concurrent introspections on one worker: requests that carry the same
//! uncached token while a call for it is in flight wait for that call instead of making their
//! own, so N concurrent requests cost one call.
//!
//! Envoy cancels a callout when the stream that made it goes away (client reset), without any
//! callback. If others still wait, the entry becomes *orphaned* and the root context dispatches
//! the call again on its next tick; the root never goes away, so its calls always complete.

use std::collections::HashMap;

use crate::hash::TokenHash;
use crate::token::revocation::Identity;

/// A request waiting for an answer: its context id (what it needs of the answer is its own
/// state, kept by the executor).
pub type Waiter = u32;

/// What a call in flight asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// The introspection of the client's token (the key is its hash).
    Introspection,
    /// With `fleet`: the fleet's entry for the client's token, read before it is introspected
    /// (a miss goes on as [`CallKind::Introspection`], the same waiters waiting).
    FleetRead,
    /// The exchange of the client's token (hash `token`) for the API of policy `policy`; the
    /// key is [`crate::storage::exchange_cache::key_of`] the token and the policy's rule.
    Exchange { token: TokenHash, policy: usize },
}

#[derive(Debug)]
struct Pending {
    /// What the call sends (the token to introspect, the subject token to exchange), kept
    /// only while the call is in flight, to dispatch it again if orphaned. Never logged.
    token: String,
    kind: CallKind,
    waiters: Vec<Waiter>,
    /// The context that made the call, and the call's token; `None` when orphaned.
    call: Option<(u32, u32)>,
    /// Whose the client's token is, for an exchange (with `revocation`): its answer is
    /// looked up in the marks before it is kept.
    client: Option<Box<Identity>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Join {
    /// First request for this key: make the call and report it with [`InFlight::started`].
    Lead,
    /// A call is already in flight: wait for it.
    Wait,
}

/// A call answered: what it was for, and everyone waiting for it.
#[derive(Debug, PartialEq, Eq)]
pub struct Completed {
    pub key: TokenHash,
    /// What the call sent (see [`Pending`]).
    pub token: String,
    pub kind: CallKind,
    pub waiters: Vec<Waiter>,
    /// See [`InFlight::attach`].
    pub client: Option<Box<Identity>>,
}

#[derive(Debug, Default)]
pub struct InFlight {
    pending: HashMap<TokenHash, Pending>,
    calls: HashMap<u32, TokenHash>,
    /// The key each waiting request waits for (a request waits for one call at a time).
    waiting: HashMap<u32, TokenHash>,
}

impl InFlight {
    pub fn join(&mut self, key: TokenHash, token: &str, kind: CallKind, waiter: Waiter) -> Join {
        self.waiting.insert(waiter, key);
        match self.pending.get_mut(&key) {
            Some(p) => {
                p.waiters.push(waiter);
                Join::Wait
            }
            None => {
                self.pending.insert(
                    key,
                    Pending {
                        token: token.to_owned(),
                        kind,
                        waiters: vec![waiter],
                        call: None,
                        client: None,
                    },
                );
                Join::Lead
            }
        }
    }

    /// Keeps whose the client's token is beside the call for `key` (an exchange).
    pub fn attach(&mut self, key: &TokenHash, client: Option<Box<Identity>>) {
        if let Some(p) = self.pending.get_mut(key) {
            p.client = client;
        }
    }

    /// Records the call made for `key` by context `owner`.
    pub fn started(&mut self, key: &TokenHash, owner: u32, call: u32) {
        if let Some(p) = self.pending.get_mut(key) {
            p.call = Some((owner, call));
            self.calls.insert(call, *key);
        }
    }

    fn done(&mut self, key: &TokenHash) -> Option<Pending> {
        let p = self.pending.remove(key)?;
        for w in &p.waiters {
            if self.waiting.get(w) == Some(key) {
                self.waiting.remove(w);
            }
        }
        Some(p)
    }

    /// The call could not be made: everyone waiting gets the failure.
    pub fn abandon(&mut self, key: &TokenHash) -> Vec<Waiter> {
        self.done(key).map(|p| p.waiters).unwrap_or_default()
    }

    /// The answer to `call` arrived. An unknown call (late, or superseded by a re-dispatch)
    /// returns `None` and is ignored.
    pub fn complete(&mut self, call: u32) -> Option<Completed> {
        let key = self.calls.remove(&call)?;
        let current = self.pending.get(&key).and_then(|p| p.call).map(|(_, c)| c);
        if current != Some(call) {
            return None;
        }
        self.done(&key).map(|p| Completed {
            key,
            token: p.token,
            kind: p.kind,
            waiters: p.waiters,
            client: p.client,
        })
    }

    /// The call for `key` is not what its waiters wait for any more: they wait for a call of
    /// `kind` (report it with [`InFlight::started`]). `done`: the answered call, put back (the
    /// fleet had nothing: the introspection follows).
    pub fn again(&mut self, done: Completed, kind: CallKind) {
        for w in &done.waiters {
            self.waiting.insert(*w, done.key);
        }
        self.pending.insert(
            done.key,
            Pending {
                token: done.token,
                kind,
                waiters: done.waiters,
                call: None,
                client: done.client,
            },
        );
    }

    /// The call for `key`, not yet made (it could not be), becomes one of `kind`.
    pub fn rekind(&mut self, key: &TokenHash, kind: CallKind) {
        if let Some(p) = self.pending.get_mut(key) {
            p.kind = kind;
        }
    }

    /// Context `context_id` is gone (finished or reset). Drops it from the waiters of the call
    /// it waits for; if it owned that call, the call is cancelled by Envoy: the entry is
    /// dropped when nobody else waits, orphaned otherwise.
    pub fn leave(&mut self, context_id: u32) {
        let Some(key) = self.waiting.remove(&context_id) else {
            return;
        };
        let Some(p) = self.pending.get_mut(&key) else {
            return;
        };
        p.waiters.retain(|w| *w != context_id);
        if let Some((owner, call)) = p.call {
            if owner == context_id {
                self.calls.remove(&call);
                p.call = None;
            }
        }
        if p.waiters.is_empty() && p.call.is_none() {
            self.pending.remove(&key);
        }
    }

    /// Orphaned entries, to be dispatched again by the root context.
    pub fn orphans(&self) -> Vec<(TokenHash, String, CallKind)> {
        self.pending
            .iter()
            .filter(|(_, p)| p.call.is_none() && !p.waiters.is_empty())
            .map(|(h, p)| (*h, p.token.clone(), p.kind))
            .collect()
    }

    /// Whether `context_id` waits for a call's answer.
    pub fn is_waiting(&self, context_id: u32) -> bool {
        self.waiting.contains_key(&context_id)
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Nothing in flight and nobody waiting: a request leaving has nothing to undo.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: TokenHash = [1; 32];
    const H2: TokenHash = [2; 32];
    const I: CallKind = CallKind::Introspection;

    fn w(id: u32) -> Waiter {
        id
    }

    #[test]
    fn a_fleet_miss_keeps_its_waiters_for_the_introspection() {
        let mut f = InFlight::default();
        assert_eq!(f.join(H, "t", CallKind::FleetRead, w(1)), Join::Lead);
        f.started(&H, 1, 100);
        assert_eq!(f.join(H, "t", I, w(2)), Join::Wait);
        let done = f.complete(100).unwrap();
        assert_eq!(done.kind, CallKind::FleetRead);
        f.again(done, I);
        assert!(f.is_waiting(1) && f.is_waiting(2));
        assert_eq!(f.join(H, "t", I, w(3)), Join::Wait);
        f.started(&H, 1, 101);
        assert_eq!(f.complete(100), None, "the fleet read is answered once");
        let done = f.complete(101).unwrap();
        assert_eq!((done.kind, done.waiters), (I, vec![1, 2, 3]));
        assert!(f.is_idle());
        // A fleet read that cannot be made: the introspection instead.
        assert_eq!(f.join(H2, "u", CallKind::FleetRead, w(4)), Join::Lead);
        f.rekind(&H2, I);
        assert_eq!(f.orphans(), vec![(H2, "u".to_owned(), I)]);
    }

    #[test]
    fn one_call_for_concurrent_requests() {
        let mut f = InFlight::default();
        assert_eq!(f.join(H, "t", I, w(1)), Join::Lead);
        f.started(&H, 1, 100);
        assert_eq!(f.join(H, "t", I, w(2)), Join::Wait);
        assert_eq!(f.join(H, "t", I, w(3)), Join::Wait);
        assert!(f.is_waiting(3));
        assert!(!f.is_waiting(5));
        assert_eq!(
            f.join(H2, "u", I, w(4)),
            Join::Lead,
            "another token has its own call"
        );
        let done = f.complete(100).unwrap();
        assert_eq!((done.key, done.token.as_str(), done.kind), (H, "t", I));
        assert_eq!(done.waiters, vec![w(1), w(2), w(3)]);
        assert!(!f.is_waiting(3), "resolved requests no longer wait");
        assert_eq!(f.complete(100), None, "a late duplicate is ignored");
        assert_eq!(
            f.join(H, "t", I, w(5)),
            Join::Lead,
            "after completion a new call may start"
        );
    }

    #[test]
    fn leader_reset_orphans_the_call_for_the_root() {
        let mut f = InFlight::default();
        f.join(H, "tok", I, w(1));
        f.started(&H, 1, 100);
        f.join(H, "tok", I, w(2));
        f.leave(1);
        assert_eq!(f.orphans(), vec![(H, "tok".to_owned(), I)]);
        assert_eq!(f.complete(100), None, "the cancelled call no longer counts");
        f.started(&H, 0, 101);
        assert!(f.orphans().is_empty());
        assert_eq!(f.complete(101).map(|c| c.waiters), Some(vec![w(2)]));
        assert!(f.is_empty());
    }

    #[test]
    fn last_waiter_leaving_drops_the_entry() {
        let mut f = InFlight::default();
        f.join(H, "tok", I, w(1));
        f.started(&H, 1, 100);
        f.leave(1);
        assert!(f.is_empty());
        assert!(f.orphans().is_empty());
    }

    #[test]
    fn a_waiter_leaving_keeps_the_call() {
        let mut f = InFlight::default();
        f.join(H, "tok", I, w(1));
        f.started(&H, 1, 100);
        f.join(H, "tok", I, w(2));
        f.leave(2);
        assert_eq!(f.complete(100).map(|c| c.waiters), Some(vec![w(1)]));
    }

    #[test]
    fn abandon_returns_everyone() {
        let mut f = InFlight::default();
        f.join(H, "tok", I, w(1));
        f.join(H, "tok", I, w(2));
        assert_eq!(f.abandon(&H), vec![w(1), w(2)]);
        assert_eq!(f.len(), 0);
        f.leave(1);
    }

    #[test]
    fn a_request_moves_from_an_introspection_to_an_exchange() {
        let mut f = InFlight::default();
        let x = CallKind::Exchange {
            token: H,
            policy: 3,
        };
        f.join(H, "tok", I, w(1));
        f.started(&H, 1, 100);
        let done = f.complete(100).unwrap();
        assert!(!f.is_waiting(1));
        assert_eq!(f.join(H2, "subject", x, done.waiters[0]), Join::Lead);
        assert!(f.is_waiting(1), "waiting again, for the exchange");
        f.started(&H2, 1, 101);
        f.leave(1);
        assert!(f.is_empty() && !f.is_waiting(1));
    }
}
