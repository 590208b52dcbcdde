#!/usr/bin/env bash
# http rule action benchmark: deliveries per second from one rule (`SELECT * FROM 'bench/#'`) with
# one http action to a local HTTPS endpoint (Debian's nginx with TLS answering 200, a neutral
# fast server), fed by the neutral load tool `mqttv5 bench` (QoS 1), beside Mosquitto's bare
# QoS 1 pub/sub with the same load tool in the same run. Deliveries are counted at the endpoint
# (nginx's access log): the rate is taken between two samples inside the run (steady state),
# and the total once the rule has caught up after the publishers stop. The ceiling of this
# endpoint on this machine is measured in the same run with a neutral HTTP load tool sending the
# same requests (POST of SIZE bytes, INFLIGHT at once): `wrk` (HTTP/1.1, INFLIGHT connections),
# or `h2load` (HTTP/2, one connection with INFLIGHT streams) when H2=1.
#
#   benches/rules_http.sh
#   DURATION=20 PUBLISHERS=10 SIZE=256 benches/rules_http.sh
#   LOAD=fleetcore benches/rules_http.sh      # `fleetcore bench` as the load (both sides)
#   H2=1 benches/rules_http.sh                # the endpoint offers HTTP/2 (ALPN h2)
#   BATCH=1 benches/rules_http.sh             # enableBatching (AWS's default batchConfig: up to
#       10 messages or 5,120 bytes per POST, 20 ms open); the rule is then
#       `SELECT encode(*, 'base64') AS data` (a batch is a JSON array of JSON outputs) and
#       deliveries are messages delivered (the server's action counter), beside POSTs at nginx
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-20}
PUBLISHERS=${PUBLISHERS:-10}
SIZE=${SIZE:-256}
LOAD=${LOAD:-mqttv5}
INFLIGHT=${INFLIGHT:-64}
H2=${H2:-0}
BATCH=${BATCH:-0}
LISTEN_FLAGS=ssl; [ "$H2" = 1 ] && LISTEN_FLAGS="ssl http2"
SHARED=${SHARED:-$(cd .. && pwd)/shared}
TARGET=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$TARGET/bench-results/rules-http-$(date -u +%Y%m%dT%H%M%SZ)}
PY=${PY:-.venv/bin/python}
MQTTV5=${MQTTV5:-$(command -v mqttv5 || echo /root/.cargo/bin/mqttv5)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)  # nginx needs absolute paths
command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; }
command -v wrk >/dev/null && command -v h2load >/dev/null ||
  { apt-get update -qq && apt-get install -y -qq wrk nghttp2-client >/dev/null; }

if [ -z "${BIN:-}" ]; then
  cargo build --release -p fleetcore -q
  BIN=$TARGET/release/fleetcore
fi
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; [ -f "$OUT/nginx/nginx.pid" ] && kill "$(cat "$OUT/nginx/nginx.pid")" 2>/dev/null || true; }
trap cleanup EXIT
. benches/lib.sh

# The endpoint: nginx, TLS with a certificate of a test CA, 200 to every POST, keep-alive.
NG=$OUT/nginx; mkdir -p "$NG/tmp"
"$PY" - "$NG" <<'PY'
import sys
sys.path.insert(0, "crates/fleetcore/tests/system")
from pathlib import Path
import pki
d = Path(sys.argv[1])
pki.make_ca(d / "ca.pem", d / "ca.key", cn="bench endpoint CA")
pki.make_server_cert(d / "ca.pem", d / "ca.key", d / "server.pem", d / "server.key")
PY
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
  log_format line '\$request_method \$request_uri';
  server {
    listen 127.0.0.1:$NGINX_PORT $LISTEN_FLAGS;
    ssl_certificate $NG/server.pem; ssl_certificate_key $NG/server.key;
    access_log $NG/access.log line buffer=256k flush=200ms;
    location / { return 200 "ok\n"; }
  }
}
EOF
nginx -c "$NG/nginx.conf"
wait_port 127.0.0.1 "$NGINX_PORT"

FC_DATA=$(mktemp -d /tmp/fc-rules-http-bench.XXXXXX)
MQTT=$(free_port); HTTP=$(free_port); MOSQ=$(free_port)
"$BIN" serve --data-dir "$FC_DATA" --mqtt "127.0.0.1:$MQTT" --mqtts off --http "127.0.0.1:$HTTP" \
  --allow-anonymous --log warn --rules-https-ca-file "$NG/ca.pem" >>"$OUT/fleetcore.log" 2>&1 &
