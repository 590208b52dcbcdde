"""How long a fleetcore node alone takes, after a SIGKILL and restart, to run records put on a
mapped Kinesis stream through its Lambda event source mapping: its poller's leases are named
after the node id (kept in the data folder), so it takes them back at once instead of waiting
out the lease TTL (10 s). Embedded streams and state; a Python function copying each record to
a second stream; 8 records on 2 shards before and after the restart.

    FLEETCORE_BIN=target/debug/fleetcore PORT=25080 python benches/esm_restart.py

Needs boto3 in the interpreter that runs it (functions run with it too)."""

import io, os, signal, subprocess, sys, tempfile, time, zipfile
import boto3
BIN = os.environ.get("FLEETCORE_BIN", "target/debug/fleetcore")
DATA = tempfile.mkdtemp(prefix="esm-restart-")
PORT = int(os.environ.get("PORT", "25080"))
env = dict(os.environ, FLEETCORE_ACCESS_KEY_ID="AKIDRESTART000000001", FLEETCORE_SECRET_ACCESS_KEY="restart-secret-0000000000000000000000000",
           FLEETCORE_FUNCTIONS_PYTHON=sys.executable)
HTTP = f"127.0.0.1:{PORT}"
def start():
    p = subprocess.Popen([BIN, "serve", "--data-dir", DATA, "--http", HTTP, "--mqtt", f"127.0.0.1:{PORT + 1}", "--mqtts", f"127.0.0.1:{PORT + 2}", "--allow-anonymous"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import urllib.request
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://{HTTP}/health", timeout=1); return p
        except Exception: time.sleep(0.1)
    raise SystemExit("no health")
def client(svc):
    return boto3.client(svc, endpoint_url=f"http://{HTTP}", region_name="us-east-1", aws_access_key_id=env["FLEETCORE_ACCESS_KEY_ID"], aws_secret_access_key=env["FLEETCORE_SECRET_ACCESS_KEY"])
CODE = """
import base64, json, os, boto3
k = boto3.client("kinesis")
def handler(event, context):
    k.put_records(StreamName="out", Records=[{"Data": base64.b64decode(r["kinesis"]["data"]), "PartitionKey": "k"} for r in event["Records"]])
"""
def outs(k):
    res = []
    for sh in k.list_shards(StreamName="out")["Shards"]:
        it = k.get_shard_iterator(StreamName="out", ShardId=sh["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        res += [r["Data"] for r in k.get_records(ShardIterator=it, Limit=10000)["Records"]]
    return res
p = start()
print("node id:", open(f"{DATA}/node-id").read().strip())
k, lam = client("kinesis"), client("lambda")
k.create_stream(StreamName="in", ShardCount=2); k.create_stream(StreamName="out", ShardCount=1)
z = io.BytesIO(); zf = zipfile.ZipFile(z, "w"); zf.writestr("app.py", CODE); zf.close()
lam.create_function(FunctionName="f", Runtime="python3.11", Role="arn:aws:iam::000000000000:role/x", Handler="app.handler", Code={"ZipFile": z.getvalue()}, Timeout=30)
lam.create_event_source_mapping(EventSourceArn="arn:aws:kinesis:us-east-1:000000000000:stream/in", FunctionName="f", BatchSize=10, StartingPosition="TRIM_HORIZON")
def put_and_time(tag):
    k.put_records(StreamName="in", Records=[{"Data": f"{tag}-{i}".encode(), "PartitionKey": f"p{i}"} for i in range(8)])
    t = time.monotonic()
    while len([o for o in outs(k) if o.startswith(tag.encode())]) < 8:
        time.sleep(0.1)
        if time.monotonic() - t > 60: return "not within 60 s"
    return "%.1f s" % (time.monotonic() - t)
print("first run: 8 records (2 shards) through the function in %s" % put_and_time("one"))
p.send_signal(signal.SIGKILL); p.wait()
t0 = time.monotonic(); p = start(); up = time.monotonic() - t0
k, lam = client("kinesis"), client("lambda")
print("after SIGKILL + restart (up in %.1f s): 8 records through in %s (lease TTL 10 s)" % (up, put_and_time("two")))
p.send_signal(signal.SIGTERM); p.wait()
