//! The path a policy compares (`path_exact`, `path_prefix`), made unambiguous first. The policy
//! decides what is protected, so it must be chosen on the path the API will act on: whatever
//! two servers could read as two different paths is refused, never guessed at; what every
//! server reads one way is made canonical.
//!
//! - Canonical: the query is dropped; percent-encoded unreserved characters (RFC 3986 §2.3:
//!   letters, digits, `-._~`) are decoded, so `/%6Frders/1` is `/orders/1`; other escapes keep
//!   their meaning, with upper-case hex.
//! - Refused: a fragment; `\` and `;` (path parameters); percent-encoded `/`, `\` and `%` (a
//!   server that decodes once more would see another path); an empty segment (`//`); a `.` or
//!   `..` segment, encoded or not; control characters, spaces; a path not starting with `/`.
//!
//! Envoy can do part of this itself (`normalize_path`, `merge_slashes`,
//! `path_with_escaped_slashes_action`): the filter is safe without them, and gives the same
//! answer with them.

use std::borrow::Cow;

/// The path as the most lenient server could read it: without its query or fragment, every
/// escape decoded, `\\` read as `/`, path parameters (`;...`) dropped, empty and `.` segments
/// dropped, `..` resolved, ASCII letters in lower case, no trailing `/`. Two paths with one
/// fold may be one path to some server: the filter's own paths are compared this way, so that
/// a near miss (`/_Revoke`, `/_revoke/`) is refused rather than forwarded with what it carries.
pub fn fold(target: &str) -> String {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |j: usize| bytes.get(j).and_then(|c| char::from(*c).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                decoded.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'\\', ..) => {
                decoded.push(b'/');
                i += 1;
            }
            _ => {
                decoded.push(b.to_ascii_lowercase());
                i += 1;
            }
        }
    }
    // A server written in C stops at a NUL.
    let end = decoded
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(decoded.len());
    let text = String::from_utf8_lossy(decoded.get(..end).unwrap_or_default()).to_ascii_lowercase();
    let mut kept: Vec<&str> = Vec::new();
    for segment in text.split('/') {
        match segment.split(';').next().unwrap_or("") {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            // Some servers drop trailing dots and spaces of a segment (`/_revoke.`).
            s => match s.trim_end_matches(['.', ' ', '\t', '\r', '\n', '\x0b', '\x0c']) {
                "" => {}
                s => kept.push(s),
            },
        }
    }
    format!("/{}", kept.join("/"))
}

/// Whether `target` may not need [`fold`]: nothing in it that folding changes.
pub fn plain(target: &str) -> bool {
    let path = target.split(['?', '#']).next().unwrap_or("");
    !path
        .bytes()
        .any(|b| matches!(b, b'%' | b'\\' | b';') || b.is_ascii_uppercase())
        && !path.contains("//")
        && !path.contains("/.")
        && !path.contains("./")
        && !path.ends_with('.')
        && (path.len() <= 1 || !path.ends_with('/'))
}

/// The canonical path, without its query; `None` when the path is ambiguous (refused).
/// Borrowed from `target` when nothing is decoded (the common case: no copy).
pub fn canonical(target: &str) -> Option<Cow<'_, str>> {
    let path = target.split('?').next().unwrap_or("");
    if !path.starts_with('/') || path.contains(['#', '\\', ';']) {
        return None;
    }
    if !path.contains('%') {
        if !path.bytes().all(|b| (0x21..0x7f).contains(&b)) || !segments_ok(path) {
            return None;
        }
        return Some(Cow::Borrowed(path));
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if !(0x21..0x7f).contains(&b) {
            return None;
        }
        if b != b'%' {
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let hex = |j: usize| bytes.get(j).and_then(|c| char::from(*c).to_digit(16));
        let (Some(h), Some(l)) = (hex(i + 1), hex(i + 2)) else {
            return None;
        };
        let decoded = (h * 16 + l) as u8;
        match decoded {
            b'/' | b'\\' | b'%' => return None,
            c if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') => {
                out.push(char::from(c));
            }
            c => out.push_str(&format!("%{c:02X}")),
        }
        i += 3;
    }
    segments_ok(&out).then_some(Cow::Owned(out))
}

/// No empty segment but a trailing one (`//`), no `.` or `..` segment.
fn segments_ok(path: &str) -> bool {
    let mut segments = path.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if (segment.is_empty() && !last) || segment == "." || segment == ".." {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths() {
        for (target, want) in [
            ("/", "/"),
            ("/orders/1", "/orders/1"),
            ("/orders/1?x=/../y", "/orders/1"),
            ("/orders/", "/orders/"),
            ("/%6Frders/1", "/orders/1"),
            ("/%6frders/%31", "/orders/1"),
            ("/a%7Eb%2D%5F", "/a~b-_"),
            ("/a%20b", "/a%20b"),
            ("/a%3ab", "/a%3Ab"),
            ("/a.b/c..d/.e", "/a.b/c..d/.e"),
        ] {
            assert_eq!(canonical(target).as_deref(), Some(want), "{target}");
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for target in [
            "",
            "orders",
            "*",
            "//orders/1",
            "/orders//1",
            "/./orders",
            "/public/../orders",
            "/orders/..",
            "/orders/.",
            "/%2e%2e/orders",
            "/%2E/orders",
            "/public/%2e%2E/orders",
            "/orders%2F1",
            "/orders%2f1",
            "/orders%5C1",
            "/orders\\1",
            "/orders;jsessionid=1",
            "/orders%3B/x;y",
            "/orders#frag",
            "/orders%251",
            "/orders%2",
            "/orders%zz",
            "/orders 1",
            "/orders\t1",
            "/orders\u{7f}",
            "/ordérs",
        ] {
            assert_eq!(canonical(target), None, "{target:?}");
        }
    }
}
