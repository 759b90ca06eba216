"""Token exchange (RFC 8693) end to end: each API gets a token made for it alone, by a real
authorization server (panva's oidc-provider with an RFC 8693 grant registered through its
registerGrantType, tests/oidc/server.mjs), in a real Envoy. Hostile answers a real server would
not give come from the stub token service.

Envoy (one worker, so that concurrent requests share one call):
  x        phantom (JSON introspection of the provider, minted JWTs); exchanges the client's
           token as sent (`subject_token: "access_token"`): /orders/ for orders-api (scope
           read), /billing/ for billing-api, /nowhere/ for an audience the provider refuses,
           /admin/ for a scope the token lacks; /api/ not exchanged. `verify` with the
           provider's keys checks every exchanged JWT for its policy's audience.
  split    split tokens (the provider's own JWTs, published); exchanges the JWT
           (`subject_token: "jwt"`) for orders-api
  down     as x, the exchange endpoint unreachable
  hostile  the stub token service introspects and answers the exchanges, each scripted
  xa, xb   as x, on the same VM and exchange endpoint, with the same policies in another order
           (xb: billing, nowhere, orders, admin): two listeners, or a reload that reorders
  lax      as hostile without `verify`, on the same VM and exchange endpoint"""

import json
import threading
import time

import pytest

from harness.envoy import Envoy, bearer, closed_port, fresh, request, seen_by_api
from harness.oidc import GATEWAY, OpenIdProvider
from harness.services import Signer, TokenService, b64url, decode_jwt_payload
from harness.split import PUBLISH, SECRET, publish, split_jwt

GW_ISS = "https://gateway.example.com"
TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"


@pytest.fixture(scope="module")
def op(tmp_path_factory):
    p = OpenIdProvider(tmp_path_factory.mktemp("oidc")).start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def stub_signer():
    return Signer("ES256", kid="stub-1")


@pytest.fixture(scope="module")
def stub(stub_signer):
    ts = TokenService(signer=stub_signer).start()
    yield ts
    ts.stop()


def policies():
    return [
        {"name": "orders", "match": {"path_prefix": "/orders/"},
         "exchange": {"audience": "orders-api", "scope": "read", "resource": "https://orders.internal/"}},
        {"name": "billing", "match": {"path_prefix": "/billing/"}, "exchange": {"audience": "billing-api"}},
        {"name": "nowhere", "match": {"path_prefix": "/nowhere/"}, "exchange": {"audience": "unknown-api"}},
        {"name": "admin", "match": {"path_prefix": "/admin/"},
         "exchange": {"audience": "orders-api", "scope": "admin"}},
    ]


def exchange_cfg(op, subject, cluster="op", port=None):
    return {"cluster": cluster, "authority": f"127.0.0.1:{port or op.port}", "path": "/token",
            "client_id": GATEWAY[0], "client_secret": GATEWAY[1], "timeout_ms": 3000,
            "subject_token": subject}


def provider_verify(op, audiences):
    return {"issuer": op.issuer, "audiences": audiences, "algorithms": ["ES256"],
            "jwks": {"cluster": "op", "authority": f"127.0.0.1:{op.port}", "path": "/jwks",
                     "min_refetch_s": 1}}


def phantom_cfg(op, **extra):
    cfg = {
        "required_scopes": ["read"],
        "phantom": {
            "cluster": "op", "authority": f"127.0.0.1:{op.port}", "path": "/token/introspection",
            "client_id": GATEWAY[0], "client_secret": GATEWAY[1], "timeout_ms": 3000, "response": "json",
            "mint": {"issuer": GW_ISS, "audience": "internal-apis", "algorithm": "ES256",
                     "private_key_pem": Signer("ES256").private_pem(), "key_id": "gw-1",
                     "claims": ["sub", "scope", "client_id"], "max_lifetime_s": 120},
        },
        "verify": provider_verify(op, ["split-api"]),
        "policies": policies(),
        "claims_to_headers": [{"claim": "aud", "header": "x-token-aud"}],
    }
    cfg.update(extra)
    return cfg


