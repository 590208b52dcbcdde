#!/usr/bin/env bash
# QoS 0 fan-in (10 publishers -> 1 subscriber, 256 B) with `mqttv5 bench`, fleetcore beside
# Mosquitto in the same run, taken apart: what the broker ACCEPTS (the tool's `published`), what
# the tool's subscriber DISPATCHES inside the measured window (`throughput_steady`, the figure
# the tool prints), what it dispatches only after the window (messages the broker had delivered
# that were still queued inside the tool), the tool's peak RSS, and broker CPU per message.
# Then the same shape with the subscriber in a process of its own (the tool's advice for
# measuring broker capacity), and paced runs at the rates in RATES.
#
#   benches/broker_qos0.sh                                   # unpinned and pinned, 5 s per run
#   PINS=pinned RATES="60000 100000" benches/broker_qos0.sh
#   ISOLATE=rt benches/broker_qos0.sh    # brokers and tools at SCHED_RR 1 (shared machine only)
#
# Pinned: each broker is started on CPU 0 (`taskset -c 0 fleetcore serve`, so its runtime sizes
# itself to that one core) and the tool runs on CPU 1. ISOLATE=rt gives the measured processes
# round-robin real-time priority so that other work on a shared machine does not take their
# CPU; it needs root, and is meant only for a machine busy with other jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
DURATION=${DURATION:-5}
PINS=${PINS:-unpinned pinned}
RATES=${RATES:-}
ISOLATE=${ISOLATE:-none}
SHARED=${SHARED:-/work/shared}
MQTTV5=${MQTTV5:-$(command -v mqttv5 || echo /root/.cargo/bin/mqttv5)}
BIN=${BIN:-$PWD/target/release/fleetcore}
OUT=${OUT:-target/bench-results/qos0-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
[ -x "$MQTTV5" ] || { echo "mqttv5 not found: cargo install mqttv5-cli --version 0.29.10" >&2; exit 1; }
[ -x "$BIN" ] || { echo "no fleetcore binary at $BIN: cargo build --release -p fleetcore" >&2; exit 1; }
command -v mosquitto >/dev/null || { apt-get update -qq && apt-get install -y -qq mosquitto >/dev/null; }

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$OUT/data-dirs" ] && xargs rm -rf <"$OUT/data-dirs"
  rm -f "$OUT/data-dirs"
}
trap cleanup EXIT INT TERM
stop() { kill "$1" 2>/dev/null || true; while kill -0 "$1" 2>/dev/null; do sleep 0.1; done; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

start_broker() { # who port pin -> pid
  local who=$1 port=$2 pin=$3 pid data core=()
  [ "$pin" = pinned ] && core=(taskset -c 0)
  if [ "$who" = mosquitto ]; then
    pid=$("$SHARED/tools/mosquitto-anchor.sh" "$port")
    [ "$pin" = pinned ] && taskset -a -p -c 0 "$pid" >/dev/null
  else
    data=$(mktemp -d /tmp/fc-qos0.XXXXXX)
    echo "$data" >>"$OUT/data-dirs"
    "${core[@]}" "$BIN" serve --data-dir "$data" --mqtt "127.0.0.1:$port" --mqtts off \
      --http "127.0.0.1:$((port + 1))" --allow-anonymous --log warn >>"$OUT/fleetcore.log" 2>&1 &
    pid=$!
  fi
  wait_port 127.0.0.1 "$port"
  if [ "$ISOLATE" = rt ]; then
    for t in /proc/"$pid"/task/*; do chrt -r -p 1 "${t##*/}" >/dev/null; done
  fi
  echo "$pid"
}
tool() { # name pin port args... ; records the tool's peak RSS in $OUT/name.rss (KiB)
  local name=$1 pin=$2 port=$3 run=(); shift 3
  [ "$ISOLATE" = rt ] && run+=(chrt -r 1)
  [ "$pin" = pinned ] && run+=(taskset -c 1)
  /usr/bin/time -f %M -o "$OUT/$name.rss" "${run[@]}" "$MQTTV5" bench --mode throughput \
    --host 127.0.0.1 --port "$port" --payload-size 256 --qos 0 "$@" \
    >"$OUT/$name.json" 2>>"$OUT/mqttv5.log" || true
}

