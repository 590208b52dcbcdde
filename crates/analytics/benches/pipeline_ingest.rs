//! Pipeline ingest rate: messages put into a channel (batches of 500, as BatchPutMessage /
//! the rules action put them, every put durable), through four activities (filter, math,
//! addAttributes, removeAttributes) into a Parquet datastore; rows per second from the first
//! put until the datastore holds every row that passed the filter (counted with SQL).
//!
//!     cargo bench -p fleetcore-analytics --bench pipeline_ingest -- [ROWS]

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetcore_analytics::{Analytics, AnalyticsConfig, Services, query};
use fleetcore_core::{AccountContext, ChannelMessage, KvStore, RedbStore};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rows: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn KvStore> = Arc::new(RedbStore::open(&dir.path().join("store.redb"))?);
    let analytics = Analytics::start(
        store,
        AnalyticsConfig {
            root: dir.path().join("analytics"),
            account: AccountContext::new("us-east-1", "000000000000"),
            content_base_url: "http://127.0.0.1:0".into(),
            consumer_owner: "test-node".into(),
        },
        Services::default(),
    )?;
    analytics
        .create_channel("bench", json!({}), json!({}), Default::default())
        .await?;
    analytics
        .create_datastore(
            fleetcore_analytics::resources::NewDatastore {
                name: "bench".into(),
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    let activities = vec![
        json!({"channel": {"name": "c", "channelName": "bench", "next": "f"}}),
        json!({"filter": {"name": "f", "filter": "temp >= 0", "next": "m"}}),
        json!({"math": {"name": "m", "attribute": "tempF", "math": "temp * 9 / 5 + 32", "next": "a"}}),
        json!({"addAttributes": {"name": "a", "attributes": {"deviceId": "device"}, "next": "r"}}),
        json!({"removeAttributes": {"name": "r", "attributes": ["noise"], "next": "d"}}),
        json!({"datastore": {"name": "d", "datastoreName": "bench"}}),
    ];
    analytics
        .create_pipeline("bench", activities, Default::default())
        .await?;
    let batch = 500;
    let mut expected = 0usize;
    let started = Instant::now();
    let mut puts = Vec::new();
    for start in (0..rows).step_by(batch) {
        let messages: Vec<ChannelMessage> = (start..(start + batch).min(rows))
            .map(|i| {
                let temp = (i % 100) as i64 - 10;
                if temp >= 0 {
                    expected += 1;
                }
                ChannelMessage {
                    message_id: i.to_string(),
                    payload: json!({"deviceId": format!("d{}", i % 1000), "seq": i, "temp": temp, "noise": "x"})
                        .to_string()
                        .into_bytes(),
                }
            })
            .collect();
        let analytics = Arc::clone(&analytics);
        puts.push(tokio::spawn(async move {
            analytics.put_messages("bench", messages).await
        }));
        if puts.len() >= 16 {
            for put in puts.drain(..) {
                put.await??.into_iter().collect::<Result<Vec<_>, _>>()?;
            }
        }
    }
    for put in puts {
        put.await??.into_iter().collect::<Result<Vec<_>, _>>()?;
    }
    let put_done = started.elapsed();
    loop {
        let batches = query::run(&analytics.tables()?, "SELECT count(*) AS n FROM bench").await?;
        let n = batches
            .first()
            .map(|b| fleetcore_analytics::columns::json_value(b.column(0), 0))
            .and_then(|v| v.as_u64())
            .unwrap_or(0) as usize;
        if n >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = started.elapsed();
    println!(
        "{rows} messages ({expected} past the filter): puts done in {:.2}s, datastore complete in {:.2}s: {:.0} rows/s",
        put_done.as_secs_f64(),
        total.as_secs_f64(),
        rows as f64 / total.as_secs_f64()
    );
    Ok(())
}
