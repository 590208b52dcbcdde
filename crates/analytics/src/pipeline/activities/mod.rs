//! The transforming pipeline activities, one module each.

pub(super) mod add_attributes;
pub(super) mod device_registry_enrich;
pub(super) mod device_shadow_enrich;
pub(super) mod filter;
pub(super) mod lambda;
pub(super) mod math;
pub(super) mod remove_attributes;
pub(super) mod select_attributes;
