#!/usr/bin/env bash
# What the embedded metric store costs the broker: `mqttv5 bench` QoS 0 and QoS 1 fan-in
# (10 publishers -> 1 subscriber, 256-byte payloads) against fleetcore with the sampler on
# (`--metrics-sample true`, sampling every METRICS_RESOLUTION seconds: 1 by default, the worst
# case; the server's default is 60) and off (`--metrics-sample false`), beside Mosquitto, in
# ROUNDS interleaved rounds whose order rotates (on, off, Mosquitto; off, Mosquitto, on;
# Mosquitto, on, off; ...) so neither drift of a shared machine nor the position in a round
# favours one of them. Prints the median delivered msg/s of each and the on/off ratio.
# With PERF=1 the first "on" server is also profiled (`perf record -g` during its QoS 1 run) and
# the share of its CPU samples spent in the store and the sampler is printed.
# With PINNED=1 every server runs on CPU 0 and the load tool on CPU 1 (taskset), so the server's
# own CPU is the bottleneck and its throughput resolves small differences (unpinned, QoS 0 fan-in
# is bound by the load tool's own backlog and swings by tens of per cent between runs).
#
#   BIN=target/release/fleetcore benches/metric_store_cost.sh
#   ROUNDS=5 DURATION=10 METRICS_RESOLUTION=60 BIN=... benches/metric_store_cost.sh
#   PINNED=1 ROUNDS=7 DURATION=10 METRICS_RESOLUTION=60 BIN=... benches/metric_store_cost.sh
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
PINNED=${PINNED:-0}
SERVER_CPU=(); LOAD_CPU=()
if [ "$PINNED" = 1 ]; then SERVER_CPU=(taskset -c 0); LOAD_CPU=(taskset -c 1); fi
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM
stop() { kill "$1" 2>/dev/null || true; while kill -0 "$1" 2>/dev/null; do sleep 0.1; done; }
# User + system CPU of a process so far, in clock ticks (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

start() { # who port -> pid
  local who=$1 port=$2 pid data
  if [ "$who" = mosquitto ]; then
    pid=$("$SHARED/tools/mosquitto-anchor.sh" "$port")
    [ "$PINNED" = 1 ] && taskset -a -p -c 0 "$pid" >/dev/null
  else
    local sample=true; [ "$who" = off ] && sample=false
    data=$(mktemp -d /tmp/fc-mstore.XXXXXX)
    "${SERVER_CPU[@]}" "$BIN" serve --data-dir "$data" --mqtt "127.0.0.1:$port" --mqtts off --http "127.0.0.1:$(free_port)" \
      --allow-anonymous --log warn --metrics-sample "$sample" \
      --metrics-resolution "$METRICS_RESOLUTION" >>"$OUT/fleetcore.log" 2>&1 &
    pid=$!
  fi
  PIDS+=("$pid")
  wait_port 127.0.0.1 "$port"
  echo "$pid"
}

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); pinned: $PINNED" | tee "$OUT/load"
ORDER=(on off mosquitto)
for round in $(seq 1 "$ROUNDS"); do
  for i in 0 1 2; do
    who=${ORDER[$(( (i + round - 1) % 3 ))]}
    port=$(free_port)
    pid=$(start "$who" "$port")
    for qos in 0 1; do
      profile=
      if [ "${PERF:-0}" = 1 ] && [ "$who" = on ] && [ "$qos" = 1 ] && [ "$round" = 1 ]; then
        perf record -F 499 -g -p "$pid" -o "$OUT/perf.data" -- sleep "$DURATION" 2>>"$OUT/perf.log" &
        profile=$!
      fi
      before=$(cpu_ticks "$pid")
      "${LOAD_CPU[@]}" "$MQTTV5" bench --mode throughput --host 127.0.0.1 --port "$port" --payload-size 256 \
        --duration "$DURATION" --publishers 10 --subscribers 1 --qos "$qos" \
        >"$OUT/q$qos.$who.$round.json" 2>>"$OUT/mqttv5.log" || true
      echo $(( $(cpu_ticks "$pid") - before )) >"$OUT/q$qos.$who.$round.cpu"
      if [ -n "$profile" ]; then wait "$profile" || true; fi
    done
    stop "$pid"
  done
