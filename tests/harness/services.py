#!/usr/bin/env python3
"""Demo token service and echo API for the filter (used by scripts/run.sh and the e2e tests).

Token service, introspection (any POST except to /oauth/token): answers the Curity way
(RFC 7662, `Accept: application/jwt`). What it answers depends on how the opaque token starts,
so tests need no set-up calls:

  inactive...   204                    inactjson... 200 {"active":false}
  e<NNN>...     status NNN             slow...      sleeps 3 s, then active
  reset...      closes the connection  big...       an ~8 KB JWT
  exp2...       JWT with exp = now+2   expired...   JWT with exp in the past
  maxage1...    Cache-Control max-age=1             nostore...   Cache-Control no-store
  noscope...    JWT with scope "profile"            garbage...   200 application/jwt "not-a-jwt"
  anything else an active token: JWT with scope "read write", exp = now+300

Token service, token endpoint (POST /oauth/token, RFC 6749 §5.1): issues a JWT access token
in a JSON response, compressed with gzip or deflate when the request's Accept-Encoding allows it
(as most servers do). The form field `scenario` picks another answer: `opaque` (an opaque
access token), `error` (400 invalid_client), `text` (the JWT as text/plain), `chunked` (the
JSON response without Content-Length), `noexp` (a JWT without exp, expires_in 120), and
misbehaviours: `gzip-always` and `deflate-always` (compressed whatever the request asks),
`notype` (no Content-Type), `textjson` (text/json), `twotypes` (two Content-Type headers),
`utf16` (the JSON in UTF-16), `created` (status 201).

Tests can script an answer: `scripted[token] = jwt` makes introspection of `token` return `jwt`.

Signing: by default HS256 with a TEST-ONLY key (DEMO_KEY below). With a `Signer` (RS256, ES256
or EdDSA; keys generated at start, never stored), JWTs are signed with it and its public key is
served as a JWK Set on any GET whose path ends in `/jwks` (`jwks_status` other than 200 makes
that endpoint fail; `jwks_calls` counts its requests). `--sign ES256` does this for the demo.
Echo API: answers every request with JSON describing what it received.
"""

import argparse
import base64
import gzip
import hashlib
import hmac
import json
import socket
import sys
import threading
import time
import urllib.parse
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEMO_KEY = b"test-only-demo-key-not-a-secret"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint_jwt(claims: dict) -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "demo"}).encode())
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    sig = hmac.new(DEMO_KEY, signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(sig)}"


