//! Topic rule destinations (AWS `CreateTopicRuleDestination` and friends), kept durably in the
//! shared [`KvStore`] (table `rules_topic_rule_destination`: ARN -> record as JSON).
//!
//! As on AWS, an HTTP destination is created IN_PROGRESS and a confirmation message is POSTed
//! to its confirmation URL (`{confirmationUrl}?confirmationToken=...`, headers
//! `x-amz-rules-engine-message-type: DestinationConfirmation` and
//! `x-amz-rules-engine-destination-arn`, body `{arn, confirmationToken, enableUrl, messageType}`);
//! whoever controls the endpoint confirms it (ConfirmTopicRuleDestination with the token, or a
//! GET of the enableUrl) and it becomes ENABLED. An `http` action delivers only to a URL that
//! starts with the confirmation URL of an ENABLED destination; otherwise the message fails with
//! that reason (so the error action fires) until one is confirmed or enabled.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use fleetcore_core::{KvStore, StoreError, WriteBatch};
use parking_lot::{Mutex, RwLock};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::actions::HttpsClient;
use crate::actions::https_url;

/// The store table of the destinations (key: ARN; value: [`DestinationRecord`] as JSON).
pub const TABLE: &str = "rules_topic_rule_destination";

/// How often a change is made again on a destination another node changed meanwhile.
const MAX_TRANSITION_ATTEMPTS: usize = 8;

/// Longest confirmation URL (AWS: 2000).
const MAX_URL_LEN: usize = 2000;

/// A destination's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DestinationStatus {
    /// Confirmed and delivering.
    Enabled,
    /// Waiting for confirmation.
    InProgress,
    /// Confirmed, not delivering.
    Disabled,
    /// The confirmation message could not be delivered.
    Error,
}

impl DestinationStatus {
    /// AWS's name.
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationStatus::Enabled => "ENABLED",
            DestinationStatus::InProgress => "IN_PROGRESS",
            DestinationStatus::Disabled => "DISABLED",
            DestinationStatus::Error => "ERROR",
        }
    }
}

/// A stored destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRecord {
    /// `arn:aws:iot:<region>:<account>:ruledestination/http/<uuid>`.
    pub arn: String,
    /// The URL confirmed; action URLs must start with it.
    pub confirmation_url: String,
    /// The state.
    pub status: DestinationStatus,
    /// Why it is in that state, when there is something to say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// Creation time, epoch milliseconds.
    pub created_at_ms: i64,
    /// Last change, epoch milliseconds.
    pub last_updated_at_ms: i64,
    /// The secret the confirmation message carries.
    pub confirmation_token: String,
}

/// Why a destination operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    /// A malformed request.
    #[error("{0}")]
    InvalidRequest(String),
    /// No such destination (or token).
    #[error("{0}")]
    NotFound(String),
    /// A destination for this URL exists.
    #[error("a topic rule destination for {url} already exists: {arn}")]
    AlreadyExists {
        /// The URL.
        url: String,
        /// The existing destination.
        arn: String,
    },
    /// The change is not allowed in the current state.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored record is unreadable.
    #[error("stored topic rule destination {key} is unreadable: {message}")]
    Corrupt {
        /// The key.
        key: String,
        /// What went wrong.
        message: String,
    },
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn random_hex(bytes: usize) -> Result<String, DestinationError> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b)
        .map_err(|e| DestinationError::InvalidRequest(format!("no randomness: {e}")))?;
    Ok(fleetcore_core::sigv4::hex(&b))
}

fn not_found(arn: &str) -> DestinationError {
    DestinationError::NotFound(format!("topic rule destination {arn} does not exist"))
}

fn decode(key: &str, value: &[u8]) -> Result<DestinationRecord, DestinationError> {
    serde_json::from_slice(value).map_err(|e| DestinationError::Corrupt {
        key: key.to_string(),
        message: e.to_string(),
    })
}

/// Destination `arn` as stored.
fn read(store: &dyn KvStore, arn: &str) -> Result<Option<DestinationRecord>, DestinationError> {
    store
        .get(TABLE, arn.as_bytes())?
        .map(|value| decode(arn, &value))
        .transpose()
}

/// Every stored destination, by ARN.
fn load_all(store: &dyn KvStore) -> Result<BTreeMap<String, DestinationRecord>, DestinationError> {
    let mut records = BTreeMap::new();
    for (key, value) in store.scan_prefix(TABLE, b"")? {
        let key = String::from_utf8_lossy(&key).into_owned();
        let record = decode(&key, &value)?;
        records.insert(key, record);
    }
    Ok(records)
}

