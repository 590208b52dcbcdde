//! Topic rules, kept durably in the shared [`KvStore`] (table `rules_topic_rule`: rule name →
//! [`RuleRecord`] as JSON) and in memory with their compiled statements.
//!
//! Every statement is compiled once, when the rule is created or replaced (and when the store
//! is opened); evaluation never re-parses. Changes of one rule are serialised (a change holds
//! the rule's name until it is done) so the existence checks and the writes they guard are
//! atomic; changes of different rules run concurrently and share store transactions (group
//! commit). The store is written before the in-memory map, so a failed write changes nothing.
//! A change costs the same however many rules there are: one key written, one map entry
//! changed, and the observer told about that rule only.

mod commit;

mod actions;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use fleetcore_core::{KvStore, StoreError, WriteBatch};
use parking_lot::{Condvar, Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use actions::{MAX_ACTIONS, validate_action};

use crate::sql::{SqlError, SqlVersion, Statement};
use commit::GroupCommit;

const TABLE: &str = "rules_topic_rule";

/// Longest rule name (AWS `RuleName`: `^[a-zA-Z0-9_]+$`, 1 to 128 characters).
pub const MAX_RULE_NAME_LEN: usize = 128;

/// Longest description (AWS `Description`: 2028 characters).
pub const MAX_DESCRIPTION_LEN: usize = 2028;

/// Most rules listed per page when `maxResults` is not given.
pub const DEFAULT_PAGE_SIZE: usize = 1000;

/// Why a rule operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// The statement does not compile.
    #[error("{0}")]
    Sql(#[from] SqlError),
    /// A malformed request (name, version, actions, paging).
    #[error("{0}")]
    InvalidRequest(String),
    /// A rule with this name exists.
    #[error("rule {name} already exists")]
    AlreadyExists {
        /// The rule name.
        name: String,
    },
    /// No rule with this name.
    #[error("rule {name} does not exist")]
    NotFound {
        /// The rule name.
        name: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored record could not be read back.
    #[error("stored rule {name} is unreadable: {message}")]
    Corrupt {
        /// The rule name.
        name: String,
        /// What went wrong.
        message: String,
    },
}

/// A rule as CreateTopicRule and ReplaceTopicRule send it (`topicRulePayload`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TopicRulePayload {
    /// The SQL statement.
    pub sql: Option<String>,
    /// A description for people.
    pub description: Option<String>,
    /// The actions, stored as given.
    pub actions: Option<Vec<Value>>,
    /// Created disabled?
    pub rule_disabled: Option<bool>,
    /// `2016-03-23`, `2015-10-08` (the default) or `beta`.
    pub aws_iot_sql_version: Option<String>,
    /// The action run when an action fails.
    pub error_action: Option<Value>,
}

/// A stored rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleRecord {
    /// The rule name.
    pub name: String,
    /// The SQL statement, as given.
    pub sql: String,
    /// The description, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When it was created, epoch milliseconds.
    pub created_at_ms: i64,
    /// The actions, as given.
    pub actions: Vec<Value>,
    /// The error action, as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_action: Option<Value>,
    /// Disabled rules are kept but not run.
    pub rule_disabled: bool,
    /// The SQL version (AWS's default `2015-10-08` when none was given).
    pub aws_iot_sql_version: String,
    /// The `x-amz-tagging` header given at creation (`k=v&k2=v2`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
}

/// A rule with its compiled statement.
#[derive(Debug)]
pub struct TopicRule {
    /// What is stored.
    pub record: RuleRecord,
    /// The statement, compiled once.
    pub statement: Statement,
}

impl TopicRule {
    /// The FROM topic filter (`topicPattern` in ListTopicRules).
    pub fn topic_pattern(&self) -> &str {
        self.statement.topic_filter()
    }
}

/// Filters and paging of [`RuleRegistry::list`].
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only rules whose topic filter is this string or matches this topic.
    pub topic: Option<String>,
    /// Only disabled (true) or enabled (false) rules.
    pub rule_disabled: Option<bool>,
    /// Page size, 1 to 10000.
    pub max_results: Option<i64>,
    /// Where the previous page ended.
    pub next_token: Option<String>,
}

