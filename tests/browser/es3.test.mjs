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

test("polysocket.js uses no API that ES3 browsers lack", () => {
  const code = source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/.*$/gm, "");
  for (const api of [/\bJSON\./, /\bPromise\b/, /\.forEach\(/, /\.map\(/, /\.filter\(/, /\.indexOf\(\s*\w+\s*,/, /Object\.keys/, /\.bind\(/, /\.trim\(/]) {
    assert.doesNotMatch(code, api);
  }
});
