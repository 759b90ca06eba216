"""Per-route policy, end to end: policies chosen by path, method, host, route name and route
metadata; `token` none and optional; per-policy scopes; JWTs accepted as they are; claims copied
into headers (and stripped from what clients send) and into filter state, read by an RBAC filter
placed after ours and by the access log; and a hostile table of the ways a policy could be
bypassed, on a listener without Envoy's path normalisation and on one with it."""

import json
import time
import uuid

import pytest

from harness.envoy import Envoy, base_config, request, seen_by_api
from harness.h2 import H2Echo, h2_request_with_trailers
from harness.services import Signer, TokenService

ISS, AUD = "https://login.example.com", "api.example.com"

POLICIES = [
    {"name": "health", "match": {"path_exact": "/healthz"}, "token": "none"},
    {"name": "catalog", "match": {"path_prefix": "/catalog/", "methods": ["GET", "HEAD"]},
     "token": "optional"},
    {"name": "orders-write", "match": {"path_prefix": "/orders/",
                                       "methods": ["POST", "PUT", "PATCH", "DELETE"]},
     "required_scopes": ["orders:write"]},
    {"name": "admin", "match": {"hosts": ["admin.example.com", "*.admin.example.com"]},
     "required_scopes": ["admin"]},
    {"name": "reports", "match": {"route_name": "reports"}, "required_scopes": ["reports"]},
    {"name": "direct", "match": {"path_prefix": "/direct/"}, "accept_jwt": True},
]


SIGNER = Signer("ES256", kid="policies-1")


@pytest.fixture(scope="module")
def token_service():
    """This module's own token service, signing with an ES256 key the filter verifies with."""
    ts = TokenService(signer=SIGNER).start()
    yield ts
    ts.stop()


def mint_jwt(claims):
    return SIGNER.mint(claims)


def plugin():
    cfg = base_config()
    cfg["required_scopes"] = ["read"]
    cfg["policies"] = POLICIES
    cfg["claims_to_headers"] = [{"claim": "sub", "header": "x-user-id"},
                                {"claim": "client_id", "header": "x-client-id"}]
    cfg["claims_to_filter_state"] = ["sub", "client_id", "scope"]
    # Every JWT is verified, the introspected ones and those sent to `accept_jwt` routes.
    cfg["verify"] = {"issuer": ISS, "audiences": [AUD], "algorithms": ["ES256"],
                     "jwks_inline": {"keys": [SIGNER.jwk()]}}
    return cfg


# Policies chosen only by what Envoy routed on (the route's name, its metadata): `admin`'s own
# match never holds, only route metadata names it.
ROUTE_POLICIES = [
    {"name": "reports", "match": {"route_name": "reports"}, "required_scopes": ["reports"]},
    {"name": "admin", "match": {"route_name": "never-a-route"}, "required_scopes": ["admin"]},
]


def routes_plugin():
    cfg = plugin()
    cfg["policies"] = ROUTE_POLICIES
    return cfg


def split_tokens_plugin():
    """A token endpoint whose responses are split, with claim headers and DPoP configured."""
    return {"required_scopes": ["read"], "dpop": {},
            "split": {"max_entries": 1000, "split_responses": {"paths": ["/oauth/token"]}},
            "claims_to_headers": [{"claim": "sub", "header": "x-user-id"}],
            "policies": [{"name": "orders-write", "match": {"path_prefix": "/orders/",
                                                             "methods": ["POST"]}}]}


def meta(policy):
    return {"filter_metadata": {"token_filter": {"policy": policy}}}


ROUTES = [
    {"name": "reports", "match": {"prefix": "/reports/"}, "route": {"cluster": "api"}},
    {"match": {"prefix": "/meta-admin/"}, "metadata": meta("admin"), "route": {"cluster": "api"}},
    {"match": {"prefix": "/meta-unknown/"}, "metadata": meta("no-such-policy"),
     "route": {"cluster": "api"}},
    {"match": {"prefix": "/"}, "route": {"cluster": "api"}},
]

RBAC_NO_MALLORY = {"name": "envoy.filters.http.rbac", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
    "rules": {"action": "DENY", "policies": {"no-mallory": {
        "permissions": [{"any": True}],
        "principals": [{"filter_state": {"key": "wasm.token_filter.sub",
                                         "string_match": {"exact": "mallory"}}}]}}}}}


