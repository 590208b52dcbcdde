"""Topic rules through boto3, as a user manages them: CreateTopicRule, GetTopicRule,
ListTopicRules (paging, the topic and ruleDisabled filters), ReplaceTopicRule, Enable/Disable,
DeleteTopicRule; the errors an SDK user meets (SqlParseException naming the position, a
duplicate name, an unknown rule, bad actions, bad names); and rules surviving a restart."""

import json

import pytest
from botocore.exceptions import ClientError

pytestmark = pytest.mark.fleetcore_only("the AWS-compatible control plane")

ROLE = "arn:aws:iam::000000000000:role/rules"


def rule_name(uid: str) -> str:
    return uid.replace("-", "_")


def payload(sql: str, **extra) -> dict:
    body = {
        "sql": sql,
        "awsIotSqlVersion": "2016-03-23",
        "actions": [{"republish": {"roleArn": ROLE, "topic": "alerts/${topic(2)}", "qos": 1}}],
    }
    body.update(extra)
    return body


def error_of(exc: pytest.ExceptionInfo) -> tuple[str, int, str]:
    err = exc.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"], err["Error"].get("Message", "")


def list_all(iot, **kw) -> list[dict]:
    rules, token = [], None
    while True:
        page = iot.list_topic_rules(**kw, **({"nextToken": token} if token else {}))
        rules += page["rules"]
        token = page.get("nextToken")
        if not token:
            return rules


def test_create_get_replace_delete(aws, uid):
    iot = aws("iot")
    name = rule_name(uid)
    sql = f"SELECT temperature, topic(2) AS device FROM 'fleet/{uid}/+/telemetry' WHERE temperature > 50"
    error_action = {"republish": {"roleArn": ROLE, "topic": "errors"}}
    iot.create_topic_rule(
        ruleName=name,
        topicRulePayload=payload(sql, description="hot devices", errorAction=error_action),
        tags="team=ops&env=test",
    )

    got = iot.get_topic_rule(ruleName=name)
    assert got["ruleArn"] == f"arn:aws:iot:us-east-1:000000000000:rule/{name}"
    rule = got["rule"]
    assert rule["ruleName"] == name
    assert rule["sql"] == sql
    assert rule["description"] == "hot devices"
    assert rule["awsIotSqlVersion"] == "2016-03-23"
    assert rule["ruleDisabled"] is False
    assert rule["actions"] == [{"republish": {"roleArn": ROLE, "topic": "alerts/${topic(2)}", "qos": 1}}]
    assert rule["errorAction"] == error_action
    created = rule["createdAt"]
    assert created.year >= 2024  # botocore parsed epoch seconds into a datetime

    new_sql = f"SELECT * FROM 'fleet/{uid}/#'"
    iot.replace_topic_rule(
        ruleName=name,
        topicRulePayload={"sql": new_sql, "actions": [{"kinesis": {"roleArn": ROLE, "streamName": "s"}}]},
    )
    rule = iot.get_topic_rule(ruleName=name)["rule"]
    assert rule["sql"] == new_sql
    assert rule["actions"] == [{"kinesis": {"roleArn": ROLE, "streamName": "s"}}]
    assert rule["awsIotSqlVersion"] == "2015-10-08", "AWS's default when none is given"
    assert "description" not in rule
    assert "errorAction" not in rule
    assert rule["createdAt"] == created, "replacing keeps the creation time"

    iot.delete_topic_rule(ruleName=name)
    with pytest.raises(ClientError) as exc:
        iot.get_topic_rule(ruleName=name)
    code, status, _ = error_of(exc)
    assert (code, status) == ("ResourceNotFoundException", 404)


def test_enable_disable_and_the_disabled_filter(aws, uid):
    iot = aws("iot")
    name = rule_name(uid)
    iot.create_topic_rule(ruleName=name, topicRulePayload=payload(f"SELECT * FROM 'dis/{uid}'", ruleDisabled=True))
    assert iot.get_topic_rule(ruleName=name)["rule"]["ruleDisabled"] is True
    assert name in [r["ruleName"] for r in list_all(iot, ruleDisabled=True)]
    assert name not in [r["ruleName"] for r in list_all(iot, ruleDisabled=False)]

    iot.enable_topic_rule(ruleName=name)
    assert iot.get_topic_rule(ruleName=name)["rule"]["ruleDisabled"] is False
    assert name in [r["ruleName"] for r in list_all(iot, ruleDisabled=False)]
    iot.disable_topic_rule(ruleName=name)
    iot.disable_topic_rule(ruleName=name)  # idempotent
    assert iot.get_topic_rule(ruleName=name)["rule"]["ruleDisabled"] is True

    for op in (iot.enable_topic_rule, iot.disable_topic_rule, iot.delete_topic_rule):
        with pytest.raises(ClientError) as exc:
            op(ruleName=f"{name}_missing")
        assert error_of(exc)[:2] == ("ResourceNotFoundException", 404)


