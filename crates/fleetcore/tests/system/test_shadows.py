"""Device shadows, classic and named, with AWS semantics: paho MQTT clients and boto3 `iot-data`
side by side. Requests over MQTT on `$aws/things/{thing}/shadow[/name/{name}]/{get,update,delete}`
(and the reference architecture's `devices/{thing}/shadow/update`), answers on `/accepted`,
`/rejected`, `/update/delta` and `/update/documents`; the same operations over the SigV4 HTTP API
and over the device HTTPS listener (mutual TLS, authorized by the certificate's IoT policies)."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from brokers import HOST, free_port
from clients import V5, V311, Client
from conftest import AWS_REGION, VERSIONS

pytestmark = pytest.mark.fleetcore_only("device shadows are a fleetcore service")

ARN = f"arn:aws:iot:{AWS_REGION}:000000000000"


def shadow_topic(thing: str, name: str | None = None) -> str:
    return f"$aws/things/{thing}/shadow" + (f"/name/{name}" if name else "")


def body(response) -> dict:
    return json.loads(response["payload"].read())


def error_code(excinfo) -> tuple[str, int]:
    err = excinfo.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def messages(c: Client, topic: str) -> list[dict]:
    return [json.loads(p) for p in c.payloads(topic)]


@pytest.fixture
def data(aws):
    return aws("iot-data")


@pytest.fixture
def device(clients):
    """A paho client subscribed to everything under a shadow's topics."""
    def make(thing: str, name: str | None = None, version: int = V5, **kw) -> Client:
        c = clients(version, **kw)
        assert c.subscribe(shadow_topic(thing, name) + "/#", qos=1) == [1]
        return c
    return make


# =============================================================================================
# the device loop: desired over HTTP -> delta over MQTT -> report -> delta gone, documents

@pytest.mark.parametrize("version", VERSIONS)
def test_desired_over_http_reaches_the_device_as_delta_and_its_report_clears_it(data, device, uid, version):
    thing = uid
    dev = device(thing, version=version)
    prefix = shadow_topic(thing)
    r = body(data.update_thing_shadow(thingName=thing, payload=json.dumps(
        {"state": {"desired": {"color": "green", "cfg": {"rate": 5}}}, "clientToken": "app-1"})))
    assert r["version"] == 1 and r["clientToken"] == "app-1"
    assert r["state"] == {"desired": {"color": "green", "cfg": {"rate": 5}}}
    assert r["metadata"]["desired"]["cfg"]["rate"]["timestamp"] == r["timestamp"]

    delta = json.loads(dev.wait_message(topic=f"{prefix}/update/delta").payload)
    assert delta["state"] == {"color": "green", "cfg": {"rate": 5}}
    assert delta["version"] == 1 and delta["clientToken"] == "app-1"
    assert delta["metadata"]["color"]["timestamp"] == r["timestamp"]
    first_docs = json.loads(dev.wait_message(topic=f"{prefix}/update/documents").payload)
    assert "previous" not in first_docs
    assert first_docs["current"]["version"] == 1

    # the device reports half of it: the delta shrinks to what is still different
    dev.publish(f"{prefix}/update", json.dumps(
        {"state": {"reported": {"color": "green", "cfg": {"rate": 1}}}, "clientToken": "dev-1"}), qos=1)
    acc = dev.wait_message(topic=f"{prefix}/update/accepted",
                           pred=lambda m: json.loads(m.payload).get("clientToken") == "dev-1")
    assert json.loads(acc.payload)["version"] == 2
    got = body(data.get_thing_shadow(thingName=thing))
    assert got["state"]["delta"] == {"cfg": {"rate": 5}}
    assert got["version"] == 2

    dev.publish(f"{prefix}/update", json.dumps(
        {"state": {"reported": {"cfg": {"rate": 5}}}, "clientToken": "dev-2"}), qos=1)
    docs = dev.wait_messages(3, topic=f"{prefix}/update/documents")
    last = json.loads(docs[-1].payload)
    assert last["clientToken"] == "dev-2"
    assert last["previous"]["version"] == 2 and last["current"]["version"] == 3
    assert last["previous"]["state"]["reported"]["cfg"] == {"rate": 1}
    assert last["current"]["state"] == {"desired": {"color": "green", "cfg": {"rate": 5}},
                                        "reported": {"color": "green", "cfg": {"rate": 5}}}
    # reported-only updates never published a delta: only the one from the desired change
    assert len(messages(dev, f"{prefix}/update/delta")) == 1
    got = body(data.get_thing_shadow(thingName=thing))
    assert "delta" not in got["state"] and got["version"] == 3
    assert set(got["metadata"]) == {"desired", "reported"}


