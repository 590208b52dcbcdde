//! [`PolicyGrant`]: one connection's authorization, decided by IoT policies and cached.
//!
//! The grant binds the policies that apply to its principal to the connection's variables once
//! (see [`BoundPolicies`]), then remembers each decision per (action, topic) in a small bounded
//! map. A hit costs a read lock, an atomic load and one hash lookup, with no allocation.
//!
//! Staleness: every cached decision belongs to the [`Policies::generation`] it was computed at.
//! When a policy or attachment changes, the generation moves and the next question reloads the
//! policies of the same principal before answering, so policy changes apply to the very next
//! message. Changes outside the policy store (certificate status, thing, thing groups) reach
//! the grant through [`ConnectionGrant::revalidate`], which asks the [`SubjectResolver`] again.

use std::collections::HashMap;
use std::sync::Arc;

use fleetcore_core::access::{ConnectionGrant, MqttAction};
use parking_lot::RwLock;

use super::engine::{
    BoundPolicies, Decision, IotAction, PolicyVariables, ResourceArns, decide_mqtt,
};
use super::store::{Policies, PolicyError};

/// Decisions remembered per connection before the cache starts over. Large enough for a device's
/// working set of topics; small enough that a subscriber receiving from thousands of topics
/// costs at most a few tens of KiB.
pub const DECISION_CACHE_CAPACITY: usize = 256;

/// Whose policies apply to a connection, and its variables; resolved by the identity service at
/// connect time and again on every revalidation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantSubject {
    /// Targets whose attached policies apply: the certificate ARN and the ARNs of its thing's
    /// groups (parents included).
    pub targets: Vec<String>,
    /// Policies that apply by name, such as the anonymous policy.
    pub policy_names: Vec<String>,
    /// The connection's policy variables; `client_id` is also the id `iot:Connect` is checked on
    /// when revalidating.
    pub variables: PolicyVariables,
}

/// Resolves a connection's [`GrantSubject`]; `Err(reason)` when the principal may no longer be
/// connected (certificate revoked, deactivated or deleted).
pub type SubjectResolver = Arc<dyn Fn() -> Result<GrantSubject, String> + Send + Sync>;

/// Why a grant could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The resolver refused the principal.
    #[error("not authorized: {0}")]
    Refused(String),
    /// The policies could not be loaded.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// One connection's authorization by IoT policies; see the module documentation.
pub struct PolicyGrant {
    policies: Arc<Policies>,
    arns: ResourceArns,
    resolver: SubjectResolver,
    state: RwLock<GrantState>,
}

struct GrantState {
    subject: GrantSubject,
    /// The policy generation `bound` and `cache` reflect.
    generation: u64,
    bound: BoundPolicies,
    cache: DecisionCache,
}

#[derive(Default)]
struct DecisionCache {
    by_action: [HashMap<Box<str>, bool>; 4],
    len: usize,
}

impl DecisionCache {
    fn get(&self, action: MqttAction, resource: &str) -> Option<bool> {
        self.by_action[action.index()].get(resource).copied()
    }

    fn insert(&mut self, action: MqttAction, resource: &str, allowed: bool) {
        if self.len >= DECISION_CACHE_CAPACITY {
            self.clear();
        }
        if self.by_action[action.index()]
            .insert(resource.into(), allowed)
            .is_none()
        {
            self.len += 1;
        }
    }

    fn clear(&mut self) {
        // Dropping the maps (not just emptying them) returns their memory.
        *self = DecisionCache::default();
    }
}

impl std::fmt::Debug for PolicyGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.read();
        f.debug_struct("PolicyGrant")
            .field("subject", &state.subject)
            .field("generation", &state.generation)
            .field("cached", &state.cache.len)
            .finish_non_exhaustive()
    }
}

impl PolicyGrant {
    /// A grant whose subject `resolver` gives, now and on every revalidation.
    pub fn new(
        policies: Arc<Policies>,
        arns: ResourceArns,
        resolver: SubjectResolver,
    ) -> Result<PolicyGrant, GrantError> {
        let subject = resolver().map_err(GrantError::Refused)?;
        let mut state = GrantState {
            subject,
            generation: 0,
            bound: BoundPolicies::default(),
            cache: DecisionCache::default(),
        };
        load(&policies, &mut state)?;
        Ok(PolicyGrant {
            policies,
            arns,
            resolver,
            state: RwLock::new(state),
        })
    }