def access_log(path):
    return [{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": str(path),
        "log_format": {"text_format_source": {"inline_string":
            "%REQ(:PATH)% %RESPONSE_CODE% sub=%FILTER_STATE(wasm.token_filter.sub:PLAIN)% "
            "policy=%FILTER_STATE(wasm.token_filter.policy:PLAIN)% "
            "scope=%FILTER_STATE(wasm.token_filter.scope:PLAIN)%\n"}}}}]


@pytest.fixture(scope="module")
def penv(tmp_path_factory, token_service, echo):
    work = tmp_path_factory.mktemp("envoy-policies")
    upstream = H2Echo()
    normalise = {"normalize_path": True, "merge_slashes": True,
                 "path_with_escaped_slashes_action": "REJECT_REQUEST"}
    e = Envoy(work, listeners={
        # Envoy's path normalisation off: the filter alone decides what is ambiguous.
        "raw": {"plugin": plugin(), "routes": ROUTES, "after": [RBAC_NO_MALLORY],
                "hcm": {"access_log": access_log(work / "access.log")}},
        "normalised": {"plugin": plugin(), "routes": ROUTES, "hcm": normalise},
        "routes": {"plugin": routes_plugin(), "routes": ROUTES},
        "routes_normalised": {"plugin": routes_plugin(), "routes": ROUTES, "hcm": normalise},
        "split_tokens": {"plugin": split_tokens_plugin(),
                         "routes": [("/oauth/token", "token_service"), ("/", "api")]},
        "h2": {"plugin": plugin(), "routes": [("/", "h2api")]},
    }, clusters={"api": echo.port, "token_service": token_service.port,
                 "h2api": (upstream.port, "h2")},
        concurrency=2)
    e.start()
    e.access_log = work / "access.log"
    e.h2 = upstream
    yield e
    e.stop()
    upstream.stop()


def jwt_for(sub="alice", scope="read", client_id="app-1", lifetime=300):
    now = int(time.time())
    return mint_jwt({"iss": ISS, "aud": AUD, "sub": sub, "scope": scope, "client_id": client_id,
                     "iat": now, "exp": now + lifetime, "jti": uuid.uuid4().hex})


def opaque(token_service, **claims):
    """A fresh opaque token that the token service introspects to a JWT with these claims."""
    token = f"pol-{uuid.uuid4().hex}"
    token_service.scripted[token] = jwt_for(**claims)
    return token


def call(penv, path, token=None, method="GET", host="api.example.com", listener="raw",
         headers=(), scheme="Bearer"):
    marker = uuid.uuid4().hex
    sep = "&" if "?" in path else "?"
    hdrs = [("host", host)] + list(headers)
    if token:
        hdrs.append(("authorization", f"{scheme} {token}"))
    r = request(penv.ports[listener], f"{path}{sep}m={marker}", hdrs, method=method)
    return r, marker


def api_saw(echo, marker):
    seen = seen_by_api(echo, marker)
    assert len(seen) <= 1
    return dict(seen[0]["headers"]) if seen else None


def test_none_route_needs_nothing_and_never_forwards_the_token(penv, echo, token_service):
    token = opaque(token_service)
    for t in (None, token):
        r, m = call(penv, "/healthz", t)
        assert r.status == 200, r.body
        assert "authorization" not in api_saw(echo, m)
    assert token_service.calls_for(token) == [], "no lookup on a `none` route"


def test_optional_route_anonymous_or_swapped_never_downgraded(penv, echo, token_service):
    r, m = call(penv, "/catalog/1")
    assert r.status == 200 and "authorization" not in api_saw(echo, m)
    token = opaque(token_service, sub="bob")
    r, m = call(penv, "/catalog/1", token)
    assert r.status == 200
    seen = api_saw(echo, m)
    assert seen["authorization"] == f"Bearer {token_service.scripted[token]}"
    assert seen["x-user-id"] == "bob"
    # A token that is there must be valid: 401, not a silent anonymous request.
    r, m = call(penv, "/catalog/1", f"inactive-{uuid.uuid4().hex}")
    assert r.status == 401 and api_saw(echo, m) is None
    # Another method on the same path falls to the default policy: a token is required.
    r, m = call(penv, "/catalog/1", method="POST")
    assert r.status == 401 and api_saw(echo, m) is None


