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
# The newest amqplib whose published package ships its test/ directory (2.2.1 and later do not).
AMQPLIB_VERSION=2.2.0
# The lapin our own tests use; its crates.io source carries tests/.
LAPIN_VERSION=4.12.3
# amqp091-go comes from Debian's golang-github-rabbitmq-amqp091-go-dev (1.5.0 on Debian 12).
# The management API's Rust client; its crates.io source carries its integration tests, which
# talk to localhost:15672 and :5672 (Leveret runs in a private network namespace for them).
HTTP_CLIENT_VERSION=0.93.0
SUITE_TIMEOUT=${SUITE_TIMEOUT:-600}
# shellcheck source=interop/lib.sh
. "$ROOT/interop/lib.sh"

VENV="$CACHE/venv-pika-$PIKA_VERSION"
ADMIN="$CACHE/rabbitmqadmin-3.10.8/usr/bin/rabbitmqadmin"
AMQPLIB_DIR="$CACHE/amqplib-$AMQPLIB_VERSION"
LAPIN_DIR="$CACHE/lapin-$LAPIN_VERSION"
# Both runtimes its tests cover; rustls on ring rather than the default aws-lc-rs, whose C build
# needs cmake (no integration test uses TLS).
# --no-fail-fast: a failing test binary must not hide the ones after it.
LAPIN_TEST=(env -C "$LAPIN_DIR" CARGO_TARGET_DIR="$CACHE/lapin-target" cargo test --locked --no-fail-fast
  --no-default-features --features tokio,smol,rustls--ring --test '*')
HTTP_CLIENT_DIR="$CACHE/rabbitmq_http_client-$HTTP_CLIENT_VERSION"
# One test at a time: some of its tests close every connection of guest, which others hold.
# The tests listed in http-client-skips.txt fail against RabbitMQ 3.10.8 too and are skipped.
HTTP_CLIENT_SKIPS=()
while IFS='|' read -r test _; do
  test=${test%% }; [ -n "$test" ] && [ "${test#\#}" = "$test" ] && HTTP_CLIENT_SKIPS+=(--skip "$test")
done <"$ROOT/interop/http-client-skips.txt"
HTTP_CLIENT_TEST=(env -C "$HTTP_CLIENT_DIR" CARGO_TARGET_DIR="$CACHE/http-client-target" cargo test --offline --locked
  --features async,blocking,native-tls --test integration)
# Debian's packaged source is the one version there is; the path names no version.
GO_PATH="$CACHE/gopath-amqp091-go"
GO_DIR="$GO_PATH/src/github.com/rabbitmq/amqp091-go"
GO_TEST=(env -C "$GO_DIR" GO111MODULE=off GOPATH="$GO_PATH:/usr/share/gocode" GOCACHE="$CACHE/go-build"
  GOFLAGS= go test -tags integration -count=1)

