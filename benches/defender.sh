#!/usr/bin/env bash
# What Device Defender costs the message path: broker throughput with a 3-behaviour security
# profile attached to every device (all/things) against the same build with none, beside
# Mosquitto, same machine, same run, same tool (`mqttv5 bench`, crate mqttv5-cli 0.29.10); and
# the detection delay from a flood's first message to its MQTT alert.
#
#   SHARED=/work/shared benches/defender.sh
#   BIN=target/release/fleetcore DURATION=8 PERIOD_MS=1000 ROUNDS=9 SHARED=/work/shared benches/defender.sh
#
# ROUNDS (default 9) rounds, each starting Mosquitto, fleetcore without and with the profile in
# turn (the order of the two fleetcore runs alternates between rounds, so neither always runs
# on a machine warmed or loaded by the other). Per figure the table gives the median delivered
# msg/s over the rounds and the per-round ratio profile / none: its median, its range, and a
# 95 % bootstrap interval of that median (resampling the rounds); the ratio is resolved to 5 %
# when the interval lies within +-5 % of its median. Throughput of a QoS 0 fan-in is bound by
# the load tool's own backlog and swings between rounds, so the second table gives what does
# resolve small differences: server CPU per delivered message (user + system ticks of the
# server process during the run / messages received), with the same per-round ratio.
#
# Figures: QoS 0 and QoS 1 fan-in (10 publishers -> 1 subscriber) and fan-out (1 -> 10); QOS
# ("0 1") narrows them. The profile's behaviours count messages sent, message size and
# authorization failures (every client is a device the detector evaluates each period).
#
# PINNED=1 runs every server on CPU 0 and the load tool on CPU 1 (taskset), so the server's own
# CPU bounds the throughput and the ratios resolve small differences; SHAPES ("fanin fanout")
# narrows the figures.
#
# Detection delay: DELAY_REPS (default 10) floods, one fresh client id each, against a server
# with the profile plus a flood behaviour (`aws:num-messages-sent` less-than 50); the time from
# each flood's first message to its `in-alarm` alert on `$fleetcore/defender/alerts/...`, each
# flood starting at a random point of a period. The delay is bounded by one period (PERIOD_MS)
# plus the evaluation: the alarm is raised at the end of the period that holds the violating
# datapoint. ROUNDS=0 measures only the delay.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-9}
QOS=${QOS:-0 1}
SHAPES=${SHAPES:-fanin fanout}
PINNED=${PINNED:-0}
SERVER_CPU=(); LOAD_CPU=()
if [ "$PINNED" = 1 ]; then SERVER_CPU=(taskset -c 0); LOAD_CPU=(taskset -c 1); fi
DELAY_REPS=${DELAY_REPS:-10}
PERIOD_MS=${PERIOD_MS:-1000}
SHARED=${SHARED:-/work/shared}
MQTTV5=${MQTTV5:-$(command -v mqttv5 || echo /root/.cargo/bin/mqttv5)}
PY=${PY:-.venv/bin/python}
OUT=${OUT:-target/bench-results/defender-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
[ -x "$MQTTV5" ] || { echo "mqttv5 not found: cargo install mqttv5-cli --version 0.29.10" >&2; exit 1; }
command -v mosquitto >/dev/null || { apt-get update -qq && apt-get install -y -qq mosquitto >/dev/null; }
if [ -z "${BIN:-}" ]; then
  CARGO_INCREMENTAL=0 cargo build --release -p fleetcore --no-default-features -q
  BIN=$PWD/target/release/fleetcore
fi
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM
stop() { kill "$1" 2>/dev/null || true; while kill -0 "$1" 2>/dev/null; do sleep 0.1; done; }
# User + system CPU of a process so far, in clock ticks (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

start() { # who port -> pid (data dir in $OUT/<who>)
  local who=$1 port=$2 pid
  if [ "$who" = mosquitto ]; then
    pid=$("$SHARED/tools/mosquitto-anchor.sh" "$port")
    [ "$PINNED" = 1 ] && taskset -a -p -c 0 "$pid" >/dev/null
  else
    rm -rf "$OUT/data-$who"
    FLEETCORE_DEFENDER_PERIOD_MS=$PERIOD_MS "${SERVER_CPU[@]}" "$BIN" serve --data-dir "$OUT/data-$who" \
      --mqtt "127.0.0.1:$port" --mqtts off --http "127.0.0.1:$((port + 1))" --allow-anonymous \
      --log warn >>"$OUT/fleetcore.log" 2>&1 &
    pid=$!
    wait_port 127.0.0.1 "$((port + 1))"
  fi
  PIDS+=("$pid")
  wait_port 127.0.0.1 "$port"
  echo "$pid"
}
profile() { # who port [flood]: attaches a 3-behaviour profile (4 with the flood one) to all/things
  "$PY" - "$OUT/data-$1" "$(( $2 + 1 ))" "${3:-}" <<'PY'
import configparser, sys, boto3
cp = configparser.ConfigParser(); cp.read(f"{sys.argv[1]}/credentials")
iot = boto3.client("iot", endpoint_url=f"http://127.0.0.1:{sys.argv[2]}", region_name="us-east-1",
                   aws_access_key_id=cp["fleetcore"]["aws_access_key_id"],
                   aws_secret_access_key=cp["fleetcore"]["aws_secret_access_key"])
b = lambda n, m, c: {"name": n, "metric": m, "criteria": {"comparisonOperator": "less-than",
                     "value": {"count": c}, "durationSeconds": 300}}
behaviors = [b("sent", "aws:num-messages-sent", 10**12), b("size", "aws:message-byte-size", 10**6),
             b("denied", "aws:num-authorization-failures", 10**6)]
if sys.argv[3]:
    behaviors.append(b("flood", "aws:num-messages-sent", 50))
iot.create_security_profile(securityProfileName="bench", behaviors=behaviors)
iot.attach_security_profile(securityProfileName="bench",
                            securityProfileTargetArn="arn:aws:iot:us-east-1:000000000000:all/things")
PY
}
run() { # name port pid args...: the run's result and the server's CPU ticks during it
  local name=$1 port=$2 pid=$3 before; shift 3
  before=$(cpu_ticks "$pid")
  "${LOAD_CPU[@]}" "$MQTTV5" bench --mode throughput --host 127.0.0.1 --port "$port" --payload-size 256 \
    --duration "$DURATION" "$@" >"$OUT/$name.json" 2>>"$OUT/mqttv5.log" || true
  echo $(( $(cpu_ticks "$pid") - before )) >"$OUT/$name.cpu"
}

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); pinned: $PINNED" | tee "$OUT/load" >&2
port=$(free_port)
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="mosquitto none profile"; else order="mosquitto profile none"; fi
  for who in $order; do
    echo "== round $round: $who" >&2
    pid=$(start "$who" "$port")
    [ "$who" = profile ] && profile profile "$port"
    for qos in $QOS; do
      case " $SHAPES " in *" fanin "*)
        run "fanin_q$qos.$who.r$round" "$port" "$pid" --publishers 10 --subscribers 1 --qos "$qos" ;; esac
      case " $SHAPES " in *" fanout "*)
        run "fanout_q$qos.$who.r$round" "$port" "$pid" --publishers 1 --subscribers 10 --qos "$qos" ;; esac
    done
    stop "$pid"
  done
