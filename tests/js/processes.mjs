// What the JavaScript test suites (tests/browser, tests/npm) share: the
// binaries `cargo test --workspace` builds, free loopback ports, and the
// servers each suite starts and stops. Node's built-ins only: each suite
// has node_modules of its own.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";

export const root = new URL("../../", import.meta.url).pathname;
const target = process.env.CARGO_TARGET_DIR || join(root, "target");

/** A binary of the debug build, which must exist. */
export function binary(name) {
  const path = join(target, "debug", name);
  assert.ok(existsSync(path), `${path} is missing: run cargo test --workspace (scripts/test.sh) first`);
  return path;
}

export function freePort() {
  return new Promise((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const children = [];

/** Starts a server process; its logs show with TEST_LOG set. */
export function start(path, args) {
  const child = spawn(path, args, { stdio: ["ignore", "ignore", process.env.TEST_LOG ? "inherit" : "ignore"] });
  children.push(child);
  return child;
}

/** Stops every process `start` started. */
export function stopAll() {
  for (const child of children.splice(0)) child.kill();
}

/** Waits until `url` answers 2xx, for a server that is starting. */
export async function waitFor(url) {
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

/**
 * Debian's Chromium, headless, as every suite runs it; `chromium` is
 * playwright-core's, from the suite's own node_modules.
 */
export function launchChromium(chromium) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
  });
}
