//! Warm-up: what waits for the first key set. With `verify.jwks`, the key set is fetched
//! after start (and after a reload); a request that needs keys before that fetch completes is
//! parked here rather than refused, and so is a token service's answer that needs them (an
//! introspection's JWT, an exchanged token). When the keys come, each is decided again; when
//! the fetch fails, or the wait passes its deadline (`verify.jwks.timeout_ms` and a tick), each
//! is refused (502 `jwks_unavailable`). Bounded: at most [`MAX_PARKED`] items per worker (more
//! are refused at once).

use crate::hash::TokenHash;
use crate::storage::inflight::Waiter;
use crate::token::exchange::Outcome as ExchangeOutcome;
use crate::token::introspection::Outcome;

/// Items parked per worker, at most.
pub const MAX_PARKED: usize = 4_096;

/// What waits for the keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A request whose headers were decided without keys: decided again.
    Request(u32),
    /// The answer to an introspection of `token` (hash `hash`), for its waiters.
    Introspection {
        hash: TokenHash,
        token: String,
        waiters: Vec<Waiter>,
        outcome: Outcome,
    },
    /// The answer to the exchange `key` under `policy`'s rule (`client`: whose the client's
    /// token is).
    Exchange {
        key: TokenHash,
        policy: usize,
        waiters: Vec<Waiter>,
        outcome: ExchangeOutcome,
        client: Option<Box<crate::token::revocation::Identity>>,
    },
}

impl Item {
    fn holds(&self, context_id: u32) -> bool {
        match self {
            Item::Request(w) => *w == context_id,
            Item::Introspection { waiters, .. } | Item::Exchange { waiters, .. } => {
                waiters.contains(&context_id)
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct Parked {
    items: Vec<(u64, Item)>,
}

impl Parked {
    /// Parks `item` until `deadline_ms`; false when full (the caller refuses it).
    pub fn park(&mut self, item: Item, deadline_ms: u64) -> bool {
        if self.items.len() >= MAX_PARKED {
            return false;
        }
        self.items.push((deadline_ms, item));
        true
    }

    /// Everything parked (the keys came, or the fetch failed).
    pub fn take_all(&mut self) -> Vec<Item> {
        self.items.drain(..).map(|(_, item)| item).collect()
    }

    /// What waited past its deadline.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Item> {
        let (late, kept): (Vec<_>, Vec<_>) = self.items.drain(..).partition(|(d, _)| now_ms >= *d);
        self.items = kept;
        late.into_iter().map(|(_, item)| item).collect()
    }

    /// Whether request `context_id` waits here (its body must not flow).
    pub fn holds(&self, context_id: u32) -> bool {
        self.items.iter().any(|(_, item)| item.holds(context_id))
    }

    /// Request `context_id` is gone: dropped from everything parked.
    pub fn leave(&mut self, context_id: u32) {
        self.items.retain_mut(|(_, item)| match item {
            Item::Request(w) => *w != context_id,
            Item::Introspection { waiters, .. } | Item::Exchange { waiters, .. } => {
                waiters.retain(|w| *w != context_id);
                !waiters.is_empty()
            }
        });
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(id: u32) -> Waiter {
        id
    }

    #[test]
    fn parked_until_taken_expired_or_gone() {
        let mut p = Parked::default();
        assert!(p.park(Item::Request(w(1)), 100));
        assert!(p.park(
            Item::Introspection {
                hash: [0; 32],
                token: "t".into(),
                waiters: vec![w(2), w(3)],
                outcome: Outcome::Inactive,
            },
            200
        ));
        assert!(p.holds(1) && p.holds(3) && !p.holds(4));
        p.leave(3);
        assert!(!p.holds(3) && p.holds(2));
        assert_eq!(p.expire(150), vec![Item::Request(w(1))]);
        p.leave(2);
        assert!(p.is_empty(), "an answer nobody waits for is dropped");
        for i in 0..MAX_PARKED {
            assert!(p.park(Item::Request(w(i as u32)), 1));
        }
        assert!(!p.park(Item::Request(w(0)), 1), "bounded");
        assert_eq!(p.take_all().len(), MAX_PARKED);
        assert!(p.is_empty());
    }
}
