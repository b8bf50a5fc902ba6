// The slow-link benchmark (scripts/slow-link.sh runs it): five client
// systems in headless Chromium, each through its own server and its own
// emulated link (link.mjs) to one upstream (upstream.mjs), one system at a
// time, over each link profile. Prints a table per link and writes the
// results as JSON. Settings come from the environment (see
// scripts/slow-link.sh).
import { fork, spawn, execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { createServer } from "node:net";
import os from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { feedMessages } from "./feed.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const modules = join(here, "node_modules");

const OPEN_SAMPLES = 3;
const ROUND_TRIPS = 20;
const BURST = 200;
const FEED = { count: 500, size: 2000 };
// Small pushes spread over seconds (ticks of a live feed): what each costs
// on the wire, and how late it arrives.
const TRICKLE = { count: 400, everyMs: 25, size: 120 };
const OUTAGE = { tickMs: 500, beforeMs: 2000, downMs: 8000, afterMs: 4000 };
const TOKEN = "bench";

const SYSTEMS = {
  "polysocket-stream": { server: "polysocketd", client: "polysocket", transport: "streaming" },
  "polysocket-jsonp": { server: "polysocketd", client: "polysocket", transport: "jsonp" },
  "sockjs-xhr-streaming": { server: "sockjs", client: "sockjs", transport: "xhr-streaming" },
  "sockjs-jsonp-polling": { server: "sockjs", client: "sockjs", transport: "jsonp-polling" },
  "engine.io-polling": { server: "engine.io", client: "engine.io", transport: "polling" },
};
const isPeer = (system) => SYSTEMS[system].client !== "polysocket";
const SCENARIOS = ["open", "round-trip", "burst", "feed", "trickle", "outage"];

function list(name, fallback, known) {
  const values = (process.env[name] || fallback.join(" ")).split(/[\s,]+/).filter(Boolean);
  const unknown = values.filter((value) => known && !known.includes(value));
  if (unknown.length) throw new Error(`${name}: unknown ${unknown.join(", ")} (known: ${known.join(" ")})`);
  return values;
}

/** "300ms/1mbit": a round trip, and a rate in each direction (none: unlimited). */
function parseLink(text) {
  const match = /^(\d+)ms(?:\/(\d+(?:\.\d+)?)(k|m)bit)?$/i.exec(text);
  if (!match) throw new Error(`LINKS: "${text}" is not RTTms or RTTms/RATE(k|m)bit, e.g. 300ms/1mbit`);
  const rate = match[2] ? Number(match[2]) * (match[3].toLowerCase() === "m" ? 1e6 : 1e3) : 0;
  return { name: text, rttMs: Number(match[1]), rate };
}

const settings = {
  links: list("LINKS", ["100ms", "300ms/1mbit"]).map(parseLink),
  systems: list("SYSTEMS", Object.keys(SYSTEMS), Object.keys(SYSTEMS)),
  scenarios: list("SCENARIOS", SCENARIOS, SCENARIOS),
  timeoutMs: Number(process.env.SCENARIO_TIMEOUT || 60) * 1000,
  polysocketd: process.env.POLYSOCKETD,
  chromium: process.env.CHROMIUM || "/usr/bin/chromium",
  clientFromDisk: process.env.POLYSOCKET_CLIENT_FROM_DISK === "1",
  out: process.env.OUT || join(root, "bench", "slowlink-results.json"),
  trace: process.env.TRACE === "1",
};
if (settings.systems.some((s) => SYSTEMS[s].server === "polysocketd") && !settings.polysocketd) {
  throw new Error("POLYSOCKETD must name the polysocketd binary (scripts/slow-link.sh sets it)");
}

const children = [];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function freePort() {
  return new Promise((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function start(command, args, env = {}) {
  const child = spawn(command, args, { stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, ...env } });
  children.push(child);
  return child;
}

async function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill();
  await exited;
  children.splice(children.indexOf(child), 1);
}

async function waitFor(url, child) {
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`${child.spawnfile} exited with status ${child.exitCode}`);
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      // not listening yet
    }
    await sleep(50);
  }
  throw new Error(`${url} never answered`);
}

