#!/usr/bin/env bash
# The newcomer's forwarder trial (issue 23), rerunnable; not part of ci/test.
#
#   ci/forwarder-trial.sh [listen|incoming|both] [RUNS]     (default: both 2)
#
# A forwarder writes every message it gets to a file: `udsipc listen SOCK
# --format raw > FILE` (listen), or ci/forwarder-trial/ (incoming: the
# forwarder example's pattern, `incoming()` to a file). A paced producer
# (python, ~15k lines/s) feeds 200,000 numbered 64-byte lines to `udsipc
# send SOCK --drain-timeout 60`. At STOP_AT s (2) the forwarder gets SIGSTOP, 3 s
# later SIGCONT, KILL_AFTER s later (0.2) SIGKILL and an immediate restart on the same
# path (a second file); once `send` has exited, SIGTERM. Then: the send
# stats, distinct/duplicate/missing ids in the files, what the killed
# forwarder lost of `delivered`, and what the SIGTERM stop lost.
# Paced, the forwarder has caught up (read-ahead empty) even 20 ms after
# SIGCONT and the kill loses nothing; to kill it mid-backlog, unpaced:
#   RATE_SLEEP=0 STOP_AT=0.1 KILL_AFTER=0.02 ci/forwarder-trial.sh both 2
# Builds release binaries into ./target (nice -n 10).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-both} RUNS=${2:-2} N=${N:-200000} RATE_SLEEP=${RATE_SLEEP:-0.0066} KILL_AFTER=${KILL_AFTER:-0.2} STOP_AT=${STOP_AT:-2}
nice -n 10 cargo build -q --release -p udsipc-cli
cp Cargo.lock ci/forwarder-trial/Cargo.lock
CARGO_TARGET_DIR="$PWD/target" nice -n 10 cargo build -q --release \
    --manifest-path ci/forwarder-trial/Cargo.toml
rm -f ci/forwarder-trial/Cargo.lock
UDSIPC=$PWD/target/release/udsipc FWD=$PWD/target/release/forwarder-trial

start_fwd() { # $1 mode, $2 dir, $3 instance -> sets FPID
    local d=$2 i=$3
    if [ "$1" = listen ]; then
        "$UDSIPC" listen "$d/f.sock" --format raw >"$d/out.$i" 2>"$d/fwd.$i.err" &
    else
        "$FWD" "$d/f.sock" "$d/out.$i" 2>"$d/fwd.$i.err" &
    fi
    FPID=$!
    for _ in $(seq 200); do grep -q '^listening on' "$d/fwd.$i.err" 2>/dev/null && return; sleep 0.05; done
    echo "forwarder $i did not start" >&2; cat "$d/fwd.$i.err" >&2; exit 1
}

