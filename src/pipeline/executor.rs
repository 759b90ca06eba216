//! The one executor: one configuration on one worker, carrying out what the request machine
//! ([`super::machine`]) decides, through [`Io`]. It keeps what lives across callbacks: each
//! paused request's [`State`], the calls in flight and who waits for them (coalescing:
//! `storage::inflight`), what waits for the first key set (`storage::parked`), the bodies held
//! with a deadline (`storage::held`), and the key set fetch. The glue calls one entry point per
//! proxy callback; no decision is made anywhere else.
//!
//! A call's answer is routed by its id, whichever context the proxy hands it to: a coalesced
//! answer (an introspection, an exchange) is decided once for the worker (cached, verified)
//! and then given to every request waiting for it, each under its own policy; a request's own
//! call (the remote split store) is given to that request.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use crate::config::{Config, Contract, KeySource};
use crate::hash::{self, TokenHash, TokenKeys};
use crate::header_map::HeaderMap;
use crate::host::Host;
use crate::metrics::Counter;
use crate::reply::Denial;
use crate::storage::dpop::{KeyQuota, ReplayStore};
use crate::storage::fleet;
use crate::storage::held::{self, Held};
use crate::storage::inflight::{CallKind, Completed, InFlight, Join};
use crate::storage::keys::{self, JwksSource, KeyState};
use crate::storage::parked::{Item, Parked};
use crate::storage::remote;
use crate::storage::split_store::Store;
use crate::token::exchange;
use crate::token::introspection::{self, CallFailure, Response, MAX_RESPONSE_BYTES};
use crate::token::jws::MAX_JWKS_BYTES;
use crate::token::jwt::MAX_HEADER_PAYLOAD_LEN;
use crate::token::seal;

use super::forward::Forward;
use super::io::{CallResponse, Io, Level, Outgoing, RequestParts};
use super::machine::{self, Action, Call, Event, Note, Refused, State};
use super::{
    fleet_timer, on_exchange, on_introspection, phantom_fleet, revoke, Ctx, Exchanged,
    Introspected, Worker,
};

/// The period of the root context's timer: counters flushed, the key set scheduled, parked and
/// held requests looked at, orphaned calls made again.
pub const TICK_MS: u64 = 200;
/// The first tick, soon after the configuration loads (a call made from `on_configure` itself
/// may never be answered: clusters are not ready yet).
pub const FIRST_TICK_MS: u64 = 10;
/// Route metadata policy names logged as unknown, at most (each once per worker).
const MAX_LOGGED_POLICIES: usize = 64;
/// Longest answer to a fleet revocation job read (a page of the ring).
const FLEET_JOB_BYTES: usize = 64 * 1024;

/// What a proxy callback returns: go on, or stay paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Pause,
}

/// Which key-value store a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreOf {
    Split,
    Fleet,
}

/// A request's own call, and what its answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Own {
    Read,
    Write,
    /// A fleet write nobody waits for (counted when answered).
    FleetWrite,
}

/// What an action leads to before the callback can return.
enum Next {
    Flow(Flow),
    Body(Vec<u8>),
    Refused(Refused),
    KeysFailed,
    ReadFailed,
    WriteFailed,
}

/// Context and call ids are the proxy's counters, unique and not chosen by clients: hashed as
/// they are.
type Ids = std::hash::BuildHasherDefault<IdHasher>;

#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n);
    }
}

/// One configuration on one worker.
pub struct Executor {
    pub cfg: Config,
    pub worker: Worker,
    requests: RefCell<HashMap<u32, State, Ids>>,
    inflight: RefCell<InFlight>,
    own_calls: RefCell<HashMap<u32, (u32, Own), Ids>>,
    parked: RefCell<Parked>,
    held: RefCell<Held>,
    jwks_call: Cell<Option<u32>>,
    logged_policies: RefCell<Vec<String>>,
    /// The request (or root) the proxy acts on now: making it current again costs a host call.
    current: Cell<u32>,
    /// Requests waiting until every worker has applied their revocation.
    confirming: RefCell<Vec<u32>>,
    /// The fleet calls of the timer's revocation jobs (`fleet_timer.rs`), by call.
    fleet_jobs: RefCell<HashMap<u32, fleet_timer::Job, Ids>>,
}

impl Executor {
    /// The executor of `cfg` on this worker; with inline verification keys, they are in from
    /// the start.
    pub fn new(cfg: Config) -> Self {
        let keys = match cfg.verify.as_ref().map(|v| &v.keys) {
            Some(KeySource::Inline(keys)) => KeyState::with_keys(keys.clone()),
            _ => KeyState::default(),
        };
        Self {
            cfg,
            worker: Worker {
                keys,
                ..Worker::default()
            },
            requests: RefCell::default(),
            inflight: RefCell::default(),
            own_calls: RefCell::default(),
            parked: RefCell::default(),
            held: RefCell::default(),
            jwks_call: Cell::new(None),
            logged_policies: RefCell::default(),
            current: Cell::new(0),
            confirming: RefCell::default(),
            fleet_jobs: RefCell::default(),
        }
    }

