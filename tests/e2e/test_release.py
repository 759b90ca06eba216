"""The release as users deploy it (run after `scripts/release.sh`, which scripts/test.sh does):
both OCI images through a real registry (CNCF distribution, Debian's docker-registry, on
loopback) with skopeo, read back the way Istio's image fetcher reads them; and the module loaded
by Envoy over HTTP with `vm_config.code.remote` and its sha256."""

import hashlib
import http.server
import json
import shutil
import subprocess
import threading
import time
import urllib.request

import pytest

import oci
from harness.envoy import ROOT, WASM, Envoy, bearer, closed_port, fresh, request, seen_by_api

DIST = ROOT / "dist"


def sums():
    """SHA256SUMS: {file: hex}."""
    out = {}
    for line in (DIST / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        out[name] = digest
    return out


def image_digest(image):
    """The manifest digest SHA256SUMS gives for `image` (oci-artifact, oci-compat): the first
    of its lines, the manifest's blob (the others are every other file of the layout)."""
    first = next(name for name in sums() if name.startswith(f"{image}/"))
    digest = sums()[first]
    assert first == f"{image}/blobs/sha256/{digest}", first
    return digest


def test_sha256sums_covers_every_file_of_the_release(release, tmp_path):
    """`sha256sum -c SHA256SUMS` checks the module and every file of both layouts: a layer
    replaced in a layout is caught, not only a replaced manifest."""
    listed = set(sums())
    for image in ("oci-artifact", "oci-compat"):
        files = {str(p.relative_to(DIST)) for p in (DIST / image).rglob("*") if p.is_file()}
        assert files <= listed, files - listed
    copy = tmp_path / "dist"
    shutil.copytree(DIST, copy, ignore=shutil.ignore_patterns("*.tmp"))
    ok = subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=copy, capture_output=True)
    assert ok.returncode == 0, ok.stdout
    manifest, _ = oci.read_layout(copy / "oci-compat")
    layer = copy / "oci-compat" / "blobs" / "sha256" / manifest["layers"][-1]["digest"].split(":")[1]
    data = layer.read_bytes()
    layer.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    bad = subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=copy, capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "FAILED" in bad.stdout, bad.stdout


