"""Functions (Lambda) end to end: boto3 `lambda` and the aws CLI against fleetcore; real Python
and Node.js handlers run by fleetcore's worker pools over the Lambda Runtime API; a WebAssembly
module run in process; handler errors, timeouts, crashes and bad packages answered in AWS's
shapes; versions and aliases; a handler calling Kinesis through boto3 with no configuration;
Kinesis event source mappings delivering in batches (bisect on error, on-failure destination,
a checkpoint that survives SIGKILL); and a topic rule whose lambda action feeds a stream."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from brokers import FLEETCORE_BIN, REPO, Broker, wait_until
from clients import V5
from test_rules_engine import create_rule, rule_name, stream_records, wait_stream

pytestmark = pytest.mark.fleetcore_only("functions are fleetcore's")

ROLE = "arn:aws:iam::000000000000:role/lambda"
HERE = Path(__file__).parent
NODE = shutil.which("node")


@pytest.fixture(scope="module")
def fb(tmp_path_factory):
    """A server of this module's own whose Python functions run with this interpreter (it has
    boto3, as Lambda's Python runtime does)."""
    b = Broker(tmp_path_factory.mktemp("functions-broker"), name="functions",
               env={"FLEETCORE_FUNCTIONS_PYTHON": sys.executable,
                    "FLEETCORE_RULES_RETRY_BACKOFF_MS": "50"})
    b.start()
    yield b
    b.stop()


