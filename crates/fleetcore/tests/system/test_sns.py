"""SNS end to end with boto3's `sns` client unchanged: topics, subscriptions, attributes and tags
round trips with AWS's error shapes; an HTTP subscriber (a Python http.server) receiving the
signed SubscriptionConfirmation, confirming by fetching its SubscribeURL, then notifications in
SNS's JSON envelope (signature checked against the SigningCertURL certificate); filter policies
on attributes and on the body; email through a real SMTP server (aiosmtpd) with the confirmation
link; an `mqtt` subscription delivering to a paho subscriber; a `lambda` subscription feeding a
stream; a topic rule's `sns` action; and a hung endpoint that does not hold up a healthy one."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import sys
import threading
import urllib.request
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from botocore.exceptions import ClientError

from brokers import HOST, Broker, free_port, wait_until
from clients import V5
from test_rules_engine import create_rule, rule_name, wait_stream

pytestmark = pytest.mark.fleetcore_only("SNS is fleetcore's")

ROLE = "arn:aws:iam::000000000000:role/sns"


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    """A server of this module's own (rules with sns actions, functions run with this Python)."""
    b = Broker(tmp_path_factory.mktemp("sns-broker"), name="sns",
               env={"FLEETCORE_FUNCTIONS_PYTHON": sys.executable,
                    "FLEETCORE_RULES_RETRY_BACKOFF_MS": "50"})
    b.start()
    yield b
    b.stop()


def error_of(call) -> tuple[str, int, str]:
    with pytest.raises(ClientError) as e:
        call()
    err = e.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Message"]


