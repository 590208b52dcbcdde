"""Fleet provisioning end to end: the AWS IoT Device SDK v2 for Python (`awsiot.iotidentity`)
trades a claim certificate for its own identity over mTLS (CreateKeysAndCertificate and
CreateCertificateFromCsr, then RegisterThing with a template), reconnects as the new thing and
publishes telemetry; the claim certificate's policy allows nothing else; a pre-provisioning hook
(a real Python function through the lambda API) refuses a serial number; just-in-time
provisioning (JITP) and registration (JITR) with a device CA of the test's own; every bad input
answered on `rejected` with nothing half-created; boto3 `iot` round trips of the template
operations and RegisterThing."""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import hashlib
import json
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from brokers import Broker, wait_until
from clients import V5, Client
from test_access import NOT_AUTHORIZED, TlsRawClient, raw_publish_qos1
from test_certificates import OwnCa
from test_functions import create as create_function

pytestmark = pytest.mark.fleetcore_only("fleet provisioning is fleetcore's")

awsiot = pytest.importorskip("awsiot", reason="the AWS IoT Device SDK v2 (awsiotsdk) is not installed")
from awscrt import mqtt  # noqa: E402
from awsiot import iotidentity, mqtt_connection_builder  # noqa: E402

ACCOUNT = "000000000000"
REGION = "us-east-1"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/provisioning"
TIMEOUT = 20


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    """A server of this module's own; its Python functions (the hook) run with this
    interpreter."""
    b = Broker(tmp_path_factory.mktemp("provisioning-broker"), name="provisioning",
               env={"FLEETCORE_FUNCTIONS_PYTHON": sys.executable})
    b.start()
    yield b
    b.stop()


def topic_arn(t: str) -> str:
    return f"arn:aws:iot:{REGION}:{ACCOUNT}:topic/{t}"


def filter_arn(t: str) -> str:
    return f"arn:aws:iot:{REGION}:{ACCOUNT}:topicfilter/{t}"


def claim_policy(*templates: str) -> str:
    """The claim certificate's policy as AWS documents it: only the provisioning topics."""
    topics = ["$aws/certificates/create/*", "$aws/certificates/create-from-csr/*",
              *(f"$aws/provisioning-templates/{t}/provision/*" for t in templates)]
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
        {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"],
         "Resource": [topic_arn(t) for t in topics]},
        {"Effect": "Allow", "Action": "iot:Subscribe",
         "Resource": [filter_arn(t) for t in topics]}]})


DEVICE_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "iot:Connect",
     "Resource": f"arn:aws:iot:{REGION}:{ACCOUNT}:client/${{iot:Connection.Thing.ThingName}}"},
    {"Effect": "Allow", "Action": "iot:Publish",
     "Resource": topic_arn("telemetry/${iot:Connection.Thing.ThingName}")}]})


def template_body(policy: str, extra_resources: dict | None = None) -> str:
    return json.dumps({
        "Parameters": {
            "SerialNumber": {"Type": "String"},
            "Site": {"Type": "String", "Default": "factory"},
            "AWS::IoT::Certificate::Id": {"Type": "String"}},
        "Resources": {
            "thing": {"Type": "AWS::IoT::Thing", "Properties": {
                "ThingName": {"Fn::Join": ["", ["sensor-", {"Ref": "SerialNumber"}]]},
                "AttributePayload": {"site": {"Ref": "Site"}, "serial": {"Ref": "SerialNumber"}}},
                "OverrideSettings": {"AttributePayload": "MERGE"}},
            "certificate": {"Type": "AWS::IoT::Certificate", "Properties": {
                "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE"}},
            "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": policy}},
            **(extra_resources or {})},
        "DeviceConfiguration": {"telemetryTopic": {"Fn::Sub": "telemetry/sensor-${SerialNumber}"}}})


