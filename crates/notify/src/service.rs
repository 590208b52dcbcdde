//! The notification service: topics and subscriptions ([`Registry`]), publishing (filter
//! policies, then one job per matching confirmed subscription on its lane), confirmation, and
//! the `TopicPublisher` seam other capabilities publish through.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use fleetcore_core::{
    AccountContext, KvStore, Notification, NotifyFuture, RecipientNotifier, TopicPublisher,
};

use crate::delivery::direct::Direct;
use crate::delivery::lanes::{LaneConfig, Lanes};
use crate::delivery::outbox::Outbox;
use crate::delivery::{Context, Outgoing, Targets, Transports};
use crate::error::NotifyServiceError;
use crate::message::{MessageAttribute, Published, Urls};
use crate::model::{Scope, Status, Subscription};
use crate::registry::Registry;
use crate::signer::Signer;

/// How the service is set up.
#[derive(Clone)]
pub struct NotifyConfig {
    /// Where the signing key lives (`<data dir>/sns`).
    pub dir: PathBuf,
    /// The base of the links put in messages (SubscribeURL, UnsubscribeURL, SigningCertURL):
    /// this server's HTTP listener as subscribers reach it, e.g. `http://10.0.0.5:8080`.
    pub public_url: String,
    /// Region and account of the ARNs.
    pub account: AccountContext,
    /// The services deliveries go to, and the SMTP server.
    pub targets: Targets,
    /// Queues, concurrency and retries of deliveries.
    pub lanes: LaneConfig,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The signing key.
    #[error(transparent)]
    Signer(#[from] crate::signer::SignerError),
    /// The stored topics and subscriptions.
    #[error("loading the SNS topics: {0}")]
    Registry(#[from] NotifyServiceError),
    /// A transport or the recipient directory (bad CA file, bad SMTP settings, bad entry).
    #[error("{0}")]
    Transport(String),
}

/// The running notification service.
pub struct Notify {
    registry: Registry,
    lanes: Lanes,
    transports: Arc<Transports>,
    context: Arc<Context>,
    direct: Arc<Direct>,
}

impl Notify {
    /// Loads the topics and subscriptions from `registry` (shared by the nodes of a cluster)
    /// and the deliveries still to make from `outbox` (this node's own: a publish is delivered
    /// by the node that took it), and builds the transports. Must run inside a tokio runtime
    /// (lanes are tasks).
    pub fn start(
        config: NotifyConfig,
        registry: Arc<dyn KvStore>,
        outbox: Arc<dyn KvStore>,
    ) -> Result<Arc<Notify>, StartError> {
        let signer = Arc::new(Signer::load_or_create(&config.dir)?);
        let (outbox, pending) = Outbox::open(outbox).map_err(NotifyServiceError::from)?;
        let registry = Registry::open(registry, config.account)?;
        let transports =
            Arc::new(Transports::build(&config.targets).map_err(StartError::Transport)?);
        let context = Arc::new(Context {
            signer,
            urls: Urls::new(&config.public_url),
        });
        let direct = Arc::new(
            Direct::build(&config.targets, config.lanes.retry).map_err(StartError::Transport)?,
        );
        let lanes = Lanes::new(
            Arc::clone(&transports),
            Arc::clone(&context),
            config.lanes,
            outbox,
        );
        lanes.recover(pending, &registry);
        Ok(Arc::new(Notify {
            registry,
            lanes,
            transports,
            context,
            direct,
        }))
    }

    /// The topics and subscriptions.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Reads topic `arn` again (another node changed or deleted it).
    pub fn reload_topic(&self, arn: &str) -> Result<(), NotifyServiceError> {
        self.registry.reload_topic(arn)
    }

    /// Reads subscription `arn` again (another node changed or deleted it); a subscription
    /// gone has its lane closed, as after a local Unsubscribe.
    pub fn reload_subscription(&self, arn: &str) -> Result<(), NotifyServiceError> {
        if self.registry.reload_subscription(arn)? {
            self.lanes.close(arn);
        }
        Ok(())
    }

    /// Reads every topic and subscription again (another node may have changed any).
    pub fn reload_all(&self) -> Result<(), NotifyServiceError> {
        for arn in self.registry.reload_all()? {
            self.lanes.close(&arn);
        }
        Ok(())
    }

    /// Sends alarm notifications straight to the people of the recipient directory.
    pub fn recipients(&self) -> Arc<dyn RecipientNotifier> {
        Arc::clone(&self.direct) as Arc<dyn RecipientNotifier>
    }

    /// The certificate subscribers verify signatures with (PEM).
    pub fn signing_certificate(&self) -> &str {
        self.context.signer.certificate_pem()
    }

    /// Subscribes `endpoint` over `protocol` to a topic. Protocols that need confirmation get
    /// their SubscriptionConfirmation sent; the others are confirmed at once.
    pub fn subscribe(
        &self,
        topic_arn: &str,
        protocol: &str,
        endpoint: &str,
        attributes: BTreeMap<String, String>,
    ) -> Result<Arc<Subscription>, NotifyServiceError> {
        self.registry.topic(topic_arn)?;
        let kind = self
            .transports
            .check(protocol, endpoint)
            .map_err(NotifyServiceError::InvalidParameter)?;
        for (name, value) in &attributes {
            crate::model::check_subscription_attribute(protocol, name, value)?;
        }
        let status = if kind.needs_confirmation {
            Status::Pending
        } else {
            Status::Confirmed
        };
        let subscription = Subscription::new(
            format!("{topic_arn}:{}", uuid::Uuid::new_v4()),
            topic_arn.to_string(),
            kind.name.to_string(),
            endpoint.to_string(),
            status,
            token(),
            attributes,
        );
        let (subscription, created) = self.registry.subscribe(subscription)?;
        // A repeated Subscribe of a pending subscription sends the confirmation again.
        if subscription.status == Status::Pending {
            self.lanes
                .enqueue(std::slice::from_ref(&subscription), Outgoing::Confirmation)?;
        }
        if created {
            tracing::info!(subscription = %subscription.arn, protocol, "SNS subscription created");
        }
        Ok(subscription)
    }

    /// Confirms the subscription whose token is `token` (ConfirmSubscription, SubscribeURL).
    pub fn confirm(
        &self,
        topic_arn: &str,
        token: &str,
    ) -> Result<Arc<Subscription>, NotifyServiceError> {
        self.registry.confirm(topic_arn, token)
    }

    /// Ends a subscription; what its lane still holds is not sent.
    pub fn unsubscribe(&self, arn: &str) -> Result<(), NotifyServiceError> {
        self.registry.unsubscribe(arn)?;
        self.lanes.close(arn);
        Ok(())
    }

    /// Deletes a topic and its subscriptions.
    pub fn delete_topic(&self, arn: &str) -> Result<(), NotifyServiceError> {
        for subscription in self.registry.delete_topic(arn)? {
            self.lanes.close(&subscription.arn);
        }
        Ok(())
    }

    /// Sends `message` to every confirmed subscription of its topic whose filter policy it
    /// passes; returns the MessageId once every delivery is on disk and queued.
    pub fn publish(&self, message: Published) -> Result<String, NotifyServiceError> {
        let subscriptions = self.registry.deliver_to(&message.topic_arn)?;
        let message = Arc::new(message);
        let mut attribute_values = None;
        let mut passing = Vec::with_capacity(subscriptions.len());
        for subscription in subscriptions {
            if let Some((policy, scope)) = subscription.filter() {
                let passes = match scope {
                    Scope::MessageAttributes => policy.matches_attributes(
                        attribute_values.get_or_insert_with(|| message.filter_values()),
                    ),
                    Scope::MessageBody => {
                        policy.matches_body(message.message_for(&subscription.protocol))
                    }
                };
                if !passes {
                    crate::delivery::filtered(&subscription.protocol);
                    continue;
                }
            }
            passing.push(subscription);
        }
        self.lanes
            .enqueue(&passing, Outgoing::Notification(Arc::clone(&message)))?;
        metrics::counter!("fleetcore_sns_published_total").increment(1);
        Ok(message.message_id.clone())
    }
}

/// A fresh subscription token: 128 random bits, hex, twice (AWS's are long hex strings).
fn token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl TopicPublisher for Notify {
    fn publish<'a>(&'a self, topic_arn: &'a str, notification: Notification) -> NotifyFuture<'a> {
        Box::pin(async move {
            let mut attributes = BTreeMap::new();
            for (name, value) in notification.attributes {
                let attribute =
                    MessageAttribute::new(&name, "String", value).map_err(|e| e.to_seam())?;
                attributes.insert(name, attribute);
            }
            let message = Published::new(
                topic_arn,
                &notification.message,
                notification.subject.as_deref(),
                notification.message_structure.as_deref(),
                attributes,
            )
            .map_err(|e| e.to_seam())?;
            Notify::publish(self, message).map_err(|e| e.to_seam())
        })
    }
}
