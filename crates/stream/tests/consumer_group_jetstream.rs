//! The consumer-group suite run against the JetStream backend (a private nats-server per test;
//! opening the backend again is a new client, as after a restart of fleetcore).

mod suite;
mod support;

use std::sync::Arc;

use fleetcore_stream::{JetStreamStreams, Stream};
use support::nats::NatsServer;

struct JetStream {
    nats: NatsServer,
}

impl JetStream {
    fn new() -> JetStream {
        JetStream {
            nats: NatsServer::start(),
        }
    }
}

impl suite::Backend for JetStream {
    async fn open(&self) -> Arc<dyn Stream> {
        Arc::new(
            JetStreamStreams::connect(&self.nats.url)
                .await
                .expect("connect to nats-server"),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_shards_and_see_every_record() {
    suite::members_share_shards_and_see_every_record(JetStream::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_members_shards_are_taken_over() {
    suite::a_stopped_members_shards_are_taken_over(JetStream::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_group_resumes_from_its_checkpoint() {
    suite::a_restarted_group_resumes_from_its_checkpoint(JetStream::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_per_key_survives_resharding() {
    suite::order_per_key_survives_resharding(JetStream::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latest_group_sees_only_new_records() {
    suite::a_latest_group_sees_only_new_records(JetStream::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconsumed_counts_what_the_group_has_not_checkpointed() {
    suite::unconsumed_counts_what_the_group_has_not_checkpointed(JetStream::new()).await;
}
