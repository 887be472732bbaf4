#!/usr/bin/env bash
# Run a command in a private network namespace where Leveret listens on the standard port.
#
#   interop/netns.sh LEVERET_BIN WORK_DIR -- command...
#
# Some suites hard-code `amqp://localhost` (port 5672, over IPv4 and IPv6) in tests that cannot
# be given a URL: amqplib's callback-API and connect tests. Inside a fresh namespace port 5672 is
# ours alone, so those tests reach Leveret without colliding with anything on the machine (a
# RabbitMQ, another CI job). Needs root or unprivileged user namespaces (`unshare -rn`).
# NETNS_MANAGEMENT_PORT=15672 puts the HTTP API on its standard port too (default: any).
set -euo pipefail
BIN=$1 WORK=$2
shift 2
[ "${1:-}" = "--" ] && shift

if [ -z "${LEVERET_NETNS_INSIDE:-}" ]; then
  if [ "$(id -u)" -eq 0 ]; then unshare=(unshare --net); else unshare=(unshare --map-root-user --net); fi
  LEVERET_NETNS_INSIDE=1 exec "${unshare[@]}" "$0" "$BIN" "$WORK" -- "$@"
fi

ip link set lo up
rm -rf "$WORK/data"; mkdir -p "$WORK"
cat >"$WORK/leveret.conf" <<CONF
listeners.tcp.default = 127.0.0.1:5672
listeners.tcp.ipv6 = [::1]:5672
CONF
"$BIN" --config "$WORK/leveret.conf" --management-port "${NETNS_MANAGEMENT_PORT:-0}" --prometheus-port 0 \
  --data-dir "$WORK/data" >"$WORK/broker.log" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null || true; wait $broker 2>/dev/null || true' EXIT
# shellcheck source=interop/lib.sh
. "$(dirname "$0")/lib.sh"
await_leveret "$WORK/broker.log" $broker 2
"$@"
