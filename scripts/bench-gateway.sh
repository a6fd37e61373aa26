#!/usr/bin/env bash
# Gateway overhead: the same WeChat API call (GET /cgi-bin/menu/get) made N times
# straight to the simulator and N times through the gateway, one keep-alive
# connection each; prints p50/p99 of both and of the difference (README, Performance).
# Usage: scripts/bench-gateway.sh [N]   (builds the release binary)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-2000}"
cargo build --release --quiet
BIN=target/release/wechat-token-server
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
SIM_PORT=19099; PORT=19123
"$BIN" simulate --bind 127.0.0.1:$SIM_PORT --app wx_bench:bench_secret --daily-quota 100000000 --log-level warn &
cat > "$dir/config.toml" <<TOML
[server]
bind = "127.0.0.1:$PORT"
request_secret = "bench-request-secret-0123"
[store]
backend = "memory"
[apps.bench]
platform = "mp"
appid = "wx_bench"
secret = "bench_secret"
api_base = "http://127.0.0.1:$SIM_PORT"
TOML
"$BIN" --log-level warn serve --config "$dir/config.toml" &
python3 - "$N" "$SIM_PORT" "$PORT" <<'PY'
import http.client, json, sys, time
n, sim_port, port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def get(conn, path):
    conn.request("GET", path)
    r = conn.getresponse(); body = r.read()
    return r.status, body
deadline = time.time() + 20
while True:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port)
        s, b = get(c, "/cgi-bin/token?grant_type=client_credential&appid=wx_bench&secret=bench_secret")
        token = json.loads(b).get("access_token")
        if token: break
    except OSError: pass
    if time.time() > deadline: sys.exit("server not ready")
    time.sleep(0.1)
def run(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(100): get(conn, path)  # warm-up
    out = []
    for _ in range(n):
        t = time.perf_counter(); s, b = get(conn, path); out.append(time.perf_counter() - t)
        assert s == 200 and b"button" in b, b
    return sorted(out)
path = "/cgi-bin/menu/get?access_token=" + token
direct = run(sim_port, path)
gateway = run(port, path)
pct = lambda xs, p: xs[min(len(xs) - 1, int(len(xs) * p))] * 1e6
for name, xs in (("direct", direct), ("gateway", gateway)):
    print(f"{name:8} p50 {pct(xs, .5):7.0f} us   p99 {pct(xs, .99):7.0f} us")
print(f"overhead p50 {pct(gateway, .5) - pct(direct, .5):7.0f} us   p99 {pct(gateway, .99) - pct(direct, .99):7.0f} us  ({n} calls each)")
PY
