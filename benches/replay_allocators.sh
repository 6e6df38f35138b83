#!/usr/bin/env bash
# The four allocators (Go model, glibc malloc, jemalloc, mimalloc) on the same compiled traces,
# side by side in one `allocscope replay` per trace: --repeat 5 (after one warm-up run), touch
# whole. Prints, per trace and allocator, the median replay time, ns/op, p50/p99 call latency,
# peak RSS, and the ratios of time and peak RSS to the system allocator.
#
# Usage: benches/replay_allocators.sh [TRACE...]
#   default traces: traces/samples/python-dict.atrace and, when present,
#   $BIG (default /tmp/h6-run/python-dict-300k.atrace), recorded with:
#   PYTHONMALLOC=malloc allocscope record -o python-dict-300k.atrace -- python3 -c \
#     'import json; d = {f"key{i}": [i, f"value {i}"] for i in range(300000)}; s = json.dumps(d); print(len(s))'
# Environment: REPEAT (5), PIN (CPU to pin to; unset = no pinning), ALLOCSCOPE (binary).
set -euo pipefail
cd "$(dirname "$0")/.."
REPEAT=${REPEAT:-5}
BIG=${BIG:-/tmp/h6-run/python-dict-300k.atrace}
if [[ -z "${ALLOCSCOPE:-}" ]]; then
  cargo build --release --quiet
  ALLOCSCOPE=target/release/allocscope
fi
traces=("$@")
if [[ ${#traces[@]} -eq 0 ]]; then
  traces=(traces/samples/python-dict.atrace)
  [[ -f "$BIG" ]] && traces+=("$BIG")
fi
pin=()
[[ -n "${PIN:-}" ]] && pin=(--pin "$PIN")
out=$(mktemp -d /tmp/h6-bench.XXXXXX)
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) CPUs, $(uname -r)"
echo "# allocscope replay --allocator go,system,jemalloc,mimalloc --repeat $REPEAT --touch whole ${pin[*]}"
printf '| trace | allocator | median ms | min..max ms | ns/op | p50 ns | p99 ns | peak RSS MiB | time / system | RSS / system |\n'
printf '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n'
for t in "${traces[@]}"; do
  j="$out/$(basename "$t").json"
  "$ALLOCSCOPE" replay "$t" --allocator go,system,jemalloc,mimalloc --repeat "$REPEAT" \
    --touch whole "${pin[@]}" --json "$j" --quiet
  python3 - "$t" "$j" <<'PY'
import json, sys
name, path = sys.argv[1].split("/")[-1], sys.argv[2]
r = json.load(open(path))
al = {a["allocator"]: a for a in r["measurements"]["allocators"]}
sys_t, sys_rss = al["system"]["time_ns"]["median"], al["system"]["peak_rss_bytes"]
for n in ["go", "system", "jemalloc", "mimalloc"]:
    a = al[n]; t = a["time_ns"]
    print(f"| {name} ({a['ops']:,} ops) | {n} | {t['median']/1e6:.1f} | {t['min']/1e6:.1f}..{t['max']/1e6:.1f} "
          f"| {a['ns_per_op']:.1f} | {a['p50_ns']:.0f} | {a['p99_ns']:.0f} | {a['peak_rss_bytes']/2**20:.1f} "
          f"| {t['median']/sys_t:.2f} | {a['peak_rss_bytes']/max(sys_rss,1):.2f} |")
PY
done
rm -rf "$out"
