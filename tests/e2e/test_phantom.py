"""Phantom token flow, end to end: the real .wasm in a real Envoy 1.40.

Each test uses its own opaque tokens (a fresh suffix), so tests do not share cache entries.
The stub token service decides its answer from the token's prefix (see tests/harness/services.py).
"""

import base64
import socket
import struct
import threading
import time
import uuid

import pytest
from harness.envoy import Envoy, base_config, bearer, fresh, request, seen_by_api

WWW = "www-authenticate"


def assert_refused(echo, reply, marker, status, challenge=None, code=None):
    assert reply.status == status, reply.body
    assert reply.header(WWW) == challenge
    if code is not None:
        assert reply.json()["code"] == code
        assert reply.header("content-type") == "application/json"
    assert seen_by_api(echo, marker) == [], "a refused request must not reach the API"


# --- reply table ---------------------------------------------------------------------------


def test_no_credentials_is_401_without_error(envoy, echo):
    for headers in ([], [("authorization", "")], [("authorization", "Basic Zm9vOmJhcg==")]):
        marker = uuid.uuid4().hex
        r = request(envoy.ports["main"], f"/{marker}", headers)
        assert_refused(echo, r, marker, 401, 'Bearer realm="api"', "unauthorized")


def test_malformed_bearer_is_400_invalid_request(envoy, echo, token_service):
    before = len(token_service.calls)
    for value in ["Bearer", "Bearer a\tb", "Bearer a b", "Bearer ab\"c", "Bearer ===", "Bearer " + "a" * 5000]:
        marker = uuid.uuid4().hex
        r = request(envoy.ports["main"], f"/{marker}", [("authorization", value)])
        assert_refused(echo, r, marker, 400, 'Bearer realm="api", error="invalid_request"', "invalid_request")
    assert len(token_service.calls) == before, "malformed tokens are never sent to the token service"


@pytest.mark.parametrize("prefix", ["inactive", "inactjson"])
def test_inactive_token_is_401_invalid_token_and_negatively_cached(envoy, echo, token_service, prefix):
    token = fresh(prefix)
    for _ in range(3):
        marker = uuid.uuid4().hex
        r = request(envoy.ports["main"], f"/{marker}", bearer(token))
        assert_refused(echo, r, marker, 401, 'Bearer realm="api", error="invalid_token"', "invalid_token")
    assert len(token_service.calls_for(token)) == 1, "inactive answers are cached for negative_ttl_s"


def test_expired_jwt_from_token_service_is_401(envoy, echo):
    marker = uuid.uuid4().hex
    r = request(envoy.ports["main"], f"/{marker}", bearer(fresh("expired")))
    assert_refused(echo, r, marker, 401, 'Bearer realm="api", error="invalid_token"', "invalid_token")


def test_missing_scope_is_403_also_on_cache_hit(envoy, echo, token_service):
    token = fresh("noscope")
    for _ in range(2):
        marker = uuid.uuid4().hex
        r = request(envoy.ports["main"], f"/{marker}", bearer(token))
        assert_refused(echo, r, marker, 403,
                       'Bearer realm="api", error="insufficient_scope", scope="read"', "insufficient_scope")
    assert len(token_service.calls_for(token)) == 1, "the second request was a cache hit"
    # The same token passes where no scope is required.
    assert request(envoy.ports["small"], "/x", bearer(token)).status == 200


@pytest.mark.parametrize("prefix", ["e401", "e403", "e404", "e500", "e502", "e302", "reset", "garbage"])
def test_token_service_failures_are_502(envoy, echo, token_service, prefix):
    token = fresh(prefix)
    marker = uuid.uuid4().hex
    r = request(envoy.ports["main"], f"/{marker}", bearer(token))
    assert_refused(echo, r, marker, 502, None, "token_service_error")
    # Failures are not cached: the next request asks again.
    request(envoy.ports["main"], "/again", bearer(token))
    assert len(token_service.calls_for(token)) == 2


