//! Topics and subscriptions: JSON records in tables `sns_topics` and `sns_subscriptions` (key:
//! the ARN), mirrored in memory. Mutations are serialised and write the store before the
//! memory, so a refused or failed write leaves nothing behind; a change is made on the stored
//! record by compare-and-set (another node sharing the store may have changed it), and another
//! node's change is read again with [`Registry::reload_topic`] /
//! [`Registry::reload_subscription`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use fleetcore_core::{AccountContext, KvStore, WriteBatch};
use parking_lot::{Mutex, RwLock};

use crate::error::NotifyServiceError;
use crate::model::{Status, Subscription, Topic};

/// How often a change is made again on a record another node changed meanwhile.
const MAX_UPDATE_ATTEMPTS: usize = 8;

/// The store table of the topics (key: ARN; value: the topic as JSON).
pub const TOPICS: &str = "sns_topics";
/// The store table of the subscriptions (key: ARN, `<topic ARN>:<id>`; value: JSON).
pub const SUBSCRIPTIONS: &str = "sns_subscriptions";

#[derive(Default)]
struct State {
    topics: BTreeMap<String, Topic>,
    subscriptions: BTreeMap<String, Arc<Subscription>>,
    by_topic: HashMap<String, BTreeSet<String>>,
}

impl State {
    fn insert_subscription(&mut self, subscription: Arc<Subscription>) {
        self.by_topic
            .entry(subscription.topic_arn.clone())
            .or_default()
            .insert(subscription.arn.clone());
        self.subscriptions
            .insert(subscription.arn.clone(), subscription);
    }

    fn remove_subscription(&mut self, arn: &str) -> Option<Arc<Subscription>> {
        let removed = self.subscriptions.remove(arn)?;
        if let Some(set) = self.by_topic.get_mut(&removed.topic_arn) {
            set.remove(arn);
            if set.is_empty() {
                self.by_topic.remove(&removed.topic_arn);
            }
        }
        Some(removed)
    }
}

/// The topics and subscriptions of this server.
pub struct Registry {
    store: Arc<dyn KvStore>,
    account: AccountContext,
    state: RwLock<State>,
    writer: Mutex<()>,
}

/// One page of a listing and the token of the next.
pub type Page<T> = (Vec<T>, Option<String>);

impl Registry {
    /// Loads every stored topic and subscription.
    pub fn open(
        store: Arc<dyn KvStore>,
        account: AccountContext,
    ) -> Result<Registry, NotifyServiceError> {
        let state = load(store.as_ref())?;
        Ok(Registry {
            store,
            account,
            state: RwLock::new(state),
            writer: Mutex::new(()),
        })
    }

    /// Reads topic `arn` again from the store (another node changed or deleted it).
    pub fn reload_topic(&self, arn: &str) -> Result<(), NotifyServiceError> {
        let topic = self.stored_topic(arn)?;
        let mut state = self.state.write();
        match topic {
            Some(topic) => {
                state.topics.insert(arn.to_string(), topic);
            }
            None => {
                state.topics.remove(arn);
            }
        }
        Ok(())
    }

    /// Reads subscription `arn` again from the store (another node changed or deleted it);
    /// returns whether it is gone.
    pub fn reload_subscription(&self, arn: &str) -> Result<bool, NotifyServiceError> {
        let subscription = self.stored_subscription(arn)?;
        let mut state = self.state.write();
        state.remove_subscription(arn);
        match subscription {
            Some(subscription) => {
                state.insert_subscription(Arc::new(subscription));
                Ok(false)
            }
            None => Ok(true),
        }
    }

    /// Reads everything again from the store (another node may have changed anything);
    /// returns the subscriptions that are gone.
    pub fn reload_all(&self) -> Result<Vec<String>, NotifyServiceError> {
        let fresh = load(self.store.as_ref())?;
        let mut state = self.state.write();
        let gone = state
            .subscriptions
            .keys()
            .filter(|arn| !fresh.subscriptions.contains_key(*arn))
            .cloned()
            .collect();
        *state = fresh;
        Ok(gone)
    }

