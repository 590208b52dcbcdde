#!/usr/bin/env bash
# Rules-engine benchmark: end-to-end QoS 1 throughput through rules writing to Kinesis streams
# (publish -> ingest log (durable, PUBACK after it) -> partition reader -> rule -> action lanes
# -> stream (durable)), beside Mosquitto's bare QoS 1 pub/sub, with the neutral load tool
# `mqttv5 bench` (crate mqttv5-cli 0.29.10) and then with `fleetcore bench` in its default device
# mode (one packet per write, INFLIGHT unacknowledged QoS 1 messages per publisher), same
# parameters, same run:
#
#   bare        fleetcore, no rule wants the topic
#   one         1 rule x 1 kinesis action
#   four        1 rule x 4 kinesis actions
#   tenk        10,000 rules with distinct filters, of which one (1 kinesis action) matches
#   mosquitto   Mosquitto, bare QoS 1
#
# For the rule scenarios the action side is measured too: the deliveries the actions made
# (`fleetcore_rules_action_succeeded_total` of the scenario's rule, per action), from the start
# of the load until they stop growing, as messages per second fully delivered. The 10,000 rules
# are created with boto3 from 16 concurrent clients, timed.
#
#   benches/rules.sh
#   DURATION=10 PUBLISHERS=10 SIZE=256 RULES=10000 benches/rules.sh
#   BIN=target/debug/fleetcore DURATION=2 RULES=200 benches/rules.sh    # a quick check of the script
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
PUBLISHERS=${PUBLISHERS:-10}
SIZE=${SIZE:-256}
RULES=${RULES:-10000}
INFLIGHT=${INFLIGHT:-64}
SHARED=${SHARED:-$(cd .. && pwd)/shared}
[ -d "$SHARED" ] || SHARED=/work/shared
TARGET=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$TARGET/bench-results/rules-$(date -u +%Y%m%dT%H%M%SZ)}
PY=${PY:-.venv/bin/python}
MQTTV5=${MQTTV5:-$(command -v mqttv5 || echo /root/.cargo/bin/mqttv5)}
mkdir -p "$OUT"

if [ -z "${BIN:-}" ]; then
  cargo build --release -p fleetcore -q
  BIN=$TARGET/release/fleetcore
fi
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
. benches/lib.sh

FC_DATA=$(mktemp -d /tmp/fc-rules-bench.XXXXXX)
MQTT=$(free_port); HTTP=$(free_port); MOSQ=$(free_port)
"$BIN" serve --data-dir "$FC_DATA" --mqtt "127.0.0.1:$MQTT" --mqtts off --http "127.0.0.1:$HTTP" \
  --allow-anonymous --log warn >>"$OUT/fleetcore.log" 2>&1 &
PIDS+=("$!")
wait_port 127.0.0.1 "$MQTT"
wait_port 127.0.0.1 "$HTTP"
MOSQ_PID=$("$SHARED/tools/mosquitto-anchor.sh" "$MOSQ")
PIDS+=("$MOSQ_PID")

# boto3 as a user would, with the server's credentials: `iot.py create-streams` / `iot.py rule ...`.
cat >"$OUT/iot.py" <<'PY'
import configparser, json, sys, time
from concurrent.futures import ThreadPoolExecutor
import boto3
data, port, what = sys.argv[1], sys.argv[2], sys.argv[3]
cp = configparser.ConfigParser(); cp.read(f"{data}/credentials")
s = boto3.session.Session(aws_access_key_id=cp["fleetcore"]["aws_access_key_id"],
                          aws_secret_access_key=cp["fleetcore"]["aws_secret_access_key"], region_name="us-east-1")
url = f"http://127.0.0.1:{port}"
ROLE = "arn:aws:iam::000000000000:role/r"
def kinesis(stream): return {"kinesis": {"roleArn": ROLE, "streamName": stream, "partitionKey": "${topic()}"}}
def rule(iot, name, sql, actions):
    iot.create_topic_rule(ruleName=name, topicRulePayload={"sql": sql, "awsIotSqlVersion": "2016-03-23", "actions": actions})
