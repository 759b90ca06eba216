//! Test support: a fake [`Host`] with Envoy's shared-data rules and a clock the test moves.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use crate::host::{CasMismatch, Host};
use crate::metrics::Counter;
use crate::pipeline::Worker;

/// A write hook: runs once, just before the n-th write, to play another worker racing.
type Interference = (usize, Box<dyn FnOnce(&FakeHost)>);

/// Shared data as Envoy keeps it: every write gets a new version; a write with a version fails
/// unless that version is current; a write without one always succeeds; an empty value reads
/// as no value, but the key (and its version) stays.
#[derive(Default)]
pub struct FakeHost {
    pub now: Cell<u64>,
    data: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    version: Cell<u32>,
    writes: Cell<usize>,
    reads: Cell<usize>,
    interfere: RefCell<Option<Interference>>,
    counts: RefCell<HashMap<Counter, u32>>,
    /// The split store's epoch (Envoy: a gauge); `None` makes it unreadable.
    pub split_epoch: Cell<Option<u64>>,
    /// The worker state the pipeline is handed beside this host.
    pub worker: Worker,
}

impl Host for FakeHost {
    fn now_ms(&self) -> u64 {
        self.now.get()
    }
    fn shared_get(&self, key: &str) -> Option<Vec<u8>> {
        self.shared_get_cas(key).0
    }
    fn shared_get_cas(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.reads.set(self.reads.get() + 1);
        match self.data.borrow().get(key) {
            Some((v, cas)) => ((!v.is_empty()).then(|| v.clone()), Some(*cas)),
            None => (None, None),
        }
    }
    fn shared_set(&self, key: &str, value: &[u8]) {
        let _ = self.shared_set_cas(key, value, None);
    }
    fn shared_set_cas(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasMismatch> {
        let n = self.writes.get() + 1;
        self.writes.set(n);
        let due = matches!(&*self.interfere.borrow(), Some((at, _)) if *at == n);
        if due {
            let hook = self.interfere.borrow_mut().take();
            if let Some((_, f)) = hook {
                f(self);
            }
        }
        let mut data = self.data.borrow_mut();
        if let (Some(cas), Some((_, current))) = (cas, data.get(key)) {
            if cas != *current {
                return Err(CasMismatch);
            }
        }
        self.version.set(self.version.get() + 1);
        data.insert(key.to_owned(), (value.to_vec(), self.version.get()));
        Ok(())
    }
    fn count_by(&self, counter: Counter, n: u64) {
        *self.counts.borrow_mut().entry(counter).or_default() +=
            u32::try_from(n).unwrap_or(u32::MAX);
    }
    fn split_epoch(&self) -> Option<u64> {
        self.split_epoch.get()
    }
    fn bump_split_epoch(&self) {
        if let Some(e) = self.split_epoch.get() {
            self.split_epoch.set(Some(e + 1));
        }
    }
}

impl FakeHost {
    pub fn at(now: u64) -> Self {
        let h = Self::default();
        h.now.set(now);
        h.split_epoch.set(Some(0));
        h
    }
    pub fn count_of(&self, c: Counter) -> u32 {
        self.counts.borrow().get(&c).copied().unwrap_or(0)
    }
    /// Keys ever written (shared data never forgets one).
    pub fn key_count(&self) -> usize {
        self.data.borrow().len()
    }
    pub fn values(&self) -> Vec<Vec<u8>> {
        self.data
            .borrow()
            .values()
            .map(|(v, _)| v.clone())
            .collect()
    }
    /// The value of `key` as written (an empty value included), if it was ever written.
    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.data.borrow().get(key).map(|(v, _)| v.clone())
    }
    pub fn data_keys(&self) -> Vec<String> {
        self.data.borrow().keys().cloned().collect()
    }
    pub fn remove(&self, key: &str) {
        self.data.borrow_mut().remove(key);
    }
    /// Shared-data reads so far.
    pub fn reads(&self) -> usize {
        self.reads.get()
    }

    pub fn writes(&self) -> usize {
        self.writes.get()
    }
    /// Runs `f` just before the `n`-th write from now on counts.
    pub fn interfere_at(&self, n: usize, f: impl FnOnce(&FakeHost) + 'static) {
        *self.interfere.borrow_mut() = Some((n, Box::new(f)));
    }
}

use crate::header_map::HeaderMap;
use crate::pipeline::io::{Body, CallResponse, Io, Level, Outgoing, RequestParts};
use crate::reply::LocalReply;

/// What the executor did, as the proxy saw it, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Did {
    Set {
        id: u32,
        name: String,
        value: Option<String>,
    },
    RemoveTrailer {
        id: u32,
        name: String,
    },
    SetResponse {
        id: u32,
        name: String,
        value: Option<String>,
    },
    FilterState {
        id: u32,
        name: String,
        value: String,
    },
    Resume(u32),
    ResumeResponse(u32),
    Reply {
        id: u32,
        reply: LocalReply,
    },
    Dispatch {
        from: u32,
        call: u32,
        cluster: String,
        path: String,
        body: String,
    },
    ReplaceBody {
        id: u32,
        body: Vec<u8>,
    },
}

/// A proxy for the executor: the requests it has (a request reset by its client is removed),
/// what their bodies and responses are, the answer the next call response reads, and a record
/// of everything done.
#[derive(Default)]
pub struct FakeIo {
    current: Cell<u32>,
    pub requests: RefCell<HashMap<u32, RequestParts>>,
    pub bodies: RefCell<HashMap<u32, Vec<u8>>>,
    pub responses: RefCell<HashMap<u32, HeaderMap>>,
    /// The answer `call_response` hands over next.
    pub answer: RefCell<CallResponse>,
    pub did: RefCell<Vec<Did>>,
    pub logs: RefCell<Vec<String>>,
    next_call: Cell<u32>,
    /// Calls cannot be made (the cluster is unknown).
    pub refuse_dispatch: Cell<bool>,
    /// Header names the proxy refuses to set.
    pub refuse_set: RefCell<Vec<String>>,
}

