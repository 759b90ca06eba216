"""JWT verification, end to end: keys generated here (RS256, ES256, EdDSA), a JWK Set served by a
stub token service and fetched by the filter, tokens reaching the filter by introspection and by
split token. Every refused token must be answered 401 and never reach the API.

Envoy runs with two workers; both listeners share one VM and one fetched key set."""

import base64
import json
import time
import uuid

import pytest

from harness.envoy import Envoy, base_config, bearer, request, seen_by_api
from harness.services import Signer, TokenService, b64url
from harness.split import PUBLISH, SECRET, forwarded_authorization, store_key

ISS = "https://login.example.com"
AUD = "api.example.com"
ALGS = ["RS256", "ES256", "EdDSA"]


@pytest.fixture(scope="module")
def signers():
    return {alg: Signer(alg, kid=f"{alg.lower()}-1") for alg in ALGS}


@pytest.fixture(scope="module")
def vts(signers):
    """Token service for these tests: introspection answers are scripted, the JWKS holds the
    three public keys."""
    ts = TokenService(signer=signers["ES256"]).start()
    ts.jwks = {"keys": [s.jwk() for s in signers.values()]}
    yield ts
    ts.stop()


@pytest.fixture(scope="module")
def flaky():
    """A JWKS endpoint that is down when Envoy starts."""
    ts = TokenService(signer=Signer("ES256", kid="flaky-1"))
    ts.jwks_status = 503
    ts.start()
    yield ts
    ts.stop()


def verify_cfg(cluster="token_service", min_refetch_s=1):
    return {"issuer": ISS, "audiences": [AUD, "other-api"], "algorithms": ALGS,
            "jwks": {"cluster": cluster, "path": "/oauth/v2/oauth-anonymous/jwks", "refresh_s": 300,
                     "timeout_ms": 500, "min_refetch_s": min_refetch_s},
            "clock_skew_s": 30}


@pytest.fixture(scope="module")
def venv(tmp_path_factory, vts, flaky, echo, signers):
    phantom = base_config()
    phantom["verify"] = verify_cfg()
    split = {"required_scopes": ["read"],
             "split": {"max_entries": 1000, "publish": {"path": PUBLISH, "secret": SECRET}},
             "verify": verify_cfg()}
    down = base_config()
    down["verify"] = verify_cfg(cluster="jwks_flaky")
    # Pinned keys: only the EdDSA key, inline; nothing is fetched.
    inline = base_config()
    inline["verify"] = {"issuer": ISS, "audiences": [AUD], "algorithms": ["EdDSA"],
                        "jwks_inline": {"keys": [signers["EdDSA"].jwk()]}}
    e = Envoy(tmp_path_factory.mktemp("envoy-verify"),
              listeners={"phantom": phantom, "split": split, "down": down, "inline": inline},
              clusters={"api": echo.port, "token_service": vts.port, "jwks_flaky": flaky.port},
              concurrency=2)
    e.start()
    # The key set arrives on the first timer tick after start.
    wait_for(lambda: e.counters().get("jwks_fetched", 0) >= 1, 5, "first JWKS fetch")
    yield e
    e.stop()