class Setup:
    """A template, the device policy, and a claim certificate (files) with the claim policy."""

    def __init__(self, iot, tmp_path: Path, uid: str, hook: dict | None = None,
                 body: str | None = None, enabled: bool = True, also_allow: tuple = ()):
        self.iot = iot
        self.name = "t-" + hashlib.sha1(uid.encode()).hexdigest()[:16]
        self.device_policy = f"device-{self.name}"
        iot.create_policy(policyName=self.device_policy, policyDocument=DEVICE_POLICY)
        iot.create_policy(policyName=f"claim-{self.name}", policyDocument=claim_policy(self.name, *also_allow))
        kw = {"preProvisioningHook": hook} if hook else {}
        iot.create_provisioning_template(
            templateName=self.name, templateBody=body or template_body(self.device_policy),
            provisioningRoleArn=ROLE, enabled=enabled, **kw)
        made = iot.create_keys_and_certificate(setAsActive=True)
        iot.attach_policy(policyName=f"claim-{self.name}", target=made["certificateArn"])
        self.claim_id = made["certificateId"]
        self.claim_cert = tmp_path / f"{self.name}-claim.pem"
        self.claim_key = tmp_path / f"{self.name}-claim.key"
        self.claim_cert.write_text(made["certificatePem"])
        self.claim_key.write_text(made["keyPair"]["PrivateKey"])


def connect(pb: Broker, cert: Path, key: Path, client_id: str) -> mqtt.Connection:
    conn = mqtt_connection_builder.mtls_from_path(
        endpoint="localhost", port=pb.ports["mqtts"], cert_filepath=str(cert),
        pri_key_filepath=str(key), ca_filepath=str(pb.ca_pem), client_id=client_id,
        clean_session=True, keep_alive_secs=30)
    conn.connect().result(TIMEOUT)
    return conn


class Answer:
    """The accepted or rejected answer of one request (whichever comes first)."""

    def __init__(self):
        self.future: cf.Future = cf.Future()

    def accepted(self, response):
        if not self.future.done():
            self.future.set_result(("accepted", response))

    def rejected(self, error):
        if not self.future.done():
            self.future.set_result(("rejected", error))

    def get(self):
        return self.future.result(TIMEOUT)


def create_keys(identity) -> tuple[str, object]:
    answer = Answer()
    req = iotidentity.CreateKeysAndCertificateSubscriptionRequest()
    f1, _ = identity.subscribe_to_create_keys_and_certificate_accepted(
        req, mqtt.QoS.AT_LEAST_ONCE, answer.accepted)
    f2, _ = identity.subscribe_to_create_keys_and_certificate_rejected(
        req, mqtt.QoS.AT_LEAST_ONCE, answer.rejected)
    f1.result(TIMEOUT), f2.result(TIMEOUT)
    identity.publish_create_keys_and_certificate(
        iotidentity.CreateKeysAndCertificateRequest(), mqtt.QoS.AT_LEAST_ONCE).result(TIMEOUT)
    return answer.get()


def create_from_csr(identity, csr_pem: str) -> tuple[str, object]:
    answer = Answer()
    req = iotidentity.CreateCertificateFromCsrSubscriptionRequest()
    f1, _ = identity.subscribe_to_create_certificate_from_csr_accepted(
        req, mqtt.QoS.AT_LEAST_ONCE, answer.accepted)
    f2, _ = identity.subscribe_to_create_certificate_from_csr_rejected(
        req, mqtt.QoS.AT_LEAST_ONCE, answer.rejected)
    f1.result(TIMEOUT), f2.result(TIMEOUT)
    identity.publish_create_certificate_from_csr(
        iotidentity.CreateCertificateFromCsrRequest(certificate_signing_request=csr_pem),
        mqtt.QoS.AT_LEAST_ONCE).result(TIMEOUT)
    return answer.get()


def register(identity, template: str, token: str, parameters: dict) -> tuple[str, object]:
    answer = Answer()
    req = iotidentity.RegisterThingSubscriptionRequest(template_name=template)
    f1, _ = identity.subscribe_to_register_thing_accepted(req, mqtt.QoS.AT_LEAST_ONCE, answer.accepted)
    f2, _ = identity.subscribe_to_register_thing_rejected(req, mqtt.QoS.AT_LEAST_ONCE, answer.rejected)
    f1.result(TIMEOUT), f2.result(TIMEOUT)
    identity.publish_register_thing(
        iotidentity.RegisterThingRequest(template_name=template, certificate_ownership_token=token,
                                         parameters=parameters),
        mqtt.QoS.AT_LEAST_ONCE).result(TIMEOUT)
    return answer.get()


