"""IoT Analytics datastore layout through boto3: a Parquet datastore with a fixed schema
(`parquetConfiguration.schemaDefinition`) and a `timestampPartition`: the rows land in the day
folder of their own timestamp attribute (epoch seconds, epoch milliseconds or RFC 3339 text;
the arrival day without one), the Parquet files hold exactly the schema's columns with its
types (read with pyarrow), and the dataset CSV gives the expected rows."""

from __future__ import annotations

import time

import pytest

from test_analytics import ia, ident, pipeline, put, rows_eventually  # noqa: F401 (ia: fixture)

pytestmark = pytest.mark.fleetcore_only("IoT Analytics is fleetcore's")


def test_fixed_schema_and_timestamp_partition(broker, ia, uid):
    pq = pytest.importorskip("pyarrow.parquet")
    n = ident(uid)
    schema = [{"name": "seq", "type": "bigint"}, {"name": "temp", "type": "double"},
              {"name": "site", "type": "string"}]
    ia.create_channel(channelName=n)
    ia.create_datastore(
        datastoreName=n,
        fileFormatConfiguration={"parquetConfiguration": {"schemaDefinition": {"columns": schema}}},
        datastorePartitions={"partitions": [{"timestampPartition": {"attributeName": "ts"}}]})
    described = ia.describe_datastore(datastoreName=n)["datastore"]
    assert described["fileFormatConfiguration"]["parquetConfiguration"]["schemaDefinition"]["columns"] == schema
    ia.create_pipeline(pipelineName=n, pipelineActivities=pipeline(n, n, n))
    ia.create_dataset(datasetName=n, actions=[{"actionName": "q", "queryAction": {
        "sqlQuery": f"SELECT __dt, seq, temp, site FROM {n} ORDER BY seq"}}])

    today = time.strftime("%Y-%m-%d", time.gmtime())
    messages = [
        {"seq": 1, "temp": 20, "site": "north", "ts": 1_704_196_800, "extra": "dropped"},  # 2024-01-02, seconds
        {"seq": 2, "temp": 21.5, "site": "south", "ts": 1_704_283_200_000},  # 2024-01-03, milliseconds
        {"seq": 3, "temp": -4.25, "site": "east", "ts": "2024-01-04T10:00:00Z"},  # RFC 3339
        {"seq": 4, "temp": 0.5, "site": "west"},  # no timestamp: the arrival day
    ]
    assert put(ia, n, *messages) == []
    expected = [
        {"__dt": "2024-01-02", "seq": "1", "temp": "20.0", "site": "north"},
        {"__dt": "2024-01-03", "seq": "2", "temp": "21.5", "site": "south"},
        {"__dt": "2024-01-04", "seq": "3", "temp": "-4.25", "site": "east"},
        {"__dt": today, "seq": "4", "temp": "0.5", "site": "west"},
    ]
    assert rows_eventually(ia, n, len(expected)) == expected

    folder = broker.data_dir / "analytics" / "datastores" / n
    files = sorted(folder.rglob("*.parquet"))
    assert sorted({f.parent.name for f in files}) == sorted({f"__dt={r['__dt']}" for r in expected})
    for f in files:
        table = pq.read_table(f, partitioning=None)
        assert [(c.name, str(c.type)) for c in table.schema] == [
            ("seq", "int64"), ("temp", "double"), ("site", "string")], f
