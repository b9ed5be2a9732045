// The official MCP TypeScript SDK client (@modelcontextprotocol/client), driven line by line
// from a test: each line on stdin is a JSON command, each answer one JSON line on stdout.
// Notifications (list_changed, progress) are recorded and can be waited for.
//
// usage: node mcp-driver.mjs URL TOKEN [legacy|2026-07-28]
//        node mcp-driver.mjs stdio - [legacy|2026-07-28]   (runs MCP_DRIVER_COMMAND, a JSON array)
// The client declares sampling and answers it with "sampled by MCP_DRIVER_LABEL".
// commands: {"op":"tools"} {"op":"call","name":N,"args":{},"progress":bool,"cancelAfterMs":n}
//           {"op":"prompts"} {"op":"prompt","name":N,"args":{}} {"op":"resources"}
//           {"op":"read","uri":U} {"op":"changes"} {"op":"version"} {"op":"close"}

import readline from "node:readline";

import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import { StdioClientTransport } from "@modelcontextprotocol/client/stdio";

const [url, token, revision = "legacy"] = process.argv.slice(2);
const seen = { listChanged: 0, tools: null };
// Era-transparent: unsolicited notifications on 2025-11-25, a subscriptions/listen stream
// the client opens by itself on 2026-07-28.
const listChanged = {
  tools: {
    debounceMs: 0,
    onChanged: (err, items) => {
      seen.listChanged += 1;
      if (items) seen.tools = items.map((t) => t.name);
    },
  },
};
const options = revision === "legacy" ? { listChanged } : { listChanged, versionNegotiation: { mode: { pin: revision } } };
const label = process.env.MCP_DRIVER_LABEL ?? "driver";
const client = new Client({ name: "gateway-test", version: "1.0.0" }, { ...options, capabilities: { sampling: {} } });
client.setRequestHandler("sampling/createMessage", async () => ({
  role: "assistant",
  content: { type: "text", text: `sampled by ${label}` },
  model: "test",
}));
const headers = token && token !== "-" ? { Authorization: `Bearer ${token}` } : {};
let transport;
if (url === "stdio") {
  const [command, ...args] = JSON.parse(process.env.MCP_DRIVER_COMMAND);
  transport = new StdioClientTransport({ command, args, env: { ...process.env }, stderr: "inherit" });
} else {
  transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
}

function reply(value) {
  process.stdout.write(JSON.stringify(value) + "\n");
}

function error(err) {
  return { error: { message: String(err?.message ?? err), code: err?.code ?? null, data: err?.data ?? null } };
}

try {
  await client.connect(transport);
  reply({ connected: true, version: client.getNegotiatedProtocolVersion() ?? null });
} catch (err) {
  reply({ connected: false, ...error(err) });
  process.exit(0);
}

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const cmd = JSON.parse(line);
  try {
    switch (cmd.op) {
      case "tools":
        reply({ tools: (await client.listTools()).tools.map((t) => ({ name: t.name, description: t.description })) });
        break;
      case "call": {
        const progress = [];
        const controller = new AbortController();
        if (cmd.cancelAfterMs) setTimeout(() => controller.abort("test cancels"), cmd.cancelAfterMs);
        const result = await client.callTool(
          { name: cmd.name, arguments: cmd.args ?? {} },
          {
            signal: controller.signal,
            onprogress: cmd.progress ? (p) => progress.push(p.progress) : undefined,
            timeout: cmd.timeoutMs ?? 60000,
          },
        );
        reply({ result: { text: result.content?.map((c) => c.text).join(""), isError: result.isError ?? false }, progress });
        break;
      }
      case "prompts":
        reply({ prompts: (await client.listPrompts()).prompts.map((p) => p.name) });
        break;
      case "prompt": {
        const result = await client.getPrompt({ name: cmd.name, arguments: cmd.args ?? {} });
        reply({ text: result.messages.map((m) => m.content.text).join("") });
        break;
      }
      case "resources":
        reply({ resources: (await client.listResources()).resources.map((r) => ({ name: r.name, uri: r.uri })) });
        break;
      case "read": {
        const result = await client.readResource({ uri: cmd.uri });
        reply({ text: result.contents.map((c) => c.text).join("") });
        break;
      }
      case "changes":
        reply({ listChanged: seen.listChanged, tools: seen.tools });
        break;
      case "close":
        await client.close();
        reply({ closed: true });
        process.exit(0);
      default:
        reply({ error: { message: `unknown op ${cmd.op}` } });
    }
  } catch (err) {
    reply(error(err));
  }
}
