"""Proof of possession end to end: tokens bound to a key by a real authorization server
(panva's oidc-provider: DPoP, RFC 9449, and certificate-bound tokens, RFC 8705), proofs made by
a DPoP client library nobody here wrote (panva's `dpop`), client certificates over real TLS
into the real Envoy. Hostile proofs the library would never make are crafted here.

Listeners (one Envoy, two workers, one VM):
  dpop         phantom (JSON introspection of the provider), `dpop` with defaults; the
               policy `payments` (/payments/) has `proof: "required"`
  nonce        as dpop, with `dpop.nonce`
  tiny         as dpop, with a replay store of 8 slots, 4 per key (a VM of its own: one
               replay store per VM)
  small        as dpop, with a replay store of 64 slots (8 per key by default; its own VM)
  flood        as dpop, with a replay store of 2000 slots (250 per key by default; its own VM)
  qa, qb       as dpop, 64 slots, 4 per key, one VM; qb's proofs live 60 s, qa's 300 s
  mtls         HTTPS, client certificate required, `mtls` (the certificate Envoy verified)
  mtls_opt     HTTPS, client certificate optional, `mtls`
  xfcc         HTTPS, client certificate required, Envoy sets x-forwarded-client-cert
               (SANITIZE_SET), `mtls.forwarded_client_cert`
  xfcc_spoof   plain HTTP, `mtls.forwarded_client_cert`, Envoy's default (SANITIZE): a
               client's own x-forwarded-client-cert never reaches the filter
  xfcc_proxy   plain HTTP, `mtls.forwarded_client_cert`, ALWAYS_FORWARD_ONLY: the header
               comes as a proxy in front (not an Envoy) wrote it
  split        split tokens (and their publish API), `dpop`"""

import hashlib
import hmac
import json
import threading
import time
import uuid

import pytest

from harness.envoy import Envoy, request
from harness.oidc import GATEWAY, DpopClient, OpenIdProvider
from harness.services import Signer, b64url, decode_jwt_payload
from harness.split import PUBLISH, SECRET, new_jwt, publish, split_jwt
from harness.tls import Pki

GW_ISS = "https://gateway.example.com"


@pytest.fixture(scope="module")
def op(tmp_path_factory):
    p = OpenIdProvider(tmp_path_factory.mktemp("oidc")).start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def client():
    c = DpopClient()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


def cfg(op, **extra):
    c = {
        "realm": "api",
        "required_scopes": ["read"],
        "phantom": {
            "cluster": "op", "authority": f"127.0.0.1:{op.port}", "path": "/token/introspection",
            "client_id": GATEWAY[0], "client_secret": GATEWAY[1], "timeout_ms": 3000,
            "response": "json",
            "mint": {"issuer": GW_ISS, "audience": "internal-apis", "algorithm": "ES256",
                     "private_key_pem": Signer("ES256").private_pem(), "key_id": "gw-1",
                     "claims": ["sub", "scope", "client_id"], "max_lifetime_s": 120},
        },
        "policies": [{"name": "payments", "match": {"path_prefix": "/payments/"}, "proof": "required"}],
    }
    c.update(extra)
    return c


