#!/usr/bin/env python3
"""Benchmark: the filter against a plain Envoy, a do-nothing wasm filter, hand-written Lua
phantom filters and ext_authz, all in one gateway Envoy, measured in one run (run by
scripts/bench.sh, which builds and installs what it needs).

The gateway Envoy runs with --concurrency 1 pinned to core 0; wrk and a backend Envoy (the API,
the token service's introspection, ext_authz and JWKS endpoints, all direct responses) share
core 1. Every scenario has its own listener; each round runs every scenario once, in turn, so
machine noise hits all of them alike. Ratios are to passthrough in the same round; the table
shows their median over rounds. Loopback only.
"""

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from harness.envoy import WASM as FILTER_WASM  # dist/envoy_token_filter.wasm, or TOKEN_FILTER_WASM
from harness.envoy import Envoy, cluster, listener, plugin_filter
from harness.services import Signer, b64url
from harness.tls import Pki

NOOP_WASM = ROOT / "bench" / "noop-filter" / "target" / "wasm32-wasip1" / "release" / "noop_filter.wasm"
MINIMAL_WASM = (ROOT / "bench" / "minimal-filter" / "target" / "wasm32-wasip1" / "release"
                / "minimal_filter.wasm")
HOSTCALL_WASM = (ROOT / "bench" / "hostcall-filter" / "target" / "wasm32-wasip1" / "release"
                 / "hostcall_filter.wasm")
SECRET = "bench-publisher-secret"
HIT_TOKEN = "bench-opaque-hit-token"
QUIET = ("--log-level", "error")

# Lua phantom filters, as a user writes them by hand. `{cache_lookup}` and `{cache_store}` are
# empty for the filter without a cache.
LUA_TEMPLATE = """
{cache_decl}
function envoy_on_request(h)
  local auth = h:headers():get("authorization")
  if auth == nil or string.sub(auth, 1, 7) ~= "Bearer " then
    h:respond({{[":status"] = "401"}}, "")
    return
  end
  local token = string.sub(auth, 8)
{cache_lookup}
  local headers, body = h:httpCall("token_service", {{
    [":method"] = "POST", [":path"] = "/introspect", [":authority"] = "token_service",
    ["content-type"] = "application/x-www-form-urlencoded", ["accept"] = "application/jwt",
    ["authorization"] = "Basic Z2F0ZXdheTpzZWNyZXQ="}}, "token=" .. token, 2000)
  if headers[":status"] ~= "200" or body == nil then
    h:respond({{[":status"] = "401"}}, "")
    return
  end
{cache_store}
  h:headers():replace("authorization", "Bearer " .. body)
end
"""

# One introspection call per request.
LUA_NO_CACHE = LUA_TEMPLATE.format(cache_decl="", cache_lookup="", cache_store="")

# The same with a per-worker cache (a Lua table per worker, 60 s per entry): the fairest
# hand-written alternative on the cache-hit path.
LUA_CACHE = LUA_TEMPLATE.format(
    cache_decl="local cache = {}",
    cache_lookup="""  local now = os.time()
  local hit = cache[token]
  if hit ~= nil and hit.until_s > now then
    h:headers():replace("authorization", "Bearer " .. hit.jwt)
    return
  end""",
    cache_store="  cache[token] = {jwt = body, until_s = now + 60}",
)

# wrk script: a token never seen before on every request.
WRK_MISS = """
counter = 0
prefix = "miss-" .. tostring(os.time()) .. "-" .. tostring(math.random(1000000)) .. "-"
request = function()
  counter = counter + 1
  return wrk.format("GET", "/bench", {["Authorization"] = "Bearer " .. prefix .. counter})
end
"""


# wrk script for phantom_fleet_hit: FLEET_TOKENS tokens in turn, each sealed in the fleet
# beforehand. At up to FLEET_TOKENS requests/s, a token comes back after the gateway's own copy
# (fleet.local_ttl_s: 1 s) is gone: every request reads the fleet.
FLEET_TOKENS = 30000
WRK_FLEET = """
counter = math.random(FLEET_TOKENS)
request = function()
  counter = counter + 1
  return wrk.format("GET", "/bench", {["Authorization"] = "Bearer fleet-" .. (counter % FLEET_TOKENS)})
end
""".replace("FLEET_TOKENS", str(FLEET_TOKENS))


def fleet_cfg():
    cfg = phantom_cfg(client_id="gateway-fleet", max_entries=10000)
    cfg["fleet"] = {"cluster": "fleet", "timeout_ms": 1000, "local_ttl_s": 1}
    return cfg


# wrk script: a credential never used before on every request (a DPoP proof, a JWT), a line
# each of a file made just before the run (`OneUse.write`), sent in HEADERS (`line`: the
# credential).
WRK_ONE_USE = """
local lines = {}
local i = 0
init = function(args)
  for line in io.lines(args[1]) do lines[#lines + 1] = line end
end
request = function()
  i = i + 1
  local line = lines[((i - 1) % #lines) + 1]
  return wrk.format("GET", "/bench", HEADERS)
end
"""
# A DPoP proof for the token TOKEN; a JWT as a bearer token.
WRK_PROOFS = WRK_ONE_USE.replace("HEADERS", '{["Authorization"] = "DPoP TOKEN", ["DPoP"] = line}')
WRK_JWTS = WRK_ONE_USE.replace("HEADERS", '{["Authorization"] = "Bearer " .. line}')

# DPoP scenarios: the proof's algorithm. Their `htu` is DPOP_ORIGIN + /bench (`dpop.origin`).
DPOP_SCENARIOS = {"dpop_hit_es256": "ES256", "dpop_hit_eddsa": "EdDSA"}
DPOP_ORIGIN = "http://bench.example.com"
# Scenarios behind TLS with a client certificate: wrk cannot present one, so a client Envoy (on
# wrk's core) originates the TLS, with the certificate, to the gateway's listener.
TLS_SCENARIOS = {"tls_passthrough", "mtls_hit"}


