"""Hostile tests of `fleet` (issue 28), from a probe by a stranger: real Envoys, Redis and webdis.
Six of these failed on the first build of the fleet (a revocation lost after Redis restarted
empty, an entry forged by a token's holder who can write Redis, two fleets in one VM sharing
cursors, revocations lost past the 256-slot local log, ring numbers past 1e14, the docs' claim
about token hashes); the others are attacks that held up."""

import base64
import hashlib
import itertools
import json
import struct
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from harness.envoy import Envoy, bearer, request
from harness.oidc import DpopClient
from harness.services import mint_jwt
from harness.split import new_jwt, publish, split_jwt, store_key, token_request
from harness.fleet import (BOUND_MS, ORIGIN, ROUTES, fleet_config, phantom_keys, redis_and_webdis,
                           revoke, split_config)

SLOW_BOUND_MS = 10000
# The local log's size on the first build (storage::revocation::LOG_SLOTS, 4096 since): more
# revocations than that while webdis is down lost the oldest.
LOG_SLOTS = 256


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    yield from redis_and_webdis(tmp_path_factory.mktemp("hostile-redis"))


class HostileWebdis:
    """Stands in for webdis: every answer well-formed HTTP, its content hostile. Ring pages whose
    counter jumps to u64::MAX, goes back to 0, or is huge; entries with wrong numbers and types;
    EVAL always 'appended'; the nonce key garbage; every DPoP claim 'fresh'; every GET 64 KB."""

    def __init__(self):
        counters = itertools.cycle(["18446744073709551615", None, "18446744073709551551", "0", "5",
                                    "9223372036854775807", "-1", "1e3", 7, "99999999999999999999999"])
        lock = threading.Lock()
        self.paths = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self):
                length = int(self.headers.get("content-length", "0"))
                self.rfile.read(length)
                path = self.path
                with lock:
                    outer.paths.append(path)
                    counter = next(counters)
                if path.startswith("/MGET/"):
                    body = json.dumps({"MGET": [counter, "1:AAAA", None, 5, {"a": 1}, "18446744073709551615:AA",
                                                "2:" + "A" * 2000, ":", "x:y"] + ["3:AQ"] * 60}).encode()
                elif path.startswith("/EVAL/"):
                    body = b'{"EVAL":18446744073709551615}'
                elif path.startswith("/SET/") and path.endswith("/NX/GET"):
                    body = json.dumps({"SET": "A" * 43 + "\u0000"}).encode()
                elif path.startswith("/SET/"):
                    body = b'{"SET":[true,"OK"]}'
                elif path.startswith("/GET/"):
                    body = b"A" * 65535
                else:
                    body = b'{"DEL":1}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def hostile():
    h = HostileWebdis()
    yield h
    h.server.shutdown()


@pytest.fixture(scope="module")
def gw(hostile, tmp_path_factory, redis, echo, token_service):
    gateways = {}
    clusters = {"api": echo.port, "token_service": token_service.port, "webdis": redis.http_port,
                "webdis_hostile": hostile.port}
    for name in ("a", "b"):
        listeners = {
            "main": {"plugin": fleet_config(), "routes": ROUTES, "vm_id": "main"},
            # A slow ring read (every 9.5 s) on a ring of its own: room to act between reads.
            "slow": {"plugin": fleet_config(bound_ms=SLOW_BOUND_MS, key_prefix="ts:"), "routes": ROUTES,
                     "vm_id": "slow"},
            "dpop": {"plugin": {**fleet_config(), "dpop": {"origin": ORIGIN}}, "vm_id": "dpop"},
            "hostile": {"plugin": {**fleet_config(cluster="webdis_hostile"),
                                   "dpop": {"origin": ORIGIN, "nonce": True}},
                        "routes": ROUTES, "vm_id": "hostile"},
            "split": {"plugin": split_config(), "vm_id": "split",
                      "routes": (("/oauth/token", "token_service"), ("/", "api"))},
            # Two fleets (two key prefixes): on gateway A in ONE VM (two filter configurations
            # sharing a vm_id, which cache.namespace is there to support), on B each its own.
            "x": {"plugin": fleet_config(key_prefix="x:"), "routes": ROUTES,
                  "vm_id": "xy" if name == "a" else "x"},
            "y": {"plugin": fleet_config(key_prefix="y:"), "routes": ROUTES,
                  "vm_id": "xy" if name == "a" else "y"},
        }
        e = Envoy(tmp_path_factory.mktemp(f"hostile-{name}"), listeners=listeners, clusters=clusters,
                  concurrency=2)
        e.start()
        gateways[name] = e
    yield gateways
    for e in gateways.values():
        e.stop()