@pytest.fixture(scope="module")
def penv(tmp_path_factory, op, echo, pki):
    e = Envoy(
        tmp_path_factory.mktemp("envoy-proof"),
        listeners={
            "dpop": cfg(op, dpop={}),
            "nonce": cfg(op, dpop={"nonce": True}),
            # Each in a VM of its own: the replay store is one per VM (its largest size).
            "tiny": {"plugin": cfg(op, dpop={"replay_entries": 8, "max_proofs_per_key": 4}),
                     "vm_id": "tiny"},
            "small": {"plugin": cfg(op, dpop={"replay_entries": 64}), "vm_id": "small"},
            "flood": {"plugin": cfg(op, dpop={"replay_entries": 2000}), "vm_id": "flood"},
            # Two listeners of one VM with other proof windows share each key's count.
            "qa": {"plugin": cfg(op, dpop={"replay_entries": 64, "max_proofs_per_key": 4}),
                   "vm_id": "windows"},
            "qb": {"plugin": cfg(op, dpop={"replay_entries": 64, "max_proofs_per_key": 4,
                                           "max_age_s": 60}), "vm_id": "windows"},
            "mtls": {"plugin": cfg(op, mtls={}), "transport_socket": pki.downstream_tls()},
            "mtls_opt": {"plugin": cfg(op, mtls={}),
                         "transport_socket": pki.downstream_tls(require_client_certificate=False)},
            "xfcc": {"plugin": cfg(op, mtls={"forwarded_client_cert": True}),
                     "transport_socket": pki.downstream_tls(),
                     "hcm": {"forward_client_cert_details": "SANITIZE_SET",
                             "set_current_client_cert_details": {"subject": True}}},
            "xfcc_spoof": cfg(op, mtls={"forwarded_client_cert": True}),
            "xfcc_proxy": {"plugin": cfg(op, mtls={"forwarded_client_cert": True}),
                           "hcm": {"forward_client_cert_details": "ALWAYS_FORWARD_ONLY"}},
            "split": {"required_scopes": ["read"], "dpop": {},
                      "split": {"max_entries": 1000, "publish": {"path": PUBLISH, "secret": SECRET}}},
        },
        clusters={"api": echo.port, "op": op.port},
        concurrency=2,
    )
    e.start()
    yield e
    e.stop()


def url(penv, listener, path, scheme="http"):
    return f"{scheme}://127.0.0.1:{penv.ports[listener]}{path}"


def call(penv, listener, path, token=None, proof=None, scheme="DPoP", method="GET", headers=(),
         tls=None):
    h = list(headers)
    if token is not None:
        h.append(("authorization", f"{scheme} {token}"))
    if proof is not None:
        h.append(("dpop", proof))
    return request(penv.ports[listener], path, headers=h, method=method, tls=tls)


def api_saw(reply):
    """The headers the API received, from the echo's answer."""
    assert reply.status == 200, (reply.status, reply.body)
    return reply.json()["headers"]


def forwarded_claims(reply):
    auth = [v for k, v in api_saw(reply) if k == "authorization"]
    assert len(auth) == 1 and auth[0].startswith("Bearer "), auth
    return decode_jwt_payload(auth[0][len("Bearer "):])


def challenge(reply):
    return [v for k, v in reply.headers if k == "www-authenticate"]


# ---------------------------------------------------------------------------------------------
# DPoP with the provider's bound tokens and the dpop library's proofs

@pytest.mark.parametrize("alg", ["ES256", "Ed25519", "RS256", "PS256"])
def test_a_dpop_bound_token_with_its_proof_reaches_the_api_as_a_bound_jwt(penv, op, client, alg):
    key = client.key(alg)
    token = op.token(dpop=(client, key))
    introspected = op.introspect(token)
    assert introspected["token_type"] == "DPoP" and introspected["cnf"] == {"jkt": key["jkt"]}
    path = f"/payments/{alg}"
    for _ in range(2):  # introspected, then a cache hit: the binding is kept with the token
        proof = client.proof(key, "GET", url(penv, "dpop", path), token=token)
        reply = call(penv, "dpop", path, token, proof)
        claims = forwarded_claims(reply)
        assert claims["cnf"] == {"jkt": key["jkt"]}
        seen = api_saw(reply)
        assert not [v for k, v in seen if k == "dpop"], "the proof is for this hop only"
        assert token not in json.dumps(seen)


def test_a_bound_token_without_its_proof_is_refused(penv, op, client):
    key, other = client.key("ES256"), client.key("ES256")
    token = op.token(dpop=(client, key))
    target = url(penv, "dpop", "/orders/1")
    good = client.proof(key, "GET", target, token=token)
    assert call(penv, "dpop", "/orders/1", token, good).status == 200
    rows = {
        # RFC 9449 §7.2: a DPoP-bound token sent as Bearer is refused, proof or not.
        "as Bearer": call(penv, "dpop", "/orders/1", token, scheme="Bearer"),
        "as Bearer with a proof": call(penv, "dpop", "/orders/1", token,
                                       client.proof(key, "GET", target, token=token), scheme="Bearer"),
        "DPoP without a proof": call(penv, "dpop", "/orders/1", token),
        "another key's proof": call(penv, "dpop", "/orders/1", token,
                                    client.proof(other, "GET", target, token=token)),
    }
    for name, reply in rows.items():
        assert reply.status == 401, (name, reply.status, reply.body)
        assert reply.json()["code"] in ("invalid_token", "invalid_dpop_proof"), name
    assert 'DPoP error="invalid_token"' in " ".join(challenge(rows["another key's proof"]))