class Endpoint:
    """A local HTTP subscriber recording every POST (headers lower-cased, body) and answering
    `status`. With `hang` set, it accepts requests and answers none until released (a dead
    endpoint)."""

    def __init__(self):
        self.requests: list[tuple[dict, bytes]] = []
        self.lock = threading.Lock()
        self.hang = threading.Event()
        self.release = threading.Event()
        self.status = 200
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if endpoint.hang.is_set():
                    endpoint.release.wait(60)
                    return
                with endpoint.lock:
                    endpoint.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(endpoint.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{HOST}:{self.server.server_address[1]}/sns"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of_type(self, kind: str) -> list[tuple[dict, dict]]:
        with self.lock:
            return [(h, json.loads(b)) for h, b in self.requests
                    if h.get("x-amz-sns-message-type") == kind]

    def wait(self, kind: str, n: int = 1, timeout: float = 30) -> list[tuple[dict, dict]]:
        return wait_until(lambda: (got := self.of_type(kind)) and len(got) >= n and got, timeout,
                          what=f"{n} {kind} message(s) at {self.url}")

    def close(self):
        self.release.set()
        self.server.shutdown()


@pytest.fixture
def endpoint():
    made: list[Endpoint] = []

    def make() -> Endpoint:
        e = Endpoint()
        made.append(e)
        return e

    yield make
    for e in made:
        e.close()


def fetch(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read().decode()


def verify_signature(message: dict) -> None:
    """Checks the envelope's signature with the certificate at its SigningCertURL, over AWS's
    string to sign."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    assert message["SignatureVersion"] == "2"
    if message["Type"] == "Notification":
        keys = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        keys = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    text = "".join(f"{k}\n{message[k]}\n" for k in keys if k in message)
    _, pem = fetch(message["SigningCertURL"])
    cert = x509.load_pem_x509_certificate(pem.encode())
    cert.public_key().verify(base64.b64decode(message["Signature"]), text.encode(),
                             ec.ECDSA(hashes.SHA256()))


def confirmed_http_subscription(sns, topic: str, ep: Endpoint, **attributes) -> str:
    """Subscribes `ep`, follows the SubscribeURL of its confirmation; returns the ARN."""
    sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=ep.url,
                  Attributes={k: v for k, v in attributes.items()})
    _, confirmation = ep.wait("SubscriptionConfirmation")[-1]
    status, body = fetch(confirmation["SubscribeURL"])
    assert status == 200 and "<SubscriptionArn>" in body, body
    return re.search(r"<SubscriptionArn>([^<]+)</SubscriptionArn>", body).group(1)


def metric(b: Broker, name: str, **labels) -> float:
    """A counter's value in /metrics (0 when absent)."""
    _, text = fetch(b.http_base + "/metrics")
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# ---------------------------------------------------------------------------------------------
# the API

def test_topic_operations_round_trip_with_aws_errors(sb, aws, uid):
    sns = aws("sns", broker=sb)
    name = f"alerts-{uid}"
    arn = sns.create_topic(Name=name, Attributes={"DisplayName": "Alerts"},
                           Tags=[{"Key": "team", "Value": "ops"}])["TopicArn"]
    assert arn == f"arn:aws:sns:us-east-1:000000000000:{name}"
    # idempotent by name; different attributes are refused
    assert sns.create_topic(Name=name, Attributes={"DisplayName": "Alerts"})["TopicArn"] == arn
    code, status, _ = error_of(lambda: sns.create_topic(Name=name, Attributes={"DisplayName": "Other"}))
    assert (code, status) == ("InvalidParameter", 400)
    for bad in ["has space", "x" * 257, f"{uid}.fifo"]:
        assert error_of(lambda: sns.create_topic(Name=bad))[:2] == ("InvalidParameter", 400), bad

    attrs = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    assert attrs["DisplayName"] == "Alerts" and attrs["TopicArn"] == arn
    assert attrs["Owner"] == "000000000000" and attrs["SubscriptionsConfirmed"] == "0"
    assert json.loads(attrs["Policy"])["Statement"][0]["Resource"] == arn
    sns.set_topic_attributes(TopicArn=arn, AttributeName="DisplayName", AttributeValue="Renamed")
    assert sns.get_topic_attributes(TopicArn=arn)["Attributes"]["DisplayName"] == "Renamed"
    code, status, message = error_of(lambda: sns.set_topic_attributes(
        TopicArn=arn, AttributeName="DeliveryPolicy", AttributeValue="{}"))
    assert (code, status) == ("InvalidParameter", 400) and "DeliveryPolicy" in message

    sns.tag_resource(ResourceArn=arn, Tags=[{"Key": "env", "Value": "lab"}])
    tags = sns.list_tags_for_resource(ResourceArn=arn)["Tags"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [("env", "lab"), ("team", "ops")]
    sns.untag_resource(ResourceArn=arn, TagKeys=["team"])
    assert sns.list_tags_for_resource(ResourceArn=arn)["Tags"] == [{"Key": "env", "Value": "lab"}]

    # ListTopics pages with NextToken
    others = [sns.create_topic(Name=f"page{i}-{uid}")["TopicArn"] for i in range(3)]
    listed, token = [], None
    while True:
        page = sns.list_topics(**({"NextToken": token} if token else {}))
        listed += [t["TopicArn"] for t in page["Topics"]]
        token = page.get("NextToken")
        if not token:
            break
    assert set(others + [arn]) <= set(listed) and len(listed) == len(set(listed))
    paginated = [t["TopicArn"] for p in sns.get_paginator("list_topics").paginate() for t in p["Topics"]]
    assert sorted(paginated) == sorted(listed)

    sns.delete_topic(TopicArn=arn)
    sns.delete_topic(TopicArn=arn)  # idempotent, as on AWS
    code, status, message = error_of(lambda: sns.get_topic_attributes(TopicArn=arn))
    assert (code, status, message) == ("NotFound", 404, "Topic does not exist")
    assert error_of(lambda: sns.publish(TopicArn=arn, Message="m"))[:2] == ("NotFound", 404)
    assert error_of(lambda: sns.get_topic_attributes(TopicArn="not-an-arn"))[:2] == ("InvalidParameter", 400)
    assert error_of(lambda: sns.list_tags_for_resource(ResourceArn=arn))[:2] == ("ResourceNotFound", 404)
    # an SNS action this server does not implement is named, 501
    code, status, message = error_of(lambda: sns.list_platform_applications())
    assert (code, status) == ("UnknownOperationException", 501) and "ListPlatformApplications" in message


def test_subscription_operations_and_their_errors(sb, aws, uid):
    sns = aws("sns", broker=sb)
    topic = sns.create_topic(Name=f"subs-{uid}")["TopicArn"]
    sub = sns.subscribe(TopicArn=topic, Protocol="mqtt", Endpoint=f"sns/{uid}",
                        Attributes={"RawMessageDelivery": "true"},
                        ReturnSubscriptionArn=True)["SubscriptionArn"]
    assert sub.startswith(topic + ":")
    # Subscribe is idempotent for the same endpoint
    assert sns.subscribe(TopicArn=topic, Protocol="mqtt", Endpoint=f"sns/{uid}",
                         ReturnSubscriptionArn=True)["SubscriptionArn"] == sub
    attrs = sns.get_subscription_attributes(SubscriptionArn=sub)["Attributes"]
    assert attrs["Protocol"] == "mqtt" and attrs["Endpoint"] == f"sns/{uid}"
    assert attrs["PendingConfirmation"] == "false" and attrs["RawMessageDelivery"] == "true"
    policy = json.dumps({"severity": ["critical"]})
    sns.set_subscription_attributes(SubscriptionArn=sub, AttributeName="FilterPolicy", AttributeValue=policy)
    attrs = sns.get_subscription_attributes(SubscriptionArn=sub)["Attributes"]
    assert json.loads(attrs["FilterPolicy"]) == {"severity": ["critical"]}
    assert attrs["FilterPolicyScope"] == "MessageAttributes"
    for name, value in [("FilterPolicy", "[]"), ("FilterPolicy", '{"a": [{"cidr": "10.0.0.0/8"}]}'),
                        ("FilterPolicyScope", "Everything"), ("RedrivePolicy", "{}")]:
        code, status, message = error_of(lambda: sns.set_subscription_attributes(
            SubscriptionArn=sub, AttributeName=name, AttributeValue=value))
        assert (code, status) == ("InvalidParameter", 400) and name in message, (name, message)

    listed = [s for s in sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]]
    assert [(s["SubscriptionArn"], s["Protocol"], s["TopicArn"]) for s in listed] == [(sub, "mqtt", topic)]
    assert sub in [s["SubscriptionArn"] for p in sns.get_paginator("list_subscriptions").paginate()
                   for s in p["Subscriptions"]]

    for protocol, endpoint_, word in [("sqs", "arn:aws:sqs:us-east-1:000000000000:q", "sqs"),
                                      ("carrier-pigeon", "x", "protocol"),
                                      ("http", "ftp://example.com", "Endpoint"),
                                      ("mqtt", "a/+/b", "Endpoint"),
                                      ("email", "ops@example.com", "SMTP")]:
        code, status, message = error_of(lambda: sns.subscribe(
            TopicArn=topic, Protocol=protocol, Endpoint=endpoint_))
        assert (code, status) == ("InvalidParameter", 400) and word in message, (protocol, message)
    missing = topic + "-gone"
    assert error_of(lambda: sns.subscribe(TopicArn=missing, Protocol="mqtt", Endpoint="t"))[:2] == ("NotFound", 404)
    assert error_of(lambda: sns.list_subscriptions_by_topic(TopicArn=missing))[:2] == ("NotFound", 404)
    assert error_of(lambda: sns.confirm_subscription(TopicArn=topic, Token="nope"))[:2] == ("InvalidParameter", 400)

    sns.unsubscribe(SubscriptionArn=sub)
    assert error_of(lambda: sns.get_subscription_attributes(SubscriptionArn=sub))[:2] == ("NotFound", 404)
    assert error_of(lambda: sns.unsubscribe(SubscriptionArn=sub))[:2] == ("NotFound", 404)
    # deleting a topic deletes its subscriptions
    again = sns.subscribe(TopicArn=topic, Protocol="mqtt", Endpoint=f"sns/{uid}",
                          ReturnSubscriptionArn=True)["SubscriptionArn"]
    sns.delete_topic(TopicArn=topic)
    assert error_of(lambda: sns.get_subscription_attributes(SubscriptionArn=again))[:2] == ("NotFound", 404)


def test_publish_checks_its_input(sb, aws, uid):
    sns = aws("sns", broker=sb)
    topic = sns.create_topic(Name=f"pub-{uid}")["TopicArn"]
    for kwargs, word in [
        ({"Message": "x" * (256 * 1024 + 1)}, "too long"),
        ({"Message": '{"email": "no default"}', "MessageStructure": "json"}, "default"),
        ({"Message": "m", "Subject": "two\nlines"}, "Subject"),
        ({"Message": "m", "MessageAttributes": {"n": {"DataType": "Number", "StringValue": "ten"}}}, "number"),
        ({"Message": "m", "MessageAttributes": {"n": {"DataType": "Date", "StringValue": "x"}}}, "type"),
        ({"Message": "m", "MessageGroupId": "g"}, "FIFO"),
    ]:
        code, status, message = error_of(lambda: sns.publish(TopicArn=topic, **kwargs))
        assert (code, status) == ("InvalidParameter", 400) and word in message, (kwargs.keys(), message)
    assert error_of(lambda: sns.publish(PhoneNumber="+15555550100", Message="m"))[:2] == ("InvalidParameter", 400)
    out = sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=[
        {"Id": "ok", "Message": "fine"},
        {"Id": "bad", "Message": "m", "MessageStructure": "json"}])
    assert [s["Id"] for s in out["Successful"]] == ["ok"] and out["Successful"][0]["MessageId"]
    assert [(f["Id"], f["Code"], f["SenderFault"]) for f in out["Failed"]] == [("bad", "InvalidParameter", True)]
    code, status, _ = error_of(lambda: sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=[
        {"Id": "same", "Message": "a"}, {"Id": "same", "Message": "b"}]))
    assert (code, status) == ("BatchEntryIdsNotDistinct", 400)
    code, _, _ = error_of(lambda: sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=[
        {"Id": f"e{i}", "Message": "a"} for i in range(11)]))
    assert code == "TooManyEntriesInBatchRequest"


