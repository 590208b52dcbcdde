//! The device registry of the AWS IoT control plane: thing types, things with attributes,
//! thing groups, and which certificates (principals) are attached to which things.
//!
//! Everything is kept in the shared [`fleetcore_core::KvStore`] as JSON records (tables named
//! `iot_thing*` and `iot_principal_things`), so it survives restarts. Semantics follow AWS IoT;
//! where fleetcore differs on purpose, the method says so.

mod error;
mod principals;
pub(crate) mod records;
mod thing_groups;
mod thing_types;
mod things;

use std::sync::Arc;

pub use error::RegistryError;
pub use principals::{PrincipalThing, ThingPrincipal, ThingPrincipalType};
pub use records::{ChangeListener, Page, PageRequest, Tag, Timestamp};
pub use thing_groups::{GroupListFilter, ThingGroupProperties, ThingGroupRecord};
pub use thing_types::{ThingTypeProperties, ThingTypeRecord};
pub use things::{AttributePayload, NewThing, ThingFilter, ThingRecord, ThingUpdate};

use records::RecordStore;

/// Things, thing types, thing groups and thing-principal attachments.
#[derive(Clone)]
pub struct Registry {
    store: Arc<RecordStore>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("account", self.store.account())
            .finish_non_exhaustive()
    }
}

impl Registry {
    pub(crate) fn new(store: Arc<RecordStore>) -> Registry {
        Registry { store }
    }

    /// `arn:aws:iot:{region}:{account}:thing/{name}`.
    pub fn thing_arn(&self, name: &str) -> String {
        self.store.arn(&format!("thing/{name}"))
    }

    /// `arn:aws:iot:{region}:{account}:thingtype/{name}`.
    pub fn thing_type_arn(&self, name: &str) -> String {
        self.store.arn(&format!("thingtype/{name}"))
    }

    /// `arn:aws:iot:{region}:{account}:thinggroup/{name}`.
    pub fn thing_group_arn(&self, name: &str) -> String {
        self.store.arn(&format!("thinggroup/{name}"))
    }

    /// The name in a thing or thing group ARN of this account (`kind` is `thing` or
    /// `thinggroup`), as AddThingToThingGroup accepts ARNs in place of names.
    pub fn name_from_arn(&self, arn: &str, kind: &str) -> Result<String, RegistryError> {
        let parsed =
            fleetcore_core::Arn::parse(arn).map_err(|e| RegistryError::invalid(e.to_string()))?;
        match parsed.resource_id() {
            Some(name)
                if parsed.service == "iot"
                    && parsed.resource_type() == kind
                    && parsed.account_id == self.store.account().account_id =>
            {
                Ok(name.to_owned())
            }
            _ => Err(RegistryError::invalid(format!(
                "{arn} is not a {kind} ARN of account {}",
                self.store.account().account_id
            ))),
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;

    use fleetcore_core::{AccountContext, RedbStore};

    use super::records::RecordStore;

    pub(crate) const REGION: &str = "eu-west-1";
    pub(crate) const ACCOUNT: &str = "123456789012";

    /// A record store over a fresh redb file; keep the tempdir alive while using it.
    pub(crate) fn store() -> (tempfile::TempDir, Arc<RecordStore>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        (dir, store)
    }

    /// A record store over `dir/store.redb` (created or reopened).
    pub(crate) fn open(dir: &std::path::Path) -> Arc<RecordStore> {
        let kv = RedbStore::open(&dir.join("store.redb")).expect("open store");
        Arc::new(RecordStore::new(
            Arc::new(kv),
            AccountContext::new(REGION, ACCOUNT),
        ))
    }
}