done

echo "load average after the throughput rounds: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/load" >&2

# detection delay
if [ "$DELAY_REPS" -gt 0 ]; then
  echo "== detection delay ($DELAY_REPS floods)" >&2
  pid=$(start delay "$port")
  profile delay "$port" flood
  "$PY" - "$port" "$DELAY_REPS" "$PERIOD_MS" >"$OUT/delay.txt" <<'PY'
import random, sys, threading, time
import paho.mqtt.client as mqtt
port, reps, period = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) / 1000
alerts, cond = {}, threading.Condition()
def on_message(_c, _u, m):
    if b'"in-alarm"' in m.payload:
        with cond:
            alerts.setdefault(m.topic.rsplit("/", 1)[1], time.monotonic())
            cond.notify_all()
def client(cid, **kw):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5, **kw)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c
subscribed = threading.Event()
watcher = client("delay-watch")
watcher.on_message = on_message
watcher.on_subscribe = lambda *_: subscribed.set()
watcher.subscribe("$fleetcore/defender/alerts/bench/#", qos=1)
if not subscribed.wait(10):
    sys.exit("the watcher's SUBACK did not come")
delays = []
for i in range(reps):
    cid = f"flood-{i}"
    dev = client(cid)
    # Each alert comes at a period's end: start the next flood at a random point of the
    # period, not right after it (which would always measure the worst case, one period).
    time.sleep(random.uniform(0, period))
    started = time.monotonic()
    for _ in range(200):
        dev.publish("bench/flood", b"x", qos=0)
    with cond:
        if not cond.wait_for(lambda: cid in alerts, timeout=30):
            print(f"{cid}: no alert in 30 s", file=sys.stderr)
            continue
    delays.append(alerts[cid] - started)
    dev.disconnect()
    dev.loop_stop()
