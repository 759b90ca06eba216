"""What the fleet tests share (tests/e2e/test_fleet.py, test_fleet_hostile.py): the filter
configurations of a gateway in a fleet on webdis, Redis started for a module, the revocation
endpoint, and the phantom cache's keys in Redis."""

from harness.envoy import base_config, request
from harness.redis import Redis
from harness.split import PUBLISH, SECRET

LOCAL_TTL_S = 2
BOUND_MS = 2000
REVOKE_SECRET = "e2e-fleet-revocation-secret"
ORIGIN = "https://api.example.com"
ROUTES = (("/oauth/revoke", "token_service"), ("/", "api"))


def fleet_config(cluster="webdis", dpop=None, bound_ms=BOUND_MS, **fleet):
    """Phantom tokens, a fleet on `cluster`, revocations (the endpoint and the observed path)."""
    cfg = base_config()
    if dpop is not None:
        cfg["dpop"] = dpop
    cfg["fleet"] = {"cluster": cluster, "timeout_ms": 300, "local_ttl_s": LOCAL_TTL_S,
                    "revocation_bound_ms": bound_ms, **fleet}
    cfg["revocation"] = {"path": "/_revoke", "secret": REVOKE_SECRET, "observe_paths": ["/oauth/revoke"]}
    return cfg


def split_config(**fleet):
    """Split tokens, published and split from token responses, their level 2 in the fleet."""
    return {"required_scopes": ["read"],
            "split": {"max_entries": 1000, "publish": {"path": PUBLISH, "secret": SECRET},
                      "split_responses": {"paths": ["/oauth/token"]}},
            "fleet": {"cluster": "webdis", "timeout_ms": 300, "local_ttl_s": LOCAL_TTL_S, **fleet}}


def redis_and_webdis(workdir):
    """A module fixture's body: Redis and webdis, started, then stopped."""
    r = Redis(workdir)
    r.start_redis()
    r.start_webdis()
    yield r
    r.stop("webdis")
    r.stop("redis")


def revoke(port, form):
    return request(port, "/_revoke", [("content-type", "application/x-www-form-urlencoded"),
                                      ("authorization", f"Bearer {REVOKE_SECRET}")],
                   method="POST", body=form.encode())


def phantom_keys(redis):
    return {k for k in redis.cli("--scan", "--pattern", "tf:p:*").splitlines() if k}