# jwt_authn scenarios: Envoy's own filter verifying a new JWT (`Jwts`) of this algorithm every
# request. With DPOP_SCENARIOS, the yardstick of issue 32's targets (`print_dpop_targets`).
JWT_AUTHN_SCENARIOS = {"jwt_authn_es256": "ES256", "jwt_authn_eddsa": "EdDSA"}
JWT_ISSUER = "https://login.example.com"
JWT_AUDIENCE = "api.example.com"


class OneUse:
    """JWTs of one key, each with its own `jti`, written a line each to a file for WRK_ONE_USE:
    `claims` gives the rest of a JWT's claims."""

    def __init__(self, alg, path, header):
        self.signer = Signer(alg)
        self.path = path
        self.header = b64url(json.dumps(header(self.signer), separators=(",", ":")).encode())
        self.serial = 0

    def claims(self, now):
        raise NotImplementedError

    def write(self, n):
        """`n` new JWTs, issued now; returns the file's path."""
        now = int(time.time())
        lines = []
        for _ in range(n):
            self.serial += 1
            claims = {**self.claims(now), "jti": f"bench-{self.serial}"}
            signing_input = f"{self.header}.{b64url(json.dumps(claims, separators=(',', ':')).encode())}"
            lines.append(f"{signing_input}.{b64url(self.signer.sign(signing_input.encode()))}")
        self.path.write_text("\n".join(lines) + "\n")
        return str(self.path)


class Proofs(OneUse):
    """DPoP proofs (RFC 9449) for GET DPOP_ORIGIN/bench with HIT_TOKEN."""

    def __init__(self, alg, path):
        super().__init__(alg, path, lambda s: {"typ": "dpop+jwt", "alg": alg, "jwk": self.public_jwk(s)})
        jwk = self.public_jwk(self.signer)
        required = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}[jwk["kty"]]
        canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
        self.jkt = b64url(hashlib.sha256(canonical.encode()).digest())
        self.ath = b64url(hashlib.sha256(HIT_TOKEN.encode()).digest())

    @staticmethod
    def public_jwk(signer):
        return {k: v for k, v in signer.jwk().items() if k not in ("kid", "use", "alg")}

    def claims(self, now):
        return {"htm": "GET", "htu": f"{DPOP_ORIGIN}/bench", "iat": now, "ath": self.ath}


class Jwts(OneUse):
    """Access tokens for the jwt_authn scenarios' provider, valid for an hour (far past a run)."""

    def __init__(self, alg, path):
        super().__init__(alg, path, lambda s: {"alg": alg, "typ": "JWT", "kid": s.kid})

    def claims(self, now):
        return {"iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "sub": "bench", "scope": "read write",
                "iat": now, "exp": now + 3600}

    def jwks(self):
        return json.dumps({"keys": [self.signer.jwk()]})


def jwt_authn_filter(jwks):
    """Envoy's own JWT filter: one provider with the inline JWK Set `jwks`, required on every path.
    No `jwt_cache_config`: without it, the provider caches no JWT (jwt_cache.cc; each JWT is used
    once anyway). `forward: true` keeps the JWT in the request, as passthrough's upstream sees it."""
    return {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"bench": {"issuer": JWT_ISSUER, "audiences": [JWT_AUDIENCE],
                                "local_jwks": {"inline_string": jwks}, "forward": True}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}]}}


def lua_filter(code):
    return {"name": "envoy.filters.http.lua", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
        "default_source_code": {"inline_string": code}}}


def wasm_filter(name, path, configuration=""):
    return {"name": "envoy.filters.http.wasm", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {"name": name, "root_id": name, "vm_config": {
            "vm_id": name, "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": str(path)}}},
            "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                              "value": configuration}}}}


def noop_filter():
    return wasm_filter("noop", NOOP_WASM)


def ext_authz_filter():
    return {"name": "envoy.filters.http.ext_authz", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        "transport_api_version": "V3",
        "http_service": {
            "server_uri": {"uri": "http://authz", "cluster": "authz", "timeout": "2s"},
            "authorization_response": {"allowed_upstream_headers": {"patterns": [{"exact": "authorization"}]}},
        }}}


def direct(name, status, body, headers=()):
    """A backend listener answering every request with a fixed response. The buffer filter reads
    the whole request first: an answer sent before the request body is read makes Envoy close
    the connection, so every introspection would open a new one (a real token service reads
    it)."""
    buffer = {"name": "envoy.filters.http.buffer", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
        "max_request_bytes": 65536}}
    lst = listener(name, [buffer])
    hcm = lst["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["route_config"]["virtual_hosts"][0]["routes"] = [{
        "match": {"prefix": "/"},
        "direct_response": {"status": status, "body": {"inline_string": body}},
        "response_headers_to_add": [{"header": {"key": k, "value": v}} for k, v in headers],
    }]
    return lst


def phantom_cfg(client_id="gateway", verify=None, max_entries=100000):
    cfg = {"phantom": {"cluster": "token_service", "path": "/introspect", "client_id": client_id,
                       "client_secret": "secret", "timeout_ms": 2000},
           "cache": {"max_entries": max_entries, "max_ttl_s": 3600}}
    if verify:
        cfg["verify"] = verify
    return cfg


def policies_cfg():
    """phantom_hit's configuration (its own cache namespace) with 100 policies, of which only
    the last matches the benchmark's requests, and two claims copied into headers."""
    cfg = phantom_cfg(client_id="gateway-policies")
    cfg["policies"] = [{"name": f"p{i}", "match": {"path_prefix": f"/p{i}/", "methods": ["POST"]},
                        "required_scopes": ["write"]} for i in range(99)]
    cfg["policies"].append({"name": "last", "match": {"path_prefix": "/"}, "required_scopes": ["read"]})
    cfg["claims_to_headers"] = [{"claim": "sub", "header": "x-user-id"},
                                {"claim": "scope", "header": "x-scopes"}]
    return cfg


