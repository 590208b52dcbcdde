//! This node's readers of a shared group: the QoS 0 queue subscription and the QoS 1/2 pull
//! consumer, each handing what NATS gives it to one member here.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{
    self, AckKind, consumer, consumer::pull::MessagesErrorKind, context::ConsumerInfoErrorKind,
};
use fleetcore_mqtt::protocol::QoS;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{Event, Readiness};
use crate::route::{Deliverer, decode_any};

/// One reader of a group on this node: what it reads and where it hands messages.
pub(super) struct Reader {
    pub(super) readiness: Arc<Readiness>,
    pub(super) group: String,
    pub(super) filter: String,
    /// The group's consumer (QoS 1/2) or queue group (QoS 0) for this subject.
    pub(super) name: String,
    pub(super) subject: String,
    /// The prefix of the subjects it reads (core or forward).
    pub(super) prefix: String,
    pub(super) deliverer: Deliverer,
}

/// How a reader of stored messages tells the coordinator its consumer is gone.
pub(super) struct Lost {
    pub(super) events: mpsc::UnboundedSender<Event>,
    pub(super) generation: u64,
}

/// Hands the QoS 0 messages NATS gives this node for the group to one of its members.
pub(super) async fn read_qos0(reader: Reader, client: async_nats::Client) {
    let Reader {
        readiness,
        group,
        filter,
        name,
        subject,
        prefix,
        mut deliverer,
    } = reader;
    let mut inbound = match client.queue_subscribe(subject.clone(), name).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, subject, "cannot subscribe to a shared group's messages");
            return;
        }
    };
    // Once the server has the subscription, messages published from now on reach it.
    if client.flush().await.is_ok() {
        readiness.set_up();
    }
    while let Some(nats) = inbound.next().await {
        match decode_any(&prefix, &nats) {
            Some(message) if message.qos == QoS::AtMostOnce => {
                deliverer
                    .deliver_shared(&group, &filter, Arc::new(message))
                    .await;
            }
            _ => {}
        }
    }
}

/// Pulls the QoS 1/2 messages of the group from its consumer and hands each to one member
/// here, acknowledging it once the member has it (on disk for a persistent session). When the
/// consumer is gone (another node deleted this generation), tells the coordinator and ends.
pub(super) async fn read_stored(
    reader: Reader,
    js: jetstream::Context,
    stream: String,
    lost: Lost,
) {
    let Reader {
        readiness,
        group,
        filter,
        name,
        prefix,
        mut deliverer,
        ..
    } = reader;
    let mut watermark = deliverer.router().queue_watermark();
    let mut set_up = false;
    let gone = || {
        tracing::debug!(
            group,
            filter,
            name,
            "a shared group's consumer is gone: joining again"
        );
        let _ = lost
            .events
            .send(Event::Lost(group.clone(), filter.clone(), lost.generation));
    };
    loop {
        let consumer = match js.get_stream(&stream).await {
            Ok(stream) => match stream.consumer_info(&name).await {
                Err(e) if matches!(e.kind(), ConsumerInfoErrorKind::NotFound) => return gone(),
                Err(e) => Err(e.to_string()),
                Ok(_) => stream
                    .get_consumer::<consumer::pull::Config>(&name)
                    .await
                    .map_err(|e| e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        let messages = match consumer {
            Ok(c) => c.messages().await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, group, filter, "cannot read a shared group's messages: trying again");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        // The consumer exists: every message stored from now on is the group's.
        if !set_up {
            set_up = true;
            readiness.set_up();
        }
        while let Some(next) = messages.next().await {
            let js_message = match next {
                Ok(m) => m,
                Err(e) if e.kind() == MessagesErrorKind::ConsumerDeleted => return gone(),
                // Silence may mean the consumer is gone: look it up again.
                Err(e) if e.kind() == MessagesErrorKind::MissingHeartbeat => break,
                Err(e) => {
                    tracing::debug!(error = %e, "reading a shared group's messages");
                    continue;
                }
            };
            let Some(message) = decode_any(&prefix, &js_message.message) else {
                acknowledge(&js_message, AckKind::Ack).await;
                continue;
            };
            match deliverer
                .deliver_shared(&group, &filter, Arc::new(message))
                .await
            {
                None => acknowledge(&js_message, AckKind::Nak(None)).await,
                Some(ticket) => {
                    if ticket > 0 {
                        let _ = watermark.wait_for(|durable| *durable >= ticket).await;
                    }
                    acknowledge(&js_message, AckKind::Ack).await;
                }
            }
        }
    }
}

async fn acknowledge(message: &jetstream::Message, kind: AckKind) {
    if let Err(e) = message.ack_with(kind).await {
        tracing::warn!(error = %e, "a shared group's message could not be acknowledged (it comes again)");
    }
}
