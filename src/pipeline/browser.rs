//! Stage: browser credentials (`cookies`, the token handler pattern). A browser app holds
//! encrypted, HttpOnly cookies written by an OAuth Agent, never a token. A request without
//! `Authorization`, on a policy that accepts cookies, has its token read from the
//! `<prefix>-at` cookie after the checks OWASP's CSRF guidance asks for, in order: its `Origin`
//! is trusted (a missing one is refused for state-changing methods, and for every method when
//! the app is on another origin, `cors`); for every method that changes state (all but `GET`,
//! `HEAD`, `OPTIONS`, `TRACE` in upper case), the `x-<prefix>-csrf` header equals the
//! decrypted `<prefix>-csrf` cookie; the cookie decrypts
//! under one of the keys. The token then goes through every stage a bearer token does. Beside
//! it: CORS preflights from trusted origins answered here, and what a forwarded request's
//! headers and its response get (the filter's cookies removed; CORS headers).

use std::rc::Rc;

use crate::config::{Config, CookiesConfig, Credentials, Policy};
use crate::hash::constant_time_eq;
use crate::header_map::HeaderMap;
use crate::metrics::Counter;
use crate::reply::{Denial, LocalReply};
use crate::token::cookie::{self, CookieError};

use super::{Ctx, Request};

/// What a forwarded request of a browser needs beyond the usual edits (with `cookies`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Browser {
    /// The `Cookie` header without the filter's cookies, when it carried any and
    /// `remove_cookies` is on (`Some(None)`: none is left, the header goes).
    pub cookie: Option<Option<String>>,
    /// The trusted origin to answer with CORS headers (with `cors`).
    pub cors: Option<String>,
}

/// What the request's forward and answer need, with `cookies`; `None` when nothing.
pub fn of(cfg: &Config, headers: &HeaderMap) -> Option<Box<Browser>> {
    let cookies = cfg.cookies.as_ref()?;
    let mut browser = Browser::default();
    if cookies.remove_cookies && headers.contains("cookie") {
        let names = [cookies.access_cookie.as_str(), cookies.csrf_cookie.as_str()];
        // Read as text whatever it holds: a byte that is not UTF-8 in one crumb must not let
        // the filter's cookies through (the rest is kept, that byte as U+FFFD).
        let values: Vec<std::borrow::Cow<'_, str>> = headers.each_lossy("cookie").collect();
        let ours = cookie::find(values.iter().map(AsRef::as_ref), names)
            .map_or(true, |[at, csrf]| at.is_some() || csrf.is_some());
        if ours {
            browser.cookie = Some(cookie::without(values.iter().map(AsRef::as_ref), &names));
        }
    }
    if cookies.cors.is_some() {
        if let Some(origin) = headers.text("origin") {
            if cookie::origin_trusted(&cookies.origins, &origin) {
                browser.cors = Some(origin.into_owned());
            }
        }
    }
    (browser != Browser::default()).then(|| Box::new(browser))
}

/// The token a request presents through its cookie, under `policy`: `Ok(None)` when the
/// request's `Authorization` (or its absence of any credential) is what counts.
pub fn credentials(
    cx: &Ctx<'_>,
    policy: &Policy,
    request: &Request<'_>,
    has_authorization: bool,
) -> Result<Option<String>, Denial> {
    let Some(cookies) = &cx.cfg.cookies else {
        return Ok(None);
    };
    match (policy.credentials, has_authorization) {
        (Credentials::Bearer, _) | (Credentials::Either, true) => return Ok(None),
        // A route for browsers only: a bearer token is not what it takes.
        (Credentials::Cookie, true) => return Err(Denial::NoCredentials),
        (Credentials::Cookie | Credentials::Either, false) => {}
    }
    let headers = request.headers;
    let mut values = Vec::new();
    for value in headers.each("cookie") {
        values.push(value.ok_or(Denial::MalformedCredentials)?);
    }
    let names = [cookies.access_cookie.as_str(), cookies.csrf_cookie.as_str()];
    let [access, csrf] = cookie::find(values.iter().copied(), names).map_err(|e| match e {
        CookieError::Duplicate | CookieError::TooLarge => Denial::MalformedCredentials,
        CookieError::Undecryptable => Denial::CookieInvalid,
    })?;
    let Some(access) = access else {
        // No cookie either: no credentials (a public or optional route goes on).
        return Ok(None);
    };
    cx.host.count(Counter::CookieRequests);
    check(cx, cookies, headers, csrf)?;
    let token = open(cx, cookies, access).map_err(|_| Denial::CookieInvalid)?;
    Ok(Some(token.to_string()))
}

