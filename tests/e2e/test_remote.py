"""A split token store shared by a fleet: two Envoy processes (different ports, same Redis
behind webdis, both started here), each with its own shared data as level 1 and Redis as
level 2 (`split.remote`, webdis request shapes)."""

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from harness.envoy import Envoy, base_config, bearer, forwarded_authorizations, request
from harness.redis import Redis
from harness.split import PUBLISH, SECRET, new_jwt, publish, revoke, split_jwt, store_key, token_request

LOCAL_TTL_S = 2


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    r = Redis(tmp_path_factory.mktemp("redis"))
    r.start_redis()
    r.start_webdis()
    yield r
    r.stop("webdis")
    r.stop("redis")


def fleet_config():
    return {"required_scopes": ["read"],
            "split": {"max_entries": 1000,
                      "publish": {"path": PUBLISH, "secret": SECRET},
                      "split_responses": {"paths": ["/oauth/token"]},
                      "remote": {"cluster": "webdis",
                                 "get_path": "/GET/split:{key}.txt",
                                 "put_path": "/SETEX/split:{key}/{ttl}",
                                 "delete_path": "/DEL/split:{key}",
                                 "delete_method": "GET",
                                 "timeout_ms": 500,
                                 "local_ttl_s": LOCAL_TTL_S}}}


def fallback_config():
    """The same store, and phantom tokens too: a remote miss falls back to introspection."""
    cfg = fleet_config()
    cfg["phantom"] = base_config()["phantom"]
    cfg["split"]["fallback_to_phantom"] = True
    return cfg


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, redis, echo, token_service):
    gateways = {}
    for name in ("a", "b"):
        e = Envoy(tmp_path_factory.mktemp(f"envoy-{name}"),
                  listeners={"main": (fleet_config(), (("/oauth/token", "token_service"), ("/", "api"))),
                             "fallback": {"plugin": fallback_config(), "vm_id": "fallback"}},
                  clusters={"api": echo.port, "token_service": token_service.port, "webdis": redis.http_port})
        e.start()
        gateways[name] = e
    yield gateways
    for e in gateways.values():
        e.stop()


def port(fleet, name):
    return fleet[name].ports["main"]


def test_published_on_one_gateway_works_on_the_other(fleet, redis):
    jwt = new_jwt()
    sig = split_jwt(jwt)[1]
    assert publish(port(fleet, "a"), jwt).status == 204
    # In Redis, under the documented key, for the token's remaining lifetime.
    assert redis.http(f"/GET/split:{urllib.parse.quote(store_key(sig), safe='')}.txt") == split_jwt(jwt)[0]
    ttl = json.loads(redis.http(f"/TTL/split:{urllib.parse.quote(store_key(sig), safe='')}"))["TTL"]
    assert 290 <= ttl <= 300
    before = fleet["b"].counters()
    r = request(port(fleet, "b"), "/orders", bearer(sig))
    assert r.status == 200 and forwarded_authorizations(r) == [f"Bearer {jwt}"]
    # Then from B's own store: one remote read.
    assert request(port(fleet, "b"), "/orders", bearer(sig)).status == 200
    after = fleet["b"].counters()
    assert after["remote_hit"] - before.get("remote_hit", 0) == 1
    assert after["split_hit"] - before.get("split_hit", 0) == 1


def test_revoked_on_one_gateway_is_refused_on_the_other_within_local_ttl(fleet):
    jwt = new_jwt()
    sig = split_jwt(jwt)[1]
    assert publish(port(fleet, "a"), jwt).status == 204
    assert request(port(fleet, "b"), "/x", bearer(sig)).status == 200  # now in B's own store
    assert revoke(port(fleet, "a"), jwt).status == 204
    assert request(port(fleet, "a"), "/x", bearer(sig)).status == 401
    t0 = time.time()
    while request(port(fleet, "b"), "/x", bearer(sig)).status == 200:
        assert time.time() - t0 < LOCAL_TTL_S + 1, "B still serves a revoked token past local_ttl_s"
        time.sleep(0.1)
    assert request(port(fleet, "b"), "/x", bearer(sig)).status == 401