done
if [ -f "$OUT/perf.data" ]; then
  # The store's writer is the thread named metric-store; the sampler is the task started by
  # fleetcore_observe::Observe::start on the runtime's workers (its inclusive share).
  perf report -i "$OUT/perf.data" --no-children --sort comm -g none --stdio >"$OUT/perf-threads.txt" 2>/dev/null || true
  perf report -i "$OUT/perf.data" --children --sort sym -g none --stdio >"$OUT/perf-symbols.txt" 2>/dev/null || true
  python3 - "$OUT" <<'PY'
import re, sys
out = sys.argv[1]
store = sum(float(m.group(1)) for line in open(f"{out}/perf-threads.txt")
            if (m := re.match(r"\s+([0-9.]+)%\s+metric-store\s*$", line)))
sampler = max([float(m.group(1)) for line in open(f"{out}/perf-symbols.txt")
               if (m := re.match(r"\s+([0-9.]+)%\s+[0-9.]+%\s+.*fleetcore_observe::Observe::start", line))] or [0.0])
print(f"perf (first 'on' server, QoS 1): metric-store thread {store:.2f}% of the server's CPU samples; "
      f"sampler task {sampler:.2f}% (inclusive)")
PY
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/load"

python3 - "$OUT" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
rates = {}
by_round = {}  # (qos, who) -> {round: msg/s}
cpu = {}  # server CPU microseconds per delivered message
tick = os.sysconf("SC_CLK_TCK")
for path in glob.glob(os.path.join(out, "q*.json")):
    q, who, _ = os.path.basename(path)[:-5].split(".")
    try:
        results = json.load(open(path))["results"]
        r = results["throughput_steady"]
    except (ValueError, KeyError, TypeError):
        continue
    rates.setdefault((q, who), []).append(r)
    by_round.setdefault((q, who), {})[int(_)] = r
    try:
        ticks = int(open(path[:-5] + ".cpu").read())
        if results["received"]:
            cpu.setdefault((q, who), []).append(ticks / tick * 1e6 / results["received"])
    except (OSError, ValueError, KeyError):
        pass
print("| figure (mqttv5 fan-in 10->1, delivered msg/s, median) | store on | store off | on / off | Mosquitto | off / Mosquitto |")
print("|---|---|---|---|---|---|")
for q in ("q0", "q1"):
    on, off, mq = (statistics.median(rates.get((q, w), [0]) or [0]) for w in ("on", "off", "mosquitto"))
    ratio = f"{on / off:.3f}" if off else "-"
    anchor = f"{off / mq:.2f}x" if mq else "-"
    print(f"| QoS {q[1]} | {on:,.0f} | {off:,.0f} | {ratio} | {mq:,.0f} | {anchor} |")
    on_r, off_r = by_round.get((q, "on"), {}), by_round.get((q, "off"), {})
    paired = sorted(on_r[k] / off_r[k] for k in on_r if off_r.get(k))
    if paired:
        print(f"|   QoS {q[1]} on / off paired by round: median {statistics.median(paired):.3f}, "
              f"range {paired[0]:.3f}-{paired[-1]:.3f} ({len(paired)} rounds) | | | | | |")
    print(f"<!-- {q} runs: " + "; ".join(f"{w}={sorted(rates.get((q, w), []))}" for w in ("on", "off", "mosquitto")) + " -->")
print()
print("| server CPU per delivered message (us, median) | store on | store off | on / off | Mosquitto |")
print("|---|---|---|---|---|")
for q in ("q0", "q1"):
    on, off, mq = (statistics.median(cpu.get((q, w), [0]) or [0]) for w in ("on", "off", "mosquitto"))
    ratio = f"{on / off:.3f}" if off else "-"
    print(f"| QoS {q[1]} | {on:.2f} | {off:.2f} | {ratio} | {mq:.2f} |")
print(f"\nraw results: {out}")
PY