PIDS+=("$!")
wait_port 127.0.0.1 "$MQTT"
wait_port 127.0.0.1 "$HTTP"
MOSQ_PID=$("$SHARED/tools/mosquitto-anchor.sh" "$MOSQ")
PIDS+=("$MOSQ_PID")

# The destination (confirmed with the token of the confirmation message, which nginx logged in
# its request line) and the rule, created as a user would (boto3 with the server's credentials).
"$PY" - "$FC_DATA" "$HTTP" "$NGINX_PORT" "$NG/access.log" "$BATCH" <<'PY'
import configparser, re, sys, time, boto3
data, http, port, log, batch = sys.argv[1:]
cp = configparser.ConfigParser(); cp.read(f"{data}/credentials")
s = boto3.session.Session(aws_access_key_id=cp["fleetcore"]["aws_access_key_id"],
                          aws_secret_access_key=cp["fleetcore"]["aws_secret_access_key"], region_name="us-east-1")
iot = s.client("iot", endpoint_url=f"http://127.0.0.1:{http}")
url = f"https://localhost:{port}/"
iot.create_topic_rule_destination(destinationConfiguration={"httpUrlConfiguration": {"confirmationUrl": url}})
deadline = time.monotonic() + 20
while True:
    found = re.findall(r"confirmationToken=([0-9a-f]+)", open(log, errors="replace").read())
    if found:
        break
    if time.monotonic() > deadline:
        sys.exit("no confirmation message reached nginx")
    time.sleep(0.2)
iot.confirm_topic_rule_destination(confirmationToken=found[0])
if batch == "1":
    sql, action = "SELECT encode(*, 'base64') AS data FROM 'bench/#'", {"url": url + "in", "enableBatching": True}
else:
    sql, action = "SELECT * FROM 'bench/#'", {"url": url + "in"}
iot.create_topic_rule(ruleName="bench", topicRulePayload={
    "sql": sql, "awsIotSqlVersion": "2016-03-23", "actions": [{"http": action}]})
PY

posts() { grep -c '^POST /in' "$NG/access.log" || true; }
if [ "$BATCH" = 1 ]; then
  # Messages delivered (a POST carries up to 10): the action's success counter.
  delivered() { curl -s "http://127.0.0.1:$HTTP/metrics" | awk 'index($0, "fleetcore_rules_action_succeeded_total{") == 1 {s += $NF} END {print s + 0}'; }
else
  delivered() { posts; }
fi
bench() { # name port subscribers
  local name=$1 port=$2 subscribers=$3
  echo "== $name ($LOAD)" >&2
  if [ "$LOAD" = mqttv5 ]; then
    "$MQTTV5" bench -H 127.0.0.1 -p "$port" --qos 1 --publishers "$PUBLISHERS" --duration "$DURATION" \
      --warmup 2 --payload-size "$SIZE" --inflight "$INFLIGHT" -t bench/load -f 'bench/#' \
      --subscribers "$subscribers" >"$OUT/$name.raw.json" 2>"$OUT/$name.log"
    "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"]; json.dump({"published": r["published"], "seconds": r["elapsed_secs"], "received_per_s": r["throughput_steady"]}, open(sys.argv[2], "w"))' "$OUT/$name.raw.json" "$OUT/$name.json"
  else
    "$BIN" bench --port "$port" --duration "$DURATION" --json --client-prefix "$name" --qos 1 \
      --publishers "$PUBLISHERS" --subscribers "$subscribers" --inflight "$INFLIGHT" --size "$SIZE" \
      >"$OUT/$name.raw.json" 2>"$OUT/$name.log"
    "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); json.dump({"published": r["acked"], "seconds": r["duration_s"], "received_per_s": r.get("received_per_s", 0)}, open(sys.argv[2], "w"))' "$OUT/$name.raw.json" "$OUT/$name.json"
  fi
}

# secs EXPR: seconds as a JSON number (bc prints .5 for 0.5).
secs() { echo "$1" | bc -l | awk '{printf "%.3f", $1}'; }

