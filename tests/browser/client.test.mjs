// polysocket.js in a real browser: headless Chromium on pages served by
// polysocketd (standalone), in three profiles, each set up before any page
// script runs:
//
// - modern: window.WebSocket deleted, everything else kept;
// - es3: what an IE6-9-era browser lacks deleted too (typed arrays, Blob,
//   FileReader, JSON, Promise, ES5's library functions, addEventListener on
//   script elements), as in the browsers polysocket.js exists for;
// - ie8: es3, and scripts load as in IE6-8: no onload or onerror, only
//   readyState ("loading", then "loaded" whether the script ran or failed)
//   and onreadystatechange.
//
// Each scenario runs in every profile and again with the native WebSocket
// against the same upstream, and must give the same events: the client is a
// faithful stand-in. The page side of every run is ES3 (as the pages the es3
// profiles stand for), on a page of another origin that loads polysocket.js
// from the daemon, and reports through the DOM: Playwright's evaluate needs
// the APIs the es3 profiles delete, its selectors do not.
//
// Needs the binaries `cargo test --workspace` builds (target/debug) and
// Debian's chromium; scripts/test.sh provides both. The daemon serves the
// polysocket.js compiled into it: after a change to client/polysocket.js,
// `cargo build --bins` before running these. (Pages come from a server of
// the test's own: a page answered by Playwright counts as a public one,
// which Chromium forbids to reach loopback addresses.)
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync, readFileSync, existsSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as acorn from "acorn";
import { chromium } from "playwright-core";
import { binary, freePort, launchChromium, root, start, stopAll, waitFor } from "../js/processes.mjs";

let browser, origin, upstream, screenshots, pages, buffered, proxy;

/**
 * A proxy that buffers each response whole before passing it on, as some
 * corporate proxies and misconfigured ingresses do: a streaming response
 * reaches the page only when it ends.
 */
async function bufferingProxy(target) {
  const server = http.createServer((req, res) => {
    const body = [];
    req.on("data", (chunk) => body.push(chunk));
    req.on("end", () => {
      const forward = { host: "127.0.0.1", port: target, method: req.method, path: req.url, headers: req.headers };
      const upstreamRequest = http.request(forward, (answer) => {
        const chunks = [];
        answer.on("data", (chunk) => chunks.push(chunk));
        answer.on("end", () => {
          const whole = Buffer.concat(chunks);
          const headers = { ...answer.headers, "content-length": whole.length };
          delete headers["transfer-encoding"];
          res.writeHead(answer.statusCode, headers).end(whole);
        });
      });
      upstreamRequest.on("error", () => res.destroy());
      upstreamRequest.end(Buffer.concat(body));
    });
  });
  const port = await freePort();
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  return { server, port };
}

before(async () => {
  const scratch = mkdtempSync(join(tmpdir(), "polysocket-browser-"));
  screenshots = process.env.SCREENSHOT_DIR || scratch;
  const tokens = join(scratch, "tokens.json");
  writeFileSync(tokens, JSON.stringify({ tokens: [
    { token: "dev", targets: ["ws://127.0.0.1:*/*"], origins: ["*"], max_connections: 100 },
    { token: "tachyon", targets: ["ws://127.0.0.1:*/tachyon"], origins: ["*"], max_connections: 100, forward_bearer: true },
  ] }));
  const [upstreamPort, daemonPort] = [await freePort(), await freePort()];
  start(binary("echo-upstream"), [String(upstreamPort)]);
  start(binary("polysocketd"), ["--standalone", "--listen", `127.0.0.1:${daemonPort}`, "--tokens", tokens, "--allow-private-targets"]);
  upstream = `ws://127.0.0.1:${upstreamPort}`;
  origin = `http://localhost:${daemonPort}`;
  // A second daemon that is only reached through a buffering proxy.
  const bufferedPort = await freePort();
  proxy = await bufferingProxy(bufferedPort);
  start(binary("polysocketd"), ["--standalone", "--listen", `127.0.0.1:${bufferedPort}`, "--tokens", tokens,
    "--allow-private-targets", "--fqdn", `localhost:${proxy.port}`, "--max-stream-time", "20s"]);
  buffered = `http://localhost:${proxy.port}`;
  pages = await servePages();
  await waitFor(`http://127.0.0.1:${daemonPort}/readyz`);
  await waitFor(`http://127.0.0.1:${bufferedPort}/readyz`);
  browser = await launchChromium(chromium);
});

after(async () => {
  await browser?.close();
  pages?.server.close();
  proxy?.server.close();
  stopAll();
});

/**
 * Runs in the page before its scripts, in the es3 and ie8 profiles. Written
 * for today's Chromium: it may use what it is about to delete.
 */
