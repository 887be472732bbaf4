#!/usr/bin/env bash
# Benchmark Leveret against RabbitMQ (Debian's package) on this machine, in one run.
#
# Each scenario runs leveret-perf against Leveret, then against RabbitMQ, and prints both with
# their ratio. Throughput depends on the client (lapin) as much as on the broker; the broker's own
# CPU time per message (from /proc) does not, so it is the figure that compares the brokers.
#
#   interop/bench.sh            # full matrix, 10 s per run
#   BENCH_TIME=5 interop/bench.sh
#   BENCH_QUEUED=10000000 interop/bench.sh   # the memory row with 10,000,000 queued messages
set -euo pipefail
cd "$(dirname "$0")/.."
T=${BENCH_TIME:-10}
OUT=target/bench
mkdir -p "$OUT"

cargo build --release --quiet --bin leveret --bin leveret-perf
PERF=target/release/leveret-perf

if ! command -v rabbitmq-server >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
fi
rabbitmqctl status >/dev/null 2>&1 || rabbitmq-server -detached
# A freshly detached node is not reachable at once: await_startup fails until it registers.
for _ in $(seq 1 60); do rabbitmqctl await_startup >/dev/null 2>&1 && break; sleep 1; done
RABBIT_PID=$(pgrep -f 'beam.smp.*rabbit' | head -n1)
RABBIT_VERSION=$(rabbitmqctl version 2>/dev/null || echo "?")

rm -rf "$OUT/data"
target/release/leveret --bind 127.0.0.1 --port 5673 --management-port 0 --prometheus-port 0 --data-dir "$OUT/data" >"$OUT/leveret.log" 2>&1 &
LEVERET_PID=$!
trap 'kill $LEVERET_PID 2>/dev/null || true' EXIT
sleep 1

uri() { case $1 in leveret) echo "amqp://guest:guest@127.0.0.1:5673/%2f";; rabbitmq) echo "amqp://guest:guest@127.0.0.1:5672/%2f";; esac; }
pid() { case $1 in leveret) echo $LEVERET_PID;; rabbitmq) echo $RABBIT_PID;; esac; }
field() { sed -n "s/.*$1=\([0-9.a-z]*\).*/\1/p" <<<"$2"; }
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b+0 == 0) print "-"; else printf "%.2f", a/b }'; }

# Memory first, while both brokers are fresh (later scenarios leave allocator high-water marks).
for b in leveret rabbitmq; do
  before=$(rss_mb "$(pid $b)")
  $PERF --uri "$(uri $b)" --prefix rss --publish-only --pmessages "${BENCH_QUEUED:-1000000}" --confirm 1000 >/dev/null 2>&1
  sleep 2
  after=$(rss_mb "$(pid $b)")
  eval "rss_$b=$after; rss0_$b=$before"
  $PERF --uri "$(uri $b)" --prefix rss --publish-only --pmessages 0 --cleanup >/dev/null 2>&1 || true
done

printf '| scenario | metric | Leveret | RabbitMQ %s | Leveret/RabbitMQ |\n|---|---|---|---|---|\n' "$RABBIT_VERSION"
scenario() {  # name, metrics (comma-separated), then leveret-perf flags
  local name=$1 metrics=$2; shift 2
  local l r
  l=$($PERF --uri "$(uri leveret)" --broker-pid "$(pid leveret)" --time "$T" "$@" 2>/dev/null | grep '^RESULT')
  r=$($PERF --uri "$(uri rabbitmq)" --broker-pid "$(pid rabbitmq)" --time "$T" "$@" 2>/dev/null | grep '^RESULT')
  echo "$name leveret: $l" >>"$OUT/results.log"
  echo "$name rabbitmq: $r" >>"$OUT/results.log"
  for m in ${metrics//,/ }; do
    printf '| %s | %s | %s | %s | %s |\n' "$name" "$m" "$(field $m "$l")" "$(field $m "$r")" "$(ratio "$(field $m "$l")" "$(field $m "$r")")"
  done
}

# Throughput: as fast as the client goes (same client for both brokers).
scenario "1p-1q-1c 16B autoack, unlimited" recv_rate,cpu_us_per_msg --autoack
# CPU per message at a rate both brokers sustain, so neither runs a backlog.
scenario "1p-1q-1c 16B autoack, 20k msg/s" cpu_us_per_msg,p99_us --autoack --rate 20000
scenario "1p-1q-1c 16B ack qos100, 20k msg/s" cpu_us_per_msg,p99_us --qos 100 --rate 20000
scenario "10p-10q-10c 16B autoack, 10x2k msg/s" cpu_us_per_msg,p99_us --producers 10 --consumers 10 --queues 10 --autoack --rate 2000
scenario "fanout 1p-10q-10c 16B autoack, 2k msg/s in" cpu_us_per_msg,p99_us --consumers 10 --queues 10 --fanout --autoack --rate 2000
scenario "1p-1q-1c 16B autoack, 1k msg/s" p99_us,cpu_us_per_msg --rate 1000 --autoack
# Fairness: publishers flood faster than a broker can take in; the consumers must still be fed.
scenario "2p-1q-2c 16B ack qos100, publishers unlimited" sent_rate,recv_rate --producers 2 --consumers 2 --qos 100 --prefix flood --cleanup

# Durability: Leveret fsyncs (group commit) before confirming; RabbitMQ's classic queues do not.
scenario "persistent 1KB durable, confirm 100, ack qos100" recv_rate,cpu_us_per_msg --persistent --size 1000 --confirm 100 --qos 100 --prefix dur
# Fill and drain (leveret-perf --depth): rates, peak memory, and the data directory's size full
# and after the drain.
RABBIT_DIR=$(rabbitmqctl eval 'io:format("~s", [rabbit_mnesia:dir()]).' 2>/dev/null | head -n1 | sed 's/ok$//')
dir_of() { case $1 in leveret) echo "$OUT/data";; rabbitmq) echo "$RABBIT_DIR";; esac; }
declare -A DEPTH
for b in leveret rabbitmq; do
  DEPTH[$b]=$($PERF --uri "$(uri $b)" --broker-pid "$(pid $b)" --prefix fill --persistent --size 1000 --confirm 100 --qos 100 \
    --depth "${BENCH_FILL:-300000}" --data-dir "$(dir_of $b)" 2>/dev/null | grep '^DEPTH')
  echo "depth $b: ${DEPTH[$b]}" >>"$OUT/results.log"
done
for m in fill_rate drain_rate rss_peak_mb disk_full_mb disk_drained_mb; do
  l=$(field $m "${DEPTH[leveret]}"); r=$(field $m "${DEPTH[rabbitmq]}")
  printf '| fill %s persistent 1KB (confirm 100), then drain (ack qos100) | %s | %s | %s | %s |\n' "${BENCH_FILL:-300000}" "$m" "$l" "$r" "$(ratio "$l" "$r")"
done

printf '| %s queued 16B transient | RSS MB (idle before) | %s (%s) | %s (%s) | %s |\n' "${BENCH_QUEUED:-1000000}" \
  "$rss_leveret" "$rss0_leveret" "$rss_rabbitmq" "$rss0_rabbitmq" "$(ratio "$rss_leveret" "$rss_rabbitmq")"