# ---------------------------------------------------------------------------------------------
# deliveries

def test_http_subscriber_confirms_then_gets_signed_envelopes(sb, aws, endpoint, uid):
    sns = aws("sns", broker=sb)
    topic = sns.create_topic(Name=f"http-{uid}")["TopicArn"]
    ep = endpoint()
    assert sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=ep.url)["SubscriptionArn"] == \
        "pending confirmation"
    headers, confirmation = ep.wait("SubscriptionConfirmation")[0]
    assert headers["x-amz-sns-topic-arn"] == topic
    assert confirmation["TopicArn"] == topic and confirmation["Token"]
    verify_signature(confirmation)
    listed = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert [s["SubscriptionArn"] for s in listed] == ["PendingConfirmation"]
    # nothing is delivered before the confirmation
    sns.publish(TopicArn=topic, Message="too early")
    status, body = fetch(confirmation["SubscribeURL"])
    assert status == 200
    sub = re.search(r"<SubscriptionArn>([^<]+)</SubscriptionArn>", body).group(1)
    assert sns.get_topic_attributes(TopicArn=topic)["Attributes"]["SubscriptionsConfirmed"] == "1"

    message_id = sns.publish(TopicArn=topic, Message="boiler 3 overheated", Subject="Alarm",
                             MessageAttributes={"severity": {"DataType": "String", "StringValue": "critical"},
                                                "temp": {"DataType": "Number", "StringValue": "97.5"}})["MessageId"]
    headers, note = ep.wait("Notification")[0]
    assert [n["Message"] for _, n in ep.of_type("Notification")] == ["boiler 3 overheated"]
    assert (note["MessageId"], note["TopicArn"], note["Subject"]) == (message_id, topic, "Alarm")
    assert note["MessageAttributes"] == {"severity": {"Type": "String", "Value": "critical"},
                                         "temp": {"Type": "Number", "Value": "97.5"}}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", note["Timestamp"])
    assert headers["x-amz-sns-message-id"] == message_id
    assert headers["x-amz-sns-subscription-arn"] == sub
    assert headers["x-amz-sns-rawdelivery"] == "false"
    assert headers["content-type"].startswith("text/plain")
    verify_signature(note)

    # MessageStructure=json: the http entry wins over default
    sns.publish(TopicArn=topic, MessageStructure="json",
                Message=json.dumps({"default": "plain", "http": "for http"}))
    ep.wait("Notification", 2)
    assert ep.of_type("Notification")[1][1]["Message"] == "for http"
    # the UnsubscribeURL ends the subscription
    status, _ = fetch(note["UnsubscribeURL"])
    assert status == 200
    assert error_of(lambda: sns.get_subscription_attributes(SubscriptionArn=sub))[:2] == ("NotFound", 404)


