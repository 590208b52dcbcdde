//! Thing groups: named sets of things with a description and attributes, arranged in a
//! hierarchy (a group may have one parent). Policies attached to a group apply to its things
//! and to the things of its descendants, so membership changes notify the change listeners.

use std::collections::{BTreeMap, BTreeSet};

use fleetcore_core::WriteBatch;
use serde::{Deserialize, Serialize};

use super::records::{
    Page, PageRequest, Tag, Timestamp, new_uuid, paginate, pair_key, prefix_of, put_json, tables,
    validate_attributes, validate_description, validate_name, validate_tags,
};
use super::things::{AttributePayload, check_version};
use super::{Registry, RegistryError};

/// Groups list page size when the caller gives none.
const DEFAULT_PAGE_SIZE: i64 = 50;
/// Deepest hierarchy AWS allows (a root group and six levels below it).
const MAX_DEPTH: usize = 7;

/// A group's description and attributes (`thingGroupProperties`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThingGroupProperties {
    /// `thingGroupDescription`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `attributePayload.attributes`; empty values are dropped.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// A stored thing group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThingGroupRecord {
    /// The group name.
    pub name: String,
    /// `thingGroupId`: a random UUID given at creation.
    pub id: String,
    /// Description and attributes.
    pub properties: ThingGroupProperties,
    /// The parent group, if any (fixed at creation, as in AWS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// 1 at creation, +1 per update.
    pub version: i64,
    /// When it was created.
    pub creation_date: Timestamp,
    /// Tags given at creation.
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// ListThingGroups filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupListFilter {
    /// Only children of this group (all descendants with `recursive`).
    pub parent_group: Option<String>,
    /// Only groups whose name starts with this.
    pub name_prefix: Option<String>,
    /// With `parent_group`: descendants at any depth, not only children.
    pub recursive: bool,
}

impl Registry {
    /// CreateThingGroup. Creating an existing group again with the same properties and parent
    /// returns it; anything different fails with `AlreadyExists`. The parent must exist
    /// (`InvalidRequest` otherwise, AWS's code for this operation) and the hierarchy may be at
    /// most 7 deep.
    pub fn create_thing_group(
        &self,
        name: &str,
        properties: ThingGroupProperties,
        parent: Option<&str>,
        tags: Vec<Tag>,
    ) -> Result<ThingGroupRecord, RegistryError> {
        validate_name("thing group", name)?;
        if let Some(parent) = parent {
            validate_name("thing group", parent)?;
        }
        let properties = ThingGroupProperties {
            description: properties.description,
            attributes: properties
                .attributes
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .collect(),
        };
        if let Some(description) = &properties.description {
            validate_description(description)?;
        }
        validate_attributes(&properties.attributes)?;
        validate_tags(&tags)?;

        let _writer = self.store.writer();
        if let Some(existing) = self.thing_group(name)? {
            if existing.properties == properties && existing.parent.as_deref() == parent {
                return Ok(existing);
            }
            return Err(RegistryError::AlreadyExists {
                message: format!(
                    "Thing group {name} already exists with a different configuration"
                ),
                id: existing.id,
                arn: self.thing_group_arn(name),
            });
        }
        if let Some(parent) = parent {
            if self.thing_group(parent)?.is_none() {
                return Err(RegistryError::invalid(format!(
                    "Parent thing group {parent} does not exist"
                )));
            }
            if self.thing_group_ancestors(parent)?.len() + 1 >= MAX_DEPTH {
                return Err(RegistryError::invalid(format!(
                    "Thing group hierarchies can be at most {MAX_DEPTH} deep"
                )));
            }
        }
        let record = ThingGroupRecord {
            name: name.to_owned(),
            id: new_uuid()?,
            properties,
            parent: parent.map(str::to_owned),
            version: 1,
            creation_date: Timestamp::now(),
            tags,
        };
        let mut batch = WriteBatch::new();
        put_json(&mut batch, tables::THING_GROUP, name, &record)?;
        self.store.apply(batch)?;
        Ok(record)
    }

    fn thing_group(&self, name: &str) -> Result<Option<ThingGroupRecord>, RegistryError> {
        self.store.get(tables::THING_GROUP, name)
    }