def test_token_service_503_is_503(envoy, echo):
    marker = uuid.uuid4().hex
    r = request(envoy.ports["main"], f"/{marker}", bearer(fresh("e503")))
    assert_refused(echo, r, marker, 503, None, "token_service_unavailable")


def test_unreachable_token_service_is_502(envoy, echo):
    marker = uuid.uuid4().hex
    r = request(envoy.ports["down"], f"/{marker}", bearer(fresh()))
    assert_refused(echo, r, marker, 502, None, "token_service_error")


def test_unknown_cluster_is_502(envoy, echo):
    marker = uuid.uuid4().hex
    r = request(envoy.ports["nocluster"], f"/{marker}", bearer(fresh()))
    assert_refused(echo, r, marker, 502, None, "token_service_error")


def test_slow_token_service_past_timeout_is_502_in_time(envoy, echo):
    marker = uuid.uuid4().hex
    t0 = time.monotonic()
    r = request(envoy.ports["main"], f"/{marker}", bearer(fresh("slow")))
    elapsed = time.monotonic() - t0
    assert_refused(echo, r, marker, 502, None, "token_service_error")
    assert elapsed < 0.5 + 1.0, f"timeout_ms is 500, answered after {elapsed:.2f}s"


def test_head_replies_have_no_body(envoy):
    r = request(envoy.ports["main"], "/", bearer(fresh("inactive")), method="HEAD")
    assert r.status == 401
    assert r.body == b""
    assert r.header(WWW) == 'Bearer realm="api", error="invalid_token"'


# --- forwarding ----------------------------------------------------------------------------


def test_forwards_the_jwt_byte_for_byte_and_never_the_opaque_token(envoy, echo, token_service):
    token = fresh()
    marker = uuid.uuid4().hex
    r = request(envoy.ports["main"], f"/{marker}?q=1", bearer(token) + [("x-other", "kept")])
    assert r.status == 200, r.body
    [call] = token_service.calls_for(token)
    [seen] = seen_by_api(echo, marker)
    auths = [v for k, v in seen["headers"] if k == "authorization"]
    assert auths == [f"Bearer {call['jwt']}"], "exactly one Authorization, the JWT, byte for byte"
    assert seen["path"] == f"/{marker}?q=1"
    for k, v in seen["headers"]:
        assert token not in v, f"opaque token leaked upstream in {k}"


def test_client_authorization_is_overwritten_not_appended(envoy, echo, token_service):
    token = fresh()
    marker = uuid.uuid4().hex
    # Two Authorization headers: Envoy joins them; the result is not a valid credential.
    r = request(envoy.ports["main"], f"/{marker}", bearer(token) + [("authorization", "Bearer other")])
    assert_refused(echo, r, marker, 400, 'Bearer realm="api", error="invalid_request"', "invalid_request")


def test_exact_introspection_request(envoy, token_service):
    token = fresh("act") + "+/=="
    r = request(envoy.ports["main"], "/", bearer(token) + [("cookie", "session=client"), ("x-client", "secret-ish")])
    assert r.status == 200, r.body
    [call] = token_service.calls_for(token)
    h = dict(call["headers"])
    assert call["method"] == "POST"
    assert call["path"] == "/oauth/v2/oauth-introspect"
    assert h["host"] == "login.example.com"
    assert h["content-type"] == "application/x-www-form-urlencoded"
    assert h["accept"] == "application/jwt"
    assert h["authorization"] == "Basic " + base64.b64encode(b"gateway:e2e-test-secret").decode()
    enc = token.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
    assert call["body"] == f"token={enc}"
    assert "cookie" not in h and "x-client" not in h, "no client header reaches the token service"


def test_caching_one_call_for_many_requests(envoy, token_service):
    token = fresh()
    jwts = set()
    for _ in range(10):
        r = request(envoy.ports["main"], "/", bearer(token))
        assert r.status == 200
        jwts.add(dict(r.json()["headers"])["authorization"])
    assert len(token_service.calls_for(token)) == 1
    assert len(jwts) == 1