    /// What a configuration does when it loads, before any request: the key set schedule's
    /// lease (and the key set another worker fetched already, so that a reload has its keys at
    /// once), and every store's slots, created empty so that every write can be a
    /// compare-and-swap (Envoy's only protects a key that exists).
    pub fn start(&self, host: &dyn Host, io: &dyn Io, root_id: u32) {
        let cfg = &self.cfg;
        if let (Some(src), Some(verify)) = (self.jwks_source(), cfg.verify.as_ref()) {
            keys::initialize(src, host);
            keys::load_shared(src, &verify.policy, host, &self.worker.keys);
        }
        if let Some(split) = &cfg.split {
            if Store::new(split.max_entries).initialize(host) {
                io.log(
                    Level::Info,
                    format_args!(
                        "#{root_id} split token store created: {} slots",
                        split.max_entries
                    ),
                );
            }
        }
        if let Some(rv) = &cfg.revocation {
            let created = revoke::start(&self.cx(host));
            if created > 0 {
                io.log(
                    Level::Info,
                    format_args!(
                        "#{root_id} revocation marks: room for {} ({created} buckets new; one \
                         table per VM, sized by the largest max_marks in use)",
                        rv.max_marks
                    ),
                );
            }
        }
        if let Some(dpop) = &cfg.dpop {
            let created = ReplayStore::new(dpop.replay_entries).initialize(host);
            if created > 0 {
                io.log(
                    Level::Info,
                    format_args!(
                        "#{root_id} DPoP replay store: {} slots ({created} new; one store per \
                         VM, sized by the largest replay_entries in use)",
                        dpop.replay_entries
                    ),
                );
            }
            let slots = KeyQuota::table_slots(dpop.replay_entries);
            let quota = KeyQuota {
                slots,
                limit: dpop.max_proofs_per_key,
                bucket_s: 1,
            };
            let created = quota.initialize(host);
            if created > 0 {
                io.log(
                    Level::Info,
                    format_args!(
                        "#{root_id} DPoP key share table: {slots} slots ({created} new), at \
                         most {} proofs per key",
                        dpop.max_proofs_per_key
                    ),
                );
            }
        }
    }

    pub fn cx<'a>(&'a self, host: &'a dyn Host) -> Ctx<'a> {
        Ctx {
            cfg: &self.cfg,
            worker: &self.worker,
            host,
        }
    }

    // ---- proxy callbacks ----------------------------------------------------------------

    pub fn on_request_headers(
        &self,
        host: &dyn Host,
        io: &dyn Io,
        id: u32,
        parts: &RequestParts,
        end_of_stream: bool,
    ) -> Flow {
        self.current.set(id);
        let request = parts.request(end_of_stream);
        self.run(host, io, id, Event::Headers(&request), false)
    }

    pub fn on_request_body(
        &self,
        host: &dyn Host,
        io: &dyn Io,
        id: u32,
        size: usize,
        end_of_stream: bool,
    ) -> Flow {
        self.body(host, io, id, Some(size), end_of_stream)
    }

    pub fn on_request_trailers(
        &self,
        host: &dyn Host,
        io: &dyn Io,
        id: u32,
        trailers: &HeaderMap,
    ) -> Flow {
        self.current.set(id);
        self.saw_body(id);
        self.run(host, io, id, Event::Trailers(trailers), false)
    }

    pub fn on_response_headers(
        &self,
        host: &dyn Host,
        io: &dyn Io,
        id: u32,
        end_of_stream: bool,
    ) -> Flow {
        if self.state_of(id) != Some(false) {
            // Only a token request's response is looked at.
            return Flow::Continue;
        }
        self.current.set(id);
        let headers = io.response_headers();
        let status = headers.get(":status");
        let coding = headers.get("content-encoding");
        let event = Event::ResponseHeaders {
            status: status.as_deref(),
            coding: coding.as_deref(),
            end_of_stream,
        };
        self.run(host, io, id, event, false)
    }

    pub fn on_response_body(
        &self,
        host: &dyn Host,
        io: &dyn Io,
        id: u32,
        size: Option<usize>,
        end_of_stream: bool,
    ) -> Flow {
        if self.state_of(id).is_none() {
            return Flow::Continue;
        }
        self.body(host, io, id, size, end_of_stream)
    }

    /// A call's answer, whichever context (`context_id`) the proxy gave it to.
    pub fn on_call_response(
        &self,
        host: &dyn Host,
        io: &dyn Io,
        context_id: u32,
        call: u32,
        num_headers: usize,
        body_size: usize,
    ) {
        self.current.set(context_id);
        if self.jwks_call.get() == Some(call) {
            self.jwks_call.set(None);
            let response = io.call_response(num_headers, body_size, MAX_JWKS_BYTES);
            self.on_jwks_response(host, io, &response);
            // What waited for the keys goes on at once (or is refused if the fetch failed).
            self.unpark(host, io);
            return;
        }
        let job = self.fleet_jobs.borrow_mut().remove(&call);
        if let Some(job) = job {
            let response = io.call_response(num_headers, body_size, FLEET_JOB_BYTES);
            let status = response.status();
            let (status, body) = (status.as_deref(), response.body.as_deref().unwrap_or(&[]));
            let cx = self.cx(host);
            let next = match job {
                fleet_timer::Job::Read { after } => {
                    fleet_timer::on_read(&cx, after, fleet::ring_page(status, body, after))
                }
                fleet_timer::Job::Append { .. } => {
                    fleet_timer::on_publish(&cx, job, fleet::appended(status, body))
                }
                fleet_timer::Job::Delete { .. } => {
                    fleet_timer::on_publish(&cx, job, remote::delete_succeeded(status))
                }
                fleet_timer::Job::NonceKey { offered } => {
                    fleet_timer::on_nonce_key(&cx, fleet::nonce_key_of(status, body, &offered));
                    None
                }
            };
            self.fleet_job(host, io, next);
            return;
        }
        let own = self.own_calls.borrow_mut().remove(&call);
        if let Some((_, Own::FleetWrite)) = own {
            let response = io.call_response(num_headers, 0, 0);
            if !remote::put_succeeded(response.status().as_deref()) {
                host.count(Counter::FleetWriteFailed);
            }
            return;
        }
        if let Some((id, own)) = own {
            // A sealed split entry is longer than the `header.payload` it holds.
            let sealed = self.cfg.split.as_ref().and_then(|s| s.remote.as_ref());
            let max = match sealed.and_then(|r| r.sealed.as_ref()) {
                Some(_) => seal::MAX_SEALED_LEN,
                None => MAX_HEADER_PAYLOAD_LEN,
            };
            let response = io.call_response(num_headers, body_size, max);
            if !self.select(io, id) {
                return;
            }
            let status = response.status();
            let event = match own {
                Own::Read => Event::RemoteGot {
                    status: status.as_deref(),
                    body: response.body.as_deref(),
                },
                Own::Write | Own::FleetWrite => Event::RemoteWritten {
                    status: status.as_deref(),
                },
            };
            self.run(host, io, id, event, true);
            return;
        }
        let completed = self.inflight.borrow_mut().complete(call);
        let Some(done) = completed else {
            io.log(
                Level::Debug,
                format_args!("ignoring late answer to call {call}"),
            );
            return;
        };
        let max = match done.kind {
            CallKind::Introspection => MAX_RESPONSE_BYTES,
            CallKind::FleetRead => seal::MAX_SEALED_LEN,
            CallKind::Exchange { .. } => exchange::MAX_RESPONSE_BYTES,
        };
        let response = io.call_response(num_headers, body_size, max);
        if done.kind == CallKind::FleetRead {
            self.fleet_read(host, io, done, &response);
            return;
        }
        let read = Read::of(&response);
        let answer = read.response(response.body.as_deref());
        match done.kind {
            CallKind::Introspection => {
                let contract = self
                    .cfg
                    .phantom
                    .as_ref()
                    .map_or(&Contract::Jwt, |p| &p.contract);
                let outcome = introspection::classify(&answer, contract);
                self.introspected(host, io, done, outcome, answer.status);
            }
            CallKind::FleetRead => {}
            CallKind::Exchange { .. } => {
                let outcome = exchange::classify(&answer);
                self.exchanged(host, io, done, outcome, answer.status);
            }
        }
    }

