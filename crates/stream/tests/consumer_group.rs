//! The consumer-group suite run against the embedded backend.

mod suite;

use std::path::PathBuf;
use std::sync::Arc;

use fleetcore_stream::{EmbeddedConfig, EmbeddedStreams, Stream};

struct Embedded {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Embedded {
    fn new() -> Embedded {
        let dir = tempfile::tempdir().expect("tempdir");
        Embedded {
            path: dir.path().join("streams"),
            _dir: dir,
        }
    }
}

impl suite::Backend for Embedded {
    async fn open(&self) -> Arc<dyn Stream> {
        Arc::new(
            EmbeddedStreams::open(&self.path, EmbeddedConfig::default())
                .await
                .expect("open embedded streams"),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_shards_and_see_every_record() {
    suite::members_share_shards_and_see_every_record(Embedded::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_members_shards_are_taken_over() {
    suite::a_stopped_members_shards_are_taken_over(Embedded::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_group_resumes_from_its_checkpoint() {
    suite::a_restarted_group_resumes_from_its_checkpoint(Embedded::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_per_key_survives_resharding() {
    suite::order_per_key_survives_resharding(Embedded::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latest_group_sees_only_new_records() {
    suite::a_latest_group_sees_only_new_records(Embedded::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconsumed_counts_what_the_group_has_not_checkpointed() {
    suite::unconsumed_counts_what_the_group_has_not_checkpointed(Embedded::new()).await;
}
