//! `fleetcore bench kinesis`: PutRecords and GetRecords throughput of a fleetcore server's
//! Kinesis API, whatever stream backend it runs on. Requests are signed with the admin
//! credentials; each writer and each shard reader keeps one HTTP/1.1 connection.
//!
//! The write phase puts `--records` records of `--record-size` bytes in PutRecords batches of
//! `--batch` from `--writers` connections; the read phase then reads every shard from
//! TRIM_HORIZON with GetRecords (Limit 10000), one connection per shard, until it has all of
//! them back. The report gives records/s and MB/s (payload bytes) of each phase.

use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use fleetcore_api::sigv4::{self, Credentials};
use http_body_util::{BodyExt, Full};
use hyper::http::{HeaderMap, HeaderValue, Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cli::client::{ApiClient, EndpointArgs};

/// Kinesis load: PutRecords then GetRecords throughput through the server's Kinesis API.
#[derive(clap::Args, Debug)]
pub struct KinesisBenchArgs {
    #[command(flatten)]
    pub endpoint: EndpointArgs,

    /// Stream to create, load and delete (it must not exist). [default: bench-<pid>]
    #[arg(long, value_name = "NAME")]
    pub stream: Option<String>,

    /// Shards of the stream.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub shards: u32,

    /// Records to put in all.
    #[arg(long, default_value_t = 200_000, value_name = "N")]
    pub records: u64,

    /// Bytes of payload per record.
    #[arg(long, default_value_t = 256, value_name = "BYTES")]
    pub record_size: usize,

    /// Records per PutRecords call (1..=500).
    #[arg(long, default_value_t = 500, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=500))]
    pub batch: u64,

    /// Concurrent writing connections.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub writers: u32,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// One kept-alive, signed JSON 1.1 connection to the Kinesis API.
struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    endpoint: String,
    region: String,
    credentials: Credentials,
}

impl Connection {
    async fn open(client: &ApiClient) -> anyhow::Result<Connection> {
        let endpoint = client.endpoint().to_string();
        let stream = TcpStream::connect(&endpoint)
            .await
            .with_context(|| format!("connecting to {endpoint}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Connection {
            sender,
            endpoint,
            region: client.region().to_string(),
            credentials: client.credentials().clone(),
        })
    }

    /// Calls `Kinesis_20131202.<op>`; an AWS error becomes an error with its `__type`.
    async fn call(&mut self, op: &str, body: &Value) -> anyhow::Result<Value> {
        let body = body.to_string().into_bytes();
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/x-amz-json-1.1"),
        );
        headers.insert(
            "x-amz-target",
            HeaderValue::from_str(&format!("Kinesis_20131202.{op}"))?,
        );
        sigv4::sign(
            &self.credentials,
            &self.region,
            "kinesis",
            "POST",
            "/",
            &self.endpoint,
            &mut headers,
            &body,
            SystemTime::now(),
        )
        .map_err(|e| anyhow!("signing the request: {e}"))?;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri("/")
            .body(Full::new(Bytes::from(body)))?;
        *request.headers_mut() = headers;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{op}: HTTP {} {}", status.as_u16(), value);
        }
        Ok(value)
    }
}

/// Throughput of one phase.
fn rates(records: u64, bytes: u64, elapsed: Duration) -> Value {
    let secs = elapsed.as_secs_f64().max(1e-9);
    json!({
        "records": records,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "records_per_sec": (records as f64 / secs).round() as u64,
        "mb_per_sec": ((bytes as f64 / secs / 1e6) * 100.0).round() / 100.0,
    })
}

