"""Browser apps (`cookies`, the token handler pattern) in a real Envoy: the browser holds the
encrypted, HttpOnly cookies an OAuth Agent writes (sealed here by Node's crypto, as Curity's
own test helper seals them), never a token; the filter checks the origin and the CSRF header,
opens the cookie, and the token inside goes through every stage a bearer token goes through.

Listeners (one Envoy, two workers):
  cors   the app on another origin (`cors`): preflights answered here, CORS headers with
         credentials on every answer to a trusted origin. Phantom tokens of the stub token
         service (signed JWTs, verified), split tokens; /web/ takes cookies only, /mobile/
         bearer tokens only, the rest either.
  same   the app on the API's own origin (no `cors`): a GET without `Origin` is a same-origin
         read; the `-at` and `-csrf` cookies are kept (`remove_cookies: false`)."""

import json
import subprocess
import time

import pytest

from harness.envoy import Envoy, bearer, request
from harness.browser import AT, CSRF, CSRF_HEADER, KEY, PREFIX, TRUSTED, cookies_block, seal
from harness.oidc import OIDC_DIR, node
from harness.services import Signer, TokenService, decode_jwt_payload
from harness.split import PUBLISH, SECRET, split_jwt, store_key

OLD_KEY = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
OTHER_KEY = "ff" * 32
ISS = "https://login.example.com"
AUD = "api.example.com"




@pytest.fixture(scope="module")
def signer():
    return Signer("ES256", kid="browser-es256")


@pytest.fixture(scope="module")
def ts(signer):
    t = TokenService(signer=signer).start()
    yield t
    t.stop()


def plugin(signer, **cookies):
    block = cookies_block(encryption_keys=[KEY, OLD_KEY], **cookies)
    return {
        "required_scopes": ["read"],
        "phantom": {"cluster": "ts", "path": "/introspect", "client_id": "gw", "client_secret": "s"},
        "verify": {"issuer": ISS, "audiences": [AUD], "algorithms": ["ES256"],
                   "jwks_inline": {"keys": [signer.jwk()]}},
        "split": {"max_entries": 1000, "fallback_to_phantom": True,
                  "publish": {"path": PUBLISH, "secret": SECRET}},
        "cookies": block,
        "policies": [
            {"name": "web", "match": {"path_prefix": "/web/"}, "credentials": "cookie"},
            {"name": "mobile", "match": {"path_prefix": "/mobile/"}, "credentials": "bearer"},
        ],
    }


@pytest.fixture(scope="module")
def benv(tmp_path_factory, ts, signer, echo):
    cors = plugin(signer, cors={"allow_methods": ["GET", "POST", "PUT", "PATCH", "DELETE"],
                                "expose_headers": ["x-request-id"], "max_age_s": 600})
    same = plugin(signer, remove_cookies=False)
    e = Envoy(tmp_path_factory.mktemp("envoy-browser"),
              listeners={"cors": cors, "same": {"plugin": same, "vm_id": "browser_same"}},
              clusters={"api": echo.port, "ts": ts.port}, concurrency=2)
    e.start()
    yield e
    e.stop()


def opaque(ts, signer, **claims):
    """An opaque token the stub introspects to a signed JWT."""
    now = int(time.time())
    full = {"iss": ISS, "aud": AUD, "sub": "alice", "scope": "read", "iat": now, "exp": now + 300}
    full.update(claims)
    return ts.script(signer.mint(full), "browser")


def cookie_header(**named):
    return "; ".join(f"{k}={v}" for k, v in named.items())


def browser(at=None, csrf=None, origin=TRUSTED, extra=(), csrf_header=None):
    """A browser's request headers: its cookies (theme and lang around ours), its Origin."""
    crumbs = {"theme": "dark"}
    if at is not None:
        crumbs[AT] = at
    if csrf is not None:
        crumbs[CSRF] = csrf
    crumbs["lang"] = "en"
    headers = [("cookie", cookie_header(**crumbs))]
    if origin is not None:
        headers.append(("origin", origin))
    if csrf_header is not None:
        headers.append((CSRF_HEADER, csrf_header))
    return headers + list(extra)


