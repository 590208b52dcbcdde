//! Shadow topics: which published topics are requests to the service, and where the answers go.
//!
//! Requests: `$aws/things/{thing}/shadow/{get,update,delete}` (classic),
//! `$aws/things/{thing}/shadow/name/{shadow}/{get,update,delete}` (named), and the reference
//! architecture's `devices/{thing}/shadow/update` (an alias of the classic update). Everything
//! under an operation (`/accepted`, `/rejected`, `/delta`, `/documents`) is an output of the
//! service and never a request.

use crate::ShadowError;

/// Longest thing name (the iot-data model's `ThingName`).
pub const MAX_THING_NAME: usize = 128;
/// Longest named-shadow name (the model's `ShadowName`).
pub const MAX_SHADOW_NAME: usize = 64;

/// The topic filters the shadow service claims on the broker.
pub const REQUEST_FILTERS: [&str; 2] = ["$aws/things/+/shadow/#", "devices/+/shadow/update"];

/// A shadow operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Read the document.
    Get,
    /// Merge a state update.
    Update,
    /// Delete the document.
    Delete,
}

impl Operation {
    /// The topic level naming the operation.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Get => "get",
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }

    fn parse(level: &str) -> Option<Operation> {
        match level {
            "get" => Some(Operation::Get),
            "update" => Some(Operation::Update),
            "delete" => Some(Operation::Delete),
            _ => None,
        }
    }
}

/// Which shadow: a thing and, for a named shadow, its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShadowId {
    /// The thing name.
    pub thing: String,
    /// The shadow name; `None` is the classic (unnamed) shadow.
    pub name: Option<String>,
}

impl ShadowId {
    /// A shadow id with validated names (`[a-zA-Z0-9:_-]`, 1..=128 for things; shadow names
    /// may also hold `$`, 1..=64).
    pub fn new(thing: &str, name: Option<&str>) -> Result<ShadowId, ShadowError> {
        validate_thing_name(thing)?;
        if let Some(name) = name {
            validate_shadow_name(name)?;
        }
        Ok(ShadowId {
            thing: thing.to_string(),
            name: name.map(str::to_string),
        })
    }

    /// The topic prefix of this shadow's operations.
    pub fn topic_prefix(&self) -> String {
        match &self.name {
            None => format!("$aws/things/{}/shadow", self.thing),
            Some(name) => format!("$aws/things/{}/shadow/name/{name}", self.thing),
        }
    }

    /// The name shown in messages: the shadow name, or the thing name for the classic one.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.thing)
    }
}

/// Checks a thing name against the model's pattern and length.
pub fn validate_thing_name(thing: &str) -> Result<(), ShadowError> {
    let ok = !thing.is_empty()
        && thing.len() <= MAX_THING_NAME
        && thing
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ShadowError::invalid(format!(
            "Invalid thing name: '{thing}' (1 to {MAX_THING_NAME} characters of a-z, A-Z, 0-9, ':', '_', '-')"
        )))
    }
}

/// Checks a shadow name against the model's pattern and length.
pub fn validate_shadow_name(name: &str) -> Result<(), ShadowError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SHADOW_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'$' | b':' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ShadowError::invalid(format!(
            "Invalid shadow name: '{name}' (1 to {MAX_SHADOW_NAME} characters of a-z, A-Z, 0-9, '$', ':', '_', '-')"
        )))
    }
}

/// A request topic, parsed. The names are not validated yet: a request with a bad name is
/// answered on `{prefix}/rejected` (see [`RequestTopic::prefix`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTopic<'a> {
    /// The thing name as written in the topic.
    pub thing: &'a str,
    /// The shadow name as written, for a named shadow.
    pub name: Option<&'a str>,
    /// The operation.
    pub operation: Operation,
}

impl<'a> RequestTopic<'a> {
    /// Parses `topic`; `None` when it is not a shadow request (a response topic, another topic).
    pub fn parse(topic: &'a str) -> Option<RequestTopic<'a>> {
        if let Some(rest) = topic.strip_prefix("devices/") {
            let thing = rest.strip_suffix("/shadow/update")?;
            if thing.is_empty() || thing.contains('/') {
                return None;
            }
            return Some(RequestTopic {
                thing,
                name: None,
                operation: Operation::Update,
            });
        }
        let rest = topic.strip_prefix("$aws/things/")?;
        let (thing, rest) = rest.split_once('/')?;
        let rest = rest.strip_prefix("shadow/")?;
        let (name, op) = match rest.strip_prefix("name/") {
            Some(named) => {
                let (name, op) = named.split_once('/')?;
                (Some(name), op)
            }
            None => (None, rest),
        };
        if thing.is_empty() || name.is_some_and(str::is_empty) {
            return None;
        }
        Some(RequestTopic {
            thing,
            name,
            operation: Operation::parse(op)?,
        })
    }

    /// The topic prefix the answers go under (`$aws/things/{thing}/shadow[/name/{name}]`),
    /// built from the names as written, so even a request with a bad name gets its answer.
    pub fn prefix(&self) -> String {
        match self.name {
            None => format!("$aws/things/{}/shadow", self.thing),
            Some(name) => format!("$aws/things/{}/shadow/name/{name}", self.thing),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests_and_ignores_outputs() {
        let t = RequestTopic::parse("$aws/things/t1/shadow/update").expect("classic");
        assert_eq!(
            (t.thing, t.name, t.operation),
            ("t1", None, Operation::Update)
        );
        let t = RequestTopic::parse("$aws/things/t1/shadow/name/cfg/get").expect("named");
        assert_eq!(
            (t.thing, t.name, t.operation),
            ("t1", Some("cfg"), Operation::Get)
        );
        let t = RequestTopic::parse("devices/t2/shadow/update").expect("alias");
        assert_eq!(
            (t.thing, t.name, t.operation),
            ("t2", None, Operation::Update)
        );
        assert_eq!(t.prefix(), "$aws/things/t2/shadow");
        for output in [
            "$aws/things/t1/shadow/update/accepted",
            "$aws/things/t1/shadow/update/rejected",
            "$aws/things/t1/shadow/update/delta",
            "$aws/things/t1/shadow/update/documents",
            "$aws/things/t1/shadow/get/accepted",
            "$aws/things/t1/shadow/name/cfg/delete/accepted",
            "$aws/things/t1/shadow/name/cfg",
            "$aws/things/t1/shadow/name//update",
            "$aws/things//shadow/update",
            "$aws/things/t1/shadow/other",
            "devices/t1/shadow/update/accepted",
            "devices/a/b/shadow/update",
            "devices/t1/telemetry",
        ] {
            assert_eq!(RequestTopic::parse(output), None, "{output}");
        }
    }

    #[test]
    fn names_follow_the_model_patterns() {
        assert!(ShadowId::new("thing-1:a_b", Some("$cfg")).is_ok());
        assert!(ShadowId::new("bad name", None).is_err());
        assert!(ShadowId::new("t", Some("bad/name")).is_err());
        assert!(ShadowId::new(&"x".repeat(129), None).is_err());
        assert!(ShadowId::new("t", Some(&"x".repeat(65))).is_err());
        assert!(ShadowId::new("t", Some("")).is_err());
    }
}
