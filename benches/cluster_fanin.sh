#!/usr/bin/env bash
# QoS 1 fan-in across two fleetcore nodes: publishers on node A, the subscriber on node B (the
# messages cross NATS JetStream, each PUBACKed once JetStream stored it), beside one node alone and beside Mosquitto, in the same run, with the
# same load tool (`fleetcore bench`; `mqttv5 bench` cannot put publishers and subscribers on
# different ports in throughput mode). The nodes keep embedded state: this measures messaging.
#
#   BIN=target/release/fleetcore DURATION=10 ROUNDS=3 benches/cluster_fanin.sh
#
# Each round runs the four targets one after the other (across nodes to a plain subscriber,
# across nodes to the one member of a shared group `$share/g/bench/#`, one node, Mosquitto); the
# median round is reported.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
BIN=${BIN:-target/release/fleetcore}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
PUBLISHERS=${PUBLISHERS:-4}
SHARED=${SHARED:-$(cd .. && pwd)/shared}
OUT=${OUT:-target/bench-results/cluster-$(date -u +%Y%m%dT%H%M%SZ)}
NATS=${NATS:-$(command -v nats-server || echo /usr/sbin/nats-server)}
mkdir -p "$OUT"
export RUST_BACKTRACE=0

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

nats_port=$(free_port)
# JetStream carries the QoS 1 hop between the nodes (PUBACK after JetStream stored it).
nats_store=$(mktemp -d /tmp/fc-cluster-nats.XXXXXX)
"$NATS" -a 127.0.0.1 -p "$nats_port" -js -sd "$nats_store" >"$OUT/nats.log" 2>&1 &
PIDS+=($!)
wait_port 127.0.0.1 "$nats_port"

start_node() { # name mqtt-port [extra flags]
  local name=$1 port=$2; shift 2
  local dir
  dir=$(mktemp -d "/tmp/fc-cluster-$name.XXXXXX")
  "$BIN" serve --data-dir "$dir" --mqtt "127.0.0.1:$port" --mqtts off \
    --http "127.0.0.1:$(free_port)" --allow-anonymous --log warn "$@" >>"$OUT/$name.log" 2>&1 &
  PIDS+=($!)
  wait_port 127.0.0.1 "$port"
}
A=$(free_port); B=$(free_port); SOLO=$(free_port); MOSQ=$(free_port)
start_node a "$A" --cluster-nats "nats://127.0.0.1:$nats_port" --cluster-node-id a
start_node b "$B" --cluster-nats "nats://127.0.0.1:$nats_port" --cluster-node-id b
start_node solo "$SOLO"
PIDS+=("$("$SHARED/tools/mosquitto-anchor.sh" "$MOSQ")")

run() { # name port topic filter [--subscriber-port P]
  local name=$1 port=$2 topic=$3 filter=$4; shift 4
  "$BIN" bench --port "$port" "$@" --qos 1 --publishers "$PUBLISHERS" --subscribers 1 \
    --topic "$topic" --filter "$filter" --duration "$DURATION" --json \
    >"$OUT/$name.json" 2>>"$OUT/bench.log" || true
}
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/load.txt"
for r in $(seq 1 "$ROUNDS"); do
  run "cross-$r" "$A" 'bench/{p}' 'bench/#' --subscriber-port "$B"
  # The subscriber as the one member of a shared group: the group's JetStream consumer. Topics
  # of its own: the group's consumer outlives the round and keeps what matches it meanwhile
  # (docs/SCALING.md, "Not done").
  run "shared-$r" "$A" 'grouped/{p}' '$share/g/grouped/#' --subscriber-port "$B"
  run "solo-$r" "$SOLO" 'bench/{p}' 'bench/#'
  run "mosquitto-$r" "$MOSQ" 'bench/{p}' 'bench/#'
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/load.txt"
python3 - "$OUT" "$ROUNDS" <<'PY'
import json, statistics, sys, pathlib
out, rounds = pathlib.Path(sys.argv[1]), int(sys.argv[2])
def fig(name, r):
    try:
        d = json.loads((out / f"{name}-{r}.json").read_text())
    except Exception:
        return None
    return d
rows = {}
for name in ("cross", "shared", "solo", "mosquitto"):
    runs = [d for d in (fig(name, r) for r in range(1, rounds + 1)) if d]
    runs.sort(key=lambda d: d["received_per_s"])
    rows[name] = runs[len(runs) // 2] if runs else None
m = rows["mosquitto"]["received_per_s"] if rows["mosquitto"] else float("nan")
for name, d in rows.items():
    if d is None:
        print(f"{name:10s} no result (see bench.log)")
        continue
    lat = d.get("latency_us") or {}
    print(f"{name:10s} received {d['received_per_s']:9.0f} msg/s  x{d['received_per_s'] / m:5.2f} Mosquitto"
          f"  loss {d['loss_pct']:.3f}%  dup {d['duplicates']}  reordered {d['out_of_order']}"
          f"  p50 {lat.get('p50', '-')} us  p99 {lat.get('p99', '-')} us")
PY
