#!/usr/bin/env bash
# Run every fuzz target for FUZZ_SECONDS (default 30) each, from the committed seeds plus
# whatever corpus earlier runs left in fuzz/corpus/, and print one line per target with its
# executions. A crash fails the run (cargo fuzz exits non-zero) and leaves the input in
# fuzz/artifacts/<target>/. For a long run: FUZZ_SECONDS=3600 fuzz/run.sh, or one target:
#   cd fuzz && cargo +nightly fuzz run connection corpus/connection seeds/connection -- -max_total_time=36000
# Needs the nightly toolchain (installed on these machines) and cargo-fuzz (installed here).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-30}"
read -r -a targets <<<"${FUZZ_TARGETS:-frames field_tables config definitions connection segment_log list_query}"
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz: no nightly toolchain; cargo fuzz needs one" >&2
  exit 1
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
buildlog="$(mktemp)"
cargo +nightly fuzz build >"$buildlog" 2>&1 || { cat "$buildlog"; exit 1; }
rm -f "$buildlog"
total=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "seeds/$t"
  log="$(mktemp)"
  if ! cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=4096 >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz: $t FAILED (input in fuzz/artifacts/$t/)"
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}' | tail -n 1)
  runs=${runs:-0}
  total=$((total + runs))
  echo "fuzz: $t: $runs executions in ${seconds}s, no crash"
  rm -f "$log"
done
echo "fuzz: $total executions across ${#targets[@]} targets, 0 crashes"