def test_filter_policies_on_attributes_and_body(sb, aws, endpoint, uid):
    sns = aws("sns", broker=sb)
    topic = sns.create_topic(Name=f"filter-{uid}")["TopicArn"]
    by_attr, by_body = endpoint(), endpoint()
    confirmed_http_subscription(sns, topic, by_attr,
                                FilterPolicy=json.dumps({"severity": ["critical"],
                                                         "temp": [{"numeric": [">", 90]}]}))
    confirmed_http_subscription(sns, topic, by_body, FilterPolicyScope="MessageBody",
                                FilterPolicy=json.dumps({"device": {"kind": [{"prefix": "boil"}]}}))
    filtered_before = metric(sb, "fleetcore_sns_deliveries_total", protocol="http", outcome="filtered")
    # matches neither: filtered while Publish runs, never queued
    sns.publish(TopicArn=topic, Message=json.dumps({"device": {"kind": "fan"}}),
                MessageAttributes={"severity": {"DataType": "String", "StringValue": "critical"},
                                   "temp": {"DataType": "Number", "StringValue": "50"}})
    assert metric(sb, "fleetcore_sns_deliveries_total", protocol="http", outcome="filtered") == filtered_before + 2
    sns.publish(TopicArn=topic, Message="attributes match",
                MessageAttributes={"severity": {"DataType": "String", "StringValue": "critical"},
                                   "temp": {"DataType": "Number", "StringValue": "95"}})
    sns.publish(TopicArn=topic, Message=json.dumps({"device": {"kind": "boiler-3"}}))
    by_attr.wait("Notification")
    by_body.wait("Notification")
    assert [n["Message"] for _, n in by_attr.of_type("Notification")] == ["attributes match"]
    assert [json.loads(n["Message"]) for _, n in by_body.of_type("Notification")] == \
        [{"device": {"kind": "boiler-3"}}]


