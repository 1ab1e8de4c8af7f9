#!/usr/bin/env node
// Start @modelcontextprotocol/server-everything in Streamable HTTP mode on 127.0.0.1 only.
//
//   node tests/node/everything-http.mjs [PORT] [--exit-on-stdin-eof]
//
// PORT comes from argv[2], else $PORT, else 0 (= an ephemeral port chosen by the kernel;
// best for tests, no port races). Once the socket listens, exactly one line is written to
// stdout:
//
//   LISTENING http://127.0.0.1:<port>/mcp
//
// and nothing else is ever written to stdout (the server's own console.log chatter is
// sent to stderr), so a test reads stdout up to that line instead of sleeping.
// With --exit-on-stdin-eof the process exits when its stdin closes (the parent died).
//
// Why a wrapper: the package's streamableHttp transport calls `app.listen(PORT)` with no
// host, i.e. it binds every interface. We patch net.Server.prototype.listen before
// importing it so the bind is forced onto 127.0.0.1.
import net from "node:net";

const args = process.argv.slice(2);
const exitOnStdinEof = args.includes("--exit-on-stdin-eof");
// --sse: the deprecated HTTP+SSE transport (GET /sse, POST /message) instead of Streamable HTTP.
const sse = args.includes("--sse");
const positional = args.filter((a) => !a.startsWith("--"));
const portArg = positional[0] ?? process.env.PORT ?? "0";
const port = Number(portArg);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`everything-http: bad port ${JSON.stringify(portArg)}`);
  process.exit(2);
}
const HOST = "127.0.0.1";

// stdout is reserved for the LISTENING line.
const toStderr = (...a) => console.error(...a);
console.log = toStderr;
console.info = toStderr;
console.debug = toStderr;

// The module reads PORT itself (for its log line and its EADDRINUSE message).
process.env.PORT = String(port);

const originalListen = net.Server.prototype.listen;
let patched = false;
net.Server.prototype.listen = function patchedListen(...listenArgs) {
  if (patched) return originalListen.apply(this, listenArgs);
  patched = true;
  const cb = listenArgs.find((a) => typeof a === "function");
  this.once("listening", () => {
    const addr = this.address();
    process.stdout.write(`LISTENING http://${HOST}:${addr.port}/${sse ? "sse" : "mcp"}\n`);
  });
  return originalListen.call(this, { port, host: HOST }, cb);
};

process.on("SIGTERM", () => process.exit(0));
if (exitOnStdinEof) {
  process.stdin.on("end", () => process.exit(0));
  process.stdin.on("error", () => process.exit(0));
  process.stdin.resume();
}

await import(
  sse
    ? "@modelcontextprotocol/server-everything/dist/transports/sse.js"
    : "@modelcontextprotocol/server-everything/dist/transports/streamableHttp.js"
);
