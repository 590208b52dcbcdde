"""Firehose-compatible delivery streams (boto3 `firehose`) writing into the data lake: the
operations and their errors, the Hive-style default layout, prefix expressions and dynamic
partitioning with the error output, GZIP / Snappy / Parquet objects read back with standard
readers (gzip, pyarrow), a Kinesis-stream source, an S3 destination (moto) and its outage,
graceful restarts (no duplicates) and crashes (nothing lost)."""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import shutil
import signal
import time

import pytest

from brokers import wait_until

pytestmark = pytest.mark.fleetcore_only("Firehose is fleetcore's")

ROLE = "arn:aws:iam::000000000000:role/firehose"
OBJECT_NAME = re.compile(
    r"^(?P<stream>[A-Za-z0-9_.-]+)-1-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-[0-9a-f-]{36}(?P<ext>\.\w+)?$")
HIVE = re.compile(r"year=\d{4}/month=\d{2}/day=\d{2}/hour=\d{2}/")


# ---------------------------------------------------------------------------------------------
# helpers

def s3_destination(bucket: str, **extra) -> dict:
    d = {"RoleARN": ROLE, "BucketARN": f"arn:aws:s3:::{bucket}",
         "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 1}}
    d.update(extra)
    return d


def lake_files(b, bucket: str) -> dict[str, bytes]:
    """Every complete object of `bucket` in the local lake: {key: bytes}. object_store stages a
    write as `<key>#<n>` and renames it; staged files are not objects yet."""
    root = b.data_dir / "lake" / bucket
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "#" not in p.name}


def lines_of(key: str, body: bytes) -> list[bytes]:
    if key.endswith(".gz"):
        body = gzip.decompress(body)
    return [line for line in body.split(b"\n") if line]


def records_in(b, bucket: str, under: str = "") -> list[bytes]:
    return [line for key, body in lake_files(b, bucket).items() if key.startswith(under)
            for line in lines_of(key, body)]


def put_batches(fh, name: str, payloads: list[bytes], size: int = 100) -> None:
    for i in range(0, len(payloads), size):
        out = fh.put_record_batch(DeliveryStreamName=name,
                                  Records=[{"Data": p} for p in payloads[i:i + size]])
        assert out["FailedPutCount"] == 0, out


@pytest.fixture
def firehose_broker(broker_factory):
    """A server of the test's own (its lake is a folder in its data dir)."""
    return broker_factory()


@pytest.fixture(params=["embedded", "jetstream"])
def stream_backend_broker(request, broker_factory, nats_server):
    """A server of the test's own on each stream backend: the delivery streams read their source
    (and DirectPut's own stream) through whichever backend the server is configured with."""
    if request.param == "embedded":
        return broker_factory()
    nats = nats_server()
    return broker_factory(env={"FLEETCORE_STREAM_BACKEND": "jetstream",
                               "FLEETCORE_STREAM_SERVERS": nats.url})


# ---------------------------------------------------------------------------------------------
# operations

