//! Coalescing of concurrent introspections on one worker: requests that carry the same
//! uncached token while a call for it is in flight wait for that call instead of making their
//! own, so N concurrent requests cost one call.
//!
//! Envoy cancels a callout when the stream that made it goes away (client reset), without any
//! callback. If others still wait, the entry becomes *orphaned* and the root context dispatches
//! the call again on its next tick; the root never goes away, so its calls always complete.

use std::collections::HashMap;

use crate::hash::TokenHash;
use crate::token::bearer::Presented;

/// A request waiting for an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter {
    pub context_id: u32,
    /// `HEAD` requests get replies without a body.
    pub head: bool,
    /// The policy the request is judged under (each waiter may have its own).
    pub policy: usize,
    /// What the request presented besides the token (its proof of possession).
    pub presented: Presented,
}

#[derive(Debug)]
struct Pending {
    /// Kept only while the call is in flight, to dispatch it again if orphaned. Never logged.
    token: String,
    waiters: Vec<Waiter>,
    /// The context that made the call, and the call's token; `None` when orphaned.
    call: Option<(u32, u32)>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Join {
    /// First request for this token: make the call and report it with [`InFlight::started`].
    Lead,
    /// A call is already in flight: wait for it.
    Wait,
}

#[derive(Debug, Default)]
pub struct InFlight {
    pending: HashMap<TokenHash, Pending>,
    calls: HashMap<u32, TokenHash>,
}

impl InFlight {
    pub fn join(&mut self, hash: TokenHash, token: &str, waiter: Waiter) -> Join {
        match self.pending.get_mut(&hash) {
            Some(p) => {
                p.waiters.push(waiter);
                Join::Wait
            }
            None => {
                self.pending.insert(
                    hash,
                    Pending {
                        token: token.to_owned(),
                        waiters: vec![waiter],
                        call: None,
                    },
                );
                Join::Lead
            }
        }
    }

    /// Records the call made for `hash` by context `owner`.
    pub fn started(&mut self, hash: &TokenHash, owner: u32, call: u32) {
        if let Some(p) = self.pending.get_mut(hash) {
            p.call = Some((owner, call));
            self.calls.insert(call, *hash);
        }
    }

    /// The call could not be made: everyone waiting gets the failure.
    pub fn abandon(&mut self, hash: &TokenHash) -> Vec<Waiter> {
        self.pending
            .remove(hash)
            .map(|p| p.waiters)
            .unwrap_or_default()
    }

    /// The answer to `call` arrived: returns the token hash and everyone waiting for it. An
    /// unknown call (late, or superseded by a re-dispatch) returns `None` and is ignored.
    pub fn complete(&mut self, call: u32) -> Option<(TokenHash, Vec<Waiter>)> {
        let hash = self.calls.remove(&call)?;
        let current = self.pending.get(&hash).and_then(|p| p.call).map(|(_, c)| c);
        if current != Some(call) {
            return None;
        }
        self.pending.remove(&hash).map(|p| (hash, p.waiters))
    }

    /// Context `context_id` is gone (finished or reset). Drops it from the waiters; if it
    /// owned the call, that call is cancelled by Envoy: the entry is dropped when nobody else
    /// waits, orphaned otherwise.
    pub fn leave(&mut self, hash: &TokenHash, context_id: u32) {
        let Some(p) = self.pending.get_mut(hash) else {
            return;
        };
        p.waiters.retain(|w| w.context_id != context_id);
        if let Some((owner, call)) = p.call {
            if owner == context_id {
                self.calls.remove(&call);
                p.call = None;
            }
        }
        if p.waiters.is_empty() && p.call.is_none() {
            self.pending.remove(hash);
        }
    }

    /// Orphaned entries, to be dispatched again by the root context: `(hash, token)`.
    pub fn orphans(&self) -> Vec<(TokenHash, String)> {
        self.pending
            .iter()
            .filter(|(_, p)| p.call.is_none() && !p.waiters.is_empty())
            .map(|(h, p)| (*h, p.token.clone()))
            .collect()
    }

    /// Whether `context_id` still waits for the answer for `hash`.
    pub fn is_waiting(&self, hash: &TokenHash, context_id: u32) -> bool {
        self.pending
            .get(hash)
            .is_some_and(|p| p.waiters.iter().any(|w| w.context_id == context_id))
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: TokenHash = [1; 32];
    const H2: TokenHash = [2; 32];

    fn w(id: u32) -> Waiter {
        Waiter {
            context_id: id,
            head: false,
            policy: 0,
            presented: Presented::default(),
        }
    }

    #[test]
    fn one_call_for_concurrent_requests() {
        let mut f = InFlight::default();
        assert_eq!(f.join(H, "t", w(1)), Join::Lead);
        f.started(&H, 1, 100);
        assert_eq!(f.join(H, "t", w(2)), Join::Wait);
        assert_eq!(f.join(H, "t", w(3)), Join::Wait);
        assert!(f.is_waiting(&H, 3));
        assert!(!f.is_waiting(&H, 4));
        assert_eq!(
            f.join(H2, "u", w(4)),
            Join::Lead,
            "another token has its own call"
        );
        let (hash, waiters) = f.complete(100).unwrap();
        assert_eq!(hash, H);
        assert_eq!(waiters, vec![w(1), w(2), w(3)]);
        assert!(!f.is_waiting(&H, 3), "resolved requests no longer wait");
        assert_eq!(f.complete(100), None, "a late duplicate is ignored");
        assert_eq!(
            f.join(H, "t", w(5)),
            Join::Lead,
            "after completion a new call may start"
        );
    }

    #[test]
    fn leader_reset_orphans_the_call_for_the_root() {
        let mut f = InFlight::default();
        f.join(H, "tok", w(1));
        f.started(&H, 1, 100);
        f.join(H, "tok", w(2));
        f.leave(&H, 1);
        assert_eq!(f.orphans(), vec![(H, "tok".to_owned())]);
        assert_eq!(f.complete(100), None, "the cancelled call no longer counts");
        f.started(&H, 0, 101);
        assert!(f.orphans().is_empty());
        assert_eq!(f.complete(101), Some((H, vec![w(2)])));
        assert!(f.is_empty());
    }

    #[test]
    fn last_waiter_leaving_drops_the_entry() {
        let mut f = InFlight::default();
        f.join(H, "tok", w(1));
        f.started(&H, 1, 100);
        f.leave(&H, 1);
        assert!(f.is_empty());
        assert!(f.orphans().is_empty());
    }

    #[test]
    fn a_waiter_leaving_keeps_the_call() {
        let mut f = InFlight::default();
        f.join(H, "tok", w(1));
        f.started(&H, 1, 100);
        f.join(H, "tok", w(2));
        f.leave(&H, 2);
        assert_eq!(f.complete(100), Some((H, vec![w(1)])));
    }

    #[test]
    fn abandon_returns_everyone() {
        let mut f = InFlight::default();
        f.join(H, "tok", w(1));
        f.join(H, "tok", w(2));
        assert_eq!(f.abandon(&H), vec![w(1), w(2)]);
        assert_eq!(f.len(), 0);
        f.leave(&H, 1);
    }
}
