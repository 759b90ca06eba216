"""A fleet of gateways on Redis (`fleet`): three Envoy processes with 2 workers each, one Redis
behind webdis. The phantom cache's level 2: a token used on every gateway is introspected once;
what Redis holds is sealed under the client's token (a dump reveals no token, no JWT part, no
claim); a value changed in Redis is never forwarded; a fleet that is down, hangs or answers
garbage gives way to introspection."""

import base64
import hashlib
import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness.envoy import Envoy, base_config, bearer, closed_port, forwarded_authorizations, request
from harness.redis import Redis

LOCAL_TTL_S = 2
BOUND_MS = 2000
REVOKE_SECRET = "e2e-fleet-revocation-secret"
ROUTES = (("/oauth/revoke", "token_service"), ("/", "api"))
KEY_LABEL = b"envoy-token-filter fleet v1 phantom key\0"


def fleet_key(token, prefix="tf:"):
    """The documented store key of a phantom entry: base64url(SHA-256(label | SHA-256(token)))."""
    digest = hashlib.sha256(KEY_LABEL + hashlib.sha256(token.encode()).digest()).digest()
    return prefix + "p:" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def fleet_config(cluster="webdis", **fleet):
    cfg = base_config()
    cfg["fleet"] = {"cluster": cluster, "timeout_ms": 300, "local_ttl_s": LOCAL_TTL_S,
                    "revocation_bound_ms": BOUND_MS, **fleet}
    cfg["revocation"] = {"path": "/_revoke", "secret": REVOKE_SECRET, "observe_paths": ["/oauth/revoke"]}
    return cfg


