#!/usr/bin/env bash
# Runs the demo: builds the filter, installs what is missing, starts the demo token service,
# the echo API and Envoy with the filter on 127.0.0.1:10000 (publish API on :10001), and prints
# what to curl. Ctrl-C stops all.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_tools
bash scripts/build.sh

for port in 10000 10001 9901 18080 18081; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port on 127.0.0.1 is already in use: stop what uses it first" >&2; exit 1
  fi
done

"$VENV/bin/python" -u tests/harness/services.py --echo-port 18080 --token-port 18081 --sign ES256 &
services=$!
trap 'kill $services 2>/dev/null || true' EXIT

cat <<'TXT'

  Envoy is starting with the token filter on http://127.0.0.1:10000 (publish API on :10001,
  admin on :9901). In another terminal, try:

  Phantom tokens (opaque in, JWT out):
    curl -i http://127.0.0.1:10000/hello                                     # 401, no token
    curl -i -H 'Authorization: Bearer my-opaque-token' http://127.0.0.1:10000/hello
        # 200: the echo API shows the JWT it received instead of the opaque token
    curl -i -H 'Authorization: Bearer inactive-token' http://127.0.0.1:10000/hello   # 401 invalid_token
    curl -i -H 'Authorization: Bearer noscope-token' http://127.0.0.1:10000/hello    # 403 insufficient_scope
    curl -i -H 'Authorization: Bearer e503-token' http://127.0.0.1:10000/hello       # 503 token service down

  Split tokens (the client keeps only the JWT's signature):
    SIG=$(curl -s -d grant_type=client_credentials http://127.0.0.1:10000/oauth/token | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
    echo "$SIG"                                                              # the signature only
    curl -i -H "Authorization: Bearer $SIG" http://127.0.0.1:10000/hello    # 200: the API gets the whole JWT
    KEY=$(printf %s "$SIG" | openssl dgst -sha256 -binary | base64)
    curl -i -X DELETE -H 'Authorization: Bearer demo-only-publisher-secret' \
         -d "{\"signature_hash\": \"$KEY\"}" http://127.0.0.1:10001/_split-token  # 204: revoked
    curl -i -H "Authorization: Bearer $SIG" http://127.0.0.1:10000/hello    # 401 invalid_token

  Every JWT is verified (ES256, keys from the token service's /jwks) before it is forwarded:
    curl -s http://127.0.0.1:9901/stats | grep -E 'token_filter.(verif|jwks)'  # verification counters
    curl -s http://127.0.0.1:9901/stats | grep token_filter                 # all the filter's counters

  Below: what the token service and the API receive. Ctrl-C stops everything.

TXT
# Envoy stays a child of this shell (it dies with its parent: PR_SET_PDEATHSIG).
"$ENVOY_BIN" -c envoy/split-token.yaml --disable-hot-restart --concurrency 2 \
  --log-level warn --component-log-level wasm:info
