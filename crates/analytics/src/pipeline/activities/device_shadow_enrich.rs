//! `deviceShadowEnrich`: adds the classic shadow of the thing named by an attribute.

use serde_json::Value;

use super::device_registry_enrich::{Enrich, Source};
use crate::pipeline::{Activity, Services};

/// Builds it from `{name, attribute, thingName, roleArn, next}`.
pub(crate) fn build(members: &Value, services: &Services) -> Result<Box<dyn Activity>, String> {
    Enrich::build(members, services, Source::Shadow)
}