def test_each_policy_checks_its_own_scopes(penv, echo, token_service):
    reader = opaque(token_service, scope="read")
    writer = opaque(token_service, scope="read orders:write")
    assert call(penv, "/orders/1", reader)[0].status == 200, "GET: default policy (read)"
    r, _ = call(penv, "/orders/1", reader, method="POST")
    assert r.status == 403
    assert 'scope="orders:write"' in r.header("www-authenticate")
    assert call(penv, "/orders/1", writer, method="POST")[0].status == 200
    admin = opaque(token_service, scope="admin")
    for host in ("admin.example.com", "ADMIN.example.com:8080", "eu.admin.example.com",
                 "admin.example.com."):
        assert call(penv, "/x", reader, host=host)[0].status == 403, host
        assert call(penv, "/x", admin, host=host)[0].status == 200, host


def test_named_routes_and_route_metadata_choose_policies(penv, echo, token_service):
    reader = opaque(token_service, scope="read")
    reporter = opaque(token_service, scope="reports")
    assert call(penv, "/reports/q1", reader)[0].status == 403
    assert call(penv, "/reports/q1", reporter)[0].status == 200
    # Route metadata names `admin`, whatever the path and host.
    assert call(penv, "/meta-admin/x", reader)[0].status == 403
    assert call(penv, "/meta-admin/x", opaque(token_service, scope="admin"))[0].status == 200
    # A name the configuration lacks: fail closed, and say so once in the log.
    for _ in range(3):
        r, m = call(penv, "/meta-unknown/x", reader)
        assert r.status == 500 and r.json()["code"] == "filter_misconfigured"
        assert api_saw(echo, m) is None
    log = penv.log_path.read_text(errors="replace")
    assert 0 < log.count('names policy "no-such-policy"') <= 2, "once per worker"


def test_jwts_accepted_as_they_are_on_their_route(penv, echo, token_service):
    jwt = jwt_for(sub="carol")
    before = penv.counters()
    for _ in range(3):
        r, m = call(penv, "/direct/x", jwt)
        assert r.status == 200, r.body
        assert api_saw(echo, m)["authorization"] == f"Bearer {jwt}"
    after = penv.counters()
    assert after["verified"] - before.get("verified", 0) <= 2, "verified once per worker at most"
    assert token_service.calls_for(jwt) == [], "never introspected"
    # Forged: refused.
    forged = jwt[:-4] + ("AAAA" if not jwt.endswith("AAAA") else "BBBB")
    assert call(penv, "/direct/x", forged)[0].status == 401
    # On other routes a JWT is an opaque token like any other: introspected (and the demo
    # token service answers any unknown token as active, with its own JWT).
    r, m = call(penv, "/orders/1", jwt)
    assert api_saw(echo, m)["authorization"] != f"Bearer {jwt}"
    assert len(token_service.calls_for(jwt)) == 1


def test_claim_headers_are_set_and_never_spoofed(penv, echo, token_service):
    token = opaque(token_service, sub="dave", client_id="app-9")
    spoof = [("x-user-id", "mallory"), ("X-Client-Id", "evil")]
    r, m = call(penv, "/orders/1", token, headers=spoof)
    seen = api_saw(echo, m)
    assert (seen["x-user-id"], seen["x-client-id"]) == ("dave", "app-9")
    # No token, or no such claim: the client's value is removed, on every route.
    for path in ("/healthz", "/catalog/1"):
        r, m = call(penv, path, headers=spoof)
        seen = api_saw(echo, m)
        assert r.status == 200 and "x-user-id" not in seen and "x-client-id" not in seen, path
    no_client = opaque(token_service, sub="erin", client_id=None)
    token_service.scripted[no_client] = mint_jwt({"iss": ISS, "aud": AUD, "sub": "erin", "scope": "read",
                                                  "iat": int(time.time()), "exp": int(time.time()) + 300})
    r, m = call(penv, "/x", no_client, headers=spoof)
    seen = api_saw(echo, m)
    assert seen["x-user-id"] == "erin" and "x-client-id" not in seen


