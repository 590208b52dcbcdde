//! The `iot` service (signing name `iot`, REST-JSON): the control-plane operations of AWS IoT
//! Core. Each group of operations is a module with a `routes()` merged here.

mod certificates;
mod destinations;
mod endpoint;
mod policies;
mod principals;
mod rules;
mod thing_groups;
mod thing_types;
mod things;

use std::sync::Arc;

use axum::Router;
use fleetcore_core::AccountContext;
use fleetcore_identity::IdentityService;
use fleetcore_identity::policy::Policies;
use fleetcore_rules::destinations::TopicRuleDestinations;
use fleetcore_rules::registry::RuleRegistry;

/// What the `iot` handlers share. Cheap to clone: every field is shared.
#[derive(Clone)]
pub struct IotState {
    /// The host name `DescribeEndpoint` answers: the first server name the server certificate
    /// is issued for (no scheme, no port, as AWS answers).
    pub endpoint_host: Arc<str>,
    /// The region and account id stamped into ARNs.
    pub account: AccountContext,
    /// Registry, certificates and CA registrations (things, thing types, thing groups,
    /// certificates, principals); set with [`IotState::with_identity`].
    pub identity: Option<Arc<IdentityService>>,
    /// IoT policies, their versions and attachments; set with [`IotState::with_policies`].
    pub policies: Option<Arc<Policies>>,
    /// Topic rules; set with [`IotState::with_rules`].
    pub rules: Option<Arc<RuleRegistry>>,
    /// Topic rule destinations; set with [`IotState::with_destinations`].
    pub destinations: Option<Arc<TopicRuleDestinations>>,
    /// Where this API is reached (`http://host:port`), for the enableUrl of confirmations.
    pub api_base_url: Arc<str>,
    // Capabilities add their handles here as `Arc<...>` fields (registry, certificates,
    // policies), and set them where the binary builds `IotState` (crates/fleetcore/src/serve.rs).
}

impl IotState {
    /// State answering `endpoint_host` for `DescribeEndpoint`, with ARNs in `account`.
    pub fn new(endpoint_host: impl Into<Arc<str>>, account: AccountContext) -> IotState {
        IotState {
            endpoint_host: endpoint_host.into(),
            account,
            identity: None,
            policies: None,
            rules: None,
            destinations: None,
            api_base_url: Arc::from(""),
        }
    }

    /// Serves the registry and certificate operations from `identity`.
    pub fn with_identity(mut self, identity: Arc<IdentityService>) -> IotState {
        self.identity = Some(identity);
        self
    }

    /// Serves the topic-rule operations from `rules`.
    pub fn with_rules(mut self, rules: Arc<RuleRegistry>) -> IotState {
        self.rules = Some(rules);
        self
    }

    /// Serves the topic rule destination operations from `destinations`; confirmation
    /// messages carry enableUrls under `api_base_url`.
    pub fn with_destinations(
        mut self,
        destinations: Arc<TopicRuleDestinations>,
        api_base_url: &str,
    ) -> IotState {
        self.destinations = Some(destinations);
        self.api_base_url = Arc::from(api_base_url);
        self
    }

    /// Serves the policy operations from `policies`.
    pub fn with_policies(mut self, policies: Arc<Policies>) -> IotState {
        self.policies = Some(policies);
        self
    }
}

/// The router of the `iot` service; register it with `ControlPlane::service("iot", ...)`.
pub fn routes(state: IotState) -> Router {
    Router::new()
        .merge(endpoint::routes())
        .merge(things::routes())
        .merge(thing_types::routes())
        .merge(thing_groups::routes())
        .merge(certificates::routes())
        .merge(principals::routes())
        .merge(policies::routes())
        .merge(rules::routes())
        .merge(destinations::routes())
        // Each operations module adds one line here, e.g. `.merge(things::routes())`, where
        // `things::routes() -> Router<IotState>`.
        .with_state(state)
}
