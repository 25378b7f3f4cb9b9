#!/usr/bin/env bash
# A local three-shard Redis Cluster (one replica per shard) for trying syncgate's Cluster mode
# and measuring it: `scripts/redis-cluster.sh up [DIR]` starts six redis-server processes on
# 127.0.0.1:${SYNCGATE_RC_PORT:-17000}..+5, creates the cluster and prints the REDIS_URL to use;
# `scripts/redis-cluster.sh down [DIR]` stops exactly the processes it started (their PIDs are in
# DIR/pids). Needs redis-server and redis-cli >= 7 (sharded pub/sub).
set -euo pipefail
cmd="${1:-}"
dir="${2:-/tmp/syncgate-redis-cluster}"
base="${SYNCGATE_RC_PORT:-17000}"

case "$cmd" in
up)
  mkdir -p "$dir"
  : > "$dir/pids"
  nodes=()
  for i in 0 1 2 3 4 5; do
    port=$((base + i))
    mkdir -p "$dir/$port"
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
      --cluster-enabled yes --cluster-config-file "$dir/$port/nodes.conf" --cluster-node-timeout 1000 \
      --dir "$dir/$port" --daemonize yes --pidfile "$dir/$port/redis.pid" --logfile "$dir/$port/redis.log"
    for _ in $(seq 50); do
      redis-cli -p "$port" ping >/dev/null 2>&1 && break
      sleep 0.1
    done
    cat "$dir/$port/redis.pid" >> "$dir/pids"
    nodes+=("127.0.0.1:$port")
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
  for _ in $(seq 100); do
    ok=1
    for i in 0 1 2 3 4 5; do
      redis-cli -p $((base + i)) cluster info | grep -q cluster_state:ok || ok=0
    done
    [ "$ok" = 1 ] && break
    sleep 0.2
  done
  echo "REDIS_URL=redis-cluster://127.0.0.1:${base},127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2))"
  ;;
down)
  if [ -f "$dir/pids" ]; then
    while read -r pid; do
      [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    done < "$dir/pids"
    rm -f "$dir/pids"
  fi
  ;;
*)
  echo "usage: $0 up|down [DIR]" >&2
  exit 2
  ;;
esac
