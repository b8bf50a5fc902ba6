// The upstream WebSocket server every system relays to: echoes each message
// as it came (text or binary), except the command {"feed": count, "size":
// bytes}, which it answers with the feed of feed.mjs instead, all at once,
// and {"trickle": count, "every": ms, "size": bytes}: the same records, one
// every `every` ms, each stamped with when it left ("at", epoch ms: the
// page is on the same machine and reads the same clock).
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
  if (!text.startsWith('{"feed"') && !text.startsWith('{"trickle"')) return null;
  try {
    const { feed, trickle, every = 0, size } = JSON.parse(text);
    const count = feed ?? trickle;
    return Number.isInteger(count) && Number.isInteger(size) && Number.isInteger(every) ? { count, size, every: trickle ? every : 0 } : null;
  } catch {
    return null;
  }
}

function trickle(socket, messages, every) {
  let n = 0;
  const timer = setInterval(() => {
    if (n === messages.length || socket.readyState !== socket.OPEN) return clearInterval(timer);
    socket.send(`{"at":${Date.now()},${messages[n++].slice(1)}`);
  }, every);
}

const server = new WebSocketServer({ host: "127.0.0.1", port });
server.on("connection", (socket) => {
  socket.on("message", (data, isBinary) => {
    const wanted = isBinary ? null : command(data.toString());
    if (!wanted) return socket.send(data, { binary: isBinary });
    if (wanted.every) return trickle(socket, feed(wanted.count, wanted.size), wanted.every);
    for (const message of feed(wanted.count, wanted.size)) socket.send(message);
  });
  socket.on("error", () => socket.terminate());
});
server.on("listening", () => console.log(`upstream on ws://127.0.0.1:${port}`));
