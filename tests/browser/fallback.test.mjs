// A modern Chromium, WebSocket and all, behind a forward proxy of our own
// that refuses every WebSocket tunnel (`refuse`), accepts it and never
// answers (`hang`), strips the Upgrade header (`strip`), or lets it through
// (`open`), and the same open proxy at the far end of an emulated link with
// a 400 ms round trip (`far`: bench/slowlink/link.mjs between Chromium and
// the proxy). Three systems, each with its default configuration:
//
// - polysocket: PolySocket.install(), then the page's unchanged
//   `new WebSocket(url)`;
// - sockjs-client (websocket first, then its streaming and polling
//   transports) against a SockJS gateway;
// - engine.io-client (polling first, then an upgrade to websocket) against
//   an Engine.IO gateway; both gateways are bench/peers/gateway.js.
//
// Each page opens, sends five messages and waits for their echoes. Prints,
// per mode and system, the open time and the time to the fifth echo on a
// first visit and on a second (the same browser profile: what the first
// visit remembered), then polysocket's distance to the best peer. The
// figures are printed, not asserted; what is asserted is that every message
// comes back once, in order, that the native attempt leaves no trace, and
// where the bridge is (and is not) used.
//
// Needs the binaries `cargo test --workspace` builds and Debian's chromium.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { fork, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { binary, freePort, root, start, stopAll, waitFor } from "../js/processes.mjs";

const FAR_RTT_MS = 400;
const SYSTEMS = ["polysocket", "sockjs", "engine.io"];
const modules = join(root, "tests", "browser", "node_modules");
const LIBRARIES = {
  sockjs: join(modules, "sockjs-client", "dist", "sockjs.min.js"),
  "engine.io": join(modules, "engine.io-client", "dist", "engine.io.min.js"),
};

let near, far, proxy, link, pages, origin, upstream;
const gateways = {};
const peers = [];
const figures = [];

/** Where a proxied host name goes: every name here is on loopback. */
function loopback(host) {
  return host === "localhost" || host.endsWith(".localhost") || host === "127.0.0.1" ? "127.0.0.1" : null;
}

/**
 * The forward proxy. Plain HTTP requests (pages, libraries, /create, the
 * bridge's and the peers' polls) always go through; what happens to a
 * CONNECT (a WebSocket: Chromium tunnels every one through an HTTP proxy)
 * is `mode`. It counts tunnels tried and polysocket creates seen.
 */
async function forwardProxy() {
  const state = { mode: "open", tunnels: 0, creates: 0 };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url);
    const host = loopback(url.hostname);
    if (!host) return res.writeHead(502).end();
    if (url.pathname === "/create") state.creates++;
    const forward = http.request(
      { host, port: url.port || 80, method: req.method, path: url.pathname + url.search, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode, answer.headers);
        answer.pipe(res);
      },
    );
    forward.on("error", () => res.destroy());
    req.pipe(forward);
  });
  server.on("connect", (req, client, head) => {
    const [name, port] = req.url.split(":");
    const host = loopback(name);
    if (!host) return client.end("HTTP/1.1 502 Bad Gateway\r\n\r\n");
    state.tunnels++;
    if (state.mode === "refuse") return client.end("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n");
    client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
    if (state.mode === "hang") {
      client.on("error", () => {});
      return; // holds the tunnel open and passes nothing either way
    }
    const server = net.connect(Number(port), host);
    server.on("error", () => client.destroy());
    client.on("error", () => server.destroy());
    let first = true;
    client.on("data", (chunk) => {
      if (first && state.mode === "strip") {
        // An upgrade-stripping middlebox: the request goes on as plain HTTP.
        chunk = Buffer.from(
          chunk
            .toString("latin1")
            .replace(/^upgrade:.*\r\n/gim, "")
            .replace(/^connection:.*\r\n/gim, "Connection: close\r\n"),
          "latin1",
        );
      }
      first = false;
      server.write(chunk);
    });
    if (head.length) server.write(head);
    server.pipe(client);
  });
  const port = await freePort();
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  return { server, port, state };
}

/** The emulated far link in front of the proxy, as the slow-link benchmark runs it. */
async function farLink(proxyPort) {
  const port = await freePort();
  const child = fork(join(root, "bench", "slowlink", "link.mjs"), [String(port), String(proxyPort), String(FAR_RTT_MS), "0"], {
    stdio: ["ignore", "ignore", "inherit", "ipc"],
  });
  await new Promise((resolve, reject) => {
    child.once("message", resolve);
    child.once("exit", (code) => reject(new Error(`link.mjs exited with ${code}`)));
  });
  return { child, port };
}