def make_csr() -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")]))
           .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def publish_telemetry_as(pb: Broker, cert: Path, key: Path, thing: str, topic: str) -> None:
    """Connects as `thing` with its new certificate and publishes QoS 1 telemetry that a
    subscriber (anonymous, plain TCP) receives."""
    sub = Client(pb, V5)
    sub.connect()
    try:
        sub.subscribe(topic, qos=1)
        conn = connect(pb, cert, key, thing)
        try:
            conn.publish(topic, json.dumps({"t": 21.5}), mqtt.QoS.AT_LEAST_ONCE)[0].result(TIMEOUT)
            msg = sub.wait_message(topic=topic, timeout=TIMEOUT)
            assert json.loads(msg.payload) == {"t": 21.5}
        finally:
            conn.disconnect().result(TIMEOUT)
    finally:
        sub.close()


# ---------------------------------------------------------------------------------------------
# by claim, with the Device SDK

def test_sdk_claim_flow_provisions_reconnects_and_publishes(pb, aws, uid, tmp_path):
    iot = aws("iot", broker=pb)
    s = Setup(iot, tmp_path, uid)
    serial = hashlib.sha1(uid.encode()).hexdigest()[:10]
    conn = connect(pb, s.claim_cert, s.claim_key, f"claim-{serial}")
    try:
        identity = iotidentity.IotIdentityClient(conn)
        kind, keys = create_keys(identity)
        assert kind == "accepted", keys
        assert keys.certificate_id == hashlib.sha256(
            x509.load_pem_x509_certificate(keys.certificate_pem.encode()).public_bytes(
                serialization.Encoding.DER)).hexdigest()
        assert "PRIVATE KEY" in keys.private_key and keys.certificate_ownership_token
        # PENDING_ACTIVATION until the template activates it
        described = iot.describe_certificate(certificateId=keys.certificate_id)
        assert described["certificateDescription"]["status"] == "PENDING_ACTIVATION"

        kind, reg = register(identity, s.name, keys.certificate_ownership_token,
                             {"SerialNumber": serial})
        assert kind == "accepted", reg
        assert reg.thing_name == f"sensor-{serial}"
        assert reg.device_configuration == {"telemetryTopic": f"telemetry/sensor-{serial}"}

        # the token is single-use
        kind, again = register(identity, s.name, keys.certificate_ownership_token,
                               {"SerialNumber": serial})
        assert kind == "rejected"
        assert (again.status_code, again.error_code) == (400, "InvalidCertificateOwnershipToken")
    finally:
        conn.disconnect().result(TIMEOUT)

    thing = iot.describe_thing(thingName=reg.thing_name)
    assert thing["attributes"] == {"site": "factory", "serial": serial}
    cert = iot.describe_certificate(certificateId=keys.certificate_id)["certificateDescription"]
    assert cert["status"] == "ACTIVE"
    assert iot.list_thing_principals(thingName=reg.thing_name)["principals"] == [cert["certificateArn"]]
    assert [p["policyName"] for p in iot.list_attached_policies(target=cert["certificateArn"])["policies"]] \
        == [s.device_policy]

    cert_file, key_file = tmp_path / "device.pem", tmp_path / "device.key"
    cert_file.write_text(keys.certificate_pem)
    key_file.write_text(keys.private_key)
    publish_telemetry_as(pb, cert_file, key_file, reg.thing_name, reg.device_configuration["telemetryTopic"])


