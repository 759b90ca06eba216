"""Configuration you can check before it reaches a gateway: the release's `token-filter` command
(`dist/token-filter`, built by scripts/release.sh) and its JSON Schema
(`dist/token-filter.schema.json`), checked with a validator nobody here wrote (`jsonschema`).

- every file in envoy/ and deploy/ passes `token-filter check`;
- every complete configuration example in README.md and docs/ is valid for both;
- the schema and the validation agree: configurations made from the schema (each field one step
  out of its range, off its enumeration, of the wrong type, unknown, missing when required, and
  at its bounds) are accepted and refused alike by both, except where the schema cannot say
  (the rules between fields, listed in one place: `SCHEMA_CANNOT_SAY` in src/config/mod.rs,
  and CROSS_FIELD below);
- exit codes, and no value ever printed."""

import copy
import json
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest

from harness.envoy import ROOT
from harness.services import Signer

DIST = ROOT / "dist"
CLI = DIST / "token-filter"
SCHEMA_FILE = DIST / "token-filter.schema.json"

EC_PEM = Signer("ES256").private_pem()

# One configuration with every section and every field: the base every mutation starts from.
FULL = {
    "realm": "api",
    "required_scopes": ["read"],
    "token": "required",
    "accept_jwt": False,
    "proof": "optional",
    "min_remaining_lifetime_s": 10,
    "max_lifetime_s": 3600,
    "claims_to_headers": [{"claim": "sub", "header": "x-user-id"}],
    "claims_to_filter_state": ["sub"],
    "phantom": {"cluster": "ts", "authority": "login.example.com", "path": "/introspect",
                "client_id": "gw", "client_secret": "s", "timeout_ms": 2000, "response": "json",
                "jwt_claim": "access_jwt",
                "mint": {"issuer": "https://gw.example.com", "audience": "apis", "algorithm": "ES256",
                         "private_key_pem": EC_PEM, "key_id": "gw-1", "claims": ["sub"],
                         "max_lifetime_s": 300, "jwks_path": "/.well-known/gw-jwks.json"}},
    "cache": {"max_ttl_s": 300, "negative_ttl_s": 5, "max_entries": 1000},
    "split": {"hash_encoding": "base64", "max_entries": 1000, "fallback_to_phantom": True,
              "publish": {"path": "/_split", "secret": "publisher-secret-0123"},
              "split_responses": {"paths": ["/oauth/token"]},
              "remote": {"cluster": "kv", "authority": "kv", "get_path": "/GET/{key}",
                         "put_path": "/SET/{key}", "put_method": "PUT", "delete_path": "/DEL/{key}",
                         "delete_method": "GET", "timeout_ms": 200, "local_ttl_s": 10}},
    "verify": {"issuer": "https://login.example.com", "audiences": ["api"], "algorithms": ["ES256"],
               "jwks": {"cluster": "ts", "authority": "login.example.com", "path": "/jwks",
                        "refresh_s": 300, "timeout_ms": 2000, "min_refetch_s": 5},
               "clock_skew_s": 30},
    "dpop": {"algorithms": ["ES256", "EdDSA"], "max_age_s": 300, "clock_skew_s": 5,
             "replay_entries": 1000, "max_proofs_per_key": 100, "nonce": False,
             "origin": "https://api.example.com", "forward_proof": False},
    "mtls": {"forwarded_client_cert": False},
    "token_exchange": {"cluster": "ts", "authority": "login.example.com", "path": "/token",
                       "client_id": "gw", "client_secret": "s", "timeout_ms": 2000,
                       "subject_token": "access_token"},
    "policies": [
        {"name": "orders", "match": {"path_prefix": "/orders/", "methods": ["GET"],
                                     "hosts": ["api.example.com"], "route_name": "orders"},
         "token": "optional", "required_scopes": ["orders"], "accept_jwt": True, "proof": "optional",
         "claims_to_headers": [{"claim": "sub", "header": "x-sub"}],
         "exchange": {"audience": "orders-api", "scope": "read", "resource": "https://orders/"},
         "min_remaining_lifetime_s": 30, "max_lifetime_s": 900, "credentials": "either"},
        {"name": "pay", "match": {"path_exact": "/pay"},
         "embedded_token": {"claim": "pay_token", "audiences": ["pay-api"]}},
    ],
    "revocation": {"path": "/_revoke", "secret": "revocation-secret-0123",
                   "observe_paths": ["/oauth/revoke"],
                   "backchannel_logout": {"path": "/_bcl", "audiences": ["web"]},
                   "max_marks": 1000, "mark_ttl_s": 86400},
    "credentials": "either",
    "cookies": {"name_prefix": "example", "encryption_keys": ["ab" * 32, "cd" * 32],
                "trusted_web_origins": ["https://www.example.com"],
                "cors": {"allow_methods": ["GET", "POST"], "allow_headers": ["content-type"],
                         "expose_headers": ["x-request-id"], "max_age_s": 600},
                "remove_cookies": True},
}

