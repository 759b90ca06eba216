#!/usr/bin/env bash
# Runs the benchmark (bench/bench.py): builds the filter and the reference filters, installs
# wrk from apt if missing, and prints a table of every scenario against passthrough. Loopback
# only, about 5 minutes with the defaults. Extra arguments go to bench.py (--rounds, --duration,
# --connections, --only, --profile, --compare-wasm, --hostcalls); --memory runs bench/memory.py
# instead (the filter's resident memory beside the do-nothing filter, per worker VM and per
# 10 000 cached entries; `--memory --compare-wasm PATH` adds another build, `--side-by-side`
# stops after the first table, `--floor` measures only what the filter's share is made of:
# its module dormant against running, and generated code of several sizes, bench/code-ballast).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_tools
if ! command -v wrk >/dev/null 2>&1; then
  say "installing wrk from apt"
  if [ "$(id -u)" = 0 ]; then apt-get install -y -q wrk >&2; else sudo apt-get install -y -q wrk >&2; fi
fi
command -v taskset >/dev/null 2>&1 || { echo "taskset (util-linux) is required" >&2; exit 1; }
bash scripts/build.sh >/dev/null
say "building the reference filters (bench/noop-filter, bench/minimal-filter, bench/hostcall-filter)"
for f in noop-filter minimal-filter hostcall-filter; do
  cargo build --locked --release --target wasm32-wasip1 --manifest-path "bench/$f/Cargo.toml" >&2
done
if [ "${1:-}" = "--memory" ] && [[ " $* " == *" --floor "* ]]; then
  say "building this filter with dormant VMs and the code ballast (bench/code-ballast)"
  cargo build --locked --release --target wasm32-wasip1 --features bench-dormant \
    --target-dir target/bench-dormant >&2
  for n in 0 650 1300 2600; do
    BALLAST_FUNCTIONS=$n cargo build --locked --release --target wasm32-wasip1 \
      --manifest-path bench/code-ballast/Cargo.toml --target-dir "target/code-ballast-$n" >&2
  done
fi
if [ "${1:-}" = "--memory" ]; then
  say "measuring resident memory (bench/memory.py)"
  PYTHONPATH="$ROOT/tests" exec "$VENV/bin/python" bench/memory.py "${@:2}"
fi
say "running the benchmark"
PYTHONPATH="$ROOT/tests" exec "$VENV/bin/python" bench/bench.py "$@"