/** A link.mjs process between the browser (listenPort) and a server. */
async function startLink(listenPort, targetPort, profile) {
  const child = fork(join(here, "link.mjs"), [listenPort, targetPort, profile.rttMs, profile.rate].map(String));
  children.push(child);
  const pending = new Map();
  let nextId = 0;
  await new Promise((resolve, reject) => {
    child.once("message", resolve);
    child.once("exit", () => reject(new Error("the link exited at start-up")));
  });
  child.on("message", (answer) => {
    pending.get(answer.id)?.(answer);
    pending.delete(answer.id);
  });
  const ask = (command) =>
    new Promise((resolve) => {
      const id = nextId++;
      pending.set(id, resolve);
      child.send({ id, ...command });
    });
  return {
    child,
    counters: async (reset = false) => (await ask({ cmd: "counters", reset })).counters,
    outage: (ms) => ask({ cmd: "outage", ms }),
  };
}

/** Starts a system's server on `port`, reached by pages through the link on `linkPort`. */
async function startServer(system, port, linkPort, upstream, scratch) {
  const { server } = SYSTEMS[system];
  // The gateways are bench/peers/gateway.js as scripts/bench.sh runs it,
  // with this folder's copy of its pinned packages.
  const gateway = join(root, "bench", "peers", "gateway.js");
  if (server === "polysocketd") {
    const tokens = join(scratch, "tokens.json");
    writeFileSync(tokens, JSON.stringify({ tokens: [{ token: TOKEN, targets: ["ws://127.0.0.1:*/*"], origins: ["*"], max_connections: 1000 }] }));
    // A handful of sockets: the capacity only keeps the daemon from warning
    // about the open-file limit; no grace at exit, nothing waits for the close.
    const child = start(settings.polysocketd, ["--standalone", "--listen", `127.0.0.1:${port}`, "--fqdn", `d1.localhost:${linkPort}`,
      "--tokens", tokens, "--allow-private-targets", "--capacity", "1000", "--shutdown-grace", "0s"], { RUST_LOG: "warn" });
    await waitFor(`http://127.0.0.1:${port}/readyz`, child);
    return { child, page: { router: `http://d1.localhost:${linkPort}`, token: TOKEN, target: upstream } };
  }
  if (server === "sockjs") {
    const child = start("node", [gateway, "sockjs", String(port), upstream], { NODE_PATH: modules });
    await waitFor(`http://127.0.0.1:${port}/sockjs/info`, child);
    return { child, page: { url: `http://localhost:${linkPort}/sockjs` } };
  }
  const child = start("node", ["--require", join(here, "engine-io-cors.cjs"), gateway, "engine.io", String(port), upstream], { NODE_PATH: modules });
  await waitFor(`http://127.0.0.1:${port}/engine.io/?EIO=4&transport=polling`, child);
  return { child, page: { url: `http://localhost:${linkPort}` } };
}

const LIBRARIES = {
  sockjs: join(modules, "sockjs-client", "dist", "sockjs.min.js"),
  "engine.io": join(modules, "engine.io-client", "dist", "engine.io.min.js"),
  polysocket: join(root, "client", "polysocket.js"),
};

/**
 * The pages, on an origin of their own (as a site using any of these is):
 * `/<system>` loads the system's client library, then page.js. The libraries
 * are read at each request: a change to client/polysocket.js shows at once.
 */
async function servePages(pageConfigs) {
  const server = http.createServer((req, res) => {
    const path = req.url.slice(1);
    const javascript = (file) => {
      res.writeHead(200, { "content-type": "application/javascript; charset=utf-8", "cache-control": "no-store" });
      res.end(readFileSync(file));
    };
    if (path === "page.js") return javascript(join(here, "page.js"));
    if (path.startsWith("lib/") && LIBRARIES[path.slice(4)]) return javascript(LIBRARIES[path.slice(4)]);
    const config = pageConfigs.get(path);
    if (!config) return res.writeHead(404).end();
    const library = config.client === "polysocket" && !settings.clientFromDisk ? `${config.router}/polysocket.js` : `/lib/${config.client}`;
    res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
    res.end(`<!DOCTYPE html><html><head><meta charset="utf-8"><title>${path}</title></head><body>
<script>window.benchConfig = ${JSON.stringify(config)};</script>
<script src="${library}"></script><script src="/page.js"></script></body></html>`);
  });
  const port = await freePort();
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  return { server, origin: `http://127.0.0.1:${port}` };
}

