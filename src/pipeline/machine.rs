//! One request's story, from its headers to its end: a [`State`], and one function, [`step`],
//! that takes what happened (an [`Event`]: the headers arrived, a call answered, the keys came,
//! a body chunk, a deadline) and returns the next state and the one thing to do (an
//! [`Action`]: forward with these edits, reply with this, make this call, wait for the keys,
//! hold the body). No I/O and no host call but through [`Host`]: the executor carries actions
//! out (`executor.rs`), and the whole story runs natively in tests, event by event.
//!
//! ```text
//!            headers ──► Idle: forward | reply            (a hit, a denial: done at once)
//!                   ├──► Waiting ──(introspected | exchanged)──► forward | reply | Waiting
//!                   ├──► Remote ──(remote store answered)──► forward | reply | Waiting
//!                   ├──► Parked ──(keys ready: headers again | keys failed: reply)
//!                   ├──► Publishing ──(body)──► reply | PublishWrite ──(written)──► reply
//!                   └──► TokenRequest ──(response headers)──► Splitting ──(body)──►
//!                            replace body | reply | SplitWrite ──(written)──► replace | reply
//! ```
//!
//! A request the filter is done with is [`State::Idle`]: the executor keeps no state for it.

use crate::hash::{TokenHash, TokenKeys};
use crate::header_map::HeaderMap;
use crate::metrics::Counter;
use crate::reply::{self, Denial, DpopChallenge, LocalReply, Outcome, RevocationReply, SplitReply};
use crate::storage::fleet;
use crate::storage::held;
use crate::storage::keys::{self, FirstFetch};
use crate::storage::remote::{self, Got};
use crate::token::bearer::Presented;
use crate::token::revocation;
use crate::token::split::{self, ResponseGate, MAX_PUBLISH_BODY, MAX_TOKEN_RESPONSE};

use super::browser::Browser;
use super::forward::{Forward, ForwardKind};
use super::io::Body;
use super::route::{owned_present, Passage};
use super::{
    after_exchange, after_introspection, gateway_jwks, on_remote_get, publish, publish_gate,
    revoke, Caller, Ctx, Exchanged, Introspected, RemoteAnswer, Request, Revocation, Step, Verdict,
};
use crate::config::KeySource;

/// What a verdict reached later needs of the request: `HEAD` (replies without a body), the
/// policy it is judged under, what it presented besides its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    pub head: bool,
    pub policy: usize,
    pub presented: Presented,
    /// A browser's request (with `cookies`): its cookie edits and the origin answered with
    /// CORS headers.
    pub browser: Option<Box<Browser>>,
}

impl Judged {
    fn caller<'a>(&'a self, cx: &Ctx<'a>) -> Caller<'a> {
        Caller {
            policy: cx.cfg.policies.get(self.policy),
            presented: &self.presented,
        }
    }
}

/// One request's state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum State {
    /// Not started, or done: nothing is kept.
    #[default]
    Idle,
    /// Paused for the answer of an introspection or an exchange (its own call, or another
    /// request's: see `storage::inflight`). `strip`: the headers the filter owns that it
    /// carries, removed when it goes on.
    Waiting { judged: Judged, strip: Vec<String> },
    /// Resolved, bound and proven: paused until the fleet says its DPoP proof was not used
    /// at another gateway (with `fleet`), then forwarded with `token`.
    Claiming {
        judged: Judged,
        strip: Vec<String>,
        token: std::rc::Rc<crate::storage::local::Resolved>,
    },
    /// Paused for the remote split store's answer to its own read.
    Remote {
        judged: Judged,
        strip: Vec<String>,
        hash: TokenHash,
        token: String,
        started_ms: u64,
    },
    /// Paused until the first key set is in (warm-up): then decided again from its headers.
    Parked { judged: Judged },
    /// A publish API request, authenticated, its body being held.
    Publishing { method: String, size: usize },
    /// A publish applied locally, waiting for its remote write before it is answered.
    PublishWrite { reply: SplitReply, delete: bool },
    /// A token endpoint request, forwarded: its response will be examined.
    TokenRequest,
    /// A token endpoint response, held until its body is complete.
    Splitting {
        status: Option<String>,
        coding: Option<String>,
        size: usize,
    },
    /// A split token response, waiting for its remote write before it is passed on.
    SplitWrite { body: Vec<u8>, size: usize },
    /// Forwarded for a trusted origin (`cookies.cors`): its response gets CORS headers.
    Cors { origin: String },
    /// A revocation request (the API, a back-channel logout, an observed RFC 7009 request),
    /// its body being held. `strip`: the headers the filter owns, removed if it goes on.
    Revoking {
        route: Revocation,
        size: usize,
        strip: Vec<String>,
        /// A browser's `Cookie` without the filter's cookies, written if it goes on.
        set: Vec<(String, String)>,
    },
    /// An observed RFC 7009 request, forwarded: the token it names (its SHA-256) is revoked
    /// here when the token service answers 200.
    Observed { token: Option<TokenHash> },
    /// A revocation made, waiting until every live worker has applied it (then `then`), at
    /// most until `until_ms` (then 503).
    Confirming { seq: u64, until_ms: u64, then: Then },
}