# The same with a fleet: the split store's level 2 is the fleet's (split.remote refused beside it).
FULL_FLEET = copy.deepcopy(FULL)
del FULL_FLEET["split"]["remote"]
FULL_FLEET["dpop"]["fleet_unavailable"] = "refuse"
FULL_FLEET["fleet"] = {"cluster": "webdis", "authority": "webdis", "key_prefix": "tf:", "timeout_ms": 200,
                       "local_ttl_s": 10, "revocation_bound_ms": 2000, "accept_plain_split": False}

# Fields whose bounds or values in the schema meet a rule between fields (SCHEMA_CANNOT_SAY):
# at those values the schema accepts what the validation refuses. Each names the rule.
CROSS_FIELD = {
    ("dpop.replay_entries", "min"): "dpop.max_proofs_per_key: at most replay_entries / 2",
    ("verify.jwks.refresh_s", "min"): "verify.jwks.min_refetch_s: at most refresh_s",
    ("verify.algorithms", "HS256"): "an HS* algorithm needs its secret in jwks_inline",
    ("verify.algorithms", "HS384"): "an HS* algorithm needs its secret in jwks_inline",
    ("verify.algorithms", "HS512"): "an HS* algorithm needs its secret in jwks_inline",
    ("phantom.response", "missing"): "phantom.jwt_claim: with phantom.response json only",
    ("policies[].embedded_token.audiences", "missing"): "embedded_token.audiences: required with verify",
    ("revocation.path", "missing"): "revocation: path and secret together",
    ("revocation.secret", "missing"): "revocation: path and secret together",
    ("dpop.max_proofs_per_key", "max"): "dpop.max_proofs_per_key: at most replay_entries / 2",
    ("verify.jwks.min_refetch_s", "max"): "verify.jwks.min_refetch_s: at most refresh_s",
    ("revocation.mark_ttl_s", "min"): "revocation.mark_ttl_s: at least cache.max_ttl_s, mint.max_lifetime_s",
    ("phantom", "missing"): "split.fallback_to_phantom and token_exchange need phantom",
    ("phantom.mint.algorithm", "EdDSA"): "phantom.mint.private_key_pem: a key of the algorithm's curve",
    ("phantom.response", "jwt"): "phantom.jwt_claim: with phantom.response json only",
    ("phantom.response", "rfc9701"): "phantom.jwt_claim: with phantom.response json only",
    ("token_exchange", "missing"): "exchange: needs token_exchange",
    ("verify", "missing"): "accept_jwt, embedded_token.audiences, backchannel_logout: need verify",
    ("verify.jwks", "missing"): "verify.jwks or verify.jwks_inline: exactly one",
    ("cookies", "missing"): "credentials \"cookie\" or \"either\": needs cookies",
}


@pytest.fixture(scope="module")
def schema():
    if not CLI.exists() or not SCHEMA_FILE.exists():
        subprocess.run(["bash", "scripts/release.sh"], cwd=ROOT, check=True, capture_output=True)
    return json.loads(SCHEMA_FILE.read_text())


