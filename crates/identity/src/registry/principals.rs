//! Thing-principal attachments: which certificates a thing may connect with. Both directions
//! are stored so that "principals of a thing" and "things of a principal" (the broker's
//! question at connect time) are each one prefix scan.

use fleetcore_core::WriteBatch;
use serde::{Deserialize, Serialize};

use super::records::{
    Page, PageRequest, Timestamp, paginate, pair_key, prefix_of, put_json, tables,
};
use super::{Registry, RegistryError};

/// Principal lists page size when the caller gives none.
const DEFAULT_PAGE_SIZE: i64 = 50;

/// How a principal is attached to a thing (`thingPrincipalType`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ThingPrincipalType {
    /// The principal is attached to this thing only.
    #[serde(rename = "EXCLUSIVE_THING")]
    Exclusive,
    /// The principal may be attached to other things too (the default).
    #[default]
    #[serde(rename = "NON_EXCLUSIVE_THING")]
    NonExclusive,
}

impl ThingPrincipalType {
    /// The AWS name: `EXCLUSIVE_THING` or `NON_EXCLUSIVE_THING`.
    pub fn as_str(self) -> &'static str {
        match self {
            ThingPrincipalType::Exclusive => "EXCLUSIVE_THING",
            ThingPrincipalType::NonExclusive => "NON_EXCLUSIVE_THING",
        }
    }

    /// Parses the AWS name.
    pub fn parse(text: &str) -> Result<ThingPrincipalType, RegistryError> {
        match text {
            "EXCLUSIVE_THING" => Ok(ThingPrincipalType::Exclusive),
            "NON_EXCLUSIVE_THING" => Ok(ThingPrincipalType::NonExclusive),
            other => Err(RegistryError::invalid(format!(
                "thingPrincipalType must be EXCLUSIVE_THING or NON_EXCLUSIVE_THING, not {other:?}"
            ))),
        }
    }
}

/// What is stored per attachment, under both keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Attachment {
    principal_type: ThingPrincipalType,
    attached_at: Timestamp,
}

/// A principal of a thing (ListThingPrincipals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThingPrincipal {
    /// The certificate ARN.
    pub principal: String,
    /// The certificate id.
    pub certificate_id: String,
    /// How it is attached.
    pub principal_type: ThingPrincipalType,
}

/// A thing of a principal (ListPrincipalThings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalThing {
    /// The thing name.
    pub thing_name: String,
    /// How the principal is attached to it.
    pub principal_type: ThingPrincipalType,
}