/// One page of rules.
#[derive(Debug)]
pub struct RulePage {
    /// The rules, by name.
    pub rules: Vec<Arc<TopicRule>>,
    /// Set when more rules follow.
    pub next_token: Option<String>,
}

/// Told about every change of the rule set (create, replace, delete, enable, disable) before
/// the call that made it returns; the rules runtime updates its rule index here.
pub trait RuleObserver: Send + Sync {
    /// Rule `old` (if it existed) became `new` (`None`: deleted). Called while the change holds
    /// the rule's name, so one rule's changes are observed one at a time, in order (changes of
    /// different rules may be observed concurrently).
    fn rule_changed(&self, old: Option<&Arc<TopicRule>>, new: Option<&Arc<TopicRule>>);
}

/// The topic rules: durable records plus compiled statements in memory.
pub struct RuleRegistry {
    commits: GroupCommit,
    rules: RwLock<BTreeMap<String, Arc<TopicRule>>>,
    /// Names of the rules a change is under way for.
    changing: Mutex<HashSet<String>>,
    change_done: Condvar,
    observer: RwLock<Option<Arc<dyn RuleObserver>>>,
}

/// A change of one rule under way: holds its name until dropped.
struct Changing<'a> {
    registry: &'a RuleRegistry,
    name: String,
}

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        self.registry.changing.lock().remove(&self.name);
        self.registry.change_done.notify_all();
    }
}

impl std::fmt::Debug for RuleRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleRegistry")
            .field("rules", &self.rules.read().len())
            .finish()
    }
}

/// A stored rule, compiled.
fn decode_rule(name: &str, value: &[u8]) -> Result<TopicRule, RuleError> {
    let corrupt = |message: String| RuleError::Corrupt {
        name: name.to_owned(),
        message,
    };
    let record: RuleRecord = serde_json::from_slice(value).map_err(|e| corrupt(e.to_string()))?;
    let version = record
        .aws_iot_sql_version
        .parse::<SqlVersion>()
        .map_err(&corrupt)?;
    let statement = Statement::compile(&record.sql, version).map_err(|e| corrupt(e.to_string()))?;
    Ok(TopicRule { record, statement })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Checks a rule name against AWS's `RuleName` shape.
pub fn validate_name(name: &str) -> Result<(), RuleError> {
    if name.is_empty() || name.len() > MAX_RULE_NAME_LEN {
        return Err(RuleError::InvalidRequest(format!(
            "rule name must be 1 to {MAX_RULE_NAME_LEN} characters"
        )));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(RuleError::InvalidRequest(format!(
            "rule name {name:?} must match [a-zA-Z0-9_]+"
        )));
    }
    Ok(())
}

/// Checks a payload and compiles its statement; returns the statement and the effective
/// version string.
fn check_payload(payload: &TopicRulePayload) -> Result<(Statement, String), RuleError> {
    let sql = payload
        .sql
        .as_deref()
        .ok_or_else(|| RuleError::InvalidRequest("topicRulePayload.sql is required".into()))?;
    let actions = payload
        .actions
        .as_ref()
        .ok_or_else(|| RuleError::InvalidRequest("topicRulePayload.actions is required".into()))?;
    if actions.len() > MAX_ACTIONS {
        return Err(RuleError::InvalidRequest(format!(
            "a rule has at most {MAX_ACTIONS} actions, not {}",
            actions.len()
        )));
    }
    if payload
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_LEN)
    {
        return Err(RuleError::InvalidRequest(format!(
            "description is longer than {MAX_DESCRIPTION_LEN} characters"
        )));
    }
    let version = match payload.aws_iot_sql_version.as_deref() {
        Some(v) => v.parse::<SqlVersion>().map_err(RuleError::InvalidRequest)?,
        None => SqlVersion::default(),
    };
    for (i, action) in actions.iter().enumerate() {
        validate_action(&format!("actions[{i}]"), action, version)
            .map_err(RuleError::InvalidRequest)?;
    }
    if let Some(error_action) = &payload.error_action {
        validate_action("errorAction", error_action, version).map_err(RuleError::InvalidRequest)?;
    }
    let statement = Statement::compile(sql, version)?;
    Ok((statement, version.as_str().to_string()))
}

