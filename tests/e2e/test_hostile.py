"""Hostile input, table-driven: raw HTTP/1 bytes (so nothing is cleaned up by a client library),
HTTP/2 frames with unvalidated header values, and hostile answers from the token service. Each
row asserts the status and what the API saw: nothing, or exactly one request carrying the JWT
the token service issued (never the client's token).

Rows whose refusal comes from Envoy's own codec (NUL, obs-fold, oversized headers) are part of
the table on purpose: whatever layer refuses, nothing may reach the API or the token service."""

import base64
import gzip
import json
import os
import socket
import time
import uuid
import zlib

import pytest

from harness.envoy import Envoy, base_config, request, seen_by_api
from harness.h2 import H2Echo, h2_request, h2_request_with_trailers
from harness.services import TokenService
from harness.split import PUBLISH, SECRET, new_jwt, publish, split_jwt

PH = "phantom"
SP = "split"


@pytest.fixture(scope="module")
def token_service():
    """This module's own token service (overrides the session one): the table sends tokens such
    as a single `z` that other modules' log checks could not tell from ordinary log text."""
    ts = TokenService().start()
    yield ts
    ts.stop()


@pytest.fixture(scope="module")
def henv(tmp_path_factory, token_service, echo):
    split = {"required_scopes": ["read"],
             "split": {"max_entries": 1000, "publish": {"path": PUBLISH, "secret": SECRET}}}
    # The filter's most verbose level, so the log check at the end sees every line it can write.
    e = Envoy(tmp_path_factory.mktemp("envoy-hostile"),
              listeners={PH: base_config(), SP: split},
              clusters={"api": echo.port, "token_service": token_service.port},
              log_args=("--log-level", "info", "--component-log-level", "wasm:trace"))
    e.start()
    yield e
    e.stop()


