"""Resident memory of the gateway Envoy: what loading the filter costs beside the do-nothing
filter, what one worker's VM of the filter costs, and what 10 000 cached tokens cost.
`bash scripts/bench.sh --memory [--compare-wasm PATH]` (about three minutes).

- Side by side: Envoys with 2 workers and no filter, the do-nothing wasm filter
  (bench/noop-filter), this filter (phantom, `cache.max_entries` 1000, nothing else configured),
  this filter with Envoy's `memory_allocator_manager` returning free pages (16 MiB every 10 s,
  as the example configurations do), and
  (`--compare-wasm`) another build of it. Each is broken down: the allocator's live bytes, its
  free pages and thread caches (admin `/memory`), the JIT's executable mappings, and the other
  anonymous memory (wasm linear memories, V8's heaps), from `/proc/<pid>/smaps`.

- Per worker VM: Envoy gives each worker its own VM (plus one on the main thread). The filter's
  cost per worker is the growth of resident memory from 1 to 5 workers with the filter, minus
  the same growth without it (Envoy's own per-worker cost), divided by 4.
- Per 10 000 entries: one worker, the phantom cache (`cache.max_entries` 10 000) filled by
  10 000 distinct tokens, each introspected once (the stub token service answers a JWT of
  about 330 bytes); and the split store (10 000 slots, created at start) filled by 10 000
  publishes of such JWTs. Envoy's allocated memory (admin `/memory`, tcmalloc's count, which
  resident memory lags) and resident memory, after minus before.

Resident memory is read from /proc/<pid>/status (VmRSS) after the process settles."""

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import tempfile

from harness.envoy import Envoy, base_config, bearer, listener, request
from harness.services import EchoApi, TokenService
from harness.split import PUBLISH, SECRET, new_jwt, publish

from bench import NOOP_WASM, noop_filter, rss_kb  # bench/bench.py, beside this file


def settled_rss(envoy, port=None, warm=200):
    """RSS after `warm` requests (every worker's VM has served) and a pause."""
    if port is not None:
        for i in range(warm):
            request(port, "/warm", bearer(f"warm-{i}"))
    time.sleep(1.5)
    return rss_kb(envoy.proc.pid)


def smaps_rss(pid):
    """KiB resident in anonymous executable mappings (V8's compiled code) and in every
    anonymous mapping."""
    jit = anon = 0
    named = True
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        parts = line.split()
        if parts and not parts[0].endswith(":"):
            named = len(parts) > 5
            executable = "x" in parts[1]
        elif parts and parts[0] == "Rss:" and not named:
            anon += int(parts[1])
            jit += int(parts[1]) if executable else 0
    return jit, anon


def side_by_side(work, ts, echo, compare_wasm=None):
    kinds = [("no filter", None, False), ("do-nothing wasm filter", NOOP_WASM, False),
             ("this filter", None, False), ("this filter, allocator releasing", None, True)]
    if compare_wasm:
        kinds.append((f"this filter, {Path(compare_wasm).name}", compare_wasm, False))
    mib = 1024 * 1024
    print("Envoy with 2 workers, after 200 requests (MiB): resident | allocator: live, free pages, "
          "thread and transfer caches | JIT code | other anonymous")
    rows = {}
    for i, (label, wasm, release) in enumerate(kinds):
        cfg = base_config()
        cfg["cache"]["max_entries"] = 1000
        e = Envoy(work / f"side-{i}", listeners={"api": cfg},
                  clusters={"api": echo.port, "token_service": ts.port}, concurrency=2,
                  log_args=("--log-level", "warn"))
        if label == "no filter":
            e.config["static_resources"]["listeners"] = [listener("api", [])]
        elif wasm == NOOP_WASM:
            e.config["static_resources"]["listeners"] = [listener("api", [noop_filter()])]
        elif wasm:
            http_filter = e.config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            wasm_filter = http_filter["typed_config"]["http_filters"][0]["typed_config"]["config"]
            wasm_filter["vm_config"]["code"] = {"local": {"filename": str(wasm)}}
        if release:
            # As the example configurations recommend (envoy/*.yaml).
            e.config["memory_allocator_manager"] = {"bytes_to_release": 16 * mib,
                                                    "memory_release_interval": "10s"}
        e.start()
        try:
            rss = settled_rss(e, e.ports["api"])
            if release:
                time.sleep(11)  # one release interval
                rss = rss_kb(e.proc.pid)
            m = json.loads(e.admin_get("/memory"))
            jit, anon = smaps_rss(e.proc.pid)
        finally:
            e.stop()
        heap = int(m["heap_size"]) - int(m["pageheap_unmapped"])
        live, free = int(m["allocated"]), int(m["pageheap_free"])
        caches = max(0, heap - live - free)
        other = anon * 1024 - jit * 1024 - heap
        rows[label] = rss / 1024
        print(f"  {label:38s} {rss / 1024:6.1f} | {live / mib:5.1f} {free / mib:5.1f} {caches / mib:5.1f} "
              f"| {jit / 1024:4.1f} | {other / mib:5.1f}")
    over = rows["this filter"] - rows["do-nothing wasm filter"]
    print(f"this filter over the do-nothing filter: +{over:.1f} MiB resident (target <= +12)")