def test_list_pages_and_filters_by_topic(aws, uid):
    iot = aws("iot")
    base = rule_name(uid)
    filters = {f"{base}_a": f"p/{uid}/+/data", f"{base}_b": f"p/{uid}/#", f"{base}_c": f"p/{uid}/x/data",
               f"{base}_d": f"q/{uid}", f"{base}_e": f"p/{uid}/y/other"}
    for name, topic in filters.items():
        iot.create_topic_rule(ruleName=name, topicRulePayload=payload(f"SELECT * FROM '{topic}'"))

    # Paging: two at a time, in name order, nothing lost or repeated.
    seen, token, pages = [], None, 0
    while True:
        page = iot.list_topic_rules(maxResults=2, **({"nextToken": token} if token else {}))
        assert len(page["rules"]) <= 2
        seen += [r["ruleName"] for r in page["rules"]]
        pages += 1
        token = page.get("nextToken")
        if not token:
            break
    mine = [n for n in seen if n.startswith(base)]
    assert mine == sorted(filters)
    assert len(seen) == len(set(seen))
    assert pages >= 3

    item = next(r for r in list_all(iot) if r["ruleName"] == f"{base}_a")
    assert item["topicPattern"] == f"p/{uid}/+/data"
    assert item["ruleArn"].endswith(f":rule/{base}_a")
    assert item["ruleDisabled"] is False
    assert item["createdAt"].year >= 2024

    # topic: rules whose filter is that string or matches that topic.
    matching = sorted(r["ruleName"] for r in list_all(iot, topic=f"p/{uid}/x/data"))
    assert matching == [f"{base}_a", f"{base}_b", f"{base}_c"]
    assert [r["ruleName"] for r in list_all(iot, topic=f"p/{uid}/#")] == [f"{base}_b"]
    assert list_all(iot, topic=f"none/{uid}") == []

    # The paginator boto3 users reach for works too.
    names = [r["ruleName"] for p in iot.get_paginator("list_topic_rules").paginate(PaginationConfig={"PageSize": 3})
             for r in p["rules"]]
    assert sorted(n for n in names if n.startswith(base)) == sorted(filters)

    with pytest.raises(ClientError) as exc:
        iot.list_topic_rules(nextToken="not a token!")
    assert error_of(exc)[:2] == ("InvalidRequestException", 400)


@pytest.mark.parametrize("sql,position,words", [
    ("SELECT * FORM 'a/b'", "line 1:", "FORM"),
    ("SELECT temperature, nosuch(1) FROM 'a/b'", "line 1:21", "unknown function nosuch"),
    ("SELECT topic(1, 2) FROM 'a/b'", "line 1:8", "topic takes 0 to 1 arguments, not 2"),
    ("SELECT *\nFROM 'a/#/b'", "line 2:6", "invalid topic filter"),
    ("SELECT * FROM 'a/b' GROUP BY x", "line 1:", "GROUP BY"),
])
def test_sql_parse_exception_names_the_position(aws, uid, sql, position, words):
    iot = aws("iot")
    name = rule_name(uid)
    with pytest.raises(ClientError) as exc:
        iot.create_topic_rule(ruleName=name, topicRulePayload=payload(sql))
    code, status, message = error_of(exc)
    assert (code, status) == ("SqlParseException", 400)
    assert position in message and words in message, message
    assert isinstance(exc.value, iot.exceptions.SqlParseException)
    with pytest.raises(ClientError) as exc:
        iot.get_topic_rule(ruleName=name)
    assert error_of(exc)[0] == "ResourceNotFoundException", "a refused rule leaves nothing behind"


def test_replace_with_bad_sql_keeps_the_old_rule(aws, uid):
    iot = aws("iot")
    name = rule_name(uid)
    sql = f"SELECT * FROM 'keep/{uid}'"
    iot.create_topic_rule(ruleName=name, topicRulePayload=payload(sql))
    with pytest.raises(ClientError) as exc:
        iot.replace_topic_rule(ruleName=name, topicRulePayload=payload("SELECT FROM WHERE"))
    assert error_of(exc)[:2] == ("SqlParseException", 400)
    assert iot.get_topic_rule(ruleName=name)["rule"]["sql"] == sql
    with pytest.raises(ClientError) as exc:
        iot.replace_topic_rule(ruleName=f"{name}_missing", topicRulePayload=payload(sql))
    assert error_of(exc)[:2] == ("ResourceNotFoundException", 404)