impl Registry {
    /// The certificate id a principal names. Principals are certificate ARNs of this account
    /// (`arn:aws:iot:{region}:{account}:cert/{id}`; the region is not compared, since clients
    /// may sign for any region); other principal kinds (Cognito identities) are not supported.
    pub fn certificate_id_of_principal(&self, principal: &str) -> Result<String, RegistryError> {
        let unsupported = || {
            RegistryError::invalid(format!(
                "principal {principal:?} is not a certificate ARN (arn:aws:iot:<region>:<account>:cert/<id>)"
            ))
        };
        let arn = fleetcore_core::Arn::parse(principal).map_err(|_| unsupported())?;
        let id = match arn.resource_id() {
            Some(id) if arn.service == "iot" && arn.resource_type() == "cert" => id,
            _ => return Err(unsupported()),
        };
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(unsupported());
        }
        if arn.account_id != self.store.account().account_id {
            return Err(RegistryError::NotFound(format!(
                "certificate {principal} does not exist in account {}",
                self.store.account().account_id
            )));
        }
        Ok(id.to_ascii_lowercase())
    }

    /// The id of an existing certificate named by `principal`, else `NotFound`.
    fn existing_certificate(&self, principal: &str) -> Result<String, RegistryError> {
        let id = self.certificate_id_of_principal(principal)?;
        if !self.store.contains(tables::CERT, &id)? {
            return Err(RegistryError::NotFound(format!(
                "The certificate given in the principal does not exist: {principal}"
            )));
        }
        Ok(id)
    }

    /// `arn:aws:iot:{region}:{account}:cert/{id}`.
    pub fn certificate_arn(&self, certificate_id: &str) -> String {
        self.store.arn(&format!("cert/{certificate_id}"))
    }

    /// AttachThingPrincipal. The thing and the certificate must exist (`NotFound`). A principal
    /// attached exclusively to one thing cannot be attached to another, and cannot be attached
    /// exclusively while attached elsewhere (`InvalidRequest`). Attaching again is a no-op
    /// (or changes the attachment type).
    pub fn attach_thing_principal(
        &self,
        thing: &str,
        principal: &str,
        principal_type: ThingPrincipalType,
    ) -> Result<(), RegistryError> {
        {
            let _writer = self.store.writer();
            self.describe_thing(thing)?;
            let id = self.existing_certificate(principal)?;
            let current: Vec<(String, Attachment)> =
                self.store.scan(tables::PRINCIPAL_THINGS, &prefix_of(&id))?;
            let prefix_len = id.len() + 1;
            let mut same = None;
            for (key, attachment) in &current {
                let other = key.get(prefix_len..).unwrap_or_default();
                if other == thing {
                    same = Some(attachment.principal_type);
                    continue;
                }
                if attachment.principal_type == ThingPrincipalType::Exclusive
                    || principal_type == ThingPrincipalType::Exclusive
                {
                    return Err(RegistryError::invalid(format!(
                        "Principal {principal} is already attached to thing {other}; an \
                         exclusive attachment allows only one thing"
                    )));
                }
            }
            if same == Some(principal_type) {
                return Ok(());
            }
            let attachment = Attachment {
                principal_type,
                attached_at: Timestamp::now(),
            };
            let mut batch = WriteBatch::new();
            put_json(
                &mut batch,
                tables::THING_PRINCIPALS,
                &pair_key(thing, &id),
                &attachment,
            )?;
            put_json(
                &mut batch,
                tables::PRINCIPAL_THINGS,
                &pair_key(&id, thing),
                &attachment,
            )?;
            self.store.apply(batch)?;
        }
        self.store.notify();
        Ok(())
    }

    /// DetachThingPrincipal. The thing must exist (`NotFound`); detaching a principal that is
    /// not attached is a no-op.
    pub fn detach_thing_principal(
        &self,
        thing: &str,
        principal: &str,
    ) -> Result<(), RegistryError> {
        {
            let _writer = self.store.writer();
            self.describe_thing(thing)?;
            let id = self.certificate_id_of_principal(principal)?;
            let key = pair_key(thing, &id);
            if !self.store.contains(tables::THING_PRINCIPALS, &key)? {
                return Ok(());
            }
            let mut batch = WriteBatch::new();
            batch.delete(tables::THING_PRINCIPALS, key.into_bytes());
            batch.delete(tables::PRINCIPAL_THINGS, pair_key(&id, thing).into_bytes());
            self.store.apply(batch)?;
        }
        self.store.notify();
        Ok(())
    }

    /// ListThingPrincipals(V2): the certificates attached to `thing`, by id, optionally only
    /// those of one attachment type.
    pub fn list_thing_principals(
        &self,
        thing: &str,
        principal_type: Option<ThingPrincipalType>,
        page: &PageRequest,
    ) -> Result<Page<ThingPrincipal>, RegistryError> {
        self.describe_thing(thing)?;
        let prefix = prefix_of(thing);
        let attachments: Vec<(String, Attachment)> =
            self.store.scan(tables::THING_PRINCIPALS, &prefix)?;
        let items = attachments
            .into_iter()
            .filter(|(_, a)| principal_type.is_none_or(|t| t == a.principal_type))
            .map(|(key, a)| {
                let id = key.get(prefix.len()..).unwrap_or_default().to_owned();
                let item = ThingPrincipal {
                    principal: self.certificate_arn(&id),
                    certificate_id: id,
                    principal_type: a.principal_type,
                };
                (key, item)
            })
            .collect();
        paginate(items, page, DEFAULT_PAGE_SIZE, true)
    }

    /// ListPrincipalThings(V2): the things `principal` is attached to, by name. The certificate
    /// must exist (`NotFound`).
    pub fn list_principal_things(
        &self,
        principal: &str,
        principal_type: Option<ThingPrincipalType>,
        page: &PageRequest,
    ) -> Result<Page<PrincipalThing>, RegistryError> {
        let id = self.existing_certificate(principal)?;
        let prefix = prefix_of(&id);
        let attachments: Vec<(String, Attachment)> =
            self.store.scan(tables::PRINCIPAL_THINGS, &prefix)?;
        let items = attachments
            .into_iter()
            .filter(|(_, a)| principal_type.is_none_or(|t| t == a.principal_type))
            .map(|(key, a)| {
                let item = PrincipalThing {
                    thing_name: key.get(prefix.len()..).unwrap_or_default().to_owned(),
                    principal_type: a.principal_type,
                };
                (key, item)
            })
            .collect();
        paginate(items, page, DEFAULT_PAGE_SIZE, true)
    }

    /// Every thing certificate `certificate_id` is attached to, by name. For the broker.
    pub fn things_for_certificate(
        &self,
        certificate_id: &str,
    ) -> Result<Vec<String>, RegistryError> {
        self.store
            .scan_suffixes(tables::PRINCIPAL_THINGS, &prefix_of(certificate_id))
    }

    /// Every thing `principal` (a certificate ARN) is attached to, by name; empty for a
    /// principal that is not a certificate ARN of this account. For the broker.
    pub fn things_for_principal(&self, principal: &str) -> Result<Vec<String>, RegistryError> {
        match self.certificate_id_of_principal(principal) {
            Ok(id) => self.things_for_certificate(&id),
            Err(RegistryError::InvalidRequest(_) | RegistryError::NotFound(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::test_support;
    use crate::registry::things::NewThing;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A registry with things t1, t2 and two (fake) certificate records.
    fn setup() -> (tempfile::TempDir, Registry, String, String) {
        let (dir, store) = test_support::store();
        let registry = Registry::new(store);
        registry.create_thing("t1", NewThing::default()).unwrap();
        registry.create_thing("t2", NewThing::default()).unwrap();
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let mut batch = WriteBatch::new();
        batch.put(tables::CERT, a.as_bytes(), b"{}".to_vec());
        batch.put(tables::CERT, b.as_bytes(), b"{}".to_vec());
        registry.store.apply(batch).unwrap();
        let (arn_a, arn_b) = (registry.certificate_arn(&a), registry.certificate_arn(&b));
        (dir, registry, arn_a, arn_b)
    }

    #[test]
    fn attach_list_both_ways_and_detach() {
        let (_dir, registry, a, b) = setup();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        registry.store.add_listener(Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        let nx = ThingPrincipalType::NonExclusive;
        registry.attach_thing_principal("t1", &a, nx).unwrap();
        registry.attach_thing_principal("t1", &a, nx).unwrap();
        registry.attach_thing_principal("t1", &b, nx).unwrap();
        registry.attach_thing_principal("t2", &a, nx).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let principals: Vec<String> = registry
            .list_thing_principals("t1", None, &PageRequest::default())
            .unwrap()
            .items
            .into_iter()
            .map(|p| p.principal)
            .collect();
        assert_eq!(principals, [a.clone(), b.clone()]);
        let things: Vec<String> = registry
            .list_principal_things(&a, None, &PageRequest::default())
            .unwrap()
            .items
            .into_iter()
            .map(|t| t.thing_name)
            .collect();
        assert_eq!(things, ["t1", "t2"]);
        assert_eq!(registry.things_for_principal(&a).unwrap(), ["t1", "t2"]);
        assert!(
            registry
                .things_for_principal("not an arn")
                .unwrap()
                .is_empty()
        );

        // A thing with principals cannot be deleted.
        let err = registry.delete_thing("t2", None).unwrap_err();
        assert!(matches!(err, RegistryError::InvalidRequest(_)), "{err:?}");

        registry.detach_thing_principal("t2", &a).unwrap();
        registry.detach_thing_principal("t2", &a).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(registry.things_for_principal(&a).unwrap(), ["t1"]);
        registry.delete_thing("t2", None).unwrap();
    }

    #[test]
    fn unknown_things_and_certificates_are_not_found() {
        let (_dir, registry, a, _) = setup();
        let nx = ThingPrincipalType::NonExclusive;
        let missing = registry.certificate_arn(&"c".repeat(64));
        for (thing, principal) in [("nope", a.as_str()), ("t1", missing.as_str())] {
            let err = registry
                .attach_thing_principal(thing, principal, nx)
                .unwrap_err();
            assert!(matches!(err, RegistryError::NotFound(_)), "{err:?}");
        }
        let err = registry
            .attach_thing_principal("t1", "us-east-1:cognito-id", nx)
            .unwrap_err();
        assert!(matches!(err, RegistryError::InvalidRequest(_)), "{err:?}");
        let err = registry
            .list_principal_things(&missing, None, &PageRequest::default())
            .unwrap_err();
        assert!(matches!(err, RegistryError::NotFound(_)), "{err:?}");
        let err = registry
            .list_thing_principals("nope", None, &PageRequest::default())
            .unwrap_err();
        assert!(matches!(err, RegistryError::NotFound(_)), "{err:?}");
        let other_account = a.replace("123456789012", "999999999999");
        let err = registry
            .attach_thing_principal("t1", &other_account, nx)
            .unwrap_err();
        assert!(matches!(err, RegistryError::NotFound(_)), "{err:?}");
        // Another region of the same account names the same certificate.
        let other_region = a.replace("eu-west-1", "us-east-1");
        registry
            .attach_thing_principal("t1", &other_region, nx)
            .unwrap();
    }

    #[test]
    fn exclusive_attachments_allow_one_thing() {
        let (_dir, registry, a, b) = setup();
        let ex = ThingPrincipalType::Exclusive;
        let nx = ThingPrincipalType::NonExclusive;
        registry.attach_thing_principal("t1", &a, ex).unwrap();
        let err = registry.attach_thing_principal("t2", &a, nx).unwrap_err();
        assert!(matches!(err, RegistryError::InvalidRequest(_)), "{err:?}");
        registry.attach_thing_principal("t1", &b, nx).unwrap();
        registry.attach_thing_principal("t2", &b, nx).unwrap();
        let err = registry.attach_thing_principal("t1", &b, ex).unwrap_err();
        assert!(matches!(err, RegistryError::InvalidRequest(_)), "{err:?}");
        let exclusive: Vec<String> = registry
            .list_thing_principals("t1", Some(ex), &PageRequest::default())
            .unwrap()
            .items
            .into_iter()
            .map(|p| p.certificate_id)
            .collect();
        assert_eq!(exclusive, ["a".repeat(64)]);
    }
}
