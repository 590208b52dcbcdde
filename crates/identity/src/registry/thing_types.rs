//! Thing types: a name, a description and up to three searchable attribute names that things
//! can be created with; deprecated before they are deleted.

use fleetcore_core::WriteBatch;
use serde::{Deserialize, Serialize};

use super::records::{
    Page, PageRequest, Tag, Timestamp, new_uuid, paginate, put_json, tables,
    validate_attribute_name, validate_description, validate_name, validate_tags,
};
use super::things::ThingRecord;
use super::{Registry, RegistryError};

/// Most searchable attributes a thing type may declare.
const MAX_SEARCHABLE_ATTRIBUTES: usize = 3;
/// ListThingTypes page size when the caller gives none.
const DEFAULT_PAGE_SIZE: i64 = 50;

/// What CreateThingType's `thingTypeProperties` carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThingTypeProperties {
    /// `thingTypeDescription`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `searchableAttributes`: at most three attribute names.
    #[serde(default)]
    pub searchable_attributes: Vec<String>,
}

/// A stored thing type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThingTypeRecord {
    /// The thing type name.
    pub name: String,
    /// `thingTypeId`: a random UUID given at creation.
    pub id: String,
    /// Description and searchable attributes.
    pub properties: ThingTypeProperties,
    /// Whether the type is deprecated (no new things may use it).
    pub deprecated: bool,
    /// When it was deprecated, while it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecation_date: Option<Timestamp>,
    /// When it was created.
    pub creation_date: Timestamp,
    /// Tags given at creation.
    #[serde(default)]
    pub tags: Vec<Tag>,
}

impl Registry {
    /// CreateThingType. A second create of an existing name fails with `AlreadyExists`, whatever
    /// its properties (AWS makes only CreateThing and CreateThingGroup idempotent).
    pub fn create_thing_type(
        &self,
        name: &str,
        properties: ThingTypeProperties,
        tags: Vec<Tag>,
    ) -> Result<ThingTypeRecord, RegistryError> {
        validate_name("thing type", name)?;
        if let Some(description) = &properties.description {
            validate_description(description)?;
        }
        if properties.searchable_attributes.len() > MAX_SEARCHABLE_ATTRIBUTES {
            return Err(RegistryError::invalid(format!(
                "a thing type can have at most {MAX_SEARCHABLE_ATTRIBUTES} searchable attributes"
            )));
        }
        for attribute in &properties.searchable_attributes {
            validate_attribute_name(attribute)?;
        }
        validate_tags(&tags)?;

        let _writer = self.store.writer();
        if let Some(existing) = self
            .store
            .get::<ThingTypeRecord>(tables::THING_TYPE, name)?
        {
            return Err(RegistryError::AlreadyExists {
                message: format!("Thing type {name} already exists"),
                id: existing.id,
                arn: self.thing_type_arn(name),
            });
        }
        let record = ThingTypeRecord {
            name: name.to_owned(),
            id: new_uuid()?,
            properties,
            deprecated: false,
            deprecation_date: None,
            creation_date: Timestamp::now(),
            tags,
        };
        let mut batch = WriteBatch::new();
        put_json(&mut batch, tables::THING_TYPE, name, &record)?;
        self.store.apply(batch)?;
        Ok(record)
    }

    /// DescribeThingType.
    pub fn describe_thing_type(&self, name: &str) -> Result<ThingTypeRecord, RegistryError> {
        self.store
            .get(tables::THING_TYPE, name)?
            .ok_or_else(|| RegistryError::not_found("Thing type", name))
    }

