"""The device registry through unchanged AWS clients (boto3 and the aws CLI): thing types, things
with attributes, thing groups; idempotent creates, version conflicts, filters and pagination, the
error codes SDKs raise, and persistence across a restart."""

import pytest
from botocore.exceptions import ClientError

pytestmark = pytest.mark.fleetcore_only("the AWS-compatible control plane")

ACCOUNT = "000000000000"
REGION = "us-east-1"


def arn(resource: str) -> str:
    return f"arn:aws:iot:{REGION}:{ACCOUNT}:{resource}"


def error_of(exc: pytest.ExceptionInfo) -> tuple[str, int]:
    err = exc.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def name(uid: str, suffix: str = "") -> str:
    """A registry name unique to the test: [a-zA-Z0-9:_-], at most 128."""
    return f"{uid}{suffix}"[:128]


# ---------------------------------------------------------------------------------------------
# thing types

def test_thing_type_lifecycle(aws, uid):
    iot = aws("iot")
    tt = name(uid, "-type")
    created = iot.create_thing_type(
        thingTypeName=tt,
        thingTypeProperties={"thingTypeDescription": "temperature sensor",
                             "searchableAttributes": ["model", "site"]},
        tags=[{"Key": "team", "Value": "ops"}])
    assert created["thingTypeName"] == tt
    assert created["thingTypeArn"] == arn(f"thingtype/{tt}")
    assert len(created["thingTypeId"]) == 36

    described = iot.describe_thing_type(thingTypeName=tt)
    assert described["thingTypeId"] == created["thingTypeId"]
    assert described["thingTypeArn"] == created["thingTypeArn"]
    assert described["thingTypeProperties"] == {
        "thingTypeDescription": "temperature sensor", "searchableAttributes": ["model", "site"]}
    meta = described["thingTypeMetadata"]
    assert meta["deprecated"] is False
    assert "deprecationDate" not in meta
    assert meta["creationDate"].year >= 2024  # botocore parsed the epoch seconds

    with pytest.raises(ClientError) as exc:
        iot.create_thing_type(thingTypeName=tt)
    assert error_of(exc) == ("ResourceAlreadyExistsException", 409)
    assert exc.value.response["resourceId"] == created["thingTypeId"]

    listed = iot.list_thing_types(thingTypeName=tt)["thingTypes"]
    assert [t["thingTypeName"] for t in listed] == [tt]
    assert listed[0]["thingTypeProperties"]["searchableAttributes"] == ["model", "site"]

    # Deletion needs deprecation first, and no thing may use the type.
    with pytest.raises(ClientError) as exc:
        iot.delete_thing_type(thingTypeName=tt)
    assert error_of(exc) == ("InvalidRequestException", 400)
    thing = name(uid, "-t")
    iot.create_thing(thingName=thing, thingTypeName=tt)
    iot.deprecate_thing_type(thingTypeName=tt)
    meta = iot.describe_thing_type(thingTypeName=tt)["thingTypeMetadata"]
    assert meta["deprecated"] is True and "deprecationDate" in meta
    with pytest.raises(ClientError) as exc:
        iot.create_thing(thingName=name(uid, "-t2"), thingTypeName=tt)
    assert error_of(exc) == ("InvalidRequestException", 400)
    with pytest.raises(ClientError) as exc:
        iot.delete_thing_type(thingTypeName=tt)
    assert error_of(exc) == ("InvalidRequestException", 400)

    iot.deprecate_thing_type(thingTypeName=tt, undoDeprecate=True)
    assert iot.describe_thing_type(thingTypeName=tt)["thingTypeMetadata"]["deprecated"] is False
    iot.delete_thing(thingName=thing)
    iot.deprecate_thing_type(thingTypeName=tt)
    iot.delete_thing_type(thingTypeName=tt)
    for call in (lambda: iot.describe_thing_type(thingTypeName=tt),
                 lambda: iot.delete_thing_type(thingTypeName=tt),
                 lambda: iot.deprecate_thing_type(thingTypeName=tt)):
        with pytest.raises(ClientError) as exc:
            call()
        assert error_of(exc) == ("ResourceNotFoundException", 404)