impl FakeIo {
    /// A callback of request `id` runs: it is the current request.
    pub fn enter(&self, id: u32) {
        self.current.set(id);
    }

    pub fn current(&self) -> u32 {
        self.current.get()
    }

    /// Everything done, and forgotten.
    pub fn take(&self) -> Vec<Did> {
        std::mem::take(&mut *self.did.borrow_mut())
    }

    /// The calls made so far: (call id, the request it was made from, its body).
    pub fn dispatched(&self) -> Vec<(u32, u32, String)> {
        self.did
            .borrow()
            .iter()
            .filter_map(|d| match d {
                Did::Dispatch {
                    call, from, body, ..
                } => Some((*call, *from, body.clone())),
                _ => None,
            })
            .collect()
    }

    /// The reply request `id` got, if any.
    pub fn reply_of(&self, id: u32) -> Option<LocalReply> {
        self.did.borrow().iter().find_map(|d| match d {
            Did::Reply { id: i, reply } if *i == id => Some(reply.clone()),
            _ => None,
        })
    }

    /// The last value request `id`'s header `name` was set to (`Some(None)`: removed).
    pub fn header_of(&self, id: u32, name: &str) -> Option<Option<String>> {
        self.did.borrow().iter().rev().find_map(|d| match d {
            Did::Set {
                id: i,
                name: n,
                value,
            } if *i == id && n == name => Some(value.clone()),
            _ => None,
        })
    }

    fn record(&self, did: Did) {
        self.did.borrow_mut().push(did);
    }
}

impl Io for FakeIo {
    fn select(&self, id: u32) -> bool {
        if self.requests.borrow().contains_key(&id) {
            self.current.set(id);
            true
        } else {
            false
        }
    }
    fn request(&self) -> RequestParts {
        self.requests
            .borrow()
            .get(&self.current.get())
            .cloned()
            .unwrap_or_default()
    }
    fn set_header(&self, name: &str, value: Option<&str>) -> bool {
        if self.refuse_set.borrow().iter().any(|n| n == name) {
            return false;
        }
        self.record(Did::Set {
            id: self.current(),
            name: name.to_owned(),
            value: value.map(str::to_owned),
        });
        true
    }
    fn set_response_header(&self, name: &str, value: Option<&str>) {
        self.record(Did::SetResponse {
            id: self.current(),
            name: name.to_owned(),
            value: value.map(str::to_owned),
        });
    }
    fn remove_trailer(&self, name: &str) {
        self.record(Did::RemoveTrailer {
            id: self.current(),
            name: name.to_owned(),
        });
    }
    fn set_filter_state(&self, name: &str, value: &[u8]) {
        self.record(Did::FilterState {
            id: self.current(),
            name: name.to_owned(),
            value: String::from_utf8_lossy(value).into_owned(),
        });
    }
    fn resume_request(&self) {
        self.record(Did::Resume(self.current()));
    }
    fn resume_response(&self) {
        self.record(Did::ResumeResponse(self.current()));
    }
    fn reply(&self, reply: &LocalReply) {
        self.record(Did::Reply {
            id: self.current(),
            reply: reply.clone(),
        });
    }
    fn read_body(&self, _body: Body, size: usize) -> Vec<u8> {
        let bodies = self.bodies.borrow();
        let body = bodies.get(&self.current()).cloned().unwrap_or_default();
        body.get(..size).map(<[u8]>::to_vec).unwrap_or(body)
    }
    fn response_headers(&self) -> HeaderMap {
        self.responses
            .borrow()
            .get(&self.current())
            .cloned()
            .unwrap_or_default()
    }
    fn replace_response_body(&self, _size: usize, body: &[u8]) -> bool {
        self.record(Did::ReplaceBody {
            id: self.current(),
            body: body.to_vec(),
        });
        true
    }
    fn dispatch(&self, call: &Outgoing<'_>) -> Result<u32, String> {
        if self.refuse_dispatch.get() {
            return Err("BadArgument".to_owned());
        }
        let id = self.next_call.get() + 1;
        self.next_call.set(id);
        let path = call
            .headers
            .iter()
            .find(|(k, _)| *k == ":path")
            .map_or("", |(_, v)| v)
            .to_owned();
        self.record(Did::Dispatch {
            from: self.current(),
            call: id,
            cluster: call.cluster.to_owned(),
            path,
            body: String::from_utf8_lossy(call.body.unwrap_or_default()).into_owned(),
        });
        Ok(id)
    }
    fn call_response(&self, _num_headers: usize, _body_size: usize, max: usize) -> CallResponse {
        let mut answer = self.answer.borrow().clone();
        if answer.body.as_ref().is_some_and(|b| b.len() > max) {
            answer.body = None;
        }
        answer
    }
    fn log(&self, level: Level, message: std::fmt::Arguments<'_>) {
        self.logs.borrow_mut().push(format!("{level:?} {message}"));
    }
}

/// A call's answer: `status` and `content_type` headers (with Envoy's upstream header), and a
/// body.
pub fn answer(status: &str, content_type: &str, body: &[u8]) -> CallResponse {
    CallResponse {
        headers: Some(HeaderMap::from_pairs(&[
            (":status", status),
            ("content-type", content_type),
            ("x-envoy-upstream-service-time", "1"),
        ])),
        body: Some(body.to_vec()),
        body_size: body.len(),
    }
}
