#!/usr/bin/env bash
# The whole test suite: unit tests, integration tests over real sockets (several instances over a
# real Redis and accounts on SQLite and a real PostgreSQL), loadtest scenarios, and a build of the benches. Starts — or installs — the backends
# the tests need first; a test that needs a missing backend fails, it is never skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

ensure_redis() {
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "installing redis-server"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "starting redis-server on 127.0.0.1:6379"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
    for _ in $(seq 50); do
      redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break
      sleep 0.1
    done
  fi
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null
}

ensure_postgres() {
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "installing postgresql"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    echo "starting postgresql"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 100); do
      pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && break
      sleep 0.1
    done
  fi
  # The tests connect as postgres (trust auth on loopback) to the database `test`.
  if ! psql -h 127.0.0.1 -U postgres -d test -Atc 'select 1' >/dev/null 2>&1; then
    psql -h 127.0.0.1 -U postgres -d postgres -c 'CREATE DATABASE test' >/dev/null 2>&1 \
      || su postgres -c "psql -c 'CREATE DATABASE test'" >/dev/null 2>&1 || true
  fi
  psql -h 127.0.0.1 -U postgres -d test -Atc 'select 1' >/dev/null
}

ensure_chromium() {
  # The login page is tested in a real headless Chromium (Debian's package).
  if ! command -v chromium >/dev/null 2>&1; then
    echo "installing chromium"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
}

ensure_haproxy() {
  # tests/gateway/proxy.rs runs a real HAProxy (mode tcp, send-proxy-v2) in front of the gateway;
  # the test starts and stops it itself.
  if ! command -v haproxy >/dev/null 2>&1; then
    echo "installing haproxy"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
  fi
  # scripts/cluster.sh (the three-instance harness the loadtest cluster tests drive) reads
  # HAProxy's stats socket with socat; the Redis deployment tests need openssl for their CA.
  for tool in socat openssl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      echo "installing $tool"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null
    fi
  done
}

ensure_redis
ensure_postgres
ensure_chromium
ensure_haproxy

ensure_node() {
  # The JavaScript client's tests run under Node >= 20 (its experimental global WebSocket).
  if ! command -v node >/dev/null 2>&1; then
    echo "installing nodejs"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs >/dev/null
  fi
  local major
  major="$(node -p 'process.versions.node.split(".")[0]')"
  if [ "$major" -lt 20 ]; then
    echo "node $major is too old for clients/js (needs >= 20)" >&2
    exit 1
  fi
  # Its one dev dependency (the `ws` package, for the test of Node without a global WebSocket).
  if ! command -v npm >/dev/null 2>&1; then
    echo "installing npm"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
  fi
  npm ci --prefix clients/js --no-audit --no-fund --loglevel=error
}
ensure_node

cargo build --workspace --all-targets --locked
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-4}"
# The JavaScript client against the binary built above (the browser test is tests/gateway/js_client.rs).
node --experimental-websocket --no-warnings --test clients/js/test/client.test.js clients/js/test/resilience.test.js
# ... and with the `ws` package's constructor, in a Node without the global WebSocket.
node --no-warnings --test clients/js/test/ws-package.test.js
