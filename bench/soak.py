#!/usr/bin/env python3
"""Bounded soak: the real .wasm in a real Envoy (two workers) for a few minutes, loopback only,
with mixed traffic while the token service flaps (down a few seconds out of every period).

Traffic classes, picked at random per request by several client threads:
  cached        a pool of 50 opaque tokens, reused        200, or 502 while the token service is down and the token is not cached
  new           a fresh opaque token every time          200, or 502 while down
  inactive      a fresh token the token service rejects  401, or 502 while down; never 200
  malformed     a bearer value that breaks RFC 6750       400
  none          no Authorization                         401
  split         a pool of published split tokens         200 (no token service involved)
  split_unknown a signature never published              401

Checked for every answer: no 200 without a valid token, and every 200 carries (as seen by the
API, echoed back) a JWT the token service issued or the publisher published. Envoy's memory
(tcmalloc allocated and RSS) is sampled from start to end; the caches are bounded
(`max_entries`), so it must plateau.

Usage: PYTHONPATH=tests .venv/bin/python bench/soak.py [--minutes 3] [--clients 8] [--period-s 10] [--down-s 3]
(after `bash scripts/build.sh`). Exits 1 on any violation or unbounded memory growth.
"""

import argparse
import collections
import http.client
import json
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from harness.envoy import Envoy, base_config, closed_port
from harness.services import EchoApi, TokenService
from harness.split import PUBLISH, SECRET, new_jwt, publish, split_jwt

ALLOWED = {
    "cached": {200, 502},
    "new": {200, 502},
    "inactive": {401, 502},
    "malformed": {400},
    "none": {401},
    "split": {200},
    "split_unknown": {401},
}


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=3)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--period-s", type=float, default=10)
    ap.add_argument("--down-s", type=float, default=3)
    args = ap.parse_args()

    ts_port = closed_port()
    ts = [TokenService(port=ts_port).start()]
    issued_lock = threading.Lock()
    echo = EchoApi().start()
    phantom = base_config(timeout_ms=500)
    phantom["cache"]["max_entries"] = 2000
    split = {"required_scopes": ["read"],
             "split": {"max_entries": 1000, "publish": {"path": PUBLISH, "secret": SECRET}}}
    work = tempfile.TemporaryDirectory()
    envoy = Envoy(work.name, listeners={"phantom": phantom, "split": split},
                  clusters={"api": echo.port, "token_service": ts_port}, concurrency=2,
                  log_args=("--log-level", "warn"))
    envoy.start()
    published = {}
    for _ in range(200):
        jwt = new_jwt()
        assert publish(envoy.ports["split"], jwt).status == 204
        published[split_jwt(jwt)[1]] = jwt
    signatures = list(published)
    cached_pool = [f"soak-cached-{i}-{uuid.uuid4().hex}" for i in range(50)]

    counts = collections.defaultdict(collections.Counter)
    violations = []
    stop = threading.Event()
    total = [0]

    def issued_jwts():
        with issued_lock:
            calls = list(ts[0].calls)
        return {c.get("jwt") for c in calls}

    known = set()

    def client(seed):
        rng = random.Random(seed)
        conns = {}
        while not stop.is_set():
            cls = rng.choice(list(ALLOWED))
            listener = "split" if cls.startswith("split") else "phantom"
            headers = {}
            if cls == "cached":
                headers["authorization"] = f"Bearer {rng.choice(cached_pool)}"
            elif cls == "new":
                headers["authorization"] = f"Bearer soak-new-{uuid.uuid4().hex}"
            elif cls == "inactive":
                headers["authorization"] = f"Bearer inactive-{uuid.uuid4().hex}"
            elif cls == "malformed":
                headers["authorization"] = rng.choice(["Bearer", "Bearer a b", "Bearer \"x\"", "Bearer " + "a" * 5000])
            elif cls == "split":
                headers["authorization"] = f"Bearer {rng.choice(signatures)}"
            elif cls == "split_unknown":
                headers["authorization"] = f"Bearer {uuid.uuid4().hex}{uuid.uuid4().hex}"
            try:
                conn = conns.get(listener)
                if conn is None:
                    conn = conns[listener] = http.client.HTTPConnection("127.0.0.1", envoy.ports[listener], timeout=5)
                conn.request("GET", "/soak", headers=headers)
                r = conn.getresponse()
                body = r.read()
                status = r.status
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conns.pop(listener, None)
            except (OSError, http.client.HTTPException) as e:
                conns.pop(listener, None)
                status = f"error {e.__class__.__name__}"
            counts[cls][status] += 1
            total[0] += 1
            if status == 502 and up_since[0] is not None and time.time() - up_since[0] > 1.0:
                counts[cls]["of which 502 with the service up for over 1 s"] += 1
            if status not in ALLOWED[cls]:
                violations.append(f"{cls}: {status}")
            if status == 200:
                seen = json.loads(body)
                auth = [v for k, v in seen["headers"] if k == "authorization"]
                jwt = auth[0][len("Bearer "):] if len(auth) == 1 else None
                ok = jwt in known or (cls == "split" and jwt in published.values())
                if not ok and jwt in issued_jwts():
                    known.add(jwt)
                    ok = True
                if not ok:
                    violations.append(f"{cls}: 200 with a JWT nobody issued")

    up_since = [time.time()]

    def flapper():
        while not stop.is_set():
            if stop.wait(args.period_s - args.down_s):
                break
            up_since[0] = None
            ts[0].stop()
            counts["_flaps"]["down"] += 1
            stop.wait(args.down_s)
            with issued_lock:
                old = ts[0]
                ts[0] = TokenService(port=ts_port).start()
                ts[0].calls.extend(old.calls)
            up_since[0] = time.time()

    samples = []

    def sample(label):
        samples.append((label, envoy.memory_allocated(), rss_kib(envoy.proc.pid)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    threads.append(threading.Thread(target=flapper))
    t0 = time.time()
    for t in threads:
        t.start()
    time.sleep(min(20, args.minutes * 60 / 6))
    sample("after warm-up")
    end = t0 + args.minutes * 60
    while time.time() < end:
        time.sleep(min(30, max(0, end - time.time())))
        with echo.lock:
            echo.requests.clear()
        sample(f"{time.time() - t0:.0f} s")
    stop.set()
    for t in threads:
        t.join(timeout=30)
    elapsed = time.time() - t0
    sample("end")
    envoy.stop()
    ts[0].stop()

    print(f"soak: {args.minutes} min, {args.clients} clients, token service down {args.down_s} s "
          f"of every {args.period_s} s ({counts['_flaps']['down']} outages)")
    print(f"requests: {total[0]} ({total[0] / elapsed:.0f}/s)")
    print("| class | answers by status |")
    print("|---|---|")
    for cls in ALLOWED:
        print(f"| {cls} | {dict(sorted(counts[cls].items(), key=str))} |")
    print("| memory sample | allocated (MiB) | RSS (MiB) |")
    print("|---|---|---|")
    for label, alloc, rss in samples:
        print(f"| {label} | {alloc / 2**20:.1f} | {rss / 1024:.1f} |")
    first, last = samples[0], samples[-1]
    growth = (last[1] - first[1]) / max(first[1], 1)
    print(f"allocated memory growth from warm-up to end: {growth * 100:+.1f}%")
    print(f"violations: {len(violations)}" + (f" (first: {violations[:5]})" if violations else ""))
    bad = bool(violations) or growth > 0.10
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