def upstream(reply):
    """What the API received: its Authorization's token, and its headers."""
    assert reply.status == 200, (reply.status, reply.body[:300])
    seen = dict(reply.json()["headers"])
    return seen.get("authorization", "")[len("Bearer "):], seen


def cors_of(reply):
    return {k: v for k, v in reply.headers if k.startswith("access-control-") or k == "vary"}


def test_a_read_with_the_cookie_reaches_the_api_with_a_jwt_and_without_the_cookies(benv, ts, signer):
    port = benv.ports["cors"]
    token = opaque(ts, signer)
    at, csrf = seal(token, "csrf-value-1")
    r = request(port, "/api/orders", browser(at, csrf))
    jwt, seen = upstream(r)
    assert decode_jwt_payload(jwt)["sub"] == "alice"
    assert seen["cookie"] == "theme=dark; lang=en", "the filter's cookies never reach the API"
    assert CSRF_HEADER not in seen
    assert token not in json.dumps(seen), "nor the opaque token"
    assert cors_of(r) == {"access-control-allow-origin": TRUSTED,
                          "access-control-allow-credentials": "true",
                          "access-control-expose-headers": "x-request-id", "vary": "origin"}
    # A hit: the same cookie again, from the cache.
    assert upstream(request(port, "/api/orders", browser(at, csrf)))[0] == jwt
    c = benv.counters()
    assert c["cookie_requests"] >= 2 and c["cache_hit"] >= 1


def test_a_write_needs_the_csrf_header_matching_its_cookie(benv, ts, signer):
    port = benv.ports["cors"]
    at, csrf = seal(opaque(ts, signer), "csrf-value-2")
    before = benv.counters().get("denied_csrf", 0)
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        ok = request(port, "/api/orders", browser(at, csrf, csrf_header="csrf-value-2"),
                     method=method, body=b"{}")
        assert upstream(ok)[1].get(CSRF_HEADER) is None, method
        for header in (None, "csrf-value-X", "csrf-value-2x", ""):
            r = request(port, "/api/orders", browser(at, csrf, csrf_header=header),
                        method=method, body=b"{}")
            assert r.status == 401, (method, header, r.status)
            assert r.json()["code"] == "csrf_mismatch", "a JSON body the page can read"
            assert cors_of(r)["access-control-allow-origin"] == TRUSTED, "the page reads the error"
    # No CSRF cookie at all: refused too.
    r = request(port, "/api/orders", browser(at, None, csrf_header="csrf-value-2"),
                method="POST", body=b"{}")
    assert r.status == 401
    assert benv.counters()["denied_csrf"] - before == 17


def test_origins_are_checked_before_anything_else(benv, ts, signer):
    port, same = benv.ports["cors"], benv.ports["same"]
    at, csrf = seal(opaque(ts, signer), "csrf-value-3")
    for origin in ("https://evil.example.com", "https://www.example.com.evil.com",
                   "http://www.example.com", "https://www.example.com:444", "null"):
        r = request(port, "/api/orders", browser(at, csrf, origin=origin))
        assert r.status == 401, origin
        assert cors_of(r) == {}, "no CORS header for an untrusted origin"
    assert request(port, "/api/orders", browser(at, csrf, origin="HTTPS://WWW.EXAMPLE.COM")).status == 200
    # A cross-origin app: a missing Origin is refused even for a read.
    assert request(port, "/api/orders", browser(at, csrf, origin=None)).status == 401
    # The same origin (no cors): a read without Origin is a same-origin read; a write is not.
    assert upstream(request(same, "/api/orders", browser(at, csrf, origin=None)))[1]["cookie"] \
        .count(AT) == 1, "remove_cookies false: kept"
    r = request(same, "/api/orders", browser(at, csrf, origin=None, csrf_header="csrf-value-3"),
                method="POST", body=b"{}")
    assert r.status == 401
    assert benv.counters()["denied_origin"] >= 6