def package(files: dict[str, str | bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, body in files.items():
            z.writestr(name, body)
    return out.getvalue()


def create(lam, name: str, files: dict, runtime: str = "python3.11",
           handler: str = "app.handler", **kw) -> dict:
    return lam.create_function(FunctionName=name, Runtime=runtime, Role=ROLE, Handler=handler,
                               Code={"ZipFile": package(files)}, **kw)


def invoke(lam, name: str, event, **kw) -> tuple[dict, object]:
    r = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode(), **kw)
    return r, json.loads(r["Payload"].read())


def fn_name(uid: str) -> str:
    return uid.replace("_", "-")[:60]


PY_ECHO = """
import os
def handler(event, context):
    print("got", event)
    return {
        "event": event,
        "request_id": context.aws_request_id,
        "arn": context.invoked_function_arn,
        "name": context.function_name,
        "version": context.function_version,
        "memory": context.memory_limit_in_mb,
        "remaining_ok": 0 < context.get_remaining_time_in_millis() <= 3000,
        "greeting": os.environ.get("GREETING"),
        "endpoint": os.environ.get("AWS_ENDPOINT_URL"),
        "region": os.environ.get("AWS_REGION"),
    }
"""


# ---------------------------------------------------------------------------------------------
# the API and Python

def test_python_function_round_trip_with_context_environment_and_tail_logs(fb, aws, uid):
    lam = aws("lambda", broker=fb)
    name = fn_name(uid)
    created = create(lam, name, {"app.py": PY_ECHO}, Environment={"Variables": {"GREETING": "hi"}})
    assert created["FunctionName"] == name
    assert created["FunctionArn"] == f"arn:aws:lambda:us-east-1:000000000000:function:{name}"
    assert (created["Runtime"], created["Handler"], created["Timeout"], created["MemorySize"]) == \
        ("python3.11", "app.handler", 3, 128)
    assert created["Version"] == "$LATEST" and created["State"] == "Active"
    assert created["CodeSha256"] and created["CodeSize"] > 0
    got = lam.get_function(FunctionName=name)
    assert got["Configuration"]["Environment"] == {"Variables": {"GREETING": "hi"}}
    assert got["Code"]["Location"]
    assert lam.get_function_configuration(FunctionName=name)["RevisionId"] == created["RevisionId"]
    assert name in [f["FunctionName"] for f in lam.get_paginator("list_functions").paginate()
                    .build_full_result()["Functions"]]

    r, body = invoke(lam, name, {"a": 1}, LogType="Tail")
    assert r["StatusCode"] == 200 and "FunctionError" not in r
    assert r["ExecutedVersion"] == "$LATEST"
    assert body["event"] == {"a": 1}
    assert body["name"] == name and body["version"] == "$LATEST" and body["memory"] == "128"
    assert body["arn"] == created["FunctionArn"] and body["remaining_ok"]
    assert body["greeting"] == "hi" and body["region"] == "us-east-1"
    assert body["endpoint"] == fb.http_base
    log = base64.b64decode(r["LogResult"]).decode()
    rid = body["request_id"]
    assert f"START RequestId: {rid} Version: $LATEST" in log
    assert "got {'a': 1}" in log
    assert f"END RequestId: {rid}" in log and f"REPORT RequestId: {rid}\tDuration:" in log
    # warm: the second invocation has no Init Duration, the first had one
    r2, _ = invoke(lam, name, {"a": 2}, LogType="Tail")
    assert "Init Duration" in log and "Init Duration" not in base64.b64decode(r2["LogResult"]).decode()

    # the CLI reads the same log
    out = subprocess.run([str(FLEETCORE_BIN), "function", "logs", name, "--data-dir", str(fb.data_dir)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and f"START RequestId: {rid}" in out.stdout

    updated = lam.update_function_configuration(FunctionName=name, Timeout=5,
                                                Environment={"Variables": {"GREETING": "bye"}})
    assert updated["Timeout"] == 5 and updated["RevisionId"] != created["RevisionId"]
    assert invoke(lam, name, {})[1]["greeting"] == "bye"
    lam.update_function_code(FunctionName=name, ZipFile=package(
        {"app.py": "def handler(e, c):\n    return 'v2'\n"}))
    assert invoke(lam, name, {})[1] == "v2"
    lam.delete_function(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)


def test_api_errors_have_aws_shapes(fb, aws, uid):
    lam = aws("lambda", broker=fb)
    name = fn_name(uid)
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as e:
        invoke(lam, "nothing-here", {})
    assert "Function not found" in e.value.response["Error"]["Message"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="app.h",
                            Code={"ZipFile": b"this is not a zip"})
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        create(lam, name, {"app.py": PY_ECHO}, Environment={"Variables": {"AWS_REGION": "x"}})
    assert "reserved keys" in e.value.response["Error"]["Message"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        create(lam, name, {"app.py": PY_ECHO}, runtime="java21")
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        create(lam, name, {"app.py": PY_ECHO}, Timeout=901)
    # nothing of the refused creations is left
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)
    create(lam, name, {"app.py": PY_ECHO})
    with pytest.raises(lam.exceptions.ResourceConflictException):
        create(lam, name, {"app.py": PY_ECHO})
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    with pytest.raises(lam.exceptions.TooManyRequestsException):
        invoke(lam, name, {})
    lam.delete_function_concurrency(FunctionName=name)
    assert lam.get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions") is None
    # AddPermission is accepted and shown
    stmt = lam.add_permission(FunctionName=name, StatementId="iot", Action="lambda:InvokeFunction",
                              Principal="iot.amazonaws.com",
                              SourceArn="arn:aws:iot:us-east-1:000000000000:rule/r")
    assert json.loads(stmt["Statement"])["Principal"] == {"Service": "iot.amazonaws.com"}
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.add_permission(FunctionName=name, StatementId="iot", Action="lambda:InvokeFunction",
                           Principal="iot.amazonaws.com")
    policy = json.loads(lam.get_policy(FunctionName=name)["Policy"])
    assert [s["Sid"] for s in policy["Statement"]] == ["iot"]
    # not JSON
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke(FunctionName=name, Payload=b"{nope")
    # an operation Lambda has and fleetcore does not build is named, 501
    with pytest.raises(lam.exceptions.ClientError) as e:
        lam.list_layers()
    assert e.value.response["Error"]["Code"] == "UnknownOperationException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501
    assert "ListLayers" in e.value.response["Error"]["Message"]


def test_handler_errors_timeouts_and_crashes_are_reported_and_the_worker_replaced(fb, aws, uid):
    lam = aws("lambda", broker=fb)
    name = fn_name(uid)
    create(lam, name, {"app.py": """
import os, sys, time
def handler(event, context):
    what = event.get("do")
    if what == "raise":
        raise ValueError("the sensor is on fire")
    if what == "hang":
        time.sleep(30)
    if what == "exit":
        sys.exit(3)
    if what == "spam":
        sys.stdout.write("x" * (4 << 20))
        return "spammed"
    return {"pid": os.getpid()}
"""}, Timeout=1)
    pid = invoke(lam, name, {})[1]["pid"]

    r, body = invoke(lam, name, {"do": "raise"}, LogType="Tail")
    assert r["FunctionError"] == "Unhandled"
    assert body["errorType"] == "ValueError" and body["errorMessage"] == "the sensor is on fire"
    assert body["stackTrace"]
    assert "ValueError" in base64.b64decode(r["LogResult"]).decode()
    assert invoke(lam, name, {})[1]["pid"] == pid, "a handler error keeps the worker"

    r, body = invoke(lam, name, {"do": "hang"}, LogType="Tail")
    assert r["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in body["errorMessage"]
    assert "Task timed out after 1.00 seconds" in base64.b64decode(r["LogResult"]).decode()
    pid2 = invoke(lam, name, {})[1]["pid"]
    assert pid2 != pid, "a timed-out worker is replaced"

    r, body = invoke(lam, name, {"do": "exit"})
    assert r["FunctionError"] == "Unhandled" and body["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in body["errorMessage"]
    assert invoke(lam, name, {})[1]["pid"] not in (pid, pid2)

    r, body = invoke(lam, name, {"do": "spam"}, LogType="Tail")
    assert body == "spammed" and "FunctionError" not in r
    tail = base64.b64decode(r["LogResult"]).decode()
    assert len(tail) <= 4096 and "REPORT RequestId" in tail
    log = (fb.data_dir / "functions" / "logs" / f"{name}.log").read_text()
    assert "bytes of output cut" in log
    assert fb.metrics().get(f'fleetcore_functions_failures_total{{function="{name}"}}', 0) >= 3


def test_memory_size_limits_the_worker(fb, aws, uid):
    lam = aws("lambda", broker=fb)
    name = fn_name(uid)
    create(lam, name, {"app.py": """
def handler(event, context):
    block = bytearray(event["mb"] << 20)
    return len(block) >> 20
"""}, MemorySize=128, Timeout=60)
    assert invoke(lam, name, {"mb": 16})[1] == 16
    r, body = invoke(lam, name, {"mb": 256})
    assert r["FunctionError"] == "Unhandled" and body["errorType"] == "MemoryError"
    lam.update_function_configuration(FunctionName=name, MemorySize=512)
    assert invoke(lam, name, {"mb": 256})[1] == 256


def test_provided_runtime_runs_the_packages_own_bootstrap(fb, aws, uid):
    lam = aws("lambda", broker=fb)
    name = fn_name(uid)
    bootstrap = f"""#!{sys.executable}
import http.client, json, os
api = os.environ["AWS_LAMBDA_RUNTIME_API"]
while True:
    c = http.client.HTTPConnection(api)
    c.request("GET", "/2018-06-01/runtime/invocation/next")
    r = c.getresponse()
    event = json.loads(r.read())
    rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
    body = json.dumps({{"custom": event, "handler": os.environ["_HANDLER"],
                        "deadline": r.getheader("Lambda-Runtime-Deadline-Ms") is not None}})
    c.request("POST", f"/2018-06-01/runtime/invocation/{{rid}}/response", body)
    c.getresponse().read()
"""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o755 << 16
        z.writestr(info, bootstrap)
    lam.create_function(FunctionName=name, Runtime="provided.al2023", Role=ROLE,
                        Handler="my.handler", Code={"ZipFile": out.getvalue()})
    assert invoke(lam, name, {"x": 1})[1] == {"custom": {"x": 1}, "handler": "my.handler",
                                               "deadline": True}


@pytest.mark.parametrize("files,handler,error_type", [
    ({"other.py": "x = 1\n"}, "app.handler", "Runtime.ImportModuleError"),
    ({"app.py": "def handler(e, c)\n    return 1\n"}, "app.handler", "Runtime.UserCodeSyntaxError"),
    ({"app.py": "def other(e, c):\n    return 1\n"}, "app.handler", "Runtime.HandlerNotFound"),
])
def test_bad_packages_fail_at_invoke_in_aws_shape(fb, aws, uid, files, handler, error_type):
    lam = aws("lambda", broker=fb)
    name = fn_name(uid)
    create(lam, name, files, handler=handler)
    r, body = invoke(lam, name, {})
    assert r["FunctionError"] == "Unhandled"
    assert body["errorType"] == error_type, body
    # still the same after the failed worker was dropped
    assert invoke(lam, name, {})[1]["errorType"] == error_type


def test_versions_aliases_and_qualifiers(fb, aws, uid):
    lam = aws("lambda", broker=fb)
    name = fn_name(uid)
    create(lam, name, {"app.py": "def handler(e, c):\n    return 'one'\n"})
    v1 = lam.publish_version(FunctionName=name)
    assert v1["Version"] == "1" and v1["FunctionArn"].endswith(f":{name}:1")
    lam.update_function_code(FunctionName=name, ZipFile=package(
        {"app.py": "def handler(e, c):\n    return 'two'\n"}))
    alias = lam.create_alias(FunctionName=name, Name="prod", FunctionVersion="1")
    assert alias["AliasArn"].endswith(f":{name}:prod")
    assert invoke(lam, name, {})[1] == "two"
    r, body = invoke(lam, name, {}, Qualifier="1")
    assert body == "one" and r["ExecutedVersion"] == "1"
    r, body = invoke(lam, f"{name}:prod", {})
    assert body == "one" and r["ExecutedVersion"] == "1"
    v2 = lam.publish_version(FunctionName=name)
    lam.update_alias(FunctionName=name, Name="prod", FunctionVersion=v2["Version"])
    assert invoke(lam, name, {}, Qualifier="prod")[1] == "two"
    assert [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]] == \
        ["$LATEST", "1", "2"]
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.delete_function(FunctionName=name, Qualifier="2")
    lam.delete_alias(FunctionName=name, Name="prod")
    lam.delete_function(FunctionName=name, Qualifier="1")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        invoke(lam, name, {}, Qualifier="1")
    assert lam.invoke(FunctionName=name, InvocationType="DryRun")["StatusCode"] == 204


def test_a_handler_calls_kinesis_through_boto3_unconfigured_and_event_invokes_run(fb, aws, uid):
    lam, kinesis = aws("lambda", broker=fb), aws("kinesis", broker=fb)
    name, stream = fn_name(uid), f"s-{uid}"
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    create(lam, name, {"app.py": f"""
import json, boto3
kinesis = boto3.client("kinesis")
def handler(event, context):
    kinesis.put_record(StreamName="{stream}", Data=json.dumps(event).encode(), PartitionKey="k")
    return "ok"
"""}, Timeout=30)
    assert invoke(lam, name, {"n": 1})[1] == "ok"
    r = lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"n": 2}')
    assert r["StatusCode"] == 202
    records = wait_stream(kinesis, stream, lambda rs: len(rs) >= 2)
    assert sorted(json.loads(r["Data"])["n"] for r in records) == [1, 2]


def test_aws_cli_invokes(fb, aws, aws_cli, uid, tmp_path):
    lam = aws("lambda", broker=fb)
    name = fn_name(uid)
    create(lam, name, {"app.py": "def handler(e, c):\n    return {'twice': e['n'] * 2}\n"})
    out = tmp_path / "out.json"
    meta = aws_cli("lambda", "invoke", "--function-name", name, "--payload", '{"n": 21}', str(out),
                   broker=fb)
    assert meta["StatusCode"] == 200
    assert json.loads(out.read_text()) == {"twice": 42}
    listed = aws_cli("lambda", "get-function-configuration", "--function-name", name, broker=fb)
    assert listed["Handler"] == "app.handler"


# ---------------------------------------------------------------------------------------------
# Node.js and WebAssembly

NODE_FILES = {
    "index.js": """
exports.handler = async (event, context) => {
  console.log("node got", JSON.stringify(event));
  if (event.fail) throw new TypeError("bad input");
  return { sum: event.a + event.b, requestId: context.awsRequestId,
           name: context.functionName, left: context.getRemainingTimeInMillis() > 0 };
};
""",
    "cb.js": """
exports.handler = (event, context, callback) => {
  setTimeout(() => callback(null, { doubled: event.n * 2 }), 5);
};
""",
    "esm.mjs": "export const handler = async (event) => ({ esm: true, got: event });\n",
}


@pytest.mark.skipif(NODE is None, reason="node is not installed (test.sh installs nodejs)")
def test_node_handlers_async_callback_esm_and_errors(fb, aws, uid):
    lam = aws("lambda", broker=fb)
    name = fn_name(uid)
    create(lam, name, NODE_FILES, runtime="nodejs20.x", handler="index.handler")
    r, body = invoke(lam, name, {"a": 2, "b": 3}, LogType="Tail")
    assert body["sum"] == 5 and body["name"] == name and body["left"]
    assert 'node got {"a":2,"b":3}' in base64.b64decode(r["LogResult"]).decode()
    r, body = invoke(lam, name, {"fail": True})
    assert r["FunctionError"] == "Unhandled"
    assert body["errorType"] == "TypeError" and body["errorMessage"] == "bad input"
    lam.update_function_configuration(FunctionName=name, Handler="cb.handler")
    assert invoke(lam, name, {"n": 21})[1] == {"doubled": 42}
    lam.update_function_configuration(FunctionName=name, Handler="esm.handler")
    assert invoke(lam, name, {"x": 1})[1] == {"esm": True, "got": {"x": 1}}
    lam.update_function_configuration(FunctionName=name, Handler="missing.handler")
    assert invoke(lam, name, {})[1]["errorType"] == "Runtime.ImportModuleError"


def test_wasm_module_runs_in_process_with_logs_and_fuel_limit(fb, aws, uid):
    lam = aws("lambda", broker=fb)
    name = fn_name(uid)
    wat = (HERE / "functions" / "echo.wat").read_text()
    create(lam, name, {"echo.wat": wat}, runtime="provided.al2023", handler="echo.wat", Timeout=1)
    r, body = invoke(lam, name, {"temp": 21.5}, LogType="Tail")
    assert body == {"wasm": {"temp": 21.5}} and "FunctionError" not in r
    assert "wasm says hi" in base64.b64decode(r["LogResult"]).decode()
    r, body = invoke(lam, name, [1])
    assert r["FunctionError"] == "Unhandled" and body["errorType"] == "Sandbox.Timedout"
    # an invalid module is refused at upload
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        create(lam, name + "-bad", {"bad.wasm": b"\0asm\x01\0\0\0garbage"},
               runtime="provided.al2023", handler="bad.wasm")


# Logs a line per call, echoes its event, and fails (through `fail`) an event starting with `!`.
WAT_FAILS_ON_BANG = """
(module
  (import "env" "log" (func $log (param i32 i32)))
  (import "env" "fail" (func $fail (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "line\\n")
  (data (i32.const 32) "{\\"errorType\\":\\"Bad\\",\\"errorMessage\\":\\"bang\\"}")
  (global $next (mut i32) (i32.const 1024))
  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $len)))
    (local.get $p))
  (func (export "dealloc") (param $ptr i32) (param $len i32)
    (if (i32.eq (i32.add (local.get $ptr) (local.get $len)) (global.get $next))
      (then (global.set $next (local.get $ptr)))))
  (func (export "handle") (param $ptr i32) (param $len i32) (result i64)
    (call $log (i32.const 16) (i32.const 5))
    (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 33))
      (then (call $fail (i32.const 32) (i32.const 41))))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
            (i64.extend_i32_u (local.get $len)))))
"""


def test_a_burst_through_a_rule_to_wasm_is_one_logged_invocation_per_message(fb, aws, clients, uid):
    """A burst of messages reaches the lambda action in batches; each message is still its own
    invocation, with its own START/END/REPORT under its own request id in the function's log and
    in CloudWatch Logs, and a failing one fails alone (only it reaches the errorAction)."""
    iot, lam, logs = aws("iot", broker=fb), aws("lambda", broker=fb), aws("logs", broker=fb)
    name = fn_name(uid)
    fn = create(lam, name, {"m.wat": WAT_FAILS_ON_BANG}, runtime="provided.al2023", handler="m.wat")
    create_rule(iot, rule_name(uid), f"SELECT * FROM 'fnb/{uid}'",
                [{"lambda": {"functionArn": fn["FunctionArn"]}}],
                errorAction={"republish": {"roleArn": ROLE, "topic": f"fnb-errors/{uid}"}})
    sub = clients(V5, broker=fb)
    sub.subscribe(f"fnb-errors/{uid}", qos=1)
    dev = clients(V5, broker=fb)
    payloads = [json.dumps({"n": i}).encode() for i in range(60)]
    payloads[30] = b"!bad"
    sent = [dev.publish(f"fnb/{uid}", p, qos=1, wait=False) for p in payloads]
    for info in sent:
        info.wait_for_publish(30)
        assert info.is_published()
    failure = json.loads(sub.wait_message(timeout=60, topic=f"fnb-errors/{uid}").payload)
    [failed] = failure["failures"]
    assert failed["failedAction"] == "LambdaAction" and '"errorType":"Bad"' in failed["errorMessage"]
    assert base64.b64decode(failure["base64OriginalPayload"]) == b"!bad"
    path = fb.data_dir / "functions" / "logs" / f"{name}.log"

    def frames():
        # The failing message is tried again (5 attempts): wait until it went to the errorAction
        # and every good message ran, then read the log as the CLI shows it.
        text = subprocess.run([str(FLEETCORE_BIN), "function", "logs", name, "--data-dir",
                               str(fb.data_dir)], capture_output=True, text=True, timeout=30).stdout
        lines = text.splitlines()
        return lines if sum(1 for line in lines if line.startswith("REPORT ")) >= 64 else None

    lines = wait_until(frames, timeout=30, interval=0.1, what=f"64 REPORT lines in {path}")
    starts = [line.split()[2] for line in lines if line.startswith("START RequestId: ")]
    assert len(starts) == 64 and len(set(starts)) == 64, "one request id per invocation"
    # each invocation framed as Lambda frames it: START, its line, END, REPORT of the same id
    for i, rid in enumerate(starts):
        at = lines.index(f"START RequestId: {rid} Version: $LATEST")
        assert lines[at + 1] == "line" and lines[at + 2] == f"END RequestId: {rid}", lines[at:at + 4]
        assert lines[at + 3].startswith(f"REPORT RequestId: {rid}\tDuration: ")
        assert "\tBilled Duration: " in lines[at + 3] and "\tMemory Size: 128 MB" in lines[at + 3]
    # and the same invocations in CloudWatch Logs, one event per line
    def reports():
        try:
            out = logs.get_paginator("filter_log_events").paginate(
                logGroupName=f"/aws/lambda/{name}", filterPattern="REPORT").build_full_result()
        except ClientError:
            return None
        return out["events"] if len(out["events"]) >= 64 else None

    events = wait_until(reports, timeout=30, interval=0.2, what="64 REPORT events in CloudWatch Logs")
    assert sorted(e["message"].split()[2] for e in events) == sorted(starts)


# ---------------------------------------------------------------------------------------------
# event source mappings

COPY_TO_STREAM = """
import base64, json, os, time, boto3
kinesis = boto3.client("kinesis")
def handler(event, context):
    records = event["Records"]
    for r in records:
        assert r["eventSource"] == "aws:kinesis"
        if base64.b64decode(r["kinesis"]["data"]) == b"poison":
            raise RuntimeError("poison record")
    time.sleep(float(os.environ.get("PAUSE", "0")))
    kinesis.put_records(StreamName=os.environ["OUT"], Records=[
        {"Data": json.dumps({"data": base64.b64decode(r["kinesis"]["data"]).decode(),
                             "batch": len(records)}).encode(),
         "PartitionKey": "k"} for r in records])
    return {"n": len(records)}
"""


def stream_arn(name: str) -> str:
    return f"arn:aws:kinesis:us-east-1:000000000000:stream/{name}"


def test_event_source_mapping_delivers_batches_and_resumes_after_sigkill(broker_factory, aws, uid):
    b = broker_factory(env={"FLEETCORE_FUNCTIONS_PYTHON": sys.executable})
    lam, kinesis = aws("lambda", broker=b), aws("kinesis", broker=b)
    name, src, out = fn_name(uid), f"in-{uid}", f"out-{uid}"
    kinesis.create_stream(StreamName=src, ShardCount=1)
    kinesis.create_stream(StreamName=out, ShardCount=1)
    create(lam, name, {"app.py": COPY_TO_STREAM}, Timeout=30,
           Environment={"Variables": {"OUT": out, "PAUSE": "0.1"}})
    total = 300
    for start in range(0, total, 100):
        kinesis.put_records(StreamName=src, Records=[
            {"Data": f"r{i}".encode(), "PartitionKey": "p"} for i in range(start, start + 100)])
    m = lam.create_event_source_mapping(EventSourceArn=stream_arn(src), FunctionName=name,
                                        BatchSize=10, StartingPosition="TRIM_HORIZON")
    assert m["State"] == "Creating" and m["BatchSize"] == 10
    assert lam.get_event_source_mapping(UUID=m["UUID"])["State"] == "Enabled"
    assert [x["UUID"] for x in lam.list_event_source_mappings(FunctionName=name)["EventSourceMappings"]] == [m["UUID"]]

    wait_stream(kinesis, out, lambda rs: len(rs) >= 60, timeout=60)
    b.kill()  # SIGKILL mid-load
    b.start()
    kinesis = aws("kinesis", broker=b)
    records = wait_stream(kinesis, out, lambda rs: len({json.loads(r["Data"])["data"] for r in rs}) >= total,
                          timeout=120)
    seen = [json.loads(r["Data"]) for r in records]
    assert {s["data"] for s in seen} == {f"r{i}" for i in range(total)}, "no record skipped"
    assert all(s["batch"] <= 10 for s in seen)
    # it resumed from its checkpoint: at most the batches in flight at the kill came again
    assert len(seen) - total <= 20, f"{len(seen) - total} duplicates"
    lam.update_event_source_mapping(UUID=m["UUID"], Enabled=False)
    assert lam.get_event_source_mapping(UUID=m["UUID"])["State"] == "Disabled"
    assert lam.delete_event_source_mapping(UUID=m["UUID"])["State"] == "Deleting"
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_event_source_mapping(UUID=m["UUID"])


def test_a_restarted_server_takes_its_mapping_leases_back_at_once(broker_factory, aws, uid):
    """A poller's leases are named after the node (its id kept in the data folder), so after a
    SIGKILL the restarted server reads its shards at once: a record put after the restart runs
    well within the lease TTL (10 s) of the leases the killed process held, on every shard."""
    b = broker_factory(env={"FLEETCORE_FUNCTIONS_PYTHON": sys.executable})
    lam, kinesis = aws("lambda", broker=b), aws("kinesis", broker=b)
    name, src, out = fn_name(uid), f"in-{uid}", f"out-{uid}"
    kinesis.create_stream(StreamName=src, ShardCount=2)
    kinesis.create_stream(StreamName=out, ShardCount=1)
    create(lam, name, {"app.py": COPY_TO_STREAM}, Timeout=30, Environment={"Variables": {"OUT": out}})
    lam.create_event_source_mapping(EventSourceArn=stream_arn(src), FunctionName=name,
                                    BatchSize=10, StartingPosition="TRIM_HORIZON")
    before = [f"before-{i}" for i in range(8)]
    kinesis.put_records(StreamName=src, Records=[{"Data": d.encode(), "PartitionKey": d} for d in before])
    wait_stream(kinesis, out, lambda rs: len(rs) >= len(before), timeout=60)
    node_id = (b.data_dir / "node-id").read_text()
    b.kill()
    b.start()
    assert (b.data_dir / "node-id").read_text() == node_id
    kinesis = aws("kinesis", broker=b)
    after = [f"after-{i}" for i in range(8)]
    kinesis.put_records(StreamName=src, Records=[{"Data": d.encode(), "PartitionKey": d} for d in after])
    # 5 s: half the lease TTL, which a new member name would have to wait out.
    records = wait_stream(kinesis, out, lambda rs: {json.loads(r["Data"])["data"] for r in rs} >= set(after),
                          timeout=5)
    assert {json.loads(r["Data"])["data"] for r in records} >= set(before) | set(after)


def test_event_source_mapping_bisects_and_sends_the_failure_to_the_destination(fb, aws, uid):
    lam, kinesis = aws("lambda", broker=fb), aws("kinesis", broker=fb)
    name, src, out, dlq = fn_name(uid), f"in-{uid}", f"out-{uid}", f"dlq-{uid}"
    for s in (src, out, dlq):
        kinesis.create_stream(StreamName=s, ShardCount=1)
    create(lam, name, {"app.py": COPY_TO_STREAM}, Timeout=30, Environment={"Variables": {"OUT": out}})
    data = [b"a", b"b", b"c", b"poison", b"d", b"e", b"f", b"g"]
    kinesis.put_records(StreamName=src, Records=[{"Data": d, "PartitionKey": "p"} for d in data])
    m = lam.create_event_source_mapping(
        EventSourceArn=stream_arn(src), FunctionName=name, BatchSize=8,
        StartingPosition="TRIM_HORIZON", BisectBatchOnFunctionError=True, MaximumRetryAttempts=1,
        DestinationConfig={"OnFailure": {"Destination": stream_arn(dlq)}})
    assert m["BisectBatchOnFunctionError"] is True
    [failure] = wait_stream(kinesis, dlq, lambda rs: len(rs) >= 1, timeout=60)
    info = json.loads(failure["Data"])
    assert info["requestContext"]["condition"] == "RetryAttemptsExhausted"
    batch = info["KinesisBatchInfo"]
    assert batch["batchSize"] == 1 and batch["startSequenceNumber"] == batch["endSequenceNumber"]
    assert batch["streamArn"] == stream_arn(src)
    delivered = wait_stream(kinesis, out, lambda rs: len(rs) >= 7, timeout=60)
    assert sorted(json.loads(r["Data"])["data"] for r in delivered) == ["a", "b", "c", "d", "e", "f", "g"]
    lam.delete_event_source_mapping(UUID=m["UUID"])


# ---------------------------------------------------------------------------------------------
# the rules engine's lambda action

EXAMPLES = HERE.parents[3] / "examples" / "functions"
ENRICH = (EXAMPLES / "python-enrich" / "lambda_function.py").read_text()


def in_ci() -> bool:
    """Whether this run is CI's (`.ci/run` sets CI), where a missing tool is a failure."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(ok: bool, reason: str) -> None:
    """A tool a test needs: missing, it fails the test in CI (test.sh installs it) and skips it,
    saying why, elsewhere."""
    if not ok:
        (pytest.fail if in_ci() else pytest.skip)(reason)


def enrich_through_a_rule(fb, aws, clients, uid: str, function_arn: str, out: str) -> list[dict]:
    """Thing d0 (attribute site=plant-7) and d1..d4 (none) publish a temperature each to
    `devices/<thing>/telemetry`; a rule `SELECT *, topic(2) AS thing` invokes `function_arn`
    (the enrichment example), which puts each enriched message on the stream `out`. Returns its
    records, sorted by thing, once each thing's is there; each has its Fahrenheit field."""
    iot, kinesis = aws("iot", broker=fb), aws("kinesis", broker=fb)
    iot.create_thing(thingName=f"d0-{uid}", attributePayload={"attributes": {"site": "plant-7"}})
    create_rule(iot, rule_name(uid),
                f"SELECT *, topic(2) AS thing FROM 'devices/+/telemetry' WHERE run = '{uid}'",
                [{"lambda": {"functionArn": function_arn}}])
    dev = clients(V5, broker=fb)
    for i in range(5):
        dev.publish(f"devices/d{i}-{uid}/telemetry", json.dumps({"run": uid, "temperature": 20 + i}),
                    qos=1)
    records = wait_stream(kinesis, out, lambda rs: len(rs) >= 5, timeout=90)
    got = sorted((json.loads(r["Data"]) for r in records), key=lambda r: r["thing"])
    assert [(g["thing"], g["fahrenheit"]) for g in got] == \
        [(f"d{i}-{uid}", round((20 + i) * 9 / 5 + 32, 2)) for i in range(5)]
    assert sorted(r["PartitionKey"] for r in records) == [g["thing"] for g in got]
    return got


def test_rule_lambda_action_enriches_into_a_stream(fb, aws, clients, uid):
    lam, kinesis = aws("lambda", broker=fb), aws("kinesis", broker=fb)
    name, out = fn_name(uid), f"out-{uid}"
    kinesis.create_stream(StreamName=out, ShardCount=1)
    fn = create(lam, name, {"lambda_function.py": ENRICH}, handler="lambda_function.lambda_handler",
                Timeout=30, Environment={"Variables": {"STREAM": out}})
    got = enrich_through_a_rule(fb, aws, clients, uid, fn["FunctionArn"], out)
    assert got[0]["attributes"] == {"site": "plant-7"} and got[1]["attributes"] == {}


def test_rule_lambda_action_to_the_node_example_enriches_into_a_stream(fb, aws, clients, uid,
                                                                        tmp_path):
    """examples/functions/node-enrich deployed as a user deploys it: `npm ci` of its lock file,
    a zip with index.js and node_modules (the AWS SDK for JavaScript v3, pointed at fleetcore by
    the runtime's AWS_ENDPOINT_URL: IoT DescribeThing over HTTP/1.1, Kinesis PutRecord over
    HTTP/2), run by the nodejs20.x runtime behind a topic rule."""
    npm = shutil.which("npm")
    require(NODE is not None and npm is not None,
            "node and npm are not installed (test.sh installs nodejs and npm)")
    source = EXAMPLES / "node-enrich"
    for f in ("index.js", "package.json", "package-lock.json"):
        shutil.copy(source / f, tmp_path / f)
    done = subprocess.run([npm, "ci", "--omit=dev", "--no-audit", "--no-fund"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    files = {f: (tmp_path / f).read_bytes() for f in ("index.js", "package.json")}
    for path in sorted((tmp_path / "node_modules").rglob("*")):
        if path.is_file():
            files[str(path.relative_to(tmp_path))] = path.read_bytes()
    lam, kinesis = aws("lambda", broker=fb), aws("kinesis", broker=fb)
    name, out = fn_name(uid), f"nout-{uid}"
    kinesis.create_stream(StreamName=out, ShardCount=1)
    fn = create(lam, name, files, runtime="nodejs20.x", handler="index.handler", Timeout=30,
                Environment={"Variables": {"STREAM": out}})
    got = enrich_through_a_rule(fb, aws, clients, uid, fn["FunctionArn"], out)
    assert got[0]["attributes"] == {"site": "plant-7"} and got[1]["attributes"] == {}


def build_wasm_example(stream: str) -> bytes:
    """examples/functions/rust-wasm-enrich built from its source for wasm32-unknown-unknown with
    the repository's pinned toolchain, writing to `stream`: the module's bytes."""
    source = EXAMPLES / "rust-wasm-enrich"
    cargo, rustup = shutil.which("cargo"), shutil.which("rustup")
    require(cargo is not None and rustup is not None, "cargo and rustup are not installed")
    installed = subprocess.run([rustup, "target", "list", "--installed"], cwd=source,
                               capture_output=True, text=True, timeout=300)
    require("wasm32-unknown-unknown" in installed.stdout.split(),
            "the Rust target wasm32-unknown-unknown is not installed for the pinned toolchain "
            "(test.sh runs `rustup target add wasm32-unknown-unknown`)")
    # The workspace's target dir: the example's artifacts (another target) sit beside its own.
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    done = subprocess.run([cargo, "build", "--release", "--target", "wasm32-unknown-unknown",
                           "--target-dir", str(target_dir)], cwd=source, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "STREAM": stream})
    assert done.returncode == 0, f"the wasm example did not build:\n{done.stderr}"
    return (target_dir / "wasm32-unknown-unknown" / "release" / "rust_wasm_enrich.wasm").read_bytes()


def test_rule_lambda_action_to_the_rust_wasm_example_enriches_into_a_stream(fb, aws, clients, uid):
    """examples/functions/rust-wasm-enrich, built from its source by this test, behind the same
    rule: the Fahrenheit field and the stream as the other runtimes; no thing attributes (the
    wasm ABI has no registry import, as its README says). An event that is not an object fails
    in AWS's shape."""
    lam, kinesis = aws("lambda", broker=fb), aws("kinesis", broker=fb)
    name, out = fn_name(uid), f"wenrich-{uid}"
    kinesis.create_stream(StreamName=out, ShardCount=1)
    fn = create(lam, name, {"enrich.wasm": build_wasm_example(out)}, runtime="provided.al2023",
                handler="enrich.wasm")
    got = enrich_through_a_rule(fb, aws, clients, uid, fn["FunctionArn"], out)
    assert all("attributes" not in g for g in got)
    r, body = invoke(lam, name, {"thing": "t"}, LogType="Tail")
    assert body == {"thing": "t"} and "FunctionError" not in r
    assert "no numeric temperature from t" in base64.b64decode(r["LogResult"]).decode()
    r, body = invoke(lam, name, [1, 2])
    assert r["FunctionError"] == "Unhandled"
    assert body == {"errorType": "InvalidEvent", "errorMessage": "the event is not a JSON object"}
    assert len(stream_records(kinesis, out)) == 6, "a failed invocation puts nothing"


def test_rule_lambda_action_to_wasm_puts_each_result_on_a_stream(fb, aws, clients, uid):
    """rule -> lambda action -> a WebAssembly function -> Kinesis stream: the module puts its
    output on the stream through the host's `put_record` (forward.wat); every message arrives
    once, its bytes the module's document; a record the host refuses (a missing stream) fails
    the invocation, and the rule's errorAction gets the message."""
    iot, lam, kinesis = aws("iot", broker=fb), aws("lambda", broker=fb), aws("kinesis", broker=fb)
    name, out = fn_name(uid), f"wout-{uid}"
    kinesis.create_stream(StreamName=out, ShardCount=2)
    wat = (HERE / "functions" / "forward.wat").read_text().replace("wasm-out", out)
    fn = create(lam, name, {"forward.wat": wat}, runtime="provided.al2023", handler="forward.wat")
    create_rule(iot, rule_name(uid), f"SELECT n FROM 'fwd/{uid}'",
                [{"lambda": {"functionArn": fn["FunctionArn"]}}])
    dev = clients(V5, broker=fb)
    sent = [dev.publish(f"fwd/{uid}", json.dumps({"n": i}), qos=1, wait=False) for i in range(50)]
    for info in sent:
        info.wait_for_publish(30)
    records = wait_stream(kinesis, out, lambda rs: len(rs) >= 50, timeout=60)
    assert sorted(json.loads(r["Data"])["wasm"]["n"] for r in records) == list(range(50))
    assert all(r["PartitionKey"] == "k" for r in records)
    # Invoked directly, the result comes back once the record is in the stream.
    r, body = invoke(lam, name, {"n": "direct"})
    assert body == {"wasm": {"n": "direct"}} and "FunctionError" not in r
    assert len(stream_records(kinesis, out)) == 51
    # A stream that does not exist: the invocation fails, the errorAction gets the message.
    missing = fn_name(uid) + "-m"
    fn2 = create(lam, missing, {"forward.wat": wat.replace(out, f"nope-{uid}")},
                 runtime="provided.al2023", handler="forward.wat")
    r, body = invoke(lam, missing, {"n": 1})
    assert r["FunctionError"] == "Unhandled" and body["errorType"] == "Runtime.PutRecordFailed", body
    create_rule(iot, rule_name(uid) + "_m", f"SELECT n FROM 'fwdm/{uid}'",
                [{"lambda": {"functionArn": fn2["FunctionArn"]}}],
                errorAction={"republish": {"roleArn": ROLE, "topic": f"fwdm-errors/{uid}"}})
    sub = clients(V5, broker=fb)
    sub.subscribe(f"fwdm-errors/{uid}", qos=1)
    dev.publish(f"fwdm/{uid}", json.dumps({"n": 7}), qos=1)
    failure = json.loads(sub.wait_message(timeout=60, topic=f"fwdm-errors/{uid}").payload)
    [failed] = failure["failures"]
    assert failed["failedAction"] == "LambdaAction" and "PutRecordFailed" in failed["errorMessage"]


def test_rule_lambda_action_failure_fires_the_error_action(fb, aws, clients, uid):
    iot, lam = aws("iot", broker=fb), aws("lambda", broker=fb)
    name = fn_name(uid)
    fn = create(lam, name, {"app.py": "def handler(e, c):\n    raise KeyError('nope')\n"})
    create_rule(iot, rule_name(uid), f"SELECT * FROM 'fn/{uid}'",
                [{"lambda": {"functionArn": fn["FunctionArn"]}}],
                errorAction={"republish": {"roleArn": ROLE, "topic": f"fn-errors/{uid}"}})
    sub = clients(V5, broker=fb)
    sub.subscribe(f"fn-errors/{uid}", qos=1)
    clients(V5, broker=fb).publish(f"fn/{uid}", b'{"a":1}', qos=1)
    msg = sub.wait_message(timeout=60, topic=f"fn-errors/{uid}")
    [failure] = json.loads(msg.payload)["failures"]
    assert failure["failedAction"] == "LambdaAction"
    assert failure["failedResource"] == fn["FunctionArn"]
    assert "KeyError" in failure["errorMessage"]


def test_reserved_concurrency_refuses_a_synchronous_call_and_queues_a_rules_calls(fb, aws, clients, uid,
                                                                                  tmp_path):
    """Over a function's reserved concurrency the Invoke API answers TooManyRequestsException, as
    Lambda does; a rule's lambda action waits for a slot instead (AWS retries a throttled
    invocation from IoT), so no message fails to its errorAction."""
    iot, lam, kinesis = aws("iot", broker=fb), aws("lambda", broker=fb), aws("kinesis", broker=fb)
    name, out, marker = fn_name(uid), f"out-{uid}", tmp_path / "running"
    kinesis.create_stream(StreamName=out, ShardCount=1)
    code = ("import json, os, time, boto3\nk = boto3.client('kinesis')\n"
            "def handler(e, c):\n    open(os.environ['MARKER'], 'w').close()\n"
            "    time.sleep(e.get('sleep', 0.2))\n"
            "    k.put_record(StreamName=os.environ['OUT'], Data=json.dumps(e).encode(), PartitionKey='k')\n"
            "    return e\n")
    fn = create(lam, name, {"app.py": code}, Timeout=30,
                Environment={"Variables": {"OUT": out, "MARKER": str(marker)}})
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(invoke, lam, name, {"sleep": 2, "n": -1})
        wait_until(marker.exists, timeout=30)
        with pytest.raises(lam.exceptions.TooManyRequestsException):
            invoke(lam, name, {"n": -2})
        assert first.result()[1] == {"sleep": 2, "n": -1}
    errors = clients(V5, broker=fb)
    errors.subscribe(f"fn-errors/{uid}", qos=1)
    create_rule(iot, rule_name(uid), f"SELECT * FROM 'fn/{uid}'",
                [{"lambda": {"functionArn": fn["FunctionArn"]}}],
                errorAction={"republish": {"roleArn": ROLE, "topic": f"fn-errors/{uid}"}})
    device = clients(V5, broker=fb)
    for i in range(6):  # 6 x 0.2 s in one slot; the lane's 5 attempts span 0.75 s (50 ms backoff)
        device.publish(f"fn/{uid}", json.dumps({"n": i}), qos=1)
    records = wait_stream(kinesis, out, lambda rs: len(rs) >= 7, timeout=30)
    assert sorted(json.loads(r["Data"])["n"] for r in records) == [-1, 0, 1, 2, 3, 4, 5]
    assert errors.payloads(f"fn-errors/{uid}") == []


def test_a_function_that_falls_behind_delays_only_its_own_rule_action(fb, aws, clients, uid):
    """A rule whose lambda action cannot keep up (one slot, every call sleeping) holds back only
    that action: another rule on the same messages republishes every one of them meanwhile,
    although more of them wait for the function than an action's queue holds in memory (4,096):
    the rest wait in the action's overflow file instead of stopping the rules' reader."""
    iot, lam = aws("iot", broker=fb), aws("lambda", broker=fb)
    name, n = fn_name(uid), 8000
    fn = create(lam, name, {"app.py": "import time\ndef handler(e, c):\n    time.sleep(5)\n"},
                Timeout=30)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    slow, fast = rule_name(uid) + "_slow", rule_name(uid) + "_fast"
    create_rule(iot, slow, f"SELECT * FROM 'lag/{uid}'",
                [{"lambda": {"functionArn": fn["FunctionArn"]}}])
    create_rule(iot, fast, f"SELECT * FROM 'lag/{uid}'",
                [{"republish": {"roleArn": ROLE, "topic": f"lag-out/{uid}", "qos": 1}}])
    try:
        sub = clients(V5, broker=fb)
        sub.subscribe(f"lag-out/{uid}", qos=1)
        device = clients(V5, broker=fb)
        for i in range(n):
            device.publish(f"lag/{uid}", str(i).encode(), qos=0, wait=False)
        device.sync()
        wait_until(lambda: len(sub.payloads(f"lag-out/{uid}")) >= n, timeout=60)
        assert sub.payloads(f"lag-out/{uid}") == [str(i).encode() for i in range(n)]
    finally:
        iot.delete_topic_rule(ruleName=slow)
        iot.delete_topic_rule(ruleName=fast)


# ---------------------------------------------------------------------------------------------
# aws_lambda() in rule SQL

def test_aws_lambda_in_rule_sql_is_called_per_message_and_its_result_is_the_value(fb, aws, clients, uid):
    iot, lam, kinesis = aws("iot", broker=fb), aws("lambda", broker=fb), aws("kinesis", broker=fb)
    name, out = fn_name(uid), f"out-{uid}"
    kinesis.create_stream(StreamName=out, ShardCount=1)
    fn = create(lam, name, {"app.py": """
def handler(event, context):
    return {"fahrenheit": round(event["c"] * 9 / 5 + 32, 2), "hot": event["c"] > 30}
"""})
    create_rule(iot, rule_name(uid),
                f"SELECT topic(2) AS thing, aws_lambda('{fn['FunctionArn']}', {{'c': temperature}}) AS conv "
                f"FROM 'sql/+/{uid}' WHERE aws_lambda('{fn['FunctionArn']}', {{'c': temperature}}).hot = false",
                [{"kinesis": {"roleArn": ROLE, "streamName": out, "partitionKey": "${topic(2)}"}}])
    dev = clients(V5, broker=fb)
    for i, c in enumerate([20, 35, 25]):
        dev.publish(f"sql/d{i}/{uid}", json.dumps({"temperature": c}), qos=1)
    records = wait_stream(kinesis, out, lambda rs: len(rs) >= 2, timeout=60)
    got = sorted((json.loads(r["Data"]) for r in records), key=lambda r: r["thing"])
    assert got == [{"thing": "d0", "conv": {"fahrenheit": 68.0, "hot": False}},
                   {"thing": "d2", "conv": {"fahrenheit": 77.0, "hot": False}}]
    # 35 °C was filtered by the WHERE clause on the function's result: a later message proves
    # the reader went past it, and the stream still holds exactly the two cool ones.
    dev.publish(f"sql/d3/{uid}", json.dumps({"temperature": 10}), qos=1)
    records = wait_stream(kinesis, out, lambda rs: len(rs) >= 3, timeout=60)
    assert sorted(json.loads(r["Data"])["thing"] for r in records) == ["d0", "d2", "d3"]


def test_aws_lambda_failure_in_rule_sql_fires_the_error_action(fb, aws, clients, uid):
    iot, lam = aws("iot", broker=fb), aws("lambda", broker=fb)
    name = fn_name(uid)
    fn = create(lam, name, {"app.py": "def handler(e, c):\n    raise ValueError('bad reading')\n"})
    create_rule(iot, rule_name(uid),
                f"SELECT aws_lambda('{fn['FunctionArn']}', *) AS r FROM 'sqlfail/{uid}'",
                [{"republish": {"roleArn": ROLE, "topic": f"never/{uid}"}}],
                errorAction={"republish": {"roleArn": ROLE, "topic": f"sql-errors/{uid}"}})
    sub = clients(V5, broker=fb)
    sub.subscribe(f"sql-errors/{uid}", qos=1)
    sub.subscribe(f"never/{uid}", qos=1)
    clients(V5, broker=fb).publish(f"sqlfail/{uid}", b'{"a":1}', qos=1)
    msg = sub.wait_message(timeout=60, topic=f"sql-errors/{uid}")
    report = json.loads(msg.payload)
    assert base64.b64decode(report["base64OriginalPayload"]) == b'{"a":1}'
    [failure] = report["failures"]
    assert failure["failedAction"] == "aws_lambda"
    assert failure["failedResource"] == fn["FunctionArn"]
    assert "ValueError" in failure["errorMessage"] and "bad reading" in failure["errorMessage"]
    assert sub.matching(topic=f"never/{uid}") == [], "the action did not run"


def test_rule_calls_follow_updates_and_deletion_of_their_function(fb, aws, clients, uid):
    """A rule resolves its function once and keeps it (no lookup per message), yet every
    message published after UpdateFunctionCode runs the new code, and after DeleteFunction the
    call fails into the error action."""
    iot, lam = aws("iot", broker=fb), aws("lambda", broker=fb)
    name = fn_name(uid)
    wat = (HERE / "functions" / "echo.wat").read_text()
    fn = create(lam, name, {"echo.wat": wat}, runtime="provided.al2023", handler="echo.wat")
    create_rule(iot, rule_name(uid),
                f"SELECT aws_lambda('{fn['FunctionArn']}', *) AS r FROM 'follow/{uid}'",
                [{"republish": {"roleArn": ROLE, "topic": f"followed/{uid}"}}],
                errorAction={"republish": {"roleArn": ROLE, "topic": f"follow-errors/{uid}"}})
    sub = clients(V5, broker=fb)
    sub.subscribe(f"followed/{uid}", qos=1)
    sub.subscribe(f"follow-errors/{uid}", qos=1)
    dev = clients(V5, broker=fb)
    dev.publish(f"follow/{uid}", b'{"n":1}', qos=1)
    msg = sub.wait_message(timeout=60, topic=f"followed/{uid}")
    assert json.loads(msg.payload) == {"r": {"wasm": {"n": 1}}}
    # the same module answering under another key (same length, so the offsets hold)
    lam.update_function_code(FunctionName=name, ZipFile=package(
        {"echo.wat": wat.replace('"{\\"wasm\\":"', '"{\\"wat2\\":"')}))
    dev.publish(f"follow/{uid}", b'{"n":2}', qos=1)
    wait_until(lambda: len(sub.matching(topic=f"followed/{uid}")) >= 2, timeout=60)
    assert json.loads(sub.matching(topic=f"followed/{uid}")[1].payload) == {"r": {"wat2": {"n": 2}}}
    lam.delete_function(FunctionName=name)
    dev.publish(f"follow/{uid}", b'{"n":3}', qos=1)
    report = json.loads(sub.wait_message(timeout=60, topic=f"follow-errors/{uid}").payload)
    assert report["failures"][0]["failedAction"] == "aws_lambda"
    assert "not found" in report["failures"][0]["errorMessage"].lower()
    assert len(sub.matching(topic=f"followed/{uid}")) == 2


# ---------------------------------------------------------------------------------------------
# durable Event invocations

SLOW_PUT = """
import json, os, time, boto3
kinesis = boto3.client("kinesis")
def handler(event, context):
    time.sleep(float(os.environ["PAUSE"]))
    record = dict(event, server=os.getppid())
    kinesis.put_record(StreamName=os.environ["OUT"], Data=json.dumps(record).encode(), PartitionKey="k")
    return "ok"
"""


def test_event_invocations_are_durable_once_accepted_and_run_after_sigkill(broker_factory, aws, uid):
    b = broker_factory(env={"FLEETCORE_FUNCTIONS_PYTHON": sys.executable})
    lam, kinesis = aws("lambda", broker=b), aws("kinesis", broker=b)
    name, out = fn_name(uid), f"out-{uid}"
    kinesis.create_stream(StreamName=out, ShardCount=1)
    # The handler waits before its side effect, so the kill lands before any event finished
    # (and workers die with the server: no orphan finishes one after the restart).
    create(lam, name, {"app.py": SLOW_PUT}, Timeout=60,
           Environment={"Variables": {"OUT": out, "PAUSE": "3"}})
    for n in range(5):
        r = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"n": n}).encode())
        assert r["StatusCode"] == 202
    b.kill()
    b.start()
    kinesis = aws("kinesis", broker=b)
    records = wait_stream(kinesis, out, lambda rs: {json.loads(r["Data"])["n"] for r in rs} >= set(range(5)),
                          timeout=90)
    got = [json.loads(r["Data"]) for r in records]
    assert sorted({g["n"] for g in got}) == list(range(5))
    assert {g["server"] for g in got} == {b.proc.pid}, "every event ran in the restarted server"



def test_event_invocations_retry_twice_and_a_full_queue_is_refused(broker_factory, aws, uid, tmp_path):
    b = broker_factory(env={"FLEETCORE_FUNCTIONS_PYTHON": sys.executable,
                            "FLEETCORE_FUNCTIONS_EVENT_QUEUE": "3"})
    lam, kinesis = aws("lambda", broker=b), aws("kinesis", broker=b)
    name, out = fn_name(uid), f"out-{uid}"
    kinesis.create_stream(StreamName=out, ShardCount=1)
    # Each attempt is recorded; the first two fail, the third succeeds.
    create(lam, name, {"app.py": """
import json, os, boto3
kinesis = boto3.client("kinesis")
def handler(event, context):
    path = os.path.join(os.environ["COUNTS"], str(event["n"]))
    attempt = int(open(path).read()) + 1 if os.path.exists(path) else 1
    open(path, "w").write(str(attempt))
    kinesis.put_record(StreamName=os.environ["OUT"], PartitionKey="k",
                       Data=json.dumps({"n": event["n"], "attempt": attempt}).encode())
    if attempt < event["succeed_at"]:
        raise RuntimeError(f"attempt {attempt} fails")
    return "ok"
"""}, Timeout=30, Environment={"Variables": {"OUT": out, "COUNTS": str(tmp_path)}})
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"n": 1, "succeed_at": 3}')
    records = wait_stream(kinesis, out, lambda rs: len(rs) >= 3, timeout=60)
    assert [json.loads(r["Data"])["attempt"] for r in records] == [1, 2, 3]

    slow = f"{name}-slow"[:64]
    create(lam, slow, {"app.py": "import time\ndef handler(e, c):\n    time.sleep(10)\n"}, Timeout=30)
    for n in range(3):
        assert lam.invoke(FunctionName=slow, InvocationType="Event", Payload=b"{}")["StatusCode"] == 202
    with pytest.raises(lam.exceptions.TooManyRequestsException):
        lam.invoke(FunctionName=slow, InvocationType="Event", Payload=b"{}")