    /// DescribeThingGroup.
    pub fn describe_thing_group(&self, name: &str) -> Result<ThingGroupRecord, RegistryError> {
        self.thing_group(name)?
            .ok_or_else(|| RegistryError::not_found("Thing group", name))
    }

    /// The ancestors of group `name`, root first, parent last (`rootToParentThingGroups`).
    pub fn thing_group_ancestors(&self, name: &str) -> Result<Vec<String>, RegistryError> {
        let mut chain = Vec::new();
        let mut current = self.describe_thing_group(name)?.parent;
        while let Some(parent) = current {
            // A cycle cannot be made through the API; the bound guards hand-edited stores.
            if chain.len() > MAX_DEPTH || chain.contains(&parent) {
                break;
            }
            current = self.thing_group(&parent)?.and_then(|g| g.parent);
            chain.push(parent);
        }
        chain.reverse();
        Ok(chain)
    }

    /// UpdateThingGroup: replaces the description when given, applies `attribute_payload`,
    /// checks `expected_version`; returns the new version.
    pub fn update_thing_group(
        &self,
        name: &str,
        description: Option<String>,
        attribute_payload: Option<&AttributePayload>,
        expected_version: Option<i64>,
    ) -> Result<i64, RegistryError> {
        if let Some(description) = &description {
            validate_description(description)?;
        }
        let _writer = self.store.writer();
        let mut record = self.describe_thing_group(name)?;
        check_version("thing group", name, record.version, expected_version)?;
        if let Some(description) = description {
            record.properties.description = Some(description);
        }
        if let Some(payload) = attribute_payload {
            record.properties.attributes = payload.apply_to(&record.properties.attributes)?;
        }
        record.version += 1;
        let mut batch = WriteBatch::new();
        put_json(&mut batch, tables::THING_GROUP, name, &record)?;
        self.store.apply(batch)?;
        Ok(record.version)
    }

    /// ListThingGroups, by name.
    pub fn list_thing_groups(
        &self,
        filter: &GroupListFilter,
        page: &PageRequest,
    ) -> Result<Page<ThingGroupRecord>, RegistryError> {
        let all = self
            .store
            .scan::<ThingGroupRecord>(tables::THING_GROUP, "")?;
        let within: Option<BTreeSet<String>> = match &filter.parent_group {
            None => None,
            Some(parent) => {
                if !all.iter().any(|(n, _)| n == parent) {
                    return Err(RegistryError::not_found("Thing group", parent));
                }
                let groups: Vec<&ThingGroupRecord> = all.iter().map(|(_, g)| g).collect();
                Some(if filter.recursive {
                    descendants(&groups, parent)
                } else {
                    groups
                        .iter()
                        .filter(|g| g.parent.as_ref() == Some(parent))
                        .map(|g| g.name.clone())
                        .collect()
                })
            }
        };
        let selected = all
            .into_iter()
            .filter(|(n, _)| within.as_ref().is_none_or(|w| w.contains(n)))
            .filter(|(n, _)| {
                filter
                    .name_prefix
                    .as_deref()
                    .is_none_or(|p| n.starts_with(p))
            })
            .collect();
        paginate(selected, page, DEFAULT_PAGE_SIZE, true)
    }

    /// DeleteThingGroup. Deleting a group that does not exist succeeds (AWS lists no
    /// not-found error for it). A group with child groups cannot be deleted. Its memberships
    /// and policy attachments go with it.
    pub fn delete_thing_group(
        &self,
        name: &str,
        expected_version: Option<i64>,
    ) -> Result<(), RegistryError> {
        validate_name("thing group", name)?;
        {
            let _writer = self.store.writer();
            let Some(record) = self.thing_group(name)? else {
                return Ok(());
            };
            check_version("thing group", name, record.version, expected_version)?;
            let groups = self
                .store
                .scan::<ThingGroupRecord>(tables::THING_GROUP, "")?;
            if let Some((child, _)) = groups
                .iter()
                .find(|(_, g)| g.parent.as_deref() == Some(name))
            {
                return Err(RegistryError::invalid(format!(
                    "Cannot delete thing group {name}: it has child groups (e.g. {child})"
                )));
            }
            if let Some(check) = self.store.attachment_check() {
                check.detach_all(&self.thing_group_arn(name))?;
            }
            let prefix = prefix_of(name);
            let mut batch = WriteBatch::new();
            batch.delete(tables::THING_GROUP, name.as_bytes());
            for thing in self.store.scan_suffixes(tables::GROUP_THINGS, &prefix)? {
                batch.delete(tables::THING_GROUPS, pair_key(&thing, name).into_bytes());
            }
            batch.delete_prefix(tables::GROUP_THINGS, prefix.into_bytes());
            self.store.apply(batch)?;
        }
        self.store.notify();
        Ok(())
    }

