// Enhanced fan-out with the AWS SDK for JavaScript v3 against a real `sluice server`.
//
// SubscribeToShard answers with an `application/vnd.amazon.eventstream` body; the v3 client
// reads it over HTTP/2 (NodeHttp2Handler, h2c with prior knowledge on an http:// endpoint)
// and exposes it as an async iterable. The handler is deliberately left at its default.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { randomBytes } from "node:crypto";

import { poll, startServer } from "./server.mjs";

import {
  CreateStreamCommand,
  DeleteStreamCommand,
  DescribeStreamConsumerCommand,
  DescribeStreamSummaryCommand,
  KinesisClient,
  ListShardsCommand,
  PutRecordCommand,
  RegisterStreamConsumerCommand,
  ResourceInUseException,
  SplitShardCommand,
  SubscribeToShardCommand,
} from "@aws-sdk/client-kinesis";

const streamName = `js-efo-${randomBytes(5).toString("hex")}`;
const streamARN = `arn:aws:kinesis:us-east-1:000000000000:stream/${streamName}`;
const firstShard = "shardId-000000000000";
const encoder = new TextEncoder();

// Events come at least every 5 s, so waiting much longer than that for one means trouble.
const EVENT_TIMEOUT_MS = 15_000;

let server;
let client;
// Subscriptions still open when a test fails are aborted in `after`.
const subscriptions = new Set();

/** Rejects if `promise` has not settled within `ms`. */
async function within(ms, what, promise) {
  const timer = new AbortController();
  const timeout = sleep(ms, undefined, { signal: timer.signal, ref: false }).then(() => {
    throw new Error(`timed out after ${ms} ms waiting for ${what}`);
  });
  timeout.catch(() => {});
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    timer.abort();
  }
}

/** Registers a consumer and waits until it is ACTIVE; returns its ARN. */
/** Waits until the stream is ACTIVE (after creation, or after a split leaves it UPDATING). */
async function streamActive() {
  await poll("stream ACTIVE", async () => {
    const { StreamDescriptionSummary: s } = await client.send(
      new DescribeStreamSummaryCommand({ StreamName: streamName }),
    );
    return s.StreamStatus === "ACTIVE";
  });
}

async function activeConsumer(name) {
  // A stream that is not ACTIVE refuses new consumers, as Kinesis does.
  await streamActive();
  const { Consumer } = await client.send(
    new RegisterStreamConsumerCommand({ StreamARN: streamARN, ConsumerName: name }),
  );
  assert.equal(Consumer.ConsumerName, name);
  assert.match(Consumer.ConsumerARN, new RegExp(`^${streamARN}/consumer/${name}:\\d+$`));
  await poll(`consumer ${name} ACTIVE`, async () => {
    const { ConsumerDescription } = await client.send(
      new DescribeStreamConsumerCommand({ ConsumerARN: Consumer.ConsumerARN }),
    );
    return ConsumerDescription.ConsumerStatus === "ACTIVE";
  });
  return Consumer.ConsumerARN;
}

/** Starts a subscription; returns its async iterator and a way to abort it. */
async function subscribe(consumerARN, shardId, startingPosition) {
  const controller = new AbortController();
  const output = await client.send(
    new SubscribeToShardCommand({
      ConsumerARN: consumerARN,
      ShardId: shardId,
      StartingPosition: startingPosition,
    }),
    { abortSignal: controller.signal },
  );
  const subscription = {
    events: output.EventStream[Symbol.asyncIterator](),
    abort: () => controller.abort(),
  };
  subscriptions.add(subscription);
  return subscription;
}

/** The next SubscribeToShardEvent of a subscription, or null once the stream has ended. */
async function nextEvent(subscription) {
  const { value, done } = await within(
    EVENT_TIMEOUT_MS,
    "a SubscribeToShardEvent",
    subscription.events.next(),
  );
  if (done) return null;
  assert.deepEqual(Object.keys(value), ["SubscribeToShardEvent"], `unexpected ${JSON.stringify(value)}`);
  const event = value.SubscribeToShardEvent;
  assert.ok(Array.isArray(event.Records));
  assert.equal(typeof event.MillisBehindLatest, "number");
  assert.ok(event.MillisBehindLatest >= 0);
  return event;
}

before(async () => {
  server = await startServer("sluice-js-efo");
  client = new KinesisClient({
    endpoint: server.endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "x", secretAccessKey: "x" },
  });
});

after(async () => {
  for (const subscription of subscriptions) subscription.abort();
  // Close the HTTP/2 sessions, or the process would stay alive.
  client?.destroy();
  await server?.stop();
});

test("the client talks HTTP/2 (default handler)", () => {
  const handler = client.config.requestHandler;
  assert.equal(handler?.constructor?.name, "NodeHttp2Handler");
});

test("a one-shard stream becomes ACTIVE", async () => {
  await client.send(new CreateStreamCommand({ StreamName: streamName, ShardCount: 1 }));
  await streamActive();
});

