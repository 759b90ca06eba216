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
    pub fn writes(&self) -> usize {
        self.writes.get()
    }
    /// Runs `f` just before the `n`-th write from now on counts.
    pub fn interfere_at(&self, n: usize, f: impl FnOnce(&FakeHost) + 'static) {
        *self.interfere.borrow_mut() = Some((n, Box::new(f)));
    }
}