/** A request's kind: its method and path, with ids and sessions as `*`. */
function requestKind(request) {
  const url = new URL(request.url());
  const path = url.pathname
    .replace(/^\/sockjs\/[^/]+\/[^/]+\//, "/sockjs/*/*/")
    .replace(/\/[0-9a-f]{32}$/, "/*");
  const stream = url.searchParams.get("stream");
  return `${request.method()} ${path}${stream ? `?stream=${stream}` : ""}`;
}

/**
 * A fresh browser context (its own connections, as a page load has) on the
 * system's page, with the requests that reach the link recorded.
 */
async function openPage(browser, pages, system, linkPort) {
  const context = await browser.newContext();
  // Every system here runs without a native WebSocket, as in the browsers
  // these clients exist for.
  await context.addInitScript(() => {
    delete window.WebSocket;
  });
  const requests = [];
  const throughLink = (request) => new URL(request.url()).port === String(linkPort);
  context.on("request", (request) => {
    if (!throughLink(request)) return;
    requests.push({ at: Date.now(), kind: requestKind(request), request });
  });
  context.on("requestfailed", (request) => {
    const entry = requests.find((r) => r.request === request);
    if (entry) entry.failed = request.failure()?.errorText || "failed";
  });
  context.on("requestfinished", (request) => {
    const entry = requests.find((r) => r.request === request);
    if (entry) entry.finished = Date.now();
  });
  const page = await context.newPage();
  await page.goto(`${pages.origin}/${system}`);
  return { context, page, requests };
}

/** Counts of the requests since `since` (epoch ms), by kind. */
function requestCounts(requests, since) {
  const counts = {};
  let failed = 0;
  for (const r of requests) {
    if (r.at < since) continue;
    counts[r.kind] = (counts[r.kind] || 0) + 1;
    if (r.failed) failed++;
  }
  return { total: Object.values(counts).reduce((a, b) => a + b, 0), failed, byKind: counts };
}

function printTrace(label, requests) {
  if (!settings.trace || !requests.length) return;
  const start = requests[0].at;
  console.log(`  trace ${label}:`);
  for (const r of requests) {
    const end = r.finished ? `+${r.finished - r.at} ms` : r.failed ? `failed (${r.failed})` : "open";
    console.log(`    ${String(r.at - start).padStart(6)} ms  ${r.kind.padEnd(38)} ${end}`);
  }
}

/** page.evaluate, abandoned (as a timeout) if the page itself stops answering. */
async function evaluate(page, limitMs, name, ...args) {
  let timer;
  const guard = new Promise((resolve) => {
    timer = setTimeout(() => resolve({ error: `the page did not answer ${name} within ${Math.round(limitMs / 1000)} s` }), limitMs);
  });
  const evaluation = page.evaluate(([fn, a]) => window.bench[fn](...a), [name, args]);
  // Once abandoned, its failure (the page closing under it) is no news.
  evaluation.catch(() => {});
  try {
    return await Promise.race([evaluation, guard]);
  } finally {
    clearTimeout(timer);
  }
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};
const round = (ms) => Math.round(ms * 10) / 10;
const expectedFeedCharacters = feedMessages(FEED.count, FEED.size).reduce((sum, m) => sum + m.length, 0);

/**
 * Each scenario runs on a fresh page and socket and returns its figures, or
 * {error} when the system failed it. `wire` counts the link's bytes from
 * once the socket is open to the scenario's end.
 */
const scenarios = {
  async open({ session }) {
    const samples = [];
    for (let i = 0; i < OPEN_SAMPLES; i++) {
      const { page, close } = await session();
      const result = await evaluate(page, settings.timeoutMs + 10000, "open", settings.timeoutMs);
      await close();
      if (result.error) return { error: `open ${i + 1}: ${result.error}` };
      samples.push(round(result.openMs));
    }
    return { medianMs: median(samples), worstMs: Math.max(...samples), samplesMs: samples };
  },

  async "round-trip"({ page, measure }) {
    const result = await measure(() => evaluate(page, settings.timeoutMs + 10000, "roundTrips", ROUND_TRIPS, settings.timeoutMs));
    if (result.error) return result;
    return { medianMs: round(median(result.times)), worstMs: round(Math.max(...result.times)), timesMs: result.times.map(round) };
  },

  async burst({ page, measure }) {
    const result = await measure(() => evaluate(page, settings.timeoutMs + 10000, "burst", BURST, settings.timeoutMs));
    return result.error ? result : { ms: round(result.ms) };
  },

  async feed({ page, measure }) {
    const result = await measure(() => evaluate(page, settings.timeoutMs + 10000, "feed", FEED.count, FEED.size, settings.timeoutMs));
    if (result.error) return result;
    if (result.characters !== expectedFeedCharacters) {
      return { error: `the feed came to ${result.characters} characters, not ${expectedFeedCharacters}` };
    }
    return { ms: round(result.ms), characters: result.characters };
  },

  async trickle({ page, measure }) {
    const timeoutMs = settings.timeoutMs + TRICKLE.count * TRICKLE.everyMs;
    const result = await measure(() => evaluate(page, timeoutMs + 10000, "trickle", TRICKLE.count, TRICKLE.everyMs, TRICKLE.size, timeoutMs));
    if (result.error) return result;
    const sorted = [...result.delays].sort((a, b) => a - b);
    return { medianDelayMs: round(median(sorted)), p90DelayMs: round(sorted[Math.floor(sorted.length * 0.9)]), delaysMs: result.delays };
  },

  async outage({ page, link, measure }) {
    let restored;
    const result = await measure(async () => {
      const started = Date.now();
      await page.evaluate((ms) => window.bench.startTicking(ms), OUTAGE.tickMs);
      await sleep(OUTAGE.beforeMs);
      ({ restored } = await link.outage(OUTAGE.downMs));
      await sleep(OUTAGE.afterMs);
      const left = Math.max(5000, settings.timeoutMs - (Date.now() - started));
      return evaluate(page, left + 10000, "stopTicking", left);
    });
    if (result.error) return result;
    const { sent, echoes, arrivals, closed, outcome } = result;
    const delivered = new Set(echoes.filter((text) => sent.includes(text))).size;
    const exactlyOnceInOrder = echoes.length === sent.length && echoes.every((text, i) => text === sent[i]);
    const afterRestore = arrivals.find((at) => at >= restored);
    const error = outcome === "timeout" && !closed ? `timed out waiting for ${sent.length - echoes.length} echoes`
      : !closed && !exactlyOnceInOrder ? "the socket lived on, but its echoes were not each tick once, in order" : null;
    return {
      survived: !closed,
      closed: closed ? closed.reason : null,
      sent: sent.length,
      delivered,
      echoes: echoes.length,
      exactlyOnceInOrder,
      // From the link's return to the first echo after it.
      recoveryMs: afterRestore === undefined ? null : afterRestore - restored,
      ...(error ? { error } : {}),
    };
  },
};

async function runScenario(name, { browser, pages, system, link, linkPort }) {
  const contexts = [];
  const session = async () => {
    const opened = await openPage(browser, pages, system, linkPort);
    contexts.push(opened);
    return { ...opened, close: () => opened.context.close() };
  };
  const requestsBefore = Date.now();
  try {
    if (name === "open") {
      await link.counters(true);
      const result = await scenarios.open({ session });
      const all = contexts.flatMap((c) => c.requests);
      printTrace(`${system} ${name}`, all);
      return { ...result, wire: await link.counters(), requests: requestCounts(all, requestsBefore) };
    }
    const { page, requests } = await session();
    const opened = await evaluate(page, settings.timeoutMs + 10000, "open", settings.timeoutMs);
    if (opened.error) return { error: opened.error };
    let wire, since;
    // Counts the link's bytes and the requests of `work` alone.
    const measure = async (work) => {
      await link.counters(true);
      since = Date.now();
      const result = await work();
      wire = await link.counters();
      return result;
    };
    const result = await scenarios[name]({ page, link, measure });
    printTrace(`${system} ${name}`, requests.filter((r) => r.at >= since));
    const counts = requestCounts(requests, since);
    await page.evaluate(() => window.bench.close()).catch(() => {});
    return { openMs: round(opened.openMs), ...result, wire, requests: counts };
  } finally {
    await Promise.all(contexts.map((c) => c.context.close().catch(() => {})));
  }
}

/**
 * One unmeasured socket with one round trip, so that no scenario pays for a
 * server's first request (lazy loading, JIT warm-up, first upstream
 * connection): a deployed server is warm. A system that fails it still runs
 * every scenario, each reporting its own failure.
 */
async function warmUp(browser, pages, system, linkPort) {
  let opened;
  try {
    opened = await openPage(browser, pages, system, linkPort);
    const { page } = opened;
    const socket = await evaluate(page, settings.timeoutMs + 10000, "open", settings.timeoutMs);
    if (!socket.error) await evaluate(page, settings.timeoutMs + 10000, "roundTrips", 1, settings.timeoutMs);
  } catch {
    // The scenarios will meet the same trouble and report it.
  } finally {
    await opened?.context.close();
  }
}

function git(...args) {
  try {
    return execFileSync("git", ["-C", root, ...args], { encoding: "utf8" }).trim();
  } catch {
    return null;
  }
}

function machine(browserVersion) {
  const cpu = /^model name\s*:\s*(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"));
  return {
    date: new Date().toISOString(),
    nproc: os.availableParallelism(),
    cpu: cpu ? cpu[1] : os.cpus()[0]?.model,
    kernel: `${os.type()} ${os.release()}`,
    chromium: browserVersion,
    node: process.version,
    commit: git("rev-parse", "HEAD"),
    // The files a run measures that differ from the commit.
    uncommitted: git("status", "--porcelain", "--", "client", "polysocketd", "common", "http", "bench/peers", "bench/slowlink")
      ?.split("\n").filter(Boolean) ?? null,
  };
}

function clientUsed() {
  const fromDisk = settings.clientFromDisk;
  const source = fromDisk ? readFileSync(LIBRARIES.polysocket) : null;
  return {
    polysocketd: settings.polysocketd ? relative(root, settings.polysocketd) || settings.polysocketd : null,
    polysocketJs: fromDisk
      ? { from: "client/polysocket.js", sha256: createHash("sha256").update(source).digest("hex").slice(0, 16) }
      : { from: "the daemon (compiled in)" },
    packages: Object.fromEntries(["sockjs-client", "engine.io-client", "sockjs", "engine.io", "ws", "playwright-core"].map((name) => [
      name, JSON.parse(readFileSync(join(modules, name, "package.json"), "utf8")).version,
    ])),
  };
}

// The table: per link, a row per figure, a column per system; each figure
// with its ratio to the best peer's (lower is better everywhere).
const ROWS = [
  ["open", "open, median ms", (r) => r.medianMs],
  ["round-trip", "round trip, median ms", (r) => r.medianMs],
  ["round-trip", "round trip, worst ms", (r) => r.worstMs],
  ["burst", `burst of ${BURST}, ms`, (r) => r.ms],
  ["feed", "feed ~1 MB, ms", (r) => r.ms],
  ["feed", "feed, KB on the wire", (r) => r.wire && Math.round((r.wire.up + r.wire.down) / 1000)],
  ["feed", "feed, HTTP requests", (r) => r.requests?.total],
  ["trickle", `trickle ${TRICKLE.count} x ${TRICKLE.size} B / ${TRICKLE.everyMs} ms: median delay ms`, (r) => r.medianDelayMs],
  ["trickle", "trickle, p90 delay ms", (r) => r.p90DelayMs],
  ["trickle", "trickle, KB on the wire", (r) => r.wire && Math.round((r.wire.up + r.wire.down) / 1000)],
  ["trickle", "trickle, HTTP requests", (r) => r.requests?.total],
  ["outage", "outage: survived", (r) => (r.survived ? "yes" : "no"), false],
  ["outage", "outage: echoed/sent", (r) => `${r.delivered}/${r.sent}${r.error ? " (!)" : ""}`, false],
  ["outage", "outage: recovery ms", (r) => r.recoveryMs],
];

function cell(result, figure) {
  if (!result) return null;
  // An outage that went wrong still has its figures to show.
  if (result.error && result.sent === undefined) {
    return { text: /timed out|did not answer/.test(result.error) ? "timeout" : "FAILED" };
  }
  const value = figure(result);
  return { value, text: value === null || value === undefined ? "-" : String(value) };
}

function printTables(runs) {
  for (const link of settings.links) {
    const systems = settings.systems;
    const header = ["", ...systems];
    const rows = [];
    for (const [scenario, label, figure, comparable = true] of ROWS) {
      if (!settings.scenarios.includes(scenario)) continue;
      const cells = systems.map((system) => cell(runs.find((r) => r.link === link.name && r.system === system && r.scenario === scenario), figure));
      const peerValues = cells.filter((c, i) => isPeer(systems[i]) && typeof c?.value === "number").map((c) => c.value);
      const best = comparable && peerValues.length ? Math.min(...peerValues) : null;
      rows.push([label, ...cells.map((c) => {
        if (!c) return "";
        return best && typeof c.value === "number" ? `${c.text} (${(c.value / best).toFixed(2)}x)` : c.text;
      })]);
    }
    const widths = header.map((_, i) => Math.max(...[header, ...rows].map((row) => row[i].length)));
    const line = (row) => row.map((text, i) => (i === 0 ? text.padEnd(widths[i]) : text.padStart(widths[i]))).join("  ");
    console.log(`\nlink ${link.name} (RTT ${link.rttMs} ms, ${link.rate ? `${link.rate / 1e6} Mbit/s each way` : "unlimited rate"}); (x): to the best peer`);
    console.log(line(header));
    rows.forEach((row) => console.log(line(row)));
  }
}

async function main() {
  const scratch = mkdtempSync(join(os.tmpdir(), "polysocket-slowlink-"));
  const upstreamPort = await freePort();
  start("node", [join(here, "upstream.mjs"), String(upstreamPort)]);
  const upstream = `ws://127.0.0.1:${upstreamPort}/bench`;
  const pageConfigs = new Map();
  const pages = await servePages(pageConfigs);
  const browser = await chromium.launch({
    executablePath: settings.chromium,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
  const results = { machine: machine(browser.version()), software: clientUsed(), settings: {
    links: settings.links, systems: settings.systems, scenarios: settings.scenarios, timeoutMs: settings.timeoutMs,
    openSamples: OPEN_SAMPLES, roundTrips: ROUND_TRIPS, burst: BURST, feed: FEED, trickle: TRICKLE, outage: OUTAGE,
  }, runs: [] };
  const report = (link, system, scenario, result, seconds) => {
    results.runs.push({ link: link.name, system, scenario, ...result });
    console.log(`${link.name.padEnd(12)} ${system.padEnd(21)} ${scenario.padEnd(10)} ${seconds.toFixed(1).padStart(5)} s  ${summary(result)}`);
  };
  try {
    for (const link of settings.links) {
      for (const system of settings.systems) {
        const [serverPort, linkPort] = [await freePort(), await freePort()];
        let linkProcess, server;
        try {
          linkProcess = await startLink(linkPort, serverPort, link);
          server = await startServer(system, serverPort, linkPort, upstream, scratch);
        } catch (e) {
          for (const scenario of settings.scenarios) report(link, system, scenario, { error: `could not start: ${e.message}` }, 0);
          continue;
        } finally {
          if (!server && linkProcess) await stop(linkProcess.child);
        }
        pageConfigs.set(system, { ...server.page, client: SYSTEMS[system].client, transport: SYSTEMS[system].transport });
        await warmUp(browser, pages, system, linkPort);
        for (const scenario of settings.scenarios) {
          const started = Date.now();
          let result;
          try {
            result = await runScenario(scenario, { browser, pages, system, link: linkProcess, linkPort });
          } catch (e) {
            result = { error: `harness: ${e.message.split("\n")[0]}` };
          }
          report(link, system, scenario, result, (Date.now() - started) / 1000);
        }
        await stop(server.child);
        await stop(linkProcess.child);
      }
    }
  } finally {
    await browser.close();
    pages.server.close();
    for (const child of [...children]) child.kill();
    rmSync(scratch, { recursive: true, force: true });
  }
  writeFileSync(settings.out, `${JSON.stringify(results, null, 2)}\n`);
  printTables(results.runs);
  console.log(`\nwrote ${relative(process.cwd(), settings.out) || settings.out}`);
  const failed = results.runs.filter((r) => r.error);
  if (failed.length) {
    console.log(`\n${failed.length} scenario run(s) failed:`);
    for (const r of failed) console.log(`  ${r.link} ${r.system} ${r.scenario}: ${r.error}`);
    process.exitCode = 1;
  }
}

function summary(result) {
  if (result.error) return `FAILED: ${result.error}`;
  const { wire, requests, ...figures } = result;
  const shown = Object.entries(figures).filter(([, v]) => !Array.isArray(v) && typeof v !== "object").map(([k, v]) => `${k}=${v}`);
  if (wire) shown.push(`wire up/down=${wire.up}/${wire.down} B`, `connections=${wire.connections}`);
  if (requests) shown.push(`requests=${requests.total}${requests.failed ? ` (${requests.failed} failed)` : ""}`);
  return shown.join(" ");
}

await main();