    /// The root's timer.
    pub fn on_tick(&self, host: &dyn Host, io: &dyn Io, root_id: u32) {
        self.current.set(root_id);
        if self.jwks_call.get().is_none() {
            self.jwks_call.set(self.jwks_tick(host, io));
        }
        self.unpark(host, io);
        self.expire_held(host, io);
        revoke::follow(&self.cx(host));
        if self.cfg.fleet.is_some() {
            let cx = self.cx(host);
            self.fleet_job(host, io, fleet_timer::next_publish(&cx));
            self.fleet_job(host, io, fleet_timer::next_read(&cx));
            self.fleet_job(host, io, fleet_timer::next_nonce_key(&cx));
        }
        let confirming = self.confirming.take();
        for id in confirming {
            if self.select(io, id) {
                self.run(host, io, id, Event::Tick, true);
            }
        }
        let orphans = self.inflight.borrow().orphans();
        for (key, token, kind) in orphans {
            self.start_call(host, io, root_id, key, kind, &token);
        }
    }

    /// Request `id` is gone (finished, or reset by its client). Most requests are done at
    /// once and leave nothing behind: each table is only looked into when it holds something.
    pub fn on_done(&self, id: u32) {
        if let Ok(mut requests) = self.requests.try_borrow_mut() {
            if !requests.is_empty() {
                requests.remove(&id);
            }
        }
        if let Ok(mut inflight) = self.inflight.try_borrow_mut() {
            if !inflight.is_idle() {
                inflight.leave(id);
            }
        }
        if let Ok(mut parked) = self.parked.try_borrow_mut() {
            if !parked.is_empty() {
                parked.leave(id);
            }
        }
        self.release_held(id);
        if let Ok(mut confirming) = self.confirming.try_borrow_mut() {
            if !confirming.is_empty() {
                confirming.retain(|c| *c != id);
            }
        }
        if let Ok(mut own) = self.own_calls.try_borrow_mut() {
            if !own.is_empty() {
                own.retain(|_, (owner, _)| *owner != id);
            }
        }
    }

    /// Requests with a state kept (tests, and the soak's bound).
    pub fn kept(&self) -> usize {
        self.requests.borrow().len()
    }

    // ---- the machine, and its actions ----------------------------------------------------

    /// Makes request `id` the one the proxy acts on (a host call, unless it already is). False
    /// when it is gone.
    fn select(&self, io: &dyn Io, id: u32) -> bool {
        if self.current.get() == id {
            return true;
        }
        let selected = io.select(id);
        if selected {
            self.current.set(id);
        }
        selected
    }

    /// `Some(paused)` for a request with a state kept; `None` for an idle one.
    fn state_of(&self, id: u32) -> Option<bool> {
        self.requests.borrow().get(&id).map(|s| {
            !matches!(
                s,
                State::TokenRequest | State::Observed { .. } | State::Cors { .. }
            )
        })
    }

    fn saw_body(&self, id: u32) {
        if let Ok(mut held) = self.held.try_borrow_mut() {
            held.saw_body(id);
        }
    }

    fn body(
        &self,
        host: &dyn Host,
        io: &dyn Io,
        id: u32,
        size: Option<usize>,
        complete: bool,
    ) -> Flow {
        self.current.set(id);
        self.saw_body(id);
        self.run(host, io, id, Event::Body { size, complete }, false)
    }

    /// Steps request `id` with `event` and carries the action out, until the callback can
    /// return. `resumed`: the request is paused (an answer, the timer), so going on is a
    /// resume; otherwise this is its own callback, and going on is what it returns.
    fn run(&self, host: &dyn Host, io: &dyn Io, id: u32, event: Event<'_>, resumed: bool) -> Flow {
        let cx = self.cx(host);
        let state = self.take(id);
        let (next, action) = machine::step(&cx, state, event);
        self.keep(id, next);
        let mut follow = self.execute(host, io, id, action, resumed);
        loop {
            let event_owned;
            let event = match &follow {
                Next::Flow(flow) => return *flow,
                Next::Body(body) => Event::BodyRead(body),
                Next::Refused(what) => {
                    event_owned = what.clone();
                    Event::Refused(&event_owned)
                }
                Next::KeysFailed => Event::KeysFailed,
                Next::ReadFailed => Event::RemoteGot {
                    status: None,
                    body: None,
                },
                Next::WriteFailed => Event::RemoteWritten { status: None },
            };
            let state = self.take(id);
            let (next, action) = machine::step(&cx, state, event);
            self.keep(id, next);
            follow = self.execute(host, io, id, action, resumed);
        }
    }

