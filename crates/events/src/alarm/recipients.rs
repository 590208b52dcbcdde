//! `alarmNotification.notificationActions[].emailConfigurations` and `smsConfigurations`: mails
//! and text messages to people, sent through core's `RecipientNotifier` seam when an alarm
//! becomes ACTIVE. AWS names the recipients as IAM Identity Center users; every one must be in
//! this server's recipient directory (and the channel configured) when the model is created.

use std::sync::Arc;

use fleetcore_core::{Channel, DirectMessage, Recipient, RecipientNotifier};
use serde_json::Value as Json;

use crate::actions::{DetectorAction, Effect, Run, Targets};
use crate::expr::Expr;

/// One email or SMS configuration, checked.
struct Notification {
    notifier: Arc<dyn RecipientNotifier>,
    channel: Channel,
    recipients: Vec<Recipient>,
    sender: Option<String>,
    subject: Option<String>,
    additional: Option<String>,
}

/// Builds the action of `emailConfigurations[i]` (`channel` Email) or `smsConfigurations[i]`
/// (Sms); `place` names the member in errors.
pub(super) fn build(
    config: &Json,
    channel: Channel,
    place: &str,
    targets: &Targets,
) -> Result<Box<dyn DetectorAction>, String> {
    let notifier = targets
        .recipients
        .clone()
        .ok_or_else(|| format!("{place}: this server has no recipient directory"))?;
    let text = |member: &str| -> Result<Option<String>, String> {
        match config.get(member) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{place}.{member} must be a string")),
        }
    };
    let (sender, subject, additional, list, list_place) = match channel {
        Channel::Email => {
            // The mail is sent from the configured SMTP sender; `from` becomes its Reply-To.
            let from = text("from")?.ok_or_else(|| format!("{place}.from is required"))?;
            let content = config.get("content").filter(|c| !c.is_null());
            let content_text = |member: &str| -> Result<Option<String>, String> {
                match content.and_then(|c| c.get(member)) {
                    None | Some(Json::Null) => Ok(None),
                    Some(Json::String(s)) => Ok(Some(s.clone())),
                    Some(_) => Err(format!("{place}.content.{member} must be a string")),
                }
            };
            (
                Some(from),
                content_text("subject")?,
                content_text("additionalMessage")?,
                config.get("recipients").and_then(|r| r.get("to")),
                format!("{place}.recipients.to"),
            )
        }
        Channel::Sms => (
            text("senderId")?,
            None,
            text("additionalMessage")?,
            config.get("recipients"),
            format!("{place}.recipients"),
        ),
    };
    let list = match list {
        Some(Json::Array(items)) if !items.is_empty() => items,
        Some(Json::Array(_)) => {
            return Err(format!("{list_place} must name at least one recipient"));
        }
        Some(_) => return Err(format!("{list_place} must be a list")),
        None => return Err(format!("{list_place} is required")),
    };
    let mut recipients = Vec::with_capacity(list.len());
    for (i, detail) in list.iter().enumerate() {
        let at = format!("{list_place}[{i}].ssoIdentity");
        let identity = detail
            .get("ssoIdentity")
            .ok_or_else(|| format!("{at} is required"))?;
        let field = |name: &str| match identity.get(name) {
            Some(Json::String(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Err(format!(
                "{at}.{name} is required (recipients are looked up by identity store and user)"
            )),
        };
        let recipient = Recipient {
            identity_store_id: field("identityStoreId")?,
            user_id: field("userId")?,
        };
        notifier
            .check(channel, &recipient)
            .map_err(|why| format!("{at}: {why}"))?;
        recipients.push(recipient);
    }
    Ok(Box::new(Notification {
        notifier,
        channel,
        recipients,
        sender,
        subject,
        additional,
    }))
}

/// The comparison a `comparisonOperator` name stands for, as people read it.
fn symbol(operator: &str) -> Option<&'static str> {
    Some(match operator {
        "GREATER" => ">",
        "GREATER_OR_EQUAL" => ">=",
        "LESS" => "<",
        "LESS_OR_EQUAL" => "<=",
        "EQUAL" => "==",
        "NOT_EQUAL" => "!=",
        _ => return None,
    })
}

impl DetectorAction for Notification {
    fn expressions(&self) -> Vec<&Expr> {
        Vec::new()
    }

    fn run(&self, run: &mut Run<'_>) {
        if run.state != "ACTIVE" {
            return;
        }
        let model = run.detector.model;
        let key = run
            .detector
            .key
            .map_or(String::new(), |k| format!(" (key {k})"));
        let alarm = run.default_payload.cloned().unwrap_or(Json::Null);
        let evaluation = alarm
            .pointer("/alarmState/ruleEvaluation/simpleRuleEvaluation")
            .map(|e| {
                let operator = e["operator"].as_str().unwrap_or("?");
                format!(
                    "{} {} {}",
                    e["inputPropertyValue"].as_str().unwrap_or("?"),
                    symbol(operator).unwrap_or(operator),
                    e["thresholdValue"].as_str().unwrap_or("?")
                )
            });
        let mut body = String::new();
        if let Some(additional) = &self.additional {
            body.push_str(additional);
            body.push_str("\n\n");
        }
        body.push_str(&format!("Alarm {model}{key} is ACTIVE"));
        if let Some(evaluation) = evaluation {
            body.push_str(&format!(": {evaluation}"));
        }
        if self.channel == Channel::Email {
            body.push_str(&format!("\n\n{alarm:#}\n"));
        }
        let message = DirectMessage {
            subject: self
                .subject
                .clone()
                .unwrap_or_else(|| format!("IoT Events alarm {model}{key} is ACTIVE")),
            body,
            sender: self.sender.clone(),
        };
        let (notifier, channel, recipients) = (
            Arc::clone(&self.notifier),
            self.channel,
            self.recipients.clone(),
        );
        run.effects.push(Effect {
            action: match channel {
                Channel::Email => "email",
                Channel::Sms => "sms",
            },
            call: Box::pin(async move {
                notifier
                    .send(channel, &recipients, message)
                    .await
                    .map_err(|e| e.to_string())
            }),
        });
    }
}