@pytest.fixture(scope="module")
def release():
    if not (DIST / "SHA256SUMS").exists() or not (DIST / "oci-compat").is_dir():
        subprocess.run(["bash", "scripts/release.sh"], cwd=ROOT, check=True, capture_output=True)
    assert hashlib.sha256(WASM.read_bytes()).hexdigest() == sums()["envoy_token_filter.wasm"]
    return json.loads((DIST / "oci-compat" / "index.json").read_text())["manifests"][0]["annotations"][
        "org.opencontainers.image.ref.name"]


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    assert shutil.which("docker-registry") and shutil.which("skopeo"), \
        "skopeo and docker-registry are installed by scripts/lib.sh (ensure_registry)"
    work = tmp_path_factory.mktemp("registry")
    port = closed_port()
    (work / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {work}/data\nhttp:\n  addr: 127.0.0.1:{port}\n")
    log = open(work / "log", "w")
    proc = subprocess.Popen(["docker-registry", "serve", str(work / "config.yml")], stdout=log,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 15
    while True:
        try:
            with urllib.request.urlopen(f"{base}/v2/", timeout=1):
                break
        except OSError:
            assert time.time() < deadline and proc.poll() is None, (work / "log").read_text()
            time.sleep(0.1)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def skopeo_copy(src, dst):
    out = subprocess.run(["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false", src, dst],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def registry_image(registry, repo, tag):
    """The manifest the registry serves for `repo:tag`, its digest, and a blob reader: what
    Istio's fetcher (go-containerregistry) reads."""
    accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
    req = urllib.request.Request(f"http://{registry}/v2/{repo}/manifests/{tag}", headers={"accept": accept})
    with urllib.request.urlopen(req, timeout=5) as r:
        body, digest = r.read(), r.headers["docker-content-digest"]

    def blob(d):
        with urllib.request.urlopen(f"http://{registry}/v2/{repo}/blobs/{d}", timeout=10) as r:
            return r.read()

    assert digest == "sha256:" + hashlib.sha256(body).hexdigest()
    return json.loads(body), digest, blob


@pytest.mark.parametrize("image", ["oci-artifact", "oci-compat"])
def test_both_images_round_trip_through_a_registry(release, registry, tmp_path, image):
    repo, tag = "envoy-token-filter", f"{release}-{image}"
    skopeo_copy(f"oci:{DIST / image}:{release}", f"docker://{registry}/{repo}:{tag}")
    manifest, digest, blob = registry_image(registry, repo, tag)
    # What a WasmPlugin's sha256 is compared with for an oci:// url: the manifest digest.
    assert digest == "sha256:" + image_digest(image)
    wasm = oci.extract_wasm(manifest, blob)
    assert hashlib.sha256(wasm).hexdigest() == sums()["envoy_token_filter.wasm"]
    assert wasm[:4] == b"\0asm"
    # Pulled back with skopeo into a layout of its own: the same module.
    skopeo_copy(f"docker://{registry}/{repo}:{tag}", f"oci:{tmp_path / 'pulled'}:{tag}")
    pulled, read = oci.read_layout(tmp_path / "pulled")
    assert hashlib.sha256(oci.extract_wasm(pulled, read)).hexdigest() == sums()["envoy_token_filter.wasm"]


def test_the_layouts_follow_istios_fetcher():
    """The rules of istio/istio pkg/wasm/imagefetcher.go, as `oci.extract_wasm` states them."""
    artifact, _ = oci.read_layout(DIST / "oci-artifact")
    assert [layer["mediaType"] for layer in artifact["layers"]] == [oci.WASM_CONFIG, oci.WASM_LAYER]
    assert artifact["config"]["mediaType"] == oci.WASM_CONFIG
    compat, read = oci.read_layout(DIST / "oci-compat")
    assert [layer["mediaType"] for layer in compat["layers"]] == [oci.OCI_LAYER]
    assert compat["annotations"]["module.wasm.image/variant"] == "compat"
    config = json.loads(read(compat["config"]["digest"]))
    assert config["rootfs"]["diff_ids"][0].startswith("sha256:")
    # What the fetcher refuses: the single-layer push of a .wasm (`oras push` by default), and
    # a compat layer without plugin.wasm.
    wasm = WASM.read_bytes()
    single = {"layers": [{"mediaType": oci.WASM_LAYER, "digest": "sha256:x", "size": len(wasm)}]}
    with pytest.raises(ValueError, match="number of layers must be 2 but got 1"):
        oci.extract_wasm(single, lambda d: wasm)
    import gzip
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("filter.wasm")
        info.size = len(wasm)
        tar.addfile(info, io.BytesIO(wasm))
    misnamed = {"layers": [{"mediaType": oci.OCI_LAYER, "digest": "sha256:y"}]}
    with pytest.raises(ValueError, match="plugin.wasm not found"):
        oci.extract_wasm(misnamed, lambda d: gzip.compress(buf.getvalue()))


def test_the_release_is_reproducible_from_its_layouts(tmp_path):
    """Writing the images again from the module gives the same bytes (the module's own
    reproducibility is checked by scripts/reproduce.sh, from a copy of the sources)."""
    oci.write_artifact(WASM.read_bytes(), tmp_path / "a", "x")
    oci.write_artifact(WASM.read_bytes(), tmp_path / "b", "x")
    assert (tmp_path / "a" / "index.json").read_bytes() == (tmp_path / "b" / "index.json").read_bytes()


# ---- remote loading: vm_config.code.remote ------------------------------------------------------

@pytest.fixture(scope="module")
def module_server():
    """Serves the built module over HTTP, counting the fetches."""
    body = WASM.read_bytes()
    fetches = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            fetches.append(self.path)
            self.send_response(200)
            self.send_header("content-type", "application/wasm")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], fetches
    server.shutdown()


def remote_code(port, sha256):
    return {"remote": {"http_uri": {"uri": f"http://127.0.0.1:{port}/envoy_token_filter.wasm",
                                    "cluster": "modules", "timeout": "10s"},
                       "sha256": sha256}}


def test_remote_loading_with_the_right_sha256_serves(tmp_path, module_server, token_service, echo):
    port, fetches = module_server
    from harness.envoy import base_config
    e = Envoy(tmp_path / "envoy", listeners={
        "remote": {"plugin": base_config(), "code": remote_code(port, sums()["envoy_token_filter.wasm"])}},
        clusters={"api": echo.port, "token_service": token_service.port, "modules": port})
    e.start()
    try:
        assert fetches, "the module was fetched over HTTP"
        token = fresh()
        r = request(e.ports["remote"], "/remote", bearer(token))
        assert r.status == 200, (r.status, r.body)
        assert request(e.ports["remote"], "/remote").status == 401
    finally:
        e.stop()


def test_remote_loading_with_a_wrong_sha256_fails_closed(tmp_path, module_server, token_service, echo):
    port, _ = module_server
    from harness.envoy import base_config
    e = Envoy(tmp_path / "envoy", listeners={
        "remote": {"plugin": base_config(), "code": remote_code(port, "0" * 64)}},
        clusters={"api": echo.port, "token_service": token_service.port, "modules": port})
    e.start(expect_ready=False)
    try:
        marker = fresh("wrongsha")
        deadline = time.time() + 15
        answered = []
        while time.time() < deadline and len(answered) < 5:
            try:
                admin = (tmp_path / "envoy" / "admin.txt").read_text().strip()
                with urllib.request.urlopen(f"http://{admin}/listeners?format=json", timeout=2) as r:
                    statuses = json.loads(r.read())["listener_statuses"]
                ports = [s["local_address"]["socket_address"]["port_value"] for s in statuses]
            except (OSError, ValueError, KeyError):
                ports = []
            for p in ports:
                try:
                    answered.append(request(p, f"/{marker}", bearer(fresh()), timeout=3).status)
                except OSError:
                    answered.append("refused")
            time.sleep(0.3)
        print("answers with a wrong sha256:", answered)
        assert answered, "no listener came up to be tried"
        assert not seen_by_api(echo, marker), "a request reached the API without the filter"
        assert all(s == "refused" or s >= 500 for s in answered), answered
        # Envoy retries the fetch, counts the mismatch as a failed fetch, and does not load it.
        log = e.log_path.read_text()
        assert "Plugin token_filter failed to load" in log
        assert "configured to fail closed" in log
    finally:
        e.stop()
