#!/bin/bash
# Usage: scripts/openblas-switch/run.sh [STARTS] [ARGS…] — STARTS start-ups (default 10000), 8 at a time, of the C
# switch program with ARGS ("" switches at once; "1 w" starts OpenBLAS's threads first, as Sigma does). Prints how
# many crashed and how many computed a wrong product. Load the machine meanwhile (a test suite) to see the race.
set -u
dir=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
gcc -O1 -o "$out/switch" "$dir/switch.c" -lopenblas -ldl -lm || exit 2
starts=${1:-10000}; shift || true
: > "$out/crashes"; : > "$out/log"
for ((b = 0; b < starts / 8; b++)); do
  for i in 1 2 3 4 5 6 7 8; do ( "$out/switch" "$@" >> "$out/log" 2>/dev/null || [ $? -eq 1 ] || echo crash >> "$out/crashes" ) & done
  wait
done
echo "start-ups: $((starts / 8 * 8)), crashed: $(wc -l < "$out/crashes"), wrong products: $(grep -vc 'bad 0$' "$out/log")"