impl RuleRegistry {
    /// Opens the registry over `store`, compiling every stored rule.
    pub fn open(store: Arc<dyn KvStore>) -> Result<RuleRegistry, RuleError> {
        let mut rules = BTreeMap::new();
        for (key, value) in store.scan_prefix(TABLE, b"")? {
            let name = String::from_utf8_lossy(&key).into_owned();
            let rule = decode_rule(&name, &value)?;
            rules.insert(name, Arc::new(rule));
        }
        Ok(RuleRegistry {
            commits: GroupCommit::new(store),
            rules: RwLock::new(rules),
            changing: Mutex::new(HashSet::new()),
            change_done: Condvar::new(),
            observer: RwLock::new(None),
        })
    }

    /// Takes rule `name` as it now is in the store, after another node sharing the store changed
    /// it; the observer is told as for a local change.
    pub fn reload(&self, name: &str) -> Result<(), RuleError> {
        let _change = self.begin(name);
        let new = match self.commits.store().get(TABLE, name.as_bytes())? {
            Some(value) => Some(Arc::new(decode_rule(name, &value)?)),
            None => None,
        };
        let old = {
            let mut rules = self.rules.write();
            match &new {
                Some(rule) => rules.insert(name.into(), Arc::clone(rule)),
                None => rules.remove(name),
            }
        };
        let same = match (&old, &new) {
            (Some(a), Some(b)) => a.record == b.record,
            (None, None) => true,
            _ => false,
        };
        if !same {
            self.changed(old.as_ref(), new.as_ref());
        }
        Ok(())
    }

    /// [`RuleRegistry::reload`] of every rule in the store or in memory, by name (when what
    /// changed is not known).
    pub fn reload_all(&self) -> Result<(), RuleError> {
        let mut names: BTreeSet<String> = self.rules.read().keys().cloned().collect();
        for (key, _) in self.commits.store().scan_prefix(TABLE, b"")? {
            names.insert(String::from_utf8_lossy(&key).into_owned());
        }
        for name in names {
            self.reload(&name)?;
        }
        Ok(())
    }