@pytest.fixture(scope="module")
def xenv(tmp_path_factory, op, echo, stub, stub_signer):
    split = {
        "required_scopes": ["read"],
        "split": {"max_entries": 1000, "publish": {"path": PUBLISH, "secret": SECRET}},
        "verify": provider_verify(op, ["split-api"]),
        "token_exchange": exchange_cfg(op, "jwt"),
        "policies": policies(),
    }
    hostile = {
        "required_scopes": ["read"],
        "phantom": {"cluster": "stub", "path": "/introspect", "client_id": "gateway",
                    "client_secret": "e2e-test-secret", "timeout_ms": 2000},
        "verify": {"issuer": "https://login.example.com", "audiences": ["api.example.com"],
                   "algorithms": ["ES256"], "jwks_inline": {"keys": [stub_signer.jwk()]}},
        "token_exchange": {"cluster": "stub", "path": "/exchange", "client_id": "gateway",
                           "client_secret": "x", "timeout_ms": 2000},
        "policies": [{"name": "orders", "match": {"path_prefix": "/orders/"},
                      "exchange": {"audience": "orders-api"}}],
    }
    e = Envoy(
        tmp_path_factory.mktemp("envoy-exchange"),
        listeners={
            "x": phantom_cfg(op, token_exchange=exchange_cfg(op, "access_token")),
            "split": split,
            "down": phantom_cfg(op, token_exchange=exchange_cfg(op, "access_token", "down", closed_port())),
            "lax": {k: v for k, v in hostile.items() if k != "verify"},
            "xa": phantom_cfg(op, token_exchange=exchange_cfg(op, "access_token")),
            "xb": phantom_cfg(op, token_exchange=exchange_cfg(op, "access_token"),
                              policies=[policies()[i] for i in (1, 2, 0, 3)]),
            "hostile": hostile,
        },
        clusters={"api": echo.port, "op": op.port, "stub": stub.port, "down": closed_port()},
        concurrency=1,
    )
    e.start()
    deadline = time.time() + 10
    while e.counters().get("jwks_fetched", 0) < 1:  # the provider's keys, for `verify`
        assert time.time() < deadline, "the provider's JWKS was not fetched"
        time.sleep(0.2)
    yield e
    e.stop()


def forwarded(reply):
    """The JWT the API received, decoded, and the headers it saw."""
    assert reply.status == 200, (reply.status, reply.body)
    headers = reply.json()["headers"]
    auth = [v for k, v in headers if k == "authorization"]
    assert len(auth) == 1 and auth[0].startswith("Bearer "), auth
    return decode_jwt_payload(auth[0][len("Bearer "):]), headers


def test_each_api_gets_a_token_made_for_it(xenv, op):
    token = op.token("read write")
    port = xenv.ports["x"]
    before = xenv.counters()
    orders, headers = forwarded(request(port, "/orders/1", bearer(token)))
    assert (orders["aud"], orders["scope"], orders["iss"]) == ("orders-api", "read", op.issuer)
    assert orders["resource"] == "https://orders.internal/" and orders["exchanged"] is True
    assert dict(headers)["x-token-aud"] == "orders-api", "claims_to_headers reads the exchanged token"
    billing, _ = forwarded(request(port, "/billing/1", bearer(token)))
    assert (billing["aud"], billing["scope"]) == ("billing-api", "read write")
    # A route without `exchange` gets the gateway's minted JWT, as before.
    minted, headers = forwarded(request(port, "/api/1", bearer(token)))
    assert (minted["iss"], minted["aud"]) == (GW_ISS, "internal-apis")
    assert dict(headers)["x-token-aud"] == "internal-apis"
    # Again: no second exchange, on either route.
    for path in ["/orders/2", "/billing/2", "/orders/3"]:
        again, _ = forwarded(request(port, path, bearer(token)))
        assert again["aud"] == path.split("/")[1] + "-api"
    after = xenv.counters()
    assert after["exchange_calls"] - before.get("exchange_calls", 0) == 2
    assert after["exchange_hit"] - before.get("exchange_hit", 0) == 3


