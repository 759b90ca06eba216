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


def write_listener(path, port, version, plugin_config):
    """Writes the listener file atomically (Envoy watches for the file being moved in)."""
    lst = listener("reloaded", [plugin_filter(plugin_config)])
    lst["address"]["socket_address"]["port_value"] = port
    lst["@type"] = "type.googleapis.com/envoy.config.listener.v3.Listener"
    doc = {"version_info": str(version), "resources": [lst]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def write_lds(path, port, version):
    scope = "read" if version % 2 == 0 else "write"
    write_listener(path, port, version, plugin(scope))
    return scope


def lds_envoy(workdir, lds, clusters):
    """An Envoy whose one listener comes from the file `lds`, draining old listeners in 1 s."""
    e = Envoy(workdir, listeners={}, clusters=clusters, concurrency=2,
              log_args=("--log-level", "warning", "--drain-time-s", "1"))
    e.config["node"] = {"id": "reload-test", "cluster": "reload-test"}
    e.config["dynamic_resources"] = {"lds_config": {"resource_api_version": "V3",
                                                    "path_config_source": {"path": str(lds)}}}
    return e.start()


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
    e = lds_envoy(tmp_path / "envoy", lds, {"api": echo.port, "token_service": token_service.port})
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


def dpop_plugin(op, replay_entries):
    """Phantom tokens of the real provider (JSON introspection, minted JWTs), `dpop` with a
    replay store of `replay_entries` slots."""
    from harness.oidc import GATEWAY
    return {
        "required_scopes": ["read"],
        "phantom": {"cluster": "op", "authority": f"127.0.0.1:{op.port}", "path": "/token/introspection",
                    "client_id": GATEWAY[0], "client_secret": GATEWAY[1], "timeout_ms": 3000,
                    "response": "json",
                    "mint": {"issuer": "https://gateway.example.com", "audience": "internal-apis",
                             "algorithm": "ES256", "private_key_pem": MINT_KEY.private_pem(),
                             "key_id": "gw-1", "claims": ["sub", "scope"], "max_lifetime_s": 120}},
        "dpop": {"replay_entries": replay_entries},
    }


MINT_KEY = Signer("ES256")


def test_a_reload_to_another_replay_store_size_keeps_every_proof_and_bounds_memory(tmp_path, echo):
    """A reload that changes `dpop.replay_entries` never re-opens a replay (a proof accepted
    before it is refused after it), and memory stays bounded whatever sizes the reloads go
    through: the slots do not name the size, so a new size reuses what exists."""
    from harness.oidc import DpopClient, OpenIdProvider
    op = OpenIdProvider(tmp_path).start()
    client = DpopClient()
    port = closed_port()
    lds = tmp_path / "lds.json"

    def write(version, entries):
        write_listener(lds, port, version, dpop_plugin(op, entries))

    write(0, 100_000)
    e = lds_envoy(tmp_path / "envoy", lds, {"api": echo.port, "op": op.port})
    try:
        key = client.key("ES256")
        token = op.token(dpop=(client, key))
        target = f"http://127.0.0.1:{port}/orders/r"

        def send(proof):
            return request(port, "/orders/r", [("authorization", f"DPoP {token}"), ("dpop", proof)]).status

        deadline = time.time() + 15
        first = client.proof(key, "GET", target, token=token)
        while True:
            try:
                status = send(first)
                break
            except OSError:
                assert time.time() < deadline
                time.sleep(0.2)
        assert status == 200
        seen = [first]

        def reload(version, entries):
            before = lds_successes(e)
            write(version, entries)
            t0 = time.time()
            while lds_successes(e) == before:
                assert time.time() - t0 < 20, f"reload {version} not applied"
                time.sleep(0.05)
            time.sleep(2.5)  # the old listener drained (--drain-time-s 1)

        reload(1, 110_000)
        for proof in seen:
            assert send(proof) == 401, "a proof accepted before the reload is a replay after it"
        second = client.proof(key, "GET", target, token=token)
        assert send(second) == 200 and send(second) == 401
        seen.append(second)
        before = e.memory_allocated()
        sizes = [120_000, 130_000, 140_000, 150_000]
        for version, entries in enumerate(sizes, start=2):
            reload(version, entries)
            for proof in seen:
                assert send(proof) == 401, (entries, "a replay after a reload")
            fresh_proof = client.proof(key, "GET", target, token=token)
            assert send(fresh_proof) == 200
            seen.append(fresh_proof)
        after = e.memory_allocated()
        grown = (after - before) / 2**20
        print(f"\nreplay store 110000 -> {sizes}: memory {before / 2**20:.1f} -> {after / 2**20:.1f} MiB "
              f"(+{grown:.1f} MiB; slots of every size kept apart would add {sum(sizes)} slots)")
        # The largest size's 40 000 more slots (and their share table), not 540 000.
        assert grown < 30, grown
    finally:
        e.stop()
        client.stop()
        op.stop()
