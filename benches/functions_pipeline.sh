#!/usr/bin/env bash
# Rule -> lambda pipelines: QoS 1 messages published with `fleetcore bench` (8 publishers, 64 B,
# acknowledged after the ingest fsync) go through a topic rule, end to end. Scenarios:
#
#   sql      anchor: the rule's SQL `encode(*, 'base64')` and a kinesis action (no function: the limit)
#   wasm     rule -> lambda action -> the WebAssembly echo (the runtime's own cost)
#   wasmout  rule -> lambda action -> a WebAssembly function whose output goes on to stream
#            `wasm-out` (`crates/fleetcore/tests/system/functions/forward.wat`: it wraps the event
#            and puts it with the host's `put_record`; the host appends a batch's records in one
#            put); the script checks the record count of `wasm-out` at the end
#   pyecho   rule -> lambda action -> a Python handler that returns its event (the Python
#            runtime's own cost per invocation: Runtime API, worker, log frame)
#   nodeecho the same with a Node.js handler (`exports.handler = async (e) => e`)
#   py       rule -> lambda action -> a Python handler calling boto3 `put_record` per message
#            (rule -> lambda -> stream, one invocation and one SDK call per message)
#   wasmenrich  rule -> lambda action -> examples/functions/rust-wasm-enrich (built from its
#            source: a Fahrenheit field, `put_record` to stream `wasmenrich-out`)
#   nodeenrich  rule -> lambda action -> examples/functions/node-enrich (`npm ci`, the AWS SDK for
#            JavaScript v3: DescribeThing once per worker, one Kinesis PutRecord per message to
#            stream `nodeenrich-out`). Both get `SELECT 21.5 AS temperature, topic(2) AS thing,
#            encode(*, 'base64') AS data`; the script checks their output streams' record counts
#   pybatch  the AWS-shaped high-rate pipeline: rule -> kinesis action (stream `in`) -> Lambda
#            event source mapping (BatchSize $BATCH_SIZE, Kinesis event) -> a Python handler that
#            decodes and enriches every record and writes them with one `put_records` per batch
#            to stream `out`
#
# A message counts once its function returned (`fleetcore_rules_action_succeeded_total` of the
# rule), for pybatch once the mapping's batch holding it succeeded
# (`fleetcore_functions_esm_records_total`; the handler has written it to `out` by then, and the
# script checks the record count of `out` at the end). Rate = messages / (first publish -> last
# delivery): the publishers outrun every function pipeline, so that is its drain rate. Each figure
# comes with CPU per message of the server and of its function workers (user + system time from
# /proc over the scenario, publishing included), which a shared machine disturbs less than rates.
#
#   benches/functions_pipeline.sh
#   DURATION=5 PUBLISHERS=8 benches/functions_pipeline.sh
#   SCENARIOS="sql wasm wasmout" benches/functions_pipeline.sh   # without the Python pipelines
#   SCENARIOS="pybatch" BATCH_SIZE=100 benches/functions_pipeline.sh
#   SCENARIOS="wasmenrich nodeenrich" benches/functions_pipeline.sh   # the examples (npm, cargo)
#   PERF="pyecho" benches/functions_pipeline.sh     # perf record of the server during those scenarios
#   SCENARIOS="mosquitto sql wasm" benches/functions_pipeline.sh  # with the same load on Mosquitto,
#            bare QoS 1 (no rule, no subscriber): the broker anchor of the same run
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
# The per-message Python pipelines drain a few hundred to a few thousand messages a second:
# they publish for less time so a run stays short.
PY_DURATION=${PY_DURATION:-2}
PUBLISHERS=${PUBLISHERS:-8}
INFLIGHT=${INFLIGHT:-64}
BATCH_SIZE=${BATCH_SIZE:-500}
MAX_WAIT=${MAX_WAIT:-300}
SCENARIOS=${SCENARIOS:-sql wasm wasmout pyecho nodeecho py pybatch}
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
TICKS=$(getconf CLK_TCK)
# The server's user + system CPU seconds so far.
cpu() { awk -v t="$TICKS" '{print ($14 + $15) / t}' "/proc/$SERVER/stat"; }
# "pid seconds" of every live function worker (the server's child processes).
workers() { for p in $(pgrep -P "$SERVER"); do awk -v t="$TICKS" -v p="$p" '{print p, ($14 + $15) / t}' "/proc/$p/stat" 2>/dev/null || true; done; }
# CPU seconds the workers used between two `workers` listings (a worker started since counts
# from zero; one that exited since is left out).
workers_cpu() { awk 'FILENAME == ARGV[1] {before[$1] = $2; next} {s += $2 - before[$1]} END {printf "%.3f", s + 0}' "$1" "$2"; }
wait_port 127.0.0.1 "$MQTT"
wait_port 127.0.0.1 "$HTTP"

