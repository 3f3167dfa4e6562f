// AWS SDK for JavaScript v3 against a real `sluice server`.
//
// The v3 Kinesis client sends every call over HTTP/2 (NodeHttp2Handler; h2c with prior
// knowledge on an http:// endpoint). The handler is deliberately left at its default.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";

import { poll, startServer } from "./server.mjs";

import {
  CreateStreamCommand,
  DeleteStreamCommand,
  DescribeStreamCommand,
  DescribeStreamSummaryCommand,
  GetRecordsCommand,
  GetShardIteratorCommand,
  KinesisClient,
  ListShardsCommand,
  ListStreamsCommand,
  PutRecordCommand,
  PutRecordsCommand,
  ResourceNotFoundException,
} from "@aws-sdk/client-kinesis";

const streamName = `js-${randomBytes(5).toString("hex")}`;
const encoder = new TextEncoder();

let server;
let client;

before(async () => {
  server = await startServer("sluice-js");
  client = new KinesisClient({
    endpoint: server.endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "x", secretAccessKey: "x" },
  });
});

after(async () => {
  // Close the HTTP/2 sessions, or the process would stay alive.
  client?.destroy();
  await server?.stop();
});

test("the client talks HTTP/2 (default handler)", () => {
  const handler = client.config.requestHandler;
  assert.equal(handler?.constructor?.name, "NodeHttp2Handler");
});

test("CreateStream, then DescribeStreamSummary until ACTIVE", async () => {
  await client.send(new CreateStreamCommand({ StreamName: streamName, ShardCount: 2 }));
  const summary = await poll("ACTIVE", async () => {
    const { StreamDescriptionSummary: s } = await client.send(
      new DescribeStreamSummaryCommand({ StreamName: streamName }),
    );
    return s.StreamStatus === "ACTIVE" ? s : null;
  });
  assert.equal(summary.StreamName, streamName);
  assert.equal(summary.StreamARN, `arn:aws:kinesis:us-east-1:000000000000:stream/${streamName}`);
  assert.equal(summary.OpenShardCount, 2);
  assert.equal(summary.RetentionPeriodHours, 24);
  assert.deepEqual(summary.StreamModeDetails, { StreamMode: "PROVISIONED" });
  assert.ok(summary.StreamCreationTimestamp instanceof Date);
});

const written = []; // { data: Uint8Array, key, seq, shard }

test("PutRecord and PutRecords", async () => {
  const single = { data: encoder.encode("hello from js"), key: "js-key-0" };
  const put = await client.send(
    new PutRecordCommand({ StreamName: streamName, Data: single.data, PartitionKey: single.key }),
  );
  assert.match(put.SequenceNumber, /^\d+$/);
  assert.match(put.ShardId, /^shardId-\d{12}$/);
  written.push({ ...single, seq: put.SequenceNumber, shard: put.ShardId });

  const entries = Array.from({ length: 10 }, (_, i) => ({
    Data: i === 0 ? new Uint8Array([0, 1, 2, 253, 254, 255]) : encoder.encode(`batch-${i}`),
    PartitionKey: `js-key-${i % 4}`,
  }));
  const batch = await client.send(new PutRecordsCommand({ StreamName: streamName, Records: entries }));
  assert.equal(batch.FailedRecordCount ?? 0, 0);
  assert.equal(batch.Records.length, entries.length);
  batch.Records.forEach((result, i) => {
    assert.equal(result.ErrorCode, undefined);
    written.push({
      data: entries[i].Data,
      key: entries[i].PartitionKey,
      seq: result.SequenceNumber,
      shard: result.ShardId,
    });
  });

  // Many requests at once multiplex over the HTTP/2 connection.
  const concurrent = await Promise.all(
    Array.from({ length: 20 }, (_, i) => {
      const data = encoder.encode(`concurrent-${i}`);
      const key = `js-concurrent-${i}`;
      return client
        .send(new PutRecordCommand({ StreamName: streamName, Data: data, PartitionKey: key }))
        .then((r) => ({ data, key, seq: r.SequenceNumber, shard: r.ShardId }));
    }),
  );
  written.push(...concurrent);
  assert.equal(new Set(written.map((w) => `${w.shard}/${w.seq}`)).size, written.length);
});

test("GetShardIterator TRIM_HORIZON and GetRecords round-trip data and keys", async () => {
  const { Shards } = await client.send(new ListShardsCommand({ StreamName: streamName }));
  assert.equal(Shards.length, 2);
  const read = [];
  for (const shard of Shards) {
    const { ShardIterator } = await client.send(
      new GetShardIteratorCommand({
        StreamName: streamName,
        ShardId: shard.ShardId,
        ShardIteratorType: "TRIM_HORIZON",
      }),
    );
    let iterator = ShardIterator;
    for (let calls = 0; iterator && calls < 20; calls++) {
      const out = await client.send(new GetRecordsCommand({ ShardIterator: iterator }));
      for (const record of out.Records) {
        assert.ok(record.Data instanceof Uint8Array);
        assert.ok(record.ApproximateArrivalTimestamp instanceof Date);
        assert.ok(Math.abs(record.ApproximateArrivalTimestamp.getTime() - Date.now()) < 120_000);
        read.push({ shard: shard.ShardId, ...record });
      }
      iterator = out.NextShardIterator;
      if (out.Records.length === 0 && out.MillisBehindLatest === 0) break;
    }
  }
  assert.equal(read.length, written.length);
  const bySeq = new Map(read.map((r) => [`${r.shard}/${r.SequenceNumber}`, r]));
  for (const w of written) {
    const r = bySeq.get(`${w.shard}/${w.seq}`);
    assert.ok(r, `record ${w.seq} on ${w.shard} was not read back`);
    assert.equal(r.PartitionKey, w.key);
    assert.deepEqual(Buffer.from(r.Data), Buffer.from(w.data));
  }
  // Within a shard, sequence numbers come back in increasing order.
  for (const shard of Shards) {
    const seqs = read.filter((r) => r.shard === shard.ShardId).map((r) => BigInt(r.SequenceNumber));
    for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1]);
  }
});

test("ListStreams lists the stream", async () => {
  const names = [];
  let token;
  do {
    const page = await client.send(new ListStreamsCommand(token ? { NextToken: token } : {}));
    names.push(...page.StreamNames);
    token = page.HasMoreStreams ? page.NextToken : undefined;
  } while (token);
  assert.ok(names.includes(streamName));
});

test("DescribeStream of a missing stream is ResourceNotFoundException", async () => {
  const missing = `${streamName}-missing`;
  await assert.rejects(
    client.send(new DescribeStreamCommand({ StreamName: missing })),
    (error) => {
      assert.equal(error.name, "ResourceNotFoundException");
      assert.ok(error instanceof ResourceNotFoundException);
      assert.equal(error.message, `Stream ${missing} under account 000000000000 not found.`);
      assert.equal(error.$metadata.httpStatusCode, 400);
      return true;
    },
  );
});

test("DeleteStream", async () => {
  await client.send(new DeleteStreamCommand({ StreamName: streamName }));
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
