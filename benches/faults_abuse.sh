#!/usr/bin/env bash
# Fault suite (d) as a benchmark, fleetcore beside Mosquitto in the same run: well-behaved devices
# (4 x 100 msg/s QoS 1, one subscriber measuring publish-to-delivery latency) first on the quiet
# broker, then while 10,000 idle connections (conncount, holding) and misbehaving clients
# (malformed packets, slow readers subscribed to the devices' topics that never read, a connect
# flood, half-open connections) share it, once with the abuse starting with the measurement and
# once after it ran for 6 s (LEADS). Reports, per broker, round and lead, the devices' throughput
# and p99 under abuse as ratios of the quiet baseline measured just before (target: p99 <= 2x,
# throughput >= 1x). The load tools are crates/fleetcore/tests/system/faultload.py and conncount.
#
#   benches/faults_abuse.sh                                   # release build, 3 rounds each
#   FLEETCORE_BIN=target/debug/fleetcore ROUNDS=1 benches/faults_abuse.sh
#
# Needs 10,000 + a few hundred open files per process (`ulimit -Hn`) and the venv's paho-mqtt
# (.venv, made by test.sh). All traffic stays on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
# Seconds the misbehaving clients run before the devices' measurement starts: 0 catches the
# moment the slow readers' buffers fill (publishers of their topics wait for them for
# --stuck-subscriber-timeout-ms, 200 ms, until they count as stuck); 6 is the steady state after.
# Extra server settings go through the environment (FLEETCORE_STUCK_SUBSCRIBER_TIMEOUT_MS=20).
LEADS=${LEADS:-0 6}
IDLE=${IDLE:-10000}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
SHARED=${SHARED:-$(cd .. && pwd)/shared}
PY=${PY:-$PWD/.venv/bin/python}
LOAD=$PWD/crates/fleetcore/tests/system/faultload.py
OUT=${OUT:-target/bench-results/faults-abuse-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
source benches/lib.sh
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin" ;; esac  # Debian puts mosquitto there
if [ -n "${FLEETCORE_BIN:-}" ]; then BIN=$FLEETCORE_BIN; else
  CARGO_INCREMENTAL=0 cargo build --release -p fleetcore --no-default-features -q
  BIN=$PWD/target/release/fleetcore
fi
if [ -n "${CONNCOUNT_BIN:-}" ]; then CONNCOUNT=$CONNCOUNT_BIN; else
  cargo build --release -p fleetcore-conncount -q
  CONNCOUNT=$PWD/target/release/conncount
fi
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
stop() { kill "$1" 2>/dev/null || true; while kill -0 "$1" 2>/dev/null; do sleep 0.1; done; }

# one_round BROKER PORT PID ROUND: quiet devices, then devices under the idle fleet and abuse.
one_round() {
  local who=$1 port=$2 pid=$3 round=$4 tag="$1-$4"
  "$PY" "$LOAD" devices --port "$port" --seconds "$SECONDS_PER_RUN" --prefix "q$tag" >"$OUT/$tag.quiet.json"
  "$CONNCOUNT" --port "$port" --connections "$IDLE" --targets 10 --per-source 1000 --settle 0 \
    --hold 3600 --progress --broker-pid "$pid" --prefix "idle$tag" >/dev/null 2>"$OUT/$tag.idle.log" &
  local idle=$!
  # the ramp is done when conncount says so (it then holds the fleet until killed)
  until grep -q "ramp done" "$OUT/$tag.idle.log" 2>/dev/null; do
    kill -0 "$idle" 2>/dev/null || { echo "conncount stopped:" >&2; cat "$OUT/$tag.idle.log" >&2; return 1; }
    sleep 0.2
  done
  local lead
  for lead in $LEADS; do
    "$PY" "$LOAD" abuse --port "$port" --seconds $((lead + SECONDS_PER_RUN + 4)) --prefix "a$tag-$lead" \
      >"$OUT/$tag.lead$lead.abuse.json" &
    local abuse=$!
    sleep "$lead"
    "$PY" "$LOAD" devices --port "$port" --seconds "$SECONDS_PER_RUN" --prefix "a$tag-$lead" \
      >"$OUT/$tag.lead$lead.loaded.json"
    wait "$abuse"
  done
  kill "$idle"; wait "$idle" 2>/dev/null || true
}

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) at start; rounds $ROUNDS; idle $IDLE" | tee "$OUT/machine.txt" >&2
port=19140
for round in $(seq 1 "$ROUNDS"); do
  port=$((port + 8))
  MQ=$("$SHARED/tools/mosquitto-anchor.sh" "$port"); PIDS+=("$MQ")
  wait_port 127.0.0.1 "$port"
  one_round mosquitto "$port" "$MQ" "$round"
  stop "$MQ"
  data=$(mktemp -d /tmp/fc-abuse.XXXXXX)
  "$BIN" serve --data-dir "$data" --mqtt "127.0.0.1:$((port + 1))" --mqtts "127.0.0.1:$((port + 2))" \
    --http "127.0.0.1:$((port + 3))" --allow-anonymous --log warn >>"$OUT/fleetcore.log" 2>&1 &
  FC=$!; PIDS+=("$FC")
  wait_port 127.0.0.1 $((port + 1)); wait_port 127.0.0.1 $((port + 3))
  one_round fleetcore $((port + 1)) "$FC" "$round"
  stop "$FC"; rm -rf "$data"
done
echo "load $(cut -d' ' -f1-3 /proc/loadavg) at the end" | tee -a "$OUT/machine.txt" >&2

"$PY" - "$OUT" "$ROUNDS" $LEADS <<'PY'
import json, sys, os
out, rounds, leads = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print("| broker | round | abuse lead s | quiet msg/s | quiet p99 ms | abused msg/s | abused p99 ms | throughput ratio | p99 ratio | all delivered |")
print("|---|---|---|---|---|---|---|---|---|---|")
for who in ("fleetcore", "mosquitto"):
    for r in range(1, rounds + 1):
        q = json.load(open(os.path.join(out, f"{who}-{r}.quiet.json")))
        for lead in leads:
            a = json.load(open(os.path.join(out, f"{who}-{r}.lead{lead}.loaded.json")))
            ok = "yes" if a["received"] == a["sent"] == a["acked"] else f"NO ({a['received']}/{a['sent']})"
            print(f"| {who} | {r} | {lead} | {q['msgs_per_s']} | {q['p99_ms']} | {a['msgs_per_s']} | {a['p99_ms']} | "
                  f"{a['msgs_per_s'] / q['msgs_per_s']:.2f} | {a['p99_ms'] / q['p99_ms']:.2f} | {ok} |")
PY
echo "raw reports: $OUT" >&2
