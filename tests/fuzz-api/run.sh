#!/usr/bin/env bash
# API fuzzing: schemathesis (from PyPI) against the real server with its own OpenAPI document.
# Usage: tests/fuzz-api/run.sh [examples-per-operation [schemathesis options…]]
#        (make fuzz-api: 100; .ci/run: 15; e.g. `run.sh 15 --phases stateful`)
# The server runs paused with private targets refused, so nothing the fuzzer invents is ever sent
# anywhere; everything is on 127.0.0.1 and bounded by the example count.
#
# Webhook-scoped operations (/webhooks/{id}/…) need real ids, which random strings never are. So the
# server is first started with private targets allowed to seed a few webhooks (pointing at a closed
# port on 127.0.0.1), events and a test delivery; then it is restarted on the same data with private
# targets refused. schemathesis's stateful phase then follows the document's links (the
# webhooks that GET /webhooks lists → every /webhooks/{id} operation; a test event → its attempts; a
# replay → its status), and schemathesis reuses the ids it has seen in responses in its other phases.
# At the end, coverage.py fails the run if a webhook-scoped operation never got a 2xx (never a real id).
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
pid=""
# On exit, stop the server and wait for it before removing its folder: a stopping server still writes its
# checkpoint there, and removing the folder under it fails the run.
cleanup() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$data" "$out"
}
trap cleanup EXIT

# start <allow private targets>: starts the server on $data, sets $pid and $base.
start() {
  : >"$out"
  BUILDR_STORAGE__PATH="$data" BUILDR_SERVER__BIND=127.0.0.1:0 BUILDR_ADMIN_TOKEN=fuzz-token \
  BUILDR_DELIVERY__PAUSED=true BUILDR_DELIVERY__ALLOW_PRIVATE_TARGETS="$1" BUILDR_LOG__LEVEL=error \
    "$bin" serve --config config/test.toml >"$out" 2>&1 &
  pid=$!
  base=""
  for _ in $(seq 1 300); do
    base=$(sed -n 's/^buildr-webhooks listening on //p' "$out" | head -1)
    [ -n "$base" ] && curl -sf "$base/readyz" >/dev/null && return 0
    sleep 0.1
  done
  echo "server did not start"; cat "$out"; exit 1
}
stop() {
  kill "$pid"
  wait "$pid" || true
  pid=""
}
# api <method> <path> [json body]: prints the response body; fails on a non-2xx answer.
api() {
  curl -sf -X "$1" "$base/api/2023-01$2" -H "Authorization: Bearer fuzz-token" \
    ${3:+-H 'Content-Type: application/json' -d "$3"}
}
field() { "$venv/bin/python" -c 'import json,sys; v=json.load(sys.stdin)
for k in sys.argv[1].split("."): v=v[k]
print(v)' "$1"; }

start true
webhooks=()
for i in 1 2 3; do
  webhooks+=("$(api POST /webhooks "{\"webhook\": {\"url\": \"http://127.0.0.1:9/fuzz/$i\"}}" | field webhook.id)")
done
for i in 1 2 3 4 5; do
  api POST /events "{\"event\": {\"type\": \"contact.create\", \"data\": {\"id\": $i, \"url\": \"https://app.buildr.example/contacts/$i\"}}}" >/dev/null
done
api POST "/webhooks/${webhooks[0]}/test" '{"type": "company.update"}' >/dev/null
stop
start false

# Response-side checks: no 5xx, documented status codes, content types, bodies and headers match the
# spec. (Request-side acceptance is not checked: some rules depend on state — a URL must resolve to a
# public address, an account must exist — which JSON Schema cannot say.)
mkdir -p target/fuzz-api
har=target/fuzz-api/requests.har
rm -f "$har"
rc=0
"$venv/bin/schemathesis" run "$base/api/2023-01/openapi.json" "${@:2}" \
  --header "Authorization: Bearer fuzz-token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
  --max-examples "$examples" --seed 1 --no-color \
  --report har --report-har-path "$har" || rc=$?
curl -sf "$base/api/2023-01/openapi.json" >target/fuzz-api/openapi.json
"$venv/bin/python" tests/fuzz-api/coverage.py target/fuzz-api/openapi.json "$har" \
  --require-prefix /api/2023-01/webhooks/ || rc=$?
exit $rc
