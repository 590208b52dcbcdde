"""Device Defender Audit: the connection checks (a certificate used by several devices at once,
a client id used by several connections), the Cognito checks on a server without identity
pools, and audit suppressions applied to the findings, through boto3."""

from __future__ import annotations

import datetime as dt

import pytest

from clients import V5
from test_defender import ROLE

pytestmark = pytest.mark.fleetcore_only("Device Defender is fleetcore's")

SHARED = "DEVICE_CERTIFICATE_SHARED_CHECK"
CONFLICT = "CONFLICTING_CLIENT_IDS_CHECK"
COGNITO = ["UNAUTHENTICATED_COGNITO_ROLE_OVERLY_PERMISSIVE_CHECK",
           "AUTHENTICATED_COGNITO_ROLE_OVERLY_PERMISSIVE_CHECK"]


def new_certificate(iot, b, client_cert, cn: str):
    """A registered device certificate: (cert, key, certificate id)."""
    before = {c["certificateId"] for c in iot.list_certificates()["certificates"]}
    cert, key = client_cert(b, cn)
    [cid] = {c["certificateId"] for c in iot.list_certificates()["certificates"]} - before
    return cert, key, cid


def test_connection_checks_cognito_checks_and_suppressions(fresh_broker, aws, clients, client_cert, uid):
    b = fresh_broker
    iot = aws("iot", broker=b)
    iot.update_account_audit_configuration(roleArn=ROLE, auditCheckConfigurations={
        name: {"enabled": True} for name in [SHARED, CONFLICT, *COGNITO]})

    shared_cert, shared_key, shared_id = new_certificate(iot, b, client_cert, f"{uid}-shared")
    own_cert, own_key, own_id = new_certificate(iot, b, client_cert, f"{uid}-own")
    # two devices connected at once with one certificate
    clients(V5, broker=b, client_id=f"{uid}-a", tls=(shared_cert, shared_key))
    clients(V5, broker=b, client_id=f"{uid}-b", tls=(shared_cert, shared_key))
    # one device with its own certificate, connected twice under one client id: the second
    # connection takes the first one over
    first = clients(V5, broker=b, client_id=f"{uid}-dup", tls=(own_cert, own_key))
    clients(V5, broker=b, client_id=f"{uid}-dup", tls=(own_cert, own_key))
    first.wait_disconnected()

    task = iot.start_on_demand_audit_task(targetCheckNames=[SHARED, CONFLICT, *COGNITO])["taskId"]
    details = iot.describe_audit_task(taskId=task)["auditDetails"]
    for name in COGNITO:
        assert details[name]["checkRunStatus"] == "COMPLETED_COMPLIANT", details[name]
        assert details[name]["totalResourcesCount"] == 0
    assert details[SHARED]["checkRunStatus"] == "COMPLETED_NON_COMPLIANT"
    assert details[CONFLICT]["checkRunStatus"] == "COMPLETED_NON_COMPLIANT"
    [shared] = iot.list_audit_findings(taskId=task, checkName=SHARED)["findings"]
    assert shared["severity"] == "CRITICAL"
    assert shared["nonCompliantResource"]["resourceIdentifier"] == {"deviceCertificateId": shared_id}
    assert sorted(shared["nonCompliantResource"]["additionalInfo"]["CLIENT_IDS"].split(",")) == \
        [f"{uid}-a", f"{uid}-b"]
    [conflict] = iot.list_audit_findings(taskId=task, checkName=CONFLICT)["findings"]
    assert conflict["nonCompliantResource"]["resourceType"] == "CLIENT_ID"
    assert conflict["nonCompliantResource"]["resourceIdentifier"] == {"clientId": f"{uid}-dup"}
    assert conflict["reasonForNonComplianceCode"] == "DUPLICATE_CLIENT_ID_ACROSS_CONNECTIONS"
    assert own_id in conflict["nonCompliantResource"]["additionalInfo"]["CONNECTIONS"]

    # suppressions: round trip with AWS's errors
    resource = {"deviceCertificateId": shared_id}
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.create_audit_suppression(checkName=SHARED, resourceIdentifier=resource, clientRequestToken="t0")
    iot.create_audit_suppression(checkName=SHARED, resourceIdentifier=resource, suppressIndefinitely=True,
                                 description="lab bench", clientRequestToken="t1")
    with pytest.raises(iot.exceptions.ResourceAlreadyExistsException):
        iot.create_audit_suppression(checkName=SHARED, resourceIdentifier=resource,
                                     suppressIndefinitely=True, clientRequestToken="t2")
    got = iot.describe_audit_suppression(checkName=SHARED, resourceIdentifier=resource)
    assert (got["checkName"], got["resourceIdentifier"], got["suppressIndefinitely"], got["description"]) == \
        (SHARED, resource, True, "lab bench")
    listed = iot.list_audit_suppressions(checkName=SHARED)["suppressions"]
    assert [s["resourceIdentifier"] for s in listed] == [resource]
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_audit_suppression(checkName=CONFLICT, resourceIdentifier={"clientId": "none"})

    # a new audit marks the finding suppressed and counts it
    task = iot.start_on_demand_audit_task(targetCheckNames=[SHARED, CONFLICT])["taskId"]
    details = iot.describe_audit_task(taskId=task)["auditDetails"]
    assert details[SHARED]["suppressedNonCompliantResourcesCount"] == 1
    assert details[CONFLICT]["suppressedNonCompliantResourcesCount"] == 0
    [f] = iot.list_audit_findings(taskId=task, checkName=SHARED)["findings"]
    assert f["isSuppressed"] is True
    unsuppressed = iot.list_audit_findings(taskId=task, listSuppressedFindings=False)["findings"]
    assert [x["checkName"] for x in unsuppressed] == [CONFLICT]

    # an expiry in the future still suppresses; deleting ends it
    iot.update_audit_suppression(checkName=SHARED, resourceIdentifier=resource,
                                 expirationDate=dt.datetime.now() + dt.timedelta(days=1))
    got = iot.describe_audit_suppression(checkName=SHARED, resourceIdentifier=resource)
    assert got["suppressIndefinitely"] is False and got["expirationDate"] > dt.datetime.now(dt.timezone.utc)
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.update_audit_suppression(checkName=SHARED, resourceIdentifier=resource,
                                     expirationDate=dt.datetime.now() - dt.timedelta(days=1))
    iot.delete_audit_suppression(checkName=SHARED, resourceIdentifier=resource)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.delete_audit_suppression(checkName=SHARED, resourceIdentifier=resource)
    task = iot.start_on_demand_audit_task(targetCheckNames=[SHARED])["taskId"]
    [f] = iot.list_audit_findings(taskId=task)["findings"]
    assert f["isSuppressed"] is False
