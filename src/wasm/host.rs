//! One plugin configuration on one worker ([`Plugin`]): the core's [`Host`] and [`Io`] over
//! proxy-wasm host calls, the counters and the logs. Host calls that can fail return `Result`
//! and failures are handled: a panic would trap the VM and take the worker's filter down.

use std::cell::Cell;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType, Status};

use crate::header_map::HeaderMap;
use crate::host::{CasMismatch, Host};
use crate::metrics::Counter;
use crate::pipeline::io::{Body, CallResponse, Io, Level, Outgoing, RequestParts};
use crate::pipeline::Executor;
use crate::reply::LocalReply;

use super::headers;

pub fn log(level: LogLevel, message: &str) {
    // Nothing sensible to do if logging itself fails.
    let _ = hostcalls::log(level, message);
}

/// A counter Envoy would not define.
#[derive(Debug, thiserror::Error)]
#[error("cannot define metric {name}: {status:?}")]
pub struct MetricError {
    name: String,
    status: Status,
}

/// Metric ids, defined once per VM and plugin, and the increments not yet handed to Envoy: the
/// counters of [`Counter`], then `policy.<name>.allowed` and `.denied` for each policy.
///
/// A metric increment is a host call that costs about as much as the rest of a cache hit
/// (BENCHMARKS.md), so counts are added up in the VM and flushed on the root context's timer
/// (every 200 ms): Envoy's counters lag by at most that.
pub struct Metrics {
    ids: Vec<u32>,
    pending: Vec<Cell<u64>>,
    /// The split store's epoch: a gauge, one value for every worker of the process (Envoy's
    /// stats are not per worker), read without the proxy allocating anything in the VM.
    split_epoch: Option<u32>,
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_metric(metric_id: u32, return_value: *mut u64) -> u32;
}

impl Metrics {
    /// `policies`: the names of the policies, in index order (the default last);
    /// `split_epoch`: the name of the split store's epoch gauge, with a split store.
    pub fn define(policies: &[&str], split_epoch: Option<String>) -> Result<Self, MetricError> {
        let split_epoch = match split_epoch {
            Some(name) => Some(
                hostcalls::define_metric(MetricType::Gauge, &name)
                    .map_err(|status| MetricError { name, status })?,
            ),
            None => None,
        };
        let mut names: Vec<String> = Counter::ALL.iter().map(|c| c.name().to_owned()).collect();
        for policy in policies {
            names.push(format!("token_filter.policy.{policy}.allowed"));
            names.push(format!("token_filter.policy.{policy}.denied"));
        }
        let mut ids = Vec::with_capacity(names.len());
        for name in names {
            ids.push(
                hostcalls::define_metric(MetricType::Counter, &name)
                    .map_err(|status| MetricError { name, status })?,
            );
        }
        Ok(Self {
            pending: ids.iter().map(|_| Cell::new(0)).collect(),
            ids,
            split_epoch,
        })
    }

    pub fn count_by(&self, counter: Counter, by: u64) {
        self.bump(counter.index(), by);
    }

    /// Counts a request under policy `index`, forwarded or refused.
    pub fn count_policy(&self, index: usize, allowed: bool) {
        let offset = Counter::ALL.len() + 2 * index + usize::from(!allowed);
        self.bump(offset, 1);
    }

    fn bump(&self, index: usize, by: u64) {
        if let Some(n) = self.pending.get(index) {
            n.set(n.get().saturating_add(by));
        }
    }

    /// The split store's epoch; `None` when there is none or Envoy would not say.
    pub fn split_epoch(&self) -> Option<u64> {
        let id = self.split_epoch?;
        let mut value = 0u64;
        // SAFETY: `value` is ours and outlives the call. The status is read as a number: the
        // SDK's getter panics on one it does not expect.
        let status = unsafe { proxy_get_metric(id, &mut value) };
        (status == 0).then_some(value)
    }