/** A gateway of bench/peers/gateway.js, with this suite's copies of its packages. */
async function gateway(kind, extra) {
  const port = await freePort();
  const preload = kind === "engine.io" ? ["--require", join(root, "bench", "slowlink", "engine-io-cors.cjs")] : [];
  const child = spawn("node", [...preload, join(root, "bench", "peers", "gateway.js"), kind, String(port), `${upstream}/echo`, ...extra], {
    stdio: ["ignore", "ignore", process.env.TEST_LOG ? "inherit" : "ignore"],
    env: { ...process.env, NODE_PATH: modules },
  });
  peers.push(child);
  await waitFor(kind === "sockjs" ? `http://127.0.0.1:${port}/sockjs/info` : `http://127.0.0.1:${port}/engine.io/?EIO=4&transport=polling`);
  return port;
}

/**
 * Each system's way of opening, as its own documentation shows it; the rest
 * of the page is the same for all. `transport()` says what the socket ended
 * up on, read after the fifth echo.
 */
function opener(system) {
  if (system === "polysocket") {
    return `PolySocket.install({router: ${JSON.stringify(origin)}, token: "dev"});
var ws = new WebSocket(${JSON.stringify(`${upstream}/echo`)});
function transport() { return ws._inner instanceof PolySocket ? "bridge" : "native"; }`;
  }
  if (system === "sockjs") {
    return `var ws = new SockJS(${JSON.stringify(`http://localhost:${gateways.sockjs}/sockjs`)});
function transport() { return ws.transport; }`;
  }
  return `var socket = eio(${JSON.stringify(`http://localhost:${gateways["engine.io"]}`)});
var ws = {send: function (m) { socket.send(m); }, close: function () { socket.close(); }};
socket.on("open", function () { ws.onopen(); });
socket.on("message", function (data) { ws.onmessage({data: data}); });
socket.on("error", function () { ws.onerror(); });
socket.on("close", function () { ws.onclose({code: 1000}); });
function transport() { return socket.transport.name; }`;
}

/** `/<system>`: the system's library, then the page. Nothing is cached by the browser. */
async function servePages() {
  const server = http.createServer((req, res) => {
    const system = req.url.slice(1);
    if (req.url.startsWith("/lib/")) {
      res.writeHead(200, { "content-type": "application/javascript", "cache-control": "no-store" });
      return res.end(readFileSync(LIBRARIES[req.url.slice(5)]));
    }
    if (!SYSTEMS.includes(system)) return res.writeHead(404).end();
    const library = system === "polysocket" ? `${origin}/polysocket.js` : `/lib/${system}`;
    res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
    res.end(`<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>
<script src="${library}"></script>
<script>
var started = new Date().getTime(), echoes = [], errors = 0, result = {};
${opener(system)}
ws.onopen = function () {
  result.openMs = new Date().getTime() - started;
  for (var i = 1; i <= 5; i++) { ws.send("m" + i); }
};
ws.onerror = function () { errors++; };
ws.onmessage = function (event) {
  echoes.push(event.data);
  if (echoes.length === 5) {
    result.echoedMs = new Date().getTime() - started;
    result.echoes = echoes;
    result.errors = errors;
    result.transport = transport();
    ws.close();
  }
};
ws.onclose = function (event) { result.closed = event.code; window.done = result; };
</script></body></html>`);
  });
  const port = await freePort();
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  return { server, url: `http://127.0.0.1:${port}/` };
}

function launch(proxyPort) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
      "--no-first-run", `--proxy-server=http://127.0.0.1:${proxyPort}`, "--proxy-bypass-list=<-loopback>"],
  });
}

