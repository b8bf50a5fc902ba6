// A modern Chromium, WebSocket and all, behind a forward proxy of our own
// that refuses the WebSocket tunnel (`refuse`), accepts it and never
// answers (`hang`), strips the Upgrade header (`strip`), or lets it through
// (`open`). The page's code is the same in every mode: PolySocket.install(),
// then `new WebSocket(url)`, five messages, their echoes. Prints, per mode,
// the open time and the time to the fifth echo on a first visit and on a
// second (the same browser profile: what the first visit remembered).
//
// Needs the binaries `cargo test --workspace` builds and Debian's chromium.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { binary, freePort, start, stopAll, waitFor } from "../js/processes.mjs";

let browser, proxy, pages, origin, upstream, upstreamPort;

/** Where a proxied host name goes: every name here is on loopback. */
function loopback(host) {
  return host === "localhost" || host.endsWith(".localhost") || host === "127.0.0.1" ? "127.0.0.1" : null;
}

/**
 * The forward proxy. Plain HTTP requests (the page, polysocket.js, the
 * bridge's requests) always go through; what happens to a CONNECT to the
 * upstream's port (a WebSocket, which Chromium always tunnels) is `mode`.
 * It counts tunnels tried and creates seen.
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
    if (Number(port) === upstreamPort) state.tunnels++;
    const mode = Number(port) === upstreamPort ? state.mode : "open";
    if (mode === "refuse") return client.end("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n");
    client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
    if (mode === "hang") {
      client.on("error", () => {});
      return; // holds the tunnel open and passes nothing either way
    }
    const server = net.connect(Number(port), host);
    server.on("error", () => client.destroy());
    client.on("error", () => server.destroy());
    let first = true;
    client.on("data", (chunk) => {
      if (first && mode === "strip") {
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

/** The page: unchanged WebSocket code after install(). */
async function servePages() {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(`<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>
<script src="${origin}/polysocket.js"></script>
<script>
PolySocket.install({router: ${JSON.stringify(origin)}, token: "dev"});
var started = new Date().getTime(), echoes = [], errors = 0, result = {};
var ws = new WebSocket(${JSON.stringify(`${upstream}/echo`)});
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

before(async () => {
  const scratch = mkdtempSync(join(tmpdir(), "polysocket-fallback-"));
  const tokens = join(scratch, "tokens.json");
  writeFileSync(tokens, JSON.stringify({ tokens: [
    { token: "dev", targets: ["ws://127.0.0.1:*/*"], origins: ["*"], max_connections: 100 },
  ] }));
  const daemonPort = await freePort();
  upstreamPort = await freePort();
  start(binary("echo-upstream"), [String(upstreamPort)]);
  start(binary("polysocketd"), ["--standalone", "--listen", `127.0.0.1:${daemonPort}`, "--tokens", tokens, "--allow-private-targets"]);
  upstream = `ws://127.0.0.1:${upstreamPort}`;
  origin = `http://localhost:${daemonPort}`;
  proxy = await forwardProxy();
  pages = await servePages();
  await waitFor(`http://127.0.0.1:${daemonPort}/readyz`);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
      "--no-first-run", `--proxy-server=http://127.0.0.1:${proxy.port}`, "--proxy-bypass-list=<-loopback>"],
  });
});

after(async () => {
  await browser?.close();
  pages?.server.close();
  proxy?.server.close();
  stopAll();
});

/** One visit: the page's figures, and the tunnels and creates it caused. */
async function visit(context) {
  const [tunnels, creates] = [proxy.state.tunnels, proxy.state.creates];
  const page = await context.newPage();
  await page.goto(pages.url);
  const result = await page.waitForFunction(() => window.done, null, { timeout: 20000 }).then((h) => h.jsonValue());
  await page.close();
  return { ...result, tunnels: proxy.state.tunnels - tunnels, creates: proxy.state.creates - creates };
}

for (const mode of ["refuse", "hang", "strip", "open"]) {
  test(`behind a proxy that does "${mode}" to WebSockets, the page's unchanged code gets its echoes`, async () => {
    proxy.state.mode = mode;
    const context = await browser.newContext();
    const first = await visit(context);
    const second = await visit(context);
    await context.close();
    console.log(
      `# fallback ${mode}: first visit open ${first.openMs} ms, 5 echoes ${first.echoedMs} ms ` +
        `(${first.tunnels} tunnels, ${first.creates} creates); second visit open ${second.openMs} ms, ` +
        `5 echoes ${second.echoedMs} ms (${second.tunnels} tunnels, ${second.creates} creates)`,
    );
    for (const seen of [first, second]) {
      assert.deepEqual(seen.echoes, ["m1", "m2", "m3", "m4", "m5"], "every message, once, in order");
      assert.equal(seen.errors, 0, "no error event from the native attempt");
    }
    if (mode === "open") {
      assert.equal(first.creates + second.creates, 0, "a WebSocket that works is kept: no creates");
    } else {
      assert.equal(first.creates, 1, "the first visit fell back to the bridge");
      assert.equal(second.tunnels, 0, "the second visit went straight to the bridge");
    }
  });
}
