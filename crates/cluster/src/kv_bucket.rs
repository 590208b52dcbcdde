//! The JetStream key-value buckets the nodes share (retained messages, shared groups' records),
//! made on nats-server 2.9's APIs when missing.

use async_nats::jetstream::{self, kv, stream};

/// The bucket `name` (history 1, file storage), made with `description` when missing.
pub(crate) async fn bucket(
    js: &jetstream::Context,
    name: &str,
    description: &str,
) -> Result<kv::Store, String> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{name}"),
        description: Some(description.into()),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: 1,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    js.get_key_value(name).await.map_err(|e| e.to_string())
}
