//! Pipelines: a chain of activities from a channel to a datastore. Each activity kind is one
//! module under `activities/` implementing [`Activity`], registered once in [`KINDS`]; the
//! `channel` and `datastore` ends are the plan's source and sink.

mod activities;
mod expr;
mod plan;

use std::sync::Arc;

use async_trait::async_trait;
use fleetcore_core::{DeviceDirectory, FunctionInvoker};
use serde_json::Value;

use crate::columns::Message;

pub(crate) use expr::SqlExpr;
pub use plan::Plan;
pub(crate) use plan::build_activity;

/// What the capability calls on: the functions (lambda), the device registry and shadows, the
/// streams channels may be fed from, and the lake's buckets customer-managed datastores use.
#[derive(Clone, Default)]
pub struct Services {
    /// The functions, for the `lambda` activity.
    pub functions: Option<Arc<dyn FunctionInvoker>>,
    /// Things and shadows, for `deviceRegistryEnrich` and `deviceShadowEnrich`.
    pub devices: Option<Arc<dyn DeviceDirectory>>,
    /// The Kinesis-API streams, for channels with a stream source.
    pub streams: Option<Arc<dyn fleetcore_stream::Stream>>,
    /// The lake's buckets, for `customerManagedS3` datastores.
    pub buckets: Option<Arc<dyn crate::bucket::Buckets>>,
}

/// One running activity: messages in, messages out (fewer, changed or the same).
#[async_trait]
pub trait Activity: Send + Sync {
    /// Transforms a batch; `Err` drops the batch and is counted as the pipeline's error.
    async fn apply(&self, messages: Vec<Message>) -> Result<Vec<Message>, String>;
}

/// Builds an activity from its members (checked), against the services.
type Build = fn(&Value, &Services) -> Result<Box<dyn Activity>, String>;

/// The transforming activity kinds, by their key in `pipelineActivities`.
const KINDS: &[(&str, Build)] = &[
    ("filter", activities::filter::build),
    ("math", activities::math::build),
    ("selectAttributes", activities::select_attributes::build),
    ("removeAttributes", activities::remove_attributes::build),
    ("addAttributes", activities::add_attributes::build),
    (
        "deviceRegistryEnrich",
        activities::device_registry_enrich::build,
    ),
    (
        "deviceShadowEnrich",
        activities::device_shadow_enrich::build,
    ),
    ("lambda", activities::lambda::build),
];

/// A required string member of an activity.
pub(crate) fn required_str<'a>(members: &'a Value, name: &str) -> Result<&'a str, String> {
    match members.get(name).and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(format!("the activity needs `{name}` (a non-empty string)")),
    }
}

/// A required list of attribute names.
pub(crate) fn required_names(members: &Value, name: &str) -> Result<Vec<String>, String> {
    let list = members
        .get(name)
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| format!("the activity needs `{name}` (a non-empty list)"))?;
    list.iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("`{name}` must hold attribute names"))
        })
        .collect()
}