# ---------------------------------------------------------------------------------------------
# Firehose data transformation with a Lambda processor

FIREHOSE_TRANSFORM = """
import base64, json
def handler(event, context):
    assert event["invocationId"] and event["region"] == "us-east-1"
    assert event["deliveryStreamArn"].startswith("arn:aws:firehose:us-east-1:")
    out = []
    for r in event["records"]:
        assert isinstance(r["approximateArrivalTimestamp"], int)
        reading = json.loads(base64.b64decode(r["data"]))
        if reading.get("drop"):
            out.append({"recordId": r["recordId"], "result": "Dropped"})
        elif reading.get("bad"):
            out.append({"recordId": r["recordId"], "result": "ProcessingFailed", "data": r["data"]})
        else:
            reading["f"] = reading["c"] * 9 / 5 + 32
            data = base64.b64encode(json.dumps(reading).encode() + b"\\n").decode()
            out.append({"recordId": r["recordId"], "result": "Ok", "data": data})
    return {"records": out}
"""


def lambda_processor(arn: str, **params) -> dict:
    parameters = [{"ParameterName": "LambdaArn", "ParameterValue": arn}]
    parameters += [{"ParameterName": k, "ParameterValue": str(v)} for k, v in params.items()]
    return {"Enabled": True, "Processors": [{"Type": "Lambda", "Parameters": parameters}]}


