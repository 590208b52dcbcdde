//! Notifications sent straight to people (alarm models' `emailConfigurations` and
//! `smsConfigurations`), implementing core's `RecipientNotifier` seam. AWS names the recipients
//! as IAM Identity Center users (`identityStoreId`, `userId`); this server looks them up in the
//! recipient directory of its config file (`[[sns.recipients]]`). Mail goes through the SMTP
//! server of `email` subscriptions (same pool, same retry schedule); SMS is handed to an SMS
//! gateway over MQTT: a JSON `{"phoneNumber", "senderId", "message"}` published at QoS 1 on
//! `[sns] sms_topic`, which the gateway (a device with a modem or a bridge to a provider)
//! subscribes to. Without that topic, SMS recipients are refused when a model is created.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use fleetcore_core::{
    Channel, DirectFuture, DirectMessage, NotifyError, Recipient, RecipientNotifier,
};
use fleetcore_mqtt::broker::Router;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, Tokio1Executor};
use serde::Deserialize;

use super::{Failure, RetryPolicy, Targets, email, mqtt};

/// One person of the recipient directory (`[[sns.recipients]]` in the config file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientEntry {
    /// The identity store the user id belongs to (AWS's `identityStoreId`, e.g. `d-1234567890`).
    pub identity_store_id: String,
    /// The user id within it.
    pub user_id: String,
    /// Where mails go.
    pub email: Option<String>,
    /// Where text messages go (E.164, e.g. `+4915112345678`).
    pub phone: Option<String>,
}

/// A directory entry, checked.
struct Person {
    email: Option<Mailbox>,
    phone: Option<String>,
}

/// The recipient directory and the ways to reach its people.
pub struct Direct {
    people: BTreeMap<Recipient, Person>,
    mail: Option<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)>,
    sms: Option<(Arc<Router>, String)>,
    retry: RetryPolicy,
}

impl Direct {
    /// Checks the directory and builds the mailer and the SMS gateway's topic from `targets`.
    pub fn build(targets: &Targets, retry: RetryPolicy) -> Result<Direct, String> {
        let mut people = BTreeMap::new();
        for (i, entry) in targets.recipients.iter().enumerate() {
            let place = format!("sns.recipients[{i}]");
            if entry.identity_store_id.is_empty() || entry.user_id.is_empty() {
                return Err(format!(
                    "{place}: identity_store_id and user_id must not be empty"
                ));
            }
            let email = entry
                .email
                .as_deref()
                .map(|e| Mailbox::from_str(e).map_err(|why| format!("{place}.email {e:?}: {why}")))
                .transpose()?;
            if let Some(phone) = &entry.phone
                && !is_e164(phone)
            {
                return Err(format!(
                    "{place}.phone {phone:?} is not an E.164 number (+ and 8 to 15 digits)"
                ));
            }
            let key = Recipient {
                identity_store_id: entry.identity_store_id.clone(),
                user_id: entry.user_id.clone(),
            };
            let person = Person {
                email,
                phone: entry.phone.clone(),
            };
            if people.insert(key, person).is_some() {
                return Err(format!(
                    "{place}: {} / {} is listed twice",
                    entry.identity_store_id, entry.user_id
                ));
            }
        }
        let mail = targets.smtp.as_ref().map(email::mailer).transpose()?;
        let sms = match (&targets.router, &targets.sms_topic) {
            (Some(router), Some(topic)) => {
                if !fleetcore_mqtt::topic::valid_topic_name(topic, 256) {
                    return Err(format!("sns.sms_topic {topic:?} is not an MQTT topic name"));
                }
                Some((Arc::clone(router), topic.clone()))
            }
            _ => None,
        };
        Ok(Direct {
            people,
            mail,
            sms,
            retry,
        })
    }

    async fn mail(&self, to: &Mailbox, message: &DirectMessage) -> Result<(), String> {
        let Some((mailer, from)) = &self.mail else {
            return Err("no SMTP server is configured".into());
        };
        let mut builder = lettre::Message::builder()
            .from(from.clone())
            .to(to.clone())
            .subject(message.subject.clone())
            .header(ContentType::TEXT_PLAIN);
        if let Some(reply_to) = message.sender.as_deref().and_then(|s| s.parse().ok()) {
            builder = builder.reply_to(reply_to);
        }
        let address = to.email.to_string();
        let mut retries = 0;
        loop {
            let mail = builder
                .clone()
                .body(message.body.clone())
                .map_err(|e| format!("building the mail: {e}"))?;
            match email::send_mail(mailer, mail, &address).await {
                Ok(()) => return Ok(()),
                Err(Failure::Permanent(why)) => return Err(why),
                Err(Failure::Retry(why)) => {
                    retries += 1;
                    match self.retry.delay(retries) {
                        Some(wait) => tokio::time::sleep(wait).await,
                        None => return Err(why),
                    }
                }
            }
        }
    }

    fn text(&self, phone: &str, message: &DirectMessage) -> Result<(), String> {
        let Some((router, topic)) = &self.sms else {
            return Err("no SMS gateway is configured".into());
        };
        let payload = serde_json::json!({
            "phoneNumber": phone,
            "senderId": message.sender,
            "message": message.body,
        });
        mqtt::publish(router, topic, Bytes::from(payload.to_string()))
    }
}

