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
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import tempfile

from harness.envoy import Envoy, base_config, bearer, listener, request
from harness.services import EchoApi, TokenService
from harness.split import PUBLISH, SECRET, new_jwt, publish

from bench import NOOP_WASM, ROOT, noop_filter, rss_kb  # bench/bench.py, beside this file

MIB = 1024 * 1024
NO_FILTER = "none"
# Built by scripts/bench.sh --memory --floor.
DORMANT_WASM = ROOT / "target" / "bench-dormant" / "wasm32-wasip1" / "release" / "envoy_token_filter.wasm"
BALLAST_FUNCTIONS = (0, 650, 1300, 2600)  # the sizes scripts/bench.sh builds


def ballast_wasm(n):
    return ROOT / "target" / f"code-ballast-{n}" / "wasm32-wasip1" / "release" / "code_ballast.wasm"


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


def measure(work, ts, echo, name, wasm=None, release=False, env=None):
    """One Envoy with 2 workers and the filter (`wasm`: this filter if None, `NOOP` for no filter
    at all, else that module with this filter's configuration), after 200 requests: its
    resident memory and where it goes, in MiB."""
    cfg = base_config()
    cfg["cache"]["max_entries"] = 1000
    e = Envoy(work / name, listeners={"api": cfg},
              clusters={"api": echo.port, "token_service": ts.port}, concurrency=2,
              log_args=("--log-level", "warn"))
    if wasm == NO_FILTER:
        e.config["static_resources"]["listeners"] = [listener("api", [])]
    elif wasm == NOOP_WASM:
        e.config["static_resources"]["listeners"] = [listener("api", [noop_filter()])]
    elif wasm or env:
        http_filter = e.config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        vm_config = http_filter["typed_config"]["http_filters"][0]["typed_config"]["config"]["vm_config"]
        if wasm:
            vm_config["code"] = {"local": {"filename": str(wasm)}}
        if env:
            vm_config["environment_variables"] = {"key_values": env}
    if release:
        # As the example configurations recommend (envoy/*.yaml).
        e.config["memory_allocator_manager"] = {"bytes_to_release": 16 * MIB,
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
    return {"resident": rss / 1024, "live": live / MIB, "free": free / MIB,
            "caches": max(0, heap - live - free) / MIB, "jit": jit / 1024,
            "other": (anon * 1024 - jit * 1024 - heap) / MIB}


HEADING = ("(MiB): resident | allocator: live, free pages, thread and transfer caches | JIT code "
           "| other anonymous")


def row(label, m, extra=""):
    print(f"  {label:44s} {m['resident']:6.1f} | {m['live']:5.1f} {m['free']:5.1f} {m['caches']:5.1f} "
          f"| {m['jit']:4.1f} | {m['other']:5.1f}{extra}", flush=True)


def side_by_side(work, ts, echo, compare_wasm=None):
    kinds = [("no filter", NO_FILTER, False), ("do-nothing wasm filter", NOOP_WASM, False),
             ("this filter", None, False), ("this filter, allocator releasing", None, True)]
    if compare_wasm:
        kinds.append((f"this filter, {Path(compare_wasm).name}", compare_wasm, False))
    print("Envoy with 2 workers, after 200 requests " + HEADING)
    rows = {}
    for i, (label, wasm, release) in enumerate(kinds):
        m = measure(work, ts, echo, f"side-{i}", wasm, release)
        rows[label] = m["resident"]
        row(label, m)
    over = rows["this filter"] - rows["do-nothing wasm filter"]
    print(f"this filter over the do-nothing filter: +{over:.1f} MiB resident (target <= +12)")


def code_bytes(wasm):
    """The size of a module's code section (its functions' bodies)."""
    b = Path(wasm).read_bytes()
    i = 8
    while i < len(b):
        section, size, shift, i = b[i], 0, 0, i + 1
        while True:
            byte, i = b[i], i + 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        if section == 10:
            return size
        i += size
    return 0


def floor(work, ts, echo, rounds=2):
    """What the filter's share is made of: the same module with its VMs dormant (loaded and
    compiled, never configured or run) against it running, and the do-nothing filter with
    generated code it never calls (bench/code-ballast) at several sizes: what each megabyte
    of compiled code costs an Envoy whatever the code does."""
    kinds = [("do-nothing wasm filter", NOOP_WASM, None)]
    kinds += [(f"do-nothing + {n} never-called functions", ballast_wasm(n), None)
              for n in BALLAST_FUNCTIONS]
    kinds += [("this filter, dormant (never configured)", DORMANT_WASM, {"ETF_DORMANT": "1"}),
              ("this filter (the same module), running", DORMANT_WASM, None)]
    print("Envoy with 2 workers, after 200 requests " + HEADING + " | code section (MB)")
    resident = {}
    for r in range(rounds):
        for i, (label, wasm, env) in enumerate(kinds):
            m = measure(work, ts, echo, f"floor-{r}-{i}", wasm, env=env)
            resident.setdefault(label, []).append(m["resident"])
            row(label, m, f" | {code_bytes(wasm) / 1e6:.3f}")
    med = {label: statistics.median(v) for label, v in resident.items()}
    noop = med["do-nothing wasm filter"]
    points = [(code_bytes(ballast_wasm(n)) / 1e6, med[f"do-nothing + {n} never-called functions"] - noop)
              for n in BALLAST_FUNCTIONS]
    # Least squares over the ballast: MiB over the do-nothing filter per MB of code.
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    intercept = my - slope * mx
    ours = code_bytes(DORMANT_WASM) / 1e6
    print(f"generated code: +{slope:.1f} MiB resident per MB of code (+{intercept:.1f} at none); "
          f"+12 MiB is reached at {(12 - intercept) / slope:.2f} MB of code")
    print(f"this filter: {ours:.2f} MB of code; dormant +{med['this filter, dormant (never configured)'] - noop:.1f}, "
          f"running +{med['this filter (the same module), running'] - noop:.1f} MiB over the do-nothing filter; "
          f"generated code of its size: +{intercept + slope * ours:.1f}")


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
        if "--floor" in args:
            floor(work, ts, echo)
            return 0
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
