"""Revocation that reaches every cache at once (`revocation`), in a real Envoy with four
workers, against panva's oidc-provider (sign-in, end_session, back-channel logout, RFC 7009
revocation, token exchange) and the stub token service (tokens scripted with their subject,
session and issue time).

Listeners (one Envoy, four workers):
  op    phantom tokens of oidc-provider (minted), token exchange on /orders/, the revocation
        API, back-channel logout for the client "web", and the provider's RFC 7009 endpoint
        observed on its way (/token/revocation is routed to the provider)
  stub  phantom tokens of the stub token service (signed JWTs, verified), split tokens, JWTs
        accepted as they are on /jwt/, the revocation API, back-channel logout with logout
        tokens this test signs (every rule of section 2.6, one at a time)
  full  a VM of its own with room for 8 marks only

Before each revocation, every worker has its own copy of the token (enough requests on new
connections that each of the four workers served it); after the 200, every request with it is
refused, from every copy, with no introspection."""

import base64
import hashlib
import json
import threading
import time
import urllib.parse

import pytest

from harness.envoy import Envoy, bearer, request
from harness.oidc import APP, GATEWAY, OpenIdProvider
from harness.services import Signer, TokenService
from harness.split import PUBLISH, SECRET, split_jwt, store_key

REVOKE_SECRET = "e2e-revocation-secret-0123"
STUB_ISS = "https://login.example.com"
STUB_AUD = "api.example.com"
GW_ISS = "https://gateway.example.com"
STUB_SKEW_S = 2  # verify.clock_skew_s of the stub listener
WORKERS = 4
SPREAD = 24  # requests, each on a new connection: every worker serves some of them


@pytest.fixture(scope="module")
def op(tmp_path_factory):
    p = OpenIdProvider(tmp_path_factory.mktemp("oidc-rv")).start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def signer():
    return Signer("ES256", kid="stub-es256")


@pytest.fixture(scope="module")
def ts(signer):
    t = TokenService(signer=signer).start()
    yield t
    t.stop()


def revocation(**extra):
    block = {"path": "/_revoke", "secret": REVOKE_SECRET}
    block.update(extra)
    return block


@pytest.fixture(scope="module")
def renv(tmp_path_factory, op, ts, signer, echo):
    op_cfg = {
        "required_scopes": ["read"],
        "phantom": {
            "cluster": "op", "authority": f"127.0.0.1:{op.port}", "path": "/token/introspection",
            "client_id": GATEWAY[0], "client_secret": GATEWAY[1], "timeout_ms": 3000,
            "response": "json",
            "mint": {"issuer": GW_ISS, "audience": "internal-apis", "algorithm": "ES256",
                     "private_key_pem": Signer("ES256").private_pem(), "key_id": "gw-1",
                     "claims": ["scope", "client_id"], "max_lifetime_s": 120},
        },
        "verify": {"issuer": op.issuer, "audiences": ["orders-api"], "algorithms": ["ES256"],
                   "jwks": {"cluster": "op", "authority": f"127.0.0.1:{op.port}", "path": "/jwks",
                            "min_refetch_s": 1}},
        "token_exchange": {"cluster": "op", "authority": f"127.0.0.1:{op.port}", "path": "/token",
                           "client_id": GATEWAY[0], "client_secret": GATEWAY[1], "timeout_ms": 3000,
                           "subject_token": "access_token"},
        "policies": [{"name": "orders", "match": {"path_prefix": "/orders/"},
                      "exchange": {"audience": "orders-api", "scope": "read"}}],
        "revocation": revocation(observe_paths=["/token/revocation"],
                                 backchannel_logout={"path": "/_bcl", "audiences": ["web"]}),
    }
    stub_cfg = {
        "required_scopes": ["read"],
        "phantom": {"cluster": "ts", "path": "/introspect", "client_id": "gw", "client_secret": "s",
                    "timeout_ms": 5000},
        "verify": {"issuer": STUB_ISS, "audiences": [STUB_AUD], "algorithms": ["ES256"],
                   "jwks_inline": {"keys": [signer.jwk()]}, "clock_skew_s": STUB_SKEW_S},
        "split": {"max_entries": 1000, "hash_encoding": "base64url", "fallback_to_phantom": True,
                  "publish": {"path": PUBLISH, "secret": SECRET}},
        "policies": [{"name": "jwt", "match": {"path_prefix": "/jwt/"}, "accept_jwt": True}],
        "revocation": revocation(observe_paths=["/token/revocation"],
                                 backchannel_logout={"path": "/_bcl", "audiences": ["web"]}),
    }
    full_cfg = {
        "phantom": {"cluster": "ts", "path": "/introspect", "client_id": "gw", "client_secret": "s"},
        "revocation": revocation(max_marks=8, observe_paths=["/token/revocation"]),
    }
    e = Envoy(tmp_path_factory.mktemp("envoy-rv"),
              listeners={
                  "op": (op_cfg, (("/token/revocation", "op"), ("/", "api"))),
                  "stub": (stub_cfg, (("/token/revocation", "op"), ("/", "api"))),
                  "full": {"plugin": full_cfg, "vm_id": "revocation_full",
                           "routes": (("/token/revocation", "op"), ("/", "api"))},
              },
              clusters={"api": echo.port, "op": op.port, "ts": ts.port}, concurrency=WORKERS)
    e.start()
    deadline = time.time() + 10
    while e.counters().get("jwks_fetched", 0) < 1:
        assert time.time() < deadline, "the provider's JWKS was not fetched"
        time.sleep(0.1)
    op.set_backchannel_logout(f"http://127.0.0.1:{e.ports['op']}/_bcl")
    yield e
    e.stop()


