// Tests of the JavaScript client (examples/chat/ChatApp/Public/neffos-client.js) under Node's
// test runner, against a real swift-neffos server that the Swift test `JSClientTests` starts:
//   NEFFOS_URL=ws://127.0.0.1:PORT/ NEFFOS_CLIENT_JS=path/to/neffos-client.js node --test Tests/JS/
// The server keeps history for rooms `lobby*` (1,000 messages) and `small` (10); its events:
//   send "ROOM N"        broadcasts N numbered `tick`s to ROOM (numbering per room, from 1);
//   dropAndSend "ROOM N" closes the sender's connection, then broadcasts N more.
import test from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { MiniWebSocket } = require("./mini-websocket.cjs");
globalThis.WebSocket = MiniWebSocket;
require(process.env.NEFFOS_CLIENT_JS);
const { NeffosClient } = globalThis;
const url = process.env.NEFFOS_URL;

/** A client in namespace `default` whose `tick`s and recoveries are recorded. */
async function recordingClient(options = {}) {
  const ticks = [];
  const recoveries = [];
  let waiters = [];
  const changed = () => { waiters = waiters.filter((w) => !w()); };
  const client = await NeffosClient.dial(url, {
    default: { tick: (_, m) => { ticks.push(`${m.room}:${m.body}`); changed(); } },
  }, {
    minBackoffMs: 20, maxBackoffMs: 100, ...options,
    onRecovery: (r) => { recoveries.push(r); changed(); },
    onState: (state) => { if (state === "restored") changed(); },
  });
  const ns = await client.connect("default");
  /** Resolves once `predicate()` holds (checked at each tick and recovery), or fails after 10 s. */
  const until = (what, predicate) => new Promise((resolve, reject) => {
    if (predicate()) return resolve();
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}; ticks ${ticks.length}: …${ticks.slice(-5)}; recoveries ${JSON.stringify(recoveries)}`)), 10000);
    waiters.push(() => { if (!predicate()) return false; clearTimeout(timer); resolve(); return true; });
  });
  return { client, ns, ticks, recoveries, until };
}

const numbered = (room, from, to) => Array.from({ length: to - from + 1 }, (_, i) => `${room}:${from + i}`);

test("Recovery: away while 100 messages are broadcast, the JS client gets exactly those 100, in order, on reconnect", async () => {
  const c = await recordingClient();
  await c.ns.joinRoom("lobby-js");
  await c.ns.ask("send", "lobby-js 5");
  await c.until("5 ticks", () => c.ticks.length >= 5);
  assert.match(c.client.position("default", "lobby-js"), /^[A-Za-z0-9_-]+:5$/);
  c.ns.emit("dropAndSend", "lobby-js 100");
  await c.until("the recovery", () => c.recoveries.length === 1 && c.ticks.length >= 105);
  assert.deepEqual(c.recoveries, [{ namespace: "default", room: "lobby-js", recovered: true, messages: 100 }]);
  await c.ns.ask("send", "lobby-js 5");
  await c.until("live ticks after it", () => c.ticks.length >= 110);
  assert.deepEqual(c.ticks, numbered("lobby-js", 1, 110));
  c.client.close();
});

test("Recovery: history trimmed past the JS client's position is reported as not recovered, with what is kept", async () => {
  const c = await recordingClient();
  await c.ns.joinRoom("small");
  await c.ns.ask("send", "small 2");
  await c.until("2 ticks", () => c.ticks.length >= 2);
  c.ns.emit("dropAndSend", "small 30");
  await c.until("the recovery", () => c.recoveries.length === 1 && c.ticks.length >= 12);
  assert.deepEqual(c.recoveries, [{ namespace: "default", room: "small", recovered: false, messages: 10 }]);
  assert.deepEqual(c.ticks, [...numbered("small", 1, 2), ...numbered("small", 23, 32)]);
  c.client.close();
});

test("History: without recovery the JS client speaks plain neffos (no positions, nothing recovered)", async () => {
  const c = await recordingClient({ recovery: false });
  await c.ns.joinRoom("lobby-plain");
  await c.ns.ask("send", "lobby-plain 3");
  await c.until("3 ticks", () => c.ticks.length >= 3);
  assert.equal(c.client.position("default", "lobby-plain"), null);
  assert.deepEqual(c.ticks, numbered("lobby-plain", 1, 3));
  c.client.close();
});

test("History: leaving a room forgets its position", async () => {
  const c = await recordingClient();
  await c.ns.joinRoom("lobby-leave");
  assert.match(c.client.position("default", "lobby-leave"), /:0$/, "the join gives the room's position");
  await c.ns.leaveRoom("lobby-leave");
  assert.equal(c.client.position("default", "lobby-leave"), null);
  c.client.close();
});