    /// AddThingToThingGroup. Both must exist (`NotFound`); adding a member again is a no-op.
    pub fn add_thing_to_thing_group(&self, group: &str, thing: &str) -> Result<(), RegistryError> {
        {
            let _writer = self.store.writer();
            self.describe_thing_group(group)?;
            self.describe_thing(thing)?;
            let key = pair_key(group, thing);
            if self.store.contains(tables::GROUP_THINGS, &key)? {
                return Ok(());
            }
            let mut batch = WriteBatch::new();
            batch.put(tables::GROUP_THINGS, key.into_bytes(), Vec::new());
            batch.put(
                tables::THING_GROUPS,
                pair_key(thing, group).into_bytes(),
                Vec::new(),
            );
            self.store.apply(batch)?;
        }
        self.store.notify();
        Ok(())
    }

    /// RemoveThingFromThingGroup. Both must exist (`NotFound`); removing a non-member is a no-op.
    pub fn remove_thing_from_thing_group(
        &self,
        group: &str,
        thing: &str,
    ) -> Result<(), RegistryError> {
        {
            let _writer = self.store.writer();
            self.describe_thing_group(group)?;
            self.describe_thing(thing)?;
            let key = pair_key(group, thing);
            if !self.store.contains(tables::GROUP_THINGS, &key)? {
                return Ok(());
            }
            let mut batch = WriteBatch::new();
            batch.delete(tables::GROUP_THINGS, key.into_bytes());
            batch.delete(tables::THING_GROUPS, pair_key(thing, group).into_bytes());
            self.store.apply(batch)?;
        }
        self.store.notify();
        Ok(())
    }

    /// ListThingsInThingGroup: thing names, by name; with `recursive`, also the things of
    /// every descendant group.
    pub fn list_things_in_thing_group(
        &self,
        group: &str,
        recursive: bool,
        page: &PageRequest,
    ) -> Result<Page<String>, RegistryError> {
        self.describe_thing_group(group)?;
        let mut groups = BTreeSet::from([group.to_owned()]);
        if recursive {
            let all = self
                .store
                .scan::<ThingGroupRecord>(tables::THING_GROUP, "")?;
            let records: Vec<&ThingGroupRecord> = all.iter().map(|(_, g)| g).collect();
            groups.extend(descendants(&records, group));
        }
        let mut things = BTreeSet::new();
        for g in &groups {
            things.extend(
                self.store
                    .scan_suffixes(tables::GROUP_THINGS, &prefix_of(g))?,
            );
        }
        let items = things.into_iter().map(|t| (t.clone(), t)).collect();
        paginate(items, page, DEFAULT_PAGE_SIZE, true)
    }

    /// ListThingGroupsForThing: the groups the thing is a direct member of, by name.
    pub fn list_thing_groups_for_thing(
        &self,
        thing: &str,
        page: &PageRequest,
    ) -> Result<Page<String>, RegistryError> {
        self.describe_thing(thing)?;
        let groups = self
            .store
            .scan_suffixes(tables::THING_GROUPS, &prefix_of(thing))?;
        let items = groups.into_iter().map(|g| (g.clone(), g)).collect();
        paginate(items, page, DEFAULT_PAGE_SIZE, true)
    }

