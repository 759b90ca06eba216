//! Fixed key spaces in shared data. Shared data cannot delete a key and has no TTL, so every
//! store is a fixed table of slots, and a write that must not lose a race is a compare-and-swap
//! on its slot. Envoy's compare-and-swap only protects a key that exists (a write without a
//! version always succeeds), so a table's slots are created, empty, when the configuration
//! loads, before any request can write: here, for every table (the split store, the DPoP replay
//! store and its key shares).

use crate::host::Host;

/// Creates the slots `0..count` of a table (`key` names slot `i`) that do not exist yet,
/// empty. Returns how many it created. Slots are created in order, so when the last one exists
/// they all do (a reload, another worker) and nothing is read but it.
pub fn create(host: &dyn Host, count: u32, key: impl Fn(u32) -> String) -> u32 {
    if count == 0 || host.shared_get_cas(&key(count - 1)).1.is_some() {
        return 0;
    }
    let mut created = 0;
    for slot in 0..count {
        let name = key(slot);
        if host.shared_get_cas(&name).1.is_none() {
            let _ = host.shared_set_cas(&name, &[], None);
            created += 1;
        }
    }
    created
}

/// A random 32-byte secret shared by every worker under `name`: made by the first worker that
/// needs it (`random`), then read by all. Two workers making one at once both write, and both
/// read back the one that stayed.
pub fn shared_secret(
    host: &dyn Host,
    name: &str,
    random: impl FnOnce() -> [u8; 32],
) -> Option<[u8; 32]> {
    if let Some(v) = host.shared_get(name) {
        return v.try_into().ok();
    }
    let _ = host.shared_set_cas(name, &random(), None);
    host.shared_get(name).and_then(|v| v.try_into().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeHost;

    #[test]
    fn creates_what_is_missing_once() {
        let host = FakeHost::at(0);
        let key = |i: u32| format!("t:{i}");
        assert_eq!(create(&host, 4, key), 4);
        assert_eq!(host.key_count(), 4);
        assert_eq!(create(&host, 4, key), 0, "all there");
        assert_eq!(create(&host, 6, key), 2, "a larger table adds the rest");
        assert!(host.value("t:5").unwrap().is_empty());
        assert_eq!(create(&host, 0, key), 0);
    }
}
