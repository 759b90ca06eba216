//! A header map as the proxy hands it over in one piece (proxy-wasm `get_header_map_pairs`):
//! a little-endian `u32` count, then a (name length, value length) pair of `u32`s per header,
//! then every name and value, each followed by a NUL byte.
//!
//! Reading the whole map once costs the same as reading one header (what costs is the proxy
//! allocating the answer inside the VM, not its size), so the filter reads every request's
//! headers this way and looks names up here. Nothing here trusts the lengths: a map that does
//! not parse ends the walk, it never panics.

use std::borrow::Cow;

/// A serialized header map, owned: what the glue reads with one host call, and what the
/// pipeline looks names up in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMap(Vec<u8>);

impl HeaderMap {
    /// A map as the proxy serialized it.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// A map of these (name, value) pairs (tests, and requests the filter builds).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        let pairs: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        Self(serialize(&pairs))
    }

    /// Header `name` (lowercase) as text. Values are bytes: a value with obs-text bytes, which
    /// HTTP allows and Envoy passes on, must never trap the VM (the SDK's string getters unwrap
    /// `String::from_utf8`). Invalid UTF-8 becomes U+FFFD, which no grammar the filter checks
    /// accepts (an `Authorization` with it is malformed: 400).
    pub fn get(&self, name: &str) -> Option<String> {
        get(&self.0, name).map(|v| match String::from_utf8(v.into_owned()) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// Header `name` as text, borrowed from the map when it can be (valid UTF-8, one value):
    /// what the request path reads, with no copy. Invalid UTF-8 becomes U+FFFD, as in
    /// [`Self::get`].
    pub fn text(&self, name: &str) -> Option<Cow<'_, str>> {
        Some(match get(&self.0, name)? {
            // Valid UTF-8 (nearly always) is checked with the fast validator and borrowed.
            Cow::Borrowed(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => Cow::Borrowed(text),
                Err(_) => String::from_utf8_lossy(bytes),
            },
            Cow::Owned(bytes) => Cow::Owned(match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
            }),
        })
    }

    /// How many times header `name` is present.
    pub fn count(&self, name: &str) -> usize {
        entries(&self.0)
            .filter(|(n, _)| *n == name.as_bytes())
            .count()
    }

    /// Whether header `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        entries(&self.0).any(|(n, _)| n == name.as_bytes())
    }

    /// Every value of header `name`, in order, each `None` when it is not valid UTF-8 (for the
    /// headers a client may send several times: `Cookie` under HTTP/2).
    pub fn each<'a>(&'a self, name: &'a str) -> impl Iterator<Item = Option<&'a str>> + 'a {
        entries(&self.0)
            .filter(move |(n, _)| *n == name.as_bytes())
            .map(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Every value of header `name`, in order, as text (invalid UTF-8 becomes U+FFFD).
    pub fn each_lossy<'a>(&'a self, name: &'a str) -> impl Iterator<Item = Cow<'a, str>> + 'a {
        entries(&self.0)
            .filter(move |(n, _)| *n == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v))
    }

    /// Every header name, in order (a name present twice comes twice).
    pub fn names(&self) -> impl Iterator<Item = &[u8]> {
        entries(&self.0).map(|(n, _)| n)
    }
}

/// Every (name, value) of a serialized map, in order. Stops at the first entry that does not
/// fit in `buf`.
pub fn entries(buf: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let count = read_u32(buf, 0).unwrap_or(0);
    let data = count
        .checked_mul(8)
        .and_then(|n| n.checked_add(4))
        .unwrap_or(usize::MAX);
    Entries {
        buf,
        count,
        index: 0,
        data,
    }
}

/// The value of header `name` (lowercase, as the proxy keeps names). A name the map holds more
/// than once gets its values joined with ", ", as a proxy joins repeated headers (RFC 9110
/// §5.3): a repeated `Authorization` is then no valid credential.
pub fn get<'a>(buf: &'a [u8], name: &str) -> Option<Cow<'a, [u8]>> {
    let mut found: Option<Cow<'a, [u8]>> = None;
    for (n, v) in entries(buf) {
        if n != name.as_bytes() {
            continue;
        }
        found = Some(match found {
            None => Cow::Borrowed(v),
            Some(first) => {
                let mut joined = first.into_owned();
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(v);
                Cow::Owned(joined)
            }
        });
    }
    found
}

