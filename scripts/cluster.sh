#!/usr/bin/env bash
# A local cluster: HAProxy (mode tcp, send-proxy-v2, configured from tuning/haproxy.cfg) in front of
# three syncgate instances sharing one Redis, one PostgreSQL database and the same keys (JWT
# secret, server key, API key). Used by the cluster tests of the loadtest crate and for the README
# figures; nothing is built here.
#
#   scripts/cluster.sh up      [--dir DIR]   start the three instances, then HAProxy
#   scripts/cluster.sh down    [--dir DIR]   stop exactly the processes `up` started (and drop the
#                                            database it created)
#   scripts/cluster.sh kill N  [--dir DIR]   SIGKILL instance N (1-3)
#   scripts/cluster.sh restart N [--dir DIR] SIGTERM instance N (drain), wait for its exit, start it
#                                            again with the same environment, wait until HAProxy
#                                            has it UP again
#   scripts/cluster.sh roll    [--dir DIR]   restart 1, 2 and 3 in turn
#   scripts/cluster.sh status  [--dir DIR]   HAProxy's view of the three servers
#
# DIR (default $CLUSTER_DIR or /tmp/syncgate-cluster) receives:
#   env        the shared environment of the instances (sourced by `restart`), plus CLUSTER_LB_URL,
#              the WebSocket URL of the balancer, CLUSTER_LB_ADDR and the ports
#   pids       one line per process: `gw1 PID`, `gw2 PID`, `gw3 PID`, `haproxy PID`
#   haproxy.cfg, haproxy.sock (admin stats socket), gwN.log, haproxy.log, gwN/ (data directories)
#
# Settings (environment of `up`):
#   SYNCGATE_BIN        gateway binary [target/release/syncgate]
#   CLUSTER_LB_PORT     the balancer's port on 127.0.0.1 [18080]
#   CLUSTER_PORT_BASE   instance N listens on 127.0.0.1:BASE+N [18080: 18081-18083]
#   CLUSTER_ADMIN_BASE  instance N's admin listener (health checks) on BASE+N [19090: 19091-19093]
#   REDIS_URL           [redis://127.0.0.1:6379]; SYNCGATE_REDIS_PREFIX defaults to one unique per run
#   DATABASE_URL        default: a fresh database created with createdb on 127.0.0.1:5432 as user
#                       postgres (PGHOST, PGPORT and PGUSER change that), dropped by `down`
#   every other SYNCGATE_* variable set when `up` runs is passed to the three instances (and kept
#   in DIR/env for `restart`). The harness defaults SYNCGATE_DRAIN_DELAY_MS to 5000 (HAProxy's
#   checks, inter 2s fall 2, take an instance out within 4 s of its /ready turning 503, so the
#   drain's closes start once no new connection is routed to it) and SYNCGATE_DRAIN_SPREAD_MS to
#   2000.
#
# The generated haproxy.cfg is tuning/haproxy.cfg with only these lines replaced: the frontend's
# bind address, the three server lines (127.0.0.1 ports; `port` = the admin port for checks), the
# global maxconn and fd-hard-limit (sized to this process's open-file limit: the shipped values
# assume a raised limit, and HAProxy refuses to start when it cannot reserve the descriptors), and
# a stats socket in DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${CLUSTER_DIR:-/tmp/syncgate-cluster}"

die() {
  echo "cluster.sh: $*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  exit 2
}

CMD="${1:-}"
[ -n "$CMD" ] || usage
shift
ARG=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dir)
      [ $# -ge 2 ] || die "--dir needs a value"
      DIR="$2"
      shift 2
      ;;
    -h | --help) usage ;;
    *)
      [ -z "$ARG" ] || die "unexpected argument $1"
      ARG="$1"
      shift
      ;;
  esac
done

pid_of() {
  [ -f "$DIR/pids" ] || die "no $DIR/pids: is the cluster up?"
  awk -v n="$1" '$1 == n { print $2 }' "$DIR/pids"
}

set_pid() {
  local name="$1" pid="$2"
  touch "$DIR/pids"
  grep -v "^$name " "$DIR/pids" >"$DIR/pids.tmp" || true
  echo "$name $pid" >>"$DIR/pids.tmp"
  mv "$DIR/pids.tmp" "$DIR/pids"
}

alive() {
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null
}

# Waits up to $2 seconds for PID $1 to exit.
wait_exit() {
  local pid="$1" secs="$2" i
  for i in $(seq $((secs * 10))); do
    alive "$pid" || return 0
    sleep 0.1
  done
  return 1
}

rand_hex() {
  openssl rand -hex "$1"
}