if what == "setup":
    k = s.client("kinesis", endpoint_url=url)
    for n in range(1, 5):
        k.create_stream(StreamName=f"s{n}", ShardCount=4)
    iot = s.client("iot", endpoint_url=url)
    rule(iot, "one", "SELECT * FROM 'one/#'", [kinesis("s1")])
    rule(iot, "four", "SELECT * FROM 'four/#'", [kinesis(f"s{n}") for n in range(1, 5)])
elif what == "many":
    count, workers = int(sys.argv[4]), 16
    def create(w):
        iot = s.client("iot", endpoint_url=url)
        for i in range(w, count - 1, workers):
            rule(iot, f"r{i}", f"SELECT *, 'r{i}' AS rule FROM 'fleet/{i}/+'", [kinesis("s1")])
    started = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(create, range(workers)))
    rule(s.client("iot", endpoint_url=url), "tenk", "SELECT * FROM 'tenk/#'", [kinesis("s2")])
    took = time.monotonic() - started
    # 20 more, one call at a time, after all the others: the median call
    iot = s.client("iot", endpoint_url=url)
    calls = []
    for n in range(20):
        t = time.monotonic(); rule(iot, f"late{n}", f"SELECT * FROM 'late/{n}'", [kinesis("s3")]); calls.append(time.monotonic() - t)
    print(json.dumps({"rules": count, "clients": workers, "seconds": took, "last_create_ms": sorted(calls)[10] * 1000}))
PY
"$PY" "$OUT/iot.py" "$FC_DATA" "$HTTP" setup
# One call among few rules, for comparison with the last call among 10,000.
FIRST_MS=$("$PY" - "$FC_DATA" "$HTTP" <<'PY'
import configparser, sys, time, boto3
cp = configparser.ConfigParser(); cp.read(f"{sys.argv[1]}/credentials")
s = boto3.session.Session(aws_access_key_id=cp["fleetcore"]["aws_access_key_id"],
                          aws_secret_access_key=cp["fleetcore"]["aws_secret_access_key"], region_name="us-east-1")
iot = s.client("iot", endpoint_url=f"http://127.0.0.1:{sys.argv[2]}")
iot.list_topic_rules()
calls = []
for n in range(20):
    t = time.monotonic()
    iot.create_topic_rule(ruleName=f"early{n}", topicRulePayload={"sql": f"SELECT * FROM 'early/{n}'", "awsIotSqlVersion": "2016-03-23",
        "actions": [{"kinesis": {"roleArn": "arn:aws:iam::000000000000:role/r", "streamName": "s4"}}]})
    calls.append(time.monotonic() - t)
print(f"{sorted(calls)[10] * 1000:.1f}")
PY
)
echo "{\"first_create_ms\": $FIRST_MS}" >"$OUT/create-few.json"

# Deliveries made by the actions of rule $1 so far.
delivered() {
  curl -s "http://127.0.0.1:$HTTP/metrics" |
    awk -v r="rule=\"$1\"" 'index($0, "fleetcore_rules_action_succeeded_total{") == 1 && index($0, r) {s += $NF} END {print s + 0}'
}
now() { date +%s.%N; }

# load TOOL NAME PORT TOPIC: QoS 1, PUBLISHERS -> 1 subscriber, with `mqttv5 bench` or
# `fleetcore bench` (device mode); writes $OUT/NAME.json.
load() {
  local tool=$1 name=$2 port=$3 topic=$4
  if [ "$tool" = mqttv5 ]; then
    "$MQTTV5" bench --mode throughput --host 127.0.0.1 --port "$port" --topic "$topic" \
      --publishers "$PUBLISHERS" --subscribers 1 --qos 1 --payload-size "$SIZE" \
      --duration "$DURATION" 2>/dev/null >"$OUT/$name.json"
  else
    "$BIN" bench --port "$port" --topic "$topic" --filter "$topic" --publishers "$PUBLISHERS" \
      --subscribers 1 --qos 1 --size "$SIZE" --inflight "$INFLIGHT" --duration "$DURATION" \
      --json --client-prefix "$name" 2>>"$OUT/bench.log" >"$OUT/$name.json"
  fi
}

