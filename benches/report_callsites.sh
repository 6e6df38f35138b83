#!/usr/bin/env bash
# What the call-site views cost `allocscope report`: two builds side by side (A B A B ...) on one
# recording with stacks of python3 building a 300k-entry dict (PYTHONMALLOC=malloc: every
# object through malloc), medians of wall time and peak RSS.
#
#   bash benches/report_callsites.sh BEFORE_BIN [AFTER_BIN] [ROUNDS]
#
# BEFORE_BIN: an allocscope built without call sites (e.g. a worktree of an older commit);
# AFTER_BIN: default target/release/allocscope (built here). ROUNDS: default 7. The symbol
# cache is a fresh directory, warmed by one untimed run. Needs GNU time (/usr/bin/time).
set -euo pipefail
cd "$(dirname "$0")/.."
before=${1:?usage: report_callsites.sh BEFORE_BIN [AFTER_BIN] [ROUNDS]}
after=${2:-}
rounds=${3:-7}
if [ -z "$after" ]; then
  cargo build --release --quiet --bin allocscope
  after=target/release/allocscope
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export XDG_CACHE_HOME="$scratch/cache"
py=$(python3 -c 'import sys; print(sys.executable)')
PYTHONMALLOC=malloc "$after" record -q -o "$scratch/py.atrace" -- \
  "$py" -c 'd = {i: str(i) for i in range(300000)}; print(len(d))' > /dev/null
"$after" info "$scratch/py.atrace" | grep -E '^(events|stacks)'
"$after" report "$scratch/py.atrace" -q 2> /dev/null   # warms the symbol cache

for _ in $(seq "$rounds"); do
  for side in before after; do
    bin=${!side}
    /usr/bin/time -f "$side %e %M" -a -o "$scratch/times" "$bin" report "$scratch/py.atrace" -q \
      2> /dev/null
  done
done
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
for side in before after; do
  secs=$(awk -v s="$side" '$1 == s {print $2}' "$scratch/times" | median)
  kb=$(awk -v s="$side" '$1 == s {print $3}' "$scratch/times" | median)
  echo "$side: median $secs s, $((kb / 1024)) MiB peak RSS over $rounds runs"
done
