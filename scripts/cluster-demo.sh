#!/usr/bin/env bash
# `make cluster-demo`: three NATS servers (a JetStream cluster, config/nats-{1,2,3}.conf) and three
# buildr-webhooks nodes (config/cluster.toml) on this machine; prints their addresses and stops every
# process it started (by PID) on Ctrl-C. State goes under ./data (nats-1..3, node-a..c).
set -euo pipefail
cd "$(dirname "$0")/.."
NATS=target/nats-venv/bin/nats-server
BIN=${BUILDR_BIN:-target/release/buildr-webhooks}
TOKEN=${BUILDR_ADMIN_TOKEN:-adm_demo_$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')}
pids=()
# The nodes first (they hand their shard leases back through NATS), then the NATS servers.
stop() {
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
}
trap stop EXIT INT TERM
mkdir -p data
for i in 1 2 3; do
  "$NATS" -c "config/nats-$i.conf" >"data/nats-$i.log" 2>&1 &
  pids+=($!)
done
# Wait until JetStream answers on every server (bounded).
for i in 1 2 3; do
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$((8221 + i))/healthz" >/dev/null && break
    sleep 0.2
  done
done
n=0
for node in a b c; do
  n=$((n + 1))
  BUILDR_CLUSTER__NODE_ID="node-$node" BUILDR_SERVER__BIND="127.0.0.1:$((8080 + n))" \
    BUILDR_STORAGE__PATH="./data/node-$node" BUILDR_ADMIN_TOKEN="$TOKEN" \
    "$BIN" serve --config config/cluster.toml >"data/node-$node.log" 2>&1 &
  pids+=($!)
done
for n in 1 2 3; do
  for _ in $(seq 1 150); do
    curl -sf "http://127.0.0.1:$((8080 + n))/readyz" >/dev/null && break
    sleep 0.2
  done
done
cat <<INFO
NATS (JetStream, R3, sync_interval: always): nats://127.0.0.1:4222, :4223, :4224 (logs: data/nats-*.log)
buildr-webhooks nodes: http://127.0.0.1:8081 (node-a), :8082 (node-b), :8083 (node-c) (logs: data/node-*.log)
admin token (every node): $TOKEN
  curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8081/api/2023-01/cluster
Ctrl-C stops all six processes.
INFO
wait