def statuses(port, token, path="/api/x", n=SPREAD):
    """The statuses of `n` requests with `token`, each on a new connection."""
    return [request(port, path, bearer(token)).status for _ in range(n)]


def counters_delta(env, before, *names):
    after = env.counters()
    return {n: after.get(n, 0) - before.get(n, 0) for n in names}


def revoke(port, form, secret=REVOKE_SECRET):
    return request(port, "/_revoke", [("content-type", "application/x-www-form-urlencoded")]
                   + (bearer(secret) if secret else []), method="POST",
                   body=urllib.parse.urlencode(form).encode())


def stub_token(ts, signer, name, **claims):
    """An opaque token the stub token service introspects to a JWT with these claims."""
    now = int(time.time())
    full = {"iss": STUB_ISS, "aud": STUB_AUD, "sub": f"user-{name}", "scope": "read write",
            "iat": now, "exp": now + 300}
    full.update(claims)
    ts.scripted[name] = signer.mint(full)
    return name


def test_a_user_who_signs_out_is_refused_at_once_on_every_worker(renv, op):
    """The sign-in, the API call, end_session: the provider posts its logout token to the
    gateway, which answers only once every worker forgot the session's tokens."""
    port = renv.ports["op"]
    alice = op.sign_in("alice")
    bob = op.sign_in("bob")
    token, other = alice.tokens["access_token"], bob.tokens["access_token"]
    assert statuses(port, token) == [200] * SPREAD
    assert statuses(port, other, n=4) == [200] * 4
    before = renv.counters()
    op.sign_out(alice)
    assert "backchannel.success web" in op.log_path.read_text()
    assert statuses(port, token) == [401] * SPREAD, "every worker, at once"
    assert statuses(port, other, n=8) == [200] * 8, "another user's session goes on"
    delta = counters_delta(renv, before, "backchannel_logout_accepted", "revoked_session",
                           "denied_revoked", "introspection_calls")
    assert delta["backchannel_logout_accepted"] == 1 and delta["revoked_session"] == 1
    assert delta["denied_revoked"] == SPREAD
    assert delta["introspection_calls"] == 0, "refused from the marks, never introspected again"