function es3Profile(ie8Scripts) {
  const { defineProperty, getOwnPropertyDescriptor } = Object;
  const scripts = HTMLScriptElement.prototype;
  if (ie8Scripts) {
    const states = new WeakMap(), handlers = new WeakMap();
    const change = (script, state) => {
      states.set(script, state);
      if (typeof script.onreadystatechange === "function") script.onreadystatechange();
    };
    // onload and onerror are plain properties that nothing calls.
    for (const name of ["onload", "onerror"]) {
      defineProperty(scripts, name, {
        configurable: true,
        get() { return (handlers.get(this) || {})[name]; },
        set(value) { handlers.set(this, { ...handlers.get(this), [name]: value }); },
      });
    }
    defineProperty(scripts, "readyState", { configurable: true, get() { return states.get(this) || "uninitialized"; } });
    const src = getOwnPropertyDescriptor(scripts, "src");
    defineProperty(scripts, "src", {
      configurable: true,
      get: src.get,
      set(value) {
        src.set.call(this, value);
        states.set(this, "loading");
        setTimeout(() => states.get(this) === "loading" && change(this, "loading"), 0);
      },
    });
    // Seen from the window, before the script's own (silenced) handlers.
    const loaded = (event) => event.target instanceof HTMLScriptElement && change(event.target, "loaded");
    addEventListener("load", loaded, true);
    addEventListener("error", loaded, true);
  }
  for (const name of ["addEventListener", "removeEventListener"]) {
    defineProperty(scripts, name, { configurable: true, writable: true, value: undefined });
  }
  const es5 = [
    [Array, ["isArray", "from", "of"]],
    [Array.prototype, ["forEach", "map", "filter", "reduce", "reduceRight", "some", "every", "indexOf", "lastIndexOf", "find", "findIndex", "includes", "fill", "keys", "values", "entries"]],
    [Object, ["keys", "create", "defineProperty", "defineProperties", "getPrototypeOf", "setPrototypeOf", "getOwnPropertyNames", "getOwnPropertyDescriptor", "freeze", "isFrozen", "seal", "isSealed", "preventExtensions", "isExtensible", "assign", "entries", "values", "is"]],
    [Function.prototype, ["bind"]],
    [Date, ["now"]],
    [Date.prototype, ["toISOString", "toJSON"]],
    [String.prototype, ["trim", "trimStart", "trimEnd", "trimLeft", "trimRight", "includes", "startsWith", "endsWith", "repeat", "padStart", "padEnd"]],
  ];
  for (const [owner, names] of es5) for (const name of names) delete owner[name];
  for (const name of [
    "WebSocket", "ArrayBuffer", "SharedArrayBuffer", "DataView", "Int8Array", "Uint8Array", "Uint8ClampedArray", "Int16Array",
    "Uint16Array", "Int32Array", "Uint32Array", "Float16Array", "Float32Array", "Float64Array", "BigInt64Array", "BigUint64Array",
    "Blob", "File", "FileReader", "JSON", "Promise", "EventSource", "TextEncoder", "TextDecoder", "fetch", "Map", "Set", "WeakMap", "WeakSet", "Symbol",
  ]) {
    delete window[name];
  }
  // IE8's XMLHttpRequest cannot go cross-origin.
  delete XMLHttpRequest.prototype.withCredentials;
}

const profiles = {
  // Streams (NDJSON over cross-origin XHR) and POSTs its sends.
  modern: () => { delete window.WebSocket; },
  // The same browser, told to use JSONP only.
  jsonp: () => { delete window.WebSocket; window.polysocketTransport = "jsonp"; },
  es3: [es3Profile, false],
  ie8: [es3Profile, true],
};
// Cross-origin XMLHttpRequest but no fetch (IE10-11, old Safari): streams
// are read from a growing responseText. Only for the streaming tests.
const streamingProfiles = { modern: profiles.modern, xhr: () => { delete window.WebSocket; delete window.fetch; } };

/**
 * The page side of a run, in every profile: ES3. Opens `ws` to `url`,
 * records its events, runs the scenario, and writes what it saw into
 * #result once `ws` has closed.
 */
function harness(url, options, scenario) {
  var events = [], finished = false, ws;
  function hex(c) {
    var digits = c.toString(16);
    while (digits.length < 4) { digits = "0" + digits; }
    return digits;
  }
  function quote(text) {
    var out = "\"", i, c;
    for (i = 0; i < text.length; i++) {
      c = text.charCodeAt(i);
      out += c < 32 || c > 126 || c === 34 || c === 92 ? "\\u" + hex(c) : text.charAt(i);
    }
    return out + "\"";
  }
  function serialize(value) {
    var parts = [], key, i;
    if (value === null || value === undefined) { return "null"; }
    if (typeof value === "string") { return quote(value); }
    if (typeof value === "number" || typeof value === "boolean") { return String(value); }
    if (Object.prototype.toString.call(value) === "[object Array]") {
      for (i = 0; i < value.length; i++) { parts.push(serialize(value[i])); }
      return "[" + parts.join(",") + "]";
    }
    for (key in value) {
      if (Object.prototype.hasOwnProperty.call(value, key)) { parts.push(quote(key) + ":" + serialize(value[key])); }
    }
    return "{" + parts.join(",") + "}";
  }
  function finish(error) {
    if (finished) { return; }
    finished = true;
    var result = document.getElementById("result");
    result.appendChild(document.createTextNode(serialize({events: events, error: error})));
    result.setAttribute("data-done", "true");
  }
  function bytes(data) {
    var list = [], i, view;
    if (typeof data === "string") {
      for (i = 0; i < data.length; i++) { list.push(data.charCodeAt(i)); }
    } else {
      view = new Uint8Array(data);
      for (i = 0; i < view.length; i++) { list.push(view[i]); }
    }
    return list;
  }
  // Binary data is recorded as bytes, whatever its form, so that a binary
  // string compares equal to the native ArrayBuffer.
  function record(e) {
    var entry = {type: e.type};
    if (e.type === "message") {
      if (typeof Blob !== "undefined" && e.data instanceof Blob) { entry.data = "Blob of " + e.data.size + " bytes"; }
      else { entry.data = typeof e.data === "string" && !e.binary ? e.data : bytes(e.data); }
      // Long texts are compared by the scenario; keep failures readable.
      if (entry.data.length > 200) { entry.data = entry.data.length + " characters"; }
    }
    if (e.type === "close") {
      entry.code = e.code;
      entry.reason = e.reason;
      entry.wasClean = e.wasClean;
    }
    events.push(entry);
  }
  function watch(socket) {
    var types = ["open", "message", "error", "close"], i;
    for (i = 0; i < types.length; i++) { socket.addEventListener(types[i], record); }
  }
  setTimeout(function () { finish("timed out"); }, 28000);
  try {
    ws = options.protocols ? new WebSocket(url, options.protocols) : new WebSocket(url);
    if (options.binaryType) { ws.binaryType = options.binaryType; }
    watch(ws);
    ws.addEventListener("close", function () { finish(null); });
    scenario(ws, events, url);
  } catch (e) {
    finish(String(e));
  }
}

