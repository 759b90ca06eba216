"""Browser cookies (`cookies`) attacked as a stranger would, in a real Envoy: write methods in
other cases (HTTP/1.1 and HTTP/2) and methods beyond the usual four, the filter's cookies on
passages other than the API (an observed revocation), a Cookie header that is not UTF-8, the
CSRF header's `_` spelling, Origin variants and duplicates, untrusted preflights, odd cookie
names. Each asserts what must hold."""

import json
import threading
import time
import http.server

import pytest

from harness.envoy import Envoy, bearer, request
from harness.browser import AT, CSRF, CSRF_HEADER, TRUSTED, cookies_block, seal
from harness.services import Signer, TokenService

ISS = "https://login.example.com"
AUD = "api.example.com"




class AnyEcho:
    """An upstream that answers 200 to ANY method (also `post`, `PROPPATCH`) with what it got."""

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _any(self):
                n = int(self.headers.get("content-length", "0") or 0)
                body = self.rfile.read(n).decode("latin-1") if n else ""
                seen = {"method": self.command, "path": self.path,
                        "headers": [(k.lower(), v) for k, v in self.headers.items()], "body": body}
                with outer.lock:
                    outer.requests.append(seen)
                out = json.dumps(seen).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def __getattr__(self, name):
                if name.startswith("do_"):
                    return self._any
                raise AttributeError(name)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def since(self, n):
        with self.lock:
            return self.requests[n:]

    def count(self):
        with self.lock:
            return len(self.requests)


@pytest.fixture(scope="module")
def signer():
    return Signer("ES256", kid="hostile-browser")


@pytest.fixture(scope="module")
def ts(signer):
    t = TokenService(signer=signer).start()
    yield t
    t.stop()


@pytest.fixture(scope="module")
def api():
    a = AnyEcho()
    yield a
    a.server.shutdown()


def plugin(signer, **cookies):
    block = cookies_block(**cookies)
    return {
        "required_scopes": ["read"],
        "phantom": {"cluster": "ts", "path": "/introspect", "client_id": "gw", "client_secret": "s"},
        "verify": {"issuer": ISS, "audiences": [AUD], "algorithms": ["ES256"],
                   "jwks_inline": {"keys": [signer.jwk()]}},
        "cookies": block,
        "revocation": {"path": "/_revoke", "secret": "hostile-revocation-secret-01",
                       "observe_paths": ["/oauth/revoke"]},
    }


@pytest.fixture(scope="module")
def env(tmp_path_factory, ts, signer, api):
    same = plugin(signer)  # the app on the API's origin: no cors
    cors = plugin(signer, cors={})
    e = Envoy(tmp_path_factory.mktemp("envoy-browser-hostile"),
              listeners={"same": same, "cors": {"plugin": cors, "vm_id": "browser_hostile_cors"}},
              clusters={"api": api.port, "ts": ts.port}, concurrency=1)
    e.start()
    yield e
    e.stop()


def opaque(ts, signer, **claims):
    """An opaque token the stub introspects to a signed JWT."""
    now = int(time.time())
    full = {"iss": ISS, "aud": AUD, "sub": "alice", "scope": "read", "iat": now, "exp": now + 300}
    full.update(claims)
    return ts.script(signer.mint(full), "hostile")


@pytest.fixture(scope="module")
def cookies(ts, signer):
    at, csrf = seal(opaque(ts, signer), "the-csrf-value")
    return at, csrf


# ---- CSRF: method spelling -------------------------------------------------------------------

@pytest.mark.parametrize("method", ["post", "Post", "delete", "pUT", "patch"])
def test_a_write_in_another_case_still_needs_the_csrf_header(env, api, cookies, method):
    """The CSRF (and missing-Origin) rule is for POST, PUT, PATCH, DELETE compared
    case-sensitively; Envoy forwards `post` as it is and many servers (and every
    framework that upper-cases the method: Express/Node's own parsers reject it, but
    Go, Python, Java servlet containers and others route it) act on it as a write.
    A lower-case write with the cookie, no Origin and no CSRF header must not reach the API."""
    at, csrf = cookies
    port = env.ports["same"]
    before = api.count()
    r = request(port, "/api/orders", [("cookie", f"{AT}={at}; {CSRF}={csrf}")],
                method=method, body=b"{}")
    reached = api.since(before)
    assert r.status in (400, 401, 405), (method, r.status, reached)
    assert not reached, f"{method} reached the API with the cookie's token and no CSRF check"


@pytest.mark.parametrize("method", [b"post", b"patch", b"Delete"])
def test_an_http2_write_in_lower_case_still_needs_the_csrf_header(env, api, cookies, method):
    from harness.h2 import h2_request
    at, csrf = cookies
    before = api.count()
    status = h2_request(env.ports["same"], [
        (b":method", method), (b":scheme", b"http"), (b":authority", b"api"),
        (b":path", b"/api/orders"), (b"cookie", f"{AT}={at}".encode()),
        (b"cookie", f"{CSRF}={csrf}".encode())])
    assert status in (400, 401, 405, "reset"), (method, status, api.since(before))
    assert not api.since(before)


