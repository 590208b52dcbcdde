"""IoT Analytics pipeline activities that call other parts of the platform, through boto3:
`lambda` (a Python function of the server's own, as AWS calls a Lambda function: the batch as a
JSON array in, the messages it returns out), `deviceShadowEnrich` (the classic shadow of the
thing an attribute names) and `selectAttributes`, each alone with RunPipelineActivity and all
three in a pipeline: channel -> lambda -> deviceShadowEnrich -> selectAttributes -> datastore ->
dataset CSV equal to the expected rows. A function that fails sends its batch to the pipeline's
error count; the messages after it still go through."""

from __future__ import annotations

import io
import json
import sys
import zipfile

import pytest
from botocore.exceptions import ClientError

from brokers import wait_until
from test_analytics import ROLE, error_of, ident, pipeline, put, rows_eventually

pytestmark = pytest.mark.fleetcore_only("IoT Analytics is fleetcore's")

# Doubles `temp` into `temp2`; a message with `fail` makes the whole batch fail.
FUNCTION = """
def handler(event, context):
    if any(m.get("fail") for m in event):
        raise ValueError("asked to fail")
    return [dict(m, temp2=m["temp"] * 2) for m in event]
"""


def zipped(source: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("app.py", source)
    return out.getvalue()


@pytest.fixture
def server(broker_factory):
    """A server whose Python functions run with this interpreter."""
    return broker_factory(env={"FLEETCORE_FUNCTIONS_PYTHON": sys.executable})


def test_lambda_shadow_enrich_and_select_attributes(server, aws, uid):
    ia = aws("iotanalytics", broker=server)
    n = ident(uid)
    fn = n.replace("_", "-")[:60]
    aws("lambda", broker=server).create_function(
        FunctionName=fn, Runtime="python3.11", Role=ROLE, Handler="app.handler",
        Code={"ZipFile": zipped(FUNCTION)})
    aws("iot", broker=server).create_thing(thingName=f"{n}_d1")
    aws("iot-data", broker=server).update_thing_shadow(
        thingName=f"{n}_d1", payload=json.dumps({"state": {"reported": {"fw": "1.2"}}}))

    # Each activity alone.
    payloads = [json.dumps({"device": f"{n}_d1", "temp": 20, "noise": 1}).encode()]
    out = ia.run_pipeline_activity(pipelineActivity={"lambda": {
        "name": "l", "lambdaName": fn, "batchSize": 10}}, payloads=payloads)["payloads"]
    assert [json.loads(p) for p in out] == [{"device": f"{n}_d1", "temp": 20, "noise": 1, "temp2": 40}]
    out = ia.run_pipeline_activity(pipelineActivity={"deviceShadowEnrich": {
        "name": "s", "attribute": "shadow", "thingName": "device", "roleArn": ROLE}}, payloads=payloads)["payloads"]
    (enriched,) = [json.loads(p) for p in out]
    assert enriched["shadow"]["state"] == {"reported": {"fw": "1.2"}}, enriched
    out = ia.run_pipeline_activity(pipelineActivity={"selectAttributes": {
        "name": "k", "attributes": ["device", "temp"]}}, payloads=payloads)["payloads"]
    assert [json.loads(p) for p in out] == [{"device": f"{n}_d1", "temp": 20}]
    with pytest.raises(ClientError) as exc:
        ia.run_pipeline_activity(pipelineActivity={"lambda": {
            "name": "l", "lambdaName": fn, "batchSize": 10}},
            payloads=[json.dumps({"temp": 1, "fail": True}).encode()])
    code, status, message = error_of(exc)
    assert (code, status) == ("InvalidRequestException", 400) and "asked to fail" in message, message

    # All three in a pipeline. The failing message is put alone, so only its batch is dropped.
    ia.create_channel(channelName=n)
    ia.create_datastore(datastoreName=n)
    ia.create_pipeline(pipelineName=n, pipelineActivities=pipeline(
        n, n, n,
        {"lambda": {"lambdaName": fn, "batchSize": 2}},
        {"deviceShadowEnrich": {"attribute": "shadow", "thingName": "device", "roleArn": ROLE}},
        {"selectAttributes": {"attributes": ["seq", "temp2", "shadow"]}}))
    sql = f"SELECT seq, temp2, json_extract_scalar(shadow, '$.state.reported.fw') AS fw FROM {n} ORDER BY seq"
    ia.create_dataset(datasetName=n, actions=[{"actionName": "q", "queryAction": {"sqlQuery": sql}}])
    assert put(ia, n, *({"seq": i, "device": f"{n}_d1", "temp": 10 + i, "noise": i} for i in range(3))) == []
    expected = [{"seq": str(i), "temp2": str(2 * (10 + i)), "fw": "1.2"} for i in range(3)]
    assert rows_eventually(ia, n, len(expected)) == expected
    errors = f'fleetcore_analytics_pipeline_errors_total{{pipeline="{n}"}}'
    assert put(ia, n, {"seq": 3, "device": f"{n}_d1", "temp": 0, "fail": True}) == []
    wait_until(lambda: server.metrics().get(errors) == 1, 30, interval=0.2, what="the failed batch counted")
    assert put(ia, n, {"seq": 4, "device": "no_such_thing", "temp": 5}) == []
    expected.append({"seq": "4", "temp2": "10", "fw": ""})
    assert rows_eventually(ia, n, len(expected)) == expected
