"""IoT Analytics through boto3 (`iotanalytics`, botocore 1.42.50 as test.sh pins): channels,
datastores, pipelines and datasets round trips with AWS's shapes and errors; BatchPutMessage's
error entries for malformed messages; SampleChannelData; RunPipelineActivity; tags; what this
server does not run (a container action, cron's L/W/#) and malformed storage or file formats refused
at create time; an invalid SQL query failing the dataset content with the engine's reason. Whole system:
MQTT telemetry -> rule `iotAnalytics` -> channel -> pipeline (filter, math,
deviceRegistryEnrich) -> Hive-partitioned Parquet datastore -> dataset SQL -> the CSV at the
content's dataURI equal to the expected rows; the same Parquet files read by DuckDB give the
same answer; `fleetcore sql` prints them; a SIGKILL while messages stream in loses none."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import subprocess
import urllib.request

import pytest
from botocore.exceptions import ClientError

from brokers import FLEETCORE_BIN, wait_until
from clients import V5
from test_rules_engine import create_rule, rule_name

pytestmark = pytest.mark.fleetcore_only("IoT Analytics is fleetcore's")

ROLE = "arn:aws:iam::000000000000:role/analytics"


def ident(uid: str) -> str:
    """A resource name from the test's uid (letters, digits and _ only)."""
    return "t" + "".join(c if c.isalnum() else "_" for c in uid)


@pytest.fixture
def ia(aws):
    return aws("iotanalytics")


def error_of(excinfo) -> tuple[str, int, str]:
    r = excinfo.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Message"]


def put(ia, channel: str, *bodies) -> list:
    """BatchPutMessage of JSON bodies (bytes as they are); the error entries."""
    messages = [{"messageId": str(i), "payload": b if isinstance(b, bytes) else json.dumps(b).encode()}
                for i, b in enumerate(bodies)]
    return ia.batch_put_message(channelName=channel, messages=messages)["batchPutMessageErrorEntries"]


def pipeline(name: str, channel: str, datastore: str, *middle: dict) -> list:
    """channel -> middle activities (each {kind: members without name/next}) -> datastore."""
    names = [f"a{i}" for i in range(len(middle))] + ["store"]
    acts = [{"channel": {"name": "source", "channelName": channel, "next": names[0]}}]
    for i, activity in enumerate(middle):
        (kind, members), = activity.items()
        acts.append({kind: {**members, "name": names[i], "next": names[i + 1]}})
    acts.append({"datastore": {"name": "store", "datastoreName": datastore}})
    return acts


def content_rows(ia, dataset: str, timeout: float = 30, must_succeed: bool = True) -> list[dict] | None:
    """Creates a content of `dataset`, waits for SUCCEEDED, downloads its CSV: the rows (None
    for a FAILED content when `must_succeed` is false)."""
    version = ia.create_dataset_content(datasetName=dataset)["versionId"]
    done = wait_until(lambda: (c := ia.get_dataset_content(datasetName=dataset, versionId=version))
                      ["status"]["state"] != "CREATING" and c, timeout, what="dataset content")
    if not must_succeed and done["status"]["state"] == "FAILED":
        return None
    assert done["status"]["state"] == "SUCCEEDED", done["status"]
    (entry,) = done["entries"]
    with urllib.request.urlopen(entry["dataURI"], timeout=10) as r:
        assert r.status == 200
        return list(csv.DictReader(io.StringIO(r.read().decode())))


def rows_eventually(ia, dataset: str, count: int, timeout: float = 30) -> list[dict]:
    """The dataset's rows once there are `count` of them (the pipeline runs in the background;
    until its first rows are written, the datastore has no columns and a query naming them
    fails)."""
    return wait_until(lambda: (rows := content_rows(ia, dataset, must_succeed=False)) and len(rows) >= count
                      and rows, timeout, interval=0.3, what=f"{count} rows in {dataset}")


