#!/usr/bin/env bash
# Broker CPU per message through 1 rule x 1 kinesis action, for one or more fleetcore binaries
# (e.g. before and after a change), beside Mosquitto's bare QoS 1 in the same run. On a machine
# shared with other jobs the throughput swings, but the CPU a broker spends per message (user +
# system time of its process from /proc/PID/stat, over messages) moves much less, so this is the
# figure to compare between binaries; the throughput ratio to Mosquitto is printed too.
#
# Per round and binary: a fresh server, the setup of `benches/rules.sh`'s `one` scenario (rule
# `SELECT * FROM 'one/#'`, one kinesis action to a 4-shard stream), then `mqttv5 bench` QoS 1,
# PUBLISHERS -> 1 subscriber, SIZE bytes on one/t. Two figures per run:
#   steady   CPU in the load's measured window (after mqttv5's 2 s warm-up) / messages received
#   whole    CPU from the start of the load until the action has delivered every ingested
#            message / messages ingested (every message went through the rule and its action)
# Mosquitto gets the same load (bare/t) and the steady figure. The binaries and Mosquitto run in
# turn within each round, the order rotating between rounds.
#
#   BINS="/tmp/before target/release/fleetcore" ROUNDS=3 benches/rules_cpu.sh
#   PERF=1 BINS=target/release/fleetcore benches/rules_cpu.sh   # + perf record -g of the server
#                                                               # in the measured window
#   BARE=1 ...   # each server first takes the same load on a topic no rule wants (bare QoS 1)
#   STAT=1 ...    # + `perf stat` of the server in the measured window: fdatasyncs, pwrites and
#                 # context switches per message received
#   ACTIONS=4 ... # the rule has 4 kinesis actions, to 4 streams of 4 shards (rules.sh's `four`);
#                 # "whole" then waits for every action to deliver every message
set -euo pipefail
cd "$(dirname "$0")/.."
BINS=${BINS:-target/release/fleetcore}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-8}
PUBLISHERS=${PUBLISHERS:-10}
SIZE=${SIZE:-256}
ACTIONS=${ACTIONS:-1}
PERF=${PERF:-}
STAT=${STAT:-}
BARE=${BARE:-}
SHARED=${SHARED:-$(cd .. && pwd)/shared}
[ -d "$SHARED" ] || SHARED=/work/shared
TARGET=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$TARGET/bench-results/rules-cpu-$(date -u +%Y%m%dT%H%M%SZ)}
PY=${PY:-.venv/bin/python}
MQTTV5=${MQTTV5:-$(command -v mqttv5 || echo /root/.cargo/bin/mqttv5)}
TICK=$(getconf CLK_TCK)
mkdir -p "$OUT"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
. benches/lib.sh

# cpu PID: user + system seconds of the process so far.
cpu() { awk -v t="$TICK" '{print ($14 + $15) / t}' "/proc/$1/stat"; }
metric() { curl -s "http://127.0.0.1:$2/metrics" | awk -v m="$1" 'index($0, m) == 1 {s += $NF} END {print s + 0}'; }

# load NAME PORT TOPIC PID [PERF_DATA]: mqttv5 load; the broker's CPU in the measured window ->
# NAME-steady. With PERF_DATA, `perf record` covers the measured window: it attaches after the
# warm-up, since `perf record -p` does not follow threads started after it attached (the stream
# store's sync helpers start on the first commit that touches several shard files).
load() {
  local name=$1 port=$2 topic=$3 pid=$4 perf_data=${5:-}
  "$MQTTV5" bench --mode throughput --host 127.0.0.1 --port "$port" --topic "$topic" \
    --publishers "$PUBLISHERS" --subscribers 1 --qos 1 --payload-size "$SIZE" \
    --duration "$DURATION" 2>/dev/null >"$OUT/$name.json" &
  local tool=$!
  sleep 2.2 # mqttv5's warm-up (2 s) is not counted in its figures
  local a b perf=""
  a=$(cpu "$pid")
  local stat=""
  if [ -n "$STAT" ]; then
    perf stat -x, -o "$OUT/$name.stat" -p "$pid" \
      -e syscalls:sys_enter_fdatasync,syscalls:sys_enter_pwrite64,context-switches \
      -- sleep "$DURATION" >/dev/null 2>&1 &
    stat=$!
  fi
  if [ -n "$perf_data" ]; then
    perf record -e cpu-clock -g -p "$pid" -o "$perf_data" -- sleep "$DURATION" >/dev/null 2>&1 &
    perf=$!
  fi
  sleep "$DURATION"
  b=$(cpu "$pid")
  wait "$tool"
  [ -z "$perf" ] || wait "$perf" || true
  [ -z "$stat" ] || wait "$stat" || true
  echo "$a $b" >"$OUT/$name-steady.cpu"
}