def raw_http1(port, header_lines, path):
    """Sends one request as raw bytes; returns the status code (0: connection closed without one)."""
    req = (b"GET " + path.encode() + b" HTTP/1.1\r\nHost: api.example.com\r\n"
           + b"".join(line + b"\r\n" for line in header_lines) + b"Connection: close\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(req)
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    first = data.split(b"\r\n", 1)[0].split(b" ")
    return int(first[1]) if len(first) > 1 and first[1].isdigit() else 0


def auth(value):
    return [b"Authorization: " + (value if isinstance(value, bytes) else value.encode())]


SENT = []  # every token value sent and JWT seen by the API, for the log check


def tok(prefix="h"):
    t = f"{prefix}{uuid.uuid4().hex}"
    SENT.append(t)
    return t


# (id, listener, header lines or a function of a fresh token, expected status, what the API sees)
# "jwt": exactly one request, whose only Authorization is the token service's JWT for the token
# the filter extracted (the same token, so the API never sees the client's value).
ONE_BYTE = "z"
LONGEST = "A" * 4095 + "="
CLIENT_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5IiwiZXhwIjo0MDAwMDAwMDAwfQ.c2lnbmF0dXJl"
ROWS = [
    ("no-authorization", PH, [], 401, None),
    ("empty-value", PH, [b"Authorization:"], 401, None),
    ("spaces-only", PH, auth("     "), 401, None),
    ("tab-only", PH, auth("\t"), 401, None),
    ("basic-scheme", PH, auth("Basic dXNlcjpwYXNz"), 401, None),
    ("digest-scheme", PH, auth('Digest username="u"'), 401, None),
    ("scheme-glued", PH, lambda t: auth("Bearer" + t), 401, None),
    ("bearer-alone", PH, auth("Bearer"), 400, None),
    ("bearer-trailing-space", PH, auth("Bearer "), 400, None),
    ("token-1-byte", PH, auth("Bearer " + ONE_BYTE), 200, "jwt"),
    ("token-4096-bytes", PH, auth("Bearer " + LONGEST), 200, "jwt"),
    ("token-4097-bytes", PH, auth("Bearer " + "A" * 4097), 400, None),
    ("token-64kb", PH, auth("Bearer " + "A" * 65536), 431, None),
    ("token-utf8", PH, lambda t: auth(f"Bearer {t}é".encode()), 400, None),
    ("token-latin1-byte", PH, lambda t: auth(f"Bearer {t}".encode() + b"\xff"), 400, None),
    ("token-only-0x80", PH, auth(b"Bearer \x80"), 400, None),
    ("token-nul", PH, lambda t: auth(f"Bearer {t}".encode() + b"\x00x"), 400, None),
    ("token-ctl-01", PH, lambda t: auth(f"Bearer {t}".encode() + b"\x01"), 400, None),
    ("token-del", PH, lambda t: auth(f"Bearer {t}".encode() + b"\x7f"), 400, None),
    ("token-escape", PH, lambda t: auth(f"Bearer {t}".encode() + b"\x1b[0m"), 400, None),
    ("tab-after-scheme", PH, lambda t: auth(f"Bearer\t{t}"), 400, None),
    ("tab-in-token", PH, lambda t: auth(f"Bearer {t[:5]}\t{t[5:]}"), 400, None),
    ("two-spaces", PH, lambda t: auth(f"Bearer  {t}"), 200, "jwt"),
    ("many-spaces", PH, lambda t: auth(f"Bearer {' ' * 40}{t}"), 200, "jwt"),
    ("space-in-token", PH, lambda t: auth(f"Bearer {t[:5]} {t[5:]}"), 400, None),
    ("comma-after-token", PH, lambda t: auth(f"Bearer {t},"), 400, None),
    ("quoted-token", PH, lambda t: auth(f'Bearer "{t}"'), 400, None),
    ("padding-only", PH, auth("Bearer ==="), 400, None),
    ("padding-first", PH, lambda t: auth(f"Bearer ={t}"), 400, None),
    ("padding-last", PH, lambda t: auth(f"Bearer {t}=="), 200, "jwt"),
    ("b64token-punctuation", PH, lambda t: auth(f"Bearer {t}-._~+/"), 200, "jwt"),
    ("scheme-lower", PH, lambda t: auth(f"bearer {t}"), 200, "jwt"),
    ("scheme-upper", PH, lambda t: auth(f"BEARER {t}"), 200, "jwt"),
    ("scheme-mixed", PH, lambda t: auth(f"bEaReR {t}"), 200, "jwt"),
    ("name-upper", PH, lambda t: [f"AUTHORIZATION: Bearer {t}".encode()], 200, "jwt"),
    ("name-mixed", PH, lambda t: [f"aUtHoRiZaTiOn: Bearer {t}".encode()], 200, "jwt"),
    ("client-sends-a-jwt", PH, auth("Bearer " + CLIENT_JWT), 200, "jwt"),
    ("two-authorization", PH, lambda t: auth(f"Bearer {t}") + auth(f"Bearer {t}x"), 400, None),
    ("two-authorization-same", PH, lambda t: auth(f"Bearer {t}") * 2, 400, None),
    ("basic-then-bearer", PH, lambda t: auth("Basic dXNlcjpwYXNz") + auth(f"Bearer {t}"), 401, None),
    ("bearer-then-empty", PH, lambda t: auth(f"Bearer {t}") + [b"Authorization:"], 200, "jwt"),
    ("name-case-duplicates", PH, lambda t: [f"authorization: Bearer {t}".encode(),
                                            f"AUTHORIZATION: Bearer {t}y".encode()], 400, None),
    ("obs-fold", PH, lambda t: auth(f"Bearer {t}") + [b" folded"], 400, None),
    ("crlf-injection", PH, lambda t: [f"Authorization: Bearer {t}\r\nX-Injected: 1".encode()], 200, "jwt"),
    ("bare-lf-injection", PH, lambda t: [f"Authorization: Bearer {t}\nX-Injected: 1".encode()], 200, "jwt"),
    ("query-token-only", PH, [], 400, None, "?access_token={t}"),
    ("query-and-header", PH, lambda t: auth(f"Bearer {t}"), 400, None, "?access_token={t}"),
    ("query-token-encoded-name", PH, lambda t: auth(f"Bearer {t}"), 400, None, "?a=1&access%5Ftoken={t}"),
    ("query-similar-name", PH, lambda t: auth(f"Bearer {t}"), 200, "jwt", "?my_access_token=1"),
    # The other forms frameworks read as access_token, each with a valid Authorization.
    ("uri-semicolon-separator", PH, lambda t: auth(f"Bearer {t}"), 400, None, "?a=1;access_token={t}"),
    ("uri-php-array", PH, lambda t: auth(f"Bearer {t}"), 400, None, "?access_token[]={t}"),
    ("uri-php-array-encoded", PH, lambda t: auth(f"Bearer {t}"), 400, None, "?access_token%5B%5D={t}"),
    ("uri-leading-space", PH, lambda t: auth(f"Bearer {t}"), 400, None, "?%20access_token={t}"),
    ("uri-trailing-dot", PH, lambda t: auth(f"Bearer {t}"), 400, None, "?access_token.={t}"),
    ("uri-path-parameter-dotdot", PH, lambda t: auth(f"Bearer {t}"), 400, None, "/..;access_token={t}"),
    ("uri-path-parameter", PH, lambda t: auth(f"Bearer {t}"), 400, None, ";access_token={t}"),
    ("uri-upper-case", PH, lambda t: auth(f"Bearer {t}"), 400, None, "?ACCESS_TOKEN={t}"),
    ("uri-double-encoded", PH, lambda t: auth(f"Bearer {t}"), 400, None, "?access%255Ftoken={t}"),
    ("uri-php-dot-for-underscore", PH, lambda t: auth(f"Bearer {t}"), 400, None, "?access.token={t}"),
    # Split tokens: signatures that are not in the store, of every wrong shape.
    ("split-unknown-86", SP, lambda t: auth("Bearer " + base64.urlsafe_b64encode(os.urandom(64)).rstrip(b"=").decode()), 401, None),
    ("split-not-base64url", SP, auth("Bearer abc$def"), 400, None),
    ("split-standard-base64", SP, lambda t: auth("Bearer " + base64.b64encode(os.urandom(64)).decode()), 401, None),
    ("split-whole-jwt", SP, auth("Bearer " + CLIENT_JWT), 401, None),
    ("split-header-payload-only", SP, auth("Bearer " + CLIENT_JWT.rsplit(".", 1)[0]), 401, None),
] + [
    (f"split-length-{n}", SP, (lambda n: lambda t: auth("Bearer " + (t * 80)[:n]))(n), 401, None)
    for n in (1, 2, 3, 42, 43, 44, 85, 87, 342, 343, 683, 4096)
]


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_hostile_request(henv, echo, token_service, row):
    name, listener, lines, status, upstream = row[:5]
    query = row[5] if len(row) > 5 else ""
    token = tok()
    if callable(lines):
        lines = lines(token)
    marker = uuid.uuid4().hex
    calls_before = len(token_service.calls)
    got = raw_http1(henv.ports[listener], lines, f"/{marker}{query.format(t=token)}")
    assert got == status, f"{name}: status {got}, expected {status}"
    seen = seen_by_api(echo, marker)
    if upstream is None:
        assert seen == [], f"{name}: a refused request reached the API"
        if status in (400, 431) or listener == SP:
            assert len(token_service.calls) == calls_before, f"{name}: the token service was asked"
        return
    assert len(seen) == 1
    auths = [v for k, v in seen[0]["headers"] if k == "authorization"]
    assert len(auths) == 1 and auths[0].startswith("Bearer ")
    jwt = auths[0][len("Bearer "):]
    assert jwt.count(".") == 2
    with token_service.lock:
        issued = [c.get("jwt") for c in token_service.calls]
    SENT.append(jwt)
    assert jwt in issued, f"{name}: the API got a JWT the token service did not issue"
    assert jwt != CLIENT_JWT
    assert token not in json.dumps(seen[0]), f"{name}: the opaque token reached the API"


def test_the_table_has_at_least_60_requests():
    assert len(ROWS) + len(H2_ROWS) + len(ANSWERS) + len(TOKEN_ANSWERS) >= 60


# --- HTTP/2: header values no HTTP/2 client library would send ---------------------------------


def h2_base(marker):
    return [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"api.example.com"),
            (b":path", f"/{marker}".encode())]


