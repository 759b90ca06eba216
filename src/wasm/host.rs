//! One plugin configuration on one worker ([`Plugin`]): the core's [`Host`] over proxy-wasm
//! host calls, the counters and the logs. Host calls that can fail return `Result` and
//! failures are handled: a panic would trap the VM and take the worker's filter down.

use std::cell::{Cell, RefCell};
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MetricType, Status};

use crate::config::Config;
use crate::host::{CasMismatch, Host};
use crate::metrics::Counter;
use crate::pipeline::Worker;
use crate::storage::held::Held;
use crate::storage::inflight::InFlight;
use crate::storage::parked::Parked;

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

/// One plugin configuration on one worker, shared by the root context and its HTTP contexts.
pub struct Plugin {
    pub root_id: u32,
    pub cfg: Config,
    /// This worker's own state, handed to the pipeline.
    pub worker: Worker,
    pub metrics: Metrics,
    pub inflight: RefCell<InFlight>,
    /// What waits for the first key set (warm-up).
    pub parked: RefCell<Parked>,
    /// Requests held for a body (publish requests, token responses), with deadlines.
    pub held: RefCell<Held>,
    /// Whether Envoy logs the filter at debug level (read on every timer tick): debug lines
    /// are neither formatted nor sent otherwise.
    pub debug_logs: Cell<bool>,
    /// Route metadata policy names this worker found unknown and logged (each once; bounded).
    pub unknown_policies: RefCell<Vec<String>>,
}

impl Host for Plugin {
    fn now_ms(&self) -> u64 {
        // A clock failure makes every entry look expired and nothing cacheable: fail closed.
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .and_then(|d| u64::try_from(d.as_millis()).ok())
            .unwrap_or(u64::MAX)
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
    fn split_epoch(&self) -> Option<u64> {
        self.metrics.split_epoch()
    }
    fn bump_split_epoch(&self) {
        self.metrics.bump_split_epoch();
    }
}

impl Plugin {
    /// Logs, once per worker, a route metadata policy name the configuration lacks.
    pub fn log_unknown_policy(&self, context_id: u32, name: &str) {
        let Ok(mut seen) = self.unknown_policies.try_borrow_mut() else {
            return;
        };
        if seen.len() >= 64 || seen.iter().any(|n| n == name) {
            return;
        }
        seen.push(name.to_owned());
        log(
            LogLevel::Error,
            &format!(
                "#{context_id} route metadata names policy {name:?}, which the configuration \
                 does not define: requests on that route are refused with 500"
            ),
        );
    }

    /// Reads Envoy's current log level for the filter.
    pub fn refresh_log_level(&self) {
        let level = hostcalls::get_log_level().unwrap_or(LogLevel::Trace);
        self.debug_logs
            .set(matches!(level, LogLevel::Trace | LogLevel::Debug));
    }
}