def test_get_and_delete_over_mqtt_and_version_continues_after_delete(data, device, uid):
    thing = uid
    dev = device(thing)
    prefix = shadow_topic(thing)
    dev.publish(f"{prefix}/update", json.dumps({"state": {"reported": {"on": True}}}), qos=1)
    dev.wait_message(topic=f"{prefix}/update/accepted")
    dev.publish(f"{prefix}/get", json.dumps({"clientToken": "g1"}), qos=1)
    got = json.loads(dev.wait_message(topic=f"{prefix}/get/accepted").payload)
    assert got["state"] == {"reported": {"on": True}} and got["version"] == 1
    assert got["clientToken"] == "g1"
    dev.publish(f"{prefix}/delete", b"", qos=1)
    deleted = json.loads(dev.wait_message(topic=f"{prefix}/delete/accepted").payload)
    assert deleted["version"] == 1 and isinstance(deleted["timestamp"], int)
    with pytest.raises(ClientError) as e:
        data.get_thing_shadow(thingName=thing)
    assert error_code(e) == ("ResourceNotFoundException", 404)
    # re-created within 48 h: the version goes on
    r = body(data.update_thing_shadow(thingName=thing, payload=b'{"state":{"reported":{"on":false}}}'))
    assert r["version"] == 2
    # HTTP delete answers the version and notifies MQTT subscribers
    assert body(data.delete_thing_shadow(thingName=thing))["version"] == 2
    assert json.loads(dev.wait_messages(2, topic=f"{prefix}/delete/accepted")[-1].payload)["version"] == 2


# =============================================================================================
# named shadows

def test_named_shadows_are_independent_and_listed(data, device, uid):
    thing = uid
    cfg = device(thing, "cfg")
    prefix = shadow_topic(thing, "cfg")
    cfg.publish(f"{prefix}/update", json.dumps({"state": {"desired": {"mode": "eco"}}}), qos=1)
    assert json.loads(cfg.wait_message(topic=f"{prefix}/update/delta").payload)["state"] == {"mode": "eco"}
    for name in ["zeta", "$alpha", "beta"]:
        r = body(data.update_thing_shadow(thingName=thing, shadowName=name,
                                          payload=json.dumps({"state": {"reported": {"n": name}}})))
        assert r["version"] == 1
    data.update_thing_shadow(thingName=thing, payload=b'{"state":{"reported":{"classic":1}}}')
    # each named shadow has its own document and version
    assert body(data.get_thing_shadow(thingName=thing, shadowName="cfg"))["state"]["desired"] == {"mode": "eco"}
    assert body(data.get_thing_shadow(thingName=thing, shadowName="beta"))["state"] == {"reported": {"n": "beta"}}
    assert body(data.get_thing_shadow(thingName=thing))["state"] == {"reported": {"classic": 1}}

    listed = data.list_named_shadows_for_thing(thingName=thing)
    assert listed["results"] == ["$alpha", "beta", "cfg", "zeta"]  # classic not listed
    assert "nextToken" not in listed and isinstance(listed["timestamp"], int)
    pages, token = [], None
    while True:
        kw = {"nextToken": token} if token else {}
        page = data.list_named_shadows_for_thing(thingName=thing, pageSize=3, **kw)
        pages.append(page["results"])
        token = page.get("nextToken")
        if not token:
            break
    assert pages == [["$alpha", "beta", "cfg"], ["zeta"]]
    data.delete_thing_shadow(thingName=thing, shadowName="beta")
    assert data.list_named_shadows_for_thing(thingName=thing)["results"] == ["$alpha", "cfg", "zeta"]
    assert data.list_named_shadows_for_thing(thingName=f"{uid}-none")["results"] == []


