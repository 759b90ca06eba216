#!/usr/bin/env bash
# Builds the release into dist/:
#   envoy_token_filter.wasm   the module (reproducible: see scripts/build.sh)
#   oci-artifact/             an OCI image layout, Istio's "oci" variant (two layers: runtime
#                             config and the raw module)
#   oci-compat/               an OCI image layout, the "compat" variant (one tar+gzip layer with
#                             plugin.wasm), which any registry and tool accepts
#   token-filter              the `token-filter` command (check, schema, explain), Linux x86-64
#   token-filter.schema.json  the configuration's JSON Schema (draft 2020-12)
#   SHA256SUMS                the module's SHA-256, then for each image its manifest digest
#                             first (what an Istio WasmPlugin's `sha256` must be for an oci://
#                             url), then every other file of its layout (config, layers,
#                             index.json, oci-layout): `sha256sum -c` checks all of them
# Push an image with skopeo, for example:
#   skopeo copy oci:dist/oci-compat:VERSION docker://registry.example.com/envoy-token-filter:VERSION
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_tools
bash scripts/build.sh >/dev/null
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
rm -rf dist/oci-artifact dist/oci-compat
"$VENV/bin/python" release/oci.py "$WASM" dist "$VERSION" >/dev/null
cargo build --locked --release --features cli --bin token-filter >&2
cp target/release/token-filter dist/token-filter
dist/token-filter schema > dist/token-filter.schema.json
(
  cd dist
  sha256sum envoy_token_filter.wasm
  sha256sum token-filter token-filter.schema.json
  for image in oci-artifact oci-compat; do
    manifest="$(sed -n 's/.*"digest":"sha256:\([0-9a-f]*\)".*/\1/p' "$image/index.json")"
    echo "$manifest  $image/blobs/sha256/$manifest"
    for f in $(cd "$image" && find . -type f | sed 's|^\./||' | LC_ALL=C sort); do
      [ "$f" = "blobs/sha256/$manifest" ] || sha256sum "$image/$f"
    done
  done
) > dist/SHA256SUMS
(cd dist && sha256sum --quiet -c SHA256SUMS)
say "release $VERSION in dist/ (SHA256SUMS: the module, then each image's manifest and files)"
cat dist/SHA256SUMS
