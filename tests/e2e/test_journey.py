"""The JWT's journey in a real Envoy: what reaches the API must have enough life left for the
API chain (`min_remaining_lifetime_s`), must not have been issued for longer than the route
accepts (`max_lifetime_s`), and on a route with `embedded_token` is the narrower JWT the
resolved one carries. The stub token service signs every JWT with a key the gateway verifies
(ES256, inline JWK Set); exchanges are scripted answers of the same stub.

Listener `j` (one Envoy, two workers), policies:
  /short/   min_remaining_lifetime_s 30 (phantom, split and JWTs accepted as they are)
  /jwt/     the same, and accept_jwt
  /long/    max_lifetime_s 900
  /pay/     embedded_token `pay_token`, verified for the audience `payments-api`, claims_to_headers
  /orders/  token exchange for `orders-api`, min_remaining_lifetime_s 30"""

import json
import time

import pytest

from harness.envoy import Envoy, bearer, request
from harness.services import Signer, TokenService, decode_jwt_payload
from harness.split import PUBLISH, SECRET, split_jwt, store_key

ISS = "https://login.example.com"
AUD = "api.example.com"
TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"


@pytest.fixture(scope="module")
def signer():
    return Signer("ES256", kid="journey-es256")


@pytest.fixture(scope="module")
def ts(signer):
    t = TokenService(signer=signer).start()
    yield t
    t.stop()


@pytest.fixture(scope="module")
def jenv(tmp_path_factory, ts, signer, echo):
    verify = {"issuer": ISS, "audiences": [AUD, "orders-api"], "algorithms": ["ES256"],
              "jwks_inline": {"keys": [signer.jwk()]}}
    cfg = {
        "required_scopes": ["read"],
        "phantom": {"cluster": "ts", "path": "/introspect", "client_id": "gw", "client_secret": "s"},
        "verify": verify,
        "split": {"max_entries": 1000, "fallback_to_phantom": True,
                  "publish": {"path": PUBLISH, "secret": SECRET}},
        "token_exchange": {"cluster": "ts", "path": "/exchange", "client_id": "gw",
                           "client_secret": "s", "subject_token": "access_token"},
        "policies": [
            {"name": "short", "match": {"path_prefix": "/short/"}, "min_remaining_lifetime_s": 30},
            {"name": "jwt", "match": {"path_prefix": "/jwt/"}, "min_remaining_lifetime_s": 30,
             "accept_jwt": True},
            {"name": "long", "match": {"path_prefix": "/long/"}, "max_lifetime_s": 900},
            {"name": "pay", "match": {"path_prefix": "/pay/"},
             "embedded_token": {"claim": "pay_token", "audiences": ["payments-api"]},
             "claims_to_headers": [{"claim": "sub", "header": "x-sub"}]},
            {"name": "orders", "match": {"path_prefix": "/orders/"},
             "exchange": {"audience": "orders-api"}, "min_remaining_lifetime_s": 30},
        ],
    }
    e = Envoy(tmp_path_factory.mktemp("envoy-journey"), listeners={"j": cfg},
              clusters={"api": echo.port, "ts": ts.port}, concurrency=2)
    e.start()
    yield e
    e.stop()


def jwt(signer, left, lifetime=None, **claims):
    """A JWT the gateway verifies, with `left` seconds to live, issued `lifetime` seconds
    before its end (by default: now, or 300 s before its end if that is earlier)."""
    now = int(time.time())
    exp = now + left
    iat = exp - lifetime if lifetime is not None else min(now, exp - 300)
    full = {"iss": ISS, "aud": AUD, "sub": "alice", "scope": "read", "exp": exp, "iat": iat}
    full.update(claims)
    return signer.mint(full)


def opaque(ts, jwt_value):
    """An opaque token the stub introspects to `jwt_value`."""
    return ts.script(jwt_value, "journey")


def forwarded(reply):
    assert reply.status == 200, (reply.status, reply.body)
    auth = [v for k, v in reply.json()["headers"] if k == "authorization"]
    return auth[0][len("Bearer "):], dict(reply.json()["headers"])


def test_tokens_with_too_little_life_left_are_refused_so_clients_refresh_first(jenv, ts, signer):
    port = jenv.ports["j"]
    five, sixty = jwt(signer, 5), jwt(signer, 60)
    # Phantom.
    r = request(port, "/short/1", bearer(opaque(ts, five)))
    assert r.status == 401 and r.json()["code"] == "invalid_token"
    assert 'error_description="The access token expires too soon' in r.header("www-authenticate")
    assert forwarded(request(port, "/short/1", bearer(opaque(ts, sixty))))[0] == sixty
    # The same token elsewhere (no rule) goes on: the rule is the route's.
    assert request(port, "/api/1", bearer(opaque(ts, five))).status == 200
    # Split tokens.
    for token, want in ((five, 401), (sixty, 200)):
        hp, sig = split_jwt(token)
        doc = {"signature_hash": store_key(sig), "header_payload": hp,
               "expires_at": int(time.time()) + 120}
        assert request(port, PUBLISH, bearer(SECRET), method="POST", body=json.dumps(doc).encode()).status == 204
        assert request(port, "/short/2", bearer(sig)).status == want
    # JWTs accepted as they are.
    assert request(port, "/jwt/1", bearer(five)).status == 401
    assert request(port, "/jwt/1", bearer(sixty)).status == 200
    assert jenv.counters()["denied_expires_too_soon"] >= 3