def test_raw_delivery_and_mqtt_subscription(sb, aws, clients, endpoint, uid):
    sns = aws("sns", broker=sb)
    topic = sns.create_topic(Name=f"mqtt-{uid}")["TopicArn"]
    sub = clients(V5, broker=sb)
    sub.subscribe(f"alerts/{uid}/#", qos=1)
    sns.subscribe(TopicArn=topic, Protocol="mqtt", Endpoint=f"alerts/{uid}/envelope")
    sns.subscribe(TopicArn=topic, Protocol="mqtt", Endpoint=f"alerts/{uid}/raw",
                  Attributes={"RawMessageDelivery": "true"})
    raw_http = endpoint()
    arn = confirmed_http_subscription(sns, topic, raw_http)
    sns.set_subscription_attributes(SubscriptionArn=arn, AttributeName="RawMessageDelivery",
                                    AttributeValue="true")
    sns.publish(TopicArn=topic, Message="door open", Subject="Door")
    envelope = json.loads(sub.wait_message(topic=f"alerts/{uid}/envelope").payload)
    assert (envelope["Type"], envelope["Message"], envelope["Subject"]) == ("Notification", "door open", "Door")
    verify_signature(envelope)
    assert sub.wait_message(topic=f"alerts/{uid}/raw").payload == b"door open"
    wait_until(lambda: raw_http.requests and raw_http.requests[-1][1] == b"door open", 30,
               what="the raw http delivery")
    assert raw_http.requests[-1][0]["x-amz-sns-rawdelivery"] == "true"


