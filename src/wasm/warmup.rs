//! Warm-up: requests and answers that need the first key set wait for it (see
//! `storage::parked`), then are decided again, or refused when that fetch fails or takes
//! longer than `verify.jwks.timeout_ms`.

use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;

use crate::host::Host;
use crate::pipeline::{self, Caller, RemoteAnswer, Step};
use crate::reply::Denial;
use crate::storage::inflight::Waiter;
use crate::storage::keys::{self, FirstFetch};
use crate::storage::parked::Item;
use crate::storage::remote::Got;

use super::headers::RequestParts;
use super::host::{log, Plugin};
use super::root::TICK;

impl Plugin {
    /// Whether what needs keys may wait for them: a key set is fetched (`verify.jwks`), none
    /// is loaded here yet, and no fetch has failed yet (or one succeeded, and this worker
    /// loads it on its next tick).
    fn keys_pending(&self) -> bool {
        self.jwks_source().is_some_and(|src| {
            self.worker.keys.keys().is_none() && keys::first_fetch(src, self) != FirstFetch::Failed
        })
    }

    /// Parks `item` until the keys come; false when it cannot wait (refuse it now).
    pub fn park(&self, item: Item) -> bool {
        let Some(src) = self.jwks_source() else {
            return false;
        };
        if !self.keys_pending() {
            return false;
        }
        // The fetch starts on the next tick at the latest and takes at most `timeout_ms`.
        let tick = u64::try_from(TICK.as_millis()).unwrap_or(200);
        let deadline = self
            .now_ms()
            .saturating_add(src.timeout_ms)
            .saturating_add(2 * tick);
        self.parked
            .try_borrow_mut()
            .is_ok_and(|mut p| p.park(item, deadline))
    }

    /// A request whose headers need keys: parked, to be decided again.
    pub fn wait_for_keys(&self, waiter: Waiter) -> bool {
        self.park(Item::Request(waiter))
    }

    /// Whether request `context_id` waits for a call's answer or for the keys: its body and
    /// trailers must not flow.
    pub fn holds(&self, context_id: u32) -> bool {
        self.inflight
            .try_borrow()
            .is_ok_and(|f| f.is_waiting(context_id))
            || self.parked.try_borrow().is_ok_and(|p| p.holds(context_id))
    }

    /// Request `context_id` is gone.
    pub fn leave(&self, context_id: u32) {
        if let Ok(mut inflight) = self.inflight.try_borrow_mut() {
            inflight.leave(context_id);
        }
        if let Ok(mut parked) = self.parked.try_borrow_mut() {
            parked.leave(context_id);
        }
    }

    /// On every tick, and after this worker's own fetch: once the keys are in, everything
    /// parked is decided again; when the first fetch failed, or an item waited past its
    /// deadline, it is refused (502 `jwks_unavailable`).
    pub fn unpark(&self, current: u32) {
        let items = match self.parked.try_borrow_mut() {
            Ok(mut parked) if !parked.is_empty() => {
                if self.worker.keys.keys().is_some() || !self.keys_pending() {
                    parked.take_all()
                } else {
                    parked.expire(self.now_ms())
                }
            }
            _ => return,
        };
        let ready = self.worker.keys.keys().is_some();
        if !items.is_empty() {
            log(
                if ready {
                    LogLevel::Debug
                } else {
                    LogLevel::Warn
                },
                &format!(
                    "#{current} {} waiting for the key set: {}",
                    items.len(),
                    if ready {
                        "decided now"
                    } else {
                        "refused (no key set)"
                    }
                ),
            );
        }
        for item in items {
            if ready {
                self.redo(current, item);
            } else {
                self.refuse(current, item);
            }
        }
    }

    fn redo(&self, current: u32, item: Item) {
        match item {
            Item::Request(w) => {
                if hostcalls::set_effective_context(w.context_id).is_ok() {
                    self.decide_again(&w);
                }
            }
            Item::Introspection {
                hash,
                token,
                waiters,
                outcome,
            } => {
                let answer =
                    pipeline::on_introspection(&self.cfg, &self.worker, self, &hash, outcome);
                self.answer_waiters(current, &hash, &token, &waiters, &answer);
            }
            Item::Exchange {
                key,
                policy,
                waiters,
                outcome,
                ..
            } => {
                let answer = match self.cfg.policies.get(policy).exchange.as_ref() {
                    Some(rule) => {
                        pipeline::on_exchange(&self.cfg, rule, &self.worker, self, &key, outcome)
                    }
                    None => Err(Denial::Internal),
                };
                self.answer_exchange_waiters(current, &key, &waiters, &answer);
            }
        }
    }

    fn refuse(&self, current: u32, item: Item) {
        let denial = Denial::KeysUnavailable;
        match item {
            Item::Request(w) => {
                if hostcalls::set_effective_context(w.context_id).is_ok() {
                    self.reject(w.context_id, w.head, w.policy, denial);
                }
            }
            Item::Introspection {
                hash,
                token,
                waiters,
                ..
            } => self.answer_waiters(current, &hash, &token, &waiters, &Err(denial)),
            Item::Exchange { key, waiters, .. } => {
                self.answer_exchange_waiters(current, &key, &waiters, &Err(denial));
            }
        }
    }

    /// Decides the (effective) request again from its headers, now that the keys are in,
    /// and acts on it as its headers callback would have.
    fn decide_again(&self, w: &Waiter) {
        let parts = RequestParts::read(&self.cfg);
        // Headers that ended the stream or not: nothing here depends on it any more.
        let decision = pipeline::on_request(&self.cfg, &self.worker, self, &parts.request(false));
        let waiter = Waiter {
            context_id: w.context_id,
            head: w.head,
            policy: decision.policy,
            presented: decision.presented,
        };
        let mut step = decision.step;
        if let Step::Remote { hash, token, .. } = &step {
            // A remote read's answer would come back to the request's own context, which
            // does not expect one now: decided as if the remote store had failed (the phantom
            // fallback when configured, else 502).
            let caller = Caller {
                policy: self.cfg.policies.get(waiter.policy),
                presented: &waiter.presented,
            };
            let failed = RemoteAnswer {
                got: Got::Failed,
                latency_ms: 0,
            };
            step = pipeline::on_remote_get(
                &self.cfg,
                &caller,
                &self.worker,
                self,
                hash,
                token,
                failed,
            );
        }
        match step {
            Step::Done(verdict) => {
                self.apply(
                    waiter.context_id,
                    waiter.head,
                    waiter.policy,
                    &verdict,
                    true,
                );
            }
            Step::Introspect { hash, token } => {
                self.introspect(waiter, hash, &token);
            }
            Step::Exchange {
                key,
                token,
                subject,
            } => {
                self.exchange(waiter, key, token, &subject);
            }
            _ => self.reject(
                waiter.context_id,
                waiter.head,
                waiter.policy,
                Denial::Internal,
            ),
        }
    }
}