def test_a_token_revoked_at_the_provider_through_the_gateway_is_refused(renv, op):
    """RFC 7009 on its way: the client authenticates itself at the provider; when the provider
    answers 200, the gateway has revoked the token everywhere before the client hears it."""
    port = renv.ports["op"]
    token = op.token("read")
    assert statuses(port, token) == [200] * SPREAD
    basic = base64.b64encode(f"{APP[0]}:{APP[1]}".encode()).decode()
    form = urllib.parse.urlencode({"token": token, "token_type_hint": "access_token"}).encode()
    # Wrong client credentials: the provider refuses, nothing is revoked.
    wrong = request(port, "/token/revocation",
                    [("authorization", "Basic " + base64.b64encode(b"app:nope").decode()),
                     ("content-type", "application/x-www-form-urlencoded")], method="POST", body=form)
    assert wrong.status == 401
    assert statuses(port, token, n=4) == [200] * 4
    done = request(port, "/token/revocation",
                   [("authorization", "Basic " + basic),
                    ("content-type", "application/x-www-form-urlencoded")], method="POST", body=form)
    assert done.status == 200, done.body
    assert op.introspect(token) == {"active": False}
    assert statuses(port, token) == [401] * SPREAD


def test_the_api_revokes_tokens_by_value_hash_subject_and_session(renv, ts, signer):
    port = renv.ports["stub"]
    now = int(time.time())
    by_value = stub_token(ts, signer, "rv-value")
    by_hash = stub_token(ts, signer, "rv-hash")
    old = stub_token(ts, signer, "rv-old", sub="carol", iat=now - 100)
    session = stub_token(ts, signer, "rv-session", sid="sess-5")
    spared = stub_token(ts, signer, "rv-spared", sid="sess-6")
    for t in (by_value, by_hash, old, session, spared):
        assert statuses(port, t) == [200] * SPREAD, t
    before = renv.counters()
    assert revoke(port, {"token": by_value}).status == 200
    assert statuses(port, by_value) == [401] * SPREAD
    digest = base64.urlsafe_b64encode(hashlib.sha256(by_hash.encode()).digest()).rstrip(b"=").decode()
    assert revoke(port, {"token_hash": digest}).status == 200
    assert statuses(port, by_hash) == [401] * SPREAD
    assert revoke(port, {"sub": "carol"}).status == 200
    assert statuses(port, old) == [401] * SPREAD
    time.sleep(STUB_SKEW_S + 1.1)  # issued later than the revocation and the clock skew
    newer = stub_token(ts, signer, "rv-newer", sub="carol", iat=int(time.time()))
    assert statuses(port, newer) == [200] * SPREAD, "issued after the revocation: served"
    assert revoke(port, {"sid": "sess-5"}).status == 200
    assert statuses(port, session) == [401] * SPREAD
    assert statuses(port, spared) == [200] * SPREAD, "another session"
    # A token the gateway never saw: 200 all the same, and refused when it comes.
    assert revoke(port, {"token": "rv-later"}).status == 200
    stub_token(ts, signer, "rv-later")
    assert statuses(port, "rv-later", n=4) == [401] * 4
    delta = counters_delta(renv, before, "revoked_token", "revoked_subject", "revoked_session")
    assert delta == {"revoked_token": 3, "revoked_subject": 1, "revoked_session": 1}


def test_split_tokens_and_jwts_accepted_as_they_are_are_revoked_too(renv, signer):
    port = renv.ports["stub"]
    now = int(time.time())
    jwt = signer.mint({"iss": STUB_ISS, "aud": STUB_AUD, "sub": "dave", "scope": "read",
                       "iat": now - 5, "exp": now + 300})
    header_payload, signature = split_jwt(jwt)
    published = request(port, PUBLISH, [("content-type", "application/json")] + bearer(SECRET),
                        method="POST", body=json.dumps({
                            "signature_hash": store_key(signature, "base64url"),
                            "header_payload": header_payload, "expires_at": now + 300}).encode())
    assert published.status == 204, published.body
    assert statuses(port, signature) == [200] * SPREAD
    assert revoke(port, {"token": signature}).status == 200
    assert statuses(port, signature) == [401] * SPREAD
    accepted = signer.mint({"iss": STUB_ISS, "aud": STUB_AUD, "sub": "erin", "scope": "read",
                            "iat": now - 5, "exp": now + 300})
    assert statuses(port, accepted, path="/jwt/x") == [200] * SPREAD
    assert revoke(port, {"sub": "erin"}).status == 200
    assert statuses(port, accepted, path="/jwt/x") == [401] * SPREAD


