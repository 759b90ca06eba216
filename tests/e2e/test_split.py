"""Split token flow, end to end: the publish API, splitting at issuance, lookups, revocation
across workers, the hash encodings, the phantom fallback and the store's memory bound.

Envoy runs with two workers; every listener of this Envoy shares one VM (`vm_id`), so one
store for every listener with the same `split.max_entries`."""

import base64
import json
import time

import pytest

from harness.envoy import Envoy, base_config, bearer, request
from harness.services import mint_jwt
from harness.split import (MINTED, PUBLISH, SECRET, call_api, echo_saw, forwarded_authorization, new_jwt,
                           publish, revoke, split_jwt, store_key, token_request)

@pytest.fixture(scope="module")
def split_envoy(tmp_path_factory, token_service, echo):
    def split(**kw):
        return {"max_entries": 1000, **kw}

    def pub():
        return {"path": PUBLISH, "secret": SECRET}

    token_routes = (("/oauth/token", "token_service"), ("/", "api"))
    fallback = base_config()
    fallback["split"] = split(fallback_to_phantom=True)
    nofallback = base_config()
    nofallback["split"] = split()
    e = Envoy(
        tmp_path_factory.mktemp("envoy-split"),
        listeners={
            # The public listener: split tokens only, token endpoint responses split.
            "api": ({"required_scopes": ["read"],
                     "split": split(split_responses={"paths": ["/oauth/token"]})}, token_routes),
            # Internal listeners: the publish API, one per hash encoding, same store.
            "publish": {"split": split(publish=pub())},
            "publish_b64url": {"split": split(hash_encoding="base64url", publish=pub())},
            "publish_hex": {"split": split(hash_encoding="hex", publish=pub())},
            "fallback": fallback,
            "nofallback": nofallback,
            # A store of 50 slots of its own, for the memory bound.
            "small": {"split": {"max_entries": 50, "publish": pub()}},
        },
        clusters={"api": echo.port, "token_service": token_service.port},
        concurrency=2,
    )
    e.start()
    yield e
    e.stop()


# ---- the flow --------------------------------------------------------------------------------

def test_published_token_is_reassembled_exactly(split_envoy, echo):
    jwt = new_jwt()
    _, signature = split_jwt(jwt)
    before = split_envoy.counters()
    r = publish(split_envoy.ports["publish"], jwt)
    assert r.status == 204 and r.body == b""
    r = call_api(split_envoy.ports["api"], signature)
    assert r.status == 200, r.body
    assert forwarded_authorization(r) == f"Bearer {jwt}", "the upstream receives the exact original JWT"
    after = split_envoy.counters()
    assert after["publish_accepted"] - before["publish_accepted"] == 1
    assert after["split_hit"] - before["split_hit"] == 1
    assert not echo_saw(echo, PUBLISH), "publish requests are answered by the filter, never forwarded"


def test_refused_lookups_are_401_invalid_token(split_envoy, echo):
    port = split_envoy.ports["api"]
    jwt = new_jwt()
    _, signature = split_jwt(jwt)
    assert publish(split_envoy.ports["publish"], jwt).status == 204
    tampered = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    for name, token in [
        ("tampered", tampered),
        ("unknown", split_jwt(new_jwt())[1]),
        ("whole JWT in place of the signature", jwt),
        ("not base64url", signature[:20] + "+/"),
        ("signature with padding", signature + "="),
    ]:
        r = call_api(port, token)
        assert r.status == 401, name
        assert 'error="invalid_token"' in r.header("www-authenticate"), name
        assert r.json()["code"] == "invalid_token", name
    assert call_api(port, signature).status == 200


def test_insufficient_scope_is_403(split_envoy):
    jwt = new_jwt(scope="profile")
    assert publish(split_envoy.ports["publish"], jwt).status == 204
    r = call_api(split_envoy.ports["api"], split_jwt(jwt)[1])
    assert r.status == 403
    assert 'error="insufficient_scope"' in r.header("www-authenticate")