def test_tampered_foreign_and_rotated_cookies(benv, ts, signer):
    port = benv.ports["cors"]
    token = opaque(ts, signer)
    at, = seal(token)
    old, = seal(token, key=OLD_KEY)
    foreign, = seal(token, key=OTHER_KEY)
    assert request(port, "/api/x", browser(old)).status == 200, "the previous key, during a rotation"
    flipped = at[:-3] + ("A" if at[-3] != "A" else "B") + at[-2:]
    before = benv.counters().get("cookie_decrypt_failed", 0)
    for bad in (foreign, flipped, at[:-4], "not base64url!", at + "AAAA", "", token):
        r = request(port, "/api/x", browser(bad))
        assert r.status == 401, bad
    assert benv.counters()["cookie_decrypt_failed"] - before >= 5
    assert request(port, "/api/x", browser("A" * 9000)).status == 400, "over 8 KB"


def test_a_bearer_token_is_used_when_there_is_one(benv, ts, signer):
    port = benv.ports["cors"]
    cookie_token, header_token = opaque(ts, signer, sub="cookie-user"), opaque(ts, signer, sub="header-user")
    at, = seal(cookie_token)
    jwt, _ = upstream(request(port, "/api/x", browser(at) + bearer(header_token)))
    assert decode_jwt_payload(jwt)["sub"] == "header-user"
    # An Authorization header means the cookies are not read at all, broken or not.
    assert request(port, "/api/x", browser("garbage") + bearer(header_token)).status == 200
    # Per route: /web/ takes cookies only, /mobile/ bearer tokens only.
    assert request(port, "/web/x", browser(at)).status == 200
    assert request(port, "/web/x", bearer(header_token)).status == 401
    assert request(port, "/mobile/x", bearer(header_token)).status == 200
    assert request(port, "/mobile/x", browser(at)).status == 401


def test_split_tokens_in_cookies(benv, signer):
    port = benv.ports["cors"]
    now = int(time.time())
    jwt = signer.mint({"iss": ISS, "aud": AUD, "sub": "split-user", "scope": "read",
                       "iat": now, "exp": now + 300})
    hp, sig = split_jwt(jwt)
    doc = {"signature_hash": store_key(sig), "header_payload": hp, "expires_at": now + 120}
    assert request(port, PUBLISH, bearer(SECRET), method="POST",
                   body=json.dumps(doc).encode()).status == 204
    at, = seal(sig)
    assert upstream(request(port, "/api/x", browser(at)))[0] == jwt


def test_cookies_in_http2_crumbs_and_duplicates(benv, ts, signer):
    from harness.h2 import h2_request
    port = benv.ports["cors"]
    at, = seal(opaque(ts, signer))
    base = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"api"),
            (b":path", b"/api/x"), (b"origin", TRUSTED.encode())]
    crumbs = [(b"cookie", b"theme=dark"), (b"cookie", f"{AT}={at}".encode()), (b"cookie", b"lang=en")]
    assert h2_request(port, base + crumbs) == 200
    assert h2_request(port, base + crumbs + [(b"cookie", f"{AT}={at}".encode())]) == 400
    # Quoted, with spaces around: one cookie all the same.
    assert request(port, "/api/x", [("cookie", f'theme=dark ;  {AT}="{at}" ; lang=en'),
                                    ("origin", TRUSTED)]).status == 200
    assert request(port, "/api/x", [("cookie", f"{AT}={at}"), ("cookie", f"{AT}={at}"),
                                    ("origin", TRUSTED)]).status == 400