/// The topic rule destinations.
pub struct TopicRuleDestinations {
    store: Arc<dyn KvStore>,
    records: RwLock<BTreeMap<String, DestinationRecord>>,
    writer: Mutex<()>,
    https: HttpsClient,
}

impl std::fmt::Debug for TopicRuleDestinations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicRuleDestinations")
            .field("destinations", &self.records.read().len())
            .finish()
    }
}

impl TopicRuleDestinations {
    /// Opens the destinations stored in `store`; confirmation messages go out through `https`.
    pub fn open(
        store: Arc<dyn KvStore>,
        https: HttpsClient,
    ) -> Result<TopicRuleDestinations, DestinationError> {
        let records = load_all(store.as_ref())?;
        Ok(TopicRuleDestinations {
            store,
            records: RwLock::new(records),
            writer: Mutex::new(()),
            https,
        })
    }

    /// Reads destination `arn` again from the store (another node changed or deleted it).
    pub fn reload(&self, arn: &str) -> Result<(), DestinationError> {
        match read(self.store.as_ref(), arn)? {
            Some(record) => self.records.write().insert(arn.to_string(), record),
            None => self.records.write().remove(arn),
        };
        Ok(())
    }

    /// Reads every destination again from the store (another node may have changed any).
    pub fn reload_all(&self) -> Result<(), DestinationError> {
        let records = load_all(self.store.as_ref())?;
        *self.records.write() = records;
        Ok(())
    }

    /// The HTTPS client confirmation messages (and the http actions) go out through.
    pub fn https(&self) -> &HttpsClient {
        &self.https
    }

    fn write(&self, record: &DestinationRecord) -> Result<(), DestinationError> {
        let json = serde_json::to_vec(record).map_err(|e| DestinationError::Corrupt {
            key: record.arn.clone(),
            message: e.to_string(),
        })?;
        let mut batch = WriteBatch::new();
        batch.put(TABLE, record.arn.as_bytes(), json);
        self.store.apply(batch)?;
        self.records
            .write()
            .insert(record.arn.clone(), record.clone());
        Ok(())
    }

    /// CreateTopicRuleDestination: stores the destination IN_PROGRESS under `arn_prefix` +
    /// a new id and sends the confirmation message (in the background; a failure to deliver it
    /// turns the destination to ERROR). `enable_url_base` + `/confirmdestination/<token>` is
    /// the enableUrl the message carries.
    pub fn create(
        self: &Arc<Self>,
        arn_prefix: &str,
        confirmation_url: &str,
        enable_url_base: &str,
    ) -> Result<DestinationRecord, DestinationError> {
        if confirmation_url.len() > MAX_URL_LEN {
            return Err(DestinationError::InvalidRequest(format!(
                "confirmationUrl is longer than {MAX_URL_LEN} characters"
            )));
        }
        https_url(confirmation_url).map_err(|e| {
            DestinationError::InvalidRequest(format!(
                "confirmationUrl: {e} (AWS IoT sends only over TLS)"
            ))
        })?;
        let _writer = self.writer.lock();
        if let Some(existing) = self
            .records
            .read()
            .values()
            .find(|r| r.confirmation_url == confirmation_url)
        {
            return Err(DestinationError::AlreadyExists {
                url: confirmation_url.into(),
                arn: existing.arn.clone(),
            });
        }
        let id = random_hex(16)?;
        let now = now_ms();
        let record = DestinationRecord {
            arn: format!("{arn_prefix}{id}"),
            confirmation_url: confirmation_url.into(),
            status: DestinationStatus::InProgress,
            status_reason: None,
            created_at_ms: now,
            last_updated_at_ms: now,
            confirmation_token: random_hex(32)?,
        };
        self.write(&record)?;
        self.send_confirmation(&record, enable_url_base);
        Ok(record)
    }

