// An MCP server built with the official TypeScript SDK, for `nsh mcp doctor` tests: one tool,
// `echo`. Speaks stdio by default, or streamable HTTP with `--http PORT` (stateless: a fresh
// server and transport per request, as the SDK's examples do).

import http from "node:http";

import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { z } from "zod";

function build() {
  const server = new McpServer({ name: "interop-echo", version: "1.0.0" });
  server.registerTool(
    "echo",
    { description: "Returns the text it is given.", inputSchema: { text: z.string() } },
    async ({ text }) => ({ content: [{ type: "text", text }] }),
  );
  return server;
}

const httpIndex = process.argv.indexOf("--http");
if (httpIndex === -1) {
  await build().connect(new StdioServerTransport());
} else {
  const port = Number(process.argv[httpIndex + 1]);
  http
    .createServer(async (req, res) => {
      if (req.url !== "/mcp") {
        res.writeHead(404).end();
        return;
      }
      let body = "";
      for await (const chunk of req) body += chunk;
      const server = build();
      const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
      res.on("close", () => {
        transport.close();
        server.close();
      });
      await server.connect(transport);
      await transport.handleRequest(req, res, body ? JSON.parse(body) : undefined);
    })
    .listen(port, "127.0.0.1", function () {
      // Port 0 picks a free one: say which, for the test that started us.
      console.error(`listening addr=127.0.0.1:${this.address().port}`);
    });
}
