//! A pipeline's activities ordered from its channel to its datastore, checked and built.

use serde_json::Value;

use super::{Activity, KINDS, Services};

/// A built pipeline: where it reads, what it does, where it writes.
pub struct Plan {
    /// The channel it reads.
    pub channel: String,
    /// The activities between, in order, with their names.
    pub steps: Vec<(String, Box<dyn Activity>)>,
    /// The datastore it writes.
    pub datastore: String,
}

/// One entry of `pipelineActivities`: its kind and members.
fn kind_of(activity: &Value) -> Result<(&str, &Value), String> {
    let object = activity
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or("each pipeline activity must be an object with exactly one kind")?;
    let (kind, members) = object.iter().next().ok_or("empty activity")?;
    Ok((kind.as_str(), members))
}

fn name_of(members: &Value) -> Result<&str, String> {
    super::required_str(members, "name")
}

/// The activity `kind` with `members` built (for RunPipelineActivity and pipelines).
pub(crate) fn build_activity(
    kind: &str,
    members: &Value,
    services: &Services,
) -> Result<Box<dyn Activity>, String> {
    match KINDS.iter().find(|(k, _)| *k == kind) {
        Some((_, build)) => build(members, services),
        None => Err(format!(
            "`{kind}` is not a pipeline activity this server runs"
        )),
    }
}

impl Plan {
    /// Checks and builds `activities`: one channel first, a chain through `next`, one
    /// datastore last, every activity on the chain.
    pub fn build(activities: &[Value], services: &Services) -> Result<Plan, String> {
        if activities.is_empty() || activities.len() > 25 {
            return Err("a pipeline has 1 to 25 activities".into());
        }
        let mut entries = Vec::with_capacity(activities.len());
        for activity in activities {
            let (kind, members) = kind_of(activity)?;
            let name = name_of(members)?;
            if entries
                .iter()
                .any(|(_, n, _): &(&str, &str, &Value)| *n == name)
            {
                return Err(format!("two activities are named {name}"));
            }
            entries.push((kind, name, members));
        }
        let channels: Vec<_> = entries.iter().filter(|(k, _, _)| *k == "channel").collect();
        let [(_, first, channel_members)] = channels.as_slice() else {
            return Err("a pipeline has exactly one channel activity".into());
        };
        let channel = super::required_str(channel_members, "channelName")?.to_string();
        let mut steps = Vec::new();
        let mut current = *first;
        let mut next = channel_members.get("next").and_then(Value::as_str);
        let mut visited = 1;
        loop {
            let Some(next_name) = next else {
                return Err(format!(
                    "activity {current} has no `next`: the chain must end at a datastore activity"
                ));
            };
            let Some((kind, name, members)) = entries.iter().find(|(_, n, _)| *n == next_name)
            else {
                return Err(format!(
                    "activity {current} names a `next` ({next_name}) that is not in the pipeline"
                ));
            };
            visited += 1;
            if visited > entries.len() {
                return Err("the activities' `next` links form a loop".into());
            }
            match *kind {
                "datastore" => {
                    let datastore = super::required_str(members, "datastoreName")?.to_string();
                    if visited != entries.len() {
                        return Err(
                            "every activity must be on the chain from the channel to the datastore"
                                .into(),
                        );
                    }
                    return Ok(Plan {
                        channel,
                        steps,
                        datastore,
                    });
                }
                "channel" => return Err("a channel activity can only come first".into()),
                _ => {
                    let activity = build_activity(kind, members, services)
                        .map_err(|e| format!("activity {name}: {e}"))?;
                    steps.push((name.to_string(), activity));
                    current = *name;
                    next = members.get("next").and_then(Value::as_str);
                }
            }
        }
    }

    /// Runs `messages` through the activities; `Err` names the activity that failed.
    pub async fn run(
        &self,
        mut messages: Vec<crate::columns::Message>,
    ) -> Result<Vec<crate::columns::Message>, String> {
        for (name, activity) in &self.steps {
            if messages.is_empty() {
                break;
            }
            messages = activity
                .apply(messages)
                .await
                .map_err(|e| format!("activity {name}: {e}"))?;
        }
        Ok(messages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn error(plan: Result<Plan, String>) -> String {
        plan.err().unwrap_or_default()
    }

    #[test]
    fn orders_the_chain_and_refuses_broken_ones() {
        let services = Services::default();
        let ok = [
            json!({"datastore": {"name": "d", "datastoreName": "store"}}),
            json!({"filter": {"name": "f", "filter": "temp > 1", "next": "d"}}),
            json!({"channel": {"name": "c", "channelName": "ch", "next": "f"}}),
        ];
        let Ok(plan) = Plan::build(&ok, &services) else {
            panic!("the chain is valid")
        };
        assert_eq!(plan.channel, "ch");
        assert_eq!(plan.datastore, "store");
        assert_eq!(plan.steps.len(), 1);
        let dangling = [
            json!({"channel": {"name": "c", "channelName": "ch", "next": "x"}}),
            json!({"datastore": {"name": "d", "datastoreName": "store"}}),
        ];
        assert!(error(Plan::build(&dangling, &services)).contains("not in the pipeline"));
        let unused = [
            json!({"channel": {"name": "c", "channelName": "ch", "next": "d"}}),
            json!({"filter": {"name": "f", "filter": "temp > 1", "next": "d"}}),
            json!({"datastore": {"name": "d", "datastoreName": "store"}}),
        ];
        assert!(error(Plan::build(&unused, &services)).contains("every activity"));
        let bad_sql = [
            json!({"channel": {"name": "c", "channelName": "ch", "next": "f"}}),
            json!({"filter": {"name": "f", "filter": "temp >", "next": "d"}}),
            json!({"datastore": {"name": "d", "datastoreName": "store"}}),
        ];
        assert!(error(Plan::build(&bad_sql, &services)).contains("not a valid expression"));
    }
}
