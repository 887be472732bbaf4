# Shell helpers shared by interop/run.sh and interop/netns.sh (sourced, not run).

# apt-get with one retry after refreshing the package lists (a fresh machine has stale ones).
apt_retry() {
  DEBIAN_FRONTEND=noninteractive apt-get "$@" \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get "$@"; }
}

# Install the Debian packages of those named that are not installed yet.
apt_install() {
  local missing=()
  for p in "$@"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] || apt_retry install -y -qq "${missing[@]}" >/dev/null
}

# Wait until the Leveret writing LOG (process PID) has logged COUNT "ready for AMQP" lines, one
# per plain listener. Fails, showing the log, if it exits or takes more than 20 s.
await_leveret() {
  local log=$1 pid=$2 count=${3:-1}
  for _ in $(seq 1 200); do
    [ "$(grep -c 'ready for AMQP' "$log" 2>/dev/null || true)" -ge "$count" ] && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "leveret did not start:"; cat "$log"
  return 1
}
