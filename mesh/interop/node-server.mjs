// The official socket.io 4.8 server running the nsh-mesh relay logic (the same wire contract as
// `nsh mesh server`, without rate limits). It is the peer for the Rust client's interop test and
// the Node baseline of the benchmark.
//
//   node node-server.mjs --team-keys-dir DIR [--port 0] [--ack-timeout-ms 5000]
//                        [--redis URL --adapter pubsub|streams]
// Prints `listening PORT` once ready.
//
// With --redis, several processes form one server through the official Redis adapter
// (`@socket.io/redis-adapter`, pub/sub) or the Redis Streams adapter
// (`@socket.io/redis-streams-adapter`): direct messages and their acks cross processes, which is
// what the cross-replica benchmark measures. Presence and groups stay per process there.
import { createServer } from "node:http";
import { createHmac, timingSafeEqual } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Server } from "socket.io";
import { createClient } from "redis";
import { createAdapter as createPubSubAdapter } from "@socket.io/redis-adapter";
import { createAdapter as createStreamsAdapter } from "@socket.io/redis-streams-adapter";

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const keysDir = arg("team-keys-dir");
const ackTimeout = Number(arg("ack-timeout-ms", "5000"));
if (!keysDir) {
  console.error("usage: node node-server.mjs --team-keys-dir DIR [--port N]");
  process.exit(2);
}
const keys = new Map(
  readdirSync(keysDir)
    .filter((f) => !f.startsWith("."))
    .map((f) => [f, Buffer.from(readFileSync(join(keysDir, f), "utf8").trim())]),
);

const b64url = (buf) => buf.toString("base64url");
function verify(token) {
  if (!token) throw new Error("missing token");
  const [h, p, s] = token.split(".");
  if (!s) throw new Error("malformed token");
  const header = JSON.parse(Buffer.from(h, "base64url"));
  if (header.alg !== "HS256") throw new Error(`algorithm ${header.alg} is not accepted`);
  const key = keys.get(header.kid);
  if (!key) throw new Error(`unknown team \`${header.kid}\``);
  const expected = Buffer.from(b64url(createHmac("sha256", key).update(`${h}.${p}`).digest()));
  const given = Buffer.from(s);
  if (expected.length !== given.length || !timingSafeEqual(expected, given)) throw new Error("bad signature");
  const claims = JSON.parse(Buffer.from(p, "base64url"));
  if (claims.iss !== "nsh-mesh" || claims.aud !== "nsh-mesh") throw new Error("wrong issuer or audience");
  if (typeof claims.exp !== "number" || claims.exp + 30 < Date.now() / 1000) throw new Error("token expired");
  if (claims.team !== header.kid) throw new Error("kid does not match team");
  return claims;
}

const teams = new Map(); // team -> Map(agent -> { sockets:Set, since, groups:Set })
const groupsOf = (team) => {
  const t = teams.get(team) || new Map();
  const groups = new Map();
  for (const [agent, a] of t) for (const g of a.groups) groups.set(g, [...(groups.get(g) || []), agent].sort());
  return groups;
};
const seen = new Map(); // team/agent -> Map(id -> time), bounded
const firstTime = (key, id) => {
  const ids = seen.get(key) || new Map();
  seen.set(key, ids);
  if (ids.has(id)) return false;
  ids.set(id, Date.now());
  if (ids.size > 1024) ids.delete(ids.keys().next().value);
  return true;
};
const error = (code, message) => ({ code, message });

const http = createServer((req, res) => {
  res.writeHead(req.url === "/healthz" ? 200 : 404);
  res.end(req.url === "/healthz" ? "ok" : "");
});
const redisUrl = arg("redis");
let adapter;
if (redisUrl) {
  const kind = arg("adapter", "pubsub");
  const pub = createClient({ url: redisUrl });
  await pub.connect();
  if (kind === "pubsub") {
    const sub = pub.duplicate();
    await sub.connect();
    adapter = createPubSubAdapter(pub, sub);
  } else if (kind === "streams") {
    adapter = createStreamsAdapter(pub);
  } else {
    console.error(`--adapter: unknown \`${kind}\` (pubsub or streams)`);
    process.exit(2);
  }
}
const io = new Server(http, { maxHttpBufferSize: 1 << 20, ...(adapter && { adapter }) });

io.use((socket, next) => {
  try {
    socket.data.claims = verify(socket.handshake.auth?.token);
    next();
  } catch (err) {
    next(new Error(`unauthorized: ${err.message}`));
  }
});

