"""Token service faults and concurrency, end to end: the token service stops and comes back on
the same port, hangs (accepts, never answers), resets in the middle of a response, answers
slowly, answers 503 under load. Every request must be answered, within `timeout_ms` plus a
margin, with the documented status, and the filter must recover by itself when the token
service does (no Envoy restart). Then the publish API is hammered from several connections while
lookups run: no torn entry, no lost update."""

import json
import random
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.envoy import Envoy, base_config, bearer, closed_port, fresh, request
from harness.services import TokenService
from harness.split import PUBLISH, SECRET, new_jwt, publish, split_jwt

TIMEOUT_MS = 500
MARGIN_S = 1.0


class Restartable:
    """A token service that can be stopped and started again on the same port."""

    def __init__(self):
        self.port = closed_port()
        self.ts = None

    def start(self):
        self.ts = TokenService(port=self.port).start()
        return self

    def stop(self):
        self.ts.stop()


@pytest.fixture(scope="module")
def ts():
    r = Restartable().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def hang():
    """Listens and never accepts: connections complete in the kernel, no byte ever comes back."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1024)
    yield s.getsockname()[1]
    s.close()


@pytest.fixture(scope="module")
def fenv(tmp_path_factory, ts, hang, echo):
    slow_ok = base_config(timeout_ms=5000)
    e = Envoy(tmp_path_factory.mktemp("envoy-faults"),
              listeners={"main": base_config(timeout_ms=TIMEOUT_MS), "hang": base_config(cluster="hang"),
                         "slow_ok": slow_ok},
              clusters={"api": echo.port, "token_service": ts.port, "hang": hang})
    e.start()
    yield e
    e.stop()


def timed(port, token, path="/f"):
    t0 = time.monotonic()
    try:
        status = request(port, path, bearer(token), timeout=10).status
    except OSError as e:
        status = f"no answer ({e.__class__.__name__})"
    return status, time.monotonic() - t0


def burst(port, tokens, workers=10):
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda t: timed(port, t), tokens))


def assert_all(results, statuses, limit_s):
    got = {s for s, _ in results}
    assert got <= set(statuses), f"statuses {got}, expected only {statuses}"
    slowest = max(d for _, d in results)
    assert slowest < limit_s, f"a request took {slowest:.2f}s (limit {limit_s}s)"


def test_token_service_down_then_back_recovers_without_restart(fenv, ts):
    port = fenv.ports["main"]
    assert_all(burst(port, [fresh() for _ in range(10)]), {200}, TIMEOUT_MS / 1000 + MARGIN_S)
    ts.stop()
    try:
        down = burst(port, [fresh() for _ in range(40)])
        assert_all(down, {502}, TIMEOUT_MS / 1000 + MARGIN_S)
    finally:
        ts.start()
    deadline = time.time() + 5
    while timed(port, fresh())[0] != 200:
        assert time.time() < deadline, "no recovery within 5 s of the token service's return"
        time.sleep(0.1)
    assert_all(burst(port, [fresh() for _ in range(40)]), {200}, TIMEOUT_MS / 1000 + MARGIN_S)


def test_a_hanging_token_service_times_out_every_request(fenv):
    results = burst(fenv.ports["hang"], [fresh() for _ in range(20)], workers=20)
    assert_all(results, {502}, TIMEOUT_MS / 1000 + MARGIN_S)
    assert min(d for _, d in results) >= TIMEOUT_MS / 1000 * 0.9, "answered before the timeout?"


def test_reset_in_the_middle_of_a_response(fenv, ts, echo):
    results = burst(fenv.ports["main"], [fresh("midreset") for _ in range(20)])
    assert_all(results, {502}, TIMEOUT_MS / 1000 + MARGIN_S)
    assert_all(burst(fenv.ports["main"], [fresh() for _ in range(5)]), {200}, TIMEOUT_MS / 1000 + MARGIN_S)


def test_slow_answers_within_the_timeout_pass(fenv):
    # "slow" answers after 3 s; the slow_ok listener waits up to 5 s.
    results = burst(fenv.ports["slow_ok"], [fresh("slow") for _ in range(10)], workers=10)
    assert_all(results, {200}, 5 + MARGIN_S)


def test_503_under_load_then_normal_service(fenv, ts):
    results = burst(fenv.ports["main"], [fresh("e503") for _ in range(200)], workers=16)
    assert_all(results, {503}, TIMEOUT_MS / 1000 + MARGIN_S)
    assert_all(burst(fenv.ports["main"], [fresh() for _ in range(20)]), {200}, TIMEOUT_MS / 1000 + MARGIN_S)


def test_many_concurrent_requests_with_one_uncached_slow_token_make_one_call(fenv, ts):
    token = fresh("slow")
    results = burst(fenv.ports["slow_ok"], [token] * 50, workers=50)
    assert_all(results, {200}, 5 + MARGIN_S)
    assert len(ts.ts.calls_for(token)) == 1


# --- publish API under concurrent writes and reads --------------------------------------------


@pytest.fixture(scope="module")
def penv(tmp_path_factory, echo):
    split = {"required_scopes": [], "split": {"max_entries": 4096, "publish": {"path": PUBLISH, "secret": SECRET}}}
    e = Envoy(tmp_path_factory.mktemp("envoy-publish"), listeners={"split": split},
              clusters={"api": echo.port}, concurrency=2)
    e.start()
    yield e
    e.stop()


def versions(sig_count=16):
    """For each signature, three complete JWTs that share it: versions A, B, then C."""
    out = []
    for _ in range(sig_count):
        base = new_jwt()
        _, sig = split_jwt(base)
        vs = {}
        for v in "ABC":
            hp, _ = split_jwt(new_jwt(version=v, pad=v * random.randint(1, 400)))
            vs[v] = f"{hp}.{sig}"
        out.append((sig, vs))
    return out


def test_publish_hammered_while_lookups_run(penv, echo):
    port = penv.ports["split"]
    entries = versions()
    for sig, vs in entries:
        assert publish(port, vs["A"]).status == 204
    stop = threading.Event()
    errors = []
    lookups = [0]

    def writer():
        while not stop.is_set():
            sig, vs = random.choice(entries)
            status = publish(port, vs[random.choice("AB")]).status
            if status not in (204, 503):  # 503 store_busy: a lost race, retried by the publisher
                errors.append(f"publish answered {status}")

    def reader():
        while not stop.is_set():
            sig, vs = random.choice(entries)
            marker = uuid.uuid4().hex
            r = request(port, f"/{marker}", bearer(sig))
            lookups[0] += 1
            if r.status != 200:
                errors.append(f"lookup answered {r.status}")
                continue
            seen = r.json()
            auth = [v for k, v in seen["headers"] if k == "authorization"]
            if auth != [f"Bearer {vs['A']}"] and auth != [f"Bearer {vs['B']}"]:
                errors.append(f"torn or foreign entry: {auth[0][:40] if auth else None}...")

    threads = [threading.Thread(target=writer) for _ in range(4)] + [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(6)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert errors == [], errors[:5]
    assert lookups[0] > 100
    # No lost update: after the last write of each entry (version C), every lookup on every
    # worker returns it.
    for sig, vs in entries:
        for _ in range(5):
            status = publish(port, vs["C"]).status
            if status == 204:
                break
        assert status == 204
    for sig, vs in entries:
        for _ in range(4):
            r = request(port, "/after", bearer(sig))
            assert r.status == 200
            assert [v for k, v in r.json()["headers"] if k == "authorization"] == [f"Bearer {vs['C']}"]
    assert json.loads(penv.admin_get("/memory"))["allocated"]
