//! How registry and certificate records are kept: JSON values in named tables of the shared
//! [`KvStore`], one writer at a time, change listeners called after each committed mutation that
//! can affect a live connection; plus the timestamps, ids, pagination and name rules they share.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};

use fleetcore_core::{AccountContext, KvStore, WriteBatch};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::RegistryError;
use crate::service::AttachmentCheck;

/// Table names. Keys are UTF-8; composite keys join their parts with `/`, which no thing, thing
/// type or group name and no certificate id can contain, so a prefix scan of `a/` never matches
/// `ab/...`.
pub(crate) mod tables {
    /// Thing name → `ThingRecord`.
    pub const THING: &str = "iot_thing";
    /// Thing type name → `ThingTypeRecord`.
    pub const THING_TYPE: &str = "iot_thing_type";
    /// Thing group name → `ThingGroupRecord`.
    pub const THING_GROUP: &str = "iot_thing_group";
    /// `group/thing` → empty: the members of a group.
    pub const GROUP_THINGS: &str = "iot_thing_group_things";
    /// `thing/group` → empty: the groups of a thing (the same facts, the other way round).
    pub const THING_GROUPS: &str = "iot_thing_thing_groups";
    /// `thing/certificate id` → `PrincipalAttachment`.
    pub const THING_PRINCIPALS: &str = "iot_thing_principals";
    /// `certificate id/thing` → `PrincipalAttachment` (the same facts, the other way round).
    pub const PRINCIPAL_THINGS: &str = "iot_principal_things";
    /// Certificate id → `CertificateRecord`.
    pub const CERT: &str = "iot_cert";
    /// CA certificate id → `CaCertificateRecord`.
    pub const CA_CERT: &str = "iot_ca_cert";
    /// Single values such as the CA registration code.
    pub const SETTINGS: &str = "iot_registry_settings";
}

/// Called after a committed change that can affect live connections.
pub type ChangeListener = Arc<dyn Fn() + Send + Sync>;

/// A point in time with millisecond precision, as AWS reports creation and modification dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Timestamp {
        Timestamp::from_datetime(OffsetDateTime::now_utc())
    }

    /// The timestamp of `at`, truncated to milliseconds.
    pub fn from_datetime(at: OffsetDateTime) -> Timestamp {
        let millis = at.unix_timestamp_nanos() / 1_000_000;
        Timestamp(i64::try_from(millis).unwrap_or(if millis < 0 { i64::MIN } else { i64::MAX }))
    }

    /// Milliseconds since the Unix epoch.
    pub fn epoch_millis(self) -> i64 {
        self.0
    }

    /// Seconds since the Unix epoch, with the milliseconds as fraction (the rest-json form).
    pub fn epoch_seconds(self) -> f64 {
        self.0 as f64 / 1000.0
    }
}

/// Which part of a listing to return: at most `max_results` items after `next_token`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// Page size; the operation's default when `None`. Must be within 1..=250.
    pub max_results: Option<i64>,
    /// The token a previous page returned, or `None` for the first page.
    pub next_token: Option<String>,
}

impl PageRequest {
    /// The first page of at most `max_results` items.
    pub fn first(max_results: i64) -> PageRequest {
        PageRequest {
            max_results: Some(max_results),
            next_token: None,
        }
    }

    /// The page after `token`, of at most `max_results` items.
    pub fn after(token: impl Into<String>, max_results: i64) -> PageRequest {
        PageRequest {
            max_results: Some(max_results),
            next_token: Some(token.into()),
        }
    }
}

/// One page of a listing and the token of the next, if there is more.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items, in listing order.
    pub items: Vec<T>,
    /// Pass back as [`PageRequest::next_token`] for the next page; `None` on the last page.
    pub next_token: Option<String>,
}

impl<T> Page<T> {
    /// Applies `f` to every item.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_token: self.next_token,
        }
    }
}

/// The largest page AWS allows.
pub(crate) const MAX_PAGE_SIZE: i64 = 250;

