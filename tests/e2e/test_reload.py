"""Reload under load: the listener comes from a file (`lds_config` with a `path_config_source`),
rewritten 20 times while authenticated traffic flows, each time changing the plugin
configuration (which scope `/orders/` needs). Throughout:

- no request fails other than by the intended policy change: every answer is 200 or 403, none
  5xx, reset or hung;
- no request passes under a policy it should not: a token with neither scope is never let in,
  and once a reload has been applied, requests judged by it get its answer;
- Envoy's memory comes back to its plateau.

Also measured (printed): how long a reload takes to apply, and what each costs in memory."""

import json
import os
import statistics
import threading
import time

import pytest

from harness.envoy import Envoy, base_config, bearer, closed_port, listener, plugin_filter, request
from harness.services import Signer, TokenService

RELOADS = 20


def plugin(orders_scope):
    cfg = base_config()
    cfg["required_scopes"] = []
    # Every new token's JWT is verified: a reloaded filter must have its keys at once.
    cfg["verify"] = {"issuer": "https://login.example.com", "audiences": ["api.example.com"],
                     "algorithms": ["ES256"], "jwks": {"cluster": "token_service", "path": "/jwks"}}
    cfg["policies"] = [{"name": "orders", "match": {"path_prefix": "/orders/"},
                        "required_scopes": [orders_scope]}]
    return cfg


def write_lds(path, port, version):
    """Writes the listener file atomically (Envoy watches for the file being moved in)."""
    scope = "read" if version % 2 == 0 else "write"
    lst = listener("reloaded", [plugin_filter(plugin(scope))])
    lst["address"]["socket_address"]["port_value"] = port
    lst["@type"] = "type.googleapis.com/envoy.config.listener.v3.Listener"
    doc = {"version_info": str(version), "resources": [lst]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)
    return scope


def lds_successes(e):
    for line in e.admin_get("/stats?filter=listener_manager.lds.update_success").splitlines():
        name, _, value = line.partition(": ")
        if name == "listener_manager.lds.update_success":
            return int(value)
    return 0


@pytest.fixture
def token_service():
    ts = TokenService(signer=Signer("ES256", kid="reload-1")).start()
    yield ts
    ts.stop()


def test_twenty_reloads_under_load(tmp_path, token_service, echo):
    port = closed_port()
    lds = tmp_path / "lds.json"
    write_lds(lds, port, 0)
    e = Envoy(tmp_path / "envoy", listeners={}, clusters={"api": echo.port, "token_service": token_service.port},
              concurrency=2, log_args=("--log-level", "warning", "--drain-time-s", "1"))
    e.config["node"] = {"id": "reload-test", "cluster": "reload-test"}
    e.config["dynamic_resources"] = {"lds_config": {"resource_api_version": "V3",
                                                    "path_config_source": {"path": str(lds)}}}
    e.start()
    try:
        # The stub answers with scope "read write" unless the token says otherwise: scripted
        # tokens with one scope each, and one with neither.
        now = int(time.time())
        tokens = {}
        for name, scope in (("read", "read"), ("write", "write"), ("none", "other")):
            token = f"reload-{name}-{now}"
            token_service.scripted[token] = token_service.mint(
                {"iss": "https://login.example.com", "aud": "api.example.com", "sub": name,
                 "scope": scope, "iat": now, "exp": now + 600})
            tokens[name] = token

        def expected(scope_required, name):
            return 200 if name == scope_required else 403

        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                if request(port, "/orders/1", bearer(tokens["read"]), timeout=2).status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        baseline_done = lds_successes(e)
        # Warm: every token cached, memory at its plateau.
        for _ in range(3):
            for t in tokens.values():
                request(port, "/orders/w", bearer(t))
        plateau = e.memory_allocated()

        results = []
        stop = threading.Event()
        lock = threading.Lock()

        def load():
            names = list(tokens)
            i = 0
            while not stop.is_set():
                name = names[i % len(names)]
                i += 1
                t0 = time.time()
                try:
                    status = request(port, f"/orders/{i}", bearer(tokens[name]), timeout=5).status
                except OSError as exc:
                    status = f"error {type(exc).__name__}"
                with lock:
                    results.append((t0, time.time(), name, status))

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        apply_s, memory = [], []
        scope = "read"
        try:
            for version in range(1, RELOADS + 1):
                time.sleep(0.3)
                before = lds_successes(e)
                t0 = time.time()
                scope = write_lds(lds, port, version)
                while lds_successes(e) == before:
                    assert time.time() - t0 < 10, f"reload {version} not applied in 10 s"
                    time.sleep(0.005)
                apply_s.append(time.time() - t0)
                # Once applied, requests are judged by the new policy (new connections go to
                # the new listener), a new token's JWT verified with keys the reloaded filter
                # has at once (no 502 jwks_unavailable).
                fresh_token = f"reload-fresh-{version}-{now}"
                token_service.scripted[fresh_token] = token_service.mint(
                    {"iss": "https://login.example.com", "aud": "api.example.com", "sub": "fresh",
                     "scope": "read", "iat": now, "exp": now + 600})
                probe_deadline = time.time() + 5
                while True:
                    got = {n: request(port, "/orders/probe", bearer(tokens[n])).status for n in tokens}
                    got["fresh"] = request(port, "/orders/probe", bearer(fresh_token)).status
                    want = {n: expected(scope, n) for n in tokens}
                    want["fresh"] = expected(scope, "read")
                    # Retried only while the policy in force catches up; never anything else.
                    assert set(got.values()) <= {200, 403}, (version, got)
                    if got == want:
                        break
                    assert time.time() < probe_deadline, (version, scope, got, want)
                    time.sleep(0.02)
                memory.append(e.memory_allocated())
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=10)
        assert lds_successes(e) == baseline_done + RELOADS

        statuses = [s for *_, s in results]
        assert len(results) > 200, len(results)
        bad = [r for r in results if r[3] not in (200, 403)]
        assert not bad, f"{len(bad)} requests neither 200 nor 403: {bad[:5]}"
        passed_without_scope = [r for r in results if r[2] == "none" and r[3] == 200]
        assert not passed_without_scope, passed_without_scope[:5]
        slowest = max(end - start for start, end, *_ in results)
        assert slowest < 5, slowest

        # Memory back to its plateau once the old listeners have drained.
        time.sleep(3)
        for t in tokens.values():
            request(port, "/orders/after", bearer(t))
        after = e.memory_allocated()
        per_reload = (max(memory) - plateau) / RELOADS
        print(f"\n{len(results)} requests during {RELOADS} reloads: "
              f"{statuses.count(200)} x 200, {statuses.count(403)} x 403, slowest {slowest * 1000:.0f} ms; "
              f"a reload applied in {statistics.median(apply_s) * 1000:.0f} ms (median; max "
              f"{max(apply_s) * 1000:.0f}); memory {plateau / 2**20:.1f} MiB before, peak "
              f"{max(memory) / 2**20:.1f} MiB ({per_reload / 1024:.0f} KiB per reload at most), "
              f"{after / 2**20:.1f} MiB after")
        assert after < plateau * 1.25 + 4 * 2**20, (plateau, memory, after)
    finally:
        e.stop()
