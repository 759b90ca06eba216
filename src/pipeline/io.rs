//! What the executor needs of the proxy to carry actions out, beside [`crate::host::Host`]'s
//! clock, shared data and counters: acting on requests and responses (header edits, replies,
//! bodies, resuming), making calls and reading their answers, and logging. The glue implements
//! it over proxy-wasm host calls; tests implement it with a recorder, so that whole requests
//! run natively, event by event.

use crate::header_map::HeaderMap;
use crate::reply::LocalReply;

use super::Request;

/// How loud a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

/// Which body a held request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// The request's (the publish API).
    Request,
    /// The response's (a token endpoint's answer).
    Response,
}

/// A call to make (`dispatch_http_call`): where, what, for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing<'a> {
    pub cluster: &'a str,
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: Option<&'a [u8]>,
    pub timeout_ms: u64,
}

/// A call's answer as the proxy hands it over. A failed call arrives as a synthesized 503
/// (connect), a 504 (timeout), or an answer with no headers at all (reset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallResponse {
    /// `None`: no headers at all (the call was reset).
    pub headers: Option<HeaderMap>,
    /// `None`: larger than the reader's bound, not read.
    pub body: Option<Vec<u8>>,
    pub body_size: usize,
}

impl CallResponse {
    pub fn status(&self) -> Option<String> {
        self.headers.as_ref()?.get(":status")
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.as_ref()?.get(name)
    }
}

/// What a request is, as the proxy says: its headers, and what the pipeline reads of its route
/// and connection (read by the glue only when the configuration needs it).
#[derive(Debug, Clone, Default)]
pub struct RequestParts {
    pub headers: HeaderMap,
    pub route_name: Option<String>,
    pub route_policy: Option<String>,
    pub client_cert: Option<String>,
    /// The connection is TLS (read for DPoP requests, whose proof's `htu` it decides).
    pub secure: bool,
}

impl RequestParts {
    pub fn request(&self, end_of_stream: bool) -> Request<'_> {
        Request {
            headers: &self.headers,
            end_of_stream,
            route_name: self.route_name.as_deref(),
            route_policy: self.route_policy.as_deref(),
            client_cert_sha256: self.client_cert.as_deref(),
            secure: self.secure,
        }
    }
}

/// The proxy, as the executor acts on it. Every method acts on the current request (the one
/// whose callback runs, or the one [`Io::select`] made current).
pub trait Io {
    /// Makes request `id` the current one (a waiter answered from another request's callback,
    /// a parked request woken by the timer). False when it is gone (a client reset).
    fn select(&self, id: u32) -> bool;
    /// The current request, read again (a parked request is decided again from its headers).
    fn request(&self) -> RequestParts;
    /// Sets (`Some`) or removes (`None`) a request header; false when the proxy refused.
    fn set_header(&self, name: &str, value: Option<&str>) -> bool;
    /// Removes a request trailer.
    fn remove_trailer(&self, name: &str);
    /// Sets (or removes) a response header of the current request (the default does nothing:
    /// for stand-ins that never see responses).
    fn set_response_header(&self, _name: &str, _value: Option<&str>) {}
    /// Sets filter state `wasm.<name>` for the current request.
    fn set_filter_state(&self, name: &str, value: &[u8]);
    /// Lets a paused request go on.
    fn resume_request(&self);
    /// Lets a paused response go on.
    fn resume_response(&self);
    /// Answers the current request with a local reply.
    fn reply(&self, reply: &LocalReply);
    /// The current request's or response's body, whole (`size` bytes).
    fn read_body(&self, body: Body, size: usize) -> Vec<u8>;
    /// The current response's headers.
    fn response_headers(&self) -> HeaderMap;
    /// Replaces the current response's body (`size` bytes) and its `Content-Length`; false
    /// when the proxy refused.
    fn replace_response_body(&self, size: usize, body: &[u8]) -> bool;
    /// Starts a call from the current request (or the root); its answer comes back with the
    /// returned id.
    fn dispatch(&self, call: &Outgoing<'_>) -> Result<u32, String>;
    /// The answer of the call whose response callback runs: its headers and at most `max`
    /// bytes of body.
    fn call_response(&self, num_headers: usize, body_size: usize, max: usize) -> CallResponse;
    /// Logs a line (formatted only when the level is shown).
    fn log(&self, level: Level, message: std::fmt::Arguments<'_>);
    /// Whether lines of `level` are shown (what a line costs to make is only paid then).
    fn enabled(&self, _level: Level) -> bool {
        true
    }
}