H2_ROWS = [
    ("h2-valid", lambda t: [(b"authorization", f"Bearer {t}".encode())], 200, "jwt"),
    ("h2-crlf-in-value", lambda t: [(b"authorization", f"Bearer {t}\r\nx-injected: 1".encode())], {400, "reset"}, None),
    ("h2-lf-in-value", lambda t: [(b"authorization", f"Bearer {t}\nx: 1".encode())], {400, "reset"}, None),
    ("h2-nul-in-value", lambda t: [(b"authorization", f"Bearer {t}\x00".encode())], {400, "reset"}, None),
    ("h2-uppercase-name", lambda t: [(b"Authorization", f"Bearer {t}".encode())], {400, "reset"}, None),
    ("h2-two-authorization", lambda t: [(b"authorization", f"Bearer {t}".encode()),
                                        (b"authorization", f"Bearer {t}x".encode())], 400, None),
    ("h2-high-bytes", lambda t: [(b"authorization", f"Bearer {t}".encode() + b"\xc3\x28")], {400, "reset"}, None),
    ("h2-space-before-token", lambda t: [(b"authorization", f"Bearer   {t}".encode())], 200, "jwt"),
]


@pytest.mark.parametrize("row", H2_ROWS, ids=[r[0] for r in H2_ROWS])
def test_hostile_http2_request(henv, echo, token_service, row):
    name, headers, status, upstream = row
    token = tok()
    marker = uuid.uuid4().hex
    got = h2_request(henv.ports[PH], h2_base(marker) + headers(token))
    expected = status if isinstance(status, set) else {status}
    assert got in expected, f"{name}: {got}, expected {expected}"
    seen = seen_by_api(echo, marker)
    if upstream is None:
        assert seen == []
    else:
        assert len(seen) == 1
        auths = [v for k, v in seen[0]["headers"] if k == "authorization"]
        assert len(auths) == 1 and token not in auths[0]


