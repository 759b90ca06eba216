"""Smoke test of the benchmark (issue 5): `scripts/bench.sh` starts everything itself and
prints its table, for a scenario of each kind and for --hostcalls. Bounded to about a second
per scenario; the figures are not checked (they are measured, never asserted)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None,
    reason="the benchmark pins Envoy and wrk to cores 0 and 1 with taskset")


def bench(*args):
    out = subprocess.run(["bash", "scripts/bench.sh", "--rounds", "1", "--duration", "1", *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def rows(table):
    return {line.split(":")[0].strip("| ") for line in table.splitlines() if line.startswith("| ")}


def test_bench_prints_a_row_per_scenario():
    table = bench("--connections", "1", "--only", "phantom_hit,split_hit,phantom_miss,lua_no_cache")
    assert {"passthrough", "phantom_hit", "split_hit", "phantom_miss", "lua_no_cache"} <= rows(table)
    assert "(errors!)" not in table
    assert "Filter .wasm:" in table


def test_bench_prices_host_calls():
    table = bench("--hostcalls")
    assert {"hostcall_floor", "hostcall_value", "hostcall_pairs"} <= rows(table)
    assert "One host call, in gateway CPU µs" in table
    assert "(errors!)" not in table


def test_bench_proof_of_possession_scenarios():
    """DPoP proofs made per run and read by wrk, the TLS client Envoy for mTLS, and the proof
    cost against the native one (a release build of the unit test that measures it)."""
    table = bench("--connections", "16", "--only", "phantom_hit,dpop_hit_eddsa,tls_passthrough,mtls_hit")
    assert {"passthrough", "phantom_hit", "dpop_hit_eddsa", "tls_passthrough", "mtls_hit"} <= rows(table)
    assert "(errors!)" not in table
    assert "| EdDSA |" in table