def test_long_lived_tokens_are_refused_where_the_route_caps_lifetime(jenv, ts, signer):
    port = jenv.ports["j"]
    assert request(port, "/long/1", bearer(opaque(ts, jwt(signer, 300, lifetime=900)))).status == 200
    r = request(port, "/long/1", bearer(opaque(ts, jwt(signer, 300, lifetime=3600))))
    assert r.status == 401 and "issued for longer" in r.header("www-authenticate")
    no_iat = jwt(signer, 300)
    payload = decode_jwt_payload(no_iat)
    payload.pop("iat")
    assert request(port, "/long/1", bearer(opaque(ts, signer.mint(payload)))).status == 401
    assert jenv.counters()["denied_lifetime_too_long"] >= 2


def test_an_exchanged_token_with_too_little_life_is_exchanged_again(jenv, ts, signer):
    port = jenv.ports["j"]
    subject = opaque(ts, jwt(signer, 300))

    def made(left):
        token = jwt(signer, left, aud="orders-api", sub="made")
        ts.raw["exchange:" + subject] = (200, "application/json", json.dumps({
            "access_token": token, "issued_token_type": TYPE_JWT, "token_type": "N_A",
            "expires_in": left}).encode(), {})
        return token

    first = made(40)
    assert forwarded(request(port, "/orders/1", bearer(subject)))[0] == first
    calls = len(ts.calls_for("exchange:" + subject))
    time.sleep(11)  # 29 s left on the exchanged token: too little
    second = made(600)
    assert forwarded(request(port, "/orders/2", bearer(subject)))[0] == second
    assert len(ts.calls_for("exchange:" + subject)) == calls + 1, "exchanged again"
    made(10)
    other = opaque(ts, jwt(signer, 300))
    ts.raw["exchange:" + other] = ts.raw["exchange:" + subject]
    assert request(port, "/orders/3", bearer(other)).status == 401, "the new one is too short too"


def test_the_api_receives_the_embedded_token_and_its_claims(jenv, ts, signer):
    port = jenv.ports["j"]

    def carrying(inner, **extra):
        return opaque(ts, jwt(signer, 300, pay_token=inner, **extra))

    good = jwt(signer, 200, aud="payments-api", sub="payments-alice", scope="pay")
    token, headers = forwarded(request(port, "/pay/1", bearer(carrying(good))))
    assert token == good and headers["x-sub"] == "payments-alice"
    rows = [
        ("missing", opaque(ts, jwt(signer, 300)), 403),
        ("forged", carrying(jwt(Signer("ES256", kid="journey-es256"), 200, aud="payments-api")), 401),
        ("another audience", carrying(jwt(signer, 200, aud="orders-api")), 401),
        ("outliving the outer token", carrying(jwt(signer, 3000, lifetime=3100, aud="payments-api")), 401),
        ("not a JWT", carrying("opaque-value"), 401),
    ]
    for what, token, want in rows:
        r = request(port, "/pay/1", bearer(token))
        assert r.status == want, (what, r.status, r.body)
    # Elsewhere the outer token itself is forwarded.
    outer_token = carrying(good)
    outer, _ = forwarded(request(port, "/api/1", bearer(outer_token)))
    assert decode_jwt_payload(outer)["pay_token"] == good
    c = jenv.counters()
    assert c["embedded_forwarded"] >= 1 and c["embedded_refused"] >= len(rows)


def test_numeric_dates_with_a_fraction_are_dates(jenv, ts, signer):
    """RFC 7519 §2 allows a NumericDate with a fraction: `exp` 5.5 s away is 5.5 s away, never
    "no exp" (which would pass every rule about it)."""
    port = jenv.ports["j"]
    now = int(time.time())
    five = signer.mint({"iss": ISS, "aud": AUD, "sub": "alice", "scope": "read", "iat": now,
                        "exp": now + 5.5})
    assert request(port, "/short/1", bearer(opaque(ts, five))).status == 401
    assert request(port, "/jwt/1", bearer(five)).status == 401
    sixty = signer.mint({"iss": ISS, "aud": AUD, "sub": "alice", "scope": "read", "iat": now + 0.5,
                         "exp": now + 60.25})
    assert request(port, "/jwt/1", bearer(sixty)).status == 200
    # An embedded token living a day, carried by a token whose exp has a fraction: it
    # outlives its carrier, refused.
    inner = jwt(signer, 86_400, lifetime=86_400, aud="payments-api")
    carrier = signer.mint({"iss": ISS, "aud": AUD, "sub": "alice", "scope": "read", "iat": now,
                           "exp": now + 60.5, "pay_token": inner})
    assert request(port, "/pay/1", bearer(opaque(ts, carrier))).status == 401
