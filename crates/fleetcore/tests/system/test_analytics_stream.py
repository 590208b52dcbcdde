"""IoT Analytics channels fed from a Kinesis-API stream (the reference's diagram 4: stream ->
channel). IoT Analytics has no stream source in its API, so a channel takes one from its tag
`fleetcore:sourceStreamArn` (CreateChannel's tags or TagResource, which boto3 and Terraform
send unchanged). Whole system: MQTT telemetry -> rule `kinesis` -> stream -> channel -> pipeline
(filter, math, deviceRegistryEnrich) -> Parquet datastore -> dataset SQL -> the CSV equal to the
expected rows, and DuckDB over the same Parquet files agreeing; a tag naming a missing stream
refused at create; a SIGKILL while the channel reads the stream loses nothing and duplicates
nothing (each record once in the datastore)."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from clients import V5
from test_analytics import (ROLE, content_rows, enriching_pipeline_and_dataset, error_of, ident,
                            pipeline, rows_eventually)
from test_rules_engine import create_rule, rule_name
from brokers import wait_until

pytestmark = pytest.mark.fleetcore_only("IoT Analytics is fleetcore's")

SOURCE_TAG = "fleetcore:sourceStreamArn"


def stream_arn(name: str) -> str:
    return f"arn:aws:kinesis:us-east-1:000000000000:stream/{name}"


def test_mqtt_telemetry_through_a_stream_to_dataset_csv_and_duckdb(broker, aws, clients, uid):
    n = ident(uid)
    iot, kinesis, ia = aws("iot"), aws("kinesis"), aws("iotanalytics")
    for dev, site in (("d1", "north"), ("d2", "south")):
        iot.create_thing(thingName=f"{n}_{dev}", attributePayload={"attributes": {"site": site}})
    kinesis.create_stream(StreamName=n, ShardCount=2)
    ia.create_channel(channelName=n, tags=[{"key": SOURCE_TAG, "value": stream_arn(n)}])
    assert {"key": SOURCE_TAG, "value": stream_arn(n)} in ia.list_tags_for_resource(
        resourceArn=f"arn:aws:iotanalytics:us-east-1:000000000000:channel/{n}")["tags"]
    ia.create_datastore(datastoreName=n)
    enriching_pipeline_and_dataset(ia, n)
    create_rule(iot, rule_name(uid), f"SELECT *, topic(3) AS deviceId FROM 'ias/{uid}/+/telemetry'",
                [{"kinesis": {"roleArn": ROLE, "streamName": n, "partitionKey": "${topic(3)}"}}])
    dev = clients(V5)
    readings = [("d1", 1, 20), ("d2", 2, -5), ("d1", 3, 30), ("d2", 4, 10), ("d1", 5, 100), ("d2", 6, 0)]
    for device, seq, temp in readings:
        dev.publish(f"ias/{uid}/{n}_{device}/telemetry", json.dumps({"seq": seq, "tempC": temp}), qos=1)
    expected = [{"deviceId": f"{n}_{d}", "seq": str(s), "tempF": str(t * 9 // 5 + 32),
                 "site": {"d1": "north", "d2": "south"}[d]} for d, s, t in readings if t >= 0]
    assert rows_eventually(ia, n, len(expected)) == expected

    duckdb = pytest.importorskip("duckdb")
    folder = broker.data_dir / "analytics" / "datastores" / n
    got = duckdb.connect().execute(
        "SELECT deviceId, seq, tempF, json_extract_string(device, '$.attributes.site') AS site "
        f"FROM read_parquet('{folder}/**/*.parquet', hive_partitioning = true) ORDER BY seq").fetchall()
    assert [{"deviceId": d, "seq": str(s), "tempF": str(f), "site": site} for d, s, f, site in got] == expected


def test_a_source_tag_naming_no_stream_is_refused_at_create(aws, uid):
    n = ident(uid)
    ia = aws("iotanalytics")
    for value, needle in ((stream_arn(n + "_missing"), "does not exist"),
                          ("arn:aws:sqs:us-east-1:000000000000:q", "must name a Kinesis stream")):
        with pytest.raises(ClientError) as e:
            ia.create_channel(channelName=n, tags=[{"key": SOURCE_TAG, "value": value}])
        code, status, message = error_of(e)
        assert (code, status) == ("InvalidRequestException", 400) and needle in message, message
        with pytest.raises(ClientError) as e:
            ia.describe_channel(channelName=n)
        assert error_of(e)[0] == "ResourceNotFoundException"
    ia.create_channel(channelName=n)
    arn = f"arn:aws:iotanalytics:us-east-1:000000000000:channel/{n}"
    with pytest.raises(ClientError) as e:
        ia.tag_resource(resourceArn=arn, tags=[{"key": SOURCE_TAG, "value": n + "_missing"}])
    assert error_of(e)[:2] == ("InvalidRequestException", 400)
    assert ia.list_tags_for_resource(resourceArn=arn)["tags"] == []


def test_kill_while_the_channel_reads_the_stream_loses_and_duplicates_nothing(broker_factory, aws, uid):
    b = broker_factory()
    kinesis, ia = aws("kinesis", broker=b), aws("iotanalytics", broker=b)
    n = ident(uid)
    kinesis.create_stream(StreamName=n, ShardCount=2)
    ia.create_channel(channelName=n)
    ia.tag_resource(resourceArn=f"arn:aws:iotanalytics:us-east-1:000000000000:channel/{n}",
                    tags=[{"key": SOURCE_TAG, "value": n}])
    ia.create_datastore(datastoreName=n)
    ia.create_pipeline(pipelineName=n, pipelineActivities=pipeline(
        n, n, n, {"math": {"attribute": "twice", "math": "seq * 2"}}))
    ia.create_dataset(datasetName=n, actions=[{"actionName": "q", "queryAction": {
        "sqlQuery": f"SELECT count(*) AS n, count(DISTINCT seq) AS distinct_seq, sum(twice) AS total FROM {n}"}}])
    sent = 0
    for batch in range(8):
        records = [{"Data": json.dumps({"seq": batch * 500 + i}).encode(), "PartitionKey": str(i)}
                   for i in range(500)]
        assert kinesis.put_records(StreamName=n, Records=records)["FailedRecordCount"] == 0
        sent += 500
    b.kill()
    b.start()
    ia = aws("iotanalytics", broker=b)
    want = {"n": str(sent), "distinct_seq": str(sent), "total": str(sum(2 * s for s in range(sent)))}
    wait_until(lambda: content_rows(ia, n, must_succeed=False) == [want], 60, interval=0.5,
               what="every record once")