class Hanging:
    """Accepts connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)


class Garbage:
    """Answers every request 200 with `body`."""

    def __init__(self, body):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self):
                length = int(self.headers.get("content-length", "0"))
                self.rfile.read(length)
                self.send_response(200)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    r = Redis(tmp_path_factory.mktemp("fleet-redis"))
    r.start_redis()
    r.start_webdis()
    yield r
    r.stop("webdis")
    r.stop("redis")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, redis, echo, token_service):
    hanging, garbage, huge = Hanging(), Garbage(b"not-a-sealed-value"), Garbage(b"A" * 70_000)
    gateways = {}
    for name in ("a", "b", "c"):
        listeners = {"main": {"plugin": fleet_config(), "routes": ROUTES}}
        clusters = {"api": echo.port, "token_service": token_service.port, "webdis": redis.http_port}
        if name == "a":
            # The same fleet, unreachable, hanging, answering garbage: each its own VM.
            for bad in ("down", "hanging", "garbage", "huge"):
                listeners[bad] = {"plugin": fleet_config(cluster=f"webdis_{bad}"), "vm_id": bad}
            clusters.update({"webdis_down": closed_port(), "webdis_hanging": hanging.port,
                             "webdis_garbage": garbage.port, "webdis_huge": huge.port})
        e = Envoy(tmp_path_factory.mktemp(f"fleet-{name}"), listeners=listeners, clusters=clusters,
                  concurrency=2)
        e.start()
        gateways[name] = e
    yield gateways
    for e in gateways.values():
        e.stop()


def port(fleet, name, listener="main"):
    return fleet[name].ports[listener]


def wait_for_key(redis, key, timeout=5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if redis.cli("EXISTS", key).strip() == "1":
            return
        time.sleep(0.05)
    raise AssertionError(f"{key} never written")


def delta(before, after, name):
    return after.get(name, 0) - before.get(name, 0)


def test_a_token_used_on_every_gateway_is_introspected_once(fleet, redis, token_service):
    token = f"act-{uuid.uuid4().hex}"
    r = request(port(fleet, "a"), "/orders", bearer(token))
    assert r.status == 200
    jwt = forwarded_authorizations(r)[0]
    wait_for_key(redis, fleet_key(token))
    ttl = int(redis.cli("TTL", fleet_key(token)))
    assert 280 <= ttl <= 300, f"the entry's remaining life: {ttl}"
    before = {n: fleet[n].counters() for n in "bc"}
    # Both workers of each gateway, many times.
    for name in ("b", "c", "a", "b", "c") * 4:
        r = request(port(fleet, name), "/orders", bearer(token))
        assert r.status == 200 and forwarded_authorizations(r) == [jwt], name
    assert len(token_service.calls_for(token)) == 1, "one introspection for the whole fleet"
    for name in "bc":
        after = fleet[name].counters()
        assert 1 <= delta(before[name], after, "fleet_hit") <= 2, name  # at most once per worker
        assert delta(before[name], after, "introspection_calls") == 0, name


def test_an_inactive_answer_is_shared_for_negative_ttl(fleet, redis, token_service):
    token = f"inactjson-{uuid.uuid4().hex}"
    assert request(port(fleet, "a"), "/x", bearer(token)).status == 401
    wait_for_key(redis, fleet_key(token))
    for name in ("b", "c"):
        assert request(port(fleet, name), "/x", bearer(token)).status == 401
    assert len(token_service.calls_for(token)) == 1


def test_a_dump_of_redis_reveals_no_token_no_jwt_part_and_no_claim(fleet, redis):
    tokens, jwts = [], []
    for i in range(5):
        token = f"act-{uuid.uuid4().hex}"
        r = request(port(fleet, "abc"[i % 3]), "/orders", bearer(token))
        assert r.status == 200
        tokens.append(token)
        jwts.append(forwarded_authorizations(r)[0][len("Bearer "):])
    for token in tokens:
        wait_for_key(redis, fleet_key(token))
    dump = redis.dump()
    assert len(dump) >= 5
    secrets = list(tokens)
    for jwt in jwts:
        parts = jwt.split(".")
        secrets += parts
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        secrets += [str(claims["sub"]), str(claims["jti"]), claims["scope"]]
        # The base64 of any part, standard or URL-safe, padded or not.
        for p in parts[:2]:
            raw = base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))
            secrets += [base64.b64encode(raw).decode().rstrip("="), base64.b64encode(p.encode()).decode().rstrip("=")]
    for key, value in dump.items():
        blob = key.encode() + b" " + value
        # The value opened as base64url is ciphertext: search it too.
        try:
            blob += base64.urlsafe_b64decode(value + b"=" * (-len(value) % 4))
        except ValueError:
            pass
        for secret in secrets:
            assert secret.encode() not in blob, f"{key} holds a secret"
        for token in tokens:
            for h in (hashlib.sha256(token.encode()).hexdigest(),
                      base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()):
                assert h.encode() not in blob, "not even the token's SHA-256"


def _tampered(redis, token, how, other_value, jwt):
    key = fleet_key(token)
    value = redis.dump()[key]
    raw = base64.urlsafe_b64decode(value + b"=" * (-len(value) % 4))
    if how == "bit flip":
        flipped = bytearray(raw)
        flipped[len(flipped) // 2] ^= 1
        return base64.urlsafe_b64encode(bytes(flipped)).rstrip(b"=")
    if how == "truncated":
        return value[:-4]
    if how == "another entry's value":
        return other_value
    if how == "a plain header.payload":
        header, payload, _ = jwt.split(".")
        forged = {"sub": "admin", "scope": "read write admin", "exp": int(time.time()) + 300}
        payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
        return f"{header}.{payload}".encode()
    if how == "a plain JWT":
        return jwt.encode()
    raise ValueError(how)


@pytest.mark.parametrize("how", ["bit flip", "truncated", "another entry's value", "a plain header.payload",
                                 "a plain JWT"])
def test_a_value_changed_in_redis_is_never_forwarded(fleet, redis, token_service, how):
    token, other = f"act-{uuid.uuid4().hex}", f"act-{uuid.uuid4().hex}"
    r = request(port(fleet, "a"), "/orders", bearer(token))
    jwt = forwarded_authorizations(r)[0][len("Bearer "):]
    assert request(port(fleet, "a"), "/orders", bearer(other)).status == 200
    wait_for_key(redis, fleet_key(token))
    wait_for_key(redis, fleet_key(other))
    forged = _tampered(redis, token, how, redis.dump()[fleet_key(other)], jwt)
    redis.set(fleet_key(token), forged)
    before = fleet["b"].counters()
    r = request(port(fleet, "b"), "/orders", bearer(token))
    assert r.status == 200
    got = forwarded_authorizations(r)[0][len("Bearer "):]
    # Introspected again (the token service makes a new JWT each time), never what Redis held.
    assert got != jwt and not got.startswith(forged.decode())
    assert len(token_service.calls_for(token)) == 2, "B introspected it"
    after = fleet["b"].counters()
    assert delta(before, after, "fleet_seal_failed") == 1
    assert delta(before, after, "fleet_hit") == 0


@pytest.mark.parametrize("bad,counter", [("down", "fleet_error"), ("hanging", "fleet_error"),
                                         ("garbage", "fleet_seal_failed"), ("huge", "fleet_error")])
def test_a_fleet_down_hanging_or_answering_garbage_gives_way_to_introspection(fleet, token_service, bad, counter):
    before = fleet["a"].counters()
    token = f"act-{uuid.uuid4().hex}"
    t0 = time.time()
    r = request(port(fleet, "a", bad), "/orders", bearer(token))
    took = time.time() - t0
    assert r.status == 200
    assert len(token_service.calls_for(token)) == 1
    after = fleet["a"].counters()
    assert delta(before, after, counter) >= 1
    if bad == "hanging":
        assert took < 2, f"bounded by fleet.timeout_ms: {took:.2f} s"
    # Then cached by this gateway as usual: no fleet call, no introspection.
    assert request(port(fleet, "a", bad), "/orders", bearer(token)).status == 200
    assert len(token_service.calls_for(token)) == 1


def test_redis_stopped_then_back(fleet, redis, token_service):
    """webdis answers 503 while Redis is down: every gateway introspects (counted), and shares
    again once Redis is back."""
    redis.stop("redis")
    try:
        token = f"act-{uuid.uuid4().hex}"
        before = fleet["b"].counters()
        assert request(port(fleet, "b"), "/orders", bearer(token)).status == 200
        assert request(port(fleet, "c"), "/orders", bearer(token)).status == 200
        assert len(token_service.calls_for(token)) == 2
        after = fleet["b"].counters()
        assert delta(before, after, "fleet_error") >= 1
        assert delta(before, after, "fleet_write_failed") >= 1
    finally:
        redis.start_redis()
    deadline = time.time() + 10
    while True:
        token = f"act-{uuid.uuid4().hex}"
        assert request(port(fleet, "b"), "/orders", bearer(token)).status == 200
        if redis.cli("EXISTS", fleet_key(token)).strip() == "1":
            break
        assert time.time() < deadline, "the fleet did not recover"
        time.sleep(0.3)
    assert request(port(fleet, "c"), "/orders", bearer(token)).status == 200
    assert len(token_service.calls_for(token)) == 1


def revoke(port_, form):
    return request(port_, "/_revoke", [("content-type", "application/x-www-form-urlencoded"),
                                       ("authorization", f"Bearer {REVOKE_SECRET}")],
                   method="POST", body=form.encode())


def refused_everywhere_within_the_bound(fleet, names, token, t0):
    """Each gateway refuses `token` (on both workers) within the bound, measured from `t0`."""
    took = {}
    for name in names:
        # Refused by every worker: ten answers in a row (each on a new connection).
        streak, since = 0, None
        while streak < 10:
            status = request(port(fleet, name), "/orders", bearer(token)).status
            assert status in (200, 401), status
            if status == 401:
                since = since or time.time()
                streak += 1
            else:
                streak, since = 0, None
                assert time.time() - t0 < BOUND_MS / 1000 + 1, f"{name} still serves it"
                time.sleep(0.02)
        took[name] = round((since - t0) * 1000)
    print(f"revocation refused within (ms, bound {BOUND_MS}): {took}")
    assert all(ms <= BOUND_MS for ms in took.values()), took
    return took


def used_everywhere(fleet, token):
    for name in ("a", "b", "c") * 4:
        assert request(port(fleet, name), "/orders", bearer(token)).status == 200


def test_a_token_revoked_at_one_gateway_is_refused_at_every_other_within_the_bound(fleet, redis):
    token = f"act-{uuid.uuid4().hex}"
    used_everywhere(fleet, token)
    assert revoke(port(fleet, "a"), f"token={token}").status == 200
    t0 = time.time()
    assert request(port(fleet, "a"), "/orders", bearer(token)).status == 401
    refused_everywhere_within_the_bound(fleet, ("b", "c"), token, t0)
    assert redis.cli("EXISTS", fleet_key(token)).strip() == "0", "its sealed entry deleted"
    assert fleet["a"].counters()["fleet_revocations_published"] >= 1
    assert fleet["b"].counters()["fleet_revocations_applied"] >= 1


def test_a_subject_revoked_at_one_gateway_is_refused_at_every_other_within_the_bound(fleet, redis):
    token = f"act-{uuid.uuid4().hex}"
    used_everywhere(fleet, token)
    sub = "user-" + hashlib.sha256(token.encode()).hexdigest()[:8]
    assert revoke(port(fleet, "b"), f"sub={sub}").status == 200
    refused_everywhere_within_the_bound(fleet, ("a", "c"), token, time.time())
    # The ring names the subject by a hash only.
    assert not any(sub.encode() in v for v in redis.dump().values())


def test_a_revocation_seen_on_its_way_to_the_token_service_reaches_the_fleet(fleet, token_service):
    token = f"act-{uuid.uuid4().hex}"
    used_everywhere(fleet, token)
    r = request(port(fleet, "c"), "/oauth/revoke", [("content-type", "application/x-www-form-urlencoded")],
                method="POST", body=f"token={token}&token_type_hint=access_token".encode())
    assert r.status == 200
    refused_everywhere_within_the_bound(fleet, ("a", "b"), token, time.time())


def test_a_revocation_made_while_redis_is_down_reaches_the_fleet_once_it_is_back(fleet, redis):
    token = f"act-{uuid.uuid4().hex}"
    used_everywhere(fleet, token)
    redis.stop("webdis")
    try:
        assert revoke(port(fleet, "a"), f"token={token}").status == 200
        time.sleep(BOUND_MS / 1000 + 0.5)
        assert request(port(fleet, "b"), "/orders", bearer(token)).status == 200, "B cannot know yet"
    finally:
        redis.start_webdis()
    refused_everywhere_within_the_bound(fleet, ("b", "c"), token, time.time())
