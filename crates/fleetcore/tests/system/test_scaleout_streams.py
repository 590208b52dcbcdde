"""Kinesis consumers of several fleetcore nodes whose streams live in one NATS JetStream
(`[stream] backend = "jetstream"`, one set of streams for all nodes), on a shared PostgreSQL
(`test_scaleout.py`'s cluster). What a user of either node sees:

- a Lambda event source mapping created through A is listed, described and changed through B;
  every node runs a poller of it, the stream's shards are split between the nodes (the
  function's output names the node that ran it, from its `AWS_ENDPOINT_URL`), and each record
  reaches the function exactly once across both nodes; `LastProcessingResult` is `OK` on both;
- a node SIGKILLed: the other takes its shards over once their leases lapse and every record
  put afterwards reaches the function;
- a Firehose delivery stream with a Kinesis source, shared by the nodes: each record of the
  source lands once across the nodes' lakes, and both nodes deliver some.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import pytest

from brokers import wait_until
from test_scaleout import _gone, _seen_within_a_second, start_cluster

pytestmark = pytest.mark.fleetcore_only("clustering is fleetcore's")

SHARDS = 4

# Copies each record of the Kinesis event to the stream OUT, naming the node that ran it (its
# AWS_ENDPOINT_URL is that node's HTTP API).
TAG_AND_COPY = """
import base64, json, os, boto3
kinesis = boto3.client("kinesis")
def handler(event, context):
    kinesis.put_records(StreamName=os.environ["OUT"], Records=[
        {"Data": json.dumps({"data": base64.b64decode(r["kinesis"]["data"]).decode(),
                             "node": os.environ["AWS_ENDPOINT_URL"]}).encode(),
         "PartitionKey": "k"} for r in event["Records"]])
    return {"n": len(event["Records"])}
"""


@pytest.fixture
def cluster(broker_factory, nats_server, postgres_server, aws, uid):
    """Two nodes `a` and `b` on one PostgreSQL and one nats-server that also holds their
    streams; their Python functions run with this interpreter (it has boto3)."""
    return start_cluster(["a", "b"], broker_factory, nats_server, postgres_server, aws, uid,
                         jetstream_streams=True,
                         env={"FLEETCORE_FUNCTIONS_PYTHON": sys.executable})


def stream_arn(name: str) -> str:
    return f"arn:aws:kinesis:us-east-1:000000000000:stream/{name}"


def put(kinesis, stream: str, data: list[str]) -> None:
    """Puts `data` with each record its own partition key (spread over the shards)."""
    for start in range(0, len(data), 100):
        chunk = data[start:start + 100]
        r = kinesis.put_records(StreamName=stream, Records=[
            {"Data": d.encode(), "PartitionKey": d} for d in chunk])
        assert r["FailedRecordCount"] == 0, r


def outputs(kinesis, stream: str) -> list[dict]:
    from test_rules_engine import stream_records
    return [json.loads(r["Data"]) for r in stream_records(kinesis, stream)]


def mapped(cluster, uid: str):
    """A source stream of SHARDS shards, an output stream, the function and its mapping, all
    made through A. Returns (source, output, function name, mapping)."""
    from test_functions import create, fn_name
    kinesis, lam = cluster.client("kinesis", 0), cluster.client("lambda", 0)
    name, src, out = fn_name(uid), f"in-{uid}", f"out-{uid}"
    kinesis.create_stream(StreamName=src, ShardCount=SHARDS)
    kinesis.create_stream(StreamName=out, ShardCount=1)
    create(lam, name, {"app.py": TAG_AND_COPY}, Timeout=30,
           Environment={"Variables": {"OUT": out}})
    mapping = lam.create_event_source_mapping(EventSourceArn=stream_arn(src), FunctionName=name,
                                              BatchSize=10, StartingPosition="TRIM_HORIZON")
    return src, out, name, mapping


def both_take_part(cluster, src: str, out: str) -> None:
    """Warm-up records are put, through A and B in turn, until the function's output shows runs
    on both nodes: each node's poller then holds shards (the later joiner took its share)."""
    kinesis = [cluster.client("kinesis", 0), cluster.client("kinesis", 1)]
    nodes = {node.http_base for node in cluster.nodes}
    rounds = [0]

    def both() -> bool:
        n = rounds[0]
        put(kinesis[n % 2], src, [f"warm-{n}-{k}" for k in range(2 * SHARDS)])
        rounds[0] += 1
        return {o["node"] for o in outputs(kinesis[0], out)} == nodes
    wait_until(both, 90, interval=1.0, what="the function run by both nodes' pollers")


def delivered(kinesis, out: str, data: list[str], timeout: float) -> list[dict]:
    """The outputs of `data` once each of them is in `out`."""
    wanted, found = set(data), []

    def all_there() -> bool:
        found[:] = [o for o in outputs(kinesis, out) if o["data"] in wanted]
        return {o["data"] for o in found} == wanted
    wait_until(all_there, timeout, interval=0.5, what=f"{len(wanted)} records through the function")
    return found