# --- The token service's side: every answer that is not a clean JWT is a 502, never forwarded ---

_NOW = int(time.time())
_GOOD = new_jwt()
_H, _P, _S = _GOOD.split(".")
_B = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
ANSWERS = [
    ("trailing-garbage", 200, "application/jwt", (_GOOD + " trailing").encode(), {}),
    ("trailing-crlf", 200, "application/jwt", (_GOOD + "\r\n").encode(), {}),
    ("three-dots", 200, "application/jwt", (_GOOD + ".x").encode(), {}),
    ("two-segments", 200, "application/jwt", f"{_H}.{_P}".encode(), {}),
    ("one-megabyte", 200, "application/jwt", (_GOOD + "A" * (1 << 20)).encode(), {}),
    ("empty-200", 200, "application/jwt", b"", {}),
    ("empty-200-no-type", 200, None, b"", {}),
    ("wrong-content-type", 200, "text/plain", _GOOD.encode(), {}),
    ("html-content-type", 200, "text/html", b"<html>login</html>", {}),
    ("invalid-utf8", 200, "application/jwt", _GOOD.encode()[:-4] + b"\xff\xfe\xfd\xfc", {}),
    ("json-where-jwt", 200, "application/json", b'{"active":true,"sub":"x"}', {}),
    ("json-array", 200, "application/json", b"[]", {}),
    ("padded-segments", 200, "application/jwt", f"{_H}=.{_P}.{_S}".encode(), {}),
    ("header-not-json", 200, "application/jwt", f"{base64.urlsafe_b64encode(b'nope').rstrip(b'=').decode()}.{_P}.{_S}".encode(), {}),
    ("exp-not-a-date", 200, "application/jwt", f"{_H}.{_B({'exp': 'tomorrow', 'scope': 'read'})}.{_S}".encode(), {}),
    ("scope-not-a-string", 200, "application/jwt", f"{_H}.{_B({'exp': _NOW + 300, 'scope': 7})}.{_S}".encode(), {}),
    ("alg-none", 200, "application/jwt", f"{_B({'alg': 'none'})}.{_P}.".encode(), {}),
    ("redirect-301", 301, "text/plain", b"moved", {"location": "http://127.0.0.1:1/x"}),
    ("redirect-302", 302, None, b"", {"location": "/elsewhere"}),
    ("redirect-307", 307, None, b"", {"location": "http://127.0.0.1:1/x"}),
    ("redirect-308", 308, None, b"", {"location": "http://127.0.0.1:1/x"}),
    ("status-201", 201, "application/jwt", _GOOD.encode(), {}),
    ("status-206", 206, "application/jwt", _GOOD.encode(), {}),
    ("header-with-high-bytes", 200, "application/jwt", b"x", {"x-odd": "caf\xe9"}),
]