def test_expiry_refetches_after_exp(envoy, token_service):
    token = fresh("exp2")
    t0 = time.time()
    first = request(envoy.ports["main"], "/", bearer(token))
    second = request(envoy.ports["main"], "/", bearer(token))
    assert first.status == second.status == 200
    if time.time() - t0 < 0.9:  # both well inside exp - 1 s skew
        assert len(token_service.calls_for(token)) == 1
    time.sleep(2.2)
    third = request(envoy.ports["main"], "/", bearer(token))
    assert third.status == 200
    calls = token_service.calls_for(token)
    assert len(calls) >= 2, "a JWT is never served from the cache past its exp"
    assert dict(third.json()["headers"])["authorization"] == f"Bearer {calls[-1]['jwt']}"


def test_cache_control_max_age_bounds_the_cache(envoy, token_service):
    token = fresh("maxage1")
    request(envoy.ports["main"], "/", bearer(token))
    time.sleep(1.2)
    request(envoy.ports["main"], "/", bearer(token))
    assert len(token_service.calls_for(token)) == 2


def test_no_store_is_not_cached(envoy, token_service):
    token = fresh("nostore")
    for _ in range(2):
        assert request(envoy.ports["main"], "/", bearer(token)).status == 200
    assert len(token_service.calls_for(token)) == 2


def test_8kb_jwt(envoy, echo, token_service):
    token = fresh("big")
    marker = uuid.uuid4().hex
    r = request(envoy.ports["main"], f"/{marker}", bearer(token))
    assert r.status == 200, r.body
    [call] = token_service.calls_for(token)
    assert len(call["jwt"]) > 8000
    [seen] = seen_by_api(echo, marker)
    assert dict(seen["headers"])["authorization"] == f"Bearer {call['jwt']}"
    # and from the cache
    again = request(envoy.ports["main"], "/", bearer(token))
    assert dict(again.json()["headers"])["authorization"] == f"Bearer {call['jwt']}"


def test_fifty_client_headers_reach_the_api_unchanged(envoy, echo):
    marker = uuid.uuid4().hex
    extra = [(f"x-h{i:02d}", f"value {i} ;,=/+") for i in range(50)]
    extra += [("accept", "application/vnd.client+json"), ("content-type", "text/csv; charset=utf-8")]
    r = request(envoy.ports["main"], f"/{marker}", bearer(fresh()) + extra, method="POST", body=b"a,b\n1,2\n")
    assert r.status == 200, r.body
    [seen] = seen_by_api(echo, marker)
    got = seen["headers"]
    for pair in extra:
        assert pair in got, f"{pair} did not reach the API"
    assert seen["body"] == "a,b\n1,2\n"


def test_post_body_waits_for_introspection(envoy, echo, token_service):
    """A body arriving while the introspection is in flight must not push the request on."""
    marker = uuid.uuid4().hex
    token = fresh("slow")
    t0 = time.monotonic()
    r = request(envoy.ports["slow_ok"], f"/{marker}", bearer(token), method="POST", body=b"x" * 100_000)
    assert r.status == 200, r.body
    assert time.monotonic() - t0 >= 2.5
    [seen] = seen_by_api(echo, marker)
    assert dict(seen["headers"])["authorization"] == f"Bearer {token_service.calls_for(token)[0]['jwt']}"
    assert len(seen["body"]) == 100_000


def test_slow_token_with_body_refused_is_not_forwarded(envoy, echo):
    marker = uuid.uuid4().hex
    r = request(envoy.ports["main"], f"/{marker}", bearer(fresh("slow")), method="POST", body=b"y" * 50_000)
    assert_refused(echo, r, marker, 502, None, "token_service_error")