def per_worker_vm(work, ts, echo):
    rss = {}
    for with_filter in (False, True):
        for workers in (1, 5):
            e = Envoy(work / f"vm-{with_filter}-{workers}", listeners={"api": base_config()},
                      clusters={"api": echo.port, "token_service": ts.port}, concurrency=workers,
                      log_args=("--log-level", "warn"))
            if not with_filter:
                e.config["static_resources"]["listeners"] = [listener("api", [])]
            e.start()
            try:
                rss[(with_filter, workers)] = settled_rss(e, e.ports["api"])
            finally:
                e.stop()
    growth_with = rss[(True, 5)] - rss[(True, 1)]
    growth_without = rss[(False, 5)] - rss[(False, 1)]
    per_vm = (growth_with - growth_without) / 4
    print(f"resident memory, KiB: no filter 1 worker {rss[(False, 1)]}, 5 workers {rss[(False, 5)]}; "
          f"filter 1 worker {rss[(True, 1)]}, 5 workers {rss[(True, 5)]}")
    print(f"one worker VM of the filter: {per_vm / 1024:.1f} MiB "
          f"(Envoy's own per-worker cost: {growth_without / 4 / 1024:.1f} MiB)")


def per_entries(work, ts, echo, n=10_000):
    phantom = base_config()
    phantom["cache"]["max_entries"] = n
    split = {"split": {"max_entries": n, "publish": {"path": PUBLISH, "secret": SECRET}}}
    e = Envoy(work / "entries", listeners={"phantom": phantom, "split": split},
              clusters={"api": echo.port, "token_service": ts.port}, log_args=("--log-level", "warn"))
    e.start()
    try:
        port = e.ports["phantom"]
        before = settled_rss(e, port)
        allocated_before = e.memory_allocated()
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda i: request(port, "/api", bearer(f"memory-{i:06d}")).status,
                                     range(n)))
        assert statuses.count(200) == n, statuses[:5]
        phantom_after = settled_rss(e)
        allocated_phantom = e.memory_allocated()
        jwt_len = len(new_jwt())
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda i: publish(e.ports["split"], new_jwt()).status, range(n)))
        assert statuses.count(204) == n, statuses[:5]
        split_after = settled_rss(e)
        allocated_split = e.memory_allocated()
    finally:
        e.stop()
    mib = 1024 * 1024
    print(f"phantom cache, {n} tokens introspected and cached: Envoy's allocated memory "
          f"+{(allocated_phantom - allocated_before) / mib:.1f} MiB, resident "
          f"+{(phantom_after - before) / 1024:.1f} MiB")
    print(f"split store, {n} entries published ({jwt_len}-byte JWTs): allocated "
          f"+{(allocated_split - allocated_phantom) / mib:.1f} MiB, resident "
          f"+{(split_after - phantom_after) / 1024:.1f} MiB")


def main():
    args = sys.argv[1:]
    compare_wasm = args[args.index("--compare-wasm") + 1] if "--compare-wasm" in args else None
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    ts, echo = TokenService().start(), EchoApi().start()
    try:
        side_by_side(work, ts, echo, compare_wasm)
        if "--side-by-side" in args:
            return 0
        per_worker_vm(work, ts, echo)
        per_entries(work, ts, echo)
    finally:
        ts.stop()
        echo.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
