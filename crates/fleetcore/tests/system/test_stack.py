"""`fleetcore plan / apply / destroy` on Terraform-syntax stacks, run as a user runs them against a
server: the reference stack (examples/reference-stack) applies cleanly and boto3 finds every
resource with the attributes the .tf files give; `plan` then says `No changes.` and a second
apply changes nothing; a changed variable is a `~` update that apply makes; a resource taken out
of the files is a `-` that apply deletes; a resource changed behind the stack's back (through
the API) is a `~` with the changed paths that apply puts back; `destroy` removes everything the
state file records.
Bad input is refused with the file and line, before anything is created."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from brokers import FLEETCORE_BIN, REPO
from conftest import admin_credentials

pytestmark = pytest.mark.fleetcore_only("fleetcore's own Terraform-syntax stacks")

REFERENCE = REPO / "examples" / "reference-stack"
ACCOUNT = "000000000000"


def fleetcore(b, *args, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`fleetcore ARGS --endpoint-url <b>`, with credentials taken as the aws CLI takes them:
    here AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (unless `env` says otherwise)."""
    key, secret = admin_credentials(b)
    child = {k: v for k, v in os.environ.items() if not k.startswith(("FLEETCORE_", "AWS_"))}
    child.update({"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret, "NO_COLOR": "1",
                  "HOME": str(b.workdir)})
    child.update(env or {})
    cmd = [str(FLEETCORE_BIN), *map(str, args), "--endpoint-url", b.http_base]
    return subprocess.run(cmd, capture_output=True, text=True, env=child, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


def failed(done: subprocess.CompletedProcess) -> str:
    assert done.returncode != 0, f"succeeded:\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stderr


@pytest.fixture
def stack_dir(tmp_path) -> Path:
    """A copy of the reference stack (its state file lands beside it, not in the repository)."""
    target = tmp_path / "reference-stack"
    shutil.copytree(REFERENCE, target)
    return target


def rule_actions(iot, name: str) -> tuple[dict, list[dict]]:
    rule = iot.get_topic_rule(ruleName=name)["rule"]
    return rule, rule["actions"]


def test_reference_stack_applies_and_boto3_finds_every_resource(fresh_broker, aws, stack_dir):
    b = fresh_broker
    out = ok(fleetcore(b, "apply", stack_dir, "-auto-approve"))
    assert "Apply complete: 39 added, 0 changed, 0 destroyed." in out, out
    assert 'stream_name = "fleet-telemetry"' in out

    iot = aws("iot", broker=b)
    assert iot.describe_thing_type(thingTypeName="sensor")["thingTypeProperties"] == {
        "thingTypeDescription": "Simulated temperature sensor", "searchableAttributes": ["site"]}
    group = iot.describe_thing_group(thingGroupName="fleet-devices")
    assert group["thingGroupProperties"]["thingGroupDescription"] == "Every device of the reference fleet"
    for i in range(3):
        thing = iot.describe_thing(thingName=f"fleet-device-{i}")
        assert thing["thingTypeName"] == "sensor" and thing["attributes"] == {"site": "lab"}
        principals = iot.list_thing_principals(thingName=f"fleet-device-{i}")["principals"]
        assert len(principals) == 1
        cert_id = principals[0].rsplit("/", 1)[1]
        assert iot.describe_certificate(certificateId=cert_id)["certificateDescription"]["status"] == "ACTIVE"
        policies = iot.list_attached_policies(target=principals[0])["policies"]
        assert [p["policyName"] for p in policies] == ["fleet-device"]
    document = json.loads(iot.get_policy(policyName="fleet-device")["policyDocument"])
    assert document["Statement"][0]["Resource"] == [
        "arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"]

    rule, actions = rule_actions(iot, "fleet_telemetry_stream")
    assert rule["sql"] == "SELECT *, topic(2) AS thing FROM 'devices/+/telemetry'"
    assert actions[0]["kinesis"]["streamName"] == "fleet-telemetry"
    assert actions[0]["kinesis"]["partitionKey"] == "${topic(2)}"
    _, actions = rule_actions(iot, "fleet_telemetry_archive")
    assert actions[0]["firehose"]["deliveryStreamName"] == "fleet-archive"
    _, actions = rule_actions(iot, "fleet_telemetry_enrich")
    assert actions[0]["lambda"]["functionArn"] == f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:fleet-processor"
    _, actions = rule_actions(iot, "fleet_telemetry_events")
    assert actions[0]["iotEvents"]["inputName"] == "fleet_telemetry"
    rule, actions = rule_actions(iot, "fleet_alerts")
    assert rule["sql"].endswith("WHERE temperature > 30")
    assert actions[0]["republish"]["topic"] == "alerts/sensor/critical"
    assert rule["errorAction"]["republish"]["topic"] == "errors/fleet/alerts"
    _, actions = rule_actions(iot, "fleet_shadow_update")
    assert actions[0]["republish"]["topic"] == "$$aws/things/${topic(2)}/shadow/update"

    summary = aws("kinesis", broker=b).describe_stream_summary(StreamName="fleet-telemetry")
    assert summary["StreamDescriptionSummary"]["OpenShardCount"] == 2
    assert summary["StreamDescriptionSummary"]["RetentionPeriodHours"] == 24

    delivery = aws("firehose", broker=b).describe_delivery_stream(DeliveryStreamName="fleet-archive")
    destination = delivery["DeliveryStreamDescription"]["Destinations"][0]["ExtendedS3DestinationDescription"]
    assert destination["BucketARN"] == "arn:aws:s3:::fleet-lake"
    assert destination["CompressionFormat"] == "GZIP"
    assert destination["BufferingHints"] == {"SizeInMBs": 1, "IntervalInSeconds": 60}

    function = aws("lambda", broker=b).get_function(FunctionName="fleet-processor")["Configuration"]
    assert function["Runtime"] == "python3.11"
    assert function["Handler"] == "lambda_function.lambda_handler"
    assert function["Environment"]["Variables"] == {"STREAM": "fleet-telemetry"}

    sns = aws("sns", broker=b)
    topic_arn = f"arn:aws:sns:us-east-1:{ACCOUNT}:fleet-alerts"
    assert sns.get_topic_attributes(TopicArn=topic_arn)["Attributes"]["DisplayName"] == "Fleet alerts"
    subscriptions = sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
    assert [(s["Protocol"], s["Endpoint"]) for s in subscriptions] == [("mqtt", "alerts/sensor/critical")]

    alarms = aws("cloudwatch", broker=b).describe_alarms(AlarmNames=["fleet-telemetry-idle"])["MetricAlarms"]
    assert len(alarms) == 1
    assert alarms[0]["AlarmActions"] == [topic_arn]
    assert alarms[0]["Dimensions"] == [{"Name": "StreamName", "Value": "fleet-telemetry"}]
    body = json.loads(aws("cloudwatch", broker=b).get_dashboard(DashboardName="fleet-overview")["DashboardBody"])
    assert body["widgets"][0]["properties"]["metrics"] == [
        ["AWS/Kinesis", "IncomingRecords", "StreamName", "fleet-telemetry"]]

    groups = aws("logs", broker=b).describe_log_groups(logGroupNamePrefix="/aws/lambda/fleet-processor")
    assert [(g["logGroupName"], g.get("retentionInDays")) for g in groups["logGroups"]] == [
        ("/aws/lambda/fleet-processor", 14)]

    events = aws("iotevents", broker=b)
    definition = events.describe_input(inputName="fleet_telemetry")["input"]["inputDefinition"]
    assert definition == {"attributes": [{"jsonPath": "thing"}, {"jsonPath": "temperature"}]}
    model = events.describe_detector_model(detectorModelName="fleet-overheat")["detectorModel"]
    assert model["detectorModelConfiguration"]["key"] == "thing"
    states = model["detectorModelDefinition"]["states"]
    assert [s["stateName"] for s in states] == ["Normal", "Overheating"]
    assert states[1]["onEnter"]["events"][0]["actions"][0]["sns"]["targetArn"] == topic_arn

    alarm = events.describe_alarm_model(alarmModelName="fleet-overheat-alarm")
    assert (alarm["key"], alarm["severity"]) == ("thing", 2)
    assert alarm["alarmRule"]["simpleRule"] == {
        "inputProperty": "$input.fleet_telemetry.temperature", "comparisonOperator": "GREATER", "threshold": "30"}
    assert alarm["alarmEventActions"]["alarmActions"] == [{"sns": {"targetArn": topic_arn}}]
    assert alarm["alarmCapabilities"]["acknowledgeFlow"] == {"enabled": True}

    ia = aws("iotanalytics", broker=b)
    assert ia.describe_channel(channelName="fleet_telemetry")["channel"]["retentionPeriod"] == {"unlimited": True}
    assert ia.describe_datastore(datastoreName="fleet_telemetry")["datastore"]["name"] == "fleet_telemetry"
    activities = ia.describe_pipeline(pipelineName="fleet_telemetry")["pipeline"]["activities"]
    assert activities == [
        {"channel": {"name": "from_channel", "channelName": "fleet_telemetry", "next": "fahrenheit"}},
        {"math": {"name": "fahrenheit", "attribute": "temperature_f", "math": "temperature * 1.8 + 32",
                  "next": "to_datastore"}},
        {"datastore": {"name": "to_datastore", "datastoreName": "fleet_telemetry"}}]
    dataset = ia.describe_dataset(datasetName="fleet_per_device")["dataset"]
    assert dataset["actions"][0]["queryAction"]["sqlQuery"].startswith("SELECT thing, count(*) AS readings")
    channel_arn = f"arn:aws:iotanalytics:us-east-1:{ACCOUNT}:channel/fleet_telemetry"
    assert ia.list_tags_for_resource(resourceArn=channel_arn)["tags"] == [{"key": "stack", "value": "fleet"}]
    _, actions = rule_actions(iot, "fleet_telemetry_analytics")
    assert actions[0]["iotAnalytics"]["channelName"] == "fleet_telemetry"

    profile = iot.describe_security_profile(securityProfileName="fleet-fleet")
    assert [x["name"] for x in profile["behaviors"]] == ["message_flood", "authorization_failures"]
    assert profile["behaviors"][0]["criteria"]["value"] == {"count": 1000}
    assert profile["alertTargets"]["SNS"]["alertTargetArn"] == topic_arn
    targets = iot.list_targets_for_security_profile(securityProfileName="fleet-fleet")["securityProfileTargets"]
    assert [x["arn"] for x in targets] == [f"arn:aws:iot:us-east-1:{ACCOUNT}:all/things"]

    template = iot.describe_provisioning_template(templateName="fleet-fleet-provisioning")
    assert (template["enabled"], template["defaultVersionId"]) == (True, 1)
    body = json.loads(template["templateBody"])
    assert body["Resources"]["policy"]["Properties"] == {"PolicyName": "fleet-device"}

    state = json.loads((stack_dir / "fleetcore.tfstate.json").read_text())
    assert state["format"] == "fleetcore-stack/1"
    assert len(state["resources"]) == 39

    # Nothing left to do: plan says so, and a second apply changes nothing.
    assert "No changes." in ok(fleetcore(b, "plan", stack_dir))
    again = ok(fleetcore(b, "apply", stack_dir, "-auto-approve"))
    assert "No changes." in again and "creating" not in again


def test_a_changed_variable_is_an_update_a_removed_resource_a_delete_and_destroy_removes_all(
        fresh_broker, aws, stack_dir):
    b = fresh_broker
    ok(fleetcore(b, "apply", stack_dir, "-auto-approve"))

    # `~`: a variable changed on the command line.
    plan = ok(fleetcore(b, "plan", stack_dir, "-var", "stream_shards=3", "-var", "temperature_threshold=35"))
    assert "  ~ aws_kinesis_stream.telemetry (updated in place)\n      shard_count: 2 => 3\n" in plan, plan
    assert "  ~ aws_iot_topic_rule.alerts (updated in place)" in plan
    assert "  ~ awscc_iotevents_alarm_model.overheat (updated in place)\n" \
           "      alarm_rule.simple_rule.threshold: \"30\" => \"35\"\n" in plan, plan
    assert "Plan: 0 to add, 4 to change, 0 to destroy." in plan, plan
    # ... and in a tfvars file, as Terraform loads it.
    (stack_dir / "terraform.tfvars").write_text("stream_shards = 3\ntemperature_threshold = 35\n")
    out = ok(fleetcore(b, "apply", stack_dir, "-auto-approve"))
    assert "Apply complete: 0 added, 4 changed, 0 destroyed." in out, out
    summary = aws("kinesis", broker=b).describe_stream_summary(StreamName="fleet-telemetry")
    assert summary["StreamDescriptionSummary"]["OpenShardCount"] == 3
    iot = aws("iot", broker=b)
    assert iot.get_topic_rule(ruleName="fleet_alerts")["rule"]["sql"].endswith("WHERE temperature > 35")
    alarm = aws("iotevents", broker=b).describe_alarm_model(alarmModelName="fleet-overheat-alarm")
    assert alarm["alarmRule"]["simpleRule"]["threshold"] == "35"
    assert "No changes." in ok(fleetcore(b, "plan", stack_dir))

    # `-`: the dashboard taken out of the files.
    main = stack_dir / "main.tf"
    text = main.read_text()
    start = text.index('resource "aws_cloudwatch_dashboard" "fleet"')
    main.write_text(text[:start])
    plan = ok(fleetcore(b, "plan", stack_dir))
    assert "  - aws_cloudwatch_dashboard.fleet\n" in plan and "Plan: 0 to add, 0 to change, 1 to destroy." in plan, plan
    ok(fleetcore(b, "apply", stack_dir, "-auto-approve"))
    cloudwatch = aws("cloudwatch", broker=b)
    with pytest.raises(cloudwatch.exceptions.ResourceNotFound):
        cloudwatch.get_dashboard(DashboardName="fleet-overview")

    # Deleted behind the stack's back: plan notices and creates it again.
    aws("sns", broker=b).delete_topic(TopicArn=f"arn:aws:sns:us-east-1:{ACCOUNT}:fleet-alerts")
    plan = ok(fleetcore(b, "plan", stack_dir))
    assert "aws_sns_topic.alerts is no longer on the server" in plan and "  + aws_sns_topic.alerts\n" in plan, plan

    # destroy: everything the state file records is gone.
    out = ok(fleetcore(b, "destroy", stack_dir, "-auto-approve"))
    assert "Destroy complete." in out
    assert iot.list_things()["things"] == []
    assert iot.list_topic_rules()["rules"] == []
    assert iot.list_policies()["policies"] == []
    assert iot.list_certificates()["certificates"] == []
    assert iot.list_thing_types()["thingTypes"] == []
    assert aws("kinesis", broker=b).list_streams()["StreamNames"] == []
    assert aws("firehose", broker=b).list_delivery_streams()["DeliveryStreamNames"] == []
    assert aws("lambda", broker=b).list_functions()["Functions"] == []
    assert aws("sns", broker=b).list_topics()["Topics"] == []
    assert cloudwatch.describe_alarms()["MetricAlarms"] == []
    assert aws("iotevents", broker=b).list_detector_models()["detectorModelSummaries"] == []
    assert aws("iotevents", broker=b).list_inputs()["inputSummaries"] == []
    assert aws("iotevents", broker=b).list_alarm_models()["alarmModelSummaries"] == []
    ia = aws("iotanalytics", broker=b)
    assert ia.list_channels()["channelSummaries"] == []
    assert ia.list_pipelines()["pipelineSummaries"] == []
    assert ia.list_datastores()["datastoreSummaries"] == []
    assert ia.list_datasets()["datasetSummaries"] == []
    assert iot.list_security_profiles()["securityProfileIdentifiers"] == []
    assert iot.list_provisioning_templates()["templates"] == []
    assert json.loads((stack_dir / "fleetcore.tfstate.json").read_text())["resources"] == []
    assert "No changes." in ok(fleetcore(b, "destroy", stack_dir, "-auto-approve"))


def test_changes_made_behind_the_stacks_back_show_as_updates_and_apply_puts_them_back(
        fresh_broker, aws, stack_dir):
    b = fresh_broker
    ok(fleetcore(b, "apply", stack_dir, "-auto-approve"))
    iot, events = aws("iot", broker=b), aws("iotevents", broker=b)
    kinesis, logs = aws("kinesis", broker=b), aws("logs", broker=b)

    # An operator changes five resources by hand, through the API.
    kinesis.update_shard_count(StreamName="fleet-telemetry", TargetShardCount=3, ScalingType="UNIFORM_SCALING")
    rule = iot.get_topic_rule(ruleName="fleet_telemetry_stream")["rule"]
    iot.replace_topic_rule(ruleName="fleet_telemetry_stream", topicRulePayload={
        "sql": "SELECT * FROM 'devices/+/telemetry'", "awsIotSqlVersion": rule["awsIotSqlVersion"],
        "description": rule["description"], "actions": rule["actions"], "ruleDisabled": True})
    logs.put_retention_policy(logGroupName="/aws/lambda/fleet-processor", retentionInDays=30)
    alarm = events.describe_alarm_model(alarmModelName="fleet-overheat-alarm")
    events.update_alarm_model(alarmModelName="fleet-overheat-alarm", roleArn=alarm["roleArn"],
                              alarmRule=alarm["alarmRule"], severity=5)
    iot.update_provisioning_template(templateName="fleet-fleet-provisioning", enabled=False)

    plan = ok(fleetcore(b, "plan", stack_dir))
    for note in ("aws_kinesis_stream.telemetry was changed outside the stack (shard_count)",
                 "aws_iot_topic_rule.telemetry_stream was changed outside the stack (enabled, sql)",
                 "aws_cloudwatch_log_group.processor was changed outside the stack (retention_in_days)",
                 "awscc_iotevents_alarm_model.overheat was changed outside the stack (severity)",
                 "aws_iot_provisioning_template.fleet was changed outside the stack (enabled)"):
        assert f"note: {note}; apply puts it back" in plan, plan
    assert "  ~ aws_kinesis_stream.telemetry (updated in place)\n      shard_count: 3 => 2\n" in plan, plan
    assert "      sql: \"SELECT * FROM 'devices/+/telemetry'\" => " \
           "\"SELECT *, topic(2) AS thing FROM 'devices/+/telemetry'\"\n" in plan, plan
    assert "      enabled: false => true\n" in plan, plan
    assert "      retention_in_days: 30 => 14\n" in plan, plan
    assert "      severity: 5 => 2\n" in plan, plan
    assert "Plan: 0 to add, 5 to change, 0 to destroy." in plan, plan

    out = ok(fleetcore(b, "apply", stack_dir, "-auto-approve"))
    assert "Apply complete: 0 added, 5 changed, 0 destroyed." in out, out
    summary = kinesis.describe_stream_summary(StreamName="fleet-telemetry")["StreamDescriptionSummary"]
    assert summary["OpenShardCount"] == 2
    rule = iot.get_topic_rule(ruleName="fleet_telemetry_stream")["rule"]
    assert (rule["sql"], rule["ruleDisabled"]) == ("SELECT *, topic(2) AS thing FROM 'devices/+/telemetry'", False)
    groups = logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/fleet-processor")["logGroups"]
    assert groups[0]["retentionInDays"] == 14
    assert events.describe_alarm_model(alarmModelName="fleet-overheat-alarm")["severity"] == 2
    assert iot.describe_provisioning_template(templateName="fleet-fleet-provisioning")["enabled"] is True
    assert "No changes." in ok(fleetcore(b, "plan", stack_dir))


@pytest.mark.parametrize("text, where, says", [
    ('resource "aws_dynamodb_table" "t" {\n  name = "x"\n}\n', "main.tf:1",
     'resource type "aws_dynamodb_table" is not supported'),
    ('resource "aws_sns_topic" "t" {\n  name = "x"\n  colour = "red"\n}\n', "main.tf:3",
     "unknown argument `colour`"),
    ('resource "aws_sns_topic" "a" {\n  name = aws_sns_topic.b.name\n}\n'
     'resource "aws_sns_topic" "b" {\n  name = aws_sns_topic.a.name\n}\n', "main.tf:1", "dependency cycle"),
    ('resource "aws_sns_topic" "t" {\n  name = "x"\n}\nresource "aws_iot_thing" "d" {\n'
     '  name = aws_iot_thing_type.missing.name\n}\n', "main.tf:5",
     "reference to undeclared resource aws_iot_thing_type.missing"),
])
def test_bad_input_names_file_and_line_and_creates_nothing(fresh_broker, aws, tmp_path, text, where, says):
    b = fresh_broker
    (tmp_path / "main.tf").write_text(text)
    err = failed(fleetcore(b, "apply", tmp_path, "-auto-approve"))
    assert f"{tmp_path}/{where}: " in err and says in err, err
    assert aws("sns", broker=b).list_topics()["Topics"] == []
    assert not (tmp_path / "fleetcore.tfstate.json").exists()


def test_refused_by_the_server_stops_with_the_aws_error_and_keeps_what_was_made(fresh_broker, aws, tmp_path):
    b = fresh_broker
    (tmp_path / "main.tf").write_text(
        'resource "aws_sns_topic" "ok" {\n  name = "made-first"\n}\n'
        'resource "aws_kinesis_stream" "bad" {\n  name = "bad"\n  shard_count = 0\n'
        '  depends_on = [aws_sns_topic.ok]\n}\n')
    err = failed(fleetcore(b, "apply", tmp_path, "-auto-approve"))
    assert "aws_kinesis_stream.bad: CreateStream: " in err and "(400)" in err, err
    state = json.loads((tmp_path / "fleetcore.tfstate.json").read_text())
    assert [r["address"] for r in state["resources"]] == ["aws_sns_topic.ok"]
    ok(fleetcore(b, "destroy", tmp_path, "-auto-approve"))
    assert aws("sns", broker=b).list_topics()["Topics"] == []


def test_credentials_come_from_the_shared_credentials_file_or_fail_clearly(fresh_broker, tmp_path):
    b = fresh_broker
    (tmp_path / "main.tf").write_text('resource "aws_sns_topic" "t" {\n  name = "creds"\n}\n')
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
           "AWS_SHARED_CREDENTIALS_FILE": str(b.data_dir / "credentials"), "AWS_PROFILE": "fleetcore"}
    env = {k: v for k, v in env.items() if v}
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEETCORE_", "AWS_"))}
    child_env.update(env, HOME=str(tmp_path))
    cmd = [str(FLEETCORE_BIN), "plan", str(tmp_path), "--endpoint-url", b.http_base]
    done = subprocess.run(cmd, capture_output=True, text=True, env=child_env, timeout=60)
    assert "  + aws_sns_topic.t" in ok(done)

    wrong = fleetcore(b, "plan", tmp_path, env={"AWS_ACCESS_KEY_ID": "AKIAWRONG", "AWS_SECRET_ACCESS_KEY": "x"})
    # The plan of a new stack reads nothing, so the refusal shows on apply.
    assert wrong.returncode == 0
    err = failed(fleetcore(b, "apply", tmp_path, "-auto-approve",
                           env={"AWS_ACCESS_KEY_ID": "AKIAWRONG", "AWS_SECRET_ACCESS_KEY": "x"}))
    assert re.search(r"aws_sns_topic\.t: CreateTopic: \S+ \(403\)", err), err