def split_cfg(verify=None, remote=False):
    cfg = {"split": {"max_entries": 10000, "publish": {"path": "/_split-token", "secret": SECRET}}}
    if verify:
        cfg["verify"] = verify
    if remote:
        # The level-2 store: the backend answers every read with the bench JWT's header.payload
        # (so any signature is found there) and every write with 200, at loopback speed: what is
        # measured is the gateway's own cost of a level-2 read, not a key-value server's.
        cfg["split"]["remote"] = {"cluster": "kv", "get_path": "/GET/split:{key}.txt",
                                  "put_path": "/SETEX/split:{key}/{ttl}", "delete_path": "/DEL/split:{key}",
                                  "delete_method": "GET", "timeout_ms": 2000, "local_ttl_s": 3600}
    return cfg


SCENARIOS = [
    # name, description
    ("passthrough", "Envoy, no auth filter (the limit)"),
    ("wasm_noop", "a proxy-wasm filter that does nothing (the floor)"),
    ("wasm_floor", "reference, the floor of a hit: read the request headers, replace Authorization with a constant"),
    ("wasm_minimal", "reference: read Authorization, SHA-256, one shared-data read, replace the header"),
    ("phantom_hit", "phantom token, cache hit"),
    ("phantom_hit_policies", "phantom_hit with 100 policies (the last matches) and 2 claims_to_headers"),
    ("split_hit", "split token, store hit"),
    ("phantom_hit_verify", "phantom token, cache hit, `verify` on (ES256)"),
    ("exchange_hit", "phantom_hit with token exchange (top-level `exchange`): both caches hit"),
    ("dpop_hit_es256", "phantom token bound to a key (cnf.jkt), cache hit, a new ES256 DPoP proof every request"),
    ("dpop_hit_eddsa", "dpop_hit_es256 with EdDSA proofs"),
    ("jwt_authn_es256", "Envoy's native jwt_authn filter, inline JWKS, no JWT cache, a new ES256 JWT every "
                        "request (`forward: true`: the upstream request is passthrough's)"),
    ("jwt_authn_eddsa", "jwt_authn_es256 with EdDSA (Ed25519) JWTs"),
    ("tls_passthrough", "Envoy over TLS with a client certificate, no auth filter (mtls_hit's baseline)"),
    ("mtls_hit", "over TLS with a client certificate: phantom token bound to it (cnf x5t#S256), cache hit"),
    ("split_hit_verify", "split token, store hit, `verify` on (ES256)"),
    ("split_remote_l1_hit", "split token with `split.remote`, hit in the gateway's own store (level 1)"),
    ("split_remote_l2_hit", "split token with `split.remote`, a new signature every request: level-2 read"),
    ("lua_cache", "Lua phantom filter with a per-worker cache, hit"),
    ("phantom_miss", "phantom token, a new token every request"),
    ("phantom_fleet_hit", "phantom token with `fleet`: a miss of the gateway's own cache, a hit in the fleet "
                          "(Redis behind webdis)"),
    ("wasm_minimal_call", "reference: read Authorization, one call out, replace the header"),
    ("wasm_minimal_call_cache", "wasm_minimal_call, plus a shared-data read before the call and the "
                                "answer's headers read and its JWT written to shared data"),
    ("lua_no_cache", "Lua phantom filter, no cache (a call per request)"),
    ("ext_authz", "ext_authz to the same token service (a call per request)"),
]


# --hostcalls: what one host call costs. Each scenario makes one kind of call this many times per
# request (bench/hostcall-filter); its CPU per request over hostcall_floor's, divided by this, is
# the price of one call.
CALLS_PER_REQUEST = 20
HOSTCALLS = [
    # name, configuration, description
    ("hostcall_floor", "none 0", "a wasm filter exporting only the request-headers callback"),
    ("hostcall_value", "value", "read `Authorization` (present)"),
    ("hostcall_missing", "missing", "read a header the request does not have"),
    ("hostcall_pairs", "pairs", "read the whole request header map"),
    ("hostcall_clock", "clock", "read the clock"),
    ("hostcall_set", "set", "replace `Authorization` (340 bytes)"),
    ("hostcall_route_name", "route_name", "read the property `xds.route_name`"),
    ("hostcall_route_policy", "route_policy", "read the route metadata policy name (absent)"),
    ("hostcall_shared", "shared", "read a shared-data key that holds nothing"),
]