def wait_for(cond, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def claims(**over):
    now = int(time.time())
    c = {"iss": ISS, "aud": AUD, "sub": f"user-{uuid.uuid4().hex[:8]}", "scope": "read write",
         "iat": now, "nbf": now, "exp": now + 300}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def opaque():
    return f"op-{uuid.uuid4().hex}"


def api_path():
    return f"/v/{uuid.uuid4().hex}"


_sent = []  # every token and JWT these tests used, for the log check


def through_phantom(venv, vts, jwt, listener="phantom"):
    """Sends a request whose opaque token introspects to `jwt`; returns (reply, path)."""
    token, path = opaque(), api_path()
    _sent.extend([token, jwt])
    vts.scripted[token] = jwt
    return request(venv.ports[listener], path, bearer(token)), path, token


def publish(venv, jwt):
    hp, sig = jwt.rsplit(".", 1)
    _sent.append(jwt)
    body = json.dumps({"signature_hash": store_key(sig), "header_payload": hp,
                       "expires_at": int(time.time()) + 300})
    r = request(venv.ports["split"], PUBLISH, [("content-type", "application/json")] + bearer(SECRET),
                method="POST", body=body.encode())
    assert r.status == 204, r.body
    return sig


@pytest.mark.parametrize("alg", ALGS)
def test_valid_tokens_pass_by_introspection_and_by_split_token(venv, vts, echo, signers, alg):
    jwt = signers[alg].mint(claims())
    r, path, _ = through_phantom(venv, vts, jwt)
    assert r.status == 200, r.body
    assert forwarded_authorization(r) == f"Bearer {jwt}"
    jwt2 = signers[alg].mint(claims())
    sig = publish(venv, jwt2)
    r = request(venv.ports["split"], api_path(), bearer(sig))
    assert r.status == 200, r.body
    assert forwarded_authorization(r) == f"Bearer {jwt2}"


def forged_header(jwt, header):
    _, payload, sig = jwt.split(".")
    return f"{b64url(json.dumps(header).encode())}.{payload}.{sig}"


def hs256(key_bytes, claims_, kid):
    import hashlib
    import hmac
    h = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    p = b64url(json.dumps(claims_).encode())
    sig = hmac.new(key_bytes, f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64url(sig)}"


def bad_tokens(signers):
    from cryptography.hazmat.primitives import serialization
    es, rs = signers["ES256"], signers["RS256"]
    impostor = Signer("ES256", kid=es.kid)  # same kid, another key
    rsa_pem = rs.key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    now = int(time.time())
    good = es.mint(claims())
    return [
        ("bad signature", impostor.mint(claims()), "verify_failed_bad_signature"),
        ("payload swapped, signature kept",
         f"{es.mint(claims(scope='read admin')).rsplit('.', 1)[0]}.{good.rsplit('.', 1)[1]}",
         "verify_failed_bad_signature"),
        ("alg none", forged_header(good, {"alg": "none", "typ": "JWT"}), "verify_failed_disallowed_algorithm"),
        # RFC 7519 §6.1's own form of an unsecured JWT: the same verification failure.
        ("alg none, empty signature",
         forged_header(good, {"alg": "none", "typ": "JWT"}).rsplit(".", 1)[0] + ".",
         "verify_failed_disallowed_algorithm"),
        ("HS256 keyed with the RSA public key",
         hs256(rsa_pem, claims(), rs.kid), "verify_failed_disallowed_algorithm"),
        ("disallowed algorithm (RS384 with the RS256 key)",
         forged_header(rs.mint(claims()), {"alg": "RS384", "kid": rs.kid}), "verify_failed_disallowed_algorithm"),
        ("wrong iss", es.mint(claims(iss="https://evil.example.com")), "verify_failed_wrong_issuer"),
        ("wrong aud", es.mint(claims(aud="another-api")), "verify_failed_wrong_audience"),
        ("no aud", es.mint(claims(aud=None)), "verify_failed_wrong_audience"),
        ("nbf in the future", es.mint(claims(nbf=now + 120)), "verify_failed_not_yet_valid"),
        ("jku pointing elsewhere", impostor.mint(claims(), header={
            "alg": "ES256", "kid": es.kid, "jku": "http://127.0.0.1:1/jwks"}), "verify_failed_bad_signature"),
    ]


def test_bad_tokens_by_introspection_are_401_not_forwarded_not_cached(venv, vts, echo, signers):
    for name, jwt, counter in bad_tokens(signers) + [
            ("expired", signers["EdDSA"].mint(claims(exp=int(time.time()) - 120)), None)]:
        before = venv.counters()
        r, path, token = through_phantom(venv, vts, jwt)
        assert r.status == 401, f"{name}: {r.status} {r.body}"
        assert r.json()["code"] == "invalid_token", name
        assert 'error="invalid_token"' in r.header("www-authenticate"), name
        assert seen_by_api(echo, path) == [], f"{name}: reached the API"
        if counter:
            assert venv.counters()[counter] == before.get(counter, 0) + 1, name
        # Not cached as valid: the next request asks the token service again (and is refused).
        r = request(venv.ports["phantom"], path, bearer(token))
        assert r.status == 401, name
        if counter:
            assert len(vts.calls_for(token)) == 2, f"{name}: a refused JWT was cached"
        assert seen_by_api(echo, path) == [], name


def test_bad_tokens_by_split_token_are_401(venv, echo, signers):
    for name, jwt, _ in bad_tokens(signers):
        if name.startswith("alg none"):
            # Refused at the door: an unsigned header.payload is never stored.
            hp, sig = jwt.rsplit(".", 1)
            body = json.dumps({"signature_hash": store_key(sig), "header_payload": hp,
                               "expires_at": int(time.time()) + 300})
            r = request(venv.ports["split"], PUBLISH, bearer(SECRET), method="POST", body=body.encode())
            assert r.status == 400, r.body
            continue
        sig = publish(venv, jwt)
        path = api_path()
        r = request(venv.ports["split"], path, bearer(sig))
        assert r.status == 401, f"{name}: {r.status} {r.body}"
        assert seen_by_api(echo, path) == [], name


def test_poisoned_store_entry_is_refused(venv, echo, signers):
    es = signers["ES256"]
    jwt = es.mint(claims(scope="read"))
    sig = publish(venv, jwt)
    assert request(venv.ports["split"], api_path(), bearer(sig)).status == 200
    # The store entry is replaced by a payload with more privileges, signature unchanged.
    hp, _ = jwt.rsplit(".", 1)
    header, payload = hp.split(".")
    richer = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    richer["scope"] = "read write admin"
    publish(venv, f"{header}.{b64url(json.dumps(richer).encode())}.{sig}")
    path = api_path()
    r = request(venv.ports["split"], path, bearer(sig))
    assert r.status == 401 and seen_by_api(echo, path) == []


def test_cache_hits_are_not_verified_again(venv, vts, signers):
    jwt = signers["RS256"].mint(claims())
    r, _, token = through_phantom(venv, vts, jwt)
    assert r.status == 200
    before = venv.counters()["verified"]
    for _ in range(10):
        assert request(venv.ports["phantom"], api_path(), bearer(token)).status == 200
    assert venv.counters()["verified"] == before
    assert len(vts.calls_for(token)) == 1


def test_one_fetch_for_the_whole_process(venv, vts):
    # Two workers (and the main thread) share one key set: fetched once at start, not per worker.
    assert vts.jwks_calls == 1
    assert venv.counters()["jwks_fetched"] == 1


def test_rotation_new_kid_is_accepted_after_an_early_refetch(venv, vts, signers):
    new = Signer("ES256", kid="es256-rotated")
    jwt = new.mint(claims())
    # Unknown to the gateway: refused (never forwarded unverified).
    r, _, _ = through_phantom(venv, vts, jwt)
    assert r.status == 401
    calls_before = vts.jwks_calls
    with vts.lock:
        vts.jwks = {"keys": vts.jwks["keys"] + [new.jwk()]}
    deadline, status = time.time() + 5, None
    while time.time() < deadline:
        r, _, _ = through_phantom(venv, vts, new.mint(claims()))
        status = r.status
        if status == 200:
            break
        time.sleep(0.2)
    assert status == 200, "the rotated key was never fetched"
    assert vts.jwks_calls > calls_before
    # The old keys still work.
    r, _, _ = through_phantom(venv, vts, signers["EdDSA"].mint(claims()))
    assert r.status == 200


def test_random_unknown_kids_cause_a_bounded_number_of_fetches(venv, vts):
    start_calls, started = vts.jwks_calls, time.time()
    sent = 0
    while time.time() - started < 3.0:
        attacker = Signer("EdDSA", kid=uuid.uuid4().hex)
        r, _, _ = through_phantom(venv, vts, attacker.mint(claims()))
        assert r.status == 401
        sent += 1
    took = time.time() - started
    fetches = vts.jwks_calls - start_calls
    # min_refetch_s is 1: at most one early fetch per second for the whole process.
    assert sent >= 20
    print(f"{sent} tokens with random kids in {took:.1f} s caused {fetches} JWKS fetches")
    assert fetches <= int(took) + 2, f"{fetches} JWKS fetches for {sent} unknown kids in {took:.1f} s"


def test_jwks_down_at_start_is_502_until_it_returns(venv, vts, flaky, echo):
    jwt = flaky.signer.mint(claims())
    token, path = opaque(), api_path()
    vts.scripted[token] = jwt
    r = request(venv.ports["down"], path, bearer(token))
    assert r.status == 502, r.body
    assert r.json()["code"] == "jwks_unavailable"
    assert seen_by_api(echo, path) == []
    assert venv.counters()["denied_jwks_unavailable"] >= 1
    failed_fetches = flaky.jwks_calls
    assert failed_fetches >= 1
    flaky.jwks_status = 200
    wait_for(lambda: request(venv.ports["down"], api_path(), bearer(token)).status == 200, 5,
             "requests to pass once the JWKS endpoint is back")
    assert flaky.jwks_calls > failed_fetches


def test_inline_keys_verify_without_any_fetch(venv, vts, signers):
    calls = vts.jwks_calls
    r, _, _ = through_phantom(venv, vts, signers["EdDSA"].mint(claims()), listener="inline")
    assert r.status == 200, r.body
    # ES256 is not in this listener's allow-list, even though the key is in the fetched set.
    r, _, _ = through_phantom(venv, vts, signers["ES256"].mint(claims()), listener="inline")
    assert r.status == 401
    assert vts.jwks_calls == calls


def test_no_token_jwt_or_signature_in_the_log(venv):
    log = venv.log_path.read_text(errors="replace")
    assert "JWKS loaded" in log
    assert len(_sent) > 50
    for value in _sent:
        for part in filter(None, [value] + value.split(".")[1:]):
            assert part not in log, "a token, JWT payload or signature reached the log"