def test_sdk_create_from_csr_flow(pb, aws, uid, tmp_path):
    iot = aws("iot", broker=pb)
    s = Setup(iot, tmp_path, uid)
    serial = "csr" + hashlib.sha1(uid.encode()).hexdigest()[:8]
    csr, key_pem = make_csr()
    conn = connect(pb, s.claim_cert, s.claim_key, f"claim-{serial}")
    try:
        identity = iotidentity.IotIdentityClient(conn)
        kind, made = create_from_csr(identity, csr)
        assert kind == "accepted", made
        assert made.certificate_ownership_token and "BEGIN CERTIFICATE" in made.certificate_pem
        kind, reg = register(identity, s.name, made.certificate_ownership_token, {"SerialNumber": serial})
        assert kind == "accepted", reg
        # a CSR that does not parse
        kind, bad = create_from_csr(identity, "-----BEGIN CERTIFICATE REQUEST-----\nnope\n")
        assert kind == "rejected"
        assert (bad.status_code, bad.error_code) == (400, "InvalidCertificateSigningRequest")
    finally:
        conn.disconnect().result(TIMEOUT)
    cert_file, key_file = tmp_path / "csr-device.pem", tmp_path / "csr-device.key"
    cert_file.write_text(made.certificate_pem)
    key_file.write_text(key_pem)
    publish_telemetry_as(pb, cert_file, key_file, reg.thing_name, f"telemetry/{reg.thing_name}")


def cbor(value: dict) -> bytes:
    import awscrt.cbor
    e = awscrt.cbor.AwsCborEncoder()
    e.write_dict(value)
    return e.get_encoded_data()


def uncbor(data: bytes) -> dict:
    import awscrt.cbor
    return awscrt.cbor.AwsCborDecoder(data).pop_next_data_item()


def raw_answer(rc, topic: str) -> tuple[str, bytes]:
    """(accepted|rejected, payload) of the answer to `topic` on a raw connection."""
    import mqttwire as w
    while True:
        pk = rc.recv(TIMEOUT)
        if pk.type != w.PUBLISH:
            continue
        if pk.qos:
            rc.send(w.puback(pk.pid, rc.version))
        for kind in ("accepted", "rejected"):
            if pk.topic.decode() == f"{topic}/{kind}":
                return kind, pk.payload


def test_cbor_claim_flow(pb, aws, uid, tmp_path):
    iot = aws("iot", broker=pb)
    s = Setup(iot, tmp_path, uid)
    serial = "cbor" + hashlib.sha1(uid.encode()).hexdigest()[:8]
    create, provision = "$aws/certificates/create/cbor", f"$aws/provisioning-templates/{s.name}/provision/cbor"
    rc = TlsRawClient(pb, s.claim_cert, s.claim_key, V5)
    try:
        assert rc.connect(f"claim-{serial}").rc == 0
        rc.subscribe([(f"{t}/{k}", 1) for t in (create, provision) for k in ("accepted", "rejected")])
        rc.publish(create, cbor({}), qos=0)
        kind, payload = raw_answer(rc, create)
        keys = uncbor(payload)
        assert kind == "accepted" and set(keys) == {
            "certificateId", "certificatePem", "privateKey", "certificateOwnershipToken"}
        rc.publish(provision, b"\xff not cbor", qos=0)
        kind, payload = raw_answer(rc, provision)
        assert kind == "rejected" and uncbor(payload)["statusCode"] == 400
        rc.publish(provision, cbor({"certificateOwnershipToken": keys["certificateOwnershipToken"],
                                    "parameters": {"SerialNumber": serial}}), qos=0)
        kind, payload = raw_answer(rc, provision)
        assert (kind, uncbor(payload)) == ("accepted", {
            "thingName": f"sensor-{serial}",
            "deviceConfiguration": {"telemetryTopic": f"telemetry/sensor-{serial}"}})
    finally:
        rc.close()


def test_claim_certificate_can_do_nothing_else(pb, aws, uid, tmp_path):
    iot = aws("iot", broker=pb)
    s = Setup(iot, tmp_path, uid)
    rc = TlsRawClient(pb, s.claim_cert, s.claim_key, V5)
    try:
        assert rc.connect(f"claim-{s.name}").rc == 0
        assert raw_publish_qos1(rc, "telemetry/sensor-x", b"{}", 1).rc == NOT_AUTHORIZED
        assert raw_publish_qos1(rc, "$aws/provisioning-templates/other/provision/json", b"{}", 2).rc \
            == NOT_AUTHORIZED
    finally:
        rc.close()