def test_a_proof_for_another_request_is_refused(penv, op, client):
    key = client.key("Ed25519")
    token = op.token(dpop=(client, key))
    other_token = op.token(dpop=(client, key))
    here = url(penv, "dpop", "/orders/7")
    rows = {
        "another method": client.proof(key, "POST", here, token=token),
        "another path": client.proof(key, "GET", url(penv, "dpop", "/orders/8"), token=token),
        "another host": client.proof(key, "GET", f"http://api.example.com:{penv.ports['dpop']}/orders/7",
                                     token=token),
        "another scheme": client.proof(key, "GET", url(penv, "dpop", "/orders/7", "https"), token=token),
        "a query in htu": client.proof(key, "GET", here + "?x=1", token=token),
        "another token (ath)": client.proof(key, "GET", here, token=other_token),
        "no ath": client.proof(key, "GET", here),
    }
    for name, proof in rows.items():
        reply = call(penv, "dpop", "/orders/7", token, proof)
        assert reply.status == 401, (name, reply.status, reply.body)
        assert reply.json()["code"] == "invalid_dpop_proof", name
        assert 'DPoP error="invalid_dpop_proof"' in " ".join(challenge(reply)), name
    # The same request with its own proof passes; the query is not part of htu.
    ok = call(penv, "dpop", "/orders/7?page=2", token, client.proof(key, "GET", here, token=token))
    assert ok.status == 200, ok.body


def test_a_proof_is_accepted_once(penv, op, client):
    key = client.key("ES256")
    token = op.token(dpop=(client, key))
    target = url(penv, "dpop", "/orders/replay")
    before = penv.counters()
    proof = client.proof(key, "GET", target, token=token)
    assert call(penv, "dpop", "/orders/replay", token, proof).status == 200
    again = call(penv, "dpop", "/orders/replay", token, proof)
    assert again.status == 401 and again.json()["code"] == "invalid_dpop_proof"
    # At once, from many connections spread over both workers: exactly one passes.
    proof = client.proof(key, "GET", target, token=token)
    statuses = []
    lock = threading.Lock()

    def send():
        s = call(penv, "dpop", "/orders/replay", token, proof).status
        with lock:
            statuses.append(s)

    threads = [threading.Thread(target=send) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] + [401] * 11, statuses
    after = penv.counters()
    assert after.get("dpop_replayed", 0) - before.get("dpop_replayed", 0) == 12


def test_a_full_replay_store_refuses_and_forgets_nothing(penv, op, client):
    # No key may hold more than half of the store (here 4 of 8): three keys fill it.
    keys = [client.key("Ed25519") for _ in range(4)]
    tokens = [op.token(dpop=(client, k)) for k in keys]
    target = url(penv, "tiny", "/orders/t")
    before = penv.counters()
    proofs = [client.proof(k, "GET", target, token=t)
              for k, t, n in zip(keys, tokens, (4, 3, 1)) for _ in range(n)]
    owners = [t for t, n in zip(tokens, (4, 3, 1)) for _ in range(n)]
    statuses = [call(penv, "tiny", "/orders/t", t, p).status for t, p in zip(owners[:4], proofs[:4])]
    # The first key holds its share (4 of 8): its own new proofs wait, with Retry-After.
    over = call(penv, "tiny", "/orders/t", tokens[0], client.proof(keys[0], "GET", target, token=tokens[0]))
    assert over.status == 429 and over.json()["code"] == "dpop_key_quota", over.body
    assert int(over.header("retry-after")) > 0
    statuses += [call(penv, "tiny", "/orders/t", t, p).status for t, p in zip(owners[4:], proofs[4:])]
    assert statuses == [200] * 8, statuses
    for _ in range(2):
        full = call(penv, "tiny", "/orders/t", tokens[3],
                    client.proof(keys[3], "GET", target, token=tokens[3]))
        assert full.status == 503 and full.json()["code"] == "dpop_replay_store_full"
        assert full.header("retry-after") == "1"
    # The proofs it holds are still refused as replays, not forgotten.
    assert call(penv, "tiny", "/orders/t", owners[-1], proofs[-1]).status == 401
    after = penv.counters()
    assert after["denied_dpop_replay_store_full"] - before.get("denied_dpop_replay_store_full", 0) == 2
    assert after["denied_dpop_key_quota"] - before.get("denied_dpop_key_quota", 0) == 1


