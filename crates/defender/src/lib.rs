//! Device Defender for fleetcore: security profiles and custom metrics stored per account
//! ([`store`], validated by [`profile`]); per-device cloud-side metrics counted by the broker
//! through its device-meter seam and aggregated per period ([`meter`]); device-side metrics
//! from the devices' reports ([`reports`], [`device_metrics`]); the detector that
//! evaluates every attached profile's behaviours each period ([`detector`]) and records
//! violations ([`violations`]) and sends alerts to SNS and MQTT ([`alerts`]); and the Defender
//! operations of the `iot` service ([`api`]); audits of the account's policies and
//! certificates ([`audit`]).

#![warn(missing_docs)]

pub mod alerts;
pub mod api;
pub mod audit;
pub mod detector;
pub mod device_metrics;
mod error;
pub mod logging;
pub mod meter;
pub mod metric;
pub mod mitigation;
pub mod model;
pub mod profile;
pub mod reports;
mod service;
pub mod store;
pub mod violations;

pub use error::DefenderError;
pub use service::{Defender, DefenderConfig};
