// A real `sluice server` for the JavaScript SDK suites: free ports, a temporary data
// directory, the process's log kept for failure messages, and a clean stop.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { get as httpGet } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const binary = resolve(process.env.SLUICE_BIN ?? join(here, "..", "..", "target", "debug", "sluice"));

async function freePort() {
  const probe = createServer();
  await new Promise((ok, fail) => {
    probe.once("error", fail);
    probe.listen(0, "127.0.0.1", ok);
  });
  const { port } = probe.address();
  await new Promise((ok) => probe.close(ok));
  return port;
}

/** Whether `GET /readyz` answers 200: the node is a cluster member with a metadata leader
 * and its configured admin key exists. */
function isReady(port) {
  return new Promise((ok) => {
    const request = httpGet({ host: "127.0.0.1", port, path: "/readyz" }, (response) => {
      response.resume();
      ok(response.statusCode === 200);
    });
    request.once("error", () => ok(false));
  });
}

/** Polls `check` every 50 ms until it returns something truthy. */
export async function poll(what, check, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** Starts a server (with extra environment, e.g. authentication settings) and waits until
 * it is ready. */
export async function startServer(prefix, env = {}) {
  assert.ok(existsSync(binary), `sluice binary not found at ${binary} (set SLUICE_BIN)`);
  const dataDir = mkdtempSync(join(tmpdir(), `${prefix}-`));
  const kinesisPort = await freePort();
  const grpcPort = await freePort();
  let log = "";
  const process_ = spawn(
    binary,
    [
      "server",
      "--data-dir", join(dataDir, "data"),
      "--kinesis-addr", `127.0.0.1:${kinesisPort}`,
      "--grpc-addr", `127.0.0.1:${grpcPort}`,
      "--fsync", "false",
    ],
    {
      env: { ...process.env, SLUICE_LOG_LEVEL: process.env.SLUICE_LOG_LEVEL ?? "warn", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  process_.stdout.on("data", (chunk) => (log += chunk));
  process_.stderr.on("data", (chunk) => (log += chunk));
  await poll(
    "the node to be ready",
    async () => {
      if (process_.exitCode !== null) {
        throw new Error(`sluice exited with ${process_.exitCode}:\n${log}`);
      }
      return isReady(kinesisPort);
    },
    30_000,
  );
  return {
    endpoint: `http://127.0.0.1:${kinesisPort}`,
    /** Stops the server (SIGTERM, then SIGKILL after 10 s) and fails if it panicked. */
    async stop() {
      if (process_.exitCode === null && process_.signalCode === null) {
        const exited = new Promise((ok) => process_.once("exit", ok));
        process_.kill("SIGTERM");
        const stopped = await Promise.race([exited.then(() => true), sleep(10_000, false, { ref: false })]);
        if (!stopped) {
          process_.kill("SIGKILL");
          await exited;
        }
      }
      rmSync(dataDir, { recursive: true, force: true });
      assert.ok(!log.includes("panicked"), `sluice panicked:\n${log}`);
    },
  };
}
