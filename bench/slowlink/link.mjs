// An emulated slow link in user space (no netem here): a TCP proxy on
// loopback between the browser and one system's server. Each direction is
// one link shared by all of the system's connections, as a client's access
// link is: a chunk of n bytes (a TCP segment's payload at most) occupies it
// n*8/rate seconds behind the chunks before it, then takes the one-way delay
// (RTT/2) to arrive. Data keeps its order; a new connection waits one RTT
// (the TCP handshake) before its first byte leaves. Bytes are counted as they arrive at the far end (TCP payload: HTTP
// headers and bodies, not TCP/IP overhead).
//
// Run by the harness with an IPC channel (child_process.fork):
//   node link.mjs LISTEN_PORT TARGET_PORT RTT_MS RATE_BITS_PER_SECOND (0: unlimited)
// Commands: {id, cmd: "counters", reset?: true} answers the counters (and
// zeroes them); {id, cmd: "outage", ms} resets every open connection and
// refuses (resets) new ones for `ms`, answering {id, started, restored}
// (epoch ms) once the link works again.
import net from "node:net";
import { performance } from "node:perf_hooks";

const [listenPort, targetPort, rttMs, rate] = process.argv.slice(2).map(Number);
if (!listenPort || !targetPort || !(rttMs >= 0) || !(rate >= 0)) {
  console.error("usage: node link.mjs LISTEN_PORT TARGET_PORT RTT_MS RATE_BITS_PER_SECOND");
  process.exit(64);
}
const oneWay = rttMs / 2;
// The bottleneck's buffer: past this many bytes waiting to be serialized,
// the sender is held back (what TCP flow control would do), so a fast
// server cannot queue a whole feed inside the link.
const BUFFER_BYTES = 64 * 1024;

const connections = new Set();
let counters = { up: 0, down: 0, connections: 0 };
let downUntil = 0;

/** One direction of the link: a FIFO of chunks, each with its arrival time. */
class Direction {
  constructor(name) {
    this.name = name;
    this.queue = [];
    this.busyUntil = 0;
    this.timer = null;
  }

  /** Bytes accepted but not yet serialized onto the link. */
  backlog(now) {
    return rate ? (Math.max(0, this.busyUntil - now) * rate) / 8000 : 0;
  }

  // `action` is a Buffer to write, or "end" / "destroy" to pass on a close
  // in order with the data before it.
  send(from, to, action) {
    const now = performance.now();
    this.busyUntil = Math.max(now, this.busyUntil);
    const limited = rate > 0 && Buffer.isBuffer(action);
    // A read of up to 64 KiB arrives segment by segment, as it would on a
    // real link, not all at once when its last byte is through.
    for (const piece of limited ? segments(action) : [action]) {
      if (limited) this.busyUntil += (piece.length * 8000) / rate;
      this.queue.push({ at: this.busyUntil + oneWay, to, action: piece });
    }
    if (!this.timer) this.schedule();
    if (this.backlog(now) > BUFFER_BYTES) {
      from.pause();
      const halfDrained = this.busyUntil - (BUFFER_BYTES / 2) * 8000 / rate;
      setTimeout(() => from.destroyed || from.resume(), halfDrained - now);
    }
  }

  schedule() {
    this.timer = this.queue.length ? setTimeout(() => this.deliver(), Math.max(0, this.queue[0].at - performance.now())) : null;
  }

  deliver() {
    const now = performance.now();
    while (this.queue.length && this.queue[0].at <= now) {
      const { to, action } = this.queue.shift();
      if (to.destroyed) continue;
      if (action === "end") to.end();
      else if (action === "destroy") to.destroy();
      else {
        counters[this.name] += action.length;
        to.write(action);
      }
    }
    this.schedule();
  }

  clear() {
    clearTimeout(this.timer);
    this.timer = null;
    this.queue = [];
    this.busyUntil = 0;
  }
}

// A TCP segment's payload on an Ethernet path.
const SEGMENT_BYTES = 1460;
function segments(buffer) {
  const pieces = [];
  for (let start = 0; start < buffer.length; start += SEGMENT_BYTES) pieces.push(buffer.subarray(start, start + SEGMENT_BYTES));
  return pieces;
}

const up = new Direction("up");
const down = new Direction("down");

// Each side's data, end and failure cross the link to the other side.
function pipe(from, to, direction) {
  let ended = false;
  from.on("data", (chunk) => direction.send(from, to, chunk));
  from.on("end", () => {
    ended = true;
    direction.send(from, to, "end");
  });
  from.on("close", () => ended || direction.send(from, to, "destroy"));
  from.on("error", () => {});
}

const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
  if (performance.now() < downUntil) return client.resetAndDestroy();
  counters.connections++;
  // The TCP handshake takes a round trip before the client's first byte can
  // leave: loopback completed it at once, so the client's data waits.
  client.pause();
  setTimeout(() => client.destroyed || client.resume(), rttMs);
  const target = net.connect({ host: "127.0.0.1", port: targetPort, allowHalfOpen: true, noDelay: true });
  const connection = { client, target };
  connections.add(connection);
  pipe(client, target, up);
  pipe(target, client, down);
  const forget = () => client.destroyed && target.destroyed && connections.delete(connection);
  client.on("close", forget);
  target.on("close", forget);
});

function outage(ms) {
  downUntil = performance.now() + ms;
  for (const { client, target } of connections) {
    if (!client.destroyed) client.resetAndDestroy();
    target.destroy();
  }
  connections.clear();
  up.clear();
  down.clear();
}

process.on("message", ({ id, cmd, reset, ms }) => {
  if (cmd === "counters") {
    process.send({ id, counters });
    if (reset) counters = { up: 0, down: 0, connections: 0 };
  } else if (cmd === "outage") {
    const started = Date.now();
    outage(ms);
    setTimeout(() => process.send({ id, started, restored: Date.now() }), ms);
  }
});
// The harness's end is the link's.
process.on("disconnect", () => process.exit(0));

server.listen(listenPort, "127.0.0.1", () => process.send({ listening: listenPort }));