/// A cookie value's plaintext: from this worker's opened cookies, else decrypted (and kept).
fn open(cx: &Ctx<'_>, cookies: &CookiesConfig, value: &str) -> Result<Rc<str>, CookieError> {
    let opened = &cx.worker.opened;
    let key = cx.worker.keyed.key(value);
    if let Some(plain) = opened.get(&key) {
        return Ok(plain);
    }
    let plain: Rc<str> = Rc::from(cookie::decrypt(&cookies.keys, value)?);
    opened.put(&key, plain.clone());
    Ok(plain)
}

/// The origin and CSRF checks, in order.
fn check(
    cx: &Ctx<'_>,
    cookies: &CookiesConfig,
    headers: &HeaderMap,
    csrf: Option<&str>,
) -> Result<(), Denial> {
    // Every method but the safe ones changes state (OWASP), whatever its case: Envoy passes
    // `post` on HTTP/2 as it is, and an API may read it as `POST`.
    let method = headers.text(":method").unwrap_or_default();
    let changes = !["GET", "HEAD", "OPTIONS", "TRACE"].iter().any(|safe| {
        method.eq_ignore_ascii_case(safe) && method.bytes().all(|b| b.is_ascii_uppercase())
    });
    match headers.text("origin") {
        Some(origin) if cookie::origin_trusted(&cookies.origins, &origin) => {}
        Some(_) => return Err(Denial::OriginNotTrusted),
        // Browsers send no `Origin` on same-origin reads: accepted only when the app and the
        // API share an origin (no `cors`).
        None if changes || cookies.cors.is_some() => return Err(Denial::OriginNotTrusted),
        None => {}
    }
    if changes {
        let sent = headers.text(&cookies.csrf_header);
        let expected = csrf.map(|c| open(cx, cookies, c));
        match (sent, expected) {
            (Some(sent), Some(Ok(expected)))
                if !expected.is_empty()
                    && constant_time_eq(sent.as_bytes(), expected.as_bytes()) => {}
            _ => return Err(Denial::CsrfMismatch),
        }
    }
    Ok(())
}

/// A CORS preflight with `cookies.cors`: answered here, never forwarded. From a trusted origin,
/// `204` with credentials allowed, the configured methods and headers (else those asked for),
/// always the CSRF header; from any other, `403` without a CORS header.
pub fn preflight(cx: &Ctx<'_>, headers: &HeaderMap) -> LocalReply {
    let (Some(cookies), origin) = (&cx.cfg.cookies, headers.text("origin")) else {
        return LocalReply {
            status: 403,
            headers: vec![("cache-control", "no-store".to_owned())],
            body: Vec::new(),
        };
    };
    let (Some(cors), Some(origin)) = (
        &cookies.cors,
        origin.filter(|o| cookie::origin_trusted(&cookies.origins, o)),
    ) else {
        cx.host.count(Counter::CorsPreflightRefused);
        return LocalReply {
            status: 403,
            headers: vec![("cache-control", "no-store".to_owned())],
            body: Vec::new(),
        };
    };
    cx.host.count(Counter::CorsPreflightAnswered);
    let allow_headers = if cors.allow_headers.is_empty() {
        let asked = headers
            .text("access-control-request-headers")
            .unwrap_or_default();
        let mut list: Vec<String> = asked
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            .take(32)
            .collect();
        if !list.contains(&cookies.csrf_header) {
            list.push(cookies.csrf_header.clone());
        }
        list.join(", ")
    } else {
        let mut list = cors.allow_headers.clone();
        if !list.contains(&cookies.csrf_header) {
            list.push(cookies.csrf_header.clone());
        }
        list.join(", ")
    };
    let mut out = vec![
        ("access-control-allow-origin", origin.into_owned()),
        ("access-control-allow-credentials", "true".to_owned()),
        ("access-control-allow-methods", cors.allow_methods.clone()),
        ("access-control-allow-headers", allow_headers),
        ("access-control-max-age", cors.max_age_s.to_string()),
        ("vary", "origin".to_owned()),
    ];
    out.push(("cache-control", "no-store".to_owned()));
    LocalReply {
        status: 204,
        headers: out,
        body: Vec::new(),
    }
}

/// The CORS headers of any response to a trusted origin's request (errors included).
pub fn cors_headers(cfg: &Config, origin: &str) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("access-control-allow-origin", origin.to_owned()),
        ("access-control-allow-credentials", "true".to_owned()),
        ("vary", "origin".to_owned()),
    ];
    if let Some(cors) = cfg.cookies.as_ref().and_then(|c| c.cors.as_ref()) {
        if !cors.expose_headers.is_empty() {
            out.push(("access-control-expose-headers", cors.expose_headers.clone()));
        }
    }
    out
}