def test_resources_round_trip_with_aws_shapes(ia, uid):
    n = ident(uid)
    created = ia.create_channel(channelName=n + "_c", retentionPeriod={"numberOfDays": 3},
                                tags=[{"key": "team", "value": "ops"}])
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert created["channelArn"] == f"arn:aws:iotanalytics:us-east-1:000000000000:channel/{n}_c"
    ch = ia.describe_channel(channelName=n + "_c", includeStatistics=True)
    assert ch["channel"]["status"] == "ACTIVE"
    assert ch["channel"]["retentionPeriod"] == {"numberOfDays": 3}
    assert ch["channel"]["storage"] == {"serviceManagedS3": {}}
    assert "estimatedSizeInBytes" in ch["statistics"]["size"]
    assert n + "_c" in [c["channelName"] for c in ia.list_channels()["channelSummaries"]]
    with pytest.raises(ClientError) as exc:
        ia.create_channel(channelName=n + "_c")
    assert error_of(exc)[:2] == ("ResourceAlreadyExistsException", 409)

    ds = ia.create_datastore(datastoreName=n + "_d", datastorePartitions={"partitions": [
        {"attributePartition": {"attributeName": "site"}}]})
    assert ds["ResponseMetadata"]["HTTPStatusCode"] == 201
    described = ia.describe_datastore(datastoreName=n + "_d")["datastore"]
    assert described["datastorePartitions"] == {"partitions": [{"attributePartition": {"attributeName": "site"}}]}
    assert "parquetConfiguration" in described["fileFormatConfiguration"]
    assert n + "_d" in [d["datastoreName"] for d in ia.list_datastores()["datastoreSummaries"]]

    acts = pipeline(n + "_p", n + "_c", n + "_d", {"addAttributes": {"attributes": {"a": "b"}}})
    assert ia.create_pipeline(pipelineName=n + "_p", pipelineActivities=acts)["pipelineArn"].endswith(f"pipeline/{n}_p")
    assert ia.describe_pipeline(pipelineName=n + "_p")["pipeline"]["activities"] == acts
    assert n + "_p" in [p["pipelineName"] for p in ia.list_pipelines()["pipelineSummaries"]]

    ia.create_dataset(datasetName=n + "_s", actions=[{"actionName": "q", "queryAction": {
        "sqlQuery": f"SELECT * FROM {n}_d"}}])
    got = ia.describe_dataset(datasetName=n + "_s")["dataset"]
    assert got["actions"][0]["queryAction"]["sqlQuery"] == f"SELECT * FROM {n}_d"
    assert n + "_s" in [d["datasetName"] for d in ia.list_datasets()["datasetSummaries"]]

    arn = created["channelArn"]
    assert ia.list_tags_for_resource(resourceArn=arn)["tags"] == [{"key": "team", "value": "ops"}]
    ia.tag_resource(resourceArn=arn, tags=[{"key": "env", "value": "test"}])
    ia.untag_resource(resourceArn=arn, tagKeys=["team"])
    assert ia.list_tags_for_resource(resourceArn=arn)["tags"] == [{"key": "env", "value": "test"}]

    ia.update_channel(channelName=n + "_c", retentionPeriod={"unlimited": True})
    assert ia.describe_channel(channelName=n + "_c")["channel"]["retentionPeriod"] == {"unlimited": True}

    for delete, kw in ((ia.delete_dataset, {"datasetName": n + "_s"}),
                       (ia.delete_pipeline, {"pipelineName": n + "_p"}),
                       (ia.delete_datastore, {"datastoreName": n + "_d"}),
                       (ia.delete_channel, {"channelName": n + "_c"})):
        assert delete(**kw)["ResponseMetadata"]["HTTPStatusCode"] == 204
        with pytest.raises(ClientError) as exc:
            delete(**kw)
        assert error_of(exc)[:2] == ("ResourceNotFoundException", 404)


@pytest.mark.parametrize("call,needle", [
    (lambda ia, n: ia.create_channel(channelName=n, channelStorage={"customerManagedS3": {
        "bucket": "my-bucket", "keyPrefix": "no-slash", "roleArn": ROLE}}), "keyPrefix"),
    (lambda ia, n: ia.create_datastore(datastoreName=n, fileFormatConfiguration={
        "jsonConfiguration": {}, "parquetConfiguration": {}}), "not both"),
    (lambda ia, n: ia.create_dataset(datasetName=n, actions=[{"actionName": "c", "containerAction": {
        "image": "i", "executionRoleArn": ROLE, "resourceConfiguration": {
            "computeType": "ACU_1", "volumeSizeInGB": 1}}}]), "containerAction"),
    (lambda ia, n: ia.create_dataset(datasetName=n, actions=[{"actionName": "q", "queryAction": {
        "sqlQuery": "SELECT 1"}}], triggers=[{"schedule": {"expression": "cron(0 12 ? * 6#3 *)"}}]),
     "not supported"),
    (lambda ia, n: ia.create_pipeline(pipelineName=n, pipelineActivities=pipeline(
        n, "nosuchchannel", "nosuchstore")), "channel nosuchchannel"),
    (lambda ia, n: ia.create_channel(channelName="bad-name"), "bad-name"),
])
def test_what_cannot_run_is_refused_at_create(ia, uid, call, needle):
    with pytest.raises(ClientError) as exc:
        call(ia, ident(uid))
    code, status, message = error_of(exc)
    assert code in ("InvalidRequestException", "ResourceNotFoundException"), message
    assert status in (400, 404)
    assert needle in message, message


