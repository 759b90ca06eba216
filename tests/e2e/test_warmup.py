"""Warm-up: with `verify.jwks`, the key set is fetched when the filter starts. Requests that
need it before that fetch completes wait for it (bounded by `verify.jwks.timeout_ms`) instead of
being refused; only a fetch that failed (or ran out of time) gets 502 `jwks_unavailable`.

Each test starts its own Envoy (two workers) against a token service whose JWKS answers late,
and sends requests the moment Envoy reports ready: introspections whose JWT must be verified
(the answer waits) and split tokens verified on lookup (the request waits)."""

import json
import threading
import time

import pytest

from harness.envoy import Envoy, base_config, bearer, fresh, request
from harness.services import Signer, TokenService
from harness.split import PUBLISH, SECRET, store_key

ISS, AUD = "https://login.example.com", "api.example.com"


@pytest.fixture
def vts():
    ts = TokenService(signer=Signer("ES256", kid="warm-1")).start()
    yield ts
    ts.stop()


def config(timeout_ms):
    verify = {"issuer": ISS, "audiences": [AUD], "algorithms": ["ES256"],
              "jwks": {"cluster": "token_service", "path": "/jwks", "timeout_ms": timeout_ms}}
    phantom = base_config()
    phantom["verify"] = verify
    split = {"required_scopes": ["read"], "verify": verify,
             "split": {"max_entries": 1000, "publish": {"path": PUBLISH, "secret": SECRET}}}
    return {"phantom": phantom, "split": split}


def burst(e, vts, n=16):
    """Publishes a split token, then sends n phantom and n split requests at once; returns
    (statuses, seconds each took)."""
    now = int(time.time())
    jwt = vts.signer.mint({"iss": ISS, "aud": AUD, "sub": "warm", "scope": "read", "iat": now, "exp": now + 300})
    hp, sig = jwt.rsplit(".", 1)
    body = json.dumps({"signature_hash": store_key(sig), "header_payload": hp, "expires_at": now + 300})
    r = request(e.ports["split"], PUBLISH, [("content-type", "application/json")] + bearer(SECRET),
                method="POST", body=body.encode())
    assert r.status == 204, r.body
    results = []
    lock = threading.Lock()

    def send(port, token):
        t0 = time.time()
        status = request(port, f"/warm/{fresh()}", bearer(token), timeout=10).status
        with lock:
            results.append((status, time.time() - t0))

    threads = [threading.Thread(target=send, args=(e.ports["phantom"], fresh("warm"))) for _ in range(n)]
    threads += [threading.Thread(target=send, args=(e.ports["split"], sig)) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [s for s, _ in results], [d for _, d in results]


def test_requests_at_start_wait_for_the_key_set(tmp_path, vts, echo):
    vts.jwks_delay = 0.8
    e = Envoy(tmp_path / "envoy", listeners=config(timeout_ms=3000),
              clusters={"api": echo.port, "token_service": vts.port}, concurrency=2)
    e.start()
    try:
        statuses, took = burst(e, vts)
        assert statuses == [200] * len(statuses), statuses
        assert e.counters().get("denied_jwks_unavailable", 0) == 0
        assert max(took) < 3.5, took
        print(f"{len(statuses)} requests at start: all 200, slowest {max(took):.2f} s (the JWKS took 0.8 s)")
    finally:
        e.stop()


def test_a_key_set_that_does_not_come_in_time_is_502(tmp_path, vts, echo):
    vts.jwks_delay = 3.0
    e = Envoy(tmp_path / "envoy", listeners=config(timeout_ms=500),
              clusters={"api": echo.port, "token_service": vts.port}, concurrency=2)
    e.start()
    try:
        statuses, took = burst(e, vts, n=4)
        assert set(statuses) == {502}, statuses
        # Refused once the fetch timed out (500 ms) or the wait passed its bound, not later.
        assert max(took) < 2.0, took
    finally:
        e.stop()


def test_a_failed_first_fetch_is_502_at_once(tmp_path, vts, echo):
    vts.jwks_status = 503
    e = Envoy(tmp_path / "envoy", listeners=config(timeout_ms=3000),
              clusters={"api": echo.port, "token_service": vts.port}, concurrency=2)
    e.start()
    try:
        time.sleep(0.5)  # the first fetch has failed by now
        statuses, took = burst(e, vts, n=4)
        assert set(statuses) == {502}, statuses
        assert max(took) < 1.0, took
    finally:
        e.stop()


def test_requests_waiting_for_the_keys_go_on_without_the_headers_the_filter_owns(tmp_path, vts, echo):
    """A request parked at start goes on, once the keys are in, exactly as it would have after:
    the `_` spellings of owned headers, the method overrides and the DPoP header removed."""
    vts.jwks_delay = 0.8
    cfg = config(timeout_ms=3000)["split"]
    cfg["dpop"] = {}
    cfg["claims_to_headers"] = [{"claim": "sub", "header": "x-user-id"}]
    cfg["policies"] = [{"name": "orders", "match": {"path_prefix": "/orders/"}}]
    e = Envoy(tmp_path / "envoy", listeners={"split": cfg},
              clusters={"api": echo.port, "token_service": vts.port}, concurrency=2)
    e.start()
    try:
        now = int(time.time())
        jwt = vts.signer.mint({"iss": ISS, "aud": AUD, "sub": "warm", "scope": "read", "iat": now,
                               "exp": now + 300})
        hp, sig = jwt.rsplit(".", 1)
        body = json.dumps({"signature_hash": store_key(sig), "header_payload": hp, "expires_at": now + 300})
        r = request(e.ports["split"], PUBLISH, [("content-type", "application/json")] + bearer(SECRET),
                    method="POST", body=body.encode())
        assert r.status == 204, r.body
        r = request(e.ports["split"], "/x", bearer(sig) + [
            ("x_user_id", "mallory"), ("dpop", "a.b.c"), ("x-http-method-override", "DELETE"),
            ("x_http_method_override", "DELETE")], timeout=10)
        assert r.status == 200, r.body
        seen = dict(r.json()["headers"])
        assert seen["x-user-id"] == "warm"
        for name in ("x_user_id", "dpop", "x-http-method-override", "x_http_method_override"):
            assert name not in seen, (name, seen)
        assert e.counters().get("denied_jwks_unavailable", 0) == 0
    finally:
        e.stop()