def test_exchanged_tokens_never_reach_another_api_whatever_the_policies_order(xenv, op):
    """The exchange cache is keyed by what was asked for (endpoint, audience, scope,
    resource), never by a policy's position: two listeners with the same policies in another
    order share it without ever serving one API's token, or refusal, to another."""
    xa, xb = xenv.ports["xa"], xenv.ports["xb"]
    token = op.token("read write")
    orders, _ = forwarded(request(xa, "/orders/1", bearer(token)))
    assert orders["aud"] == "orders-api"
    billing, _ = forwarded(request(xb, "/billing/1", bearer(token)))
    assert billing["aud"] == "billing-api", "billing sits where orders was"
    # Both ask orders-api for the same: the token made for one serves the other.
    before = xenv.counters()
    again, _ = forwarded(request(xb, "/orders/1", bearer(token)))
    assert again["aud"] == "orders-api"
    assert xenv.counters()["exchange_calls"] == before["exchange_calls"]
    # A refusal cached for `nowhere` (xa's third) is not xb's third (orders) answer...
    refused = op.token("read write")
    assert request(xa, "/nowhere/1", bearer(refused)).status == 403
    served, _ = forwarded(request(xb, "/orders/1", bearer(refused)))
    assert served["aud"] == "orders-api"
    # ...and a token made for orders (xb's third) never reaches xa's third, `nowhere`.
    made = op.token("read write")
    assert forwarded(request(xb, "/orders/1", bearer(made)))[0]["aud"] == "orders-api"
    r = request(xa, "/nowhere/1", bearer(made))
    assert r.status == 403, (r.status, r.body)