def test_proofs_with_worthless_tokens_take_no_room(penv, op, client):
    """A proof takes a replay slot only once its token is resolved, active and bound to its
    key: a client sending new proofs with a token that is worth nothing (each answered 401)
    fills nothing, and every DPoP user of the store keeps working."""
    attacker = client.key("ES256")
    worthless = [op.token()] + [f"worthless-{uuid.uuid4().hex}" for _ in range(2)]
    target = url(penv, "small", "/orders/w")
    for i in range(200):
        t = worthless[i % len(worthless)]
        r = call(penv, "small", "/orders/w", t, client.proof(attacker, "GET", target, token=t))
        assert r.status == 401, (i, r.status, r.body)
    for _ in range(4):
        user = client.key("Ed25519")
        token = op.token(dpop=(client, user))
        for _ in range(2):
            r = call(penv, "small", "/orders/w", token, client.proof(user, "GET", target, token=token))
            assert r.status == 200, (r.status, r.body)


def test_a_replayed_proof_never_costs_its_key_its_share(penv, op, client):
    """Someone who captured one proof replays it: each replay is refused (401) and costs the
    key's owner nothing, who goes on to use its whole share."""
    key = client.key("Ed25519")
    token = op.token(dpop=(client, key))
    target = url(penv, "small", "/orders/r")
    captured = client.proof(key, "GET", target, token=token)
    assert call(penv, "small", "/orders/r", token, captured).status == 200
    for _ in range(20):
        assert call(penv, "small", "/orders/r", token, captured).status == 401
    # Its share (8 of 64) minus the one proof it used.
    for i in range(7):
        r = call(penv, "small", "/orders/r", token, client.proof(key, "GET", target, token=token))
        assert r.status == 200, (i, r.status, r.body)


def test_listeners_with_other_windows_share_a_keys_count(penv, op, client):
    key = client.key("Ed25519")
    token = op.token(dpop=(client, key))
    statuses = []
    for i in range(16):
        listener = "qa" if i % 2 == 0 else "qb"
        proof = client.proof(key, "GET", url(penv, listener, "/orders/q"), token=token)
        statuses.append(call(penv, listener, "/orders/q", token, proof).status)
    assert statuses.count(200) == 4 and set(statuses) == {200, 429}, statuses


def test_one_client_flooding_proofs_locks_out_nobody_else(penv, op, client):
    """An attacker holding a valid bound token sends new proofs as fast as it can for 30 s: it
    is held to its share of the store (429 past it), and not one request of another client
    fails."""
    import http.client
    signer = Signer("ES256")
    token = bound_token(op, signer)
    target = url(penv, "flood", "/orders/f")
    stop = time.time() + 30
    outcome = {}
    lock = threading.Lock()

    def attack():
        conn = http.client.HTTPConnection("127.0.0.1", penv.ports["flood"], timeout=10)
        while time.time() < stop:
            proof = crafted(signer, token, target)
            conn.request("GET", "/orders/f", headers={"authorization": f"DPoP {token}", "dpop": proof})
            r = conn.getresponse()
            r.read()
            with lock:
                outcome[r.status] = outcome.get(r.status, 0) + 1

    attackers = [threading.Thread(target=attack) for _ in range(4)]
    for t in attackers:
        t.start()
    legit = []
    user = client.key("Ed25519")
    user_token = op.token(dpop=(client, user))
    while time.time() < stop - 1:
        r = call(penv, "flood", "/orders/f", user_token, client.proof(user, "GET", target, token=user_token))
        legit.append(r.status)
        time.sleep(1.2)
    for t in attackers:
        t.join()
    print(f"attacker: {sum(outcome.values())} requests {outcome}; other client: {legit}")
    assert outcome.get(200, 0) <= 250, outcome
    assert outcome.get(429, 0) > 0 and sum(outcome.values()) > 2000, outcome
    assert len(legit) >= 20 and set(legit) == {200}, legit