def test_operations_and_gzip_objects_in_the_hive_layout(firehose_broker, aws, uid):
    b = firehose_broker
    fh = aws("firehose", broker=b)
    name = f"ops-{uid}"[:64]
    arn = fh.create_delivery_stream(
        DeliveryStreamName=name, DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration=s3_destination("lake-ops", Prefix="raw/",
                                                          CompressionFormat="GZIP"),
    )["DeliveryStreamARN"]
    assert arn == f"arn:aws:firehose:us-east-1:000000000000:deliverystream/{name}"

    desc = fh.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    assert desc["DeliveryStreamStatus"] == "ACTIVE"
    assert desc["DeliveryStreamType"] == "DirectPut"
    assert desc["VersionId"] == "1"
    dest = desc["Destinations"][0]
    assert dest["DestinationId"] == "destinationId-000000000001"
    ext = dest["ExtendedS3DestinationDescription"]
    assert ext["BucketARN"] == "arn:aws:s3:::lake-ops"
    assert ext["CompressionFormat"] == "GZIP"
    assert ext["BufferingHints"] == {"SizeInMBs": 1, "IntervalInSeconds": 1}

    with pytest.raises(fh.exceptions.ResourceInUseException):
        fh.create_delivery_stream(DeliveryStreamName=name,
                                  ExtendedS3DestinationConfiguration=s3_destination("lake-ops"))
    fh.create_delivery_stream(DeliveryStreamName=name + "-2",
                              ExtendedS3DestinationConfiguration=s3_destination("lake-ops2"))
    page = fh.list_delivery_streams(Limit=1)
    assert page["DeliveryStreamNames"] == [name] and page["HasMoreDeliveryStreams"] is True
    page = fh.list_delivery_streams(ExclusiveStartDeliveryStreamName=name)
    assert page["DeliveryStreamNames"] == [name + "-2"] and page["HasMoreDeliveryStreams"] is False
    assert fh.list_delivery_streams(DeliveryStreamType="KinesisStreamAsSource")[
        "DeliveryStreamNames"] == []

    one = fh.put_record(DeliveryStreamName=name, Record={"Data": b'{"n": 0}'})
    assert one["RecordId"]
    batch = fh.put_record_batch(DeliveryStreamName=name,
                                Records=[{"Data": json.dumps({"n": i}).encode()} for i in range(1, 50)])
    assert batch["FailedPutCount"] == 0
    assert len(batch["RequestResponses"]) == 49
    assert all(r.get("RecordId") for r in batch["RequestResponses"])

    wait_until(lambda: len(records_in(b, "lake-ops")) >= 50, 20, what="50 records in the lake")
    files = lake_files(b, "lake-ops")
    for key in files:
        assert key.startswith("raw/"), key
        assert HIVE.match(key[len("raw/"):]), key
        m = OBJECT_NAME.match(key.rsplit("/", 1)[1])
        assert m and m["stream"] == name and m["ext"] == ".gz", key
    got = sorted(json.loads(line)["n"] for line in records_in(b, "lake-ops"))
    assert got == list(range(50))

    delivered = f'fleetcore_archive_delivered_records_total{{delivery_stream="{name}"}}'
    wait_until(lambda: b.metrics().get(delivered) == 50, 10, what="the delivery metrics")
    metrics = b.metrics()
    assert metrics[f'fleetcore_archive_incoming_records_total{{delivery_stream="{name}"}}'] == 50
    assert metrics[f'fleetcore_archive_objects_total{{delivery_stream="{name}",outcome="success"}}'] >= 1

    fh.delete_delivery_stream(DeliveryStreamName=name)
    with pytest.raises(fh.exceptions.ResourceNotFoundException):
        fh.describe_delivery_stream(DeliveryStreamName=name)
    with pytest.raises(fh.exceptions.ResourceNotFoundException):
        fh.put_record(DeliveryStreamName=name, Record={"Data": b"x"})
    with pytest.raises(fh.exceptions.ResourceNotFoundException):
        fh.delete_delivery_stream(DeliveryStreamName=name)
    assert fh.list_delivery_streams()["DeliveryStreamNames"] == [name + "-2"]


@pytest.mark.parametrize("destination, why", [
    (s3_destination("Bad_Bucket"), "BucketARN"),
    (s3_destination("bkt", Prefix="t/!{timestamp:yyyy}/"), "ErrorOutputPrefix"),
    (s3_destination("bkt", Prefix="!{nope:x}/", ErrorOutputPrefix="e/"), "unknown expression"),
    (s3_destination("bkt", Prefix="d=!{partitionKeyFromQuery:k}/", ErrorOutputPrefix="e/"),
     "DynamicPartitioning"),
    (s3_destination("bkt", CompressionFormat="HADOOP_SNAPPY"), "CompressionFormat"),
    (s3_destination("bkt", BufferingHints={"SizeInMBs": 129}), "SizeInMBs"),
])
def test_bad_configurations_are_invalid_arguments(firehose_broker, aws, uid, destination, why):
    fh = aws("firehose", broker=firehose_broker)
    with pytest.raises(fh.exceptions.InvalidArgumentException) as e:
        fh.create_delivery_stream(DeliveryStreamName=f"bad-{uid}"[:64],
                                  ExtendedS3DestinationConfiguration=destination)
    assert why in e.value.response["Error"]["Message"]
    assert fh.list_delivery_streams()["DeliveryStreamNames"] == []


