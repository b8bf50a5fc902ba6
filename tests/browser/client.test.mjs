// polysocket.js in a real browser: headless Chromium on pages served by
// polysocketd (standalone), with window.WebSocket deleted before the client
// loads, as in a browser that has none. The same scenarios run again with
// the native WebSocket against the same upstream, and must give the same
// events: the client is a faithful stand-in.
//
// Needs the binaries `cargo test --workspace` builds (target/debug) and
// Debian's chromium; scripts/test.sh provides both.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, existsSync } from "node:fs";
import { createServer } from "node:net";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const root = new URL("../../", import.meta.url).pathname;
const target = process.env.CARGO_TARGET_DIR || join(root, "target");
const binary = (name) => {
  const path = join(target, "debug", name);
  assert.ok(existsSync(path), `${path} is missing: run cargo test --workspace (scripts/test.sh) first`);
  return path;
};

const children = [];
let browser, origin, upstream, screenshots;

function freePort() {
  return new Promise((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function start(path, args) {
  const child = spawn(path, args, { stdio: ["ignore", "ignore", process.env.TEST_LOG ? "inherit" : "ignore"] });
  children.push(child);
  return child;
}

async function waitFor(url) {
  for (let i = 0; i < 200; i++) {
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${url} never answered`);
}

before(async () => {
  const scratch = mkdtempSync(join(tmpdir(), "polysocket-browser-"));
  screenshots = process.env.SCREENSHOT_DIR || scratch;
  const tokens = join(scratch, "tokens.json");
  writeFileSync(tokens, JSON.stringify({ tokens: [{ token: "dev", targets: ["ws://127.0.0.1:*/*"], origins: ["*"], max_connections: 100 }] }));
  const [upstreamPort, daemonPort] = [await freePort(), await freePort()];
  start(binary("echo-upstream"), [String(upstreamPort)]);
  start(binary("polysocketd"), ["--standalone", "--listen", `127.0.0.1:${daemonPort}`, "--tokens", tokens, "--allow-private-targets"]);
  upstream = `ws://127.0.0.1:${upstreamPort}`;
  origin = `http://localhost:${daemonPort}`;
  await waitFor(`http://127.0.0.1:${daemonPort}/readyz`);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
  });
});

after(async () => {
  await browser?.close();
  for (const child of children) child.kill();
});

/** A page served by the daemon; `legacy` deletes window.WebSocket first. */
async function page(legacy) {
  const context = await browser.newContext();
  if (legacy) await context.addInitScript(() => { delete window.WebSocket; });
  const page = await context.newPage();
  await page.goto(`${origin}/demo`);
  if (legacy) {
    assert.equal(await page.evaluate(() => typeof window.WebSocket), "undefined", "a browser without WebSocket");
    await page.evaluate((router) => PolySocket.install({ router, token: "dev" }), origin);
    assert.equal(await page.evaluate(() => WebSocket === PolySocket), true);
  }
  return page;
}

/**
 * Runs a scenario in the page and returns the events it saw. The scenario
 * gets `ws` (open or opening) and `done(events)`; events are recorded as
 * plain objects so both implementations can be compared.
 */
function run(page, url, scenario, options = {}) {
  return page.evaluate(
    ({ url, scenario, binaryType }) =>
      new Promise((resolve, reject) => {
        const events = [];
        const ws = new WebSocket(url);
        if (binaryType) ws.binaryType = binaryType;
        const record = (e) => {
          const entry = { type: e.type };
          if (e.type === "message") {
            if (e.data instanceof Blob) entry.data = `Blob of ${e.data.size} bytes`;
            else entry.data = typeof e.data === "string" ? e.data : Array.from(new Uint8Array(e.data));
            // Long texts are compared by the scenario; keep failures readable.
            if (entry.data.length > 200) entry.data = `${entry.data.length} characters`;
          }
          if (e.type === "close") Object.assign(entry, { code: e.code, reason: e.reason, wasClean: e.wasClean });
          events.push(entry);
        };
        for (const type of ["open", "message", "error", "close"]) ws.addEventListener(type, record);
        ws.addEventListener("close", () => resolve(events));
        setTimeout(() => reject(new Error(`timed out; saw ${JSON.stringify(events)}`)), 20000);
        // The scenario's body, rebuilt in the page.
        new Function("ws", "events", scenario)(ws, events);
      }),
    { url, scenario, binaryType: options.binaryType },
  );
}

const scenarios = {
  "text and unicode echo": {
    path: "/echo",
    body: `ws.onopen = function () { ws.send("hello"); ws.send("héllo ✓ 😀 \\u2028 </script>"); };
           ws.onmessage = function () { if (events.filter(function (e) { return e.type === "message"; }).length === 2) ws.close(1000, "done"); };`,
  },
  "binary echo as arraybuffer": {
    path: "/echo",
    binaryType: "arraybuffer",
    body: `ws.onopen = function () { ws.send(new Uint8Array([0, 1, 2, 127, 128, 254, 255]).buffer); ws.send(new Uint8Array([9, 8, 7])); };
           ws.onmessage = function () { if (events.filter(function (e) { return e.type === "message"; }).length === 2) ws.close(); };`,
  },
  "Blob send, and a received Blob": {
    path: "/echo",
    binaryType: "arraybuffer",
    body: `ws.onopen = function () { ws.send(new Blob([new Uint8Array([1, 2, 3]), "ab"])); };
           ws.onmessage = function () {
             ws.binaryType = "blob";
             ws.onmessage = function (e) {
               var reader = new FileReader();
               reader.onload = function () { events.push({type: "blob", isBlob: e.data instanceof Blob, bytes: Array.from(new Uint8Array(reader.result))}); ws.close(); };
               reader.readAsArrayBuffer(e.data);
             };
             ws.send(new Uint8Array([7, 7]));
           };`,
  },
  "a 100 KB message": {
    path: "/echo",
    body: `var big = ""; for (var i = 0; i < 100 * 1024; i++) big += String.fromCharCode(97 + (i % 26));
           big += "é😀";
           ws.onopen = function () { ws.send(big); };
           ws.onmessage = function (e) { events.push({type: "check", same: e.data === big, length: e.data.length}); ws.close(); };`,
  },
  "close by the client with code and reason": {
    path: "/echo",
    body: `ws.onopen = function () { ws.close(4001, "bye now"); };`,
  },
  "close by the upstream": {
    path: "/close",
    body: `ws.onopen = function () { ws.send("close please"); };`,
  },
  "argument checks": {
    path: "/echo",
    body: `var thrown = [];
           try { ws.send("too early"); } catch (e) { thrown.push(e.name); }
           ws.onopen = function () {
             try { ws.close(1005); } catch (e) { thrown.push(e.name); }
             try { ws.close(1000, new Array(125).join("x")); } catch (e) { thrown.push(e.name); }
             events.push({type: "thrown", names: thrown, readyState: ws.readyState, constants: [ws.CONNECTING, ws.OPEN, ws.CLOSING, ws.CLOSED]});
             ws.close();
           };`,
  },
};

for (const [name, scenario] of Object.entries(scenarios)) {
  test(`${name}: polysocket.js matches the native WebSocket`, async () => {
    const [legacy, native] = [await page(true), await page(false)];
    const url = `${upstream}${scenario.path}`;
    const viaBridge = await run(legacy, url, scenario.body, scenario);
    const direct = await run(native, url, scenario.body, scenario);
    assert.deepEqual(viaBridge, direct);
    assert.equal(viaBridge[0].type, "open");
    assert.equal(viaBridge.at(-1).type, "close");
    await legacy.context().close();
    await native.context().close();
  });
}

test("the scenarios saw what they should", async () => {
  const legacy = await page(true);
  const close = await run(legacy, `${upstream}/close`, scenarios["close by the upstream"].body);
  assert.deepEqual(close.at(-1), { type: "close", code: 4000, reason: "bye", wasClean: true });
  const client = await run(legacy, `${upstream}/echo`, scenarios["close by the client with code and reason"].body);
  assert.deepEqual(client.at(-1), { type: "close", code: 4001, reason: "bye now", wasClean: true });
  const big = await run(legacy, `${upstream}/echo`, scenarios["a 100 KB message"].body);
  assert.deepEqual(big.find((e) => e.type === "check"), { type: "check", same: true, length: 100 * 1024 + 3 });
  const blob = await run(legacy, `${upstream}/echo`, scenarios["Blob send, and a received Blob"].body, { binaryType: "arraybuffer" });
  assert.deepEqual(blob.filter((e) => e.type === "message" || e.type === "blob"), [
    { type: "message", data: [1, 2, 3, 97, 98] },
    { type: "message", data: "Blob of 2 bytes" },
    { type: "blob", isBlob: true, bytes: [7, 7] },
  ]);
  const checks = await run(legacy, `${upstream}/echo`, scenarios["argument checks"].body);
  assert.deepEqual(checks.find((e) => e.type === "thrown"), {
    type: "thrown",
    names: ["InvalidStateError", "InvalidAccessError", "SyntaxError"],
    readyState: 1,
    constants: [0, 1, 2, 3],
  });
  await legacy.context().close();
});

test("a poll answer lost in flight is fetched again: nothing lost, nothing doubled", async () => {
  const legacy = await page(true);
  let aborted = 0;
  // The first poll answer that carries messages reaches the daemon's side of
  // the connection, then never reaches the page.
  await legacy.route(/\/j\//, async (route) => {
    // Playwright's own fetch cannot resolve *.localhost, so the poll goes to
    // the daemon from here, with the socket's name in the Host header.
    const url = new URL(route.request().url());
    const answer = await new Promise((resolve, reject) => {
      http
        .get({ host: "127.0.0.1", port: url.port, path: url.pathname + url.search, headers: { host: url.host } }, (res) => {
          let body = "";
          res.on("data", (chunk) => (body += chunk));
          res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body }));
        })
        .on("error", reject);
    });
    if (aborted === 0 && answer.body.includes('"seq"')) {
      aborted++;
      return route.abort("connectionreset");
    }
    return route.fulfill({ status: answer.status, headers: answer.headers, body: answer.body });
  });
  const events = await run(
    legacy,
    `${upstream}/say?n=5&text=m`,
    `ws.onmessage = function () { if (events.filter(function (e) { return e.type === "message"; }).length === 5) ws.close(); };`,
  );
  assert.equal(aborted, 1, "a poll answer was dropped");
  assert.deepEqual(
    events.filter((e) => e.type === "message").map((e) => e.data),
    ["m-1", "m-2", "m-3", "m-4", "m-5"],
  );
  await legacy.context().close();
});