for pin in $PINS; do
  for who in mosquitto fleetcore; do
    echo "== $pin $who" >&2
    port=${PORT:-27860}; [ "$who" = mosquitto ] || port=$((port + 10))
    pid=$(start_broker "$who" "$port" "$pin")
    PIDS+=("$pid")
    t0=$(cpu_ticks "$pid")
    tool "one.$who.$pin" "$pin" "$port" --duration "$DURATION" --publishers 10 --subscribers 1
    echo $(($(cpu_ticks "$pid") - t0)) >"$OUT/one.$who.$pin.cpu"
    # The subscriber in its own process, started first; the publishers run one second longer
    # so that they cover the subscriber's whole window.
    tool "sub.$who.$pin" "$pin" "$port" --duration "$DURATION" --publishers 0 --subscribers 1 \
      --client-id "qos0-sub-$who" &
    sub=$!
    sleep 0.5
    tool "pub.$who.$pin" "$pin" "$port" --duration "$((DURATION + 1))" --publishers 10 --subscribers 0 \
      --client-id "qos0-pub-$who"
    wait "$sub"
    for rate in $RATES; do
      tool "rate$rate.$who.$pin" "$pin" "$port" --duration "$DURATION" --publishers 10 --subscribers 1 \
        --rate "$rate"
    done
    stop "$pid"
  done
done

python3 - "$OUT" "$PINS" "$RATES" <<'PY'
import json, os, sys
out, pins, rates = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
def load(name):
    try:
        return json.load(open(os.path.join(out, name + ".json")))["results"]
    except (OSError, ValueError, KeyError):
        return None
def num(path):
    try:
        return float(open(os.path.join(out, path)).read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
fmt = lambda v: "-" if v is None else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}")
for pin in pins:
    print(f"\n{pin}: | figure | fleetcore | Mosquitto | fleetcore / Mosquitto |")
    print("|---|---|---|---|")
    rows = []
    def fig(text, f):
        a, b = f("fleetcore"), f("mosquitto")
        ratio = f"{a / b:.2f}x" if a is not None and b else "-"
        print(f"| {text} | {fmt(a)} | {fmt(b)} | {ratio} |")
    one = lambda who: load(f"one.{who}.{pin}")
    def per_s(key):
        return lambda who: (lambda r: r and r[key] / r["elapsed_secs"])(one(who))
    fig("one process: delivered msg/s in the window (the tool's figure)",
        lambda who: (one(who) or {}).get("throughput_steady"))
    fig("one process: published (accepted) msg/s", per_s("published"))
    fig("one process: messages the tool dispatched only after the window",
        lambda who: (lambda r: r and r["received"] - sum(r["samples"]))(one(who)))
    fig("one process: tool peak RSS, MiB",
        lambda who: (lambda k: k and k / 1024)(num(f"one.{who}.{pin}.rss")))
    fig("one process: broker CPU us per message delivered",
        lambda who: (lambda r, t: r and t is not None and t * 1e4 / max(r["received"], 1))(
            one(who), num(f"one.{who}.{pin}.cpu")))
    fig("subscriber in its own process: delivered msg/s",
        lambda who: (load(f"sub.{who}.{pin}") or {}).get("throughput_steady"))
    fig("subscriber in its own process: published msg/s",
        lambda who: (load(f"pub.{who}.{pin}") or {}).get("offered_rate"))
    for rate in rates:
        fig(f"paced at {int(rate):,} msg/s: delivered msg/s",
            lambda who: (load(f"rate{rate}.{who}.{pin}") or {}).get("throughput_steady"))
print(f"\nraw results: {out}")
PY
