#!/usr/bin/env bash
# The scale benchmark (SPEC.md, "Apps at runtime and scale"): N mp apps (default 10,000),
# each with a jsapi ticket, on the simulator (--accept-any-app), on the embedded store
# and on Redis. For each backend it prints: the first start's time until every token is
# served, the upstream calls it made and the most in flight at once; a restart's time
# until every token is served and the calls it made (must be 0); RSS; idle CPU over
# BENCH_IDLE seconds; token-query throughput with wrk against a one-app server and the
# N-app server in the same run; the size of /metrics and of the status page; for Redis,
# the commands per second at idle.
#
#   scripts/bench-scale.sh [N]            # N apps (default 10000)
#   BENCH_BACKENDS="embedded" scripts/bench-scale.sh 2000
#
# Environment: BENCH_BACKENDS (default "embedded redis"), BENCH_IDLE (seconds, 30),
# BENCH_WRK_SECONDS (10), BENCH_ROUNDS (2), BENCH_CONNECTIONS (64), BENCH_THREADS (2),
# BENCH_START_LIMIT (seconds a first start may take before giving up, 300),
# BENCH_LATENCY_MS (0: each token and ticket call the simulator answers is held back
# this long, as a distant WeChat would; then "max in flight" shows the
# refresh.max_concurrent_calls bound at work).
# Needs: the release binary (built when missing), wrk, redis-server and redis-cli for
# the redis backend, curl, python3. Not part of CI: at 10,000 apps it takes minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-10000}
BACKENDS=${BENCH_BACKENDS:-embedded redis}
IDLE=${BENCH_IDLE:-30}
WRK_SECONDS=${BENCH_WRK_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-2}
START_LIMIT=${BENCH_START_LIMIT:-300}
LATENCY_MS=${BENCH_LATENCY_MS:-0}
BIN=target/release/wechat-token-server
SECRET=bench-request-secret

case $N in '' | *[!0-9]*) echo "N must be a number of apps, got '$N'" >&2; exit 2 ;; esac
[ "$N" -ge 1 ] || { echo "N must be at least 1" >&2; exit 2; }
for tool in curl python3 wrk; do
  command -v $tool >/dev/null || { echo "bench-scale.sh needs $tool" >&2; exit 2; }
done
if [[ " $BACKENDS " == *" redis "* ]]; then
  for tool in redis-server redis-cli; do
    command -v $tool >/dev/null || { echo "the redis backend needs $tool (or BENCH_BACKENDS=embedded)" >&2; exit 2; }
  done
fi
if [ ! -x "$BIN" ]; then
  echo "building $BIN ..." >&2
  cargo build --release --locked >&2
fi