def test_claim_headers_never_ride_in_trailers(penv, token_service):
    token = opaque(token_service, sub="frank")
    marker = uuid.uuid4().hex
    status = h2_request_with_trailers(
        penv.ports["h2"],
        [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"api.example.com"),
         (b":path", f"/{marker}".encode()), (b"authorization", f"Bearer {token}".encode())],
        b"body", [(b"x-user-id", b"mallory"), (b"authorization", f"Bearer {token}".encode())])
    assert status == 200
    with penv.h2.lock:
        [seen] = [r for r in penv.h2.requests if dict(r["headers"]).get(":path") == f"/{marker}"]
    assert dict(seen["headers"])["x-user-id"] == "frank"
    assert "x-user-id" not in dict(seen["trailers"]) and "authorization" not in dict(seen["trailers"])


def test_filter_state_feeds_rbac_and_the_access_log(penv, echo, token_service):
    mallory = opaque(token_service, sub="mallory")
    r, mallory_marker = call(penv, "/x", mallory)
    assert r.status == 403 and "RBAC" in r.body.decode(), r.body
    assert api_saw(echo, mallory_marker) is None, "denied by the RBAC filter after ours"
    alice = opaque(token_service, sub="alice", scope="read")
    r, m = call(penv, "/x", alice)
    assert r.status == 200
    assert "sub=alice policy=default scope=read" in logged(penv, m)
    r, m = call(penv, "/healthz")
    assert "sub=- policy=health" in logged(penv, m)
    assert "sub=mallory policy=default" in logged(penv, mallory_marker)