def cpu_s(pid):
    """User + system CPU seconds used so far by process `pid` (all threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Scenarios that call the token service on every request get a token never seen before on
# every request, all from the same wrk script, so the load generator costs the same for each.
FRESH_TOKENS = {"phantom_miss", "phantom_miss_b", "lua_no_cache", "ext_authz", "wasm_minimal_call",
                "wasm_minimal_call_cache",
                "split_remote_l2_hit"}


def wrk(port, conns, duration, header=None, script=None, pid=None, script_args=()):
    cpu0 = cpu_s(pid) if pid else 0.0
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency"]
    if header:
        cmd += ["-H", header]
    if script:
        cmd += ["-s", script]
    cmd.append(f"http://127.0.0.1:{port}/bench")
    if script_args:
        cmd += ["--", *script_args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        lat[pct] = float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)] if m else float("nan")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(x) for x in sock.groups())
    total = re.search(r"(\d+) requests in", out)
    cpu_us = ((cpu_s(pid) - cpu0) * 1e6 / int(total.group(1))) if pid and total else float("nan")
    return {"rps": rps, "p50": lat["50"], "p99": lat["99"], "errors": errors, "cpu_us": cpu_us}


def rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def post(url, body, headers):
    req = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=4, help="seconds per scenario and round")
    ap.add_argument("--connections", default="16,1")
    ap.add_argument("--only", default="", help="comma-separated scenario names (passthrough always runs)")
    ap.add_argument("--compare-wasm", default="", metavar="PATH",
                    help="also run phantom_hit, split_hit and phantom_miss with another build of the "
                         "filter (A/B in one run: scenarios *_b)")
    ap.add_argument("--with-revocation", action="store_true",
                    help="phantom_hit, split_hit and phantom_miss (not their *_b) carry a `revocation` "
                         "block: with --compare-wasm, the A/B of revocation's cost on hits")
    ap.add_argument("--hostcalls", action="store_true",
                    help="instead of the scenarios: price single proxy-wasm host calls (bench/hostcall-filter), "
                         "at 16 connections")
    ap.add_argument("--profile", default="", metavar="SCENARIO",
                    help="instead of the table: load SCENARIO at 16 connections under `perf record` "
                         "(cpu-clock) and print where the gateway Envoy spends its time")
    args = ap.parse_args()
    conns = [int(c) for c in args.connections.split(",")]
    global COMPARE_WASM, WITH_REVOCATION
    COMPARE_WASM = args.compare_wasm
    WITH_REVOCATION = args.with_revocation
    if COMPARE_WASM:
        SCENARIOS.extend([("phantom_hit_b", f"phantom_hit with {COMPARE_WASM}"),
                          ("split_hit_b", f"split_hit with {COMPARE_WASM}"),
                          ("phantom_miss_b", f"phantom_miss with {COMPARE_WASM}")])
        for name, alg in list(DPOP_SCENARIOS.items()):
            SCENARIOS.append((f"{name}_b", f"{name} with {COMPARE_WASM}"))
            DPOP_SCENARIOS[f"{name}_b"] = alg
    # `--only x` with `--compare-wasm` runs `x_b` too: an A/B is the point of giving a build.
    only = set(args.only.split(",")) if args.only else set()
    only |= {f"{name}_b" for name in only}
    scenarios = [s for s in SCENARIOS if not only or s[0] == "passthrough" or s[0] in only]
    if args.hostcalls:
        conns = [16]
        scenarios = [s for s in SCENARIOS if s[0] in ("passthrough", "wasm_noop")]
        scenarios += [(name, f"{desc}{'' if cfg.startswith('none') else f', {CALLS_PER_REQUEST} times'}")
                      for name, cfg, desc in HOSTCALLS
                      if not only or name in only or name == "hostcall_floor"]

    signer = Signer("ES256", kid="bench-1")
    now = int(time.time())
    jwt = signer.mint({"iss": "https://login.example.com", "aud": "api.example.com", "sub": "bench",
                       "scope": "read write", "iat": now, "exp": now + 7200})
    jwks = json.dumps({"keys": [signer.jwk()]})
    verify = {"issuer": "https://login.example.com", "audiences": ["api.example.com"],
              "algorithms": ["ES256"], "jwks": {"cluster": "jwks", "path": "/jwks"}}

    work = Path(tempfile.mkdtemp(prefix="bench-"))
    miss_script = work / "miss.lua"
    miss_script.write_text(WRK_MISS)
    fleet_script = work / "fleet.lua"
    fleet_script.write_text(WRK_FLEET)
    fleet = "phantom_fleet_hit" in {n for n, _ in scenarios}
    redis = None
    if fleet:
        from harness.redis import Redis
        (work / "redis").mkdir()
        redis = Redis(work / "redis")
        redis.start_redis()
        redis.start_webdis()
        for proc in redis.procs.values():
            subprocess.run(["taskset", "-a", "-p", "-c", "1", str(proc.pid)], capture_output=True, check=True)
    proofs_script = work / "proofs.lua"
    proofs_script.write_text(WRK_PROOFS.replace("TOKEN", HIT_TOKEN))
    jwts_script = work / "jwts.lua"
    jwts_script.write_text(WRK_JWTS)
    # Proofs live max_age_s: long enough for one wrk run after they are made.
    global DPOP_MAX_AGE_S
    DPOP_MAX_AGE_S = args.duration + 5
    proofs = {name: Proofs(alg, work / f"{name}.proofs") for name, alg in DPOP_SCENARIOS.items()}
    jwts = {name: Jwts(alg, work / f"{name}.jwts") for name, alg in JWT_AUTHN_SCENARIOS.items()}
    # Scenarios sending a credential never used before on every request: (its maker, wrk script).
    one_use = {**{n: (p, proofs_script) for n, p in proofs.items()},
               **{n: (j, jwts_script) for n, j in jwts.items()}}
    pki = Pki(work / "pki")
    client_cert = pki.issue("bench-client")
    # The bound tokens the token service answers for the proof scenarios.
    bound = {name: signer.mint({"iss": "https://login.example.com", "aud": "api.example.com", "sub": "bench",
                                "scope": "read write", "iat": now, "exp": now + 7200, "cnf": cnf})
             for name, cnf in [*((n, {"jkt": p.jkt}) for n, p in proofs.items()),
                               ("mtls_hit", {"x5t#S256": b64url(bytes.fromhex(client_cert["sha256"]))})]}

    backend = Envoy(work / "backend", listeners={}, clusters={}, log_args=QUIET)
    backend.config["static_resources"]["listeners"] = [
        direct("api", 200, "ok\n", [("content-type", "text/plain")]),
        direct("introspect", 200, jwt, [("content-type", "application/jwt")]),
        direct("authz", 200, "", [("authorization", f"Bearer {jwt}")]),
        direct("jwks", 200, jwks, [("content-type", "application/json")]),
        direct("kv", 200, jwt.rsplit(".", 1)[0], [("content-type", "text/plain")]),
        *(direct(f"ts_{name}", 200, token, [("content-type", "application/jwt")])
          for name, token in bound.items()),
        direct("exchange", 200, json.dumps({
            "access_token": signer.mint({"iss": "https://login.example.com", "aud": "bench-api", "sub": "bench",
                                         "scope": "read", "iat": now, "exp": now + 7200}),
            "issued_token_type": "urn:ietf:params:oauth:token-type:jwt", "token_type": "N_A",
            "expires_in": 7200}), [("content-type", "application/json")]),
    ]
    backend.start()
    subprocess.run(["taskset", "-a", "-p", "-c", "1", str(backend.proc.pid)], capture_output=True, check=True)
    ts_port = backend.ports["introspect"]

    gw = Envoy(work / "gateway", listeners={}, clusters={}, log_args=QUIET)
    gw.config["static_resources"]["clusters"] = [
        cluster("api", backend.ports["api"]),
        cluster("token_service", ts_port),
        cluster("authz", backend.ports["authz"]),
        cluster("jwks", backend.ports["jwks"]),
        cluster("kv", backend.ports["kv"]),
        *(cluster(f"ts_{name}", backend.ports[f"ts_{name}"]) for name in bound),
        cluster("exchange", backend.ports["exchange"]),
        *([cluster("fleet", redis.http_port)] if redis else []),
    ]
    gw.config["static_resources"]["listeners"] = [
        listener(name, filters_for(name, verify, jwks, jwts),
                 transport_socket=pki.downstream_tls() if name in TLS_SCENARIOS else None)
        for name in [n for n, _ in scenarios] + (["fleet_seed"] if fleet else [])]
    gw.start()
    subprocess.run(["taskset", "-a", "-p", "-c", "0", str(gw.proc.pid)], capture_output=True, check=True)
    tls_client = start_tls_client(work, gw, pki, client_cert, [n for n, _ in scenarios if n in TLS_SCENARIOS])
    ports = dict(gw.ports)
    if tls_client:
        ports.update(tls_client.ports)

    def load(name, conns, duration, pid=None):
        """One wrk run on scenario `name`, with the script and header it needs."""
        script_args = ()
        if name in one_use:
            # A proof (a JWT) per request, never one used before: made for this run.
            last = results.get((name, conns), [{"rps": 10000}])[-1]["rps"]
            script_args = (one_use[name][0].write(int(max(last, 1000) * duration * 1.5) + 1000),)
        script = (str(one_use[name][1]) if name in one_use else
                  str(fleet_script) if name == "phantom_fleet_hit" else
                  str(miss_script) if name in FRESH_TOKENS else None)
        return wrk(ports[name], conns, duration, header=None if name in one_use else headers.get(name),
                   script=script, pid=pid, script_args=script_args)

    results = {}  # (name, conns) -> list of per-round dicts
    rss_start = rss_kb(gw.proc.pid)
    try:
        # Warm up: the hit token into the caches, a split token published.
        hp, sig = jwt.rsplit(".", 1)
        key = base64.b64encode(hashlib.sha256(sig.encode()).digest()).decode()
        body = json.dumps({"signature_hash": key, "header_payload": hp, "expires_at": now + 7200})
        for name in ("split_hit", "split_hit_verify", "split_hit_b", "split_remote_l1_hit"):
            if name in gw.ports:
                post(f"http://127.0.0.1:{gw.ports[name]}/_split-token", body,
                     {"authorization": f"Bearer {SECRET}", "content-type": "application/json"})
        if fleet:
            seed_fleet(gw.ports["fleet_seed"], redis)
        time.sleep(1)  # the first JWKS fetch
        headers = {
            "split_hit": f"Authorization: Bearer {sig}",
            "split_hit_verify": f"Authorization: Bearer {sig}",
            "split_hit_b": f"Authorization: Bearer {sig}",
            "split_remote_l1_hit": f"Authorization: Bearer {sig}",
        }
        # Every scenario sends the same kind of request, passthrough included (its upstream
        # sees the opaque token: a baseline, not a deployment).
        for name, _ in scenarios:
            headers.setdefault(name, f"Authorization: Bearer {HIT_TOKEN}")
            check = load(name, 1, 1)
            if check["errors"]:
                raise SystemExit(f"scenario {name} answered errors during warm-up: {check}")

        if args.profile:
            profile(gw, args, load)
            return

        for r in range(args.rounds):
            for c in conns:
                for name, _ in scenarios:
                    res = load(name, c, args.duration, pid=gw.proc.pid)
                    results.setdefault((name, c), []).append(res)
                    print(f"round {r + 1} c={c} {name}: {res['rps']:.0f} req/s p50 {res['p50']:.0f} µs "
                          f"p99 {res['p99']:.0f} µs cpu {res['cpu_us']:.1f} µs/req errors {res['errors']}", file=sys.stderr, flush=True)
                    # A rejected proof or JWT costs less than a verified one: its figure would flatter.
                    if name in one_use and res["errors"]:
                        raise SystemExit(f"scenario {name} answered errors (not 2xx): {res}")
        rss_end = rss_kb(gw.proc.pid)
        print_table(scenarios, conns, results, args)
        if args.hostcalls:
            print_hostcalls(results)
        print()
        filled = (f" (the `phantom_miss` cache of 10000 slots filled with JWTs of {len(jwt)} bytes)"
                  if ("phantom_miss", conns[0]) in results else "")
        print(f"Gateway Envoy resident memory: {rss_start / 1024:.1f} MiB at start (every cache and "
              f"store slot already created), {rss_end / 1024:.1f} MiB after the run{filled}.")
        print_paired(results, conns)
        if any((name, 16) in results for name in DPOP_SCENARIOS) and ("phantom_hit", 16) in results:
            print_proof_costs(results)
        print_dpop_targets(results, conns)
        print(f"Filter .wasm: {FILTER_WASM.stat().st_size} bytes; do-nothing .wasm: "
              f"{NOOP_WASM.stat().st_size} bytes; minimal .wasm: {MINIMAL_WASM.stat().st_size} bytes.")
        if fleet:
            counters = {line.split(": ")[0].rsplit(".", 1)[1]: int(line.split(": ")[1])
                        for line in gw.admin_get("/stats?filter=token_filter.fleet_").splitlines()
                        if ": " in line}
            print(f"Fleet counters over the whole run (seeding included): {counters}.")
        if any(name in gw.ports for name in JWT_AUTHN_SCENARIOS):
            # http.<scenario>.jwt_authn.<counter>: every JWT verified (allowed), none refused, no
            # cache hit (Envoy 1.40 counts jwt_cache_hit and jwt_cache_miss even with no cache).
            counters = {f"{line.split('.')[1]}.{line.split(': ')[0].rsplit('.', 1)[1]}": int(line.split(": ")[1])
                        for line in gw.admin_get("/stats?filter=jwt_authn[.]").splitlines()
                        if re.search(r"\.(allowed|denied|jwt_cache_hit|jwt_cache_miss): ", line)}
            print(f"jwt_authn counters over the whole run (warm-up included): {counters}.")
    finally:
        if tls_client:
            tls_client.stop()
        gw.stop()
        backend.stop()
        if redis:
            redis.stop("webdis")
            redis.stop("redis")
        shutil.rmtree(work, ignore_errors=True)


def seed_fleet(port, redis):
    """FLEET_TOKENS tokens through the seeding listener: each introspected and written to the
    fleet, sealed (wrk, one round over them, then Redis is asked how many it holds)."""
    import concurrent.futures

    def one(i):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/bench",
                                     headers={"authorization": f"Bearer fleet-{i}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, range(FLEET_TOKENS)))
    assert all(s == 200 for s in statuses), "seeding the fleet failed"
    deadline = time.time() + 30
    while int(redis.cli("DBSIZE").strip() or 0) < FLEET_TOKENS:
        assert time.time() < deadline, "the fleet did not get every entry"
        time.sleep(0.2)


def start_tls_client(work, gw, pki, client_cert, names):
    """An Envoy on wrk's core that takes wrk's plain requests for each scenario in `names` and
    sends them to the gateway's listener over TLS, presenting `client_cert`."""
    if not names:
        return None
    client = Envoy(work / "tls-client", listeners={}, clusters={}, log_args=QUIET)
    clusters = []
    for name in names:
        c = cluster(f"gw_{name}", gw.ports[name])
        c["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {
                "tls_certificates": [{"certificate_chain": {"filename": client_cert["cert"]},
                                      "private_key": {"filename": client_cert["key"]}}],
                "validation_context": {"trusted_ca": {"filename": pki.ca_path}},
            }}}
        clusters.append(c)
    client.config["static_resources"]["clusters"] = clusters
    client.config["static_resources"]["listeners"] = [listener(n, [], routes=(("/", f"gw_{n}"),))
                                                      for n in names]
    client.start()
    subprocess.run(["taskset", "-a", "-p", "-c", "1", str(client.proc.pid)], capture_output=True, check=True)
    return client


