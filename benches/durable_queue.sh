#!/usr/bin/env bash
# QoS 1 into an offline persistent session: fleetcore (durable queues: every message on disk,
# group-committed, before its PUBACK) against Mosquitto with persistence on, on the same machine,
# in the same run, driven by the same load generator. Mosquitto's persistence is periodic (it
# writes its whole state every `autosave_interval` seconds, default 1800, and at shutdown), not
# per message: nothing is fsynced on its publish path, and a crash loses what came since the last
# autosave.
#
#   benches/durable_queue.sh                 # 3 rounds, 5 s of publishing per run
#   DURATION=3 ROUNDS=1 benches/durable_queue.sh
#   BIN=/path/to/fleetcore BASE_PORT=25100 benches/durable_queue.sh   # another build, other ports
#
# Per broker and round:
#   baseline  `fleetcore bench --subscribers 0 --qos 1`: PUBACKed msg/s when no session wants
#             the messages (nothing is queued);
#   queued    a persistent subscriber (MQTT 3.1.1, clean session false, QoS 1 on bench/#) has
#             subscribed and left; the same publishers: PUBACKed msg/s, every message queued;
#   drain     the subscriber comes back (`mosquitto_sub -c -C N`): messages per second until it
#             has received all N queued.
# Rounds alternate brokers; the median round is reported. Raw output lands in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
PUBLISHERS=${PUBLISHERS:-8}
OUT=${OUT:-target/bench-results/durable-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"

command -v mosquitto >/dev/null || { apt-get update -qq && apt-get install -y -qq mosquitto >/dev/null; }
command -v mosquitto_sub >/dev/null || { apt-get update -qq && apt-get install -y -qq mosquitto-clients >/dev/null; }
# BIN: a fleetcore binary to measure instead of this tree's release build (e.g. a before/after pair).
if [ -z "${BIN:-}" ]; then
  cargo build --release -p fleetcore -q
  BIN=$PWD/target/release/fleetcore
fi
# Round r uses ports BASE_PORT + 10 r and the one after it.
BASE_PORT=${BASE_PORT:-19100}
export RUST_BACKTRACE=0

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_port() { # port
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listening on 127.0.0.1:$1" >&2; return 1
}
stop() { kill "$1" 2>/dev/null || true; while kill -0 "$1" 2>/dev/null; do sleep 0.1; done; }

start_fleetcore() { # port -> pid; a fresh data dir each time
  local dir; dir=$(mktemp -d /tmp/fc-durable.XXXXXX)
  "$BIN" serve --data-dir "$dir" --mqtt "127.0.0.1:$1" --mqtts 127.0.0.1:0 --http "127.0.0.1:$(($1 + 1))" \
    --allow-anonymous --log warn --max-queued-messages 2000000 >>"$OUT/fleetcore.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  wait_port "$1" >&2
  echo "$pid"
}
start_mosquitto() { # port -> pid; persistence on, a fresh persistence dir each time
  local dir; dir=$(mktemp -d /tmp/mosquitto-durable.XXXXXX)
  chmod 777 "$dir"
  cat >"$dir/mosquitto.conf" <<EOF
listener $1 127.0.0.1
allow_anonymous true
persistence true
persistence_location $dir/
max_queued_messages 2000000
max_connections -1
EOF
  mosquitto -c "$dir/mosquitto.conf" >>"$OUT/mosquitto.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  wait_port "$1" >&2
  echo "$pid"
}

# WRITES=batch (default, as the figures in BENCHMARKS.md were measured) or device (one packet
# per write, `fleetcore bench`'s own default).
WRITES=${WRITES:-batch}
BATCH=()
[ "$WRITES" = batch ] && BATCH=(--batch)
bench() { # name port
  "$BIN" bench --port "$2" --protocol 3 --qos 1 --publishers "$PUBLISHERS" --subscribers 0 \
    --duration "$DURATION" --json --client-prefix "pub-$1" "${BATCH[@]}" >"$OUT/$1.json" 2>>"$OUT/bench.log"
}
acked() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["acked"])' "$1"; }

run() { # broker round
  local who=$1 round=$2 port pid
  port=$((BASE_PORT + round * 10))
  if [ "$who" = fleetcore ]; then pid=$(start_fleetcore "$port"); else pid=$(start_mosquitto "$port"); fi
  bench "$who-baseline-$round" "$port"
  mosquitto_sub -h 127.0.0.1 -p "$port" -V mqttv311 -c -i "durable-sub-$round" -q 1 -t 'bench/#' -E
  bench "$who-queued-$round" "$port"
  if [ "$who" = fleetcore ]; then
    curl -s "http://127.0.0.1:$((port + 1))/metrics" | grep '^fleetcore_mqtt_durable_queue' >"$OUT/$who-metrics-$round.txt" || true
  fi
  local n t0 t1
  n=$(acked "$OUT/$who-queued-$round.json")
  t0=$(date +%s.%N)
  timeout 300 mosquitto_sub -h 127.0.0.1 -p "$port" -V mqttv311 -c -i "durable-sub-$round" -q 1 \
    -t 'bench/#' -C "$n" >/dev/null
  t1=$(date +%s.%N)
  python3 -c 'import sys; print("{\"messages\": %s, \"seconds\": %f}" % (sys.argv[1], float(sys.argv[3]) - float(sys.argv[2])))' \
    "$n" "$t0" "$t1" >"$OUT/$who-drain-$round.json"
  stop "$pid"
}

for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then run fleetcore "$round"; run mosquitto "$round";
  else run mosquitto "$round"; run fleetcore "$round"; fi
done

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, statistics, sys, os
out, rounds = sys.argv[1], int(sys.argv[2])
def load(name):
    return json.load(open(os.path.join(out, name + ".json")))
def figure(who, kind):
    vals = []
    for r in range(1, rounds + 1):
        d = load(f"{who}-{kind}-{r}")
        vals.append(d["messages"] / d["seconds"] if kind == "drain" else d["acked"] / d["duration_s"])
    return statistics.median(vals), vals
print(f"| figure | fleetcore | Mosquitto | fleetcore / Mosquitto |")
print("|---|---|---|---|")
for kind, label in [("baseline", "QoS 1 publish, no subscriber: PUBACKed msg/s"),
                    ("queued", "QoS 1 publish into an offline persistent session: PUBACKed msg/s"),
                    ("drain", "drain on reconnect: received msg/s")]:
    f, fv = figure("fleetcore", kind)
    m, mv = figure("mosquitto", kind)
    print(f"| {label} | {f:,.0f} | {m:,.0f} | **{f / m:.2f}x** |")
    print(f"|   rounds | {', '.join(f'{v:,.0f}' for v in fv)} | {', '.join(f'{v:,.0f}' for v in mv)} | |")
for r in range(1, rounds + 1):
    m = {}
    for line in open(os.path.join(out, f"fleetcore-metrics-{r}.txt")):
        name, value = line.split()
        m[name] = float(value)
    stored, commits = m.get("fleetcore_mqtt_durable_queue_messages_total", 0), m.get("fleetcore_mqtt_durable_queue_commits_total", 0)
    print(f"round {r}: fleetcore stored {stored:,.0f} messages in {commits:,.0f} group commits "
          f"({stored / max(commits, 1):,.1f} messages per commit)")
PY
