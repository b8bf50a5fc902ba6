// The peers polysocket is measured against: what a user would deploy instead
// to put long-polling in front of an existing WebSocket server. Each client
// session gets its own upstream WebSocket through the `ws` client; messages
// that arrive before the upstream is open wait in order.
//
//   node gateway.js sockjs PORT UPSTREAM_URL     (prefix /sockjs)
//   node gateway.js engine.io PORT UPSTREAM_URL [TRANSPORTS]
//     (path /engine.io/; TRANSPORTS is "polling" unless given, e.g.
//     "polling,websocket" for Engine.IO's upgrade)
"use strict";
const http = require("http");
const WebSocket = require("ws");

const [kind, port, upstreamUrl, transports = "polling"] = process.argv.slice(2);
if (!["sockjs", "engine.io"].includes(kind) || !port || !upstreamUrl) {
  console.error("usage: node gateway.js sockjs|engine.io PORT UPSTREAM_URL [TRANSPORTS]");
  process.exit(64);
}

// Relays one client session: `deliver` hands upstream text to the client,
// `end` closes it. Returns the functions the session calls.
function relay(deliver, end) {
  const upstream = new WebSocket(upstreamUrl);
  const waiting = [];
  upstream.on("open", () => waiting.splice(0).forEach((m) => upstream.send(m)));
  upstream.on("message", (data) => deliver(data.toString()));
  upstream.on("close", end);
  upstream.on("error", end);
  return {
    send: (message) => (upstream.readyState === WebSocket.OPEN ? upstream.send(message) : waiting.push(message)),
    close: () => upstream.close(),
  };
}

const server = http.createServer();
if (kind === "sockjs") {
  const sockjs = require("sockjs");
  const service = sockjs.createServer({ prefix: "/sockjs", log: () => {} });
  service.on("connection", (conn) => {
    const upstream = relay((m) => conn.write(m), () => conn.close());
    conn.on("data", upstream.send);
    conn.on("close", upstream.close);
  });
  service.installHandlers(server);
} else {
  const engine = require("engine.io");
  const service = new engine.Server({ transports: transports.split(",") });
  service.on("connection", (socket) => {
    const upstream = relay((m) => socket.send(m), () => socket.close());
    socket.on("message", (m) => upstream.send(m.toString()));
    socket.on("close", upstream.close);
  });
  service.attach(server);
}
server.listen(Number(port), "127.0.0.1", () => console.log(`${kind} gateway on 127.0.0.1:${port} -> ${upstreamUrl}`));
