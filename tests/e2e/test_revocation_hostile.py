"""Revocation and NumericDates attacked as a stranger would, in a real Envoy: a flood of observed
RFC 7009 revocations against a token revoked that way, two `token` fields in any spelling,
bodies over the bound and chunked, paths near the filter's own (refused) and legitimate ones
beside them (served), JWTs whose `exp` is negative or not a date, fractional dates.

Listeners (one Envoy, one worker):
  small  JWTs accepted as they are on /jwt/ (no scope needed there), revocation with room for 8
         marks, /oauth/revoke observed (routed to an API stub that answers 200, as RFC 7009
         servers do for any token)
  big    the same with the default marks, and policies with lifetime rules"""

import base64
import time
import urllib.parse

import pytest

from harness.envoy import Envoy, bearer, request
from harness.services import Signer

SECRET = "hostile-revocation-secret-01"
ISS = "https://login.example.com"
AUD = "api.example.com"


@pytest.fixture(scope="module")
def signer():
    return Signer("ES256", kid="hostile-rv")


def plugin(signer, **rv):
    block = {"path": "/_revoke", "secret": SECRET, "observe_paths": ["/oauth/revoke"]}
    block.update(rv)
    return {
        "required_scopes": ["read"],
        "phantom": {"cluster": "api", "path": "/introspect", "client_id": "gw", "client_secret": "s"},
        "verify": {"issuer": ISS, "audiences": [AUD], "algorithms": ["ES256"],
                   "jwks_inline": {"keys": [signer.jwk()]}, "clock_skew_s": 5},
        "policies": [
            {"name": "jwt", "match": {"path_prefix": "/jwt/"}, "accept_jwt": True,
             "required_scopes": []},
            {"name": "scoped", "match": {"path_prefix": "/scoped/"}, "accept_jwt": True},
            {"name": "short", "match": {"path_prefix": "/short/"}, "accept_jwt": True,
             "required_scopes": [], "max_lifetime_s": 600},
            {"name": "near", "match": {"path_prefix": "/_revoke"}, "accept_jwt": True,
             "required_scopes": []},
            {"name": "fresh", "match": {"path_prefix": "/fresh/"}, "accept_jwt": True,
             "required_scopes": [], "min_remaining_lifetime_s": 60},
        ],
        "revocation": block,
    }


@pytest.fixture(scope="module")
def renv(tmp_path_factory, signer, echo):
    e = Envoy(tmp_path_factory.mktemp("envoy-revocation-hostile"),
              listeners={"small": {"plugin": plugin(signer, max_marks=8), "vm_id": "revocation_hostile_small"},
                         "big": {"plugin": plugin(signer), "vm_id": "revocation_hostile_big"}},
              clusters={"api": echo.port}, concurrency=1)
    e.start()
    yield e
    e.stop()


def jwt(signer, **claims):
    now = int(time.time())
    full = {"iss": ISS, "aud": AUD, "sub": "alice", "scope": "read", "iat": now - 5,
            "exp": now + 300, "jti": f"j-{time.time_ns()}"}
    full.update(claims)
    for k, v in list(full.items()):
        if v is None:
            del full[k]
    return signer.mint(full)


def observed(port, body, ctype="application/x-www-form-urlencoded", extra=()):
    basic = base64.b64encode(b"app:app-secret").decode()
    return request(port, "/oauth/revoke", [("authorization", "Basic " + basic),
                                           ("content-type", ctype)] + list(extra),
                   method="POST", body=body)


def revoke(port, form):
    return request(port, "/_revoke", [("content-type", "application/x-www-form-urlencoded")]
                   + bearer(SECRET), method="POST", body=urllib.parse.urlencode(form).encode())


# ---- observed marks: a flood evicts a client's real revocation ---------------------------------

def test_a_flood_of_observed_revocations_does_not_bring_back_a_revoked_jwt(renv, signer):
    """A client revokes its stolen JWT through RFC 7009 (observed): refused. Then anyone who can
    call the revocation endpoint (a public client needs no secret) names 8 junk values, each
    answered 200 by the token service: the oldest observed mark gives way to each new one, and
    the revoked JWT is served again."""
    port = renv.ports["small"]
    stolen = jwt(signer, sub="victim")
    assert request(port, "/jwt/x", bearer(stolen)).status == 200
    assert observed(port, urllib.parse.urlencode({"token": stolen}).encode()).status == 200
    assert request(port, "/jwt/x", bearer(stolen)).status == 401, "revoked"
    for i in range(8):
        assert observed(port, f"token=junk-{i}-{time.time_ns()}".encode()).status in (200, 503)
    assert request(port, "/jwt/x", bearer(stolen)).status == 401, \
        "a revoked token came back after observed marks gave way to junk"


# ---- the observed body parser ----------------------------------------------------------------

@pytest.mark.parametrize("body", [b"token=a&%74oken=b", b"token=a&tok%65n=a", b"token=a&token="])
def test_two_token_fields_in_any_spelling_are_refused(renv, echo, body):
    port = renv.ports["big"]
    with echo.lock:
        n = len(echo.requests)
    r = observed(port, body)
    assert r.status == 400, (body, r.status)
    with echo.lock:
        assert len(echo.requests) == n, "never forwarded"


def test_plus_and_percent20_name_the_same_token(renv, signer):
    """`token=a+b` and `token=a%20b` are one value to every form parser."""
    port = renv.ports["big"]
    assert observed(port, b"token=hostile+space+value").status == 200
    assert revoke(port, {"token": "hostile space value"}).status == 200  # renews the same mark


