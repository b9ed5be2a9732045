// The mesh's core scenario driven by the official socket.io-client against any mesh server.
// Env: MESH_URL, TOKEN_ALICE, TOKEN_BOB (team alpha, groups allow "ops"), TOKEN_BAD.
// Prints one line per check; exits non-zero on the first failure.
import { io } from "socket.io-client";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";

const url = process.env.MESH_URL;
const transports = (process.env.TRANSPORTS || "polling,websocket").split(",");
const connect = (token) =>
  new Promise((resolve, reject) => {
    const socket = io(url, { auth: { token }, transports, reconnection: false, timeout: 5000 });
    socket.on("connect", () => resolve(socket));
    socket.on("connect_error", (err) => reject(err));
  });
const check = (name) => console.log(`ok - ${name}`);

try {
  await connect(process.env.TOKEN_BAD).then(
    () => assert.fail("a bad token was accepted"),
    (err) => assert.match(err.message, /^unauthorized: /),
  );
  check("bad token refused with connect_error 'unauthorized: ...'");

  const alice = await connect(process.env.TOKEN_ALICE);
  const bob = await connect(process.env.TOKEN_BOB);
  const inbox = { alice: [], bob: [] };
  for (const [name, socket] of [["alice", alice], ["bob", bob]]) {
    socket.on("message", (envelope, ack) => {
      inbox[name].push(envelope);
      ack({ ok: true });
    });
  }
  check("both agents connected");

  const presence = await alice.timeout(5000).emitWithAck("presence", {});
  assert.deepEqual(presence.agents.map((a) => a.id).sort(), ["alice", "bob"]);
  check("presence lists both agents");

  for (const socket of [alice, bob]) {
    const joined = await socket.timeout(5000).emitWithAck("group:join", { group: "ops" });
    assert.equal(joined.ok, true, JSON.stringify(joined));
  }
  check("both joined group ops");

  const id = randomUUID();
  const direct = await alice.timeout(10000).emitWithAck("message", { id, to: "bob", text: "hello from node" });
  assert.deepEqual(direct, { ok: true, id, status: "delivered" });
  assert.equal(inbox.bob.at(-1).from, "alice");
  assert.equal(inbox.bob.at(-1).type, "direct");
  check("direct message delivered and acked by the recipient");

  const again = await alice.timeout(10000).emitWithAck("message", { id, to: "bob", text: "hello from node" });
  assert.equal(again.status, "duplicate");
  assert.equal(inbox.bob.length, 1);
  check("resend answered duplicate, not delivered twice");

  const group = await bob.timeout(10000).emitWithAck("message", { id: randomUUID(), group: "ops", text: "to ops" });
  assert.equal(group.status, "delivered", JSON.stringify(group));
  assert.deepEqual(group.delivered_to, ["alice"]);
  assert.equal(inbox.alice.at(-1).group, "ops");
  check("group message delivered to the other member");

  const invalid = await alice.timeout(5000).emitWithAck("message", { to: "bob", text: "no id" });
  assert.equal(invalid.error.code, "invalid");
  check("malformed message answered invalid");

  const offline = new Promise((resolve) => alice.on("presence", (change) => change.online === false && resolve(change)));
  bob.disconnect();
  assert.equal((await offline).agent, "bob");
  check("presence broadcast when bob leaves");
  alice.disconnect();
  process.exit(0);
} catch (err) {
  console.error(`not ok - ${err.stack || err}`);
  process.exit(1);
}
