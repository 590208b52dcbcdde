#!/usr/bin/env bash
# Fan-in (10 publishers -> 1 subscriber) with `mqttv5 bench` (crate mqttv5-cli 0.29.10) paced at a
# ladder of offered rates, fleetcore and Mosquitto interleaved in the same run: the highest rate
# each broker delivers in full, and what the tool itself holds while it measures.
#
#   SHARED=/work/shared BIN=target/release/fleetcore benches/mqttv5_paced.sh
#   RATES="60000 90000 120000" QOS=0 DURATION=5 benches/mqttv5_paced.sh
#
# Why paced: unpaced, the tool's publishers and its subscriber share one process (one tokio
# runtime) on the same two cores as the broker. A broker that accepts publishes faster leaves the
# tool's subscriber callback less CPU; the tool's connection reader keeps draining the socket into
# the client's own unbounded queue, so its memory grows (hundreds of MB) and the per-second
# "delivered" samples count only what the callback reached, not what the broker delivered. The
# table shows the tool's peak RSS beside each figure: a row where it grows is the tool's backlog.
# "kept up" = steady delivered >= 97 % of the paced rate and every published message received.
# Rate 0 is the unpaced run, for reference. "split" rows run the subscriber as its own mqttv5
# process (`--publishers 0`, measuring while a second process's 10 publishers run unpaced
# throughout its window), which the tool's own warning recommends over one read loop shared with
# the publishers.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-6}
RATES=${RATES:-0 40000 60000 80000 100000 120000 140000 160000}
QOS=${QOS:-0 1}
SIZE=${SIZE:-256}
SHARED=${SHARED:-/work/shared}
MQTTV5=${MQTTV5:-$(command -v mqttv5 || echo /root/.cargo/bin/mqttv5)}
PORT=${PORT:-27300}
OUT=${OUT:-target/bench-results/paced-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
[ -x "$MQTTV5" ] || { echo "mqttv5 not found: cargo install mqttv5-cli --version 0.29.10" >&2; exit 1; }
command -v mosquitto >/dev/null || { apt-get update -qq && apt-get install -y -qq mosquitto >/dev/null; }
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
if [ -z "${BIN:-}" ]; then
  cargo build --release -p fleetcore -q
  BIN=$PWD/target/release/fleetcore
fi

PIDS=()
DATA=$(mktemp -d /tmp/fc-paced.XXXXXX)
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$DATA"
}
trap cleanup EXIT INT TERM
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

mosq_port=$PORT fc_port=$((PORT + 10))
for p in "$mosq_port" "$fc_port" "$((fc_port + 1))"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "port $p is taken: set PORT" >&2; exit 1; fi
done
mosq_pid=$("$SHARED/tools/mosquitto-anchor.sh" "$mosq_port")
PIDS+=("$mosq_pid")
"$BIN" serve --data-dir "$DATA" --mqtt "127.0.0.1:$fc_port" --mqtts off --http "127.0.0.1:$((fc_port + 1))" \
  --allow-anonymous --log warn >>"$OUT/fleetcore.log" 2>&1 &
fc_pid=$!
PIDS+=("$fc_pid")
wait_port "$mosq_port"
wait_port "$fc_port"