    /// ListThingTypes, by name; `name` keeps only the type of that name.
    pub fn list_thing_types(
        &self,
        name: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<ThingTypeRecord>, RegistryError> {
        let all = self.store.scan::<ThingTypeRecord>(tables::THING_TYPE, "")?;
        let selected = all
            .into_iter()
            .filter(|(key, _)| name.is_none_or(|n| n == key))
            .collect();
        paginate(selected, page, DEFAULT_PAGE_SIZE, true)
    }

    /// DeprecateThingType: with `undo` false, marks the type deprecated (no new things may use
    /// it; a second deprecate keeps the first date); with `undo` true, makes it usable again.
    pub fn deprecate_thing_type(&self, name: &str, undo: bool) -> Result<(), RegistryError> {
        let _writer = self.store.writer();
        let mut record = self.describe_thing_type(name)?;
        match (undo, record.deprecated) {
            (false, false) => {
                record.deprecated = true;
                record.deprecation_date = Some(Timestamp::now());
            }
            (true, true) => {
                record.deprecated = false;
                record.deprecation_date = None;
            }
            _ => return Ok(()),
        }
        let mut batch = WriteBatch::new();
        put_json(&mut batch, tables::THING_TYPE, name, &record)?;
        self.store.apply(batch)
    }

    /// DeleteThingType. Like AWS, the type must be deprecated first and no thing may still use
    /// it (`InvalidRequest` otherwise). AWS also makes the caller wait five minutes after
    /// deprecating, to let its eventually consistent replicas stop handing the type out;
    /// fleetcore's store is consistent, so there is no waiting period.
    pub fn delete_thing_type(&self, name: &str) -> Result<(), RegistryError> {
        let _writer = self.store.writer();
        let record = self.describe_thing_type(name)?;
        if !record.deprecated {
            return Err(RegistryError::invalid(format!(
                "Thing type {name} must be deprecated before it can be deleted"
            )));
        }
        let things = self.store.scan::<ThingRecord>(tables::THING, "")?;
        if let Some((thing, _)) = things
            .iter()
            .find(|(_, t)| t.thing_type_name.as_deref() == Some(name))
        {
            return Err(RegistryError::invalid(format!(
                "Can not delete thing type {name}: things (e.g. {thing}) are still associated with it"
            )));
        }
        let mut batch = WriteBatch::new();
        batch.delete(tables::THING_TYPE, name.as_bytes());
        self.store.apply(batch)
    }

    /// The thing type `name` if it may be given to a thing: it exists and is not deprecated.
    pub(crate) fn usable_thing_type(&self, name: &str) -> Result<ThingTypeRecord, RegistryError> {
        let record = self.describe_thing_type(name)?;
        if record.deprecated {
            return Err(RegistryError::invalid(format!(
                "Can not use deprecated thing type {name} for a thing"
            )));
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::test_support;
    use crate::registry::things::NewThing;

    fn props(description: &str, attrs: &[&str]) -> ThingTypeProperties {
        ThingTypeProperties {
            description: Some(description.to_owned()),
            searchable_attributes: attrs.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    #[test]
    fn create_describe_and_duplicate() {
        let (_dir, store) = test_support::store();
        let registry = Registry::new(store);
        let created = registry
            .create_thing_type("sensor", props("a sensor", &["model", "site"]), vec![])
            .unwrap();
        assert_eq!(created.id.len(), 36);
        let described = registry.describe_thing_type("sensor").unwrap();
        assert_eq!(described, created);
        assert!(!described.deprecated);
        assert_eq!(
            registry.thing_type_arn("sensor"),
            "arn:aws:iot:eu-west-1:123456789012:thingtype/sensor"
        );

        let err = registry
            .create_thing_type("sensor", props("a sensor", &["model", "site"]), vec![])
            .unwrap_err();
        match err {
            RegistryError::AlreadyExists { id, arn, .. } => {
                assert_eq!(id, created.id);
                assert!(arn.ends_with(":thingtype/sensor"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            registry.describe_thing_type("nope"),
            Err(RegistryError::NotFound(_))
        ));
    }

    #[test]
    fn at_most_three_searchable_attributes() {
        let (_dir, store) = test_support::store();
        let registry = Registry::new(store);
        let err = registry
            .create_thing_type("t", props("", &["a", "b", "c", "d"]), vec![])
            .unwrap_err();
        assert!(matches!(err, RegistryError::InvalidRequest(_)), "{err:?}");
        let err = registry
            .create_thing_type("bad name", ThingTypeProperties::default(), vec![])
            .unwrap_err();
        assert!(matches!(err, RegistryError::InvalidRequest(_)), "{err:?}");
    }

    #[test]
    fn deprecate_undeprecate_and_delete_rules() {
        let (_dir, store) = test_support::store();
        let registry = Registry::new(store);
        registry
            .create_thing_type("t", ThingTypeProperties::default(), vec![])
            .unwrap();
        registry
            .create_thing(
                "thing-1",
                NewThing {
                    thing_type_name: Some("t".into()),
                    ..NewThing::default()
                },
            )
            .unwrap();

        // Not deprecated: cannot delete.
        let err = registry.delete_thing_type("t").unwrap_err();
        assert!(matches!(err, RegistryError::InvalidRequest(_)), "{err:?}");

        registry.deprecate_thing_type("t", false).unwrap();
        let first = registry.describe_thing_type("t").unwrap();
        assert!(first.deprecated);
        let date = first.deprecation_date.unwrap();
        registry.deprecate_thing_type("t", false).unwrap();
        assert_eq!(
            registry.describe_thing_type("t").unwrap().deprecation_date,
            Some(date)
        );

        // Deprecated types cannot be given to new things.
        let err = registry
            .create_thing(
                "thing-2",
                NewThing {
                    thing_type_name: Some("t".into()),
                    ..NewThing::default()
                },
            )
            .unwrap_err();
        assert!(matches!(err, RegistryError::InvalidRequest(_)), "{err:?}");

        // Still used by thing-1.
        let err = registry.delete_thing_type("t").unwrap_err();
        assert!(matches!(err, RegistryError::InvalidRequest(_)), "{err:?}");

        registry.deprecate_thing_type("t", true).unwrap();
        let undone = registry.describe_thing_type("t").unwrap();
        assert!(!undone.deprecated && undone.deprecation_date.is_none());

        registry.delete_thing("thing-1", None).unwrap();
        registry.deprecate_thing_type("t", false).unwrap();
        registry.delete_thing_type("t").unwrap();
        assert!(matches!(
            registry.delete_thing_type("t"),
            Err(RegistryError::NotFound(_))
        ));
        assert!(matches!(
            registry.deprecate_thing_type("t", false),
            Err(RegistryError::NotFound(_))
        ));
    }

    #[test]
    fn list_filters_by_name_and_pages() {
        let (_dir, store) = test_support::store();
        let registry = Registry::new(store);
        for name in ["a", "b", "c"] {
            registry
                .create_thing_type(name, ThingTypeProperties::default(), vec![])
                .unwrap();
        }
        let page = registry
            .list_thing_types(None, &PageRequest::first(2))
            .unwrap();
        let names: Vec<_> = page.items.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let rest = registry
            .list_thing_types(None, &PageRequest::after(page.next_token.unwrap(), 2))
            .unwrap();
        assert_eq!(rest.items.len(), 1);
        assert_eq!(rest.next_token, None);
        let only = registry
            .list_thing_types(Some("b"), &PageRequest::default())
            .unwrap();
        assert_eq!(only.items.len(), 1);
        assert_eq!(only.items[0].name, "b");
    }
}
