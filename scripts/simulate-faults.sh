#!/usr/bin/env bash
# Runs the deterministic simulation (tests/sim) in a release build over many seeds.
#   scripts/simulate-faults.sh --seeds N [--start S]
# Prints seeds/s and every failing seed (with its replay command); exits non-zero if
# any seed fails.
set -euo pipefail
cd "$(dirname "$0")/.."

seeds=1000
start=0
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) seeds="$2"; shift 2 ;;
    --start) start="$2"; shift 2 ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

cargo build --release --test sim --quiet
log=$(mktemp)
trap 'rm -f "$log"' EXIT
began=$(date +%s.%N)
status=0
WTS_SIM_SEEDS="$seeds" WTS_SIM_START="$start" \
  cargo test --release --quiet --test sim seeds_share -- --test-threads=2 --nocapture >"$log" 2>&1 || status=$?
ended=$(date +%s.%N)
grep -E "^sim share|^SIMULATION FAILED|^replay:" "$log" || true
awk -v n="$seeds" -v a="$began" -v b="$ended" 'BEGIN { printf "%d seeds in %.1f s: %.1f seeds/s\n", n, b - a, n / (b - a) }'
failing=$(grep -oE "^SIMULATION FAILED: seed [0-9]+" "$log" | awk '{print $4}' | sort -n | tr '\n' ' ' || true)
if [ "$status" -ne 0 ]; then
  echo "failing seeds: ${failing:-see the log below}"
  [ -z "$failing" ] && cat "$log"
  exit 1
fi
echo "no failing seed"
