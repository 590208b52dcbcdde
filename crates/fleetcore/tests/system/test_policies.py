"""IoT policies through boto3, as a user manages them: create, get, list (marker paging), delete;
versions (create, get, list, delete, set default, the limit of five); attach to and detach from
certificates and thing groups, list both ways; and every error an SDK user can meet, with the
code and status AWS uses. Policies and attachments survive a restart."""

import json

import pytest
from botocore.exceptions import ClientError

pytestmark = pytest.mark.fleetcore_only("the AWS-compatible control plane")

ACCOUNT = "000000000000"


def document(*statements) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


ALLOW_ALL = document({"Effect": "Allow", "Action": "iot:*", "Resource": "*"})
DEVICE = document(
    {"Effect": "Allow", "Action": "iot:Connect",
     "Resource": f"arn:aws:iot:us-east-1:{ACCOUNT}:client/${{iot:ClientId}}"},
    {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"],
     "Resource": f"arn:aws:iot:us-east-1:{ACCOUNT}:topic/devices/${{iot:Connection.Thing.ThingName}}/*"},
    {"Effect": "Deny", "Action": "iot:Publish", "Resource": "arn:aws:iot:*:*:topic/devices/*/admin"},
)


def error_of(exc: pytest.ExceptionInfo) -> tuple[str, int, str]:
    err = exc.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"], err["Error"].get("Message", "")


def policy_arn(iot, name: str) -> str:
    return iot.get_policy(policyName=name)["policyArn"]


# ---------------------------------------------------------------------------------------------
# create, get, list, delete

def test_create_get_delete(aws, uid):
    iot = aws("iot")
    created = iot.create_policy(policyName=uid, policyDocument=DEVICE)
    assert created["policyName"] == uid
    assert created["policyVersionId"] == "1"
    assert created["policyDocument"] == DEVICE
    assert created["policyArn"].startswith("arn:aws:iot:us-east-1:")
    assert created["policyArn"].endswith(f":policy/{uid}")

    got = iot.get_policy(policyName=uid)
    assert got["policyName"] == uid
    assert got["policyArn"] == created["policyArn"]
    assert json.loads(got["policyDocument"]) == json.loads(DEVICE)
    assert got["defaultVersionId"] == "1"
    assert got["generationId"]
    assert got["creationDate"] <= got["lastModifiedDate"]

    iot.delete_policy(policyName=uid)
    with pytest.raises(ClientError) as exc:
        iot.get_policy(policyName=uid)
    assert error_of(exc)[:2] == ("ResourceNotFoundException", 404)


def test_names_use_every_allowed_character(aws, uid):
    iot = aws("iot")
    name = f"{uid}.a@b=c,d+e-f_g"
    assert iot.create_policy(policyName=name, policyDocument=ALLOW_ALL)["policyName"] == name
    assert iot.get_policy(policyName=name)["policyArn"].endswith(f":policy/{name}")
    iot.create_policy_version(policyName=name, policyDocument=DEVICE)
    assert iot.get_policy_version(policyName=name, policyVersionId="2")["policyName"] == name
    cert_arn = iot.create_keys_and_certificate(setAsActive=False)["certificateArn"]
    iot.attach_policy(policyName=name, target=cert_arn)
    assert [p["policyName"] for p in iot.list_attached_policies(target=cert_arn)["policies"]] == [name]
    iot.detach_policy(policyName=name, target=cert_arn)
    iot.delete_policy_version(policyName=name, policyVersionId="2")
    iot.delete_policy(policyName=name)


