#!/usr/bin/env bash
# SNS http fan-out benchmark: deliveries per second from one topic to SUBSCRIBERS confirmed
# `http` subscriptions on a local endpoint (Debian's nginx answering 200, a neutral fast
# server; each subscription has its own path), fed by PUBLISHERS Python processes calling
# boto3's `sns.publish_batch` (10 messages of SIZE bytes per call) for DURATION seconds.
# Deliveries are counted at the endpoint (nginx's access log): the rate between two samples
# inside the run (steady state), and the total once every delivery has arrived. Confirmation
# messages are routed by nginx to a small Python helper that follows their SubscribeURL.
# Anchor, same run: Mosquitto's QoS 1 fan-out (1 publisher, SUBSCRIBERS subscribers) with the
# neutral load tool `mqttv5 bench`.
#
#   benches/sns_http.sh
#   DURATION=20 SUBSCRIBERS=10 PUBLISHERS=2 SIZE=256 benches/sns_http.sh
#   PROFILE=debug benches/sns_http.sh       # the debug build (a quick look, not a figure)
#   LOAD=rule benches/sns_http.sh           # publish through a topic rule's sns action, fed by
#                                           # `mqttv5 bench` QoS 1 (PUBLISHERS connections): the
#                                           # publisher is no longer boto3 in Python
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-20}
SUBSCRIBERS=${SUBSCRIBERS:-10}
PUBLISHERS=${PUBLISHERS:-2}
LOAD=${LOAD:-api}
RATE=${RATE:-1000}  # LOAD=rule: MQTT messages/s offered (each fans out to SUBSCRIBERS deliveries)
SIZE=${SIZE:-256}
SHARED=${SHARED:-$(cd .. && pwd)/shared}
TARGET=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$TARGET/bench-results/sns-http-$(date -u +%Y%m%dT%H%M%SZ)}
PY=${PY:-.venv/bin/python}
MQTTV5=${MQTTV5:-$(command -v mqttv5 || echo /root/.cargo/bin/mqttv5)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)  # nginx needs absolute paths
command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; }

PROFILE=${PROFILE:-release}
if [ "$PROFILE" = release ]; then cargo build --release -p fleetcore -q; else cargo build -p fleetcore -q; fi
BIN=$TARGET/$PROFILE/fleetcore
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; [ -f "$OUT/nginx/nginx.pid" ] && kill "$(cat "$OUT/nginx/nginx.pid")" 2>/dev/null || true; }
trap cleanup EXIT
. benches/lib.sh

# The confirmer: follows the SubscribeURL of every SubscriptionConfirmation nginx hands it.
CONFIRMER=$(free_port)
"$PY" - "$CONFIRMER" >"$OUT/confirmer.log" 2>&1 <<'PY' &
import json, sys, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        urllib.request.urlopen(body["SubscribeURL"], timeout=10).read()
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
PIDS+=("$!")

# The endpoint: nginx, plain HTTP, 200 to every notification, keep-alive.
NG=$OUT/nginx; mkdir -p "$NG/tmp"
NGINX_PORT=$(free_port)
cat >"$NG/nginx.conf" <<EOF
worker_processes 1;
pid $NG/nginx.pid;
error_log $NG/error.log warn;
events { worker_connections 4096; }
http {
  client_body_temp_path $NG/tmp/body; proxy_temp_path $NG/tmp/proxy;
  fastcgi_temp_path $NG/tmp/fastcgi; uwsgi_temp_path $NG/tmp/uwsgi; scgi_temp_path $NG/tmp/scgi;
  keepalive_requests 10000000; keepalive_timeout 300s;
  log_format line '\$request_method \$request_uri \$http_x_amz_sns_message_type';
  server {
    listen 127.0.0.1:$NGINX_PORT;
    access_log $NG/access.log line buffer=256k flush=200ms;
    location / {
      if (\$http_x_amz_sns_message_type = SubscriptionConfirmation) {
        break;
        proxy_pass http://127.0.0.1:$CONFIRMER;
      }
      return 200 "ok\n";
    }
  }
}
EOF
nginx -c "$NG/nginx.conf"
wait_port 127.0.0.1 "$NGINX_PORT"
wait_port 127.0.0.1 "$CONFIRMER"

FC_DATA=$(mktemp -d /tmp/fc-sns-bench.XXXXXX)
MQTT=$(free_port); HTTP=$(free_port); MOSQ=$(free_port)
"$BIN" serve --data-dir "$FC_DATA" --mqtt "127.0.0.1:$MQTT" --mqtts off --http "127.0.0.1:$HTTP" \
  --allow-anonymous --log warn >>"$OUT/fleetcore.log" 2>&1 &
PIDS+=("$!")
wait_port 127.0.0.1 "$HTTP"
MOSQ_PID=$("$SHARED/tools/mosquitto-anchor.sh" "$MOSQ")
PIDS+=("$MOSQ_PID")

# The topic and its subscriptions, created and confirmed as a user would (boto3).
"$PY" - "$FC_DATA" "$HTTP" "$NGINX_PORT" "$SUBSCRIBERS" $([ "$LOAD" = rule ] && echo rule) >"$OUT/topic_arn" <<'PY'
import configparser, sys, time, boto3
data, http, port, n = sys.argv[1:5]
cp = configparser.ConfigParser(); cp.read(f"{data}/credentials")
s = boto3.session.Session(aws_access_key_id=cp["fleetcore"]["aws_access_key_id"],
                          aws_secret_access_key=cp["fleetcore"]["aws_secret_access_key"], region_name="us-east-1")
sns = s.client("sns", endpoint_url=f"http://127.0.0.1:{http}")
topic = sns.create_topic(Name="bench")["TopicArn"]
for i in range(int(n)):
    sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=f"http://127.0.0.1:{port}/s{i}")