def test_dead_endpoint_does_not_hold_up_a_healthy_one(sb, aws, endpoint, uid):
    sns = aws("sns", broker=sb)
    topic = sns.create_topic(Name=f"dead-{uid}")["TopicArn"]
    healthy, hung = endpoint(), endpoint()
    confirmed_http_subscription(sns, topic, healthy)
    confirmed_http_subscription(sns, topic, hung)
    hung.hang.set()  # accepts connections, never answers again
    for i in range(40):
        sns.publish(TopicArn=topic, Message=f"m{i}")
    got = healthy.wait("Notification", 40, timeout=30)
    assert sorted(n["Message"] for _, n in got) == sorted(f"m{i}" for i in range(40))
    assert hung.of_type("Notification") == []
    # an endpoint answering 500 is retried (counted) while the others carry on
    failing = endpoint()
    confirmed_http_subscription(sns, topic, failing)
    failing.status = 500
    retried_before = metric(sb, "fleetcore_sns_deliveries_total", protocol="http", outcome="retried")
    sns.publish(TopicArn=topic, Message="after")
    wait_until(lambda: len([r for r in failing.requests if b'"after"' in r[1]]) >= 4, 30,
               what="the first attempt and 3 immediate retries")
    assert metric(sb, "fleetcore_sns_deliveries_total", protocol="http", outcome="retried") >= retried_before + 3
    healthy.wait("Notification", 41)


@contextlib.contextmanager
def smtp_sink():
    """A local SMTP server (aiosmtpd) keeping every mail it receives: yields (the `[sns]` config
    lines that send through it, the list of received email.message.Message)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message as MessageHandler

    mails = []

    class Sink(MessageHandler):
        def handle_message(self, message):
            mails.append(message)

    port = free_port()
    controller = Controller(Sink(), hostname=HOST, port=port)
    controller.start()
    try:
        yield (f'smtp_host = "{HOST}"\nsmtp_port = {port}\nsmtp_security = "none"\n'
               'smtp_from = "fleetcore <alerts@fleetcore.test>"\n'), mails
    finally:
        controller.stop()


def test_email_subscription_through_an_smtp_server(broker_factory, aws, tmp_path, uid):
    with smtp_sink() as (smtp, mails):
        b = broker_factory(config_toml="[sns]\n" + smtp)
        sns = aws("sns", broker=b)
        topic = sns.create_topic(Name=f"mail-{uid}")["TopicArn"]
        sns.subscribe(TopicArn=topic, Protocol="email", Endpoint="ops@example.test")
        json_sub = sns.subscribe(TopicArn=topic, Protocol="email-json", Endpoint="bots@example.test")
        assert json_sub["SubscriptionArn"] == "pending confirmation"
        wait_until(lambda: len(mails) >= 2, 30, what="two confirmation mails")
        by_to = {m["To"]: m for m in mails}
        text = by_to["ops@example.test"]
        assert text["Subject"] == "AWS Notification - Subscription Confirmation"
        assert "alerts@fleetcore.test" in text["From"]
        link = re.search(r"(http://\S+/sns/confirm\?\S+)", text.get_payload(decode=True).decode()).group(1)
        assert fetch(link)[0] == 200
        confirmation = json.loads(by_to["bots@example.test"].get_payload(decode=True))
        assert confirmation["Type"] == "SubscriptionConfirmation"
        sns.confirm_subscription(TopicArn=topic, Token=confirmation["Token"])

        sns.publish(TopicArn=topic, Message="pump 4 stopped", Subject="Pump alarm")
        wait_until(lambda: len(mails) >= 4, 30, what="two notification mails")
        notes = {m["To"]: m for m in mails[2:]}
        body = notes["ops@example.test"].get_payload(decode=True).decode()
        assert notes["ops@example.test"]["Subject"] == "Pump alarm"
        assert body.startswith("pump 4 stopped") and "/sns/unsubscribe?" in body
        envelope = json.loads(notes["bots@example.test"].get_payload(decode=True))
        assert (envelope["Message"], envelope["Subject"]) == ("pump 4 stopped", "Pump alarm")
        delivered = metric(b, "fleetcore_sns_deliveries_total", protocol="email", outcome="delivered")
        assert delivered >= 2


PY_TO_STREAM = """
import json, os, boto3
def handler(event, context):
    boto3.client("kinesis").put_record(StreamName=os.environ["STREAM"], Data=json.dumps(event),
                                       PartitionKey="k")
    return {}
