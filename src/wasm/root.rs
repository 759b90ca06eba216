//! Root context: parses and validates the configuration (fail closed), defines the counters,
//! creates the stores' slots, and on its timer flushes counters and hands the tick to the
//! executor (the key set schedule, held and parked requests, orphaned calls).

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel, Status};

use crate::config::{Config, ConfigError};
use crate::pipeline::executor::{FIRST_TICK_MS, TICK_MS};
use crate::pipeline::Executor;

use super::host::{log, MetricError, Metrics, Plugin};
use super::http::Http;

const TICK: Duration = Duration::from_millis(TICK_MS);
const FIRST_TICK: Duration = Duration::from_millis(FIRST_TICK_MS);

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
enum ConfigureError {
    #[error("cannot read configuration: {0:?}")]
    Read(Status),
    #[error("invalid configuration: {0}")]
    Invalid(#[from] ConfigError),
    #[error(transparent)]
    Metric(#[from] MetricError),
}

pub struct Root {
    context_id: u32,
    plugin: Option<Rc<Plugin>>,
    /// Whether the first (early) tick came.
    ticked: bool,
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        Self {
            context_id,
            plugin: None,
            ticked: false,
        }
    }

    fn configure(&self) -> Result<Rc<Plugin>, ConfigureError> {
        let bytes = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .map_err(ConfigureError::Read)?
            .unwrap_or_default();
        let cfg = Config::from_slice(&bytes)?;
        let policy_names: Vec<&str> = cfg.policies.all().map(|(_, p)| p.name.as_str()).collect();
        // One epoch per store: the store's key prefix names it (see `storage::split_store`).
        let split_epoch = cfg
            .split
            .as_ref()
            .map(|s| format!("token_filter.split_epoch.st{}", s.max_entries.max(1)));
        let metrics = Metrics::define(&policy_names, split_epoch)?;
        log(
            LogLevel::Info,
            &format!("#{} configured: {}", self.context_id, cfg.summary()),
        );
        let plugin = Rc::new(Plugin {
            executor: Executor::new(cfg),
            metrics,
            debug_logs: Cell::new(true),
            clock: Cell::new(None),
        });
        let p = plugin.as_ref();
        p.executor.start(p, p, self.context_id);
        Ok(plugin)
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        call: u32,
        num_headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let Some(plugin) = &self.plugin else { return };
        let p = plugin.as_ref();
        p.begin();
        p.executor
            .on_call_response(p, p, self.context_id, call, num_headers, body_size);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        match self.configure() {
            Ok(plugin) => {
                plugin.refresh_log_level();
                // The first tick comes soon: it starts the first key set fetch, which requests
                // that need keys wait for (warm-up). (A call made from `on_configure` itself
                // may never be answered: clusters are not ready yet.)
                if let Err(s) = hostcalls::set_tick_period(FIRST_TICK) {
                    log(LogLevel::Warn, &format!("cannot set tick period: {s:?}"));
                }
                self.plugin = Some(plugin);
                true
            }
            Err(e) => {
                // Envoy refuses the filter: no request passes unauthenticated.
                log(LogLevel::Critical, &format!("#{} {e}", self.context_id));
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let Some(plugin) = self.plugin.clone() else {
            return;
        };
        if !self.ticked {
            self.ticked = true;
            if let Err(s) = hostcalls::set_tick_period(TICK) {
                log(LogLevel::Warn, &format!("cannot set tick period: {s:?}"));
            }
        }
        plugin.metrics.flush();
        plugin.refresh_log_level();
        let p = plugin.as_ref();
        p.begin();
        p.executor.on_tick(p, p, self.context_id);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http::new(context_id, self.plugin.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