WORK=$(mktemp -d /tmp/bench-scale.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { echo "$EPOCHREALTIME"; }   # no fork: the pollers below must not slow the server
elapsed() { python3 -c "print(f'{$(now) - $1:.2f}')"; }

# Token and ticket calls the simulator has counted, and the most in flight at once.
sim_calls() {
  curl -sf "$SIM/sim/stats" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(s["calls"]["/cgi-bin/token"] + s["calls"]["/cgi-bin/ticket/getticket"], s["max_in_flight"])'
}

# Waits until /readyz says every token is served; prints the seconds it took from $1.
wait_ready() {
  local start=$1 port=$2 pid=$3 limit=$(( ${1%.*} + START_LIMIT ))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ]; do
    kill -0 "$pid" 2>/dev/null || { echo "the server exited; log: $WORK/server.log" >&2; tail -5 "$WORK/server.log" >&2; exit 1; }
    [ "${EPOCHREALTIME%.*}" -lt "$limit" ] || { echo "not ready after ${START_LIMIT}s; log: $WORK/server.log" >&2; exit 1; }
    sleep 0.02
  done
  elapsed "$start"
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_mb() { awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
hwm_mb() { awk '/^VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }

# Writes a config of $1 apps (a0 ... a$1-1, appid wxbench-I, secret by the simulator's
# rule) on store $2 (embedded: its folder; redis: its URL), listening on $3.
write_config() {
  local apps=$1 store=$2 port=$3 file=$4
  python3 - "$apps" "$store" "$port" "$SIM" "$SECRET" >"$file" <<'EOF'
import sys
apps, store, port, sim, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
out = [f'[server]\nbind = "127.0.0.1:{port}"\nrequest_secret = "{secret}"\n']
if store.startswith("redis://"):
    out.append(f'[store]\nbackend = "redis"\nredis_url = "{store}"\n')
else:
    out.append(f'[store]\nbackend = "embedded"\npath = "{store}"\n')
for i in range(apps):
    out.append(f'[apps.a{i}]\nplatform = "mp"\nappid = "wxbench-{i}"\n'
               f'secret = "secret-wxbench-{i}"\ntickets = ["jsapi"]\napi_base = "{sim}"\n')
print("\n".join(out))
EOF
}

start_server() { # config port -> pid in SERVER_PID
  "$BIN" --log-level warn serve --config "$1" >>"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
}

stop_server() { # SIGTERM, then wait for the graceful exit (the store is closed then)
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# wrk against /v1/tokens/APP/access_token, APP drawn at random from a0 ... a$2-1. The
# requests are formatted once, in wrk's init, so that drawing one costs wrk the same
# for one app as for 10,000 (wrk shares the two cores with the server).
throughput() {
  local port=$1 apps=$2
  cat >"$WORK/pick.lua" <<EOF
local requests = {}
init = function()
  for i = 0, $apps - 1 do
    requests[i + 1] = wrk.format("GET", "/v1/tokens/a" .. i .. "/access_token",
      {["Authorization"] = "Bearer $SECRET"})
  end
end
request = function() return requests[math.random(#requests)] end
EOF
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WRK_SECONDS}s" -s "$WORK/pick.lua" "http://127.0.0.1:$port" |
    awk '/Requests\/sec/ {printf "%.0f", $2}'
}

# The better of two numbers: of alternating rounds, the one least disturbed by
# whatever else runs on the machine.
best() { python3 -c "print(max($1, $2))"; }

SIM_PORT=$(free_port)
SIM="http://127.0.0.1:$SIM_PORT"
"$BIN" --log-level warn simulate --bind "127.0.0.1:$SIM_PORT" --accept-any-app >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
until curl -sf "$SIM/sim/stats" >/dev/null; do sleep 0.05; done

echo "scale benchmark: $N mp apps with a jsapi ticket each ($((2 * N)) tokens), $(nproc) cores, simulator latency ${LATENCY_MS} ms"
RESULTS=()
for backend in $BACKENDS; do
  echo
  echo "== $backend"
  REDIS_PORT=""
  case $backend in
    embedded) STORE="$WORK/store-$backend"; ONE_STORE="$WORK/store-one" ;;
    redis)
      REDIS_PORT=$(free_port)
      redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
      PIDS+=($!)
      until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.05; done
      STORE="redis://127.0.0.1:$REDIS_PORT/0"; ONE_STORE="redis://127.0.0.1:$REDIS_PORT/1" ;;
    *) echo "unknown backend $backend (embedded, redis)" >&2; exit 2 ;;
  esac
  curl -sf -X POST "$SIM/sim/reset" >/dev/null
  if [ "$LATENCY_MS" -gt 0 ]; then
    for endpoint in /cgi-bin/token /cgi-bin/ticket/getticket; do
      curl -sf "$SIM/sim/faults" -d "{\"endpoint\": \"$endpoint\", \"count\": $N, \"delay_ms\": $LATENCY_MS}" >/dev/null
    done
  fi
  PORT=$(free_port)
  write_config "$N" "$STORE" "$PORT" "$WORK/n.toml"

  # First start: nothing stored, every token fetched.
  t0=$(now)
  start_server "$WORK/n.toml"
  first=$(wait_ready "$t0" "$PORT" "$SERVER_PID")
  read -r first_calls max_in_flight < <(sim_calls)
  echo "first start: every token served after ${first}s; $first_calls upstream calls, at most $max_in_flight in flight; RSS $(rss_mb "$SERVER_PID") MB"

  # Restart: everything stored, nothing to fetch.
  stop_server "$SERVER_PID"
  t0=$(now)
  start_server "$WORK/n.toml"
  N_PID=$SERVER_PID
  restart=$(wait_ready "$t0" "$PORT" "$N_PID")
  read -r calls_now _ < <(sim_calls)
  restart_calls=$((calls_now - first_calls))
  echo "restart: every token served after ${restart}s; $restart_calls upstream calls"

  # Idle: CPU of the server (and Redis commands) over $IDLE seconds, nothing asked.
  ticks0=$(cpu_ticks "$N_PID")
  [ -n "$REDIS_PORT" ] && cmds0=$(redis-cli -p "$REDIS_PORT" INFO stats | awk -F: '/^total_commands_processed/ {print $2+0}')
  sleep "$IDLE"
  ticks1=$(cpu_ticks "$N_PID")
  idle_cpu=$(python3 -c "print(f'{($ticks1 - $ticks0) / $(getconf CLK_TCK) / $IDLE * 100:.2f}')")
  redis_idle="-"
  if [ -n "$REDIS_PORT" ]; then
    cmds1=$(redis-cli -p "$REDIS_PORT" INFO stats | awk -F: '/^total_commands_processed/ {print $2+0}')
    # The first INFO is counted in the second's total.
    redis_idle=$(python3 -c "print(f'{($cmds1 - $cmds0 - 1) / $IDLE:.1f}')")
    echo "redis at idle: $redis_idle commands/s"
  fi
  rss=$(rss_mb "$N_PID")
  echo "idle CPU: ${idle_cpu}% of one core over ${IDLE}s; RSS ${rss} MB (peak $(hwm_mb "$N_PID") MB)"

  metrics_bytes=$(curl -s "http://127.0.0.1:$PORT/metrics" | wc -c)
  page_bytes=$(curl -s "http://127.0.0.1:$PORT/" | wc -c)
  echo "/metrics: $metrics_bytes bytes; status page: $page_bytes bytes"

  # Token queries: a one-app server and the N-app server, alternating, $ROUNDS rounds.
  ONE_PORT=$(free_port)
  write_config 1 "$ONE_STORE" "$ONE_PORT" "$WORK/one.toml"
  t0=$(now)
  start_server "$WORK/one.toml"
  ONE_PID=$SERVER_PID
  wait_ready "$t0" "$ONE_PORT" "$ONE_PID" >/dev/null
  one_rps=0; n_rps=0
  for _ in $(seq "$ROUNDS"); do
    one_rps=$(best "$one_rps" "$(throughput "$ONE_PORT" 1)")
    n_rps=$(best "$n_rps" "$(throughput "$PORT" "$N")")
  done
  stop_server "$ONE_PID"
  ratio=$(python3 -c "print(f'{$n_rps / $one_rps * 100:.0f}')")
  echo "token queries (wrk -t$THREADS -c$CONNECTIONS -d${WRK_SECONDS}s, best of $ROUNDS alternating rounds): one app $one_rps req/s, $N apps $n_rps req/s ($ratio%)"
  stop_server "$N_PID"
  RESULTS+=("| $backend | ${first}s | $first_calls | $max_in_flight | ${restart}s | $restart_calls | $rss MB | ${idle_cpu}% | $one_rps / $n_rps ($ratio%) | $metrics_bytes | $page_bytes | $redis_idle |")
done

echo
echo "| backend | first start: all served | upstream calls | max in flight | restart: all served | restart calls | RSS | idle CPU | req/s one app / $N apps | /metrics bytes | status page bytes | redis cmds/s idle |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${RESULTS[@]}"