# =============================================================================================
# concurrent writers

def test_concurrent_writers_get_distinct_consecutive_versions_and_lose_nothing(clients, data, device, uid):
    thing = uid
    prefix = shadow_topic(thing)
    watch = device(thing)
    writers, per_writer = 8, 25
    pubs = [clients(V5) for _ in range(writers)]

    def write(i: int):
        for j in range(per_writer):
            pubs[i].publish(f"{prefix}/update", json.dumps(
                {"state": {"reported": {f"w{i}": j}}, "clientToken": f"w{i}-{j}"}), qos=1, wait=False)
    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = writers * per_writer
    accepted = watch.wait_messages(total, topic=f"{prefix}/update/accepted", timeout=30)
    versions = sorted(json.loads(m.payload)["version"] for m in accepted)
    assert versions == list(range(1, total + 1))
    tokens = {json.loads(m.payload)["clientToken"] for m in accepted}
    assert len(tokens) == total
    assert not watch.matching(topic=f"{prefix}/update/rejected")
    got = body(data.get_thing_shadow(thingName=thing))
    assert got["version"] == total
    assert got["state"]["reported"] == {f"w{i}": per_writer - 1 for i in range(writers)}


def test_optimistic_read_modify_write_with_versions_over_http(aws, uid):
    """Several HTTP writers increment one counter with read-modify-write guarded by `version`:
    stale writes get ConflictException (409) and retry; no increment is lost."""
    thing = uid
    data = aws("iot-data")
    data.update_thing_shadow(thingName=thing, payload=b'{"state":{"reported":{"n":0}}}')
    writers, increments = 4, 10
    conflicts = []

    def work():
        c = aws("iot-data")
        done = 0
        while done < increments:
            doc = body(c.get_thing_shadow(thingName=thing))
            n = doc["state"]["reported"]["n"]
            try:
                c.update_thing_shadow(thingName=thing, payload=json.dumps(
                    {"state": {"reported": {"n": n + 1}}, "version": doc["version"]}))
                done += 1
            except ClientError as e:
                assert error_code(type("E", (), {"value": e})) == ("ConflictException", 409)
                conflicts.append(1)
    threads = [threading.Thread(target=work) for _ in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = body(data.get_thing_shadow(thingName=thing))
    assert got["state"]["reported"]["n"] == writers * increments
    assert got["version"] == 1 + writers * increments


# =============================================================================================
# rejections, over MQTT and over HTTP

DEEP = {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}
REJECTIONS = [
    pytest.param(b"{not json", 400, "InvalidRequestException", id="malformed-json"),
    pytest.param(b'{"clientToken":"t"}', 400, "InvalidRequestException", id="missing-state"),
    pytest.param(b'{"state":{"reported":{}},"extra":1}', 400, "InvalidRequestException", id="unknown-key"),
    pytest.param(b'{"state":{"delta":{"a":1}}}', 400, "InvalidRequestException", id="unknown-section"),
    pytest.param(json.dumps({"state": {"reported": {"big": "x" * 9000}}}).encode(), 413,
                 "RequestEntityTooLargeException", id="too-large"),
    pytest.param(json.dumps({"state": {"desired": DEEP}}).encode(), 400, "InvalidRequestException", id="too-deep"),
    pytest.param(b'{"state":{"reported":{"a":1}},"version":99}', 409, "ConflictException", id="stale-version"),
]


@pytest.mark.parametrize("payload,code,exception", REJECTIONS)
def test_update_rejections_over_mqtt(data, device, uid, payload, code, exception):
    thing = uid
    data.update_thing_shadow(thingName=thing, payload=b'{"state":{"reported":{"a":0}}}')
    dev = device(thing)
    prefix = shadow_topic(thing)
    dev.publish(f"{prefix}/update", payload, qos=1)
    rej = json.loads(dev.wait_message(topic=f"{prefix}/update/rejected").payload)
    assert rej["code"] == code, rej
    assert rej["message"] and isinstance(rej["timestamp"], int)
    if b'"clientToken"' in payload:
        assert rej["clientToken"] == "t"
    # nothing changed
    got = body(data.get_thing_shadow(thingName=thing))
    assert got["version"] == 1 and got["state"] == {"reported": {"a": 0}}
    assert not dev.matching(topic=f"{prefix}/update/accepted")


@pytest.mark.parametrize("payload,code,exception", REJECTIONS)
def test_update_rejections_over_http(data, uid, payload, code, exception):
    thing = uid
    data.update_thing_shadow(thingName=thing, payload=b'{"state":{"reported":{"a":0}}}')
    with pytest.raises(ClientError) as e:
        data.update_thing_shadow(thingName=thing, payload=payload)
    assert error_code(e) == (exception, code)
    got = body(data.get_thing_shadow(thingName=thing))
    assert got["version"] == 1 and got["state"] == {"reported": {"a": 0}}


def test_rejection_echoes_the_client_token_over_mqtt(device, uid):
    dev = device(uid)
    prefix = shadow_topic(uid)
    dev.publish(f"{prefix}/update", b'{"state":{"reported":{"a":1}},"version":7,"clientToken":"tok-7"}', qos=1)
    rej = json.loads(dev.wait_message(topic=f"{prefix}/update/rejected").payload)
    assert (rej["code"], rej["clientToken"]) == (409, "tok-7")


def test_missing_shadows_and_bad_names(data, device, uid):
    thing = uid
    dev = device(thing)
    prefix = shadow_topic(thing)
    dev.publish(f"{prefix}/get", b"", qos=1)
    assert json.loads(dev.wait_message(topic=f"{prefix}/get/rejected").payload)["code"] == 404
    dev.publish(f"{prefix}/delete", b'{"clientToken":"d"}', qos=1)
    rej = json.loads(dev.wait_message(topic=f"{prefix}/delete/rejected").payload)
    assert (rej["code"], rej["clientToken"]) == (404, "d")
    for call in (lambda: data.get_thing_shadow(thingName=thing),
                 lambda: data.delete_thing_shadow(thingName=thing),
                 lambda: data.get_thing_shadow(thingName=thing, shadowName="nope")):
        with pytest.raises(ClientError) as e:
            call()
        assert error_code(e) == ("ResourceNotFoundException", 404)
    # a bad shadow name: 400 on the topic it was sent to, and over HTTP
    bad = shadow_topic(thing, "bad*name")
    dev.subscribe(f"{bad}/update/rejected", qos=1)
    dev.publish(f"{bad}/update", b'{"state":{"reported":{"a":1}}}', qos=1)
    assert json.loads(dev.wait_message(topic=f"{bad}/update/rejected").payload)["code"] == 400
    with pytest.raises(ClientError) as e:
        data.update_thing_shadow(thingName=thing, shadowName="bad*name", payload=b'{"state":{}}')
    assert error_code(e) == ("InvalidRequestException", 400)
    with pytest.raises(ClientError) as e:
        data.get_thing_shadow(thingName=thing, shadowName="x" * 65)
    assert error_code(e) == ("InvalidRequestException", 400)
    # a get with a malformed payload
    dev.publish(f"{prefix}/get", b"{oops", qos=1)
    assert json.loads(dev.wait_messages(2, topic=f"{prefix}/get/rejected")[-1].payload)["code"] == 400


def test_state_size_limit_is_configurable(broker_factory, aws, uid):
    b = broker_factory(config_toml="shadow_max_state_bytes = 100\n")
    data = aws("iot-data", broker=b)
    data.update_thing_shadow(thingName=uid, payload=json.dumps({"state": {"reported": {"k": "x" * 50}}}))
    with pytest.raises(ClientError) as e:
        data.update_thing_shadow(thingName=uid, payload=json.dumps({"state": {"desired": {"k": "y" * 50}}}))
    assert error_code(e) == ("RequestEntityTooLargeException", 413)
    # deleting keys to get under the limit still works
    r = body(data.update_thing_shadow(thingName=uid, payload=b'{"state":{"reported":{"k":null}}}'))
    assert r["version"] == 2


# =============================================================================================
# the reference architecture's alias, persistence

@pytest.mark.parametrize("version", VERSIONS)
def test_devices_shadow_update_alias(data, device, uid, version):
    thing = uid
    dev = device(thing, version=version)
    dev.publish(f"devices/{thing}/shadow/update", json.dumps(
        {"state": {"reported": {"temp": 21}}, "clientToken": "alias"}), qos=1)
    acc = json.loads(dev.wait_message(topic=f"{shadow_topic(thing)}/update/accepted").payload)
    assert acc["clientToken"] == "alias" and acc["version"] == 1
    assert body(data.get_thing_shadow(thingName=thing))["state"]["reported"] == {"temp": 21}
    # response topics are outputs: publishing to them is not a request
    dev.publish(f"{shadow_topic(thing)}/update/accepted", b'{"state":{"reported":{"temp":99}}}', qos=1)
    dev.publish(f"devices/{thing}/shadow/update/accepted", b'{"state":{"reported":{"temp":99}}}', qos=1)
    dev.sync()
    assert body(data.get_thing_shadow(thingName=thing))["version"] == 1


def test_shadows_survive_a_restart(fresh_broker, aws, clients, uid):
    b = fresh_broker
    dev = clients(V311, broker=b)
    prefix = shadow_topic(uid)
    dev.subscribe(f"{prefix}/update/accepted", qos=1)
    dev.publish(f"{prefix}/update", b'{"state":{"desired":{"a":1},"reported":{"a":0}}}', qos=1)
    dev.wait_message(topic=f"{prefix}/update/accepted")  # answered only once committed
    data = aws("iot-data", broker=b)
    data.update_thing_shadow(thingName=uid, shadowName="n1", payload=b'{"state":{"reported":{"x":[1,2]}}}')
    before = body(data.get_thing_shadow(thingName=uid))
    dev.close()
    b.stop()
    b.start()
    data = aws("iot-data", broker=b)
    after = body(data.get_thing_shadow(thingName=uid))
    assert after["state"] == before["state"] == {"desired": {"a": 1}, "reported": {"a": 0}, "delta": {"a": 1}}
    assert after["metadata"] == before["metadata"] and after["version"] == 1
    assert body(data.get_thing_shadow(thingName=uid, shadowName="n1"))["state"] == {"reported": {"x": [1, 2]}}
    assert data.list_named_shadows_for_thing(thingName=uid)["results"] == ["n1"]
    r = body(data.update_thing_shadow(thingName=uid, payload=b'{"state":{"reported":{"a":1}}}'))
    assert r["version"] == 2


def test_shadows_survive_kill_9(fresh_broker, aws, clients, uid):
    """/accepted goes out only after the commit: a SIGKILL right after it loses nothing."""
    b = fresh_broker
    dev = clients(V5, broker=b)
    prefix = shadow_topic(uid)
    dev.subscribe(f"{prefix}/update/accepted", qos=1)
    for i in range(20):
        dev.publish(f"{prefix}/update", json.dumps({"state": {"reported": {"i": i}}}), qos=1, wait=False)
    dev.wait_messages(20, topic=f"{prefix}/update/accepted")
    dev.close()
    b.kill()
    b.start()
    got = body(aws("iot-data", broker=b).get_thing_shadow(thingName=uid))
    assert got["version"] == 20 and got["state"]["reported"] == {"i": 19}


# =============================================================================================
# HTTP Publish

def test_http_publish_reaches_mqtt_subscribers_with_properties(data, clients, uid):
    sub = clients(V5)
    topic = f"{uid}/cmd/reboot"
    sub.subscribe(f"{uid}/#", qos=1)
    data.publish(topic=topic, qos=1, payload=b'{"now":true}', contentType="application/json",
                 responseTopic=f"{uid}/reply", messageExpiry=300,
                 userProperties=json.dumps([{"deviceName": "alpha"}, {"deviceCnt": "45"}]),
                 correlationData=base64.b64encode(b"corr-1").decode(),
                 payloadFormatIndicator="UTF8_DATA")
    m = sub.wait_message(topic=topic)
    assert m.payload == b'{"now":true}' and m.qos == 1
    p = m.properties
    assert p.ContentType == "application/json"
    assert p.ResponseTopic == f"{uid}/reply"
    assert 0 < p.MessageExpiryInterval <= 300
    assert p.UserProperty == [("deviceName", "alpha"), ("deviceCnt", "45")]
    assert p.CorrelationData == b"corr-1"
    assert p.PayloadFormatIndicator == 1
    # retained, then cleared with an empty retained publish
    data.publish(topic=f"{uid}/state", qos=1, retain=True, payload=b"kept")
    late = clients(V311)
    late.subscribe(f"{uid}/state", qos=1)
    assert late.wait_message(topic=f"{uid}/state").payload == b"kept"
    for bad in [dict(topic=f"{uid}/+/x"), dict(topic=f"{uid}/x", qos=2)]:
        with pytest.raises(ClientError) as e:
            data.publish(payload=b"x", **bad)
        assert error_code(e) == ("InvalidRequestException", 400)


def test_http_publish_to_a_shadow_topic_is_a_shadow_request(data, device, uid):
    dev = device(uid)
    data.publish(topic=f"{shadow_topic(uid)}/update", qos=1, payload=b'{"state":{"reported":{"via":"http"}}}')
    acc = json.loads(dev.wait_message(topic=f"{shadow_topic(uid)}/update/accepted").payload)
    assert acc["state"] == {"reported": {"via": "http"}}


# =============================================================================================
# authorization: a device may use only its own shadow, over MQTT and over the mTLS HTTPS listener

def own_shadow_policy() -> str:
    thing = "${iot:Connection.Thing.ThingName}"
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iot:Connect", "Resource": f"{ARN}:client/{thing}"},
        {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"],
         "Resource": [f"{ARN}:topic/$aws/things/{thing}/shadow/*", f"{ARN}:topic/devices/{thing}/*"]},
        {"Effect": "Allow", "Action": "iot:Subscribe",
         "Resource": f"{ARN}:topicfilter/$aws/things/{thing}/shadow/*"},
        {"Effect": "Allow", "Action": ["iot:GetThingShadow", "iot:UpdateThingShadow",
                                       "iot:DeleteThingShadow", "iot:ListNamedShadowsForThing"],
         "Resource": f"{ARN}:thing/{thing}"},
    ]})