print(" ".join(f"{d:.3f}" for d in delays))
PY
  stop "$pid"
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/load" >&2

python3 - "$OUT" "$PERIOD_MS" <<'PY'
import glob, json, os, random, statistics, sys
out, period_ms = sys.argv[1], int(sys.argv[2])
tick = os.sysconf("SC_CLK_TCK")
runs, cpu = {}, {}  # (figure, who) -> {round: msg/s}, {round: server CPU us per delivered msg}
for path in glob.glob(os.path.join(out, "*.json")):
    name, who, rnd = os.path.basename(path)[:-5].split(".")
    try:
        results = json.load(open(path))["results"]
        v = results["throughput_steady"]
    except (ValueError, KeyError, TypeError):
        continue
    if not v:
        continue
    runs.setdefault((name, who), {})[rnd] = v
    try:
        ticks = int(open(path[:-5] + ".cpu").read())
        if results.get("received"):
            cpu.setdefault((name, who), {})[rnd] = ticks / tick * 1e6 / results["received"]
    except (OSError, ValueError):
        pass
med = lambda xs: statistics.median(xs) if xs else None
rng = random.Random(18)
def interval(ratios):
    """95 % bootstrap interval of the median of `ratios` (resampling the rounds)."""
    if len(ratios) < 3:
        return None
    meds = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(2000))
    return meds[50], meds[1949]
def ratio_cell(p, n):
    ratios = [p[r] / n[r] for r in n if r in p]
    if not ratios:
        return "-", "-", 0
    m = med(ratios)
    ci = interval(ratios)
    resolved = "-" if not ci else ("yes" if ci[0] >= m * 0.95 and ci[1] <= m * 1.05 else "no")
    ci_text = f"; 95 % CI {ci[0]:.3f}-{ci[1]:.3f}" if ci else ""
    return f"{m:.3f}x ({min(ratios):.3f}-{max(ratios):.3f}{ci_text})", resolved, len(ratios)
figures = [(f"fanin_q{q}", f"QoS {q} fan-in 10->1") for q in (0, 1)] + \
          [(f"fanout_q{q}", f"QoS {q} fan-out 1->10") for q in (0, 1)]
figures.sort(key=lambda f: f[0][-1])
f0 = lambda v: "-" if not v else f"{v:,.0f}"
print("| mqttv5 delivered msg/s (median of rounds) | no profile | 3-behaviour profile on all/things | profile / none: median (range; 95 % CI of the median) | resolved to 5 % | rounds | Mosquitto | none / Mosquitto |")
print("|---|---|---|---|---|---|---|---|")
for name, text in figures:
    n, p, m = (runs.get((name, w), {}) for w in ("none", "profile", "mosquitto"))
    if not n:
        continue
    cell, resolved, k = ratio_cell(p, n)
    nm = f"{med(list(n.values())) / med(list(m.values())):.3f}x" if n and m else "-"
    print(f"| {text} | {f0(med(list(n.values())))} | {f0(med(list(p.values())))} | {cell} | {resolved} | {k} | {f0(med(list(m.values())))} | {nm} |")
print()
print("| server CPU per delivered message, us (median of rounds) | no profile | profile | profile / none: median (range; 95 % CI of the median) | resolved to 5 % | rounds | Mosquitto |")
print("|---|---|---|---|---|---|---|")
for name, text in figures:
    n, p, m = (cpu.get((name, w), {}) for w in ("none", "profile", "mosquitto"))
    if not n:
        continue
    cell, resolved, k = ratio_cell(p, n)
    f2 = lambda v: "-" if not v else f"{v:.2f}"
    print(f"| {text} | {f2(med(list(n.values())))} | {f2(med(list(p.values())))} | {cell} | {resolved} | {k} | {f2(med(list(m.values())))} |")
try:
    delays = [float(x) for x in open(os.path.join(out, "delay.txt")).read().split()]
except OSError:
    delays = []
if delays:
    print(f"\ndetection delay, first flood message -> in-alarm alert on MQTT (period {period_ms} ms, "
          f"{len(delays)} floods): median {med(delays):.3f} s, min {min(delays):.3f} s, max {max(delays):.3f} s")
print(f"\nraw results: {out}")
PY
