#!/usr/bin/env bash
# What Device Defender costs the message path: broker throughput with a 3-behaviour security
# profile attached to every device (all/things) against the same build with none, beside
# Mosquitto, same machine, same run, same tool (`mqttv5 bench`, crate mqttv5-cli 0.29.10).
# The detection delay (first message of a flood to its MQTT alert) is printed by
# test_defender.py's flood test run with `-s`.
#
#   SHARED=/work/shared benches/defender.sh
#   BIN=target/release/fleetcore DURATION=8 PERIOD_MS=1000 ROUNDS=5 SHARED=/work/shared benches/defender.sh
#
# ROUNDS (default 5) rounds, each starting Mosquitto, fleetcore without and with the profile in
# turn (the order of the two fleetcore runs alternates between rounds, so neither always runs
# on a machine warmed or loaded by the other); the table gives each figure's median over the
# rounds and the median and range of the per-round ratios profile / none.
#
# Figures: delivered msg/s of QoS 0 and QoS 1 fan-in (10 publishers -> 1 subscriber) and
# fan-out (1 -> 10); the profile's behaviours count messages sent, message size and
# authorization failures (every client is a device the detector evaluates each period).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-5}
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

start() { # who port -> pid (data dir in $OUT/<who>)
  local who=$1 port=$2 pid
  if [ "$who" = mosquitto ]; then
    pid=$("$SHARED/tools/mosquitto-anchor.sh" "$port")
  else
    rm -rf "$OUT/data-$who"
    FLEETCORE_DEFENDER_PERIOD_MS=$PERIOD_MS "$BIN" serve --data-dir "$OUT/data-$who" \
      --mqtt "127.0.0.1:$port" --mqtts off --http "127.0.0.1:$((port + 1))" --allow-anonymous \
      --log warn >>"$OUT/fleetcore.log" 2>&1 &
    pid=$!
    wait_port 127.0.0.1 "$((port + 1))"
  fi
  PIDS+=("$pid")
  wait_port 127.0.0.1 "$port"
  echo "$pid"
}
profile() { # port: attaches a 3-behaviour profile to all/things
  "$PY" - "$OUT/data-profile" "$(( $1 + 1 ))" <<'PY'
import configparser, sys, boto3
cp = configparser.ConfigParser(); cp.read(f"{sys.argv[1]}/credentials")
iot = boto3.client("iot", endpoint_url=f"http://127.0.0.1:{sys.argv[2]}", region_name="us-east-1",
                   aws_access_key_id=cp["fleetcore"]["aws_access_key_id"],
                   aws_secret_access_key=cp["fleetcore"]["aws_secret_access_key"])
b = lambda n, m, c: {"name": n, "metric": m, "criteria": {"comparisonOperator": "less-than",
                     "value": {"count": c}, "durationSeconds": 300}}
iot.create_security_profile(securityProfileName="bench", behaviors=[
    b("sent", "aws:num-messages-sent", 10**12), b("size", "aws:message-byte-size", 10**6),
    b("denied", "aws:num-authorization-failures", 10**6)])
iot.attach_security_profile(securityProfileName="bench",
                            securityProfileTargetArn="arn:aws:iot:us-east-1:000000000000:all/things")
PY
}
run() { # name port args...
  local name=$1 port=$2; shift 2
  "$MQTTV5" bench --mode throughput --host 127.0.0.1 --port "$port" --payload-size 256 \
    --duration "$DURATION" "$@" >"$OUT/$name.json" 2>>"$OUT/mqttv5.log" || true
}

port=$(free_port)
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="mosquitto none profile"; else order="mosquitto profile none"; fi
  for who in $order; do
    echo "== round $round: $who" >&2
    pid=$(start "$who" "$port")
    [ "$who" = profile ] && profile "$port"
    for qos in 0 1; do
      run "fanin_q$qos.$who.r$round" "$port" --publishers 10 --subscribers 1 --qos "$qos"
      run "fanout_q$qos.$who.r$round" "$port" --publishers 1 --subscribers 10 --qos "$qos"
    done
    stop "$pid"
  done
done

python3 - "$OUT" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
runs = {}
for path in glob.glob(os.path.join(out, "*.json")):
    name, who, rnd = os.path.basename(path)[:-5].split(".")
    try:
        v = json.load(open(path)).get("results", {}).get("throughput_steady")
    except ValueError:
        v = None
    if v:
        runs.setdefault((name, who), {})[rnd] = v
med = lambda xs: statistics.median(xs) if xs else None
print("| mqttv5 delivered msg/s (median of rounds) | no profile | 3-behaviour profile on all/things | profile / none: median (min-max) of per-round ratios | rounds | Mosquitto | none / Mosquitto |")
print("|---|---|---|---|---|---|---|")
for q in (0, 1):
    for name, text in ((f"fanin_q{q}", f"QoS {q} fan-in 10->1"), (f"fanout_q{q}", f"QoS {q} fan-out 1->10")):
        n, p, m = (runs.get((name, w), {}) for w in ("none", "profile", "mosquitto"))
        ratios = [p[r] / n[r] for r in n if r in p]
        f = lambda v: "-" if not v else f"{v:,.0f}"
        rr = f"{med(ratios):.3f}x ({min(ratios):.3f}-{max(ratios):.3f})" if ratios else "-"
        nm = f"{med(list(n.values())) / med(list(m.values())):.3f}x" if n and m else "-"
        print(f"| {text} | {f(med(list(n.values())))} | {f(med(list(p.values())))} | {rr} | {len(ratios)} | {f(med(list(m.values())))} | {nm} |")
print(f"\nraw results: {out}")
PY
