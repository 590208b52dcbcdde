#!/usr/bin/env bash
# Rule -> lambda pipeline: QoS 1 messages published with `fleetcore bench` go through a topic
# rule whose lambda action invokes a function, end to end (PUBACK after the ingest fsync; a
# message counts once its function returned: `fleetcore_rules_action_succeeded_total`). Two
# functions: Python writing the record to a Kinesis stream through boto3 (rule -> lambda ->
# stream) and the WebAssembly echo (the runtime's own cost). The bench payloads are binary, so
# every rule selects `encode(*, 'base64') AS data`: the function gets a JSON object. Anchor, same run: the same load
# through a rule whose kinesis action writes the stream directly (the transformation in SQL, no
# function: the limit). Each figure comes with the server's CPU per message (user + system time
# from /proc over the scenario, publishing included), which a shared machine disturbs less than
# the rate.
#
#   benches/functions_pipeline.sh
#   DURATION=5 PUBLISHERS=8 benches/functions_pipeline.sh
#   SCENARIOS="sql wasm" benches/functions_pipeline.sh    # without the (slow) Python pipeline
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
PUBLISHERS=${PUBLISHERS:-8}
INFLIGHT=${INFLIGHT:-64}
SCENARIOS=${SCENARIOS:-sql wasm py}
TARGET=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$TARGET/bench-results/functions-pipeline-$(date -u +%Y%m%dT%H%M%SZ)}
PY=${PY:-.venv/bin/python}
BIN=${FLEETCORE_BIN:-$TARGET/release/fleetcore}
mkdir -p "$OUT"
[ -n "${FLEETCORE_BIN:-}" ] || cargo build --release -p fleetcore -q
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
. benches/lib.sh

FC_DATA=$(mktemp -d /tmp/fc-functions-pipeline.XXXXXX)
MQTT=$(free_port); HTTP=$(free_port)
"$BIN" serve --data-dir "$FC_DATA" --mqtt "127.0.0.1:$MQTT" --mqtts off --http "127.0.0.1:$HTTP" \
  --allow-anonymous --functions-python "$(realpath "$PY")" --log warn >>"$OUT/fleetcore.log" 2>&1 &
SERVER=$!
PIDS+=("$SERVER")
# The server's user + system CPU seconds so far.
cpu() { awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15) / t}' "/proc/$SERVER/stat"; }
wait_port 127.0.0.1 "$MQTT"
wait_port 127.0.0.1 "$HTTP"

"$PY" - "$FC_DATA" "$HTTP" <<'PY'
import configparser, io, sys, zipfile, boto3, pathlib
cp = configparser.ConfigParser(); cp.read(f"{sys.argv[1]}/credentials")
s = boto3.session.Session(aws_access_key_id=cp["fleetcore"]["aws_access_key_id"],
                          aws_secret_access_key=cp["fleetcore"]["aws_secret_access_key"], region_name="us-east-1")
url = f"http://127.0.0.1:{sys.argv[2]}"
iot, lam = s.client("iot", endpoint_url=url), s.client("lambda", endpoint_url=url)
s.client("kinesis", endpoint_url=url).create_stream(StreamName="bench", ShardCount=1)
def zipped(name, body):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(name, body)
    return out.getvalue()
py = ("import json, boto3\nk = boto3.client('kinesis')\n"
      "def handler(e, c):\n    k.put_record(StreamName='bench', Data=json.dumps(e).encode(), PartitionKey='k')\n    return e\n")
wat = pathlib.Path("crates/fleetcore/tests/system/functions/echo.wat").read_text()
role = "arn:aws:iam::000000000000:role/r"
for name, runtime, handler, files in [("py", "python3.11", "app.handler", ("app.py", py)),
                                      ("wasm", "provided.al2023", "echo.wat", ("echo.wat", wat))]:
    arn = lam.create_function(FunctionName=name, Runtime=runtime, Role=role, Handler=handler, Timeout=30,
                              Code={"ZipFile": zipped(*files)})["FunctionArn"]
    iot.create_topic_rule(ruleName=name, topicRulePayload={
        "sql": f"SELECT encode(*, 'base64') AS data FROM 'bench/{name}/#'", "awsIotSqlVersion": "2016-03-23",
        "actions": [{"lambda": {"functionArn": arn}}]})
iot.create_topic_rule(ruleName="sql", topicRulePayload={
    "sql": "SELECT encode(*, 'base64') AS data, 1 AS enriched FROM 'bench/sql/#'", "awsIotSqlVersion": "2016-03-23",
    "actions": [{"kinesis": {"roleArn": role, "streamName": "bench", "partitionKey": "k"}}]})
PY

delivered() { curl -s "http://127.0.0.1:$HTTP/metrics" | awk -v r="rule=\"$1\"" 'index($0, "fleetcore_rules_action_succeeded_total{") == 1 && index($0, r) {s += $NF} END {print s + 0}'; }
for name in $SCENARIOS; do
  echo "== $name" >&2
  START=$(date +%s.%N)
  CPU0=$(cpu)
  "$BIN" bench --port "$MQTT" --duration "$DURATION" --json --client-prefix "$name" --qos 1 \
    --publishers "$PUBLISHERS" --subscribers 0 --inflight "$INFLIGHT" --size 64 \
    --topic "bench/$name/{p}" > "$OUT/$name.json"
  ACKED=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["acked"])' "$OUT/$name.json")
  for _ in $(seq 1 1200); do [ "$(delivered "$name")" -ge "$ACKED" ] && break; sleep 0.1; done
  END=$(date +%s.%N)
  echo "{\"acked\": $ACKED, \"delivered\": $(delivered "$name"), \"seconds\": $(echo "$END - $START" | bc), \"cpu_seconds\": $(echo "$(cpu) - $CPU0" | bc)}" | tee "$OUT/$name-end-to-end.json"
done
"$PY" - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
for name, what in [("sql", "rule SQL -> kinesis action (anchor)"), ("wasm", "rule -> wasm lambda"),
                   ("py", "rule -> Python lambda -> stream (boto3)")]:
    if not (out / f"{name}-end-to-end.json").exists():
        continue
    e = json.loads((out / f"{name}-end-to-end.json").read_text())
    print(f"{what}: {e['delivered']:,} of {e['acked']:,} in {e['seconds']:.1f} s -> {e['acked'] / e['seconds']:,.0f} msg/s, "
          f"server CPU {e['cpu_seconds'] / max(e['acked'], 1) * 1e6:.1f} us/msg")
PY