const fromDisk = process.env.POLYSOCKET_CLIENT_FROM_DISK === "1";
const runs = new Map();

/**
 * The pages of runs: `/<id>` loads polysocket.js from the daemon, then
 * `/<id>.js`, the harness and the run's scenario.
 */
async function servePages() {
  const server = http.createServer((req, res) => {
    const [, id, script] = /^\/(\d+)(\.js)?$/.exec(req.url) || [];
    const run = runs.get(Number(id));
    if (!run) {
      res.writeHead(404).end();
    } else if (!script) {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8", ...(run.options.csp && { "content-security-policy": run.options.csp }) });
      res.end(`<!DOCTYPE html><html><head><meta charset="utf-8"><title>run ${id}</title></head><body><pre id="result"></pre>
<script src="${origin}/polysocket.js"></script><script src="/${id}.js"></script></body></html>`);
    } else {
      res.writeHead(200, { "content-type": "application/javascript; charset=utf-8" });
      const install = { router: run.options.router || origin, token: run.options.token || "dev", bearer: run.options.bearer };
      res.end(`var options = ${JSON.stringify(install)};
if (window.polysocketTransport) { options.transport = window.polysocketTransport; }
PolySocket.install(options);
(${harness})(${JSON.stringify(run.url)}, ${JSON.stringify(run.options)}, function (ws, events, url) {
${run.body}
});`);
    }
  });
  const port = await freePort();
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  return { server, origin: `http://127.0.0.1:${port}` };
}

/** A fresh page in `profile` ("native": as the browser is). */
// What IE8 calls itself: polysocket.js keeps its URLs within IE's 2,083
// characters there, and takes 6,000 elsewhere.
const IE8_USER_AGENT = "Mozilla/4.0 (compatible; MSIE 8.0; Windows NT 6.1; Trident/4.0)";

async function open(profile) {
  const context = await browser.newContext(profile === "ie8" ? { userAgent: IE8_USER_AGENT } : {});
  if (profile !== "native") {
    const setup = profiles[profile] || streamingProfiles[profile];
    await (Array.isArray(setup) ? context.addInitScript(setup[0], setup[1]) : context.addInitScript(setup));
  }
  if (fromDisk) {
    const client = join(root, "client", "polysocket.js");
    await context.route(`${origin}/polysocket.js`, (route) =>
      route.fulfill({ contentType: "application/javascript; charset=utf-8", body: readFileSync(client, "utf8") }),
    );
  }
  return context.newPage();
}

/**
 * Runs a scenario's body in `page` and returns the events it saw. The body
 * gets `ws` (opening), `events` (to add its own records to) and `url`.
 */
async function run(page, url, body, options = {}) {
  const id = runs.size;
  runs.set(id, { url, body, options });
  // Not until "load": a poll started early holds the page's load event.
  await page.goto(`${pages.origin}/${id}`, { waitUntil: "commit" });
  const result = page.locator("#result[data-done]");
  await result.waitFor({ state: "attached", timeout: 30000 });
  const { events, error } = JSON.parse(await result.textContent());
  if (error) throw new Error(`${error}; saw ${JSON.stringify(events)}`);
  return events;
}

const messages = (events) => events.filter((e) => e.type === "message").map((e) => e.data);

/**
 * `body` runs everywhere; `es3` replaces it in the es3 profiles where it
 * needs what they lack (null: the scenario cannot exist there); `expect`
 * checks what the native WebSocket and every profile saw.
 */