def test_an_event_source_mapping_is_shared_and_each_record_reaches_the_function_once(
        cluster, uid):
    """The mapping made through A is listed and described through B within a second; both
    nodes' pollers run the function; 200 records put through A and B each reach it exactly once
    in total, some run on each node; both nodes show LastProcessingResult OK; a change made
    through B is what A describes; deleted through B, it is gone from A."""
    a, b = cluster.nodes
    lam_a, lam_b = cluster.client("lambda", 0), cluster.client("lambda", 1)
    kin_a, kin_b = cluster.client("kinesis", 0), cluster.client("kinesis", 1)
    src, out, name, mapping = mapped(cluster, uid)
    uuid = mapping["UUID"]
    _seen_within_a_second(
        lambda: [m["UUID"] for m in lam_b.list_event_source_mappings(
            FunctionName=name)["EventSourceMappings"]] == [uuid],
        "the mapping made on A, listed on B")
    got = lam_b.get_event_source_mapping(UUID=uuid)
    assert (got["State"], got["BatchSize"], got["EventSourceArn"]) == \
        ("Enabled", 10, stream_arn(src)), got

    both_take_part(cluster, src, out)
    data = [f"r{i}" for i in range(200)]
    put(kin_a, src, data[:100])
    put(kin_b, src, data[100:])
    found = delivered(kin_a, out, data, 90)
    twice = {d: n for d, n in Counter(o["data"] for o in found).items() if n > 1}
    assert not twice, f"records run more than once: {twice}"
    assert {o["node"] for o in found} == {a.http_base, b.http_base}, \
        "both nodes' pollers ran some of the records"
    for lam in (lam_a, lam_b):
        assert lam.get_event_source_mapping(UUID=uuid)["LastProcessingResult"] == "OK"

    lam_b.update_event_source_mapping(UUID=uuid, BatchSize=5)
    _seen_within_a_second(lambda: lam_a.get_event_source_mapping(UUID=uuid)["BatchSize"] == 5,
                          "the batch size set on B, on A")
    lam_b.delete_event_source_mapping(UUID=uuid)
    _seen_within_a_second(
        lambda: _gone(lambda: lam_a.get_event_source_mapping(UUID=uuid), lam_a.exceptions),
        "the mapping deleted on B, gone from A")


def test_a_killed_nodes_shards_are_taken_over_and_every_record_reaches_the_function(
        cluster, uid):
    """Both nodes' pollers run the function; B is SIGKILLed; 80 records put through A (on every
    shard, B's included) all reach the function, run on A, once B's leases lapsed (10 s)."""
    a, b = cluster.nodes
    kin_a = cluster.client("kinesis", 0)
    src, out, _, _ = mapped(cluster, uid)
    both_take_part(cluster, src, out)
    b.kill()
    data = [f"after-{i}" for i in range(80)]
    put(kin_a, src, data)
    found = delivered(kin_a, out, data, 90)
    assert {o["node"] for o in found} == {a.http_base}


def test_a_kinesis_source_delivery_stream_delivers_each_record_once_across_the_nodes(
        cluster, uid):
    """A delivery stream reading a Kinesis stream of SHARDS shards, made through A, runs a
    delivery task on each node (seen through B within a second); once both nodes' lakes hold
    warm-up records (each task holds shards), 200 records put through A and B land exactly once
    across the two lakes, some in each."""
    from test_firehose import ROLE, records_in, s3_destination
    a, b = cluster.nodes
    kinesis = [cluster.client("kinesis", 0), cluster.client("kinesis", 1)]
    fh_a, fh_b = cluster.client("firehose", 0), cluster.client("firehose", 1)
    src, name, bucket = f"fsrc-{uid}", f"fhk-{uid}"[:64], "lake-kinesis"
    kinesis[0].create_stream(StreamName=src, ShardCount=SHARDS)
    fh_a.create_delivery_stream(
        DeliveryStreamName=name, DeliveryStreamType="KinesisStreamAsSource",
        KinesisStreamSourceConfiguration={"KinesisStreamARN": stream_arn(src), "RoleARN": ROLE},
        ExtendedS3DestinationConfiguration=s3_destination(bucket))
    _seen_within_a_second(
        lambda: not _gone(lambda: fh_b.describe_delivery_stream(DeliveryStreamName=name),
                          fh_b.exceptions),
        "the delivery stream made on A, on B")

    def lines(node) -> list[str]:
        return [line.decode() for line in records_in(node, bucket)]
    rounds = [0]

    def both() -> bool:
        n = rounds[0]
        put(kinesis[n % 2], src, [f"warm-{n}-{k}\n" for k in range(2 * SHARDS)])
        rounds[0] += 1
        return bool(lines(a)) and bool(lines(b))
    wait_until(both, 120, interval=1.0, what="warm-up records in both nodes' lakes")

    data = [f"r{i}" for i in range(200)]
    put(kinesis[0], src, [d + "\n" for d in data[:100]])
    put(kinesis[1], src, [d + "\n" for d in data[100:]])
    wanted = set(data)

    def all_there() -> bool:
        return {line for line in lines(a) + lines(b) if line in wanted} == wanted
    wait_until(all_there, 90, interval=0.5, what="the 200 records in the lakes")
    counts = Counter(line for line in lines(a) + lines(b) if line in wanted)
    twice = {d: n for d, n in counts.items() if n > 1}
    assert not twice, f"records delivered more than once: {twice}"
    assert wanted & set(lines(a)) and wanted & set(lines(b)), "both nodes delivered some"