/// Runs the benchmark and prints its report.
pub async fn run(args: KinesisBenchArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.endpoint)?;
    let name = args
        .stream
        .clone()
        .unwrap_or_else(|| format!("bench-{}", std::process::id()));
    let mut control = Connection::open(&client).await?;
    control
        .call(
            "CreateStream",
            &json!({"StreamName": name, "ShardCount": args.shards}),
        )
        .await?;
    let outcome = load(&client, &name, &args).await;
    let deleted = control
        .call("DeleteStream", &json!({"StreamName": name}))
        .await;
    let report = outcome?;
    deleted?;
    if args.json {
        println!("{report}");
    } else {
        println!(
            "kinesis bench: {} records of {} B, {} shards, batches of {}, {} writers",
            args.records, args.record_size, args.shards, args.batch, args.writers
        );
        for phase in ["put", "get"] {
            let r = &report[phase];
            println!(
                "  {phase}: {} records in {} s = {} records/s, {} MB/s",
                r["records"], r["seconds"], r["records_per_sec"], r["mb_per_sec"]
            );
        }
    }
    Ok(())
}

async fn load(client: &ApiClient, name: &str, args: &KinesisBenchArgs) -> anyhow::Result<Value> {
    let payload = STANDARD.encode(
        (0..args.record_size)
            .map(|i| (i * 31 % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let batches = args.records.div_ceil(args.batch);
    let started = Instant::now();
    let mut writers = JoinSet::new();
    for w in 0..u64::from(args.writers.max(1)) {
        let mut conn = Connection::open(client).await?;
        let (name, payload) = (name.to_string(), payload.clone());
        let (total, batch, writers_n) = (args.records, args.batch, u64::from(args.writers.max(1)));
        writers.spawn(async move {
            let mut put = 0u64;
            let mut b = w;
            while b < batches {
                let first = b * batch;
                let count = batch.min(total - first);
                let records: Vec<Value> = (first..first + count)
                    .map(|n| json!({"Data": payload, "PartitionKey": format!("k{n}")}))
                    .collect();
                let out = conn
                    .call(
                        "PutRecords",
                        &json!({"StreamName": name, "Records": records}),
                    )
                    .await?;
                let failed = out["FailedRecordCount"].as_u64().unwrap_or(0);
                if failed > 0 {
                    bail!(
                        "{failed} records of a PutRecords failed: {}",
                        out["Records"]
                    );
                }
                put += count;
                b += writers_n;
            }
            Ok::<u64, anyhow::Error>(put)
        });
    }
    let mut put = 0;
    while let Some(done) = writers.join_next().await {
        put += done??;
    }
    let put_elapsed = started.elapsed();
    let bytes_per_record = args.record_size as u64;

    let started = Instant::now();
    let mut readers = JoinSet::new();
    for shard in 0..args.shards {
        let mut conn = Connection::open(client).await?;
        let name = name.to_string();
        readers.spawn(async move {
            let shard_id = format!("shardId-{shard:012}");
            let out = conn
                .call(
                    "GetShardIterator",
                    &json!({"StreamName": name, "ShardId": shard_id, "ShardIteratorType": "TRIM_HORIZON"}),
                )
                .await?;
            let mut iterator = out["ShardIterator"].clone();
            let mut read = 0u64;
            loop {
                let out = conn
                    .call("GetRecords", &json!({"ShardIterator": iterator, "Limit": 10000}))
                    .await?;
                let got = out["Records"].as_array().map_or(0, Vec::len) as u64;
                read += got;
                iterator = out["NextShardIterator"].clone();
                if got == 0 || iterator.is_null() {
                    return Ok::<u64, anyhow::Error>(read);
                }
            }
        });
    }
    let mut read = 0;
    while let Some(done) = readers.join_next().await {
        read += done??;
    }
    let get_elapsed = started.elapsed();
    if read != put {
        bail!("read {read} records back, put {put}");
    }
    Ok(json!({
        "stream": name,
        "shards": args.shards,
        "record_size": args.record_size,
        "batch": args.batch,
        "writers": args.writers,
        "put": rates(put, put * bytes_per_record, put_elapsed),
        "get": rates(read, read * bytes_per_record, get_elapsed),
    }))
}
