#!/usr/bin/env node
// fauxqs-server.mjs: run fauxqs (local SQS + SNS emulator) on loopback only.
//
// Usage: node scripts/fauxqs-server.mjs PORT [HOST]
//   PORT  TCP port (required; 1..65535)
//   HOST  listen address (default 127.0.0.1)
//
// `npx fauxqs` and startFauxqs() always bind 0.0.0.0, so this launcher uses
// buildApp() and listens on 127.0.0.1 itself. SQS (JSON protocol) and SNS
// (query protocol) share the one port. State lives in memory only.
// Queue URLs keep fauxqs's default host (sqs.<region>.localhost:PORT): clients
// must send every request to the endpoint and pass the QueueUrl unchanged.
//
// Prints one line "fauxqs ready http://HOST:PORT" on stdout once listening.
// SIGTERM / SIGINT close the server and exit 0. Exit 100 on a usage error,
// 111 when the server cannot start (for example the port is taken).
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const appPath = join(here, "..", "node_modules", "fauxqs", "dist", "app.js");

const [portArg, hostArg] = process.argv.slice(2);
const port = Number(portArg);
const host = hostArg || "127.0.0.1";
if (!/^[0-9]+$/.test(portArg ?? "") || port < 1 || port > 65535) {
  process.stderr.write("usage: fauxqs-server.mjs PORT [HOST]\n");
  process.exit(100);
}

let app;
try {
  const { buildApp } = await import(pathToFileURL(appPath).href);
  app = buildApp({ logger: false, defaultRegion: "us-east-1" });
  await app.listen({ port, host });
} catch (err) {
  process.stderr.write(`fauxqs-server: cannot start on ${host}:${port}: ${err && err.message ? err.message : err}\n`);
  process.exit(111);
}

let stopping = false;
async function stop(signal) {
  if (stopping) return;
  stopping = true;
  const timer = setTimeout(() => process.exit(0), 3000);
  timer.unref();
  try {
    await app.close();
  } catch (err) {
    process.stderr.write(`fauxqs-server: close after ${signal}: ${err && err.message ? err.message : err}\n`);
  }
  process.exit(0);
}
process.on("SIGTERM", () => stop("SIGTERM"));
process.on("SIGINT", () => stop("SIGINT"));

process.stdout.write(`fauxqs ready http://${host}:${port}\n`);