def test_put_errors(firehose_broker, aws, uid):
    fh = aws("firehose", broker=firehose_broker)
    name = f"pe-{uid}"[:64]
    fh.create_delivery_stream(DeliveryStreamName=name,
                              ExtendedS3DestinationConfiguration=s3_destination("lake-pe"))
    with pytest.raises(fh.exceptions.InvalidArgumentException):
        fh.put_record_batch(DeliveryStreamName=name, Records=[{"Data": b"x"}] * 501)
    with pytest.raises(fh.exceptions.InvalidArgumentException):
        fh.put_record(DeliveryStreamName=name, Record={"Data": b"x" * (1000 * 1024 + 1)})
    with pytest.raises(fh.exceptions.ResourceNotFoundException):
        fh.put_record_batch(DeliveryStreamName="missing", Records=[{"Data": b"x"}])


def test_the_direct_put_buffer_is_not_a_kinesis_stream(firehose_broker, aws, uid):
    """A DirectPut delivery stream buffers in a stream of fleetcore's own: Kinesis neither lists
    it nor serves it, and no user stream can take such a name."""
    fh = aws("firehose", broker=firehose_broker)
    kinesis = aws("kinesis", broker=firehose_broker)
    name = f"hidden-{uid}"[:64]
    fh.create_delivery_stream(DeliveryStreamName=name,
                              ExtendedS3DestinationConfiguration=s3_destination("lake-hidden"))
    fh.put_record(DeliveryStreamName=name, Record={"Data": b"x\n"})
    listed = kinesis.list_streams(Limit=10000)["StreamNames"]
    assert not [n for n in listed if n.startswith("__")], listed
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException):
        kinesis.describe_stream_summary(StreamName=f"__firehose.{name}")
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException):
        kinesis.delete_stream(StreamName=f"__firehose.{name}")
    with pytest.raises(kinesis.exceptions.InvalidArgumentException):
        kinesis.create_stream(StreamName=f"__mine-{uid}"[:128], ShardCount=1)


# ---------------------------------------------------------------------------------------------
# prefixes, partitioning, formats

