"""The Kinesis API (boto3 `kinesis`) against fleetcore, on the embedded stream backend and on the
NATS JetStream backend (a private nats-server per test): every operation, restart persistence,
iterator expiry, resharding, the error paths, and a SIGKILL during a PutRecords load."""

from __future__ import annotations

import base64
import hashlib
import signal
import threading
import time

import pytest
from botocore.exceptions import ClientError

from brokers import let_time_pass, wait_until

pytestmark = pytest.mark.fleetcore_only("the Kinesis API is fleetcore's")

BACKENDS = ["embedded", "jetstream"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def start(backend, broker_factory, nats_server):
    """start(env=..., nats=...) -> (broker, nats or None): a fleetcore of the test's own on the
    parametrized stream backend."""

    def make(env=None, nats=None, **kw):
        env = dict(env or {})
        if backend == "jetstream":
            nats = nats or nats_server()
            env.update({"FLEETCORE_STREAM_BACKEND": "jetstream",
                        "FLEETCORE_STREAM_SERVERS": nats.url})
        return broker_factory(env=env, **kw), nats

    return make


@pytest.fixture
def kinesis(aws):
    """kinesis(broker, **botocore Config kwargs) -> a boto3 kinesis client (no retries)."""
    def make(b, **config):
        return aws("kinesis", broker=b, **config)
    return make


def error_of(call, *args, **kwargs) -> tuple[str, int, str]:
    with pytest.raises(ClientError) as e:
        call(*args, **kwargs)
    err = e.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Message"]


def create(k, name: str, shards: int = 1):
    k.create_stream(StreamName=name, ShardCount=shards)
    k.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 50})


def read_shard(k, name: str, shard_id: str, start="TRIM_HORIZON", limit=10000, **it_kwargs):
    """Every record of a shard from `start` until an empty page (open shard) or the end (closed
    shard): (records, last response)."""
    it = k.get_shard_iterator(StreamName=name, ShardId=shard_id, ShardIteratorType=start,
                              **it_kwargs)["ShardIterator"]
    records = []
    while True:
        out = k.get_records(ShardIterator=it, Limit=limit)
        records += out["Records"]
        it = out.get("NextShardIterator")
        if it is None or not out["Records"]:
            return records, out


def shard_of(partition_key: str, shards: list[dict]) -> str:
    h = int(hashlib.md5(partition_key.encode()).hexdigest(), 16)
    for s in shards:
        r = s["HashKeyRange"]
        if "EndingSequenceNumber" not in s["SequenceNumberRange"] and \
                int(r["StartingHashKey"]) <= h <= int(r["EndingHashKey"]):
            return s["ShardId"]
    raise AssertionError(f"no open shard for {partition_key}")


# ---------------------------------------------------------------------------------------------
# stream management