def check(paths):
    """`token-filter check`: (exit code, {file: verdict line})."""
    r = subprocess.run([str(CLI), "check", *map(str, paths)], capture_output=True, text=True)
    verdicts = {}
    for line in r.stdout.splitlines():
        verdicts.setdefault(line.split(": ", 1)[0], []).append(line)
    return r.returncode, verdicts, r.stdout + r.stderr


def schema_accepts(schema, doc):
    return jsonschema.Draft202012Validator(schema).is_valid(doc)


# The example files that hold a filter configuration. The other manifests in deploy/ hold none
# (a ServiceEntry, a Gateway and AuthorizationPolicy, the header rules): `check` refuses each as
# a file with nothing to check.
CONFIG_FILES = [*sorted(ROOT.glob("envoy/*.yaml")), *sorted(ROOT.glob("deploy/istio/wasmplugin-*.yaml")),
                ROOT / "deploy/envoy-gateway/extension-policy.yaml"]


def test_every_example_file_is_valid(schema):
    code, verdicts, out = check(CONFIG_FILES)
    assert code == 0, out
    assert "warning" not in out, out
    assert sum(line.endswith(": valid") for lines in verdicts.values() for line in lines) >= 14, out
    others = sorted(set(ROOT.glob("deploy/*/*.yaml")) - set(CONFIG_FILES))
    code, verdicts, out = check(others)
    assert code == 1, out
    assert all("no token filter configuration found" in verdicts[str(f)][0] for f in others), out


def examples():
    """Every complete configuration in a ```json block of README.md and docs/*.md (a fragment,
    or one with "..." placeholders, is not one)."""
    out = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for i, block in enumerate(re.findall(r"```json\n(.*?)```", doc.read_text(), re.S)):
            if '"..."' in block:
                continue
            try:
                value = json.loads(block)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict) and ("phantom" in value or "split" in value):
                out.append((f"{doc.name}#{i}", value))
    return out


def test_every_configuration_in_the_docs_is_valid(schema, tmp_path):
    found = examples()
    assert len(found) >= 1, [n for n, _ in found]
    files = []
    for name, value in found:
        errors = list(jsonschema.Draft202012Validator(schema).iter_errors(value))
        assert not errors, (name, [e.message for e in errors])
        f = tmp_path / (re.sub(r"[^a-z0-9]", "_", name.lower()) + ".json")
        f.write_text(json.dumps(value))
        files.append(f)
    code, _, out = check(files)
    assert code == 0, out


def leaves(schema, node=None, path=""):
    """(path, property schema, object schema it belongs to) for every field, `[]` for lists."""
    node = node if node is not None else schema

    def resolve(n):
        ref = n.get("$ref")
        return schema["$defs"][ref.split("/")[-1]] if ref else n

    node = resolve(node)
    for name, prop in node.get("properties", {}).items():
        inner = next((a for a in prop.get("anyOf", []) if a.get("type") != "null"), prop)
        target = resolve(inner)
        full = f"{path}{name}"
        yield full, prop, target, node
        if "properties" in target:
            yield from leaves(schema, target, full + ".")
        elif "items" in target and "properties" in resolve(target["items"]):
            yield from leaves(schema, resolve(target["items"]), full + "[].")


def locate(doc, path):
    """The objects `path` (with `[]` for every element of a list) reaches in `doc`: the parent
    objects and the field name."""
    parts = path.split(".")
    objs = [doc]
    for part in parts[:-1]:
        nxt = []
        for o in objs:
            key = part[:-2] if part.endswith("[]") else part
            v = o.get(key) if isinstance(o, dict) else None
            if part.endswith("[]") and isinstance(v, list):
                nxt.extend(x for x in v if isinstance(x, dict))
            elif isinstance(v, dict):
                nxt.append(v)
        objs = nxt
    return objs, parts[-1]