const scenarios = {
  "text and unicode echo": {
    path: "/echo",
    body: `var n = 0;
           ws.onopen = function () { ws.send("hello"); ws.send("héllo ✓ 😀 \\u2028 </script>"); };
           ws.onmessage = function () { if (++n === 2) ws.close(1000, "done"); };`,
    expect: (events) => assert.deepEqual(messages(events), ["hello", "héllo ✓ 😀 \u2028 </script>"]),
  },
  "binary echo as arraybuffer": {
    path: "/echo",
    binaryType: "arraybuffer",
    body: `var n = 0;
           ws.onopen = function () { ws.send(new Uint8Array([0, 1, 2, 127, 128, 254, 255]).buffer); ws.send(new Uint8Array([9, 8, 7])); };
           ws.onmessage = function () { if (++n === 2) ws.close(); };`,
    // binaryType "arraybuffer" without ArrayBuffer: binary strings.
    es3: `var n = 0;
          ws.onopen = function () { ws.sendBinary("\\x00\\x01\\x02\\x7f\\x80\\xfe\\xff"); ws.sendBinary("\\x09\\x08\\x07"); };
          ws.onmessage = function () { if (++n === 2) ws.close(); };`,
    expect: (events) => assert.deepEqual(messages(events), [[0, 1, 2, 127, 128, 254, 255], [9, 8, 7]]),
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
    es3: null,
    expect: (events) =>
      assert.deepEqual(events.filter((e) => e.type === "message" || e.type === "blob"), [
        { type: "message", data: [1, 2, 3, 97, 98] },
        { type: "message", data: "Blob of 2 bytes" },
        { type: "blob", isBlob: true, bytes: [7, 7] },
      ]),
  },
  "binary from the upstream": {
    path: "/huge?bytes=3",
    binaryType: "arraybuffer",
    body: `ws.onmessage = function () { ws.close(); };`,
    expect: (events) => assert.deepEqual(messages(events), [[7, 7, 7]]),
  },
  "a 100 KB binary message from the upstream": {
    path: "/huge?bytes=102400",
    binaryType: "arraybuffer",
    body: `ws.onmessage = function (e) {
             var ok = true, i;
             if (typeof e.data === "string") { for (i = 0; i < e.data.length; i++) ok = ok && e.data.charCodeAt(i) === 7; }
             else { var view = new Uint8Array(e.data); for (i = 0; i < view.length; i++) ok = ok && view[i] === 7; }
             events.push({type: "check", allSevens: ok});
             ws.close();
           };`,
    expect: (events) => {
      assert.deepEqual(messages(events), ["102400 characters"]);
      assert.deepEqual(events.find((e) => e.type === "check"), { type: "check", allSevens: true });
    },
  },
  "a 100 KB message": {
    path: "/echo",
    body: `var big = ""; for (var i = 0; i < 100 * 1024; i++) big += String.fromCharCode(97 + (i % 26));
           big += "é😀";
           ws.onopen = function () { ws.send(big); };
           ws.onmessage = function (e) { events.push({type: "check", same: e.data === big, length: e.data.length}); ws.close(); };`,
    expect: (events) => assert.deepEqual(events.find((e) => e.type === "check"), { type: "check", same: true, length: 100 * 1024 + 3 }),
  },
  "close by the client with code and reason": {
    path: "/echo",
    body: `ws.onopen = function () { ws.close(4001, "bye now"); };`,
    expect: (events) => assert.deepEqual(events.at(-1), { type: "close", code: 4001, reason: "bye now", wasClean: true }),
  },
  "close by the upstream": {
    path: "/close",
    body: `ws.onopen = function () { ws.send("close please"); };`,
    expect: (events) => assert.deepEqual(events.at(-1), { type: "close", code: 4000, reason: "bye", wasClean: true }),
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
    expect: (events) =>
      assert.deepEqual(events.find((e) => e.type === "thrown"), {
        type: "thrown",
        names: ["InvalidStateError", "InvalidAccessError", "SyntaxError"],
        readyState: 1,
        constants: [0, 1, 2, 3],
      }),
  },
  // A throwing listener or handler stops neither the ones after it nor the
  // socket (the echo of "again" needs another poll), and window.onerror
  // hears of it.
  "handlers that throw": {
    path: "/say?n=3&text=m",
    body: `var errors = [];
           window.onerror = function (message) { errors.push(String(message)); return true; };
           ws.addEventListener("message", function (e) { if (e.data === "m-1") throw new Error("listener boom"); });
           ws.addEventListener("message", function (e) { events.push({type: "after", data: e.data}); });
           ws.onmessage = function (e) {
             if (e.data === "m-2") throw new Error("handler boom");
             if (e.data === "m-3") ws.send("again");
             if (e.data === "again") { events.push({type: "errors", errors: errors}); ws.close(); }
           };`,
    expect: (events) => {
      assert.deepEqual(messages(events), ["m-1", "m-2", "m-3", "again"]);
      assert.deepEqual(events.filter((e) => e.type === "after").map((e) => e.data), ["m-1", "m-2", "m-3", "again"]);
      assert.deepEqual(events.find((e) => e.type === "errors").errors, ["Uncaught Error: listener boom", "Uncaught Error: handler boom"]);
    },
  },
};

const native = new Map();
async function nativeEvents(name) {
  if (!native.has(name)) {
    const scenario = scenarios[name];
    const page = await open("native");
    native.set(name, await run(page, `${upstream}${scenario.path}`, scenario.body, scenario));
    await page.context().close();
    scenario.expect(native.get(name));
  }
  return native.get(name);
}

for (const profile of Object.keys(profiles)) {
  for (const [name, scenario] of Object.entries(scenarios)) {
    const body = profile === "modern" || scenario.es3 === undefined ? scenario.body : scenario.es3;
    if (body === null) continue;
    test(`${profile}: ${name}: polysocket.js matches the native WebSocket`, async () => {
      const page = await open(profile);
      const viaBridge = await run(page, `${upstream}${scenario.path}`, body, scenario);
      await page.context().close();
      assert.deepEqual(viaBridge, await nativeEvents(name));
      assert.equal(viaBridge[0].type, "open");
      assert.equal(viaBridge.at(-1).type, "close");
      scenario.expect(viaBridge);
    });
  }
}

test("the es3 profiles' scenarios are ES3", () => {
  const ES3 = { ecmaVersion: 3, sourceType: "script", allowReserved: "never" };
  acorn.parse(`(${harness})`, ES3);
  for (const [name, { body, es3 }] of Object.entries(scenarios)) {
    if (es3 !== null) assert.doesNotThrow(() => acorn.parse(`(function () {${es3 ?? body}})`, ES3), name);
  }
});

for (const profile of ["es3", "ie8"]) {
  test(`${profile}: the page lacks what IE6-8 lack`, async () => {
    const page = await open(profile);
    const events = await run(
      page,
      `${upstream}/echo`,
      `var script = document.createElement("script"), found = [];
       var names = ["ArrayBuffer", "Uint8Array", "DataView", "Blob", "FileReader", "JSON", "Promise"];
       for (var i = 0; i < names.length; i++) if (typeof window[names[i]] !== "undefined") found.push(names[i]);
       if (Array.isArray || Object.keys || Object.create || Function.prototype.bind || Date.now || String.prototype.trim || [].forEach || [].indexOf) found.push("ES5");
       if (script.addEventListener) found.push("addEventListener on scripts");
       events.push({type: "found", found: found, readyState: script.readyState});
       ws.close();`,
    );
    const { found, readyState } = events.find((e) => e.type === "found");
    assert.deepEqual(found, []);
    assert.equal(readyState, profile === "ie8" ? "uninitialized" : null);
    await page.context().close();
  });
}

