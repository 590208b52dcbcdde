//! MQTT 5 topic aliases in both directions: the ones the client set up for its PUBLISH
//! packets, and the ones the server teaches the client for deliveries.

use std::collections::HashMap;

use super::exit::{Exit, violation};
use crate::protocol::{Publish, Utf8, reason};

/// Aliases the client set up for its own PUBLISH packets. The map is made on the first alias:
/// most connections never use one, and a parked connection keeps 8 bytes, not an empty map.
#[derive(Debug, Default)]
pub(super) struct InboundAliases {
    #[expect(
        clippy::box_collection,
        reason = "boxed, an absent map costs the parked connection 8 bytes instead of 48"
    )]
    topics: Option<Box<HashMap<u16, Utf8>>>,
}

impl InboundAliases {
    /// Takes the alias out of `publish`, recording its topic or filling the empty topic in
    /// from it; `maximum` is the Topic Alias Maximum the server announced.
    pub(super) fn resolve(&mut self, publish: &mut Publish, maximum: u16) -> Result<(), Exit> {
        let Some(alias) = publish.properties.topic_alias.take() else {
            return Ok(());
        };
        if alias == 0 || alias > maximum {
            return Err(violation(
                reason::TOPIC_ALIAS_INVALID,
                "topic alias out of range",
            ));
        }
        if publish.topic.is_empty() {
            match self.topics.as_ref().and_then(|topics| topics.get(&alias)) {
                Some(t) => publish.topic = t.clone(),
                None => return Err(violation(reason::PROTOCOL_ERROR, "unknown topic alias")),
            }
        } else {
            self.topics
                .get_or_insert_default()
                .insert(alias, publish.topic.clone());
        }
        Ok(())
    }
}

/// Aliases the server taught the client, up to the client's Topic Alias Maximum. The map is
/// made on the first delivery to a client that takes aliases.
#[derive(Debug)]
pub(super) struct OutboundAliases {
    maximum: u16,
    #[expect(
        clippy::box_collection,
        reason = "boxed, an absent map costs the parked connection 8 bytes instead of 48"
    )]
    aliases: Option<Box<HashMap<Utf8, u16>>>,
}

impl OutboundAliases {
    /// No alias yet; `maximum` is the client's Topic Alias Maximum (0: none).
    pub(super) fn new(maximum: u16) -> OutboundAliases {
        OutboundAliases {
            maximum,
            aliases: None,
        }
    }

    /// Replaces the topic by an alias the client already knows, or teaches it a new one while
    /// the client's Topic Alias Maximum allows.
    pub(super) fn apply(&mut self, publish: &mut Publish) {
        if self.maximum == 0 {
            return;
        }
        let aliases = self.aliases.get_or_insert_default();
        if let Some(alias) = aliases.get(&publish.topic) {
            publish.properties.topic_alias = Some(*alias);
            publish.topic = Utf8::default();
        } else if aliases.len() < usize::from(self.maximum) {
            let alias = aliases.len() as u16 + 1;
            aliases.insert(publish.topic.clone(), alias);
            publish.properties.topic_alias = Some(alias);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::protocol::{PublishProperties, QoS};

    fn publish(topic: &str, alias: Option<u16>) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: Utf8::new(topic).unwrap_or_default(),
            packet_id: 0,
            properties: PublishProperties {
                topic_alias: alias,
                ..PublishProperties::default()
            },
            payload: Bytes::from_static(b"x"),
        }
    }

    fn code(result: Result<(), Exit>) -> Option<u8> {
        match result {
            Err(Exit::Violation { code, .. }) => Some(code),
            Err(other) => panic!("unexpected exit {other:?}"),
            Ok(()) => None,
        }
    }

    #[test]
    fn an_alias_set_with_a_topic_stands_in_for_it_later() {
        let mut aliases = InboundAliases::default();
        let mut first = publish("a/b", Some(3));
        assert_eq!(code(aliases.resolve(&mut first, 10)), None);
        assert_eq!(first.topic.as_str(), "a/b");
        assert_eq!(
            first.properties.topic_alias, None,
            "the alias is not forwarded"
        );
        let mut second = publish("", Some(3));
        assert_eq!(code(aliases.resolve(&mut second, 10)), None);
        assert_eq!(second.topic.as_str(), "a/b");
    }

    #[test]
    fn an_alias_can_be_pointed_at_another_topic() {
        let mut aliases = InboundAliases::default();
        assert_eq!(code(aliases.resolve(&mut publish("a", Some(1)), 5)), None);
        assert_eq!(code(aliases.resolve(&mut publish("b", Some(1)), 5)), None);
        let mut p = publish("", Some(1));
        assert_eq!(code(aliases.resolve(&mut p, 5)), None);
        assert_eq!(p.topic.as_str(), "b");
    }

    #[test]
    fn out_of_range_and_unknown_aliases_are_violations() {
        let mut aliases = InboundAliases::default();
        assert_eq!(
            code(aliases.resolve(&mut publish("a", Some(0)), 5)),
            Some(reason::TOPIC_ALIAS_INVALID)
        );
        assert_eq!(
            code(aliases.resolve(&mut publish("a", Some(6)), 5)),
            Some(reason::TOPIC_ALIAS_INVALID)
        );
        assert_eq!(
            code(aliases.resolve(&mut publish("", Some(2)), 5)),
            Some(reason::PROTOCOL_ERROR)
        );
    }

    #[test]
    fn a_publish_without_alias_is_left_alone() {
        let mut aliases = InboundAliases::default();
        let mut p = publish("t", None);
        assert_eq!(code(aliases.resolve(&mut p, 0)), None);
        assert_eq!(p.topic.as_str(), "t");
    }

    #[test]
    fn outbound_aliases_teach_then_replace_the_topic() {
        let mut aliases = OutboundAliases::new(1);
        let mut first = publish("x/y", None);
        aliases.apply(&mut first);
        assert_eq!(
            (first.topic.as_str(), first.properties.topic_alias),
            ("x/y", Some(1))
        );
        let mut again = publish("x/y", None);
        aliases.apply(&mut again);
        assert_eq!(
            (again.topic.as_str(), again.properties.topic_alias),
            ("", Some(1))
        );
        // The client's maximum is reached: a new topic goes out in full, without alias.
        let mut other = publish("z", None);
        aliases.apply(&mut other);
        assert_eq!(
            (other.topic.as_str(), other.properties.topic_alias),
            ("z", None)
        );
    }

    #[test]
    fn no_outbound_alias_when_the_client_accepts_none() {
        let mut aliases = OutboundAliases::new(0);
        let mut p = publish("x", None);
        aliases.apply(&mut p);
        assert_eq!((p.topic.as_str(), p.properties.topic_alias), ("x", None));
    }
}
