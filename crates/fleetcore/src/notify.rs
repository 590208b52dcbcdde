//! Wiring of the notification capability (SNS) in `fleetcore serve`: topics in the store,
//! deliveries to the broker (mqtt), the functions (lambda), the SMTP server (email) and HTTP
//! endpoints, links pointing at this server's HTTP listener; alarm mails and texts to the people
//! of the recipient directory.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use fleetcore_core::{AccountContext, FunctionInvoker, KvStore};
use fleetcore_mqtt::broker::Router;
use fleetcore_notify::{LaneConfig, Notify, NotifyConfig, Targets};

use crate::config::Settings;

/// Starts the notification service, its topics and subscriptions in `shared` (the nodes'
/// common tables with PostgreSQL), its outbox in this node's `store`; `http` is the bound HTTP
/// listener's address.
pub fn start(
    settings: &Settings,
    shared: &Arc<dyn KvStore>,
    store: &Arc<dyn KvStore>,
    router: &Arc<Router>,
    functions: Arc<dyn FunctionInvoker>,
    http: SocketAddr,
) -> anyhow::Result<Arc<Notify>> {
    let public_url = settings.sns_public_url.clone().unwrap_or_else(|| {
        if http.ip().is_unspecified() {
            let host = settings
                .server_names
                .first()
                .map_or("localhost", String::as_str);
            format!("http://{host}:{}", http.port())
        } else {
            format!("http://{http}")
        }
    });
    let notify = Notify::start(
        NotifyConfig {
            dir: settings.data_dir.join("sns"),
            public_url: public_url.clone(),
            account: AccountContext::new(&settings.region, &settings.account_id),
            targets: Targets {
                router: Some(Arc::clone(router)),
                functions: Some(functions),
                smtp: settings.smtp.clone(),
                https_ca_file: settings.rules_https_ca_file.clone(),
                recipients: settings.sns_recipients.clone(),
                sms_topic: settings.sns_sms_topic.clone(),
            },
            lanes: LaneConfig::default(),
        },
        Arc::clone(shared),
        Arc::clone(store),
    )
    .context("starting the notification service (SNS)")?;
    tracing::info!(%public_url, email = settings.smtp.is_some(), "notification service (SNS) started");
    Ok(notify)
}