def make_device(iot, tmp_path: Path, thing: str, policy: str) -> tuple[Path, Path]:
    iot.create_thing(thingName=thing)
    made = iot.create_keys_and_certificate(setAsActive=True)
    iot.attach_policy(policyName=policy, target=made["certificateArn"])
    iot.attach_thing_principal(thingName=thing, principal=made["certificateArn"])
    cert, key = tmp_path / f"{thing}.pem", tmp_path / f"{thing}.key"
    cert.write_text(made["certificatePem"])
    key.write_text(made["keyPair"]["PrivateKey"])
    key.chmod(0o600)
    return cert, key


@pytest.fixture
def https_broker(broker_factory):
    port = free_port()
    b = broker_factory("--https", f"{HOST}:{port}")
    b.ports["https"] = port
    return b


def device_data_client(b, cert: Path, key: Path):
    """boto3 iot-data against the device HTTPS listener, authenticating with the client
    certificate (the signature it adds is ignored there, as on AWS's data endpoint)."""
    import boto3
    session = boto3.session.Session(aws_access_key_id="device", aws_secret_access_key="device",
                                    region_name=AWS_REGION)
    return session.client("iot-data", endpoint_url=f"https://localhost:{b.ports['https']}",
                          verify=str(b.ca_pem),
                          config=Config(client_cert=(str(cert), str(key)),
                                        retries={"mode": "standard", "max_attempts": 1}))


