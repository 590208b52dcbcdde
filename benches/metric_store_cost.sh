#!/usr/bin/env bash
# What the embedded metric store costs the broker: `mqttv5 bench` QoS 0 and QoS 1 fan-in
# (10 publishers -> 1 subscriber, 256-byte payloads) against fleetcore with the sampler on
# (`--metrics-sample true`, sampling every METRICS_RESOLUTION seconds: 1 by default, the worst
# case; the server's default is 60) and off (`--metrics-sample false`), beside Mosquitto, in
# ROUNDS interleaved rounds (on, off, Mosquitto, on, off, ...) so drift of a shared machine hits
# all three alike. Prints the median delivered msg/s of each and the on/off ratio.
#
#   BIN=target/release/fleetcore benches/metric_store_cost.sh
#   ROUNDS=5 DURATION=10 METRICS_RESOLUTION=60 BIN=... benches/metric_store_cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-3}
METRICS_RESOLUTION=${METRICS_RESOLUTION:-1}
SHARED=${SHARED:-/work/shared}
MQTTV5=${MQTTV5:-$(command -v mqttv5 || echo /root/.cargo/bin/mqttv5)}
OUT=${OUT:-target/bench-results/metric-store-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
[ -x "$MQTTV5" ] || { echo "mqttv5 not found: cargo install mqttv5-cli --version 0.29.10" >&2; exit 1; }
if [ -z "${BIN:-}" ]; then
  CARGO_INCREMENTAL=0 cargo build --release -p fleetcore -q
  BIN=$PWD/target/release/fleetcore
fi
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM
stop() { kill "$1" 2>/dev/null || true; while kill -0 "$1" 2>/dev/null; do sleep 0.1; done; }

start() { # who port -> pid
  local who=$1 port=$2 pid data
  if [ "$who" = mosquitto ]; then
    pid=$("$SHARED/tools/mosquitto-anchor.sh" "$port")
  else
    local sample=true; [ "$who" = off ] && sample=false
    data=$(mktemp -d /tmp/fc-mstore.XXXXXX)
    "$BIN" serve --data-dir "$data" --mqtt "127.0.0.1:$port" --mqtts off --http "127.0.0.1:$(free_port)" \
      --allow-anonymous --log warn --metrics-sample "$sample" \
      --metrics-resolution "$METRICS_RESOLUTION" >>"$OUT/fleetcore.log" 2>&1 &
    pid=$!
  fi
  PIDS+=("$pid")
  wait_port 127.0.0.1 "$port"
  echo "$pid"
}

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/load"
for round in $(seq 1 "$ROUNDS"); do
  for who in on off mosquitto; do
    port=$(free_port)
    pid=$(start "$who" "$port")
    for qos in 0 1; do
      "$MQTTV5" bench --mode throughput --host 127.0.0.1 --port "$port" --payload-size 256 \
        --duration "$DURATION" --publishers 10 --subscribers 1 --qos "$qos" \
        >"$OUT/q$qos.$who.$round.json" 2>>"$OUT/mqttv5.log" || true
    done
    stop "$pid"
  done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/load"

python3 - "$OUT" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
rates = {}
for path in glob.glob(os.path.join(out, "q*.json")):
    q, who, _ = os.path.basename(path)[:-5].split(".")
    try:
        r = json.load(open(path))["results"]["throughput_steady"]
    except (ValueError, KeyError, TypeError):
        continue
    rates.setdefault((q, who), []).append(r)
print("| figure (mqttv5 fan-in 10->1, delivered msg/s, median) | store on | store off | on / off | Mosquitto | off / Mosquitto |")
print("|---|---|---|---|---|---|")
for q in ("q0", "q1"):
    on, off, mq = (statistics.median(rates.get((q, w), [0]) or [0]) for w in ("on", "off", "mosquitto"))
    ratio = f"{on / off:.3f}" if off else "-"
    anchor = f"{off / mq:.2f}x" if mq else "-"
    print(f"| QoS {q[1]} | {on:,.0f} | {off:,.0f} | {ratio} | {mq:,.0f} | {anchor} |")
    print(f"<!-- {q} runs: " + "; ".join(f"{w}={sorted(rates.get((q, w), []))}" for w in ("on", "off", "mosquitto")) + " -->")
print(f"\nraw results: {out}")
PY
