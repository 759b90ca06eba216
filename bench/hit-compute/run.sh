#!/usr/bin/env bash
# The filter's own compute on a cache hit, without Envoy: bench/hit-compute/src/main.rs runs the
# request path (phantom hit, split hit) against the fake host, built for wasm32-wasip1 and run in
# V8 (Node's WASI, the engine Envoy embeds), and natively. Host calls are not in it: their prices
# are `bash scripts/bench.sh --hostcalls`. Far less noisy than a load test on a shared machine,
# so it resolves changes of a fraction of a microsecond.
#
#   bash bench/hit-compute/run.sh                 # this tree
#   bash bench/hit-compute/run.sh /path/to/other  # and another source tree (git worktree), A/B,
#                                                 # interleaved three times
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
command -v node >/dev/null 2>&1 || { echo "node (Node.js) is needed" >&2; exit 1; }
build() { # <source tree> <name>: a copy of this crate pointed at that tree
  local dir="${TMPDIR:-/tmp}/hit-compute-$2"
  mkdir -p "$dir/src"
  sed "s|path = \"../..\"|path = \"$1\"|" "$here/Cargo.toml" > "$dir/Cargo.toml"
  cp "$here/src/main.rs" "$dir/src/"
  cp "$here/Cargo.lock" "$dir/" 2>/dev/null || true
  (cd "$dir" && cargo build -q --release --target wasm32-wasip1 && cargo build -q --release) >&2
  echo "$dir"
}
trees=("$(cd "$here/../.." && pwd)")
[ $# -ge 1 ] && trees+=("$(cd "$1" && pwd)")
dirs=()
for i in "${!trees[@]}"; do dirs+=("$(build "${trees[$i]}" "$i")"); done
for round in 1 2 3; do
  for i in "${!trees[@]}"; do
    echo "== ${trees[$i]} round $round"
    echo "V8:     $(node --no-warnings "$here/run.mjs" "${dirs[$i]}/target/wasm32-wasip1/release/hit-compute.wasm" | grep -E "hit|miss" | tr '\n' ' ')"
    echo "native: $("${dirs[$i]}/target/release/hit-compute" | grep -E "hit|miss" | tr '\n' ' ')"
  done
done