def test_expired_entry_is_refused(split_envoy):
    jwt = new_jwt(lifetime=None)
    expires_at = int(time.time()) + 2
    assert publish(split_envoy.ports["publish"], jwt, expires_at=expires_at).status == 204
    signature = split_jwt(jwt)[1]
    assert call_api(split_envoy.ports["api"], signature).status == 200
    time.sleep(max(0.0, expires_at - time.time()) + 0.1)
    before = split_envoy.counters()["split_expired"]
    r = call_api(split_envoy.ports["api"], signature)
    assert r.status == 401 and r.json()["code"] == "invalid_token"
    assert split_envoy.counters()["split_expired"] == before + 1


def test_revocation_is_seen_by_every_worker(split_envoy):
    jwt = new_jwt()
    signature = split_jwt(jwt)[1]
    assert publish(split_envoy.ports["publish"], jwt).status == 204
    # Fresh connections spread over both workers (SO_REUSEPORT).
    assert {call_api(split_envoy.ports["api"], signature).status for _ in range(10)} == {200}
    before = split_envoy.counters()
    assert revoke(split_envoy.ports["publish"], jwt).status == 204
    statuses = [call_api(split_envoy.ports["api"], signature).status for _ in range(20)]
    assert statuses == [401] * 20
    after = split_envoy.counters()
    assert after["revocations"] - before["revocations"] == 1
    assert after["split_revoked"] - before["split_revoked"] == 20
    # Revoking again, or a key never published, is not an error (idempotent).
    assert revoke(split_envoy.ports["publish"], jwt).status == 204
    assert revoke(split_envoy.ports["publish"], new_jwt()).status == 204


def test_revocation_reaches_every_workers_copy_even_after_eviction(split_envoy):
    """Each worker keeps its own copy of recent split hits (no slot read per hit), trusted while
    the store's epoch (an Envoy gauge every worker reads) holds. Here the entry is pushed out of
    the store by newer ones, so only the workers' copies still know it; its revocation must
    still be seen by both workers on the very next request."""
    port = split_envoy.ports["small"]
    now = int(time.time())
    jwt = new_jwt()
    signature = split_jwt(jwt)[1]
    # The soonest expiry: the first entry a full store gives up.
    assert publish(port, jwt, expires_at=now + 120).status == 204
    # Fresh connections spread over both workers (SO_REUSEPORT): each makes its copy.
    assert {call_api(port, signature).status for _ in range(20)} == {200}
    for _ in range(500):  # ten times the store's 50 slots, all expiring later
        assert publish(port, new_jwt(), expires_at=now + 3600).status == 204
    before = split_envoy.counters()
    # Gone from the store, served from each worker's copy.
    assert [call_api(port, signature).status for _ in range(20)] == [200] * 20
    assert split_envoy.counters()["split_miss"] == before["split_miss"]
    assert revoke(port, jwt).status == 204
    assert [call_api(port, signature).status for _ in range(20)] == [401] * 20
    assert split_envoy.counters()["split_miss"] - before["split_miss"] == 20


def test_republishing_a_key_replaces_it(split_envoy):
    first = new_jwt(scope="read")
    header_payload, signature = split_jwt(first)
    assert publish(split_envoy.ports["publish"], first).status == 204
    # Same signature, another header.payload (a publisher correcting itself).
    other_hp = split_jwt(new_jwt(scope="read write"))[0]
    second = f"{other_hp}.{signature}"
    assert publish(split_envoy.ports["publish"], second).status == 204
    r = call_api(split_envoy.ports["api"], signature)
    assert forwarded_authorization(r) == f"Bearer {second}"


@pytest.mark.parametrize("encoding,listener", [
    ("base64", "publish"), ("base64url", "publish_b64url"), ("hex", "publish_hex")])
