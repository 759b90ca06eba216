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

from harness.envoy import Envoy, bearer, closed_port, forwarded_authorizations, request
from harness.oidc import DpopClient
from harness.services import mint_jwt
from harness.split import new_jwt, publish, split_jwt, token_request
from harness.fleet import (BOUND_MS, ORIGIN, ROUTES, fleet_config, phantom_keys, redis_and_webdis, revoke,
                           split_config)


def first_use(fleet, redis, name, token, path="/orders", listener="main"):
    """`token`'s first request, at gateway `name`: its answer, and the fleet key its entry was
    written under (the key is a hash of the token's hash and the configuration: found by what
    appeared)."""
    before = phantom_keys(redis)
    r = request(port(fleet, name, listener), path, bearer(token))
    deadline = time.time() + 5
    while True:
        new = phantom_keys(redis) - before
        if len(new) == 1:
            return r, new.pop()
        assert len(new) == 0, new
        assert time.time() < deadline, "no entry written"
        time.sleep(0.05)


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
    yield from redis_and_webdis(tmp_path_factory.mktemp("fleet-redis"))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, redis, echo, token_service):
    hanging, garbage, huge = Hanging(), Garbage(b"not-a-sealed-value"), Garbage(b"A" * 70_000)
    gateways = {}
    for name in ("a", "b", "c"):
        listeners = {"main": {"plugin": fleet_config(), "routes": ROUTES},
                     # DPoP behind one public origin (each its own VM: its own shared data).
                     "dpop": {"plugin": fleet_config(dpop={"origin": ORIGIN}), "vm_id": "dpop"},
                     "nonce": {"plugin": fleet_config(dpop={"origin": ORIGIN, "nonce": True}),
                               "vm_id": "nonce"},
                     # Split tokens, their level 2 in the fleet.
                     "split": {"plugin": split_config(), "vm_id": "split",
                               "routes": (("/oauth/token", "token_service"), ("/", "api"))},
                     "plain": {"plugin": split_config(accept_plain_split=True), "vm_id": "plain"}}
        clusters = {"api": echo.port, "token_service": token_service.port, "webdis": redis.http_port}
        if name == "a":
            # The same fleet, unreachable, hanging, answering garbage: each its own VM.
            for bad in ("down", "hanging", "garbage", "huge"):
                listeners[bad] = {"plugin": fleet_config(cluster=f"webdis_{bad}"), "vm_id": bad}
            for bad, when in (("down", "refuse"), ("down", "process")):
                listeners[f"dpop_{bad}_{when}"] = {
                    "plugin": fleet_config(cluster=f"webdis_{bad}",
                                           dpop={"origin": ORIGIN, "fleet_unavailable": when}),
                    "vm_id": f"dpop_{bad}_{when}"}
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


def delta(before, after, name):
    return after.get(name, 0) - before.get(name, 0)


def test_a_token_used_on_every_gateway_is_introspected_once(fleet, redis, token_service):
    token = f"act-{uuid.uuid4().hex}"
    r, key = first_use(fleet, redis, "a", token)
    assert r.status == 200
    jwt = forwarded_authorizations(r)[0]
    ttl = int(redis.cli("TTL", key))
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
    assert first_use(fleet, redis, "a", token, "/x")[0].status == 401
    for name in ("b", "c"):
        assert request(port(fleet, name), "/x", bearer(token)).status == 401
    assert len(token_service.calls_for(token)) == 1


def test_a_dump_of_redis_reveals_no_token_no_jwt_part_and_no_claim(fleet, redis):
    tokens, jwts = [], []
    for i in range(5):
        token = f"act-{uuid.uuid4().hex}"
        r, _ = first_use(fleet, redis, "abc"[i % 3], token)
        assert r.status == 200
        tokens.append(token)
        jwts.append(forwarded_authorizations(r)[0][len("Bearer "):])
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


