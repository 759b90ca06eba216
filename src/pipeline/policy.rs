//! Stage: which policy applies. The route's metadata names one (`filter_metadata`
//! `token_filter` / `policy`), else the first policy whose `match` holds, else `default`.
//!
//! What a policy matches on must be what the API will act on. Envoy chooses the route (and so
//! a policy named by route name or route metadata) from the raw path and method, the filter's
//! own matches from canonical ones: with policies, a request whose path is not already
//! canonical ([`crate::token::path`]: `/%72eports/q1`, `/x/../reports/q1`, `//reports/q1`,
//! `/reports;x/q1`...) or whose method is not upper case (`post`) is refused (400), whatever
//! selects the policy, so that no server downstream reads another path or method than the one
//! the policy was chosen for. Hosts are made canonical ([`crate::token::host`]) and refused when
//! ambiguous. The host is only read when some policy matches on it.

use crate::config::{segment_of, Config, HostMatch, Match, PathMatch};
use crate::reply::Denial;
use crate::token::{host, path};

use super::Request;

/// The index of the policy that applies (see [`crate::config::Policies::get`]).
pub fn choose(cfg: &Config, request: &Request<'_>) -> Result<usize, Denial> {
    let policies = &cfg.policies;
    if policies.is_empty() {
        // One policy: nothing to choose, nothing to bypass.
        return Ok(policies.list.len());
    }
    let headers = request.headers;
    let raw = headers.text(":path").ok_or(Denial::AmbiguousRequest)?;
    let canonical_path = canonical_only(&raw)?;
    let method = headers.text(":method").ok_or(Denial::AmbiguousRequest)?;
    if method.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(Denial::AmbiguousRequest);
    }
    if let Some(name) = request.route_policy {
        // A name the configuration does not know: the operator's mistake, failed closed.
        return policies
            .named(name)
            .map(|(index, _)| index)
            .ok_or(Denial::UnknownPolicy);
    }
    let canonical_path = policies.by_path.then_some(canonical_path);
    let canonical_host = if policies.by_hosts {
        let raw = headers.text(":authority").unwrap_or_default();
        Some(host::canonical(&raw).ok_or(Denial::AmbiguousRequest)?)
    } else {
        None
    };
    let seen = Seen {
        path: canonical_path,
        host: canonical_host.as_deref(),
        method: policies.by_methods.then_some(method.as_ref()),
        route_name: request.route_name,
    };
    // First match wins: the candidates of the path's first segment and those of any path,
    // merged in order (every other policy's path condition cannot hold).
    let keyed: &[usize] = seen
        .path
        .and_then(|p| policies.by_first_segment.get(segment_of(p)))
        .map_or(&[], Vec::as_slice);
    let (mut a, mut b) = (policies.any_path.iter().peekable(), keyed.iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(&&x), Some(&&y)) if x < y => a.next(),
            (Some(_), Some(_)) | (None, Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, None) => return Ok(policies.list.len()),
        };
        if let Some(&index) = next {
            if matches(&policies.get(index).matcher, &seen) {
                return Ok(index);
            }
        }
    }
}

/// The path of `target` without its query, when it is already canonical; refused otherwise.
fn canonical_only(target: &str) -> Result<&str, Denial> {
    let raw = target.split('?').next().unwrap_or("");
    match path::canonical(target) {
        Some(canonical) if canonical == raw => Ok(raw),
        _ => Err(Denial::AmbiguousRequest),
    }
}

/// What a request shows the matchers: each canonical, each `None` when no policy reads it.
struct Seen<'a> {
    path: Option<&'a str>,
    host: Option<&'a str>,
    method: Option<&'a str>,
    route_name: Option<&'a str>,
}

fn matches(m: &Match, seen: &Seen<'_>) -> bool {
    let path_ok = match (&m.path, seen.path) {
        (None, _) => true,
        (Some(PathMatch::Exact(p)), Some(path)) => path == p,
        (Some(PathMatch::Prefix(p)), Some(path)) => path.starts_with(p.as_str()),
        (Some(_), None) => false,
    };
    let method_ok = m.methods.is_empty()
        || seen
            .method
            .is_some_and(|x| m.methods.iter().any(|y| y == x));
    let host_ok = m.hosts.is_empty()
        || seen.host.is_some_and(|h| {
            m.hosts.iter().any(|pattern| match pattern {
                HostMatch::Exact(name) => h == name,
                HostMatch::Subdomain(suffix) => {
                    h.len() > suffix.len() && h.ends_with(suffix.as_str())
                }
            })
        });
    let route_ok = m
        .route_name
        .as_deref()
        .is_none_or(|name| seen.route_name == Some(name));
    path_ok && method_ok && host_ok && route_ok
}
