#!/usr/bin/env python3
"""Measures what JWT verification costs inside Envoy (V8, the real .wasm), per algorithm.

Publishes N split tokens per algorithm, then sends each token twice on one keep-alive
connection: the first request verifies the signature, the second is served from the per-worker
memo of verified entries. The median difference of the two latencies is the verification cost
(the store lookup, proxying and the client are the same in both). Loopback only, about a minute.

Usage: PYTHONPATH=tests .venv/bin/python bench/measure_verify.py [N]   (after `bash scripts/build.sh`)
"""

import hashlib
import base64
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from harness.envoy import Envoy
from harness.services import EchoApi, Signer

SECRET = "measure-publisher-secret"


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    signers = [Signer(alg, kid=f"{alg}-m") for alg in ("RS256", "ES256", "EdDSA")]
    jwks = {"keys": [s.jwk() for s in signers]}
    echo = EchoApi().start()
    split = {"max_entries": 10000, "publish": {"path": "/_p", "secret": SECRET}}
    verify = {"issuer": "iss", "audiences": ["aud"], "algorithms": ["RS256", "ES256", "EdDSA"],
              "jwks_inline": jwks}
    with tempfile.TemporaryDirectory() as d:
        e = Envoy(d, listeners={"v": {"split": split, "verify": verify}}, clusters={"api": echo.port})
        e.start()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", e.ports["v"], timeout=10)

            def send(method, path, headers, body=None):
                t0 = time.perf_counter()
                conn.request(method, path, body=body, headers=headers)
                r = conn.getresponse()
                r.read()
                return r.status, time.perf_counter() - t0

            print(f"{n} tokens per algorithm, each sent twice (verify, then memo hit)")
            print("| algorithm | first (verifies) p50 | second (memo) p50 | verification cost p50 |")
            print("|---|---|---|---|")
            for s in signers:
                sigs = []
                now = int(time.time())
                for i in range(n):
                    jwt = s.mint({"iss": "iss", "aud": "aud", "sub": f"u{i}", "iat": now, "exp": now + 600})
                    hp, sig = jwt.rsplit(".", 1)
                    key = base64.b64encode(hashlib.sha256(sig.encode()).digest()).decode()
                    body = json.dumps({"signature_hash": key, "header_payload": hp, "expires_at": now + 600})
                    st, _ = send("POST", "/_p", {"authorization": f"Bearer {SECRET}",
                                                 "content-type": "application/json"}, body)
                    assert st == 204, st
                    sigs.append(sig)
                first, second, diff = [], [], []
                for sig in sigs:
                    st1, t1 = send("GET", "/x", {"authorization": f"Bearer {sig}"})
                    st2, t2 = send("GET", "/x", {"authorization": f"Bearer {sig}"})
                    assert st1 == 200 and st2 == 200, (st1, st2)
                    first.append(t1)
                    second.append(t2)
                    diff.append(t1 - t2)
                us = lambda v: f"{statistics.median(v) * 1e6:.0f} µs"  # noqa: E731
                print(f"| {s.alg} | {us(first)} | {us(second)} | {us(diff)} |")
            c = e.counters()
            print(f"\ncounters: verified={c['verified']} split_hit={c['split_hit']}")
        finally:
            e.stop()
            echo.stop()


if __name__ == "__main__":
    main()
