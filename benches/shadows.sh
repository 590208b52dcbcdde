#!/usr/bin/env bash
# Device-shadow benchmark: shadow updates per second through MQTT end to end (publish ->
# /update/accepted, durable: every answer follows a committed redb transaction) and the
# update -> /update/delta latency, with `fleetcore bench --shadow`; beside it, in the same run
# and with the same load generator, plain QoS 1 publish throughput to the same broker and to
# Mosquitto (the anchors). Raw JSON lands in $OUT.
#
#   benches/shadows.sh
#   DURATION=5 DEVICES=16 INFLIGHT=64 RATE=2000 benches/shadows.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
DEVICES=${DEVICES:-16}
INFLIGHT=${INFLIGHT:-64}
RATE=${RATE:-2000}
SHARED=${SHARED:-$(cd .. && pwd)/shared}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
OUT=${OUT:-$TARGET/bench-results/shadows-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"

cargo build --release -p fleetcore -q
BIN=$TARGET/release/fleetcore
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
. benches/lib.sh

FC_DATA=$(mktemp -d /tmp/fc-shadow-bench.XXXXXX)
MQTT=$(free_port); HTTP=$(free_port); MOSQ=$(free_port)
"$BIN" serve --data-dir "$FC_DATA" --mqtt "127.0.0.1:$MQTT" --mqtts off --http "127.0.0.1:$HTTP" \
  --allow-anonymous --log warn >>"$OUT/fleetcore.log" 2>&1 &
PIDS+=("$!")
wait_port 127.0.0.1 "$MQTT"
MOSQ_PID=$("$SHARED/tools/mosquitto-anchor.sh" "$MOSQ")
PIDS+=("$MOSQ_PID")

run() { # name port args...
  local name=$1 port=$2; shift 2
  echo "== $name" >&2
  "$BIN" bench --port "$port" --duration "$DURATION" --json --client-prefix "$name" "$@" | tee "$OUT/$name.json"
}
run shadow-max "$MQTT" --shadow --publishers "$DEVICES" --inflight "$INFLIGHT"
run shadow-rate "$MQTT" --shadow --publishers "$DEVICES" --rate "$RATE"
run qos1-fleetcore "$MQTT" --qos 1 --publishers "$DEVICES" --subscribers 0 --inflight "$INFLIGHT" --size 64
run qos1-mosquitto "$MOSQ" --qos 1 --publishers "$DEVICES" --subscribers 0 --inflight "$INFLIGHT" --size 64

python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
r = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
smax, srate = r["shadow-max"], r["shadow-rate"]
fc, mq = r["qos1-fleetcore"], r["qos1-mosquitto"]
fc_rate = fc["acked"] / fc["duration_s"]
mq_rate = mq["acked"] / mq["duration_s"]
print(f"shadow updates accepted/s (durable): {smax['accepted_per_s']:,.0f}  rejected {smax['rejected_by_code']}")
print(f"plain QoS 1 publish acked/s, fleetcore: {fc_rate:,.0f}  -> shadow/plain = {smax['accepted_per_s']/fc_rate:.2f}")
print(f"plain QoS 1 publish acked/s, mosquitto: {mq_rate:,.0f}  -> shadow/mosquitto = {smax['accepted_per_s']/mq_rate:.2f}")
for name, rep in (("at max load", smax), (f"at {srate['rate_target']}/s", srate)):
    a, d = rep["update_to_accepted_us"], rep["update_to_delta_us"]
    print(f"{name}: update->accepted p50 {a['p50']} us p99 {a['p99']} us; update->delta p50 {d['p50']} us p99 {d['p99']} us")
PY