def test_asynchronous_invocations_through_either_node_run_once_past_the_nodes_queue_limit(
        broker_factory, nats_server, postgres_server, aws, uid):
    """The event queue (`__lambda.events`) is one stream for both nodes, with a limit of 3
    queued events: 24 `Event` invocations, through A and B in turn, each once the one before
    ran, are all accepted (202; the node not running the queue counts its stream, not what it
    saw finish) and each runs exactly once (its output record in the shared stream)."""
    from test_functions import HERE, create, fn_name
    cluster = start_cluster(["a", "b"], broker_factory, nats_server, postgres_server, aws, uid,
                            jetstream_streams=True,
                            env={"FLEETCORE_FUNCTIONS_EVENT_QUEUE": "3"})
    lams = [cluster.client("lambda", 0), cluster.client("lambda", 1)]
    kinesis = cluster.client("kinesis", 0)
    name, out = fn_name(uid), f"evout-{uid}"
    kinesis.create_stream(StreamName=out, ShardCount=1)
    wat = (HERE / "functions" / "forward.wat").read_text().replace("wasm-out", out)
    create(lams[0], name, {"forward.wat": wat}, runtime="provided.al2023", handler="forward.wat")
    _seen_within_a_second(lambda: not _gone(lambda: lams[1].get_function(FunctionName=name),
                                            lams[1].exceptions), "the function made on A, on B")
    ran: list[int] = []
    for i in range(24):
        r = lams[i % 2].invoke(FunctionName=name, InvocationType="Event",
                               Payload=json.dumps({"i": i}).encode())
        assert r["StatusCode"] == 202, (i, r)

        def done() -> bool:
            from test_rules_engine import stream_records
            ran[:] = [json.loads(rec["Data"])["wasm"]["i"]
                      for rec in stream_records(kinesis, out)]
            return i in ran
        wait_until(done, 30, interval=0.1, what=f"event {i} run")
    assert sorted(ran) == list(range(24)), f"each event once: {sorted(ran)}"


def test_a_direct_put_delivery_stream_takes_records_through_either_node_past_its_backlog_limit(
        broker_factory, nats_server, postgres_server, aws, uid):
    """A DirectPut delivery stream's internal stream is one for both nodes and one node
    delivers it; with a 1 MiB backlog limit, 3 MiB put through A and B in turn are all
    accepted (a batch refused while the true backlog is full is accepted again within 15 s:
    the node not delivering counts the stream, not what it saw delivered) and each record lands
    exactly once across the two lakes."""
    from test_firehose import records_in, s3_destination
    cluster = start_cluster(["a", "b"], broker_factory, nats_server, postgres_server, aws, uid,
                            jetstream_streams=True,
                            env={"FLEETCORE_LAKE_BACKLOG_LIMIT_MB": "1"})
    a, b = cluster.nodes
    fhs = [cluster.client("firehose", 0), cluster.client("firehose", 1)]
    name, bucket = f"fhd-{uid}"[:64], "lake-direct"
    fhs[0].create_delivery_stream(DeliveryStreamName=name, DeliveryStreamType="DirectPut",
                                  ExtendedS3DestinationConfiguration=s3_destination(bucket))
    _seen_within_a_second(
        lambda: not _gone(lambda: fhs[1].describe_delivery_stream(DeliveryStreamName=name),
                          fhs[1].exceptions), "the delivery stream made on A, on B")
    sent: list[bytes] = []
    for batch in range(60):
        records = [json.dumps({"n": batch * 50 + i, "pad": "p" * 1000}).encode() + b"\n"
                   for i in range(50)]
        fh = fhs[batch % 2]

        def accepted() -> bool:
            try:
                r = fh.put_record_batch(DeliveryStreamName=name,
                                        Records=[{"Data": d} for d in records])
            except fh.exceptions.ServiceUnavailableException:
                return False
            assert r["FailedPutCount"] == 0, r
            return True
        wait_until(accepted, 15, interval=0.2, what=f"batch {batch} accepted")
        sent += [d.rstrip(b"\n") for d in records]

    def landed() -> list[bytes]:
        return records_in(a, bucket) + records_in(b, bucket)
    wait_until(lambda: set(landed()) >= set(sent), 60, interval=0.5,
               what="every record in the lakes")
    twice = [line for line, n in Counter(landed()).items() if n > 1]
    assert not twice, f"{len(twice)} records delivered more than once"
