#!/usr/bin/env python3
"""PutMetricData throughput: datapoints stored per second through boto3 (JSON 1.0 wire, what
botocore 1.42.50 speaks to CloudWatch) against a running fleetcore, by THREADS clients each
sending batches of BATCH datapoints (AWS's limit: 1000 per call) over 20 series for SECONDS.
There is no Mosquitto equivalent, so no anchor: the figure is absolute and machine-bound.

    FLEETCORE=http://127.0.0.1:8080 DATA=fleetcore-data .venv/bin/python benches/put_metric_data.py
"""
import configparser
import os
import threading
import time
from datetime import datetime, timezone

import boto3
from botocore.config import Config

ENDPOINT = os.environ.get("FLEETCORE", "http://127.0.0.1:8080")
DATA = os.environ.get("DATA", "fleetcore-data")
THREADS = int(os.environ.get("THREADS", "4"))
BATCH = int(os.environ.get("BATCH", "1000"))
SECONDS = float(os.environ.get("SECONDS", "10"))

cp = configparser.ConfigParser()
cp.read(os.path.join(DATA, "credentials"))
key, secret = cp["fleetcore"]["aws_access_key_id"], cp["fleetcore"]["aws_secret_access_key"]


def worker(index: int, counts: list, stop: float) -> None:
    cw = boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret,
                               region_name="us-east-1").client(
        "cloudwatch", endpoint_url=ENDPOINT, config=Config(retries={"max_attempts": 1}))
    sent = 0
    while time.monotonic() < stop:
        now = datetime.now(timezone.utc)
        cw.put_metric_data(Namespace="Bench", MetricData=[
            {"MetricName": f"m{i % 20}", "Dimensions": [{"Name": "Worker", "Value": str(index)}],
             "Timestamp": now, "Value": float(i)} for i in range(BATCH)])
        sent += BATCH
    counts[index] = sent


counts = [0] * THREADS
start = time.monotonic()
threads = [threading.Thread(target=worker, args=(i, counts, start + SECONDS)) for i in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
elapsed = time.monotonic() - start
print(f"threads={THREADS} batch={BATCH} datapoints={sum(counts)} seconds={elapsed:.1f} "
      f"datapoints_per_s={sum(counts) / elapsed:.0f}")
