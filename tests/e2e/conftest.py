"""End-to-end fixtures: the real filter (.wasm) in a real Envoy, a stub token service and an
echo API, all on loopback (see `tests/harness`). On a failing test, Envoy's log tail and the
filter's counters are printed."""

import pytest

from harness.envoy import Envoy, base_config, closed_port
from harness.services import EchoApi, TokenService


@pytest.fixture(scope="session")
def token_service():
    ts = TokenService().start()
    yield ts
    ts.stop()


@pytest.fixture(scope="session")
def echo():
    api = EchoApi().start()
    yield api
    api.stop()


@pytest.fixture(scope="session")
def envoy(tmp_path_factory, token_service, echo):
    small = base_config()
    small["required_scopes"] = []
    small["cache"]["max_entries"] = 50
    slow_ok = base_config(timeout_ms=5000)
    e = Envoy(
        tmp_path_factory.mktemp("envoy"),
        listeners={
            "main": base_config(),
            "small": small,
            "slow_ok": slow_ok,
            "down": base_config(cluster="token_down"),
            "nocluster": base_config(cluster="no_such_cluster"),
        },
        clusters={"api": echo.port, "token_service": token_service.port, "token_down": closed_port()},
    )
    e.start()
    yield e
    e.stop()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        for e in [v for v in item.funcargs.values() if isinstance(v, Envoy)]:
            try:
                counters = e.counters()
            except OSError as err:
                counters = f"(admin unreachable: {err})"
            rep.sections.append((f"Envoy log tail ({e.workdir.name})", e.log_tail()))
            rep.sections.append((f"filter counters ({e.workdir.name})", str(counters)))
