//! Fleet provisioning for fleetcore: provisioning templates in AWS's template language
//! ([`template`]), stored with versions ([`store`]); provisioning by claim over MQTT
//! ([`claim`]); RegisterThing and the template operations of the `iot` service ([`api`]); the
//! pre-provisioning hook, called through core's `FunctionInvoker` ([`hook`]); and just-in-time
//! provisioning and registration for registered CAs ([`jit`]). Every run applies a template
//! all or nothing ([`apply`]).

#![warn(missing_docs)]

pub mod api;
pub mod apply;
pub mod claim;
mod error;
pub mod hook;
pub mod jit;
mod service;
pub mod store;
pub mod template;

pub use error::ProvisioningError;
pub use service::{IssuedForClaim, Provisioned, Provisioning, ProvisioningConfig};
