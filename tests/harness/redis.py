"""Redis behind webdis, both started here from Debian's packages: the store a fleet of gateways
shares (`split.remote`, `fleet`)."""

import json
import shutil
import subprocess
import time
import urllib.request

from harness.envoy import closed_port


class Redis:
    def __init__(self, workdir):
        self.workdir = workdir
        self.redis_port = closed_port()
        self.http_port = closed_port()
        self.procs = {}

    def start_redis(self):
        exe = shutil.which("redis-server")
        assert exe, "redis-server is needed (scripts/lib.sh installs it from Debian's packages)"
        self.procs["redis"] = subprocess.Popen(
            [exe, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            ping = subprocess.run(["redis-cli", "-p", str(self.redis_port), "PING"], capture_output=True,
                                  text=True, timeout=5)
            if ping.stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis did not answer")

    def start_webdis(self):
        exe = shutil.which("webdis")
        assert exe, "webdis is needed (scripts/lib.sh installs it from Debian's packages)"
        cfg = self.workdir / "webdis.json"
        cfg.write_text(json.dumps({"redis_host": "127.0.0.1", "redis_port": self.redis_port,
                                   "http_host": "127.0.0.1", "http_port": self.http_port, "threads": 2,
                                   "daemonize": False, "database": 0, "verbosity": 1,
                                   "logfile": str(self.workdir / "webdis.log")}))
        self.procs["webdis"] = subprocess.Popen([exe, str(cfg)], stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                if "PONG" in self.http("/PING"):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("webdis did not answer")

    def stop(self, name):
        p = self.procs.pop(name, None)
        if p:
            p.terminate()
            p.wait(timeout=10)

    def http(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as r:
            return r.read().decode()

    def cli(self, *args):
        """redis-cli against this Redis: its output, as text."""
        return subprocess.run(["redis-cli", "-p", str(self.redis_port), *args], check=True,
                              capture_output=True, text=True, timeout=10).stdout

    def dump(self):
        """Every key and its value (`redis-cli --scan`, then GET), as bytes."""
        out = {}
        for k in [k for k in self.cli("--scan").splitlines() if k]:
            out[k] = subprocess.run(["redis-cli", "-p", str(self.redis_port), "GET", k],
                                    capture_output=True, timeout=10).stdout.rstrip(b"\n")
        return out

    def set(self, key, value: bytes, ttl_s=300):
        """Writes `value` under `key` as it is."""
        subprocess.run(["redis-cli", "-p", str(self.redis_port), "-x", "SETEX", key, str(ttl_s)],
                       input=value, check=True, capture_output=True, timeout=10)