@pytest.mark.parametrize("row", ANSWERS, ids=[r[0] for r in ANSWERS])
def test_hostile_token_service_answer(henv, echo, token_service, row):
    name, status, ctype, body, headers = row
    token = tok("raw")
    token_service.raw[token] = (status, ctype, body, headers)
    marker = uuid.uuid4().hex
    got = raw_http1(henv.ports[PH], auth(f"Bearer {token}"), f"/{marker}")
    assert got == 502, f"{name}: {got}"
    assert seen_by_api(echo, marker) == []
    # Not cached: asked again, refused again.
    assert raw_http1(henv.ports[PH], auth(f"Bearer {token}"), f"/{marker}") == 502
    assert len(token_service.calls_for(token)) == 2


def test_split_store_still_works_after_the_table(henv, echo):
    """The filter survived every row: a published token still passes on both listeners."""
    jwt = new_jwt()
    assert publish(henv.ports[SP], jwt).status == 204
    marker = uuid.uuid4().hex
    assert raw_http1(henv.ports[SP], auth("Bearer " + split_jwt(jwt)[1]), f"/{marker}") == 200
    assert raw_http1(henv.ports[PH], auth(f"Bearer {tok()}"), f"/{uuid.uuid4().hex}") == 200


# --- Token endpoint answers on a split path: a success leaves split, or not at all -------------
# A token endpoint that compresses when asked (as most do) and misbehaving ones. Whatever the
# client's Accept-Encoding and whatever the answer's Content-Type, the full JWT never reaches
# the client: the answer is split (200/201 with the signature alone) or refused (502).

TOKEN_PATH = "/oauth/token"
TOKEN_ROUTES = ((TOKEN_PATH, "token_service"), ("/", "api"))


def _split_listener(before=(), after=()):
    return {"plugin": {"split": {"max_entries": 1000, "split_responses": {"paths": [TOKEN_PATH]}}},
            "routes": TOKEN_ROUTES, "before": list(before), "after": list(after)}


