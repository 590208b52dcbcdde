//! `email` and `email-json`: mails through the SMTP server of the config file (lettre over
//! tokio, TLS with rustls: implicit TLS, STARTTLS, or none on a trusted network; optional
//! credentials; a pool of connections). `email` gets the message as text with an unsubscribe
//! link, `email-json` the JSON envelope; the confirmation mail carries the SubscribeURL.
//! Without an SMTP server configured, Subscribe refuses both protocols. A transient SMTP reply
//! (4xx) or no connection is retried, a permanent one (5xx) is not.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::Deserialize;

use super::{Built, Context, Failure, Outgoing, ProtocolKind, Targets, Transport};
use crate::message::confirmation;
use crate::model::Subscription;

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// STARTTLS, required (port 587 by default).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465 by default).
    Tls,
    /// No TLS (port 25 by default): only for a relay on a trusted network.
    None,
}

/// The SMTP server email subscriptions are delivered through (`[sns.smtp]` in the config).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// The server's host name.
    pub host: String,
    /// Its port (default by `security`: 587, 465 or 25).
    pub port: Option<u16>,
    /// `starttls` (default), `tls` or `none`.
    #[serde(default)]
    pub security: SmtpSecurity,
    /// The user name, if the server wants one.
    pub username: Option<String>,
    /// The password.
    pub password: Option<String>,
    /// The sender address (`From`), e.g. `fleetcore <alerts@example.com>`.
    pub from: String,
}

/// The `email` protocol.
pub(super) const EMAIL: ProtocolKind = ProtocolKind {
    name: "email",
    needs_confirmation: true,
    check_endpoint,
    build: build_text,
    unavailable: "no SMTP server is configured ([sns.smtp] in the config file)",
};

/// The `email-json` protocol.
pub(super) const EMAIL_JSON: ProtocolKind = ProtocolKind {
    name: "email-json",
    needs_confirmation: true,
    check_endpoint,
    build: build_json,
    unavailable: "no SMTP server is configured ([sns.smtp] in the config file)",
};

fn check_endpoint(endpoint: &str) -> Result<(), String> {
    Address::from_str(endpoint)
        .map(drop)
        .map_err(|e| format!("{endpoint:?} is not an email address: {e}"))
}

fn build_text(targets: &Targets) -> Built {
    build(targets, false)
}

fn build_json(targets: &Targets) -> Built {
    build(targets, true)
}

fn build(targets: &Targets, json: bool) -> Built {
    let Some(config) = &targets.smtp else {
        return Ok(None);
    };
    let (mailer, from) = mailer(config)?;
    Ok(Some(Arc::new(Email { mailer, from, json })))
}

/// The SMTP connection pool and sender address of `config`.
pub(crate) fn mailer(
    config: &SmtpConfig,
) -> Result<(AsyncSmtpTransport<Tokio1Executor>, Mailbox), String> {
    let from = Mailbox::from_str(&config.from)
        .map_err(|e| format!("sns.smtp.from {:?}: {e}", config.from))?;
    let builder = match config.security {
        SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host),
        SmtpSecurity::Starttls => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)
        }
        SmtpSecurity::None => {
            Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host).port(25))
        }
    }
    .map_err(|e| format!("sns.smtp.host {:?}: {e}", config.host))?;
    let mut builder = builder.timeout(Some(Duration::from_secs(30)));
    if let Some(port) = config.port {
        builder = builder.port(port);
    }
    if let Some(username) = &config.username {
        builder = builder.credentials(Credentials::new(
            username.clone(),
            config.password.clone().unwrap_or_default(),
        ));
    }
    Ok((builder.build(), from))
}

/// Sends `mail` once: `Retry` for a transient SMTP reply or no connection, `Permanent` for a
/// refusal.
pub(crate) async fn send_mail(
    mailer: &AsyncSmtpTransport<Tokio1Executor>,
    mail: lettre::Message,
    to: &str,
) -> Result<(), Failure> {
    match mailer.send(mail).await {
        Ok(_) => Ok(()),
        Err(error) if error.is_permanent() => Err(Failure::Permanent(format!(
            "SMTP refused the mail to {to}: {error}"
        ))),
        Err(error) => Err(Failure::Retry(format!("SMTP delivery to {to}: {error}"))),
    }
}

