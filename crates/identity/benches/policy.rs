//! Policy evaluation cost per PUBLISH: a realistic device policy evaluated without and with the
//! per-connection decision cache, beside an anchor measured in the same run (a
//! `HashMap<String, bool>` lookup of the same topic: the floor any cached decision pays).
//!
//! Run with `cargo bench -p fleetcore-identity --bench policy`. Policies, grants and topics are
//! built outside the timed region.

use std::collections::HashMap;
use std::sync::Arc;

use divan::{Bencher, black_box};
use fleetcore_core::RedbStore;
use fleetcore_core::access::{ConnectionGrant, MqttAction};
use fleetcore_identity::policy::{
    BoundPolicies, CompiledPolicy, GrantSubject, IotAction, Policies, PolicyGrant, PolicyVariables,
    ResourceArns, decide_mqtt, evaluate,
};

fn main() {
    divan::main();
}

const REGION: &str = "us-east-1";
const ACCOUNT: &str = "123456789012";
const CERT: &str = "arn:aws:iot:us-east-1:123456789012:cert/0123456789abcdef";
const THING: &str = "sensor-000123";
const TOPIC: &str = "devices/sensor-000123/telemetry";

/// Connect on its own client id, publish under its own prefix and shadow, subscribe to and
/// receive its commands and shadow replies, and a Deny carving out an admin subtree.
const DEVICE_POLICY: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": "iot:Connect",
     "Resource": "arn:aws:iot:us-east-1:123456789012:client/${iot:ClientId}"},
    {"Effect": "Allow", "Action": "iot:Publish",
     "Resource": ["arn:aws:iot:us-east-1:123456789012:topic/devices/${iot:Connection.Thing.ThingName}/*",
                  "arn:aws:iot:us-east-1:123456789012:topic/$aws/things/${iot:Connection.Thing.ThingName}/shadow/*"]},
    {"Effect": "Allow", "Action": "iot:Subscribe",
     "Resource": ["arn:aws:iot:us-east-1:123456789012:topicfilter/commands/${iot:Connection.Thing.ThingName}/#",
                  "arn:aws:iot:us-east-1:123456789012:topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/shadow/*"]},
    {"Effect": "Allow", "Action": "iot:Receive",
     "Resource": ["arn:aws:iot:us-east-1:123456789012:topic/commands/${iot:Connection.Thing.ThingName}/*",
                  "arn:aws:iot:us-east-1:123456789012:topic/$aws/things/${iot:Connection.Thing.ThingName}/shadow/*"]},
    {"Effect": "Deny", "Action": "iot:Publish",
     "Resource": "arn:aws:iot:*:*:topic/devices/*/admin/*"}
  ]
}"#;

fn variables() -> PolicyVariables {
    PolicyVariables {
        client_id: Some(THING.into()),
        thing_name: Some(THING.into()),
        thing_is_attached: Some(true),
        ..PolicyVariables::default()
    }
}

fn compiled() -> Arc<CompiledPolicy> {
    Arc::new(CompiledPolicy::parse(DEVICE_POLICY).expect("valid policy"))
}

/// A grant for the device over a throwaway store; the directory must outlive the grant.
fn grant() -> (tempfile::TempDir, PolicyGrant) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RedbStore::open(&dir.path().join("store.redb")).expect("store");
    let policies = Arc::new(Policies::new(Arc::new(store)));
    policies.create("device", DEVICE_POLICY).expect("create");
    policies.attach("device", CERT).expect("attach");
    let subject = GrantSubject {
        targets: vec![CERT.into()],
        policy_names: Vec::new(),
        variables: variables(),
    };
    let grant = PolicyGrant::with_subject(policies, ResourceArns::new(REGION, ACCOUNT), subject)
        .expect("grant");
    (dir, grant)
}

/// Anchor: one hash lookup of the topic, what a cached decision cannot beat.
#[divan::bench]
fn anchor_hashmap_lookup(bencher: Bencher) {
    let map: HashMap<String, bool> = HashMap::from([(TOPIC.to_string(), true)]);
    bencher.bench_local(|| *map.get(black_box(TOPIC)).unwrap_or(&false));
}

/// Cached: `ConnectionGrant::allows` for a topic asked before (the steady state).
#[divan::bench]
fn publish_cached(bencher: Bencher) {
    let (_dir, grant) = grant();
    assert!(grant.allows(MqttAction::Publish, TOPIC));
    bencher.bench_local(|| grant.allows(MqttAction::Publish, black_box(TOPIC)));
}

/// Cached, with every thread asking the same grant (deliveries to one subscriber are checked
/// on the publishers' tasks).
#[divan::bench(threads = [1, 2])]
fn receive_cached_shared(bencher: Bencher) {
    let (_dir, grant) = grant();
    let topic = "commands/sensor-000123/reboot";
    assert!(grant.allows(MqttAction::Receive, topic));
    bencher.bench(|| grant.allows(MqttAction::Receive, black_box(topic)));
}

/// Uncached: the bound policies decide a PUBLISH whose ARN is already built (pure matching).
#[divan::bench]
fn publish_uncached_decide(bencher: Bencher) {
    let bound = BoundPolicies::bind(&[compiled()], &variables());
    let arn = ResourceArns::new(REGION, ACCOUNT).topic(TOPIC);
    assert!(bound.decide(IotAction::Publish, &arn).is_allowed());
    bencher.bench_local(|| bound.decide(IotAction::Publish, black_box(&arn)));
}

/// Uncached: what a cache miss costs the grant, building the ARN included.
#[divan::bench]
fn publish_uncached_with_arn(bencher: Bencher) {
    let bound = BoundPolicies::bind(&[compiled()], &variables());
    let arns = ResourceArns::new(REGION, ACCOUNT);
    bencher.bench_local(|| {
        let arn = arns.topic(black_box(TOPIC));
        decide_mqtt(&bound, MqttAction::Publish, &arn)
    });
}

/// Uncached and denied by the Deny statement (checked first).
#[divan::bench]
fn publish_uncached_denied(bencher: Bencher) {
    let bound = BoundPolicies::bind(&[compiled()], &variables());
    let arn = ResourceArns::new(REGION, ACCOUNT).topic("devices/sensor-000123/admin/reset");
    assert!(!bound.decide(IotAction::Publish, &arn).is_allowed());
    bencher.bench_local(|| bound.decide(IotAction::Publish, black_box(&arn)));
}

/// Without any per-connection state: bind the variables and decide, every time.
#[divan::bench]
fn publish_evaluate_from_scratch(bencher: Bencher) {
    let policies = [compiled()];
    let vars = variables();
    let arn = ResourceArns::new(REGION, ACCOUNT).topic(TOPIC);
    bencher.bench_local(|| evaluate(&policies, &vars, IotAction::Publish, black_box(&arn)));
}

/// Once per connection: binding the compiled policy to its variables.
#[divan::bench]
fn bind_per_connection(bencher: Bencher) {
    let policies = [compiled()];
    let vars = variables();
    bencher.bench_local(|| BoundPolicies::bind(&policies, black_box(&vars)));
}

/// Once per policy version: parsing and compiling the document.
#[divan::bench]
fn compile_per_version(bencher: Bencher) {
    bencher.bench_local(|| CompiledPolicy::parse(black_box(DEVICE_POLICY)));
}