def test_each_hash_encoding_interoperates(split_envoy, encoding, listener):
    jwt = new_jwt()
    signature = split_jwt(jwt)[1]
    assert publish(split_envoy.ports[listener], jwt, encoding=encoding).status == 204
    r = call_api(split_envoy.ports["api"], signature)
    assert r.status == 200 and forwarded_authorization(r) == f"Bearer {jwt}"
    # A key in another encoding is refused by this listener.
    wrong = "hex" if encoding != "hex" else "base64"
    r = publish(split_envoy.ports[listener], new_jwt(), encoding=wrong)
    assert r.status == 400 and "signature_hash" in r.json()["message"]


def test_fixed_vector_keys_are_what_python_computes():
    # The publisher side of the contract, pinned: SHA-256 of RFC 7515 A.1's signature.
    sig = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert store_key(sig) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM="
    assert store_key(sig, "base64url") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert store_key(sig, "hex") == "13d31e961a1ad8ec2f16b10c4c982e0876a878ad6df144566ee1894acb70f9c3"


# ---- the publish API refuses what it must ----------------------------------------------------

def test_publish_refusals_leave_the_store_unchanged(split_envoy, echo):
    port = split_envoy.ports["publish"]
    good = new_jwt()
    good_hp, signature = split_jwt(good)
    assert publish(port, good).status == 204
    key = store_key(signature)
    evil_hp = split_jwt(new_jwt(scope="read write admin"))[0]
    future = int(time.time()) + 300

    def body(**fields):
        doc = {"signature_hash": key, "header_payload": evil_hp, "expires_at": future}
        doc.update(fields)
        return json.dumps({k: v for k, v in doc.items() if v is not None})

    before = split_envoy.counters()
    cases = [
        ("wrong secret", dict(secret="e2e-publisher-secreT", body=body()), 401),
        ("no secret", dict(secret=None, body=body()), 401),
        ("not JSON", dict(body="signature_hash=x"), 400),
        ("empty body", dict(body=""), 400),
        ("JSON array", dict(body="[]"), 400),
        ("trailing garbage", dict(body=body() + "x"), 400),
        ("unknown field", dict(body=body(jwt=good)), 400),
        ("missing expires_at", dict(body=body(expires_at=None)), 400),
        ("expires_at in the past", dict(body=body(expires_at=int(time.time()) - 1)), 400),
        ("expires_at not a number", dict(body=body(expires_at="tomorrow")), 400),
        ("key not base64", dict(body=body(signature_hash="%%%")), 400),
        ("key of 31 bytes", dict(body=body(signature_hash=base64.b64encode(b"x" * 31).decode())), 400),
        ("key too long", dict(body=body(signature_hash="A" * 200)), 400),
        ("whole JWT as header_payload", dict(body=body(header_payload=good)), 400),
        ("one segment", dict(body=body(header_payload=evil_hp.split(".")[0])), 400),
        ("not base64url", dict(body=body(header_payload=evil_hp + "+")), 400),
        ("oversized header_payload", dict(body=body(header_payload=evil_hp + "A" * 13000)), 400),
        ("oversized body", dict(body=body(pad="x" * 40000)), 413),
    ]
    for name, kwargs, status in cases:
        headers_override = kwargs.pop("secret", SECRET)
        r = publish(port, good, secret=headers_override, **kwargs)
        assert r.status == status, f"{name}: {r.status} {r.body!r}"
        assert r.header("content-type") == "application/json", name
        reply = r.json()
        assert reply["code"] in ("invalid_request", "unauthorized", "payload_too_large"), name
        assert evil_hp not in r.body.decode() and key not in r.body.decode(), f"{name} echoes input"
        if status == 401:
            assert r.header("www-authenticate") == 'Bearer realm="api"', name
    # Wrong methods.
    for method in ("GET", "PUT", "PATCH"):
        r = request(port, PUBLISH, bearer(SECRET), method=method)
        assert r.status == 405 and r.header("allow") == "POST, DELETE", method
    # A revoke with a wrong secret does not revoke.
    r = request(port, PUBLISH, bearer("not-the-publisher-secret"), method="DELETE",
                body=json.dumps({"signature_hash": key}).encode())
    assert r.status == 401
    # The entry is still the good one.
    r = call_api(split_envoy.ports["api"], signature)
    assert r.status == 200 and forwarded_authorization(r) == f"Bearer {good}"
    after = split_envoy.counters()
    assert after["publish_refused"] - before["publish_refused"] == len(cases) + 4
    assert after["publish_accepted"] == before["publish_accepted"]
    assert not echo_saw(echo, PUBLISH)


