// A stdio MCP server for the end-to-end test's McpGateway upstream, in plain Node (the image
// has no MCP SDK): newline-delimited JSON-RPC, `initialize`, `ping`, `tools/list` and
// `tools/call` of two tools. Each answer names this process, so a test sees which pod served it.
import readline from "node:readline";

const tools = [
  {
    name: "echo",
    description: "Returns the text it is given.",
    inputSchema: { type: "object", properties: { text: { type: "string" } }, required: ["text"] },
  },
  {
    name: "delete_everything",
    description: "A tool a policy should hide.",
    inputSchema: { type: "object", properties: {} },
  },
];

function answer(id, result) {
  process.stdout.write(JSON.stringify({ jsonrpc: "2.0", id, result }) + "\n");
}

function fail(id, code, message) {
  process.stdout.write(JSON.stringify({ jsonrpc: "2.0", id, error: { code, message } }) + "\n");
}

for await (const line of readline.createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const msg = JSON.parse(line);
  if (msg.id === undefined) continue; // notifications
  switch (msg.method) {
    case "initialize":
      answer(msg.id, {
        protocolVersion: msg.params?.protocolVersion ?? "2025-11-25",
        capabilities: { tools: {} },
        serverInfo: { name: "e2e-echo", version: "1.0.0" },
      });
      break;
    case "ping":
      answer(msg.id, {});
      break;
    case "tools/list":
      answer(msg.id, { tools });
      break;
    case "tools/call": {
      const name = msg.params?.name;
      if (name === "echo") {
        answer(msg.id, { content: [{ type: "text", text: `echo(${process.pid}): ${msg.params.arguments?.text ?? ""}` }] });
      } else if (name === "delete_everything") {
        answer(msg.id, { content: [{ type: "text", text: "deleted" }] });
      } else {
        fail(msg.id, -32602, `unknown tool ${name}`);
      }
      break;
    }
    default:
      fail(msg.id, -32601, `method not found: ${msg.method}`);
  }
}
