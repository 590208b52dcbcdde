"""The control plane's front door, seen by real AWS clients: requests signed with Signature V4 by
boto3 and the aws CLI are served; unsigned, wrongly signed, stale, foreign-key and wrong-region
requests get the 403 AWS answers, with the error code SDKs raise; /health and /metrics stay open;
the credentials, region and account come from configuration."""

import datetime
import json
import urllib.error
import urllib.request

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from conftest import AWS_REGION, admin_credentials

pytestmark = pytest.mark.fleetcore_only("the AWS-compatible control plane")

ENDPOINT_TYPES = ["iot:Data", "iot:Data-ATS"]
AUTH_CODES = {"MissingAuthenticationTokenException", "IncompleteSignatureException",
              "UnrecognizedClientException", "InvalidSignatureException"}


def error_of(exc: pytest.ExceptionInfo) -> tuple[str, int, str]:
    err = exc.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"], err["Error"].get("Message", "")


def send(broker, method: str, path: str, headers=None, body: bytes | None = None):
    """A raw HTTP request: (status, headers, parsed JSON body or text)."""
    req = urllib.request.Request(broker.http_base + path, data=body, method=method,
                                 headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, hdrs, raw = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, raw = e.code, e.headers, e.read()
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = raw.decode(errors="replace")
    return status, hdrs, parsed


def botocore_signed(broker, method: str, path: str, service: str = "iot", body: bytes = b"",
                    when: datetime.datetime | None = None, secret: str | None = None,
                    monkeypatch=None) -> dict:
    """Headers botocore's own SigV4Auth puts on a request, optionally as of `when` (UTC)."""
    key, real_secret = admin_credentials(broker)
    request = AWSRequest(method=method, url=broker.http_base + path, data=body)
    signer = SigV4Auth(Credentials(key, secret or real_secret), service, AWS_REGION)
    if when is not None:
        monkeypatch.setattr("botocore.auth.get_current_datetime", lambda *a, **k: when)
    signer.add_auth(request)
    return dict(request.headers.items())


# ---------------------------------------------------------------------------------------------
# served

def test_describe_endpoint_with_boto3(aws):
    iot = aws("iot")
    answer = iot.describe_endpoint()
    assert answer["endpointAddress"] == "localhost"
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert answer["ResponseMetadata"]["RequestId"], "x-amzn-RequestId is missing"
    for kind in ENDPOINT_TYPES:
        assert iot.describe_endpoint(endpointType=kind)["endpointAddress"] == "localhost", kind


def test_describe_endpoint_with_the_aws_cli(aws_cli):
    assert aws_cli("iot", "describe-endpoint", "--endpoint-type", "iot:Data-ATS") == {
        "endpointAddress": "localhost"}
    assert aws_cli("iot", "describe-endpoint") == {"endpointAddress": "localhost"}


@pytest.mark.parametrize("kind,missing", [("iot:CredentialProvider", "credentials provider"),
                                          ("iot:Jobs", "jobs")])
def test_describe_endpoint_refuses_a_type_this_server_does_not_serve(aws, kind, missing):
    with pytest.raises(ClientError) as exc:
        aws("iot").describe_endpoint(endpointType=kind)
    code, status, message = error_of(exc)
    assert (code, status) == ("InvalidRequestException", 400)
    assert kind in message and missing in message, message


def test_describe_endpoint_rejects_an_unknown_type(aws, aws_cli):
    with pytest.raises(ClientError) as exc:
        aws("iot").describe_endpoint(endpointType="iot:Nope")
    code, status, message = error_of(exc)
    assert (code, status) == ("InvalidRequestException", 400)
    assert "iot:Nope" in message
    done = aws_cli("iot", "describe-endpoint", "--endpoint-type", "iot:Nope", check=False)
    assert done.returncode != 0 and "InvalidRequestException" in done.stderr, done.stderr


def test_percent_encoded_paths_verify(aws):
    """iot-data Publish sends its topic label percent-encoded (`/topics/devices%2Fd1%2Ft`) and
    signs it encoded twice: whatever the operation answers, it is not a signature error."""
    try:
        aws("iot-data").publish(topic="devices/d1/telemetry", qos=1, payload=b'{"t": 1}')
    except ClientError as e:
        assert e.response["Error"]["Code"] not in AUTH_CODES, e.response


def test_unknown_operations_have_the_aws_shape(aws, broker, monkeypatch):
    headers = botocore_signed(broker, "GET", "/no/such/operation")
    status, hdrs, body = send(broker, "GET", "/no/such/operation", headers)
    assert status == 404
    assert hdrs["x-amzn-ErrorType"] == "UnknownOperationException"
    assert "/no/such/operation" in body["message"]
    # an operation of a served service that fleetcore does not implement (yet): boto3 raises
    # the code, not a parse error, and the message names the operation
    with pytest.raises(ClientError) as exc:
        aws("iotanalytics").describe_logging_options()
    code, status, message = error_of(exc)
    assert (code, status) == ("UnknownOperationException", 501)
    assert "DescribeLoggingOptions" in message, message


@pytest.mark.parametrize("service,call,operation", [
    ("iot", lambda c: c.list_jobs(), "ListJobs"),
    ("iot", lambda c: c.create_role_alias(roleAlias="r", roleArn="arn:aws:iam::000000000000:role/r"),
     "CreateRoleAlias"),
    ("iot", lambda c: c.list_role_aliases(), "ListRoleAliases"),
    ("iot-data", lambda c: c.list_named_shadows_for_thing(thingName="t"), None),
])
def test_unimplemented_operations_are_named(aws, service, call, operation):
    """An AWS operation this server does not implement answers UnknownOperationException (501)
    naming it; one it implements answers as itself (the last case: implemented, so it is not an
    UnknownOperationException)."""
    client = aws(service)
    if operation is None:
        try:
            call(client)
        except ClientError as e:
            assert e.response["Error"]["Code"] != "UnknownOperationException", e.response
        return
    with pytest.raises(ClientError) as exc:
        call(client)
    code, status, message = error_of(exc)
    assert (code, status) == ("UnknownOperationException", 501)
    assert operation in message, message


# ---------------------------------------------------------------------------------------------
# refused

def test_unsigned_request_is_refused(broker):
    status, headers, body = send(broker, "GET", "/endpoint?endpointType=iot%3AData-ATS")
    assert status == 403
    assert headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert headers["x-amzn-RequestId"]
    assert body == {"message": "Missing Authentication Token"}
    m = broker.metrics()
    assert m.get('fleetcore_api_auth_failures_total{reason="missing"}', 0) >= 1


def test_wrong_secret_is_an_invalid_signature(aws):
    with pytest.raises(ClientError) as exc:
        aws("iot", secret_access_key="not-the-secret").describe_endpoint()
    code, status, message = error_of(exc)
    assert (code, status) == ("InvalidSignatureException", 403)
    assert message.startswith("The request signature we calculated does not match the signature "
                              "you provided."), message


def test_unknown_access_key_is_unrecognized(aws):
    with pytest.raises(ClientError) as exc:
        aws("iot", access_key_id="FCKINOTAKEYWEKNOW000", secret_access_key="x").describe_endpoint()
    assert error_of(exc)[:2] == ("UnrecognizedClientException", 403)


def test_json11_services_get_400_with_type(aws):
    """Kinesis and Firehose answer authentication failures with 400 and `__type`, as AWS does."""
    with pytest.raises(ClientError) as exc:
        aws("kinesis", secret_access_key="not-the-secret").list_streams()
    assert error_of(exc)[:2] == ("InvalidSignatureException", 400)


def test_signature_for_another_region_is_refused(aws):
    with pytest.raises(ClientError) as exc:
        aws("iot", region="eu-west-1").describe_endpoint()
    code, status, message = error_of(exc)
    assert (code, status) == ("InvalidSignatureException", 403)
    assert "us-east-1" in message and "eu-west-1" in message, message


def test_stale_and_future_signatures_are_refused(broker, monkeypatch):
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    path = "/endpoint?endpointType=iot%3AData-ATS"
    # the same request, signed now, is served: only the date differs below
    status, _, body = send(broker, "GET", path, botocore_signed(broker, "GET", path))
    assert (status, body) == (200, {"endpointAddress": "localhost"})

    for delta, words in [(-20, "Signature expired"), (+20, "Signature not yet current")]:
        headers = botocore_signed(broker, "GET", path, when=now + datetime.timedelta(minutes=delta),
                                  monkeypatch=monkeypatch)
        status, hdrs, body = send(broker, "GET", path, headers)
        assert status == 403, body
        assert hdrs["x-amzn-ErrorType"] == "InvalidSignatureException"
        assert body["message"].startswith(words), body


def test_tampered_requests_are_refused(broker):
    path = "/endpoint?endpointType=iot%3AData-ATS"
    headers = botocore_signed(broker, "GET", path)
    status, hdrs, _ = send(broker, "GET", "/endpoint?endpointType=iot%3AJobs", headers)
    assert (status, hdrs["x-amzn-ErrorType"]) == (403, "InvalidSignatureException")
    broken = dict(headers, Authorization=headers["Authorization"].split(", Signature=")[0])
    status, hdrs, body = send(broker, "GET", path, broken)
    assert (status, hdrs["x-amzn-ErrorType"]) == (403, "IncompleteSignatureException"), body
    status, hdrs, _ = send(broker, "GET", path, dict(headers, Authorization="Bearer abc"))
    assert (status, hdrs["x-amzn-ErrorType"]) == (403, "IncompleteSignatureException")


def test_health_and_metrics_need_no_signature(broker):
    assert broker.http_get("/health")[0] == 200
    status, text = broker.http_get("/metrics")
    assert status == 200 and "fleetcore_mqtt_connections" in text


# ---------------------------------------------------------------------------------------------
# configuration

def test_credentials_region_and_account_from_the_environment(broker_factory, aws, aws_cli):
    key, secret = "FCKIENVIRONMENT00001", "environment-secret-0123456789abcdefghijk"
    b = broker_factory(env={"FLEETCORE_ACCESS_KEY_ID": key, "FLEETCORE_SECRET_ACCESS_KEY": secret,
                            "FLEETCORE_REGION": "eu-west-1", "FLEETCORE_ACCOUNT_ID": "123456789012"})
    # the configured pair is written to the credentials file, so the CLI finds it there
    assert admin_credentials(b) == (key, secret)
    iot = aws("iot", broker=b, region="eu-west-1", access_key_id=key, secret_access_key=secret)
    assert iot.describe_endpoint()["endpointAddress"] == "localhost"
    assert aws_cli("iot", "describe-endpoint", broker=b,
                   env={"AWS_DEFAULT_REGION": "eu-west-1"}) == {"endpointAddress": "localhost"}
    # the default region is refused by this server
    with pytest.raises(ClientError) as exc:
        aws("iot", broker=b).describe_endpoint()
    assert error_of(exc)[0] == "InvalidSignatureException"


def test_endpoint_is_the_first_server_name(broker_factory, aws):
    b = broker_factory("--server-names", "iot.fleet.example,localhost")
    assert aws("iot", broker=b).describe_endpoint()["endpointAddress"] == "iot.fleet.example"