def test_unbound_tokens_and_proof_required_routes(penv, op, client):
    key = client.key("ES256")
    plain = op.token()
    assert "cnf" not in op.introspect(plain)
    assert call(penv, "dpop", "/orders/1", plain, scheme="Bearer").status == 200
    required = call(penv, "dpop", "/payments/1", plain, scheme="Bearer")
    assert required.status == 401, required.body
    assert any(c.startswith("DPoP ") and 'algs="' in c for c in challenge(required)), challenge(required)
    # A proof with a token that is not bound to its key proves nothing (RFC 9449 §7.1).
    for path in ["/orders/1", "/payments/1"]:
        proof = client.proof(key, "GET", url(penv, "dpop", path), token=plain)
        reply = call(penv, "dpop", path, plain, proof)
        assert reply.status == 401 and reply.json()["code"] == "invalid_token", (path, reply.body)
    # No credentials: both schemes are offered.
    bare = call(penv, "dpop", "/orders/1")
    assert bare.status == 401
    schemes = sorted(c.split(" ")[0] for c in challenge(bare))
    assert schemes == ["Bearer", "DPoP"], challenge(bare)


def test_split_tokens_bound_to_a_key(penv, client):
    """The binding is the stored payload's `cnf.jkt`; the proof's `ath` hashes what the client
    holds and sends: the signature."""
    key = client.key("ES256")
    jwt = new_jwt(cnf={"jkt": key["jkt"]})
    assert publish(penv.ports["split"], jwt).status == 204
    _, signature = split_jwt(jwt)
    target = url(penv, "split", "/orders/s")
    ok = call(penv, "split", "/orders/s", signature, client.proof(key, "GET", target, token=signature))
    assert [v for k, v in api_saw(ok) if k == "authorization"] == [f"Bearer {jwt}"]
    for name, reply in {
        "as Bearer": call(penv, "split", "/orders/s", signature, scheme="Bearer"),
        "ath of the whole JWT": call(penv, "split", "/orders/s", signature,
                                     client.proof(key, "GET", target, token=jwt)),
        "another key": call(penv, "split", "/orders/s", signature,
                            client.proof(client.key("ES256"), "GET", target, token=signature)),
    }.items():
        assert reply.status == 401, (name, reply.status, reply.body)


def test_both_schemes_at_once_are_malformed(penv, op, client):
    key = client.key("ES256")
    token = op.token(dpop=(client, key))
    proof = client.proof(key, "GET", url(penv, "dpop", "/orders/b"), token=token)
    reply = request(penv.ports["dpop"], "/orders/b", headers=[
        ("authorization", f"DPoP {token}"), ("authorization", f"Bearer {token}"), ("dpop", proof)])
    assert reply.status == 400 and reply.json()["code"] == "invalid_request", reply.body


def test_server_nonces(penv, op, client):
    key = client.key("ES256")
    token = op.token(dpop=(client, key))
    target = url(penv, "nonce", "/orders/n")
    first = call(penv, "nonce", "/orders/n", token, client.proof(key, "GET", target, token=token))
    assert first.status == 401 and first.json()["code"] == "use_dpop_nonce", first.body
    nonce = first.header("dpop-nonce")
    assert nonce and 'error="use_dpop_nonce"' in " ".join(challenge(first))
    ok = call(penv, "nonce", "/orders/n", token, client.proof(key, "GET", target, token=token, nonce=nonce))
    assert ok.status == 200, ok.body
    wrong = call(penv, "nonce", "/orders/n", token,
                 client.proof(key, "GET", target, token=token, nonce=nonce[:-2] + "AA"))
    assert wrong.status == 401 and wrong.json()["code"] == "use_dpop_nonce"


# ---------------------------------------------------------------------------------------------
# Hostile proofs, crafted here: what the library would never make