def test_thing_type_validation(aws, uid):
    iot = aws("iot")
    with pytest.raises(ClientError) as exc:
        iot.create_thing_type(thingTypeName=name(uid),
                              thingTypeProperties={"searchableAttributes": ["a", "b", "c", "d"]})
    assert error_of(exc) == ("InvalidRequestException", 400)
    with pytest.raises(ClientError) as exc:
        iot.create_thing_type(thingTypeName="has space")
    assert error_of(exc) == ("InvalidRequestException", 400)


# ---------------------------------------------------------------------------------------------
# things

def test_create_and_describe_thing(aws, uid):
    iot = aws("iot")
    tt = name(uid, "-type")
    iot.create_thing_type(thingTypeName=tt)
    thing = name(uid)
    created = iot.create_thing(thingName=thing, thingTypeName=tt,
                               attributePayload={"attributes": {"site": "lab-1", "floor": "2"}})
    assert created["thingName"] == thing
    assert created["thingArn"] == arn(f"thing/{thing}")
    thing_id = created["thingId"]
    assert len(thing_id) == 36 and thing_id.count("-") == 4

    described = iot.describe_thing(thingName=thing)
    described.pop("ResponseMetadata")
    assert described == {
        "defaultClientId": thing, "thingName": thing, "thingId": thing_id,
        "thingArn": arn(f"thing/{thing}"), "thingTypeName": tt,
        "attributes": {"site": "lab-1", "floor": "2"}, "version": 1}

    # Same name and configuration: the same thing. Different: ResourceAlreadyExists.
    again = iot.create_thing(thingName=thing, thingTypeName=tt,
                             attributePayload={"attributes": {"floor": "2", "site": "lab-1"}})
    assert again["thingId"] == thing_id
    with pytest.raises(ClientError) as exc:
        iot.create_thing(thingName=thing, attributePayload={"attributes": {"site": "hq"}})
    assert error_of(exc) == ("ResourceAlreadyExistsException", 409)
    assert exc.value.response["resourceArn"] == arn(f"thing/{thing}")

    with pytest.raises(ClientError) as exc:
        iot.create_thing(thingName=name(uid, "-x"), thingTypeName=name(uid, "-no-such-type"))
    assert error_of(exc) == ("ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as exc:
        iot.describe_thing(thingName=name(uid, "-missing"))
    assert error_of(exc) == ("ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as exc:
        iot.create_thing(thingName=name(uid, "-y"), attributePayload={"attributes": {"k": "no spaces"}})
    assert error_of(exc) == ("InvalidRequestException", 400)


def test_update_thing_merges_replaces_and_checks_versions(aws, uid):
    iot = aws("iot")
    thing, tt = name(uid), name(uid, "-type")
    iot.create_thing_type(thingTypeName=tt)
    iot.create_thing(thingName=thing, attributePayload={"attributes": {"a": "1", "b": "2"}})

    iot.update_thing(thingName=thing, thingTypeName=tt, expectedVersion=1,
                     attributePayload={"attributes": {"b": "", "c": "3"}, "merge": True})
    d = iot.describe_thing(thingName=thing)
    assert (d["attributes"], d["version"], d["thingTypeName"]) == ({"a": "1", "c": "3"}, 2, tt)

    with pytest.raises(ClientError) as exc:
        iot.update_thing(thingName=thing, expectedVersion=1,
                         attributePayload={"attributes": {"z": "9"}})
    assert error_of(exc) == ("VersionConflictException", 409)
    assert iot.describe_thing(thingName=thing)["version"] == 2

    iot.update_thing(thingName=thing, removeThingType=True,
                     attributePayload={"attributes": {"z": "9"}})
    d = iot.describe_thing(thingName=thing)
    assert (d["attributes"], d["version"], "thingTypeName" in d) == ({"z": "9"}, 3, False)

    with pytest.raises(ClientError) as exc:
        iot.update_thing(thingName=thing, thingTypeName=tt, removeThingType=True)
    assert error_of(exc) == ("InvalidRequestException", 400)
    with pytest.raises(ClientError) as exc:
        iot.update_thing(thingName=name(uid, "-missing"), attributePayload={"attributes": {}})
    assert error_of(exc) == ("ResourceNotFoundException", 404)


def test_list_things_filters_and_pages(aws, fresh_broker):
    iot = aws("iot", broker=fresh_broker)
    iot.create_thing_type(thingTypeName="sensor")
    for i in range(7):
        typed = {"thingTypeName": "sensor"} if i % 2 == 0 else {}
        iot.create_thing(thingName=f"dev-{i}", **typed,
                         attributePayload={"attributes": {"site": "lab-1" if i < 4 else "hq"}})

    every = [t["thingName"] for t in iot.list_things()["things"]]
    assert every == [f"dev-{i}" for i in range(7)]
    first = iot.list_things()["things"][0]
    assert first == {"thingName": "dev-0", "thingTypeName": "sensor", "thingArn": arn("thing/dev-0"),
                     "attributes": {"site": "lab-1"}, "version": 1}

    typed = [t["thingName"] for t in iot.list_things(thingTypeName="sensor")["things"]]
    assert typed == ["dev-0", "dev-2", "dev-4", "dev-6"]
    hq = [t["thingName"] for t in iot.list_things(attributeName="site", attributeValue="hq")["things"]]
    assert hq == ["dev-4", "dev-5", "dev-6"]
    prefixed = iot.list_things(attributeName="site", attributeValue="lab",
                               usePrefixAttributeValue=True)["things"]
    assert [t["thingName"] for t in prefixed] == ["dev-0", "dev-1", "dev-2", "dev-3"]

    # Hand-driven pages, then botocore's paginator over the same tokens.
    seen, token = [], None
    while True:
        kwargs = {"maxResults": 3, **({"nextToken": token} if token else {})}
        page = iot.list_things(**kwargs)
        assert len(page["things"]) <= 3
        seen += [t["thingName"] for t in page["things"]]
        token = page.get("nextToken")
        if not token:
            break
    assert seen == every
    pages = list(iot.get_paginator("list_things").paginate(PaginationConfig={"PageSize": 2}))
    assert len(pages) == 4
    assert [t["thingName"] for p in pages for t in p["things"]] == every

    # Out-of-range sizes are refused by the server too (botocore's own check switched off).
    unchecked = aws("iot", broker=fresh_broker, parameter_validation=False)
    for bad in ({"maxResults": 0}, {"maxResults": 251}, {"nextToken": "not-a-token"}):
        with pytest.raises(ClientError) as exc:
            unchecked.list_things(**bad)
        assert error_of(exc) == ("InvalidRequestException", 400), bad


def test_delete_thing(aws, uid):
    iot = aws("iot")
    thing = name(uid)
    iot.create_thing(thingName=thing)
    iot.update_thing(thingName=thing, attributePayload={"attributes": {"a": "1"}})
    with pytest.raises(ClientError) as exc:
        iot.delete_thing(thingName=thing, expectedVersion=1)
    assert error_of(exc) == ("VersionConflictException", 409)
    iot.delete_thing(thingName=thing, expectedVersion=2)
    with pytest.raises(ClientError) as exc:
        iot.describe_thing(thingName=thing)
    assert error_of(exc) == ("ResourceNotFoundException", 404)
    # As in AWS, deleting a thing that does not exist succeeds.
    iot.delete_thing(thingName=thing)


# ---------------------------------------------------------------------------------------------
# thing groups

def test_thing_groups(aws, uid):
    iot = aws("iot")
    root, child = name(uid, "-root"), name(uid, "-child")
    created = iot.create_thing_group(
        thingGroupName=root,
        thingGroupProperties={"thingGroupDescription": "all sensors",
                              "attributePayload": {"attributes": {"site": "lab"}}})
    assert created["thingGroupArn"] == arn(f"thinggroup/{root}")
    # Same configuration again: the same group; different: ResourceAlreadyExists.
    again = iot.create_thing_group(
        thingGroupName=root,
        thingGroupProperties={"thingGroupDescription": "all sensors",
                              "attributePayload": {"attributes": {"site": "lab"}}})
    assert again["thingGroupId"] == created["thingGroupId"]
    with pytest.raises(ClientError) as exc:
        iot.create_thing_group(thingGroupName=root)
    assert error_of(exc) == ("ResourceAlreadyExistsException", 409)
    iot.create_thing_group(thingGroupName=child, parentGroupName=root)

    d = iot.describe_thing_group(thingGroupName=child)
    assert d["version"] == 1
    assert d["thingGroupMetadata"]["parentGroupName"] == root
    assert d["thingGroupMetadata"]["rootToParentThingGroups"] == [
        {"groupName": root, "groupArn": arn(f"thinggroup/{root}")}]
    d = iot.describe_thing_group(thingGroupName=root)
    assert d["thingGroupProperties"] == {"thingGroupDescription": "all sensors",
                                         "attributePayload": {"attributes": {"site": "lab"}}}
    assert iot.update_thing_group(thingGroupName=root, expectedVersion=1,
                                  thingGroupProperties={"thingGroupDescription": "x"})["version"] == 2
    with pytest.raises(ClientError) as exc:
        iot.update_thing_group(thingGroupName=root, expectedVersion=1,
                               thingGroupProperties={"thingGroupDescription": "y"})
    assert error_of(exc) == ("VersionConflictException", 409)

    t1, t2 = name(uid, "-t1"), name(uid, "-t2")
    iot.create_thing(thingName=t1)
    iot.create_thing(thingName=t2)
    iot.add_thing_to_thing_group(thingGroupName=child, thingName=t1)
    iot.add_thing_to_thing_group(thingGroupArn=arn(f"thinggroup/{root}"), thingArn=arn(f"thing/{t2}"))
    iot.add_thing_to_thing_group(thingGroupName=child, thingName=t1)  # again: no-op
    assert iot.list_things_in_thing_group(thingGroupName=child)["things"] == [t1]
    assert iot.list_things_in_thing_group(thingGroupName=root)["things"] == [t2]
    assert iot.list_things_in_thing_group(thingGroupName=root, recursive=True)["things"] == [t1, t2]
    assert iot.list_thing_groups_for_thing(thingName=t1)["thingGroups"] == [
        {"groupName": child, "groupArn": arn(f"thinggroup/{child}")}]
    kids = iot.list_thing_groups(parentGroup=root)["thingGroups"]
    assert [g["groupName"] for g in kids] == [child]
    mine = iot.list_thing_groups(namePrefixFilter=uid)["thingGroups"]
    assert sorted(g["groupName"] for g in mine) == sorted([root, child])

    with pytest.raises(ClientError) as exc:
        iot.add_thing_to_thing_group(thingGroupName=child, thingName=name(uid, "-missing"))
    assert error_of(exc) == ("ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as exc:
        iot.describe_thing_group(thingGroupName=name(uid, "-missing"))
    assert error_of(exc) == ("ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as exc:
        iot.delete_thing_group(thingGroupName=root)  # has a child group
    assert error_of(exc) == ("InvalidRequestException", 400)

    iot.remove_thing_from_thing_group(thingGroupName=child, thingName=t1)
    assert iot.list_things_in_thing_group(thingGroupName=child)["things"] == []
    iot.delete_thing_group(thingGroupName=child)
    iot.delete_thing_group(thingGroupName=root)
    assert iot.list_thing_groups_for_thing(thingName=t2)["thingGroups"] == []
    iot.delete_thing_group(thingGroupName=root)  # gone already: still fine, as AWS


# ---------------------------------------------------------------------------------------------
# the aws CLI

def test_registry_with_the_aws_cli(aws_cli, uid):
    tt, thing = name(uid, "-type"), name(uid)
    out = aws_cli("iot", "create-thing-type", "--thing-type-name", tt,
                  "--thing-type-properties", "thingTypeDescription=cli,searchableAttributes=model")
    assert out["thingTypeArn"] == arn(f"thingtype/{tt}")
    out = aws_cli("iot", "create-thing", "--thing-name", thing, "--thing-type-name", tt,
                  "--attribute-payload", '{"attributes": {"model": "m1"}}')
    assert out["thingArn"] == arn(f"thing/{thing}")
    described = aws_cli("iot", "describe-thing", "--thing-name", thing)
    assert (described["attributes"], described["version"], described["defaultClientId"]) == (
        {"model": "m1"}, 1, thing)
    aws_cli("iot", "update-thing", "--thing-name", thing, "--expected-version", "1",
            "--attribute-payload", '{"attributes": {"fw": "2.0"}, "merge": true}')
    listed = aws_cli("iot", "list-things", "--attribute-name", "fw", "--attribute-value", "2.0")
    assert [t["thingName"] for t in listed["things"]] == [thing]

    done = aws_cli("iot", "update-thing", "--thing-name", thing, "--expected-version", "1",
                   "--attribute-payload", '{"attributes": {}}', check=False)
    assert done.returncode != 0 and "VersionConflictException" in done.stderr, done.stderr
    done = aws_cli("iot", "describe-thing", "--thing-name", name(uid, "-missing"), check=False)
    assert done.returncode != 0 and "ResourceNotFoundException" in done.stderr, done.stderr
    done = aws_cli("iot", "create-thing-type", "--thing-type-name", tt, check=False)
    assert done.returncode != 0 and "ResourceAlreadyExistsException" in done.stderr, done.stderr

    group = name(uid, "-g")
    aws_cli("iot", "create-thing-group", "--thing-group-name", group)
    aws_cli("iot", "add-thing-to-thing-group", "--thing-group-name", group, "--thing-name", thing)
    assert aws_cli("iot", "list-things-in-thing-group", "--thing-group-name", group)["things"] == [thing]
    aws_cli("iot", "delete-thing-group", "--thing-group-name", group)
    aws_cli("iot", "delete-thing", "--thing-name", thing)
    aws_cli("iot", "deprecate-thing-type", "--thing-type-name", tt)
    aws_cli("iot", "delete-thing-type", "--thing-type-name", tt)


def test_the_aws_cli_follows_next_tokens(aws, aws_cli, fresh_broker):
    iot = aws("iot", broker=fresh_broker)
    for i in range(5):
        iot.create_thing(thingName=f"cli-{i}")
    # The CLI pages through with nextToken itself (2 per request) and prints them all.
    out = aws_cli("iot", "list-things", "--page-size", "2", broker=fresh_broker)
    assert [t["thingName"] for t in out["things"]] == [f"cli-{i}" for i in range(5)]
    out = aws_cli("iot", "list-things", "--max-items", "3", broker=fresh_broker)
    assert len(out["things"]) == 3 and out.get("NextToken")


# ---------------------------------------------------------------------------------------------
# persistence

def test_registry_survives_a_restart(aws, fresh_broker):
    iot = aws("iot", broker=fresh_broker)
    iot.create_thing_type(thingTypeName="sensor",
                          thingTypeProperties={"thingTypeDescription": "kept"})
    made = iot.create_thing(thingName="kept-1", thingTypeName="sensor",
                            attributePayload={"attributes": {"site": "lab"}})
    iot.update_thing(thingName="kept-1", attributePayload={"attributes": {"fw": "1"}, "merge": True})
    iot.create_thing_group(thingGroupName="kept-group")
    iot.add_thing_to_thing_group(thingGroupName="kept-group", thingName="kept-1")
    iot.deprecate_thing_type(thingTypeName="sensor")

    fresh_broker.restart()
    iot = aws("iot", broker=fresh_broker)
    d = iot.describe_thing(thingName="kept-1")
    assert (d["thingId"], d["thingTypeName"], d["attributes"], d["version"]) == (
        made["thingId"], "sensor", {"site": "lab", "fw": "1"}, 2)
    t = iot.describe_thing_type(thingTypeName="sensor")
    assert t["thingTypeProperties"]["thingTypeDescription"] == "kept"
    assert t["thingTypeMetadata"]["deprecated"] is True
    assert iot.list_things_in_thing_group(thingGroupName="kept-group")["things"] == ["kept-1"]