/**
 * Every request `page` makes to the bridge, and how many were in
 * flight per host name at most.
 */
function watchRequests(page) {
  const seen = { requests: [], perHost: new Map(), maxPerHost: 0 };
  let clock = 0;
  const inFlight = new Map();
  page.on("request", (request) => {
    const url = new URL(request.url());
    if (!/^\/(create|s\/|j\/)/.test(url.pathname)) return;
    // A send's parameters are in its query (JSONP) or its form body (POST).
    const params = new URLSearchParams(url.search);
    // A batch repeats d and t: appended, not set, so getAll sees them all.
    for (const [name, value] of new URLSearchParams(request.postData() || "")) params.append(name, value);
    const entry = { url, params, method: request.method(), type: request.resourceType(), host: url.host, start: clock++, end: Infinity };
    seen.requests.push(entry);
    // A close's acknowledgement (a poll with ttl=0) leaves once the page
    // has ended the socket's other requests; Playwright may report those
    // ends after it starts, so it is not counted against the two.
    if (params.get("ttl") === "0") return;
    inFlight.set(request, entry);
    seen.perHost.set(url.host, (seen.perHost.get(url.host) || 0) + 1);
    seen.maxPerHost = Math.max(seen.maxPerHost, seen.perHost.get(url.host));
  });
  const done = (request) => {
    const entry = inFlight.get(request);
    if (!entry) return;
    inFlight.delete(request);
    entry.end = clock++;
    seen.perHost.set(entry.host, seen.perHost.get(entry.host) - 1);
  };
  page.on("requestfinished", done);
  page.on("requestfailed", done);
  return seen;
}

/** Sends a burst of 200 texts (about 120 bytes each once sent) with line
 * breaks of every kind and characters URLs escape; reports whether each
 * echo matched. */
const BIG_BURST = `var n = 0, i, sent = [], altered = [];
  function text(i) { return "burst " + i + " \\n lf \\r\\n crlf \\r cr \\u00e9 \\ud83d\\ude00 + & = % \\u2028 \\"" + new Array(40).join("x"); }
  ws.onopen = function () { for (i = 1; i <= 200; i++) { sent.push(text(i)); ws.send(text(i)); } };
  ws.onmessage = function (e) {
    if (e.data !== sent[n]) { altered.push(n); }
    if (++n === 200) { events.push({type: "checked", got: n, altered: altered}); ws.close(); }
  };`;

/** The sends carry seqs 1, 2, ... `count`, each once, in order. */
function assertConsecutiveSeqs(sends, count) {
  let next = 1;
  for (const send of sends) {
    if (Number(send.params.get("seq")) < next) continue;
    assert.equal(Number(send.params.get("seq")), next, "each message has its own seq, in order");
    next += send.params.getAll("d").length;
  }
  assert.equal(next, count + 1, `${count} messages in all`);
}