def bound_token(op, signer):
    """An access token of the provider bound to `signer`'s key: its DPoP proof at the token
    endpoint is made here (the key lives in this process, so that its proofs can be made as
    fast as a flood needs)."""
    h = {"typ": "dpop+jwt", "alg": signer.alg, "jwk": {k: v for k, v in signer.jwk().items()
                                                        if k not in ("kid", "use", "alg")}}
    c = {"htm": "POST", "htu": op.issuer + "/token", "iat": int(time.time()), "jti": uuid.uuid4().hex}
    signing_input = f"{b64url(json.dumps(h).encode())}.{b64url(json.dumps(c).encode())}"
    proof = f"{signing_input}.{b64url(signer.sign(signing_input.encode()))}"
    answer = json.loads(op.post("/token", {"grant_type": "client_credentials", "scope": "read"},
                                ("app", "app-secret-for-e2e-tests"), headers=[("dpop", proof)]))
    assert answer["token_type"] == "DPoP", answer
    return answer["access_token"]


def crafted(signer, token, target, header=None, claims=None, drop=(), sign=None):
    h = {"typ": "dpop+jwt", "alg": signer.alg, "jwk": {k: v for k, v in signer.jwk().items()
                                                        if k not in ("kid", "use", "alg")}}
    h.update(header or {})
    c = {"htm": "GET", "htu": target, "iat": int(time.time()), "jti": uuid.uuid4().hex,
         "ath": b64url(hashlib.sha256(token.encode()).digest())}
    c.update(claims or {})
    for name in drop:
        (h if name in ("typ", "jwk") else c).pop(name, None)
    signing_input = f"{b64url(json.dumps(h).encode())}.{b64url(json.dumps(c).encode())}"
    signature = sign(signing_input.encode()) if sign else signer.sign(signing_input.encode())
    return f"{signing_input}.{b64url(signature)}"


def hostile_rows():
    return [
        ("alg none", dict(header={"alg": "none"}, sign=lambda _: b"")),
        ("alg HS256 keyed with the jwk", dict(header={"alg": "HS256"},
                                              sign=lambda m: hmac.new(b"k", m, hashlib.sha256).digest())),
        ("typ JWT", dict(header={"typ": "JWT"})),
        ("no typ", dict(drop=["typ"])),
        ("no jwk", dict(drop=["jwk"])),
        ("private jwk", dict(header={"jwk": "PRIVATE"})),
        ("symmetric jwk", dict(header={"jwk": {"kty": "oct", "k": "a2V5"}})),
        ("signed by another key", dict(sign=lambda m: Signer("ES256").sign(m))),
        ("no jti", dict(drop=["jti"])),
        ("jti of 300 bytes", dict(claims={"jti": "j" * 300})),
        # Times relative to when the row runs (rows are collected minutes earlier).
        ("iat as a string", dict(claims={"iat": "NOW_AS_STRING"})),
        ("iat too old (max_age_s 300 + skew 5)", dict(claims={"iat": "NOW-320"})),
        ("iat in the future", dict(claims={"iat": "NOW+60"})),
        ("no iat", dict(drop=["iat"])),
        ("no htm", dict(drop=["htm"])),
        ("htu with a fragment", dict(claims={"htu": "FRAGMENT"})),
        ("htu with userinfo", dict(claims={"htu": "USERINFO"})),
        ("oversized", dict(claims={"pad": "x" * 9000})),
        # RFC 7515 §4.1.11: an extension that must be understood, which the filter does not.
        ("crit", dict(header={"crit": ["exp"], "exp": 1})),
    ]