    fn take(&self, id: u32) -> State {
        match self.requests.try_borrow_mut() {
            Ok(mut requests) if !requests.is_empty() => requests.remove(&id).unwrap_or_default(),
            _ => State::Idle,
        }
    }

    /// Keeps a request's state (an idle one is not kept), before its action is carried out:
    /// an action may step it again (a call that cannot be made answers its waiters at once).
    fn keep(&self, id: u32, state: State) {
        if state.held().is_none() {
            self.release_held(id);
        }
        if state != State::Idle {
            if let Ok(mut requests) = self.requests.try_borrow_mut() {
                requests.insert(id, state);
            }
        }
    }

    fn release_held(&self, id: u32) {
        if let Ok(mut held) = self.held.try_borrow_mut() {
            if !held.is_empty() {
                held.release(id);
            }
        }
    }

    fn execute(
        &self,
        host: &dyn Host,
        io: &dyn Io,
        id: u32,
        action: Action,
        resumed: bool,
    ) -> Next {
        match action {
            Action::Forward(forward) => self.forward(host, io, &forward, resumed),
            Action::Reply(reply, note) => {
                if let Some(note) = note {
                    self.log_note(io, id, &note);
                }
                io.reply(&reply);
                Next::Flow(Flow::Pause)
            }
            Action::Call(call) => self.call(host, io, id, call),
            Action::WaitForKeys => {
                if self.park(host, Item::Request(id)) {
                    Next::Flow(Flow::Pause)
                } else {
                    Next::KeysFailed
                }
            }
            Action::Hold(kind) => {
                if let Ok(mut held) = self.held.try_borrow_mut() {
                    held.hold(id, kind, host.now_ms());
                }
                Next::Flow(Flow::Pause)
            }
            Action::Pause => Next::Flow(Flow::Pause),
            Action::Continue => Next::Flow(Flow::Continue),
            Action::ReadBody(body, size) => Next::Body(io.read_body(body, size)),
            Action::ReplaceBody { size, body } => {
                if !io.replace_response_body(size, &body) {
                    return Next::Refused(Refused::ResponseBody);
                }
                io.log(
                    Level::Debug,
                    format_args!(
                        "#{id} token response split ({size} -> {} bytes)",
                        body.len()
                    ),
                );
                if resumed {
                    io.resume_response();
                    Next::Flow(Flow::Pause)
                } else {
                    Next::Flow(Flow::Continue)
                }
            }
            Action::StripTrailers { names, hold } => {
                for name in &names {
                    io.remove_trailer(name);
                }
                Next::Flow(if hold { Flow::Pause } else { Flow::Continue })
            }
            Action::Confirm => {
                if let Ok(mut confirming) = self.confirming.try_borrow_mut() {
                    if !confirming.contains(&id) {
                        confirming.push(id);
                    }
                }
                Next::Flow(Flow::Pause)
            }
            Action::SetResponseHeaders(headers) => {
                for (name, value) in &headers {
                    // `vary` is added to, never replaced: the API's own (`accept-encoding`)
                    // still matters to caches.
                    if *name == "vary" {
                        let theirs = io.response_headers().get("vary").unwrap_or_default();
                        let has = theirs
                            .split(',')
                            .any(|v| v.trim().eq_ignore_ascii_case(value) || v.trim() == "*");
                        if !theirs.trim().is_empty() {
                            if !has {
                                io.set_response_header(name, Some(&format!("{theirs}, {value}")));
                            }
                            continue;
                        }
                    }
                    io.set_response_header(name, Some(value));
                }
                Next::Flow(Flow::Continue)
            }
            Action::ResumeResponse => {
                if resumed {
                    io.resume_response();
                    Next::Flow(Flow::Pause)
                } else {
                    Next::Flow(Flow::Continue)
                }
            }
        }
    }

    /// Applies a forward's edits: the one function that writes a request's headers.
    fn forward(&self, host: &dyn Host, io: &dyn Io, forward: &Forward, resumed: bool) -> Next {
        let cfg = &self.cfg;
        if let Some((name, value)) = forward.required() {
            if !io.set_header(name, value) {
                io.log(Level::Error, format_args!("cannot set the {name} header"));
                // Read only now, in this rare path: the reply to a `HEAD` has no body.
                let head = io.request().headers.text(":method").as_deref() == Some("HEAD");
                return Next::Refused(Refused::Forward {
                    kind: forward.kind,
                    policy: forward.policy,
                    head,
                });
            }
        }
        for (name, value) in forward.edits(cfg, host) {
            let _ = io.set_header(name, value);
        }
        for (name, value) in forward.filter_state(cfg, host) {
            io.set_filter_state(&name, value.as_bytes());
        }
        machine::count_forward(&self.cx(host), forward);
        if resumed {
            io.resume_request();
            Next::Flow(Flow::Pause)
        } else {
            Next::Flow(Flow::Continue)
        }
    }

    fn log_note(&self, io: &dyn Io, id: u32, note: &Note) {
        match note {
            Note::UnknownPolicy(name) => {
                let Ok(mut seen) = self.logged_policies.try_borrow_mut() else {
                    return;
                };
                if seen.len() >= MAX_LOGGED_POLICIES || seen.iter().any(|n| n == name) {
                    return;
                }
                seen.push(name.clone());
                io.log(
                    Level::Error,
                    format_args!(
                        "#{id} route metadata names policy {name:?}, which the configuration \
                         does not define: requests on that route are refused with 500"
                    ),
                );
            }
            Note::PublishRefused(why) => {
                io.log(Level::Info, format_args!("#{id} publish refused: {why}"));
            }
            Note::TokenResponseRefused(why) => io.log(
                Level::Warn,
                format_args!("#{id} token response not passed on: {why}"),
            ),
            Note::BodyNotDelivered => io.log(
                Level::Error,
                format_args!(
                    "#{id} no body reached the filter: set allow_on_headers_stop_iteration: \
                     true in the Wasm PluginConfig of listeners that use split.publish or \
                     split.split_responses"
                ),
            ),
            Note::BodyTimeout => {
                io.log(Level::Info, format_args!("#{id} body not complete in time"))
            }
        }
    }

