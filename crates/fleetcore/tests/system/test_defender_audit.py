"""Device Defender Audit: the connection checks (a certificate used by several devices at once,
a client id used by several connections), the Cognito checks (no identity pools; the
unauthenticated check audits anonymous access), audit suppressions applied to the findings, and
scheduled audits run by a scheduler that survives a SIGKILL, through boto3."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from botocore.exceptions import ClientError

from brokers import wait_until
from clients import V5
from test_defender import ROLE

pytestmark = pytest.mark.fleetcore_only("Device Defender is fleetcore's")

SHARED = "DEVICE_CERTIFICATE_SHARED_CHECK"
CONFLICT = "CONFLICTING_CLIENT_IDS_CHECK"
COGNITO = ["UNAUTHENTICATED_COGNITO_ROLE_OVERLY_PERMISSIVE_CHECK",
           "AUTHENTICATED_COGNITO_ROLE_OVERLY_PERMISSIVE_CHECK"]
# fleetcore's unauthenticated devices are its anonymous clients, named in AWS's pool id slot
ANONYMOUS = {"cognitoIdentityPoolId": "fleetcore:anonymous-clients"}


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
    authenticated, unauthenticated = details[COGNITO[1]], details[COGNITO[0]]
    assert (authenticated["checkRunStatus"], authenticated["totalResourcesCount"]) == \
        ("COMPLETED_COMPLIANT", 0), authenticated
    # the test brokers admit anonymous clients on plain TCP with no policy: everything allowed
    assert (unauthenticated["checkRunStatus"], unauthenticated["totalResourcesCount"],
            unauthenticated["nonCompliantResourcesCount"]) == ("COMPLETED_NON_COMPLIANT", 1, 1)
    [anonymous] = iot.list_audit_findings(taskId=task, checkName=COGNITO[0])["findings"]
    assert anonymous["nonCompliantResource"]["resourceIdentifier"] == ANONYMOUS
    assert anonymous["severity"] == "CRITICAL" and "--anonymous-policy" in anonymous["reasonForNonCompliance"]
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


def scheduled_tasks(iot) -> list[dict]:
    return iot.list_audit_tasks(startTime=dt.datetime.now() - dt.timedelta(minutes=10),
                                endTime=dt.datetime.now() + dt.timedelta(minutes=1),
                                taskType="SCHEDULED_AUDIT_TASK")["tasks"]


def test_scheduled_audits_run_when_due_and_survive_sigkill(broker_factory, aws, uid):
    # Test knob (documented as such): a schedule's day lasts one second on this server.
    b = broker_factory(env={"FLEETCORE_DEFENDER_AUDIT_DAY_SECS": "1"})
    iot = aws("iot", broker=b)
    broad = f"{uid}-broad"
    iot.create_policy(policyName=broad, policyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}))
    check = "IOT_POLICY_OVERLY_PERMISSIVE_CHECK"
    name = f"{uid}-nightly"
    with pytest.raises(iot.exceptions.InvalidRequestException) as e:
        iot.create_scheduled_audit(scheduledAuditName=name, frequency="DAILY", targetCheckNames=[check])
    assert "not enabled" in e.value.response["Error"]["Message"]
    iot.update_account_audit_configuration(roleArn=ROLE, auditCheckConfigurations={check: {"enabled": True}})
    for bad in ({"frequency": "WEEKLY"}, {"frequency": "DAILY", "dayOfWeek": "MON"},
                {"frequency": "MONTHLY", "dayOfMonth": "32"}):
        with pytest.raises(iot.exceptions.InvalidRequestException):
            iot.create_scheduled_audit(scheduledAuditName=name, targetCheckNames=[check], **bad)
    # weekly on a day of a one-second week: it first runs within seven seconds
    out = iot.create_scheduled_audit(scheduledAuditName=name, frequency="WEEKLY", dayOfWeek="MON",
                                     targetCheckNames=[check])
    arn = f"arn:aws:iot:us-east-1:000000000000:scheduledaudit/{name}"
    assert out["scheduledAuditArn"] == arn
    with pytest.raises(iot.exceptions.ResourceAlreadyExistsException):
        iot.create_scheduled_audit(scheduledAuditName=name, frequency="DAILY", targetCheckNames=[check])
    got = iot.describe_scheduled_audit(scheduledAuditName=name)
    assert (got["frequency"], got["dayOfWeek"], got["targetCheckNames"]) == ("WEEKLY", "MON", [check])
    assert iot.update_scheduled_audit(scheduledAuditName=name, frequency="DAILY")["scheduledAuditArn"] == arn
    got = iot.describe_scheduled_audit(scheduledAuditName=name)
    assert got["frequency"] == "DAILY" and "dayOfWeek" not in got
    assert {"scheduledAuditName": name, "scheduledAuditArn": arn, "frequency": "DAILY"} in \
        iot.list_scheduled_audits()["scheduledAudits"]

    [first, *_] = wait_until(lambda: scheduled_tasks(iot), 20, interval=0.2, what="a scheduled audit task")
    task = iot.describe_audit_task(taskId=first["taskId"])
    assert (task["taskStatus"], task["scheduledAuditName"]) == ("COMPLETED", name)
    findings = iot.list_audit_findings(taskId=first["taskId"])["findings"]
    assert [f["nonCompliantResource"]["resourceIdentifier"]["policyVersionIdentifier"]["policyName"]
            for f in findings] == [broad]

    b.kill()  # SIGKILL: the schedule is in the store
    b.start()
    iot = aws("iot", broker=b)
    before = {t["taskId"] for t in scheduled_tasks(iot)}
    wait_until(lambda: {t["taskId"] for t in scheduled_tasks(iot)} - before, 20, interval=0.2,
               what="a scheduled audit task after the restart")

    iot.delete_scheduled_audit(scheduledAuditName=name)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_scheduled_audit(scheduledAuditName=name)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.delete_scheduled_audit(scheduledAuditName=name)


def test_audit_mitigation_actions_apply_to_findings(fresh_broker, aws, clients, client_cert, uid):
    b = fresh_broker
    iot, sns = aws("iot", broker=b), aws("sns", broker=b)
    broad = f"{uid}-broad"
    iot.create_policy(policyName=broad, policyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}))
    permissive = "IOT_POLICY_OVERLY_PERMISSIVE_CHECK"
    iot.update_account_audit_configuration(roleArn=ROLE, auditCheckConfigurations={
        permissive: {"enabled": True}, SHARED: {"enabled": True}})
    cert, key, cert_id = new_certificate(iot, b, client_cert, f"{uid}-shared")
    device = clients(V5, broker=b, client_id=f"{uid}-a", tls=(cert, key))
    clients(V5, broker=b, client_id=f"{uid}-b", tls=(cert, key))
    topic = sns.create_topic(Name=f"findings-{uid}")["TopicArn"]
    watcher = clients(V5, broker=b, client_id=f"{uid}-watch")
    watcher.subscribe(f"sns/{uid}", qos=1)
    sns.subscribe(TopicArn=topic, Protocol="mqtt", Endpoint=f"sns/{uid}",
                  Attributes={"RawMessageDelivery": "true"})

    # one action per kind; an unknown log level is refused at create
    actions = {
        "blank": {"replaceDefaultPolicyVersionParams": {"templateName": "BLANK_POLICY"}},
        "deactivate": {"updateDeviceCertificateParams": {"action": "DEACTIVATE"}},
        "ca": {"updateCACertificateParams": {"action": "DEACTIVATE"}},
        "tell": {"publishFindingToSnsParams": {"topicArn": topic}},
    }
    for name, params in actions.items():
        iot.create_mitigation_action(actionName=f"{uid}-{name}", roleArn=ROLE, actionParams=params)
    assert iot.describe_mitigation_action(actionName=f"{uid}-ca")["actionType"] == "UPDATE_CA_CERTIFICATE"
    with pytest.raises(iot.exceptions.InvalidRequestException) as e:
        iot.create_mitigation_action(actionName=f"{uid}-log", roleArn=ROLE, actionParams={
            "enableIoTLoggingParams": {"roleArnForLogging": ROLE, "logLevel": "LOUD"}})
    assert "log level" in e.value.response["Error"]["Message"]
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.create_mitigation_action(actionName=f"{uid}-bad", roleArn=ROLE, actionParams={
            "replaceDefaultPolicyVersionParams": {"templateName": "OTHER"}})

    # finished audits are announced on the configured SNS topic
    iot.update_account_audit_configuration(auditNotificationTargetConfigurations={
        "SNS": {"targetArn": topic, "roleArn": ROLE, "enabled": True}})
    audit = iot.start_on_demand_audit_task(targetCheckNames=[permissive, SHARED])["taskId"]
    note = json.loads(watcher.wait_message(
        topic=f"sns/{uid}", pred=lambda m: json.loads(m.payload).get("taskId") == audit).payload)
    assert (note["taskStatus"], note["taskType"], note["totalChecksCount"]) == \
        ("COMPLETED", "ON_DEMAND_AUDIT_TASK", 2)
    assert note["nonCompliantChecksCount"] == 2
    findings = iot.list_audit_findings(taskId=audit)["findings"]
    [on_broad] = [f for f in findings if f["checkName"] == permissive and f["nonCompliantResource"][
        "resourceIdentifier"]["policyVersionIdentifier"]["policyName"] == broad]
    [on_cert] = [f for f in findings if f["checkName"] == SHARED]
    task = f"{uid}-fix"
    iot.start_audit_mitigation_actions_task(
        taskId=task, target={"findingIds": [on_broad["findingId"], on_cert["findingId"]]},
        auditCheckToActionsMapping={permissive: [f"{uid}-blank", f"{uid}-tell"],
                                    SHARED: [f"{uid}-deactivate", f"{uid}-ca"]},
        clientRequestToken="t1")

    # the policy's new default version denies everything; the certificate is inactive and
    # its live connections are cut; the finding reached the SNS topic
    policy = iot.get_policy(policyName=broad)
    assert policy["defaultVersionId"] == "2"
    assert json.loads(policy["policyDocument"])["Statement"][0]["Effect"] == "Deny"
    assert iot.describe_certificate(certificateId=cert_id)["certificateDescription"]["status"] == "INACTIVE"
    device.wait_disconnected()
    published = json.loads(watcher.wait_message(
        topic=f"sns/{uid}", pred=lambda m: "findingId" in json.loads(m.payload)).payload)
    assert published["findingId"] == on_broad["findingId"]

    got = iot.describe_audit_mitigation_actions_task(taskId=task)
    assert got["taskStatus"] == "COMPLETED"
    assert got["taskStatistics"][permissive]["succeededFindingsCount"] == 1
    assert got["taskStatistics"][SHARED] == {"totalFindingsCount": 1, "failedFindingsCount": 0,
                                             "succeededFindingsCount": 1, "skippedFindingsCount": 0,
                                             "canceledFindingsCount": 0}
    executions = iot.list_audit_mitigation_actions_executions(
        taskId=task, findingId=on_cert["findingId"])["actionsExecutions"]
    assert {(e["actionName"], e["status"]) for e in executions} == {
        (f"{uid}-deactivate", "COMPLETED"), (f"{uid}-ca", "SKIPPED")}
    listed = iot.list_audit_mitigation_actions_tasks(
        findingId=on_broad["findingId"], startTime=dt.datetime.now() - dt.timedelta(minutes=5),
        endTime=dt.datetime.now() + dt.timedelta(minutes=1))["tasks"]
    assert [(t["taskId"], t["taskStatus"]) for t in listed] == [(task, "COMPLETED")]
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.cancel_audit_mitigation_actions_task(taskId=task)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.cancel_audit_mitigation_actions_task(taskId=f"{uid}-none")
    with pytest.raises(iot.exceptions.TaskAlreadyExistsException):
        iot.start_audit_mitigation_actions_task(
            taskId=task, target={"auditTaskId": audit},
            auditCheckToActionsMapping={permissive: [f"{uid}-tell"]}, clientRequestToken="t2")
    # Defender operations this server does not implement still answer as unknown, by name
    with pytest.raises(ClientError) as e:
        iot.list_dimensions()
    assert e.value.response["Error"]["Code"] == "UnknownOperationException"
    assert "ListDimensions" in e.value.response["Error"]["Message"]


def _unauthenticated_check(iot):
    task = iot.start_on_demand_audit_task(targetCheckNames=[COGNITO[0]])["taskId"]
    details = iot.describe_audit_task(taskId=task)["auditDetails"][COGNITO[0]]
    return details, iot.list_audit_findings(taskId=task, checkName=COGNITO[0])["findings"]


def test_unauthenticated_check_audits_anonymous_access_and_its_policy(broker_factory, aws):
    # anonymous clients governed by a policy: compliant while the policy is narrow
    b = broker_factory("--anonymous-policy", "anon")
    iot = aws("iot", broker=b)
    iot.update_account_audit_configuration(roleArn=ROLE, auditCheckConfigurations={
        COGNITO[0]: {"enabled": True}})
    narrow = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Publish",
              "Resource": "arn:aws:iot:us-east-1:000000000000:topic/lab/anon"}]}
    iot.create_policy(policyName="anon", policyDocument=json.dumps(narrow))
    details, findings = _unauthenticated_check(iot)
    assert (details["checkRunStatus"], details["totalResourcesCount"], findings) == \
        ("COMPLETED_COMPLIANT", 1, [])
    # the policy's new default version allows everything: non-compliant, naming the grant
    broad = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}
    iot.create_policy_version(policyName="anon", policyDocument=json.dumps(broad), setAsDefault=True)
    details, [finding] = _unauthenticated_check(iot)
    assert details["checkRunStatus"] == "COMPLETED_NON_COMPLIANT"
    assert finding["nonCompliantResource"]["resourceIdentifier"] == ANONYMOUS
    assert finding["nonCompliantResource"]["additionalInfo"] == {"ANONYMOUS_POLICY": "anon",
                                                                  "POLICY_VERSION_ID": "2"}
    assert "iot:* on *" in finding["reasonForNonCompliance"]

    # no anonymous clients at all: nothing to audit
    closed = broker_factory(allow_anonymous=False)
    iot = aws("iot", broker=closed)
    iot.update_account_audit_configuration(roleArn=ROLE, auditCheckConfigurations={
        COGNITO[0]: {"enabled": True}})
    details, findings = _unauthenticated_check(iot)
    assert (details["checkRunStatus"], details["totalResourcesCount"], findings) == \
        ("COMPLETED_COMPLIANT", 0, [])
