#!/usr/bin/env bash
# Times `allocscope report` on a large generated trace: events per second and peak RSS.
#
#   bash benches/report_scale.sh [EVENTS] [SCRATCH_DIR]     (default 100000000 events, /tmp)
#
# The trace is written by benches/benches/report_scale.rs (a streaming generator; about 2 bytes
# per event on disk) and removed afterwards. Prints one line per run in the shape BENCHMARKS.md
# uses. Needs GNU time (/usr/bin/time).
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-100000000}
scratch=${2:-/tmp}
trace="$scratch/allocscope-report-scale-$$.atrace"
trap 'rm -f "$trace"' EXIT

cargo build --release --quiet --bin allocscope
cargo bench --quiet -p benches --bench report_scale --no-run 2>/dev/null
bench_bin=$(ls -t target/release/deps/report_scale-* | grep -v '\.d$' | head -1)
echo "generating $events events into $trace ..." >&2
"$bench_bin" "$trace" "$events"
bytes=$(stat -c %s "$trace")

t0=$(date +%s.%N)
/usr/bin/time -f '%e %M' -o "$trace.time" ./target/release/allocscope report "$trace" -q \
  --json "$trace.json"
read -r secs rss_kb < "$trace.time"
/usr/bin/time -f '%e %M' -o "$trace.time" ./target/release/allocscope info "$trace" > /dev/null
read -r isecs irss_kb < "$trace.time"
rm -f "$trace.time" "$trace.json"

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
echo "date:    $(date -u +%F)"
echo "machine: $cpu, $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(uname -sr)"
echo "trace:   $events events, $bytes bytes on disk ($(awk "BEGIN{printf \"%.2f\", $bytes/$events}") B/event)"
awk -v e="$events" -v s="$secs" -v m="$rss_kb" \
  'BEGIN{printf "report:  %.1f s, %.2f M events/s, peak RSS %.0f MiB  (allocscope report: ordered pass, chunks decoded ahead in parallel)\n", s, e/s/1e6, m/1024}'
awk -v e="$events" -v s="$isecs" -v m="$irss_kb" \
  'BEGIN{printf "info:    %.1f s, %.2f M events/s, peak RSS %.0f MiB  (decode and live accounting, for scale)\n", s, e/s/1e6, m/1024}'