fn is_e164(phone: &str) -> bool {
    phone
        .strip_prefix('+')
        .is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

fn channel_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "email",
        Channel::Sms => "sms",
    }
}

impl RecipientNotifier for Direct {
    fn check(&self, channel: Channel, recipient: &Recipient) -> Result<(), String> {
        let configured = match channel {
            Channel::Email => self.mail.is_some(),
            Channel::Sms => self.sms.is_some(),
        };
        if !configured {
            return Err(match channel {
                Channel::Email => {
                    "no SMTP server is configured ([sns] smtp_host in the config file)".into()
                }
                Channel::Sms => {
                    "no SMS gateway is configured ([sns] sms_topic in the config file)".into()
                }
            });
        }
        let Some(person) = self.people.get(recipient) else {
            return Err(format!(
                "identityStoreId {:?} userId {:?} is not in this server's recipient directory ([[sns.recipients]] in the config file)",
                recipient.identity_store_id, recipient.user_id
            ));
        };
        let reachable = match channel {
            Channel::Email => person.email.is_some(),
            Channel::Sms => person.phone.is_some(),
        };
        if reachable {
            Ok(())
        } else {
            Err(format!(
                "identityStoreId {:?} userId {:?} has no {} in the recipient directory",
                recipient.identity_store_id,
                recipient.user_id,
                match channel {
                    Channel::Email => "email address",
                    Channel::Sms => "phone number",
                }
            ))
        }
    }

    fn send<'a>(
        &'a self,
        channel: Channel,
        recipients: &'a [Recipient],
        message: DirectMessage,
    ) -> DirectFuture<'a> {
        Box::pin(async move {
            let mut failures = Vec::new();
            for recipient in recipients {
                let person = self.people.get(recipient);
                let outcome = match (channel, person) {
                    (_, None) => Err(format!(
                        "{} / {} is no longer in the recipient directory",
                        recipient.identity_store_id, recipient.user_id
                    )),
                    (
                        Channel::Email,
                        Some(Person {
                            email: Some(to), ..
                        }),
                    ) => self.mail(to, &message).await,
                    (
                        Channel::Sms,
                        Some(Person {
                            phone: Some(to), ..
                        }),
                    ) => self.text(to, &message),
                    (_, Some(_)) => Err(format!(
                        "{} / {} has no address for {}",
                        recipient.identity_store_id,
                        recipient.user_id,
                        channel_name(channel)
                    )),
                };
                let label = if outcome.is_ok() {
                    "delivered"
                } else {
                    "failed"
                };
                metrics::counter!("fleetcore_sns_direct_total", "channel" => channel_name(channel), "outcome" => label)
                    .increment(1);
                if let Err(why) = outcome {
                    failures.push(why);
                }
            }
            if failures.is_empty() {
                Ok(())
            } else {
                Err(NotifyError::Service(failures.join("; ")))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(user: &str, email: Option<&str>, phone: Option<&str>) -> RecipientEntry {
        RecipientEntry {
            identity_store_id: "d-1".into(),
            user_id: user.into(),
            email: email.map(Into::into),
            phone: phone.map(Into::into),
        }
    }

    fn who(user: &str) -> Recipient {
        Recipient {
            identity_store_id: "d-1".into(),
            user_id: user.into(),
        }
    }

    #[tokio::test]
    async fn checks_the_directory_and_the_channels() {
        let smtp = crate::SmtpConfig {
            host: "mail.example.com".into(),
            port: Some(2525),
            security: crate::SmtpSecurity::None,
            username: None,
            password: None,
            from: "fleetcore <a@example.com>".into(),
        };
        let targets = Targets {
            smtp: Some(smtp),
            recipients: vec![
                entry("ann", Some("ann@example.com"), None),
                entry("bob", None, Some("+4915112345678")),
            ],
            ..Targets::default()
        };
        let direct = Direct::build(&targets, RetryPolicy::default()).expect("directory");
        assert!(direct.check(Channel::Email, &who("ann")).is_ok());
        let no_mail = direct.check(Channel::Email, &who("bob")).unwrap_err();
        assert!(no_mail.contains("has no email address"), "{no_mail}");
        let unknown = direct.check(Channel::Email, &who("eve")).unwrap_err();
        assert!(
            unknown.contains("not in this server's recipient directory"),
            "{unknown}"
        );
        // No broker or no sms_topic: SMS is refused for everyone.
        let sms = direct.check(Channel::Sms, &who("bob")).unwrap_err();
        assert!(sms.contains("no SMS gateway is configured"), "{sms}");
    }

    #[test]
    fn bad_entries_are_refused_naming_them() {
        let bad = |e: RecipientEntry| {
            let targets = Targets {
                recipients: vec![e],
                ..Targets::default()
            };
            Direct::build(&targets, RetryPolicy::default())
                .err()
                .unwrap_or_default()
        };
        assert!(bad(entry("a", Some("not mail"), None)).contains("sns.recipients[0].email"));
        assert!(bad(entry("a", None, Some("0151"))).contains("sns.recipients[0].phone"));
        assert!(bad(entry("", None, None)).contains("must not be empty"));
        let twice = Targets {
            recipients: vec![entry("a", None, None), entry("a", None, None)],
            ..Targets::default()
        };
        let err = Direct::build(&twice, RetryPolicy::default())
            .err()
            .unwrap_or_default();
        assert!(err.contains("listed twice"), "{err}");
    }
}
