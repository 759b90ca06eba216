#!/usr/bin/env bash
# Builds the release artifact dist/envoy_token_filter.wasm and prints its SHA-256.
#
# Reproducible: the toolchain is pinned (rust-toolchain.toml), dependencies are locked
# (Cargo.lock), and the paths that end up in the module (this checkout's, Cargo's registry) are
# remapped to fixed names, so two builds from two clones give the same bytes. The build has its
# own target directory: its RUSTFLAGS differ from those of clippy and the tests.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  rustup target add wasm32-wasip1 >&2
fi
CARGO_HOME_DIR="${CARGO_HOME:-$HOME/.cargo}"
export CARGO_TARGET_DIR="$ROOT/target/reproducible"
export RUSTFLAGS="--remap-path-prefix=$ROOT=/envoy-token-filter --remap-path-prefix=$CARGO_HOME_DIR=/cargo --remap-path-prefix=$(rustc --print sysroot)=/rust"
cargo build --locked --release --target wasm32-wasip1 >&2
mkdir -p dist
cp "$CARGO_TARGET_DIR/wasm32-wasip1/release/envoy_token_filter.wasm" "$WASM"
size=$(stat -c %s "$WASM")
say "built dist/envoy_token_filter.wasm ($size bytes)"
(cd dist && sha256sum envoy_token_filter.wasm)