/// Cuts one page out of `items`, which are `(sort key, item)` pairs already in listing order
/// (ascending by key, or descending when `ascending` is false). The token is the hex of the
/// last returned key, so a page boundary survives items being added or removed in between.
pub(crate) fn paginate<T>(
    items: Vec<(String, T)>,
    request: &PageRequest,
    default_size: i64,
    ascending: bool,
) -> Result<Page<T>, RegistryError> {
    let size = request.max_results.unwrap_or(default_size);
    if !(1..=MAX_PAGE_SIZE).contains(&size) {
        return Err(RegistryError::invalid(format!(
            "page size {size} is outside 1..={MAX_PAGE_SIZE}"
        )));
    }
    let after = match request.next_token.as_deref().filter(|t| !t.is_empty()) {
        Some(token) => Some(decode_token(token)?),
        None => None,
    };
    let mut rest = items.into_iter().filter(|(key, _)| match &after {
        None => true,
        Some(after) if ascending => key.as_str() > after.as_str(),
        Some(after) => key.as_str() < after.as_str(),
    });
    let mut page = Vec::new();
    let mut last_key = None;
    for (key, item) in rest.by_ref() {
        page.push(item);
        last_key = Some(key);
        if page.len() as i64 == size {
            break;
        }
    }
    let next_token = match (rest.next(), last_key) {
        (Some(_), Some(last)) => Some(encode_token(&last)),
        _ => None,
    };
    Ok(Page {
        items: page,
        next_token,
    })
}

fn encode_token(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_token(token: &str) -> Result<String, RegistryError> {
    let invalid = || RegistryError::invalid("the pagination token is not valid");
    if !token.len().is_multiple_of(2) || token.len() > 2048 {
        return Err(invalid());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(invalid)?;
    String::from_utf8(bytes).map_err(|_| invalid())
}

/// Random bytes from the system generator.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], RegistryError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| RegistryError::Internal("system random number generator failed".into()))?;
    Ok(bytes)
}

/// A random (version 4) UUID in its usual text form, as AWS uses for thing and group ids.
pub(crate) fn new_uuid() -> Result<String, RegistryError> {
    let mut b = random_bytes::<16>()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// Lowercase hex of random bytes.
pub(crate) fn random_hex<const N: usize>() -> Result<String, RegistryError> {
    Ok(random_bytes::<N>()?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Longest name of a thing, thing type or thing group.
const MAX_NAME_LEN: usize = 128;
/// Most attributes one thing or group may carry.
pub(crate) const MAX_ATTRIBUTES: usize = 50;
const MAX_ATTRIBUTE_NAME_LEN: usize = 128;
const MAX_ATTRIBUTE_VALUE_LEN: usize = 800;
const MAX_DESCRIPTION_LEN: usize = 2028;

/// Checks a thing, thing type or thing group name: 1 to 128 of `[a-zA-Z0-9:_-]`.
pub(crate) fn validate_name(kind: &str, name: &str) -> Result<(), RegistryError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::invalid(format!(
            "{kind} name {name:?} must be 1 to {MAX_NAME_LEN} characters of [a-zA-Z0-9:_-]"
        )))
    }
}

/// Checks an attribute name: 1 to 128 of `[a-zA-Z0-9_.,@/:#-]`.
pub(crate) fn validate_attribute_name(name: &str) -> Result<(), RegistryError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_ATTRIBUTE_NAME_LEN
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'_' | b'.' | b',' | b'@' | b'/' | b':' | b'#' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(RegistryError::invalid(format!(
            "attribute name {name:?} must be 1 to {MAX_ATTRIBUTE_NAME_LEN} characters of [a-zA-Z0-9_.,@/:#-]"
        )))
    }
}

/// Checks an attribute value: up to 800 of `[a-zA-Z0-9_.,@/:#=\[\]-]`.
pub(crate) fn validate_attribute_value(name: &str, value: &str) -> Result<(), RegistryError> {
    let ok = value.len() <= MAX_ATTRIBUTE_VALUE_LEN
        && value.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'_' | b'.' | b',' | b'@' | b'/' | b':' | b'#' | b'=' | b'[' | b']' | b'-'
                )
        });
    if ok {
        Ok(())
    } else {
        Err(RegistryError::invalid(format!(
            "value of attribute {name:?} must be up to {MAX_ATTRIBUTE_VALUE_LEN} characters of [a-zA-Z0-9_.,@/:#=[]-]"
        )))
    }
}

/// Checks an attribute map (names, values, count).
pub(crate) fn validate_attributes(
    attributes: &BTreeMap<String, String>,
) -> Result<(), RegistryError> {
    for (name, value) in attributes {
        validate_attribute_name(name)?;
        validate_attribute_value(name, value)?;
    }
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(RegistryError::invalid(format!(
            "at most {MAX_ATTRIBUTES} attributes are allowed, got {}",
            attributes.len()
        )));
    }
    Ok(())
}

/// Checks a description: up to 2028 characters, no control characters.
pub(crate) fn validate_description(description: &str) -> Result<(), RegistryError> {
    if description.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(RegistryError::invalid(format!(
            "description is longer than {MAX_DESCRIPTION_LEN} characters"
        )));
    }
    if description.chars().any(char::is_control) {
        return Err(RegistryError::invalid(
            "description must not contain control characters",
        ));
    }
    Ok(())
}

