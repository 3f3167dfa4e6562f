// SigV4 authentication over HTTP/2: the JavaScript SDK v3 signs with `:authority` in place
// of a Host header, and the node must verify exactly what it signed.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";

import { poll, startServer } from "./server.mjs";

import {
  CreateStreamCommand,
  DescribeStreamSummaryCommand,
  GetRecordsCommand,
  GetShardIteratorCommand,
  KinesisClient,
  ListStreamsCommand,
  PutRecordCommand,
} from "@aws-sdk/client-kinesis";

const adminKey = { accessKeyId: "AKIAJSSUITEADMIN0001", secretAccessKey: "js-suite-admin-secret" };
const streamName = `js-auth-${randomBytes(5).toString("hex")}`;

let server;
const clients = [];

function clientWith(credentials) {
  const client = new KinesisClient({
    endpoint: server.endpoint,
    region: "us-east-1",
    credentials,
    maxAttempts: 1,
  });
  clients.push(client);
  return client;
}

before(async () => {
  server = await startServer("sluice-js-auth", {
    SLUICE_AUTH: "sigv4",
    SLUICE_ADMIN_ACCESS_KEY_ID: adminKey.accessKeyId,
    SLUICE_ADMIN_SECRET_ACCESS_KEY: adminKey.secretAccessKey,
  });
});

after(async () => {
  for (const client of clients) client.destroy();
  await server?.stop();
});

test("signed calls over HTTP/2 verify and round-trip a record", async () => {
  const admin = clientWith(adminKey);
  assert.equal(admin.config.requestHandler?.constructor?.name, "NodeHttp2Handler");
  await admin.send(new CreateStreamCommand({ StreamName: streamName, ShardCount: 1 }));
  await poll("ACTIVE", async () => {
    const { StreamDescriptionSummary: s } = await admin.send(
      new DescribeStreamSummaryCommand({ StreamName: streamName }),
    );
    return s.StreamStatus === "ACTIVE";
  });
  const put = await admin.send(
    new PutRecordCommand({
      StreamName: streamName,
      PartitionKey: "k",
      Data: new TextEncoder().encode("signed over h2"),
    }),
  );
  const { ShardIterator } = await admin.send(
    new GetShardIteratorCommand({
      StreamName: streamName,
      ShardId: put.ShardId,
      ShardIteratorType: "TRIM_HORIZON",
    }),
  );
  const { Records } = await admin.send(new GetRecordsCommand({ ShardIterator }));
  assert.equal(new TextDecoder().decode(Records[0].Data), "signed over h2");
});

test("a wrong secret is an InvalidSignatureException, an unknown key UnrecognizedClient", async () => {
  await assert.rejects(
    clientWith({ accessKeyId: adminKey.accessKeyId, secretAccessKey: "wrong" }).send(
      new ListStreamsCommand({}),
    ),
    (error) => error.name === "InvalidSignatureException",
  );
  await assert.rejects(
    clientWith({ accessKeyId: "AKIANOSUCHKEY0000000", secretAccessKey: "whatever" }).send(
      new ListStreamsCommand({}),
    ),
    (error) =>
      error.name === "UnrecognizedClientException" &&
      error.message === "The security token included in the request is invalid.",
  );
});
