"""The rules engine end to end: rules created with boto3 run on messages published by real MQTT
clients and deliver to MQTT (republish), a Kinesis stream and a Firehose delivery stream (the
lake); substitution templates see the original payload; the SQL functions get the message's
context; disabled rules deliver nothing; each rule is evaluated once per message whatever its
number of actions; among 10,000 rules a message reaches only the one that matches; and after a
SIGKILL mid-load every PUBACKed message reaches each of a rule's four actions. The actions that
call out (https, OpenSearch) and the errorAction are in test_rules_actions.py."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from brokers import HOST, Broker, wait_until
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
               env={"FLEETCORE_RULES_RETRY_BACKOFF_MS": "50"})
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

def test_sql_sees_the_mqtt5_properties_of_the_message(rb, aws, clients, uid):
    """get_mqtt_property and get_user_properties read the properties the device published with,
    carried through the durable ingest log."""
    sql = ("SELECT get_mqtt_property('content_type') AS ct, "
           "get_mqtt_property('format_indicator') AS fi, "
           "get_mqtt_property('response_topic') AS rt, "
           "get_mqtt_property('correlation_data') AS cd, "
           "get_user_properties('site') AS site, "
           "isundefined(get_mqtt_property('content_type')) AS missing "
           f"FROM 'props/{uid}/+'")
    create_rule(aws("iot", broker=rb), rule_name(uid), sql,
                [{"republish": {"roleArn": ROLE, "topic": f"props-out/{uid}/${{topic(3)}}", "qos": 1}}])
    sub = clients(V5, broker=rb)
    sub.subscribe(f"props-out/{uid}/#", qos=1)
    dev = clients(V5, broker=rb)
    dev.publish(f"props/{uid}/with", b'{"v": 1}', qos=1, properties={
        "ContentType": "application/json", "PayloadFormatIndicator": 1,
        "ResponseTopic": f"reply/{uid}", "CorrelationData": b"\x01\x02",
        "UserProperty": [("site", "plant-7")]})
    out = json.loads(sub.wait_message(timeout=20, topic=f"props-out/{uid}/with").payload)
    assert out == {"ct": "application/json", "fi": "UTF8_DATA", "rt": f"reply/{uid}",
                   "cd": base64.b64encode(b"\x01\x02").decode(), "site": ["plant-7"],
                   "missing": False}
    dev.publish(f"props/{uid}/without", b'{"v": 1}', qos=1)
    out = json.loads(sub.wait_message(timeout=20, topic=f"props-out/{uid}/without").payload)
    assert out == {"missing": True}


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
# evaluate once: one evaluation per rule per message, whatever the number of actions

def test_each_rule_is_evaluated_once_per_message_whatever_its_actions(rb, aws, clients, uid):
    iot, kinesis = aws("iot", broker=rb), aws("kinesis", broker=rb)
    streams = [f"ev{n}-{uid}" for n in range(4)]
    for stream in streams:
        kinesis.create_stream(StreamName=stream, ShardCount=1)
    four, one = rule_name(uid) + "_four", rule_name(uid) + "_one"
    create_rule(iot, four, f"SELECT * FROM 'eval/{uid}/+' WHERE i >= 0",
                [{"kinesis": {"roleArn": ROLE, "streamName": s, "partitionKey": "k"}} for s in streams])
    create_rule(iot, one, f"SELECT i FROM 'eval/{uid}/#'",
                [{"republish": {"roleArn": ROLE, "topic": f"eval-out/{uid}"}}])
    sub = clients(V5, broker=rb)
    sub.subscribe(f"eval-out/{uid}", qos=1)
    pub = clients(V5, broker=rb)
    for i in range(-1, 20):
        pub.publish(f"eval/{uid}/d", json.dumps({"i": i}), qos=1)
    for stream in streams:
        records = wait_stream(kinesis, stream, lambda r: len(r) >= 20)
        assert sorted(json.loads(r["Data"])["i"] for r in records) == list(range(20)), stream
    sub.wait_messages(21, timeout=20, topic=f"eval-out/{uid}")
    succeeded = [f'fleetcore_rules_action_succeeded_total{{rule="{four}",action="{n}:kinesis"}}'
                 for n in range(4)]
    def counted():
        m = rb.metrics()
        return m if all(m.get(k) == 20 for k in succeeded) else None

    metrics = wait_until(counted, 20, interval=0.2, what="the four actions' counters")
    # 21 messages: each rule ran its statement 21 times (WHERE false once), not once per action
    assert metrics[f'fleetcore_rules_matched_total{{rule="{four}"}}'] == 21
    assert metrics[f'fleetcore_rules_evaluated_total{{rule="{four}"}}'] == 21
    assert metrics[f'fleetcore_rules_evaluated_total{{rule="{one}"}}'] == 21
    assert metrics[f'fleetcore_rules_action_succeeded_total{{rule="{one}",action="0:republish"}}'] == 21


# ---------------------------------------------------------------------------------------------
# 10,000 rules with distinct filters: a message reaches only the rule that matches

@pytest.mark.timeout_seconds(600)
def test_ten_thousand_rules_and_a_message_reaches_only_its_rule(broker_factory, aws, clients, uid):
    b = broker_factory()
    kinesis = aws("kinesis", broker=b)
    kinesis.create_stream(StreamName="hits", ShardCount=1)
    # concurrent clients, as a provisioning script would: their writes share fsyncs
    count, workers = 10_000, 16

    def create(worker: int) -> None:
        iot = aws("iot", broker=b)
        for i in range(worker, count, workers):
            create_rule(iot, f"r{i}", f"SELECT *, 'r{i}' AS rule FROM 'fleet/{i}/+'",
                        [{"kinesis": {"roleArn": ROLE, "streamName": "hits", "partitionKey": "k"}}])

    started = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(create, range(workers)))
    print(f"created {count} rules in {time.monotonic() - started:.1f} s (debug build)")
    iot = aws("iot", broker=b)
    page = iot.list_topic_rules(maxResults=10000)
    assert len(page["rules"]) == count
    pub = clients(V5, broker=b)
    pub.publish("fleet/4242/t", json.dumps({"n": 1}), qos=1)
    pub.publish("fleet/nobody/t", json.dumps({"n": 2}), qos=1)
    pub.publish("fleet/9999/t", json.dumps({"n": 3}), qos=1)
    records = wait_stream(kinesis, "hits", lambda r: len(r) >= 2)
    assert [json.loads(r["Data"]) for r in records] == [{"n": 1, "rule": "r4242"}, {"n": 3, "rule": "r9999"}]
    # a rule created now, after 10,000 others, sees the next message
    create_rule(iot, "late", "SELECT *, 'late' AS rule FROM 'fleet/late/+'",
                [{"kinesis": {"roleArn": ROLE, "streamName": "hits", "partitionKey": "k"}}])
    pub.publish("fleet/late/t", json.dumps({"n": 4}), qos=1)
    records = wait_stream(kinesis, "hits", lambda r: len(r) >= 3)
    assert [json.loads(r["Data"])["rule"] for r in records] == ["r4242", "r9999", "late"]


# ---------------------------------------------------------------------------------------------
# crash: SIGKILL mid-load, every PUBACKed message reaches each action after the restart

def test_every_acknowledged_message_survives_a_crash(broker_factory, aws, uid):
    b = broker_factory()
    iot, kinesis = aws("iot", broker=b), aws("kinesis", broker=b)
    streams = [f"crash{n}-{uid}" for n in range(4)]
    for stream in streams:
        kinesis.create_stream(StreamName=stream, ShardCount=2)
    # one rule, four actions: each must get every acknowledged message
    create_rule(iot, rule_name(uid), "SELECT * FROM 'load/+'",
                [{"kinesis": {"roleArn": ROLE, "streamName": s, "partitionKey": "${topic(2)}"}}
                 for s in streams])
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

    assert len(acked_now) >= 5000
    for stream in streams:
        try:
            wait_stream(kinesis, stream, all_there, timeout=60)
        except AssertionError:
            pass
        delivered = delivered_of(stream_records(kinesis, stream))
        missing = acked_now - delivered
        assert not missing, f"{stream}: {len(missing)} of {len(acked_now)} acknowledged messages " \
            f"lost ({len(delivered)} delivered), e.g. {sorted(missing)[:5]}"