    fn stored_topic(&self, arn: &str) -> Result<Option<Topic>, NotifyServiceError> {
        self.store
            .get(TOPICS, arn.as_bytes())?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    fn stored_subscription(&self, arn: &str) -> Result<Option<Subscription>, NotifyServiceError> {
        self.store
            .get(SUBSCRIPTIONS, arn.as_bytes())?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    /// The ARN of topic `name`.
    pub fn topic_arn(&self, name: &str) -> String {
        self.account.arn("sns", name).to_string()
    }

    /// Creates topic `name`, or returns it if it exists with the same attributes and tags.
    pub fn create_topic(
        &self,
        name: &str,
        attributes: BTreeMap<String, String>,
        tags: BTreeMap<String, String>,
    ) -> Result<Topic, NotifyServiceError> {
        crate::model::check_topic_name(name)?;
        for (key, value) in &attributes {
            crate::model::check_topic_attribute(key, value)?;
        }
        let arn = self.topic_arn(name);
        let _writer = self.writer.lock();
        if let Some(existing) = self.state.read().topics.get(&arn) {
            let same_attributes = attributes
                .iter()
                .all(|(k, v)| existing.attributes.get(k) == Some(v));
            let same_tags = tags.iter().all(|(k, v)| existing.tags.get(k) == Some(v));
            if !(same_attributes && same_tags) {
                return Err(NotifyServiceError::invalid(
                    "Topic already exists with different attributes or tags",
                ));
            }
            return Ok(existing.clone());
        }
        let topic = Topic {
            arn: arn.clone(),
            name: name.to_string(),
            attributes,
            tags,
        };
        self.put_topic(&topic)?;
        self.state.write().topics.insert(arn, topic.clone());
        Ok(topic)
    }

    fn put_topic(&self, topic: &Topic) -> Result<(), NotifyServiceError> {
        let mut batch = WriteBatch::new();
        batch.put(TOPICS, topic.arn.as_bytes(), encode(topic)?);
        Ok(self.store.apply(batch)?)
    }

    fn put_subscription(&self, subscription: &Subscription) -> Result<(), NotifyServiceError> {
        let mut batch = WriteBatch::new();
        batch.put(
            SUBSCRIPTIONS,
            subscription.arn.as_bytes(),
            encode(subscription)?,
        );
        Ok(self.store.apply(batch)?)
    }

    /// The topic, or `NotFound`.
    pub fn topic(&self, arn: &str) -> Result<Topic, NotifyServiceError> {
        self.state
            .read()
            .topics
            .get(arn)
            .cloned()
            .ok_or_else(|| topic_not_found(arn))
    }

    /// Deletes a topic and its subscriptions (deleting a missing topic succeeds, as on AWS);
    /// returns the subscriptions removed.
    pub fn delete_topic(&self, arn: &str) -> Result<Vec<Arc<Subscription>>, NotifyServiceError> {
        let _writer = self.writer.lock();
        // The stored subscriptions (keys `<topic ARN>:<id>`): some may have been made through
        // another node sharing the store.
        let subscriptions: Vec<String> = self
            .store
            .scan_prefix(SUBSCRIPTIONS, format!("{arn}:").as_bytes())?
            .into_iter()
            .map(|(key, _)| String::from_utf8_lossy(&key).into_owned())
            .collect();
        let mut batch = WriteBatch::new();
        batch.delete(TOPICS, arn.as_bytes());
        for subscription in &subscriptions {
            batch.delete(SUBSCRIPTIONS, subscription.as_bytes());
        }
        self.store.apply(batch)?;
        let mut state = self.state.write();
        state.topics.remove(arn);
        Ok(subscriptions
            .iter()
            .filter_map(|s| state.remove_subscription(s))
            .collect())
    }

    /// Topic ARNs after `after`, at most `limit`, and the token of the next page.
    pub fn list_topics(&self, after: Option<&str>, limit: usize) -> Page<String> {
        let state = self.state.read();
        page(state.topics.keys(), after, limit, |arn| arn.clone())
    }

    /// Changes one attribute of a topic.
    pub fn set_topic_attribute(
        &self,
        arn: &str,
        name: &str,
        value: &str,
    ) -> Result<(), NotifyServiceError> {
        crate::model::check_topic_attribute(name, value)?;
        self.update_topic(arn, |topic| {
            if value.is_empty() && name != "DisplayName" {
                topic.attributes.remove(name);
            } else {
                topic.attributes.insert(name.to_string(), value.to_string());
            }
        })
    }

    /// Adds or replaces tags of a topic.
    pub fn tag(&self, arn: &str, tags: BTreeMap<String, String>) -> Result<(), NotifyServiceError> {
        let existing = self.topic(arn)?;
        let keys: BTreeSet<&String> = existing.tags.keys().chain(tags.keys()).collect();
        if keys.len() > 50 {
            return Err(NotifyServiceError::invalid("Tags: at most 50 per topic"));
        }
        self.update_topic(arn, |topic| topic.tags.extend(tags.clone()))
    }

    /// Removes tags of a topic.
    pub fn untag(&self, arn: &str, keys: &[String]) -> Result<(), NotifyServiceError> {
        self.update_topic(arn, |topic| {
            for key in keys {
                topic.tags.remove(key);
            }
        })
    }

    fn update_topic(
        &self,
        arn: &str,
        change: impl Fn(&mut Topic),
    ) -> Result<(), NotifyServiceError> {
        let _writer = self.writer.lock();
        let topic = self
            .update_stored(TOPICS, arn, |topic: &mut Topic| {
                change(topic);
                Ok(())
            })?
            .ok_or_else(|| topic_not_found(arn))?;
        self.state.write().topics.insert(arn.to_string(), topic);
        Ok(())
    }

    /// Applies `change` to the stored record `key` of `table` and writes it by compare-and-set
    /// over what was read, again on a newer record when another node sharing the store changed
    /// it in between (so no change is lost); `None` when there is no such record.
    fn update_stored<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        table: &'static str,
        key: &str,
        change: impl Fn(&mut T) -> Result<(), NotifyServiceError>,
    ) -> Result<Option<T>, NotifyServiceError> {
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let Some(old) = self.store.get(table, key.as_bytes())? else {
                return Ok(None);
            };
            let mut record: T = decode(&old)?;
            change(&mut record)?;
            if self
                .store
                .compare_and_set(table, key.as_bytes(), Some(&old), encode(&record)?)?
            {
                return Ok(Some(record));
            }
        }
        Err(NotifyServiceError::Internal(format!(
            "{key} keeps being changed by other requests; try again"
        )))
    }

