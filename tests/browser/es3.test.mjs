// polysocket.js must parse in ES3 engines (old IE, old mobile browsers) and
// must not lean on APIs they lack.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as acorn from "acorn";

// As old IE's parser: ES3, and reserved words not even as property names.
const ES3 = { ecmaVersion: 3, sourceType: "script", allowReserved: "never" };
const source = readFileSync(new URL("../../client/polysocket.js", import.meta.url), "utf8");

test("polysocket.js parses as ECMAScript 3", () => {
  assert.doesNotThrow(() => acorn.parse(source, ES3));
});

test("the ES3 check rejects what ES3 engines reject", () => {
  for (const newer of ["var a = {b: 1,};", "let a = 1;", "var f = () => 1;", "var o = {get a() { return 1; }};", "x.delete();"]) {
    assert.throws(() => acorn.parse(newer, ES3), `${newer} should not parse as ES3`);
  }
});

const tree = acorn.parse(source, { ...ES3, ranges: true });

/** Where the named functions (`name` or `proto.name = function`) are, as [start, end). */
function functionRanges(names) {
  const ranges = [];
  (function walk(node) {
    if (node.type === "FunctionDeclaration" && names.includes(node.id.name)) ranges.push(node.range);
    if (node.type === "AssignmentExpression" && names.includes(source.slice(...node.left.range))) ranges.push(node.right.range);
    for (const child of Object.values(node)) {
      for (const item of Array.isArray(child) ? child : [child]) if (item && typeof item.type === "string") walk(item);
    }
  })(tree);
  assert.equal(ranges.length, names.length, `found ${names}`);
  return ranges;
}

/** Offsets of `pattern` in the code, comments blanked out. */
function usesOf(pattern) {
  const code = source.replace(/\/\*[\s\S]*?\*\//g, (comment) => " ".repeat(comment.length));
  return [...code.matchAll(pattern)].map((m) => m.index);
}

test("polysocket.js uses no API that ES3 browsers lack", () => {
  const code = source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/.*$/gm, "");
  const es5 = [/\.forEach\(/, /\.map\(/, /\.filter\(/, /\.reduce\(/, /\.some\(/, /\.every\(/, /\.lastIndexOf\(/, /\.indexOf\(\s*\w+\s*,/];
  const library = [/\bPromise\b/, /Array\.isArray/, /Object\.(keys|create|definePropert|getPrototypeOf|freeze|seal)/, /\.bind\(/, /Date\.now/, /\.toISOString\(/, /\.trim\(/];
  for (const api of [...es5, ...library]) {
    assert.doesNotMatch(code, api);
  }
});

// IE6-8 have no addEventListener, on scripts or anywhere: listen() falls
// back to attachEvent, and nothing else adds listeners.
test("polysocket.js adds event listeners only through listen(), which takes attachEvent too", () => {
  const [listen] = functionRanges(["listen"]);
  assert.match(source.slice(...listen), /target\.attachEvent\(/);
  const uses = usesOf(/\.(add|remove)EventListener\(/g);
  assert.ok(uses.length > 0);
  for (const at of uses) assert.ok(at >= listen[0] && at < listen[1], `an event listener added outside listen() at ${at}`);
});

// What IE6-9 lack and later browsers have: used only where a `typeof X !==
// "undefined"` test (one of them vouches for the others) found it first.
const OPTIONAL = new Set(["ArrayBuffer", "Uint8Array", "Blob", "FileReader", "fetch", "ReadableStream", "TextDecoder", "AbortController"]);

/** The names a true `test` proves present: `typeof X !== "undefined"`, in an && chain. */
function present(test) {
  if (test.type === "LogicalExpression" && test.operator === "&&") return [...present(test.left), ...present(test.right)];
  const isTypeof = (node) => node.type === "UnaryExpression" && node.operator === "typeof" && node.argument.type === "Identifier";
  if (test.type === "BinaryExpression" && (test.operator === "!==" || test.operator === "!=") && isTypeof(test.left) && test.right.value === "undefined") {
    return [test.left.argument.name];
  }
  return [];
}

/** Every use of an OPTIONAL name, with the chain of [node, key] that leads to it. */
function* uses(node, path = []) {
  if (node.type === "Identifier" && OPTIONAL.has(node.name)) yield path;
  for (const [key, child] of Object.entries(node)) {
    if (node.type === "MemberExpression" && key === "property" && !node.computed) continue;
    if (node.type === "UnaryExpression" && node.operator === "typeof") continue;
    for (const item of Array.isArray(child) ? child : [child]) {
      if (item && typeof item.type === "string") yield* uses(item, [...path, [node, key]]);
    }
  }
}

// JSON is used only by the streaming transport and by frames, which a
// socket takes only where canStream() or canFrame() found JSON.
test("polysocket.js uses JSON only on the streaming and frame paths, which check for it", () => {
  const paths = functionRanges(["post", "canStream", "proto._stream", "canFrame", "frame"]);
  const uses = usesOf(/\bJSON\b/g);
  assert.ok(uses.length > 0);
  for (const at of uses) {
    assert.ok(paths.some(([start, end]) => at >= start && at < end), `JSON used outside the streaming and frame paths at ${at}`);
  }
  for (const check of ["canStream", "canFrame"]) {
    assert.match(source.slice(...functionRanges([check])[0]), /typeof JSON [!=]== "undefined"/, check);
  }
});

test("polysocket.js uses typed arrays, Blob, FileReader and fetch only behind a typeof test", () => {
  const guarded = ([node, key]) =>
    ((node.type === "IfStatement" || node.type === "ConditionalExpression") && key === "consequent" && present(node.test).some((name) => OPTIONAL.has(name))) ||
    (node.type === "LogicalExpression" && node.operator === "&&" && key === "right" && present(node.left).some((name) => OPTIONAL.has(name)));
  const found = [...uses(acorn.parse(source, { ...ES3, locations: true }))];
  assert.ok(found.length > 0);
  for (const path of found) {
    const { loc } = path.at(-1)[0];
    assert.ok(path.some(guarded), `an unguarded use of an optional API near line ${loc.start.line}`);
  }
  // The check itself: the bug it exists for is caught.
  assert.equal([...uses(acorn.parse("var b = new Uint8Array(3);", ES3))].some((p) => p.some(guarded)), false);
});