def test_cors_preflight_passes_without_credentials(envoy, echo):
    marker = uuid.uuid4().hex
    token = fresh()
    r = request(envoy.ports["main"], f"/{marker}", [("origin", "https://app.example.com"),
                                                    ("access-control-request-method", "POST")] + bearer(token),
                method="OPTIONS")
    assert r.status == 200
    [seen] = seen_by_api(echo, marker)
    assert "authorization" not in dict(seen["headers"]), "even a preflight never forwards the opaque token"
    # A plain OPTIONS is authenticated like any request.
    marker = uuid.uuid4().hex
    r = request(envoy.ports["main"], f"/{marker}", method="OPTIONS")
    assert_refused(echo, r, marker, 401, 'Bearer realm="api"', "unauthorized")


# --- concurrency ---------------------------------------------------------------------------


def parallel(n, fn):
    results = [None] * n
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, fn(i))) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def test_concurrent_requests_with_one_token_make_one_call(envoy, token_service):
    token = fresh("slow")
    before = envoy.counters().get("coalesced", 0)
    results = parallel(10, lambda i: request(envoy.ports["slow_ok"], f"/c{i}", bearer(token)).status)
    assert results == [200] * 10
    assert len(token_service.calls_for(token)) == 1
    assert envoy.counters()["coalesced"] - before == 9


def test_coalesced_requests_with_bodies_all_reach_the_api(envoy, echo, token_service):
    """Waiters are resumed by the request that made the call; their bodies must follow."""
    token = fresh("slow")
    tag = uuid.uuid4().hex
    bodies = [f"{i}:".encode() + b"z" * 30_000 for i in range(6)]
    results = parallel(6, lambda i: request(envoy.ports["slow_ok"], f"/{tag}/{i}", bearer(token),
                                            method="POST", body=bodies[i]).status)
    assert results == [200] * 6
    assert len(token_service.calls_for(token)) == 1
    seen = sorted(seen_by_api(echo, tag), key=lambda r: r["path"])
    assert [r["body"].encode() for r in seen] == bodies


def raw_send(port, path, token):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    return s


def test_leader_reset_then_waiters_answered(envoy, token_service):
    token = fresh("slow")
    leader = raw_send(envoy.ports["slow_ok"], "/leader", token)
    time.sleep(0.3)
    out = {}

    def wait(i):
        out[i] = request(envoy.ports["slow_ok"], f"/w{i}", bearer(token), timeout=15).status

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    # RST the leader's connection while its call is in flight.
    leader.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    leader.close()
    for t in threads:
        t.join(timeout=20)
    assert out == {0: 200, 1: 200}
    assert len(token_service.calls_for(token)) == 2, "the cancelled call was made again, once"


# --- memory --------------------------------------------------------------------------------


def test_memory_stays_flat_past_max_entries(envoy, token_service):
    """max_entries is 50 on this listener; 6000 distinct tokens with 8 KB JWTs pass through.
    Unbounded, the second 3000 would add about 24 MB; bounded, nothing."""

    def batch(n):
        for _ in range(n):
            assert request(envoy.ports["small"], "/", bearer(fresh("big"))).status == 200

    calls_before = envoy.counters()["introspection_calls"]
    batch(3000)
    after_first = envoy.memory_allocated()
    batch(3000)
    after_second = envoy.memory_allocated()
    growth = after_second - after_first
    print(f"Envoy allocated: {after_first} -> {after_second} bytes ({growth:+d})")
    assert growth < 2_000_000, f"memory grew by {growth} bytes over 3000 new tokens"
    assert envoy.counters()["introspection_calls"] - calls_before == 6000


# --- stats and logs ------------------------------------------------------------------------


def test_counters_are_exposed(envoy):
    request(envoy.ports["main"], "/", bearer(fresh()))
    c = envoy.counters()
    for name in ["allowed", "denied_no_credentials", "denied_malformed", "denied_invalid_token",
                 "denied_insufficient_scope", "token_service_error", "token_service_unavailable",
                 "cache_hit", "cache_miss", "introspection_calls", "coalesced", "cors_preflight"]:
        assert name in c, name
    assert c["allowed"] > 0 and c["introspection_calls"] > 0
    prom = envoy.admin_get("/stats/prometheus")
    # Envoy exports the filter's (wasmcustom) counters to Prometheus without a prefix.
    assert "\ntoken_filter_allowed{} " in prom, prom[:2000]


