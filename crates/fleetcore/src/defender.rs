//! Wiring of Device Defender in `fleetcore serve`: its meter counts on the broker's
//! connections, its alerts reach MQTT through the server-publish helper and SNS through core's
//! TopicPublisher, and targets resolve against the registry.

use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use fleetcore_core::{AccountContext, KvStore, TopicPublisher};
use fleetcore_defender::alerts::{Alerts, MqttPublisher};
use fleetcore_defender::audit::schedule::ScheduleClock;
use fleetcore_defender::audit::{AnonymousAccess, Audits};
use fleetcore_defender::detector::ThingDirectory;
use fleetcore_defender::logging::{IotLogging, LogGate};
use fleetcore_defender::reports::{self, DeviceReports};
use fleetcore_defender::{Defender, DefenderConfig};
use fleetcore_identity::IdentityService;
use fleetcore_identity::policy::Policies;
use fleetcore_mqtt::broker::{DeviceMeter, Router};
use fleetcore_mqtt::protocol::QoS;

use crate::config::Settings;

/// The broker as Defender alerts publish to it.
struct Broker(Arc<Router>);

impl MqttPublisher for Broker {
    fn publish(&self, topic: &str, payload: Bytes, qos: u8) -> Result<(), String> {
        let qos = if qos == 1 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        crate::server_publish::publish(&self.0, topic, payload, qos)
    }
}

/// Opens Defender, installs its meter on the broker (before any listener accepts a client),
/// serves device metrics reports through a broker tap and starts the detector.
pub fn start(
    settings: &Settings,
    store: &Arc<dyn KvStore>,
    identity: &Arc<IdentityService>,
    router: &Arc<Router>,
    notify: Arc<dyn TopicPublisher>,
) -> anyhow::Result<Arc<Defender>> {
    let defender = Defender::open(
        DefenderConfig {
            period: settings.defender_period,
        },
        Arc::clone(store),
        AccountContext::new(&settings.region, &settings.account_id),
        Arc::clone(identity) as Arc<dyn ThingDirectory>,
    )
    .context("opening Device Defender")?;
    router.set_device_meter(defender.meter() as Arc<dyn DeviceMeter>);
    let broker: Arc<dyn MqttPublisher> = Arc::new(Broker(Arc::clone(router)));
    router
        .add_tap(
            reports::FILTERS.iter().map(|f| f.to_string()).collect(),
            Arc::new(DeviceReports::new(
                Arc::clone(&defender),
                Arc::clone(&broker),
            )),
        )
        .context("serving Device Defender metrics reports")?;
    defender.start(Alerts::new(Some(notify), Some(broker)));
    Ok(defender)
}

/// Opens the account's logging options (SetV2LoggingOptions) and applies them to the writer of
/// the platform's `AWSIotLogsV2` events, now and at every change.
pub fn logging(store: &Arc<dyn KvStore>) -> anyhow::Result<Arc<IotLogging>> {
    let gate: LogGate = Arc::new(fleetcore_observe::logs::platform::set_level);
    Ok(Arc::new(
        IotLogging::open(Arc::clone(store), gate).context("opening the logging options")?,
    ))
}

/// Opens Defender's audits (their notifications go to SNS through `notify`) and starts their
/// scheduler.
pub fn audits(
    settings: &Settings,
    store: &Arc<dyn KvStore>,
    policies: &Arc<Policies>,
    identity: &Arc<IdentityService>,
    defender: &Defender,
    logging: &Arc<IotLogging>,
    notify: Arc<dyn TopicPublisher>,
) -> Arc<Audits> {
    let mut audits = Audits::new(
        Arc::clone(store),
        Arc::clone(policies),
        Arc::clone(identity),
        defender,
        Arc::clone(logging),
        ScheduleClock::new(settings.defender_audit_day),
    )
    .with_notifications(notify);
    // Anonymous clients exist only where a plain listener admits them.
    if settings.allow_anonymous && (settings.mqtt.is_some() || settings.ws.is_some()) {
        audits = audits.with_anonymous_access(AnonymousAccess {
            policy: settings.anonymous_policy.clone(),
        });
    }
    let audits = Arc::new(audits);
    audits.start_scheduler();
    audits
}