for (const profile of Object.keys(profiles)) {
  // IE6/7 open at most two connections per host name. Each socket has a host
  // name of its own (a DNS label per socket), and uses at most two at once:
  // its poll and its send. A send must not wait for the poll to end.
  test(`${profile}: two sockets on one page, each sending while its poll waits`, async () => {
    const page = await open(profile);
    const seen = watchRequests(page);
    const events = await run(
      page,
      `${upstream}/discard`,
      `var other = new WebSocket(url), opened = 0;
       function sent() {
         if (ws.bufferedAmount > 0 || other.bufferedAmount > 0) return setTimeout(sent, 20);
         events.push({type: "sent"});
         other.onclose = function (e) { events.push({type: "other closed", code: e.code}); ws.close(); };
         other.close();
       }
       ws.onopen = other.onopen = function () {
         if (++opened < 2) return;
         ws.send("to the first");
         other.send("to the second");
         sent();
       };`,
    );
    await page.context().close();
    assert.deepEqual(events.map((e) => e.type), ["open", "sent", "other closed", "close"]);
    const sockets = new Map();
    for (const request of seen.requests) {
      const socket = /^\/[sj]\/(\w+)/.exec(request.url.pathname)?.[1];
      if (socket) sockets.set(socket, [...(sockets.get(socket) || []), request]);
    }
    assert.equal(sockets.size, 2, "two sockets");
    const hosts = [...sockets.values()].map((requests) => [...new Set(requests.map((r) => r.host))]);
    for (const names of hosts) assert.equal(names.length, 1, `each socket uses one host name: ${names}`);
    assert.notEqual(hosts[0][0], hosts[1][0], "the sockets' host names differ");
    for (const [name] of hosts) assert.notEqual(name, new URL(origin).host, "a socket's host name is not the page's");
    assert.ok(seen.maxPerHost <= 2, `at most two requests in flight per host name (saw ${seen.maxPerHost})`);
    for (const requests of sockets.values()) {
      const send = requests.find((r) => r.url.pathname.startsWith("/s/") && r.params.has("d"));
      const poll = requests.find((r) => r.url.pathname.startsWith("/j/") && r.start < send.start);
      assert.ok(poll.end > send.end, "the send finished while the poll was still waiting");
    }
  });

  test(`${profile}: a burst of sends goes out in a few requests, in order, each message once`, async () => {
    const page = await open(profile);
    const seen = watchRequests(page);
    const events = await run(
      page,
      `${upstream}/echo`,
      `var n = 0, i;
       ws.binaryType = "binarystring";
       ws.onopen = function () {
         for (i = 1; i <= 200; i++) {
           if (i % 50 === 0) { ws.sendBinary("\\x00" + String.fromCharCode(i)); } else { ws.send("m" + i); }
         }
         events.push({type: "queued", bufferedAmount: ws.bufferedAmount});
       };
       ws.onmessage = function (e) {
         events.push({type: "got", data: e.binary ? "binary " + e.data.charCodeAt(1) : e.data});
         if (++n === 200) { events.push({type: "drained", bufferedAmount: ws.bufferedAmount}); ws.close(); }
       };`,
    );
    await page.context().close();
    const expected = [];
    for (let i = 1; i <= 200; i++) expected.push(i % 50 === 0 ? `binary ${i}` : `m${i}`);
    assert.deepEqual(events.filter((e) => e.type === "got").map((e) => e.data), expected, "each once, in order");
    assert.ok(events.find((e) => e.type === "queued").bufferedAmount > 0, "the burst waited in the page");
    assert.equal(events.find((e) => e.type === "drained").bufferedAmount, 0);
    const sends = seen.requests.filter((r) => r.url.pathname.startsWith("/s/") && r.params.has("d"));
    // The burst leaves together (JSONP: as many as fit in a URL the browser
    // takes; IE's are short).
    assert.ok(sends.length >= 1 && sends.length <= (profile === "ie8" ? 4 : 1), `${sends.length} requests`);
    let next = 1;
    for (const send of sends) {
      const data = send.params.getAll("d");
      const types = send.params.getAll("t");
      assert.equal(Number(send.params.get("seq")), next, "each message has its own seq, in order");
      assert.ok(types.length <= 1 || types.length === data.length, `one t, or one per d: ${send.url}`);
      assert.ok(send.url.href.length <= (profile === "ie8" ? 2000 : 6000), `a URL of ${send.url.href.length}`);
      next += data.length;
    }
    assert.equal(next, 201, "200 messages in all");
    assert.ok(sends.some((r) => r.params.getAll("t").includes("b") && r.params.getAll("d").length > 1), "text and binary in one batch");
  });

  // A burst bigger than one URL: one form posted into a hidden iframe where
  // the browser has postMessage and JSON (the jsonp profile), URL-sized
  // pieces where it has not (es3, ie8), one POST where it streams. Forms
  // rewrite line breaks; what arrives must be what was sent.
  test(`${profile}: a burst bigger than a URL arrives as sent, line breaks and all`, async () => {
    const page = await open(profile);
    const seen = watchRequests(page);
    const events = await run(page, `${upstream}/echo`, BIG_BURST);
    await page.context().close();
    assert.deepEqual(events.find((e) => e.type === "checked"), { type: "checked", got: 200, altered: [] });
    const sends = seen.requests.filter((r) => r.url.pathname.startsWith("/s/") && r.params.has("d"));
    const framed = sends.filter((r) => r.method === "POST" && r.url.searchParams.get("frame") === "1");
    const urls = sends.filter((r) => r.method === "GET");
    if (profile === "jsonp") {
      assert.ok(framed.length >= 1 && sends.length <= 2, `${framed.length} framed of ${sends.length} sends`);
      assert.ok(framed.every((r) => r.params.getAll("t").includes("j")), "text with line breaks goes as JSON strings");
    } else if (profile === "modern") {
      assert.equal(sends.length, 1, "one POST");
    } else {
      assert.equal(framed.length, 0, "no frames without JSON");
      assert.ok(urls.length > 2, `${urls.length} URLs`);
    }
    assertConsecutiveSeqs(sends, 200);
  });

  if (profile === "jsonp") {
    // A page whose policy forbids posting forms: the first frame is refused
    // before it leaves, and the burst goes on in URLs with the same seqs.
    test(`${profile}: where the page's policy forbids forms, a big burst goes in URLs`, async () => {
      const page = await open(profile);
      const seen = watchRequests(page);
      const events = await run(page, `${upstream}/echo`, BIG_BURST, { csp: "form-action 'none'" });
      await page.context().close();
      assert.deepEqual(events.find((e) => e.type === "checked"), { type: "checked", got: 200, altered: [] });
      const sends = seen.requests.filter((r) => r.url.pathname.startsWith("/s/") && r.params.has("d"));
      assert.ok(sends.every((r) => r.method === "GET") && sends.length > 2, sends.map((r) => r.method).join());
      assertConsecutiveSeqs(sends, 200);
    });
  }

  test(`${profile}: a poll answer or a stream lost in flight is fetched again: nothing lost, nothing doubled`, async () => {
    const page = await open(profile);
    let aborted = 0;
    // The first poll answer that carries messages reaches the daemon's side of
    // the connection, then never reaches the page; a stream is cut in the
    // middle of its third message.
    await page.route(/\/j\//, async (route) => {
      // Playwright's own fetch cannot resolve *.localhost, so the poll goes to
      // the daemon from here, with the socket's name in the Host header.
      const url = new URL(route.request().url());
      if (url.searchParams.get("stream")) {
        if (aborted > 0) return route.continue();
        const cut = await new Promise((resolve) => {
          const headers = { ...route.request().headers(), host: url.host };
          const request = http.get({ host: "127.0.0.1", port: url.port, path: url.pathname + url.search, headers }, (res) => {
            let body = "";
            res.on("data", (chunk) => {
              body += chunk;
              const second = body.indexOf('"seq":2');
              const end = second < 0 ? -1 : body.indexOf("\n", second);
              if (end < 0) return;
              request.destroy();
              const { "transfer-encoding": _, ...kept } = res.headers;
              resolve({ status: res.statusCode, headers: kept, body: body.slice(0, end + 1) + '{"type":"text","se' });
            });
          });
          request.on("error", () => {});
        });
        aborted++;
        return route.fulfill(cut);
      }
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
    const events = await run(page, `${upstream}/say?n=5&text=m`, `var n = 0; ws.onmessage = function () { if (++n === 5) ws.close(); };`);
    assert.equal(aborted, 1, "a poll answer was dropped");
    assert.deepEqual(messages(events), ["m-1", "m-2", "m-3", "m-4", "m-5"]);
    await page.context().close();
  });

  // Retried for 20 s (a link lost for seconds is ridden out), then lost.
  test(`${profile}: a persistent failure closes with 1006 after retrying`, async () => {
    const page = await open(profile);
    let polls = 0;
    // Once open, the daemon is unreachable for good.
    await page.route(/\/j\//, (route) => {
      polls++;
      return route.abort("connectionrefused");
    });
    const events = await run(page, `${upstream}/echo`, "");
    assert.deepEqual(events, [{ type: "open" }, { type: "error" }, { type: "close", code: 1006, reason: "", wasClean: false }]);
    assert.ok(polls > 1, `the poll was retried (${polls} attempts)`);
    await page.context().close();
  });

  // The router answers {"ok": false, "retryable": true} when the fleet is
  // briefly unable to serve; the socket stays CONNECTING and tries again.
  test(`${profile}: a create that failed for now is retried, with a fresh callback each time`, async () => {
    const page = await open(profile);
    const callbacks = [];
    await page.route(/\/create\?/, (route) => {
      const cb = new URL(route.request().url()).searchParams.get("cb");
      callbacks.push(cb);
      if (callbacks.length === 1) return route.abort("connectionrefused");
      if (callbacks.length <= 3) {
        return route.fulfill({
          contentType: "application/javascript; charset=utf-8",
          body: `/**/${cb}({"ok":false,"error":"fleet unavailable","retryable":true});`,
        });
      }
      return route.continue();
    });
    const events = await run(
      page,
      `${upstream}/echo`,
      `ws.onopen = function () { ws.send("after retries"); };
       ws.onmessage = function () { ws.close(1000); };`,
    );
    assert.deepEqual(events, [
      { type: "open" },
      { type: "message", data: "after retries" },
      { type: "close", code: 1000, reason: "", wasClean: true },
    ]);
    assert.equal(callbacks.length, 4, "a failed request, two retryable answers, then the socket");
    assert.equal(new Set(callbacks).size, 4, `a fresh callback for each attempt: ${callbacks}`);
    await page.context().close();
  });

  test(`${profile}: a bearer reaches an upstream that authenticates the handshake`, async () => {
    const page = await open(profile);
    const seen = watchRequests(page);
    const events = await run(
      page,
      `${upstream}/tachyon`,
      `ws.onopen = function () { events.push({type: "protocol", data: ws.protocol}); ws.send('{"messageId":"b1"}'); };
       ws.onmessage = function () { ws.close(); };`,
      { token: "tachyon", bearer: "tachyon-test.access_token-0", protocols: ["v0.tachyon"] },
    );
    assert.deepEqual(events.slice(0, 2), [{ type: "open" }, { type: "protocol", data: "v0.tachyon" }]);
    const [answer] = messages(events);
    assert.match(answer, /"echo":\{"messageId":"b1"\}/);
    const [create] = seen.requests.filter((r) => r.url.pathname === "/create");
    assert.equal(create.params.get("bearer"), "tachyon-test.access_token-0");
    // Where the page can post across origins, the bearer stays out of URLs
    // (which proxies log); only a JSONP-only browser puts it in one.
    // The es3 profiles delete cross-origin XMLHttpRequest, as IE8 lacks it;
    // the jsonp profile chooses JSONP for everything.
    const cors = profile === "modern";
    assert.equal(create.method, cors ? "POST" : "GET");
    if (cors) assert.equal(create.url.searchParams.get("bearer"), null, "the bearer is not in the URL");
    await page.context().close();
  });

  test(`${profile}: a create refused for good closes with 1006 at once`, async () => {
    const page = await open(profile);
    const seen = watchRequests(page);
    const events = await run(page, `${upstream}/echo`, "", { token: "not a token" });
    assert.deepEqual(events, [{ type: "error" }, { type: "close", code: 1006, reason: "", wasClean: false }]);
    assert.equal(seen.requests.filter((r) => r.url.pathname === "/create").length, 1, "one attempt");
    await page.context().close();
  });

  test(`${profile}: the demo page works in a browser without WebSocket`, async () => {
    const demo = await open(profile);
    await demo.goto(`${origin}/demo`);
    await demo.fill("#target", `${upstream}/echo`);
    await demo.click("#open");
    await demo.waitForSelector("text=open", { timeout: 10000 });
    await demo.fill("#message", `hello from ${profile}`);
    await demo.press("#message", "Enter");
    await demo.waitForSelector(`text=< hello from ${profile}`, { timeout: 10000 });
    assert.equal(await demo.textContent("#transport"), "polysocket");
    const shot = join(screenshots, `demo-${profile}.png`);
    await demo.screenshot({ path: shot, fullPage: true });
    assert.ok(existsSync(shot));
    console.log(`demo screenshot: ${shot}`);
    await demo.context().close();
  });
}

