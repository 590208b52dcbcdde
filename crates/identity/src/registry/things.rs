//! Things: named devices with an optional thing type, string attributes and a version that
//! every update increments.

use std::collections::BTreeMap;

use fleetcore_core::WriteBatch;
use serde::{Deserialize, Serialize};

use super::records::{
    Page, PageRequest, Timestamp, new_uuid, paginate, pair_key, prefix_of, put_json, tables,
    validate_attribute_name, validate_attributes, validate_name,
};
use super::{Registry, RegistryError};

/// ListThings page size when the caller gives none.
const DEFAULT_PAGE_SIZE: i64 = 50;

/// A stored thing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThingRecord {
    /// The thing name (also its default MQTT client id).
    pub name: String,
    /// `thingId`: a random UUID given at creation.
    pub id: String,
    /// The thing type, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thing_type_name: Option<String>,
    /// The attributes.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// 1 at creation, +1 per update.
    pub version: i64,
    /// When it was created.
    pub creation_date: Timestamp,
}

/// What CreateThing carries besides the name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewThing {
    /// `thingTypeName`: must exist and not be deprecated.
    pub thing_type_name: Option<String>,
    /// `attributePayload.attributes` (`merge` means nothing on create). Empty values are
    /// dropped: an empty value means "no such attribute" throughout the registry.
    pub attributes: BTreeMap<String, String>,
}

/// `attributePayload` of UpdateThing / UpdateThingGroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttributePayload {
    /// The attributes to set. An empty value removes the attribute.
    pub attributes: BTreeMap<String, String>,
    /// True: merge into the stored attributes. False: replace them.
    pub merge: bool,
}

impl AttributePayload {
    /// `current` with this payload applied.
    pub(crate) fn apply_to(
        &self,
        current: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, RegistryError> {
        for name in self.attributes.keys() {
            validate_attribute_name(name)?;
        }
        let mut next = if self.merge {
            current.clone()
        } else {
            BTreeMap::new()
        };
        for (name, value) in &self.attributes {
            if value.is_empty() {
                next.remove(name);
            } else {
                next.insert(name.clone(), value.clone());
            }
        }
        validate_attributes(&next)?;
        Ok(next)
    }
}

/// What UpdateThing carries besides the name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThingUpdate {
    /// `thingTypeName`: the new type (must exist and not be deprecated).
    pub thing_type_name: Option<String>,
    /// `removeThingType`: drop the type. Exclusive with `thing_type_name`.
    pub remove_thing_type: bool,
    /// `attributePayload`; `None` keeps the attributes.
    pub attribute_payload: Option<AttributePayload>,
    /// `expectedVersion`: fail with `VersionConflict` unless the thing is at this version.
    pub expected_version: Option<i64>,
}

/// ListThings filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThingFilter {
    /// Only things of this type.
    pub thing_type_name: Option<String>,
    /// Only things with this attribute (needs `attribute_value`).
    pub attribute_name: Option<String>,
    /// ... equal to this value (or starting with it, with `use_prefix_attribute_value`).
    pub attribute_value: Option<String>,
    /// Match `attribute_value` as a prefix.
    pub use_prefix_attribute_value: bool,
}

impl ThingFilter {
    fn matches(&self, thing: &ThingRecord) -> bool {
        if let Some(t) = &self.thing_type_name
            && thing.thing_type_name.as_ref() != Some(t)
        {
            return false;
        }
        if let (Some(name), Some(value)) = (&self.attribute_name, &self.attribute_value) {
            return match thing.attributes.get(name) {
                Some(v) if self.use_prefix_attribute_value => v.starts_with(value.as_str()),
                Some(v) => v == value,
                None => false,
            };
        }
        true
    }
}