def port(gw, name, listener="main"):
    return gw[name].ports[listener]


def token():
    return f"act-{uuid.uuid4().hex}"


def refused_within(port_, tok, deadline):
    """Whether `tok` is refused (401 on ten requests in a row: both workers) before `deadline`."""
    streak = 0
    while time.time() < deadline:
        status = request(port_, "/orders", bearer(tok)).status
        assert status in (200, 401), status
        streak = streak + 1 if status == 401 else 0
        if streak >= 10:
            return True
        if status == 200:
            time.sleep(0.05)
    return False


def wait_counter(e, name, above, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if e.counters().get(name, 0) > above:
            return True
    return False


# ---- things that held up ----------------------------------------------------------------------

def test_publish_signature_hostile_values_are_refused(gw):
    """The publish API's `signature`: duplicated keys, a mismatching one, a huge one, a
    non-base64url one, a non-string: all 400, never stored (held up)."""
    p = port(gw, "a", "split")
    jwt = new_jwt()
    hp, sig = split_jwt(jwt)
    other_sig = split_jwt(new_jwt())[1]
    exp = int(time.time()) + 300
    base = f'"signature_hash":"{store_key(sig)}","header_payload":"{hp}","expires_at":{exp}'
    bodies = [
        f'{{{base},"signature":"{sig}","signature":"{other_sig}"}}',
        f'{{{base},"signature":"{other_sig}","signature":"{sig}"}}',
        f'{{{base},"signature":"{other_sig}"}}',
        f'{{{base},"signature":"{sig}="}}',
        f'{{{base},"signature":"{sig[:-1]}+"}}',
        f'{{{base},"signature":"{"A" * 60000}"}}',
        f'{{{base},"signature":123}}',
        f'{{{base},"signature":null}}',
    ]
    for body in bodies:
        r = publish(p, jwt, body=body)
        assert r.status in (400, 413), (r.status, body[:200])
    # Never stored: the split token is unknown.
    assert request(port(gw, "b", "split"), "/orders", bearer(sig)).status in (401, 502)


def test_envoy_debug_log_holds_no_token_signature_or_jwt(gw, redis):
    """Envoy's log at wasm:debug holds no opaque token, split signature, or JWT part (held up)."""
    secrets = []
    for name in ("a", "b"):
        t = token()
        assert request(port(gw, name), "/orders", bearer(t)).status == 200
        secrets.append(t)
    r = token_request(port(gw, "a", "split"))
    sig = r.json()["access_token"]
    assert request(port(gw, "b", "split"), "/orders", bearer(sig)).status == 200
    secrets.append(sig)
    jwt = new_jwt()
    assert publish(port(gw, "a", "split"), jwt, with_signature=True).status == 204
    secrets += jwt.split(".")
    time.sleep(0.5)
    for name in ("a", "b"):
        log = gw[name].log_path.read_text(errors="replace")
        for s in secrets:
            assert s not in log, f"{name}'s log holds a secret"


@pytest.fixture(scope="module")
def client():
    c = DpopClient()
    yield c
    c.stop()


def test_one_dpop_proof_sent_to_two_gateways_at_once_is_accepted_once(gw, client, token_service):
    """The same proof at A and B at the same instant: SET NX decides, one 200 (held up)."""
    key = client.key("ES256")
    now = int(time.time())
    jwt = mint_jwt({"iss": "https://login.example.com", "sub": f"user-{uuid.uuid4().hex[:8]}",
                    "scope": "read", "iat": now, "exp": now + 300, "cnf": {"jkt": key["jkt"]}})
    tok = token_service.script(jwt)
    # Known to both gateways first (each its own proof).
    for name in ("a", "b"):
        proof = client.proof(key, "GET", f"{ORIGIN}/orders", token=tok)
        r = request(port(gw, name, "dpop"), "/orders", [("authorization", f"DPoP {tok}"), ("dpop", proof)])
        assert r.status == 200, r.body
    for _ in range(5):
        proof = client.proof(key, "GET", f"{ORIGIN}/orders", token=tok)
        statuses = {}
        go = threading.Barrier(2)

        def send(name):
            go.wait()
            statuses[name] = request(port(gw, name, "dpop"), "/orders",
                                     [("authorization", f"DPoP {tok}"), ("dpop", proof)]).status
        threads = [threading.Thread(target=send, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(statuses.values()) == [200, 401], statuses


def test_a_hostile_webdis_traps_nothing_and_forwards_nothing_it_should_not(gw, hostile, client, token_service):
    """Hostile answers to every fleet call for 8 s (ring pages with counters that jump and go
    back, crafted entries, lying EVAL, a garbage nonce key, 64 KB values): the VM keeps working
    (no trap), tokens are still introspected and served, a revocation made here still holds
    here, a DPoP proof replayed at this gateway is still refused although every claim is
    'fresh' (held up)."""
    p = port(gw, "a", "hostile")
    tok = token()
    deadline = time.time() + 8
    while time.time() < deadline:
        assert request(p, "/orders", bearer(token())).status == 200
        assert request(p, "/orders", bearer(tok)).status == 200
        time.sleep(0.1)
    assert sum(path.startswith("/MGET/") for path in hostile.paths) >= 3, "the ring was read"
    assert revoke(p, f"token={tok}").status == 200
    time.sleep(1)
    assert request(p, "/orders", bearer(tok)).status == 401
    # DPoP: nonce from this gateway (its own key: the fleet's is garbage), one use only.
    key = client.key("ES256")
    now = int(time.time())
    bound = token_service.script(mint_jwt({"iss": "https://login.example.com", "sub": "u-hostile",
                                           "scope": "read", "iat": now, "exp": now + 300,
                                           "cnf": {"jkt": key["jkt"]}}))
    first = request(p, "/orders", [("authorization", f"DPoP {bound}"),
                                   ("dpop", client.proof(key, "GET", f"{ORIGIN}/orders", token=bound))])
    assert first.status == 401 and first.header("dpop-nonce")
    proof = client.proof(key, "GET", f"{ORIGIN}/orders", token=bound, nonce=first.header("dpop-nonce"))
    statuses = [request(p, "/orders", [("authorization", f"DPoP {bound}"), ("dpop", proof)]).status
                for _ in range(3)]
    assert statuses == [200, 401, 401], statuses
    log = gw["a"].log_path.read_text(errors="replace")
    assert "panicked" not in log and "wasm trap" not in log.lower() and "Function: proxy_on" not in log


# ---- findings ---------------------------------------------------------------------------------

def test_the_token_hashes_a_dump_holds_are_the_documented_ones(gw, redis):
    """docs/fleet.md, what Redis holds: a split entry's key is the split pattern's lookup key,
    `tf:s:<base64(SHA-256(signature))>` (a token service writing plain entries uses the same), and
    a revoked token's mark in the ring names it by its SHA-256 (marks are what every gateway
    looks tokens up by). Phantom keys are not a token's hash (test_fleet.py's dump test)."""
    r = token_request(port(gw, "a", "split"))
    assert r.status == 200
    sig = r.json()["access_token"]
    digest = hashlib.sha256(sig.encode()).digest()
    revoked = token()
    published = gw["a"].counters().get("fleet_revocations_published", 0)
    assert revoke(port(gw, "a"), f"token={revoked}").status == 200
    assert wait_counter(gw["a"], "fleet_revocations_published", published, 5)
    revoked_digest = hashlib.sha256(revoked.encode()).digest()
    dump = redis.dump()
    assert f"tf:s:{base64.b64encode(digest).decode()}" in dump
    marks = []
    for k, v in dump.items():
        text = v.split(b":", 1)[-1]
        try:
            marks.append(base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4)))
        except ValueError:
            continue
    assert any(revoked_digest in m for m in marks)
    assert not any(sig.encode() in v or sig in k for k, v in dump.items()), "never the signature"


def test_two_fleet_configurations_in_one_vm_each_learn_their_fleets_revocations(gw, redis):
    """Two filter configurations with `fleet` in one VM (gateway A: listeners x and y share
    vm_id "xy", key prefixes x: and y:). The VM's fleet cursors (`fl:rv`: seen, next_read_ms,
    out, the nonce key's) are one shared-data record for both, not one per configuration: one
    root reads its ring and moves the place and the read time of both, so the other fleet's
    revocations are skipped (or its place reset by a false 'gap'). Each fleet must refuse a
    token revoked at another of its gateways within the bound."""
    tx, ty = token(), token()
    for listener, tok in (("x", tx), ("y", ty)):
        for name in ("a", "b"):
            assert request(port(gw, name, listener), "/orders", bearer(tok)).status == 200
    # Revoked at gateway B, one in each fleet (B's x and y are VMs of their own).
    assert revoke(port(gw, "b", "x"), f"token={tx}").status == 200
    assert revoke(port(gw, "b", "y"), f"token={ty}").status == 200
    deadline = time.time() + BOUND_MS / 1000 + 2
    missed = [listener for listener, tok in (("x", tx), ("y", ty))
              if not refused_within(port(gw, "a", listener), tok, deadline)]
    assert not missed, (f"gateway A still forwards the token revoked in fleet(s) {missed} "
                        f"(rings x:rv={redis.cli('GET', 'x:rv').strip()!r} y:rv={redis.cli('GET', 'y:rv').strip()!r}; "
                        f"A applied {gw['a'].counters().get('fleet_revocations_applied', 0)}, "
                        f"gaps {gw['a'].counters().get('fleet_revocation_gap', 0)})")


def test_more_revocations_than_the_local_log_while_webdis_is_down_all_reach_the_fleet(gw, redis):
    """docs/fleet.md: 'the others learn it once Redis is back, within the bound (a revocation is
    published again on every tick until Redis takes it)'. A gateway keeps its unpublished
    revocations in its local log (256 slots): with webdis down, a revocation followed by 256
    more is overwritten (`Entry::Lost`, counted `fleet_revocation_lost`) and never published:
    gateway B forwards the first token for ever (its sealed phantom entry is not deleted either)."""
    first = token()
    for name in ("a", "b"):
        assert request(port(gw, name), "/orders", bearer(first)).status == 200
    redis.stop("webdis")
    try:
        assert revoke(port(gw, "a"), f"token={first}").status == 200
        for _ in range(LOG_SLOTS + 20):
            assert revoke(port(gw, "a"), f"token={token()}").status == 200
        assert request(port(gw, "a"), "/orders", bearer(first)).status == 401
    finally:
        redis.start_webdis()
    back = time.time()
    # Generous: A publishes ~280 marks one call at a time, B reads them 64 a page.
    assert refused_within(port(gw, "b"), first, back + BOUND_MS / 1000 + 8), \
        f"B still forwards a token revoked at A; A counted fleet_revocation_lost=" \
        f"{gw['a'].counters().get('fleet_revocation_lost', 0)}"


def test_revocations_after_the_ring_counter_passed_1e14_still_reach_the_fleet(gw, redis):
    """The ring's append is Lua (`storage::fleet::APPEND`): `n..':'..ARGV[1]` formats the counter
    as a Lua number (a double, `%.14g`), so from 10^14 on an entry is written `1e+14:<mark>`:
    `ring_page` reads its number as not `n`, and every gateway skips it silently (no counter),
    for every revocation from then on. One write to `<prefix>rv` (documented only as 'a
    revocation may not reach every gateway') silently disables fleet revocation until someone
    resets the counter by hand. Expected: after the (counted) gap, new revocations apply."""
    redis.cli("SET", "tf:rv", str(10**14 - 1))
    # Every gateway reads it (counted as a gap) and moves on to the ring's end.
    time.sleep(BOUND_MS / 1000 + 1)
    tok = token()
    for name in ("a", "b"):
        assert request(port(gw, name), "/orders", bearer(tok)).status == 200
    assert revoke(port(gw, "a"), f"token={tok}").status == 200
    t0 = time.time()
    ok = refused_within(port(gw, "b"), tok, t0 + BOUND_MS / 1000 + 2)
    entries = [redis.cli("GET", k).strip() for k in redis.cli("--scan", "--pattern", "tf:rv:*").splitlines()]
    assert ok, f"B still forwards a token revoked at A; the ring holds {[e[:8] for e in entries if 'e+' in e]}"


def test_a_revocation_made_after_redis_restarted_empty_reaches_every_gateway(gw, redis):
    """docs/fleet.md: 'A Redis restarted empty loses the ring (counted fleet_revocation_gap)'.
    What it must not lose is what is revoked after the restart. `fleet_timer::on_read` only
    sees a restart when the new counter is below the gateway's place (`page.counter < after`):
    once the fleet has made as many revocations since the restart as this gateway had seen
    before it, they are taken for entries already read and skipped for ever. Here: one
    revocation before the restart (B's place: 1), one after (the new ring's 1): B never applies
    it."""
    a, b = port(gw, "a", "slow"), port(gw, "b", "slow")
    applied = gw["b"].counters().get("fleet_revocations_applied", 0)
    assert revoke(a, f"token={token()}").status == 200
    # B read the ring and applied it (its next read is ~9.5 s away).
    assert wait_counter(gw["b"], "fleet_revocations_applied", applied, SLOW_BOUND_MS / 1000 + 3)
    # Redis restarted empty.
    redis.stop("redis")
    redis.start_redis()
    deadline = time.time() + 5
    while True:
        try:
            if "PONG" in redis.http("/PING"):
                break
        except OSError:
            pass
        assert time.time() < deadline, "webdis did not reconnect"
        time.sleep(0.05)
    tok = token()
    assert request(a, "/orders", bearer(tok)).status == 200
    assert request(b, "/orders", bearer(tok)).status == 200
    published = gw["a"].counters().get("fleet_revocations_published", 0)
    assert revoke(a, f"token={tok}").status == 200
    t0 = time.time()
    assert wait_counter(gw["a"], "fleet_revocations_published", published, 5), "A published it"
    assert redis.cli("GET", "ts:rv").strip() == "1", "the new ring holds it"
    assert refused_within(b, tok, t0 + SLOW_BOUND_MS / 1000 + 2), \
        "B still forwards, past the bound, a token revoked at A after Redis restarted"


# ---- the seal, as a holder of the token can make it (src/token/seal.rs) -------------------------

_M = 0xFFFFFFFF


def _qr(s, a, b, c, d):
    for x, y, z, r in ((a, b, d, 16), (c, d, b, 12), (a, b, d, 8), (c, d, b, 7)):
        s[x] = (s[x] + s[y]) & _M
        s[z] ^= s[x]
        s[z] = ((s[z] << r) & _M) | (s[z] >> (32 - r))


def _hchacha20(key, nonce16):
    s = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574, *struct.unpack("<8I", key),
         *struct.unpack("<4I", nonce16)]
    for _ in range(10):
        _qr(s, 0, 4, 8, 12); _qr(s, 1, 5, 9, 13); _qr(s, 2, 6, 10, 14); _qr(s, 3, 7, 11, 15)
        _qr(s, 0, 5, 10, 15); _qr(s, 1, 6, 11, 12); _qr(s, 2, 7, 8, 13); _qr(s, 3, 4, 9, 14)
    return struct.pack("<8I", *(s[0:4] + s[12:16]))


