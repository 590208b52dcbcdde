//! `ADD_THINGS_TO_THING_GROUP`: the thing (Detect), or the things of a finding's device
//! certificate or client id (Audit), join the groups; a quarantine group whose policy denies
//! cuts them off, as any policy change does.

use serde_json::Value;

use super::{ActionKind, Applied, Applying, Reach, Subject};
use crate::error::DefenderError;

/// `addThingsToThingGroupParams`.
pub struct AddThingsToThingGroup;

fn groups(params: &Value) -> Vec<&str> {
    params["thingGroupNames"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

impl ActionKind for AddThingsToThingGroup {
    fn params_key(&self) -> &'static str {
        "addThingsToThingGroupParams"
    }

    fn action_type(&self) -> &'static str {
        "ADD_THINGS_TO_THING_GROUP"
    }

    fn check(&self, params: &Value, reach: &Reach) -> Result<(), DefenderError> {
        let groups = groups(params);
        if groups.is_empty() || groups.len() > 10 {
            return Err(DefenderError::Invalid(
                "addThingsToThingGroupParams.thingGroupNames takes 1 to 10 groups".into(),
            ));
        }
        for g in groups {
            if !reach.mitigator.group_exists(g) {
                return Err(DefenderError::NotFound(format!(
                    "thing group {g} does not exist"
                )));
            }
        }
        Ok(())
    }

    fn apply<'a>(
        &'a self,
        params: &'a Value,
        subject: Subject<'a>,
        reach: &'a Reach,
    ) -> Applying<'a> {
        Box::pin(async move {
            let things = match &subject {
                Subject::Thing { name, .. } => vec![name.to_string()],
                Subject::Finding(_) => match (
                    subject.resource_id("deviceCertificateId"),
                    subject.resource_id("clientId"),
                ) {
                    (Some(cert), _) => reach.mitigator.things_of_certificate(cert)?,
                    (None, Some(client)) if reach.mitigator.is_thing(client) => {
                        vec![client.to_string()]
                    }
                    _ => {
                        return Ok(Applied::Skipped(
                            "the finding names no device certificate or thing".into(),
                        ));
                    }
                },
            };
            if things.is_empty() {
                return Ok(Applied::Skipped("no thing is attached".into()));
            }
            for thing in &things {
                for g in groups(params) {
                    reach.mitigator.add_to_group(thing, g)?;
                }
            }
            Ok(Applied::Done)
        })
    }
}