def test_answers_go_only_to_the_requesting_connection(pb, aws, uid, tmp_path):
    """Two devices share the claim certificate: one's private key never reaches the other."""
    iot = aws("iot", broker=pb)
    s = Setup(iot, tmp_path, uid)
    snoop = Client(pb, V5, tls=(s.claim_cert, s.claim_key), client_id=f"snoop-{s.name}")
    snoop.connect()
    try:
        snoop.subscribe("$aws/certificates/create/json/accepted", qos=1)
        conn = connect(pb, s.claim_cert, s.claim_key, f"asker-{s.name}")
        try:
            kind, keys = create_keys(iotidentity.IotIdentityClient(conn))
            assert kind == "accepted"
        finally:
            conn.disconnect().result(TIMEOUT)
        snoop.sync()
        assert snoop.matching(topic="$aws/certificates/create/json/accepted") == []
    finally:
        snoop.close()


# ---------------------------------------------------------------------------------------------
# bad input: rejected with AWS's codes, nothing half-created

def test_bad_requests_are_rejected_and_leave_nothing(pb, aws, uid, tmp_path):
    iot = aws("iot", broker=pb)
    s = Setup(iot, tmp_path, uid, body=template_body(
        "no-such-policy-" + uid[:10]),  # fails after the thing was created
        also_allow=("no-such-template",))
    serial = "bad" + hashlib.sha1(uid.encode()).hexdigest()[:8]
    conn = connect(pb, s.claim_cert, s.claim_key, f"claim-{serial}")
    try:
        identity = iotidentity.IotIdentityClient(conn)
        kind, keys = create_keys(identity)
        assert kind == "accepted"
        token = keys.certificate_ownership_token

        kind, e = register(identity, "no-such-template", token, {"SerialNumber": serial})
        assert (kind, e.status_code, e.error_code) == ("rejected", 404, "ResourceNotFound")

        kind, e = register(identity, s.name, token, {})
        assert (kind, e.status_code, e.error_code) == ("rejected", 400, "InvalidParameters")
        assert "SerialNumber" in e.error_message

        kind, e = register(identity, s.name, "not-a-token", {"SerialNumber": serial})
        assert (kind, e.status_code, e.error_code) == ("rejected", 400, "InvalidCertificateOwnershipToken")

        # the template's policy does not exist: the thing made before that step is rolled back
        kind, e = register(identity, s.name, token, {"SerialNumber": serial})
        assert kind == "rejected" and "no-such-policy" in e.error_message, e
    finally:
        conn.disconnect().result(TIMEOUT)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing(thingName=f"sensor-{serial}")
    cert = iot.describe_certificate(certificateId=keys.certificate_id)["certificateDescription"]
    assert cert["status"] == "PENDING_ACTIVATION"
    assert iot.list_principal_things(principal=cert["certificateArn"])["things"] == []


def test_tokens_expire(broker_factory, aws, uid, tmp_path):
    b = broker_factory(env={"FLEETCORE_PROVISIONING_TOKEN_TTL_SECS": "1"})
    iot = aws("iot", broker=b)
    s = Setup(iot, tmp_path, uid)
    conn = connect(b, s.claim_cert, s.claim_key, "claim-expiring")
    try:
        identity = iotidentity.IotIdentityClient(conn)
        kind, keys = create_keys(identity)
        assert kind == "accepted"

        def expired():
            # a request missing its parameter keeps the token until it expires
            kind, e = register(identity, s.name, keys.certificate_ownership_token, {})
            assert kind == "rejected"
            return "expired" in e.error_message and e.error_code == "InvalidCertificateOwnershipToken"
        wait_until(expired, 15, interval=0.2, what="the ownership token to expire")
    finally:
        conn.disconnect().result(TIMEOUT)


def test_disabled_template_refuses(pb, aws, uid, tmp_path):
    iot = aws("iot", broker=pb)
    s = Setup(iot, tmp_path, uid, enabled=False)
    conn = connect(pb, s.claim_cert, s.claim_key, f"claim-{s.name}")
    try:
        identity = iotidentity.IotIdentityClient(conn)
        kind, keys = create_keys(identity)
        kind, e = register(identity, s.name, keys.certificate_ownership_token, {"SerialNumber": "1"})
        assert (kind, e.status_code) == ("rejected", 400) and "disabled" in e.error_message
    finally:
        conn.disconnect().result(TIMEOUT)


