#!/usr/bin/env bash
# Broker per-message cost and saturation latency with device-like clients (one packet per write,
# TCP_NODELAY): fleetcore against Mosquitto, same machine, same run, same tools. Two neutral-ish
# load tools: `mqttv5 bench` (crate mqttv5-cli 0.29.10, written by others) and `fleetcore bench`
# in its default device mode. Prints a table of each figure with its ratio to Mosquitto; raw
# JSON lands in $OUT.
#
#   benches/broker_device.sh                     # unpinned and pinned, 8 s per run
#   PINS=pinned DURATION=5 benches/broker_device.sh
#   BIN=/tmp/old/fleetcore LABEL=before benches/broker_device.sh   # another fleetcore build
#
# Pinned: the broker runs on CPU 0 and the load tool on CPU 1 (taskset); unpinned: both float.
# fleetcore is started on CPU 0 (`taskset -c 0 fleetcore serve`), so its runtime sizes itself to
# the one core it has, as it would for a user who pins it; Mosquitto (one thread) is pinned after
# it starts. ISOLATE=rt runs brokers and tools at SCHED_RR priority 1 (root only): on a machine
# busy with other jobs it keeps them from taking the measured processes' CPU.
# Figures: delivered msg/s for QoS 0 and 1, fan-in (10 publishers -> 1 subscriber) and fan-out
# (1 -> 10); then p50/p99 publish-to-delivery latency of QoS 0 and QoS 1 fan-in paced at 50 %
# and 100 % of the rate Mosquitto delivered in this run's fan-in.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-8}
PINS=${PINS:-unpinned pinned}
SHARED=${SHARED:-/work/shared}
MQTTV5=${MQTTV5:-$(command -v mqttv5 || echo /root/.cargo/bin/mqttv5)}
LABEL=${LABEL:-fleetcore}
ISOLATE=${ISOLATE:-none}
OUT=${OUT:-target/bench-results/device-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
[ -x "$MQTTV5" ] || { echo "mqttv5 not found: cargo install mqttv5-cli --version 0.29.10" >&2; exit 1; }
command -v mosquitto >/dev/null || { apt-get update -qq && apt-get install -y -qq mosquitto >/dev/null; }
if [ -z "${BIN:-}" ]; then
  cargo build --release -p fleetcore -q
  BIN=$PWD/target/release/fleetcore
fi
# The load tool: fleetcore bench from this tree's build, whichever broker build is measured.
TOOL=${TOOL:-$PWD/target/release/fleetcore}
export RUST_BACKTRACE=0

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$OUT/data-dirs" ] && xargs rm -rf <"$OUT/data-dirs"
  rm -f "$OUT/data-dirs"
}
trap cleanup EXIT INT TERM
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
stop() { kill "$1" 2>/dev/null || true; while kill -0 "$1" 2>/dev/null; do sleep 0.1; done; }

start_broker() { # who port pin -> pid
  local who=$1 port=$2 pin=$3 pid
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "port $port is taken: set PORT" >&2; exit 1; fi
  if [ "$who" = mosquitto ]; then
    pid=$("$SHARED/tools/mosquitto-anchor.sh" "$port")
  else
    local data core=(); data=$(mktemp -d /tmp/fc-device.XXXXXX)
    echo "$data" >>"$OUT/data-dirs"
    [ "$pin" = pinned ] && core=(taskset -c 0)
    "${core[@]}" "$BIN" serve --data-dir "$data" --mqtt "127.0.0.1:$port" --mqtts off --http "127.0.0.1:$((port + 1))" \
      --allow-anonymous --log warn >>"$OUT/fleetcore.log" 2>&1 &
    pid=$!
  fi
  PIDS+=("$pid")
  wait_port "$port"
  [ "$pin" = pinned ] && taskset -a -p -c 0 "$pid" >/dev/null
  if [ "$ISOLATE" = rt ]; then
    for t in /proc/"$pid"/task/*; do chrt -r -p 1 "${t##*/}" >/dev/null; done
  fi
  echo "$pid"
}
tool() { # pin cmd...
  local pin=$1 run=(); shift
  [ "$ISOLATE" = rt ] && run+=(chrt -r 1)
  [ "$pin" = pinned ] && run+=(taskset -c 1)
  "${run[@]}" "$@"
}
mqttv5() { # name pin port args...
  local name=$1 pin=$2 port=$3; shift 3
  tool "$pin" "$MQTTV5" bench --mode throughput --host 127.0.0.1 --port "$port" --payload-size 256 \
    --duration "$DURATION" "$@" >"$OUT/$name.json" 2>>"$OUT/mqttv5.log" || true
}
fcbench() { # name pin port args...
  local name=$1 pin=$2 port=$3; shift 3
  tool "$pin" "$TOOL" bench --port "$port" --json --size 256 --duration "$DURATION" "$@" \
    >"$OUT/$name.json" 2>>"$OUT/fcbench.log" || true
}
rate_of() { # json file -> delivered msg/s (integer)
  python3 -c 'import json,sys
r=json.load(open(sys.argv[1]))
print(int(r.get("received_per_s") or r.get("results",{}).get("throughput_steady") or 0))' "$1" 2>/dev/null || echo 0
}

