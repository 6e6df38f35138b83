#!/usr/bin/env bash
# What `allocscope record` adds to the start and exit of a short-lived process: a shell loop that
# runs /bin/true 100 times (200 process images: each fork child of bash execs), timed inside the
# shell, untraced and under `record`, alternately, N rounds. Prints the medians and the extra time
# per traced process image (the target is under 1 ms).
#
# Usage: benches/process_start.sh [ROUNDS]   (default 7)
# Env:   ALLOCSCOPE=path/to/allocscope (default: target/release/allocscope, built if missing)
#        RECORD_ARGS="--stack-depth 0" (more options for `record`)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-7}
ALLOCSCOPE=${ALLOCSCOPE:-target/release/allocscope}
if [[ ! -x $ALLOCSCOPE ]]; then
    cargo build --release --bin allocscope >&2
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

loop='TIMEFORMAT=%R; { time (for i in $(seq 100); do /bin/true; done) ; } 2> "$OUT"'
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ), rounds: $ROUNDS, load average at start: $(cut -d" " -f1-3 /proc/loadavg)"
for ((r = 0; r < ROUNDS; r++)); do
    OUT="$WORK/plain" bash -c "$loop"
    cat "$WORK/plain" >> "$WORK/plain.all"
    rm -rf "$WORK/t" && mkdir "$WORK/t"
    # shellcheck disable=SC2086
    OUT="$WORK/traced" "$ALLOCSCOPE" record -q ${RECORD_ARGS:-} -o "$WORK/t/loop.atrace" -- bash -c "$loop"
    cat "$WORK/traced" >> "$WORK/traced.all"
done
plain=$(median < "$WORK/plain.all")
traced=$(median < "$WORK/traced.all")
printf 'untraced %.3f s, traced %.3f s (medians of %d); %.2f ms more per process image\n' \
    "$plain" "$traced" "$ROUNDS" "$(echo "($traced - $plain) * 1000 / 200" | bc -l)"
