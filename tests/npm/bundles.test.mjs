// The installed package bundled as pages bundle it, an ES module entry with
// esbuild and a CommonJS one with webpack (production: minified, with its
// tree shaking), each run in headless Chromium with window.WebSocket deleted
// against a real polysocketd --standalone and an upstream echo: a text and a
// binary message echoed, then a close with a code and a reason.
//
// Needs the binaries `cargo test --workspace` builds (target/debug) and
// Debian's chromium, as tests/browser does; scripts/test.sh provides both.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { join } from "node:path";
import { promisify } from "node:util";
import * as esbuild from "esbuild";
import webpack from "webpack";
import { chromium } from "playwright-core";
import { consumer } from "./consumer.mjs";
import { binary, freePort, launchChromium, root, start, stopAll, waitFor } from "../js/processes.mjs";

let project, browser, pages, router, upstream;

/** Bundles: {name: path of the bundle, inputs: the package files it holds}. */
const bundles = {};

async function bundleWithEsbuild() {
  const outfile = join(project.dir, "dist", "esm.js");
  const result = await esbuild.build({
    absWorkingDir: project.dir,
    entryPoints: ["./esm-entry.mjs"],
    bundle: true,
    format: "esm",
    platform: "browser",
    outfile,
    metafile: true,
    logLevel: "silent",
  });
  const inputs = Object.keys(result.metafile.inputs).filter((input) => input.startsWith("node_modules/polysocket/"));
  bundles.esm = { path: outfile, inputs: inputs.map((input) => input.slice("node_modules/polysocket/".length)).sort() };
}

async function bundleWithWebpack() {
  const compiler = webpack({
    mode: "production",
    target: "web",
    context: project.dir,
    entry: "./cjs-entry.cjs",
    output: { path: join(project.dir, "dist"), filename: "cjs.js" },
  });
  const stats = await promisify(compiler.run.bind(compiler))();
  await promisify(compiler.close.bind(compiler))();
  assert.ok(!stats.hasErrors() && !stats.hasWarnings(), stats.toString("errors-warnings"));
  const modules = stats.toJson({ modules: true }).modules.map((module) => module.name);
  const inputs = modules.filter((name) => name.startsWith("./node_modules/polysocket/"));
  bundles.cjs = { path: join(project.dir, "dist", "cjs.js"), inputs: inputs.map((name) => name.slice("./node_modules/polysocket/".length)).sort() };
}

/**
 * The page side: with the bundle's constructor, opens a socket to `url`,
 * echoes a text and a binary message, closes with 4001 "bye now" and
 * leaves what it saw in window.result. `install`: through
 * PolySocket.install and `new WebSocket`, as unchanged code does; else with
 * `new PolySocket(url, [], options)`.
 */
function scenario(url, options, install) {
  const { PolySocket, named, fallback } = window.bundled;
  const seen = {
    named: named === PolySocket,
    fallback: fallback === undefined || fallback === PolySocket,
    global: window.PolySocket === PolySocket,
    nativeWebSocket: typeof window.WebSocket,
    events: [],
  };
  let ws;
  if (install) {
    seen.installed = PolySocket.install(options) === PolySocket && window.WebSocket === PolySocket;
    ws = new WebSocket(url);
  } else {
    ws = new PolySocket(url, [], options);
  }
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    seen.events.push({ type: "open", readyState: ws.readyState });
    ws.send("hello");
  };
  ws.onmessage = (event) => {
    const data = typeof event.data === "string" ? event.data : [...new Uint8Array(event.data)];
    seen.events.push({ type: "message", binary: event.binary, data });
    if (!event.binary) ws.send(new Uint8Array([0, 1, 2, 127, 128, 255]));
    else ws.close(4001, "bye now");
  };
  ws.onclose = (event) => {
    seen.events.push({ type: "close", code: event.code, reason: event.reason, wasClean: event.wasClean, readyState: ws.readyState });
    window.result = seen;
  };
  ws.onerror = () => seen.events.push({ type: "error" });
}

