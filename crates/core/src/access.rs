//! How the broker asks what an authenticated connection may do, without knowing how policies are
//! kept. The identity capability implements [`ConnectionGrant`] with IoT policies; the binary
//! hands one grant per connection to the broker.

/// An MQTT action subject to authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MqttAction {
    /// A PUBLISH without the RETAIN flag, checked against the topic name.
    Publish,
    /// A PUBLISH with the RETAIN flag, checked against the topic name. Implementations require
    /// both the publish and the retain permission (AWS requires `iot:Publish` and
    /// `iot:RetainPublish`), so the broker asks once.
    RetainPublish,
    /// A SUBSCRIBE, checked against the topic filter as written (`+` and `#` included).
    Subscribe,
    /// A delivery to this connection, checked against the message's topic name.
    Receive,
}

impl MqttAction {
    /// Every action, in a fixed order (index with [`MqttAction::index`]).
    pub const ALL: [MqttAction; 4] = [
        MqttAction::Publish,
        MqttAction::RetainPublish,
        MqttAction::Subscribe,
        MqttAction::Receive,
    ];

    /// Position in [`MqttAction::ALL`], for per-action tables.
    pub fn index(self) -> usize {
        match self {
            MqttAction::Publish => 0,
            MqttAction::RetainPublish => 1,
            MqttAction::Subscribe => 2,
            MqttAction::Receive => 3,
        }
    }

    /// Short name used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            MqttAction::Publish => "publish",
            MqttAction::RetainPublish => "retain_publish",
            MqttAction::Subscribe => "subscribe",
            MqttAction::Receive => "receive",
        }
    }
}

/// What one authenticated connection may do; asked on every PUBLISH / SUBSCRIBE / delivery, so
/// implementations cache.
pub trait ConnectionGrant: Send + Sync {
    /// `resource` is the topic name (Publish, RetainPublish, Receive) or topic filter (Subscribe).
    fn allows(&self, action: MqttAction, resource: &str) -> bool;
    /// Re-checks after identity state changed (certificate status, policies, attachments):
    /// Err(reason) if the connection must end; clears caches.
    fn revalidate(&self) -> Result<(), String>;
}

/// A grant that allows everything (anonymous clients without an anonymous policy).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl ConnectionGrant for AllowAll {
    fn allows(&self, _action: MqttAction, _resource: &str) -> bool {
        true
    }

    fn revalidate(&self) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_all_allows_everything_and_stays_valid() {
        let grant: &dyn ConnectionGrant = &AllowAll;
        for action in MqttAction::ALL {
            assert!(grant.allows(action, "any/topic/#"));
        }
        assert_eq!(grant.revalidate(), Ok(()));
    }

    #[test]
    fn indices_follow_all() {
        for (i, action) in MqttAction::ALL.iter().enumerate() {
            assert_eq!(action.index(), i);
        }
    }
}
