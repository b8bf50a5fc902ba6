// The upstream WebSocket server every system relays to: echoes each message
// as it came (text or binary), except the command {"feed": count, "size":
// bytes}, which it answers with the feed of feed.mjs instead.
//
//   node upstream.mjs PORT
import { WebSocketServer } from "ws";
import { feedMessages } from "./feed.mjs";

const port = Number(process.argv[2]);
if (!port) {
  console.error("usage: node upstream.mjs PORT");
  process.exit(64);
}

const feeds = new Map();
function feed(count, size) {
  const key = `${count}/${size}`;
  if (!feeds.has(key)) feeds.set(key, feedMessages(count, size));
  return feeds.get(key);
}

function command(text) {
  if (!text.startsWith('{"feed"')) return null;
  try {
    const { feed: count, size } = JSON.parse(text);
    return Number.isInteger(count) && Number.isInteger(size) ? { count, size } : null;
  } catch {
    return null;
  }
}

const server = new WebSocketServer({ host: "127.0.0.1", port });
server.on("connection", (socket) => {
  socket.on("message", (data, isBinary) => {
    const wanted = isBinary ? null : command(data.toString());
    if (!wanted) return socket.send(data, { binary: isBinary });
    for (const message of feed(wanted.count, wanted.size)) socket.send(message);
  });
  socket.on("error", () => socket.terminate());
});
server.on("listening", () => console.log(`upstream on ws://127.0.0.1:${port}`));