before(async () => {
  const scratch = mkdtempSync(join(tmpdir(), "polysocket-fallback-"));
  const tokens = join(scratch, "tokens.json");
  writeFileSync(tokens, JSON.stringify({ tokens: [
    { token: "dev", targets: ["ws://127.0.0.1:*/*"], origins: ["*"], max_connections: 100 },
  ] }));
  const daemonPort = await freePort();
  const upstreamPort = await freePort();
  start(binary("echo-upstream"), [String(upstreamPort)]);
  start(binary("polysocketd"), ["--standalone", "--listen", `127.0.0.1:${daemonPort}`, "--tokens", tokens, "--allow-private-targets"]);
  upstream = `ws://127.0.0.1:${upstreamPort}`;
  origin = `http://localhost:${daemonPort}`;
  gateways.sockjs = await gateway("sockjs", []);
  gateways["engine.io"] = await gateway("engine.io", ["polling,websocket"]);
  proxy = await forwardProxy();
  link = await farLink(proxy.port);
  pages = await servePages();
  await waitFor(`http://127.0.0.1:${daemonPort}/readyz`);
  near = await launch(proxy.port);
  far = await launch(link.port);
  // One unmeasured visit per system with the tunnel refused, so that no
  // figure pays for a cold server or a cold fallback path.
  proxy.state.mode = "refuse";
  const warm = await near.newContext();
  for (const system of SYSTEMS) await visit(warm, system);
  await warm.close();
});

after(async () => {
  await near?.close();
  await far?.close();
  link?.child.kill();
  for (const child of peers) child.kill();
  pages?.server.close();
  proxy?.server.close();
  stopAll();
  printFigures();
});

/** One visit: the page's figures, and the tunnels and creates it caused. */
async function visit(context, system) {
  const [tunnels, creates] = [proxy.state.tunnels, proxy.state.creates];
  const page = await context.newPage();
  await page.goto(pages.url + system);
  const result = await page.waitForFunction(() => window.done, null, { timeout: 30000 }).then((h) => h.jsonValue());
  await page.close();
  return { ...result, tunnels: proxy.state.tunnels - tunnels, creates: proxy.state.creates - creates };
}

for (const mode of ["refuse", "hang", "strip", "open", "far"]) {
  test(`behind a proxy that does "${mode}" to WebSockets, each system's page gets its echoes`, async () => {
    proxy.state.mode = mode === "far" ? "open" : mode;
    for (const system of SYSTEMS) {
      const context = await (mode === "far" ? far : near).newContext();
      const first = await visit(context, system);
      const second = await visit(context, system);
      await context.close();
      figures.push({ mode, system, first, second });
      for (const seen of [first, second]) {
        assert.deepEqual(seen.echoes, ["m1", "m2", "m3", "m4", "m5"], `${system}: every message, once, in order`);
      }
      if (system !== "polysocket") continue;
      for (const seen of [first, second]) assert.equal(seen.errors, 0, "no error event from the native attempt");
      if (mode === "open" || mode === "far") {
        assert.equal(first.creates + second.creates, 0, "a WebSocket that works is kept: no creates");
        assert.equal(second.transport, "native");
      } else {
        assert.equal(first.creates, 1, "the first visit fell back to the bridge");
        assert.equal(second.tunnels, 0, "the second visit went straight to the bridge");
        assert.equal(second.transport, "bridge");
      }
    }
  });
}

/** The table, then polysocket against the best peer of each mode and visit. */
function printFigures() {
  if (!figures.length) return;
  const cell = (seen) => `${seen.openMs} / ${seen.echoedMs} ms (${seen.transport})`;
  console.log(`fallback: open / 5th echo, first visit | second visit; far = RTT ${FAR_RTT_MS} ms, nothing blocked`);
  for (const { mode, system, first, second } of figures) {
    console.log(`fallback ${mode.padEnd(6)} ${system.padEnd(10)} ${cell(first).padEnd(32)} | ${cell(second)}`);
  }
  for (const mode of new Set(figures.map((f) => f.mode))) {
    const rows = figures.filter((f) => f.mode === mode);
    const ours = rows.find((f) => f.system === "polysocket");
    const others = rows.filter((f) => f.system !== "polysocket");
    if (!ours || !others.length) continue;
    const versus = (visitName, key) => {
      const best = Math.min(...others.map((f) => f[visitName][key]));
      return `${ours[visitName][key] - best >= 0 ? "+" : ""}${ours[visitName][key] - best} ms`;
    };
    console.log(
      `fallback ${mode.padEnd(6)} polysocket - best peer: first visit open ${versus("first", "openMs")}, ` +
        `5th echo ${versus("first", "echoedMs")}; second visit open ${versus("second", "openMs")}, 5th echo ${versus("second", "echoedMs")}`,
    );
  }
}