for pin in $PINS; do
  for who in mosquitto "$LABEL"; do
    echo "== $pin $who" >&2
    b=mosquitto; [ "$who" = mosquitto ] || b=fleetcore
    port=${PORT:-27960}; [ "$who" = mosquitto ] || port=$((port + 10))
    pid=$(start_broker "$b" "$port" "$pin")
    for qos in 0 1; do
      mqttv5 "mqttv5_fanin_q$qos.$who.$pin" "$pin" "$port" --publishers 10 --subscribers 1 --qos "$qos"
      mqttv5 "mqttv5_fanout_q$qos.$who.$pin" "$pin" "$port" --publishers 1 --subscribers 10 --qos "$qos"
      fcbench "fc_fanin_q$qos.$who.$pin" "$pin" "$port" --publishers 10 --subscribers 1 --qos "$qos"
      fcbench "fc_fanout_q$qos.$who.$pin" "$pin" "$port" --publishers 1 --subscribers 10 --qos "$qos"
    done
    stop "$pid"
  done
  # Latency at 50 % and 100 % of Mosquitto's fan-in saturation rate (fleetcore bench, device mode).
  for qos in 0 1; do
    sat=$(rate_of "$OUT/fc_fanin_q$qos.mosquitto.$pin.json")
    [ "$sat" -gt 0 ] || continue
    for who in mosquitto "$LABEL"; do
      b=mosquitto; [ "$who" = mosquitto ] || b=fleetcore
      port=${PORT:-27960}; [ "$who" = mosquitto ] || port=$((port + 10))
      pid=$(start_broker "$b" "$port" "$pin")
      for pct in 50 100; do
        fcbench "lat${pct}_q$qos.$who.$pin" "$pin" "$port" --publishers 10 --subscribers 1 --qos "$qos" \
          --rate $((sat * pct / 100))
      done
      stop "$pid"
    done
  done
done

python3 - "$OUT" "$LABEL" "$PINS" <<'PY'
import glob, json, os, sys
out, label, pins = sys.argv[1], sys.argv[2], sys.argv[3].split()
runs = {}
for path in glob.glob(os.path.join(out, "*.json")):
    name, who, pin = os.path.basename(path)[:-5].split(".")
    try:
        runs[(name, who, pin)] = json.load(open(path))
    except ValueError:
        pass
def delivered(r):
    if "results" in r:
        return r["results"].get("throughput_steady")
    return r.get("received_per_s")
def lat(p):
    return lambda r: (r.get("latency_us") or {}).get(p)
rows = []
for q in (0, 1):
    rows += [(f"mqttv5 QoS {q} fan-in 10->1: delivered msg/s", f"mqttv5_fanin_q{q}", delivered, True),
             (f"mqttv5 QoS {q} fan-out 1->10: delivered msg/s", f"mqttv5_fanout_q{q}", delivered, True),
             (f"fleetcore bench QoS {q} fan-in 10->1: delivered msg/s", f"fc_fanin_q{q}", delivered, True),
             (f"fleetcore bench QoS {q} fan-out 1->10: delivered msg/s", f"fc_fanout_q{q}", delivered, True)]
for q in (0, 1):
    for pct in (50, 100):
        for p in ("p50", "p99"):
            rows.append((f"QoS {q} fan-in at {pct} % of Mosquitto's rate: {p} us", f"lat{pct}_q{q}", lat(p), False))
fmt = lambda v: "-" if v is None else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}")
for pin in pins:
    print(f"\n{pin}: | figure | {label} | Mosquitto | {label} / Mosquitto |")
    print("|---|---|---|---|")
    for text, name, f, _ in rows:
        a = runs.get((name, label, pin)); b = runs.get((name, "mosquitto", pin))
        a = f(a) if a else None; b = f(b) if b else None
        ratio = f"{a / b:.2f}x" if a is not None and b else "-"
        print(f"| {text} | {fmt(a)} | {fmt(b)} | {ratio} |")
print(f"\nraw results: {out}")
PY