def test_firehose_lambda_processor_transforms_drops_and_fails_records_into_the_lake(fb, aws, uid):
    from test_firehose import lake_files, lines_of, s3_destination
    lam, fh = aws("lambda", broker=fb), aws("firehose", broker=fb)
    fn = create(lam, fn_name(uid), {"app.py": FIREHOSE_TRANSFORM}, Timeout=30)
    name, bucket = f"tx-{uid}"[:64], f"lake-{uid}".replace("_", "-")[:63]
    fh.create_delivery_stream(DeliveryStreamName=name, ExtendedS3DestinationConfiguration=s3_destination(
        bucket, Prefix="ok/", ErrorOutputPrefix="err/!{firehose:error-output-type}/",
        ProcessingConfiguration=lambda_processor(fn["FunctionArn"], NumberOfRetries=1,
                                                 BufferSizeInMBs=1, BufferIntervalInSeconds=60)))
    described = fh.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    [dest] = described["Destinations"]
    assert dest["ExtendedS3DestinationDescription"]["ProcessingConfiguration"]["Processors"][0]["Type"] == "Lambda"
    readings = [{"n": 0, "c": 20}, {"n": 1, "drop": True}, {"n": 2, "bad": True, "c": 1}, {"n": 3, "c": 100}]
    out = fh.put_record_batch(DeliveryStreamName=name, Records=[{"Data": json.dumps(r).encode()} for r in readings])
    assert out["FailedPutCount"] == 0

    def landed():
        files = lake_files(fb, bucket)
        ok = [json.loads(line) for k, body in files.items() if k.startswith("ok/") for line in lines_of(k, body)]
        err = [json.loads(line) for k, body in files.items() if k.startswith("err/processing-failed/")
               for line in lines_of(k, body)]
        return (ok, err) if len(ok) >= 2 and err else None
    ok, err = wait_until(landed, 60, what="transformed records and the failed one in the lake")
    assert sorted((r["n"], r["f"]) for r in ok) == [(0, 68.0), (3, 212.0)]
    [failed] = err
    assert json.loads(base64.b64decode(failed["rawData"])) == readings[2]
    assert failed["errorCode"] == "Lambda.ProcessingFailedStatus"