deadline = time.monotonic() + 30
while sns.get_topic_attributes(TopicArn=topic)["Attributes"]["SubscriptionsConfirmed"] != n:
    if time.monotonic() > deadline:
        sys.exit("the subscriptions were not confirmed")
    time.sleep(0.2)
if len(sys.argv) > 5:
    s.client("iot", endpoint_url=f"http://127.0.0.1:{http}").create_topic_rule(ruleName="bench", topicRulePayload={
        "sql": "SELECT * FROM 'bench/#'", "awsIotSqlVersion": "2016-03-23",
        "actions": [{"sns": {"targetArn": topic, "roleArn": "arn:aws:iam::000000000000:role/r"}}]})
print(topic)
PY
TOPIC=$(cat "$OUT/topic_arn")

delivered() { grep -c '^POST /s[0-9]* Notification' "$NG/access.log" || true; }
START=$(date +%s.%N)
if [ "$LOAD" = rule ]; then
  "$MQTTV5" bench -H 127.0.0.1 -p "$MQTT" --qos 1 --publishers "$PUBLISHERS" --subscribers 0 \
    --duration "$DURATION" --warmup 0 --payload-size "$SIZE" -t bench/load -f 'bench/#' \
    --payload-format json --rate "$RATE" >"$OUT/rule-load.raw.json" 2>"$OUT/rule-load.log" &
  PIDS+=("$!")
else
for p in $(seq 1 "$PUBLISHERS"); do
  "$PY" - "$FC_DATA" "$HTTP" "$TOPIC" "$DURATION" "$SIZE" >"$OUT/publisher-$p.json" <<'PY' &
import configparser, json, sys, time, boto3
data, http, topic, duration, size = sys.argv[1:]
cp = configparser.ConfigParser(); cp.read(f"{data}/credentials")
s = boto3.session.Session(aws_access_key_id=cp["fleetcore"]["aws_access_key_id"],
                          aws_secret_access_key=cp["fleetcore"]["aws_secret_access_key"], region_name="us-east-1")
sns = s.client("sns", endpoint_url=f"http://127.0.0.1:{http}")
message = "x" * int(size)
entries = [{"Id": str(i), "Message": message} for i in range(10)]
published, end = 0, time.monotonic() + float(duration)
while time.monotonic() < end:
    out = sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=entries)
    published += len(out["Successful"])
print(json.dumps({"published": published}))
PY
  PIDS+=("$!")
done
fi
sleep "$(echo "$DURATION / 4" | bc -l)"
T1=$(date +%s.%N); D1=$(delivered)
sleep "$(echo "$DURATION / 2" | bc -l)"
T2=$(date +%s.%N); D2=$(delivered)
wait "${PIDS[@]:3}" 2>/dev/null || true
if [ "$LOAD" = rule ]; then
  PUBLISHED=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"]["published"])' "$OUT/rule-load.raw.json")
else
  PUBLISHED=$(cat "$OUT"/publisher-*.json | "$PY" -c 'import json,sys; print(sum(json.loads(l)["published"] for l in sys.stdin))')
fi
EXPECTED=$((PUBLISHED * SUBSCRIBERS))
# Wait until every delivery arrived, or none arrived for 3 s (deliveries dropped by full lanes
# are counted in the metrics, outcome="dropped").
LAST=-1; STILL=0
for _ in $(seq 1 1200); do
  NOW=$(delivered)
  [ "$NOW" -ge "$EXPECTED" ] && break
  if [ "$NOW" = "$LAST" ]; then STILL=$((STILL + 1)); else STILL=0; LAST=$NOW; fi
  [ "$STILL" -ge 30 ] && break
  sleep 0.1
done
sleep 0.5  # the access log flushes every 200 ms
END=$(date +%s.%N)
echo "{\"published\": $PUBLISHED, \"expected\": $EXPECTED, \"delivered\": $(delivered), \"seconds\": $(echo "$END - $START" | bc), \"steady_deliveries\": $((D2 - D1)), \"steady_seconds\": $(echo "$T2 - $T1" | bc)}" \
  | tee "$OUT/sns-end-to-end.json"
curl -s "http://127.0.0.1:$HTTP/metrics" | grep '^fleetcore_sns' >"$OUT/metrics.txt" || true

echo "== Mosquitto QoS 1 fan-out 1 -> $SUBSCRIBERS (anchor)" >&2
"$MQTTV5" bench -H 127.0.0.1 -p "$MOSQ" --qos 1 --publishers 1 --subscribers "$SUBSCRIBERS" \
  --duration "$DURATION" --warmup 2 --payload-size "$SIZE" -t bench/fan -f 'bench/#' \
  >"$OUT/mosquitto.raw.json" 2>"$OUT/mosquitto.log"

"$PY" - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
e2e = json.loads((out / "sns-end-to-end.json").read_text())
mq = json.loads((out / "mosquitto.raw.json").read_text())["results"]
steady = e2e["steady_deliveries"] / e2e["steady_seconds"]
print(f"SNS published messages: {e2e['published']:,} ({e2e['published'] / e2e['seconds']:,.0f}/s over the whole run)")
print(f"SNS http deliveries/s at nginx, steady (mid-run samples): {steady:,.0f}")
print(f"end to end: {e2e['delivered']:,} of {e2e['expected']:,} deliveries in {e2e['seconds']:.1f} s "
      f"= {e2e['delivered'] / e2e['seconds']:,.0f}/s")
print(f"Mosquitto QoS 1 fan-out (anchor, mqttv5 bench): {mq['throughput_steady']:,.0f} received/s")
print(f"ratio SNS http deliveries / Mosquitto fan-out: {steady / max(mq['throughput_steady'], 1):.2f}x")
PY
