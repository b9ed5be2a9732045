// The official MCP TypeScript SDK as the agent: drives three `nsh mesh client` processes
// (alice sends; bob is a plain MCP client; carol advertises Claude Code's `claude/channel`)
// against one real mesh server, checks every way a message can reach an agent, and prints
// a JSON report of what it saw. Exits non-zero (with the reason) when a check fails.
//
// usage: node mcp-clients.mjs <nsh binary> <mesh url> <inbox dir> <alice token file> \
//        <bob token file> <carol token file>

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import {
  LoggingMessageNotificationSchema,
  ResourceUpdatedNotificationSchema,
} from "@modelcontextprotocol/sdk/types.js";

const [nsh, server, inboxDir, aliceToken, bobToken, carolToken] = process.argv.slice(2);
const stderrTails = {};

function fail(why) {
  console.error(`FAILED: ${why}`);
  for (const [name, text] of Object.entries(stderrTails)) {
    console.error(`--- ${name} stderr (tail) ---\n${text.slice(-3000)}`);
  }
  process.exit(1);
}

function check(condition, why) {
  if (!condition) fail(why);
}

async function start(name, tokenFile, capabilities = {}) {
  const transport = new StdioClientTransport({
    command: nsh,
    args: ["mesh", "client", "--server", server, "--token-file", tokenFile, "--inbox-dir", inboxDir],
    env: { ...process.env, NSH_LOG: "info" },
    stderr: "pipe",
  });
  stderrTails[name] = "";
  transport.stderr?.on("data", (chunk) => {
    stderrTails[name] = (stderrTails[name] + chunk.toString()).slice(-20000);
  });
  const client = new Client({ name: `${name}-sdk`, version: "1.0.0" }, { capabilities });
  const seen = { updated: [], logging: [], channel: [] };
  client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => {
    seen.updated.push(n.params.uri);
  });
  client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => {
    seen.logging.push(n.params);
  });
  client.fallbackNotificationHandler = async (n) => {
    if (n.method === "notifications/claude/channel") seen.channel.push(n.params);
  };
  await client.connect(transport);
  return { name, client, seen };
}

async function call(agent, name, args = {}) {
  const result = await agent.client.callTool({ name, arguments: args });
  return { isError: result.isError === true, value: result.structuredContent, content: result.content };
}

async function until(what, probe, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const report = {};
const alice = await start("alice", aliceToken);
const bob = await start("bob", bobToken);
const carol = await start("carol", carolToken, { experimental: { "claude/channel": {} } });

const info = alice.client.getServerVersion();
const capabilities = alice.client.getServerCapabilities();
report.server = info;
report.capabilities = capabilities;
report.instructions = alice.client.getInstructions();
const tools = (await alice.client.listTools()).tools;
report.tools = tools.map((t) => t.name).sort();
report.toolSchemas = Object.fromEntries(tools.map((t) => [t.name, t.inputSchema]));
report.resources = (await bob.client.listResources()).resources.map((r) => r.uri).sort();

// Everyone is on the mesh.
report.presence = await until("alice to see bob and carol online", async () => {
  const { value } = await call(alice, "mesh_presence");
  const ids = (value?.agents ?? []).map((a) => a.id);
  return ids.includes("bob") && ids.includes("carol") ? value : null;
});

await bob.client.subscribeResource({ uri: "mesh://inbox" });
for (const agent of [alice, bob, carol]) {
  const joined = await call(agent, "mesh_group_join", { group: "ops" });
  check(!joined.isError, `${agent.name} could not join ops: ${JSON.stringify(joined.content)}`);
}
report.groups = (await call(alice, "mesh_group_list")).value;
report.members = (await call(alice, "mesh_group_members", { group: "ops" })).value;

// A direct message to bob: acked as delivered, announced by a resource update and a logging
// notification, visible in the resource, then taken (and marked read) through mesh_inbox.
report.direct = (await call(alice, "mesh_send", { to: "bob", text: "hello bob", metadata: { pr: 42 } })).value;
await until("bob's inbox resource update", async () => bob.seen.updated.includes("mesh://inbox"));
await until("bob's logging notification", async () => bob.seen.logging.length > 0);
report.bobLogging = bob.seen.logging[0];
const resource = await bob.client.readResource({ uri: "mesh://inbox" });
report.bobResource = JSON.parse(resource.contents[0].text);
report.bobInbox = (await call(bob, "mesh_inbox", {})).value;
report.bobInboxAgain = (await call(bob, "mesh_inbox", {})).value;

// A group message: delivered to both; carol gets it as a Claude Code channel event.
report.group = (await call(alice, "mesh_send", { group: "ops", text: "standup in 5" })).value;
await until("carol's channel event", async () => carol.seen.channel.length > 0);
report.carolChannel = carol.seen.channel[0];
report.bobGroupInbox = (await call(bob, "mesh_inbox", { group: "ops" })).value;
await until("carol's pushed message to be marked read", async () => {
  const { value } = await call(carol, "mesh_inbox", {});
  return value && value.messages.length === 0 ? true : null;
});
report.carolLogging = carol.seen.logging.length;

// Errors come back as tool errors with the mesh's code and a hint.
report.offline = await call(alice, "mesh_send", { to: "nobody", text: "anyone?" });
report.badArgs = await call(alice, "mesh_send", { to: "bob", text: 5 });
report.bothTargets = await call(alice, "mesh_send", { to: "bob", group: "ops", text: "x" });
report.forbidden = await call(alice, "mesh_group_join", { group: "secret" });
report.history = await call(alice, "mesh_history", { group: "ops" });
report.badLimit = await call(bob, "mesh_inbox", { limit: 0 });

for (const agent of [alice, bob, carol]) await agent.client.close();
console.log(JSON.stringify(report));
