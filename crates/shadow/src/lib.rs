//! Device shadows, classic and named, with AWS IoT semantics.
//!
//! - [`document`]: the document model (merge, `null` deletes, delta, metadata, limits).
//! - [`request`]: parsing of request payloads (untrusted bytes).
//! - [`topic`]: request topics and names; responses go under [`ShadowId::topic_prefix`].
//! - [`store`]: shadow records in the shared `KvStore`.
//! - [`ShadowService`]: the bounded queue, the group-committing worker and the broker tap.

pub mod document;
mod error;
pub mod request;
pub mod response;
mod service;
pub mod store;
pub mod topic;

pub use document::{Limits, ShadowDocument};
pub use error::ShadowError;
pub use service::{ShadowConfig, ShadowService, now_secs};
pub use topic::{Operation, ShadowId};