def test_publish_path_is_not_served_on_the_public_listener(split_envoy, echo):
    # The public listener has no publish API: the path is an ordinary API route needing a token.
    jwt = new_jwt()
    r = publish(split_envoy.ports["api"], jwt)
    assert r.status == 401
    assert call_api(split_envoy.ports["api"], split_jwt(jwt)[1]).status == 401


# ---- splitting at issuance -------------------------------------------------------------------

@pytest.mark.parametrize("scenario", ["", "chunked", "noexp"])
def test_token_response_is_split_and_the_signature_works(split_envoy, token_service, scenario):
    port = split_envoy.ports["api"]
    before = split_envoy.counters()["responses_split"]
    r = token_request(port, scenario)
    assert r.status == 200, r.body
    issued = token_service.issued_tokens[-1]
    header_payload, signature = split_jwt(issued)
    doc = r.json()
    assert doc["access_token"] == signature, "the client receives only the signature"
    assert header_payload not in r.body.decode(), "no part of the JWT's header.payload reaches the client"
    assert {k: v for k, v in doc.items() if k != "access_token"} == {
        "token_type": "Bearer", "expires_in": 120 if scenario == "noexp" else 300,
        "scope": "read write", "refresh_token": doc["refresh_token"]}
    if scenario == "chunked":
        assert r.header("content-length") is None
    else:
        assert int(r.header("content-length")) == len(r.body)
    assert r.header("cache-control") == "no-store", "other headers kept"
    assert split_envoy.counters()["responses_split"] == before + 1
    api = call_api(port, signature)
    assert api.status == 200 and forwarded_authorization(api) == f"Bearer {issued}"


@pytest.mark.parametrize("scenario,status", [("opaque", 200), ("error", 400)])
def test_other_token_responses_pass_unchanged(split_envoy, token_service, scenario, status):
    r = token_request(split_envoy.ports["api"], scenario)
    assert r.status == status
    if scenario == "error":
        assert r.json() == {"error": "invalid_client"}
    else:
        assert r.json()["access_token"] == token_service.issued_tokens[-1]
    assert int(r.header("content-length")) == len(r.body)


def test_a_jwt_sent_as_text_is_refused_not_passed_on(split_envoy, token_service):
    """A success answer carrying a JWT is split or refused whatever its Content-Type: a JWT in a
    text/plain answer cannot be split in place, so it never reaches the client."""
    r = token_request(split_envoy.ports["api"], "text")
    assert r.status == 502 and r.json()["code"] == "token_split_failed"
    assert split_jwt(token_service.issued_tokens[-1])[0] not in r.body.decode()


# ---- phantom fallback ------------------------------------------------------------------------

def test_miss_falls_back_to_phantom_when_configured(split_envoy, token_service):
    r = call_api(split_envoy.ports["fallback"], "fallback-opaque-token-1")
    assert r.status == 200
    (call,) = token_service.calls_for("fallback-opaque-token-1")
    assert forwarded_authorization(r) == f"Bearer {call['jwt']}"
    # A published split token on the same listener is served from the store, no introspection.
    jwt = new_jwt()
    assert publish(split_envoy.ports["publish"], jwt).status == 204
    r = call_api(split_envoy.ports["fallback"], split_jwt(jwt)[1])
    assert forwarded_authorization(r) == f"Bearer {jwt}"
    assert token_service.calls_for(split_jwt(jwt)[1]) == []


