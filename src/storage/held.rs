//! Requests whose headers are held while the filter reads a body: publish requests and token
//! endpoint responses. Each has a deadline; the root context answers the ones past it, so no
//! request waits forever for a body that never comes.
//!
//! A body may never reach the filter for two reasons: a client that stops sending, or an Envoy
//! whose Wasm `PluginConfig` lacks `allow_on_headers_stop_iteration: true`. Without it, a Wasm
//! filter that pauses the headers is not given the body at all (the proxy-wasm host turns the
//! pause into "stop all iteration"). The two are told apart by whether any body arrived.

use std::collections::HashMap;

use crate::reply::SplitReply;

/// How long a held request may wait for its complete body.
pub const BODY_DEADLINE_MS: u64 = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A publish API request: the request body is read.
    Publish,
    /// A token endpoint response: the response body is read.
    TokenResponse,
    /// A revocation request (the API, a back-channel logout, an observed RFC 7009 request):
    /// the request body is read.
    Revocation,
}

#[derive(Debug, Clone, Copy)]
struct Hold {
    kind: Kind,
    deadline_ms: u64,
    saw_body: bool,
}

/// One worker's held requests, by context id.
#[derive(Debug, Default)]
pub struct Held {
    holds: HashMap<u32, Hold>,
}

/// A held request past its deadline, and how to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub context_id: u32,
    pub kind: Kind,
    pub reply: SplitReply,
    /// No body callback at all: most likely `allow_on_headers_stop_iteration` is missing.
    pub never_saw_body: bool,
}

impl Held {
    pub fn hold(&mut self, context_id: u32, kind: Kind, now_ms: u64) {
        self.holds.insert(
            context_id,
            Hold {
                kind,
                deadline_ms: now_ms.saturating_add(BODY_DEADLINE_MS),
                saw_body: false,
            },
        );
    }

    /// Records that a body callback arrived; returns whether the request is still held (not
    /// already answered by the deadline).
    pub fn saw_body(&mut self, context_id: u32) -> bool {
        match self.holds.get_mut(&context_id) {
            Some(h) => {
                h.saw_body = true;
                true
            }
            None => false,
        }
    }

    pub fn release(&mut self, context_id: u32) {
        self.holds.remove(&context_id);
    }

    pub fn len(&self) -> usize {
        self.holds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.holds.is_empty()
    }

    /// Removes and returns the requests past their deadline.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Expired> {
        let mut out = Vec::new();
        self.holds.retain(|&context_id, h| {
            if now_ms < h.deadline_ms {
                return true;
            }
            let reply = match (h.kind, h.saw_body) {
                (Kind::Publish | Kind::Revocation, true) => SplitReply::BodyTimeout,
                (_, false) => SplitReply::BodyNotDelivered,
                (Kind::TokenResponse, true) => SplitReply::SplitFailed,
            };
            out.push(Expired {
                context_id,
                kind: h.kind,
                reply,
                never_saw_body: !h.saw_body,
            });
            false
        });
        out.sort_by_key(|e| e.context_id);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_only_requests_past_their_deadline() {
        let mut held = Held::default();
        held.hold(1, Kind::Publish, 0);
        held.hold(2, Kind::Publish, 0);
        held.hold(3, Kind::TokenResponse, 0);
        held.hold(4, Kind::Publish, 1_000);
        assert!(held.saw_body(2));
        assert!(held.saw_body(3));
        held.release(1);
        assert!(held.expire(BODY_DEADLINE_MS - 1).is_empty());
        let expired = held.expire(BODY_DEADLINE_MS);
        assert_eq!(
            expired,
            vec![
                Expired {
                    context_id: 2,
                    kind: Kind::Publish,
                    reply: SplitReply::BodyTimeout,
                    never_saw_body: false
                },
                Expired {
                    context_id: 3,
                    kind: Kind::TokenResponse,
                    reply: SplitReply::SplitFailed,
                    never_saw_body: false
                },
            ]
        );
        assert!(!held.saw_body(2), "answered: a late body is ignored");
        let last = held.expire(BODY_DEADLINE_MS + 1_000);
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].reply, SplitReply::BodyNotDelivered);
        assert!(last[0].never_saw_body);
        assert!(held.is_empty());
    }
}
