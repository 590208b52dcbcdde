//! Deliveries to subscribers. Each protocol is a component ([`ProtocolKind`]: its name, whether
//! a subscription must be confirmed, the endpoint check, and the [`Transport`] it builds from
//! this server's services), registered once in [`PROTOCOLS`]. Each subscription has its own
//! bounded lane ([`lanes`]), so a dead endpoint only ever fills its own queue.

pub mod direct;
mod email;
mod events;
mod http;
mod lambda;
pub mod lanes;
mod mqtt;
pub mod outbox;
mod retry;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use fleetcore_core::FunctionInvoker;
use fleetcore_mqtt::broker::Router;

pub use email::{SmtpConfig, SmtpSecurity};
pub(crate) use events::filtered;
pub use retry::RetryPolicy;

use crate::message::{Published, Urls};
use crate::model::Subscription;
use crate::signer::Signer;

/// What goes to a subscriber.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A published message.
    Notification(Arc<Published>),
    /// The SubscriptionConfirmation of a new subscription.
    Confirmation,
}

/// Why a delivery attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Worth trying again (no answer, 429, 5xx, a transient SMTP reply).
    Retry(String),
    /// Trying again cannot help (a 4xx, a missing function, a refused address).
    Permanent(String),
}

/// What every transport signs and links with.
pub struct Context {
    /// The message signing key.
    pub signer: Arc<Signer>,
    /// The links put in messages.
    pub urls: Urls,
}

/// A protocol's way of sending one message to one subscriber.
#[async_trait]
pub trait Transport: Send + Sync {
    /// Sends `outgoing` to `subscription`'s endpoint once.
    async fn send(
        &self,
        subscription: &Subscription,
        outgoing: &Outgoing,
        context: &Context,
    ) -> Result<(), Failure>;
}

/// The services and settings transports are built from.
#[derive(Clone, Default)]
pub struct Targets {
    /// The broker (the `mqtt` protocol).
    pub router: Option<Arc<Router>>,
    /// The functions (the `lambda` protocol).
    pub functions: Option<Arc<dyn FunctionInvoker>>,
    /// The SMTP server (the `email` and `email-json` protocols).
    pub smtp: Option<SmtpConfig>,
    /// A PEM file of CAs trusted besides the system's for `https` endpoints.
    pub https_ca_file: Option<PathBuf>,
    /// The people alarm notifications may name (`[[sns.recipients]]`).
    pub recipients: Vec<direct::RecipientEntry>,
    /// The MQTT topic the SMS gateway takes text messages from (`[sns] sms_topic`).
    pub sms_topic: Option<String>,
}

/// What building a protocol's transport gives: the transport, `None` when this server lacks
/// what the protocol needs, or why the settings are wrong.
pub type Built = Result<Option<Arc<dyn Transport>>, String>;

/// One subscription protocol.
pub struct ProtocolKind {
    /// The `Protocol` parameter of Subscribe.
    pub name: &'static str,
    /// Whether the subscription waits for its SubscribeURL to be followed.
    pub needs_confirmation: bool,
    /// Checks an endpoint at Subscribe; `Err` says what is wrong.
    pub check_endpoint: fn(&str) -> Result<(), String>,
    /// Builds the transport; `Ok(None)` when this server lacks what the protocol needs (then
    /// Subscribe refuses it, naming the reason in `unavailable`).
    pub build: fn(&Targets) -> Built,
    /// Why the protocol cannot be used when `build` gave `None`.
    pub unavailable: &'static str,
}

/// The protocols this server delivers to.
pub const PROTOCOLS: &[ProtocolKind] = &[
    http::HTTP,
    http::HTTPS,
    email::EMAIL,
    email::EMAIL_JSON,
    lambda::LAMBDA,
    mqtt::MQTT,
];

/// The built transports, by protocol name.
pub struct Transports {
    built: HashMap<&'static str, Arc<dyn Transport>>,
}

impl Transports {
    /// Builds every protocol's transport from `targets`.
    pub fn build(targets: &Targets) -> Result<Transports, String> {
        let mut built = HashMap::new();
        for kind in PROTOCOLS {
            if let Some(transport) = (kind.build)(targets)? {
                built.insert(kind.name, transport);
            }
        }
        Ok(Transports { built })
    }

    /// The transport of `protocol`, if it runs here.
    pub fn get(&self, protocol: &str) -> Option<&Arc<dyn Transport>> {
        self.built.get(protocol)
    }

    /// Checks that `protocol` runs here and `endpoint` suits it; returns the protocol.
    pub fn check(&self, protocol: &str, endpoint: &str) -> Result<&'static ProtocolKind, String> {
        let Some(kind) = PROTOCOLS.iter().find(|k| k.name == protocol) else {
            return Err(match protocol {
                "sqs" | "sms" | "application" | "firehose" => format!(
                    "Protocol: {protocol} is not supported by this server (it delivers to http, https, email, email-json, lambda and mqtt)"
                ),
                _ => format!("Amazon SNS does not support this protocol string: {protocol}"),
            });
        };
        if !self.built.contains_key(kind.name) {
            return Err(format!("Protocol: {protocol}: {}", kind.unavailable));
        }
        (kind.check_endpoint)(endpoint).map_err(|why| format!("Endpoint: {why}"))?;
        Ok(kind)
    }
}
