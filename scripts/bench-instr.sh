#!/usr/bin/env bash
# Instructions per request of `GET /wechat/token` and of the fixed-body ceiling
# (benches/http.rs), counted by callgrind. Unlike wrk's requests/s, the count does not
# depend on what else the machine runs, so it is the figure to watch while changing
# the serving path. Each server answers REQUESTS keep-alive requests on one connection
# (after a warm-up that is not counted); the figure is the server's whole process
# (every thread) divided by REQUESTS.
#
# Usage: scripts/bench-instr.sh [REQUESTS]   (default 2000; needs valgrind, python3)
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS="${1:-2000}"
SECRET=bench-request-secret
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
cargo build --release --locked --bin wechat-token-server --bench http >/dev/null 2>&1 ||
  cargo build --release --locked --bin wechat-token-server --bench http
BIN=target/release/wechat-token-server
CEILING=$(ls -t target/release/deps/http-* | grep -v '\.d$' | head -1)
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

# Waits until URL answers 200 (at most 60 s: valgrind starts slowly).
wait_200() {
  for _ in $(seq 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)" = 200 ] && return 0
    sleep 0.1
  done
  echo "no 200 from $1" >&2; return 1
}

# Sends N keep-alive requests to URL on one connection; fails on any other status.
drive() {
  python3 - "$1" "$2" <<'EOF'
import http.client, sys, urllib.parse
url, n = urllib.parse.urlsplit(sys.argv[1]), int(sys.argv[2])
conn = http.client.HTTPConnection(url.hostname, url.port)
path = url.path + "?" + url.query
for _ in range(n):
    conn.request("GET", path)
    r = conn.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"status {r.status} from {sys.argv[1]}")
EOF
}

# Counts the instructions of PID while REQUESTS requests go to URL.
count() {
  local pid=$1 url=$2 out=$3
  drive "$url" 200
  callgrind_control -z "$pid" >/dev/null 2>&1
  callgrind_control -i on "$pid" >/dev/null 2>&1
  drive "$url" "$REQUESTS"
  callgrind_control -i off "$pid" >/dev/null 2>&1
  callgrind_control -d "$pid" >/dev/null 2>&1
  local total
  total=$(grep -h '^totals:' "$out".* 2>/dev/null | awk '{s += $2} END {print s}')
  echo $((total / REQUESTS))
}

$BIN simulate --bind 127.0.0.1:19099 >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
cat >"$WORK/bench.toml" <<EOF
[server]
bind = "127.0.0.1:19123"
request_secret = "$SECRET"
[store]
path = "$WORK/data"
[sources.access_token]
url = "http://127.0.0.1:19099/cgi-bin/token"
args = { grant_type = "client_credential", appid = "wx_demo_appid", secret = "demo_secret" }
[sources.ticket]
url = "http://127.0.0.1:19099/cgi-bin/ticket/getticket"
args = { type = "jsapi", access_token = "{{access_token}}" }
EOF
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/ours.out" \
  $BIN --log-level warn serve --config "$WORK/bench.toml" >"$WORK/ours.log" 2>&1 &
OURS=$!
PIDS+=($OURS)
TOKEN_URL="http://127.0.0.1:19123/wechat/token?type=access_token&secret=$SECRET"
wait_200 "$TOKEN_URL"
BODY=$(curl -s "$TOKEN_URL")

WTS_BENCH_CEILING_BODY="$BODY" valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file="$WORK/ceiling.out" "$CEILING" >"$WORK/ceiling.addr" 2>"$WORK/ceiling.log" &
TOP=$!
PIDS+=($TOP)
for _ in $(seq 600); do [ -s "$WORK/ceiling.addr" ] && break; sleep 0.1; done
CEILING_URL="http://$(head -1 "$WORK/ceiling.addr")/fixed?type=access_token&secret=$SECRET"
wait_200 "$CEILING_URL"

ours=$(count "$OURS" "$TOKEN_URL" "$WORK/ours.out")
top=$(count "$TOP" "$CEILING_URL" "$WORK/ceiling.out")
echo "instructions per request, $REQUESTS keep-alive requests on one connection:"
echo "  GET /wechat/token: $ours"
echo "  fixed body, same stack (ceiling): $top"
echo "  ratio: $(awk "BEGIN {printf \"%.1f%%\", 100 * $top / $ours}")"
