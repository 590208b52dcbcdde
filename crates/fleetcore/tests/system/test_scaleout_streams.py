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
