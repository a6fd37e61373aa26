#!/usr/bin/env bash
# The Open Platform scale benchmark: N authorizers (default 1,000) on one platform, on
# the simulator, on the embedded store and on Redis (sealed with store.encryption_key).
# For each backend it prints: how long `POST /v1/components/platform/sync` takes to
# import them all, the time from the sync until /readyz says every token is served
# (2N authorizer tokens: access_token and jsapi_ticket), the upstream calls made, RSS;
# a restart's time until every token is served and the calls it made (must be 0); and,
# with wrk installed, authorizer-token queries per second (an authorizer at random).
#
#   scripts/bench-component.sh [N]
#   BENCH_BACKENDS="embedded" scripts/bench-component.sh 5000
#
# BENCH_BIN (default target/release/wechat-token-server, built when missing),
# BENCH_BACKENDS, BENCH_WRK_SECONDS (10) tune it.
# Needs: the release binary (built when missing), curl, python3; redis-server and
# redis-cli for the redis backend; wrk for the query figure. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-1000}
BACKENDS=${BENCH_BACKENDS:-embedded redis}
WRK_SECONDS=${BENCH_WRK_SECONDS:-10}
BIN=${BENCH_BIN:-target/release/wechat-token-server}
SECRET=bench-request-secret
KEY=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff
COMPONENT=wx_demo_component

case $N in '' | *[!0-9]*) echo "N must be a number of authorizers, got '$N'" >&2; exit 2 ;; esac
for tool in curl python3; do
  command -v $tool >/dev/null || { echo "bench-component.sh needs $tool" >&2; exit 2; }
done
if [ ! -x "$BIN" ]; then
  echo "building $BIN ..." >&2
  cargo build --release --locked >&2
fi

WORK=$(mktemp -d /tmp/bench-component.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { echo "$EPOCHREALTIME"; }
elapsed() { python3 -c "print(f'{$(now) - $1:.2f}')"; }
rss_mb() { awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
token_calls() {
  curl -sf "$SIM/sim/stats" | python3 -c '
import json, sys
c = json.load(sys.stdin)["calls"]
print(c.get("/cgi-bin/component/api_authorizer_token", 0) + c.get("/cgi-bin/ticket/getticket", 0))'
}
wait_ready() { # start port pid
  local limit=$(( ${1%.*} + 300 ))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$2/readyz")" = 200 ]; do
    kill -0 "$3" 2>/dev/null || { echo "the server exited; log: $WORK/server.log" >&2; tail -5 "$WORK/server.log" >&2; exit 1; }
    [ "${EPOCHREALTIME%.*}" -lt "$limit" ] || { echo "not ready after 300 s" >&2; exit 1; }
    sleep 0.02
  done
  elapsed "$1"
}
start_server() {
  "$BIN" --log-level warn serve --config "$1" >>"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  until curl -s -o /dev/null "http://127.0.0.1:$2/healthz"; do sleep 0.02; done
}

SIM_PORT=$(free_port)
SIM="http://127.0.0.1:$SIM_PORT"
"$BIN" --log-level warn simulate --bind "127.0.0.1:$SIM_PORT" >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
until curl -sf "$SIM/sim/stats" >/dev/null; do sleep 0.05; done

# Authorised on WeChat's side: the pushes go to a closed port, `sync` imports them.
NOWHERE="http://127.0.0.1:$(free_port)/events"
python3 - "$SIM" "$N" "$COMPONENT" "$NOWHERE" <<'EOF'
import json, sys, urllib.request
sim, n, component, nowhere = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
for i in range(n):
    body = json.dumps({"component_appid": component, "authorizer_appid": f"wxbench{i:05}", "url": nowhere}).encode()
    try:
        urllib.request.urlopen(urllib.request.Request(sim + "/sim/component/authorize", body, {"Content-Type": "application/json"}))
    except urllib.error.HTTPError:
        pass  # the push failed; the authorizer exists
EOF

echo "Open Platform benchmark: $N authorizers on one platform ($((2 * N)) authorizer tokens), $(nproc) cores"
for backend in $BACKENDS; do
  echo
  echo "== $backend"
  PORT=$(free_port)
  case $backend in
    embedded) STORE="backend = \"embedded\"
path = \"$WORK/store-embedded\"" ;;
    redis)
      REDIS_PORT=$(free_port)
      redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
      PIDS+=($!)
      until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.05; done
      STORE="backend = \"redis\"
redis_url = \"redis://127.0.0.1:$REDIS_PORT/0\"
encryption_key = \"$KEY\"" ;;
    *) echo "unknown backend $backend (embedded, redis)" >&2; exit 2 ;;
  esac
  cat >"$WORK/$backend.toml" <<EOF
[server]
bind = "127.0.0.1:$PORT"
request_secret = "$SECRET"

[store]
$STORE

[apps.platform]
platform = "component"
component_appid = "$COMPONENT"
component_appsecret = "demo_component_secret"
token = "demo_component_token"
encoding_aes_key = "DemoComponentEncodingAesKey0123456789abcdef"
authorizer_tickets = ["jsapi"]
api_base = "$SIM"
EOF
  start_server "$WORK/$backend.toml" "$PORT"
  curl -sf "$SIM/sim/component/push_ticket" \
    -d "{\"component_appid\": \"$COMPONENT\", \"url\": \"http://127.0.0.1:$PORT/wechat/component/platform/events\"}" >/dev/null
  calls0=$(token_calls)
  t0=$(now)
  summary=$(curl -sf -X POST -H "Authorization: Bearer $SECRET" "http://127.0.0.1:$PORT/v1/components/platform/sync")
  sync_s=$(elapsed "$t0")
  ready=$(wait_ready "$t0" "$PORT" "$SERVER_PID")
  calls=$(( $(token_calls) - calls0 ))
  echo "sync: $summary in ${sync_s}s; every token served ${ready}s after the sync began; $calls upstream calls; RSS $(rss_mb "$SERVER_PID") MB"

  kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
  calls0=$(token_calls)
  t0=$(now)
  start_server "$WORK/$backend.toml" "$PORT"
  restart=$(wait_ready "$t0" "$PORT" "$SERVER_PID")
  echo "restart: every token served after ${restart}s; $(( $(token_calls) - calls0 )) upstream calls; RSS $(rss_mb "$SERVER_PID") MB"

  if command -v wrk >/dev/null; then
    cat >"$WORK/pick.lua" <<EOF
local requests = {}
init = function()
  for i = 0, $N - 1 do
    requests[i + 1] = wrk.format("GET", string.format("/v1/tokens/platform.wxbench%05d/access_token", i),
      {["Authorization"] = "Bearer $SECRET"})
  end
end
request = function() return requests[math.random(#requests)] end
EOF
    rps=$(wrk -t2 -c64 -d"${WRK_SECONDS}s" -s "$WORK/pick.lua" "http://127.0.0.1:$PORT" | awk '/Requests\/sec/ {printf "%.0f", $2}')
    echo "authorizer-token queries: $rps req/s (wrk -t2 -c64, an authorizer at random)"
  fi
  kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
done