# ---------------------------------------------------------------------------------------------
# the pre-provisioning hook

HOOK = """
def handler(event, context):
    serial = event["parameters"].get("SerialNumber", "")
    if serial.startswith("boom"):
        raise RuntimeError("hook crashed")
    if serial.startswith("odd"):
        return {"allow": True}
    assert event["certificateId"] and event["claimCertificateId"] and event["clientId"]
    assert "BEGIN CERTIFICATE" in event["certificatePem"] and ":provisioningtemplate/" in event["templateArn"]
    return {"allowProvisioning": not serial.startswith("banned"),
            "parameterOverrides": {"Site": "hooked"}}
"""


def test_hook_refuses_a_serial_and_overrides_parameters(pb, aws, uid, tmp_path):
    lam = aws("lambda", broker=pb)
    fn = create_function(lam, "hook-" + hashlib.sha1(uid.encode()).hexdigest()[:12], {"app.py": HOOK})
    iot = aws("iot", broker=pb)
    s = Setup(iot, tmp_path, uid, hook={"targetArn": fn["FunctionArn"], "payloadVersion": "2020-04-01"})
    tag = hashlib.sha1(uid.encode()).hexdigest()[:6]
    conn = connect(pb, s.claim_cert, s.claim_key, f"claim-{tag}")
    try:
        identity = iotidentity.IotIdentityClient(conn)
        for serial, why in ((f"banned{tag}", "allowProvisioning: false"), (f"boom{tag}", "failed"),
                            (f"odd{tag}", "malformed")):
            kind, keys = create_keys(identity)
            kind, e = register(identity, s.name, keys.certificate_ownership_token, {"SerialNumber": serial})
            assert (kind, e.status_code, e.error_code) == ("rejected", 403, "AccessDenied"), (serial, e)
            assert why in e.error_message, e.error_message
            with pytest.raises(iot.exceptions.ResourceNotFoundException):
                iot.describe_thing(thingName=f"sensor-{serial}")
        kind, keys = create_keys(identity)
        kind, reg = register(identity, s.name, keys.certificate_ownership_token, {"SerialNumber": f"ok{tag}"})
        assert kind == "accepted", reg
    finally:
        conn.disconnect().result(TIMEOUT)
    assert iot.describe_thing(thingName=reg.thing_name)["attributes"]["site"] == "hooked"
    # every refusal is in the log with its reason
    wait_until(lambda: "allowProvisioning: false" in pb.log_text(), 5, what="the refusal in the log")


# ---------------------------------------------------------------------------------------------
# just in time

def device_leaf(ca: OwnCa, cn: str, out: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca.key, hashes.SHA256()))
    cert_file, key_file = out / f"{cn}.pem", out / f"{cn}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def register_ca(iot, ca: OwnCa, **kw) -> str:
    code = iot.get_registration_code()["registrationCode"]
    return iot.register_ca_certificate(caCertificate=ca.pem, verificationCertificate=ca.leaf(code),
                                       setAsActive=True, allowAutoRegistration=True, **kw)["certificateId"]


JITP_BODY = json.dumps({
    "Parameters": {"AWS::IoT::Certificate::CommonName": {"Type": "String"},
                   "AWS::IoT::Certificate::Id": {"Type": "String"}},
    "Resources": {
        "thing": {"Type": "AWS::IoT::Thing", "Properties": {
            "ThingName": {"Ref": "AWS::IoT::Certificate::CommonName"},
            "AttributePayload": {"provisioned": "jitp"}}},
        "certificate": {"Type": "AWS::IoT::Certificate", "Properties": {
            "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE"}},
        "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyDocument": DEVICE_POLICY}}}})