def _tampered(redis, key, how, other_value, jwt):
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
    r, key = first_use(fleet, redis, "a", token)
    jwt = forwarded_authorizations(r)[0][len("Bearer "):]
    _, other_key = first_use(fleet, redis, "a", other)
    forged = _tampered(redis, key, how, redis.dump()[other_key], jwt)
    redis.set(key, forged)
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
        # The write is answered after the request went on: its failure is counted then.
        deadline = time.time() + 5
        while delta(before, fleet["b"].counters(), "fleet_write_failed") < 1:
            assert time.time() < deadline, "no failed write counted"
            time.sleep(0.05)
        assert delta(before, fleet["b"].counters(), "fleet_error") >= 1
    finally:
        redis.start_redis()
    deadline = time.time() + 10
    while True:
        token = f"act-{uuid.uuid4().hex}"
        before = phantom_keys(redis)
        assert request(port(fleet, "b"), "/orders", bearer(token)).status == 200
        time.sleep(0.3)
        if phantom_keys(redis) - before:
            break
        assert time.time() < deadline, "the fleet did not recover"
    assert request(port(fleet, "c"), "/orders", bearer(token)).status == 200
    assert len(token_service.calls_for(token)) == 1


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
    _, key = first_use(fleet, redis, "a", token)
    used_everywhere(fleet, token)
    assert revoke(port(fleet, "a"), f"token={token}").status == 200
    t0 = time.time()
    assert request(port(fleet, "a"), "/orders", bearer(token)).status == 401
    refused_everywhere_within_the_bound(fleet, ("b", "c"), token, t0)
    assert redis.cli("EXISTS", key).strip() == "0", "its sealed entry deleted"
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


# ---- DPoP across the fleet (proofs made by panva's `dpop`) --------------------------------------

@pytest.fixture(scope="module")
def client():
    c = DpopClient()
    yield c
    c.stop()


def bound_token(token_service, key):
    now = int(time.time())
    jwt = mint_jwt({"iss": "https://login.example.com", "sub": f"user-{uuid.uuid4().hex[:8]}",
                    "scope": "read", "iat": now, "exp": now + 300, "cnf": {"jkt": key["jkt"]}})
    return token_service.script(jwt)


def dpop_call(fleet, name, listener, token, proof):
    return request(port(fleet, name, listener), "/orders",
                   [("authorization", f"DPoP {token}"), ("dpop", proof)])


def test_a_dpop_proof_used_at_one_gateway_is_refused_at_another(fleet, client, token_service):
    key = client.key("ES256")
    token = bound_token(token_service, key)
    proof = client.proof(key, "GET", f"{ORIGIN}/orders", token=token)
    assert dpop_call(fleet, "a", "dpop", token, proof).status == 200
    before = fleet["b"].counters()
    r = dpop_call(fleet, "b", "dpop", token, proof)
    assert r.status == 401 and r.json()["code"] == "invalid_dpop_proof"
    assert delta(before, fleet["b"].counters(), "fleet_dpop_replayed") == 1
    # A new proof of the same key: its first use, at any gateway.
    for name in ("b", "c", "a"):
        fresh_proof = client.proof(key, "GET", f"{ORIGIN}/orders", token=token)
        assert dpop_call(fleet, name, "dpop", token, fresh_proof).status == 200, name
    assert len(token_service.calls_for(token)) == 1


def test_a_nonce_from_one_gateway_works_on_another(fleet, client, token_service):
    key = client.key("Ed25519")
    token = bound_token(token_service, key)
    first = dpop_call(fleet, "a", "nonce", token, client.proof(key, "GET", f"{ORIGIN}/orders", token=token))
    assert first.status == 401 and first.json()["code"] == "use_dpop_nonce"
    nonce = first.header("dpop-nonce")
    assert nonce
    for name in ("b", "c"):
        proof = client.proof(key, "GET", f"{ORIGIN}/orders", token=token, nonce=nonce)
        assert dpop_call(fleet, name, "nonce", token, proof).status == 200, name