def test_pipeline_activities_are_checked_at_create(ia, uid):
    n = ident(uid)
    ia.create_channel(channelName=n)
    ia.create_datastore(datastoreName=n)
    for bad, needle in (({"filter": {"filter": "temp >"}}, "not a valid expression"),
                        ({"math": {"attribute": "x", "math": "x +"}}, "activity a0")):
        with pytest.raises(ClientError) as exc:
            ia.create_pipeline(pipelineName=n, pipelineActivities=pipeline(n, n, n, bad))
        code, status, message = error_of(exc)
        assert (code, status) == ("InvalidRequestException", 400)
        assert needle in message, message
    broken_chain = pipeline(n, n, n)
    broken_chain[0]["channel"]["next"] = "nowhere"
    with pytest.raises(ClientError) as exc:
        ia.create_pipeline(pipelineName=n, pipelineActivities=broken_chain)
    assert "nowhere" in error_of(exc)[2]


def test_batch_put_reports_malformed_messages_and_samples(ia, uid):
    n = ident(uid)
    ia.create_channel(channelName=n)
    errors = put(ia, n, {"temp": 1}, b"not json", b"[1, 2]", {"bad-name": 1}, {"temp": 2})
    assert sorted(e["messageId"] for e in errors) == ["1", "2", "3"]
    assert all(e["errorCode"] == "InvalidRequestException" and e["errorMessage"] for e in errors)
    sample = ia.sample_channel_data(channelName=n, maxMessages=10)["payloads"]
    assert [json.loads(p) for p in sample] == [{"temp": 1}, {"temp": 2}]
    with pytest.raises(ClientError) as exc:
        put(ia, n + "_missing", {"temp": 1})
    assert error_of(exc)[:2] == ("ResourceNotFoundException", 404)


def test_run_pipeline_activity(ia):
    payloads = [json.dumps({"temp": t, "id": f"d{t}"}).encode() for t in (10, 30, 50)]
    out = ia.run_pipeline_activity(pipelineActivity={"filter": {"name": "f", "filter": "temp >= 30"}},
                                   payloads=payloads)["payloads"]
    assert [json.loads(p)["id"] for p in out] == ["d30", "d50"]
    out = ia.run_pipeline_activity(pipelineActivity={"math": {"name": "m", "attribute": "f",
                                                              "math": "temp * 1.8 + 32"}},
                                   payloads=payloads[:1])["payloads"]
    assert json.loads(out[0])["f"] == 50.0
    out = ia.run_pipeline_activity(pipelineActivity={"removeAttributes": {"name": "r", "attributes": ["id"]}},
                                   payloads=payloads[:1])["payloads"]
    assert json.loads(out[0]) == {"temp": 10}


def test_invalid_sql_fails_the_content_with_the_engine_reason(ia, uid):
    n = ident(uid)
    ia.create_dataset(datasetName=n, actions=[{"actionName": "q", "queryAction": {
        "sqlQuery": "SELECT nosuchcolumn FROM nosuchtable"}}])
    version = ia.create_dataset_content(datasetName=n)["versionId"]
    failed = wait_until(lambda: (c := ia.get_dataset_content(datasetName=n, versionId=version))
                        ["status"]["state"] != "CREATING" and c, 30, what="content")
    assert failed["status"]["state"] == "FAILED"
    assert "nosuchtable" in failed["status"]["reason"], failed["status"]
    assert failed["entries"] == []
    (summary,) = ia.list_dataset_contents(datasetName=n)["datasetContentSummaries"]
    assert summary["version"] == version and summary["status"]["state"] == "FAILED"


def enriching_pipeline_and_dataset(ia, n: str) -> str:
    """The whole-path tests' pipeline n, channel n -> filter (tempC >= 0) -> math (tempF) ->
    deviceRegistryEnrich (the thing named by deviceId) -> datastore n, and dataset n selecting
    deviceId, seq, tempF and the thing's site in seq order. Returns the dataset's SQL."""
    ia.create_pipeline(pipelineName=n, pipelineActivities=pipeline(
        n, n, n,
        {"filter": {"filter": "tempC >= 0"}},
        {"math": {"attribute": "tempF", "math": "tempC * 9 / 5 + 32"}},
        {"deviceRegistryEnrich": {"attribute": "device", "thingName": "deviceId", "roleArn": ROLE}}))
    sql = (f"SELECT deviceId, seq, tempF, json_extract_scalar(device, '$.attributes.site') AS site "
           f"FROM {n} ORDER BY seq")
    ia.create_dataset(datasetName=n, actions=[{"actionName": "q", "queryAction": {"sqlQuery": sql}}])
    return sql