# run TOOL NAME PORT TOPIC [RULE ACTIONS]
run() {
  local tool=$1 name=$2 port=$3 topic=$4 rule=${5:-} actions=${6:-1}
  echo "== $name ($tool)" >&2
  local before=0 start
  [ -n "$rule" ] && before=$(delivered "$rule")
  start=$(now)
  load "$tool" "$name" "$port" "$topic"
  if [ -n "$rule" ]; then
    # Wait until the actions stop delivering (no change for 2 s), at most 120 s.
    local last=-1 current stable=0 done_at
    for _ in $(seq 1 1200); do
      current=$(delivered "$rule")
      if [ "$current" = "$last" ]; then stable=$((stable + 1)); else stable=0; last=$current; done_at=$(now); fi
      [ "$stable" -ge 20 ] && break
      sleep 0.1
    done
    echo "{\"deliveries\": $((last - before)), \"actions\": $actions, \"seconds\": $(echo "$done_at - $start" | bc)}" >"$OUT/$name-actions.json"
  fi
}

run mqttv5 bare "$MQTT" bare/t
run mqttv5 one "$MQTT" one/t one 1
run mqttv5 four "$MQTT" four/t four 4
"$PY" "$OUT/iot.py" "$FC_DATA" "$HTTP" many "$RULES" | tee "$OUT/create-many.json"
run mqttv5 tenk "$MQTT" tenk/t tenk 1
run mqttv5 mosquitto "$MOSQ" bare/t
# The same scenarios with `fleetcore bench` in device mode (the 10,000 rules are in place).
run fleetcore fc-mosquitto "$MOSQ" bare/t
run fleetcore fc-bare "$MQTT" bare/t
run fleetcore fc-one "$MQTT" one/t one 1
run fleetcore fc-four "$MQTT" four/t four 4
run fleetcore fc-tenk "$MQTT" tenk/t tenk 1

"$PY" - "$OUT" "$INFLIGHT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
r = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
def rate(name):
    if name.startswith("fc-"):
        return r[name]["received_per_s"]
    return r[name]["results"]["throughput_avg"]
c = r["mosquitto"]["config"]
for prefix, title in [("", f"mqttv5 bench, QoS 1, {c['publishers']} publishers -> 1 subscriber, {c['payload_size']} B, "
                          f"{c['duration_secs']} s; throughput_avg msg/s (ratio to Mosquitto)"),
                      ("fc-", f"fleetcore bench (device mode), QoS 1, {r['fc-mosquitto']['publishers']} publishers -> 1 "
                              f"subscriber, {r['fc-mosquitto']['size']} B, inflight {sys.argv[2]}; "
                              "received msg/s (ratio to Mosquitto)")]:
    mq = rate(prefix + "mosquitto")
    print(title)
    print(f"  mosquitto bare QoS 1      {mq:>9,.0f}")
    print(f"  fleetcore bare QoS 1      {rate(prefix + 'bare'):>9,.0f}  ({rate(prefix + 'bare') / mq:.2f}x)")
    for name, label in [("one", "1 rule x 1 kinesis"), ("four", "1 rule x 4 kinesis"), ("tenk", "10,000 rules, 1 matches")]:
        name = prefix + name
        a = r[f"{name}-actions"]
        full = a["deliveries"] / a["actions"] / a["seconds"]
        print(f"  {label:<25} {rate(name):>9,.0f}  ({rate(name) / mq:.2f}x); actions: {a['deliveries'] // a['actions']:,} "
              f"msgs delivered to every action in {a['seconds']:.1f} s from the start of the load: {full:,.0f} msg/s")
m = r["create-many"]
print(f"created {m['rules']:,} rules with boto3 ({m['clients']} clients) in {m['seconds']:.1f} s; median of 20 "
      f"sequential CreateTopicRule calls with 2 rules present: {r['create-few']['first_create_ms']:.1f} ms, "
      f"with {m['rules']:,}: {m['last_create_ms']:.1f} ms")
PY