def test_exchanged_tokens_go_with_the_token_they_were_made_from(renv, op):
    port = renv.ports["op"]
    token = op.token("read")
    assert statuses(port, token, path="/orders/1") == [200] * SPREAD
    assert revoke(port, {"token": token}).status == 200
    assert statuses(port, token, path="/orders/1") == [401] * SPREAD
    assert statuses(port, token, path="/api/1", n=4) == [401] * 4


def test_an_introspection_in_flight_when_its_token_is_revoked_is_refused_and_not_cached(renv, ts):
    port = renv.ports["stub"]
    token = "slow-rv-race"
    result = {}
    slow = threading.Thread(target=lambda: result.update(r=request(port, "/api/x", bearer(token))))
    slow.start()
    time.sleep(0.5)  # the introspection is in flight (the stub answers in 3 s)
    answered = revoke(port, {"token": token})
    assert answered.status == 200
    slow.join(10)
    assert result["r"].status == 401
    calls = len(ts.calls_for(token))
    assert request(port, "/api/x", bearer(token)).status == 401
    assert len(ts.calls_for(token)) == calls + 1, "nothing was cached: asked again, refused again"


def logout_token(signer, **over):
    now = int(time.time())
    claims = {"iss": STUB_ISS, "aud": "web", "iat": now, "exp": now + 120,
              "jti": f"jti-{time.time_ns()}", "sub": "frank", "sid": "sess-frank",
              "events": {"http://schemas.openid.net/event/backchannel-logout": {}}}
    header = {"alg": "ES256", "kid": signer.kid, "typ": "logout+jwt"}
    for name, value in over.items():
        if name == "typ":
            header.pop("typ")
            if value:
                header["typ"] = value
        elif value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return signer.mint(claims, header)


def logout(port, token):
    return request(port, "/_bcl", [("content-type", "application/x-www-form-urlencoded")],
                   method="POST", body=urllib.parse.urlencode({"logout_token": token}).encode())


def test_hostile_logout_tokens_are_refused_rule_by_rule(renv, ts, signer):
    port = renv.ports["stub"]
    frank = stub_token(ts, signer, "rv-frank", sub="frank", sid="sess-frank", iat=int(time.time()) - 50)
    assert statuses(port, frank, n=8) == [200] * 8
    now = int(time.time())
    foreign = Signer("ES256", kid="stub-es256")
    hostile = {
        "signed by another key": logout_token(foreign),
        "another issuer": logout_token(signer, iss="https://evil.example.com"),
        "another audience": logout_token(signer, aud="api.example.com"),
        "issued in the future": logout_token(signer, iat=now + 3600),
        "expired": logout_token(signer, exp=now - 3600),
        "no iat": logout_token(signer, iat=None),
        "no exp": logout_token(signer, exp=None),
        "no jti": logout_token(signer, jti=None),
        "no events": logout_token(signer, events=None),
        "another event": logout_token(signer, events={"https://example.com/other": {}}),
        "event not an object": logout_token(
            signer, events={"http://schemas.openid.net/event/backchannel-logout": "yes"}),
        "neither sub nor sid": logout_token(signer, sub=None, sid=None),
        "a nonce": logout_token(signer, nonce="n-1"),
        "typ of an ID token": logout_token(signer, typ="JWT"),
    }
    before = renv.counters()
    for what, token in hostile.items():
        r = logout(port, token)
        assert r.status == 400, what
        assert r.json() == {"error": "invalid_request", "error_description": "the logout token is not valid"}
        assert r.header("cache-control") == "no-store"
    assert logout(port, "not-a-jwt").status == 400
    assert request(port, "/_bcl", method="GET").status == 405
    assert statuses(port, frank, n=8) == [200] * 8, "none of them revoked anything"
    good = logout_token(signer, typ=None)
    r = logout(port, good)
    assert r.status == 200 and r.header("cache-control") == "no-store"
    assert statuses(port, frank) == [401] * SPREAD
    assert logout(port, good).status == 400, "a replayed jti"
    delta = counters_delta(renv, before, "backchannel_logout_refused", "backchannel_logout_accepted")
    assert delta == {"backchannel_logout_refused": len(hostile) + 2, "backchannel_logout_accepted": 1}


