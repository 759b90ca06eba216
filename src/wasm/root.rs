//! Root context: parses and validates the configuration (fail closed), defines the counters,
//! creates the split token store, and re-dispatches orphaned introspections on its tick.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel};

use crate::config::{Config, KeySource};
use crate::storage::held::Held;
use crate::storage::inflight::InFlight;
use crate::storage::keys::{self, KeyState};
use crate::storage::local::LocalCache;
use crate::token::jws::KeySet;

use super::host::{log, Metrics, Shared};
use super::http::Http;

/// How often the root looks for introspections orphaned by a client reset, and for held
/// requests past their deadline.
const TICK: Duration = Duration::from_millis(200);

pub struct Root {
    context_id: u32,
    shared: Option<Rc<Shared>>,
    /// The JWKS fetch this root started, if one is in flight.
    jwks_call: Option<u32>,
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        Self {
            context_id,
            shared: None,
            jwks_call: None,
        }
    }

    fn configure(&self) -> Result<Rc<Shared>, String> {
        let bytes = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .map_err(|s| format!("cannot read configuration: {s:?}"))?
            .unwrap_or_default();
        let cfg = Config::from_slice(&bytes).map_err(|e| format!("invalid configuration: {e}"))?;
        let metrics = Metrics::define()?;
        log(
            LogLevel::Info,
            &format!("#{} configured: {}", self.context_id, cfg.summary()),
        );
        let inline = shared_keys(&cfg);
        let shared = Rc::new(Shared {
            root_id: self.context_id,
            cfg,
            metrics,
            inflight: RefCell::new(InFlight::default()),
            held: RefCell::new(Held::default()),
            keys: match inline {
                Some(keys) => KeyState::with_keys(keys),
                None => KeyState::default(),
            },
            local: LocalCache::default(),
            debug_logs: Cell::new(true),
        });
        if let Some(src) = shared.jwks_source() {
            keys::initialize(src, shared.as_ref());
        }
        if let Some(split) = &shared.cfg.split {
            // Before any request: creates the store's slots so every write can be a
            // compare-and-swap.
            if split.store.initialize(shared.as_ref()) {
                log(
                    LogLevel::Info,
                    &format!(
                        "#{} split token store created: {} slots",
                        self.context_id, split.max_entries
                    ),
                );
            }
        }
        Ok(shared)
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
        let Some(shared) = &self.shared else { return };
        if self.jwks_call == Some(call) {
            self.jwks_call = None;
            shared.on_jwks_response(self.context_id, num_headers, body_size);
        } else {
            shared.on_call_response(self.context_id, call, num_headers, body_size);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        match self.configure() {
            Ok(shared) => {
                shared.refresh_log_level();
                self.shared = Some(shared);
                if let Err(s) = hostcalls::set_tick_period(TICK) {
                    log(LogLevel::Warn, &format!("cannot set tick period: {s:?}"));
                }
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
        let Some(shared) = self.shared.clone() else {
            return;
        };
        shared.metrics.flush();
        shared.refresh_log_level();
        if self.jwks_call.is_none() {
            self.jwks_call = shared.jwks_tick(self.context_id);
        }
        shared.expire_held();
        let orphans = shared.inflight.borrow().orphans();
        for (hash, token) in orphans {
            match shared.dispatch(&token) {
                Ok(call) => shared
                    .inflight
                    .borrow_mut()
                    .started(&hash, shared.root_id, call),
                Err(e) => {
                    log(LogLevel::Warn, &format!("#{} {e}", self.context_id));
                    shared.abandon(self.context_id, &hash);
                }
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http::new(context_id, self.shared.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Inline verification keys, fixed by the configuration.
fn shared_keys(cfg: &Config) -> Option<Rc<KeySet>> {
    match cfg.verify.as_ref().map(|v| &v.keys) {
        Some(KeySource::Inline(keys)) => Some(keys.clone()),
        _ => None,
    }
}
