// The npm package, installed from its tarball: what it holds, publint and
// attw on it, the one constructor Node's require and import and AMD and a
// script tag get, and its types under TypeScript 5 and 7, as ES module and
// CommonJS, with Node's and bundlers' module resolution.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import vm from "node:vm";
import { bin, consumer, here, ok, root, run } from "./consumer.mjs";

let project;

before(() => {
  project = consumer();
});

after(() => {
  if (project) rmSync(project.dir, { recursive: true, force: true });
});

test("the tarball holds the client, its ES module entry, its types, README and LICENSE", () => {
  assert.deepEqual(project.files, ["LICENSE", "README.md", "index.d.ts", "package.json", "polysocket.d.mts", "polysocket.js", "polysocket.mjs"]);
  const installed = join(project.dir, "node_modules", "polysocket");
  const source = readFileSync(join(installed, "polysocket.js"), "utf8");
  assert.equal(source, readFileSync(join(root, "client", "polysocket.js"), "utf8"));
  const manifest = JSON.parse(readFileSync(join(installed, "package.json"), "utf8"));
  assert.equal(manifest.license, "MIT");
  assert.match(readFileSync(join(installed, "LICENSE"), "utf8"), /^MIT License\n\nCopyright \(c\) \d{4} polysocket developers\n/);
  // The package's version is the protocol's, which the client reports to the router.
  assert.ok(source.includes(`var CLIENT = "polysocket.js-${manifest.version}";`), `the client reports version ${manifest.version}`);
});

// Suggestions are left out: the one publint makes, an engines.node field,
// does not fit a browser library.
test("publint: no error and no warning", () => {
  const output = ok(bin("publint"), ["run", "--strict", "--level", "warning", project.tarball], project.dir);
  console.log(output.trim());
  assert.doesNotMatch(output, /Errors:|Warnings:/);
});

test("attw: the types resolve as the code does, from CommonJS and ES modules, in Node and bundlers", () => {
  const output = ok(bin("attw"), [project.tarball], project.dir);
  console.log(output.trim());
  assert.match(output, /No problems found/);
});

test("Node: require, import and the default export are one constructor", () => {
  const script = `
    import PolySocket, { PolySocket as Named } from "polysocket";
    import { createRequire } from "node:module";
    const required = createRequire(process.cwd() + "/")("polysocket");
    console.log(JSON.stringify({
      type: typeof PolySocket,
      named: Named === PolySocket,
      required: required === PolySocket,
      requiredNamed: required.PolySocket === PolySocket,
      requiredDefault: required.default === PolySocket,
      constants: [PolySocket.CONNECTING, PolySocket.OPEN, PolySocket.CLOSING, PolySocket.CLOSED],
    }));`;
  const output = ok(process.execPath, ["--input-type=module", "-e", script], project.dir);
  assert.deepEqual(JSON.parse(output), {
    type: "function",
    named: true,
    required: true,
    requiredNamed: true,
    requiredDefault: true,
    constants: [0, 1, 2, 3],
  });
});

test("a script tag and AMD: window.PolySocket, and the AMD module \"polysocket\"", () => {
  const source = readFileSync(join(project.dir, "node_modules", "polysocket", "polysocket.js"), "utf8");
  const page = { window: {} };
  vm.runInNewContext(source, page);
  assert.equal(typeof page.window.PolySocket, "function");

  const modules = [];
  const define = (name, dependencies, factory) => modules.push({ name, dependencies, value: factory() });
  define.amd = {};
  const amdPage = { window: {}, define };
  vm.runInNewContext(source, amdPage);
  assert.equal(modules.length, 1);
  assert.equal(modules[0].name, "polysocket");
  // An array of the script's realm, not of this one: compared by its items.
  assert.deepEqual([...modules[0].dependencies], []);
  assert.equal(modules[0].value, amdPage.window.PolySocket, "the AMD module is the global's constructor");
});

const compilers = { "TypeScript 7": "typescript", "TypeScript 5": "typescript5" };

// Node's resolution with lib es2022 alone (the package brings lib.dom), and
// a bundler's with the DOM, as a browser project has it.
const configs = {
  nodenext: { module: "nodenext", moduleResolution: "nodenext", lib: ["es2022"], files: ["uses.mts", "uses.cts"] },
  bundler: { module: "esnext", moduleResolution: "bundler", lib: ["es2022", "dom"], files: ["uses.mts"] },
};

/** Runs `compiler` on `files` with `config`'s options: {status, output}. */
function tsc(compiler, name, { files, ...options }) {
  const tsconfig = join(project.dir, `tsconfig.${name}.json`);
  writeFileSync(tsconfig, JSON.stringify({ compilerOptions: { target: "es2022", types: [], ...options }, files }));
  return run(process.execPath, [join(here, "node_modules", compiler, "bin", "tsc"), "-p", tsconfig, "--strict", "--noEmit", "--pretty", "false"], project.dir);
}

/** The lines of misuse.mts after an expect-error directive, with the codes they may fail with. */
function expectedErrors(source) {
  const expected = new Map();
  source.split("\n").forEach((line, index) => {
    const directive = /\/\/ @ts-expect-error (TS\d+(?:\|TS\d+)*) /.exec(line);
    // Line numbers count from 1: the next line is index + 2.
    if (directive) expected.set(index + 2, directive[1].split("|"));
  });
  return expected;
}

for (const [version, compiler] of Object.entries(compilers)) {
  for (const [name, config] of Object.entries(configs)) {
    test(`${version}, ${name} resolution: every member compiles with --strict, and every misuse is an error`, () => {
      const checked = tsc(compiler, `${compiler}-${name}`, { ...config, files: [...config.files, "misuse.mts"] });
      assert.equal(checked.status, 0, `tsc failed:\n${checked.output}`);

      const source = readFileSync(join(project.dir, "misuse.mts"), "utf8");
      writeFileSync(join(project.dir, "misuse-unmarked.mts"), source.replaceAll("// @ts-expect-error", "// expected:"));
      const unmarked = tsc(compiler, `${compiler}-${name}-unmarked`, { ...config, files: ["misuse-unmarked.mts"] });
      assert.notEqual(unmarked.status, 0, "the misuses compiled without their directives");
      const errors = [...unmarked.output.matchAll(/^misuse-unmarked\.mts\((\d+),\d+\): error (TS\d+):/gm)].map(([, line, code]) => [Number(line), code]);
      const expected = expectedErrors(source);
      assert.deepEqual(errors.map(([line]) => line), [...expected.keys()], `errors on exactly the marked lines:\n${unmarked.output}`);
      for (const [line, code] of errors) {
        assert.ok(expected.get(line).includes(code), `line ${line} failed with ${code}, not ${expected.get(line).join(" or ")}:\n${unmarked.output}`);
      }
    });
  }
}