# fleetcore: sample the endpoint's count a quarter and three quarters into the run.
START=$(date +%s.%N)
bench rule-http-fleetcore "$MQTT" 0 &
LOAD=$!
sleep "$(echo "2 + $DURATION / 4" | bc -l)"
T1=$(date +%s.%N); D1=$(delivered)
sleep "$(echo "$DURATION / 2" | bc -l)"
T2=$(date +%s.%N); D2=$(delivered)
wait "$LOAD"
T3=$(date +%s.%N); D3=$(delivered)
PUBLISHED=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["published"])' "$OUT/rule-http-fleetcore.json")
# Then wait until the rule has delivered every published message (at least once: >=).
for _ in $(seq 1 1200); do
  [ "$(delivered)" -ge "$PUBLISHED" ] && break
  sleep 0.1
done
sleep 0.5  # the access log flushes every 200 ms
END=$(date +%s.%N)
echo "{\"posts\": $(posts), \"published\": $PUBLISHED, \"delivered\": $(delivered), \"seconds\": $(secs "$END - $START"), \"steady_deliveries\": $((D2 - D1)), \"steady_seconds\": $(secs "$T2 - $T1"), \"after_load_deliveries\": $(($(delivered) - D3)), \"after_load_seconds\": $(secs "$END - $T3 - 0.5")}" \
  | tee "$OUT/rule-http-end-to-end.json"

# The endpoint's ceiling: the same POSTs from a neutral HTTP load tool (path /anchor, so the
# rule's deliveries count stays apart), INFLIGHT requests at once, for DURATION seconds.
head -c "$SIZE" /dev/zero | tr '\0' x >"$OUT/body"
if [ "$H2" = 1 ]; then
  h2load -c 1 -m "$INFLIGHT" -D "$DURATION" -d "$OUT/body" -H 'content-type: application/json' \
    "https://localhost:$NGINX_PORT/anchor" >"$OUT/anchor.txt" 2>&1
  ANCHOR=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' "$OUT/anchor.txt")
  ANCHOR_TOOL="h2load (HTTP/2, 1 connection x $INFLIGHT streams)"
else
  printf 'wrk.method = "POST"\nwrk.body = string.rep("x", %d)\nwrk.headers["Content-Type"] = "application/json"\n' \
    "$SIZE" >"$OUT/post.lua"
  wrk -t 1 -c "$INFLIGHT" -d "${DURATION}s" -s "$OUT/post.lua" "https://localhost:$NGINX_PORT/anchor" \
    >"$OUT/anchor.txt" 2>&1
  ANCHOR=$(awk '/^Requests\/sec:/ {print $2}' "$OUT/anchor.txt")
  ANCHOR_TOOL="wrk (HTTP/1.1, $INFLIGHT connections)"
fi
echo "{\"requests_per_s\": ${ANCHOR:-0}, \"tool\": \"$ANCHOR_TOOL\"}" >"$OUT/http-anchor.json"

bench qos1-mosquitto "$MOSQ" 1

"$PY" - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
fc = json.loads((out / "rule-http-fleetcore.json").read_text())
e2e = json.loads((out / "rule-http-end-to-end.json").read_text())
mq = json.loads((out / "qos1-mosquitto.json").read_text())
steady = e2e["steady_deliveries"] / e2e["steady_seconds"]
print(f"fleetcore QoS 1 published/s through the rule (PUBACK after the ingest fsync): {fc['published'] / fc['seconds']:,.0f}")
print(f"http action deliveries/s at nginx, steady (mid-run samples): {steady:,.0f}")
print(f"POSTs at nginx: {e2e['posts']:,} ({e2e['delivered'] / max(e2e['posts'], 1):.1f} messages per POST)")
print(f"end to end: {e2e['delivered']:,} deliveries of {e2e['published']:,} published in {e2e['seconds']:.1f} s "
      f"= {e2e['delivered'] / e2e['seconds']:,.0f}/s")
print(f"Mosquitto bare QoS 1 pub/sub (anchor, same tool): {mq['received_per_s']:,.0f} received/s")
print(f"ratio http deliveries / Mosquitto bare QoS 1: {steady / max(mq['received_per_s'], 1):.2f}x")
# Once the publishers stop, the action drains its backlog with the machine to itself, as the
# neutral tool below has it: that rate compares with the ceiling.
if e2e["after_load_deliveries"] > 1000:
    drain = e2e["after_load_deliveries"] / e2e["after_load_seconds"]
    print(f"http action deliveries/s after the load stopped (draining the backlog alone): {drain:,.0f}")
an = json.loads((out / "http-anchor.json").read_text())
print(f"endpoint ceiling, {an['tool']} POSTs to the same nginx: {an['requests_per_s']:,.0f} requests/s; "
      f"ratio http action steady / ceiling: {steady / max(an['requests_per_s'], 1):.2f}x")
PY