    /// A grant for a fixed subject, e.g. anonymous clients governed by a named policy.
    pub fn with_subject(
        policies: Arc<Policies>,
        arns: ResourceArns,
        subject: GrantSubject,
    ) -> Result<PolicyGrant, GrantError> {
        let fixed = subject.clone();
        PolicyGrant::new(policies, arns, Arc::new(move || Ok(fixed.clone())))
    }

    /// Whether `iot:Connect` on `client/<client_id>` is allowed (asked once per CONNECT, so not
    /// cached).
    pub fn allows_connect(&self, client_id: &str) -> bool {
        self.decide(IotAction::Connect, &self.arns.client(client_id))
            .is_allowed()
    }

    /// Decides any IoT action on a full resource ARN (e.g. shadow actions on `thing/<name>`),
    /// without caching.
    pub fn decide(&self, action: IotAction, resource_arn: &str) -> Decision {
        let mut state = self.state.write();
        if state.generation != self.policies.generation() {
            self.refresh(&mut state);
        }
        state.bound.decide(action, resource_arn)
    }

    /// Number of cached decisions (for tests and metrics).
    pub fn cached_decisions(&self) -> usize {
        self.state.read().cache.len
    }

    /// Reloads after a policy change; on failure denies everything until a reload succeeds
    /// (the generation is left stale, so the next question retries).
    fn refresh(&self, state: &mut GrantState) {
        if let Err(e) = load(&self.policies, state) {
            tracing::warn!(error = %e, "reloading policies for a connection failed; denying until it succeeds");
            state.bound = BoundPolicies::default();
            state.cache.clear();
        }
    }
}

/// Loads and binds the subject's policies at the current generation, clearing the cache.
fn load(policies: &Policies, state: &mut GrantState) -> Result<(), PolicyError> {
    let generation = policies.generation();
    let compiled = policies.effective(&state.subject.targets, &state.subject.policy_names)?;
    state.bound = BoundPolicies::bind(&compiled, &state.subject.variables);
    state.generation = generation;
    state.cache.clear();
    Ok(())
}

impl ConnectionGrant for PolicyGrant {
    fn allows(&self, action: MqttAction, resource: &str) -> bool {
        let generation = self.policies.generation();
        {
            let state = self.state.read();
            if state.generation == generation
                && let Some(allowed) = state.cache.get(action, resource)
            {
                return allowed;
            }
        }
        let mut state = self.state.write();
        if state.generation != generation {
            self.refresh(&mut state);
        } else if let Some(allowed) = state.cache.get(action, resource) {
            return allowed;
        }
        let arn = self.arns.arn(ResourceArns::kind(action), resource);
        let allowed = decide_mqtt(&state.bound, action, &arn).is_allowed();
        // Cache only answers computed at a known-current generation (not after a failed reload).
        if state.generation == generation {
            state.cache.insert(action, resource, allowed);
        }
        allowed
    }