test("SubscribeToShard from LATEST delivers records put afterwards, then the split's children", async () => {
  const consumer = await activeConsumer("js-reader");
  const subscription = await subscribe(consumer, firstShard, { Type: "LATEST" });

  // Read while the producer writes: the subscription has its starting point once the
  // response has begun, so every record put from here on is delivered.
  const received = [];
  let continuation;
  const reading = (async () => {
    while (received.length < 20) {
      const event = await nextEvent(subscription);
      assert.ok(event, `the event stream ended after ${received.length} records`);
      assert.equal(event.ChildShards, undefined);
      received.push(...event.Records);
      continuation = event.ContinuationSequenceNumber;
    }
  })();

  const sent = [];
  for (let i = 0; i < 20; i++) {
    const data =
      i === 7 ? new Uint8Array([0, 1, 2, 0x80, 0xfe, 0xff]) : encoder.encode(`fanout-${i}`);
    const key = `pk-${i}`;
    const put = await client.send(
      new PutRecordCommand({ StreamName: streamName, Data: data, PartitionKey: key }),
    );
    assert.equal(put.ShardId, firstShard);
    sent.push({ data, key, seq: put.SequenceNumber });
  }
  await reading;

  assert.equal(received.length, sent.length);
  received.forEach((record, i) => {
    assert.equal(record.SequenceNumber, sent[i].seq, `record ${i} out of order`);
    assert.equal(record.PartitionKey, sent[i].key);
    assert.ok(record.Data instanceof Uint8Array);
    assert.deepEqual(Buffer.from(record.Data), Buffer.from(sent[i].data));
    assert.ok(record.ApproximateArrivalTimestamp instanceof Date);
    assert.ok(Math.abs(record.ApproximateArrivalTimestamp.getTime() - Date.now()) < 120_000);
  });
  assert.equal(continuation, sent.at(-1).seq);

  // Splitting the shard closes it: the subscription's last event names the children.
  await client.send(
    new SplitShardCommand({
      StreamName: streamName,
      ShardToSplit: firstShard,
      NewStartingHashKey: (2n ** 127n).toString(),
    }),
  );
  let final;
  for (;;) {
    const event = await nextEvent(subscription);
    assert.ok(event, "the event stream ended without ChildShards");
    assert.deepEqual(event.Records, [], "no records were put after the split");
    if (event.ChildShards?.length) {
      final = event;
      break;
    }
    // Events before the end (heartbeats) still carry the position reached.
    assert.equal(event.ContinuationSequenceNumber, sent.at(-1).seq);
  }
  assert.ok(!final.ContinuationSequenceNumber, "a finished shard has no ContinuationSequenceNumber");
  assert.deepEqual(
    final.ChildShards.map((c) => c.ShardId),
    ["shardId-000000000001", "shardId-000000000002"],
  );
  for (const child of final.ChildShards) assert.deepEqual(child.ParentShards, [firstShard]);
  assert.deepEqual(final.ChildShards.map((c) => c.HashKeyRange), [
    { StartingHashKey: "0", EndingHashKey: (2n ** 127n - 1n).toString() },
    { StartingHashKey: (2n ** 127n).toString(), EndingHashKey: (2n ** 128n - 1n).toString() },
  ]);

  // ...and then the event stream ends.
  assert.equal(await nextEvent(subscription), null);
  subscriptions.delete(subscription);

  const { Shards } = await client.send(new ListShardsCommand({ StreamName: streamName }));
  assert.deepEqual(
    Shards.map((s) => s.ShardId),
    [firstShard, "shardId-000000000001", "shardId-000000000002"],
  );
});

test("a second subscription for the same consumer and shard within 5 s is ResourceInUseException", async () => {
  const consumer = await activeConsumer("js-twice");
  const shardId = "shardId-000000000001";
  const first = await subscribe(consumer, shardId, { Type: "LATEST" });
  await assert.rejects(
    client.send(
      new SubscribeToShardCommand({
        ConsumerARN: consumer,
        ShardId: shardId,
        StartingPosition: { Type: "LATEST" },
      }),
    ),
    (error) => {
      assert.equal(error.name, "ResourceInUseException");
      assert.ok(error instanceof ResourceInUseException);
      assert.equal(error.$metadata.httpStatusCode, 400);
      return true;
    },
  );
  // The first subscription is unaffected: it still delivers what is put.
  const put = await client.send(
    new PutRecordCommand({
      StreamName: streamName,
      Data: encoder.encode("to the first"),
      PartitionKey: "x",
      ExplicitHashKey: "1",
    }),
  );
  assert.equal(put.ShardId, shardId);
  let event;
  do event = await nextEvent(first);
  while (event && event.Records.length === 0);
  assert.ok(event, "the first subscription ended");
  assert.deepEqual(event.Records.map((r) => r.SequenceNumber), [put.SequenceNumber]);
  first.abort();
  subscriptions.delete(first);
});

test("DeleteStream with its consumers", async () => {
  await client.send(
    new DeleteStreamCommand({ StreamName: streamName, EnforceConsumerDeletion: true }),
  );
  await poll("stream deleted", async () => {
    try {
      await client.send(new DescribeStreamSummaryCommand({ StreamName: streamName }));
      return false;
    } catch (error) {
      if (error.name === "ResourceNotFoundException") return true;
      throw error;
    }
  });
});
