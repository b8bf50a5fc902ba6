// The polysocket package as a user gets it: client/ packed with `npm pack`,
// and the tarball installed with `npm install` into a fresh project in a
// temporary directory, where the test files' fixtures are then copied. The
// tools (typescript, esbuild, webpack, publint, attw, playwright-core) come
// from this directory's package-lock.json, not from that project, which
// holds the package alone, as a user's project would.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const root = new URL("../../", import.meta.url).pathname;
export const here = new URL("./", import.meta.url).pathname;
export const bin = (name) => join(here, "node_modules", ".bin", name);

/** Runs a command to its end: {status, output} (stdout and stderr, uncoloured). */
export function run(command, args, cwd) {
  const result = spawnSync(command, args, { cwd, encoding: "utf8", env: { ...process.env, NO_COLOR: "1", FORCE_COLOR: "0" } });
  assert.ifError(result.error);
  return { status: result.status, output: result.stdout + result.stderr };
}

/** Like run(), and fails the test with the command's output unless it succeeded. */
export function ok(command, args, cwd) {
  const result = run(command, args, cwd);
  assert.equal(result.status, 0, `${command} ${args.join(" ")} failed:\n${result.output}`);
  return result.output;
}

/**
 * Packs client/ and installs the tarball in a new project:
 * {dir: the project, tarball, files: what the tarball holds}.
 */
export function consumer() {
  const dir = mkdtempSync(join(tmpdir(), "polysocket-npm-"));
  const [packed] = JSON.parse(ok("npm", ["pack", join(root, "client"), "--pack-destination", dir, "--json", "--loglevel=error"], dir));
  const tarball = join(dir, packed.filename);
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "polysocket-consumer", private: true }));
  ok("npm", ["install", tarball, "--no-audit", "--no-fund", "--loglevel=error"], dir);
  cpSync(join(here, "fixtures"), dir, { recursive: true });
  return { dir, tarball, files: packed.files.map((file) => file.path).sort() };
}
