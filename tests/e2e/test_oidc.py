"""Phantom tokens with an authorization server nobody here wrote: panva's oidc-provider (OpenID
Certified, from npm), started by these tests, answering RFC 7662 JSON introspection and RFC 9701
signed introspection. The filter mints the JWT the API receives; the API side is checked here by
verifying that JWT with the JWK Set the filter serves.

Listeners (one Envoy, two workers, one VM):
  json           response "json", mints with ES256
  rfc9701        response "rfc9701" (verified with the provider's fetched JWKS), mints with EdDSA
  rfc9701_forged response "rfc9701" with verification keys that are not the provider's"""

import json
import time

import pytest

from harness.envoy import Envoy, bearer, request
from harness.oidc import GATEWAY, OpenIdProvider
from harness.services import Signer, b64url_decode, decode_jwt_payload

GW_ISS = "https://gateway.example.com"
GW_AUD = "internal-apis"
JWKS_PATH = "/.well-known/gateway-jwks.json"
MINT_CLAIMS = ["sub", "scope", "client_id", "jti"]


@pytest.fixture(scope="module")
def op(tmp_path_factory):
    p = OpenIdProvider(tmp_path_factory.mktemp("oidc")).start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def minting_keys():
    return {"json": Signer("ES256", kid="gw-es256-1"), "rfc9701": Signer("EdDSA", kid="gw-ed25519-1")}


def phantom_cfg(op, response, signer):
    return {
        "required_scopes": ["read"],
        "phantom": {
            "cluster": "op", "authority": f"127.0.0.1:{op.port}", "path": "/token/introspection",
            "client_id": GATEWAY[0], "client_secret": GATEWAY[1], "timeout_ms": 3000,
            "response": response,
            "mint": {"issuer": GW_ISS, "audience": GW_AUD, "algorithm": signer.alg,
                     "private_key_pem": signer.private_pem(), "key_id": signer.kid,
                     "claims": MINT_CLAIMS, "max_lifetime_s": 120, "jwks_path": JWKS_PATH},
        },
    }


@pytest.fixture(scope="module")
def oenv(tmp_path_factory, op, echo, minting_keys):
    json_cfg = phantom_cfg(op, "json", minting_keys["json"])
    signed = phantom_cfg(op, "rfc9701", minting_keys["rfc9701"])
    signed["verify"] = {"issuer": op.issuer, "audiences": [GW_AUD], "algorithms": ["ES256"],
                        "jwks": {"cluster": "op", "authority": f"127.0.0.1:{op.port}", "path": "/jwks",
                                 "min_refetch_s": 1}}
    forged = phantom_cfg(op, "rfc9701", minting_keys["rfc9701"])
    forged["verify"] = {"issuer": op.issuer, "audiences": [GW_AUD], "algorithms": ["ES256"],
                        "jwks_inline": {"keys": [Signer("ES256", kid="op-es256-1").jwk()]}}
    e = Envoy(tmp_path_factory.mktemp("envoy-oidc"),
              listeners={"json": json_cfg, "rfc9701": signed, "rfc9701_forged": forged},
              clusters={"api": echo.port, "op": op.port}, concurrency=2)
    e.start()
    deadline = time.time() + 5
    while e.counters().get("jwks_fetched", 0) < 1:
        assert time.time() < deadline, "the provider's JWKS was not fetched"
    yield e
    e.stop()


