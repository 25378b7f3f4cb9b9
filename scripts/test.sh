#!/usr/bin/env bash
# The whole test suite: unit tests, integration tests over real sockets (several instances over a
# real Redis), loadtest scenarios, and a build of the benches. Starts — or installs — the backends
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

ensure_redis

cargo build --workspace --all-targets --locked
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-4}"