def test_split_at_issuance_on_one_gateway_works_on_the_other(fleet):
    r = token_request(port(fleet, "a"))
    assert r.status == 200
    sig = r.json()["access_token"]
    assert sig.count(".") == 0
    r = request(port(fleet, "b"), "/orders", bearer(sig))
    assert r.status == 200
    jwt = forwarded_authorizations(r)[0][len("Bearer "):]
    assert jwt.endswith("." + sig)


def test_an_opaque_token_after_a_remote_miss_is_introspected_once(fleet, token_service):
    """With `fallback_to_phantom`, a token that is not in the store is introspected, and its
    answer cached: the next requests are phantom cache hits after the remote miss, not
    introspections again."""
    p = fleet["a"].ports["fallback"]
    token = f"notsplit{uuid.uuid4().hex}"
    for _ in range(5):
        assert request(p, "/api/x", bearer(token)).status == 200
    assert len(token_service.calls_for(token)) == 1


def test_unknown_tokens_are_401_after_a_remote_miss(fleet):
    before = fleet["b"].counters()
    r = request(port(fleet, "b"), "/x", bearer(uuid.uuid4().hex + uuid.uuid4().hex))
    assert r.status == 401 and r.json()["code"] == "invalid_token"
    assert fleet["b"].counters()["remote_miss"] - before.get("remote_miss", 0) == 1


def test_entries_expire_in_redis_at_the_tokens_expiry(fleet, redis):
    jwt = new_jwt(lifetime=3)
    sig = split_jwt(jwt)[1]
    assert publish(port(fleet, "a"), jwt).status == 204
    key = urllib.parse.quote(store_key(sig), safe="")
    assert redis.http(f"/GET/split:{key}.txt") == split_jwt(jwt)[0]
    time.sleep(4.2)
    with pytest.raises(urllib.error.HTTPError) as e:
        redis.http(f"/GET/split:{key}.txt")
    assert e.value.code == 404


@pytest.mark.parametrize("down", ["webdis", "redis"])
def test_store_down_level_one_hits_served_unknown_refused_then_recovery(fleet, redis, echo, down):
    """webdis down: connections refused. Redis down: webdis answers 503. Either way, B keeps
    serving what its own store holds, refuses the rest with 502, and recovers by itself."""
    warm = new_jwt()
    warm_sig = split_jwt(warm)[1]
    assert publish(port(fleet, "a"), warm).status == 204
    later = new_jwt()
    later_sig = split_jwt(later)[1]
    assert publish(port(fleet, "a"), later).status == 204
    assert request(port(fleet, "b"), "/x", bearer(warm_sig)).status == 200  # in B's own store
    redis.stop(down)
    try:
        before = fleet["b"].counters()
        assert request(port(fleet, "b"), "/x", bearer(warm_sig)).status == 200
        marker = uuid.uuid4().hex
        r = request(port(fleet, "b"), f"/{marker}", bearer(later_sig))
        assert r.status == 502 and r.json()["code"] == "store_unavailable"
        assert not [q for q in echo.requests if marker in q["path"]]
        after = fleet["b"].counters()
        assert after["remote_error"] - before.get("remote_error", 0) >= 1
        # Blamed on the store, not on the token service.
        assert after["denied_store_unavailable"] - before.get("denied_store_unavailable", 0) == 1
        assert after["token_service_error"] == before.get("token_service_error", 0)
        # Publishing while the store is down: refused, so the publisher retries.
        assert publish(port(fleet, "a"), new_jwt()).status == 502
    finally:
        if down == "webdis":
            redis.start_webdis()
        else:
            redis.start_redis()  # empty: nothing was persisted
    if down == "redis":
        # Redis came back empty: what is published now works everywhere again.
        later = new_jwt()
        later_sig = split_jwt(later)[1]
        deadline = time.time() + 5
        while publish(port(fleet, "a"), later).status != 204:
            assert time.time() < deadline, "publishing did not recover"
            time.sleep(0.2)
    deadline = time.time() + 5
    while request(port(fleet, "b"), "/x", bearer(later_sig)).status != 200:
        assert time.time() < deadline, "no recovery after the store returned"
        time.sleep(0.2)