def test_concurrent_requests_make_one_exchange(xenv, op):
    token = op.token("read")
    before = xenv.counters()
    statuses, auds = [], set()
    lock = threading.Lock()

    def send():
        r = request(xenv.ports["x"], "/orders/c", bearer(token))
        with lock:
            statuses.append(r.status)
            if r.status == 200:
                auds.add(forwarded(r)[0]["aud"])

    threads = [threading.Thread(target=send) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 50 and auds == {"orders-api"}
    after = xenv.counters()
    assert after["exchange_calls"] - before.get("exchange_calls", 0) == 1
    assert after["introspection_calls"] - before.get("introspection_calls", 0) == 1


def test_a_refused_exchange_is_403_and_never_forwards_the_token(xenv, op, echo):
    token = op.token("read")
    marker = fresh("refused")
    for path in [f"/nowhere/{marker}", f"/admin/{marker}"]:
        r = request(xenv.ports["x"], path, bearer(token))
        assert r.status == 403 and r.json()["code"] == "insufficient_scope", (path, r.body)
        assert 'error="insufficient_scope"' in r.header("www-authenticate")
    # Cached for negative_ttl_s: the same request is refused without a call.
    before = xenv.counters()
    assert request(xenv.ports["x"], f"/nowhere/{marker}", bearer(token)).status == 403
    assert xenv.counters()["exchange_calls"] == before["exchange_calls"]
    assert not seen_by_api(echo, marker)
    # A token the policy itself refuses (its scopes) is never exchanged.
    write_only = op.token("write")
    before = xenv.counters()
    assert request(xenv.ports["x"], f"/orders/{marker}", bearer(write_only)).status == 403
    assert xenv.counters()["exchange_calls"] == before["exchange_calls"]


def test_a_token_service_down_answers_502_or_503(xenv, op, echo):
    token = op.token("read")
    marker = fresh("down")
    r = request(xenv.ports["down"], f"/orders/{marker}", bearer(token))
    assert r.status in (502, 503) and r.json()["code"] in ("token_service_error", "token_service_unavailable")
    assert not seen_by_api(echo, marker)
    assert xenv.counters()["exchange_error"] >= 1


def test_split_tokens_exchange_their_jwt(xenv, op):
    # The split token is a JWT the provider signed (for split-api), published to the store.
    jwt = json.loads(op.post("/token", {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": op.token("read"),
        "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "requested_token_type": TYPE_JWT, "audience": "split-api"}, GATEWAY))["access_token"]
    assert publish(xenv.ports["split"], jwt).status == 204
    _, signature = split_jwt(jwt)
    orders, _ = forwarded(request(xenv.ports["split"], "/orders/s", bearer(signature)))
    assert (orders["aud"], orders["sub"]) == ("orders-api", decode_jwt_payload(jwt)["sub"])
    # Without an exchange the split JWT goes on as it is.
    same, _ = forwarded(request(xenv.ports["split"], "/api/s", bearer(signature)))
    assert same == decode_jwt_payload(jwt)


# ---- hostile answers (the stub token service) -------------------------------------------------

def stub_jwt(signer, **over):
    now = int(time.time())
    claims = {"iss": "https://login.example.com", "sub": "u", "aud": "orders-api", "scope": "read",
              "iat": now, "exp": now + 300}
    claims.update(over)
    return signer.mint(claims)


def exchange_answer(token, **over):
    doc = {"access_token": token, "issued_token_type": TYPE_JWT, "token_type": "N_A", "expires_in": 300}
    doc.update(over)
    return json.dumps(doc).encode()


def hostile_rows(signer):
    header = b64url(json.dumps({"alg": "none"}).encode())
    unsigned = f"{header}.{b64url(json.dumps({'aud': 'orders-api'}).encode())}."
    return [
        ("a good answer (control)", 200, "application/json", exchange_answer(stub_jwt(signer)), 200, None),
        ("another audience", 200, "application/json",
         exchange_answer(stub_jwt(signer, aud="billing-api")), 502, "token_service_error"),
        ("signed by another key", 200, "application/json",
         exchange_answer(stub_jwt(Signer("ES256", kid="stub-1"))), 502, "token_service_error"),
        ("an opaque access_token", 200, "application/json", exchange_answer("opaque-abc"), 502,
         "token_service_error"),
        ("an unsigned JWT", 200, "application/json", exchange_answer(unsigned), 502, "token_service_error"),
        ("already expired", 200, "application/json",
         exchange_answer(stub_jwt(signer, exp=int(time.time()) - 60)), 502, "token_service_error"),
        ("not JSON", 200, "text/plain", b"access_token=x", 502, "token_service_error"),
        ("JSON that is not an object", 200, "application/json", b"[1]", 502, "token_service_error"),
        ("oversized (64 KB)", 200, "application/json",
         exchange_answer(stub_jwt(signer), pad="x" * 65536), 502, "token_service_error"),
        ("invalid_grant", 400, "application/json", b'{"error":"invalid_grant"}', 401, "invalid_token"),
        ("invalid_scope", 400, "application/json", b'{"error":"invalid_scope"}', 403, "insufficient_scope"),
        ("invalid_client", 401, "application/json", b'{"error":"invalid_client"}', 502, "token_service_error"),
        ("500", 500, "text/plain", b"boom", 502, "token_service_error"),
        ("503", 503, "text/plain", b"busy", 503, "token_service_unavailable"),
    ]


@pytest.mark.parametrize("row", range(14))
def test_hostile_exchange_answers(xenv, stub, stub_signer, echo, row):
    name, status, ctype, body, want, code = hostile_rows(stub_signer)[row]
    token = fresh("hx")
    stub.raw["exchange:" + token] = (status, ctype, body, {})
    marker = fresh("hostile")
    r = request(xenv.ports["hostile"], f"/orders/{marker}", bearer(token))
    assert r.status == want, (name, r.status, r.body)
    if want == 200:
        claims, _ = forwarded(r)
        assert claims["aud"] == "orders-api"
    else:
        assert r.json()["code"] == code, name
        assert not seen_by_api(echo, marker), f"{name}: the request reached the API"


def test_a_listener_that_verifies_never_serves_what_one_without_verify_cached(xenv, stub, echo):
    """How an exchanged token is verified is part of what is asked for: a token cached by a
    listener without `verify` (here one signed by a key nobody trusts) is never forwarded by a
    listener that verifies, on the same VM and exchange endpoint."""
    token = fresh("lax")
    forged = Signer("ES256", kid="stub-1").mint(
        {"iss": "https://login.example.com", "aud": "orders-api", "sub": "mallory", "scope": "read",
         "iat": int(time.time()), "exp": int(time.time()) + 300})
    stub.raw["exchange:" + token] = (200, "application/json", exchange_answer(forged), {})
    r = request(xenv.ports["lax"], "/orders/lax", bearer(token))
    assert r.status == 200 and forwarded(r)[0]["sub"] == "mallory"
    marker = fresh("strict")
    r = request(xenv.ports["hostile"], f"/orders/{marker}", bearer(token))
    assert r.status == 502 and r.json()["code"] == "token_service_error", (r.status, r.body)
    assert not seen_by_api(echo, marker)