def test_mqtt_telemetry_to_dataset_csv_and_duckdb(broker, ia, aws, clients, uid, tmp_path):
    """The whole path, and the open layout: the same Parquet files answer DuckDB and
    `fleetcore sql` the same way."""
    n = ident(uid)
    iot = aws("iot")
    for dev, site in (("d1", "north"), ("d2", "south")):
        iot.create_thing(thingName=f"{n}_{dev}", attributePayload={"attributes": {"site": site}})
    ia.create_channel(channelName=n)
    ia.create_datastore(datastoreName=n, datastorePartitions={"partitions": [
        {"attributePartition": {"attributeName": "deviceId"}}]})
    sql = enriching_pipeline_and_dataset(ia, n)
    create_rule(iot, rule_name(uid), f"SELECT *, topic(3) AS deviceId FROM 'ia/{uid}/+/telemetry'",
                [{"iotAnalytics": {"channelName": n, "roleArn": ROLE}}])
    dev = clients(V5)
    readings = [("d1", 1, 20), ("d2", 2, -5), ("d1", 3, 30), ("d2", 4, 10), ("d1", 5, 100)]
    for device, seq, temp in readings:
        dev.publish(f"ia/{uid}/{n}_{device}/telemetry", json.dumps({"seq": seq, "tempC": temp}), qos=1)
    expected = [{"deviceId": f"{n}_{d}", "seq": str(s), "tempF": str(t * 9 // 5 + 32),
                 "site": {"d1": "north", "d2": "south"}[d]} for d, s, t in readings if t >= 0]
    rows = rows_eventually(ia, n, len(expected))
    assert rows == expected

    folder = broker.data_dir / "analytics" / "datastores" / n
    parts = sorted(p.relative_to(folder).parent.as_posix() for p in folder.rglob("*.parquet"))
    assert parts and all(p.startswith("__dt=") and "/deviceId=" in p for p in parts), parts

    duckdb = pytest.importorskip("duckdb")
    con = duckdb.connect()
    got = con.execute(
        "SELECT deviceId, seq, tempF, json_extract_string(device, '$.attributes.site') AS site "
        f"FROM read_parquet('{folder}/**/*.parquet', hive_partitioning = true) ORDER BY seq").fetchall()
    assert [{"deviceId": d, "seq": str(s), "tempF": str(f), "site": site} for d, s, f, site in got] == expected

    out = subprocess.run([str(FLEETCORE_BIN), "sql", "--data-dir", str(broker.data_dir),
                          "--format", "csv", sql], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert list(csv.DictReader(io.StringIO(out.stdout))) == expected
    assert "query time" not in out.stderr, out.stderr
    # --timing adds the engine's time on standard error and leaves the rows as they are
    timed = subprocess.run([str(FLEETCORE_BIN), "sql", "--timing", "--data-dir", str(broker.data_dir),
                            "--format", "csv", sql], capture_output=True, text=True, timeout=120)
    assert timed.returncode == 0, timed.stderr
    assert timed.stdout == out.stdout
    assert re.search(r"^query time: [0-9]+\.[0-9]{3} ms$", timed.stderr, re.M), timed.stderr


def test_kill_during_ingest_loses_nothing(broker_factory, aws, uid):
    """Messages acknowledged by BatchPutMessage before a SIGKILL all reach the datastore once
    after the restart (the pipeline redoes its in-flight batch into the same files)."""
    b = broker_factory()
    ia = aws("iotanalytics", broker=b)
    n = ident(uid)
    ia.create_channel(channelName=n)
    ia.create_datastore(datastoreName=n)
    ia.create_pipeline(pipelineName=n, pipelineActivities=pipeline(
        n, n, n, {"math": {"attribute": "twice", "math": "seq * 2"}}))
    ia.create_dataset(datasetName=n, actions=[{"actionName": "q", "queryAction": {
        "sqlQuery": f"SELECT count(*) AS n, count(DISTINCT seq) AS distinct_seq, sum(twice) AS total FROM {n}"}}])
    sent = 0
    for batch in range(40):
        assert put(ia, n, *({"seq": batch * 50 + i} for i in range(50))) == []
        sent += 50
    b.kill()
    b.start()
    ia = aws("iotanalytics", broker=b)
    want = {"n": str(sent), "distinct_seq": str(sent), "total": str(sum(2 * s for s in range(sent)))}
    wait_until(lambda: content_rows(ia, n) == [want], 60, interval=0.5, what="every message once")