trial() { # $1 mode, $2 run number
    local mode=$1 d; d=$(mktemp -d /tmp/fwd-trial.XXXXXX)
    start_fwd "$mode" "$d" 1
    mkfifo "$d/in"
    python3 - "$N" "$RATE_SLEEP" >"$d/in" 2>"$d/gen.log" <<'PY' &
import sys, time
n, pause = int(sys.argv[1]), float(sys.argv[2])
out, t0, worst, stalls = sys.stdout, time.monotonic(), (0.0, 0.0), []
for start in range(1, n + 1, 100):
    batch = "".join(f"{i:07d}-{'x' * 56}\n" for i in range(start, min(start + 100, n + 1)))
    a = time.monotonic(); out.write(batch); out.flush(); b = time.monotonic()
    if b - a > 0.1: stalls.append((round(a - t0, 2), round(b - a, 2)))
    if pause: time.sleep(pause)
print(f"generator: {n} lines in {time.monotonic() - t0:.2f} s; writes blocked >0.1 s: "
      f"{stalls} (t, secs); total blocked {sum(s for _, s in stalls):.2f} s", file=sys.stderr)
PY
    local gpid=$!
    "$UDSIPC" send "$d/f.sock" --drain-timeout 60 <"$d/in" 2>"$d/send.err" &
    local spid=$! t0; t0=$(date +%s.%N)
    sleep "$STOP_AT"; kill -STOP "$FPID"; sleep 3; kill -CONT "$FPID"; sleep "$KILL_AFTER"
    kill -KILL "$FPID"; wait "$FPID" 2>/dev/null || true
    local tk; tk=$(date +%s.%N)
    start_fwd "$mode" "$d" 2
    local rc=0; wait "$spid" || rc=$?
    local te; te=$(date +%s.%N)
    wait "$gpid"
    kill -TERM "$FPID"; wait "$FPID" || echo "forwarder 2 exit $?"
    echo "== run $2, forwarder: $mode (dir $d): send exit $rc after $(echo "$te - $t0" | bc) s; SIGKILL at $(echo "$tk - $t0" | bc) s"
    cat "$d/gen.log"
    python3 - "$d" "$N" "$mode" <<'PY'
import json, sys, collections
d, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def last_json(p):
    lines = [l for l in open(p) if l.startswith("{")]
    return json.loads(lines[-1]) if lines else {}
s = last_json(f"{d}/send.err")
warn = [l.strip() for l in open(f"{d}/send.err") if l.startswith("warning")]
f1 = last_json(f"{d}/fwd.1.err"); f2 = last_json(f"{d}/fwd.2.err")
ids = {}
for i in (1, 2):
    ids[i] = [int(l[:7]) for l in open(f"{d}/out.{i}", errors="replace") if len(l) >= 65]
c = collections.Counter(ids[1] + ids[2])
dups = sum(v - 1 for v in c.values() if v > 1)
missing = sorted(set(range(1, n + 1)) - set(c))
def ranges(xs):
    out = []
    for x in xs:
        if out and x == out[-1][1] + 1: out[-1][1] = x
        else: out.append([x, x])
    return out
print("send stats:", json.dumps(s))
print(f"send warnings: {len(warn)}; first/last: {warn[:1]} {warn[-1:]}")
print(f"forwarder 1 (SIGKILLed): {len(ids[1])} lines in its file; forwarder 2 stats: {json.dumps(f2)}; {len(ids[2])} lines in its file")
print(f"distinct ids in files: {len(c)}; duplicates: {dups}; missing: {len(missing)} in ranges {ranges(missing)[:6]}")
lost_delivered = s.get("delivered", 0) - len(c)
# 64-byte bodies: 65 bytes framed, 65 per line. incoming(): the documented window
# (1,024 messages; one 256 KiB receive buffer) plus this consumer's 64 KiB BufWriter.
# listen: its printer queue (4 MiB of lines, 65,536 lines), its 64 KiB stdout buffer,
# one receive buffer: the CLI's own read-ahead.
window = (1024 + (256 << 10) // 65 + (64 << 10) // 65 if mode == "incoming"
          else min(65536, (4 << 20) // 65) + (64 << 10) // 65 + (256 << 10) // 65)
print(f"delivered but not in the files (delivered - distinct): {lost_delivered}; unconfirmed: {s.get('unconfirmed')}; "
      f"read-ahead bound for {mode} with one connection: {window} -> {'within' if lost_delivered <= window else 'OUTSIDE'}")
stop_lost = f2.get("received", -1) - len(ids[2])
print(f"SIGTERM stop: forwarder 2 read {f2.get('received')} wrote {len(ids[2])}: lost {stop_lost}")
print(f"RESULT mode={mode} sent={s.get('sent')} delivered={s.get('delivered')} unconfirmed={s.get('unconfirmed')} "
      f"failed={s.get('failed')} dropped={s.get('dropped')} discarded={s.get('discarded')} reconnects={s.get('reconnects')} "
      f"distinct={len(c)} dups={dups} missing={len(missing)} lost_delivered={lost_delivered} stop_lost={stop_lost}")
PY
    rm -rf "$d"
}

for r in $(seq "$RUNS"); do
    case $MODE in
        listen|incoming) trial "$MODE" "$r" ;;
        both) trial listen "$r"; trial incoming "$r" ;;
        *) echo "usage: $0 [listen|incoming|both] [RUNS]" >&2; exit 2 ;;
    esac
done
