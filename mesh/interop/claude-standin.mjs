// A stand-in for `claude` in tests of what nsh prints and writes: it starts the MCP servers
// of `--mcp-config FILE` the way Claude Code does (stdio `command`/`args`/`env`; `http` with
// `headers` and a `headersHelper` command whose JSON output adds headers), with the official
// MCP TypeScript SDK client, and runs the hooks of `--settings FILE`. A test drives it line by
// line on stdin; each answer is one JSON line on stdout.
//
// first line out: {"ready":true,"servers":{NAME:[tool names]}} once every server answered
// commands: {"op":"tools"}  {"op":"call","server":S,"name":N,"args":{}}
//           {"op":"hook","event":"UserPromptSubmit"}  {"op":"close"}

import { execSync } from "node:child_process";
import fs from "node:fs";
import readline from "node:readline";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

function flag(name) {
  const at = process.argv.indexOf(name);
  return at < 0 ? undefined : process.argv[at + 1];
}

function reply(value) {
  process.stdout.write(JSON.stringify(value) + "\n");
}

const mcpConfig = JSON.parse(fs.readFileSync(flag("--mcp-config"), "utf8"));
const settingsFile = flag("--settings");
const settings = settingsFile ? JSON.parse(fs.readFileSync(settingsFile, "utf8")) : {};

async function connect(name, server) {
  const client = new Client({ name: "claude-standin", version: "1.0.0" });
  let transport;
  if ((server.type ?? "stdio") === "stdio") {
    transport = new StdioClientTransport({
      command: server.command,
      args: server.args ?? [],
      env: { ...process.env, ...(server.env ?? {}) },
      stderr: "inherit",
    });
  } else {
    const headers = { ...(server.headers ?? {}) };
    if (server.headersHelper) {
      Object.assign(headers, JSON.parse(execSync(server.headersHelper, { encoding: "utf8" })));
    }
    transport = new StreamableHTTPClientTransport(new URL(server.url), { requestInit: { headers } });
  }
  await client.connect(transport);
  return client;
}

const clients = {};
const tools = {};
// Servers a test does not reach (a preset whose launcher is not installed) are reported, not
// fatal, as in Claude Code.
const failed = {};
for (const [name, server] of Object.entries(mcpConfig.mcpServers ?? {})) {
  try {
    clients[name] = await connect(name, server);
    tools[name] = (await clients[name].listTools()).tools.map((t) => t.name);
  } catch (err) {
    failed[name] = String(err?.message ?? err);
  }
}
reply({ ready: true, servers: tools, failed });

function runHooks(event) {
  const outputs = [];
  for (const matcher of settings.hooks?.[event] ?? []) {
    for (const hook of matcher.hooks ?? []) {
      const input = JSON.stringify({ session_id: "standin", hook_event_name: event, prompt: "next", cwd: process.cwd() });
      outputs.push(execSync(hook.command, { input, encoding: "utf8" }));
    }
  }
  return outputs;
}

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  const command = JSON.parse(line);
  try {
    if (command.op === "tools") {
      // Listed again: a gateway's upstreams may have come up since.
      for (const [name, client] of Object.entries(clients)) {
        tools[name] = (await client.listTools()).tools.map((t) => t.name);
      }
      reply({ ok: true, servers: tools });
    } else if (command.op === "call") {
      const result = await clients[command.server].callTool({ name: command.name, arguments: command.args ?? {} });
      const text = (result.content ?? []).map((c) => c.text ?? "").join("\n");
      reply({ ok: !result.isError, text });
    } else if (command.op === "hook") {
      reply({ ok: true, outputs: runHooks(command.event) });
    } else if (command.op === "close") {
      break;
    } else {
      reply({ ok: false, error: `unknown op ${command.op}` });
    }
  } catch (err) {
    reply({ ok: false, error: String(err?.message ?? err) });
  }
}
for (const client of Object.values(clients)) await client.close();
process.exit(0);