    // ---- calls ---------------------------------------------------------------------------

    fn call(&self, host: &dyn Host, io: &dyn Io, id: u32, call: Call) -> Next {
        match call {
            Call::Introspect { hash, token } => {
                // With a fleet, its entry is read first (the same waiters wait on).
                let kind = match self.cfg.fleet {
                    Some(_) => CallKind::FleetRead,
                    None => CallKind::Introspection,
                };
                self.join(host, io, id, hash, &token, kind, None)
            }
            Call::Exchange {
                key,
                token,
                subject,
                policy,
                client,
            } => self.join(
                host,
                io,
                id,
                key,
                &subject,
                CallKind::Exchange { token, policy },
                client,
            ),
            Call::RemoteGet(call) => self.own_call(io, id, &call, Own::Read, StoreOf::Split),
            Call::RemoteWrite(call) => self.own_call(io, id, &call, Own::Write, StoreOf::Split),
            Call::FleetClaim(call) => self.own_call(io, id, &call, Own::Read, StoreOf::Fleet),
        }
    }

    /// Starts (or joins) a coalesced call for request `id`, which stays paused. When the call
    /// cannot be made, everyone waiting for it is answered at once (502). `client`: whose the
    /// client's token is, kept beside an exchange.
    #[allow(clippy::too_many_arguments)]
    fn join(
        &self,
        host: &dyn Host,
        io: &dyn Io,
        id: u32,
        key: TokenHash,
        token: &str,
        kind: CallKind,
        client: Option<Box<crate::token::revocation::Identity>>,
    ) -> Next {
        let join = self.inflight.borrow_mut().join(key, token, kind, id);
        match join {
            Join::Wait => host.count(Counter::Coalesced),
            Join::Lead => {
                // The first request for `key` makes the call (`client` kept beside it).
                self.inflight.borrow_mut().attach(&key, client);
                self.start_call(host, io, id, key, kind, token);
            }
        }
        Next::Flow(Flow::Pause)
    }

    /// Makes the call of `kind` for `key`, from context `owner`. When it cannot be made, a
    /// fleet read gives way to the introspection; anything else answers everyone waiting for
    /// it at once (502).
    fn start_call(
        &self,
        host: &dyn Host,
        io: &dyn Io,
        owner: u32,
        key: TokenHash,
        kind: CallKind,
        token: &str,
    ) {
        match self.dispatch_kind(io, &key, kind, token) {
            Ok(call) => {
                self.count(host, kind);
                self.inflight.borrow_mut().started(&key, owner, call);
            }
            Err(e) if kind == CallKind::FleetRead => {
                io.log(Level::Warn, format_args!("#{owner} {e}"));
                host.count(Counter::FleetError);
                self.inflight
                    .borrow_mut()
                    .rekind(&key, CallKind::Introspection);
                self.start_call(host, io, owner, key, CallKind::Introspection, token);
            }
            Err(e) => {
                io.log(Level::Error, format_args!("#{owner} {e}"));
                self.abandon(host, io, &key, kind);
            }
        }
    }

    fn count(&self, host: &dyn Host, kind: CallKind) {
        host.count(match kind {
            CallKind::Introspection => Counter::IntrospectionCalls,
            CallKind::FleetRead => Counter::FleetReads,
            CallKind::Exchange { .. } => Counter::ExchangeCalls,
        });
    }

    /// The fleet's answer to a read made for an introspection's waiters: a hit answers them
    /// all; anything else goes on to the introspection, from the context that got the answer.
    fn fleet_read(&self, host: &dyn Host, io: &dyn Io, done: Completed, response: &CallResponse) {
        let status = response.status();
        let got = response.body.as_deref().map_or(remote::Got::Failed, |b| {
            remote::classify_get(status.as_deref(), b)
        });
        // A reset (no headers) is a failure, whatever the body.
        let got = if response.headers.is_none() {
            remote::Got::Failed
        } else {
            got
        };
        let cx = self.cx(host);
        match phantom_fleet::on_read(&cx, &done.key, &done.token, got) {
            Some(answer) => {
                self.give_introspection(host, io, &done.key, &done.token, &done.waiters, &answer);
            }
            None => {
                let (key, token) = (done.key, done.token.clone());
                self.inflight
                    .borrow_mut()
                    .again(done, CallKind::Introspection);
                let owner = self.current.get();
                self.start_call(host, io, owner, key, CallKind::Introspection, &token);
            }
        }
    }

    /// Makes a revocation job's fleet call (from the root: its timer, or its answer to the
    /// last one). One that cannot be made is answered as failed at once.
    fn fleet_job(
        &self,
        host: &dyn Host,
        io: &dyn Io,
        mut next: Option<(fleet_timer::Job, remote::Call)>,
    ) {
        while let Some((job, call)) = next.take() {
            match self.store_dispatch(io, &call, StoreOf::Fleet) {
                Ok(id) => {
                    self.fleet_jobs.borrow_mut().insert(id, job);
                }
                Err(e) => {
                    io.log(Level::Warn, format_args!("fleet revocation: {e}"));
                    let cx = self.cx(host);
                    next = match job {
                        fleet_timer::Job::Read { after } => fleet_timer::on_read(&cx, after, None),
                        fleet_timer::Job::NonceKey { .. } => {
                            fleet_timer::on_nonce_key(&cx, None);
                            None
                        }
                        other => fleet_timer::on_publish(&cx, other, false),
                    };
                }
            }
        }
    }