    fn revalidate(&self) -> Result<(), String> {
        let subject = (self.resolver)()?;
        let mut state = self.state.write();
        state.subject = subject;
        if let Err(e) = load(&self.policies, &mut state) {
            state.bound = BoundPolicies::default();
            state.cache.clear();
            return Err(format!("authorization could not be re-checked: {e}"));
        }
        if let Some(client_id) = state.subject.variables.client_id.as_deref() {
            let arn = self.arns.client(client_id);
            let decision = state.bound.decide(IotAction::Connect, &arn);
            if !decision.is_allowed() {
                return Err(format!(
                    "iot:Connect is no longer allowed for client id {client_id:?} ({decision:?})"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetcore_core::RedbStore;
    use parking_lot::Mutex;

    const CERT: &str = "arn:aws:iot:us-east-1:123456789012:cert/abc";
    const GROUP: &str = "arn:aws:iot:us-east-1:123456789012:thinggroup/g";
    const DEVICE: &str = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:us-east-1:123456789012:client/${iot:ClientId}"},
        {"Effect":"Allow","Action":["iot:Publish","iot:Receive"],"Resource":"arn:aws:iot:us-east-1:123456789012:topic/devices/${iot:Connection.Thing.ThingName}/*"},
        {"Effect":"Allow","Action":"iot:Subscribe","Resource":"arn:aws:iot:us-east-1:123456789012:topicfilter/devices/${iot:Connection.Thing.ThingName}/#"},
        {"Effect":"Deny","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:123456789012:topic/devices/*/admin"}]}"#;
    const EVERYTHING: &str = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"iot:*","Resource":"*"}}"#;

    fn setup() -> (tempfile::TempDir, Arc<Policies>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(&dir.path().join("s.redb")).expect("store");
        (dir, Arc::new(Policies::new(Arc::new(store))))
    }

    fn arns() -> ResourceArns {
        ResourceArns::new("us-east-1", "123456789012")
    }

    fn subject() -> GrantSubject {
        GrantSubject {
            targets: vec![CERT.into(), GROUP.into()],
            policy_names: Vec::new(),
            variables: PolicyVariables {
                client_id: Some("sensor-1".into()),
                thing_name: Some("sensor-1".into()),
                thing_is_attached: Some(true),
                ..PolicyVariables::default()
            },
        }
    }

    #[test]
    fn decides_and_caches() {
        let (_d, p) = setup();
        p.create("device", DEVICE).expect("create");
        p.attach("device", CERT).expect("attach");
        let grant = PolicyGrant::with_subject(p.clone(), arns(), subject()).expect("grant");
        assert!(grant.allows_connect("sensor-1"));
        assert!(!grant.allows_connect("sensor-2"));
        assert!(grant.allows(MqttAction::Publish, "devices/sensor-1/telemetry"));
        assert!(!grant.allows(MqttAction::Publish, "devices/sensor-2/telemetry"));
        assert!(
            !grant.allows(MqttAction::Publish, "devices/sensor-1/admin"),
            "deny wins"
        );
        assert!(grant.allows(MqttAction::Subscribe, "devices/sensor-1/#"));
        assert!(!grant.allows(MqttAction::Subscribe, "devices/+/#"));
        assert!(grant.allows(MqttAction::Receive, "devices/sensor-1/cmd"));
        assert!(!grant.allows(MqttAction::RetainPublish, "devices/sensor-1/telemetry"));
        assert_eq!(grant.cached_decisions(), 7);
        // Asking again answers from the cache, identically.
        assert!(grant.allows(MqttAction::Publish, "devices/sensor-1/telemetry"));
        assert!(!grant.allows(MqttAction::Publish, "devices/sensor-1/admin"));
        assert_eq!(grant.cached_decisions(), 7);
        // The same string under another action is a different question.
        assert!(!grant.allows(MqttAction::Subscribe, "devices/sensor-1/telemetry"));
        assert_eq!(grant.cached_decisions(), 8);
    }

    #[test]
    fn policy_changes_apply_to_the_next_question() {
        let (_d, p) = setup();
        p.create("device", DEVICE).expect("create");
        p.attach("device", CERT).expect("attach");
        let grant = PolicyGrant::with_subject(p.clone(), arns(), subject()).expect("grant");
        assert!(grant.allows(MqttAction::Publish, "devices/sensor-1/t"));
        p.detach("device", CERT).expect("detach");
        assert!(
            !grant.allows(MqttAction::Publish, "devices/sensor-1/t"),
            "stale cache not used"
        );
        assert_eq!(
            grant.revalidate(),
            Err(
                "iot:Connect is no longer allowed for client id \"sensor-1\" (ImplicitDeny)"
                    .to_string()
            )
        );
        // Attached through the thing group instead: allowed again.
        p.attach("device", GROUP).expect("attach group");
        assert_eq!(grant.revalidate(), Ok(()));
        assert!(grant.allows(MqttAction::Publish, "devices/sensor-1/t"));
        // A new default version takes effect too.
        p.create_version(
            "device",
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"iot:Connect","Resource":"*"}}"#,
            true,
        )
        .expect("v2");
        assert!(!grant.allows(MqttAction::Publish, "devices/sensor-1/t"));
        assert_eq!(grant.revalidate(), Ok(()));
    }

    #[test]
    fn revalidate_asks_the_resolver_again() {
        let (_d, p) = setup();
        p.create("device", DEVICE).expect("create");
        p.attach("device", CERT).expect("attach");
        let status: Arc<Mutex<Result<GrantSubject, String>>> = Arc::new(Mutex::new(Ok(subject())));
        let source = status.clone();
        let grant = PolicyGrant::new(p.clone(), arns(), Arc::new(move || source.lock().clone()))
            .expect("grant");
        assert_eq!(grant.revalidate(), Ok(()));
        assert!(grant.allows(MqttAction::Publish, "devices/sensor-1/t"));
        // The thing was renamed: the variables change, and so do the decisions.
        let mut renamed = subject();
        renamed.variables.thing_name = Some("sensor-9".into());
        *status.lock() = Ok(renamed);
        assert_eq!(grant.revalidate(), Ok(()));
        assert_eq!(grant.cached_decisions(), 0, "revalidate clears the cache");
        assert!(!grant.allows(MqttAction::Publish, "devices/sensor-1/t"));
        assert!(grant.allows(MqttAction::Publish, "devices/sensor-9/t"));
        *status.lock() = Err("certificate abc is REVOKED".into());
        assert_eq!(grant.revalidate(), Err("certificate abc is REVOKED".into()));
        assert!(matches!(
            PolicyGrant::new(
                p,
                arns(),
                Arc::new(|| Err("certificate is INACTIVE".into()))
            ),
            Err(GrantError::Refused(_))
        ));
    }

    #[test]
    fn anonymous_policy_by_name() {
        let (_d, p) = setup();
        p.create("anonymous", EVERYTHING).expect("create");
        let anonymous = GrantSubject {
            policy_names: vec!["anonymous".into()],
            variables: PolicyVariables {
                client_id: Some("anon".into()),
                ..PolicyVariables::default()
            },
            ..GrantSubject::default()
        };
        let grant = PolicyGrant::with_subject(p.clone(), arns(), anonymous).expect("grant");
        assert!(grant.allows_connect("anon"));
        assert!(grant.allows(MqttAction::RetainPublish, "a/b"));
        p.create_version(
            "anonymous",
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":["iot:Connect","iot:Subscribe"],"Resource":"*"}}"#,
            true,
        )
        .expect("v2");
        assert!(!grant.allows(MqttAction::RetainPublish, "a/b"));
        assert!(grant.allows(MqttAction::Subscribe, "a/#"));
        // Without the policy nothing is allowed, connecting included.
        p.set_default_version("anonymous", "1").expect("default");
        p.delete_version("anonymous", "2").expect("delete v2");
        p.delete("anonymous").expect("delete");
        assert!(!grant.allows(MqttAction::Subscribe, "a/#"));
        assert!(grant.revalidate().is_err());
    }

    #[test]
    fn the_cache_is_bounded() {
        let (_d, p) = setup();
        p.create("all", EVERYTHING).expect("create");
        p.attach("all", CERT).expect("attach");
        let grant = PolicyGrant::with_subject(p, arns(), subject()).expect("grant");
        for i in 0..(DECISION_CACHE_CAPACITY * 3 + 7) {
            assert!(grant.allows(MqttAction::Receive, &format!("t/{i}")));
            assert!(grant.cached_decisions() <= DECISION_CACHE_CAPACITY);
        }
        assert!(grant.cached_decisions() > 0);
    }

    #[test]
    fn grants_are_shared_across_threads() {
        let (_d, p) = setup();
        p.create("device", DEVICE).expect("create");
        p.attach("device", CERT).expect("attach");
        let grant: Arc<dyn ConnectionGrant> =
            Arc::new(PolicyGrant::with_subject(p.clone(), arns(), subject()).expect("grant"));
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let grant = grant.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let mine = format!("devices/sensor-1/{}", (i + w) % 50);
                        assert!(grant.allows(MqttAction::Receive, &mine));
                        assert!(!grant.allows(MqttAction::Receive, "devices/other/x"));
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("worker");
        }
    }
}
