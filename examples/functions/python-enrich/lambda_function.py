"""The reference architecture's enrichment processor, as a Lambda function for fleetcore.

A topic rule (`SELECT *, topic(2) AS thing FROM 'devices/+/telemetry'`) invokes it with each
message. It adds the thing's registry attributes (boto3 `iot`, pointed at fleetcore by the
AWS_ENDPOINT_URL the runtime sets), a Fahrenheit temperature, and forwards the record to the
Kinesis stream named by the STREAM variable. Written for AWS Lambda; runs on fleetcore as is.
"""

import json
import os

import boto3

iot = boto3.client("iot")
kinesis = boto3.client("kinesis")
_attributes: dict[str, dict] = {}


def thing_attributes(name: str) -> dict:
    """The thing's attributes, looked up once per worker (they change rarely)."""
    if name not in _attributes:
        try:
            _attributes[name] = iot.describe_thing(thingName=name).get("attributes", {})
        except iot.exceptions.ResourceNotFoundException:
            _attributes[name] = {}
    return _attributes[name]


def lambda_handler(event, context):
    thing = event.get("thing", "")
    enriched = dict(event, attributes=thing_attributes(thing))
    if isinstance(event.get("temperature"), (int, float)):
        enriched["fahrenheit"] = round(event["temperature"] * 9 / 5 + 32, 2)
    kinesis.put_record(StreamName=os.environ["STREAM"], Data=json.dumps(enriched).encode(),
                       PartitionKey=thing or "unknown")
    return enriched
