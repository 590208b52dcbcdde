#!/usr/bin/env bash
# Stream-store commit latency under the rules load: a fresh server, 1 rule x 1 kinesis action (a
# 4-shard stream, as rules_cpu.sh), `mqttv5 bench` QoS 1 10 -> 1, 256 B, 8 s; then the server's
# `fleetcore_stream_commit_seconds` summary (every embedded store of the server together: the
# two ingest partitions and the stream store; a journal checkpoint counts in the commit that
# waited for it).
#
#   benches/rules_commit_latency.sh BIN MQTT_PORT HTTP_PORT
set -euo pipefail
bin=$1; mqtt=$2; http=$3
data=$(mktemp -d /tmp/fc-rules-stall.XXXXXX)
"$bin" serve --data-dir "$data" --mqtt "127.0.0.1:$mqtt" --mqtts off --http "127.0.0.1:$http" --allow-anonymous --log warn >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 100); do curl -s "http://127.0.0.1:$http/health" >/dev/null && break; sleep 0.2; done
/work/main/.venv/bin/python - "$data" "$http" <<'PY'
import configparser, sys, boto3
cp = configparser.ConfigParser(); cp.read(f"{sys.argv[1]}/credentials")
s = boto3.session.Session(aws_access_key_id=cp["fleetcore"]["aws_access_key_id"], aws_secret_access_key=cp["fleetcore"]["aws_secret_access_key"], region_name="us-east-1")
url = f"http://127.0.0.1:{sys.argv[2]}"
s.client("kinesis", endpoint_url=url).create_stream(StreamName="s1", ShardCount=4)
s.client("iot", endpoint_url=url).create_topic_rule(ruleName="one", topicRulePayload={"sql": "SELECT * FROM 'one/#'", "awsIotSqlVersion": "2016-03-23",
    "actions": [{"kinesis": {"roleArn": "arn:aws:iam::000000000000:role/r", "streamName": "s1", "partitionKey": "${topic()}"}}]})
PY
/root/.cargo/bin/mqttv5 bench --mode throughput --host 127.0.0.1 --port "$mqtt" --topic one/t --publishers 10 --subscribers 1 --qos 1 --payload-size 256 --duration 8 >/dev/null 2>&1
curl -s "http://127.0.0.1:$http/metrics" | grep -E "^fleetcore_stream_commit_seconds|^fleetcore_stream_commit_batches_total" | head -20
kill $pid; wait $pid 2>/dev/null || true; rm -rf "$data"