def _compressor():
    return {"name": "envoy.filters.http.compressor", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor",
        "response_direction_config": {"common_config": {"min_content_length": 10}},
        "compressor_library": {"name": "gzip", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip"}}}}


@pytest.fixture(scope="module")
def tenv(tmp_path_factory, token_service, echo):
    e = Envoy(tmp_path_factory.mktemp("envoy-token-endpoint"),
              listeners={"split": _split_listener(),
                         "compressor_before": _split_listener(before=[_compressor()]),
                         "compressor_after": _split_listener(after=[_compressor()])},
              clusters={"api": echo.port, "token_service": token_service.port},
              log_args=("--log-level", "info", "--component-log-level", "wasm:trace"))
    e.start()
    yield e
    e.stop()


def token_endpoint(port, scenario, accept_encoding=None):
    headers = [("authorization", "Basic " + base64.b64encode(b"client:client-secret").decode()),
               ("content-type", "application/x-www-form-urlencoded")]
    if accept_encoding:
        headers.append(("accept-encoding", accept_encoding))
    return request(port, TOKEN_PATH, headers, method="POST",
                   body=f"grant_type=client_credentials&scenario={scenario}".encode())


def decoded_body(reply):
    coding = reply.header("content-encoding")
    if coding == "gzip":
        return gzip.decompress(reply.body)
    if coding == "deflate":
        return zlib.decompress(reply.body)
    return reply.body


# (id, scenario, client's Accept-Encoding, expected status)
TOKEN_ANSWERS = [
    ("client-asks-gzip", "", "gzip", 200),
    ("client-asks-deflate", "", "deflate", 200),
    ("client-asks-br-gzip-q", "", "br, gzip;q=0.8, deflate", 200),
    ("no-content-type", "notype", None, 200),
    ("text-json", "textjson", None, 200),
    ("two-content-types", "twotypes", None, 200),
    ("status-201", "created", None, 201),
    ("jwt-as-text-plain", "text", None, 502),
    ("utf16-json", "utf16", None, 502),
    ("gzip-whatever-asked", "gzip-always", None, 502),
    ("deflate-whatever-asked", "deflate-always", "identity", 502),
    ("gzip-chunked-client-asks-gzip", "gzip-always", "gzip", 502),
]


@pytest.mark.parametrize("row", TOKEN_ANSWERS, ids=[r[0] for r in TOKEN_ANSWERS])
def test_hostile_token_endpoint_answer(tenv, token_service, row):
    name, scenario, accept, status = row
    r = token_endpoint(tenv.ports["split"], scenario, accept)
    assert r.status == status, f"{name}: {r.status} {r.body[:200]!r}"
    issued = token_service.issued_tokens[-1]
    SENT.append(issued)
    header_payload, signature = split_jwt(issued)
    # What the token service was asked: never a compressed answer.
    with token_service.lock:
        asked = dict(token_service.token_requests[-1])
    assert asked.get("accept-encoding") == "identity", f"{name}: {asked}"
    body = decoded_body(r)
    for text in (body, body.decode("utf-16", errors="ignore").encode(), r.body):
        assert header_payload.encode() not in text, f"{name}: the JWT reached the client"
    if status == 502:
        assert r.json()["code"] == "token_split_failed"
        return
    assert json.loads(body)["access_token"] == signature
    # And the signature works: the store has the rest.
    api = request(tenv.ports["split"], f"/{uuid.uuid4().hex}", [("authorization", f"Bearer {signature}")])
    assert api.status == 200 and dict(api.json()["headers"])["authorization"] == f"Bearer {issued}"


@pytest.mark.parametrize("listener", ["compressor_before", "compressor_after"])
def test_a_compressor_filter_cannot_undo_the_split(tenv, token_service, listener):
    """Envoy's compressor, placed before ours (it compresses the split answer) or after ours (it
    sees the `identity` we set and leaves the answer alone): the client never gets the JWT."""
    r = token_endpoint(tenv.ports[listener], "", "gzip")
    assert r.status == 200, r.body
    issued = token_service.issued_tokens[-1]
    SENT.append(issued)
    header_payload, signature = split_jwt(issued)
    body = decoded_body(r)
    assert header_payload.encode() not in body
    assert json.loads(body)["access_token"] == signature
    if listener == "compressor_before":
        assert r.header("content-encoding") == "gzip", "the compressor did compress the split answer"


# --- Trailers: the opaque token never rides to the API in a trailer ----------------------------

@pytest.fixture(scope="module")
def h2env(tmp_path_factory, token_service):
    upstream = H2Echo()
    e = Envoy(tmp_path_factory.mktemp("envoy-trailers"),
              listeners={PH: base_config()},
              clusters={"api": (upstream.port, "h2"), "token_service": token_service.port})
    e.start()
    yield e, upstream
    e.stop()
    upstream.stop()


def test_authorization_in_request_trailers_never_reaches_the_api(h2env, token_service):
    e, upstream = h2env
    token = tok()
    marker = uuid.uuid4().hex
    status = h2_request_with_trailers(
        e.ports[PH], h2_base(marker)[:1] + [(b":scheme", b"http"), (b":authority", b"api.example.com"),
                                            (b":path", f"/{marker}".encode()),
                                            (b"authorization", f"Bearer {token}".encode())],
        b"payload", [(b"authorization", f"Bearer {token}".encode()), (b"x-checksum", b"kept")])
    assert status == 200
    with upstream.lock:
        seen = [r for r in upstream.requests if dict(r["headers"]).get(":path") == f"/{marker}"]
    assert len(seen) == 1
    headers, trailers = dict(seen[0]["headers"]), dict(seen[0]["trailers"])
    assert headers["authorization"].startswith("Bearer ") and token not in headers["authorization"]
    assert "authorization" not in trailers, f"the client's token rode in a trailer: {trailers}"
    assert trailers.get("x-checksum") == "kept", "other trailers pass"
    assert seen[0]["body"] == b"payload"
    assert token not in repr(seen[0])


# --- CORS preflights: only what a browser sends passes unauthenticated --------------------------

PREFLIGHT = [("origin", "https://app.example.com"), ("access-control-request-method", "DELETE")]


@pytest.mark.parametrize("extra,body,status", [
    ([], None, 200),
    ([], b"", 200),
    ([], b"{\"delete\": \"everything\"}", 400),
    ([("x-http-method-override", "DELETE")], None, 400),
    ([("x-http-method", "DELETE")], None, 400),
    ([("x-method-override", "DELETE")], None, 400),
], ids=["preflight", "preflight-empty-body", "preflight-with-body", "override-x-http-method-override",
        "override-x-http-method", "override-x-method-override"])
def test_only_a_real_preflight_passes_unauthenticated(henv, echo, extra, body, status):
    marker = uuid.uuid4().hex
    token = tok()
    r = request(henv.ports[PH], f"/{marker}", PREFLIGHT + extra + [("authorization", f"Bearer {token}x")],
                method="OPTIONS", body=body)
    assert r.status == status, r.body
    seen = seen_by_api(echo, marker)
    if status == 400:
        assert seen == [] and r.json()["code"] == "invalid_request"
        return
    assert len(seen) == 1
    assert "authorization" not in dict(seen[0]["headers"]), "the opaque token is removed on a preflight"


def test_no_token_or_jwt_in_the_log_at_the_filters_most_verbose_level(henv, tenv, echo, token_service):
    """Runs last in this module: every opaque token, signature and JWT used above, and the raw
    answers' JWT, must be absent from Envoy's log (wasm at trace: every line the filter writes)."""
    log = henv.log_path.read_text(errors="replace") + tenv.log_path.read_text(errors="replace")
    assert "wasm log" in log and "introspection of token" in log, "the filter did log at debug level"
    values = SENT + [LONGEST, CLIENT_JWT, _GOOD, SECRET, "e2e-test-secret"]
    values += [v for v in split_jwt(CLIENT_JWT)]
    assert len(values) > 100
    for v in values:
        assert v not in log, f"{v[:16]}... appears in Envoy's log"