class Signer:
    """An asymmetric signing key made at start (needs the `cryptography` package), for JWTs
    and the JWK Set that verifies them. TEST AND DEMO ONLY."""

    def __init__(self, alg="ES256", kid=None):
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
        self.alg = alg
        self.kid = kid or f"{alg.lower()}-{int(time.time() * 1000) % 100000}"
        if alg == "RS256":
            self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif alg == "ES256":
            self.key = ec.generate_private_key(ec.SECP256R1())
        elif alg == "EdDSA":
            self.key = ed25519.Ed25519PrivateKey.generate()
        else:
            raise ValueError(f"unsupported algorithm {alg}")

    def sign(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, padding
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
        if self.alg == "RS256":
            return self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        if self.alg == "ES256":
            r, s = decode_dss_signature(self.key.sign(data, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return self.key.sign(data)

    def jwk(self) -> dict:
        pub = self.key.public_key()
        if self.alg == "RS256":
            n = pub.public_numbers()
            return {"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
                    "n": b64url(n.n.to_bytes((n.n.bit_length() + 7) // 8, "big")),
                    "e": b64url(n.e.to_bytes(3, "big"))}
        if self.alg == "ES256":
            n = pub.public_numbers()
            return {"kty": "EC", "kid": self.kid, "use": "sig", "alg": "ES256", "crv": "P-256",
                    "x": b64url(n.x.to_bytes(32, "big")), "y": b64url(n.y.to_bytes(32, "big"))}
        from cryptography.hazmat.primitives import serialization
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "kid": self.kid, "use": "sig", "alg": "EdDSA", "crv": "Ed25519", "x": b64url(raw)}

    def private_pem(self) -> str:
        """The private key as PKCS#8 PEM (for a gateway that mints JWTs with it)."""
        from cryptography.hazmat.primitives import serialization
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode()

    def mint(self, claims: dict, header: dict = None) -> str:
        h = header if header is not None else {"alg": self.alg, "typ": "JWT", "kid": self.kid}
        signing_input = f"{b64url(json.dumps(h).encode())}.{b64url(json.dumps(claims, separators=(',', ':')).encode())}"
        return f"{signing_input}.{b64url(self.sign(signing_input.encode()))}"


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def decode_jwt_payload(jwt: str) -> dict:
    return json.loads(b64url_decode(jwt.split(".")[1]))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, *args, **kwargs):
        self.connections = set()
        self.connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self):
        """Closes every open (keep-alive) connection, as a process that exits would."""
        with self.connections_lock:
            conns = list(self.connections)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address):
        # Deliberate resets and clients that hang up are part of the tests: stay quiet.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes

    def log_message(self, *args):
        pass


class _Service:
    """A stub HTTP server on loopback, served from a daemon thread."""

    def _serve(self, host, port, handler):
        self.server = _Server((host, port), handler)
        self.port = self.server.server_address[1]

    def start(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.server.drop_connections()


class TokenService(_Service):
    """Introspection endpoint stub. Records every call it receives."""

    def __init__(self, host="127.0.0.1", port=0, verbose=False, signer=None):
        self.calls = []
        self.lock = threading.Lock()
        self.verbose = verbose
        self.signer = signer
        self.jwks = {"keys": [signer.jwk()]} if signer else {"keys": []}
        self.jwks_status = 200
        self.jwks_delay = 0.0  # seconds before the JWKS is answered
        self.jwks_calls = 0
        self.scripted = {}
        self._serial = 0
        # token -> (status, content type or None, body bytes, extra headers): any answer at all.
        self.raw = {}
        self.issued = 0
        self.issued_tokens = []
        self.token_requests = []  # the headers of every token endpoint request
        service = self

        class Handler(_Handler):
            def do_POST(self):
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length).decode("latin-1")
                form = urllib.parse.parse_qs(body, keep_blank_values=True)
                if self.path.split("?")[0] == "/oauth/token":
                    with service.lock:
                        service.token_requests.append([(k.lower(), v) for k, v in self.headers.items()])
                    return service.token_endpoint(self, form.get("scenario", [""])[0])
                token = form.get("token", [""])[0]
                if "subject_token" in form:
                    # A token exchange (RFC 8693): scripted under "exchange:<subject token>".
                    token = "exchange:" + form["subject_token"][0]
                call = {
                    "method": "POST",
                    "path": self.path,
                    "headers": [(k.lower(), v) for k, v in self.headers.items()],
                    "body": body,
                    "token": token,
                    "time": time.time(),
                }
                with service.lock:
                    service.calls.append(call)
                service.answer(self, token, call)

            def do_GET(self):
                if self.path.split("?")[0].endswith("/jwks"):
                    return service.jwks_endpoint(self)
                self.send_response(405)
                self.send_header("content-length", "0")
                self.end_headers()
                return None

        self._serve(host, port, Handler)

    def mint(self, claims):
        return self.signer.mint(claims) if self.signer else mint_jwt(claims)

    def jwks_endpoint(self, h):
        with self.lock:
            self.jwks_calls += 1
            status, doc, delay = self.jwks_status, self.jwks, self.jwks_delay
        time.sleep(delay)
        body = json.dumps(doc).encode() if status == 200 else b"unavailable"
        if self.verbose:
            print(f"[token service] JWKS requested: {status}", flush=True)
        h.send_response(status)
        h.send_header("content-type", "application/json" if status == 200 else "text/plain")
        h.send_header("content-length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def answer(self, h, token, call):
        now = int(time.time())
        claims = {
            "iss": "https://login.example.com",
            "sub": "user-" + hashlib.sha256(token.encode()).hexdigest()[:8],
            "aud": "api.example.com",
            "scope": "read write",
            "iat": now,
            "exp": now + 300,
        }
        with self.lock:
            self.issued += 1
            claims["jti"] = f"jwt-{self.issued}"
        extra_headers = {}

        def send(status, body=b"", ctype=None):
            h.send_response(status)
            if ctype:
                h.send_header("content-type", ctype)
            for k, v in extra_headers.items():
                h.send_header(k, v)
            h.send_header("content-length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)

        raw = self.raw.get(token)
        if raw is not None:
            status, ctype, body, headers = raw
            extra_headers.update(headers)
            return send(status, body, ctype)
        scripted = self.scripted.get(token)
        if scripted is not None:
            call["jwt"] = scripted
            return send(200, scripted.encode(), "application/jwt")
        if token.startswith("inactjson"):
            return send(200, b'{"active":false}', "application/json")
        if token.startswith("inactive"):
            return send(204)
        if len(token) >= 4 and token[0] == "e" and token[1:4].isdigit():
            status = int(token[1:4])
            if 300 <= status < 400:
                extra_headers["location"] = "http://127.0.0.1:1/elsewhere"
            return send(status, b"error", "text/plain")
        if token.startswith("midreset"):
            # Headers and part of the body, then a TCP reset.
            h.send_response(200)
            h.send_header("content-type", "application/jwt")
            h.send_header("content-length", "500")
            h.end_headers()
            h.wfile.write(b"eyJhbGciOi")
            h.wfile.flush()
            h.close_connection = True
            try:
                h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                h.connection.close()
            except OSError:
                pass
            return None
        if token.startswith("reset"):
            h.close_connection = True
            try:
                h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return None
        if token.startswith("garbage"):
            return send(200, b"not-a-jwt", "application/jwt")
        if token.startswith("slow"):
            time.sleep(3)
        if token.startswith("big"):
            claims["pad"] = "x" * 6000
        if token.startswith("exp2"):
            claims["exp"] = now + 2
        if token.startswith("expired"):
            claims["exp"] = now - 10
        if token.startswith("noscope"):
            claims["scope"] = "profile"
        if token.startswith("maxage1"):
            extra_headers["cache-control"] = "max-age=1"
        if token.startswith("nostore"):
            extra_headers["cache-control"] = "no-store"
        jwt = self.mint(claims)
        call["jwt"] = jwt
        if self.verbose:
            print(f"[token service] introspection: token active, issued {claims['jti']} for {claims['sub']}", flush=True)
        return send(200, jwt.encode(), "application/jwt")

    def token_endpoint(self, h, scenario):
        now = int(time.time())
        with self.lock:
            self.issued += 1
            n = self.issued
        claims = {"iss": "https://login.example.com", "sub": f"client-{n}", "aud": "api.example.com",
                  "scope": "read write", "iat": now, "exp": now + 300, "jti": f"jwt-{n}"}
        if scenario == "noexp":
            del claims["exp"]
        access_token = f"opaque-{n}-2YotnFZFEjr1zCsicMWpAA" if scenario == "opaque" else self.mint(claims)
        with self.lock:
            self.issued_tokens.append(access_token)
        if self.verbose:
            print(f"[token service] token endpoint: issued {claims['jti']} ({scenario or 'jwt'})", flush=True)
        status, ctype = 200, "application/json;charset=UTF-8"
        body = json.dumps({"access_token": access_token, "token_type": "Bearer",
                           "expires_in": 120 if scenario == "noexp" else 300,
                           "scope": "read write", "refresh_token": f"refresh-{n}"}).encode()
        extra = []
        if scenario == "error":
            status, body = 400, b'{"error":"invalid_client"}'
        if scenario == "text":
            ctype, body = "text/plain", access_token.encode()
        if scenario == "notype":
            ctype = None
        if scenario == "textjson":
            ctype = "text/json"
        if scenario == "twotypes":
            extra.append(("content-type", "text/plain"))
        if scenario == "utf16":
            ctype, body = "application/json; charset=utf-16", body.decode().encode("utf-16")
        if scenario == "created":
            status = 201
        coding = None
        accepted = h.headers.get("accept-encoding", "").lower()
        if scenario.endswith("-always"):
            coding = scenario.split("-")[0]
        elif "gzip" in accepted:
            coding = "gzip"
        elif "deflate" in accepted:
            coding = "deflate"
        if coding == "gzip":
            body = gzip.compress(body)
        elif coding == "deflate":
            body = zlib.compress(body)
        h.send_response(status)
        if ctype:
            h.send_header("content-type", ctype)
        for k, v in extra:
            h.send_header(k, v)
        if coding:
            h.send_header("content-encoding", coding)
        h.send_header("cache-control", "no-store")
        if scenario == "chunked":
            h.send_header("transfer-encoding", "chunked")
            h.end_headers()
            half = len(body) // 2
            for part in (body[:half], body[half:]):
                h.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                h.wfile.flush()
            h.wfile.write(b"0\r\n\r\n")
            return None
        h.send_header("content-length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
        return None

    def script(self, jwt, prefix="opaque"):
        """A new opaque token whose introspection answers `jwt`."""
        with self.lock:
            self._serial += 1
            name = f"{prefix}-{self._serial}-{time.time_ns()}"
        self.scripted[name] = jwt
        return name

    def calls_for(self, token):
        with self.lock:
            return [c for c in self.calls if c["token"] == token]


class EchoApi(_Service):
    """Upstream API stub: answers with JSON describing the request it received."""

    def __init__(self, host="127.0.0.1", port=0, verbose=False):
        self.requests = []
        self.lock = threading.Lock()
        api = self

        class Handler(_Handler):
            def handle_any(self):
                length = int(self.headers.get("content-length", "0") or 0)
                body = self.rfile.read(length).decode("latin-1") if length else ""
                seen = {
                    "method": self.command,
                    "path": self.path,
                    "headers": [(k.lower(), v) for k, v in self.headers.items()],
                    "body": body,
                }
                with api.lock:
                    api.requests.append(seen)
                if verbose:
                    auth = self.headers.get("authorization", "(none)")
                    print(f"[echo api] {self.command} {self.path} Authorization: {auth}", flush=True)
                    if auth.startswith("Bearer ") and auth.count(".") == 2:
                        print(f"[echo api]   JWT claims: {json.dumps(decode_jwt_payload(auth[7:]))}", flush=True)
                out = json.dumps(seen, indent=2).encode() + b"\n"
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = handle_any

        self._serve(host, port, Handler)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--token-port", type=int, default=18081)
    ap.add_argument("--echo-port", type=int, default=18080)
    ap.add_argument("--sign", choices=["HS256", "RS256", "ES256", "EdDSA"], default="HS256",
                    help="JWT signing algorithm; other than HS256, a key is made at start and served at /jwks")
    args = ap.parse_args()
    signer = None if args.sign == "HS256" else Signer(args.sign)
    TokenService(port=args.token_port, verbose=True, signer=signer).start()
    EchoApi(port=args.echo_port, verbose=True).start()
    print(f"[demo services] token service on 127.0.0.1:{args.token_port}, echo API on 127.0.0.1:{args.echo_port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