@pytest.mark.parametrize("name,row", hostile_rows(), ids=[r[0] for r in hostile_rows()])
def test_hostile_proofs_are_refused(penv, op, client, name, row):
    signer = Signer("ES256")
    token = op.token()  # the proof is refused before the token is looked at
    target = url(penv, "dpop", "/orders/h")
    row = dict(row)
    if row.get("header", {}).get("jwk") == "PRIVATE":
        jwk = {k: v for k, v in signer.jwk().items() if k not in ("kid", "use", "alg")}
        jwk["d"] = b64url(signer.key.private_numbers().private_value.to_bytes(32, "big"))
        row["header"] = {"jwk": jwk}
    claims = row.get("claims", {})
    now = int(time.time())
    iat = {"NOW_AS_STRING": str(now), "NOW-320": now - 320, "NOW+60": now + 60}
    if claims.get("iat") in iat:
        row["claims"] = {"iat": iat[claims["iat"]]}
    if claims.get("htu") == "FRAGMENT":
        row["claims"] = {"htu": target + "#f"}
    elif claims.get("htu") == "USERINFO":
        row["claims"] = {"htu": target.replace("http://", "http://user@")}
    proof = crafted(signer, token, target, **row)
    before = penv.counters()
    reply = call(penv, "dpop", "/orders/h", token, proof)
    assert reply.status == 401, (name, reply.status, reply.body)
    assert reply.json()["code"] == "invalid_dpop_proof", name
    assert penv.counters().get("dpop_proof_refused", 0) > before.get("dpop_proof_refused", 0)
    # The well-formed proof from the same key passes the proof checks (and fails only on the
    # token, which is not bound to it): the rows above fail for their one defect.
    control = call(penv, "dpop", "/orders/h", token, crafted(signer, token, target))
    assert control.json()["code"] == "invalid_token", control.body


def test_typ_application_dpop_jwt_is_dpop_jwt(penv, op):
    """RFC 7515 §4.1.9: `application/` may be left out of `typ`: `application/dpop+jwt` (any
    case) is the DPoP type."""
    signer = Signer("ES256")
    token = bound_token(op, signer)
    target = url(penv, "dpop", "/orders/typ")
    for typ in ("application/dpop+jwt", "Application/DPoP+JWT", "dpop+jwt"):
        reply = call(penv, "dpop", "/orders/typ", token, crafted(signer, token, target, header={"typ": typ}))
        assert reply.status == 200, (typ, reply.status, reply.body)