    /// Confirmed and pending subscription counts of a topic.
    pub fn subscription_counts(&self, topic_arn: &str) -> (usize, usize) {
        let state = self.state.read();
        let mut counts = (0, 0);
        for arn in state.by_topic.get(topic_arn).into_iter().flatten() {
            match state.subscriptions.get(arn).map(|s| s.status) {
                Some(Status::Confirmed) => counts.0 += 1,
                Some(Status::Pending) => counts.1 += 1,
                None => {}
            }
        }
        counts
    }

    /// Stores a new subscription, or returns the existing one of the same topic, protocol and
    /// endpoint (Subscribe is idempotent).
    pub fn subscribe(
        &self,
        subscription: Subscription,
    ) -> Result<(Arc<Subscription>, bool), NotifyServiceError> {
        let _writer = self.writer.lock();
        {
            let state = self.state.read();
            if !state.topics.contains_key(&subscription.topic_arn) {
                return Err(topic_not_found(&subscription.topic_arn));
            }
            let existing = state
                .by_topic
                .get(&subscription.topic_arn)
                .into_iter()
                .flatten()
                .filter_map(|arn| state.subscriptions.get(arn))
                .find(|s| {
                    s.protocol == subscription.protocol && s.endpoint == subscription.endpoint
                });
            if let Some(existing) = existing {
                return Ok((Arc::clone(existing), false));
            }
        }
        self.put_subscription(&subscription)?;
        let subscription = Arc::new(subscription);
        self.state
            .write()
            .insert_subscription(Arc::clone(&subscription));
        Ok((subscription, true))
    }

