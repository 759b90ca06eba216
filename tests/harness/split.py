"""Split token helpers: the store key a publisher writes, the publish API, token requests."""

import base64
import hashlib
import json
import time

from harness.envoy import bearer, request
from harness.services import mint_jwt

SECRET = "e2e-publisher-secret"
PUBLISH = "/_split-token"


def store_key(signature, encoding="base64"):
    digest = hashlib.sha256(signature.encode("ascii")).digest()
    if encoding == "base64":
        return base64.b64encode(digest).decode()
    if encoding == "base64url":
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return digest.hex()


def split_jwt(jwt):
    header_payload, signature = jwt.rsplit(".", 1)
    return header_payload, signature


_serial = [0]
MINTED = []  # every JWT a test made, for the log checks


def new_jwt(scope="read write", lifetime=300, **extra):
    """A fresh JWT (HS256, test-only key); `lifetime=None` leaves out exp and iat."""
    _serial[0] += 1
    claims = {"iss": "https://login.example.com", "sub": f"split-{_serial[0]}-{time.time()}", "scope": scope}
    if lifetime is not None:
        claims["iat"] = int(time.time())
        claims["exp"] = int(time.time()) + lifetime
    claims.update(extra)
    jwt = mint_jwt(claims)
    MINTED.append(jwt)
    return jwt


def publish(port, jwt, expires_at=None, encoding="base64", secret=SECRET, body=None, method="POST",
            with_signature=False):
    """`with_signature`: the body carries the signature itself (a fleet seals under it)."""
    header_payload, signature = split_jwt(jwt)
    if body is None:
        doc = {"signature_hash": store_key(signature, encoding)}
        if method == "POST":
            doc["header_payload"] = header_payload
            doc["expires_at"] = expires_at if expires_at is not None else int(time.time()) + 300
            if with_signature:
                doc["signature"] = signature
        body = json.dumps(doc)
    headers = [("content-type", "application/json")]
    if secret is not None:
        headers += bearer(secret)
    return request(port, PUBLISH, headers, method=method, body=body.encode() if isinstance(body, str) else body)


def revoke(port, jwt, encoding="base64"):
    return publish(port, jwt, encoding=encoding, method="DELETE")


def call_api(port, signature, path="/api"):
    return request(port, path, bearer(signature))


def forwarded_authorization(reply):
    return dict(reply.json()["headers"]).get("authorization")


def echo_saw(echo, path_prefix):
    with echo.lock:
        return [r for r in echo.requests if r["path"].startswith(path_prefix)]


def token_request(port, scenario="", auth=("client", "client-secret")):
    basic = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    form = f"grant_type=client_credentials&scenario={scenario}".encode()
    return request(port, "/oauth/token", [("authorization", f"Basic {basic}"),
                                          ("content-type", "application/x-www-form-urlencoded")],
                   method="POST", body=form)