def test_a_custom_state_changing_method_needs_the_csrf_header(env, api, cookies):
    """WebDAV/other unsafe methods (not GET/HEAD/OPTIONS): OWASP's guidance is to protect
    every state-changing request, not a fixed list of four."""
    at, csrf = cookies
    port = env.ports["same"]
    before = api.count()
    r = request(port, "/api/orders", [("cookie", f"{AT}={at}; {CSRF}={csrf}")],
                method="PROPPATCH", body=b"<x/>")
    assert r.status in (400, 401, 405), r.status
    assert not api.since(before)


# ---- what reaches upstream -------------------------------------------------------------------

def test_the_filters_cookies_never_reach_the_token_service_on_an_observed_path(env, api, cookies):
    """`remove_cookies` (default) promises the sealed cookies go nowhere beyond the gateway;
    a request to an observed RFC 7009 path is forwarded with them intact."""
    at, csrf = cookies
    port = env.ports["same"]
    before = api.count()
    r = request(port, "/oauth/revoke", [("cookie", f"theme=dark; {AT}={at}; {CSRF}={csrf}"),
                                        ("content-type", "application/x-www-form-urlencoded")],
                method="POST", body=b"token=nothing-known&client_id=app")
    assert r.status == 200, r.status
    seen = api.since(before)
    assert seen, "forwarded"
    cookie = dict(seen[-1]["headers"]).get("cookie", "")
    assert AT not in cookie and CSRF not in cookie, cookie


def test_a_non_utf8_cookie_crumb_does_not_let_the_sealed_cookie_through(env, api, cookies, ts, signer):
    """A cookie tossed by a sibling subdomain with an obs-text byte makes the Cookie header
    invalid UTF-8: on a bearer request the filter then skips its removal and the sealed `-at`
    and `-csrf` cookies reach the API."""
    at, csrf = cookies
    port = env.ports["same"]
    token = opaque(ts, signer)
    before = api.count()
    raw = f"t=\xff; {AT}={at}; {CSRF}={csrf}".encode("latin-1")
    r = request(port, "/api/x", [("cookie", raw)] + bearer(token))
    assert r.status == 200, r.status
    cookie = dict(api.since(before)[-1]["headers"]).get("cookie", "")
    assert AT not in cookie and CSRF not in cookie, cookie


def test_underscore_csrf_header_is_removed(env, api, cookies):
    at, csrf = cookies
    port = env.ports["same"]
    before = api.count()
    r = request(port, "/api/x", [("cookie", f"{AT}={at}; {CSRF}={csrf}"), ("origin", TRUSTED),
                                 ("x_example_csrf", "the-csrf-value"),
                                 (CSRF_HEADER, "the-csrf-value")], method="POST", body=b"{}")
    assert r.status == 200, r.body
    names = [k for k, _ in api.since(before)[-1]["headers"]]
    assert "x_example_csrf" not in names and CSRF_HEADER not in names, names


# ---- origin tricks (expected to hold) --------------------------------------------------------

@pytest.mark.parametrize("origin", ["https://www.example.com/", 
                                    "https://www.example.com:443", "https://www.example.com.",
                                    "https://www.exаmple.com", "null", ""])
def test_origin_variants_are_refused(env, cookies, origin):
    at, csrf = cookies
    r = request(env.ports["cors"], "/api/x",
                [("cookie", f"{AT}={at}"), ("origin", origin.encode("utf-8"))])
    assert r.status in (400, 401), (origin, r.status)
    assert not [k for k, _ in r.headers if k.startswith("access-control-")]


def test_two_origin_headers_are_not_trusted(env, cookies):
    at, csrf = cookies
    port = env.ports["cors"]
    for pair in (("https://evil.example", TRUSTED), (TRUSTED, "https://evil.example")):
        r = request(port, "/api/x", [("cookie", f"{AT}={at}"), ("origin", pair[0]),
                                     ("origin", pair[1])])
        assert r.status in (400, 401), (pair, r.status)


def test_untrusted_preflight_leaks_nothing_and_is_not_forwarded(env, api):
    port = env.ports["cors"]
    before = api.count()
    r = request(port, "/api/x", [("origin", "https://evil.example"),
                                 ("access-control-request-method", "DELETE")], method="OPTIONS")
    assert r.status == 403 and not [k for k, _ in r.headers if k.startswith("access-control-")]
    assert not api.since(before)


def test_junk_and_mixed_case_cookie_names(env, cookies):
    at, csrf = cookies
    port = env.ports["same"]
    # Another case of the name is another cookie: not ours (no credentials -> 401).
    assert request(port, "/api/x", [("cookie", f"Example-At={at}")]).status == 401
    # Our name inside another cookie's value: not ours.
    assert request(port, "/api/x", [("cookie", f'x="{AT}={at}"')]).status == 401
    # Duplicate across two headers, one differently spaced: refused.
    assert request(port, "/api/x", [("cookie", f"{AT}={at}"), ("cookie", f" {AT} = {at}")]).status == 400
    # Empty value: refused, not a crash.
    assert request(port, "/api/x", [("cookie", f"{AT}=")]).status == 401
    # Many cookies.
    many = "; ".join(f"c{i}=v{i}" for i in range(2000)) + f"; {AT}={at}"
    assert request(port, "/api/x", [("cookie", many)]).status in (200, 431, 400)