// Where ArrayBuffer is missing binary messages are binary strings; any page
// may choose them, and send them with sendBinary.
for (const [profile, reader] of [["modern", "fetch"], ["xhr", "xhr"]]) test(`${profile}: messages arrive on one stream (read by ${reader}), and sends are POSTs`, async () => {
  const page = await open(profile);
  const seen = watchRequests(page);
  const events = await run(
    page,
    `${upstream}/echo`,
    `var n = 0;
     ws.onopen = function () { ws.send("a"); ws.send("b"); };
     ws.onmessage = function () { if (++n === 2) ws.close(); };`,
  );
  // The stream does not acknowledge the close it carries (its client may
  // have gone unnoticed); the page does, with one JSONP poll, so the daemon
  // lets the socket go at once.
  const receives = () => seen.requests.filter((r) => r.url.pathname.startsWith("/j/"));
  const isAcknowledgement = (r) => r.params.get("stream") === null;
  for (let i = 0; i < 40 && !receives().some(isAcknowledgement); i++) await new Promise((done) => setTimeout(done, 50));
  await page.context().close();
  assert.deepEqual(messages(events), ["a", "b"]);
  const acknowledgements = receives().filter(isAcknowledgement);
  assert.deepEqual(acknowledgements.map((r) => [r.params.get("ttl"), r.params.get("ack")]), [["0", "3"]]);
  const streams = receives().filter((r) => !isAcknowledgement(r));
  assert.ok(streams.length >= 1, "a receive");
  for (const r of streams) assert.equal(r.params.get("stream"), "ndjson", `a stream, not a poll: ${r.url}`);
  for (const r of streams) assert.equal(r.type, reader, "read as the browser can");
  const sends = seen.requests.filter((r) => r.url.pathname.startsWith("/s/"));
  // Sent in one script, the two leave in one request; text needs no t.
  assert.deepEqual(sends.map((r) => [r.method, r.params.get("t"), r.params.getAll("d").join(), r.params.get("cb")]), [
    ["POST", null, "a,b", null],
    ["POST", "c", "", null],
  ]);
});