"""


@pytest.mark.timeout_seconds(300)
def test_lambda_subscription_gets_the_sns_event(sb, aws, uid):
    sns, lam, kinesis = aws("sns", broker=sb), aws("lambda", broker=sb), aws("kinesis", broker=sb)
    stream = f"sns-{uid}"
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as z:
        z.writestr("app.py", PY_TO_STREAM)
    fn = lam.create_function(FunctionName=f"sns-{uid}"[:60], Runtime="python3.11", Role=ROLE,
                             Handler="app.handler", Code={"ZipFile": code.getvalue()}, Timeout=30,
                             Environment={"Variables": {"STREAM": stream}})
    topic = sns.create_topic(Name=f"lambda-{uid}")["TopicArn"]
    sub = sns.subscribe(TopicArn=topic, Protocol="lambda", Endpoint=fn["FunctionArn"])["SubscriptionArn"]
    message_id = sns.publish(TopicArn=topic, Message="valve stuck",
                             MessageAttributes={"site": {"DataType": "String", "StringValue": "p7"}})["MessageId"]
    records = wait_stream(kinesis, stream, lambda rs: len(rs) >= 1, timeout=120)
    event = json.loads(records[0]["Data"])
    record = event["Records"][0]
    assert (record["EventSource"], record["EventSubscriptionArn"]) == ("aws:sns", sub)
    assert (record["Sns"]["MessageId"], record["Sns"]["Message"], record["Sns"]["TopicArn"]) == \
        (message_id, "valve stuck", topic)
    assert record["Sns"]["MessageAttributes"] == {"site": {"Type": "String", "Value": "p7"}}


def test_rule_sns_action_delivers_an_mqtt_publish_to_http(sb, aws, clients, endpoint, uid):
    sns, iot = aws("sns", broker=sb), aws("iot", broker=sb)
    topic = sns.create_topic(Name=f"rule-{uid}")["TopicArn"]
    ep = endpoint()
    confirmed_http_subscription(sns, topic, ep)
    create_rule(iot, rule_name(uid),
                f"SELECT temperature, topic(2) AS device FROM 'sns/+/{uid}' WHERE temperature > 80",
                [{"sns": {"targetArn": topic, "roleArn": ROLE}}])
    # JSON format: the rule output is SNS's message structure
    create_rule(iot, rule_name(uid) + "_json",
                f"SELECT 'structured' AS default FROM 'sns/+/{uid}' WHERE temperature > 80",
                [{"sns": {"targetArn": topic, "roleArn": ROLE, "messageFormat": "JSON"}}])
    dev = clients(V5, broker=sb)
    dev.publish(f"sns/boiler/{uid}", json.dumps({"temperature": 70}), qos=1)
    dev.publish(f"sns/boiler/{uid}", json.dumps({"temperature": 95}), qos=1)
    got = ep.wait("Notification", 2)
    messages = [n["Message"] for _, n in got]
    assert "structured" in messages
    messages.remove("structured")
    assert [json.loads(m) for m in messages] == [{"temperature": 95, "device": "boiler"}]
    for bad, word in [({"targetArn": "arn:aws:sqs:us-east-1:000000000000:q", "roleArn": ROLE}, "targetArn"),
                      ({"targetArn": topic, "roleArn": ROLE, "messageFormat": "XML"}, "messageFormat")]:
        with pytest.raises(ClientError) as e:
            create_rule(iot, rule_name(uid) + "_bad", f"SELECT * FROM 'sns/{uid}'", [{"sns": bad}])
        assert e.value.response["Error"]["Code"] == "InvalidRequestException"
        assert word in e.value.response["Error"]["Message"]


def test_topics_and_subscriptions_survive_a_kill(fresh_broker, aws, clients, endpoint, uid):
    sns = aws("sns", broker=fresh_broker)
    topic = sns.create_topic(Name=f"durable-{uid}", Tags=[{"Key": "k", "Value": "v"}])["TopicArn"]
    ep = endpoint()
    confirmed_http_subscription(sns, topic, ep, RawMessageDelivery="true")
    sns.subscribe(TopicArn=topic, Protocol="mqtt", Endpoint=f"kept/{uid}")
    pending = endpoint()
    sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=pending.url)
    pending.wait("SubscriptionConfirmation")
    fresh_broker.kill()
    fresh_broker.start()
    sns = aws("sns", broker=fresh_broker)
    assert sns.list_tags_for_resource(ResourceArn=topic)["Tags"] == [{"Key": "k", "Value": "v"}]
    attrs = sns.get_topic_attributes(TopicArn=topic)["Attributes"]
    assert (attrs["SubscriptionsConfirmed"], attrs["SubscriptionsPending"]) == ("2", "1")
    sub = clients(V5, broker=fresh_broker)
    sub.subscribe(f"kept/{uid}", qos=1)
    sns.publish(TopicArn=topic, Message="after the restart")
    assert json.loads(sub.wait_message(topic=f"kept/{uid}").payload)["Message"] == "after the restart"
    wait_until(lambda: any(body == b"after the restart" for _, body in ep.requests), 30,
               what="the raw http delivery after the restart")
    # the pending subscription's link still confirms it
    _, confirmation = pending.of_type("SubscriptionConfirmation")[0]
    assert fetch(confirmation["SubscribeURL"])[0] == 200
    assert sns.get_topic_attributes(TopicArn=topic)["Attributes"]["SubscriptionsConfirmed"] == "3"


def test_pending_deliveries_survive_a_kill(fresh_broker, aws, endpoint, uid):
    """Deliveries are on disk before Publish answers: with the endpoint down (503), some
    messages being retried and the rest still queued behind them, a SIGKILL and a restart with the
    endpoint back deliver every message, at least once."""
    sns = aws("sns", broker=fresh_broker)
    topic = sns.create_topic(Name=f"outbox-{uid}")["TopicArn"]
    ep = endpoint()
    confirmed_http_subscription(sns, topic, ep)
    ep.status = 503
    sent = {sns.publish(TopicArn=topic, Message=f"m{i}")["MessageId"]: f"m{i}" for i in range(60)}

    def tried() -> set:
        return {n["MessageId"] for _, n in ep.of_type("Notification")}

    # the lane's 16 slots are taken by messages being retried; the others wait in the queue
    wait_until(lambda: len(tried()) >= 16, 30, what="the first deliveries failing")
    assert len(tried()) < len(sent)
    fresh_broker.kill()
    with ep.lock:
        ep.requests.clear()
    ep.status = 200
    fresh_broker.start()
    got = wait_until(lambda: (ids := tried()) >= set(sent) and ids, 60,
                     what="every message delivered after the restart")
    assert got == set(sent)
    assert {n["MessageId"]: n["Message"] for _, n in ep.of_type("Notification")} == sent
    assert metric(fresh_broker, "fleetcore_sns_deliveries_total", protocol="http", outcome="delivered") >= len(sent)
    # finished deliveries are forgotten: once the outbox is empty, a restart sends nothing again
    assert "\nfleetcore_sns_outbox_deliveries " in fetch(fresh_broker.http_base + "/metrics")[1]
    wait_until(lambda: metric(fresh_broker, "fleetcore_sns_outbox_deliveries") == 0, 10,
               what="the outbox emptied")
    fresh_broker.kill()
    with ep.lock:
        ep.requests.clear()
    fresh_broker.start()
    sns = aws("sns", broker=fresh_broker)
    sns.publish(TopicArn=topic, Message="second fence")
    (_, fence), = ep.wait("Notification", 1)
    assert fence["Message"] == "second fence"