def test_the_proofs_scheme_is_the_connections(penv, op, client):
    """On a plain-text listener, a client that says `https` (an HTTP/2 `:scheme`, an HTTP/1
    absolute-form target) does not make a proof for `https://...` pass."""
    from harness.h2 import h2_request
    key = client.key("ES256")
    token = op.token(dpop=(client, key))
    port = penv.ports["dpop"]
    https = url(penv, "dpop", "/orders/s", "https")
    status = h2_request(port, [(b":method", b"GET"), (b":scheme", b"https"),
                               (b":authority", f"127.0.0.1:{port}".encode()), (b":path", b"/orders/s"),
                               (b"authorization", f"DPoP {token}".encode()),
                               (b"dpop", client.proof(key, "GET", https, token=token).encode())])
    assert status == 401, status
    import socket
    proof = client.proof(key, "GET", https, token=token)
    raw = (f"GET {https} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
           f"Authorization: DPoP {token}\r\nDPoP: {proof}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        first = s.recv(65536).split(b"\r\n", 1)[0]
    assert first.split(b" ")[1] == b"401", first
    # The same request with a proof for what the connection is: http.
    ok = call(penv, "dpop", "/orders/s", token, client.proof(key, "GET", url(penv, "dpop", "/orders/s"), token=token))
    assert ok.status == 200, ok.body


def test_two_proofs_are_malformed(penv, op, client):
    key = client.key("ES256")
    token = op.token(dpop=(client, key))
    target = url(penv, "dpop", "/orders/2")
    reply = call(penv, "dpop", "/orders/2", token, client.proof(key, "GET", target, token=token),
                 headers=[("dpop", client.proof(key, "GET", target, token=token))])
    assert reply.status == 400, reply.body


def test_the_proof_header_never_reaches_the_api_even_in_trailers(penv, op, client, echo):
    # Unbound token on a route that needs none of it: the DPoP header sent alongside is dropped.
    plain = op.token()
    reply = call(penv, "dpop", "/orders/1", plain, scheme="Bearer", headers=[("dpop", "x.y.z")])
    assert not [v for k, v in api_saw(reply) if k == "dpop"]
    # Nor on a CORS preflight, which passes unauthenticated.
    preflight = request(penv.ports["dpop"], "/orders/1", headers=[
        ("origin", "https://app.example.com"), ("access-control-request-method", "POST"),
        ("dpop", "x.y.z"), ("authorization", f"DPoP {plain}")], method="OPTIONS")
    assert not [k for k, v in api_saw(preflight) if k in ("dpop", "authorization")]


# ---------------------------------------------------------------------------------------------
# Certificate-bound tokens (RFC 8705) over real TLS

@pytest.fixture(scope="module")
def certs(pki):
    return {"alice": pki.issue("alice"), "bob": pki.issue("bob")}


def test_a_certificate_bound_token_needs_its_certificate(penv, op, pki, certs):
    alice, bob = certs["alice"], certs["bob"]
    token = op.token(cert_pem=alice["pem"])
    x5t = b64url(bytes.fromhex(alice["sha256"]))
    assert op.introspect(token)["cnf"] == {"x5t#S256": x5t}
    for _ in range(2):
        ok = call(penv, "mtls", "/payments/1", token, scheme="Bearer", tls=pki.client_context(alice))
        assert forwarded_claims(ok)["cnf"] == {"x5t#S256": x5t}
    other = call(penv, "mtls", "/payments/1", token, scheme="Bearer", tls=pki.client_context(bob))
    assert other.status == 401 and other.json()["code"] == "invalid_token"
    # Without a certificate (where TLS lets the client in without one).
    none = call(penv, "mtls_opt", "/orders/1", token, scheme="Bearer", tls=pki.client_context())
    assert none.status == 401, none.body
    # A client's own x-forwarded-client-cert is not read when the filter reads the connection.
    spoof = call(penv, "mtls", "/orders/1", token, scheme="Bearer", tls=pki.client_context(bob),
                 headers=[("x-forwarded-client-cert", f"Hash={alice['sha256']}")])
    assert spoof.status == 401
    # An unbound token on a route that requires proof; the same token elsewhere is fine.
    plain = op.token()
    assert call(penv, "mtls", "/payments/1", plain, scheme="Bearer",
                tls=pki.client_context(alice)).status == 401
    assert call(penv, "mtls", "/orders/1", plain, scheme="Bearer",
                tls=pki.client_context(alice)).status == 200
    # Where the filter has no `mtls` block, a certificate-bound token is refused.
    assert call(penv, "dpop", "/orders/1", token, scheme="Bearer").status == 401


def test_forwarded_client_certificates(penv, op, pki, certs):
    alice, bob = certs["alice"], certs["bob"]
    token = op.token(cert_pem=alice["pem"])
    ok = call(penv, "xfcc", "/orders/1", token, scheme="Bearer", tls=pki.client_context(alice))
    assert ok.status == 200, ok.body
    assert call(penv, "xfcc", "/orders/1", token, scheme="Bearer",
                tls=pki.client_context(bob)).status == 401
    # Envoy removes a client's own x-forwarded-client-cert (SANITIZE, its default) before the
    # filter could read it.
    spoof = call(penv, "xfcc_spoof", "/orders/1", token, scheme="Bearer",
                 headers=[("x-forwarded-client-cert", f"Hash={alice['sha256']}")])
    assert spoof.status == 401, spoof.body


def test_a_hash_inside_a_quoted_xfcc_value_is_no_hash(penv, op, certs):
    """Behind a proxy that is not Envoy, the header comes as it wrote it: a quoted value holds
    `;` and `=` as text, so `Subject="CN=a;Hash=..."` names no certificate."""
    alice = certs["alice"]
    token = op.token(cert_pem=alice["pem"])
    rows = {
        f'Subject="CN=a;Hash={alice["sha256"]}"': 401,
        f'By=spiffe://x;Subject="CN=a,Hash={alice["sha256"]}"': 401,
        f'Hash={alice["sha256"]};Subject="CN=a;Hash=ffff"': 200,
    }
    for xfcc, status in rows.items():
        reply = call(penv, "xfcc_proxy", "/orders/1", token, scheme="Bearer",
                     headers=[("x-forwarded-client-cert", xfcc)])
        assert reply.status == status, (xfcc, reply.status, reply.body)


def test_counters(penv):
    c = penv.counters()
    for name in ["dpop_proof_accepted", "dpop_proof_refused", "dpop_replayed", "denied_proof_of_possession"]:
        assert c.get(name, 0) > 0, (name, c)