def profile(gw, args, load):
    data = Path(tempfile.mkdtemp(prefix="perf-")) / "perf.data"
    rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "2000", "-g", "-o", str(data),
                            "-p", str(gw.proc.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    res = load(args.profile, 16, args.duration)
    rec.send_signal(2)
    rec.wait(timeout=30)
    print(f"{args.profile}: {res['rps']:.0f} req/s during the profile")
    stats = gw.admin_get("/stats?filter=cluster.token_service.upstream_(cx|rq)_total")
    print(" ".join(stats.split()))
    for sort in ("dso", "dso,sym"):
        out = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--sort", sort,
                              "--stdio", "--percent-limit", "1.5", "-g", "none"],
                             capture_output=True, text=True).stdout
        print("\n".join(line for line in out.splitlines() if line and not line.startswith("#")))


COMPARE_WASM = ""
WITH_REVOCATION = False
DPOP_MAX_AGE_S = 10


def revoking(cfg):
    """`cfg` with a revocation block, when the run asks for one (`--with-revocation`)."""
    if WITH_REVOCATION:
        cfg["revocation"] = {"path": "/_revoke", "secret": "bench-revocation-secret",
                             "mark_ttl_s": 3600}
    return cfg


def other_build(f):
    """`f` (our filter) loaded from COMPARE_WASM, in a VM of its own."""
    f = json.loads(json.dumps(f))
    vm = f["typed_config"]["config"]["vm_config"]
    vm["vm_id"] = "compare"
    vm["code"]["local"]["filename"] = str(Path(COMPARE_WASM).resolve())
    return f


