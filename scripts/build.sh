#!/usr/bin/env bash
# Builds the release artifact dist/envoy_token_filter.wasm and prints its SHA-256.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  rustup target add wasm32-wasip1 >&2
fi
cargo build --locked --release --target wasm32-wasip1 >&2
mkdir -p dist
cp target/wasm32-wasip1/release/envoy_token_filter.wasm "$WASM"
size=$(stat -c %s "$WASM")
say "built dist/envoy_token_filter.wasm ($size bytes)"
(cd dist && sha256sum envoy_token_filter.wasm)