def test_firehose_lambda_processor_that_fails_sends_every_record_to_processing_failed(fb, aws, uid):
    from test_firehose import lake_files, lines_of, s3_destination
    lam, fh = aws("lambda", broker=fb), aws("firehose", broker=fb)
    fn = create(lam, fn_name(uid), {"app.py": "def handler(e, c):\n    raise RuntimeError('no')\n"})
    name, bucket = f"txf-{uid}"[:64], f"lakef-{uid}".replace("_", "-")[:63]
    fh.create_delivery_stream(DeliveryStreamName=name, ExtendedS3DestinationConfiguration=s3_destination(
        bucket, ProcessingConfiguration=lambda_processor(fn["FunctionArn"], NumberOfRetries=0)))
    fh.put_record_batch(DeliveryStreamName=name, Records=[{"Data": b'{"a":1}'}, {"Data": b'{"a":2}'}])

    def failed():
        files = lake_files(fb, bucket)
        lines = [json.loads(line) for k, body in files.items() for line in lines_of(k, body)]
        return (files, lines) if len(lines) >= 2 else None
    files, lines = wait_until(failed, 60, what="both records in the error output")
    assert all(k.startswith("processing-failed/year=") for k in files), list(files)
    assert sorted(base64.b64decode(x["rawData"]) for x in lines) == [b'{"a":1}', b'{"a":2}']
    assert {x["errorCode"] for x in lines} == {"Lambda.FunctionError"}
    assert "RuntimeError" in lines[0]["errorMessage"]

    with pytest.raises(fh.exceptions.InvalidArgumentException) as e:
        fh.create_delivery_stream(DeliveryStreamName=f"{name}-bad"[:64], ExtendedS3DestinationConfiguration=s3_destination(
            bucket, ProcessingConfiguration={"Enabled": True, "Processors": [{"Type": "Lambda", "Parameters": [
                {"ParameterName": "NumberOfRetries", "ParameterValue": "2"}]}]}))
    assert "LambdaArn" in e.value.response["Error"]["Message"]