def filters_for(name, verify, jwks, jwts):
    if name == "phantom_hit_b":
        return [other_build(plugin_filter(phantom_cfg()))]
    if name == "split_hit_b":
        return [other_build(plugin_filter(split_cfg()))]
    if name == "phantom_miss_b":
        return [other_build(plugin_filter(phantom_cfg(client_id="gateway-miss", max_entries=10000)))]
    if name == "passthrough":
        return []
    if name == "wasm_noop":
        return [noop_filter()]
    for call, cfg, _ in HOSTCALLS:
        if name == call:
            n = 0 if cfg.startswith("none") else CALLS_PER_REQUEST
            return [wasm_filter(name, HOSTCALL_WASM, f"{cfg.split()[0]} {n}")]
    if name == "wasm_minimal":
        return [wasm_filter("minimal", MINIMAL_WASM)]
    if name == "wasm_floor":
        return [wasm_filter("floor", MINIMAL_WASM, "floor")]
    if name == "wasm_minimal_call":
        return [wasm_filter("minimal_call", MINIMAL_WASM, "call")]
    if name == "wasm_minimal_call_cache":
        return [wasm_filter("minimal_call_cache", MINIMAL_WASM, "call_cache")]
    if name == "phantom_hit":
        return [plugin_filter(revoking(phantom_cfg()))]
    if name == "phantom_hit_policies":
        return [plugin_filter(policies_cfg())]
    if name == "split_hit":
        return [plugin_filter(revoking(split_cfg()))]
    if name == "phantom_hit_verify":
        return [plugin_filter(phantom_cfg(client_id="gateway-v", verify=verify))]
    if name == "split_hit_verify":
        return [plugin_filter(split_cfg(verify=verify))]
    if name in ("split_remote_l1_hit", "split_remote_l2_hit"):
        # Its own store (another max_entries), so the plain split scenarios are unaffected.
        cfg = split_cfg(remote=True)
        cfg["split"]["max_entries"] = 10001 if name == "split_remote_l1_hit" else 10002
        return [plugin_filter(cfg)]
    if name in DPOP_SCENARIOS or name == "mtls_hit":
        cfg = phantom_cfg(client_id=f"gateway-{name}")
        cfg["phantom"]["cluster"] = f"ts_{name}"
        if name == "mtls_hit":
            cfg["mtls"] = {}
        else:
            # The replay store sized for the proofs of a window at up to 10000 proofs/s, at most
            # a quarter full (the README's sizing rule). The benchmark's one client key may
            # hold half of it (the most `max_proofs_per_key` allows).
            window = DPOP_MAX_AGE_S + 2 * 1 + 1
            entries = min(2_000_000, 4 * 10_000 * window)
            cfg["dpop"] = {"origin": DPOP_ORIGIN, "algorithms": [DPOP_SCENARIOS[name]],
                           "max_age_s": DPOP_MAX_AGE_S, "clock_skew_s": 1,
                           "replay_entries": entries, "max_proofs_per_key": entries // 2}
        return [other_build(plugin_filter(cfg)) if name.endswith("_b") else plugin_filter(cfg)]
    if name in JWT_AUTHN_SCENARIOS:
        return [jwt_authn_filter(jwts[name].jwks())]
    if name == "tls_passthrough":
        return []
    if name == "exchange_hit":
        # phantom_hit's configuration and cache namespace, plus the exchange: the difference
        # between the two is the exchange stage's hit.
        cfg = phantom_cfg()
        cfg["token_exchange"] = {"cluster": "exchange", "path": "/exchange", "client_id": "gateway",
                                 "client_secret": "secret", "timeout_ms": 2000}
        cfg["exchange"] = {"audience": "bench-api"}
        return [plugin_filter(cfg)]
    if name == "lua_cache":
        return [lua_filter(LUA_CACHE)]
    if name == "phantom_fleet_hit":
        return [plugin_filter(fleet_cfg(), vm_id="fleet")]
    if name == "fleet_seed":
        # The same configuration (the same fleet keys), in a VM of its own: it introspects
        # FLEET_TOKENS tokens and writes them to the fleet before the runs.
        return [plugin_filter(fleet_cfg(), vm_id="fleet_seed")]
    if name == "phantom_miss":
        cfg = revoking(phantom_cfg(client_id="gateway-miss", max_entries=10000))
        return [plugin_filter(cfg, stop_iteration=WITH_REVOCATION)]
    if name == "lua_no_cache":
        return [lua_filter(LUA_NO_CACHE)]
    if name == "ext_authz":
        return [ext_authz_filter()]
    raise ValueError(name)


def print_table(scenarios, conns, results, args):
    print(f"\n{args.rounds} rounds x {args.duration} s per scenario, wrk -t1, "
          f"gateway Envoy --concurrency 1 on core 0, wrk and backend on core 1.\n")
    head = "| scenario |"
    sep = "|---|"
    for c in conns:
        head += f" req/s @{c} | ratio @{c} | p50 µs @{c} | p99 µs @{c} | gateway CPU µs/req @{c} |"
        sep += "---|---|---|---|---|"
    print(head)
    print(sep)
    for name, desc in scenarios:
        row = f"| {name}: {desc} |"
        for c in conns:
            runs = results[(name, c)]
            base = results[("passthrough", c)]
            ratios = [x["rps"] / b["rps"] for x, b in zip(runs, base)]
            errors = sum(x["errors"] for x in runs)
            row += (f" {statistics.median(x['rps'] for x in runs):.0f}{' (errors!)' if errors else ''} |"
                    f" {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |"
                    f" {statistics.median(x['p50'] for x in runs):.0f} |"
                    f" {statistics.median(x['p99'] for x in runs):.0f} |"
                    f" {statistics.median(x['cpu_us'] for x in runs):.1f}"
                    f" (min {min(x['cpu_us'] for x in runs):.1f}) |")
        print(row)


# (scenario, its baseline): what the scenario adds to the baseline, measured round by round.
PAIRS = [("exchange_hit", "phantom_hit"), ("phantom_hit", "phantom_hit_b"), ("split_hit", "split_hit_b"),
         ("phantom_miss", "phantom_miss_b"), ("dpop_hit_es256", "dpop_hit_es256_b"),
         ("dpop_hit_eddsa", "dpop_hit_eddsa_b"), ("phantom_hit_policies", "phantom_hit"),
         ("mtls_hit", "tls_passthrough"), ("dpop_hit_eddsa", "phantom_hit"), ("dpop_hit_es256", "phantom_hit"),
         # The targets of issue 21: each hit's overhead against Lua's with its cache and against
         # the floor of a hit (wasm_floor); the miss against Lua without a cache.
         ("wasm_noop", "passthrough"), ("wasm_floor", "passthrough"), ("lua_cache", "passthrough"),
         ("phantom_hit", "passthrough"), ("split_hit", "passthrough"),
         ("phantom_hit", "wasm_floor"), ("split_hit", "wasm_floor"),
         ("phantom_miss", "lua_no_cache"), ("phantom_miss", "wasm_minimal_call"),
         # Issue 32: the miss by parts (what a cache's host calls add to the call).
         ("wasm_minimal_call_cache", "wasm_minimal_call"), ("phantom_miss", "wasm_minimal_call_cache"),
         # Issue 28: a fleet hit (one call, a seal opened) next to a miss and a hit.
         ("phantom_fleet_hit", "phantom_hit"), ("phantom_fleet_hit", "phantom_miss"),
         # Issue 32: Envoy's own JWT verification, the yardstick of the DPoP targets.
         ("jwt_authn_es256", "passthrough"), ("jwt_authn_eddsa", "passthrough")]


def print_paired(results, conns):
    """For each pair run: the gateway CPU per request the scenario adds to its baseline, as the
    median of the differences within each round (both ran back to back, so the machine's noise
    of that moment hits both), with their range."""
    lines = []
    for c in conns:
        for name, base in PAIRS:
            if (name, c) not in results or (base, c) not in results:
                continue
            diffs = [x["cpu_us"] - b["cpu_us"] for x, b in zip(results[(name, c)], results[(base, c)])]
            lines.append(f"| {name} - {base} @{c} | {statistics.median(diffs):+.1f} | "
                         f"{min(diffs):+.1f} to {max(diffs):+.1f} |")
    if lines:
        print("\nPaired, round by round: gateway CPU µs per request the scenario adds to its baseline.\n")
        print("| scenario - baseline | median of the rounds' differences | range |")
        print("|---|---|---|")
        print("\n".join(lines))


def print_proof_costs(results):
    """A DPoP proof's cost inside Envoy (dpop_hit_* over phantom_hit: the proof's checks, its
    replay-store write and the header removed; the rest of the two requests is the same) next
    to the same checks natively (`native_proof_cost` in src/token/dpop.rs, release build)."""
    out = subprocess.run(["cargo", "test", "--release", "--lib", "native_proof_cost", "--",
                          "--ignored", "--nocapture"], cwd=ROOT, capture_output=True, text=True).stdout
    native = {alg: float(us) for alg, us in re.findall(r"native_proof_cost (\S+) ([\d.]+)", out)}
    base = statistics.median(x["cpu_us"] for x in results[("phantom_hit", 16)])
    print("\nOne DPoP proof, in µs of CPU: inside Envoy (gateway CPU per request of the scenario "
          "minus phantom_hit's, medians @16) and natively (the same checks, release build, best "
          "of 5 x 400 proofs).\n")
    print("| proof | inside Envoy | native | ratio |")
    print("|---|---|---|---|")
    for name, alg in DPOP_SCENARIOS.items():
        if (name, 16) not in results or alg not in native:
            continue
        inside = statistics.median(x["cpu_us"] for x in results[(name, 16)]) - base
        label = f"{alg} ({name})" if name.endswith("_b") else alg
        print(f"| {label} | {inside:.0f} | {native[alg]:.0f} | {inside / native[alg]:.1f}x |")
    print()


# Issue 32's targets: a DPoP proof (dpop_hit_* over phantom_hit) at most this many times Envoy's
# own verification of a JWT of the same algorithm (jwt_authn_* over passthrough).
DPOP_TARGETS = [("dpop_hit_es256", "jwt_authn_es256", "ES256", 3),
                ("dpop_hit_eddsa", "jwt_authn_eddsa", "EdDSA", 1.5)]


def print_dpop_targets(results, conns):
    """Each target whose four scenarios ran: both costs as medians of the rounds' paired
    differences (as print_paired) and their ratio."""
    def added(name, base, c):
        return statistics.median(x["cpu_us"] - b["cpu_us"] for x, b in zip(results[(name, c)], results[(base, c)]))

    lines = []
    for c in conns:
        for dpop, native, alg, target in DPOP_TARGETS:
            if all((n, c) in results for n in (dpop, "phantom_hit", native, "passthrough")):
                proof, jwt = added(dpop, "phantom_hit", c), added(native, "passthrough", c)
                ratio = f"{proof / jwt:.1f}×" if jwt > 0 else "n/a (jwt_authn measured free: noise)"
                lines.append(f"@{c}: dpop {alg} costs {ratio} native jwt_authn (target ≤ {target:g}×; "
                             f"{dpop} - phantom_hit {proof:+.1f} µs/req, {native} - passthrough {jwt:+.1f})"
                             f"{'' if proof <= target * jwt else ': target missed'}.")
    if lines:
        print("\nIssue 32's DPoP targets, gateway CPU per request (medians of the rounds' differences):\n")
        print("\n".join(lines))
        print()


def print_hostcalls(results):
    def cpu(name, pick):
        return pick(x["cpu_us"] for x in results[(name, 16)])

    print(f"\nOne host call, in gateway CPU µs: (scenario - hostcall_floor) / {CALLS_PER_REQUEST}, from "
          f"the medians over rounds and from the minimums.\n")
    print("| call | µs per call (medians) | µs per call (minimums) |")
    print("|---|---|---|")
    for name, cfg, desc in HOSTCALLS[1:]:
        if (name, 16) not in results:
            continue
        med = (cpu(name, statistics.median) - cpu("hostcall_floor", statistics.median)) / CALLS_PER_REQUEST
        low = (cpu(name, min) - cpu("hostcall_floor", min)) / CALLS_PER_REQUEST
        print(f"| {desc} | {med:.2f} | {low:.2f} |")
    for label, other in (("the SDK's do-nothing filter (wasm_noop)", "wasm_noop"),
                         ("hostcall_floor", "hostcall_floor")):
        print(f"\n{label} over passthrough: {cpu(other, statistics.median) - cpu('passthrough', statistics.median):.1f} "
              f"µs per request (medians), {cpu(other, min) - cpu('passthrough', min):.1f} (minimums).")


if __name__ == "__main__":
    main()