def verify_jws(jwt, jwks):
    """Checks `jwt`'s signature with the key of its `kid` in `jwks`, as an API would."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
    h, p, s = jwt.split(".")
    header = json.loads(b64url_decode(h))
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    assert header["alg"] == key["alg"]
    data, sig = f"{h}.{p}".encode(), b64url_decode(s)
    if key["kty"] == "EC":
        pub = ec.EllipticCurvePublicNumbers(int.from_bytes(b64url_decode(key["x"]), "big"),
                                            int.from_bytes(b64url_decode(key["y"]), "big"), ec.SECP256R1()).public_key()
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        pub.verify(der, data, ec.ECDSA(hashes.SHA256()))
    else:
        ed25519.Ed25519PublicKey.from_public_bytes(b64url_decode(key["x"])).verify(sig, data)
    return header


def forwarded_jwt(echo, before):
    seen = echo.requests[before:]
    assert len(seen) == 1, seen
    auth = [v for k, v in seen[0]["headers"] if k == "authorization"]
    assert len(auth) == 1 and auth[0].startswith("Bearer "), auth
    return auth[0][len("Bearer "):]


@pytest.mark.parametrize("listener", ["json", "rfc9701"])
def test_a_provider_token_reaches_the_api_as_a_minted_jwt(oenv, op, echo, minting_keys, listener):
    token = op.token("read")
    introspected = op.introspect(token)
    assert introspected["active"] is True
    c0 = oenv.counters()
    before = len(echo.requests)
    r = request(oenv.ports[listener], "/orders", headers=bearer(token))
    assert r.status == 200, r.body
    jwt = forwarded_jwt(echo, before)
    assert token not in json.dumps(echo.requests[before:])
    # The API verifies it with the JWK Set the gateway serves.
    jwks = request(oenv.ports[listener], JWKS_PATH).json()
    header = verify_jws(jwt, jwks)
    assert header["kid"] == minting_keys[listener].kid
    assert header["alg"] == minting_keys[listener].alg
    claims = decode_jwt_payload(jwt)
    assert claims["iss"] == GW_ISS and claims["aud"] == GW_AUD
    assert claims["client_id"] == introspected["client_id"] == "app"
    assert claims["scope"] == introspected["scope"] == "read"
    # Only allow-listed claims; lifetime capped at 120 s and never past the token's own expiry.
    assert set(claims) <= set(MINT_CLAIMS) | {"iss", "aud", "iat", "exp"}, claims
    assert "token_type" not in claims
    assert claims["exp"] <= min(introspected["exp"], claims["iat"] + 120)
    assert abs(claims["iat"] - time.time()) < 30
    # Cached: the next requests forward the same JWT without asking the provider again.
    for _ in range(3):
        before = len(echo.requests)
        assert request(oenv.ports[listener], "/orders", headers=bearer(token)).status == 200
        assert forwarded_jwt(echo, before) == jwt
    c1 = oenv.counters()
    assert c1["introspection_calls"] - c0.get("introspection_calls", 0) == 1
    assert c1["minted"] - c0.get("minted", 0) == 1
    assert c1.get("introspection_unverified", 0) == c0.get("introspection_unverified", 0)


@pytest.mark.parametrize("listener", ["json", "rfc9701"])
def test_revoked_garbage_and_underscoped_tokens_are_refused(oenv, op, echo, listener):
    revoked = op.token("read")
    op.revoke(revoked)
    assert op.introspect(revoked) == {"active": False}
    write_only = op.token("write")
    before = len(echo.requests)
    for token in [revoked, "garbage-that-the-provider-never-issued", op.token("read") + "x"]:
        r = request(oenv.ports[listener], "/orders", headers=bearer(token))
        assert r.status == 401, (token, r.status, r.body)
        assert 'error="invalid_token"' in r.header("www-authenticate")
    r = request(oenv.ports[listener], "/orders", headers=bearer(write_only))
    assert r.status == 403 and 'error="insufficient_scope"' in r.header("www-authenticate")
    assert echo.requests[before:] == []


def test_a_signed_answer_that_does_not_verify_is_a_502(oenv, op, echo):
    token = op.token("read")
    c0 = oenv.counters()
    before = len(echo.requests)
    r = request(oenv.ports["rfc9701_forged"], "/orders", headers=bearer(token))
    assert r.status == 502 and r.json()["code"] == "token_service_error", r.body
    assert echo.requests[before:] == []
    # Not cached: asked again, refused again.
    assert request(oenv.ports["rfc9701_forged"], "/orders", headers=bearer(token)).status == 502
    c1 = oenv.counters()
    assert c1["introspection_unverified"] - c0.get("introspection_unverified", 0) == 2
    # The same token through the correctly configured listener works.
    assert request(oenv.ports["rfc9701"], "/orders", headers=bearer(token)).status == 200


def test_the_gateway_jwks_is_answered_locally(oenv, echo, minting_keys):
    before = len(echo.requests)
    for listener, signer in minting_keys.items():
        r = request(oenv.ports[listener], JWKS_PATH + "?v=1")
        assert r.status == 200
        assert r.header("content-type") == "application/jwk-set+json"
        doc = r.json()
        assert doc == {"keys": [signer.jwk()]}
        assert all("d" not in k for k in doc["keys"])
        head = request(oenv.ports[listener], JWKS_PATH, method="HEAD")
        assert head.status == 200 and head.body == b""
        post = request(oenv.ports[listener], JWKS_PATH, method="POST", body=b"{}")
        assert post.status == 405 and post.header("allow") == "GET, HEAD"
    assert echo.requests[before:] == []


def test_no_key_token_or_jwt_in_the_log(oenv, op, echo, minting_keys):
    token = op.token("read")
    before = len(echo.requests)
    assert request(oenv.ports["json"], "/orders", headers=bearer(token)).status == 200
    jwt = forwarded_jwt(echo, before)
    log = oenv.log_path.read_text(errors="replace")
    assert "phantom.response=json" in log and "phantom.mint.key_id=gw-es256-1" in log
    secrets = [token, jwt, jwt.split(".")[2], GATEWAY[1], "PRIVATE KEY"]
    for signer in minting_keys.values():
        secrets += [line for line in signer.private_pem().splitlines() if "-----" not in line]
    for s in secrets:
        assert s not in log, f"{s[:12]}... appears in Envoy's log"