io.on("connection", (socket) => {
  const { team, sub: agent, groups: allowed = [] } = socket.data.claims;
  const t = teams.get(team) || new Map();
  teams.set(team, t);
  const entry = t.get(agent) || { sockets: new Set(), since: new Date().toISOString(), groups: new Set() };
  const first = entry.sockets.size === 0;
  entry.sockets.add(socket.id);
  t.set(agent, entry);
  socket.join([`team:${team}`, `agent:${team}:${agent}`, ...[...entry.groups].map((g) => `group:${team}:${g}`)]);
  if (first) socket.to(`team:${team}`).emit("presence", { agent, online: true, at: new Date().toISOString() });

  socket.on("message", async (req, ack = () => {}) => {
    if (!req || typeof req !== "object") return ack({ ok: false, error: error("invalid", "payload: expected an object") });
    const { id, to, group, text } = req;
    if (typeof id !== "string" || !id) return ack({ ok: false, error: error("invalid", "id: missing") });
    if (typeof text !== "string") return ack({ ok: false, id, error: error("invalid", "text: expected a string") });
    if (!to === !group) return ack({ ok: false, id, error: error("invalid", "to/group: give exactly one") });
    if (group && !entry.groups.has(group)) return ack({ ok: false, id, error: error("forbidden", `join group \`${group}\` first`) });
    if (!firstTime(`${team}/${agent}`, id)) return ack({ ok: true, id, status: "duplicate" });
    const envelope = { id, type: group ? "group" : "direct", from: agent, ...(to && { to }), ...(group && { group }), text, timestamp: new Date().toISOString() };
    if (req.metadata !== undefined) envelope.metadata = req.metadata;
    const target = to
      ? io.to(`agent:${team}:${to}`)
      : io.to(`group:${team}:${group}`).except(`agent:${team}:${agent}`);
    // A direct message's recipients are known from the acks; only a group needs their names.
    // (With an adapter, fetchSockets is one more round trip to every process.)
    const recipients = group || !redisUrl ? await target.fetchSockets() : null;
    if (recipients && recipients.length === 0) {
      seen.get(`${team}/${agent}`).delete(id);
      return ack({ ok: false, id, error: error("recipient_offline", "no recipient is connected") });
    }
    try {
      const acks = await target.timeout(ackTimeout).emitWithAck("message", envelope);
      if (acks.length === 0) throw new Error("no recipient is connected");
      const deliveredTo = group ? [...new Set(recipients.map((s) => s.data.claims.sub))].sort() : undefined;
      ack({ ok: true, id, status: "delivered", ...(deliveredTo && { delivered_to: deliveredTo }) });
    } catch {
      seen.get(`${team}/${agent}`).delete(id);
      ack({ ok: false, id, error: error("recipient_offline", "no acknowledgement in time") });
    }
  });

  socket.on("presence", (_req, ack = () => {}) => {
    ack({ agents: [...t].map(([id, a]) => ({ id, online: true, since: a.since, groups: [...a.groups].sort() })) });
  });
  socket.on("group:join", async ({ group } = {}, ack = () => {}) => {
    if (!allowed.includes("*") && !allowed.includes(group)) return ack({ ok: false, group, error: error("forbidden", "not allowed by token") });
    entry.groups.add(group);
    await io.in(`agent:${team}:${agent}`).socketsJoin(`group:${team}:${group}`);
    ack({ ok: true, group, members: groupsOf(team).get(group) || [] });
  });
  socket.on("group:leave", async ({ group } = {}, ack = () => {}) => {
    entry.groups.delete(group);
    await io.in(`agent:${team}:${agent}`).socketsLeave(`group:${team}:${group}`);
    ack({ ok: true, group, members: groupsOf(team).get(group) || [] });
  });
  socket.on("group:list", (_req, ack = () => {}) => {
    ack({ groups: [...groupsOf(team)].map(([name, m]) => ({ name, members: m.length })) });
  });
  socket.on("group:members", ({ group } = {}, ack = () => {}) => {
    ack({ ok: true, group, members: groupsOf(team).get(group) || [] });
  });
  socket.on("disconnect", () => {
    entry.sockets.delete(socket.id);
    if (entry.sockets.size === 0) {
      t.delete(agent);
      io.to(`team:${team}`).emit("presence", { agent, online: false, at: new Date().toISOString() });
    }
  });
});

http.listen(Number(arg("port", "0")), "127.0.0.1", () => {
  console.log(`listening ${http.address().port}`);
});
process.on("SIGTERM", () => io.close(() => process.exit(0)));