fleetcore() {
  local name=$1 bin=$2
  local data mqtt http pid
  data=$(mktemp -d /tmp/fc-rules-cpu.XXXXXX)
  mqtt=$(free_port); http=$(free_port)
  "$bin" serve --data-dir "$data" --mqtt "127.0.0.1:$mqtt" --mqtts off --http "127.0.0.1:$http" \
    --allow-anonymous --log warn >>"$OUT/$name.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_port 127.0.0.1 "$mqtt"
  wait_port 127.0.0.1 "$http"
  "$PY" - "$data" "$http" "$ACTIONS" <<'PY'
import configparser, sys, boto3
cp = configparser.ConfigParser(); cp.read(f"{sys.argv[1]}/credentials")
s = boto3.session.Session(aws_access_key_id=cp["fleetcore"]["aws_access_key_id"],
                          aws_secret_access_key=cp["fleetcore"]["aws_secret_access_key"], region_name="us-east-1")
url = f"http://127.0.0.1:{sys.argv[2]}"
streams = [f"s{n}" for n in range(1, int(sys.argv[3]) + 1)]
for stream in streams:
    s.client("kinesis", endpoint_url=url).create_stream(StreamName=stream, ShardCount=4)
s.client("iot", endpoint_url=url).create_topic_rule(ruleName="one", topicRulePayload={
    "sql": "SELECT * FROM 'one/#'", "awsIotSqlVersion": "2016-03-23",
    "actions": [{"kinesis": {"roleArn": "arn:aws:iam::000000000000:role/r", "streamName": stream,
                             "partitionKey": "${topic()}"}} for stream in streams]})
PY
  if [ -n "$BARE" ]; then
    load "$name-bare" "$mqtt" bare/t "$pid"
  fi
  local start ingested0 commits0
  start=$(cpu "$pid")
  ingested0=$(metric fleetcore_ingest_records_total "$http")
  commits0=$(metric fleetcore_stream_commit_batches_total "$http")
  load "$name" "$mqtt" one/t "$pid" "${PERF:+$OUT/$name.perf.data}"
  local ingested delivered
  ingested=$(( $(metric fleetcore_ingest_records_total "$http") - ingested0 ))
  for _ in $(seq 1 1200); do
    delivered=$(metric 'fleetcore_rules_action_succeeded_total{' "$http")
    [ "$delivered" -ge $(( ingested * ACTIONS )) ] && break
    sleep 0.1
  done
  echo "$start $(cpu "$pid") $ingested $delivered $(( $(metric fleetcore_stream_commit_batches_total "$http") - commits0 ))" >"$OUT/$name-whole.cpu"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$data"
}

mosquitto() {
  local name=$1 port pid
  port=$(free_port)
  pid=$("$SHARED/tools/mosquitto-anchor.sh" "$port")
  PIDS+=("$pid")
  load "$name" "$port" bare/t "$pid"
  kill "$pid"
}

read -ra bins <<<"$BINS"
for round in $(seq 1 "$ROUNDS"); do
  entries=(mosquitto)
  for i in "${!bins[@]}"; do entries+=("$i"); done
  # rotate the order by round
  shift_by=$(( (round - 1) % ${#entries[@]} ))
  entries=("${entries[@]:$shift_by}" "${entries[@]:0:$shift_by}")
  echo "== round $round (load $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$OUT/load.txt" >&2
  for e in "${entries[@]}"; do
    if [ "$e" = mosquitto ]; then mosquitto "r$round-mosquitto"; else fleetcore "r$round-b$e" "${bins[$e]}"; fi
  done
done

"$PY" - "$OUT" "$BINS" "$ROUNDS" "$ACTIONS" <<'PY'
import json, sys, pathlib
out, bins, rounds = pathlib.Path(sys.argv[1]), sys.argv[2].split(), int(sys.argv[3])
def steady(name):
    a, b = map(float, (out / f"{name}-steady.cpu").read_text().split())
    r = json.loads((out / f"{name}.json").read_text())["results"]
    return r["throughput_avg"], (b - a) / max(r["received"], 1) * 1e6
print(f"CPU per message (us) and msg/s, mqttv5 QoS 1, 1 rule x {sys.argv[4]} kinesis (fleetcore) / bare (Mosquitto)")
print(" | ".join(["round", "Mosquitto msg/s, us/msg"] + [f"b{i} [with BARE=1: then bare msg/s, us/msg]: msg/s (x Mosquitto), steady us/msg, whole us/msg [messages per stream commit, ingest and action together]" for i in range(len(bins))]))
sums = {}
for r in range(1, rounds + 1):
    mq_rate, mq_cpu = steady(f"r{r}-mosquitto")
    row = [str(r), f"{mq_rate:,.0f}, {mq_cpu:.1f}"]
    sums.setdefault("mq", []).append((mq_rate, mq_cpu, 0))
    for i in range(len(bins)):
        name = f"r{r}-b{i}"
        rate, us = steady(name)
        a, b, ingested, delivered, commits = (out / f"{name}-whole.cpu").read_text().split()
        whole = (float(b) - float(a)) / max(int(ingested), 1) * 1e6
        per_commit = int(ingested) / max(int(commits), 1)
        row.append(f"{rate:,.0f} ({rate / mq_rate:.2f}x), {us:.1f}, {whole:.1f} [{per_commit:.0f} msgs/commit]")
        if (out / f"{name}.stat").exists():
            received = json.loads((out / f"{name}.json").read_text())["results"]["received"]
            counts = {l.split(",")[2].split(":")[-1]: float(l.split(",")[0]) for l in (out / f"{name}.stat").read_text().splitlines()
                      if l.count(",") >= 2 and l.split(",")[0].replace(".", "").isdigit()}
            row.append("per msg: " + ", ".join(f"{k} {v / max(received, 1):.3f}" for k, v in counts.items()))
        if (out / f"{name}-bare.json").exists():
            brate, bus = steady(f"{name}-bare")
            row.append(f"bare {brate:,.0f} ({brate / mq_rate:.2f}x), {bus:.1f}")
        sums.setdefault(i, []).append((rate / mq_rate, us, whole))
    print(" | ".join(row))
mean = lambda xs: sum(xs) / len(xs)
for i, b in enumerate(bins):
    s = sums[i]
    print(f"b{i} = {b}: mean ratio to Mosquitto {mean([x[0] for x in s]):.2f}x, steady {mean([x[1] for x in s]):.1f} us/msg, "
          f"whole {mean([x[2] for x in s]):.1f} us/msg (Mosquitto {mean([x[1] for x in sums['mq']]):.1f} us/msg)")
PY
echo "results: $OUT"