    /// Waits until no other change of rule `name` is under way, then holds the name.
    fn begin(&self, name: &str) -> Changing<'_> {
        let mut changing = self.changing.lock();
        while changing.contains(name) {
            self.change_done.wait(&mut changing);
        }
        changing.insert(name.to_string());
        Changing {
            registry: self,
            name: name.to_string(),
        }
    }

    /// Installs the observer told about every later change.
    pub fn set_observer(&self, observer: Arc<dyn RuleObserver>) {
        *self.observer.write() = Some(observer);
    }

    fn changed(&self, old: Option<&Arc<TopicRule>>, new: Option<&Arc<TopicRule>>) {
        let observer = self.observer.read().clone();
        if let Some(observer) = observer {
            observer.rule_changed(old, new);
        }
    }

    /// Every rule, by name (read once, when the runtime starts).
    pub fn snapshot(&self) -> Vec<Arc<TopicRule>> {
        self.rules.read().values().cloned().collect()
    }

    fn write(&self, record: &RuleRecord) -> Result<(), RuleError> {
        let json = serde_json::to_vec(record).map_err(|e| RuleError::Corrupt {
            name: record.name.clone(),
            message: e.to_string(),
        })?;
        let mut batch = WriteBatch::new();
        batch.put(TABLE, record.name.as_bytes(), json);
        self.commits.apply(batch)?;
        Ok(())
    }

    /// CreateTopicRule.
    pub fn create(
        &self,
        name: &str,
        payload: &TopicRulePayload,
        tags: Option<String>,
    ) -> Result<Arc<TopicRule>, RuleError> {
        validate_name(name)?;
        let (statement, version) = check_payload(payload)?;
        let _change = self.begin(name);
        if self.rules.read().contains_key(name) {
            return Err(RuleError::AlreadyExists { name: name.into() });
        }
        let record = RuleRecord {
            name: name.into(),
            sql: statement.sql().to_string(),
            description: payload.description.clone(),
            created_at_ms: now_ms(),
            actions: payload.actions.clone().unwrap_or_default(),
            error_action: payload.error_action.clone(),
            rule_disabled: payload.rule_disabled.unwrap_or(false),
            aws_iot_sql_version: version,
            tags,
        };
        self.write(&record)?;
        let rule = Arc::new(TopicRule { record, statement });
        self.rules.write().insert(name.into(), Arc::clone(&rule));
        self.changed(None, Some(&rule));
        Ok(rule)
    }

    /// GetTopicRule.
    pub fn get(&self, name: &str) -> Result<Arc<TopicRule>, RuleError> {
        self.rules
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| RuleError::NotFound { name: name.into() })
    }

    /// ReplaceTopicRule: a new statement, actions and settings; the creation time stays.
    pub fn replace(&self, name: &str, payload: &TopicRulePayload) -> Result<(), RuleError> {
        validate_name(name)?;
        let (statement, version) = check_payload(payload)?;
        let _change = self.begin(name);
        let old = self.get(name)?;
        let record = RuleRecord {
            name: name.into(),
            sql: statement.sql().to_string(),
            description: payload.description.clone(),
            created_at_ms: old.record.created_at_ms,
            actions: payload.actions.clone().unwrap_or_default(),
            error_action: payload.error_action.clone(),
            rule_disabled: payload.rule_disabled.unwrap_or(false),
            aws_iot_sql_version: version,
            tags: old.record.tags.clone(),
        };
        self.write(&record)?;
        let new = Arc::new(TopicRule { record, statement });
        self.rules.write().insert(name.into(), Arc::clone(&new));
        self.changed(Some(&old), Some(&new));
        Ok(())
    }

    /// EnableTopicRule (`disabled == false`) and DisableTopicRule.
    pub fn set_disabled(&self, name: &str, disabled: bool) -> Result<(), RuleError> {
        let _change = self.begin(name);
        let old = self.get(name)?;
        if old.record.rule_disabled == disabled {
            return Ok(());
        }
        let mut record = old.record.clone();
        record.rule_disabled = disabled;
        self.write(&record)?;
        let rule = TopicRule {
            record,
            statement: old.statement.clone(),
        };
        let new = Arc::new(rule);
        self.rules.write().insert(name.into(), Arc::clone(&new));
        self.changed(Some(&old), Some(&new));
        Ok(())
    }

    /// DeleteTopicRule.
    pub fn delete(&self, name: &str) -> Result<(), RuleError> {
        let _change = self.begin(name);
        let old = self.get(name)?;
        let mut batch = WriteBatch::new();
        batch.delete(TABLE, name.as_bytes());
        self.commits.apply(batch)?;
        self.rules.write().remove(name);
        self.changed(Some(&old), None);
        Ok(())
    }

    /// ListTopicRules: rules by name, filtered, one page at a time. The `nextToken` is the
    /// name of the last rule of the page.
    pub fn list(&self, query: &ListQuery) -> Result<RulePage, RuleError> {
        let size = match query.max_results {
            None => DEFAULT_PAGE_SIZE,
            Some(n @ 1..=10_000) => usize::try_from(n).unwrap_or(DEFAULT_PAGE_SIZE),
            Some(n) => {
                return Err(RuleError::InvalidRequest(format!(
                    "maxResults must be between 1 and 10000, not {n}"
                )));
            }
        };
        if let Some(token) = &query.next_token {
            validate_name(token)
                .map_err(|_| RuleError::InvalidRequest(format!("invalid nextToken {token:?}")))?;
        }
        let rules = self.rules.read();
        let start = match &query.next_token {
            Some(after) => std::ops::Bound::Excluded(after.clone()),
            None => std::ops::Bound::Unbounded,
        };
        let mut page = Vec::new();
        let mut more = false;
        for rule in rules
            .range((start, std::ops::Bound::Unbounded))
            .map(|(_, r)| r)
            .filter(|r| {
                query
                    .rule_disabled
                    .is_none_or(|d| r.record.rule_disabled == d)
            })
            .filter(|r| {
                query.topic.as_deref().is_none_or(|t| {
                    r.topic_pattern() == t || crate::topic::matches(r.topic_pattern(), t)
                })
            })
        {
            if page.len() == size {
                more = true;
                break;
            }
            page.push(Arc::clone(rule));
        }
        let next_token = if more {
            page.last().map(|r| r.record.name.clone())
        } else {
            None
        };
        Ok(RulePage {
            rules: page,
            next_token,
        })
    }

    /// The enabled rules whose topic filter matches `topic`.
    pub fn matching(&self, topic: &str) -> Vec<Arc<TopicRule>> {
        self.rules
            .read()
            .values()
            .filter(|r| !r.record.rule_disabled && r.statement.matches_topic(topic))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use fleetcore_core::RedbStore;
    use serde_json::json;

    use super::*;

    fn payload(sql: &str) -> TopicRulePayload {
        serde_json::from_value(json!({
            "sql": sql,
            "awsIotSqlVersion": "2016-03-23",
            "actions": [{"republish": {"roleArn": "arn:aws:iam::1:role/r", "topic": "out"}}],
        }))
        .expect("payload")
    }

    fn open(dir: &tempfile::TempDir) -> RuleRegistry {
        let store = RedbStore::open(&dir.path().join("store.redb")).expect("store");
        RuleRegistry::open(Arc::new(store)).expect("registry")
    }

    #[test]
    fn reload_takes_what_another_registry_on_the_same_store_changed() {
        struct Seen(Mutex<Vec<(Option<String>, Option<bool>)>>);
        impl RuleObserver for Seen {
            fn rule_changed(&self, old: Option<&Arc<TopicRule>>, new: Option<&Arc<TopicRule>>) {
                self.0.lock().push((
                    old.map(|r| r.record.name.clone()),
                    new.map(|r| r.record.rule_disabled),
                ));
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn KvStore> =
            Arc::new(RedbStore::open(&dir.path().join("store.redb")).expect("store"));
        let here = RuleRegistry::open(Arc::clone(&store)).expect("registry");
        let there = RuleRegistry::open(store).expect("registry");
        let seen = Arc::new(Seen(Mutex::new(Vec::new())));
        there.set_observer(Arc::clone(&seen) as Arc<dyn RuleObserver>);

        here.create("r1", &payload("SELECT * FROM 'a/#'"), None)
            .expect("create");
        there.reload("r1").expect("reload");
        assert_eq!(there.get("r1").expect("seen there").topic_pattern(), "a/#");
        there.reload("r1").expect("unchanged");
        here.set_disabled("r1", true).expect("disable");
        here.create("r2", &payload("SELECT * FROM 'b'"), None)
            .expect("create");
        there.reload_all().expect("reload all");
        here.delete("r1").expect("delete");
        there.reload("r1").expect("reload deleted");
        assert!(matches!(there.get("r1"), Err(RuleError::NotFound { .. })));
        assert!(there.get("r2").is_ok());
        assert_eq!(
            *seen.0.lock(),
            vec![
                (None, Some(false)),
                (Some("r1".into()), Some(true)),
                (None, Some(false)),
                (Some("r1".into()), None),
            ],
            "the observer hears each change once, an unchanged rule not at all"
        );
    }

    #[test]
    fn a_stored_rule_whose_action_is_now_refused_still_loads() {
        // Rules stored before CreateTopicRule refused missing capabilities keep loading (their
        // action fails every message, naming the capability, so the error action fires).
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = RedbStore::open(&dir.path().join("store.redb")).expect("store");
            let record = RuleRecord {
                name: "old".into(),
                sql: "SELECT * FROM 'a/#'".into(),
                description: None,
                created_at_ms: 1,
                actions: vec![
                    json!({"sqs": {"queueUrl": "https://sqs/q", "roleArn": "r", "useBase64": false}}),
                ],
                error_action: None,
                rule_disabled: false,
                aws_iot_sql_version: "2016-03-23".into(),
                tags: None,
            };
            let mut batch = WriteBatch::new();
            batch.put(TABLE, b"old", serde_json::to_vec(&record).expect("json"));
            store.apply(batch).expect("write");
        }
        let registry = open(&dir);
        let old = registry.get("old").expect("loaded");
        assert_eq!(old.record.actions[0]["sqs"]["queueUrl"], "https://sqs/q");
        let refused = crate::actions::validate(
            "sqs",
            &old.record.actions[0]["sqs"],
            SqlVersion::V2016_03_23,
        )
        .unwrap_err();
        assert!(refused.contains("SQS queues"), "{refused}");
    }

    #[test]
    fn rules_survive_reopening_with_compiled_statements() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let registry = open(&dir);
            registry
                .create(
                    "hot",
                    &payload("SELECT * FROM 'a/#' WHERE t > 1"),
                    Some("k=v".into()),
                )
                .expect("create");
            registry
                .create("cold", &payload("SELECT * FROM 'b/+'"), None)
                .expect("create");
            registry.set_disabled("cold", true).expect("disable");
            assert!(matches!(
                registry.create("hot", &payload("SELECT * FROM 'x'"), None),
                Err(RuleError::AlreadyExists { .. })
            ));
        }
        let registry = open(&dir);
        let hot = registry.get("hot").expect("hot");
        assert_eq!(hot.topic_pattern(), "a/#");
        assert_eq!(hot.record.tags.as_deref(), Some("k=v"));
        assert!(registry.get("cold").expect("cold").record.rule_disabled);
        assert_eq!(registry.matching("a/x").len(), 1);
        assert!(
            registry.matching("b/x").is_empty(),
            "disabled rules do not run"
        );
    }

    #[test]
    fn refused_payloads_change_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = open(&dir);
        assert!(matches!(
            registry.create("r", &payload("SELECT nope() FROM 'a'"), None),
            Err(RuleError::Sql(_))
        ));
        assert!(matches!(
            registry.create("bad-name", &payload("SELECT * FROM 'a'"), None),
            Err(RuleError::InvalidRequest(_))
        ));
        let mut p = payload("SELECT * FROM 'a'");
        p.actions = Some(vec![json!({"kinesis": {"roleArn": "r"}})]);
        assert!(matches!(
            registry.create("r", &p, None),
            Err(RuleError::InvalidRequest(_))
        ));
        p.actions = None;
        assert!(matches!(
            registry.create("r", &p, None),
            Err(RuleError::InvalidRequest(_))
        ));
        let mut p = payload("SELECT * FROM 'a'");
        p.aws_iot_sql_version = Some("2020-01-01".into());
        assert!(matches!(
            registry.create("r", &p, None),
            Err(RuleError::InvalidRequest(_))
        ));
        assert!(
            registry
                .list(&ListQuery::default())
                .expect("list")
                .rules
                .is_empty()
        );
    }

    #[test]
    fn lists_page_by_name_and_filter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = open(&dir);
        for (name, from) in [("r1", "a/+"), ("r2", "b/#"), ("r3", "a/b"), ("r4", "c")] {
            registry
                .create(name, &payload(&format!("SELECT * FROM '{from}'")), None)
                .expect("create");
        }
        let first = registry
            .list(&ListQuery {
                max_results: Some(3),
                ..ListQuery::default()
            })
            .expect("page");
        let names: Vec<_> = first.rules.iter().map(|r| r.record.name.as_str()).collect();
        assert_eq!(names, ["r1", "r2", "r3"]);
        let second = registry
            .list(&ListQuery {
                max_results: Some(3),
                next_token: first.next_token,
                ..ListQuery::default()
            })
            .expect("page");
        assert_eq!(second.rules.len(), 1);
        assert!(second.next_token.is_none());
        let by_topic = registry
            .list(&ListQuery {
                topic: Some("a/b".into()),
                ..ListQuery::default()
            })
            .expect("filtered");
        let names: Vec<_> = by_topic
            .rules
            .iter()
            .map(|r| r.record.name.as_str())
            .collect();
        assert_eq!(names, ["r1", "r3"]);
        assert!(
            registry
                .list(&ListQuery {
                    max_results: Some(0),
                    ..ListQuery::default()
                })
                .is_err()
        );
    }
}