struct Email {
    mailer: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    json: bool,
}

impl Email {
    /// Subject and body of the mail for `outgoing`.
    fn content(
        &self,
        subscription: &Subscription,
        outgoing: &Outgoing,
        context: &Context,
    ) -> (String, String) {
        match outgoing {
            Outgoing::Confirmation => {
                let subject = "AWS Notification - Subscription Confirmation".to_string();
                if self.json {
                    let (_, envelope) = confirmation(
                        &subscription.topic_arn,
                        &subscription.token,
                        &context.signer,
                        &context.urls,
                    );
                    return (subject, envelope.to_string());
                }
                let link = context
                    .urls
                    .subscribe(&subscription.topic_arn, &subscription.token);
                let body = format!(
                    "You have chosen to subscribe to the topic:\n{}\n\n\
                     To confirm this subscription, click or visit the link below \
                     (If this was in error no action is necessary):\n{link}\n",
                    subscription.topic_arn
                );
                (subject, body)
            }
            Outgoing::Notification(published) => {
                let subject = published
                    .subject
                    .clone()
                    .unwrap_or_else(|| "AWS Notification Message".to_string());
                let envelope_protocol = if self.json { "email-json" } else { "email" };
                if self.json {
                    let envelope = published.envelope(
                        envelope_protocol,
                        &context.signer,
                        &context.urls,
                        &subscription.arn,
                        &subscription.token,
                    );
                    return (subject, envelope.to_string());
                }
                let unsubscribe = context
                    .urls
                    .unsubscribe(&subscription.arn, &subscription.token);
                let body = format!(
                    "{}\n\n--\nIf you wish to stop receiving notifications from this topic, \
                     please click or visit the link below to unsubscribe:\n{unsubscribe}\n",
                    published.message_for(envelope_protocol)
                );
                (subject, body)
            }
        }
    }
}

#[async_trait]
impl Transport for Email {
    async fn send(
        &self,
        subscription: &Subscription,
        outgoing: &Outgoing,
        context: &Context,
    ) -> Result<(), Failure> {
        let to = Mailbox::from_str(&subscription.endpoint)
            .map_err(|e| Failure::Permanent(format!("{}: {e}", subscription.endpoint)))?;
        let (subject, body) = self.content(subscription, outgoing, context);
        let content_type = if self.json {
            ContentType::parse("application/json").unwrap_or(ContentType::TEXT_PLAIN)
        } else {
            ContentType::TEXT_PLAIN
        };
        let mail = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(content_type)
            .body(body)
            .map_err(|e| Failure::Permanent(format!("building the mail: {e}")))?;
        send_mail(&self.mailer, mail, &subscription.endpoint).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn addresses_and_config() {
        assert!(check_endpoint("ops@example.com").is_ok());
        assert!(check_endpoint("not an address").is_err());
        let config: SmtpConfig = toml_like(
            r#"{"host":"mail.example.com","security":"tls","from":"fleetcore <a@example.com>"}"#,
        );
        assert_eq!(config.security, SmtpSecurity::Tls);
        let targets = Targets {
            smtp: Some(config),
            ..Targets::default()
        };
        assert!(build_text(&targets).expect("build").is_some());
        assert!(build_text(&Targets::default()).expect("build").is_none());
        let bad = Targets {
            smtp: Some(SmtpConfig {
                from: "nobody".into(),
                ..toml_like(r#"{"host":"h","from":"a@b.c"}"#)
            }),
            ..Targets::default()
        };
        assert!(build_json(&bad).is_err());
    }

    fn toml_like(json: &str) -> SmtpConfig {
        serde_json::from_str(json).expect("config")
    }
}