"$PY" - "$FC_DATA" "$HTTP" "$BATCH_SIZE" "$SCENARIOS" <<'PY'
import configparser, io, sys, zipfile, boto3, pathlib
cp = configparser.ConfigParser(); cp.read(f"{sys.argv[1]}/credentials")
s = boto3.session.Session(aws_access_key_id=cp["fleetcore"]["aws_access_key_id"],
                          aws_secret_access_key=cp["fleetcore"]["aws_secret_access_key"], region_name="us-east-1")
url = f"http://127.0.0.1:{sys.argv[2]}"
iot, lam, kin = (s.client(c, endpoint_url=url) for c in ("iot", "lambda", "kinesis"))
for stream in ("bench", "in", "out", "wasm-out"):
    kin.create_stream(StreamName=stream, ShardCount=1)
def zipped(name, body):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(name, body)
    return out.getvalue()
py = ("import json, boto3\nk = boto3.client('kinesis')\n"
      "def handler(e, c):\n    k.put_record(StreamName='bench', Data=json.dumps(e).encode(), PartitionKey='k')\n    return e\n")
pyecho = "def handler(e, c):\n    return e\n"
nodeecho = "exports.handler = async (e) => e;\n"
# The reference's enrichment, batched: every record of the Kinesis event decoded, a field added,
# all of them written with one put_records (Kinesis takes up to 500 records per call).
pybatch = """import base64, json, boto3
k = boto3.client('kinesis')
def handler(event, context):
    out = []
    for r in event['Records']:
        doc = json.loads(base64.b64decode(r['kinesis']['data']))
        doc['enriched'] = 1
        out.append({'Data': json.dumps(doc).encode(), 'PartitionKey': r['kinesis']['partitionKey']})
    for i in range(0, len(out), 500):
        failed = k.put_records(StreamName='out', Records=out[i:i + 500])['FailedRecordCount']
        if failed:
            raise RuntimeError(f'{failed} records refused')
    return {'records': len(out)}
"""
wat = pathlib.Path("crates/fleetcore/tests/system/functions/echo.wat").read_text()
forward = pathlib.Path("crates/fleetcore/tests/system/functions/forward.wat").read_text()
role = "arn:aws:iam::000000000000:role/r"
for name, runtime, handler, files in [("py", "python3.11", "app.handler", ("app.py", py)),
                                      ("pyecho", "python3.11", "app.handler", ("app.py", pyecho)),
                                      ("nodeecho", "nodejs20.x", "index.handler", ("index.js", nodeecho)),
                                      ("pybatch", "python3.11", "app.handler", ("app.py", pybatch)),
                                      ("wasm", "provided.al2023", "echo.wat", ("echo.wat", wat)),
                                      ("wasmout", "provided.al2023", "forward.wat", ("forward.wat", forward))]:
    arn = lam.create_function(FunctionName=name, Runtime=runtime, Role=role, Handler=handler, Timeout=30,
                              Code={"ZipFile": zipped(*files)})["FunctionArn"]
    if name == "pybatch":
        lam.create_event_source_mapping(EventSourceArn=kin.describe_stream(StreamName="in")["StreamDescription"]["StreamARN"],
                                        FunctionName=name, BatchSize=int(sys.argv[3]), StartingPosition="TRIM_HORIZON")
        continue
    iot.create_topic_rule(ruleName=name, topicRulePayload={
        "sql": f"SELECT encode(*, 'base64') AS data FROM 'bench/{name}/#'", "awsIotSqlVersion": "2016-03-23",
        "actions": [{"lambda": {"functionArn": arn}}]})
# Start the per-message functions' workers now (8 calls at once: one worker each), so their start
# (a Python process importing boto3) is not counted in a scenario's CPU per message.
from concurrent.futures import ThreadPoolExecutor
with ThreadPoolExecutor(8) as pool:
    for name in ("py", "pyecho", "nodeecho"):
        calls = [pool.submit(lam.invoke, FunctionName=name, Payload=b'{"data": "d2FybQ=="}') for _ in range(8)]
        assert all("FunctionError" not in c.result() for c in calls)