/// A resource tag, accepted on create and kept with the resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    /// The tag key.
    pub key: String,
    /// The tag value, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Checks tags: 1 to 128 character keys, values up to 256 characters, no duplicate keys.
pub(crate) fn validate_tags(tags: &[Tag]) -> Result<(), RegistryError> {
    let mut seen = std::collections::BTreeSet::new();
    for tag in tags {
        if tag.key.is_empty() || tag.key.chars().count() > 128 {
            return Err(RegistryError::invalid(
                "tag keys must be 1 to 128 characters",
            ));
        }
        if tag
            .value
            .as_deref()
            .is_some_and(|v| v.chars().count() > 256)
        {
            return Err(RegistryError::invalid(
                "tag values must be at most 256 characters",
            ));
        }
        if !seen.insert(tag.key.as_str()) {
            return Err(RegistryError::invalid(format!(
                "duplicate tag key {:?}",
                tag.key
            )));
        }
    }
    Ok(())
}

/// The store shared by the registry and the certificates: typed access to the tables, the one
/// writer lock that makes read-check-write sequences atomic (the store itself has no
/// compare-and-set), the change listeners and the policy attachment check.
pub(crate) struct RecordStore {
    kv: Arc<dyn KvStore>,
    account: AccountContext,
    write: Mutex<()>,
    listeners: RwLock<Vec<ChangeListener>>,
    attachments: OnceLock<Arc<dyn AttachmentCheck>>,
}

impl RecordStore {
    pub(crate) fn new(kv: Arc<dyn KvStore>, account: AccountContext) -> RecordStore {
        RecordStore {
            kv,
            account,
            write: Mutex::new(()),
            listeners: RwLock::new(Vec::new()),
            attachments: OnceLock::new(),
        }
    }

    pub(crate) fn account(&self) -> &AccountContext {
        &self.account
    }

    /// The ARN of an IoT resource of this account, e.g. `arn("thing/t1")`.
    pub(crate) fn arn(&self, resource: &str) -> String {
        self.account.iot_arn(resource).to_string()
    }

    /// Serialises writers. Held across the reads that decide a write and the write itself.
    pub(crate) fn writer(&self) -> MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn get<T: DeserializeOwned>(
        &self,
        table: &'static str,
        key: &str,
    ) -> Result<Option<T>, RegistryError> {
        match self.kv.get(table, key.as_bytes())? {
            Some(bytes) => Ok(Some(decode(table, key, &bytes)?)),
            None => Ok(None),
        }
    }

    pub(crate) fn contains(&self, table: &'static str, key: &str) -> Result<bool, RegistryError> {
        Ok(self.kv.get(table, key.as_bytes())?.is_some())
    }

    /// How many keys of `table` exist (no value is decoded).
    pub(crate) fn count(&self, table: &'static str) -> Result<usize, RegistryError> {
        Ok(self.kv.scan_prefix(table, b"")?.len())
    }

    /// Every `(key, value)` whose key starts with `prefix`, in key order.
    pub(crate) fn scan<T: DeserializeOwned>(
        &self,
        table: &'static str,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, RegistryError> {
        self.kv
            .scan_prefix(table, prefix.as_bytes())?
            .into_iter()
            .map(|(key, value)| {
                let key = key_text(table, key)?;
                let value = decode(table, &key, &value)?;
                Ok((key, value))
            })
            .collect()
    }

    /// The keys starting with `prefix`, with the prefix removed, in key order.
    pub(crate) fn scan_suffixes(
        &self,
        table: &'static str,
        prefix: &str,
    ) -> Result<Vec<String>, RegistryError> {
        self.kv
            .scan_prefix(table, prefix.as_bytes())?
            .into_iter()
            .map(|(key, _)| {
                let key = key_text(table, key)?;
                Ok(key.get(prefix.len()..).unwrap_or_default().to_owned())
            })
            .collect()
    }

    pub(crate) fn apply(&self, batch: WriteBatch) -> Result<(), RegistryError> {
        Ok(self.kv.apply(batch)?)
    }

    pub(crate) fn add_listener(&self, listener: ChangeListener) {
        self.listeners
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(listener);
    }

    /// Calls every change listener. Call after the write committed and the writer lock is released.
    pub(crate) fn notify(&self) {
        let listeners = self
            .listeners
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for listener in listeners {
            listener();
        }
    }

    /// Installs the policy attachment check; false if one was installed already.
    pub(crate) fn set_attachment_check(&self, check: Arc<dyn AttachmentCheck>) -> bool {
        self.attachments.set(check).is_ok()
    }

