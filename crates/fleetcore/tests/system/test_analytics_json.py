"""IoT Analytics JSON datastores (`fileFormatConfiguration.jsonConfiguration`): boto3 round trip
(Describe and List show the JSON format); whole system: BatchPutMessage -> pipeline (filter,
math) -> Hive-partitioned newline-delimited JSON files -> dataset SQL -> the CSV equal to the
expected rows; the files read with Python's json hold exactly those rows; `fleetcore sql` reads
the same datastore from the data folder."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import time

import pytest

from brokers import FLEETCORE_BIN
from test_analytics import ident, pipeline, put, rows_eventually

pytestmark = pytest.mark.fleetcore_only("IoT Analytics is fleetcore's")


def test_json_datastore_from_batch_put_to_dataset_csv(broker_factory, aws, uid):
    b = broker_factory()
    ia = aws("iotanalytics", broker=b)
    n = ident(uid)
    ia.create_channel(channelName=n)
    ia.create_datastore(datastoreName=n, fileFormatConfiguration={"jsonConfiguration": {}},
                        datastorePartitions={"partitions": [{"attributePartition": {"attributeName": "site"}}]})
    described = ia.describe_datastore(datastoreName=n)["datastore"]
    assert described["fileFormatConfiguration"] == {"jsonConfiguration": {}}
    (summary,) = [d for d in ia.list_datastores()["datastoreSummaries"] if d["datastoreName"] == n]
    assert summary["fileFormatType"] == "JSON"

    ia.create_pipeline(pipelineName=n, pipelineActivities=pipeline(
        n, n, n, {"filter": {"filter": "temp > 0"}}, {"math": {"attribute": "twice", "math": "temp * 2"}}))
    sql = f"SELECT site, seq, temp, twice, label FROM {n} ORDER BY seq"
    ia.create_dataset(datasetName=n, actions=[{"actionName": "q", "queryAction": {"sqlQuery": sql}}])
    messages = [{"seq": i, "site": "ab"[i % 2], "temp": i - 3, **({"label": f"r {i}"} if i % 3 == 0 else {})}
                for i in range(12)]
    assert put(ia, n, *messages) == []
    kept = [m for m in messages if m["temp"] > 0]
    expected = [{"site": m["site"], "seq": str(m["seq"]), "temp": str(m["temp"]),
                 "twice": str(m["temp"] * 2), "label": m.get("label", "")} for m in kept]
    assert rows_eventually(ia, n, len(expected)) == expected

    # The files: one JSON object a line under __dt=<day>/site=<site>/, exactly the rows (the
    # partition attribute in the folder name, an absent attribute left out).
    folder = b.data_dir / "analytics" / "datastores" / n
    today = time.strftime("%Y-%m-%d", time.gmtime())
    files = sorted(folder.rglob("*.json"))
    assert files and all(f.parent.parent.name == f"__dt={today}" for f in files), files
    assert not list(folder.rglob("*.parquet"))
    rows = []
    for f in files:
        site = f.parent.name.removeprefix("site=")
        rows += [{**json.loads(line), "site": site} for line in f.read_text().splitlines()]
    assert sorted(rows, key=lambda r: r["seq"]) == [
        {**m, "twice": m["temp"] * 2} for m in kept]
    assert ia.describe_datastore(datastoreName=n, includeStatistics=True)[
        "statistics"]["size"]["estimatedSizeInBytes"] > 0

    # `fleetcore sql` finds the JSON datastore in the data folder.
    out = subprocess.run([str(FLEETCORE_BIN), "sql", "--data-dir", str(b.data_dir), "--format", "csv",
                          f"SELECT site, count(*) AS n, sum(temp) AS t FROM {n} GROUP BY site ORDER BY site"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    by_site = {s: [m for m in kept if m["site"] == s] for s in "ab"}
    assert list(csv.DictReader(io.StringIO(out.stdout))) == [
        {"site": s, "n": str(len(ms)), "t": str(sum(m["temp"] for m in ms))} for s, ms in by_site.items()]