def test_an_observed_body_over_16k_is_refused_not_forwarded(renv, echo):
    port = renv.ports["big"]
    with echo.lock:
        n = len(echo.requests)
    r = observed(port, b"token=x&client_assertion=" + b"a" * (17 * 1024))
    assert r.status == 413, r.status
    with echo.lock:
        assert len(echo.requests) == n


def test_a_chunked_observed_body_is_read(renv, signer):
    """The same body without Content-Length (chunked): the token it names is revoked."""
    import http.client
    port = renv.ports["big"]
    victim = jwt(signer, sub="chunked")
    assert request(port, "/jwt/x", bearer(victim)).status == 200
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = urllib.parse.urlencode({"token": victim}).encode()
    conn.putrequest("POST", "/oauth/revoke")
    conn.putheader("content-type", "application/x-www-form-urlencoded")
    conn.putheader("transfer-encoding", "chunked")
    conn.endheaders()
    half = len(body) // 2
    for part in (body[:half], body[half:]):
        conn.send(b"%x\r\n" % len(part) + part + b"\r\n")
        time.sleep(0.05)
    conn.send(b"0\r\n\r\n")
    r = conn.getresponse()
    r.read()
    conn.close()
    assert r.status == 200
    assert request(port, "/jwt/x", bearer(victim)).status == 401


# ---- near misses: false positives ------------------------------------------------------------

@pytest.mark.parametrize("path", ["/api/_revoke", "/_revoker", "/_revoke.json", "/_revoke-docs",
                                  "/oauth/revoked", "/oauth/revoke-all", "/api/oauth/revoke",
                                  "/_revoke_", "/_revok"])
def test_legitimate_paths_near_the_filters_own_are_served(renv, signer, path):
    port = renv.ports["big"]
    r = request(port, path, bearer(jwt(signer)))
    assert r.status != 400, (path, r.status, r.body[:200])


@pytest.mark.parametrize("path", ["/_revoke%00", "/_revoke%20", "/_revoke.", "/_revoke%2e",
                                  "/_revoke%09", "/%5F%52evoke", "/_revoke%3bx"])
def test_more_near_misses_go_nowhere(renv, echo, signer, path):
    """Servers that cut at NUL, trim trailing whitespace or dots (Windows/IIS, some routers)
    read these as `/_revoke`: like `/_Revoke` and `/_revoke/`, they should be refused (400),
    never forwarded with the body (the token) they carry. Sent with a valid JWT, they reach
    the API."""
    port = renv.ports["big"]
    with echo.lock:
        n = len(echo.requests)
    r = request(port, path, [("content-type", "application/x-www-form-urlencoded")]
                + bearer(jwt(signer)), method="POST", body=b"token=near-miss-carried")
    with echo.lock:
        fwd = [x for x in echo.requests[n:] if "near-miss-carried" in x["body"]]
    assert r.status == 400 and not fwd, (path, r.status, "forwarded with its body")


# ---- NumericDates ----------------------------------------------------------------------------

def test_a_jwt_with_a_negative_exp_is_expired(renv, signer):
    """RFC 7519: exp = -1 is 1969. jwt-simple casts the i64 to u64 (a date in 2106) and the
    filter's own reading fails (its claims default: no exp, no scope): on a route with no
    required scope the JWT is accepted, and cached for cache.max_ttl_s."""
    port = renv.ports["big"]
    r = request(port, "/jwt/x", bearer(jwt(signer, exp=-1)))
    assert r.status == 401, r.status


def test_a_jwt_expired_long_ago_by_a_wrapped_negative_exp_is_expired(renv, signer):
    """exp = now + 300 - 2**32 (negative: expired before 1970) reads as now + 300 in
    jwt-simple (u64 cast then a 32-bit shift)."""
    port = renv.ports["big"]
    exp = int(time.time()) + 300 - 2 ** 32
    r = request(port, "/jwt/x", bearer(jwt(signer, exp=exp)))
    assert r.status == 401, r.status


def test_max_lifetime_refuses_a_jwt_whose_exp_is_not_a_date(renv, signer):
    port = renv.ports["big"]
    r = request(port, "/short/x", bearer(jwt(signer, exp=-1)))
    assert r.status == 401, r.status


def test_fractional_dates_hold(renv, signer):
    port = renv.ports["big"]
    now = time.time()
    assert request(port, "/jwt/x", bearer(jwt(signer, exp=now + 300.75, iat=now - 1.5))).status == 200
    assert request(port, "/jwt/x", bearer(jwt(signer, exp=now - 40.5))).status == 401
    assert request(port, "/fresh/x", bearer(jwt(signer, exp=now + 30.9))).status == 401
    assert request(port, "/short/x", bearer(jwt(signer, exp=now + 3000.5, iat=now - 1.5))).status == 401
    assert request(port, "/short/x", bearer(jwt(signer, exp=now + 300.5, iat=now - 1.5))).status == 200
    assert request(port, "/jwt/x", bearer(jwt(signer, exp=str(int(now) + 300)))).status == 401
    assert request(port, "/jwt/x", bearer(jwt(signer, exp=1e300))).status in (200, 401)


def test_a_subject_revocation_covers_a_fractional_or_odd_iat(renv, signer):
    port = renv.ports["big"]
    now = time.time()
    a = jwt(signer, sub="frac-user", iat=now - 10.9)
    assert request(port, "/jwt/x", bearer(a)).status == 200
    assert revoke(port, {"sub": "frac-user"}).status == 200
    assert request(port, "/jwt/x", bearer(a)).status == 401