def test_create_errors(aws, uid):
    iot = aws("iot")
    iot.create_policy(policyName=uid, policyDocument=ALLOW_ALL)
    with pytest.raises(ClientError) as exc:
        iot.create_policy(policyName=uid, policyDocument=ALLOW_ALL)
    assert error_of(exc)[:2] == ("ResourceAlreadyExistsException", 409)
    assert exc.value.response.get("resourceId") == uid or uid in error_of(exc)[2]

    with pytest.raises(ClientError) as exc:
        iot.create_policy(policyName=f"{uid}-bad", policyDocument="{not json")
    code, status, message = error_of(exc)
    assert (code, status) == ("MalformedPolicyException", 400)
    assert "JSON" in message

    with pytest.raises(ClientError) as exc:
        iot.create_policy(policyName="has space", policyDocument=ALLOW_ALL)
    assert error_of(exc)[:2] == ("InvalidRequestException", 400)

    with pytest.raises(ClientError) as exc:
        iot.get_policy(policyName=f"{uid}-missing")
    assert error_of(exc)[:2] == ("ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as exc:
        iot.delete_policy(policyName=f"{uid}-missing")
    assert error_of(exc)[:2] == ("ResourceNotFoundException", 404)


@pytest.mark.parametrize("doc, says", [
    ("", "empty"),
    ("[]", "JSON object"),
    (json.dumps({"Statement": []}), "Version"),
    (json.dumps({"Version": "2008-10-17", "Statement": []}), "2012-10-17"),
    (json.dumps({"Version": "2012-10-17"}), "Statement"),
    (document({"Effect": "Allow", "Action": "iot:Publish"}), "Resource"),
    (document({"Effect": "Permit", "Action": "iot:Publish", "Resource": "*"}), "Effect"),
    (document({"Effect": "Allow", "Action": "Publish", "Resource": "*"}), "iot:Publish"),
    (document({"Effect": "Allow", "Action": "iot:Publish", "Resource": "topic/x"}), "ARN"),
    (document({"Effect": "Allow", "Action": "iot:Publish",
               "Resource": "arn:aws:iot:r:1:topic/${iot:ClientId"}), "${"),
    (document({"Effect": "Allow", "Action": "iot:Connect", "Resource": "*",
               "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}), "IpAddress"),
    (document({"Effect": "Allow", "NotAction": "iot:Connect", "Resource": "*"}), "NotAction"),
    (document({"Effect": "Allow", "Action": "iot:Publish",
               "Resource": "arn:aws:iot:r:1:topic/" + "x" * 2100}), "2048"),
])
def test_malformed_documents_say_what_to_fix(aws, uid, doc, says):
    iot = aws("iot")
    with pytest.raises(ClientError) as exc:
        iot.create_policy(policyName=uid, policyDocument=doc)
    code, status, message = error_of(exc)
    assert (code, status) == ("MalformedPolicyException", 400)
    assert says in message, message


def test_document_size_ignores_whitespace(aws, uid):
    iot = aws("iot")
    padded = ALLOW_ALL.replace(", ", ",\n" + " " * 1000)  # far over 2048 characters with spaces
    assert len(padded) > 2048
    iot.create_policy(policyName=uid, policyDocument=padded)
    assert iot.get_policy(policyName=uid)["policyDocument"] == padded


def test_list_policies_pages_with_markers(aws, uid):
    iot = aws("iot")
    names = [f"{uid}-{i}" for i in range(5)]
    for name in names:
        iot.create_policy(policyName=name, policyDocument=ALLOW_ALL)

    seen, marker, pages = [], None, 0
    while True:
        kwargs = {"pageSize": 2, **({"marker": marker} if marker else {})}
        page = iot.list_policies(**kwargs)
        pages += 1
        assert len(page["policies"]) <= 2
        for p in page["policies"]:
            assert p["policyArn"].endswith(f":policy/{p['policyName']}")
        seen += [p["policyName"] for p in page["policies"]]
        marker = page.get("nextMarker")
        if not marker:
            break
    assert [n for n in seen if n.startswith(f"{uid}-")] == names
    assert pages >= 3

    everything = [p["policyName"] for p in iot.list_policies()["policies"]]
    descending = [p["policyName"] for p in iot.list_policies(ascendingOrder=False)["policies"]]
    assert descending == list(reversed(everything))

    paginated = [p["policyName"] for page in iot.get_paginator("list_policies").paginate(
        PaginationConfig={"PageSize": 2}) for p in page["policies"]]
    assert paginated == everything


def test_list_policies_rejects_a_bad_marker(aws):
    iot = aws("iot")
    with pytest.raises(ClientError) as exc:
        iot.list_policies(marker="!!not-a-marker!!")
    assert error_of(exc)[:2] == ("InvalidRequestException", 400)


# ---------------------------------------------------------------------------------------------
# versions

def test_versions_lifecycle_and_limit(aws, uid):
    iot = aws("iot")
    iot.create_policy(policyName=uid, policyDocument=ALLOW_ALL)
    for expected in ["2", "3", "4", "5"]:
        v = iot.create_policy_version(policyName=uid, policyDocument=DEVICE)
        assert v["policyVersionId"] == expected
        assert v["isDefaultVersion"] is False
        assert v["policyArn"].endswith(f":policy/{uid}")
        assert v["policyDocument"] == DEVICE

    with pytest.raises(ClientError) as exc:
        iot.create_policy_version(policyName=uid, policyDocument=DEVICE, setAsDefault=True)
    assert error_of(exc)[:2] == ("VersionsLimitExceededException", 409)

    listed = iot.list_policy_versions(policyName=uid)["policyVersions"]
    assert [v["versionId"] for v in listed] == ["1", "2", "3", "4", "5"]
    assert [v["isDefaultVersion"] for v in listed] == [True, False, False, False, False]
    assert all("createDate" in v for v in listed)

    # The default version cannot be deleted; another can, and ids are never reused.
    with pytest.raises(ClientError) as exc:
        iot.delete_policy_version(policyName=uid, policyVersionId="1")
    assert error_of(exc)[:2] == ("DeleteConflictException", 409)
    iot.delete_policy_version(policyName=uid, policyVersionId="2")
    v6 = iot.create_policy_version(policyName=uid, policyDocument=DEVICE, setAsDefault=True)
    assert (v6["policyVersionId"], v6["isDefaultVersion"]) == ("6", True)
    got = iot.get_policy(policyName=uid)
    assert got["defaultVersionId"] == "6"
    assert json.loads(got["policyDocument"]) == json.loads(DEVICE)

    generation = got["generationId"]
    iot.set_default_policy_version(policyName=uid, policyVersionId="3")
    got = iot.get_policy(policyName=uid)
    assert got["defaultVersionId"] == "3"
    assert got["generationId"] != generation

    v3 = iot.get_policy_version(policyName=uid, policyVersionId="3")
    assert v3["policyName"] == uid
    assert v3["policyVersionId"] == "3"
    assert v3["isDefaultVersion"] is True
    assert v3["generationId"] == got["generationId"]
    assert "creationDate" in v3 and "lastModifiedDate" in v3
    assert iot.get_policy_version(policyName=uid, policyVersionId="6")["isDefaultVersion"] is False

    # A policy with versions besides the default cannot be deleted.
    with pytest.raises(ClientError) as exc:
        iot.delete_policy(policyName=uid)
    assert error_of(exc)[:2] == ("DeleteConflictException", 409)
    for v in ["1", "4", "5", "6"]:
        iot.delete_policy_version(policyName=uid, policyVersionId=v)
    iot.delete_policy(policyName=uid)


def test_version_errors(aws, uid):
    iot = aws("iot")
    iot.create_policy(policyName=uid, policyDocument=ALLOW_ALL)
    missing = f"{uid}-missing"
    for call in [
        lambda: iot.get_policy_version(policyName=uid, policyVersionId="9"),
        lambda: iot.delete_policy_version(policyName=uid, policyVersionId="9"),
        lambda: iot.set_default_policy_version(policyName=uid, policyVersionId="9"),
        lambda: iot.create_policy_version(policyName=missing, policyDocument=ALLOW_ALL),
        lambda: iot.list_policy_versions(policyName=missing),
        lambda: iot.get_policy_version(policyName=missing, policyVersionId="1"),
    ]:
        with pytest.raises(ClientError) as exc:
            call()
        assert error_of(exc)[:2] == ("ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as exc:
        iot.create_policy_version(policyName=uid, policyDocument='{"Version": "2012-10-17"}')
    assert error_of(exc)[:2] == ("MalformedPolicyException", 400)
    with pytest.raises(ClientError) as exc:
        iot.get_policy_version(policyName=uid, policyVersionId="one")
    assert error_of(exc)[:2] == ("InvalidRequestException", 400)


# ---------------------------------------------------------------------------------------------
# attachments

def test_attach_detach_certificate_and_thing_group(aws, uid):
    iot = aws("iot")
    iot.create_policy(policyName=uid, policyDocument=DEVICE)
    iot.create_policy(policyName=f"{uid}-b", policyDocument=ALLOW_ALL)
    cert = iot.create_keys_and_certificate(setAsActive=True)
    cert_arn = cert["certificateArn"]
    group_arn = iot.create_thing_group(thingGroupName=uid)["thingGroupArn"]

    iot.attach_policy(policyName=uid, target=cert_arn)
    iot.attach_policy(policyName=uid, target=cert_arn)  # attaching twice is not an error
    iot.attach_policy(policyName=f"{uid}-b", target=cert_arn)
    iot.attach_policy(policyName=uid, target=group_arn)

    attached = iot.list_attached_policies(target=cert_arn)["policies"]
    assert [p["policyName"] for p in attached] == [uid, f"{uid}-b"]
    assert attached[0]["policyArn"] == policy_arn(iot, uid)
    assert [p["policyName"] for p in iot.list_attached_policies(target=group_arn)["policies"]] == [uid]
    assert sorted(iot.list_targets_for_policy(policyName=uid)["targets"]) == sorted([cert_arn, group_arn])

    with pytest.raises(ClientError) as exc:
        iot.delete_policy(policyName=uid)
    assert error_of(exc)[:2] == ("DeleteConflictException", 409)

    iot.detach_policy(policyName=uid, target=cert_arn)
    iot.detach_policy(policyName=uid, target=cert_arn)  # detaching twice is not an error
    assert [p["policyName"] for p in iot.list_attached_policies(target=cert_arn)["policies"]] == [f"{uid}-b"]
    assert iot.list_targets_for_policy(policyName=uid)["targets"] == [group_arn]
    iot.detach_policy(policyName=uid, target=group_arn)
    assert iot.list_targets_for_policy(policyName=uid)["targets"] == []
    iot.delete_policy(policyName=uid)


def test_attach_errors(aws, uid):
    iot = aws("iot")
    iot.create_policy(policyName=uid, policyDocument=ALLOW_ALL)
    cert_arn = iot.create_keys_and_certificate(setAsActive=False)["certificateArn"]
    region_account = cert_arn.split(":cert/")[0]

    with pytest.raises(ClientError) as exc:
        iot.attach_policy(policyName=f"{uid}-missing", target=cert_arn)
    assert error_of(exc)[:2] == ("ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as exc:
        iot.attach_policy(policyName=uid, target=f"{region_account}:cert/{'0' * 64}")
    assert error_of(exc)[:2] == ("ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as exc:
        iot.attach_policy(policyName=uid, target=f"{region_account}:thinggroup/{uid}-nope")
    assert error_of(exc)[:2] == ("ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as exc:
        iot.attach_policy(policyName=uid, target=f"{region_account}:thing/{uid}")
    assert error_of(exc)[:2] == ("InvalidRequestException", 400)
    with pytest.raises(ClientError) as exc:
        iot.list_targets_for_policy(policyName=f"{uid}-missing")
    assert error_of(exc)[:2] == ("ResourceNotFoundException", 404)

    # At most ten policies per target.
    for i in range(10):
        iot.create_policy(policyName=f"{uid}-{i}", policyDocument=ALLOW_ALL)
        iot.attach_policy(policyName=f"{uid}-{i}", target=cert_arn)
    with pytest.raises(ClientError) as exc:
        iot.attach_policy(policyName=uid, target=cert_arn)
    assert error_of(exc)[:2] == ("LimitExceededException", 410)

    # A certificate with policies cannot be deleted unless forced, which detaches them.
    cert_id = cert_arn.rsplit("/", 1)[1]
    with pytest.raises(ClientError) as exc:
        iot.delete_certificate(certificateId=cert_id)
    assert error_of(exc)[:2] == ("DeleteConflictException", 409)
    iot.delete_certificate(certificateId=cert_id, forceDelete=True)
    assert iot.list_targets_for_policy(policyName=f"{uid}-0")["targets"] == []


def test_list_attached_policies_recursive_and_paged(aws, uid):
    iot = aws("iot")
    parent = iot.create_thing_group(thingGroupName=f"{uid}-parent")["thingGroupArn"]
    child = iot.create_thing_group(thingGroupName=f"{uid}-child",
                                   parentGroupName=f"{uid}-parent")["thingGroupArn"]
    for name, target in [(f"{uid}-p", parent), (f"{uid}-c1", child), (f"{uid}-c2", child)]:
        iot.create_policy(policyName=name, policyDocument=ALLOW_ALL)
        iot.attach_policy(policyName=name, target=target)

    direct = [p["policyName"] for p in iot.list_attached_policies(target=child)["policies"]]
    assert direct == [f"{uid}-c1", f"{uid}-c2"]
    everything = [p["policyName"] for p in
                  iot.list_attached_policies(target=child, recursive=True)["policies"]]
    assert everything == [f"{uid}-c1", f"{uid}-c2", f"{uid}-p"]

    first = iot.list_attached_policies(target=child, recursive=True, pageSize=2)
    assert len(first["policies"]) == 2
    rest = iot.list_attached_policies(target=child, recursive=True, pageSize=2,
                                      marker=first["nextMarker"])
    assert [p["policyName"] for p in rest["policies"]] == [f"{uid}-p"]
    assert "nextMarker" not in rest


def test_the_aws_cli_manages_policies(aws_cli, uid, tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(DEVICE)
    created = aws_cli("iot", "create-policy", "--policy-name", uid,
                      "--policy-document", f"file://{path}")
    assert created["policyVersionId"] == "1"
    v2 = aws_cli("iot", "create-policy-version", "--policy-name", uid,
                 "--policy-document", f"file://{path}", "--set-as-default")
    assert v2["isDefaultVersion"] is True
    listed = aws_cli("iot", "list-policy-versions", "--policy-name", uid)["policyVersions"]
    assert [v["versionId"] for v in listed] == ["1", "2"]
    done = aws_cli("iot", "create-policy", "--policy-name", uid, "--policy-document",
                   f"file://{path}", check=False)
    assert done.returncode != 0 and "ResourceAlreadyExistsException" in done.stderr


# ---------------------------------------------------------------------------------------------
# durability

def test_policies_and_attachments_survive_restart(broker_factory, aws, uid):
    b = broker_factory()
    iot = aws("iot", broker=b)
    iot.create_policy(policyName=uid, policyDocument=ALLOW_ALL)
    iot.create_policy_version(policyName=uid, policyDocument=DEVICE, setAsDefault=True)
    cert_arn = iot.create_keys_and_certificate(setAsActive=True)["certificateArn"]
    iot.attach_policy(policyName=uid, target=cert_arn)

    b.restart()
    iot = aws("iot", broker=b)
    got = iot.get_policy(policyName=uid)
    assert got["defaultVersionId"] == "2"
    assert json.loads(got["policyDocument"]) == json.loads(DEVICE)
    assert [v["versionId"] for v in iot.list_policy_versions(policyName=uid)["policyVersions"]] == ["1", "2"]
    assert iot.list_targets_for_policy(policyName=uid)["targets"] == [cert_arn]
    assert iot.create_policy_version(policyName=uid, policyDocument=ALLOW_ALL)["policyVersionId"] == "3"