run() { # broker port qos rate -> $OUT/<broker>.q<qos>.r<rate>.json and .rss (peak KiB)
  local who=$1 port=$2 qos=$3 rate=$4 name pid peak=0 rss
  name="$OUT/$who.q$qos.r$rate"
  "$MQTTV5" bench --mode throughput --host 127.0.0.1 --port "$port" --payload-size "$SIZE" \
    --duration "$DURATION" --publishers 10 --subscribers 1 --qos "$qos" --rate "$rate" \
    >"$name.json" 2>>"$OUT/mqttv5.log" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    rss=$(awk '/VmRSS/{print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ "${rss:-0}" -gt "$peak" ] && peak=$rss
    sleep 0.25
  done
  wait "$pid" || true
  echo "$peak" >"$name.rss"
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run_split() { # broker port broker-pid qos -> $OUT/<broker>.q<qos>.split.{json,pub.json,rss,cpu}
  local who=$1 port=$2 bpid=$3 qos=$4 name sub pub peak=0 rss t0 c0
  name="$OUT/$who.q$qos.split"
  t0=$(date +%s.%N) c0=$(cpu_ticks "$bpid")
  /usr/bin/time -f "%e %U %S" -o "$name.pub.time" "$MQTTV5" bench --mode throughput --host 127.0.0.1 --port "$port" --payload-size "$SIZE" \
    --duration "$((DURATION + 4))" --warmup 1 --publishers 10 --subscribers 0 --qos "$qos" \
    >"$name.pub.json" 2>>"$OUT/mqttv5.log" &
  pub=$!
  /usr/bin/time -f "%e %U %S" -o "$name.sub.time" "$MQTTV5" bench --mode throughput --host 127.0.0.1 --port "$port" --payload-size "$SIZE" \
    --duration "$DURATION" --warmup 3 --publishers 0 --subscribers 1 --qos "$qos" \
    >"$name.json" 2>>"$OUT/mqttv5.log" &
  sub=$!
  local tool=""
  while kill -0 "$sub" 2>/dev/null; do
    # the measured process is the child of /usr/bin/time
    [ -n "$tool" ] || tool=$(pgrep -P "$sub" | head -1 || true)
    rss=$(awk '/VmRSS/{print $2}' "/proc/${tool:-$sub}/status" 2>/dev/null || echo 0)
    [ "${rss:-0}" -gt "$peak" ] && peak=$rss
    sleep 0.25
  done
  wait "$sub" || true
  wait "$pub" || true
  echo "$peak" >"$name.rss"
  echo "$(date +%s.%N) $t0 $(cpu_ticks "$bpid") $c0" >"$name.broker.cpu"
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/load"
for qos in $QOS; do
  for rate in $RATES; do
    echo "== qos $qos rate $rate" >&2
    run mosquitto "$mosq_port" "$qos" "$rate"
    run fleetcore "$fc_port" "$qos" "$rate"
  done
  if [ "${SPLIT:-1}" = 1 ]; then
    echo "== qos $qos split" >&2
    run_split mosquitto "$mosq_port" "$mosq_pid" "$qos"
    run_split fleetcore "$fc_port" "$fc_pid" "$qos"
  fi
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/load"

python3 - "$OUT" "$QOS" "$RATES" <<'EOF' | tee "$OUT/table.md"
import json, os, sys
out, qoses, rates = sys.argv[1], sys.argv[2].split(), [int(r) for r in sys.argv[3].split()]
print("| QoS | paced rate | broker | offered/s | delivered/s (steady) | received / published | tool peak RSS | kept up |")
print("|---|---|---|---|---|---|---|---|")
best, split, cpus = {}, {}, {}
for qos in qoses:
    for rate in rates:
        for who in ("mosquitto", "fleetcore"):
            base = f"{out}/{who}.q{qos}.r{rate}"
            try:
                r = json.load(open(base + ".json"))["results"]
            except (OSError, ValueError, KeyError):
                print(f"| {qos} | {rate or 'unpaced'} | {who} | (no result) | | | | |")
                continue
            rss = int(open(base + ".rss").read() or 0) / 1024
            steady, offered = r["throughput_steady"], r["offered_rate"]
            whole = r["received"] / r["published"] if r["published"] else 0
            kept = rate > 0 and steady >= 0.97 * rate and whole >= 0.99
            if kept:
                best[(qos, who)] = max(best.get((qos, who), 0), rate)
            print(f"| {qos} | {rate or 'unpaced'} | {who} | {offered:,.0f} | {steady:,.0f} | "
                  f"{whole:.2f} | {rss:,.0f} MB | {'yes' if kept else 'no' if rate else ''} |")
for qos in qoses:
    for who in ("mosquitto", "fleetcore"):
        base = f"{out}/{who}.q{qos}.split"
        try:
            r = json.load(open(base + ".json"))["results"]
            p = json.load(open(base + ".pub.json"))["results"]
        except (OSError, ValueError, KeyError):
            continue
        rss = int(open(base + ".rss").read() or 0) / 1024
        split[(qos, who)] = r["throughput_steady"]
        cpu = {}
        for tool in ("pub", "sub"):
            wall, user, system = (float(x) for x in open(f"{base}.{tool}.time").read().split()[-3:])
            cpu[tool] = (user + system) / wall
        t1, t0, c1, c0 = (float(x) for x in open(base + ".broker.cpu").read().split())
        cpu["broker"] = (c1 - c0) / os.sysconf("SC_CLK_TCK") / (t1 - t0)
        cpus[(qos, who)] = cpu
        print(f"| {qos} | split (own process) | {who} | {p['offered_rate']:,.0f} | "
              f"{r['throughput_steady']:,.0f} | | {rss:,.0f} MB (subscriber) | |")
print()
for qos in qoses:
    m, f = split.get((qos, "mosquitto"), 0), split.get((qos, "fleetcore"), 0)
    if m:
        print(f"- QoS {qos}: subscriber in its own process, delivered/s: fleetcore {f:,.0f}, Mosquitto {m:,.0f} ({f / m:.2f}x)")
    for who in ("mosquitto", "fleetcore"):
        c = cpus.get((qos, who))
        if c:
            print(f"  - {who}, CPUs busy over the split run: broker {c['broker']:.2f}, "
                  f"publishers' process {c['pub']:.2f}, subscriber's process {c['sub']:.2f}")
for qos in qoses:
    m, f = best.get((qos, "mosquitto"), 0), best.get((qos, "fleetcore"), 0)
    ratio = f"{f / m:.2f}x" if m else "n/a"
    print(f"- QoS {qos}: highest paced rate delivered in full: fleetcore {f:,}, Mosquitto {m:,} ({ratio})")
EOF