def test_miss_is_401_without_fallback(split_envoy, token_service):
    r = call_api(split_envoy.ports["nofallback"], "nofallback-opaque-token-1")
    assert r.status == 401 and r.json()["code"] == "invalid_token"
    assert token_service.calls_for("nofallback-opaque-token-1") == []


# ---- the store's bound -----------------------------------------------------------------------

def test_memory_stays_flat_under_ten_times_max_entries(split_envoy):
    port = split_envoy.ports["small"]
    now = int(time.time())
    # Deterministic JWTs (no iat/exp), ~8 KB each; later ones expire later, as in practice.
    tokens = [mint_jwt({"sub": f"mem-{i}", "scope": "read", "pad": "x" * 6000}) for i in range(500)]
    for i, jwt in enumerate(tokens[:250]):
        assert publish(port, jwt, expires_at=now + 1000 + i).status == 204
    warm = split_envoy.memory_allocated()
    for i, jwt in enumerate(tokens[250:], start=250):
        assert publish(port, jwt, expires_at=now + 1000 + i).status == 204
    grown = split_envoy.memory_allocated() - warm
    print(f"allocated after 250 publishes: {warm}, growth over the next 250: {grown} bytes")
    # Unbounded, the second 250 entries would add about 250 x 8 KB = 2 MB.
    assert grown < 200_000, grown
    for jwt in tokens[-10:]:
        r = call_api(port, split_jwt(jwt)[1])
        assert r.status == 200 and forwarded_authorization(r) == f"Bearer {jwt}"


def test_no_token_secret_or_store_key_in_the_log(split_envoy, token_service):
    """Runs after the tests above (file order): nothing they sent may appear in Envoy's log,
    where the filter logs at debug level."""
    log = split_envoy.log_path.read_text(errors="replace")
    assert "token response split" in log, "the filter did log at debug level"
    secrets = [SECRET]
    for jwt in MINTED + [t for t in token_service.issued_tokens if t.count(".") == 2]:
        header_payload, signature = split_jwt(jwt)
        secrets += [header_payload.split(".")[1], signature, store_key(signature)]
    leaked = [x for x in secrets if x in log]
    assert not leaked, f"{len(leaked)} values leaked into the log"


# ---- a misconfigured Envoy still answers -----------------------------------------------------

def test_without_stop_iteration_held_requests_are_answered_not_hung(tmp_path_factory, token_service, echo):
    """Without `allow_on_headers_stop_iteration`, Envoy never gives the filter a body it
    paused the headers for. The filter answers such requests at its deadline (5 s) with 500 and
    logs how to fix the configuration, instead of leaving them hanging."""
    e = Envoy(
        tmp_path_factory.mktemp("envoy-no-stop-iteration"),
        listeners={"both": ({"split": {"max_entries": 10, "publish": {"path": PUBLISH, "secret": SECRET},
                                       "split_responses": {"paths": ["/oauth/token"]}}},
                            (("/oauth/token", "token_service"), ("/", "api")))},
        clusters={"api": echo.port, "token_service": token_service.port},
        stop_iteration=False,
    )
    e.start()
    try:
        for name, send in [("publish", lambda: publish(e.ports["both"], new_jwt())),
                           ("token response", lambda: token_request(e.ports["both"]))]:
            started = time.time()
            r = send()
            took = time.time() - started
            assert r.status == 500 and r.json()["code"] == "filter_misconfigured", name
            assert 4.5 < took < 7, f"{name}: answered after {took:.1f} s"
            assert "access_token" not in r.body.decode(), name
        assert "allow_on_headers_stop_iteration" in e.log_path.read_text()
    finally:
        e.stop()