def test_duplicate_name_is_a_conflict(aws, uid):
    iot = aws("iot")
    name = rule_name(uid)
    iot.create_topic_rule(ruleName=name, topicRulePayload=payload(f"SELECT * FROM 'dup/{uid}'"))
    with pytest.raises(ClientError) as exc:
        iot.create_topic_rule(ruleName=name, topicRulePayload=payload(f"SELECT a FROM 'other/{uid}'"))
    code, status, _ = error_of(exc)
    assert (code, status) == ("ResourceAlreadyExistsException", 409)
    assert exc.value.response.get("resourceArn", "").endswith(f":rule/{name}"), exc.value.response
    assert iot.get_topic_rule(ruleName=name)["rule"]["sql"] == f"SELECT * FROM 'dup/{uid}'"


@pytest.mark.parametrize("actions,words", [
    ([{"kinesis": {"roleArn": ROLE}}], "streamName"),
    ([{"teleport": {"to": "mars"}}], "unknown action kind"),
    ([{"lambda": {"functionArn": "f"}, "http": {"url": "https://x"}}], "exactly one action kind"),
    ([{"http": {"url": "http://plain.example/hook"}}], "https://"),
    ([{"republish": {"roleArn": ROLE, "topic": "t"}}] * 11, "at most 10 actions"),
])
def test_bad_actions_are_invalid_requests(aws, uid, actions, words):
    # botocore refuses these before sending; a client without its model would not, so the body
    # is swapped for the raw one just before signing.
    iot = aws("iot")
    raw = json.dumps({"sql": "SELECT * FROM 'a'", "actions": actions}).encode()

    def swap_body(request, **_):
        request.data = raw

    iot.meta.events.register_first("before-sign.iot.CreateTopicRule", swap_body)
    with pytest.raises(ClientError) as exc:
        iot.create_topic_rule(ruleName=rule_name(uid),
                              topicRulePayload={"sql": "SELECT * FROM 'a'", "actions": []})
    code, status, message = error_of(exc)
    assert (code, status) == ("InvalidRequestException", 400)
    assert words in message, message


def test_every_action_kind_this_server_runs_is_stored_as_given(aws, uid):
    iot = aws("iot")
    name = rule_name(uid)
    actions = [
        {"kinesis": {"roleArn": ROLE, "streamName": "telemetry", "partitionKey": "${topic(2)}"}},
        {"firehose": {"roleArn": ROLE, "deliveryStreamName": "lake", "separator": "\n", "batchMode": False}},
        {"http": {"url": "https://example.invalid/hook", "headers": [{"key": "k", "value": "v"}]}},
        {"openSearch": {"roleArn": ROLE, "endpoint": "https://os", "index": "i", "type": "t", "id": "${newuuid()}"}},
        {"republish": {"roleArn": ROLE, "topic": "out/${topic(2)}", "qos": 1}},
    ]
    iot.create_topic_rule(ruleName=name, topicRulePayload={"sql": f"SELECT * FROM 'all/{uid}'",
                                                            "awsIotSqlVersion": "beta", "actions": actions})
    rule = iot.get_topic_rule(ruleName=name)["rule"]
    assert rule["actions"] == actions
    assert rule["awsIotSqlVersion"] == "beta"


@pytest.mark.parametrize("action,capability", [
    ({"timestream": {"roleArn": ROLE, "databaseName": "d", "tableName": "t",
                     "dimensions": [{"name": "device", "value": "${topic(2)}"}]}}, "Timestream"),
    ({"iotSiteWise": {"roleArn": ROLE, "putAssetPropertyValueEntries": [
        {"propertyValues": [{"value": {"doubleValue": "1"}, "timestamp": {"timeInSeconds": "1"}}]}]}},
     "SiteWise"),
    ({"sqs": {"roleArn": ROLE, "queueUrl": "https://sqs.us-east-1.amazonaws.com/1/q",
              "useBase64": False}}, "SQS queues"),
    ({"s3": {"roleArn": ROLE, "bucketName": "b", "key": "${topic()}/${timestamp()}"}}, "S3"),
    ({"dynamoDBv2": {"roleArn": ROLE, "putItem": {"tableName": "t"}}}, "DynamoDB"),
])
@pytest.mark.parametrize("where", ["actions", "errorAction", "replace"])
def test_actions_whose_capability_is_missing_are_refused(aws, uid, action, capability, where):
    """No rule that can only fail is accepted: CreateTopicRule and ReplaceTopicRule refuse an
    action (or errorAction) this server cannot run, naming the missing capability, and store
    nothing."""
    iot = aws("iot")
    name = rule_name(uid)
    kind = next(iter(action))
    good = [{"republish": {"roleArn": ROLE, "topic": f"ok/{uid}"}}]
    rule = {"sql": f"SELECT * FROM 'cap/{uid}'", "actions": [action]}
    if where == "errorAction":
        rule = {"sql": f"SELECT * FROM 'cap/{uid}'", "actions": good, "errorAction": action}
    if where == "replace":
        iot.create_topic_rule(ruleName=name, topicRulePayload={"sql": f"SELECT * FROM 'cap/{uid}'",
                                                                "actions": good})
        with pytest.raises(ClientError) as exc:
            iot.replace_topic_rule(ruleName=name, topicRulePayload=rule)
    else:
        with pytest.raises(ClientError) as exc:
            iot.create_topic_rule(ruleName=name, topicRulePayload=rule)
    code, status, message = error_of(exc)
    assert (code, status) == ("InvalidRequestException", 400)
    assert kind in message and capability in message, message
    if where == "replace":
        assert iot.get_topic_rule(ruleName=name)["rule"]["actions"] == good
    else:
        with pytest.raises(ClientError) as exc:
            iot.get_topic_rule(ruleName=name)
        assert error_of(exc)[:2] == ("ResourceNotFoundException", 404), "a refused rule leaves nothing"