    /// Writes what this gateway's cache now holds for `hash` to the fleet, sealed, from the
    /// context that got the introspection's answer. Nobody waits for it: a write lost (the
    /// fleet down, the request gone before the answer) costs another gateway an introspection.
    fn fleet_write(
        &self,
        host: &dyn Host,
        io: &dyn Io,
        hash: &TokenHash,
        token: &str,
        active: bool,
    ) {
        let Some(call) = phantom_fleet::write(&self.cx(host), hash, token, active) else {
            return;
        };
        let owner = self.current.get();
        match self.store_dispatch(io, &call, StoreOf::Fleet) {
            Ok(id) => {
                host.count(Counter::FleetWrites);
                self.own_calls
                    .borrow_mut()
                    .insert(id, (owner, Own::FleetWrite));
            }
            Err(e) => {
                host.count(Counter::FleetWriteFailed);
                io.log(Level::Warn, format_args!("#{owner} {e}"));
            }
        }
    }

    /// Starts a request's own call (the remote split store, a DPoP proof's claim).
    fn own_call(&self, io: &dyn Io, id: u32, call: &remote::Call, own: Own, of: StoreOf) -> Next {
        match self.store_dispatch(io, call, of) {
            Ok(call) => {
                self.own_calls.borrow_mut().insert(call, (id, own));
                Next::Flow(Flow::Pause)
            }
            Err(e) => {
                io.log(Level::Warn, format_args!("#{id} {e}"));
                if own == Own::Read {
                    Next::ReadFailed
                } else {
                    Next::WriteFailed
                }
            }
        }
    }

    /// Dispatches `call` to a key-value store over HTTP (the remote split store, the fleet).
    fn store_dispatch(&self, io: &dyn Io, call: &remote::Call, of: StoreOf) -> Result<u32, String> {
        let (cluster, authority, timeout_ms) = match of {
            StoreOf::Split => {
                let r = self
                    .cfg
                    .split
                    .as_ref()
                    .and_then(|s| s.remote.as_ref())
                    .ok_or("split.remote is not configured")?;
                (&r.cluster, &r.authority, r.timeout_ms)
            }
            StoreOf::Fleet => {
                let f = self.cfg.fleet.as_ref().ok_or("fleet is not configured")?;
                (&f.cluster, &f.authority, f.timeout_ms)
            }
        };
        let length = call.body.as_ref().map_or(0, Vec::len).to_string();
        let mut headers = vec![
            (":method", call.method.as_str()),
            (":path", call.path.as_str()),
            (":authority", authority.as_str()),
        ];
        if call.body.is_some() {
            headers.push(("content-length", length.as_str()));
            headers.push(("content-type", "text/plain"));
        }
        io.dispatch(&Outgoing {
            cluster,
            headers,
            body: call.body.as_deref(),
            timeout_ms,
        })
        .map_err(|e| format!("dispatch to cluster {cluster} failed: {e}"))
    }

    /// Makes the call `kind` asks for `key`, sending `token`.
    fn dispatch_kind(
        &self,
        io: &dyn Io,
        key: &TokenHash,
        kind: CallKind,
        token: &str,
    ) -> Result<u32, String> {
        if kind == CallKind::FleetRead {
            let call = phantom_fleet::read(&self.cfg, key).ok_or("fleet is not configured")?;
            return self.store_dispatch(io, &call, StoreOf::Fleet);
        }
        let (endpoint, body) = match kind {
            CallKind::FleetRead => return Err("a fleet read is not an endpoint's".into()),
            CallKind::Introspection => {
                let p = self
                    .cfg
                    .phantom
                    .as_ref()
                    .ok_or("phantom is not configured")?;
                (&p.endpoint, introspection::request_body(token))
            }
            CallKind::Exchange { policy, .. } => {
                let x = self
                    .cfg
                    .token_exchange
                    .as_ref()
                    .ok_or("token_exchange is not configured")?;
                let rule = self
                    .cfg
                    .policies
                    .get(policy)
                    .exchange
                    .as_ref()
                    .ok_or("the policy has no exchange")?;
                (
                    &x.endpoint,
                    exchange::request_body(x.subject, token, &rule.form),
                )
            }
        };
        let headers = match kind {
            CallKind::FleetRead => Vec::new(),
            CallKind::Introspection => self
                .cfg
                .phantom
                .as_ref()
                .map(|p| p.request_headers().to_vec())
                .unwrap_or_default(),
            CallKind::Exchange { .. } => self
                .cfg
                .token_exchange
                .as_ref()
                .map(|x| x.request_headers().to_vec())
                .unwrap_or_default(),
        };
        io.dispatch(&Outgoing {
            cluster: &endpoint.cluster,
            headers,
            body: Some(&body),
            timeout_ms: endpoint.timeout_ms,
        })
        .map_err(|e| format!("dispatch to cluster {} failed: {e}", endpoint.cluster))
    }

    /// The call for `key` could not be made: everyone waiting for it gets a 502.
    fn abandon(&self, host: &dyn Host, io: &dyn Io, key: &TokenHash, kind: CallKind) {
        let waiters = self.inflight.borrow_mut().abandon(key);
        match kind {
            CallKind::Introspection | CallKind::FleetRead => {
                let failed = Err(Denial::TokenService(CallFailure::Unreachable));
                // The token is not needed: a failure leads to no exchange.
                let incoming = TokenKeys::with_sha(&self.worker.keyed, "", *key);
                self.answer(host, io, &waiters, |_| Event::Introspected {
                    incoming: &incoming,
                    answer: &failed,
                });
            }
            CallKind::Exchange { .. } => {
                let failed = Err(Denial::ExchangeFailed(CallFailure::Unreachable));
                self.answer(host, io, &waiters, |_| Event::Exchanged {
                    key,
                    answer: &failed,
                });
            }
        }
    }

