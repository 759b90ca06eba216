#!/usr/bin/env bash
# Runs every test: formatting, clippy (host and wasm), unit tests, the release build (checked
# to be reproducible), the token-filter command over every example configuration,
# Envoy's validation of every config in envoy/, and the end-to-end suite against a real Envoy.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_tools
ensure_oidc_provider
ensure_redis_webdis
ensure_registry
ensure_chromium
say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy (host)"
cargo clippy --locked --all-targets --features cli -- -D warnings
say "cargo clippy (wasm32-wasip1)"
cargo clippy --locked --release --target wasm32-wasip1 -- -D warnings
say "cargo test"
cargo test --locked --features cli
say "release build (the module, both OCI images, SHA256SUMS)"
bash scripts/release.sh
say "reproducible: the same build from a copy of the sources elsewhere"
bash scripts/reproduce.sh
say "token-filter check: every filter configuration in envoy/ and deploy/"
# The other manifests in deploy/ (ServiceEntry, Gateway, AuthorizationPolicy, the header rules)
# hold no filter configuration, and `check` refuses a file with nothing to check.
dist/token-filter check envoy/*.yaml deploy/istio/wasmplugin-*.yaml \
  deploy/envoy-gateway/extension-policy.yaml
say "envoy --mode validate for every config in envoy/ (Envoy: $ENVOY_BIN)"
for f in envoy/*.yaml; do
  "$ENVOY_BIN" --mode validate -c "$f" --disable-hot-restart --log-level error >/dev/null
  echo "  $f OK"
done
say "end-to-end tests against a real Envoy"
"$VENV/bin/python" -m pytest -q tests/e2e "$@"