struct Entries<'a> {
    buf: &'a [u8],
    count: usize,
    index: usize,
    /// Where the next name starts.
    data: usize,
}

impl<'a> Iterator for Entries<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.count {
            return None;
        }
        let sizes = 4 + self.index * 8;
        let name_len = read_u32(self.buf, sizes)?;
        let value_len = read_u32(self.buf, sizes + 4)?;
        let name_end = self.data.checked_add(name_len)?;
        let name = self.buf.get(self.data..name_end)?;
        let value_start = name_end.checked_add(1)?;
        let value_end = value_start.checked_add(value_len)?;
        let value = self.buf.get(value_start..value_end)?;
        self.data = value_end.checked_add(1)?;
        self.index += 1;
        Some((name, value))
    }
}

fn read_u32(buf: &[u8], at: usize) -> Option<usize> {
    let bytes: [u8; 4] = buf.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(bytes)).ok()
}

/// The serialized form of `pairs` (what the proxy sends), for tests and fuzzing.
pub fn serialize(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    out.extend_from_slice(&len(pairs.len()));
    for (n, v) in pairs {
        out.extend_from_slice(&len(n.len()));
        out.extend_from_slice(&len(v.len()));
    }
    for (n, v) in pairs {
        out.extend_from_slice(n);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> Vec<u8> {
        serialize(&[
            (b":method", b"GET"),
            (b":path", b"/orders?id=1"),
            (b"authorization", b"Bearer abc"),
            (b"x-empty", b""),
            (b"accept", b"*/*"),
        ])
    }

    #[test]
    fn finds_every_header_and_only_exact_names() {
        let m = map();
        let got = |n| get(&m, n).map(|v| v.into_owned());
        assert_eq!(got(":path").as_deref(), Some(&b"/orders?id=1"[..]));
        assert_eq!(got("authorization").as_deref(), Some(&b"Bearer abc"[..]));
        assert_eq!(got("x-empty").as_deref(), Some(&b""[..]));
        assert_eq!(got("accept").as_deref(), Some(&b"*/*"[..]));
        assert_eq!(got("Authorization"), None);
        assert_eq!(got("authorizatio"), None);
        assert_eq!(got("cookie"), None);
        assert_eq!(entries(&m).count(), 5);
    }

    #[test]
    fn a_repeated_name_is_joined() {
        let m = serialize(&[
            (b"authorization", b"Bearer a"),
            (b"host", b"x"),
            (b"authorization", b"Bearer b"),
        ]);
        assert_eq!(
            get(&m, "authorization").as_deref(),
            Some(&b"Bearer a, Bearer b"[..])
        );
    }

    #[test]
    fn values_are_bytes() {
        let m = serialize(&[(b"authorization", b"Bearer \xff\x00x")]);
        assert_eq!(
            get(&m, "authorization").as_deref(),
            Some(&b"Bearer \xff\x00x"[..])
        );
    }

    #[test]
    fn an_empty_or_truncated_map_never_panics() {
        assert_eq!(entries(&[]).count(), 0);
        assert_eq!(entries(&[1, 0]).count(), 0);
        let m = map();
        for cut in 0..m.len() {
            let short = m.get(..cut).unwrap_or_default();
            // Whatever parses is a prefix of the real entries.
            let seen: Vec<_> = entries(short).collect();
            let all: Vec<_> = entries(&m).collect();
            // Only the last value's closing NUL may be missing for all of them to parse.
            assert!(seen.len() < all.len() || cut + 1 == m.len(), "cut at {cut}");
            assert_eq!(seen.as_slice(), all.get(..seen.len()).unwrap_or_default());
        }
        // Lengths and counts at their limits.
        let mut huge = vec![0xff; 4];
        huge.extend_from_slice(&[0xff; 8]);
        assert_eq!(entries(&huge).count(), 0);
        assert_eq!(get(&huge, ":path"), None);
    }
}