    /// Confirms the subscription of `topic_arn` whose token is `token`.
    pub fn confirm(
        &self,
        topic_arn: &str,
        token: &str,
    ) -> Result<Arc<Subscription>, NotifyServiceError> {
        let _writer = self.writer.lock();
        let found = {
            let state = self.state.read();
            if !state.topics.contains_key(topic_arn) {
                return Err(topic_not_found(topic_arn));
            }
            state
                .by_topic
                .get(topic_arn)
                .into_iter()
                .flatten()
                .filter_map(|arn| state.subscriptions.get(arn))
                .find(|s| s.token == token)
                .cloned()
        };
        let Some(found) = found else {
            return Err(NotifyServiceError::invalid("Token"));
        };
        if found.status == Status::Confirmed {
            return Ok(found);
        }
        let confirmed = self
            .update_stored(SUBSCRIPTIONS, &found.arn, |s: &mut Subscription| {
                s.status = Status::Confirmed;
                Ok(())
            })?
            .ok_or_else(|| NotifyServiceError::invalid("Token"))?;
        let confirmed = Arc::new(confirmed);
        self.state
            .write()
            .insert_subscription(Arc::clone(&confirmed));
        Ok(confirmed)
    }

    /// The subscription, or `NotFound`.
    pub fn subscription(&self, arn: &str) -> Result<Arc<Subscription>, NotifyServiceError> {
        self.state
            .read()
            .subscriptions
            .get(arn)
            .cloned()
            .ok_or_else(|| NotifyServiceError::NotFound("Subscription does not exist".into()))
    }

    /// Removes a subscription.
    pub fn unsubscribe(&self, arn: &str) -> Result<Arc<Subscription>, NotifyServiceError> {
        let _writer = self.writer.lock();
        let stored = self
            .stored_subscription(arn)?
            .ok_or_else(|| NotifyServiceError::NotFound("Subscription does not exist".into()))?;
        let mut batch = WriteBatch::new();
        batch.delete(SUBSCRIPTIONS, arn.as_bytes());
        self.store.apply(batch)?;
        Ok(self
            .state
            .write()
            .remove_subscription(arn)
            .unwrap_or_else(|| Arc::new(stored)))
    }

    /// Changes one attribute of a subscription.
    pub fn set_subscription_attribute(
        &self,
        arn: &str,
        name: &str,
        value: &str,
    ) -> Result<Arc<Subscription>, NotifyServiceError> {
        let _writer = self.writer.lock();
        let subscription = self
            .update_stored(SUBSCRIPTIONS, arn, |existing: &mut Subscription| {
                crate::model::check_subscription_attribute(&existing.protocol, name, value)?;
                *existing = existing.with_attributes(|attributes| {
                    if value.is_empty() && name == crate::model::FILTER_POLICY {
                        attributes.remove(name);
                    } else {
                        attributes.insert(name.to_string(), value.to_string());
                    }
                });
                Ok(())
            })?
            .ok_or_else(|| NotifyServiceError::NotFound("Subscription does not exist".into()))?;
        let subscription = Arc::new(subscription);
        self.state
            .write()
            .insert_subscription(Arc::clone(&subscription));
        Ok(subscription)
    }