    /// Every group whose policies apply to `thing`: its groups and, with `include_ancestors`,
    /// their ancestors; sorted, without duplicates. For the policy engine.
    pub fn thing_groups_for_thing(
        &self,
        thing: &str,
        include_ancestors: bool,
    ) -> Result<Vec<String>, RegistryError> {
        let direct = self
            .store
            .scan_suffixes(tables::THING_GROUPS, &prefix_of(thing))?;
        let mut all: BTreeSet<String> = direct.iter().cloned().collect();
        if include_ancestors {
            for group in &direct {
                match self.thing_group_ancestors(group) {
                    Ok(ancestors) => all.extend(ancestors),
                    Err(RegistryError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(all.into_iter().collect())
    }
}

/// The names of every group below `root`, at any depth.
fn descendants(groups: &[&ThingGroupRecord], root: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut frontier = vec![root.to_owned()];
    while let Some(parent) = frontier.pop() {
        for group in groups {
            if group.parent.as_ref() == Some(&parent) && found.insert(group.name.clone()) {
                frontier.push(group.name.clone());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::test_support;
    use crate::registry::things::NewThing;

    fn registry() -> (tempfile::TempDir, Registry) {
        let (dir, store) = test_support::store();
        (dir, Registry::new(store))
    }

    fn props(description: &str) -> ThingGroupProperties {
        ThingGroupProperties {
            description: Some(description.to_owned()),
            attributes: BTreeMap::from([("floor".to_owned(), "2".to_owned())]),
        }
    }

    #[test]
    fn create_is_idempotent_for_the_same_configuration_only() {
        let (_dir, registry) = registry();
        let first = registry
            .create_thing_group("g", props("lab"), None, vec![])
            .unwrap();
        assert_eq!(first.version, 1);
        assert_eq!(
            registry
                .create_thing_group("g", props("lab"), None, vec![])
                .unwrap(),
            first
        );
        let err = registry
            .create_thing_group("g", props("other"), None, vec![])
            .unwrap_err();
        assert!(
            matches!(err, RegistryError::AlreadyExists { .. }),
            "{err:?}"
        );
        assert_eq!(registry.describe_thing_group("g").unwrap(), first);
        assert!(matches!(
            registry.describe_thing_group("nope"),
            Err(RegistryError::NotFound(_))
        ));
    }

    #[test]
    fn hierarchy_listing_and_deletion_rules() {
        let (_dir, registry) = registry();
        let none = ThingGroupProperties::default();
        registry
            .create_thing_group("root", none.clone(), None, vec![])
            .unwrap();
        registry
            .create_thing_group("mid", none.clone(), Some("root"), vec![])
            .unwrap();
        registry
            .create_thing_group("leaf", none.clone(), Some("mid"), vec![])
            .unwrap();
        registry
            .create_thing_group("other", none.clone(), None, vec![])
            .unwrap();
        let err = registry
            .create_thing_group("orphan", none.clone(), Some("missing"), vec![])
            .unwrap_err();
        assert!(matches!(err, RegistryError::InvalidRequest(_)), "{err:?}");
        assert_eq!(
            registry.thing_group_ancestors("leaf").unwrap(),
            ["root", "mid"]
        );

        let names = |filter: GroupListFilter| -> Vec<String> {
            registry
                .list_thing_groups(&filter, &PageRequest::default())
                .unwrap()
                .items
                .into_iter()
                .map(|g| g.name)
                .collect()
        };
        assert_eq!(
            names(GroupListFilter::default()),
            ["leaf", "mid", "other", "root"]
        );
        assert_eq!(
            names(GroupListFilter {
                parent_group: Some("root".into()),
                ..GroupListFilter::default()
            }),
            ["mid"]
        );
        assert_eq!(
            names(GroupListFilter {
                parent_group: Some("root".into()),
                recursive: true,
                ..GroupListFilter::default()
            }),
            ["leaf", "mid"]
        );
        assert_eq!(
            names(GroupListFilter {
                name_prefix: Some("o".into()),
                ..GroupListFilter::default()
            }),
            ["other"]
        );

        registry.create_thing("t1", NewThing::default()).unwrap();
        registry.create_thing("t2", NewThing::default()).unwrap();
        registry.add_thing_to_thing_group("leaf", "t1").unwrap();
        registry.add_thing_to_thing_group("leaf", "t1").unwrap();
        registry.add_thing_to_thing_group("root", "t2").unwrap();
        assert_eq!(
            registry
                .list_things_in_thing_group("root", true, &PageRequest::default())
                .unwrap()
                .items,
            ["t1", "t2"]
        );
        assert_eq!(
            registry
                .list_things_in_thing_group("root", false, &PageRequest::default())
                .unwrap()
                .items,
            ["t2"]
        );
        assert_eq!(
            registry
                .list_thing_groups_for_thing("t1", &PageRequest::default())
                .unwrap()
                .items,
            ["leaf"]
        );
        assert_eq!(
            registry.thing_groups_for_thing("t1", true).unwrap(),
            ["leaf", "mid", "root"]
        );

        let err = registry.delete_thing_group("mid", None).unwrap_err();
        assert!(matches!(err, RegistryError::InvalidRequest(_)), "{err:?}");
        let err = registry.delete_thing_group("leaf", Some(5)).unwrap_err();
        assert!(matches!(err, RegistryError::VersionConflict(_)), "{err:?}");
        registry.delete_thing_group("leaf", Some(1)).unwrap();
        registry.delete_thing_group("leaf", None).unwrap();
        assert!(
            registry
                .list_thing_groups_for_thing("t1", &PageRequest::default())
                .unwrap()
                .items
                .is_empty()
        );

        registry
            .remove_thing_from_thing_group("root", "t2")
            .unwrap();
        registry
            .remove_thing_from_thing_group("root", "t2")
            .unwrap();
        assert!(matches!(
            registry.remove_thing_from_thing_group("root", "nope"),
            Err(RegistryError::NotFound(_))
        ));
        assert!(matches!(
            registry.add_thing_to_thing_group("nope", "t1"),
            Err(RegistryError::NotFound(_))
        ));
    }

    #[test]
    fn deleting_a_thing_removes_its_memberships() {
        let (_dir, registry) = registry();
        registry
            .create_thing_group("g", ThingGroupProperties::default(), None, vec![])
            .unwrap();
        registry.create_thing("t1", NewThing::default()).unwrap();
        registry.add_thing_to_thing_group("g", "t1").unwrap();
        registry.delete_thing("t1", None).unwrap();
        assert!(
            registry
                .list_things_in_thing_group("g", false, &PageRequest::default())
                .unwrap()
                .items
                .is_empty()
        );
    }

    #[test]
    fn update_changes_description_attributes_and_version() {
        let (_dir, registry) = registry();
        registry
            .create_thing_group("g", props("lab"), None, vec![])
            .unwrap();
        let payload = AttributePayload {
            attributes: BTreeMap::from([("room".to_owned(), "12".to_owned())]),
            merge: true,
        };
        let version = registry
            .update_thing_group("g", Some("new".into()), Some(&payload), Some(1))
            .unwrap();
        assert_eq!(version, 2);
        let group = registry.describe_thing_group("g").unwrap();
        assert_eq!(group.properties.description.as_deref(), Some("new"));
        assert_eq!(group.properties.attributes.len(), 2);
        let err = registry
            .update_thing_group("g", None, None, Some(1))
            .unwrap_err();
        assert!(matches!(err, RegistryError::VersionConflict(_)), "{err:?}");
    }

    #[test]
    fn hierarchies_are_at_most_seven_deep() {
        let (_dir, registry) = registry();
        let none = ThingGroupProperties::default();
        registry
            .create_thing_group("g0", none.clone(), None, vec![])
            .unwrap();
        for i in 1..MAX_DEPTH {
            registry
                .create_thing_group(
                    &format!("g{i}"),
                    none.clone(),
                    Some(&format!("g{}", i - 1)),
                    vec![],
                )
                .unwrap();
        }
        let err = registry
            .create_thing_group(
                "too-deep",
                none,
                Some(&format!("g{}", MAX_DEPTH - 1)),
                vec![],
            )
            .unwrap_err();
        assert!(matches!(err, RegistryError::InvalidRequest(_)), "{err:?}");
    }
}