def test_create_describe_list_and_delete_streams(start, kinesis):
    b, _ = start()
    k = kinesis(b)
    for i in range(3):
        create(k, f"list-{i}", shards=3)
    k.create_stream(StreamName="on-demand", StreamModeDetails={"StreamMode": "ON_DEMAND"})

    d = k.describe_stream(StreamName="list-0")["StreamDescription"]
    assert d["StreamStatus"] == "ACTIVE"
    assert d["StreamARN"] == "arn:aws:kinesis:us-east-1:000000000000:stream/list-0"
    assert d["StreamModeDetails"] == {"StreamMode": "PROVISIONED"}
    assert d["RetentionPeriodHours"] == 24 and d["HasMoreShards"] is False
    assert [s["ShardId"] for s in d["Shards"]] == [f"shardId-00000000000{i}" for i in range(3)]
    ranges = [(int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]))
              for s in d["Shards"]]
    assert ranges[0][0] == 0 and ranges[-1][1] == 2**128 - 1
    assert all(a[1] + 1 == b_[0] for a, b_ in zip(ranges, ranges[1:]))
    assert all("EndingSequenceNumber" not in s["SequenceNumberRange"] for s in d["Shards"])
    assert abs(d["StreamCreationTimestamp"].timestamp() - time.time()) < 120

    page = k.describe_stream(StreamName="list-0", Limit=2)["StreamDescription"]
    assert [s["ShardId"] for s in page["Shards"]] == ["shardId-000000000000", "shardId-000000000001"]
    assert page["HasMoreShards"] is True
    rest = k.describe_stream(StreamName="list-0", ExclusiveStartShardId="shardId-000000000001")
    assert [s["ShardId"] for s in rest["StreamDescription"]["Shards"]] == ["shardId-000000000002"]

    arn = d["StreamARN"]
    summary = k.describe_stream_summary(StreamARN=arn)["StreamDescriptionSummary"]
    assert summary["StreamName"] == "list-0" and summary["OpenShardCount"] == 3
    assert summary["StreamStatus"] == "ACTIVE" and summary["EncryptionType"] == "NONE"
    on_demand = k.describe_stream_summary(StreamName="on-demand")["StreamDescriptionSummary"]
    assert on_demand["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}
    assert on_demand["OpenShardCount"] == 4

    listed = k.list_streams()
    assert listed["StreamNames"] == ["list-0", "list-1", "list-2", "on-demand"]
    assert listed["HasMoreStreams"] is False
    assert [s["StreamARN"] for s in listed["StreamSummaries"]][0] == arn
    first = k.list_streams(Limit=2)
    assert first["StreamNames"] == ["list-0", "list-1"] and first["HasMoreStreams"] is True
    second = k.list_streams(NextToken=first["NextToken"])
    assert second["StreamNames"] == ["list-2", "on-demand"] and second["HasMoreStreams"] is False
    assert k.list_streams(ExclusiveStartStreamName="list-1")["StreamNames"] == ["list-2", "on-demand"]
    # the paginator follows NextToken
    names = [n for p in k.get_paginator("list_streams").paginate(PaginationConfig={"PageSize": 1})
             for n in p["StreamNames"]]
    assert names == ["list-0", "list-1", "list-2", "on-demand"]

    shards = k.list_shards(StreamName="list-1", MaxResults=2)
    assert [s["ShardId"] for s in shards["Shards"]] == ["shardId-000000000000", "shardId-000000000001"]
    more = k.list_shards(NextToken=shards["NextToken"])
    assert [s["ShardId"] for s in more["Shards"]] == ["shardId-000000000002"]
    assert "NextToken" not in more
    after = k.list_shards(StreamARN=arn.replace("list-0", "list-1"),
                          ExclusiveStartShardId="shardId-000000000000")
    assert len(after["Shards"]) == 2

    k.delete_stream(StreamName="list-1")
    k.get_waiter("stream_not_exists").wait(StreamName="list-1", WaiterConfig={"Delay": 0.1})
    assert k.list_streams()["StreamNames"] == ["list-0", "list-2", "on-demand"]
    k.delete_stream(StreamARN=arn)
    assert error_of(k.describe_stream, StreamName="list-0")[:2] == ("ResourceNotFoundException", 400)


def test_retention_period_goes_up_and_down(start, kinesis):
    b, _ = start()
    k = kinesis(b)
    create(k, "keep")
    k.increase_stream_retention_period(StreamName="keep", RetentionPeriodHours=72)
    assert k.describe_stream_summary(StreamName="keep")["StreamDescriptionSummary"]["RetentionPeriodHours"] == 72
    k.decrease_stream_retention_period(StreamName="keep", RetentionPeriodHours=48)
    assert k.describe_stream(StreamName="keep")["StreamDescription"]["RetentionPeriodHours"] == 48
    for call, hours in [(k.increase_stream_retention_period, 24),
                        (k.decrease_stream_retention_period, 96),
                        (k.increase_stream_retention_period, 8761),
                        (k.decrease_stream_retention_period, 23)]:
        code, status, _ = error_of(call, StreamName="keep", RetentionPeriodHours=hours)
        assert (code, status) == ("InvalidArgumentException", 400), hours
    assert k.describe_stream(StreamName="keep")["StreamDescription"]["RetentionPeriodHours"] == 48


# ---------------------------------------------------------------------------------------------
# records

def test_put_and_get_records_with_every_iterator_type(start, kinesis):
    b, _ = start()
    k = kinesis(b)
    create(k, "rec", shards=2)
    shards = k.list_shards(StreamName="rec")["Shards"]

    one = k.put_record(StreamName="rec", Data=b"\x00first\xff", PartitionKey="alpha")
    assert one["ShardId"] == shard_of("alpha", shards)
    assert one["SequenceNumber"].isdigit()
    entries = [{"Data": f"r{i}".encode(), "PartitionKey": f"key-{i % 5}"} for i in range(200)]
    out = k.put_records(StreamName="rec", Records=entries)
    assert out["FailedRecordCount"] == 0 and len(out["Records"]) == 200
    for entry, result in zip(entries, out["Records"]):
        assert result["ShardId"] == shard_of(entry["PartitionKey"], shards)
    # both backends count what they stored under the same metric names
    metrics = b.metrics()
    assert metrics.get("fleetcore_stream_records_appended_total", 0) >= 201, metrics
    assert metrics.get("fleetcore_stream_bytes_appended_total", 0) >= 201 * 2
    # explicit hash keys pick the shard regardless of the partition key
    low = k.put_record(StreamName="rec", Data=b"low", PartitionKey="alpha", ExplicitHashKey="0")
    high = k.put_record(StreamName="rec", Data=b"high", PartitionKey="alpha",
                        ExplicitHashKey=str(2**128 - 1))
    assert (low["ShardId"], high["ShardId"]) == ("shardId-000000000000", "shardId-000000000001")

    # TRIM_HORIZON reads each shard in put order, sequence numbers increasing
    for shard in ("shardId-000000000000", "shardId-000000000001"):
        records, last = read_shard(k, "rec", shard, limit=37)
        expected = [r["Data"] for r in entries if shard_of(r["PartitionKey"], shards) == shard]
        if one["ShardId"] == shard:
            expected.insert(0, b"\x00first\xff")
        expected.append(b"low" if shard.endswith("0") else b"high")
        assert [r["Data"] for r in records] == expected
        seqs = [int(r["SequenceNumber"]) for r in records]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert last["MillisBehindLatest"] == 0
        assert all(abs(r["ApproximateArrivalTimestamp"].timestamp() - time.time()) < 120 for r in records)

    shard = one["ShardId"]
    at = read_shard(k, "rec", shard, "AT_SEQUENCE_NUMBER", StartingSequenceNumber=one["SequenceNumber"])[0]
    assert at[0]["Data"] == b"\x00first\xff" and at[0]["PartitionKey"] == "alpha"
    after = read_shard(k, "rec", shard, "AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=one["SequenceNumber"])[0]
    assert [r["SequenceNumber"] for r in after] == [r["SequenceNumber"] for r in at[1:]]

    latest = k.get_shard_iterator(StreamName="rec", ShardId=shard, ShardIteratorType="LATEST")["ShardIterator"]
    page = k.get_records(ShardIterator=latest)
    assert page["Records"] == [] and page["NextShardIterator"]
    # botocore sends Timestamp in whole seconds: put the late record in the next second
    cut = int(time.time()) + 1
    let_time_pass(time.monotonic() + (cut - time.time()) + 0.05)
    k.put_record(StreamName="rec", Data=b"late", PartitionKey="alpha")
    page = k.get_records(ShardIterator=page["NextShardIterator"])
    assert [r["Data"] for r in page["Records"]] == [b"late"]
    stamped = read_shard(k, "rec", shard, "AT_TIMESTAMP", Timestamp=cut)[0]
    assert [r["Data"] for r in stamped] == [b"late"]

    # Limit caps a page, and MillisBehindLatest says there is more
    it = k.get_shard_iterator(StreamName="rec", ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    page = k.get_records(ShardIterator=it, Limit=1)
    assert len(page["Records"]) == 1 and page["MillisBehindLatest"] >= 0


def test_large_records_and_unicode_keys_round_trip(start, kinesis):
    b, _ = start()
    k = kinesis(b)
    create(k, "big")
    key = "ключ-" + "é" * 251
    data = bytes(range(256)) * 4096  # exactly 1 MiB
    k.put_record(StreamName="big", Data=data, PartitionKey=key)
    out = k.put_records(StreamName="big", Records=[{"Data": data, "PartitionKey": "a"},
                                                    {"Data": b"", "PartitionKey": "b"}])
    assert out["FailedRecordCount"] == 0
    records, _ = read_shard(k, "big", "shardId-000000000000")
    assert [(len(r["Data"]), r["PartitionKey"]) for r in records] == [(1 << 20, key), (1 << 20, "a"), (0, "b")]
    assert records[0]["Data"] == data
    # 4 MiB in one PutRecords (5.3 MB of JSON in base64, past axum's 2 MB default body limit):
    # Kinesis takes up to 5 MiB per request.
    out = k.put_records(StreamName="big", Records=[{"Data": data, "PartitionKey": f"m{i}"}
                                                   for i in range(4)])
    assert out["FailedRecordCount"] == 0
    records, _ = read_shard(k, "big", "shardId-000000000000")
    assert [r["PartitionKey"] for r in records[3:]] == ["m0", "m1", "m2", "m3"]
    assert all(r["Data"] == data for r in records[3:])


def test_put_records_reports_partial_failure_per_record(nats_server, broker_factory, kinesis):
    """A nats-server left at its default max_payload (1 MiB) cannot hold a 1 MiB record: that
    record fails with InternalFailure, the others of the same PutRecords are stored."""
    nats = nats_server(max_payload=None)
    b = broker_factory(env={"FLEETCORE_STREAM_BACKEND": "jetstream",
                            "FLEETCORE_STREAM_SERVERS": nats.url})
    k = kinesis(b)
    create(k, "partial")
    out = k.put_records(StreamName="partial", Records=[
        {"Data": b"small-1", "PartitionKey": "a"},
        {"Data": b"x" * (1 << 20), "PartitionKey": "a"},
        {"Data": b"small-2", "PartitionKey": "a"}])
    assert out["FailedRecordCount"] == 1
    ok1, failed, ok2 = out["Records"]
    assert failed["ErrorCode"] == "InternalFailure" and failed["ErrorMessage"]
    assert "SequenceNumber" not in failed
    assert int(ok1["SequenceNumber"]) < int(ok2["SequenceNumber"])
    records, _ = read_shard(k, "partial", "shardId-000000000000")
    assert [r["Data"] for r in records] == [b"small-1", b"small-2"]
    assert "max_payload" in b.log_text()


# ---------------------------------------------------------------------------------------------
# resharding

def test_update_shard_count_closes_parents_and_children_take_over(start, kinesis):
    b, _ = start()
    k = kinesis(b)
    create(k, "grow", shards=2)
    before = [{"Data": f"old-{i}".encode(), "PartitionKey": f"k{i}"} for i in range(100)]
    k.put_records(StreamName="grow", Records=before)
    out = k.update_shard_count(StreamName="grow", TargetShardCount=3, ScalingType="UNIFORM_SCALING")
    assert (out["CurrentShardCount"], out["TargetShardCount"]) == (2, 3)
    assert out["StreamARN"].endswith(":stream/grow")

    shards = k.list_shards(StreamName="grow")["Shards"]
    closed = [s for s in shards if "EndingSequenceNumber" in s["SequenceNumberRange"]]
    open_ = [s for s in shards if "EndingSequenceNumber" not in s["SequenceNumberRange"]]
    assert [s["ShardId"] for s in closed] == ["shardId-000000000000", "shardId-000000000001"]
    assert len(open_) == 3
    assert all("ParentShardId" in s for s in open_)
    starts = sorted(int(s["HashKeyRange"]["StartingHashKey"]) for s in open_)
    ends = sorted(int(s["HashKeyRange"]["EndingHashKey"]) for s in open_)
    assert starts[0] == 0 and ends[-1] == 2**128 - 1
    assert all(e + 1 == s for e, s in zip(ends, starts[1:]))
    latest_only = k.list_shards(StreamName="grow", ShardFilter={"Type": "AT_LATEST"})["Shards"]
    assert [s["ShardId"] for s in latest_only] == [s["ShardId"] for s in open_]

    after = [{"Data": f"new-{i}".encode(), "PartitionKey": f"k{i}"} for i in range(100)]
    res = k.put_records(StreamName="grow", Records=after)["Records"]
    assert {r["ShardId"] for r in res} <= {s["ShardId"] for s in open_}

    # a reader of a parent reaches its end (no NextShardIterator, the children named), then
    # finds every key's later records in the child that owns the key now
    seen: dict[str, list[bytes]] = {}
    for parent in closed:
        records, last = read_shard(k, "grow", parent["ShardId"])
        assert last.get("NextShardIterator") is None
        children = {c["ShardId"] for c in last["ChildShards"]}
        assert children and children <= {s["ShardId"] for s in open_}
        for r in records:
            seen.setdefault(r["PartitionKey"], []).append(r["Data"])
    for child in open_:
        for r in read_shard(k, "grow", child["ShardId"])[0]:
            seen.setdefault(r["PartitionKey"], []).append(r["Data"])
    assert seen == {f"k{i}": [f"old-{i}".encode(), f"new-{i}".encode()] for i in range(100)}

    # a parent's sequence number is no position in a child
    parent_seq = read_shard(k, "grow", closed[0]["ShardId"])[0][0]["SequenceNumber"]
    assert error_of(k.get_shard_iterator, StreamName="grow", ShardId=open_[-1]["ShardId"],
                    ShardIteratorType="AT_SEQUENCE_NUMBER",
                    StartingSequenceNumber=parent_seq)[:2] == ("InvalidArgumentException", 400)

    # shrink back: 3 -> 2
    k.update_shard_count(StreamName="grow", TargetShardCount=2, ScalingType="UNIFORM_SCALING")
    summary = k.describe_stream_summary(StreamName="grow")["StreamDescriptionSummary"]
    assert summary["OpenShardCount"] == 2
    code, status, _ = error_of(k.update_shard_count, StreamName="grow", TargetShardCount=5,
                               ScalingType="UNIFORM_SCALING")
    assert status == 400 and code in ("InvalidArgumentException", "LimitExceededException")


# ---------------------------------------------------------------------------------------------
# iterators

def test_iterators_expire_and_forged_ones_are_refused(start, kinesis):
    b, _ = start(env={"FLEETCORE_TEST_KINESIS_ITERATOR_TTL_MS": "1500"})
    k = kinesis(b)
    create(k, "exp")
    k.put_record(StreamName="exp", Data=b"x", PartitionKey="p")
    it = k.get_shard_iterator(StreamName="exp", ShardId="shardId-000000000000",
                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    issued = time.monotonic()
    fresh = k.get_records(ShardIterator=it)
    assert [r["Data"] for r in fresh["Records"]] == [b"x"]
    let_time_pass(issued + 2.0)
    code, status, message = error_of(k.get_records, ShardIterator=it)
    assert (code, status) == ("ExpiredIteratorException", 400) and "expired" in message.lower()

    raw = bytearray(base64.b64decode(fresh["NextShardIterator"]))
    raw[10] ^= 1  # move it to another shard
    for forged in [base64.b64encode(bytes(raw)).decode(), "bm90IGFuIGl0ZXJhdG9y", "!!!"]:
        assert error_of(k.get_records, ShardIterator=forged)[:2] == ("InvalidArgumentException", 400)


# ---------------------------------------------------------------------------------------------
# errors

def test_bad_requests_get_the_kinesis_error_shapes(start, kinesis, backend):
    b, _ = start()
    k = kinesis(b, parameter_validation=False)
    create(k, "errs", shards=2)
    missing = [
        (k.describe_stream, {"StreamName": "nope"}),
        (k.describe_stream_summary, {"StreamName": "nope"}),
        (k.delete_stream, {"StreamName": "nope"}),
        (k.list_shards, {"StreamName": "nope"}),
        (k.put_record, {"StreamName": "nope", "Data": b"x", "PartitionKey": "p"}),
        (k.put_records, {"StreamName": "nope", "Records": [{"Data": b"x", "PartitionKey": "p"}]}),
        (k.get_shard_iterator, {"StreamName": "nope", "ShardId": "shardId-000000000000",
                                "ShardIteratorType": "LATEST"}),
        (k.get_shard_iterator, {"StreamName": "errs", "ShardId": "shardId-000000000009",
                                "ShardIteratorType": "LATEST"}),
        (k.get_shard_iterator, {"StreamName": "errs", "ShardId": "shard-7",
                                "ShardIteratorType": "LATEST"}),
        (k.increase_stream_retention_period, {"StreamName": "nope", "RetentionPeriodHours": 48}),
        (k.update_shard_count, {"StreamName": "nope", "TargetShardCount": 2,
                                "ScalingType": "UNIFORM_SCALING"}),
        (k.describe_stream, {"StreamARN": "arn:aws:kinesis:eu-west-1:000000000000:stream/errs"}),
    ]
    for call, kwargs in missing:
        assert error_of(call, **kwargs)[:2] == ("ResourceNotFoundException", 400), (call, kwargs)

    assert error_of(k.create_stream, StreamName="errs", ShardCount=1)[:2] == ("ResourceInUseException", 400)
    invalid = [
        (k.create_stream, {"StreamName": "bad name!", "ShardCount": 1}),
        (k.create_stream, {"StreamName": "x" * 129, "ShardCount": 1}),
        (k.create_stream, {"StreamName": "zero", "ShardCount": 0}),
        (k.create_stream, {"StreamName": "nocount"}),
        (k.create_stream, {"StreamName": "mode", "ShardCount": 1, "StreamModeDetails": {"StreamMode": "FAST"}}),
        (k.put_record, {"StreamName": "errs", "Data": b"x" * ((1 << 20) + 1), "PartitionKey": "p"}),
        (k.put_record, {"StreamName": "errs", "Data": b"x", "PartitionKey": ""}),
        (k.put_record, {"StreamName": "errs", "Data": b"x", "PartitionKey": "p" * 257}),
        (k.put_record, {"StreamName": "errs", "Data": b"x", "PartitionKey": "p", "ExplicitHashKey": "-1"}),
        (k.put_record, {"StreamName": "errs", "Data": b"x", "PartitionKey": "p", "ExplicitHashKey": str(2**128)}),
        (k.put_record, {"StreamName": "errs", "Data": b"x", "PartitionKey": "p", "ExplicitHashKey": "0x10"}),
        (k.put_record, {"Data": b"x", "PartitionKey": "p"}),
        (k.put_record, {"StreamName": "errs", "StreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/other",
                        "Data": b"x", "PartitionKey": "p"}),
        (k.put_records, {"StreamName": "errs", "Records": []}),
        (k.put_records, {"StreamName": "errs", "Records": [{"Data": b"x", "PartitionKey": "p"}] * 501}),
        (k.put_records, {"StreamName": "errs", "Records": [{"Data": b"x", "PartitionKey": "p"},
                                                           {"Data": b"y" * ((1 << 20) + 1), "PartitionKey": "p"}]}),
        (k.get_shard_iterator, {"StreamName": "errs", "ShardId": "shardId-000000000000",
                                "ShardIteratorType": "SOMEWHERE"}),
        (k.get_shard_iterator, {"StreamName": "errs", "ShardId": "shardId-000000000000",
                                "ShardIteratorType": "AT_SEQUENCE_NUMBER"}),
        (k.get_shard_iterator, {"StreamName": "errs", "ShardId": "shardId-000000000000",
                                "ShardIteratorType": "AT_SEQUENCE_NUMBER", "StartingSequenceNumber": "12ab"}),
        (k.get_shard_iterator, {"StreamName": "errs", "ShardId": "shardId-000000000000",
                                "ShardIteratorType": "AT_TIMESTAMP"}),
        (k.get_records, {"ShardIterator": "AAAA"}),
        (k.list_streams, {"Limit": 0}),
        (k.list_streams, {"NextToken": "garbage"}),
        (k.list_shards, {"StreamName": "errs", "MaxResults": 10001}),
        (k.list_shards, {"NextToken": "garbage"}),
        (k.describe_stream, {"StreamName": "errs", "Limit": 0}),
        (k.update_shard_count, {"StreamName": "errs", "TargetShardCount": 3, "ScalingType": "OTHER"}),
        (k.increase_stream_retention_period, {"StreamName": "errs"}),
    ]
    for call, kwargs in invalid:
        shown = {key: (v if len(str(v)) < 80 else f"<{len(v)}>") for key, v in kwargs.items()}
        assert error_of(call, **kwargs)[:2] == ("InvalidArgumentException", 400), (call.__name__, shown)

    # a sequence number of the other shard is not a position in this one (the embedded backend
    # numbers all shards of a stream from one counter, so it cannot tell)
    seq = k.put_record(StreamName="errs", Data=b"x", PartitionKey="p", ExplicitHashKey="0")["SequenceNumber"]
    if backend == "jetstream":
        assert error_of(k.get_shard_iterator, StreamName="errs", ShardId="shardId-000000000001",
                        ShardIteratorType="AT_SEQUENCE_NUMBER", StartingSequenceNumber=seq)[0] == "InvalidArgumentException"
    it = k.get_shard_iterator(StreamName="errs", ShardId="shardId-000000000000",
                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    for limit in (0, 10001):
        assert error_of(k.get_records, ShardIterator=it, Limit=limit)[0] == "InvalidArgumentException"
    # a NextToken with the stream named too
    token = k.list_shards(StreamName="errs", MaxResults=1)["NextToken"]
    assert error_of(k.list_shards, StreamName="errs", NextToken=token)[0] == "InvalidArgumentException"
    # iterators of a deleted stream, also once a stream of the same name exists again
    k.delete_stream(StreamName="errs")
    assert error_of(k.get_records, ShardIterator=it)[0] == "ResourceNotFoundException"
    create(k, "errs", shards=2)
    k.put_record(StreamName="errs", Data=b"new", PartitionKey="p", ExplicitHashKey="0")
    assert error_of(k.get_records, ShardIterator=it)[0] == "ResourceNotFoundException"


def test_malformed_bodies_and_unknown_operations(start, kinesis):
    b, _ = start()
    k = kinesis(b)
    captured = {}

    def swap_body(request, **_):
        if captured.get("body") is not None:
            request.data = captured["body"]
            # HTTPHeaders appends on assignment: delete first
            del request.headers["Content-Length"]
            request.headers["Content-Length"] = str(len(captured["body"]))
            if captured.get("target"):
                del request.headers["X-Amz-Target"]
                request.headers["X-Amz-Target"] = captured["target"]

    # the body is replaced before signing, so the signature is valid and the server parses it
    k.meta.events.register_first("before-sign.kinesis.*", swap_body)
    captured["body"] = b'{"StreamName": "x", "ShardCount": '
    code, status, _ = error_of(k.create_stream, StreamName="x", ShardCount=1)
    assert (code, status) == ("SerializationException", 400)
    captured["body"], captured["target"] = b"{}", "Kinesis_20131202.MakeCoffee"
    code, status, _ = error_of(k.list_streams)
    assert (code, status) == ("UnknownOperationException", 400)


# ---------------------------------------------------------------------------------------------
# durability

def test_records_and_iterators_survive_a_restart(start, kinesis):
    b, _ = start()
    k = kinesis(b)
    create(k, "keepme", shards=2)
    entries = [{"Data": f"d{i}".encode(), "PartitionKey": f"k{i}"} for i in range(300)]
    put = k.put_records(StreamName="keepme", Records=entries)["Records"]
    it = k.get_shard_iterator(StreamName="keepme", ShardId="shardId-000000000000",
                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    b.restart()
    k = kinesis(b)
    for shard in ("shardId-000000000000", "shardId-000000000001"):
        records, _ = read_shard(k, "keepme", shard)
        assert [r["SequenceNumber"] for r in records] == \
            [p["SequenceNumber"] for p in put if p["ShardId"] == shard]
    # an iterator from before the restart still reads (sealed with a key from the admin secret)
    assert k.get_records(ShardIterator=it)["Records"]
    more = k.put_record(StreamName="keepme", Data=b"after", PartitionKey="k0")
    assert int(more["SequenceNumber"]) > max(int(p["SequenceNumber"]) for p in put if p["ShardId"] == more["ShardId"])


def test_sigkill_during_put_load_loses_no_acknowledged_record(start, kinesis):
    """Writers put batches from several threads; the server is SIGKILLed mid-load. After a
    restart every acknowledged record is there, in acknowledgement order per shard, and every
    record served is one a writer sent, byte for byte."""
    b, _ = start()
    k = kinesis(b)
    create(k, "crash", shards=3)
    acked: list[tuple[str, int, bytes]] = []
    sent: set[bytes] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def writer(n: int):
        client = kinesis(b, connect_timeout=2, read_timeout=10)
        batch = 0
        while not stop.is_set():
            records = []
            for i in range(50):
                body = f"w{n}-b{batch}-r{i}-".encode()
                body += hashlib.sha256(body).hexdigest().encode()
                records.append({"Data": body, "PartitionKey": f"w{n}-{i % 7}"})
            with lock:
                sent.update(r["Data"] for r in records)
            try:
                out = client.put_records(StreamName="crash", Records=records)
            except Exception:  # noqa: BLE001 - the server died under us
                return
            with lock:
                for rec, res in zip(records, out["Records"]):
                    if "SequenceNumber" in res:
                        acked.append((res["ShardId"], int(res["SequenceNumber"]), rec["Data"]))
            batch += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: len(acked) >= 2000, 60, what="2000 acknowledged records")
    b.proc.send_signal(signal.SIGKILL)
    b.proc.wait(10)
    stop.set()
    for t in threads:
        t.join(30)
    assert b.proc.returncode == -signal.SIGKILL
    with lock:
        acked_now = list(acked)

    b.start()
    k = kinesis(b)
    by_shard: dict[str, list[tuple[int, bytes]]] = {}
    for shard_id, seq, data in acked_now:
        by_shard.setdefault(shard_id, []).append((seq, data))
    total = 0
    for shard in k.list_shards(StreamName="crash")["Shards"]:
        records, _ = read_shard(k, "crash", shard["ShardId"])
        total += len(records)
        seqs = [int(r["SequenceNumber"]) for r in records]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        stored = {int(r["SequenceNumber"]): r["Data"] for r in records}
        for r in records:
            body, digest = r["Data"].rsplit(b"-", 1)
            assert hashlib.sha256(body + b"-").hexdigest().encode() == digest, r["Data"][:80]
            assert r["Data"] in sent, "a record nobody sent"
        for seq, data in by_shard.get(shard["ShardId"], []):
            assert stored.get(seq) == data, f"acknowledged record {seq} of {shard['ShardId']} lost"
    assert total >= len(acked_now)
    # the stream takes new records after the crash, numbered after the old ones
    new = k.put_record(StreamName="crash", Data=b"after", PartitionKey="w0-0")
    assert int(new["SequenceNumber"]) > max(s for sh, s, _ in acked_now if sh == new["ShardId"])


def test_the_aws_cli_puts_and_gets_records(broker_factory, aws_cli):
    b = broker_factory()
    aws_cli("kinesis", "create-stream", "--stream-name", "cli", "--shard-count", "1", broker=b)
    aws_cli("kinesis", "wait", "stream-exists", "--stream-name", "cli", broker=b)
    put = aws_cli("kinesis", "put-record", "--stream-name", "cli", "--partition-key", "p",
                  "--data", "hello cli", broker=b)  # CLI v1 sends --data as raw bytes
    assert put["ShardId"] == "shardId-000000000000"
    it = aws_cli("kinesis", "get-shard-iterator", "--stream-name", "cli", "--shard-id",
                 "shardId-000000000000", "--shard-iterator-type", "TRIM_HORIZON", broker=b)
    out = aws_cli("kinesis", "get-records", "--shard-iterator", it["ShardIterator"], broker=b)
    assert [base64.b64decode(r["Data"]) for r in out["Records"]] == [b"hello cli"]
    assert out["Records"][0]["SequenceNumber"] == put["SequenceNumber"]
    done = aws_cli("kinesis", "describe-stream", "--stream-name", "nope", broker=b, check=False)
    assert done.returncode != 0 and "ResourceNotFoundException" in done.stderr


def test_firehose_delivers_a_kinesis_stream_into_the_lake(start, kinesis, aws):
    """The archive reads streams through the same store as the Kinesis API: a
    KinesisStreamAsSource delivery stream copies every record put with PutRecords into the lake,
    on either backend."""
    b, _ = start()
    k = kinesis(b)
    create(k, "to-lake", shards=2)
    fh = aws("firehose", broker=b)
    fh.create_delivery_stream(
        DeliveryStreamName="lake-copy", DeliveryStreamType="KinesisStreamAsSource",
        KinesisStreamSourceConfiguration={
            "KinesisStreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/to-lake",
            "RoleARN": "arn:aws:iam::000000000000:role/firehose"},
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::000000000000:role/firehose",
            "BucketARN": "arn:aws:s3:::lake-kinesis",
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 1}})
    payloads = [f"rec-{i}".encode() for i in range(150)]
    k.put_records(StreamName="to-lake",
                  Records=[{"Data": p, "PartitionKey": f"k{i}"} for i, p in enumerate(payloads)])
    root = b.data_dir / "lake" / "lake-kinesis"

    def delivered() -> list[bytes]:
        if not root.exists():
            return []
        return [line for p in root.rglob("*") if p.is_file() and "#" not in p.name
                for line in p.read_bytes().split(b"\n") if line]

    wait_until(lambda: len(delivered()) >= len(payloads), 30, what="the lake copy")
    assert sorted(delivered()) == sorted(payloads)