def test_dynamic_partitioning_with_the_error_output(firehose_broker, aws, uid):
    b = firehose_broker
    fh = aws("firehose", broker=b)
    name = f"dp-{uid}"[:64]
    fh.create_delivery_stream(
        DeliveryStreamName=name,
        ExtendedS3DestinationConfiguration=s3_destination(
            "lake-dp",
            Prefix="telemetry/device=!{partitionKeyFromQuery:device}/year=!{timestamp:yyyy}/!{firehose:random-string}/",
            ErrorOutputPrefix="errors/!{firehose:error-output-type}/!{timestamp:yyyy}/",
            DynamicPartitioningConfiguration={"Enabled": True},
            ProcessingConfiguration={"Enabled": True, "Processors": [{
                "Type": "MetadataExtraction",
                "Parameters": [
                    {"ParameterName": "MetadataExtractionQuery", "ParameterValue": "{device: .device.id}"},
                    {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"}]}]},
        ))
    good = [{"device": {"id": d}, "n": i} for i, d in enumerate(["a", "b", "a", "c", "b", "a"])]
    bad = [b'{"device": {}}', b"not json at all"]
    put_batches(fh, name, [json.dumps(r).encode() for r in good] + bad)

    wait_until(lambda: len(records_in(b, "lake-dp")) >= len(good) + len(bad), 20,
               what="every record, good or bad, in the lake")
    year = time.strftime("%Y", time.gmtime())
    files = lake_files(b, "lake-dp")
    by_device: dict[str, list[int]] = {}
    for key, body in files.items():
        if key.startswith("errors/"):
            continue
        m = re.match(rf"^telemetry/device=(\w+)/year={year}/([a-z0-9]{{11}})/(.+)$", key)
        assert m, key
        assert OBJECT_NAME.match(m[3]), key
        for line in lines_of(key, body):
            record = json.loads(line)
            assert record["device"]["id"] == m[1]
            by_device.setdefault(m[1], []).append(record["n"])
    assert {k: sorted(v) for k, v in by_device.items()} == {"a": [0, 2, 5], "b": [1, 4], "c": [3]}

    errors = [json.loads(line) for key, body in files.items()
              if key.startswith(f"errors/partitioning-failed/{year}/") for line in lines_of(key, body)]
    assert sorted(base64.b64decode(e["rawData"]) for e in errors) == sorted(bad)
    for e in errors:
        assert e["errorCode"] == "DynamicPartitioning.MetadataExtractionFailed"
        assert e["errorMessage"] and e["attemptsMade"] >= 1 and e["arrivalTimestamp"] > 0


def test_parquet_conversion_read_by_pyarrow(firehose_broker, aws, uid):
    pq = pytest.importorskip("pyarrow.parquet")
    b = firehose_broker
    fh = aws("firehose", broker=b)
    conversion = {
        "Enabled": True,
        "SchemaConfiguration": {"DatabaseName": "lake", "TableName": "telemetry", "RoleARN": ROLE},
        "InputFormatConfiguration": {"Deserializer": {"OpenXJsonSerDe": {}}},
        "OutputFormatConfiguration": {"Serializer": {"ParquetSerDe": {"Compression": "SNAPPY"}}},
    }
    typed = f"pq-{uid}"[:60]
    fh.create_delivery_stream(
        DeliveryStreamName=typed,
        ExtendedS3DestinationConfiguration=s3_destination("lake-pq", Prefix="typed/",
                                                          DataFormatConversionConfiguration=conversion),
        Tags=[{"Key": "fleetcore:parquet-schema", "Value": "device:string temp:double seq:bigint ok:boolean"}])
    inferred = typed + "-i"
    fh.create_delivery_stream(
        DeliveryStreamName=inferred,
        ExtendedS3DestinationConfiguration=s3_destination("lake-pq", Prefix="inferred/",
                                                          DataFormatConversionConfiguration=conversion))
    rows = [{"device": f"d{i % 3}", "temp": 20 + i / 4, "seq": i, "ok": i % 2 == 0} for i in range(40)]
    payloads = [json.dumps(r).encode() for r in rows]
    put_batches(fh, typed, payloads + [b'{"device": "x", "temp": "hot"}'])
    put_batches(fh, inferred, payloads)

    def parquet_rows(under):
        out = []
        for key in lake_files(b, "lake-pq"):
            if key.startswith(under) and key.endswith(".parquet"):
                out.extend(pq.read_table(b.data_dir / "lake" / "lake-pq" / key).to_pylist())
        return out

    wait_until(lambda: len(parquet_rows("typed/")) >= 40 and len(parquet_rows("inferred/")) >= 40,
               20, what="Parquet objects")
    table = pq.read_table(next(b.data_dir.joinpath("lake", "lake-pq", "typed").rglob("*.parquet")))
    assert [str(t) for t in table.schema.types] == ["string", "double", "int64", "bool"]
    assert sorted(parquet_rows("typed/"), key=lambda r: r["seq"]) == rows
    assert sorted(parquet_rows("inferred/"), key=lambda r: r["seq"]) == rows
    errors = [json.loads(line) for line in records_in(b, "lake-pq", "format-conversion-failed/")]
    assert [base64.b64decode(e["rawData"]) for e in errors] == [b'{"device": "x", "temp": "hot"}']


def test_snappy_objects_and_size_flush(firehose_broker, aws, uid):
    cramjam = pytest.importorskip("cramjam")  # its snappy.decompress reads the framing format
    b = firehose_broker
    fh = aws("firehose", broker=b)
    name = f"sn-{uid}"[:64]
    fh.create_delivery_stream(
        DeliveryStreamName=name,
        ExtendedS3DestinationConfiguration=s3_destination(
            "lake-sn", CompressionFormat="Snappy",
            BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 900}))
    payload = b"x" * 1000
    put_batches(fh, name, [payload] * 1100, size=500)  # ~1.1 MB: past SizeInMBs, long before 900 s
    wait_until(lambda: lake_files(b, "lake-sn"), 20, what="a size-triggered object")
    key, body = next(iter(lake_files(b, "lake-sn").items()))
    assert key.endswith(".snappy")
    text = bytes(cramjam.snappy.decompress(body))
    lines = [line for line in text.split(b"\n") if line]
    assert len(lines) >= 1000 and all(line == payload for line in lines)


# ---------------------------------------------------------------------------------------------
# a Kinesis-stream source

def test_kinesis_stream_as_source(firehose_broker, aws, uid):
    """A KinesisStreamAsSource delivery stream reads a fleetcore stream through its consumer group.
    The source here is a DirectPut delivery stream's own stream (`__firehose.<name>`), so the test
    does not depend on the Kinesis API: both delivery streams deliver every record."""
    b = firehose_broker
    fh = aws("firehose", broker=b)
    front = f"src-{uid}"[:60]
    fh.create_delivery_stream(DeliveryStreamName=front,
                              ExtendedS3DestinationConfiguration=s3_destination("lake-front"))
    stream_arn = f"arn:aws:kinesis:us-east-1:000000000000:stream/__firehose.{front}"
    tail = front + "-k"
    fh.create_delivery_stream(
        DeliveryStreamName=tail, DeliveryStreamType="KinesisStreamAsSource",
        KinesisStreamSourceConfiguration={"KinesisStreamARN": stream_arn, "RoleARN": ROLE},
        ExtendedS3DestinationConfiguration=s3_destination("lake-tail", CompressionFormat="GZIP"))
    desc = fh.describe_delivery_stream(DeliveryStreamName=tail)["DeliveryStreamDescription"]
    assert desc["DeliveryStreamType"] == "KinesisStreamAsSource"
    assert desc["Source"]["KinesisStreamSourceDescription"]["KinesisStreamARN"] == stream_arn
    with pytest.raises(fh.exceptions.InvalidArgumentException):
        fh.put_record(DeliveryStreamName=tail, Record={"Data": b"x"})
    with pytest.raises(fh.exceptions.InvalidArgumentException):
        fh.create_delivery_stream(
            DeliveryStreamName=tail + "2", DeliveryStreamType="KinesisStreamAsSource",
            KinesisStreamSourceConfiguration={
                "KinesisStreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/none", "RoleARN": ROLE},
            ExtendedS3DestinationConfiguration=s3_destination("lake-tail"))

    payloads = [json.dumps({"i": i}).encode() for i in range(120)]
    put_batches(fh, front, payloads)
    wait_until(lambda: len(records_in(b, "lake-tail")) >= 120, 30, what="the Kinesis-sourced copy")
    assert sorted(records_in(b, "lake-tail")) == sorted(payloads)
    assert sorted(records_in(b, "lake-front")) == sorted(payloads)


def test_kinesis_api_stream_as_source(stream_backend_broker, aws, uid):
    """A stream made with the Kinesis API, two shards, read by a KinesisStreamAsSource delivery
    stream from its creation on: records put before it are not delivered, every one after is."""
    b = stream_backend_broker
    kinesis, fh = aws("kinesis", broker=b), aws("firehose", broker=b)
    stream = f"ks-{uid}"[:60]
    kinesis.create_stream(StreamName=stream, ShardCount=2)
    wait_until(lambda: kinesis.describe_stream_summary(StreamName=stream)[
        "StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE", 20, what="the stream ACTIVE")
    stream_arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    kinesis.put_record(StreamName=stream, Data=b'{"early": true}', PartitionKey="p")
    time.sleep(0.01)  # the delivery stream reads from its creation time on (millisecond clock)
    fh.create_delivery_stream(
        DeliveryStreamName=stream, DeliveryStreamType="KinesisStreamAsSource",
        KinesisStreamSourceConfiguration={"KinesisStreamARN": stream_arn, "RoleARN": ROLE},
        ExtendedS3DestinationConfiguration=s3_destination("lake-ks", CompressionFormat="GZIP"))
    payloads = [json.dumps({"i": i}).encode() for i in range(200)]
    for i in range(0, 200, 50):
        out = kinesis.put_records(StreamName=stream, Records=[
            {"Data": p, "PartitionKey": f"device-{j}"} for j, p in enumerate(payloads[i:i + 50])])
        assert out["FailedRecordCount"] == 0
    wait_until(lambda: len(records_in(b, "lake-ks")) >= 200, 30, what="the stream's records in the lake")
    assert sorted(records_in(b, "lake-ks")) == sorted(payloads)


# ---------------------------------------------------------------------------------------------
# restarts and crashes

def test_graceful_restart_flushes_once_and_keeps_the_configuration(stream_backend_broker, aws, uid):
    b = stream_backend_broker
    fh = aws("firehose", broker=b)
    name = f"gr-{uid}"[:64]
    fh.create_delivery_stream(
        DeliveryStreamName=name,
        ExtendedS3DestinationConfiguration=s3_destination(
            "lake-gr", CompressionFormat="GZIP",
            BufferingHints={"SizeInMBs": 128, "IntervalInSeconds": 900}))
    payloads = [json.dumps({"i": i}).encode() for i in range(300)]
    put_batches(fh, name, payloads)
    assert lake_files(b, "lake-gr") == {}  # buffered: 900 s and 128 MB are far away

    b.restart()  # SIGTERM must flush the buffer
    assert sorted(records_in(b, "lake-gr")) == sorted(payloads)

    fh = aws("firehose", broker=b)
    desc = fh.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    assert desc["Destinations"][0]["ExtendedS3DestinationDescription"]["BufferingHints"][
        "IntervalInSeconds"] == 900
    more = [json.dumps({"i": i}).encode() for i in range(300, 310)]
    put_batches(fh, name, more)
    b.restart()
    # Every record exactly once: nothing was delivered again after the clean restarts.
    assert sorted(records_in(b, "lake-gr")) == sorted(payloads + more)


def test_crash_loses_no_acknowledged_record(stream_backend_broker, aws, uid):
    b = stream_backend_broker
    fh = aws("firehose", broker=b)
    name = f"cr-{uid}"[:64]
    fh.create_delivery_stream(
        DeliveryStreamName=name,
        ExtendedS3DestinationConfiguration=s3_destination(
            "lake-cr", BufferingHints={"SizeInMBs": 1, "IntervalInSeconds": 1}))
    acknowledged = []
    for round_ in range(20):
        chunk = [json.dumps({"r": round_, "i": i}).encode() for i in range(50)]
        put_batches(fh, name, chunk)
        acknowledged += chunk
        if round_ == 10:
            wait_until(lambda: records_in(b, "lake-cr"), 20, what="a first delivery")
    b.stop(signal.SIGKILL)
    b.start()
    wait_until(lambda: set(records_in(b, "lake-cr")) >= set(acknowledged), 30,
               what="every acknowledged record after the crash")
    delivered = records_in(b, "lake-cr")
    counts = {r: delivered.count(r) for r in set(delivered)}
    assert set(counts) == set(acknowledged)
    assert max(counts.values()) <= 2  # at most twice after a crash


# ---------------------------------------------------------------------------------------------
# an S3 destination: moto in server mode (the `moto` fixture is in conftest.py)

def _s3_records(s3, bucket: str) -> list[bytes]:
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            out += lines_of(obj["Key"], body)
    return out


def test_s3_destination_survives_an_outage(broker_factory, aws, moto, uid):
    b = broker_factory(env={**moto.lake_env, "FLEETCORE_LAKE_BACKLOG_LIMIT_MB": "1"})
    s3 = moto.s3()
    s3.create_bucket(Bucket="lake-s3")
    fh = aws("firehose", broker=b)
    name = f"s3-{uid}"[:64]
    fh.create_delivery_stream(
        DeliveryStreamName=name,
        ExtendedS3DestinationConfiguration=s3_destination("lake-s3", Prefix="raw/", CompressionFormat="GZIP"))
    first = [json.dumps({"phase": "before", "i": i}).encode() for i in range(30)]
    put_batches(fh, name, first)
    wait_until(lambda: sorted(_s3_records(s3, "lake-s3")) == sorted(first), 30,
               what="the records in S3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="lake-s3")["Contents"]]
    assert all(k.startswith("raw/") and HIVE.match(k[4:]) and k.endswith(".gz") for k in keys), keys

    moto.stop()
    # While S3 is down, records are accepted until the undelivered backlog passes its limit
    # (1 MiB here); then PutRecordBatch answers ServiceUnavailableException (back-pressure).
    accepted = []
    chunk_no = 0
    with pytest.raises(fh.exceptions.ServiceUnavailableException):
        while chunk_no < 100:
            chunk = [json.dumps({"phase": "outage", "c": chunk_no, "i": i, "pad": "p" * 1000}).encode()
                     for i in range(50)]
            fh.put_record_batch(DeliveryStreamName=name, Records=[{"Data": p} for p in chunk])
            accepted += chunk
            chunk_no += 1
            time.sleep(0.05)
    assert accepted, "at least one batch is accepted before the backlog is full"
    assert b.metrics().get("fleetcore_archive_objects_total{delivery_stream=\"%s\",outcome=\"failure\"}" % name, 0) >= 1

    moto.start()  # a new, empty moto: the bucket comes back, the old objects do not
    s3 = moto.s3()
    s3.create_bucket(Bucket="lake-s3")
    wait_until(lambda: set(_s3_records(s3, "lake-s3")) >= set(accepted), 60,
               what="every record accepted during the outage")
    after = [b'{"phase": "after"}']
    put_batches(fh, name, after)
    wait_until(lambda: after[0] in _s3_records(s3, "lake-s3"), 30, what="delivery after the outage")