    /// Subscriptions (of `topic`, or all) after `after`, at most `limit`, and the next token.
    pub fn list_subscriptions(
        &self,
        topic: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Arc<Subscription>>, NotifyServiceError> {
        let state = self.state.read();
        match topic {
            Some(topic) => {
                if !state.topics.contains_key(topic) {
                    return Err(topic_not_found(topic));
                }
                let empty = BTreeSet::new();
                let arns = state.by_topic.get(topic).unwrap_or(&empty);
                Ok(page(arns.iter(), after, limit, |arn| {
                    Arc::clone(&state.subscriptions[arn])
                }))
            }
            None => Ok(page(state.subscriptions.keys(), after, limit, |arn| {
                Arc::clone(&state.subscriptions[arn])
            })),
        }
    }

    /// The confirmed subscriptions of a topic (whom a publish goes to), or `NotFound`.
    pub fn deliver_to(
        &self,
        topic_arn: &str,
    ) -> Result<Vec<Arc<Subscription>>, NotifyServiceError> {
        let state = self.state.read();
        if !state.topics.contains_key(topic_arn) {
            return Err(topic_not_found(topic_arn));
        }
        Ok(state
            .by_topic
            .get(topic_arn)
            .into_iter()
            .flatten()
            .filter_map(|arn| state.subscriptions.get(arn))
            .filter(|s| s.status == Status::Confirmed)
            .cloned()
            .collect())
    }

    /// Every subscription (to start their delivery lanes, and re-send pending confirmations).
    pub fn all_subscriptions(&self) -> Vec<Arc<Subscription>> {
        self.state.read().subscriptions.values().cloned().collect()
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, NotifyServiceError> {
    serde_json::to_vec(value).map_err(|e| NotifyServiceError::Internal(e.to_string()))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, NotifyServiceError> {
    serde_json::from_slice(bytes)
        .map_err(|e| NotifyServiceError::Internal(format!("an unreadable SNS record: {e}")))
}

/// Every stored topic and subscription; unreadable records are skipped (and logged).
fn load(store: &dyn KvStore) -> Result<State, NotifyServiceError> {
    let mut state = State::default();
    for (_, value) in store.scan_prefix(TOPICS, b"")? {
        match decode::<Topic>(&value) {
            Ok(topic) => {
                state.topics.insert(topic.arn.clone(), topic);
            }
            Err(error) => tracing::warn!(%error, "skipping an unreadable SNS topic record"),
        }
    }
    for (_, value) in store.scan_prefix(SUBSCRIPTIONS, b"")? {
        match decode::<Subscription>(&value) {
            Ok(subscription) => state.insert_subscription(Arc::new(subscription)),
            Err(error) => {
                tracing::warn!(%error, "skipping an unreadable SNS subscription record")
            }
        }
    }
    Ok(state)
}

fn topic_not_found(_arn: &str) -> NotifyServiceError {
    NotifyServiceError::NotFound("Topic does not exist".into())
}

/// The keys after `after` (exclusive), at most `limit`, mapped; the next token is the last
/// key of a full page when more follow.
fn page<'a, T>(
    keys: impl Iterator<Item = &'a String>,
    after: Option<&str>,
    limit: usize,
    map: impl Fn(&String) -> T,
) -> Page<T> {
    let mut keys = keys
        .skip_while(|k| after.is_some_and(|a| k.as_str() <= a))
        .peekable();
    let mut items = Vec::new();
    let mut last = None;
    while items.len() < limit {
        let Some(key) = keys.next() else { break };
        items.push(map(key));
        last = Some(key.clone());
    }
    let next = keys.peek().and(last);
    (items, next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetcore_core::RedbStore;

    fn registry(dir: &std::path::Path) -> Registry {
        let store: Arc<dyn KvStore> =
            Arc::new(RedbStore::open(&dir.join("s.redb")).expect("store"));
        Registry::open(store, AccountContext::new("us-east-1", "000000000000")).expect("open")
    }

    fn subscription(topic: &str, n: usize) -> Subscription {
        Subscription::new(
            format!("{topic}:{n}"),
            topic.to_string(),
            "mqtt".into(),
            format!("t/{n}"),
            Status::Pending,
            format!("token{n}"),
            BTreeMap::new(),
        )
    }

    #[test]
    fn topics_and_subscriptions_survive_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        let arn = {
            let r = registry(dir.path());
            let t = r
                .create_topic("alerts", BTreeMap::new(), BTreeMap::new())
                .expect("create");
            assert_eq!(t.arn, "arn:aws:sns:us-east-1:000000000000:alerts");
            let again = r
                .create_topic("alerts", BTreeMap::new(), BTreeMap::new())
                .expect("idempotent");
            assert_eq!(again, t);
            let filtered = r.subscribe(subscription(&t.arn, 2)).expect("subscribe").0;
            assert!(filtered.filter().is_none());
            let changed = r
                .set_subscription_attribute(&filtered.arn, "FilterPolicy", "{\"a\":[\"b\"]}")
                .expect("set");
            assert!(
                changed.filter().is_some(),
                "a changed policy is parsed anew"
            );
            r.unsubscribe(&filtered.arn).expect("unsubscribe");
            let different = BTreeMap::from([("DisplayName".to_string(), "x".to_string())]);
            assert!(
                r.create_topic("alerts", different, BTreeMap::new())
                    .is_err()
            );
            let (s, created) = r.subscribe(subscription(&t.arn, 1)).expect("subscribe");
            assert!(created);
            let (_, created) = r.subscribe(subscription(&t.arn, 1)).expect("again");
            assert!(!created);
            assert!(r.deliver_to(&t.arn).expect("topic").is_empty(), "pending");
            r.confirm(&t.arn, &s.token).expect("confirm");
            assert!(r.confirm(&t.arn, "wrong").is_err());
            t.arn
        };
        let r = registry(dir.path());
        assert_eq!(r.deliver_to(&arn).expect("topic").len(), 1);
        assert_eq!(r.subscription_counts(&arn), (1, 0));
        let removed = r.delete_topic(&arn).expect("delete");
        assert_eq!(removed.len(), 1);
        assert!(r.topic(&arn).is_err());
        assert!(r.delete_topic(&arn).expect("again").is_empty());
        assert!(r.all_subscriptions().is_empty());
    }

    #[test]
    fn another_registry_on_the_store_follows_by_reloading() {
        let dir = tempfile::tempdir().expect("dir");
        let store: Arc<dyn KvStore> =
            Arc::new(RedbStore::open(&dir.path().join("s.redb")).expect("store"));
        let account = AccountContext::new("us-east-1", "000000000000");
        let (a, b) = (
            Registry::open(Arc::clone(&store), account.clone()).expect("a"),
            Registry::open(Arc::clone(&store), account).expect("b"),
        );
        let t = a
            .create_topic("shared", BTreeMap::new(), BTreeMap::new())
            .expect("create");
        assert!(b.topic(&t.arn).is_err(), "not seen before the reload");
        b.reload_topic(&t.arn).expect("reload");
        assert_eq!(b.topic(&t.arn).expect("seen"), t);
        let (s, _) = a.subscribe(subscription(&t.arn, 1)).expect("subscribe");
        assert!(!b.reload_subscription(&s.arn).expect("reload"));
        assert_eq!(b.subscription_counts(&t.arn), (0, 1));
        // A change made through b reads the stored record, not b's copy.
        b.confirm(&t.arn, &s.token).expect("confirm");
        a.reload_subscription(&s.arn).expect("reload");
        assert_eq!(a.deliver_to(&t.arn).expect("topic").len(), 1);
        // Deleting the topic through a removes its stored subscriptions; b reloads: gone.
        let removed = a.delete_topic(&t.arn).expect("delete");
        assert_eq!(removed.len(), 1);
        assert!(b.reload_subscription(&s.arn).expect("reload"), "gone");
        assert_eq!(b.reload_all().expect("all"), Vec::<String>::new());
        b.reload_topic(&t.arn).expect("reload");
        assert!(b.topic(&t.arn).is_err());
    }

    #[test]
    fn listings_page() {
        let dir = tempfile::tempdir().expect("dir");
        let r = registry(dir.path());
        for n in 0..5 {
            r.create_topic(&format!("t{n}"), BTreeMap::new(), BTreeMap::new())
                .expect("create");
        }
        let (first, next) = r.list_topics(None, 2);
        assert_eq!(first.len(), 2);
        let (second, next) = r.list_topics(next.as_deref(), 2);
        assert_eq!(second.len(), 2);
        let (third, next) = r.list_topics(next.as_deref(), 2);
        assert_eq!((third.len(), next), (1, None));
        assert!(!first.iter().chain(&second).any(|a| third.contains(a)));
    }
}