def test_no_token_or_secret_in_envoy_log(envoy, token_service):
    """Runs last in this module: every token used so far, opaque or JWT, is absent from the log
    (written at wasm:trace, the most verbose level the filter uses)."""
    log = envoy.log_path.read_text(errors="replace")
    assert "configured:" in log
    with token_service.lock:
        calls = list(token_service.calls)
    assert len(calls) > 50
    for c in calls:
        assert c["token"] not in log
        if "jwt" in c:
            assert c["jwt"] not in log
            assert c["jwt"].split(".")[2] not in log
    assert "e2e-test-secret" not in log
    assert base64.b64encode(b"gateway:e2e-test-secret").decode() not in log


# --- workers and configuration -------------------------------------------------------------


def test_cache_is_shared_by_all_workers(tmp_path, token_service, echo):
    e = Envoy(tmp_path, {"main": base_config()}, {"api": echo.port, "token_service": token_service.port},
              concurrency=2)
    e.start()
    try:
        token = fresh()
        for i in range(20):
            assert request(e.ports["main"], f"/{i}", bearer(token)).status == 200
        assert len(token_service.calls_for(token)) == 1
    finally:
        e.stop()


@pytest.mark.parametrize("config, field", [
    ('{"phantom": {"cluster": "token_service", "path": "/i", "client_id": "gw", "client_secret": "x", "timeout_ms": 0}}',
     "phantom.timeout_ms"),
    ('{"phantom": {"cluster": "token_service", "path": "/i", "client_id": "gw"}}', "client_secret"),
    ('{"phantom": {"cluster": "token_service", "path": "/i", "client_id": "gw", "client_secret": "x"}, "bogus": 1}',
     "bogus"),
    ("not json", "configuration"),
])
def test_envoy_refuses_a_bad_configuration(tmp_path, token_service, echo, config, field):
    e = Envoy(tmp_path, {"main": config}, {"api": echo.port, "token_service": token_service.port})
    e.start(expect_ready=False)
    try:
        rc = e.proc.wait(timeout=30)
    except Exception:
        e.stop()
        pytest.fail("Envoy started with an invalid filter configuration")
    e.log.close()
    assert rc != 0
    log = e.log_path.read_text(errors="replace")
    assert "invalid configuration" in log and field in log, log[-3000:]
    assert "client_secret\": \"x" not in log


@pytest.mark.parametrize("config, field", [
    ('{"phantom": {"cluster": "token_service", "path": "/i", "client_id": "gw", "client_secret": 7777123456789}}',
     "phantom.client_secret"),
    ('{"split": {"publish": {"path": "/p", "secret": [7777123456789]}}}', "split.publish.secret"),
    ('{"phantom": {"cluster": "token_service", "path": "/i", "client_id": "gw", "client_secret": "x"},'
     ' "verify": {"issuer": "i", "audiences": ["a"], "algorithms": ["HS256"],'
     ' "jwks_inline": {"keys": [{"kty": "oct", "k": 7777123456789}]}}}', "verify.jwks_inline"),
], ids=["numeric-client-secret", "array-publish-secret", "numeric-oct-k"])
def test_a_refused_configuration_never_logs_a_secret_value(tmp_path, token_service, echo, config, field):
    """A secret of the wrong type is refused, and the critical log line names the field and the
    expected type, never the value (serde's own message quotes it)."""
    e = Envoy(tmp_path, {"main": config}, {"api": echo.port, "token_service": token_service.port})
    e.start(expect_ready=False)
    try:
        rc = e.proc.wait(timeout=30)
    except Exception:
        e.stop()
        pytest.fail("Envoy started with an invalid filter configuration")
    e.log.close()
    assert rc != 0
    log = e.log_path.read_text(errors="replace")
    refused = [line for line in log.splitlines() if "invalid configuration" in line]
    assert refused and field in refused[0], log[-3000:]
    assert "7777123456789" not in log
