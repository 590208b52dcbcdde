"""The rules engine end to end: rules created with boto3 run on messages published by real MQTT
clients and deliver to MQTT (republish), a Kinesis stream, a Firehose delivery stream (the lake)
and an HTTP endpoint; substitution templates see the original payload; the SQL functions get the
message's context; failing actions fire the errorAction with AWS's error payload; disabled rules
deliver nothing; and after a SIGKILL mid-load every PUBACKed message reaches the stream."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from brokers import HOST, Broker, free_port, wait_until
from clients import V5, V311
from test_firehose import records_in, s3_destination

pytestmark = pytest.mark.fleetcore_only("the rules engine is fleetcore's")

ROLE = "arn:aws:iam::000000000000:role/rules"
PUBLISHERS = 8


@pytest.fixture(scope="module")
def rb(tmp_path_factory):
    """A server of this module's own; rule actions retry fast (50 ms, doubling) so the
    errorAction tests do not wait 15 s."""
    b = Broker(tmp_path_factory.mktemp("rules-broker"), name="rules",
               env={"FLEETCORE_TEST_RULES_RETRY_BACKOFF_MS": "50"})
    b.start()
    yield b
    b.stop()


def rule_name(uid: str) -> str:
    return uid.replace("-", "_")


def create_rule(iot, name: str, sql: str, actions: list, **extra) -> None:
    payload = {"sql": sql, "awsIotSqlVersion": "2016-03-23", "actions": actions}
    payload.update(extra)
    iot.create_topic_rule(ruleName=name, topicRulePayload=payload)


def stream_records(kinesis, stream: str) -> list[dict]:
    """Every record of every shard of `stream`, from the start."""
    out = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        it = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                        ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while it:
            page = kinesis.get_records(ShardIterator=it, Limit=10000)
            out += page["Records"]
            if not page["Records"] or page.get("MillisBehindLatest", 0) == 0:
                break
            it = page.get("NextShardIterator")
    return out


def wait_stream(kinesis, stream: str, pred, timeout: float = 30) -> list[dict]:
    found: list[dict] = []

    def ready():
        found[:] = stream_records(kinesis, stream)
        return pred(found)

    wait_until(ready, timeout, interval=0.2, what=f"records in {stream}")
    return found


# ---------------------------------------------------------------------------------------------
# the workshop rule: republish + Kinesis + Firehose, templates on the original payload

def test_rule_delivers_to_republish_kinesis_and_firehose(rb, aws, clients, uid):
    iot, kinesis, firehose = aws("iot", broker=rb), aws("kinesis", broker=rb), aws("firehose", broker=rb)
    stream, delivery, bucket = f"s-{uid}", f"d-{uid}", f"lake-{uid}".lower()[:60]
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    firehose.create_delivery_stream(DeliveryStreamName=delivery, DeliveryStreamType="DirectPut",
                                    ExtendedS3DestinationConfiguration=s3_destination(bucket))
    create_rule(iot, rule_name(uid),
                f"SELECT *, topic(2) AS thing FROM 'devices/+/telemetry' WHERE temperature > 50 AND run = '{uid}'",
                [{"republish": {"roleArn": ROLE, "topic": "alerts/${thingType}/${severity}", "qos": 1}},
                 {"kinesis": {"roleArn": ROLE, "streamName": stream, "partitionKey": "${topic(2)}"}},
                 {"firehose": {"roleArn": ROLE, "deliveryStreamName": delivery, "separator": "\n"}}])
    sub = clients(V5, broker=rb)
    sub.subscribe(f"alerts/pump-{uid}/#", qos=1)
    dev = clients(V311, broker=rb, client_id=f"dev-{uid}")
    cold = {"run": uid, "temperature": 20, "thingType": f"pump-{uid}", "severity": "low"}
    hot = {"run": uid, "temperature": 71, "thingType": f"pump-{uid}", "severity": "high"}
    dev.publish("devices/d7/telemetry", json.dumps(cold), qos=1)
    dev.publish("devices/d7/telemetry", json.dumps(hot), qos=1)

    msg = sub.wait_message(timeout=20, topic=f"alerts/pump-{uid}/high")
    assert json.loads(msg.payload) == {**hot, "thing": "d7"}
    records = wait_stream(kinesis, stream, lambda r: len(r) >= 1)
    assert [json.loads(r["Data"]) for r in records] == [{**hot, "thing": "d7"}]
    assert records[0]["PartitionKey"] == "d7"
    wait_until(lambda: records_in(rb, bucket), 30, interval=0.2, what="a lake object")
    assert [json.loads(line) for line in records_in(rb, bucket)] == [{**hot, "thing": "d7"}]
    # WHERE false: the cold reading went nowhere (it was published first, so it would be here)
    assert [m.topic for m in sub.received] == [f"alerts/pump-{uid}/high"]


# ---------------------------------------------------------------------------------------------
# the SQL functions see the message's context

def test_functions_get_the_message_context(rb, aws, clients, uid):
    iot, data = aws("iot", broker=rb), aws("iot-data", broker=rb)
    thing = f"t-{uid}"
    data.update_thing_shadow(thingName=thing, payload=json.dumps({"state": {"reported": {"rpm": 1200}}}))
    sql = ("SELECT topic() AS topic, topic(3) AS thing, clientid() AS client, principal() AS who, "
           "timestamp() AS ts, traceid() AS trace, newuuid() AS id, "
           f"get_thing_shadow(topic(3), '{ROLE}') AS shadow, "
           "abs(n) AS abs, ceil(x) AS ceil, floor(x) AS floor, round(x) AS round, mod(length(s), 3) AS mod, "
           "power(2, 10) AS power, sqrt(16) AS sqrt, ln(1) AS ln, log(100) AS log, "
           "lower(s) AS lower, upper(s) AS upper, trim('  a ') AS trim, substring(s, 1, 3) AS substring, "
           "concat(s, '-', n) AS concat, length(s) AS length, startswith(s, 'He') AS startswith, "
           "endswith(s, 'lo') AS endswith, indexof(s, 'l') AS indexof, replace(s, 'l', 'L') AS replace, "
           "regexp_matches(s, 'e.l') AS rm, regexp_replace(s, '[aeiou]', '_') AS rr, "
           "isnull(z) AS isnull, isundefined(nothing) AS isundefined, isstring(s) AS isstring, "
           "isnumber(n) AS isnumber, isboolean(b) AS isboolean, isobject(o) AS isobject, "
           "isarray(arr) AS isarray, get(arr, 1) AS get, encode(s, 'base64') AS encode, md5(s) AS md5, "
           "sha256(s) AS sha256, parse_time('yyyy-MM-dd', 0) AS parse_time, "
           "time_to_epoch('1970-01-02', 'yyyy-MM-dd') AS epoch, cast(n AS String) AS cast "
           f"FROM 'ctx/{uid}/+'")
    create_rule(iot, rule_name(uid), sql,
                [{"republish": {"roleArn": ROLE, "topic": f"ctx-out/{uid}/${{clientid()}}", "qos": 1,
                                "headers": {"contentType": "application/json",
                                            "userProperties": [{"key": "thing", "value": "${topic(3)}"}]}}}])
    sub = clients(V5, broker=rb)
    sub.subscribe(f"ctx-out/{uid}/#", qos=1)
    dev = clients(V5, broker=rb, client_id=f"c-{uid}")
    before = int(time.time() * 1000)
    dev.publish(f"ctx/{uid}/{thing}", json.dumps(
        {"n": -7, "x": 2.5, "s": "Hello", "z": None, "b": True, "o": {"k": 1}, "arr": [10, 20]}), qos=1)
    msg = sub.wait_message(timeout=20, topic=f"ctx-out/{uid}/c-{uid}")
    out = json.loads(msg.payload)
    assert msg.properties.ContentType == "application/json"
    assert msg.properties.UserProperty == [("thing", thing)]
    assert out["topic"] == f"ctx/{uid}/{thing}" and out["thing"] == thing
    assert out["client"] == f"c-{uid}"
    assert out["who"] == "anonymous"
    assert before - 1000 <= out["ts"] <= int(time.time() * 1000) + 1000
    uuid.UUID(out["trace"])
    assert uuid.UUID(out["id"]).version == 4
    assert out["shadow"]["state"]["reported"] == {"rpm": 1200}
    expected = {"abs": 7, "ceil": 3, "floor": 2, "round": 3, "mod": 2, "power": 1024, "sqrt": 4,
                "ln": 0, "log": 2, "lower": "hello", "upper": "HELLO", "trim": "a", "substring": "el",
                "concat": "Hello--7", "length": 5, "startswith": True, "endswith": True, "indexof": 2,
                "replace": "HeLLo", "rm": True, "rr": "H_ll_", "isnull": True, "isundefined": True,
                "isstring": True, "isnumber": True, "isboolean": True, "isobject": True, "isarray": True,
                "get": 20, "encode": "SGVsbG8=", "md5": "8b1a9953c4611296a827abf8c47804d7",
                "sha256": "185f8db32271fe25f561a6fc938b2e264306ec304eda518007d1764826381969",
                "parse_time": "1970-01-01", "epoch": 86400000, "cast": "-7"}
    assert {k: out.get(k) for k in expected} == expected


def test_republish_to_a_reserved_topic_with_double_dollar_updates_a_shadow(rb, aws, clients, uid):
    iot, data = aws("iot", broker=rb), aws("iot-data", broker=rb)
    thing = f"sh-{uid}"
    create_rule(iot, rule_name(uid), f"SELECT state FROM 'feed/{uid}/+'",
                [{"republish": {"roleArn": ROLE, "topic": "$$aws/things/${topic(3)}/shadow/update", "qos": 1}}])
    clients(V5, broker=rb).publish(f"feed/{uid}/{thing}", json.dumps({"state": {"reported": {"t": 5}}}), qos=1)

    def reported():
        try:
            doc = json.loads(data.get_thing_shadow(thingName=thing)["payload"].read())
        except data.exceptions.ResourceNotFoundException:
            return None
        return doc["state"].get("reported")

    assert wait_until(reported, 20, interval=0.1, what="the shadow update") == {"t": 5}


# ---------------------------------------------------------------------------------------------
# the http action, and the errorAction when a destination is down

class _Recorder(BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).seen.append((self.path, dict(self.headers), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_http_action_posts_the_rule_output(rb, aws, clients, uid):
    server = HTTPServer((HOST, 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        create_rule(aws("iot", broker=rb), rule_name(uid), f"SELECT v * 2 AS doubled FROM 'web/{uid}/+'",
                    [{"http": {"url": f"http://{HOST}:{port}/hook/${{topic(3)}}",
                               "headers": [{"key": "x-thing", "value": "${topic(3)}-${v}"}]}}])
        clients(V5, broker=rb).publish(f"web/{uid}/pump1", json.dumps({"v": 21}), qos=1)
        wait_until(lambda: any(p == "/hook/pump1" for p, _, _ in _Recorder.seen), 20, what="the POST")
        path, headers, body = next(s for s in _Recorder.seen if s[0] == "/hook/pump1")
        assert json.loads(body) == {"doubled": 42}
        assert {k.lower(): v for k, v in headers.items()}["x-thing"] == "pump1-21"
    finally:
        server.shutdown()


def error_payload_for(sub, topic: str) -> dict:
    return json.loads(sub.wait_message(timeout=30, topic=topic).payload)


def test_error_action_fires_when_the_http_destination_is_down(rb, aws, clients, uid):
    closed = free_port()
    name = rule_name(uid)
    create_rule(aws("iot", broker=rb), name, f"SELECT * FROM 'down/{uid}'",
                [{"http": {"url": f"http://{HOST}:{closed}/never"}}],
                errorAction={"republish": {"roleArn": ROLE, "topic": f"errors/{uid}/${{topic(2)}}"}})
    sub = clients(V5, broker=rb)
    sub.subscribe(f"errors/{uid}/#", qos=1)
    original = json.dumps({"reading": 1}).encode()
    clients(V5, broker=rb, client_id=f"p-{uid}").publish(f"down/{uid}", original, qos=1)
    err = error_payload_for(sub, f"errors/{uid}/{uid}")
    assert err["ruleName"] == name
    assert err["topic"] == f"down/{uid}"
    assert err["clientId"] == f"p-{uid}"
    assert base64.b64decode(err["base64OriginalPayload"]) == original
    uuid.UUID(err["cloudwatchTraceId"])
    [failure] = err["failures"]
    assert failure["failedAction"] == "HttpAction"
    assert failure["failedResource"] == f"http://{HOST}:{closed}/never"
    assert "connecting" in failure["errorMessage"]
    metrics = rb.metrics()
    assert metrics[f'fleetcore_rules_error_action_fired_total{{rule="{name}",action="0:http"}}'] == 1
    assert metrics[f'fleetcore_rules_action_failed_total{{rule="{name}",action="0:http"}}'] == 1


def test_lambda_action_fails_honestly_and_the_error_action_fires(rb, aws, clients, uid):
    fn = "arn:aws:lambda:us-east-1:000000000000:function:enrich"
    create_rule(aws("iot", broker=rb), rule_name(uid), f"SELECT * FROM 'fn/{uid}'",
                [{"lambda": {"functionArn": fn}}],
                errorAction={"republish": {"roleArn": ROLE, "topic": f"fn-errors/{uid}"}})
    sub = clients(V5, broker=rb)
    sub.subscribe(f"fn-errors/{uid}", qos=1)
    clients(V5, broker=rb).publish(f"fn/{uid}", b'{"a":1}', qos=1)
    [failure] = error_payload_for(sub, f"fn-errors/{uid}")["failures"]
    assert failure["failedAction"] == "LambdaAction"
    assert failure["failedResource"] == fn
    assert "Function not found" in failure["errorMessage"]


# ---------------------------------------------------------------------------------------------
# disabled rules, enabling starts at the tail

def test_disabled_rule_delivers_nothing_until_enabled(rb, aws, clients, uid):
    iot = aws("iot", broker=rb)
    off, fence = rule_name(uid) + "_off", rule_name(uid) + "_fence"
    create_rule(iot, off, f"SELECT * FROM 'dis/{uid}'",
                [{"republish": {"roleArn": ROLE, "topic": f"dis-out/{uid}/off"}}], ruleDisabled=True)
    create_rule(iot, fence, f"SELECT * FROM 'dis/{uid}'",
                [{"republish": {"roleArn": ROLE, "topic": f"dis-out/{uid}/fence"}}])
    sub = clients(V5, broker=rb)
    sub.subscribe(f"dis-out/{uid}/#", qos=1)
    pub = clients(V5, broker=rb)
    pub.publish(f"dis/{uid}", b'{"n":1}', qos=1)
    sub.wait_message(timeout=20, topic=f"dis-out/{uid}/fence")
    iot.enable_topic_rule(ruleName=off)
    pub.publish(f"dis/{uid}", b'{"n":2}', qos=1)
    sub.wait_messages(2, timeout=20, topic=f"dis-out/{uid}/fence")
    msg = sub.wait_message(timeout=20, topic=f"dis-out/{uid}/off")
    # the message published while the rule was disabled never reaches it
    assert [m.payload for m in sub.received if m.topic.endswith("/off")] == [b'{"n":2}']
    assert json.loads(msg.payload) == {"n": 2}


def test_replace_and_delete_take_effect_before_the_call_returns(rb, aws, clients, uid):
    iot = aws("iot", broker=rb)
    name, fence = rule_name(uid), rule_name(uid) + "_fence"
    create_rule(iot, fence, f"SELECT * FROM 'chg/{uid}'",
                [{"republish": {"roleArn": ROLE, "topic": f"chg-out/{uid}/fence"}}])
    create_rule(iot, name, f"SELECT * FROM 'chg/{uid}'",
                [{"republish": {"roleArn": ROLE, "topic": f"chg-out/{uid}/a"}}])
    sub = clients(V5, broker=rb)
    sub.subscribe(f"chg-out/{uid}/#", qos=1)
    pub = clients(V5, broker=rb)
    pub.publish(f"chg/{uid}", b'{"n":1}', qos=1)
    sub.wait_message(timeout=20, topic=f"chg-out/{uid}/a")
    iot.replace_topic_rule(ruleName=name, topicRulePayload={
        "sql": f"SELECT n + 10 AS n FROM 'chg/{uid}'", "awsIotSqlVersion": "2016-03-23",
        "actions": [{"republish": {"roleArn": ROLE, "topic": f"chg-out/{uid}/b"}}]})
    pub.publish(f"chg/{uid}", b'{"n":2}', qos=1)
    assert json.loads(sub.wait_message(timeout=20, topic=f"chg-out/{uid}/b").payload) == {"n": 12}
    iot.delete_topic_rule(ruleName=name)
    pub.publish(f"chg/{uid}", b'{"n":3}', qos=1)
    sub.wait_messages(3, timeout=20, topic=f"chg-out/{uid}/fence")
    # the deleted rule's worker was stopped before DeleteTopicRule returned: n=3 never went out
    assert [m.payload for m in sub.received if not m.topic.endswith("/fence")] == [b'{"n":1}', b'{"n":12}']


# ---------------------------------------------------------------------------------------------
# crash: SIGKILL mid-load, every PUBACKed message reaches the stream after the restart

def test_every_acknowledged_message_survives_a_crash(broker_factory, aws, uid):
    b = broker_factory()
    iot, kinesis = aws("iot", broker=b), aws("kinesis", broker=b)
    stream = f"crash-{uid}"
    kinesis.create_stream(StreamName=stream, ShardCount=2)
    create_rule(iot, rule_name(uid), "SELECT * FROM 'load/+'",
                [{"kinesis": {"roleArn": ROLE, "streamName": stream, "partitionKey": "${topic(2)}"}}])
    # Per publisher: what each packet id carried, and the ids PUBACKed (paho calls on_publish on
    # its network thread when the PUBACK arrives). Ids are not reused below 65535 messages.
    # 8 publishers x 100 in flight: more than one ingest put (500 records) waits at once.
    sent: list[dict[int, tuple[int, int]]] = [{} for _ in range(PUBLISHERS)]
    acked_ids: list[set[int]] = [set() for _ in range(PUBLISHERS)]
    stop = threading.Event()

    def publisher(n: int):
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"load-{n}-{uid}",
                        protocol=mqtt.MQTTv311, reconnect_on_failure=False)
        c.max_inflight_messages_set(100)
        c.max_queued_messages_set(200)
        c.on_publish = lambda client, userdata, mid, rc, props: acked_ids[n].add(mid)
        c.connect(HOST, b.ports["mqtt"])
        c.loop_start()
        try:
            for i in range(60000):
                if stop.is_set():
                    break
                body = json.dumps({"p": n, "i": i})
                info = c.publish(f"load/p{n}", body, qos=1)
                if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                    time.sleep(0.002)
                    continue
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    break
                sent[n][info.mid] = (n, i)
        finally:
            c.loop_stop()

    def acked() -> set[tuple[int, int]]:
        return {sent[n][mid] for n in range(PUBLISHERS) for mid in list(acked_ids[n]) if mid in sent[n]}

    threads = [threading.Thread(target=publisher, args=(n,), daemon=True) for n in range(PUBLISHERS)]
    for t in threads:
        t.start()
    wait_until(lambda: sum(len(a) for a in acked_ids) >= 5000, 60, what="5000 acknowledged messages")
    b.kill()
    stop.set()
    for t in threads:
        t.join(10)
    acked_now = acked()
    b.start()
    kinesis = aws("kinesis", broker=b)

    def delivered_of(records) -> set[tuple[int, int]]:
        return {(d["p"], d["i"]) for d in (json.loads(r["Data"]) for r in records)}

    def all_there(records):
        return acked_now <= delivered_of(records)

    try:
        wait_stream(kinesis, stream, all_there, timeout=60)
    except AssertionError:
        pass
    delivered = delivered_of(stream_records(kinesis, stream))
    missing = acked_now - delivered
    assert len(acked_now) >= 5000
    assert not missing, f"{len(missing)} of {len(acked_now)} acknowledged messages lost " \
        f"({len(delivered)} delivered), e.g. {sorted(missing)[:5]}"