/// What a confirmed revocation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Answer the request (the API, a back-channel logout): 200.
    Reply,
    /// Let the token service's answer (an observed RFC 7009 request) go on.
    ResumeResponse,
}

impl State {
    /// Whether the request is paused (its body and trailers must not flow: Envoy would go on
    /// with the headers, the client's `Authorization` included, if a data callback let them).
    pub fn paused(&self) -> bool {
        matches!(
            self,
            State::Waiting { .. }
                | State::Claiming { .. }
                | State::Remote { .. }
                | State::Parked { .. }
                | State::Publishing { .. }
                | State::PublishWrite { .. }
                | State::Revoking { .. }
                | State::Confirming { .. }
        )
    }

    /// Whether it waits for a body (the executor holds it with a deadline).
    pub fn held(&self) -> Option<held::Kind> {
        match self {
            State::Publishing { .. } => Some(held::Kind::Publish),
            State::Splitting { .. } => Some(held::Kind::TokenResponse),
            State::Revoking { .. } => Some(held::Kind::Revocation),
            _ => None,
        }
    }
}

/// What happened to a request.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// Its headers arrived.
    Headers(&'a Request<'a>),
    /// The introspection it waited for answered (`incoming`: the token and its keys).
    Introspected {
        incoming: &'a TokenKeys<'a>,
        answer: &'a Result<Introspected, Denial>,
    },
    /// The exchange `key` it waited for answered.
    Exchanged {
        key: &'a TokenHash,
        answer: &'a Result<Exchanged, Denial>,
    },
    /// The remote store answered its read (`body`: `None` when it could not be read).
    RemoteGot {
        status: Option<&'a str>,
        body: Option<&'a [u8]>,
    },
    /// The remote store answered its write.
    RemoteWritten { status: Option<&'a str> },
    /// The first key set is in: the request's headers again.
    KeysReady(&'a Request<'a>),
    /// The first key set could not be had (or not in time).
    KeysFailed,
    /// A chunk of the body it holds (`size`: the body so far; `None` from trailers).
    Body { size: Option<usize>, complete: bool },
    /// The held body, read whole (after [`Action::ReadBody`]).
    BodyRead(&'a [u8]),
    /// The response's headers (a token endpoint request's answer).
    ResponseHeaders {
        status: Option<&'a str>,
        coding: Option<&'a str>,
        end_of_stream: bool,
    },
    /// The request's trailers.
    Trailers(&'a HeaderMap),
    /// The held body did not come in time.
    Expired { never_saw_body: bool },
    /// The proxy refused what the last action needed (writing `Authorization`, replacing a
    /// response body).
    Refused(&'a Refused),
    /// The root's timer (a revocation waiting for every worker).
    Tick,
}

/// What the proxy refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The first edit of a forward (`head`: the request is a `HEAD`, read by the executor).
    Forward {
        kind: ForwardKind,
        policy: usize,
        head: bool,
    },
    /// Replacing a token response's body.
    ResponseBody,
}

/// A call a request waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// The introspection of `token` (coalesced by `hash`).
    Introspect { hash: TokenHash, token: String },
    /// The exchange `key` of the client's token (hash `token`) for `policy`'s API, sending
    /// `subject` (coalesced by `key`).
    Exchange {
        key: TokenHash,
        token: TokenHash,
        subject: String,
        policy: usize,
        client: Option<Box<crate::token::revocation::Identity>>,
    },
    /// A read of the remote split store.
    RemoteGet(remote::Call),
    /// A write to the remote split store.
    RemoteWrite(remote::Call),
    /// A DPoP proof claimed in the fleet (answered as [`Event::RemoteGot`]).
    FleetClaim(remote::Call),
}

/// Why a local reply is worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// The route's metadata names a policy the configuration lacks (logged once per worker).
    UnknownPolicy(String),
    /// A publish request refused, and why.
    PublishRefused(String),
    /// A token response not passed on, and why.
    TokenResponseRefused(String),
    /// A held body never reached the filter: `allow_on_headers_stop_iteration` is missing.
    BodyNotDelivered,
    /// A held body did not complete in time.
    BodyTimeout,
}