# The examples of examples/functions/, deployed as benches/functions.py deploys them.
sys.path.insert(0, "benches")
from functions import example_package
examples = [n for n in ("wasmenrich", "nodeenrich") if n in sys.argv[4].split()]
for name in examples:
    out = f"{name}-out"
    kin.create_stream(StreamName=out, ShardCount=1)
    iot.create_thing(thingName=name, attributePayload={"attributes": {"site": "bench"}})
    kind = {"wasmenrich": "wasm-enrich", "nodeenrich": "node-enrich"}[name]
    runtime, handler, files = example_package(kind, pathlib.Path(sys.argv[1]), stream=out)
    out_zip = io.BytesIO()
    with zipfile.ZipFile(out_zip, "w") as z:
        for path, body in files.items():
            z.writestr(path, body)
    arn = lam.create_function(FunctionName=name, Runtime=runtime, Role=role, Handler=handler, Timeout=30,
                              Code={"ZipFile": out_zip.getvalue()},
                              Environment={"Variables": {"STREAM": out}})["FunctionArn"]
    iot.create_topic_rule(ruleName=name, topicRulePayload={
        "sql": f"SELECT 21.5 AS temperature, topic(2) AS thing, encode(*, 'base64') AS data FROM 'bench/{name}/#'",
        "awsIotSqlVersion": "2016-03-23", "actions": [{"lambda": {"functionArn": arn}}]})
with ThreadPoolExecutor(8) as pool:
    for name in examples:
        calls = [pool.submit(lam.invoke, FunctionName=name, Payload=b'{"thing": "warm", "temperature": 1}')
                 for _ in range(8)]
        assert all("FunctionError" not in c.result() for c in calls)
for name, stream in [("sql", "bench"), ("pybatch", "in")]:
    iot.create_topic_rule(ruleName=name, topicRulePayload={
        "sql": f"SELECT encode(*, 'base64') AS data, 1 AS enriched FROM 'bench/{name}/#'", "awsIotSqlVersion": "2016-03-23",
        "actions": [{"kinesis": {"roleArn": role, "streamName": stream, "partitionKey": "k"}}]})
PY

# delivered SCENARIO: messages of the scenario through to the end.
delivered() {
  if [ "$1" = pybatch ]; then
    curl -s "http://127.0.0.1:$HTTP/metrics" | awk 'index($0, "fleetcore_functions_esm_records_total{") == 1 && index($0, "function=\"pybatch\"") {s += $NF} END {print s + 0}'
  else
    curl -s "http://127.0.0.1:$HTTP/metrics" | awk -v r="rule=\"$1\"" 'index($0, "fleetcore_rules_action_succeeded_total{") == 1 && index($0, r) {s += $NF} END {print s + 0}'
  fi
}
# mosquitto: the same publishers against Mosquitto (shared/tools/mosquitto-anchor.sh), bare QoS 1.
if [[ " $SCENARIOS " == *" mosquitto "* ]]; then
  MQ_PORT=$(free_port)
  MQ_PID=$("${SHARED:?set SHARED=/work/shared}/tools/mosquitto-anchor.sh" "$MQ_PORT")
  PIDS+=("$MQ_PID")
  MQ0=$(awk -v t="$TICKS" '{print ($14 + $15) / t}' "/proc/$MQ_PID/stat")
  "$BIN" bench --port "$MQ_PORT" --duration "$DURATION" --json --client-prefix mq --qos 1 \
    --publishers "$PUBLISHERS" --subscribers 0 --inflight "$INFLIGHT" --size 64 --topic "bench/mq/{p}" > "$OUT/mosquitto.json"
  MQ1=$(awk -v t="$TICKS" '{print ($14 + $15) / t}' "/proc/$MQ_PID/stat")
  kill "$MQ_PID" 2>/dev/null || true
  "$PY" - "$OUT/mosquitto.json" "$MQ0" "$MQ1" "$DURATION" <<'PY' | tee "$OUT/mosquitto-summary.txt"
import json, sys
r = json.load(open(sys.argv[1]))
n = max(r["acked"], 1)
print(f"anchor: Mosquitto, bare QoS 1 (same load, no rule): {r['acked']:,} acked in {sys.argv[4]} s -> "
      f"{r['acked'] / float(sys.argv[4]):,.0f} msg/s, CPU per message {(float(sys.argv[3]) - float(sys.argv[2])) / n * 1e6:.1f} us")