/** `/<bundle>` loads the bundle, then runs the scenario with `/<bundle>.json`'s arguments. */
async function servePages(settings) {
  const server = http.createServer((req, res) => {
    const [, name, kind] = /^\/(\w+)(\.js)?$/.exec(req.url) || [];
    const bundle = bundles[name];
    if (!bundle) {
      res.writeHead(404).end();
    } else if (kind) {
      res.writeHead(200, { "content-type": "application/javascript; charset=utf-8" }).end(readFileSync(bundle.path));
    } else {
      const type = name === "esm" ? "module" : "text/javascript";
      const args = [`${upstream}/echo`, { router, token: "npm" }, name === "cjs"].map((arg) => JSON.stringify(arg)).join(", ");
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      res.end(`<!DOCTYPE html><html><head><meta charset="utf-8"><title>${name}</title></head><body>
<script type="${type}" src="/${name}.js"></script><script type="${type}">(${scenario})(${args});</script></body></html>`);
    }
  });
  await new Promise((resolve) => server.listen(settings.port, "127.0.0.1", resolve));
  return server;
}

before(async () => {
  project = consumer();
  await bundleWithEsbuild();
  await bundleWithWebpack();

  const [upstreamPort, daemonPort, pagesPort] = [await freePort(), await freePort(), await freePort()];
  const pagesOrigin = `http://127.0.0.1:${pagesPort}`;
  const tokens = join(project.dir, "tokens.json");
  // Only the test's pages may use the token, as a site's token allows its own.
  writeFileSync(tokens, JSON.stringify({ tokens: [
    { token: "npm", targets: ["ws://127.0.0.1:*/*"], origins: [pagesOrigin], max_connections: 10 },
  ] }));
  start(binary("echo-upstream"), [String(upstreamPort)]);
  start(binary("polysocketd"), ["--standalone", "--listen", `127.0.0.1:${daemonPort}`, "--tokens", tokens, "--allow-private-targets"]);
  upstream = `ws://127.0.0.1:${upstreamPort}`;
  router = `http://localhost:${daemonPort}`;
  pages = { server: await servePages({ port: pagesPort }), origin: pagesOrigin };
  await waitFor(`http://127.0.0.1:${daemonPort}/readyz`);
  browser = await launchChromium(chromium);
});

after(async () => {
  await browser?.close();
  pages?.server.close();
  stopAll();
  if (project) rmSync(project.dir, { recursive: true, force: true });
});

test("esbuild takes the ES module entry, webpack the CommonJS one, each with the one ES3 file", () => {
  assert.deepEqual(bundles.esm.inputs, ["polysocket.js", "polysocket.mjs"]);
  assert.deepEqual(bundles.cjs.inputs, ["polysocket.js"]);
});

const expected = [
  { type: "open", readyState: 1 },
  { type: "message", binary: false, data: "hello" },
  { type: "message", binary: true, data: [0, 1, 2, 127, 128, 255] },
  { type: "close", code: 4001, reason: "bye now", wasClean: true, readyState: 3 },
];

for (const [name, description] of [["esm", "esbuild, ES module, new PolySocket"], ["cjs", "webpack, CommonJS, install and new WebSocket"]]) {
  test(`${description}: echoes a text and a binary message and closes with a code and reason in Chromium without WebSocket`, async () => {
    const context = await browser.newContext();
    await context.addInitScript(() => {
      delete window.WebSocket;
    });
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (error) => errors.push(String(error)));
    // Not until "load": a poll started early holds the page's load event.
    await page.goto(`${pages.origin}/${name}`, { waitUntil: "commit" });
    await page.waitForFunction(() => window.result, null, { timeout: 30000 });
    const seen = await page.evaluate(() => window.result);
    await context.close();
    assert.deepEqual(errors, []);
    assert.deepEqual(seen.events, expected);
    assert.equal(seen.nativeWebSocket, "undefined");
    assert.ok(seen.named && seen.fallback, "the named and default exports are the constructor");
    // JSONP answers call back through window.PolySocket: a bundle must define it.
    assert.ok(seen.global, "window.PolySocket is the bundle's constructor");
    if (name === "cjs") assert.equal(seen.installed, true, "install() put PolySocket in place of WebSocket");
  });
}