    pub(crate) fn attachment_check(&self) -> Option<&Arc<dyn AttachmentCheck>> {
        self.attachments.get()
    }
}

/// Adds a JSON-encoded put of `value` to `batch`.
pub(crate) fn put_json<T: Serialize>(
    batch: &mut WriteBatch,
    table: &'static str,
    key: &str,
    value: &T,
) -> Result<(), RegistryError> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| RegistryError::Internal(format!("encoding {table} record {key}: {e}")))?;
    batch.put(table, key.as_bytes(), bytes);
    Ok(())
}

fn decode<T: DeserializeOwned>(
    table: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<T, RegistryError> {
    serde_json::from_slice(bytes).map_err(|e| {
        RegistryError::Internal(format!("stored {table} record {key:?} is unreadable: {e}"))
    })
}

fn key_text(table: &'static str, key: Vec<u8>) -> Result<String, RegistryError> {
    String::from_utf8(key)
        .map_err(|_| RegistryError::Internal(format!("{table} holds a key that is not UTF-8")))
}

/// `a/b`: a composite key.
pub(crate) fn pair_key(a: &str, b: &str) -> String {
    format!("{a}/{b}")
}

/// `a/`: the prefix of every composite key starting with `a`.
pub(crate) fn prefix_of(a: &str) -> String {
    format!("{a}/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(keys: &[&str]) -> Vec<(String, String)> {
        keys.iter()
            .map(|k| ((*k).to_owned(), (*k).to_owned()))
            .collect()
    }

    #[test]
    fn pages_walk_every_item_once_in_order() {
        let all: Vec<String> = (0..7).map(|i| format!("k{i}")).collect();
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        for ascending in [true, false] {
            let mut items = keyed(&refs);
            if !ascending {
                items.reverse();
            }
            let mut seen = Vec::new();
            let mut request = PageRequest::first(3);
            loop {
                let page = paginate(items.clone(), &request, 50, ascending).unwrap();
                assert!(page.items.len() <= 3);
                seen.extend(page.items);
                match page.next_token {
                    Some(t) => request = PageRequest::after(t, 3),
                    None => break,
                }
            }
            let mut expected = all.clone();
            if !ascending {
                expected.reverse();
            }
            assert_eq!(seen, expected);
        }
    }

    #[test]
    fn an_exact_last_page_has_no_token_and_removed_items_do_not_break_paging() {
        let page = paginate(keyed(&["a", "b"]), &PageRequest::first(2), 50, true).unwrap();
        assert_eq!(page.next_token, None);
        let page = paginate(keyed(&["a", "b", "c"]), &PageRequest::first(1), 50, true).unwrap();
        let token = page.next_token.unwrap();
        // "a" (the boundary) is deleted before the next page is asked for.
        let page = paginate(keyed(&["b", "c"]), &PageRequest::after(token, 5), 50, true).unwrap();
        assert_eq!(page.items, ["b", "c"]);
    }

    #[test]
    fn page_sizes_and_tokens_are_validated() {
        for size in [0, -1, 251] {
            let err = paginate(keyed(&["a"]), &PageRequest::first(size), 50, true).unwrap_err();
            assert!(matches!(err, RegistryError::InvalidRequest(_)), "{err:?}");
        }
        for token in ["zz", "abc", "ff"] {
            let err = paginate(keyed(&["a"]), &PageRequest::after(token, 5), 50, true).unwrap_err();
            assert!(
                matches!(err, RegistryError::InvalidRequest(_)),
                "{token}: {err:?}"
            );
        }
        let page = paginate(keyed(&["a"]), &PageRequest::default(), 50, true).unwrap();
        assert_eq!(page.items, ["a"]);
    }

    #[test]
    fn uuids_look_like_uuids() {
        let id = new_uuid().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert_ne!(id, new_uuid().unwrap());
    }

    #[test]
    fn names_and_attributes_follow_the_aws_patterns() {
        validate_name("thing", "a:b_c-1").unwrap();
        for bad in ["", "a b", "a/b", &"x".repeat(129)] {
            assert!(validate_name("thing", bad).is_err(), "{bad}");
        }
        let mut attrs = BTreeMap::from([("k.1@x/y:#".to_owned(), "v=[1],a".to_owned())]);
        validate_attributes(&attrs).unwrap();
        attrs.insert("bad name".into(), "v".into());
        assert!(validate_attributes(&attrs).is_err());
        let attrs = BTreeMap::from([("k".to_owned(), "no spaces".to_owned())]);
        assert!(validate_attributes(&attrs).is_err());
    }
}