PY
fi
for name in $SCENARIOS; do
  [ "$name" = mosquitto ] && continue
  echo "== $name" >&2
  case $name in py|pyecho|nodeecho|nodeenrich) seconds=$PY_DURATION ;; *) seconds=$DURATION ;; esac
  START=$(date +%s.%N)
  CPU0=$(cpu); workers > "$OUT/$name.workers0"
  PERF_PID=
  if [[ " ${PERF:-} " == *" $name "* ]]; then
    perf record -F 999 -p "$SERVER" -o "$OUT/$name.perf.data" >/dev/null 2>&1 &
    PERF_PID=$!
  fi
  "$BIN" bench --port "$MQTT" --duration "$seconds" --json --client-prefix "$name" --qos 1 \
    --publishers "$PUBLISHERS" --subscribers 0 --inflight "$INFLIGHT" --size 64 \
    --topic "bench/$name/{p}" > "$OUT/$name.json"
  ACKED=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["acked"])' "$OUT/$name.json")
  DEADLINE=$(( $(date +%s) + MAX_WAIT ))
  while [ "$(delivered "$name")" -lt "$ACKED" ] && [ "$(date +%s)" -lt "$DEADLINE" ]; do sleep 0.1; done
  END=$(date +%s.%N)
  CPU1=$(cpu); workers > "$OUT/$name.workers1"
  if [ -n "$PERF_PID" ]; then kill -INT "$PERF_PID"; wait "$PERF_PID" || true; fi
  DROPPED=$(curl -s "http://127.0.0.1:$HTTP/metrics" | awk 'index($0, "fleetcore_observe_function_logs_dropped_total") == 1 {s += $NF} END {print s + 0}')
  echo "{\"acked\": $ACKED, \"delivered\": $(delivered "$name"), \"cloudwatch_logs_dropped_so_far\": $DROPPED, \"seconds\": $(awk "BEGIN {printf \"%.3f\", $END - $START}"), \"cpu_seconds\": $(awk "BEGIN {printf \"%.3f\", $CPU1 - $CPU0}"), \"worker_cpu_seconds\": $(workers_cpu "$OUT/$name.workers0" "$OUT/$name.workers1"), \"workers\": $(wc -l < "$OUT/$name.workers1"), \"load\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}" | tee "$OUT/$name-end-to-end.json"
done
# Every record the pipeline delivered is in its output stream (pybatch: `out`, once per
# successful batch; the others once per successful invocation).
for pair in "pybatch out" "wasmout wasm-out" "wasmenrich wasmenrich-out" "nodeenrich nodeenrich-out"; do
  set -- $pair
  [[ " $SCENARIOS " == *" $1 "* ]] || continue
  "$PY" - "$FC_DATA" "$HTTP" "$2" <<'PY' | tee "$OUT/$1-out.json"
import configparser, json, sys, boto3
cp = configparser.ConfigParser(); cp.read(f"{sys.argv[1]}/credentials")
k = boto3.client("kinesis", endpoint_url=f"http://127.0.0.1:{sys.argv[2]}", region_name="us-east-1",
                 aws_access_key_id=cp["fleetcore"]["aws_access_key_id"],
                 aws_secret_access_key=cp["fleetcore"]["aws_secret_access_key"])
shard = k.describe_stream(StreamName=sys.argv[3])["StreamDescription"]["Shards"][0]["ShardId"]
it = k.get_shard_iterator(StreamName=sys.argv[3], ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
n = 0
while True:
    r = k.get_records(ShardIterator=it, Limit=10000)
    n += len(r["Records"])
    if not r["Records"] and r.get("MillisBehindLatest", 0) == 0:
        break
    it = r["NextShardIterator"]
print(json.dumps({"stream": sys.argv[3], "records_in_out": n}))
PY
done
"$PY" - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
for name, what in [("sql", "rule SQL -> kinesis action (anchor)"), ("wasm", "rule -> wasm lambda"),
                   ("wasmout", "rule -> wasm lambda -> put_record -> stream"),
                   ("pyecho", "rule -> Python lambda returning its event (no SDK call)"),
                   ("nodeecho", "rule -> Node.js lambda returning its event (no SDK call)"),
                   ("py", "rule -> Python lambda -> stream (boto3 put_record per message)"),
                   ("pybatch", "rule -> stream -> event source mapping -> Python -> put_records -> stream"),
                   ("wasmenrich", "rule -> examples/functions/rust-wasm-enrich -> stream"),
                   ("nodeenrich", "rule -> examples/functions/node-enrich (AWS SDK for JavaScript v3) -> stream")]:
    if not (out / f"{name}-end-to-end.json").exists():
        continue
    e = json.loads((out / f"{name}-end-to-end.json").read_text())
    n = max(e["delivered"], 1)
    late = "" if e["delivered"] >= e["acked"] else f" (NOT ALL DELIVERED: {e['acked'] - e['delivered']:,} left)"
    dropped = e.get("cloudwatch_logs_dropped_so_far", 0)
    late += f" (CloudWatch Logs feed: {dropped:,} hand-offs of invocation logs dropped so far (queue full))" if dropped else ""
    print(f"{what}: {e['delivered']:,} of {e['acked']:,} in {e['seconds']:.1f} s -> {e['delivered'] / e['seconds']:,.0f} msg/s{late}, "
          f"CPU per message: server {e['cpu_seconds'] / n * 1e6:.1f} us, {e['workers']} workers {e['worker_cpu_seconds'] / n * 1e6:.1f} us; load {e['load']}")
PY
