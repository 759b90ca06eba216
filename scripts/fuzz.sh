#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (default 60 s each; FUZZ_SECONDS to change,
# target names as arguments to pick). Needs the nightly toolchain and cargo-fuzz (installed from
# crates.io if missing). New corpus entries go to a scratch directory, not into the committed
# seeds. A crash fails the script and its input is copied to fuzz/regressions/<target>/, which
# `cargo test` replays from then on (tests/fuzz_regressions.rs).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT/fuzz"
SECONDS_EACH="${FUZZ_SECONDS:-60}"
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(bearer jwt introspection publish token_response config jwks_verify dpop_proof)
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal >&2
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked >&2
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
status=0
for t in "${TARGETS[@]}"; do
  say "fuzzing $t for ${SECONDS_EACH}s"
  mkdir -p "$WORK/$t"
  if ! cargo +nightly fuzz run "$t" "$WORK/$t" "corpus/$t" -- \
      -max_total_time="$SECONDS_EACH" -max_len=70000 -timeout=10 -print_final_stats=1 \
      2> "$WORK/$t.log"; then
    status=1
    mkdir -p "regressions/$t"
    cp artifacts/"$t"/* "regressions/$t/" 2>/dev/null || true
    grep -E "panicked|ERROR|SUMMARY" "$WORK/$t.log" | head -5 >&2
    say "$t: crash; input kept in fuzz/regressions/$t/"
  fi
  grep -E "^stat::number_of_executed_units|^stat::new_units_added" "$WORK/$t.log" | tr '\n' ' ' >&2
  echo >&2
done
exit $status
