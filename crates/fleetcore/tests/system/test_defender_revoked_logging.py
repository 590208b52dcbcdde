"""Device Defender Audit over fleetcore's own registry and logging options, through boto3: the
revoked-CA check (a CA made INACTIVE while device certificates it signed are still ACTIVE), the
revoked-device-certificate check (a REVOKED certificate still attached to a thing), the
SetV2LoggingOptions / GetV2LoggingOptions round trip, honoured by the platform's
`AWSIotLogsV2` entries, LOGGING_DISABLED_CHECK and the ENABLE_IOT_LOGGING mitigation action;
and the connection checks' sightings kept across a SIGKILL."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from brokers import wait_until
from clients import V5
from test_certificates import OwnCa
from test_defender import ROLE
from test_defender_audit import new_certificate

pytestmark = pytest.mark.fleetcore_only("Device Defender is fleetcore's")

REVOKED_CA = "REVOKED_CA_CERTIFICATE_STILL_ACTIVE_CHECK"
REVOKED_DEVICE = "REVOKED_DEVICE_CERTIFICATE_STILL_ACTIVE_CHECK"
LOGGING = "LOGGING_DISABLED_CHECK"
SHARED = "DEVICE_CERTIFICATE_SHARED_CHECK"
CONFLICT = "CONFLICTING_CLIENT_IDS_CHECK"


def audit(iot, *checks):
    """Runs `checks` on demand: (auditDetails, findings)."""
    task = iot.start_on_demand_audit_task(targetCheckNames=list(checks))["taskId"]
    return iot.describe_audit_task(taskId=task)["auditDetails"], \
        iot.list_audit_findings(taskId=task)["findings"]


def test_revoked_ca_and_revoked_device_certificate_checks(fresh_broker, aws, clients, client_cert, uid):
    b = fresh_broker
    iot = aws("iot", broker=b)
    iot.update_account_audit_configuration(roleArn=ROLE, auditCheckConfigurations={
        REVOKED_CA: {"enabled": True}, REVOKED_DEVICE: {"enabled": True}})
    own = OwnCa(f"operator CA {uid}")
    ca = iot.register_ca_certificate(caCertificate=own.pem, setAsActive=True)["certificateId"]
    active = iot.register_certificate(certificatePem=own.leaf(f"{uid}-a"), caCertificatePem=own.pem,
                                      status="ACTIVE")["certificateId"]
    iot.register_certificate(certificatePem=own.leaf(f"{uid}-b"), caCertificatePem=own.pem,
                             status="INACTIVE")

    # compliant: the CA is ACTIVE and no certificate is REVOKED
    details, findings = audit(iot, REVOKED_CA, REVOKED_DEVICE)
    assert findings == []
    assert details[REVOKED_CA]["checkRunStatus"] == "COMPLETED_COMPLIANT"
    assert details[REVOKED_CA]["totalResourcesCount"] == 1
    assert details[REVOKED_DEVICE]["checkRunStatus"] == "COMPLETED_COMPLIANT"

    # the CA revoked (INACTIVE) while one certificate it signed is still ACTIVE
    iot.update_ca_certificate(certificateId=ca, newStatus="INACTIVE")
    details, findings = audit(iot, REVOKED_CA, REVOKED_DEVICE)
    assert details[REVOKED_CA]["checkRunStatus"] == "COMPLETED_NON_COMPLIANT"
    assert details[REVOKED_CA]["nonCompliantResourcesCount"] == 1
    [f] = findings
    assert (f["checkName"], f["severity"], f["reasonForNonComplianceCode"]) == \
        (REVOKED_CA, "CRITICAL", "CERTIFICATE_REVOKED_BY_ISSUER")
    assert f["nonCompliantResource"]["resourceType"] == "CA_CERTIFICATE"
    assert f["nonCompliantResource"]["resourceIdentifier"] == {"caCertificateId": ca}
    assert f["nonCompliantResource"]["additionalInfo"]["ACTIVE_DEVICE_CERTIFICATES"] == "1"
    assert [(r["resourceType"], r["resourceIdentifier"]) for r in f["relatedResources"]] == \
        [("DEVICE_CERTIFICATE", {"deviceCertificateId": active})]
    # revoking that certificate too leaves nothing behind the CA (and it is attached to nothing)
    iot.update_certificate(certificateId=active, newStatus="REVOKED")
    details, findings = audit(iot, REVOKED_CA, REVOKED_DEVICE)
    assert findings == [], findings

    # a device certificate REVOKED while its thing still names it: the live connection is cut,
    # the attachment stays until detached
    thing = f"{uid}-dev"
    cert, key, cert_id = new_certificate(iot, b, client_cert, thing)
    iot.create_thing(thingName=thing)
    arn = iot.describe_certificate(certificateId=cert_id)["certificateDescription"]["certificateArn"]
    iot.attach_thing_principal(thingName=thing, principal=arn)
    device = clients(V5, broker=b, client_id=thing, tls=(cert, key))
    iot.update_certificate(certificateId=cert_id, newStatus="REVOKED")
    device.wait_disconnected()

    def revoked_finding():
        _, found = audit(iot, REVOKED_DEVICE)
        [f] = found
        info = f["nonCompliantResource"]["additionalInfo"]
        return f if "CONNECTED_CLIENT_IDS" not in info else None

    f = wait_until(revoked_finding, 10, interval=0.1, what="the finding without the cut connection")
    assert (f["severity"], f["reasonForNonComplianceCode"]) == ("MEDIUM", "CERTIFICATE_REVOKED_BY_ISSUER")
    assert f["nonCompliantResource"]["resourceIdentifier"] == {"deviceCertificateId": cert_id}
    assert f["nonCompliantResource"]["additionalInfo"]["ATTACHED_THINGS"] == thing
    iot.detach_thing_principal(thingName=thing, principal=arn)
    details, findings = audit(iot, REVOKED_DEVICE)
    assert findings == [] and details[REVOKED_DEVICE]["checkRunStatus"] == "COMPLETED_COMPLIANT"


def test_logging_options_are_honoured_audited_and_mitigated(broker_factory, aws, clients, uid):
    anonymous = f"{uid}-anon"
    b = broker_factory("--anonymous-policy", anonymous)
    iot, logs = aws("iot", broker=b), aws("logs", broker=b)
    iot.create_policy(policyName=anonymous, policyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
            {"Effect": "Allow", "Action": "iot:Subscribe",
             "Resource": "arn:aws:iot:us-east-1:000000000000:topicfilter/ok/*"}]}))
    device = clients(V5, broker=b, client_id=f"{uid}-dev")

    def denied(n: int) -> None:
        """An authorization failure the platform logs at INFO (when logging is on)."""
        assert device.subscribe(f"denied/{uid}/{n}") == [0x87]

    def logged() -> set[str]:
        try:
            out = logs.filter_log_events(logGroupName="AWSIotLogsV2",
                                         filterPattern=f'{{ $.clientId = "{uid}-dev" }}')
        except ClientError:
            return set()  # the group appears with the first platform event
        return {json.loads(e["message"])["topicName"] for e in out["events"]}

    # fleetcore logs from the start (AWS waits to be configured): INFO, enabled
    got = iot.get_v2_logging_options()
    assert (got["defaultLogLevel"], got["disableAllLogs"]) == ("INFO", False)
    denied(1)
    wait_until(lambda: f"denied/{uid}/1" in logged(), 20, interval=0.1, what="the first entry")
    iot.update_account_audit_configuration(roleArn=ROLE, auditCheckConfigurations={LOGGING: {"enabled": True}})
    details, findings = audit(iot, LOGGING)
    assert findings == [] and details[LOGGING]["checkRunStatus"] == "COMPLETED_COMPLIANT"

    # bad options change nothing
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.set_v2_logging_options(roleArn=ROLE, defaultLogLevel="LOUD", disableAllLogs=True)
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.set_v2_logging_options(roleArn="not-an-arn", disableAllLogs=True)
    assert iot.get_v2_logging_options()["disableAllLogs"] is False

    # disabled: the failure is not written; the audit finds the account's logging off
    iot.set_v2_logging_options(roleArn=ROLE, defaultLogLevel="WARN", disableAllLogs=True)
    got = iot.get_v2_logging_options()
    assert (got["roleArn"], got["defaultLogLevel"], got["disableAllLogs"]) == (ROLE, "WARN", True)
    denied(2)
    details, findings = audit(iot, LOGGING)
    [f] = findings
    assert (f["severity"], f["reasonForNonComplianceCode"]) == ("LOW", "LOGGING_DISABLED")
    assert f["nonCompliantResource"]["resourceType"] == "ACCOUNT_SETTINGS"
    assert f["nonCompliantResource"]["resourceIdentifier"] == {"account": "000000000000"}

    # the ENABLE_IOT_LOGGING mitigation turns it back on at the level it names
    action = f"{uid}-enable-logs"
    iot.create_mitigation_action(actionName=action, roleArn=ROLE, actionParams={
        "enableIoTLoggingParams": {"roleArnForLogging": ROLE, "logLevel": "INFO"}})
    assert iot.describe_mitigation_action(actionName=action)["actionType"] == "ENABLE_IOT_LOGGING"
    task = f"{uid}-fix"
    iot.start_audit_mitigation_actions_task(taskId=task, target={"findingIds": [f["findingId"]]},
                                            auditCheckToActionsMapping={LOGGING: [action]},
                                            clientRequestToken="t1")
    assert iot.describe_audit_mitigation_actions_task(taskId=task)["taskStatus"] == "COMPLETED"
    got = iot.get_v2_logging_options()
    assert (got["defaultLogLevel"], got["disableAllLogs"]) == ("INFO", False)
    denied(3)
    wait_until(lambda: f"denied/{uid}/3" in logged(), 20, interval=0.1, what="the entry after the mitigation")
    # one writer in order: the entry of the disabled spell would be there by now
    assert f"denied/{uid}/2" not in logged()
    details, findings = audit(iot, LOGGING)
    assert findings == []

    # durable: the options survive a SIGKILL, and a level above INFO drops INFO events
    iot.set_v2_logging_options(defaultLogLevel="ERROR")
    b.kill()
    b.start()
    iot, logs = aws("iot", broker=b), aws("logs", broker=b)
    got = iot.get_v2_logging_options()
    assert (got["roleArn"], got["defaultLogLevel"], got["disableAllLogs"]) == (ROLE, "ERROR", False)
    device = clients(V5, broker=b, client_id=f"{uid}-dev")
    denied(4)  # an INFO event
    iot.set_v2_logging_options(defaultLogLevel="INFO")
    denied(5)
    wait_until(lambda: f"denied/{uid}/5" in logged(), 20, interval=0.1, what="the entry at INFO")
    assert f"denied/{uid}/4" not in logged()
    # the per-target levels are not built: still answered as unknown, by name
    with pytest.raises(ClientError) as e:
        iot.list_v2_logging_levels()
    assert e.value.response["Error"]["Code"] == "UnknownOperationException"
    assert "ListV2LoggingLevels" in e.value.response["Error"]["Message"]


def test_connection_sightings_survive_sigkill(broker_factory, aws, clients, client_cert, uid):
    b = broker_factory(env={"FLEETCORE_DEFENDER_PERIOD_MS": "200"})
    iot = aws("iot", broker=b)
    iot.update_account_audit_configuration(roleArn=ROLE, auditCheckConfigurations={
        SHARED: {"enabled": True}, CONFLICT: {"enabled": True}})
    cert, key, cert_id = new_certificate(iot, b, client_cert, f"{uid}-shared")
    first = clients(V5, broker=b, client_id=f"{uid}-a", tls=(cert, key))
    clients(V5, broker=b, client_id=f"{uid}-b", tls=(cert, key))  # the same certificate at once
    clients(V5, broker=b, client_id=f"{uid}-a", tls=(cert, key))  # takes `a` over
    first.wait_disconnected()

    def periods() -> float:
        return b.metrics().get("fleetcore_defender_periods_committed_total", 0.0)

    # sightings are written with a period's commit: wait for two, so one began after them
    seen = periods()
    wait_until(lambda: periods() >= seen + 2, 20, interval=0.1, what="two committed periods")
    b.kill()
    b.start()
    iot = aws("iot", broker=b)
    _, findings = audit(iot, SHARED, CONFLICT)
    by_check = {f["checkName"]: f["nonCompliantResource"] for f in findings}
    assert by_check[SHARED]["resourceIdentifier"] == {"deviceCertificateId": cert_id}
    assert sorted(by_check[SHARED]["additionalInfo"]["CLIENT_IDS"].split(",")) == [f"{uid}-a", f"{uid}-b"]
    assert by_check[CONFLICT]["resourceIdentifier"] == {"clientId": f"{uid}-a"}