# HAProxy's `show stat` for server gwN: "STATUS CHECK" (e.g. "UP L7OK").
server_state() {
  echo "show stat" | socat - "UNIX-CONNECT:$DIR/haproxy.sock" 2>/dev/null |
    awk -F, -v sv="$1" '
      NR == 1 { for (i = 1; i <= NF; i++) { h = $i; sub(/^# /, "", h); col[h] = i }; next }
      $col["svname"] == sv { print $col["status"], $col["check_status"] }' || true
}

# Starts instance N (environment from DIR/env) and records its PID.
start_instance() {
  local n="$1" pid
  # shellcheck disable=SC1091
  (
    set -a
    . "$DIR/env"
    set +a
    export SYNCGATE_LISTEN="127.0.0.1:$((CLUSTER_PORT_BASE + n))"
    export SYNCGATE_ADMIN_LISTEN="127.0.0.1:$((CLUSTER_ADMIN_BASE + n))"
    export SYNCGATE_DATA_DIR="$DIR/gw$n"
    mkdir -p "$SYNCGATE_DATA_DIR"
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    exec "$CLUSTER_BIN" >>"$DIR/gw$n.log" 2>&1
  ) &
  pid=$!
  set_pid "gw$n" "$pid"
}

# Waits until instance N answers 200 on /ready (its admin port).
wait_ready() {
  local n="$1" i
  # shellcheck disable=SC1091
  . "$DIR/env"
  for i in $(seq 300); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$((CLUSTER_ADMIN_BASE + n))/ready" 2>/dev/null; then
      return 0
    fi
    alive "$(pid_of "gw$n")" || die "gw$n exited; see $DIR/gw$n.log"
    sleep 0.1
  done
  die "gw$n not ready after 30 s; see $DIR/gw$n.log"
}

# Waits until HAProxy reports server gwN in state $2 (UP or DOWN).
wait_server() {
  local n="$1" want="$2" i state
  for i in $(seq 300); do
    state="$(server_state "gw$n")"
    case "$state" in "$want"*) return 0 ;; esac
    sleep 0.1
  done
  die "HAProxy never saw gw$n $want (last: ${state:-none})"
}

cmd_up() {
  [ ! -f "$DIR/pids" ] || die "$DIR/pids exists: run down first (or pick another --dir)"
  local bin="${SYNCGATE_BIN:-$ROOT/target/release/syncgate}"
  [ -x "$bin" ] || die "no gateway binary at $bin (cargo build --release, or set SYNCGATE_BIN)"
  command -v haproxy >/dev/null || die "haproxy is not installed"
  command -v socat >/dev/null || die "socat is not installed (HAProxy's stats socket)"
  mkdir -p "$DIR"
  DIR="$(cd "$DIR" && pwd)"
  local lb_port="${CLUSTER_LB_PORT:-18080}" base="${CLUSTER_PORT_BASE:-18080}" admin="${CLUSTER_ADMIN_BASE:-19090}"
  local created_db="" db_url="${DATABASE_URL:-}"
  if [ -z "$db_url" ]; then
    local db="syncgate_cluster_$(rand_hex 4)"
    local pghost="${PGHOST:-127.0.0.1}" pgport="${PGPORT:-5432}" pguser="${PGUSER:-postgres}"
    createdb -h "$pghost" -p "$pgport" -U "$pguser" "$db" || die "createdb $db failed"
    created_db="$db"
    db_url="postgres://$pguser@$pghost:$pgport/$db"
  fi
  local server_key="${SYNCGATE_SERVER_KEY:-$(openssl genpkey -algorithm ed25519 -outform DER | base64 -w0)}"
  {
    echo "# syncgate cluster harness: the shared environment of the three instances"
    echo "CLUSTER_BIN='$bin'"
    echo "CLUSTER_LB_PORT=$lb_port"
    echo "CLUSTER_LB_ADDR=127.0.0.1:$lb_port"
    echo "CLUSTER_LB_URL=ws://127.0.0.1:$lb_port/ws"
    echo "CLUSTER_PORT_BASE=$base"
    echo "CLUSTER_ADMIN_BASE=$admin"
    echo "CLUSTER_CREATED_DB='$created_db'"
    echo "PGHOST='${PGHOST:-127.0.0.1}' PGPORT='${PGPORT:-5432}' PGUSER='${PGUSER:-postgres}'"
    # Any SYNCGATE_* of the caller first; the harness's own values after (they win).
    { env | grep -E '^SYNCGATE_[A-Z0-9_]+=' | grep -vE '^SYNCGATE_(BIN|LISTEN|ADMIN_LISTEN|DATA_DIR|SERVER_KEY)=' || true; } |
      while IFS='=' read -r k v; do printf "%s=%q\n" "$k" "$v"; done
    echo "SYNCGATE_PROXY_PROTOCOL=v2"
    echo "REDIS_URL='${REDIS_URL:-redis://127.0.0.1:6379}'"
    echo "SYNCGATE_REDIS_PREFIX='${SYNCGATE_REDIS_PREFIX:-sgcluster$(rand_hex 4):}'"
    echo "DATABASE_URL='$db_url'"
    echo "SYNCGATE_JWT_SECRET='${SYNCGATE_JWT_SECRET:-$(rand_hex 32)}'"
    echo "SYNCGATE_API_KEY='${SYNCGATE_API_KEY:-$(rand_hex 16)}'"
    echo "SYNCGATE_SERVER_KEY='$server_key'"
    echo "SYNCGATE_DRAIN_DELAY_MS=${SYNCGATE_DRAIN_DELAY_MS:-5000}"
    echo "SYNCGATE_DRAIN_SPREAD_MS=${SYNCGATE_DRAIN_SPREAD_MS:-2000}"
  } >"$DIR/env"
  chmod 600 "$DIR/env"
  : >"$DIR/pids"

  # The first instance alone first: it runs the database migrations.
  start_instance 1
  wait_ready 1
  start_instance 2
  start_instance 3
  wait_ready 2
  wait_ready 3

  # HAProxy on tuning/haproxy.cfg: bind, servers, global maxconn / fd-hard-limit and the stats
  # socket replaced; everything else as shipped.
  local nofile maxconn
  nofile="$(ulimit -Hn)"
  [ "$nofile" = unlimited ] && nofile=1048576
  maxconn=$(((nofile - 200) / 2))
  sed -E \
    -e "s|^(\s*)bind :8080\s*$|\1bind 127.0.0.1:$lb_port|" \
    -e '/^\s*server gw[0-9]+ /d' \
    -e "s|^(\s*)maxconn [0-9]+\s*$|\1maxconn $maxconn|" \
    -e "s|^(\s*)fd-hard-limit [0-9]+\s*$|\1fd-hard-limit $nofile\n\1stats socket $DIR/haproxy.sock mode 600 level admin|" \
    "$ROOT/tuning/haproxy.cfg" >"$DIR/haproxy.cfg"
  grep -q "bind 127.0.0.1:$lb_port" "$DIR/haproxy.cfg" || die "tuning/haproxy.cfg: no 'bind :8080' line to replace"
  grep -q "stats socket" "$DIR/haproxy.cfg" || die "tuning/haproxy.cfg: no 'fd-hard-limit' line to replace"
  local n
  for n in 1 2 3; do
    echo "    server gw$n 127.0.0.1:$((base + n)) send-proxy-v2 port $((admin + n))" >>"$DIR/haproxy.cfg"
  done
  haproxy -c -q -f "$DIR/haproxy.cfg" || die "generated $DIR/haproxy.cfg is not valid"
  (
    ulimit -n "$nofile" 2>/dev/null || true
    exec haproxy -f "$DIR/haproxy.cfg" -db >>"$DIR/haproxy.log" 2>&1
  ) &
  set_pid haproxy $!
  for n in 1 2 3; do
    wait_server "$n" UP
  done
  echo "cluster up: balancer ws://127.0.0.1:$lb_port/ws, instances 127.0.0.1:$((base + 1))-$((base + 3)), dir $DIR"
}

cmd_down() {
  [ -f "$DIR/pids" ] || die "no $DIR/pids: nothing to stop"
  local name pid
  while read -r name pid; do
    if alive "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done <"$DIR/pids"
  while read -r name pid; do
    if ! wait_exit "$pid" 20; then
      echo "cluster.sh: $name ($pid) did not stop in 20 s: SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done <"$DIR/pids"
  # shellcheck disable=SC1091
  . "$DIR/env"
  if [ -n "${CLUSTER_CREATED_DB:-}" ]; then
    dropdb -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" --if-exists "$CLUSTER_CREATED_DB" || true
  fi
  rm -f "$DIR/pids"
  echo "cluster down ($DIR)"
}

cmd_kill() {
  case "$ARG" in 1 | 2 | 3) ;; *) die "kill N: N is 1, 2 or 3" ;; esac
  local pid
  pid="$(pid_of "gw$ARG")"
  alive "$pid" || die "gw$ARG ($pid) is not running"
  kill -KILL "$pid"
  wait_exit "$pid" 10 || die "gw$ARG ($pid) survived SIGKILL"
  echo "gw$ARG ($pid) killed"
}

restart_one() {
  local n="$1" pid
  pid="$(pid_of "gw$n")"
  if alive "$pid"; then
    kill -TERM "$pid"
    # Drain delay + spread + shutdown timeout (defaults 5 s + 2 s + 10 s) with room to spare.
    wait_exit "$pid" 60 || die "gw$n ($pid) did not exit within 60 s of SIGTERM"
  fi
  start_instance "$n"
  wait_ready "$n"
  wait_server "$n" UP
  echo "gw$n restarted ($pid -> $(pid_of "gw$n"))"
}

cmd_restart() {
  case "$ARG" in 1 | 2 | 3) ;; *) die "restart N: N is 1, 2 or 3" ;; esac
  restart_one "$ARG"
}

cmd_roll() {
  local n
  for n in 1 2 3; do
    restart_one "$n"
  done
}

cmd_status() {
  local n
  for n in 1 2 3; do
    echo "gw$n pid $(pid_of "gw$n") haproxy: $(server_state "gw$n")"
  done
}

case "$CMD" in
  up) cmd_up ;;
  down) cmd_down ;;
  kill) cmd_kill ;;
  restart) cmd_restart ;;
  roll) cmd_roll ;;
  status) cmd_status ;;
  *) usage ;;
esac
