#!/usr/bin/env bash
# Checks that the build is reproducible: copies the tracked sources (as they are in the working
# tree) to a temporary directory elsewhere, builds there from scratch with scripts/build.sh,
# and compares the module's SHA-256 with dist/envoy_token_filter.wasm's. Fails on a difference.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
[ -f "$WASM" ] || bash scripts/build.sh >/dev/null
copy="$(mktemp -d)/envoy-token-filter-copy"
trap 'rm -rf "$(dirname "$copy")"' EXIT
mkdir -p "$copy"
git ls-files -z | xargs -0 cp --parents -t "$copy"
ln -s "$VENV" "$copy/.venv"
want="$(sha256sum "$WASM" | cut -d' ' -f1)"
got="$(cd "$copy" && bash scripts/build.sh 2>/dev/null | tail -1 | cut -d' ' -f1)"
if [ "$want" != "$got" ]; then
  echo "not reproducible: $want here, $got from a copy in $copy" >&2
  exit 1
fi
say "reproducible: $got from both"