def test_bad_names_and_versions(aws, uid):
    iot = aws("iot")
    with pytest.raises(ClientError) as exc:
        iot.create_topic_rule(ruleName="has-dash", topicRulePayload=payload("SELECT * FROM 'a'"))
    assert error_of(exc)[:2] == ("InvalidRequestException", 400)
    with pytest.raises(ClientError) as exc:
        iot.create_topic_rule(ruleName=rule_name(uid),
                              topicRulePayload=payload("SELECT * FROM 'a'", awsIotSqlVersion="2099-01-01"))
    assert error_of(exc)[:2] == ("InvalidRequestException", 400)


def test_rules_survive_restart(broker_factory, aws, uid):
    b = broker_factory()
    iot = aws("iot", broker=b)
    name = rule_name(uid)
    sql = "SELECT *, topic(2) AS device FROM 'devices/+/telemetry' WHERE temperature > 50"
    iot.create_topic_rule(ruleName=name, topicRulePayload=payload(sql, description="kept"), tags="a=b")
    iot.create_topic_rule(ruleName=f"{name}_off", topicRulePayload=payload("SELECT * FROM 'x/#'"))
    iot.disable_topic_rule(ruleName=f"{name}_off")
    iot.create_topic_rule(ruleName=f"{name}_gone", topicRulePayload=payload("SELECT * FROM 'y'"))
    iot.delete_topic_rule(ruleName=f"{name}_gone")
    before = iot.get_topic_rule(ruleName=name)

    b.restart()
    iot = aws("iot", broker=b)
    after = iot.get_topic_rule(ruleName=name)
    assert after["rule"] == before["rule"]
    assert after["ruleArn"] == before["ruleArn"]
    assert iot.get_topic_rule(ruleName=f"{name}_off")["rule"]["ruleDisabled"] is True
    names = [r["ruleName"] for r in list_all(iot)]
    assert names == sorted([name, f"{name}_off"])
    with pytest.raises(ClientError) as exc:
        iot.get_topic_rule(ruleName=f"{name}_gone")
    assert error_of(exc)[:2] == ("ResourceNotFoundException", 404)
    # The compiled statement is back too: the topic filter still answers list filtering.
    assert [r["ruleName"] for r in list_all(iot, topic="devices/d1/telemetry")] == [name]


def test_aws_cli_round_trip(aws_cli, uid):
    name = rule_name(uid)
    body = json.dumps(payload(f"SELECT * FROM 'cli/{uid}/#' WHERE level > 3"))
    assert aws_cli("iot", "create-topic-rule", "--rule-name", name, "--topic-rule-payload", body) is None
    got = aws_cli("iot", "get-topic-rule", "--rule-name", name)
    assert got["rule"]["sql"] == f"SELECT * FROM 'cli/{uid}/#' WHERE level > 3"
    listed = aws_cli("iot", "list-topic-rules", "--topic", f"cli/{uid}/a/b")
    assert [r["ruleName"] for r in listed["rules"]] == [name]
    aws_cli("iot", "disable-topic-rule", "--rule-name", name)
    assert aws_cli("iot", "get-topic-rule", "--rule-name", name)["rule"]["ruleDisabled"] is True
    bad = aws_cli("iot", "create-topic-rule", "--rule-name", f"{name}_bad", "--topic-rule-payload",
                  json.dumps(payload("SELECT * FROM 'a' WHERE")), check=False)
    assert bad.returncode != 0
    assert "SqlParseException" in bad.stderr, bad.stderr
    aws_cli("iot", "delete-topic-rule", "--rule-name", name)
    gone = aws_cli("iot", "get-topic-rule", "--rule-name", name, check=False)
    assert gone.returncode != 0 and "ResourceNotFoundException" in gone.stderr
