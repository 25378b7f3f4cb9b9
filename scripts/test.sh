#!/usr/bin/env bash
# The whole test suite: unit tests, integration tests over real sockets, doc tests, and a build of
# the benches. Starts (or installs) any backend the tests need before running them.
set -euo pipefail
cd "$(dirname "$0")/.."

# No backend services are needed yet: the gateway runs on its embedded defaults.

cargo build --workspace --all-targets --locked
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-4}"