def test_the_api_refuses_wrong_secrets_methods_and_bodies(renv):
    port = renv.ports["stub"]
    assert revoke(port, {"token": "x"}, secret="wrong-secret-0123456789").status == 401
    assert revoke(port, {"token": "x"}, secret=None).status == 401
    assert request(port, "/_revoke", bearer(REVOKE_SECRET)).status == 405
    assert revoke(port, {}).status == 400
    assert revoke(port, {"token": "a", "sub": "b"}).status == 400
    assert revoke(port, {"token_hash": "short"}).status == 400
    big = revoke(port, {"token": "a" * 9000})
    assert big.status == 413
    r = revoke(port, {"token": "a", "sid": "b"})
    assert r.json()["error"] == "invalid_request" and r.header("cache-control") == "no-store"


def observed(port, body):
    """An RFC 7009 request of the provider's client "app", through the gateway."""
    basic = base64.b64encode(f"{APP[0]}:{APP[1]}".encode()).decode()
    return request(port, "/token/revocation",
                   [("authorization", "Basic " + basic),
                    ("content-type", "application/x-www-form-urlencoded")],
                   method="POST", body=body)


def test_full_marks_refuse_a_revocation_and_forget_none(renv, ts):
    """One bucket of 8. A stranger with client credentials fills it with values the provider
    answers 200 for (RFC 7009 §2.2: unknown tokens too); those marks give way to the
    operator's, which are never dropped."""
    port = renv.ports["full"]
    before = renv.counters()
    for i in range(8):
        assert observed(port, f"token=junk-{i}".encode()).status == 200, i
    for i in range(8):
        assert revoke(port, {"token": f"full-{i}"}).status == 200, i
    delta = counters_delta(renv, before, "revoked_token", "revocation_observed_evicted")
    assert delta == {"revoked_token": 16, "revocation_observed_evicted": 8}
    assert observed(port, b"token=junk-more").status == 503, "no room left, and none taken"
    r = revoke(port, {"token": "full-one-too-many"})
    assert r.status == 503 and r.header("retry-after") == "1"
    assert r.json()["error"] == "temporarily_unavailable"
    assert request(port, "/api/x", bearer("full-3")).status == 401, "an earlier mark is kept"
    assert request(port, "/api/x", bearer("full-one-too-many")).status == 200
    assert renv.counters().get("revocation_marks_full", 0) >= 1