def test_firehose_update_destination_applies_to_records_after_it_and_survives_restart(broker_factory, aws, uid):
    from test_firehose import lake_files, lines_of, s3_destination
    b = broker_factory(env={"FLEETCORE_FUNCTIONS_PYTHON": sys.executable})
    lam, fh = aws("lambda", broker=b), aws("firehose", broker=b)
    fn = create(lam, fn_name(uid), {"app.py": FIREHOSE_TRANSFORM}, Timeout=30)
    name, bucket = f"up-{uid}"[:64], f"lakeu-{uid}".replace("_", "-")[:63]
    fh.create_delivery_stream(DeliveryStreamName=name,
                              ExtendedS3DestinationConfiguration=s3_destination(bucket, Prefix="v1/"))

    def under(prefix: str, count: int):
        def landed():
            rows = [json.loads(line) for k, body in lake_files(b, bucket).items()
                    if k.startswith(prefix) for line in lines_of(k, body)]
            return rows if len(rows) >= count else None
        return wait_until(landed, 60, what=f"{count} record(s) under {prefix}")

    fh.put_record(DeliveryStreamName=name, Record={"Data": b'{"n": 0, "c": 20}'})
    assert under("v1/", 1) == [{"n": 0, "c": 20}]
    [dest] = fh.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]["Destinations"]
    described = fh.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    assert described["VersionId"] == "1"

    # Refused updates change nothing.
    processor = lambda_processor(fn["FunctionArn"], BufferSizeInMBs=1, BufferIntervalInSeconds=60)
    update = {"Prefix": "v2/", "ProcessingConfiguration": processor}
    with pytest.raises(fh.exceptions.ConcurrentModificationException):
        fh.update_destination(DeliveryStreamName=name, CurrentDeliveryStreamVersionId="7",
                              DestinationId=dest["DestinationId"], ExtendedS3DestinationUpdate=update)
    with pytest.raises(fh.exceptions.InvalidArgumentException):
        fh.update_destination(DeliveryStreamName=name, CurrentDeliveryStreamVersionId="1",
                              DestinationId="destinationId-000000000009", ExtendedS3DestinationUpdate=update)
    with pytest.raises(fh.exceptions.InvalidArgumentException) as bad:
        fh.update_destination(DeliveryStreamName=name, CurrentDeliveryStreamVersionId="1",
                              DestinationId=dest["DestinationId"],
                              ExtendedS3DestinationUpdate={"BufferingHints": {"SizeInMBs": 500}})
    assert "SizeInMBs" in bad.value.response["Error"]["Message"]
    with pytest.raises(fh.exceptions.ResourceNotFoundException):
        fh.update_destination(DeliveryStreamName=f"{name}-no"[:64], CurrentDeliveryStreamVersionId="1",
                              DestinationId=dest["DestinationId"], ExtendedS3DestinationUpdate=update)
    assert fh.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]["VersionId"] == "1"

    fh.update_destination(DeliveryStreamName=name, CurrentDeliveryStreamVersionId="1",
                          DestinationId=dest["DestinationId"], ExtendedS3DestinationUpdate=update)
    described = fh.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    assert described["VersionId"] == "2"
    [dest] = described["Destinations"]
    s3 = dest["ExtendedS3DestinationDescription"]
    assert s3["Prefix"] == "v2/" and s3["BucketARN"] == f"arn:aws:s3:::{bucket}", "members left out are kept"
    assert s3["BufferingHints"] == {"SizeInMBs": 1, "IntervalInSeconds": 1}
    assert s3["ProcessingConfiguration"]["Processors"][0]["Type"] == "Lambda"
    with pytest.raises(fh.exceptions.ConcurrentModificationException):
        fh.update_destination(DeliveryStreamName=name, CurrentDeliveryStreamVersionId="1",
                              DestinationId=dest["DestinationId"], ExtendedS3DestinationUpdate={"Prefix": "v3/"})

    # A record put after the update goes through the processor, under the new prefix.
    fh.put_record(DeliveryStreamName=name, Record={"Data": b'{"n": 1, "c": 100}'})
    assert under("v2/", 1) == [{"n": 1, "c": 100, "f": 212.0}]

    b.restart()
    fh = aws("firehose", broker=b)
    described = fh.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    assert described["VersionId"] == "2"
    assert described["Destinations"][0]["ExtendedS3DestinationDescription"]["Prefix"] == "v2/"
    fh.put_record(DeliveryStreamName=name, Record={"Data": b'{"n": 2, "c": 0}'})
    assert sorted(under("v2/", 2), key=lambda r: r["n"]) == [
        {"n": 1, "c": 100, "f": 212.0}, {"n": 2, "c": 0, "f": 32.0}]
    assert under("v1/", 1) == [{"n": 0, "c": 20}], "nothing after the update used the old prefix"