install_pika() {
  if [ ! -x "$VENV/bin/pytest" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "pika==$PIKA_VERSION" "pytest==$PYTEST_VERSION"
  fi
}

install_rabbitmqadmin() {  # from Debian's rabbitmq-server package: the script only, not Erlang
  if [ ! -f "$ADMIN" ]; then
    ( cd "$CACHE" && rm -f rabbitmq-server_*.deb && apt_retry download rabbitmq-server \
        && dpkg-deb -x rabbitmq-server_*.deb "$CACHE/rabbitmqadmin-3.10.8" && rm -f rabbitmq-server_*.deb )
  fi
}

install_amqplib() {  # the npm package, with the dev dependencies its tests use
  command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
  if [ ! -d "$AMQPLIB_DIR/node_modules/claire" ]; then
    rm -rf "$AMQPLIB_DIR" "$CACHE/amqplib-pack"; mkdir -p "$CACHE/amqplib-pack" "$AMQPLIB_DIR"
    ( cd "$CACHE/amqplib-pack" && npm pack --silent "amqplib@$AMQPLIB_VERSION" >/dev/null \
        && tar xzf "amqplib-$AMQPLIB_VERSION.tgz" -C "$AMQPLIB_DIR" --strip-components=1 )
    rm -rf "$CACHE/amqplib-pack"
    ( cd "$AMQPLIB_DIR" && npm install --silent --ignore-scripts --no-audit --no-fund )
  fi
}

install_lapin() {  # the crate's source from crates.io, its tests built once into the cache
  if [ ! -f "$LAPIN_DIR/Cargo.toml" ]; then
    # Unpacked beside, then moved into place: a download cut short leaves no half tree behind.
    rm -rf "$LAPIN_DIR" "$LAPIN_DIR.part"; mkdir -p "$LAPIN_DIR.part"
    curl -sSfL "https://static.crates.io/crates/lapin/lapin-$LAPIN_VERSION.crate" \
      | tar xz -C "$LAPIN_DIR.part" --strip-components=1
    mv "$LAPIN_DIR.part" "$LAPIN_DIR"
  fi
  "${LAPIN_TEST[@]}" --no-run --quiet
}

install_http_client() {  # the crate's source from crates.io; native-tls needs OpenSSL's headers
  apt_install libssl-dev pkg-config
  if [ ! -f "$HTTP_CLIENT_DIR/Cargo.toml" ]; then
    rm -rf "$HTTP_CLIENT_DIR" "$HTTP_CLIENT_DIR.part"; mkdir -p "$HTTP_CLIENT_DIR.part"
    curl -sSfL "https://static.crates.io/crates/rabbitmq_http_client/rabbitmq_http_client-$HTTP_CLIENT_VERSION.crate" \
      | tar xz -C "$HTTP_CLIENT_DIR.part" --strip-components=1
    mv "$HTTP_CLIENT_DIR.part" "$HTTP_CLIENT_DIR"
  fi
  # Fetched here, so that the run (offline, inside the namespace) needs no network.
  env -C "$HTTP_CLIENT_DIR" cargo fetch --locked --quiet
  "${HTTP_CLIENT_TEST[@]}" --no-run --quiet
}

install_amqp091_go() {  # Debian's source package, built in GOPATH mode with Debian's goleak
  apt_install golang-go golang-github-rabbitmq-amqp091-go-dev golang-uber-goleak-dev
  rm -rf "$GO_PATH"; mkdir -p "$(dirname "$GO_DIR")"
  cp -r /usr/share/gocode/src/github.com/rabbitmq/amqp091-go "$GO_DIR"
  dpkg-query -W -f='amqp091-go ${Version} (Debian golang-github-rabbitmq-amqp091-go-dev)\n' \
    golang-github-rabbitmq-amqp091-go-dev
  "${GO_TEST[@]}" -run '^$' . # compile only
}

# Each installer runs in a subshell in the background so that `set -e` holds inside it (it is
# suspended in any command tested by `if` or `||`).
for step in pika rabbitmqadmin amqplib lapin amqp091_go http_client; do
  rc=0
  ( "install_$step" ) >"$LOGS/install-$step.log" 2>&1 &
  wait $! || rc=$?
  if [ "$rc" -ne 0 ]; then echo "installing $step failed:"; tail -n 40 "$LOGS/install-$step.log"; exit 1; fi
done

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
    await_leveret "$LOGS/broker.log" "$BROKER_PID" || exit 1
    PORT=$(sed -n 's/.*ready for AMQP.*local=[0-9.]*:\([0-9]*\).*/\1/p' "$LOGS/broker.log" | head -n1)
    MGMT_PORT=$(sed -n 's/.*management API listening.*http=[0-9.]*:\([0-9]*\).*/\1/p' "$LOGS/broker.log" | head -n1)
    AMQPS_PORT=$(sed -n 's/.*over TLS.*amqps=[0-9.]*:\([0-9]*\).*/\1/p' "$LOGS/broker.log" | head -n1)
    export AMQPS_PORT TLS_DIR
    export LEVERET_BIN="$BIN"
    ;;
  rabbitmq)
    apt_install rabbitmq-server
    rabbitmqctl status >/dev/null 2>&1 || rabbitmq-server -detached
    # A freshly detached node is not reachable at once: await_startup fails until it registers.
    for _ in $(seq 1 60); do rabbitmqctl await_startup >/dev/null 2>&1 && break; sleep 1; done
    PORT=5672
    rabbitmq-plugins enable rabbitmq_management >/dev/null
    MGMT_PORT=15672
    ;;
  *) echo "unknown broker: $AGAINST" >&2; exit 2 ;;