/// The one thing to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Let the request go on with these edits (resumed, if it was paused).
    Forward(Forward),
    /// Answer it with this reply (and log the note).
    Reply(LocalReply, Option<Note>),
    /// Make this call (or wait for the same one in flight); the request stays paused.
    Call(Call),
    /// Wait for the first key set; the request stays paused.
    WaitForKeys,
    /// Hold it until its body is complete (with a deadline).
    Hold(held::Kind),
    /// Keep it paused.
    Pause,
    /// Let it (its body, its trailers, its response) go on as it is.
    Continue,
    /// Read its body whole, then [`Event::BodyRead`].
    ReadBody(Body, usize),
    /// Replace the response's body (`size` bytes) with this one and let it go on.
    ReplaceBody { size: usize, body: Vec<u8> },
    /// Remove these trailers; then keep it paused (`hold`) or let it go on.
    StripTrailers { names: Vec<String>, hold: bool },
    /// Keep it paused, and step it with [`Event::Tick`] on each tick (a revocation waiting
    /// for every worker).
    Confirm,
    /// Let its response go on (resumed, if it was paused).
    ResumeResponse,
    /// Add these headers to its response, and let it go on.
    SetResponseHeaders(Vec<(&'static str, String)>),
}

/// The next state and action of a request in `state` when `event` happens.
pub fn step(cx: &Ctx<'_>, state: State, event: Event<'_>) -> (State, Action) {
    use Event as E;
    match (state, event) {
        (State::Idle, E::Headers(request)) | (State::Parked { .. }, E::KeysReady(request)) => {
            headers(cx, request)
        }
        (State::Parked { judged }, E::KeysFailed) => {
            done(deny(cx, &judged, Denial::KeysUnavailable))
        }
        (State::Waiting { judged, strip }, E::Introspected { incoming, answer }) => {
            let step = after_introspection(cx, &judged.caller(cx), incoming, answer);
            settle(cx, judged, strip, step)
        }
        (State::Waiting { judged, strip }, E::Exchanged { key, answer }) => {
            let verdict = match after_exchange(cx.worker, key, answer) {
                Verdict::Forward(token) => {
                    super::journey::lifetime(cx, cx.cfg.policies.get(judged.policy), token)
                }
                refused => refused,
            };
            settle(cx, judged, strip, Step::Done(verdict))
        }
        (
            State::Remote {
                judged,
                strip,
                hash,
                token,
                started_ms,
            },
            E::RemoteGot { status, body },
        ) => {
            let got = body.map_or(Got::Failed, |b| remote::classify_get(status, b));
            let answer = RemoteAnswer {
                got,
                latency_ms: cx.host.now_ms().saturating_sub(started_ms),
            };
            let step = on_remote_get(cx, &judged.caller(cx), &hash, &token, answer);
            settle(cx, judged, strip, step)
        }
        (
            State::Claiming {
                judged,
                strip,
                token,
            },
            E::RemoteGot { status, body },
        ) => {
            let claimed = body.map_or(fleet::Claimed::Failed, |b| fleet::claimed(status, b));
            match super::proof::fleet_claimed(cx, claimed) {
                Ok(()) => forward_to(
                    ForwardKind::Token,
                    judged.policy,
                    Some(token),
                    strip,
                    judged.browser.as_deref(),
                ),
                Err(denial) => done(deny(cx, &judged, denial)),
            }
        }
        (
            State::Publishing { method, size },
            E::Body {
                size: now,
                complete,
            },
        ) => held_body(
            State::Publishing {
                method,
                size: now.unwrap_or(size),
            },
            complete,
            cx,
        ),
        (State::Publishing { method, size }, E::Trailers(_)) => {
            held_body(State::Publishing { method, size }, true, cx)
        }
        (State::Publishing { method, .. }, E::BodyRead(body)) => finish_publish(cx, &method, body),
        (State::PublishWrite { reply, delete }, E::RemoteWritten { status }) => {
            let written = if delete {
                remote::delete_succeeded(status)
            } else {
                remote::put_succeeded(status)
            };
            let answer = super::after_remote_write(cx.host, reply, written);
            done(split_reply(cx, &answer, None))
        }
        (
            State::TokenRequest,
            E::ResponseHeaders {
                status,
                coding,
                end_of_stream,
            },
        ) => match split::token_response_gate(status, coding, end_of_stream) {
            ResponseGate::Pass => (State::Idle, Action::Continue),
            ResponseGate::Refuse(why) => done(refuse_token_response(cx, why)),
            ResponseGate::Hold => (
                State::Splitting {
                    status: status.map(str::to_owned),
                    coding: coding.map(str::to_owned),
                    size: 0,
                },
                // The headers are held too: Content-Length changes with the body.
                Action::Hold(held::Kind::TokenResponse),
            ),
        },
        (State::TokenRequest, E::Trailers(trailers)) => (
            State::TokenRequest,
            strip_trailers(cx, Passage::TokenRequest, trailers, false),
        ),
        (
            State::Splitting {
                status,
                coding,
                size,
            },
            E::Body {
                size: now,
                complete,
            },
        ) => held_body(
            State::Splitting {
                status,
                coding,
                size: now.unwrap_or(size),
            },
            complete,
            cx,
        ),
        (
            State::Splitting {
                status,
                coding,
                size,
            },
            E::BodyRead(body),
        ) => split_response(cx, status.as_deref(), coding.as_deref(), size, body),
        (State::SplitWrite { body, size }, E::RemoteWritten { status }) => {
            if remote::put_succeeded(status) {
                // Written: the split body replaces the response.
                (State::Idle, Action::ReplaceBody { size, body })
            } else {
                match super::split_write_done(cx.host, false) {
                    Err(answer) => done(split_reply(cx, &answer, None)),
                    Ok(()) => (State::Idle, Action::ReplaceBody { size, body }),
                }
            }
        }
        (
            State::Revoking {
                route,
                size,
                strip,
                set,
            },
            E::Body {
                size: now,
                complete,
            },
        ) => held_body(
            State::Revoking {
                route,
                size: now.unwrap_or(size),
                strip,
                set,
            },
            complete,
            cx,
        ),
        (state @ State::Revoking { .. }, E::Trailers(_)) => held_body(state, true, cx),
        (
            State::Revoking {
                route, strip, set, ..
            },
            E::BodyRead(body),
        ) => revocation_body(cx, route, strip, set, body),
        (State::Revoking { .. }, E::Expired { never_saw_body }) => {
            cx.host.count(Counter::RevocationRefused);
            let answer = if never_saw_body {
                RevocationReply::BodyNotDelivered
            } else {
                RevocationReply::BodyTimeout
            };
            let note = if never_saw_body {
                Note::BodyNotDelivered
            } else {
                Note::BodyTimeout
            };
            done(Action::Reply(answer.local_reply(&cx.cfg.realm), Some(note)))
        }
        (State::Observed { token }, E::ResponseHeaders { status, .. }) => match token {
            Some(token) if status == Some("200") => match revoke::observed(cx, &token) {
                Ok(seq) => confirm(cx, seq, Then::ResumeResponse),
                Err(answer) => done(revocation_reply(cx, answer)),
            },
            _ => done(Action::Continue),
        },
        (State::Cors { origin }, E::ResponseHeaders { .. }) => done(Action::SetResponseHeaders(
            super::browser::cors_headers(cx.cfg, &origin),
        )),
        (
            State::Confirming {
                seq,
                until_ms,
                then,
            },
            E::Tick,
        ) => {
            if revoke::confirmed(cx, seq) {
                confirmed(cx, then)
            } else if cx.host.now_ms() >= until_ms {
                cx.host.count(Counter::RevocationUnconfirmed);
                done(revocation_reply(
                    cx,
                    RevocationReply::Unavailable("not every worker confirmed in time; retry"),
                ))
            } else {
                (
                    State::Confirming {
                        seq,
                        until_ms,
                        then,
                    },
                    Action::Confirm,
                )
            }
        }
        (
            state @ (State::Publishing { .. } | State::Splitting { .. }),
            E::Expired { never_saw_body },
        ) => done(expired(cx, &state, never_saw_body)),
        (_, E::Refused(what)) => done(refused(cx, what)),
        (state, E::Trailers(trailers)) => {
            let hold = state.paused();
            let action = strip_trailers(cx, Passage::ApiTrailers, trailers, hold);
            (state, action)
        }
        // Anything else (a body chunk of a paused request, a late event): nothing changes.
        (state, _) => {
            let action = if state.paused() {
                Action::Pause
            } else {
                Action::Continue
            };
            (state, action)
        }
    }
}

fn done(action: Action) -> (State, Action) {
    (State::Idle, action)
}

/// A request whose headers just arrived (or arrived before the keys did).
fn headers(cx: &Ctx<'_>, request: &Request<'_>) -> (State, Action) {
    let decision = super::on_request(cx, request);
    let headers = request.headers;
    let policy = decision.policy;
    // A browser's cookie edits and CORS origin; `None` without `cookies`.
    let browser = super::browser::of(cx.cfg, headers);
    // A forward at once (a hit, the common case) reads nothing more of the request.
    let step = match decision.step {
        // A DPoP proof claimed in the fleet first (`settle`).
        Step::Done(Verdict::Forward(token))
            if !super::proof::claims_in_fleet(cx, &decision.presented) =>
        {
            let strip = owned(cx, Passage::Api, headers);
            return forward_to(
                ForwardKind::Token,
                policy,
                Some(token),
                strip,
                browser.as_deref(),
            );
        }
        Step::Done(Verdict::Anonymous) => {
            let strip = owned(cx, Passage::Api, headers);
            return forward_to(
                ForwardKind::Anonymous,
                policy,
                None,
                strip,
                browser.as_deref(),
            );
        }
        step => step,
    };
    let judged = Judged {
        head: headers.text(":method").as_deref() == Some("HEAD"),
        policy,
        presented: decision.presented,
        browser,
    };
    let forward = |kind, passage| {
        let mut strip = owned(cx, passage, headers);
        let set = cookie_edits(judged.browser.as_deref(), &mut strip);
        Action::Forward(Forward {
            kind,
            policy,
            token: None,
            strip,
            set,
        })
    };
    match step {
        Step::Publish => start_publish(cx, request),
        Step::TokenRequest => (
            State::TokenRequest,
            forward(ForwardKind::TokenRequest, Passage::TokenRequest),
        ),
        Step::Preflight => done(forward(ForwardKind::Preflight, Passage::Preflight)),
        Step::CorsPreflight => done(Action::Reply(super::browser::preflight(cx, headers), None)),
        Step::Revocation(route) => start_revocation(cx, route, request),
        Step::GatewayJwks => {
            let method = headers.text(":method").unwrap_or_default();
            match gateway_jwks(cx.cfg) {
                Some((_, jwks)) => {
                    cx.host.count(Outcome::GatewayJwksServed.counter());
                    done(Action::Reply(
                        reply::gateway_jwks_reply(&method, jwks),
                        None,
                    ))
                }
                None => done(deny(cx, &judged, Denial::Internal)),
            }
        }
        Step::Done(Verdict::Reject(Denial::UnknownPolicy)) => {
            let name = request.route_policy.unwrap_or("").to_owned();
            let (state, action) = done(deny(cx, &judged, Denial::UnknownPolicy));
            match action {
                Action::Reply(r, _) => (state, Action::Reply(r, Some(Note::UnknownPolicy(name)))),
                other => (state, other),
            }
        }
        Step::Done(Verdict::Reject(denial)) if !waits_for_keys(cx, denial) => {
            done(deny(cx, &judged, denial))
        }
        step => {
            let strip = owned(cx, Passage::Api, headers);
            settle(cx, judged, strip, step)
        }
    }
}

/// A request going on to the API: its edits (a browser's cookie edits included), and its
/// state (a trusted origin's request keeps one, for the CORS headers of its response).
fn forward_to(
    kind: ForwardKind,
    policy: usize,
    token: Option<std::rc::Rc<crate::storage::local::Resolved>>,
    mut strip: Vec<String>,
    browser: Option<&Browser>,
) -> (State, Action) {
    let set = cookie_edits(browser, &mut strip);
    let state = match browser.and_then(|b| b.cors.as_ref()) {
        Some(origin) => State::Cors {
            origin: origin.clone(),
        },
        None => State::Idle,
    };
    let action = Action::Forward(Forward {
        kind,
        policy,
        token,
        strip,
        set,
    });
    (state, action)
}

/// A browser's `Cookie` edit (with `remove_cookies`): the header removed, and written again
/// without the filter's cookies when others are left. On every passage that goes on.
fn cookie_edits(browser: Option<&Browser>, strip: &mut Vec<String>) -> Vec<(String, String)> {
    let mut set = Vec::new();
    if let Some(Some(cookie)) = browser.map(|b| &b.cookie) {
        strip.push("cookie".to_owned());
        if let Some(kept) = cookie {
            set.push(("cookie".to_owned(), kept.clone()));
        }
    }
    set
}

fn owned(cx: &Ctx<'_>, passage: Passage, headers: &HeaderMap) -> Vec<String> {
    owned_present(cx.cfg, passage, headers)
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// Where a token stage's outcome leads a request judged as `judged`.
fn settle(cx: &Ctx<'_>, judged: Judged, strip: Vec<String>, step: Step) -> (State, Action) {
    let forward = |kind, token, strip| {
        forward_to(kind, judged.policy, token, strip, judged.browser.as_deref())
    };
    match step {
        Step::Done(Verdict::Forward(token)) => {
            match super::proof::fleet_claim(cx, &judged.presented) {
                Some(call) => (
                    State::Claiming {
                        judged,
                        strip,
                        token,
                    },
                    Action::Call(Call::FleetClaim(call)),
                ),
                None => forward(ForwardKind::Token, Some(token), strip),
            }
        }
        Step::Done(Verdict::Anonymous) => forward(ForwardKind::Anonymous, None, strip),
        Step::Done(Verdict::Reject(denial)) if waits_for_keys(cx, denial) => {
            (State::Parked { judged }, Action::WaitForKeys)
        }
        Step::Done(Verdict::Reject(denial)) => done(deny(cx, &judged, denial)),
        Step::Introspect { hash, token } => (
            State::Waiting { judged, strip },
            Action::Call(Call::Introspect { hash, token }),
        ),
        Step::Exchange {
            key,
            token,
            subject,
            client,
        } => {
            let policy = judged.policy;
            (
                State::Waiting { judged, strip },
                Action::Call(Call::Exchange {
                    key,
                    token,
                    subject,
                    policy,
                    client,
                }),
            )
        }
        Step::Remote { hash, token, key } => {
            let Some(remote) = cx.cfg.split.as_ref().and_then(|s| s.remote.as_ref()) else {
                return done(deny(cx, &judged, Denial::StoreUnavailable));
            };
            let call = remote.get(&key);
            (
                State::Remote {
                    judged,
                    strip,
                    hash,
                    token,
                    started_ms: cx.host.now_ms(),
                },
                Action::Call(Call::RemoteGet(call)),
            )
        }
        // A request's headers alone lead to these (`headers`): no token stage does.
        Step::Publish
        | Step::TokenRequest
        | Step::GatewayJwks
        | Step::Preflight
        | Step::CorsPreflight
        | Step::Revocation(_) => done(deny(cx, &judged, Denial::Internal)),
    }
}

/// Whether a refusal for want of keys waits for them instead (warm-up): a key set is fetched
/// (`verify.jwks`), none is loaded on this worker yet, and no first fetch has failed (or one
/// succeeded and this worker loads it on its next tick).
pub fn waits_for_keys(cx: &Ctx<'_>, denial: Denial) -> bool {
    if denial != Denial::KeysUnavailable || cx.worker.keys.keys().is_some() {
        return false;
    }
    match cx.cfg.verify.as_ref().map(|v| &v.keys) {
        Some(KeySource::Remote(src)) => keys::first_fetch(src, cx.host) != FirstFetch::Failed,
        _ => false,
    }
}

/// The reply to a request refused under its policy: the one table of `reply.rs`, with the
/// policy's scopes and, with `dpop`, the DPoP challenge (and a fresh nonce when one is
/// missing). Counted there and then.
pub fn deny(cx: &Ctx<'_>, judged: &Judged, denial: Denial) -> Action {
    let cfg = cx.cfg;
    cx.host.count(Outcome::Denied(denial).counter());
    cx.host.count_policy(judged.policy, false);
    let scopes = &cfg.policies.get(judged.policy).required_scopes;
    let nonce = (denial == Denial::UseDpopNonce)
        .then(|| super::server_nonce(cfg, cx.host))
        .flatten();
    let challenge = cfg.dpop.as_ref().map(|d| DpopChallenge {
        algs: &d.algs,
        nonce: nonce.as_deref(),
    });
    let mut answer = reply::local_reply_with(denial, &cfg.realm, scopes, challenge, judged.head);
    // A trusted origin's page reads the error too.
    if let Some(origin) = judged.browser.as_ref().and_then(|b| b.cors.as_deref()) {
        answer
            .headers
            .extend(super::browser::cors_headers(cfg, origin));
    }
    Action::Reply(answer, None)
}

/// A publish API or token response answer (counted where it is decided).
fn split_reply(cx: &Ctx<'_>, answer: &SplitReply, note: Option<Note>) -> Action {
    Action::Reply(answer.local_reply(&cx.cfg.realm, false), note)
}

/// A request to `split.publish.path`: authenticated from its headers, answered once its body
/// is complete, never forwarded.
fn start_publish(cx: &Ctx<'_>, request: &Request<'_>) -> (State, Action) {
    let headers = request.headers;
    let method = headers.get(":method").unwrap_or_default();
    let head = method == "HEAD";
    if let Err(refusal) = publish_gate(cx.cfg, &method, headers.get("authorization").as_deref()) {
        super::count_publish(cx.host, &refusal);
        return done(Action::Reply(
            refusal.local_reply(&cx.cfg.realm, head),
            None,
        ));
    }
    if request.end_of_stream {
        return finish_publish(cx, &method, &[]);
    }
    (
        State::Publishing { method, size: 0 },
        Action::Hold(held::Kind::Publish),
    )
}

/// A held body grew (`state` has its size so far): too large, wait for more, or read it.
fn held_body(state: State, complete: bool, cx: &Ctx<'_>) -> (State, Action) {
    let (size, max, body) = match &state {
        State::Publishing { size, .. } => (*size, MAX_PUBLISH_BODY, Body::Request),
        State::Splitting { size, .. } => (*size, MAX_TOKEN_RESPONSE, Body::Response),
        State::Revoking { route, size, .. } => (*size, revocation_limit(*route), Body::Request),
        _ => return (state, Action::Continue),
    };
    if size > max {
        if let State::Revoking { .. } = state {
            cx.host.count(Counter::RevocationRefused);
            return done(revocation_reply(cx, RevocationReply::TooLarge));
        }
        return done(match body {
            Body::Request => {
                let answer = SplitReply::TooLarge;
                super::count_publish(cx.host, &answer);
                split_reply(cx, &answer, None)
            }
            // It may carry a whole JWT: never passed on.
            Body::Response => refuse_token_response(cx, "token response over the size limit"),
        });
    }
    if !complete {
        return (state, Action::Pause);
    }
    (state, Action::ReadBody(body, size))
}

/// A request to one of the `revocation` block's paths. The API and back-channel logout are
/// answered by the filter (`POST` only; the API's secret checked before its body is read);
/// an observed RFC 7009 request goes on to the token service, its body read first.
fn start_revocation(cx: &Ctx<'_>, route: Revocation, request: &Request<'_>) -> (State, Action) {
    let headers = request.headers;
    let method = headers.get(":method").unwrap_or_default();
    let gate = match route {
        Revocation::Api => {
            revoke::api_gate(cx.cfg, &method, headers.get("authorization").as_deref())
        }
        Revocation::Logout if method != "POST" => Err(RevocationReply::MethodNotAllowed),
        Revocation::Logout | Revocation::Observed => Ok(()),
    };
    if let Err(answer) = gate {
        cx.host.count(Counter::RevocationRefused);
        return done(revocation_reply(cx, answer));
    }
    let mut strip = owned(cx, Passage::TokenRequest, headers);
    let browser = super::browser::of(cx.cfg, headers);
    let set = cookie_edits(browser.as_deref(), &mut strip);
    if request.end_of_stream {
        return revocation_body(cx, route, strip, set, &[]);
    }
    (
        State::Revoking {
            route,
            size: 0,
            strip,
            set,
        },
        Action::Hold(held::Kind::Revocation),
    )
}

fn revocation_limit(route: Revocation) -> usize {
    match route {
        Revocation::Api => revocation::MAX_API_BODY,
        Revocation::Logout => revocation::MAX_LOGOUT_BODY,
        Revocation::Observed => revocation::MAX_OBSERVED_BODY,
    }
}

/// A revocation request's whole body.
fn revocation_body(
    cx: &Ctx<'_>,
    route: Revocation,
    strip: Vec<String>,
    set: Vec<(String, String)>,
    body: &[u8],
) -> (State, Action) {
    let made = match route {
        Revocation::Api => revoke::api(cx, body),
        Revocation::Logout => revoke::logout(cx, body),
        Revocation::Observed => {
            let token = match revocation::observed_token(body) {
                revocation::Named::One(token) => Some(token),
                revocation::Named::Nothing => None,
                revocation::Named::Several => {
                    cx.host.count(Counter::RevocationRefused);
                    return done(revocation_reply(
                        cx,
                        RevocationReply::Invalid("exactly one token is required"),
                    ));
                }
            };
            return (
                State::Observed { token },
                Action::Forward(Forward {
                    kind: ForwardKind::TokenRequest,
                    policy: cx.cfg.policies.list.len(),
                    token: None,
                    strip,
                    set,
                }),
            );
        }
    };
    match made {
        Ok(seq) => confirm(cx, seq, Then::Reply),
        Err(answer) => {
            if route == Revocation::Api && !matches!(answer, RevocationReply::Full) {
                cx.host.count(Counter::RevocationRefused);
            }
            done(revocation_reply(cx, answer))
        }
    }
}

/// A revocation made (log entry `seq`): done at once when every worker has applied it, else
/// waited for on the timer.
fn confirm(cx: &Ctx<'_>, seq: u64, then: Then) -> (State, Action) {
    if revoke::confirmed(cx, seq) {
        return confirmed(cx, then);
    }
    let until_ms = cx.host.now_ms().saturating_add(revoke::CONFIRM_DEADLINE_MS);
    (
        State::Confirming {
            seq,
            until_ms,
            then,
        },
        Action::Confirm,
    )
}

fn confirmed(cx: &Ctx<'_>, then: Then) -> (State, Action) {
    match then {
        Then::Reply => done(revocation_reply(cx, RevocationReply::Revoked)),
        Then::ResumeResponse => done(Action::ResumeResponse),
    }
}

fn revocation_reply(cx: &Ctx<'_>, answer: RevocationReply) -> Action {
    Action::Reply(answer.local_reply(&cx.cfg.realm), None)
}

fn finish_publish(cx: &Ctx<'_>, method: &str, body: &[u8]) -> (State, Action) {
    let (answer, remote) = publish(cx.cfg, cx.host, method, body);
    match remote {
        // Written through: answered once the remote store took it.
        Some(call) => (
            State::PublishWrite {
                reply: answer,
                delete: method == "DELETE",
            },
            Action::Call(Call::RemoteWrite(call)),
        ),
        None => {
            let note = match &answer {
                SplitReply::Invalid(why) => Some(Note::PublishRefused(why.to_string())),
                _ => None,
            };
            done(split_reply(cx, &answer, note))
        }
    }
}

fn refuse_token_response(cx: &Ctx<'_>, why: &str) -> Action {
    cx.host.count(Outcome::TokenResponseRefused.counter());
    split_reply(
        cx,
        &SplitReply::SplitFailed,
        Some(Note::TokenResponseRefused(why.to_owned())),
    )
}

fn split_response(
    cx: &Ctx<'_>,
    status: Option<&str>,
    coding: Option<&str>,
    size: usize,
    body: &[u8],
) -> (State, Action) {
    match super::on_token_response(cx.cfg, cx.host, status, coding, body) {
        super::TokenResponse::Unchanged => done(Action::Continue),
        super::TokenResponse::Replace {
            body,
            remote: Some(call),
        } => (
            State::SplitWrite { body, size },
            Action::Call(Call::RemoteWrite(call)),
        ),
        super::TokenResponse::Replace { body, remote: None } => {
            done(Action::ReplaceBody { size, body })
        }
        super::TokenResponse::Refuse(answer) => done(split_reply(
            cx,
            &answer,
            Some(Note::TokenResponseRefused(format!("{answer:?}"))),
        )),
    }
}

/// A held request whose body did not come in time (counted whether or not it is still there
/// to answer).
fn expired(cx: &Ctx<'_>, state: &State, never_saw_body: bool) -> Action {
    let publish = matches!(state, State::Publishing { .. });
    let answer = match (publish, never_saw_body) {
        (_, true) => SplitReply::BodyNotDelivered,
        (true, false) => SplitReply::BodyTimeout,
        (false, false) => SplitReply::SplitFailed,
    };
    let counter = if publish {
        Outcome::PublishAnswered(&answer).counter()
    } else {
        Outcome::TokenResponseRefused.counter()
    };
    cx.host.count(counter);
    let note = if never_saw_body {
        Note::BodyNotDelivered
    } else {
        Note::BodyTimeout
    };
    split_reply(cx, &answer, Some(note))
}

/// What the proxy refused becomes the gateway's own failure.
fn refused(cx: &Ctx<'_>, what: &Refused) -> Action {
    match what {
        Refused::Forward {
            kind: ForwardKind::TokenRequest,
            ..
        }
        | Refused::ResponseBody => refuse_token_response(cx, "the proxy refused an edit"),
        Refused::Forward { policy, head, .. } => {
            let judged = Judged {
                head: *head,
                policy: *policy,
                presented: Presented::default(),
                browser: None,
            };
            deny(cx, &judged, Denial::Internal)
        }
    }
}

/// Trailers reach HTTP/2 and gRPC upstreams as they are: a header the filter owns must not
/// ride in them (the client's opaque token in an `authorization` trailer, beside the JWT in the
/// headers), under its own name or with `_` for `-`.
fn strip_trailers(cx: &Ctx<'_>, passage: Passage, trailers: &HeaderMap, hold: bool) -> Action {
    Action::StripTrailers {
        names: owned(cx, passage, trailers),
        hold,
    }
}

/// Counts a forward once it went on (the executor calls it after its edits were made).
pub fn count_forward(cx: &Ctx<'_>, forward: &Forward) {
    if let Some(outcome) = forward.outcome() {
        cx.host.count(outcome.counter());
    }
    if matches!(forward.kind, ForwardKind::Token | ForwardKind::Anonymous) {
        cx.host.count_policy(forward.policy, true);
    }
}
