#!/usr/bin/env bash
# Rules-engine benchmark: end-to-end QoS 1 throughput through one rule writing to a stream
# (publish -> ingest log (durable, PUBACK after it) -> rule worker -> Kinesis stream (durable)),
# beside Mosquitto's bare QoS 1 pub/sub throughput, same load generator (`fleetcore bench`), same
# run. A message counts end to end once the kinesis action has written it
# (`fleetcore_rules_action_succeeded_total`); the script waits for the rule to catch up after the
# publishers stop, so the figure is what the whole pipeline sustains.
#
#   benches/rules.sh
#   DURATION=5 PUBLISHERS=16 INFLIGHT=64 benches/rules.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
PUBLISHERS=${PUBLISHERS:-16}
INFLIGHT=${INFLIGHT:-64}
SIZE=${SIZE:-64}
SHARED=${SHARED:-$(cd .. && pwd)/shared}
TARGET=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$TARGET/bench-results/rules-$(date -u +%Y%m%dT%H%M%SZ)}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"

cargo build --release -p fleetcore -q
BIN=$TARGET/release/fleetcore
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

FC_DATA=$(mktemp -d /tmp/fc-rules-bench.XXXXXX)
MQTT=$(free_port); HTTP=$(free_port); MOSQ=$(free_port)
"$BIN" serve --data-dir "$FC_DATA" --mqtt "127.0.0.1:$MQTT" --mqtts off --http "127.0.0.1:$HTTP" \
  --allow-anonymous --log warn >>"$OUT/fleetcore.log" 2>&1 &
PIDS+=("$!")
wait_port 127.0.0.1 "$MQTT"
wait_port 127.0.0.1 "$HTTP"
MOSQ_PID=$("$SHARED/tools/mosquitto-anchor.sh" "$MOSQ")
PIDS+=("$MOSQ_PID")

# The stream and the rule, created as a user would (boto3 with the server's credentials).
"$PY" - "$FC_DATA" "$HTTP" <<'PY'
import configparser, sys, time, boto3
cp = configparser.ConfigParser(); cp.read(f"{sys.argv[1]}/credentials")
s = boto3.session.Session(aws_access_key_id=cp["fleetcore"]["aws_access_key_id"],
                          aws_secret_access_key=cp["fleetcore"]["aws_secret_access_key"], region_name="us-east-1")
url = f"http://127.0.0.1:{sys.argv[2]}"
s.client("kinesis", endpoint_url=url).create_stream(StreamName="bench", ShardCount=4)
s.client("iot", endpoint_url=url).create_topic_rule(ruleName="bench", topicRulePayload={
    "sql": "SELECT * FROM 'bench/#'", "awsIotSqlVersion": "2016-03-23",
    "actions": [{"kinesis": {"roleArn": "arn:aws:iam::000000000000:role/r", "streamName": "bench",
                             "partitionKey": "${topic(2)}"}}]})
PY

run() { # name port args...
  local name=$1 port=$2; shift 2
  echo "== $name" >&2
  "$BIN" bench --port "$port" --duration "$DURATION" --json --client-prefix "$name" "$@" | tee "$OUT/$name.json"
}
delivered() { curl -s "http://127.0.0.1:$HTTP/metrics" | awk '/^fleetcore_rules_action_succeeded_total/ {s += $NF} END {print s + 0}'; }

START=$(date +%s.%N)
run rule-fleetcore "$MQTT" --qos 1 --publishers "$PUBLISHERS" --subscribers 0 --inflight "$INFLIGHT" --size "$SIZE"
ACKED=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["acked"])' "$OUT/rule-fleetcore.json")
# Wait until the rule has written every acknowledged message (at least once: >=).
for _ in $(seq 1 600); do
  [ "$(delivered)" -ge "$ACKED" ] && break
  sleep 0.1
done
END=$(date +%s.%N)
echo "{\"acked\": $ACKED, \"delivered\": $(delivered), \"seconds\": $(echo "$END - $START" | bc)}" | tee "$OUT/rule-end-to-end.json"
run qos1-mosquitto "$MOSQ" --qos 1 --publishers "$PUBLISHERS" --subscribers 1 --inflight "$INFLIGHT" --size "$SIZE"

"$PY" - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
r = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
fc, e2e, mq = r["rule-fleetcore"], r["rule-end-to-end"], r["qos1-mosquitto"]
print(f"fleetcore QoS 1 acked/s with one rule (PUBACK after the ingest fsync): {fc['acked'] / fc['duration_s']:,.0f}")
print(f"end to end into the stream: {e2e['delivered']:,} of {e2e['acked']:,} acked in {e2e['seconds']:.1f} s"
      f" (publishing {fc['duration_s']:.1f} s) -> {e2e['acked'] / e2e['seconds']:,.0f} msg/s")
print(f"mosquitto bare QoS 1 pub/sub: acked/s {mq['acked'] / mq['duration_s']:,.0f}, received/s {mq['received_per_s']:,.0f}")
PY
