#!/usr/bin/env bash
# API fuzzing: schemathesis (from PyPI) against the real server with its own OpenAPI document.
# Usage: tests/fuzz-api/run.sh [examples-per-operation]   (make fuzz-api: 100; .ci/run: 15)
# The server runs paused with private targets refused, so nothing the fuzzer invents is ever sent
# anywhere; everything is on 127.0.0.1 and bounded by the example count.
set -euo pipefail
cd "$(dirname "$0")/../.."
examples="${1:-100}"
venv=target/fuzz-api-venv
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==4.32.5"
fi
bin=target/debug/buildr-webhooks
[ -x "$bin" ] || cargo build --bin buildr-webhooks
data=$(mktemp -d)
out=$(mktemp)
BUILDR_STORAGE__PATH="$data" BUILDR_SERVER__BIND=127.0.0.1:0 BUILDR_ADMIN_TOKEN=fuzz-token \
BUILDR_DELIVERY__PAUSED=true BUILDR_DELIVERY__ALLOW_PRIVATE_TARGETS=false BUILDR_LOG__LEVEL=error \
  "$bin" serve --config config/test.toml >"$out" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$data" "$out"' EXIT
base=""
for _ in $(seq 1 300); do
  base=$(sed -n 's/^buildr-webhooks listening on //p' "$out" | head -1)
  [ -n "$base" ] && curl -sf "$base/readyz" >/dev/null && break
  sleep 0.1
done
[ -n "$base" ] || { echo "server did not start"; cat "$out"; exit 1; }
# Response-side checks: no 5xx, documented status codes, content types, bodies and headers match the
# spec. (Request-side acceptance is not checked: some rules depend on state — a URL must resolve to a
# public address, an account must exist — which JSON Schema cannot say.)
"$venv/bin/schemathesis" run "$base/api/2023-01/openapi.json" \
  --header "Authorization: Bearer fuzz-token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
  --max-examples "$examples" --seed 1 --no-color
