"""IoT Analytics channels and datastores in a customer-managed bucket (`customerManagedS3`) of an
S3 lake (moto in server mode). A channel: BatchPutMessage -> its raw messages as objects under
`<keyPrefix><channel>/` -> pipeline -> dataset CSV equal to the expected rows; SampleChannelData
and StartPipelineReprocessing read the bucket back; Describe/List show the storage as AWS does,
it cannot change afterwards, and DeleteChannel leaves the objects. A datastore: BatchPutMessage -> pipeline (filter, math) -> Hive-partitioned Parquet
objects in the bucket -> dataset SQL -> the CSV equal to the expected rows; the objects read
with boto3 + pyarrow hold exactly those rows under `<keyPrefix><datastore>/__dt=/<attr>=/`;
`fleetcore sql` reads them from the bucket; Describe/List show the storage as AWS does; the
retention period leaves the customer's bucket alone (AWS ignores it there); a bucket that does not exist
is refused at create, and the storage cannot change afterwards."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import time

import pytest
from botocore.exceptions import ClientError

from brokers import FLEETCORE_BIN, wait_until
from test_analytics import ROLE, error_of, ident, pipeline, put, rows_eventually

pytestmark = pytest.mark.fleetcore_only("IoT Analytics is fleetcore's")

BUCKET = "customer-lake"
OLD_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z


def bucket_rows(s3, prefix: str) -> list[dict]:
    """Every row of the Parquet objects under `prefix`, with the partition values of its key."""
    import pyarrow.parquet as pq
    rows = []
    for obj in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []):
        key = obj["Key"]
        assert key.endswith(".parquet"), key
        partitions = dict(part.split("=", 1) for part in key[len(prefix):].split("/")[:-1])
        table = pq.read_table(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()))
        rows += [{**row, **partitions} for row in table.to_pylist()]
    return sorted(rows, key=lambda r: r["seq"])


def test_datastore_in_a_customer_bucket(broker_factory, aws, moto, uid):
    b = broker_factory(env=moto.lake_env)
    ia = aws("iotanalytics", broker=b)
    s3 = moto.s3()
    s3.create_bucket(Bucket=BUCKET)
    n = ident(uid)
    storage = {"customerManagedS3": {"bucket": BUCKET, "keyPrefix": "iot/", "roleArn": ROLE}}

    # A bucket that does not exist is refused at create, and nothing is left behind.
    with pytest.raises(ClientError) as exc:
        ia.create_datastore(datastoreName=n + "_x", datastoreStorage={
            "customerManagedS3": {"bucket": "no-such-bucket", "roleArn": ROLE}})
    code, status, message = error_of(exc)
    assert (code, status) == ("InvalidRequestException", 400), message
    assert "no-such-bucket" in message and "cannot be used" in message, message
    with pytest.raises(ClientError) as exc:
        ia.describe_datastore(datastoreName=n + "_x")
    assert error_of(exc)[:2] == ("ResourceNotFoundException", 404)

    ia.create_channel(channelName=n)
    ia.create_datastore(datastoreName=n, datastoreStorage=storage, datastorePartitions={
        "partitions": [{"attributePartition": {"attributeName": "site"}}]})
    assert ia.describe_datastore(datastoreName=n)["datastore"]["storage"] == storage
    (summary,) = [d for d in ia.list_datastores()["datastoreSummaries"] if d["datastoreName"] == n]
    assert summary["datastoreStorage"] == storage
    with pytest.raises(ClientError) as exc:
        ia.update_datastore(datastoreName=n, datastoreStorage={"serviceManagedS3": {}})
    assert error_of(exc)[:2] == ("InvalidRequestException", 400)

    ia.create_pipeline(pipelineName=n, pipelineActivities=pipeline(
        n, n, n, {"filter": {"filter": "temp > 0"}}, {"math": {"attribute": "twice", "math": "temp * 2"}}))
    sql = f"SELECT site, seq, temp, twice FROM {n} ORDER BY seq"
    ia.create_dataset(datasetName=n, actions=[{"actionName": "q", "queryAction": {"sqlQuery": sql}}])
    messages = [{"seq": i, "site": "ab"[i % 2], "temp": i - 3} for i in range(12)]
    assert put(ia, n, *messages) == []
    kept = [m for m in messages if m["temp"] > 0]
    expected = [{"site": m["site"], "seq": str(m["seq"]), "temp": str(m["temp"]),
                 "twice": str(m["temp"] * 2)} for m in kept]
    assert rows_eventually(ia, n, len(expected)) == expected

    # The objects: Hive-partitioned Parquet under the key prefix, holding exactly those rows.
    prefix = f"iot/{n}/"
    today = time.strftime("%Y-%m-%d", time.gmtime())
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]]
    assert keys and all(re.fullmatch(rf"{prefix}__dt={today}/site=[ab]/[^/]+\.parquet", k) for k in keys), keys
    assert bucket_rows(s3, prefix) == [{"seq": m["seq"], "temp": m["temp"], "twice": m["temp"] * 2,
                                        "__dt": today, "site": m["site"]} for m in kept]
    assert ia.describe_datastore(datastoreName=n, includeStatistics=True)[
        "statistics"]["size"]["estimatedSizeInBytes"] > 0

    # `fleetcore sql` reads the same objects from the bucket, with the server's lake settings.
    out = subprocess.run([str(FLEETCORE_BIN), "sql", "--data-dir", str(b.data_dir), "--table",
                          f"t=s3://{BUCKET}/{prefix}", "--format", "csv",
                          "SELECT site, seq, temp, twice FROM t ORDER BY seq"],
                         env={**os.environ, **moto.lake_env}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert list(csv.DictReader(io.StringIO(out.stdout))) == expected
    # A top-N, whose other selected columns are read late (for its winners only) from the objects.
    out = subprocess.run([str(FLEETCORE_BIN), "sql", "--data-dir", str(b.data_dir), "--table",
                          f"t=s3://{BUCKET}/{prefix}", "--format", "csv",
                          "SELECT seq, site, twice FROM t WHERE temp > 2 ORDER BY temp DESC LIMIT 3"],
                         env={**os.environ, **moto.lake_env}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    hottest = sorted((m for m in kept if m["temp"] > 2), key=lambda m: -m["temp"])[:3]
    assert list(csv.DictReader(io.StringIO(out.stdout))) == [
        {"seq": str(m["seq"]), "site": m["site"], "twice": str(m["temp"] * 2)} for m in hottest]

    # Retention is ignored for customer-managed storage, as on AWS: rows that arrived in 2020 (a
    # channel file as the channel writes them, dated 2020) land under __dt=2020-01-01 and stay.
    folder = b.data_dir / "analytics" / "channels" / n
    last = max(int(p.stem) for p in folder.glob("*.jsonl"))
    tmp = folder / ".fake.tmp"
    tmp.write_text("".join(f"{OLD_MS}\t{json.dumps({'seq': 100 + i, 'site': 'a', 'temp': 1})}\n"
                           for i in range(2)))
    os.utime(tmp, (OLD_MS / 1000, OLD_MS / 1000))
    dated = folder / f"{last + 1:020}.jsonl"
    os.rename(tmp, dated)
    old = f"{prefix}__dt=2020-01-01/"
    wait_until(lambda: len(bucket_rows(s3, old)) == 2, 30, interval=0.2, what="the 2020 rows in the bucket")
    ia.update_datastore(datastoreName=n, retentionPeriod={"numberOfDays": 30})
    # A sweep does the datastores before the channels: once the channel's own retention has
    # cleared its 2020 file, the datastores' part of that sweep has run.
    ia.update_channel(channelName=n, retentionPeriod={"numberOfDays": 30})
    wait_until(lambda: not dated.exists() or dated.stat().st_size == 0, 30, interval=0.2,
               what="the channel's 2020 file expired")
    assert len(bucket_rows(s3, old)) == 2
    assert len(bucket_rows(s3, prefix)) == len(kept) + 2
    assert ia.describe_datastore(datastoreName=n)["datastore"]["storage"] == storage

    # DeleteDatastore leaves the customer's objects in the customer's bucket.
    ia.delete_datastore(datastoreName=n)
    assert len(bucket_rows(s3, prefix)) == len(kept) + 2


def channel_messages(s3, prefix: str) -> list[dict]:
    """The messages of the channel objects under `prefix` (`<arrival ms>\t<json>` lines)."""
    out = []
    for obj in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []):
        assert re.fullmatch(rf"{prefix}\d{{20}}\.jsonl", obj["Key"]), obj["Key"]
        text = s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read().decode()
        out += [json.loads(line.split("\t", 1)[1]) for line in text.splitlines() if not line.startswith("#")]
    return sorted(out, key=lambda m: m["seq"])


def test_channel_in_a_customer_bucket(broker_factory, aws, moto, uid):
    b = broker_factory(env=moto.lake_env)
    ia = aws("iotanalytics", broker=b)
    s3 = moto.s3()
    s3.create_bucket(Bucket=BUCKET)
    n = ident(uid)
    storage = {"customerManagedS3": {"bucket": BUCKET, "keyPrefix": "raw/", "roleArn": ROLE}}

    # A bucket that does not exist is refused at create, and nothing is left behind.
    with pytest.raises(ClientError) as exc:
        ia.create_channel(channelName=n + "_x", channelStorage={
            "customerManagedS3": {"bucket": "no-such-bucket", "roleArn": ROLE}})
    code, status, message = error_of(exc)
    assert (code, status) == ("InvalidRequestException", 400), message
    assert "no-such-bucket" in message and "cannot be used" in message, message
    with pytest.raises(ClientError) as exc:
        ia.describe_channel(channelName=n + "_x")
    assert error_of(exc)[:2] == ("ResourceNotFoundException", 404)

    ia.create_channel(channelName=n, channelStorage=storage, retentionPeriod={"numberOfDays": 1})
    assert ia.describe_channel(channelName=n)["channel"]["storage"] == storage
    (summary,) = [c for c in ia.list_channels()["channelSummaries"] if c["channelName"] == n]
    assert summary["channelStorage"] == storage
    with pytest.raises(ClientError) as exc:
        ia.update_channel(channelName=n, channelStorage={"serviceManagedS3": {}})
    assert error_of(exc)[:2] == ("InvalidRequestException", 400)

    ia.create_datastore(datastoreName=n)
    ia.create_pipeline(pipelineName=n, pipelineActivities=pipeline(n, n, n, {"filter": {"filter": "temp > 0"}}))
    sql = f"SELECT seq, temp FROM {n} ORDER BY seq"
    ia.create_dataset(datasetName=n, actions=[{"actionName": "q", "queryAction": {"sqlQuery": sql}}])
    messages = [{"seq": i, "temp": i - 3} for i in range(10)]
    assert put(ia, n, *messages) == []
    kept = [{"seq": str(m["seq"]), "temp": str(m["temp"])} for m in messages if m["temp"] > 0]
    assert rows_eventually(ia, n, len(kept)) == kept

    # The raw messages are objects under <keyPrefix><channel>/ in the customer's bucket, and
    # nothing of the channel is in the data folder.
    prefix = f"raw/{n}/"
    assert channel_messages(s3, prefix) == messages
    assert not (b.data_dir / "analytics" / "channels" / n).exists()
    sample = ia.sample_channel_data(channelName=n, maxMessages=3)["payloads"]
    assert [json.loads(p) for p in sample] == messages[-3:]
    assert ia.describe_channel(channelName=n, includeStatistics=True)[
        "statistics"]["size"]["estimatedSizeInBytes"] > 0

    # A reprocessing reads the bucket back: every kept message lands a second time.
    ia.start_pipeline_reprocessing(pipelineName=n)
    twice = sorted(kept + kept, key=lambda r: int(r["seq"]))
    assert rows_eventually(ia, n, len(twice)) == twice
    wait_until(lambda: ia.describe_pipeline(pipelineName=n)["pipeline"]["reprocessingSummaries"][0]["status"]
               == "SUCCEEDED", 30, what="the reprocessing done")

    # channelMessages.s3Paths name the channel's objects by their keys in the customer's
    # bucket: a second batch is its own object, and reprocessing only the first object's key
    # lands only its messages once more. A key that is not one of the channel's objects fails
    # the call.
    more = [{"seq": i, "temp": 100 + i} for i in range(10, 13)]
    assert put(ia, n, *more) == []
    kept += [{"seq": str(m["seq"]), "temp": str(m["temp"])} for m in more]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]]
    assert len(keys) == 2, keys
    assert rows_eventually(ia, n, len(twice) + len(more))[-len(more):] == kept[-len(more):]
    for bad, needle in ((f"{prefix}{99:020}.jsonl", "is not stored in channel"),
                        (f"channels/{n}/{1:020}.jsonl", f"its keys are {prefix}")):
        with pytest.raises(ClientError) as exc:
            ia.start_pipeline_reprocessing(pipelineName=n, channelMessages={"s3Paths": [bad]})
        code, status, message = error_of(exc)
        assert (code, status) == ("InvalidRequestException", 400) and needle in message, message
    ia.start_pipeline_reprocessing(pipelineName=n, channelMessages={"s3Paths": [sorted(keys)[0]]})
    first = [r for r in kept if int(r["seq"]) < 10]
    thrice = sorted(first * 3 + kept[-len(more):], key=lambda r: int(r["seq"]))
    assert rows_eventually(ia, n, len(thrice)) == thrice
    messages += more

    # DeleteChannel leaves the customer's objects in the customer's bucket.
    ia.delete_pipeline(pipelineName=n)
    ia.delete_channel(channelName=n)
    assert channel_messages(s3, prefix) == messages
