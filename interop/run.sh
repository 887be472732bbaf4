#!/usr/bin/env bash
# Run the client interop suites against a broker and print one line per suite.
#
#   interop/run.sh                     # Leveret, built from this tree, on an ephemeral port
#   interop/run.sh --against rabbitmq  # RabbitMQ from Debian's packages, on 5672
#
# Suites install their clients into a cache outside the tree ($LEVERET_INTEROP_CACHE,
# default ~/.cache/leveret-interop). Logs go to target/interop/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
AGAINST=leveret
if [ "${1:-}" = "--against" ]; then AGAINST="${2:?--against leveret|rabbitmq}"; fi
CACHE="${LEVERET_INTEROP_CACHE:-$HOME/.cache/leveret-interop}"
LOGS="$ROOT/target/interop/$AGAINST"
mkdir -p "$CACHE" "$LOGS"

PIKA_VERSION=1.4.4
PYTEST_VERSION=9.2.0
VENV="$CACHE/venv-pika-$PIKA_VERSION"
if [ ! -x "$VENV/bin/pytest" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "pika==$PIKA_VERSION" "pytest==$PYTEST_VERSION"
fi

# rabbitmqadmin from Debian's rabbitmq-server package: only the script is needed, not Erlang.
ADMIN="$CACHE/rabbitmqadmin-3.10.8/usr/bin/rabbitmqadmin"
if [ ! -f "$ADMIN" ]; then
  ( cd "$CACHE" && rm -f rabbitmq-server_*.deb \
      && { apt-get download rabbitmq-server 2>/dev/null || { apt-get update -qq && apt-get download rabbitmq-server; }; } \
      && dpkg-deb -x rabbitmq-server_*.deb "$CACHE/rabbitmqadmin-3.10.8" && rm -f rabbitmq-server_*.deb )
fi

BROKER_PID=""
cleanup() { if [ -n "$BROKER_PID" ]; then kill "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT

case "$AGAINST" in
  leveret)
    BIN="${LEVERET_BIN:-$ROOT/target/debug/leveret}"
    [ -x "$BIN" ] || cargo build --quiet --bin leveret
    rm -rf "$LOGS/data" "$LOGS/tls"
    # A CA, a server certificate for localhost and a client certificate for guest (EXTERNAL).
    TLS_DIR="$LOGS/tls"; mkdir -p "$TLS_DIR"
    (
      cd "$TLS_DIR"
      openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=interop CA" -keyout ca.key -out ca.pem
      openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
      printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > san.ext
      openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext -out server.pem
      openssl req -newkey rsa:2048 -nodes -subj "/CN=guest" -keyout client.key -out client.csr
      printf 'extendedKeyUsage=clientAuth\n' > client.ext
      openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile client.ext -out client.pem
    ) >"$LOGS/tls.log" 2>&1
    cat >"$LOGS/leveret.conf" <<CONF
listeners.ssl.default = 127.0.0.1:0
ssl_options.certfile = $TLS_DIR/server.pem
ssl_options.keyfile = $TLS_DIR/server.key
ssl_options.cacertfile = $TLS_DIR/ca.pem
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
CONF
    "$BIN" --config "$LOGS/leveret.conf" --bind 127.0.0.1 --port 0 --management-port 0 --prometheus-port 0 --data-dir "$LOGS/data" >"$LOGS/broker.log" 2>&1 &
    BROKER_PID=$!
    PORT=""
    for _ in $(seq 1 100); do
      PORT=$(sed -n 's/.*ready for AMQP.*local=[0-9.]*:\([0-9]*\).*/\1/p' "$LOGS/broker.log" | head -n1)
      [ -n "$PORT" ] && break
      sleep 0.1
    done
    [ -n "$PORT" ] || { echo "leveret did not start:"; cat "$LOGS/broker.log"; exit 1; }
    MGMT_PORT=$(sed -n 's/.*management API listening.*http=[0-9.]*:\([0-9]*\).*/\1/p' "$LOGS/broker.log" | head -n1)
    AMQPS_PORT=$(sed -n 's/.*over TLS.*amqps=[0-9.]*:\([0-9]*\).*/\1/p' "$LOGS/broker.log" | head -n1)
    export AMQPS_PORT TLS_DIR
    export LEVERET_BIN="$BIN"
    ;;
  rabbitmq)
    if ! command -v rabbitmq-server >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
    fi
    rabbitmqctl status >/dev/null 2>&1 || rabbitmq-server -detached
    # A freshly detached node is not reachable at once: await_startup fails until it registers.
    for _ in $(seq 1 60); do rabbitmqctl await_startup >/dev/null 2>&1 && break; sleep 1; done
    PORT=5672
    rabbitmq-plugins enable rabbitmq_management >/dev/null
    MGMT_PORT=15672
    ;;
  *) echo "unknown broker: $AGAINST" >&2; exit 2 ;;
esac

total_pass=0; total_fail=0; total_skip=0; status=0
run_suite() {  # name, command...
  local name=$1; shift
  local log="$LOGS/$name.log"
  if timeout 600 "$@" >"$log" 2>&1; then :; else status=1; fi
  local line pass fail skip
  line=$(grep -E '^[=]* ?[0-9]+ (passed|failed)|(passed|failed|skipped|error)[^ ]* in ' "$log" | tail -n1 || true)
  pass=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+' || echo 0)
  fail=$(grep -oE '[0-9]+ (failed|error)' <<<"$line" | awk '{s+=$1} END {print s+0}' || true)
  skip=$(grep -oE '[0-9]+ skipped' <<<"$line" | grep -oE '[0-9]+' || echo 0)
  : "${fail:=0}"
  echo "$name: $pass passed, $fail failed, $skip skipped"
  total_pass=$((total_pass + pass)); total_fail=$((total_fail + fail)); total_skip=$((total_skip + skip))
  if [ "$status" -ne 0 ] && [ "$fail" -eq 0 ]; then tail -n 30 "$log"; fi
}

export AMQP_HOST=127.0.0.1 AMQP_PORT=$PORT MGMT_PORT BROKER_UNDER_TEST=$AGAINST
run_suite pika "$VENV/bin/pytest" -q -p no:cacheprovider "$ROOT/interop/python"
RABBITMQADMIN="$ADMIN" MGMT_PORT="$MGMT_PORT" \
  run_suite rabbitmqadmin "$VENV/bin/pytest" -q -p no:cacheprovider "$ROOT/interop/rabbitmqadmin"

echo "total: $total_pass passed, $total_fail failed, $total_skip skipped"
if [ "$status" -ne 0 ]; then
  for f in "$LOGS"/*.log; do echo "--- $f"; tail -n 40 "$f"; done
fi
exit $status
