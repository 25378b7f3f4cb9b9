#!/usr/bin/env bash
# WebSocket conformance: runs the Autobahn|Testsuite fuzzing client (wstest) against the echo
# endpoint (SYNCGATE_ECHO_PATH), which is served by exactly the /ws stack (same upgrade, frame and
# message limits, bounded writes, close handling; only the per-connection message rate limit does
# not apply). Sections 1–7, 9 and 10; 12 and 13 (permessage-deflate) are out of scope.
#
#   scripts/autobahn.sh                              # build, run, summarize; exit 1 if a case FAILED
#   AUTOBAHN_CASES='6.4.*,7.*' scripts/autobahn.sh   # a subset (comma-separated patterns)
#
# Report: target/autobahn/index.html (per case: target/autobahn/syncgate_case_*.{json,html}),
# gateway log: target/autobahn/syncgate.log, wstest log: target/autobahn/wstest.log.
# wstest: $WSTEST, else $AB_ROOT/wstest (default ${TMPDIR:-/tmp}/autobahn/wstest); when missing it
# is installed by ../shared/autobahn/setup.sh (outside this repository; override: AUTOBAHN_SETUP).
# Exit: 0 no case failed, 1 some case failed, 2 the run itself could not be done.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
started=$(date +%s)

ab_root=${AB_ROOT:-${TMPDIR:-/tmp}/autobahn}
wstest=${WSTEST:-$ab_root/wstest}
if [ ! -x "$wstest" ]; then
  setup=${AUTOBAHN_SETUP:-$root/../shared/autobahn/setup.sh}
  if [ ! -f "$setup" ]; then
    cat >&2 <<MSG
autobahn: wstest not found at $wstest, and its installer is missing: $setup
  Either set WSTEST=/path/to/wstest (Autobahn|Testsuite 0.8.2 on Python 2.7: pip install autobahntestsuite==0.8.2),
  or AUTOBAHN_SETUP=/path/to/setup.sh (the shared installer that unpacks Python 2.7 from Debian packages).
MSG
    exit 2
  fi
  echo "autobahn: installing wstest with $setup (20-60 s)"
  AB_ROOT="$ab_root" bash "$setup"
  [ -x "$wstest" ] || { echo "autobahn: $setup did not produce $wstest" >&2; exit 2; }
fi
command -v python3 >/dev/null || { echo "autobahn: python3 is needed (free port, spec, summary)" >&2; exit 2; }

echo "autobahn: building the release binary"
cargo build --release --bin syncgate
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target_dir/release/syncgate"

out="$root/target/autobahn"
rm -rf "$out"
mkdir -p "$out"
data=$(mktemp -d "${TMPDIR:-/tmp}/syncgate-autobahn.XXXXXX")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

gw=""
stop_gateway() {
  if [ -n "$gw" ] && kill -0 "$gw" 2>/dev/null; then
    kill -TERM "$gw" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$gw" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$gw" 2>/dev/null && kill -KILL "$gw" 2>/dev/null || true
    wait "$gw" 2>/dev/null || true
  fi
  gw=""
}
trap 'stop_gateway; rm -rf "$data"' EXIT
trap 'exit 130' INT TERM

# Section 9 sends messages (and frames) of up to 16 MiB: the message and frame limit is raised to
# its configured maximum, 64 MiB. Everything else keeps the /ws defaults, among them the write
# timeout (10 s per flush; a 16 MiB echo to wstest takes about 1 s) and the close linger. The
# per-IP connect rate limit is off (0, its default) whatever the caller's environment says: wstest
# opens a connection per case.
echo "autobahn: starting syncgate on 127.0.0.1:$port (echo at /echo, log $out/syncgate.log)"
env SYNCGATE_LISTEN="127.0.0.1:$port" \
  SYNCGATE_ECHO_PATH=/echo \
  SYNCGATE_JWT_SECRET="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
  SYNCGATE_DATA_DIR="$data" \
  SYNCGATE_MAX_MESSAGE_BYTES=67108864 \
  SYNCGATE_CONNECT_RATE_PER_IP=0 \
  SYNCGATE_MAX_CONNECTIONS=0 \
  SYNCGATE_SHUTDOWN_TIMEOUT_MS=2000 \
  RUST_LOG="${RUST_LOG:-warn}" \
  "$bin" >"$out/syncgate.log" 2>&1 &