def test_preflights_are_answered_for_trusted_origins_only(benv, echo):
    port = benv.ports["cors"]
    with echo.lock:
        seen = len(echo.requests)
    asked = [("origin", TRUSTED), ("access-control-request-method", "POST"),
             ("access-control-request-headers", f"content-type, {CSRF_HEADER}")]
    r = request(port, "/api/orders", asked, method="OPTIONS")
    assert r.status == 204
    assert cors_of(r) == {
        "access-control-allow-origin": TRUSTED,
        "access-control-allow-credentials": "true",
        "access-control-allow-methods": "GET, POST, PUT, PATCH, DELETE",
        "access-control-allow-headers": f"content-type, {CSRF_HEADER}",
        "access-control-max-age": "600",
        "vary": "origin",
    }
    r = request(port, "/api/orders", [("origin", "https://evil.example.com")] + asked[1:],
                method="OPTIONS")
    assert r.status == 403 and cors_of(r) == {}
    with echo.lock:
        assert len(echo.requests) == seen, "preflights are never forwarded"
    c = benv.counters()
    assert c["cors_preflight_answered"] >= 1 and c["cors_preflight_refused"] >= 1


class Page:
    """A web origin serving an empty page (the app's), on loopback."""

    def __init__(self):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = b"<!doctype html><meta charset=utf-8><title>app</title>"
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


def chromium():
    import shutil
    path = shutil.which("chromium")
    assert path, "Debian's chromium is needed (scripts/test.sh installs it)"
    assert (OIDC_DIR / "node_modules" / "playwright-core").is_dir(), "run `npm ci` in tests/oidc"
    return path


def test_in_a_real_browser(tmp_path, ts, signer, echo):
    """Chromium enforces CORS and the cookie rules: a page of the trusted origin reads the
    API's answers with the HttpOnly cookies it cannot see; a write without the CSRF header is
    refused (and the page can read why); a page of another origin cannot read anything."""
    trusted, untrusted = Page(), Page()
    cfg = plugin(signer, cors={"expose_headers": ["x-request-id"]})
    cfg["cookies"]["trusted_web_origins"] = [trusted.origin]
    e = Envoy(tmp_path / "envoy", listeners={"api": cfg},
              clusters={"api": echo.port, "ts": ts.port})
    e.start()
    try:
        token = opaque(ts, signer, sub="browser-user")
        at, csrf_cookie = seal(token, "csrf-in-the-browser")
        args = {"chromium": chromium(), "api": f"http://127.0.0.1:{e.ports['api']}",
                "trusted": trusted.origin + "/", "untrusted": untrusted.origin + "/",
                "at": at, "csrfCookie": csrf_cookie, "csrf": "csrf-in-the-browser",
                "prefix": PREFIX}
        run = subprocess.run([node(), "browser.mjs", json.dumps(args)], cwd=OIDC_DIR,
                             capture_output=True, text=True, timeout=180)
        assert run.returncode == 0, run.stderr[-2000:]
        seen = json.loads(run.stdout.strip().splitlines()[-1])
        t, u = seen["trusted"], seen["untrusted"]
        assert t["get"]["status"] == 200, t
        api_saw = dict(t["get"]["body"]["headers"])
        assert decode_jwt_payload(api_saw["authorization"][len("Bearer "):])["sub"] == "browser-user"
        assert AT not in api_saw.get("cookie", "") and CSRF not in api_saw.get("cookie", "")
        assert t["post"]["status"] == 200 and t["post"]["body"]["method"] == "POST", t["post"]
        assert t["postWithoutCsrf"]["status"] == 401, t["postWithoutCsrf"]
        assert t["postWithoutCsrf"]["body"]["code"] == "csrf_mismatch"
        assert t["postWrongCsrf"]["status"] == 401
        assert t["documentCookie"] == "", "HttpOnly: the page never sees the cookies"
        assert "error" in u["get"] and "error" in u["post"], u
        c = e.counters()
        # One preflight answered (the browser keeps it max_age_s), the untrusted page's refused.
        assert c["cors_preflight_answered"] >= 1 and c["cors_preflight_refused"] >= 1
        assert c["denied_origin"] >= 1
    finally:
        e.stop()
        trusted.stop()
        untrusted.stop()