def mutations(schema, base):
    """(path, what, mutated configuration of `base`) from the schema's own bounds."""
    for path, prop, target, _owner in leaves(schema):
        field = path.split(".")[-1]
        kinds = target.get("type", prop.get("type"))
        kinds = [kinds] if isinstance(kinds, str) else (kinds or [])
        kinds = [k for k in kinds if k != "null"]
        values = []
        if "minimum" in target:
            values += [("min", target["minimum"]), ("below min", target["minimum"] - 1)]
        if "maximum" in target:
            values += [("max", target["maximum"]), ("above max", target["maximum"] + 1)]
        if "enum" in target:
            values += [(v, v) for v in target["enum"]] + [("bogus", "no-such-value")]
        if "minLength" in target:
            values.append(("too short", "a" * (target["minLength"] - 1)) if target["minLength"] > 0 else None)
        if "maxLength" in target:
            values.append(("too long", "a" * (target["maxLength"] + 1)))
        if "minItems" in target and target["minItems"] > 0:
            values.append(("min", None))
        if "maxItems" in target:
            values.append(("max", None))
        items = target.get("items", {})
        if isinstance(items, dict) and "enum" in items:
            values += [(v, [v]) for v in items["enum"]] + [("bogus", ["no-such-value"])]
        if "string" in kinds:
            values.append(("wrong type", 12345))
        elif "integer" in kinds or "boolean" in kinds:
            values.append(("wrong type", "12"))
        elif "array" in kinds:
            values.append(("wrong type", "x"))
        elif "properties" in target:
            values.append(("wrong type", 7))
            values.append(("unknown field", "add"))
        values.append(("missing", "drop"))
        for v in values:
            if v is None:
                continue
            what, value = v
            doc = copy.deepcopy(base)
            objs, name = locate(doc, path)
            if not objs:
                continue
            for o in objs:
                if value == "drop":
                    o.pop(name, None)
                elif value == "add":
                    if isinstance(o.get(name), dict):
                        o[name]["no_such_field"] = 1
                elif value is None and what in ("min", "max") and isinstance(o.get(name), list):
                    n = target["minItems"] if what == "min" else target["maxItems"]
                    sample = o[name][0] if o[name] else "x"
                    o[name] = [sample if not isinstance(sample, str) else f"{sample}{i}" for i in range(n)]
                else:
                    o[name] = value
            key = path.replace("policies[].", "policies[].")
            yield key, what, doc
    _ = field


def test_the_schema_and_the_validation_agree(schema, tmp_path):
    cases = list(mutations(schema, FULL)) + list(mutations(schema, FULL_FLEET))
    assert len(cases) > 300, len(cases)
    assert any(path.startswith("fleet.") for path, _, _ in cases)
    files, bases = [], []
    for name, full in (("full", FULL), ("full_fleet", FULL_FLEET)):
        assert schema_accepts(schema, full)
        base = tmp_path / f"{name}.json"
        base.write_text(json.dumps(full))
        bases.append(base)
    for i, (path, what, doc) in enumerate(cases):
        f = tmp_path / f"case{i}.json"
        f.write_text(json.dumps(doc))
        files.append(f)
    _, verdicts, out = check([*bases, *files])
    for base in bases:
        assert verdicts[str(base)][0].endswith(": valid"), out
    disagree, crossed = [], set()
    for f, (path, what, doc) in zip(files, cases):
        by_check = verdicts[str(f)][0].endswith(": valid")
        by_schema = schema_accepts(schema, doc)
        if by_check == by_schema:
            continue
        if (path, what) in CROSS_FIELD and by_schema:
            crossed.add((path, what))
        else:
            disagree.append((path, what, "schema" if by_schema else "check", verdicts[str(f)][0]))
    assert not disagree, "\n".join(map(str, disagree))
    # The exceptions are all real: each one is a rule between fields the schema cannot say.
    assert crossed == set(CROSS_FIELD), set(CROSS_FIELD) - crossed


def test_exit_codes_and_no_value_printed(tmp_path):
    secret = 987654321234
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"phantom": {"cluster": "ts", "path": "/i", "client_id": "gw",
                                           "client_secret": secret}}))
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"phantom": {"cluster": "ts", "path": "/i", "client_id": "gw",
                                            "client_secret": "s"}}))
    code, _, out = check([good])
    assert code == 0
    code, _, out = check([good, bad])
    assert code == 1 and "phantom.client_secret" in out and str(secret) not in out
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [unclosed\n")
    code, _, out = check([broken])
    assert code == 2, out
    r = subprocess.run([str(CLI)], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr
