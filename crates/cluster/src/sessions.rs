//! Persistent sessions on any node: the release requests a node taking a session over sends to
//! its owner (see `fleetcore_mqtt::broker::SessionRelease`), on the core NATS subject
//! `<prefix>.session.release.<owner node id>` (payload: the client id; answer: `ok` once the
//! owner's writes for the session are durable, else the error). Request and reply suffice:
//! a release is about the owner's memory now, and an owner that does not answer (dead, or
//! NATS down) makes the CONNECT fail with 0x88 rather than resume a half-written session; a
//! dead owner (no heartbeat) is not asked at all.

use std::sync::Arc;

use bytes::Bytes;
use fleetcore_mqtt::broker::{ReleaseFuture, Router, SessionRelease};
use futures_util::StreamExt;

use crate::members::Members;
use crate::{ClusterConfig, ClusterError};

/// The answer of a release that succeeded.
const OK: &[u8] = b"ok";

/// Asks other nodes to release sessions, over NATS.
struct Releaser {
    client: async_nats::Client,
    prefix: String,
    members: Arc<Members>,
}

fn subject(prefix: &str, node: &str) -> String {
    format!("{prefix}.session.release.{node}")
}

impl SessionRelease for Releaser {
    fn is_live(&self, node: &str) -> bool {
        self.members.is_live(node)
    }

    fn release(&self, node: &str, client_id: &str) -> ReleaseFuture {
        let client = self.client.clone();
        let subject = subject(&self.prefix, node);
        let payload = Bytes::from(client_id.to_owned());
        Box::pin(async move {
            let answer = client
                .request(subject, payload)
                .await
                .map_err(|e| e.to_string())?;
            if answer.payload.as_ref() == OK {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&answer.payload).into_owned())
            }
        })
    }
}

/// Answers the other nodes' release requests for this node's sessions, and installs the
/// releaser in `router`.
pub(crate) async fn start(
    config: &ClusterConfig,
    client: &async_nats::Client,
    router: Arc<Router>,
    members: Arc<Members>,
) -> Result<(), ClusterError> {
    let own = subject(&config.subject_prefix, &config.node_id);
    let mut requests =
        client
            .subscribe(own.clone())
            .await
            .map_err(|e| ClusterError::Subscribe {
                subject: own,
                message: e.to_string(),
            })?;
    let (answering, releasing) = (client.clone(), Arc::clone(&router));
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let Some(reply) = request.reply else {
                continue;
            };
            let (client, router) = (answering.clone(), Arc::clone(&releasing));
            tokio::spawn(async move {
                let answer = match std::str::from_utf8(&request.payload) {
                    Ok(client_id) => match router.release(client_id).await {
                        Ok(()) => Bytes::from_static(OK),
                        Err(e) => Bytes::from(e.to_string()),
                    },
                    Err(_) => Bytes::from_static(b"the client id is not UTF-8"),
                };
                if let Err(e) = client.publish(reply, answer).await {
                    tracing::warn!(error = %e, "a session release was not answered");
                }
            });
        }
    });
    router.set_session_release(Arc::new(Releaser {
        client: client.clone(),
        prefix: config.subject_prefix.clone(),
        members,
    }));
    Ok(())
}