    /// Moves the split store's epoch, at once (never batched like the counters).
    pub fn bump_split_epoch(&self) {
        if let Some(id) = self.split_epoch {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    /// Hands the pending increments to Envoy.
    pub fn flush(&self) {
        for (id, n) in self.ids.iter().zip(&self.pending) {
            let value = n.replace(0);
            if value > 0 {
                let _ = hostcalls::increment_metric(*id, i64::try_from(value).unwrap_or(i64::MAX));
            }
        }
    }
}

/// One plugin configuration on one worker, shared by the root context and its HTTP contexts:
/// the executor (the configuration, the worker's state, every paused request) and the proxy it
/// acts on, as the core's [`Host`] and [`Io`].
pub struct Plugin {
    pub executor: Executor,
    pub metrics: Metrics,
    /// Whether Envoy logs the filter at debug level (read on every timer tick): debug lines
    /// are neither formatted nor sent otherwise.
    pub debug_logs: Cell<bool>,
    /// The clock, read once per callback: every stage of one callback sees the same time, and
    /// a stage that reads it costs no host call when another already did.
    pub clock: Cell<Option<u64>>,
}

impl Plugin {
    /// A proxy callback begins: the clock is read again when first needed.
    pub fn begin(&self) {
        self.clock.set(None);
    }
}

impl Host for Plugin {
    fn now_ms(&self) -> u64 {
        if let Some(now) = self.clock.get() {
            return now;
        }
        // A clock failure makes every entry look expired and nothing cacheable: fail closed.
        let now = hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .and_then(|d| u64::try_from(d.as_millis()).ok())
            .unwrap_or(u64::MAX);
        self.clock.set(Some(now));
        now
    }

    fn shared_get(&self, key: &str) -> Option<Vec<u8>> {
        match hostcalls::get_shared_data(key) {
            Ok((value, _cas)) => value,
            Err(_) => None,
        }
    }

    fn shared_get_cas(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn shared_set_cas(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasMismatch> {
        hostcalls::set_shared_data(key, Some(value), cas).map_err(|_| CasMismatch)
    }

    fn shared_set(&self, key: &str, value: &[u8]) {
        if let Err(s) = hostcalls::set_shared_data(key, Some(value), None) {
            log(LogLevel::Warn, &format!("cache write failed: {s:?}"));
        }
    }

    fn count_by(&self, counter: Counter, n: u64) {
        self.metrics.count_by(counter, n);
    }
    fn count_policy(&self, index: usize, allowed: bool) {
        self.metrics.count_policy(index, allowed);
    }
    fn split_epoch(&self) -> Option<u64> {
        self.metrics.split_epoch()
    }
    fn bump_split_epoch(&self) {
        self.metrics.bump_split_epoch();
    }
}

impl Io for Plugin {
    fn select(&self, id: u32) -> bool {
        hostcalls::set_effective_context(id).is_ok()
    }

    fn request(&self) -> RequestParts {
        headers::request_parts(&self.executor.cfg)
    }

    fn set_header(&self, name: &str, value: Option<&str>) -> bool {
        hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value).is_ok()
    }

    fn set_response_header(&self, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, value);
    }

    fn remove_trailer(&self, name: &str) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestTrailers, name, None);
    }

    fn set_filter_state(&self, name: &str, value: &[u8]) {
        headers::set_filter_state(name, value);
    }

    fn resume_request(&self) {
        if let Err(s) = hostcalls::resume_http_request() {
            log(LogLevel::Debug, &format!("resume failed: {s:?}"));
        }
    }

    fn resume_response(&self) {
        let _ = hostcalls::resume_http_response();
    }

    fn reply(&self, r: &LocalReply) {
        let headers: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let body = (!r.body.is_empty()).then_some(r.body.as_slice());
        if let Err(s) = hostcalls::send_http_response(r.status, headers, body) {
            log(LogLevel::Debug, &format!("local reply failed: {s:?}"));
        }
    }

    fn read_body(&self, body: Body, size: usize) -> Vec<u8> {
        let buffer = match body {
            Body::Request => BufferType::HttpRequestBody,
            Body::Response => BufferType::HttpResponseBody,
        };
        // The size was checked against the body's bound before it is read.
        headers::read_body(buffer, size, usize::MAX).unwrap_or_default()
    }

    fn response_headers(&self) -> HeaderMap {
        headers::read(MapType::HttpResponseHeaders)
    }

    fn replace_response_body(&self, size: usize, body: &[u8]) -> bool {
        let replaced = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, size, body);
        let resized = if self.response_headers().contains("content-length") {
            let length = body.len().to_string();
            hostcalls::set_map_value(
                MapType::HttpResponseHeaders,
                "content-length",
                Some(&length),
            )
        } else {
            Ok(())
        };
        replaced.is_ok() && resized.is_ok()
    }

    fn dispatch(&self, call: &Outgoing<'_>) -> Result<u32, String> {
        hostcalls::dispatch_http_call(
            call.cluster,
            call.headers.clone(),
            call.body,
            vec![],
            Duration::from_millis(call.timeout_ms),
        )
        .map_err(|status| format!("{status:?}"))
    }

    fn call_response(&self, num_headers: usize, body_size: usize, max: usize) -> CallResponse {
        // One host call for all headers (Envoy hands their names lower-cased); none at all is
        // a reset.
        CallResponse {
            headers: (num_headers > 0).then(|| headers::read(MapType::HttpCallResponseHeaders)),
            body: headers::read_body(BufferType::HttpCallResponseBody, body_size, max),
            body_size,
        }
    }

    fn enabled(&self, level: Level) -> bool {
        level != Level::Debug || self.debug_logs.get()
    }

    fn log(&self, level: Level, message: std::fmt::Arguments<'_>) {
        if !self.enabled(level) {
            return;
        }
        let level = match level {
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
            Level::Critical => LogLevel::Critical,
        };
        log(level, &message.to_string());
    }
}

impl Plugin {
    /// Reads Envoy's current log level for the filter.
    pub fn refresh_log_level(&self) {
        let level = hostcalls::get_log_level().unwrap_or(LogLevel::Trace);
        self.debug_logs
            .set(matches!(level, LogLevel::Trace | LogLevel::Debug));
    }
}
