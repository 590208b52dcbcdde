use serde_json::{Map, Value, json};

use super::*;

fn params(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn cert(id: &str) -> Map<String, Value> {
    params(json!({"AWS::IoT::Certificate::Id": id}))
}

const FLEET: &str = r#"{
  "Parameters": {
    "SerialNumber": {"Type": "String"},
    "Site": {"Type": "String", "Default": "factory"},
    "Model": {"Type": "String", "Default": "m1,m2,m3"},
    "AWS::IoT::Certificate::Id": {"Type": "String"}
  },
  "Mappings": {"Sites": {"factory": {"group": "g-factory"}, "lab": {"group": "g-lab"}}},
  "Conditions": {
    "IsLab": {"Fn::Equals": [{"Ref": "Site"}, "lab"]},
    "NotLab": {"Fn::Not": [{"Condition": "IsLab"}]},
    "Both": {"Fn::And": [{"Condition": "NotLab"}, {"Fn::Or": [true, {"Condition": "IsLab"}]}]}
  },
  "Resources": {
    "thing": {"Type": "AWS::IoT::Thing", "Properties": {
        "ThingName": {"Fn::Join": ["", ["dev-", {"Ref": "SerialNumber"}]]},
        "ThingGroups": [{"Fn::FindInMap": ["Sites", {"Ref": "Site"}, "group"]}],
        "AttributePayload": {
          "model": {"Fn::Select": [1, {"Fn::Split": [",", {"Ref": "Model"}]}]},
          "where": {"Fn::Sub": "${Site}/${SerialNumber}"},
          "kind": {"Fn::If": ["IsLab", "test", "production"]}
        }},
        "OverrideSettings": {"AttributePayload": "MERGE", "ThingGroups": "DO_NOTHING"}},
    "certificate": {"Type": "AWS::IoT::Certificate", "Properties": {
        "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "Active"}},
    "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "DevicePolicy"}},
    "labpolicy": {"Type": "AWS::IoT::Policy", "Condition": "IsLab",
                  "Properties": {"PolicyDocument": {"Version": "2012-10-17", "Statement": []}}}
  },
  "DeviceConfiguration": {"telemetryTopic": {"Fn::Sub": "telemetry/${SerialNumber}"}, "fixed": "x"}
}"#;

#[test]
fn intrinsics_conditions_and_defaults() {
    let t = Template::parse(FLEET).expect("parses");
    let plan = t
        .evaluate(&params(json!({"SerialNumber": "42"})), &cert("abc"))
        .expect("evaluates");
    let thing = plan.thing.expect("thing");
    assert_eq!(thing.name, "dev-42");
    assert_eq!(thing.thing_groups, vec!["g-factory".to_string()]);
    assert_eq!(thing.attributes["model"], "m2");
    assert_eq!(thing.attributes["where"], "factory/42");
    assert_eq!(thing.attributes["kind"], "production");
    assert_eq!(thing.on_existing_attributes, OverrideAction::Merge);
    assert_eq!(thing.on_existing_type, OverrideAction::DoNothing);
    let c = plan.certificate.expect("certificate");
    assert_eq!(c.source, CertificateSource::Id("abc".into()));
    assert_eq!(c.status.as_deref(), Some("ACTIVE"));
    assert_eq!(
        plan.policies,
        vec![PolicyPlan::Named("DevicePolicy".into())]
    );
    assert_eq!(plan.device_configuration["telemetryTopic"], "telemetry/42");
    assert_eq!(plan.device_configuration["fixed"], "x");

    // the condition flips the Fn::If branch, the mapping and the conditional resource
    let plan = t
        .evaluate(
            &params(json!({"SerialNumber": "7", "Site": "lab"})),
            &cert("abc"),
        )
        .expect("evaluates");
    let thing = plan.thing.expect("thing");
    assert_eq!(thing.attributes["kind"], "test");
    assert_eq!(thing.thing_groups, vec!["g-lab".to_string()]);
    assert_eq!(plan.policies.len(), 2);
    assert!(
        plan.policies
            .contains(&PolicyPlan::Named("DevicePolicy".into()))
    );
    assert!(
        plan.policies
            .iter()
            .any(|p| matches!(p, PolicyPlan::Inline(d) if d.contains("2012-10-17")))
    );
}

#[test]
fn wrong_parameters_are_parameter_errors() {
    let t = Template::parse(FLEET).expect("parses");
    let missing = t.evaluate(&Map::new(), &cert("abc")).expect_err("missing");
    assert!(
        matches!(&missing, TemplateError::Parameters(m) if m.contains("SerialNumber")),
        "{missing}"
    );
    let wrong_type = t
        .evaluate(&params(json!({"SerialNumber": 5})), &cert("abc"))
        .expect_err("type");
    assert!(matches!(wrong_type, TemplateError::Parameters(_)));
    let unmapped = t
        .evaluate(
            &params(json!({"SerialNumber": "1", "Site": "moon"})),
            &cert("abc"),
        )
        .expect_err("no mapping entry");
    assert!(
        matches!(&unmapped, TemplateError::Parameters(m) if m.contains("Sites")),
        "{unmapped}"
    );
    let out_of_range = Template::parse(
        r#"{"Parameters": {"L": {"Type": "String"}},
            "Resources": {"t": {"Type": "AWS::IoT::Thing", "Properties": {
              "ThingName": {"Fn::Select": ["3", {"Fn::Split": [",", {"Ref": "L"}]}]}}}}}"#,
    )
    .expect("parses")
    .evaluate(&params(json!({"L": "a,b"})), &Map::new())
    .expect_err("index");
    assert!(matches!(&out_of_range, TemplateError::Parameters(m) if m.contains("out of range")));
}

#[test]
fn malformed_templates_name_the_place() {
    let cases = [
        ("not json", "not JSON"),
        (r#"{"Resources": {}}"#, "declares no resource"),
        (r#"{"Outputs": {}, "Resources": {}}"#, "Outputs"),
        (
            r#"{"Resources": {"t": {"Type": "AWS::S3::Bucket"}}}"#,
            "Resources.t.Type",
        ),
        (
            r#"{"Resources": {"t": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "Nope"}}}}}"#,
            "Resources.t.Properties.ThingName.Ref",
        ),
        (
            r#"{"Resources": {"t": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Fn::Frobnicate": []}}}}}"#,
            "Fn::Frobnicate",
        ),
        (
            r#"{"Resources": {"t": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Fn::Join": ["-"]}}}}}"#,
            "takes 2 arguments",
        ),
        (
            r#"{"Resources": {"t": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": "x", "Colour": "red"}}}}"#,
            "Resources.t.Properties.Colour",
        ),
        (
            r#"{"Resources": {"t": {"Type": "AWS::IoT::Thing", "Condition": "Missing", "Properties": {"ThingName": "x"}}}}"#,
            "Resources.t.Condition",
        ),
        (
            r#"{"Resources": {"t": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Fn::FindInMap": ["M", "a", "b"]}}}}}"#,
            "mapping \"M\"",
        ),
        (
            r#"{"Resources": {"t": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": "x"}, "OverrideSettings": {"ThingName": "REPLACE"}}}}"#,
            "OverrideSettings.ThingName",
        ),
        (
            r#"{"Parameters": {"P": {"Type": "Blob"}}, "Resources": {"t": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": "x"}}}}"#,
            "Parameters.P.Type",
        ),
        (
            r#"{"Resources": {"t": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Fn::Sub": "a-${Unknown}"}}}}}"#,
            "Unknown",
        ),
        (
            r#"{"Resources": {"p": {"Type": "AWS::IoT::Policy", "Properties": {}}}}"#,
            "Resources.p.Properties",
        ),
    ];
    for (body, expected) in cases {
        let error = Template::parse(body).expect_err(body);
        assert!(
            matches!(&error, TemplateError::Invalid(m) if m.contains(expected)),
            "{body}: {error}"
        );
    }
}

#[test]
fn self_referring_conditions_stop() {
    let t = Template::parse(
        r#"{"Conditions": {"A": {"Fn::Not": [{"Condition": "A"}]}},
            "Resources": {"t": {"Type": "AWS::IoT::Thing", "Condition": "A", "Properties": {"ThingName": "x"}}}}"#,
    )
    .expect("parses: the loop shows only when evaluated");
    let error = t.evaluate(&Map::new(), &Map::new()).expect_err("loops");
    assert!(
        matches!(&error, TemplateError::Parameters(m) if m.contains("deeply")),
        "{error}"
    );
}

#[test]
fn sub_with_variables_and_literals() {
    let t = Template::parse(
        r#"{"Parameters": {"S": {"Type": "String"}},
            "Resources": {"t": {"Type": "AWS::IoT::Thing", "Properties": {
              "ThingName": {"Fn::Sub": ["${prefix}-${S}-${!raw}", {"prefix": {"Fn::Join": ["", ["p", "q"]]}}]}}}}}"#,
    )
    .expect("parses");
    let plan = t
        .evaluate(&params(json!({"S": "9"})), &Map::new())
        .expect("evaluates");
    assert_eq!(plan.thing.expect("thing").name, "pq-9-${raw}");
}
