#!/usr/bin/env bash
# The differential fuzzer (interop/differential/README.md).
#   interop/differential/run.sh                     # replay the recorded RabbitMQ traces against Leveret (CI)
#   interop/differential/run.sh --against rabbitmq  # re-record the fixtures from Debian's RabbitMQ 3.10.8
#   interop/differential/run.sh --live 0:10000      # both brokers live, every difference to target/differential
# Environment: SEEDS (fixture seeds, default 0:400), JOBS (parallel sessions, default 8).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
HERE=$ROOT/interop/differential
# shellcheck source=interop/lib.sh
. "$ROOT/interop/lib.sh"
MODE=replay
case "${1:-}" in
  --against) [ "${2:-}" = rabbitmq ] || { echo "--against rabbitmq" >&2; exit 2; }; MODE=record ;;
  --live) MODE=live; LIVE_SEEDS=${2:?--live FROM:TO} ;;
  "") ;;
  *) echo "unknown argument $1" >&2; exit 2 ;;
esac
SEEDS=${SEEDS:-0:400}
JOBS=${JOBS:-8}
LOGS=$ROOT/target/differential
mkdir -p "$LOGS"

BROKER_PID=""
cleanup() { if [ -n "$BROKER_PID" ]; then kill "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT

start_rabbitmq() {
  apt_install rabbitmq-server
  rabbitmqctl status >/dev/null 2>&1 || rabbitmq-server -detached
  for _ in $(seq 1 60); do rabbitmqctl await_startup >/dev/null 2>&1 && break; sleep 1; done
  rabbitmq-plugins enable rabbitmq_management >/dev/null
  for _ in $(seq 1 60); do curl -sf -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null && break; sleep 1; done
}

start_leveret() {
  local bin="${LEVERET_BIN:-$ROOT/target/debug/leveret}"
  [ -x "$bin" ] || cargo build --quiet --bin leveret
  rm -rf "$LOGS/data"
  "$bin" --bind 127.0.0.1 --port 0 --management-port 0 --prometheus-port 0 --data-dir "$LOGS/data" \
    >"$LOGS/broker.log" 2>&1 &
  BROKER_PID=$!
  await_leveret "$LOGS/broker.log" "$BROKER_PID" || exit 1
  LEVERET_PORT=$(sed -n 's/.*ready for AMQP.*local=[0-9.]*:\([0-9]*\).*/\1/p' "$LOGS/broker.log" | head -n1)
  LEVERET_HTTP=$(sed -n 's/.*management API listening.*http=[0-9.]*:\([0-9]*\).*/\1/p' "$LOGS/broker.log" | head -n1)
}

case "$MODE" in
  replay)
    start_leveret
    python3 "$HERE/difftool.py" replay --jobs "$JOBS" --leveret "127.0.0.1:$LEVERET_PORT" \
      --leveret-http "127.0.0.1:$LEVERET_HTTP" --fixtures "$HERE/fixtures.jsonl" --pending "$HERE/pending.txt" \
      --quiet 0.05
    ;;
  record)
    start_rabbitmq
    python3 "$HERE/difftool.py" record --jobs "$JOBS" --seeds "$SEEDS" --fixtures "$HERE/fixtures.jsonl"
    ;;
  live)
    start_rabbitmq
    start_leveret
    python3 "$HERE/difftool.py" live --jobs "$JOBS" --seeds "$LIVE_SEEDS" --out "$LOGS" \
      --leveret "127.0.0.1:$LEVERET_PORT" --leveret-http "127.0.0.1:$LEVERET_HTTP" ${SHRINK:+--shrink}
    ;;
esac
