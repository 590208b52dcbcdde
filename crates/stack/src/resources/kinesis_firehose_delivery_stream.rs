//! `aws_kinesis_firehose_delivery_stream` with `destination = "extended_s3"`: the S3 bucket is
//! fleetcore's lake (the bucket name is the lake's top folder). fleetcore has no
//! UpdateDestination, so any change replaces the delivery stream.

use serde_json::{Map, Value, json};

use super::{ResourceType, block, blocks, found, gone, opt_s, s, unexpected};
use crate::api::{Api, ApiError};
use crate::schema::{Arg, BlockSpec, Schema};

pub struct DeliveryStream;

/// The type.
pub static TYPE: DeliveryStream = DeliveryStream;

static PARAMETER: Schema = Schema::args(&[
    Arg::required("parameter_name"),
    Arg::required("parameter_value"),
]);
static PROCESSOR: Schema = Schema {
    args: &[Arg::required("type")],
    blocks: &[BlockSpec::new("parameters", &PARAMETER)],
    computed: &[],
};
static PROCESSING: Schema = Schema {
    args: &[Arg::optional("enabled")],
    blocks: &[BlockSpec::new("processors", &PROCESSOR)],
    computed: &[],
};
static DYNAMIC_PARTITIONING: Schema =
    Schema::args(&[Arg::optional("enabled"), Arg::optional("retry_duration")]);
static EXTENDED_S3: Schema = Schema {
    args: &[
        Arg::required("role_arn"),
        Arg::required("bucket_arn"),
        Arg::optional("prefix"),
        Arg::optional("error_output_prefix"),
        Arg::optional("buffering_size"),
        Arg::optional("buffering_interval"),
        Arg::optional("compression_format"),
        Arg::optional("file_extension"),
        Arg::optional("custom_time_zone"),
    ],
    blocks: &[
        BlockSpec::new("processing_configuration", &PROCESSING),
        BlockSpec::new("dynamic_partitioning_configuration", &DYNAMIC_PARTITIONING),
    ],
    computed: &[],
};
static KINESIS_SOURCE: Schema = Schema::args(&[
    Arg::required("kinesis_stream_arn"),
    Arg::required("role_arn"),
]);
static SCHEMA: Schema = Schema {
    args: &[
        Arg::required("name").force_new(),
        Arg::required("destination").force_new(),
        Arg::optional("tags").force_new(),
    ],
    blocks: &[
        BlockSpec::new("extended_s3_configuration", &EXTENDED_S3).force_new(),
        BlockSpec::new("kinesis_source_configuration", &KINESIS_SOURCE).force_new(),
    ],
    computed: &["arn", "id"],
};

const TARGET: &str = "Firehose_20150804";

async fn call(api: &Api, op: &str, body: Value) -> Result<Value, ApiError> {
    api.json_rpc("firehose", TARGET, "1.1", op, &body).await
}

fn extended_s3(c: &Value) -> Value {
    let mut out = Map::new();
    out.insert("RoleARN".into(), json!(s(c, "role_arn")));
    out.insert("BucketARN".into(), json!(s(c, "bucket_arn")));
    for (from, to) in [
        ("prefix", "Prefix"),
        ("error_output_prefix", "ErrorOutputPrefix"),
        ("compression_format", "CompressionFormat"),
        ("file_extension", "FileExtension"),
        ("custom_time_zone", "CustomTimeZone"),
    ] {
        if let Some(v) = opt_s(c, from) {
            out.insert(to.into(), json!(v));
        }
    }
    // The provider's defaults: 5 MB, 300 s.
    out.insert(
        "BufferingHints".into(),
        json!({
            "SizeInMBs": c.get("buffering_size").cloned().unwrap_or(json!(5)),
            "IntervalInSeconds": c.get("buffering_interval").cloned().unwrap_or(json!(300)),
        }),
    );
    if let Some(p) = block(c, "processing_configuration") {
        let processors: Vec<Value> = blocks(p, "processors")
            .iter()
            .map(|proc| {
                let parameters: Vec<Value> = blocks(proc, "parameters")
                    .iter()
                    .map(|x| json!({"ParameterName": s(x, "parameter_name"), "ParameterValue": s(x, "parameter_value")}))
                    .collect();
                json!({"Type": s(proc, "type"), "Parameters": parameters})
            })
            .collect();
        out.insert(
            "ProcessingConfiguration".into(),
            json!({"Enabled": p.get("enabled").cloned().unwrap_or(json!(false)), "Processors": processors}),
        );
    }
    if let Some(d) = block(c, "dynamic_partitioning_configuration") {
        out.insert(
            "DynamicPartitioningConfiguration".into(),
            json!({
                "Enabled": d.get("enabled").cloned().unwrap_or(json!(false)),
                "RetryOptions": {"DurationInSeconds": d.get("retry_duration").cloned().unwrap_or(json!(300))},
            }),
        );
    }
    Value::Object(out)
}

#[async_trait::async_trait]
impl ResourceType for DeliveryStream {
    fn name(&self) -> &'static str {
        "aws_kinesis_firehose_delivery_stream"
    }
    fn schema(&self) -> &'static Schema {
        &SCHEMA
    }
    fn validate(&self, args: &Value) -> Result<(), String> {
        if s(args, "destination") != "extended_s3" {
            return Err(format!(
                "destination {:?} is not supported: fleetcore delivers to its lake (\"extended_s3\")",
                s(args, "destination")
            ));
        }
        if block(args, "extended_s3_configuration").is_none() {
            return Err("an `extended_s3_configuration` block is required".to_string());
        }
        Ok(())
    }
    async fn create(&self, api: &Api, args: &Value) -> Result<Value, ApiError> {
        let name = s(args, "name");
        let mut body = json!({"DeliveryStreamName": name, "DeliveryStreamType": "DirectPut"});
        if let Some(c) = block(args, "extended_s3_configuration") {
            body["ExtendedS3DestinationConfiguration"] = extended_s3(c);
        }
        if let Some(k) = block(args, "kinesis_source_configuration") {
            body["DeliveryStreamType"] = json!("KinesisStreamAsSource");
            body["KinesisStreamSourceConfiguration"] = json!({"KinesisStreamARN": s(k, "kinesis_stream_arn"), "RoleARN": s(k, "role_arn")});
        }
        if let Some(tags) = args.get("tags") {
            body["Tags"] = super::tag_list(&json!({"tags": tags}));
        }
        let out = call(api, "CreateDeliveryStream", body).await?;
        let arn = opt_s(&out, "DeliveryStreamARN")
            .ok_or_else(|| unexpected("CreateDeliveryStream", "no DeliveryStreamARN"))?;
        Ok(json!({"arn": arn, "id": arn}))
    }
    async fn read(&self, api: &Api, args: &Value, _: &Value) -> Result<Option<Value>, ApiError> {
        let answer = found(
            call(
                api,
                "DescribeDeliveryStream",
                json!({"DeliveryStreamName": s(args, "name")}),
            )
            .await,
        )?;
        Ok(answer.map(|_| json!({})))
    }
    async fn delete(&self, api: &Api, args: &Value, _: &Value) -> Result<(), ApiError> {
        gone(
            call(
                api,
                "DeleteDeliveryStream",
                json!({"DeliveryStreamName": s(args, "name")}),
            )
            .await,
        )
    }
}