def grind(salt_free_bucket, n, prefix, buckets=100_000 // 8):
    """`n` values whose SHA-256 lands in `salt_free_bucket` when marks are placed by an
    unkeyed hash (what an attacker computes offline)."""
    out, i = [], 0
    while len(out) < n:
        v = f"{prefix}-{i}"
        if int.from_bytes(hashlib.sha256(v.encode()).digest()[:8], "big") % buckets == salt_free_bucket:
            out.append(v)
        i += 1
    return out


def test_a_stranger_cannot_aim_marks_at_a_victims_bucket(renv, ts, signer):
    """Eight observed revocations of values ground offline for the bucket an unkeyed hash gives
    the victim's subject; then the operator revokes the subject and the provider signs the
    victim out: both land, and the victim's token is refused."""
    port = renv.ports["stub"]
    token = stub_token(ts, signer, "rv-victim", sub="victim", sid="sess-victim",
                       iat=int(time.time()) - 10)
    assert statuses(port, token, n=8) == [200] * 8
    key = hashlib.sha256(b"sub\0victim").digest()
    target = int.from_bytes(key[:8], "big") % (100_000 // 8)
    for value in grind(target, 8, "fill"):
        assert observed(port, f"token={value}".encode()).status == 200
    assert revoke(port, {"sub": "victim"}).status == 200
    lt = logout_token(signer, sub="victim", sid="sess-victim")
    assert logout(port, lt).status == 200
    assert logout(port, lt).status == 400, "a replay"
    assert statuses(port, token, n=8) == [401] * 8


def test_a_token_issued_by_a_clock_ahead_is_revoked_with_its_subject(renv, ts, signer):
    """A token service whose clock runs ahead (within verify.clock_skew_s) issues a token just
    before its subject is revoked: refused, phantom and accepted as it is."""
    port = renv.ports["stub"]
    ahead = int(time.time()) + STUB_SKEW_S
    token = stub_token(ts, signer, "rv-ahead", sub="skewed", iat=ahead)
    jwt = signer.mint({"iss": STUB_ISS, "aud": STUB_AUD, "sub": "skewed", "scope": "read",
                       "iat": ahead, "exp": ahead + 300})
    assert request(port, "/api/x", bearer(token)).status == 200
    assert request(port, "/jwt/x", bearer(jwt)).status == 200
    assert revoke(port, {"sub": "skewed"}).status == 200
    assert request(port, "/api/x", bearer(token)).status == 401
    assert request(port, "/jwt/x", bearer(jwt)).status == 401


@pytest.mark.parametrize("extra", [b"&junk=%zz", b"&junk=%ff%fe",
                                   b"&" + b"&".join(b"f%d=1" % i for i in range(40))],
                         ids=["bad escape", "not utf-8", "40 fields"])
def test_a_form_the_provider_reads_is_read_here_too(renv, op, extra):
    """oidc-provider reads forms a strict parser refuses: whatever else the body holds, the
    token it revokes is revoked here too."""
    port = renv.ports["op"]
    token = op.token("read")
    assert statuses(port, token, n=8) == [200] * 8
    r = observed(port, b"token=" + token.encode() + extra)
    assert r.status == 200, r.body
    assert op.introspect(token) == {"active": False}
    assert statuses(port, token, n=8) == [401] * 8


def test_two_tokens_in_one_revocation_are_refused_before_the_provider(renv, op):
    port = renv.ports["op"]
    a, b = op.token("read"), op.token("read")
    r = observed(port, urllib.parse.urlencode([("token", a), ("token", b)]).encode())
    assert r.status == 400 and r.json()["error"] == "invalid_request"
    assert op.introspect(a)["active"] and op.introspect(b)["active"], "never forwarded"


@pytest.mark.parametrize("path", ["/_revoke/", "/_Revoke", "//_revoke", "/%5Frevoke",
                                  "/_revoke%2F", "/_revoke;x", "/./_revoke", "/x/../_revoke",
                                  "/_BCL", "/_bcl/", "/token/Revocation", "/_split-token/"])
def test_near_misses_of_the_filters_own_paths_go_nowhere(renv, ts, echo, path):
    """A path a lenient server could read as the API's (or another of the filter's own) is
    refused: the secret it carries reaches neither the token service nor the API."""
    port = renv.ports["stub"]
    with echo.lock:
        seen_api = len(echo.requests)
    seen_ts = len(ts.calls)
    r = request(port, path, [("content-type", "application/x-www-form-urlencoded")]
                + bearer(REVOKE_SECRET), method="POST", body=b"token=near-miss")
    assert r.status == 400, (path, r.status)
    with echo.lock:
        assert len(echo.requests) == seen_api, "forwarded to the API"
    assert not [c for c in ts.calls[seen_ts:] if REVOKE_SECRET in c["body"]], "introspected"