esac

TOTALS="$LOGS/totals"; : >"$TOTALS"
EXPECTED=()
[ "$AGAINST" = leveret ] && EXPECTED=(--expected "$ROOT/interop/expected-failures.txt")
status=0
run_suite() {  # name, log format, command...
  local name=$1 format=$2 rc=0
  shift 2
  timeout "$SUITE_TIMEOUT" "$@" >"$LOGS/$name.log" 2>&1 || rc=$?
  [ "$rc" -eq 124 ] && echo "(timed out after ${SUITE_TIMEOUT}s)" >>"$LOGS/$name.log"
  python3 "$ROOT/interop/summarize.py" --suite "$name" --format "$format" --log "$LOGS/$name.log" \
    --exit-code "$rc" "${EXPECTED[@]}" --totals "$TOTALS" || status=1
}

export AMQP_HOST=127.0.0.1 AMQP_PORT=$PORT MGMT_PORT BROKER_UNDER_TEST=$AGAINST
PYTEST=("$VENV/bin/pytest" -q -rfEs -p no:cacheprovider)
run_suite pika pytest "${PYTEST[@]}" "$ROOT/interop/python"
RABBITMQADMIN="$ADMIN" run_suite rabbitmqadmin pytest "${PYTEST[@]}" "$ROOT/interop/rabbitmqadmin"

# amqplib's own runner; Node 20 applies --test-timeout to each test file as a whole, so the
# package's 1 s (meant for Node 22's per-test timeout) cancels whole files even against RabbitMQ.
NODE_TEST=(env -C "$AMQPLIB_DIR" URL=amqp://localhost:5672 node --test --test-timeout=30000 --test-reporter=tap)
if [ "$AGAINST" = leveret ]; then
  run_suite amqplib tap "$ROOT/interop/netns.sh" "$BIN" "$LOGS/amqplib-broker" -- "${NODE_TEST[@]}"
else
  run_suite amqplib tap "${NODE_TEST[@]}"
fi

AMQP_ADDR="amqp://127.0.0.1:$PORT/%2f" run_suite lapin cargo "${LAPIN_TEST[@]}"
AMQP_URL="amqp://guest:guest@127.0.0.1:$PORT/" run_suite amqp091-go gotest "${GO_TEST[@]}" -v -timeout 300s .

HTTP_CLIENT_RUN=("${HTTP_CLIENT_TEST[@]}" -- --test-threads 1 --exact "${HTTP_CLIENT_SKIPS[@]}")
if [ "$AGAINST" = leveret ]; then
  NETNS_MANAGEMENT_PORT=15672 run_suite rabbitmq_http_client cargo \
    "$ROOT/interop/netns.sh" "$BIN" "$LOGS/http-client-broker" -- "${HTTP_CLIENT_RUN[@]}"
else
  run_suite rabbitmq_http_client cargo "${HTTP_CLIENT_RUN[@]}"
fi

read -r total_pass total_fail total_skip < <(awk '{p+=$1; f+=$2; s+=$3} END {print p+0, f+0, s+0}' "$TOTALS")
echo "total: $total_pass passed, $total_fail failed, $total_skip skipped"
if [ "$status" -ne 0 ]; then
  for f in "$LOGS"/*.log; do echo "--- $f"; tail -n 40 "$f"; done
fi
exit $status