def test_device_is_denied_another_things_shadow_over_mqtt_and_https(https_broker, aws, clients, tmp_path, uid):
    b = https_broker
    iot, admin = aws("iot", broker=b), aws("iot-data", broker=b)
    iot.create_policy(policyName=f"{uid}-own", policyDocument=own_shadow_policy())
    mine, other = f"{uid}-mine", f"{uid}-other"
    cert, key = make_device(iot, tmp_path, mine, f"{uid}-own")
    make_device(iot, tmp_path, other, f"{uid}-own")

    # MQTT over mTLS
    dev = clients(V5, broker=b, client_id=mine, tls=(cert, key))
    assert dev.subscribe(f"{shadow_topic(mine)}/update/accepted", qos=1) == [1]
    assert dev.subscribe(f"{shadow_topic(other)}/update/accepted", qos=1) == [0x87]
    dev.publish(f"{shadow_topic(mine)}/update", b'{"state":{"reported":{"ok":1}}}', qos=1)
    assert json.loads(dev.wait_message(topic=f"{shadow_topic(mine)}/update/accepted").payload)["version"] == 1
    info = dev.publish(f"{shadow_topic(other)}/update", b'{"state":{"reported":{"evil":1}}}', qos=1, wait=False)
    info.wait_for_publish(5)
    dev.sync()
    with pytest.raises(ClientError) as e:
        admin.get_thing_shadow(thingName=other)
    assert error_code(e) == ("ResourceNotFoundException", 404)
    assert dev.connected

    # HTTPS with the device certificate
    d = device_data_client(b, cert, key)
    assert body(d.get_thing_shadow(thingName=mine))["state"] == {"reported": {"ok": 1}}
    assert body(d.update_thing_shadow(thingName=mine, payload=b'{"state":{"reported":{"ok":2}}}'))["version"] == 2
    assert d.list_named_shadows_for_thing(thingName=mine)["results"] == []
    for call in (lambda: d.get_thing_shadow(thingName=other),
                 lambda: d.update_thing_shadow(thingName=other, payload=b'{"state":{"reported":{"evil":1}}}'),
                 lambda: d.delete_thing_shadow(thingName=mine + "x"),
                 lambda: d.list_named_shadows_for_thing(thingName=other)):
        with pytest.raises(ClientError) as e:
            call()
        assert error_code(e) == ("ForbiddenException", 403)
    with pytest.raises(ClientError) as e:
        admin.get_thing_shadow(thingName=other)
    assert error_code(e) == ("ResourceNotFoundException", 404)

    # Publish through HTTPS needs iot:Publish on the topic
    watcher = clients(V5, broker=b)
    watcher.subscribe(f"devices/{mine}/#", qos=1)
    d.publish(topic=f"devices/{mine}/telemetry", qos=1, payload=b"t=1")
    assert watcher.wait_message(topic=f"devices/{mine}/telemetry").payload == b"t=1"
    with pytest.raises(ClientError) as e:
        d.publish(topic=f"devices/{other}/telemetry", qos=1, payload=b"t=2")
    assert error_code(e) == ("ForbiddenException", 403)

    # the admin (SigV4 control plane) may do everything
    assert body(admin.update_thing_shadow(thingName=other, payload=b'{"state":{"desired":{"x":1}}}'))["version"] == 1


def test_https_listener_refuses_unregistered_certificates(https_broker, client_cert, uid):
    b = https_broker
    cert, key = client_cert(b, uid, register=False)
    d = device_data_client(b, cert, key)
    with pytest.raises(Exception):  # noqa: B017 - the connection is closed after the handshake
        d.get_thing_shadow(thingName=uid)