@pytest.mark.parametrize("when,status", [("refuse", 503), ("process", 200)])
def test_dpop_when_the_fleet_cannot_answer(fleet, client, token_service, when, status):
    key = client.key("ES256")
    token = bound_token(token_service, key)
    before = fleet["a"].counters()
    proof = client.proof(key, "GET", f"{ORIGIN}/orders", token=token)
    r = dpop_call(fleet, "a", f"dpop_down_{when}", token, proof)
    assert r.status == status, r.body
    after = fleet["a"].counters()
    if when == "refuse":
        assert r.json()["code"] == "fleet_unavailable"
        assert delta(before, after, "denied_fleet_unavailable") == 1
    else:
        assert delta(before, after, "fleet_dpop_process_only") == 1
        # This Envoy's own replay store still refuses a replay.
        assert dpop_call(fleet, "a", f"dpop_down_{when}", token, proof).status == 401


# ---- split tokens, their level 2 in the fleet (sealed) -------------------------------------------

def split_keys(redis):
    return {k for k in redis.cli("--scan", "--pattern", "tf:s:*").splitlines() if k}


def test_a_split_token_made_at_one_gateway_is_served_by_another_from_a_sealed_entry(fleet, redis):
    before = split_keys(redis)
    r = token_request(port(fleet, "a", "split"))
    assert r.status == 200
    sig = r.json()["access_token"]
    r = request(port(fleet, "b", "split"), "/orders", bearer(sig))
    assert r.status == 200
    jwt = forwarded_authorizations(r)[0][len("Bearer "):]
    assert jwt.endswith("." + sig)
    header, payload, _ = jwt.split(".")
    (key,) = split_keys(redis) - before
    value = redis.dump()[key]
    for part in (header, payload, sig):
        assert part.encode() not in value, "sealed"


def test_a_published_split_token_needs_its_signature_and_works_everywhere(fleet, redis):
    jwt = new_jwt()
    assert publish(port(fleet, "a", "split"), jwt).status == 400
    assert publish(port(fleet, "a", "split"), jwt, with_signature=True).status == 204
    r = request(port(fleet, "c", "split"), "/orders", bearer(split_jwt(jwt)[1]))
    assert r.status == 200 and forwarded_authorizations(r) == [f"Bearer {jwt}"]


@pytest.mark.parametrize("how", ["a plain forged header.payload", "another entry's value", "bit flip"])
def test_a_split_entry_changed_in_redis_is_never_glued_and_forwarded(fleet, redis, echo, how):
    jwt, other = new_jwt(), new_jwt()
    before = split_keys(redis)
    assert publish(port(fleet, "a", "split"), jwt, with_signature=True).status == 204
    (key,) = split_keys(redis) - before
    before = split_keys(redis)
    assert publish(port(fleet, "a", "split"), other, with_signature=True).status == 204
    (other_key,) = split_keys(redis) - before
    value = redis.dump()[key]
    if how == "a plain forged header.payload":
        forged = split_jwt(new_jwt(scope="read write admin"))[0].encode()
    elif how == "another entry's value":
        forged = redis.dump()[other_key]
    else:
        raw = bytearray(base64.urlsafe_b64decode(value + b"=" * (-len(value) % 4)))
        raw[len(raw) // 2] ^= 1
        forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=")
    redis.set(key, forged)
    marker = uuid.uuid4().hex
    before = fleet["b"].counters()
    r = request(port(fleet, "b", "split"), f"/{marker}", bearer(split_jwt(jwt)[1]))
    assert r.status == 502 and r.json()["code"] == "store_unavailable"
    assert not [q for q in echo.requests if marker in q["path"]], "never forwarded"
    assert delta(before, fleet["b"].counters(), "fleet_seal_failed") == 1
    # With accept_plain_split (documented as weaker), a plain entry is read as it is.
    if how == "a plain forged header.payload":
        r = request(port(fleet, "b", "plain"), "/orders", bearer(split_jwt(jwt)[1]))
        assert r.status == 200