gw=$!
for i in $(seq 100); do
  if python3 - "$port" 2>/dev/null <<'PY'; then break; fi
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
assert s.recv(64).startswith(b"HTTP/1.1 200")
PY
  if ! kill -0 "$gw" 2>/dev/null || [ "$i" = 100 ]; then
    echo "autobahn: syncgate did not start:" >&2
    tail -20 "$out/syncgate.log" >&2
    exit 2
  fi
  sleep 0.1
done

cases=${AUTOBAHN_CASES:-1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*}
python3 - "$out" "$port" "$cases" >"$out/fuzzingclient.json" <<'PY'
import json, sys
out, port, cases = sys.argv[1], sys.argv[2], sys.argv[3]
json.dump({
    "outdir": out,
    "servers": [{"agent": "syncgate", "url": "ws://127.0.0.1:%s/echo" % port}],
    "cases": [c.strip() for c in cases.split(",") if c.strip()],
    "exclude-cases": ["12.*", "13.*"],
    "exclude-agent-cases": {},
}, sys.stdout, indent=2)
PY

echo "autobahn: running wstest -m fuzzingclient (cases: $cases)"
wstest_start=$(date +%s)
(cd "$out" && "$wstest" -m fuzzingclient -s "$out/fuzzingclient.json") >"$out/wstest.log" 2>&1 || {
  echo "autobahn: wstest failed, see $out/wstest.log:" >&2
  tail -20 "$out/wstest.log" >&2
  exit 2
}
wstest_end=$(date +%s)
stop_gateway

[ -f "$out/index.json" ] || { echo "autobahn: no $out/index.json" >&2; exit 2; }
echo
set +e
python3 - "$out" <<'PY'
import json, os, sys
from collections import Counter, defaultdict

out = sys.argv[1]
results = json.load(open(os.path.join(out, "index.json")))["syncgate"]
key = lambda c: tuple(int(p) for p in c.split("."))
# A case's behavior (the events the client saw) and its closing behavior (who closed, cleanly,
# with which code) are judged apart. The report paints a case red when either FAILED or the close
# was UNCLEAN (no close handshake); WRONG CODE (a close code outside the expected ones) is yellow.
order = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
close_bad = ("FAILED", "UNCLEAN")

def buckets(r):
    yield r["behavior"]
    if r["behaviorClose"] in close_bad:
        yield "close FAILED"
    elif r["behaviorClose"] == "WRONG CODE":
        yield "WRONG CODE"

by_section = defaultdict(Counter)
for case, r in results.items():
    for b in buckets(r):
        by_section[case.split(".")[0]][b] += 1
        by_section["total"][b] += 1
cols = order + ["close FAILED", "WRONG CODE"]
cols += sorted(set(by_section["total"]) - set(cols))

print("Autobahn|Testsuite fuzzingclient, %d cases" % len(results))
print("%-8s" % "section" + "".join("%15s" % c for c in cols))
for s in sorted((s for s in by_section if s != "total"), key=int) + ["total"]:
    print("%-8s" % s + "".join("%15d" % by_section[s][c] for c in cols))

def detail(r):
    try:
        return json.load(open(os.path.join(out, r["reportfile"])))
    except Exception:
        return {}

groups = defaultdict(list)
for c, r in results.items():
    if r["behavior"] != "OK" or r["behaviorClose"] != "OK":
        j = detail(r)
        # An OK behavior's result text names the message size (section 9): not part of the group.
        result = j.get("result", "") if r["behavior"] != "OK" else ""
        groups[(r["behavior"], r["behaviorClose"], r.get("remoteCloseCode"), result,
                j.get("resultClose", "") if r["behaviorClose"] != "OK" else "")].append(c)
if groups:
    print("\ncases not plainly OK -- behavior / closing behavior / close code from syncgate: cases")
    for g, cs in sorted(groups.items(), key=lambda kv: min(key(c) for c in kv[1])):
        cs.sort(key=key)
        shown = ", ".join(cs) if len(cs) <= 12 else "%s ... %s (%d cases)" % (", ".join(cs[:6]), ", ".join(cs[-2:]), len(cs))
        print("  %s / %s / %s: %s" % (g[0], g[1], g[2], shown))
        print("      " + " | ".join(t for t in g[3:] if t))

failed = [c for c, r in results.items() if r["behavior"] == "FAILED" or r["behaviorClose"] in close_bad]
if failed:
    print("\nFAILED: %d case(s) (behavior FAILED, or closing FAILED/UNCLEAN); see %s/syncgate_case_<id>.html"
          % (len(failed), out))
    sys.exit(1)
print("\nno case FAILED")
PY
status=$?
set -e
echo "report: $out/index.html; wstest $((wstest_end - wstest_start)) s, whole run $(($(date +%s) - started)) s"
exit $status