def _aead(tok, label):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(tok.encode())


PHANTOM_LABEL = b"envoy-token-filter fleet v1 phantom"


def seal(tok, store_key, plain):
    nonce = uuid.uuid4().bytes + uuid.uuid4().bytes[:8]
    sub = _hchacha20(_aead(tok, PHANTOM_LABEL), nonce[:16])
    ct = ChaCha20Poly1305(sub).encrypt(b"\0" * 4 + nonce[16:], plain, store_key.encode())
    return base64.urlsafe_b64encode(b"\1" + nonce + ct).rstrip(b"=")


def new_key_after(redis, before):
    deadline = time.time() + 5
    while time.time() < deadline:
        new = phantom_keys(redis) - before
        if new:
            assert len(new) == 1, new
            return new.pop()
        time.sleep(0.05)
    raise AssertionError("no fleet entry written")


def test_a_holder_of_an_inactive_token_who_can_write_redis_gets_nothing_forwarded(gw, redis, echo, token_service):
    """docs/fleet.md: 'Nothing is ever forwarded that a single gateway would have refused'. A
    holder of an INACTIVE token who can write to Redis knows the token and the entry's Redis key
    (it appears when the token is first used): sealing an active entry of their own making (any
    JWT, any scope, a far-future expiry) under HKDF(token) alone must not work. The fleet's
    secret (the introspection client's credentials, which clients never see) is in every
    sealing key: the forged entry does not open at B, which introspects and refuses."""
    dead = f"inactive-{uuid.uuid4().hex}"
    before = phantom_keys(redis)
    assert request(port(gw, "a"), "/orders", bearer(dead)).status == 401
    key = new_key_after(redis, before)
    # The forged entry: this token's hash, our JWT and scopes, no identity.
    scope = b"read write admin"
    identity = b"\x00"
    forged_jwt = (base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=") + b"." +
                  base64.urlsafe_b64encode(json.dumps({"sub": "admin", "scope": "read write admin",
                                                       "exp": int(time.time()) + 86400}).encode()).rstrip(b"=") + b".")
    record = (b"pt2\x01" + struct.pack(">Q", int(time.time() * 1000) + 86_400_000)
              + hashlib.sha256(dead.encode()).digest() + struct.pack(">H", len(scope)) + scope
              + identity + forged_jwt)
    redis.set(key, seal(dead, key, record))
    marker = uuid.uuid4().hex
    before = gw["b"].counters()
    r = request(port(gw, "b"), f"/{marker}", bearer(dead))
    assert gw["b"].counters().get("fleet_seal_failed", 0) > before.get("fleet_seal_failed", 0)
    forwarded = [q for q in echo.requests if marker in q["path"]]
    assert r.status == 401 and not forwarded, \
        f"B answered {r.status}; forwarded an inactive token with a forged JWT: {bool(forwarded)}"