test("a persistent failure closes with 1006 after retrying", async () => {
  const legacy = await page(true);
  let polls = 0;
  // Once open, the daemon is unreachable for good.
  await legacy.route(/\/j\//, (route) => {
    polls++;
    return route.abort("connectionrefused");
  });
  const events = await run(legacy, `${upstream}/echo`, "");
  assert.deepEqual(events, [{ type: "open" }, { type: "error" }, { type: "close", code: 1006, reason: "", wasClean: false }]);
  assert.ok(polls > 1, `the poll was retried (${polls} attempts)`);
  await legacy.context().close();
});

test("the demo page works in a browser without WebSocket", async () => {
  const context = await browser.newContext();
  await context.addInitScript(() => { delete window.WebSocket; });
  const demo = await context.newPage();
  await demo.goto(`${origin}/demo`);
  await demo.fill("#target", `${upstream}/echo`);
  await demo.click("#open");
  await demo.waitForSelector("text=open", { timeout: 10000 });
  await demo.fill("#message", "hello from a legacy browser");
  await demo.press("#message", "Enter");
  await demo.waitForSelector("text=< hello from a legacy browser", { timeout: 10000 });
  assert.equal(await demo.textContent("#transport"), "polysocket");
  const shot = join(screenshots, "demo.png");
  await demo.screenshot({ path: shot, fullPage: true });
  assert.ok(existsSync(shot));
  console.log(`demo screenshot: ${shot}`);
  await context.close();
});
