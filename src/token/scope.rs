//! OAuth scopes (RFC 6749 §3.3): the `scope` claim of a JWT, as a space-separated string or,
//! as some servers write it, a JSON array of strings, and the `required_scopes` check.

/// `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

/// True when every required scope is among the granted ones (space-separated).
pub fn has_all(granted: &str, required: &[String]) -> bool {
    required
        .iter()
        .all(|r| granted.split(' ').any(|g| g == r.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn all_required_scopes_must_be_granted() {
        assert!(has_all("read write", &req(&["read"])));
        assert!(has_all("read write", &req(&["write", "read"])));
        assert!(has_all("", &req(&[])));
        assert!(has_all("anything", &req(&[])));
        assert!(!has_all("read", &req(&["read", "write"])));
        assert!(!has_all("", &req(&["read"])));
        assert!(!has_all("reader", &req(&["read"])), "no prefix match");
        assert!(
            !has_all("Read", &req(&["read"])),
            "scopes are case-sensitive"
        );
    }

    #[test]
    fn scope_token_grammar() {
        assert!(is_scope_token("read"));
        assert!(is_scope_token("urn:example:read!#$"));
        for bad in ["", "a b", "a\"b", "a\\b", "tab\t", "é"] {
            assert!(!is_scope_token(bad), "{bad:?}");
        }
    }
}
