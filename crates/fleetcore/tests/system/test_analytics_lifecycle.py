"""IoT Analytics over time, through boto3: retention periods delete expired channel files and
datastore day partitions (fake-dated with a channel file whose messages arrived in 2020);
StartPipelineReprocessing runs a window of the channel through the pipeline again (status in
DescribePipeline.reprocessingSummaries); a dataset on a schedule produces contents by itself,
also across a restart, and the dataset it triggers follows; a deltaTime filter reads only the
rows newer than the previous content, and the default versioning keeps the latest version."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError

from brokers import let_time_pass, wait_until
from test_analytics import content_rows, error_of, ia, ident, pipeline, put  # noqa: F401 (ia: fixture)

pytestmark = pytest.mark.fleetcore_only("IoT Analytics is fleetcore's")

OLD_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z


def count_rows(ia, dataset: str, want: list[dict], timeout: float = 30) -> None:
    """Waits until the dataset's content is `want` (the pipeline runs in the background; before
    its first rows the datastore has no columns, and a query naming one fails)."""
    wait_until(lambda: content_rows(ia, dataset, must_succeed=False) == want, timeout, interval=0.3,
               what=f"{dataset} content {want}")


def sample(ia, channel: str) -> list[dict]:
    return sorted((json.loads(p) for p in ia.sample_channel_data(channelName=channel, maxMessages=10)["payloads"]),
                  key=lambda m: m["seq"])


def test_retention_expires_old_channel_files_and_partitions(broker, ia, uid):
    n = ident(uid)
    ia.create_channel(channelName=n)
    ia.create_datastore(datastoreName=n)
    ia.create_pipeline(pipelineName=n, pipelineActivities=pipeline(n, n, n))
    ia.create_dataset(datasetName=n, actions=[{"actionName": "q", "queryAction": {
        "sqlQuery": f"SELECT __dt, count(*) AS n FROM {n} GROUP BY __dt ORDER BY __dt"}}])
    assert put(ia, n, *({"seq": i} for i in range(3))) == []
    today = time.strftime("%Y-%m-%d", time.gmtime())
    count_rows(ia, n, [{"__dt": today, "n": "3"}])

    # A channel file whose messages arrived in 2020, as the channel writes them (written whole,
    # then renamed into place; its time is the file's): the pipeline files its rows under
    # __dt=2020-01-01.
    folder = broker.data_dir / "analytics" / "channels" / n
    last = max(int(p.stem) for p in folder.glob("*.jsonl"))
    tmp = folder / ".fake.tmp"
    tmp.write_text("".join(f"{OLD_MS}\t{json.dumps({'seq': 100 + i})}\n" for i in range(2)))
    os.utime(tmp, (OLD_MS / 1000, OLD_MS / 1000))
    os.rename(tmp, folder / f"{last + 1:020}.jsonl")
    count_rows(ia, n, [{"__dt": "2020-01-01", "n": "2"}, {"__dt": today, "n": "3"}])
    assert [m["seq"] for m in sample(ia, n)] == [0, 1, 2, 100, 101]

    # A retention period: the sweep that follows the update deletes what is older.
    ia.update_datastore(datastoreName=n, retentionPeriod={"numberOfDays": 30})
    count_rows(ia, n, [{"__dt": today, "n": "3"}])
    assert not (broker.data_dir / "analytics" / "datastores" / n / "__dt=2020-01-01").exists()
    ia.update_channel(channelName=n, retentionPeriod={"numberOfDays": 30})
    wait_until(lambda: [m["seq"] for m in sample(ia, n)] == [0, 1, 2], 30, what="channel expiry")
    assert ia.describe_channel(channelName=n)["channel"]["retentionPeriod"] == {"numberOfDays": 30}

    with pytest.raises(ClientError) as exc:
        ia.update_channel(channelName=n, retentionPeriod={"unlimited": True, "numberOfDays": 3})
    assert error_of(exc)[:2] == ("InvalidRequestException", 400)


def test_pipeline_reprocessing_runs_a_window_again(ia, uid):
    n = ident(uid)
    ia.create_channel(channelName=n)
    ia.create_datastore(datastoreName=n)
    ia.create_pipeline(pipelineName=n, pipelineActivities=pipeline(
        n, n, n, {"math": {"attribute": "twice", "math": "seq * 2"}}))
    ia.create_dataset(datasetName=n, actions=[{"actionName": "q", "queryAction": {
        "sqlQuery": f"SELECT count(*) AS n, count(DISTINCT seq) AS d, sum(twice) AS total FROM {n}"}}])
    start = time.time() - 1
    assert put(ia, n, *({"seq": i} for i in range(10))) == []
    count_rows(ia, n, [{"n": "10", "d": "10", "total": str(sum(2 * i for i in range(10)))}])
    # boto3 sends startTime/endTime as whole seconds: the second batch arrives after the boundary.
    middle = math.ceil(time.time())
    let_time_pass(time.monotonic() + (middle - time.time()) + 0.01)
    assert put(ia, n, *({"seq": i} for i in range(10, 20))) == []
    count_rows(ia, n, [{"n": "20", "d": "20", "total": str(sum(2 * i for i in range(20)))}])

    rid = ia.start_pipeline_reprocessing(pipelineName=n, startTime=start, endTime=middle)["reprocessingId"]
    done = wait_until(lambda: (s := ia.describe_pipeline(pipelineName=n)["pipeline"]["reprocessingSummaries"])
                      and s[0]["status"] != "RUNNING" and s, 30, what="reprocessing")
    assert [(s["id"], s["status"]) for s in done] == [(rid, "SUCCEEDED")]
    assert "creationTime" in done[0]
    # The first ten went through the pipeline again (math included); the rest once.
    count_rows(ia, n, [{"n": "30", "d": "20",
                        "total": str(sum(2 * i for i in range(20)) + sum(2 * i for i in range(10)))}])
    listed = {p["pipelineName"]: p for p in ia.list_pipelines()["pipelineSummaries"]}
    assert listed[n]["reprocessingSummaries"][0]["id"] == rid

    with pytest.raises(ClientError) as exc:
        ia.cancel_pipeline_reprocessing(pipelineName=n, reprocessingId=rid)
    assert error_of(exc)[:2] == ("InvalidRequestException", 400)
    assert "not running" in error_of(exc)[2]
    with pytest.raises(ClientError) as exc:
        ia.cancel_pipeline_reprocessing(pipelineName=n, reprocessingId="nosuchid")
    assert error_of(exc)[:2] == ("ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as exc:
        ia.start_pipeline_reprocessing(pipelineName=n, startTime=start, channelMessages={"s3Paths": ["a/b"]})
    code, status, message = error_of(exc)
    assert (code, status) == ("InvalidRequestException", 400) and "startTime" in message
    with pytest.raises(ClientError) as exc:
        ia.start_pipeline_reprocessing(pipelineName=n, startTime=middle, endTime=start)
    assert error_of(exc)[:2] == ("InvalidRequestException", 400)
    with pytest.raises(ClientError) as exc:
        ia.start_pipeline_reprocessing(pipelineName=n + "_missing")
    assert error_of(exc)[:2] == ("ResourceNotFoundException", 404)


def test_pipeline_reprocessing_of_channel_messages_s3_paths(broker, ia, uid):
    """channelMessages.s3Paths: the keys of the channel's message files (for a service-managed
    channel `channels/<channel>/<file>`, its folder under the data folder's `analytics/`); the
    named files' messages go through the pipeline again, the others do not; a key that is not
    one of the channel's files fails the call itself and starts nothing."""
    n = ident(uid)
    ia.create_channel(channelName=n)
    ia.create_datastore(datastoreName=n)
    ia.create_pipeline(pipelineName=n, pipelineActivities=pipeline(
        n, n, n, {"math": {"attribute": "twice", "math": "seq * 2"}}))
    ia.create_dataset(datasetName=n, actions=[{"actionName": "q", "queryAction": {
        "sqlQuery": f"SELECT seq, count(*) AS n FROM {n} GROUP BY seq ORDER BY seq"}}])
    # Three calls, three channel files (each put is answered once its file is durable).
    for batch in range(3):
        assert put(ia, n, *({"seq": 10 * batch + i} for i in range(3))) == []
    once = [{"seq": str(10 * b + i), "n": "1"} for b in range(3) for i in range(3)]
    count_rows(ia, n, once)

    folder = broker.data_dir / "analytics" / "channels" / n
    files = {}
    for f in folder.glob("*.jsonl"):
        seqs = [json.loads(line.split("\t", 1)[1])["seq"] for line in f.read_text().splitlines()]
        files[seqs[0] // 10] = f"channels/{n}/{f.name}"
    assert sorted(files) == [0, 1, 2], files

    bad = [
        ({"s3Paths": [f"channels/{n}/{99999:020}.jsonl"]}, "is not stored in channel"),
        ({"s3Paths": [f"channels/other/{1:020}.jsonl"]}, f"its keys are channels/{n}/"),
        ({"s3Paths": [files[0], "no/such/key.jsonl"]}, "no/such/key.jsonl"),
        ({"s3Paths": [files[0]] * 101}, "1 to 100"),
    ]
    for messages, needle in bad:
        with pytest.raises(ClientError) as exc:
            ia.start_pipeline_reprocessing(pipelineName=n, channelMessages=messages)
        code, status, message = error_of(exc)
        assert (code, status) == ("InvalidRequestException", 400), message
        assert needle in message, message
    assert ia.describe_pipeline(pipelineName=n)["pipeline"]["reprocessingSummaries"] == []

    rid = ia.start_pipeline_reprocessing(pipelineName=n, channelMessages={"s3Paths": [files[2], files[0]]})[
        "reprocessingId"]
    done = wait_until(lambda: (s := ia.describe_pipeline(pipelineName=n)["pipeline"]["reprocessingSummaries"])
                      and s[0]["status"] != "RUNNING" and s, 30, what="reprocessing")
    assert [(s["id"], s["status"]) for s in done] == [(rid, "SUCCEEDED")]
    # The first and third files' messages landed a second time, the second file's did not.
    count_rows(ia, n, [{"seq": str(10 * b + i), "n": "1" if b == 1 else "2"} for b in range(3) for i in range(3)])


def test_scheduled_dataset_runs_by_itself_across_a_restart(broker_factory, aws, uid):
    b = broker_factory()
    ia = aws("iotanalytics", broker=b)
    n = ident(uid)
    ia.create_channel(channelName=n)
    ia.create_datastore(datastoreName=n)
    ia.create_pipeline(pipelineName=n, pipelineActivities=pipeline(n, n, n))
    ia.create_dataset(datasetName=n + "_all", actions=[{"actionName": "q", "queryAction": {
        "sqlQuery": f"SELECT count(*) AS n FROM {n}"}}])
    assert put(ia, n, *({"seq": i} for i in range(4))) == []
    count_rows(ia, n + "_all", [{"n": "4"}])

    every_minute = [{"schedule": {"expression": "cron(0/1 * * * ? *)"}}]
    ia.create_dataset(datasetName=n + "_s", triggers=every_minute, actions=[{"actionName": "q", "queryAction": {
        "sqlQuery": f"SELECT max(seq) AS top FROM {n}"}}])
    ia.create_dataset(datasetName=n + "_t", triggers=[{"dataset": {"name": n + "_s"}}], actions=[{
        "actionName": "q", "queryAction": {"sqlQuery": f"SELECT min(seq) AS low FROM {n}"}}])
    described = ia.describe_dataset(datasetName=n + "_s")["dataset"]
    assert described["triggers"] == every_minute
    assert [d["triggers"] for d in ia.list_datasets()["datasetSummaries"] if d["datasetName"] == n + "_t"] == [
        [{"dataset": {"name": n + "_s"}}]]
    # The schedule is stored: it fires after a restart without anyone asking for content.
    b.stop()
    b.start()
    ia = aws("iotanalytics", broker=b)

    def succeeded(dataset):
        contents = ia.list_dataset_contents(datasetName=dataset)["datasetContentSummaries"]
        return [c for c in contents if c["status"]["state"] == "SUCCEEDED"]

    wait_until(lambda: succeeded(n + "_s"), 90, interval=0.5, what="a scheduled content")
    assert content_rows_latest(ia, n + "_s") == [{"top": "3"}]
    wait_until(lambda: succeeded(n + "_t"), 30, interval=0.3, what="the triggered dataset's content")
    assert content_rows_latest(ia, n + "_t") == [{"low": "0"}]

    for triggers, needle in (([{"schedule": {"expression": "cron(0 12 L * ? *)"}}], "not supported"),
                             ([{"schedule": {"expression": "rate(5 weeks)"}}], "weeks"),
                             ([{"dataset": {"name": n + "_missing"}}], n + "_missing"),
                             ([{"dataset": {"name": n + "_t"}}], "trigger itself")):
        with pytest.raises(ClientError) as exc:
            ia.update_dataset(datasetName=n + "_s", triggers=triggers, actions=described["actions"])
        assert needle in error_of(exc)[2], error_of(exc)


def content_rows_latest(ia, dataset: str) -> list[dict]:
    """The rows of the dataset's latest succeeded content."""
    got = ia.get_dataset_content(datasetName=dataset, versionId="$LATEST_SUCCEEDED")
    (entry,) = got["entries"]
    with urllib.request.urlopen(entry["dataURI"], timeout=10) as r:
        return list(csv.DictReader(io.StringIO(r.read().decode())))


def test_delta_window_reads_only_new_rows(ia, uid):
    n = ident(uid)
    ia.create_channel(channelName=n)
    ia.create_datastore(datastoreName=n)
    ia.create_pipeline(pipelineName=n, pipelineActivities=pipeline(n, n, n))
    ia.create_dataset(datasetName=n + "_all", actions=[{"actionName": "q", "queryAction": {
        "sqlQuery": f"SELECT count(*) AS n FROM {n}"}}])
    ia.create_dataset(datasetName=n, actions=[{"actionName": "q", "queryAction": {
        "sqlQuery": f"SELECT seq FROM {n} ORDER BY seq",
        "filters": [{"deltaTime": {"offsetSeconds": 0, "timeExpression": "to_timestamp_millis(ts)"}}]}}])
    now = int(time.time() * 1000)
    assert put(ia, n, {"seq": 1, "ts": now - 100_000}, {"seq": 2, "ts": now - 50_000}) == []
    count_rows(ia, n + "_all", [{"n": "2"}])
    assert content_rows(ia, n) == [{"seq": "1"}, {"seq": "2"}]
    assert content_rows(ia, n) == []
    # Stamped after the last window; a row stamped in the future stays out until its time.
    now = int(time.time() * 1000)
    assert put(ia, n, {"seq": 3, "ts": now}, {"seq": 4, "ts": now + 3_600_000}) == []
    count_rows(ia, n + "_all", [{"n": "4"}])
    assert content_rows(ia, n) == [{"seq": "3"}]
    # The default versioning keeps the latest version (and the latest succeeded: the same).
    contents = ia.list_dataset_contents(datasetName=n)["datasetContentSummaries"]
    assert len(contents) == 1 and contents[0]["status"]["state"] == "SUCCEEDED"

    twice = [{"deltaTime": {"offsetSeconds": 0, "timeExpression": "ts"}}] * 2
    with pytest.raises(ClientError) as exc:
        ia.create_dataset(datasetName=n + "_bad", actions=[{"actionName": "q", "queryAction": {
            "sqlQuery": "SELECT 1", "filters": twice}}])
    assert "at most one" in error_of(exc)[2]
