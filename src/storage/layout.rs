//! Which table sizes a fixed store lives under. A store whose slot keys do not name a size is
//! shared by every configuration of the VM, whatever its size (a reload to another size keeps
//! every entry, and creates only the missing slots); where an entry lives depends on a size,
//! so the sizes in use are listed in one record, each until the entries written under it no
//! longer matter. Readers look under every live size; writers write under the largest. Used by
//! the DPoP replay store (`dp:layout`) and the revocation marks (`rvm:layout`).

use crate::host::Host;

/// Sizes listed in a layout record, at most.
const MAX_LAYOUTS: usize = 8;
const MAX_ATTEMPTS: usize = 16;

/// The sizes in use, each with the time until which it may hold a live entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layout {
    pub sizes: Vec<(u32, u64)>,
}

/// Where a store's layout is kept: its shared-data key and the record's magic.
#[derive(Debug, Clone, Copy)]
pub struct LayoutRecord {
    pub key: &'static str,
    pub magic: &'static str,
}

impl Layout {
    fn decode(magic: &str, value: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(value).ok()?;
        let mut parts = text.split(' ');
        if parts.next()? != magic {
            return None;
        }
        let mut sizes = Vec::new();
        for part in parts.take(MAX_LAYOUTS) {
            let (size, until) = part.split_once('@')?;
            sizes.push((size.parse().ok().filter(|n| *n > 0)?, until.parse().ok()?));
        }
        Some(Self { sizes })
    }

    fn encode(&self, magic: &str) -> Vec<u8> {
        let mut out = magic.to_owned();
        for (size, until) in &self.sizes {
            out.push_str(&format!(" {size}@{until}"));
        }
        out.into_bytes()
    }

    /// The sizes still live at `now_ms`.
    pub fn live(&self, now_ms: u64) -> impl Iterator<Item = u32> + '_ {
        self.sizes
            .iter()
            .filter(move |(_, until)| *until > now_ms)
            .map(|(size, _)| *size)
    }

    /// Where a configuration of `own` size inserts: the largest live size, its own included.
    pub fn target(&self, own: u32, now_ms: u64) -> u32 {
        self.live(now_ms).fold(own, u32::max)
    }

    /// Until when `size` is listed.
    pub fn until(&self, size: u32) -> Option<u64> {
        self.sizes.iter().find(|(s, _)| *s == size).map(|(_, u)| *u)
    }

    /// The layout with `sizes` live until at least `until_ms` (and the expired ones dropped).
    pub fn with(&self, sizes: &[u32], until_ms: u64, now_ms: u64) -> Self {
        let mut out: Vec<(u32, u64)> = self
            .sizes
            .iter()
            .copied()
            .filter(|(_, until)| *until > now_ms)
            .collect();
        for size in sizes {
            match out.iter_mut().find(|(s, _)| s == size) {
                Some((_, until)) => *until = (*until).max(until_ms),
                None => out.push((*size, until_ms)),
            }
        }
        // The largest sizes matter most (entries are written there); the list stays bounded.
        out.sort_by_key(|s| std::cmp::Reverse(s.0));
        out.truncate(MAX_LAYOUTS);
        Self { sizes: out }
    }
}

impl LayoutRecord {
    /// The layout in force (empty when there is none).
    pub fn load(&self, host: &dyn Host) -> Layout {
        host.shared_get(self.key)
            .as_deref()
            .and_then(|v| Layout::decode(self.magic, v))
            .unwrap_or_default()
    }

    /// Lists `sizes` as live until at least `until_ms` (a compare-and-swap, retried).
    pub fn list(&self, host: &dyn Host, sizes: &[u32], until_ms: u64, now_ms: u64) -> Layout {
        for _ in 0..MAX_ATTEMPTS {
            let (value, cas) = host.shared_get_cas(self.key);
            let layout = value
                .as_deref()
                .and_then(|v| Layout::decode(self.magic, v))
                .unwrap_or_default();
            if sizes
                .iter()
                .all(|s| layout.until(*s).is_some_and(|u| u >= until_ms))
            {
                return layout;
            }
            let next = layout.with(sizes, until_ms, now_ms);
            if host
                .shared_set_cas(self.key, &next.encode(self.magic), cas)
                .is_ok()
            {
                return next;
            }
        }
        self.load(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeHost;

    const RECORD: LayoutRecord = LayoutRecord {
        key: "t:layout",
        magic: "tl1",
    };

    #[test]
    fn round_trips_and_refuses_foreign_records() {
        let round = Layout::default().with(&[5, 7], 10, 0);
        assert_eq!(
            Layout::decode("tl1", &round.encode("tl1")),
            Some(round.clone())
        );
        assert_eq!(round.target(1, 0), 7);
        assert_eq!(round.target(1, 10), 1, "expired sizes are not live");
        assert_eq!(Layout::decode("tl1", b"tl1 0@5"), None);
        assert_eq!(Layout::decode("tl1", b"xx 5@5"), None);
        assert_eq!(Layout::decode("xx", &round.encode("tl1")), None);
    }

    #[test]
    fn lists_sizes_and_keeps_the_longest_until() {
        let host = FakeHost::at(0);
        RECORD.list(&host, &[4], 100, 0);
        RECORD.list(&host, &[8], 50, 0);
        RECORD.list(&host, &[4], 20, 0);
        let layout = RECORD.load(&host);
        assert_eq!(layout.until(4), Some(100));
        assert_eq!(layout.until(8), Some(50));
        assert_eq!(layout.target(4, 60), 4, "8 is over at 50");
    }
}