fn without_empty_values(attributes: BTreeMap<String, String>) -> BTreeMap<String, String> {
    attributes
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

impl Registry {
    /// CreateThing. Creating an existing thing again with the same type and attributes returns
    /// the existing thing; with anything different it fails with `AlreadyExists`. An unknown
    /// type is `NotFound`, a deprecated one `InvalidRequest`.
    pub fn create_thing(&self, name: &str, new: NewThing) -> Result<ThingRecord, RegistryError> {
        validate_name("thing", name)?;
        if let Some(t) = &new.thing_type_name {
            validate_name("thing type", t)?;
        }
        let attributes = without_empty_values(new.attributes);
        validate_attributes(&attributes)?;

        let _writer = self.store.writer();
        if let Some(existing) = self.thing(name)? {
            if existing.thing_type_name == new.thing_type_name && existing.attributes == attributes
            {
                return Ok(existing);
            }
            return Err(RegistryError::AlreadyExists {
                message: format!("Thing {name} already exists with a different configuration"),
                id: existing.id,
                arn: self.thing_arn(name),
            });
        }
        if let Some(t) = &new.thing_type_name {
            self.usable_thing_type(t)?;
        }
        let record = ThingRecord {
            name: name.to_owned(),
            id: new_uuid()?,
            thing_type_name: new.thing_type_name,
            attributes,
            version: 1,
            creation_date: Timestamp::now(),
        };
        let mut batch = WriteBatch::new();
        put_json(&mut batch, tables::THING, name, &record)?;
        self.store.apply(batch)?;
        Ok(record)
    }

    /// The thing `name`, if it exists (for the broker: its type and attributes fill policy
    /// variables).
    pub fn thing(&self, name: &str) -> Result<Option<ThingRecord>, RegistryError> {
        self.store.get(tables::THING, name)
    }

    /// DescribeThing.
    pub fn describe_thing(&self, name: &str) -> Result<ThingRecord, RegistryError> {
        self.thing(name)?
            .ok_or_else(|| RegistryError::not_found("Thing", name))
    }

    /// UpdateThing: type, attributes (merged or replaced), version check. Every update
    /// increments the version and notifies the change listeners (type and attributes feed
    /// policy variables of live connections).
    pub fn update_thing(
        &self,
        name: &str,
        update: ThingUpdate,
    ) -> Result<ThingRecord, RegistryError> {
        if update.remove_thing_type && update.thing_type_name.is_some() {
            return Err(RegistryError::invalid(
                "thingTypeName and removeThingType cannot both be given",
            ));
        }
        let record = {
            let _writer = self.store.writer();
            let mut record = self.describe_thing(name)?;
            check_version("thing", name, record.version, update.expected_version)?;
            if let Some(t) = &update.thing_type_name {
                if record.thing_type_name.as_ref() != Some(t) {
                    self.usable_thing_type(t)?;
                }
                record.thing_type_name = Some(t.clone());
            }
            if update.remove_thing_type {
                record.thing_type_name = None;
            }
            if let Some(payload) = &update.attribute_payload {
                record.attributes = payload.apply_to(&record.attributes)?;
            }
            record.version += 1;
            let mut batch = WriteBatch::new();
            put_json(&mut batch, tables::THING, name, &record)?;
            self.store.apply(batch)?;
            record
        };
        self.store.notify();
        Ok(record)
    }

    /// How many things exist (the web console's fleet overview).
    pub fn count_things(&self) -> Result<usize, RegistryError> {
        self.store.count(tables::THING)
    }

    /// ListThings, by name.
    pub fn list_things(
        &self,
        filter: &ThingFilter,
        page: &PageRequest,
    ) -> Result<Page<ThingRecord>, RegistryError> {
        if filter.attribute_name.is_some() != filter.attribute_value.is_some() {
            return Err(RegistryError::invalid(
                "attributeName and attributeValue must be given together",
            ));
        }
        let all = self.store.scan::<ThingRecord>(tables::THING, "")?;
        let selected = all.into_iter().filter(|(_, t)| filter.matches(t)).collect();
        paginate(selected, page, DEFAULT_PAGE_SIZE, true)
    }

    /// DeleteThing. Deleting a thing that does not exist succeeds, as in AWS. A thing with
    /// principals attached cannot be deleted (`InvalidRequest`, as AWS); its group memberships
    /// go with it.
    pub fn delete_thing(
        &self,
        name: &str,
        expected_version: Option<i64>,
    ) -> Result<(), RegistryError> {
        validate_name("thing", name)?;
        let _writer = self.store.writer();
        let Some(record) = self.thing(name)? else {
            return Ok(());
        };
        check_version("thing", name, record.version, expected_version)?;
        let prefix = prefix_of(name);
        if !self
            .store
            .scan_suffixes(tables::THING_PRINCIPALS, &prefix)?
            .is_empty()
        {
            return Err(RegistryError::invalid(format!(
                "Cannot delete. Thing {name} is still attached to one or more principals"
            )));
        }
        let mut batch = WriteBatch::new();
        batch.delete(tables::THING, name.as_bytes());
        for group in self.store.scan_suffixes(tables::THING_GROUPS, &prefix)? {
            batch.delete(tables::GROUP_THINGS, pair_key(&group, name).into_bytes());
        }
        batch.delete_prefix(tables::THING_GROUPS, prefix.into_bytes());
        self.store.apply(batch)
    }
}

/// `VersionConflict` unless `expected` is absent or equal to `current`.
pub(crate) fn check_version(
    kind: &str,
    name: &str,
    current: i64,
    expected: Option<i64>,
) -> Result<(), RegistryError> {
    match expected {
        Some(expected) if expected != current => Err(RegistryError::VersionConflict(format!(
            "The version for {kind} {name} is {current}, not the expected version {expected}"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::records::MAX_ATTRIBUTES;
    use crate::registry::test_support;
    use crate::registry::thing_types::ThingTypeProperties;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn registry() -> (tempfile::TempDir, Registry) {
        let (dir, store) = test_support::store();
        (dir, Registry::new(store))
    }

    #[test]
    fn create_is_idempotent_for_the_same_configuration_only() {
        let (_dir, registry) = registry();
        let new = NewThing {
            thing_type_name: None,
            attributes: attrs(&[("site", "lab"), ("empty", "")]),
        };
        let first = registry.create_thing("t1", new.clone()).unwrap();
        assert_eq!(first.version, 1);
        assert_eq!(first.attributes, attrs(&[("site", "lab")]));
        let again = registry.create_thing("t1", new).unwrap();
        assert_eq!(again, first);

        let err = registry
            .create_thing(
                "t1",
                NewThing {
                    attributes: attrs(&[("site", "hq")]),
                    ..NewThing::default()
                },
            )
            .unwrap_err();
        match err {
            RegistryError::AlreadyExists { id, arn, .. } => {
                assert_eq!(id, first.id);
                assert_eq!(arn, "arn:aws:iot:eu-west-1:123456789012:thing/t1");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_thing_type_is_not_found() {
        let (_dir, registry) = registry();
        let err = registry
            .create_thing(
                "t1",
                NewThing {
                    thing_type_name: Some("missing".into()),
                    ..NewThing::default()
                },
            )
            .unwrap_err();
        assert!(matches!(err, RegistryError::NotFound(_)), "{err:?}");
        assert!(registry.thing("t1").unwrap().is_none());
    }

    #[test]
    fn update_merges_replaces_and_checks_versions() {
        let (_dir, registry) = registry();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        registry.store.add_listener(Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        registry
            .create_thing_type("sensor", ThingTypeProperties::default(), vec![])
            .unwrap();
        registry
            .create_thing(
                "t1",
                NewThing {
                    attributes: attrs(&[("a", "1"), ("b", "2")]),
                    ..NewThing::default()
                },
            )
            .unwrap();

        let merged = registry
            .update_thing(
                "t1",
                ThingUpdate {
                    thing_type_name: Some("sensor".into()),
                    attribute_payload: Some(AttributePayload {
                        attributes: attrs(&[("b", ""), ("c", "3")]),
                        merge: true,
                    }),
                    expected_version: Some(1),
                    ..ThingUpdate::default()
                },
            )
            .unwrap();
        assert_eq!(merged.version, 2);
        assert_eq!(merged.attributes, attrs(&[("a", "1"), ("c", "3")]));
        assert_eq!(merged.thing_type_name.as_deref(), Some("sensor"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let err = registry
            .update_thing(
                "t1",
                ThingUpdate {
                    expected_version: Some(1),
                    ..ThingUpdate::default()
                },
            )
            .unwrap_err();
        assert!(matches!(err, RegistryError::VersionConflict(_)), "{err:?}");

        let replaced = registry
            .update_thing(
                "t1",
                ThingUpdate {
                    remove_thing_type: true,
                    attribute_payload: Some(AttributePayload {
                        attributes: attrs(&[("z", "9")]),
                        merge: false,
                    }),
                    ..ThingUpdate::default()
                },
            )
            .unwrap();
        assert_eq!(replaced.version, 3);
        assert_eq!(replaced.attributes, attrs(&[("z", "9")]));
        assert_eq!(replaced.thing_type_name, None);
        assert_eq!(registry.describe_thing("t1").unwrap(), replaced);

        let err = registry
            .update_thing(
                "t1",
                ThingUpdate {
                    remove_thing_type: true,
                    thing_type_name: Some("sensor".into()),
                    ..ThingUpdate::default()
                },
            )
            .unwrap_err();
        assert!(matches!(err, RegistryError::InvalidRequest(_)), "{err:?}");
        assert!(matches!(
            registry.update_thing("nope", ThingUpdate::default()),
            Err(RegistryError::NotFound(_))
        ));
    }

    #[test]
    fn list_filters_and_pages() {
        let (_dir, registry) = registry();
        registry
            .create_thing_type("sensor", ThingTypeProperties::default(), vec![])
            .unwrap();
        for i in 0..5 {
            registry
                .create_thing(
                    &format!("t{i}"),
                    NewThing {
                        thing_type_name: (i % 2 == 0).then(|| "sensor".to_owned()),
                        attributes: attrs(&[("site", if i < 3 { "lab-1" } else { "hq" })]),
                    },
                )
                .unwrap();
        }
        let names = |page: &Page<ThingRecord>| -> Vec<String> {
            page.items.iter().map(|t| t.name.clone()).collect()
        };

        let all = registry
            .list_things(&ThingFilter::default(), &PageRequest::default())
            .unwrap();
        assert_eq!(names(&all), ["t0", "t1", "t2", "t3", "t4"]);

        let typed = registry
            .list_things(
                &ThingFilter {
                    thing_type_name: Some("sensor".into()),
                    ..ThingFilter::default()
                },
                &PageRequest::default(),
            )
            .unwrap();
        assert_eq!(names(&typed), ["t0", "t2", "t4"]);

        let by_attr = ThingFilter {
            attribute_name: Some("site".into()),
            attribute_value: Some("hq".into()),
            ..ThingFilter::default()
        };
        let hq = registry
            .list_things(&by_attr, &PageRequest::default())
            .unwrap();
        assert_eq!(names(&hq), ["t3", "t4"]);
        let prefixed = registry
            .list_things(
                &ThingFilter {
                    attribute_value: Some("lab".into()),
                    use_prefix_attribute_value: true,
                    ..by_attr.clone()
                },
                &PageRequest::default(),
            )
            .unwrap();
        assert_eq!(names(&prefixed), ["t0", "t1", "t2"]);

        let first = registry
            .list_things(&ThingFilter::default(), &PageRequest::first(2))
            .unwrap();
        assert_eq!(names(&first), ["t0", "t1"]);
        let second = registry
            .list_things(
                &ThingFilter::default(),
                &PageRequest::after(first.next_token.clone().unwrap(), 2),
            )
            .unwrap();
        assert_eq!(names(&second), ["t2", "t3"]);
        let third = registry
            .list_things(
                &ThingFilter::default(),
                &PageRequest::after(second.next_token.clone().unwrap(), 2),
            )
            .unwrap();
        assert_eq!(names(&third), ["t4"]);
        assert_eq!(third.next_token, None);

        let err = registry
            .list_things(
                &ThingFilter {
                    attribute_name: Some("site".into()),
                    ..ThingFilter::default()
                },
                &PageRequest::default(),
            )
            .unwrap_err();
        assert!(matches!(err, RegistryError::InvalidRequest(_)), "{err:?}");
    }

    #[test]
    fn delete_checks_version_and_is_quiet_about_missing_things() {
        let (_dir, registry) = registry();
        registry.create_thing("t1", NewThing::default()).unwrap();
        let err = registry.delete_thing("t1", Some(7)).unwrap_err();
        assert!(matches!(err, RegistryError::VersionConflict(_)), "{err:?}");
        registry.delete_thing("t1", Some(1)).unwrap();
        assert!(registry.thing("t1").unwrap().is_none());
        registry.delete_thing("t1", None).unwrap();
    }

    #[test]
    fn too_many_or_malformed_attributes_are_rejected() {
        let (_dir, registry) = registry();
        let many: BTreeMap<String, String> = (0..=MAX_ATTRIBUTES)
            .map(|i| (format!("a{i}"), "v".to_owned()))
            .collect();
        let err = registry
            .create_thing(
                "t1",
                NewThing {
                    attributes: many,
                    ..NewThing::default()
                },
            )
            .unwrap_err();
        assert!(matches!(err, RegistryError::InvalidRequest(_)), "{err:?}");
        let err = registry
            .create_thing(
                "t1",
                NewThing {
                    attributes: attrs(&[("k", "white space")]),
                    ..NewThing::default()
                },
            )
            .unwrap_err();
        assert!(matches!(err, RegistryError::InvalidRequest(_)), "{err:?}");
    }
}