    /// Gives an answer to every request waiting for it, each made current first (a request
    /// that is gone is skipped).
    fn answer<'e>(
        &self,
        host: &dyn Host,
        io: &dyn Io,
        waiters: &[u32],
        event: impl Fn(u32) -> Event<'e>,
    ) {
        for &id in waiters {
            if self.select(io, id) {
                self.run(host, io, id, event(id), true);
            }
        }
    }

    /// The token service's answer to an introspection: decided once for the worker (verified,
    /// cached), then given to every request waiting for it.
    fn introspected(
        &self,
        host: &dyn Host,
        io: &dyn Io,
        done: Completed,
        outcome: introspection::Outcome,
        status: Option<&str>,
    ) {
        let cx = self.cx(host);
        let answer = on_introspection(&cx, &done.key, outcome.clone());
        if answer == Err(Denial::KeysUnavailable)
            && machine::waits_for_keys(&cx, Denial::KeysUnavailable)
            && self.park(
                host,
                Item::Introspection {
                    hash: done.key,
                    token: done.token.clone(),
                    waiters: done.waiters.clone(),
                    outcome,
                },
            )
        {
            // Warm-up: judged again once the first key set is in.
            return;
        }
        let failed = matches!(answer, Err(Denial::TokenService(_)));
        let level = if failed { Level::Warn } else { Level::Debug };
        if io.enabled(level) {
            io.log(
                level,
                format_args!(
                    "introspection of token {} answered {} : {}, {} waiting",
                    hash::hash_prefix(&done.key),
                    status.unwrap_or("no headers"),
                    match &answer {
                        Ok(_) => "active".to_owned(),
                        Err(d) => format!("refused {d:?}"),
                    },
                    done.waiters.len(),
                ),
            );
        }
        // Before the waiters are answered (each made current in turn): from this context.
        match &answer {
            Ok(found) if found.cache_until.is_some() => {
                self.fleet_write(host, io, &done.key, &done.token, true);
            }
            Err(Denial::InvalidToken) => self.fleet_write(host, io, &done.key, &done.token, false),
            _ => {}
        }
        self.give_introspection(host, io, &done.key, &done.token, &done.waiters, &answer);
    }

    fn give_introspection(
        &self,
        host: &dyn Host,
        io: &dyn Io,
        hash: &TokenHash,
        token: &str,
        waiters: &[u32],
        answer: &Result<Introspected, Denial>,
    ) {
        let incoming = TokenKeys::with_sha(&self.worker.keyed, token, *hash);
        self.answer(host, io, waiters, |_| Event::Introspected {
            incoming: &incoming,
            answer,
        });
    }

    /// The token service's answer to an exchange: decided once (verified for the policy's
    /// audience, cached), then given to every request waiting for it.
    fn exchanged(
        &self,
        host: &dyn Host,
        io: &dyn Io,
        done: Completed,
        outcome: exchange::Outcome,
        status: Option<&str>,
    ) {
        let CallKind::Exchange { policy, .. } = done.kind else {
            return;
        };
        let cx = self.cx(host);
        let client = done.client.as_deref();
        let answer = self.exchange_answer(&cx, policy, &done.key, client, outcome.clone());
        if answer == Err(Denial::KeysUnavailable)
            && machine::waits_for_keys(&cx, Denial::KeysUnavailable)
            && self.park(
                host,
                Item::Exchange {
                    key: done.key,
                    policy,
                    waiters: done.waiters.clone(),
                    outcome,
                    client: done.client.clone(),
                },
            )
        {
            return;
        }
        let failed = matches!(answer, Err(Denial::ExchangeFailed(_)));
        let level = if failed { Level::Warn } else { Level::Debug };
        if io.enabled(level) {
            io.log(
                level,
                format_args!(
                    "exchange {} for policy {} answered {}: {}, {} waiting",
                    hash::hash_prefix(&done.key),
                    self.cfg.policies.get(policy).name,
                    status.unwrap_or("no headers"),
                    match &answer {
                        Ok(_) => "issued".to_owned(),
                        Err(d) => format!("refused {d:?}"),
                    },
                    done.waiters.len(),
                ),
            );
        }
        self.answer(host, io, &done.waiters, |_| Event::Exchanged {
            key: &done.key,
            answer: &answer,
        });
    }

    /// An exchange's answer under the rule of `policy` (every waiter's rule asks for the same:
    /// they share the exchange's key).
    fn exchange_answer(
        &self,
        cx: &Ctx<'_>,
        policy: usize,
        key: &TokenHash,
        client: Option<&crate::token::revocation::Identity>,
        outcome: exchange::Outcome,
    ) -> Result<Exchanged, Denial> {
        match self.cfg.policies.get(policy).exchange.as_ref() {
            Some(rule) => on_exchange(cx, rule, key, client, outcome),
            None => Err(Denial::Internal),
        }
    }

    // ---- warm-up: what waits for the first key set ----------------------------------------

    fn jwks_source(&self) -> Option<&JwksSource> {
        match self.cfg.verify.as_ref().map(|v| &v.keys) {
            Some(KeySource::Remote(src)) => Some(src),
            _ => None,
        }
    }

    /// Parks `item` until the keys come; false when it cannot wait (refuse it now).
    fn park(&self, host: &dyn Host, item: Item) -> bool {
        let Some(src) = self.jwks_source() else {
            return false;
        };
        // The fetch starts on the next tick at the latest and takes at most `timeout_ms`.
        let deadline = host
            .now_ms()
            .saturating_add(src.timeout_ms)
            .saturating_add(2 * TICK_MS);
        self.parked
            .try_borrow_mut()
            .is_ok_and(|mut p| p.park(item, deadline))
    }

    /// Once the keys are in, everything parked is decided again; when the first fetch failed,
    /// or an item waited past its deadline, it is refused (502 `jwks_unavailable`).
    fn unpark(&self, host: &dyn Host, io: &dyn Io) {
        let cx = self.cx(host);
        let ready = self.worker.keys.keys().is_some();
        let items = match self.parked.try_borrow_mut() {
            Ok(mut parked) if !parked.is_empty() => {
                if ready || !machine::waits_for_keys(&cx, Denial::KeysUnavailable) {
                    parked.take_all()
                } else {
                    parked.expire(host.now_ms())
                }
            }
            _ => return,
        };
        if items.is_empty() {
            return;
        }
        io.log(
            if ready { Level::Debug } else { Level::Warn },
            format_args!(
                "{} waiting for the key set: {}",
                items.len(),
                if ready {
                    "decided now"
                } else {
                    "refused (no key set)"
                }
            ),
        );
        for item in items {
            match item {
                Item::Request(id) => {
                    if !self.select(io, id) {
                        continue;
                    }
                    if ready {
                        // Decided again from its headers, as its headers callback would have.
                        let parts = io.request();
                        let request = parts.request(false);
                        self.run(host, io, id, Event::KeysReady(&request), true);
                    } else {
                        self.run(host, io, id, Event::KeysFailed, true);
                    }
                }
                Item::Introspection {
                    hash,
                    token,
                    waiters,
                    outcome,
                } => {
                    let answer = if ready {
                        on_introspection(&cx, &hash, outcome)
                    } else {
                        Err(Denial::KeysUnavailable)
                    };
                    self.give_introspection(host, io, &hash, &token, &waiters, &answer);
                }
                Item::Exchange {
                    key,
                    policy,
                    waiters,
                    outcome,
                    client,
                } => {
                    let answer = if ready {
                        self.exchange_answer(&cx, policy, &key, client.as_deref(), outcome)
                    } else {
                        Err(Denial::KeysUnavailable)
                    };
                    self.answer(host, io, &waiters, |_| Event::Exchanged {
                        key: &key,
                        answer: &answer,
                    });
                }
            }
        }
    }

    /// Answers the held requests whose body did not arrive in time.
    fn expire_held(&self, host: &dyn Host, io: &dyn Io) {
        let expired = match self.held.try_borrow_mut() {
            Ok(mut held) => held.expire(host.now_ms()),
            Err(_) => return,
        };
        for e in expired {
            if self.select(io, e.context_id) {
                let event = Event::Expired {
                    never_saw_body: e.never_saw_body,
                };
                self.run(host, io, e.context_id, event, true);
            } else {
                // Gone already: counted all the same.
                let counter = match e.kind {
                    held::Kind::Publish => {
                        crate::reply::Outcome::PublishAnswered(&e.reply).counter()
                    }
                    held::Kind::TokenResponse => {
                        crate::reply::Outcome::TokenResponseRefused.counter()
                    }
                    held::Kind::Revocation => Counter::RevocationRefused,
                };
                host.count(counter);
            }
        }
    }

    // ---- the key set ---------------------------------------------------------------------

    /// Runs the key set schedule; starts a fetch when this worker holds the lease.
    fn jwks_tick(&self, host: &dyn Host, io: &dyn Io) -> Option<u32> {
        let (src, verify) = (self.jwks_source()?, self.cfg.verify.as_ref()?);
        if keys::on_tick(src, &verify.policy, host, &self.worker.keys) != keys::TickAction::Fetch {
            return None;
        }
        let call = Outgoing {
            cluster: &src.cluster,
            headers: vec![
                (":method", "GET"),
                (":path", src.path.as_str()),
                (":authority", src.authority.as_str()),
                ("accept", "application/json, application/jwk-set+json"),
            ],
            body: None,
            timeout_ms: src.timeout_ms,
        };
        match io.dispatch(&call) {
            Ok(call) => Some(call),
            Err(e) => {
                io.log(
                    Level::Warn,
                    format_args!(
                        "JWKS fetch from cluster {} failed to start: {e}",
                        src.cluster
                    ),
                );
                let _ = keys::on_fetched(src, &verify.policy, host, &self.worker.keys, None);
                None
            }
        }
    }

    /// A 200 with a usable JWK Set replaces the keys of every worker; anything else keeps the
    /// last good set.
    fn on_jwks_response(&self, host: &dyn Host, io: &dyn Io, response: &CallResponse) {
        let (Some(src), Some(verify)) = (self.jwks_source(), self.cfg.verify.as_ref()) else {
            return;
        };
        let status = response.status();
        let body = (status.as_deref() == Some("200"))
            .then_some(response.body.as_deref())
            .flatten();
        let keys = &self.worker.keys;
        match keys::on_fetched(src, &verify.policy, host, keys, body) {
            Ok(_) => io.log(
                Level::Info,
                format_args!(
                    "JWKS loaded from {}{}: {}",
                    src.cluster,
                    src.path,
                    keys.keys().map_or_else(String::new, |k| k.describe())
                ),
            ),
            Err(e) => io.log(
                Level::Warn,
                format_args!(
                    "JWKS fetch from {}{} failed (status {}, {} bytes): {e}; keeping the last \
                     good key set",
                    src.cluster,
                    src.path,
                    status.as_deref().unwrap_or("none"),
                    response.body_size,
                ),
            ),
        }
    }
}

/// What the classifiers read of a call's answer. A reset has no headers; Envoy adds
/// `x-envoy-upstream-service-time` to upstream answers only, so a 503 without it is synthesized.
struct Read<'r> {
    status: Option<Cow<'r, str>>,
    content_type: Option<Cow<'r, str>>,
    cache_control: Option<Cow<'r, str>>,
    synthesized: bool,
}

impl<'r> Read<'r> {
    /// Borrowed from the answer's headers (no copy, unless a value is not UTF-8).
    fn of(response: &'r CallResponse) -> Self {
        let header = |name: &str| response.headers.as_ref().and_then(|h| h.text(name));
        Self {
            status: header(":status"),
            content_type: header("content-type"),
            cache_control: header("cache-control"),
            synthesized: introspection::is_synthesized(
                header("x-envoy-upstream-service-time").as_deref(),
            ),
        }
    }

    fn response<'a>(&'a self, body: Option<&'a [u8]>) -> Response<'a> {
        Response {
            status: self.status.as_deref(),
            content_type: self.content_type.as_deref(),
            cache_control: self.cache_control.as_deref(),
            body,
            synthesized: self.synthesized,
        }
    }
}
