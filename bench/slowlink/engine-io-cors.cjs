// Preloaded (node --require) into the Engine.IO gateway of bench/peers/gateway.js.
// The pages here are on another origin than the gateway, as a page using
// polysocket is, and Engine.IO answers no cross-origin request unless its
// `cors` option is set (the browser then refuses to read every poll). This
// turns it on as a deployment would, reflecting the page's origin, when the
// gateway has not set it itself; every other option keeps its default, and
// the requests stay simple ones (no preflight), so only the
// Access-Control-Allow-Origin and Vary headers of each answer are added.
"use strict";
const { createRequire } = require("node:module");
// The engine.io the gateway loads (its NODE_PATH), not one installed beside
// this file: patching another copy would leave the gateway's without CORS.
const engineIo = createRequire(process.argv[1]).resolve("engine.io");
const { Server } = require(engineIo);
const cors = createRequire(engineIo)("cors");

const init = Server.prototype.init;
Server.prototype.init = function () {
  if (!this.opts.cors) this.use(cors({ origin: true }));
  return init.call(this);
};