def logged(penv, marker, timeout=15):
    """The access log line of the request with `marker` (the file is flushed on a timer)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        lines = [line for line in penv.access_log.read_text().splitlines() if marker in line]
        if lines:
            return lines[0]
        time.sleep(0.2)
    raise AssertionError(f"no access log line for {marker}")


def test_per_policy_counters(penv):
    c = penv.counters()
    for name in ("health", "catalog", "orders-write", "admin", "reports", "direct", "default"):
        assert f"policy.{name}.allowed" in c and f"policy.{name}.denied" in c, name
    assert c["policy.orders-write.denied"] >= 1 and c["policy.health.allowed"] >= 1


# --- Bypass attempts ---------------------------------------------------------------------------
# (id, listener, method, raw path, host, extra headers, token scope, expected status, reaches API)
# A `read` token may do anything the default policy allows, but not write orders or reach admin.
BYPASS = [
    ("canonical-control", "raw", "POST", "/orders/1", "api.example.com", [], "read", 403, False),
    ("double-slash", "raw", "POST", "//orders/1", "api.example.com", [], "read", 400, False),
    ("inner-double-slash", "raw", "POST", "/orders//1", "api.example.com", [], "read", 400, False),
    ("dot-segment", "raw", "POST", "/./orders/1", "api.example.com", [], "read", 400, False),
    ("dot-dot-segment", "raw", "POST", "/public/../orders/1", "api.example.com", [], "read", 400, False),
    ("encoded-dot-dot", "raw", "POST", "/public/%2e%2e/orders/1", "api.example.com", [], "read", 400, False),
    ("encoded-slash", "raw", "POST", "/orders%2F1", "api.example.com", [], "read", 400, False),
    ("encoded-backslash", "raw", "POST", "/orders%5C1", "api.example.com", [], "read", 400, False),
    ("backslash", "raw", "POST", "/orders\\1", "api.example.com", [], "read", 400, False),
    ("path-parameter", "raw", "POST", "/orders;x=1/1", "api.example.com", [], "read", 400, False),
    ("double-encoded-slash", "raw", "POST", "/orders%252F1", "api.example.com", [], "read", 400, False),
    # Not canonical: refused (400) rather than matched on the decoded path, since Envoy routes
    # on the raw one (the route-chosen rows below).
    ("encoded-unreserved", "raw", "POST", "/%6Frders/1", "api.example.com", [], "read", 400, False),
    ("encoded-digit", "raw", "POST", "/orders/%31", "api.example.com", [], "read", 400, False),
    ("method-override-to-get", "raw", "POST", "/orders/1", "api.example.com",
     [("x-http-method-override", "GET")], "read", 403, False),
    ("method-override-stripped", "raw", "GET", "/catalog/1", "api.example.com",
     [("x-http-method-override", "DELETE"), ("x-method-override", "DELETE")], None, 200, True),
    ("host-upper-case", "raw", "GET", "/x", "ADMIN.EXAMPLE.COM", [], "read", 403, False),
    ("host-port", "raw", "GET", "/x", "admin.example.com:443", [], "read", 403, False),
    ("host-trailing-dot", "raw", "GET", "/x", "admin.example.com.", [], "read", 403, False),
    ("host-subdomain", "raw", "GET", "/x", "x.admin.example.com", [], "read", 403, False),
    ("host-userinfo", "raw", "GET", "/x", "user@admin.example.com", [], "read", 400, False),
    ("host-double-dot", "raw", "GET", "/x", "admin..example.com", [], "read", 400, False),
    ("none-route-with-token", "raw", "GET", "/healthz", "api.example.com", [], "read", 200, True),
    ("normalised-dot-dot", "normalised", "POST", "/public/../orders/1", "api.example.com", [], "read", 403, False),
    ("normalised-double-slash", "normalised", "POST", "//orders/1", "api.example.com", [], "read", 403, False),
    ("normalised-encoded-slash", "normalised", "POST", "/orders%2F1", "api.example.com", [], "read", 400, False),
    ("normalised-encoded-unreserved", "normalised", "POST", "/%6Frders/1", "api.example.com", [], "read", 403, False),
    # Policies chosen by the route Envoy picked on the raw path: every non-canonical path is
    # refused, whatever the route (a `read` token reached the reports and admin APIs before).
    ("route-control-reports", "routes", "GET", "/reports/q1", "api.example.com", [], "read", 403, False),
    ("route-control-meta", "routes", "GET", "/meta-admin/x", "api.example.com", [], "read", 403, False),
    ("route-control-other", "routes", "GET", "/other", "api.example.com", [], "read", 200, True),
    ("route-encoded-r", "routes", "GET", "/%72eports/q1", "api.example.com", [], "read", 400, False),
    ("route-encoded-m", "routes", "GET", "/%6Deta-admin/x", "api.example.com", [], "read", 400, False),
    ("route-dot-dot", "routes", "GET", "/x/../reports/q1", "api.example.com", [], "read", 400, False),
    ("route-double-slash", "routes", "GET", "//reports/q1", "api.example.com", [], "read", 400, False),
    ("route-parameter", "routes", "GET", "/reports;x/q1", "api.example.com", [], "read", 400, False),
    ("route-encoded-dot-dot", "routes", "GET", "/x/%2e%2e/meta-admin/x", "api.example.com", [], "read", 400, False),
    ("route-encoded-slash-dot-dot", "routes", "GET", "/x%2f..%2fmeta-admin/x", "api.example.com", [], "read", 400, False),
    ("route-backslash-dot-dot", "routes", "GET", "/x\\..\\meta-admin/x", "api.example.com", [], "read", 400, False),
    ("route-normalised-parameter", "routes_normalised", "GET", "/reports;x/q1", "api.example.com", [], "read", 400, False),
]


def raw_request(port, method, path, host, headers):
    """One request as raw bytes (so no client library cleans the path up)."""
    import socket
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    if method in ("POST", "PUT", "PATCH"):
        lines.append("Content-Length: 0")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    first = data.split(b"\r\n", 1)[0].split(b" ")
    return int(first[1]) if len(first) > 1 and first[1].isdigit() else 0


@pytest.mark.parametrize("row", BYPASS, ids=[r[0] for r in BYPASS])
def test_policy_bypass_attempts(penv, echo, token_service, row):
    name, listener, method, path, host, headers, scope, status, reaches = row
    marker = uuid.uuid4().hex
    token = opaque(token_service, scope=scope) if scope else None
    auth = [("Authorization", f"Bearer {token}")] if token else []
    sep = "&" if "?" in path else "?"
    got = raw_request(penv.ports[listener], method, f"{path}{sep}m={marker}", host, headers + auth)
    assert got == status, f"{name}: {got}, expected {status}"
    seen = seen_by_api(echo, marker)
    assert bool(seen) == reaches, f"{name}: reached the API: {seen}"
    if seen:
        h = dict(seen[0]["headers"])
        assert not any(k in h for k in ("x-http-method-override", "x-http-method", "x-method-override"))
        if token:
            assert token not in json.dumps(seen[0]), f"{name}: the opaque token reached the API"


def test_a_methods_case_never_chooses_a_weaker_policy(penv, token_service):
    """HTTP/2 lets a client send `:method post`: methods are case-sensitive (RFC 9110 §9.1),
    and an API that reads them case-insensitively would act on a POST that no `POST` policy
    matched. With policies, a method that is not upper case is refused (400)."""
    from harness.h2 import h2_request
    reader = opaque(token_service, scope="read")
    port = penv.ports["h2"]

    def send(method):
        return h2_request(port, [(b":method", method), (b":scheme", b"http"),
                                 (b":authority", b"api.example.com"), (b":path", b"/orders/1"),
                                 (b"authorization", f"Bearer {reader}".encode())])

    assert send(b"POST") == 403
    for method in (b"post", b"Post", b"pOST"):
        assert send(method) == 400, method
    with penv.h2.lock:
        assert not [r for r in penv.h2.requests
                    if dict(r["headers"]).get(":method", "").upper() == "POST"
                    and dict(r["headers"]).get(":method") != "POST"]


def test_preflights_carry_no_header_the_filter_owns(penv, echo):
    marker = uuid.uuid4().hex
    r = request(penv.ports["raw"], f"/orders/1?m={marker}", [
        ("host", "api.example.com"), ("origin", "https://app.example.com"),
        ("access-control-request-method", "POST"), ("x-user-id", "mallory"),
        ("x-client-id", "evil"), ("x_user_id", "mallory"), ("authorization", "Bearer whatever")],
        method="OPTIONS")
    assert r.status == 200, r.body
    seen = api_saw(echo, marker)
    for name in ("x-user-id", "x-client-id", "x_user_id", "authorization"):
        assert name not in seen, (name, seen)


def test_a_preflight_with_an_underscore_method_override_is_refused(penv, echo):
    marker = uuid.uuid4().hex
    r = request(penv.ports["raw"], f"/orders/1?m={marker}", [
        ("host", "api.example.com"), ("origin", "https://app.example.com"),
        ("access-control-request-method", "DELETE"), ("x_http_method_override", "DELETE")],
        method="OPTIONS")
    assert r.status == 400 and r.json()["code"] == "invalid_request", (r.status, r.body)
    assert api_saw(echo, marker) is None


def test_underscore_spellings_of_owned_headers_never_reach_the_api(penv, echo, token_service):
    """Some servers read `_` as `-`: `x_user_id` would be `x-user-id` to them."""
    token = opaque(token_service, sub="dave")
    spoof = [("x_user_id", "mallory"), ("X_Client_Id", "evil"), ("x_http_method_override", "DELETE"),
             ("x_method-override", "DELETE")]
    for t in (token, None):
        r, m = call(penv, "/catalog/1", t, headers=spoof)
        assert r.status == 200, r.body
        seen = api_saw(echo, m)
        assert not [k for k in seen if "_" in k and k.replace("_", "-") in (
            "x-user-id", "x-client-id", "x-http-method-override", "x-method-override")], seen
        if t:
            assert seen["x-user-id"] == "dave"


def test_token_requests_carry_their_dpop_proof_and_nothing_else_the_filter_owns(penv, token_service):
    before = len(token_service.token_requests)
    r = request(penv.ports["split_tokens"], "/oauth/token", [
        ("host", "login.example.com"), ("content-type", "application/x-www-form-urlencoded"),
        ("authorization", "Basic Y2xpZW50OnNlY3JldA=="), ("dpop", "the-clients-proof"),
        ("x-user-id", "mallory"), ("x_user_id", "mallory"), ("x-http-method-override", "GET")],
        method="POST", body=b"grant_type=client_credentials")
    assert r.status == 200, r.body
    [seen] = [dict(h) for h in token_service.token_requests[before:]]
    assert seen.get("dpop") == "the-clients-proof", "the token service binds the token with it"
    assert seen.get("authorization") == "Basic Y2xpZW50OnNlY3JldA=="
    for name in ("x-user-id", "x_user_id", "x-http-method-override"):
        assert name not in seen, (name, seen)
