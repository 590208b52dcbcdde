// The reference architecture's enrichment processor, as a Lambda function for fleetcore, in
// Node.js: the twin of ../python-enrich/lambda_function.py.
//
// A topic rule (`SELECT *, topic(2) AS thing FROM 'devices/+/telemetry'`) invokes it with each
// message. It adds the thing's registry attributes (IoT DescribeThing through the AWS SDK for
// JavaScript v3, pointed at fleetcore by the AWS_ENDPOINT_URL the runtime sets), a Fahrenheit
// temperature, and forwards the record to the Kinesis stream named by the STREAM variable.
// Written for AWS Lambda; runs on fleetcore as is.
"use strict";

const { IoTClient, DescribeThingCommand, ResourceNotFoundException } = require("@aws-sdk/client-iot");
const { KinesisClient, PutRecordCommand } = require("@aws-sdk/client-kinesis");

const iot = new IoTClient({});
const kinesis = new KinesisClient({});
// The things' attributes, looked up once per worker (they change rarely).
const attributes = new Map();

async function thingAttributes(name) {
  if (!attributes.has(name)) {
    try {
      const thing = await iot.send(new DescribeThingCommand({ thingName: name }));
      attributes.set(name, thing.attributes || {});
    } catch (error) {
      if (!(error instanceof ResourceNotFoundException)) throw error;
      attributes.set(name, {});
    }
  }
  return attributes.get(name);
}

exports.handler = async (event) => {
  const thing = event.thing || "";
  const enriched = { ...event, attributes: await thingAttributes(thing) };
  if (typeof event.temperature === "number") {
    enriched.fahrenheit = Math.round((event.temperature * 9 / 5 + 32) * 100) / 100;
  }
  await kinesis.send(new PutRecordCommand({
    StreamName: process.env.STREAM,
    Data: Buffer.from(JSON.stringify(enriched)),
    PartitionKey: thing || "unknown",
  }));
  return enriched;
};