def test_jitp_provisions_on_first_connection(pb, aws, uid, tmp_path):
    iot = aws("iot", broker=pb)
    ca = OwnCa(f"jitp-{uid}")
    register_ca(iot, ca, registrationConfig={"templateBody": JITP_BODY,
                                             "roleArn": ROLE})
    cn = "jitp-" + hashlib.sha1(uid.encode()).hexdigest()[:10]
    cert, key = device_leaf(ca, cn, tmp_path)
    # the first connection provisions and goes on (documented: fleetcore does not drop it)
    publish_telemetry_as(pb, cert, key, cn, f"telemetry/{cn}")
    assert iot.describe_thing(thingName=cn)["attributes"] == {"provisioned": "jitp"}
    cert_id = hashlib.sha256(x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(
        serialization.Encoding.DER)).hexdigest()
    described = iot.describe_certificate(certificateId=cert_id)["certificateDescription"]
    assert described["status"] == "ACTIVE" and described["caCertificateId"] == ca.id


def test_jitr_registers_pending_and_announces(pb, aws, uid, tmp_path):
    iot = aws("iot", broker=pb)
    ca = OwnCa(f"jitr-{uid}")
    ca_id = register_ca(iot, ca)
    watcher = Client(pb, V5)
    watcher.connect()
    try:
        watcher.subscribe(f"$aws/events/certificates/registered/{ca_id}", qos=1)
        cn = "jitr-" + hashlib.sha1(uid.encode()).hexdigest()[:10]
        cert, key = device_leaf(ca, cn, tmp_path)
        rc = TlsRawClient(pb, cert, key, V5)
        try:
            ack = rc.connect(cn)
            assert ack.rc == NOT_AUTHORIZED, ack
        finally:
            rc.close()
        event = json.loads(watcher.wait_message(topic=f"$aws/events/certificates/registered/{ca_id}",
                                                timeout=TIMEOUT).payload)
    finally:
        watcher.close()
    cert_id = hashlib.sha256(x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(
        serialization.Encoding.DER)).hexdigest()
    assert event["certificateId"] == cert_id and event["caCertificateId"] == ca_id
    assert event["certificateStatus"] == "PENDING_ACTIVATION" and event["awsAccountId"] == ACCOUNT
    assert iot.describe_certificate(certificateId=cert_id)["certificateDescription"]["status"] \
        == "PENDING_ACTIVATION"
    # a rule or function would activate it; then the device gets in
    iot.update_certificate(certificateId=cert_id, newStatus="ACTIVE")
    iot.create_policy(policyName=f"jitr-{cn}", policyDocument=json.dumps({"Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}))
    iot.attach_policy(policyName=f"jitr-{cn}", target=f"arn:aws:iot:{REGION}:{ACCOUNT}:cert/{cert_id}")
    rc = TlsRawClient(pb, cert, key, V5)
    try:
        assert rc.connect(cn).rc == 0
    finally:
        rc.close()


# ---------------------------------------------------------------------------------------------
# the template operations and RegisterThing through boto3

def test_template_operations_round_trip(pb, aws, uid):
    iot = aws("iot", broker=pb)
    name = "ops-" + hashlib.sha1(uid.encode()).hexdigest()[:12]
    made = iot.create_provisioning_template(
        templateName=name, description="first", templateBody=template_body("p"),
        provisioningRoleArn=ROLE, enabled=True, type="FLEET_PROVISIONING")
    assert made["templateArn"] == f"arn:aws:iot:{REGION}:{ACCOUNT}:provisioningtemplate/{name}"
    assert made["defaultVersionId"] == 1
    with pytest.raises(iot.exceptions.ResourceAlreadyExistsException):
        iot.create_provisioning_template(templateName=name, templateBody=template_body("p"),
                                         provisioningRoleArn=ROLE)
    d = iot.describe_provisioning_template(templateName=name)
    assert (d["templateName"], d["description"], d["enabled"], d["type"], d["defaultVersionId"]) == \
        (name, "first", True, "FLEET_PROVISIONING", 1)
    assert json.loads(d["templateBody"]) == json.loads(template_body("p"))
    assert name in [t["templateName"] for t in iot.list_provisioning_templates()["templates"]]

    v2 = iot.create_provisioning_template_version(templateName=name, templateBody=template_body("p2"),
                                                  setAsDefault=True)
    assert (v2["versionId"], v2["isDefaultVersion"]) == (2, True)
    versions = iot.list_provisioning_template_versions(templateName=name)["versions"]
    assert [(v["versionId"], v["isDefaultVersion"]) for v in versions] == [(1, False), (2, True)]
    assert "p2" in iot.describe_provisioning_template_version(templateName=name, versionId=2)["templateBody"]
    with pytest.raises(iot.exceptions.DeleteConflictException):
        iot.delete_provisioning_template_version(templateName=name, versionId=2)
    iot.delete_provisioning_template_version(templateName=name, versionId=1)
    for n in (3, 4, 5, 6):
        iot.create_provisioning_template_version(templateName=name, templateBody=template_body("p"))
    with pytest.raises(iot.exceptions.VersionsLimitExceededException):
        iot.create_provisioning_template_version(templateName=name, templateBody=template_body("p"))

    iot.update_provisioning_template(templateName=name, description="second", enabled=False,
                                     defaultVersionId=3)
    d = iot.describe_provisioning_template(templateName=name)
    assert (d["description"], d["enabled"], d["defaultVersionId"]) == ("second", False, 3)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.update_provisioning_template(templateName=name, defaultVersionId=99)

    iot.delete_provisioning_template(templateName=name)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_provisioning_template(templateName=name)


@pytest.mark.parametrize("body,place", [
    ("{not json", "not JSON"),
    (json.dumps({"Resources": {"t": {"Type": "AWS::IoT::Thing", "Properties": {
        "ThingName": {"Ref": "Missing"}}}}}), "Resources.t.Properties.ThingName.Ref"),
    (json.dumps({"Resources": {"t": {"Type": "AWS::Lambda::Function"}}}), "Resources.t.Type"),
    (json.dumps({"Resources": {"t": {"Type": "AWS::IoT::Thing", "Properties": {
        "ThingName": {"Fn::Nope": [1]}}}}}), "Fn::Nope"),
])
def test_malformed_templates_are_refused_at_create(pb, aws, uid, body, place):
    iot = aws("iot", broker=pb)
    name = "bad-" + hashlib.sha1(uid.encode()).hexdigest()[:12]
    with pytest.raises(iot.exceptions.InvalidRequestException) as e:
        iot.create_provisioning_template(templateName=name, templateBody=body, provisioningRoleArn=ROLE)
    assert place in e.value.response["Error"]["Message"]
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_provisioning_template(templateName=name)
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.create_provisioning_template(templateName=name, templateBody=JITP_BODY, provisioningRoleArn=ROLE,
                                         type="JITP", preProvisioningHook={"targetArn": "arn:aws:lambda:x"})


def test_register_thing_by_api_with_a_csr(pb, aws, uid):
    iot = aws("iot", broker=pb)
    csr, _ = make_csr()
    name = "api-" + hashlib.sha1(uid.encode()).hexdigest()[:10]
    body = json.dumps({
        "Parameters": {"Name": {"Type": "String"}, "Csr": {"Type": "String"}},
        "Resources": {
            "thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "Name"}}},
            "certificate": {"Type": "AWS::IoT::Certificate", "Properties": {
                "CertificateSigningRequest": {"Ref": "Csr"}, "Status": "ACTIVE"}}}})
    out = iot.register_thing(templateBody=body, parameters={"Name": name, "Csr": csr})
    assert "BEGIN CERTIFICATE" in out["certificatePem"]
    assert out["resourceArns"]["thing"].endswith(f":thing/{name}")
    cert_id = out["resourceArns"]["certificate"].rsplit("/", 1)[1]
    assert iot.describe_certificate(certificateId=cert_id)["certificateDescription"]["status"] == "ACTIVE"
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.register_thing(templateBody=body, parameters={"Name": name + "x", "Csr": "garbage"})
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing(thingName=name + "x")


def test_other_provisioning_operations_stay_unimplemented(pb, aws):
    iot = aws("iot", broker=pb)
    with pytest.raises(Exception) as e:
        iot.create_provisioning_claim(templateName="anything")
    assert e.value.response["Error"]["Code"] == "UnknownOperationException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501
