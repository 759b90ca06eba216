#!/usr/bin/env python3
"""Writes the filter's .wasm as two OCI image layouts (directories: `oci-layout`, `index.json`,
`blobs/sha256/...`), byte for byte reproducible, in the two formats Istio's image fetcher
accepts (istio/istio `pkg/wasm/imagefetcher.go`, after the solo-io Wasm image specs):

- the *oci* (artifact) variant: exactly two layers, the runtime configuration
  (`application/vnd.module.wasm.config.v1+json`) and the module itself, raw
  (`application/vnd.module.wasm.content.layer.v1+wasm`). Istio refuses any other layer count: a
  single-layer push of the .wasm (what `oras push` makes by default) is not loaded.
- the *compat* variant: one `application/vnd.oci.image.layer.v1.tar+gzip` layer (the last one
  is the one read) holding `plugin.wasm`, and the annotation `module.wasm.image/variant: compat`.

Usage: release/oci.py WASM OUT_DIR TAG  (writes OUT_DIR/oci-artifact and OUT_DIR/oci-compat,
and prints each layout's manifest digest). `check_layout` is the fetcher's rule, for tests."""

import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
WASM_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
PLUGIN_FILE = "plugin.wasm"
ROOT_ID = "token_filter"
# The proxy-wasm ABI the filter is built against (proxy-wasm Rust SDK 0.2).
ABI_VERSION = "v0.2.1"


def canonical(doc) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layout:
    def __init__(self, path: Path):
        self.path = Path(path)
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)

    def blob(self, data: bytes, media_type: str, **annotations) -> dict:
        d = digest(data)
        (self.path / "blobs" / "sha256" / d.split(":", 1)[1]).write_bytes(data)
        out = {"mediaType": media_type, "digest": d, "size": len(data)}
        if annotations:
            out["annotations"] = annotations
        return out

    def finish(self, manifest: dict, tag: str) -> str:
        desc = self.blob(canonical(manifest), MANIFEST)
        desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
        (self.path / "oci-layout").write_bytes(canonical({"imageLayoutVersion": "1.0.0"}))
        (self.path / "index.json").write_bytes(canonical({"schemaVersion": 2, "manifests": [desc]}))
        return desc["digest"]


def image_annotations(tag: str) -> dict:
    return {"org.opencontainers.image.title": "envoy-token-filter",
            "org.opencontainers.image.version": tag,
            "org.opencontainers.image.created": "1970-01-01T00:00:00Z"}


def write_artifact(wasm: bytes, out: Path, tag: str) -> str:
    layout = Layout(out)
    runtime = canonical({"type": "envoy_proxy", "abi_version": ABI_VERSION,
                         "config": {"root_ids": [ROOT_ID]}})
    config = layout.blob(runtime, WASM_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config,
        "layers": [
            layout.blob(runtime, WASM_CONFIG, **{"org.opencontainers.image.title": "runtime-config.json"}),
            layout.blob(wasm, WASM_LAYER, **{"org.opencontainers.image.title": PLUGIN_FILE}),
        ],
        "annotations": image_annotations(tag),
    }
    return layout.finish(manifest, tag)


def plugin_tar(wasm: bytes) -> bytes:
    """A tar of `plugin.wasm` alone, with fixed metadata (mtime 0, root, 0644)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(PLUGIN_FILE)
        info.size, info.mtime, info.mode = len(wasm), 0, 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(wasm))
    return buf.getvalue()


def write_compat(wasm: bytes, out: Path, tag: str) -> str:
    layout = Layout(out)
    tar = plugin_tar(wasm)
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, filename="") as g:
        g.write(tar)
    config = layout.blob(canonical({
        "architecture": "wasm",
        "os": "wasip1",
        "created": "1970-01-01T00:00:00Z",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [digest(tar)]},
    }), OCI_CONFIG)
    annotations = image_annotations(tag)
    annotations["module.wasm.image/variant"] = "compat"
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config,
        "layers": [layout.blob(gz.getvalue(), OCI_LAYER)],
        "annotations": annotations,
    }
    return layout.finish(manifest, tag)


def extract_wasm(manifest: dict, read_blob) -> bytes:
    """The module Istio's fetcher would load from an image with this manifest (`read_blob`:
    digest -> bytes), following its order: a Docker manifest's last layer, else the compat
    variant (the last layer, OCI tar+gzip, its `plugin.wasm`), else the oci variant (exactly
    two layers, the module's raw). Raises ValueError with the fetcher's reasons otherwise."""
    layers = manifest.get("layers", [])
    if not layers:
        raise ValueError("number of layers must be greater than zero")
    if manifest.get("mediaType") == "application/vnd.docker.distribution.manifest.v2+json":
        return _plugin_from_tar_gz(layers[-1], DOCKER_LAYER, read_blob)
    errors = []
    try:
        return _plugin_from_tar_gz(layers[-1], OCI_LAYER, read_blob)
    except ValueError as e:
        errors.append(f"compat: {e}")
    if len(layers) != 2:
        errors.append(f"oci: number of layers must be 2 but got {len(layers)}")
        raise ValueError("; ".join(errors))
    for layer in layers:
        if layer.get("mediaType") == WASM_LAYER:
            return read_blob(layer["digest"])
    errors.append(f"oci: could not find the layer of type {WASM_LAYER}")
    raise ValueError("; ".join(errors))


def _plugin_from_tar_gz(layer: dict, media_type: str, read_blob) -> bytes:
    if layer.get("mediaType") != media_type:
        raise ValueError(f"invalid media type {layer.get('mediaType')} (expect {media_type})")
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(read_blob(layer["digest"])))) as tar:
        for member in tar:
            if Path(member.name).name == PLUGIN_FILE:
                return tar.extractfile(member).read()
    raise ValueError(f"{PLUGIN_FILE} not found in the archive")


def read_layout(path: Path):
    """(manifest, read_blob) of the single image in an OCI layout directory."""
    path = Path(path)
    index = json.loads((path / "index.json").read_text())
    blob = lambda d: (path / "blobs" / "sha256" / d.split(":", 1)[1]).read_bytes()  # noqa: E731
    (desc,) = index["manifests"]
    return json.loads(blob(desc["digest"])), blob


def main():
    wasm_path, out, tag = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    wasm = wasm_path.read_bytes()
    for name, write in (("oci-artifact", write_artifact), ("oci-compat", write_compat)):
        print(f"{write(wasm, out / name, tag)}  {name}")


if __name__ == "__main__":
    main()
