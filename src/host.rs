//! What the core needs from the proxy: the clock, shared data (with Envoy's compare-and-swap
//! versions) and counters. The glue implements it over proxy-wasm host calls; tests use a fake
//! with Envoy's shared-data rules and a clock they move. It sits at the bottom of the layers:
//! every layer above may use it, and it uses nothing of theirs but the counter names.

use crate::metrics::Counter;

/// What the core needs from the proxy.
pub trait Host {
    fn now_ms(&self) -> u64;
    /// A shared-data value; `None` when absent or empty.
    fn shared_get(&self, key: &str) -> Option<Vec<u8>>;
    /// A shared-data value and its version (`None`: the key was never written).
    fn shared_get_cas(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes a shared-data value unconditionally; failures are logged by the host.
    fn shared_set(&self, key: &str, value: &[u8]);
    /// Writes a shared-data value if its version is still `cas` (always, when `None`).
    fn shared_set_cas(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasMismatch>;
    fn count(&self, counter: Counter) {
        self.count_by(counter, 1);
    }
    fn count_by(&self, counter: Counter, n: u64);
    /// Counts a request under policy `index` (`policy.<name>.allowed` or `.denied`).
    fn count_policy(&self, _index: usize, _allowed: bool) {}

    /// The split store's epoch: a number every worker of the process reads at once, moved
    /// after every revocation and every re-publication of a stored signature. A worker keeps
    /// its own copy of recent split hits only while the epoch has not moved. `None` when it
    /// cannot be read: then no copy is trusted and every hit reads its slot.
    fn split_epoch(&self) -> Option<u64> {
        None
    }

    /// Moves the split store's epoch: called after the store's slot was written.
    fn bump_split_epoch(&self) {}
}

/// A compare-and-swap write lost: the value changed since it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CasMismatch;
