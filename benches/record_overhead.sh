#!/usr/bin/env bash
# End-to-end overhead of `allocscope record`: wall time of malloc-heavy programs untraced, under
# `allocscope record`, and under heaptrack (when installed), run alternately, N rounds each.
# Prints the median per mode, the ratio to untraced, and the trace's bytes per event.
# Modes: plain (untraced), record (with stacks, the default --stack-depth 64), record-nostack
# (--stack-depth 0), record-nolat (--stack-depth 0 --no-latency: one clock read per call),
# heaptrack (when installed, with its stacks).
#
# Usage: benches/record_overhead.sh [ROUNDS]   (default 5)
# Env:   ALLOCSCOPE=path/to/allocscope (default: target/release/allocscope, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
ALLOCSCOPE=${ALLOCSCOPE:-target/release/allocscope}
if [[ ! -x $ALLOCSCOPE ]]; then
    cargo build --release --bin allocscope >&2
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

PY=$(python3 -c 'import sys; print(sys.executable)')
cat > "$WORK/dict.py" <<'PYEOF'
import json
d = {str(i): [i, "v" * (i % 50), {"k": i}] for i in range(300000)}
s = json.dumps(d)
print(len(d), len(s))
PYEOF
cc -O2 -pthread -o "$WORK/stress" collector/tests/c/stress.c
cc -O2 -pthread -o "$WORK/workload_mt" benches/workload_mt.c

now_ns() { date +%s%N; }

# run MODE NAME CMD...: one timed run; prints elapsed ns. Record runs leave bytes/event in $WORK/bpe.
run() {
    local mode=$1 name=$2; shift 2
    local t0 t1
    rm -rf "$WORK/out" && mkdir "$WORK/out"
    case $mode in
        plain)
            t0=$(now_ns); "$@" > /dev/null; t1=$(now_ns) ;;
        record|record-nostack|record-nolat)
            local extra=()
            [[ $mode == record-nostack ]] && extra=(--stack-depth 0)
            [[ $mode == record-nolat ]] && extra=(--stack-depth 0 --no-latency)
            t0=$(now_ns)
            "$ALLOCSCOPE" record "${extra[@]}" -o "$WORK/out/t.atrace" -- "$@" > /dev/null 2> "$WORK/out/summary"
            t1=$(now_ns)
            # events and bytes over every process of the run
            awk '/ events, / { for (i = 1; i <= NF; i++) { if ($(i+1) == "events,") ev += $i; if ($(i+1) == "trace" && $(i+2) == "bytes,") by += $i } }
                 END { printf "%d %d\n", ev, by }' "$WORK/out/summary" >> "$WORK/bpe.$name.$mode" ;;
        heaptrack)
            t0=$(now_ns); heaptrack -o "$WORK/out/ht" "$@" > /dev/null 2>&1; t1=$(now_ns) ;;
    esac
    echo $(( t1 - t0 ))
}

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

MODES="plain record record-nostack record-nolat"
command -v heaptrack > /dev/null && MODES="$MODES heaptrack"

bench() {
    local name=$1; shift
    rm -f "$WORK"/times.* "$WORK"/bpe."$name".*
    for ((r = 0; r < ROUNDS; r++)); do
        for m in $MODES; do
            run "$m" "$name" "$@" >> "$WORK/times.$m"
        done
    done
    local base
    base=$(median < "$WORK/times.plain")
    for m in $MODES; do
        local med
        med=$(median < "$WORK/times.$m")
        printf '%-10s %-10s median %8.3f s  ratio %5.2fx\n' "$name" "$m" \
            "$(echo "$med / 1000000000" | bc -l)" "$(echo "$med / $base" | bc -l)"
    done
    for m in $MODES; do
        [[ -f $WORK/bpe.$name.$m ]] || continue
        awk -v n="$name" -v m="$m" '{ ev += $1; by += $2 } END { if (ev) printf "%-10s %-14s %d events/run, %.3f bytes/event\n", n, m, ev / NR, by / ev }' "$WORK/bpe.$name.$m"
    done
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ), rounds: $ROUNDS, modes: $MODES, load average at start: $(cut -d" " -f1-3 /proc/loadavg)"
PYTHONMALLOC=malloc bench python "$PY" "$WORK/dict.py"
# A multithreaded C program that uses what it allocates (benches/workload_mt.c: ~90 ns of work per call).
bench c-mt "$WORK/workload_mt" 4 1000000
# Worst case: nothing but malloc/free in a tight loop (collector/tests/c/stress.c, ~9 ns per call).
bench c-stress "$WORK/stress" 4 1000000
