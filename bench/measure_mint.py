#!/usr/bin/env python3
"""Measures what minting a JWT costs inside Envoy (V8, the real .wasm), per algorithm.

A stub RFC 7662 server answers every introspection with the same JSON claims, which also carry a
ready-made JWT in the claim `jwt`. Three listeners introspect with `response: "json"`: one
forwards that claim (`jwt_claim`, nothing minted), two mint (ES256, EdDSA). Each new token is
sent once to each listener in turn on keep-alive connections, so every request is a cache miss
with the same introspection round trip; the median latency of a minting listener minus that of
the claim listener is the minting cost. Loopback only, under a minute.

Usage: PYTHONPATH=tests .venv/bin/python bench/measure_mint.py [N]   (after `bash scripts/build.sh`)
"""

import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from harness.envoy import Envoy
from harness.services import EchoApi, Signer, mint_jwt


def introspection_stub():
    now = int(time.time())
    body = json.dumps({"active": True, "sub": "alice", "scope": "read write", "client_id": "app",
                       "exp": now + 3600, "iat": now, "iss": "https://as.example.com",
                       "jwt": mint_jwt({"sub": "alice", "scope": "read write", "exp": now + 3600})}).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", "0")))
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("cache-control", "no-store")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def listener(response_extra):
    return {"phantom": {"cluster": "as", "path": "/introspect", "client_id": "gw", "client_secret": "s",
                        "response": "json", **response_extra}}


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    stub = introspection_stub()
    echo = EchoApi().start()
    mint = {"issuer": "https://gw", "audience": "apis", "claims": ["sub", "scope", "client_id"],
            "max_lifetime_s": 300}
    listeners = {"claim (no minting)": listener({"jwt_claim": "jwt"})}
    for alg in ("ES256", "EdDSA"):
        s = Signer(alg, kid=f"{alg}-m")
        listeners[alg] = listener({"mint": {**mint, "algorithm": alg, "key_id": s.kid,
                                            "private_key_pem": s.private_pem()}})
    names = list(listeners)
    with tempfile.TemporaryDirectory() as d:
        e = Envoy(d, listeners={f"l{i}": cfg for i, cfg in enumerate(listeners.values())},
                  clusters={"api": echo.port, "as": stub.server_address[1]},
                  log_args=("--log-level", "warn"))
        e.start()
        try:
            conns = [http.client.HTTPConnection("127.0.0.1", e.ports[f"l{i}"], timeout=10)
                     for i in range(len(names))]
            times = {name: [] for name in names}
            for i in range(n):
                for name, conn in zip(names, conns):
                    t0 = time.perf_counter()
                    conn.request("GET", "/", headers={"authorization": f"Bearer token-{i}-{len(name)}"})
                    r = conn.getresponse()
                    r.read()
                    times[name].append(time.perf_counter() - t0)
                    assert r.status == 200, (name, r.status)
            counters = e.counters()
        finally:
            e.stop()
    base = statistics.median(times[names[0]])
    print(f"{n} new tokens per listener, each a cache miss with the same JSON introspection answer")
    print("| listener | p50 latency | minting cost (p50 minus the claim listener's) |")
    print("|---|---|---|")
    for name in names:
        p50 = statistics.median(times[name])
        cost = "-" if name == names[0] else f"{(p50 - base) * 1e6:.0f} µs"
        print(f"| {name} | {p50 * 1e6:.0f} µs | {cost} |")
    print(f"minted: {counters.get('minted')}, introspection calls: {counters.get('introspection_calls')}")


if __name__ == "__main__":
    main()
