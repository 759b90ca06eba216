//! The host a request is for, as a policy compares it (`hosts`): `:authority` lower-cased, its
//! port removed, one trailing dot ignored. A value that is not a host is refused, never guessed
//! at: a policy must not be chosen from a host the API would read another way.

/// The canonical host of an `:authority` (or of a configured host name), or `None` when it is
/// not one: a registered name (letters, digits, `-`, non-empty labels of at most 63
/// characters), an IPv4 address, or an IPv6 address in brackets; an optional `:port` of digits.
pub fn canonical(authority: &str) -> Option<String> {
    if authority.is_empty() || authority.len() > 255 + 6 {
        return None;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let address = |b: u8| b.is_ascii_hexdigit() || b == b':' || b == b'.';
        if inside.is_empty() || !inside.bytes().all(address) {
            return None;
        }
        let port = match after {
            "" => None,
            after => Some(after.strip_prefix(':')?),
        };
        (format!("[{}]", inside.to_ascii_lowercase()), port)
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        let labels_ok = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !labels_ok {
            return None;
        }
        (host.to_ascii_lowercase(), port)
    };
    match port {
        None => Some(host),
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(host)
        }
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_lower_cased_without_port_or_trailing_dot() {
        for (authority, want) in [
            ("api.example.com", "api.example.com"),
            ("API.Example.COM", "api.example.com"),
            ("api.example.com:8443", "api.example.com"),
            ("api.example.com.", "api.example.com"),
            ("api.example.com.:443", "api.example.com"),
            ("localhost", "localhost"),
            ("127.0.0.1:10000", "127.0.0.1"),
            ("[::1]:8080", "[::1]"),
            ("[2001:DB8::1]", "[2001:db8::1]"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ] {
            assert_eq!(canonical(authority).as_deref(), Some(want), "{authority}");
        }
    }

    #[test]
    fn what_is_not_a_host_is_refused() {
        for authority in [
            "",
            "api..example.com",
            ".api.example.com",
            "api.example.com..",
            "api example.com",
            "api.example.com:",
            "api.example.com:http",
            "api.example.com:123456",
            "user@api.example.com",
            "api.example.com/x",
            "api_example.com",
            "-api.example.com",
            "[::1",
            "[::1]x",
            "[zz::1]",
            "bücher.example",
            "a.example.com%2f",
        ] {
            assert_eq!(canonical(authority), None, "{authority:?}");
        }
    }
}
