//! SNS-compatible notifications for fleetcore: topics and subscriptions persisted in the
//! store ([`registry`]), the `sns` service over the AWS Query protocol ([`api`]), filter
//! policies ([`filter`]), signed messages ([`message`], [`signer`]), and deliveries to `http`,
//! `https`, `email`, `email-json`, `lambda` and `mqtt` subscribers with per-subscription
//! bounded queues and retries ([`delivery`]). [`Notify`] implements the `TopicPublisher` seam
//! through which rules, detectors and alarms publish.

pub mod api;
mod clock;
pub mod delivery;
pub mod error;
pub mod filter;
pub mod message;
pub mod model;
pub mod public;
pub mod registry;
mod service;
pub mod signer;

pub use delivery::direct::RecipientEntry;
pub use delivery::lanes::LaneConfig;
pub use delivery::{RetryPolicy, SmtpConfig, SmtpSecurity, Targets};
pub use error::NotifyServiceError;
pub use service::{Notify, NotifyConfig, StartError};