    /// POSTs the confirmation message of `record` in the background.
    fn send_confirmation(self: &Arc<Self>, record: &DestinationRecord, enable_url_base: &str) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = Arc::clone(self);
        let arn = record.arn.clone();
        let token = record.confirmation_token.clone();
        let enable_url = format!(
            "{}/confirmdestination/{token}",
            enable_url_base.trim_end_matches('/')
        );
        let separator = if record.confirmation_url.contains('?') {
            '&'
        } else {
            '?'
        };
        let url = format!(
            "{}{separator}confirmationToken={token}",
            record.confirmation_url
        );
        runtime.spawn(async move {
            let body = json!({
                "arn": arn,
                "confirmationToken": token,
                "enableUrl": enable_url,
                "messageType": "DestinationConfirmation",
            });
            let mut headers = HeaderMap::new();
            headers.insert(
                HeaderName::from_static("x-amz-rules-engine-message-type"),
                HeaderValue::from_static("DestinationConfirmation"),
            );
            if let Ok(value) = HeaderValue::from_str(&arn) {
                headers.insert(
                    HeaderName::from_static("x-amz-rules-engine-destination-arn"),
                    value,
                );
            }
            let outcome = match https_url(&url) {
                Ok(url) => {
                    this.https
                        .post(url, "application/json", headers, body.to_string().into())
                        .await
                }
                Err(e) => Err(e),
            };
            let reason = match outcome {
                Ok(answer) if answer.status.is_success() => return,
                Ok(answer) => format!("the confirmation URL answered {}", answer.status),
                Err(e) => format!("the confirmation message could not be delivered: {e}"),
            };
            tracing::warn!(%arn, %reason, "topic rule destination confirmation failed");
            let _ = this.transition(&arn, |record| {
                if record.status == DestinationStatus::InProgress {
                    record.status = DestinationStatus::Error;
                    record.status_reason = Some(reason.clone());
                }
                Ok(())
            });
        });
    }

    /// Applies `change` to the destination `arn` and stores it. The change is made to the
    /// stored record and written by compare-and-set over it: when another node sharing the
    /// store changed the destination in between, it is made again on that node's record.
    fn transition(
        &self,
        arn: &str,
        change: impl Fn(&mut DestinationRecord) -> Result<(), DestinationError>,
    ) -> Result<DestinationRecord, DestinationError> {
        let _writer = self.writer.lock();
        for _ in 0..MAX_TRANSITION_ATTEMPTS {
            let stored = self.store.get(TABLE, arn.as_bytes())?;
            let Some(old) = stored else {
                return Err(not_found(arn));
            };
            let mut record = decode(arn, &old)?;
            change(&mut record)?;
            record.last_updated_at_ms = now_ms();
            let json = serde_json::to_vec(&record).map_err(|e| DestinationError::Corrupt {
                key: arn.to_string(),
                message: e.to_string(),
            })?;
            if self
                .store
                .compare_and_set(TABLE, arn.as_bytes(), Some(&old), json)?
            {
                self.records.write().insert(arn.to_string(), record.clone());
                return Ok(record);
            }
        }
        Err(DestinationError::Conflict(format!(
            "topic rule destination {arn} keeps being changed by other requests; try again"
        )))
    }

    /// GetTopicRuleDestination.
    pub fn get(&self, arn: &str) -> Result<DestinationRecord, DestinationError> {
        self.records
            .read()
            .get(arn)
            .cloned()
            .ok_or_else(|| not_found(arn))
    }

    /// ListTopicRuleDestinations: every destination, by ARN.
    pub fn list(&self) -> Vec<DestinationRecord> {
        self.records.read().values().cloned().collect()
    }

    /// ConfirmTopicRuleDestination: the destination holding `token` becomes ENABLED.
    pub fn confirm(&self, token: &str) -> Result<DestinationRecord, DestinationError> {
        let arn = self
            .records
            .read()
            .values()
            .find(|r| !token.is_empty() && r.confirmation_token == token)
            .map(|r| r.arn.clone())
            .ok_or_else(|| {
                DestinationError::NotFound(
                    "no topic rule destination has this confirmation token".into(),
                )
            })?;
        self.transition(&arn, |record| {
            if record.status == DestinationStatus::InProgress
                || record.status == DestinationStatus::Error
            {
                record.status = DestinationStatus::Enabled;
                record.status_reason = None;
            }
            Ok(())
        })
    }

    /// UpdateTopicRuleDestination: ENABLED <-> DISABLED once confirmed; IN_PROGRESS sends a
    /// new confirmation message.
    pub fn update(
        self: &Arc<Self>,
        arn: &str,
        status: &str,
        enable_url_base: &str,
    ) -> Result<DestinationRecord, DestinationError> {
        let wanted = match status {
            "ENABLED" => DestinationStatus::Enabled,
            "DISABLED" => DestinationStatus::Disabled,
            "IN_PROGRESS" => DestinationStatus::InProgress,
            other => {
                return Err(DestinationError::InvalidRequest(format!(
                    "status must be ENABLED, DISABLED or IN_PROGRESS, not {other:?}"
                )));
            }
        };
        let record = self.transition(arn, |record| {
            let confirmed = matches!(
                record.status,
                DestinationStatus::Enabled | DestinationStatus::Disabled
            );
            if wanted != DestinationStatus::InProgress && !confirmed {
                return Err(DestinationError::Conflict(format!(
                    "topic rule destination {} is {} and must be confirmed first",
                    record.arn,
                    record.status.as_str()
                )));
            }
            if wanted == DestinationStatus::InProgress {
                record.confirmation_token = random_hex(32)?;
                record.status_reason = None;
            }
            record.status = wanted;
            Ok(())
        })?;
        if wanted == DestinationStatus::InProgress {
            self.send_confirmation(&record, enable_url_base);
        }
        Ok(record)
    }

    /// DeleteTopicRuleDestination.
    pub fn delete(&self, arn: &str) -> Result<(), DestinationError> {
        let _writer = self.writer.lock();
        read(self.store.as_ref(), arn)?.ok_or_else(|| not_found(arn))?;
        let mut batch = WriteBatch::new();
        batch.delete(TABLE, arn.as_bytes());
        self.store.apply(batch)?;
        self.records.write().remove(arn);
        Ok(())
    }

    /// Whether an http action may deliver to `url`: it must start with the confirmation URL of
    /// an ENABLED destination.
    pub fn allows(&self, url: &str) -> Result<(), String> {
        let records = self.records.read();
        let mut under = records
            .values()
            .filter(|r| url.starts_with(r.confirmation_url.as_str()));
        match under
            .clone()
            .find(|r| r.status == DestinationStatus::Enabled)
        {
            Some(_) => Ok(()),
            None => match under.next() {
                Some(r) => Err(format!(
                    "the topic rule destination {} for {url} is {}, not ENABLED",
                    r.arn,
                    r.status.as_str()
                )),
                None => Err(format!(
                    "no topic rule destination covers {url}: create one (CreateTopicRuleDestination) and confirm it"
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use fleetcore_core::RedbStore;

    use super::*;
    use crate::actions::HttpsConfig;

    fn open(dir: &tempfile::TempDir) -> Arc<TopicRuleDestinations> {
        let store = RedbStore::open(&dir.path().join("store.redb")).expect("store");
        let https = HttpsClient::new(&HttpsConfig::default()).expect("client");
        Arc::new(TopicRuleDestinations::open(Arc::new(store), https).expect("open"))
    }

    #[test]
    fn confirmation_enables_and_gates_urls_and_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let arn;
        {
            let destinations = open(&dir);
            let record = destinations
                .create(
                    "arn:x:ruledestination/http/",
                    "https://hooks.test/in",
                    "http://api",
                )
                .expect("created");
            arn = record.arn.clone();
            assert_eq!(record.status, DestinationStatus::InProgress);
            assert!(destinations.allows("https://hooks.test/in/a").is_err());
            assert!(matches!(
                destinations.create("arn:x:", "https://hooks.test/in", "http://api"),
                Err(DestinationError::AlreadyExists { .. })
            ));
            assert!(matches!(
                destinations.update(&arn, "ENABLED", "http://api"),
                Err(DestinationError::Conflict(_))
            ));
            assert!(destinations.confirm("wrong").is_err());
            let enabled = destinations
                .confirm(&record.confirmation_token)
                .expect("confirmed");
            assert_eq!(enabled.status, DestinationStatus::Enabled);
            assert!(destinations.allows("https://hooks.test/in/a").is_ok());
            assert!(destinations.allows("https://other.test/in").is_err());
            destinations
                .update(&arn, "DISABLED", "http://api")
                .expect("disabled");
            let refused = destinations.allows("https://hooks.test/in/a").unwrap_err();
            assert!(refused.contains("DISABLED"), "{refused}");
        }
        let destinations = open(&dir);
        assert_eq!(
            destinations.get(&arn).expect("kept").status,
            DestinationStatus::Disabled
        );
        destinations.delete(&arn).expect("deleted");
        assert!(destinations.list().is_empty());
        assert!(
            destinations
                .create("arn:x:", "http://plain.test/", "http://api")
                .is_err()
        );
    }
}