test("modern: a stream that got through, then met a failing link, is retried as a stream", async () => {
  const page = await open("modern");
  const seen = watchRequests(page);
  let streams = 0, refused = 0;
  await page.route(/\/j\//, (route) => {
    if (!new URL(route.request().url()).searchParams.get("stream")) return route.continue();
    streams++;
    // The first stream gets through (a heartbeat) and ends; the link then
    // refuses the next three, as a link that is down does.
    if (streams === 1) return route.fulfill({ status: 200, contentType: "application/x-ndjson", body: '{"type":"heartbeat"}\n' });
    if (streams <= 4) {
      refused++;
      return route.abort("connectionrefused");
    }
    return route.continue();
  });
  const events = await run(
    page,
    `${upstream}/echo`,
    `ws.onopen = function () { setTimeout(function () { ws.send("after the outage"); }, 2500); };
     ws.onmessage = function () { ws.close(); };`,
  );
  await page.context().close();
  assert.deepEqual(messages(events), ["after the outage"]);
  assert.equal(refused, 3);
  const polls = seen.requests.filter((r) => r.url.pathname.startsWith("/j/") && !r.params.get("stream") && r.params.get("ttl") !== "0");
  assert.deepEqual(polls.map((r) => r.url.href), [], "no JSONP polls: the socket kept streaming");
});

test("modern: behind a proxy that buffers responses, a socket falls back to JSONP polls", async () => {
  const page = await open("modern");
  const seen = watchRequests(page);
  const events = await run(
    page,
    `${upstream}/echo`,
    `var n = 0, second;
     ws.onopen = function () { ws.send("through"); ws.send("the proxy"); };
     ws.onmessage = function () {
       if (++n < 2) return;
       second = new WebSocket(url);
       second.onopen = function () { second.send("again"); };
       second.onmessage = function (e) { events.push({type: "second", data: e.data}); second.close(); ws.close(); };
     };`,
    { router: buffered },
  );
  await page.context().close();
  assert.deepEqual(messages(events), ["through", "the proxy"]);
  assert.deepEqual(events.filter((e) => e.type === "second"), [{ type: "second", data: "again" }]);
  const bySocket = new Map();
  for (const r of seen.requests.filter((r) => r.url.pathname.startsWith("/j/"))) {
    const id = r.url.pathname.slice(3);
    bySocket.set(id, [...(bySocket.get(id) || []), r]);
  }
  const [first, next] = [...bySocket.values()];
  assert.equal(first[0].params.get("stream"), "ndjson", "the first socket tried a stream");
  assert.ok(first.slice(1).length > 0 && first.slice(1).every((r) => r.params.get("cb")), "then polled with JSONP");
  assert.ok(next.every((r) => r.params.get("cb") && !r.params.get("stream")), "the page's next socket polls at once");
});

for (const profile of Object.keys(profiles)) {
  test(`${profile}: binary strings, received and sent`, async () => {
    const page = await open(profile);
    const events = await run(
      page,
      `${upstream}/echo`,
      `var all = "", n = 0;
       for (var i = 0; i < 256 * 12; i++) all += String.fromCharCode(i % 256);
       ws.binaryType = "binarystring";
       ws.onopen = function () {
         try { ws.sendBinary("\\u0100"); } catch (e) { events.push({type: "thrown", name: e.name}); }
         ws.sendBinary(all);
         ws.sendBinary("");
         ws.send("text");
       };
       ws.onmessage = function (e) {
         events.push({type: "check", binary: e.binary, isString: typeof e.data === "string", same: e.data === all, length: e.data.length});
         if (++n === 3) ws.close();
       };`,
    );
    await page.context().close();
    assert.deepEqual(events.find((e) => e.type === "thrown"), { type: "thrown", name: "SyntaxError" });
    assert.deepEqual(events.filter((e) => e.type === "check"), [
      { type: "check", binary: true, isString: true, same: true, length: 3072 },
      { type: "check", binary: true, isString: true, same: false, length: 0 },
      { type: "check", binary: false, isString: true, same: false, length: 4 },
    ]);
  });
}
