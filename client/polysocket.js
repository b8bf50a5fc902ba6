/*
 * polysocket.js: a WebSocket for browsers that have none.
 *
 *   <script src="https://router.example.com/polysocket.js"></script>
 *   <script>PolySocket.install({router: "//router.example.com", token: "..."});</script>
 *   var ws = new WebSocket("wss://chat.example.com/socket");   // unchanged code
 *
 * Transports, best first: where the browser has cross-origin XMLHttpRequest
 * and JSON, messages arrive on one streaming response (NDJSON) and sends are
 * form POSTs; everywhere else, and when a stream does not get through (a
 * proxy that buffers responses, a page whose origin the daemon does not
 * know), JSONP script tags, which work wherever a page can load a script;
 * there, a burst of sends too big for one script's URL is posted as a form
 * into a hidden iframe where the browser has postMessage and JSON (IE8 on),
 * and goes in URL-sized pieces where it has not, or where the page's
 * Content-Security-Policy forbids it. install({transport: "jsonp"}) skips
 * streaming. Written in ES3: no JSON
 * (but where the browser has it), no Promise, no Array.prototype.forEach, no
 * getters, no trailing commas.
 *
 * Upstreams that authenticate the handshake with a bearer (a browser's own
 * WebSocket cannot send one): install({..., bearer: "..."}), or a function
 * of the target URL returning the current credential; the token must allow
 * it (forward_bearer). It travels in the body of a POST /create where the
 * browser has cross-origin XMLHttpRequest (URLs end up in proxies' logs),
 * and in the /create URL only where JSONP is all there is (or chosen, with
 * transport: "jsonp").
 *
 * Where ArrayBuffer is missing, binary messages arrive as "binary strings"
 * (one character per byte, 0-255, as old XHR code read binary data), with
 * binaryType "binarystring" and event.binary true; ws.sendBinary(string)
 * sends one.
 *
 * Delivery: polls carry `ack` (the last sequence number received), so a poll
 * whose answer is lost is simply repeated and returns the same messages;
 * sends carry `seq`, so a repeated send is not delivered twice. Long messages
 * are split with `more=1` so that no URL exceeds maxUrl characters.
 *
 * Slow links: one send is in flight at a time, and everything sent while it
 * is goes in the next request (as many messages as fit in maxUrl for
 * JSONP, MAX_BODY for a POST), each with its own seq; a send waits for the
 * end of the script that made it, so a burst of sends leaves together. A
 * page sends a burst in about one round trip, not one round trip per message.
 */
(function (global) {
  var CONNECTING = 0, OPEN = 1, CLOSING = 2, CLOSED = 3;
  /* Longest request URL: Internet Explorer (to 11) refuses more than 2083
     characters; other browsers take far more, and proxies commonly take
     8 KiB request lines (nginx's default). */
  var maxUrl = typeof navigator !== "undefined" && /MSIE |Trident\//.test(navigator.userAgent) ? 2000 : 6000;
  /* Most of a POST body a batch of messages fills (one longer message
     still goes, alone): the daemon's body limit is far above it, and a
     smaller request gets its first messages upstream sooner. */
  var MAX_BODY = 65536;
  /* Most messages one send may carry: the daemon's limit. */
  var MAX_BATCH = 1000;
  /* How long a frame's page may take, once loaded, to post its answer: the
     message is sent before the load ends, and may be handled after it. */
  var FRAME_GRACE = 250;
  /* How long the daemon may hold a poll, and how much longer we wait for it. */
  var POLL_TTL = 25000, POLL_SLACK = 10000;
  var CREATE_TIMEOUT = 30000, SEND_TIMEOUT = 30000;
  /* A failing request is retried with growing pauses, at most MAX_BACKOFF
     (so a link that comes back is used again within that), until it has
     failed for LOST_AFTER: then the connection is declared lost (1006). The
     daemon keeps a socket nobody uses for a minute (--idle-timeout), so a
     page rides out a link lost for many seconds. */
  var LOST_AFTER = 20000, FIRST_BACKOFF = 250, MAX_BACKOFF = 2000;
  /* A stream's heartbeat interval; its first line (a heartbeat) must arrive
     within STREAM_PROBE, or a proxy is holding it back. */
  var STREAM_TTL = 15000, STREAM_PROBE = 3000;
  var CLIENT = "polysocket.js-0.1.0";
  var BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

  /* JSONP answers call back through window.PolySocket._callbacks, which
     the last copy of this file on the page defines: a page with two (a
     bundle and a script tag) shares one table, each copy naming its
     callbacks apart. */
  var callbacks = (global.PolySocket && global.PolySocket._callbacks) || {}, nextCallback = 0;
  var callbackPrefix = "c" + Math.floor(Math.random() * 2147483647).toString(36) + "_";
  /* Once a stream has not got through, this page's sockets poll: whatever
     held it back will hold back the next one too. */
  var streamsBlocked = false;
  /* Frames go until one fails before any worked on this page: whatever
     stopped it (a Content-Security-Policy, a proxy) stops the next one too. */
  var framesBlocked = false, framesWorked = false;

  function canStream() {
    if (streamsBlocked || typeof XMLHttpRequest === "undefined" || typeof JSON === "undefined") { return false; }
    try { return "withCredentials" in new XMLHttpRequest(); } catch (e) { return false; }
  }

  function canFrame() {
    return !framesBlocked && typeof JSON !== "undefined" && typeof global.postMessage !== "undefined" &&
      !!(global.addEventListener || global.attachEvent) && !!document.body;
  }

  /* addEventListener, or IE8's attachEvent; returns what removes it. */
  function listen(target, type, handler) {
    if (target.addEventListener) {
      target.addEventListener(type, handler, false);
      return function () { target.removeEventListener(type, handler, false); };
    }
    target.attachEvent("on" + type, handler);
    return function () { target.detachEvent("on" + type, handler); };
  }

  function now() {
    return new Date().getTime();
  }

  /* The pause before retry `attempt` (1, 2, ...) of a request failing
     since `since`, or -1 once it has failed for LOST_AFTER. */
  function backoff(attempt, since) {
    return now() - since >= LOST_AFTER ? -1 : Math.min(FIRST_BACKOFF * Math.pow(2, attempt - 1), MAX_BACKOFF);
  }

  function error(name, message) {
    if (typeof DOMException === "function") {
      try { return new DOMException(message, name); } catch (e) { /* old engines */ }
    }
    var err = new Error(message);
    err.name = name;
    return err;
  }

  function isArray(value) {
    return Object.prototype.toString.call(value) === "[object Array]";
  }

  function utf8Length(text) {
    var bytes = 0, i, c;
    for (i = 0; i < text.length; i++) {
      c = text.charCodeAt(i);
      if (c < 0x80) { bytes += 1; }
      else if (c < 0x800) { bytes += 2; }
      else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) { bytes += 4; i++; }
      else { bytes += 3; }
    }
    return bytes;
  }

  function encodeBase64(bytes) {
    var out = [], i, n;
    for (i = 0; i < bytes.length; i += 3) {
      n = (bytes[i] << 16) | ((i + 1 < bytes.length ? bytes[i + 1] : 0) << 8) | (i + 2 < bytes.length ? bytes[i + 2] : 0);
      out.push(BASE64.charAt((n >> 18) & 63) + BASE64.charAt((n >> 12) & 63) +
        (i + 1 < bytes.length ? BASE64.charAt((n >> 6) & 63) : "=") +
        (i + 2 < bytes.length ? BASE64.charAt(n & 63) : "="));
    }
    return out.join("");
  }

  function decodedLength(base64) {
    return Math.floor(base64.replace(/=+$/, "").length * 3 / 4);
  }

  /* Fills `bytes` (a Uint8Array, or an Array where there is none). */
  function decodeBase64(text, bytes) {
    var clean = text.replace(/=+$/, ""), i, j = 0, n = 0, bits = 0;
    for (i = 0; i < clean.length; i++) {
      n = (n << 6) | BASE64.indexOf(clean.charAt(i));
      bits += 6;
      if (bits >= 8) { bits -= 8; bytes[j++] = (n >> bits) & 255; }
    }
    return bytes;
  }

  /* In slices: engines limit how many arguments apply() may pass. */
  function bytesToString(bytes) {
    var parts = [], i;
    for (i = 0; i < bytes.length; i += 4096) {
      parts.push(String.fromCharCode.apply(String, bytes.slice(i, i + 4096)));
    }
    return parts.join("");
  }

  function stringToBytes(text) {
    var bytes = [], i, c;
    for (i = 0; i < text.length; i++) {
      c = text.charCodeAt(i);
      if (c > 255) {
        throw error("SyntaxError", "not a binary string: character " + c + " at " + i + " is not a byte");
      }
      bytes.push(c);
    }
    return bytes;
  }

  function rethrow(e) {
    setTimeout(function () { throw e; }, 0);
  }

  /* Calls `each(key, value)` for every parameter that has a value; an
     array value repeats its key, in order (a batch's t and d). */
  function eachParam(params, each) {
    var key, values, i;
    for (key in params) {
      if (params.hasOwnProperty(key) && params[key] !== undefined && params[key] !== null) {
        values = isArray(params[key]) ? params[key] : [params[key]];
        for (i = 0; i < values.length; i++) { each(key, values[i]); }
      }
    }
  }

  function query(params) {
    var parts = [];
    eachParam(params, function (key, value) { parts.push(encodeURIComponent(key) + "=" + encodeURIComponent(value)); });
    return parts.join("&");
  }

  /* One JSONP request. `done(failure, answer)`: failure is a string when the
     request failed (network, HTTP error, timeout, or a script that never
     called back), else answer is the JSON the server sent. */
  function jsonp(url, params, timeout, done) {
    var name = callbackPrefix + (nextCallback++), finished = false;
    var head = document.getElementsByTagName("head")[0] || document.documentElement;
    var script = document.createElement("script");
    var timer = setTimeout(function () { finish("timeout"); }, timeout);
    function finish(failure, answer) {
      if (finished) { return; }
      finished = true;
      clearTimeout(timer);
      /* A late answer must find a function, not an error. */
      callbacks[name] = function () {};
      script.onload = script.onerror = script.onreadystatechange = null;
      if (script.parentNode) { script.parentNode.removeChild(script); }
      done(failure, answer);
    }
    callbacks[name] = function (answer) {
      finish(answer && typeof answer === "object" ? null : "not an answer", answer);
    };
    /* Browsers run a script's onload right after the script itself: a script
       that loaded without calling back was not our answer. IE6-8 fire
       neither onload nor onerror on scripts, only onreadystatechange, and
       reach "loaded" whether the script ran or failed to load. */
    script.onload = function () { setTimeout(function () { finish("no answer"); }, 0); };
    script.onerror = function () { finish("failed"); };
    script.onreadystatechange = function () {
      if (script.readyState === "loaded" || script.readyState === "complete") {
        setTimeout(function () { finish("no answer"); }, 0);
      }
    };
    params.cb = "PolySocket._callbacks." + name;
    script.async = true;
    script.src = url + "?" + query(params);
    /* Not appendChild: IE6 fails to load a script appended to a head that
       holds a <base> element. */
    head.insertBefore(script, head.firstChild);
  }

  /* One form POST over cross-origin XMLHttpRequest (a simple request: no
     preflight), answered with JSON; `done` as for jsonp(). */
  function post(url, params, timeout, done) {
    var xhr = new XMLHttpRequest(), finished = false;
    var timer = setTimeout(function () { finish("timeout"); xhr.abort(); }, timeout);
    function finish(failure, answer) {
      if (finished) { return; }
      finished = true;
      clearTimeout(timer);
      done(failure, answer);
    }
    xhr.onreadystatechange = function () {
      if (xhr.readyState !== 4) { return; }
      var answer = null;
      try { answer = JSON.parse(xhr.responseText); } catch (e) { /* not JSON: a proxy's error page */ }
      finish(xhr.status === 0 ? "failed" : (answer && typeof answer === "object" ? null : "not an answer"), answer);
    };
    xhr.open("POST", url, true);
    xhr.setRequestHeader("Content-Type", "application/x-www-form-urlencoded");
    xhr.send(query(params));
  }

  /* One form POST into a hidden iframe (frame=1), for a batch of sends too
     big for a script's URL: the daemon answers with a page that posts its
     JSON to this window. `done` as for jsonp(), and "blocked" when frames
     cannot work on this page. Form values travel as they are, but for line
     breaks, which browsers rewrite to CRLF: text holding any goes as a
     JSON string (t=j). A fresh iframe each time: the first
     navigation of a new frame replaces its blank page, so the page's
     history gains no entry. */
  function frame(url, params, timeout, done) {
    var name = callbackPrefix + "f" + (nextCallback++), finished = false, stop = [];
    /* As a message event names it: lower case, no default port. */
    var origin = /^[a-z][a-z0-9+.\-]*:\/\/[^\/?#]+/i.exec(url)[0].toLowerCase().replace(/^(http:\/\/.+):80$|^(https:\/\/.+):443$/, "$1$2");
    var body = document.body, iframe = document.createElement("iframe"), form = document.createElement("form");
    var timer = setTimeout(function () { finish("timeout"); }, timeout);
    var fields = {}, types = [], data = [], lineBreaks = false, key, i;
    function finish(failure, answer) {
      if (finished) { return; }
      finished = true;
      clearTimeout(timer);
      for (var j = 0; j < stop.length; j++) { stop[j](); }
      /* Not while one of its events is being handled. */
      setTimeout(function () { body.removeChild(form); body.removeChild(iframe); }, 0);
      if (!failure || failure === "not an answer") { framesWorked = true; }
      if (failure && !framesWorked) { failure = "blocked"; }
      if (failure === "blocked") { framesBlocked = true; }
      done(failure, answer);
    }
    iframe.name = name;
    iframe.style.display = "none";
    body.appendChild(iframe);
    stop.push(listen(global, "message", function (event) {
      if (event.source !== iframe.contentWindow || event.origin !== origin) { return; }
      var answer = null;
      try { answer = JSON.parse(event.data); } catch (e) { /* not our page's */ }
      finish(answer && typeof answer === "object" ? null : "not an answer", answer);
    }));
    /* A page that loaded without posting an answer was not ours (a proxy's
       error page). A new frame's blank page may load first: that one this
       window can read, the daemon's it cannot. */
    stop.push(listen(iframe, "load", function () {
      try { if (iframe.contentWindow.location.href === "about:blank") { return; } } catch (e) { /* the answer's */ }
      setTimeout(function () { finish("no answer"); }, FRAME_GRACE);
    }));
    /* The page's Content-Security-Policy refused the form or the frame. */
    stop.push(listen(document, "securitypolicyviolation", function (event) {
      if (String(event.blockedURI).indexOf(origin) === 0) { finish("blocked"); }
    }));
    for (key in params) {
      if (params.hasOwnProperty(key)) { fields[key] = params[key]; }
    }
    for (i = 0; isArray(params.d) && i < params.d.length; i++) {
      types.push(isArray(params.t) ? params.t[i] : (params.t || "t"));
      data.push(params.d[i]);
      if (types[i] === "t" && /[\r\n]/.test(data[i])) {
        types[i] = "j";
        data[i] = JSON.stringify(data[i]);
        lineBreaks = true;
      }
    }
    if (lineBreaks) {
      fields.t = types;
      fields.d = data;
    }
    form.method = "POST";
    form.action = url + "?frame=1";
    form.target = name;
    form.acceptCharset = "UTF-8";
    form.style.display = "none";
    eachParam(fields, function (name, value) {
      var input = document.createElement("input");
      input.type = "hidden";
      input.name = name;
      input.value = value;
      form.appendChild(input);
    });
    body.appendChild(form);
    form.submit();
  }

  /* Repeats a request while it fails, with exponential backoff: by frame
     when `how` is "frame" (until frames turn out to be blocked: the caller
     then sends otherwise), by POST where the socket streams (or `how` is
     "secret" and the browser can), and by JSONP otherwise (chosen again at
     each attempt: a socket may fall back to JSONP meanwhile). An answer
     {"ok": false, "retryable": true} (the fleet briefly unable to serve: no
     capacity, unavailable, a daemon timeout) fails the same way; any other
     answer is final. Each JSONP attempt gets a callback of its own, so a
     late answer to one cannot be taken for the answer to the next. */
  function persistent(socket, url, params, timeout, done, how) {
    var attempt = 0, since = null;
    function run() {
      var request = how === "frame" ? frame : (socket._streaming || (how === "secret" && canStream()) ? post : jsonp);
      request(url, params, timeout, function (failure, answer) {
        /* Not retried once the socket has closed, but still ended: a send
           that ends lets the close be acknowledged. */
        if (socket._gone) { return done("closed"); }
        if (failure === "blocked") { return done(failure); }
        if (!failure && answer.ok === false && answer.retryable === true) { failure = "retryable"; }
        if (!failure) { return done(null, answer); }
        if (since === null) { since = now(); }
        var pause = backoff(++attempt, since);
        if (pause < 0) { return done(failure); }
        setTimeout(run, pause);
      });
    }
    run();
  }

  function parseProtocols(protocols) {
    var list = protocols === undefined ? [] : (isArray(protocols) ? protocols : [protocols]);
    var seen = {}, i, p;
    for (i = 0; i < list.length; i++) {
      p = String(list[i]);
      if (!/^[!#$%&'*+\-.\^_`|~0-9A-Za-z]+$/.test(p) || seen.hasOwnProperty(p)) {
        throw error("SyntaxError", "invalid or duplicate subprotocol: " + p);
      }
      seen[p] = true;
    }
    return list;
  }

  function PolySocket(url, protocols, options) {
    var self = this, config = options || PolySocket.defaults;
    url = String(url);
    if (!/^wss?:\/\/[^\/?#]+/i.test(url) || url.indexOf("#") >= 0) {
      throw error("SyntaxError", "not a ws:// or wss:// URL without a fragment: " + url);
    }
    if (!config.router || !config.token) {
      throw error("SyntaxError", "PolySocket needs {router, token} options (or PolySocket.install(options))");
    }
    this.url = url;
    this.readyState = CONNECTING;
    this.protocol = "";
    this.extensions = "";
    this.bufferedAmount = 0;
    this.binaryType = typeof Blob !== "undefined" ? "blob" : (typeof ArrayBuffer !== "undefined" ? "arraybuffer" : "binarystring");
    this.onopen = this.onmessage = this.onerror = this.onclose = null;
    this._listeners = {};
    this._events = [];
    this._outbox = [];
    this._sending = false;
    this._pumpTimer = null;
    /* Sends refused in a row (a busy upstream, the send rate), and since
       when: refused for LOST_AFTER, the connection is declared lost. */
    this._sendFailures = 0;
    this._sendFailingSince = null;
    /* A stream has got through on this socket: one that fails later met a
       failing link, not a proxy that holds streams back. */
    this._streamWorked = false;
    /* The seq of a close that reached the page, until it is acknowledged. */
    this._closeAck = null;
    this._seq = 0;
    this._acked = 0;
    this._gone = false;
    this._streaming = false;
    this._wantsStream = config.transport !== "jsonp";
    this._router = config.router.replace(/\/+$/, "");
    var list = parseProtocols(protocols);
    var params = {from: CLIENT, target: url, token: config.token, protocols: list.join(",")};
    var bearer = typeof config.bearer === "function" ? config.bearer(url) : config.bearer;
    if (bearer) { params.bearer = String(bearer); }
    persistent(this, this._router + "/create", params, CREATE_TIMEOUT, function (failure, answer) {
        if (failure || !answer.ok) { return self._lost(); }
        var scheme = /^https?:/i.exec(self._router);
        self._base = (scheme ? scheme[0] : global.location.protocol) + "//" + answer.fqdn;
        self._socket = answer.socket;
        self.protocol = answer.protocol || "";
        self._streaming = self._wantsStream && canStream();
        if (self.readyState === CONNECTING) {
          self.readyState = OPEN;
          self._fire({type: "open"});
        }
        if (self._streaming) { self._stream(0); } else { self._poll(); }
        self._pump();
      }, bearer && this._wantsStream ? "secret" : null);
  }

  PolySocket.CONNECTING = CONNECTING;
  PolySocket.OPEN = OPEN;
  PolySocket.CLOSING = CLOSING;
  PolySocket.CLOSED = CLOSED;
  PolySocket.defaults = {};
  PolySocket._callbacks = callbacks;

  /* Puts PolySocket in place of window.WebSocket where the browser has none
     (or when options.force is true), so existing code runs unchanged. Not a
     typeof test: old WebKit answers "object" for some host constructors
     (which is also why this file tests typeof against "undefined"). */
  PolySocket.install = function (options) {
    PolySocket.defaults = options;
    if (options.force || !global.WebSocket) {
      global.WebSocket = PolySocket;
    } else if (options.fallback !== false && global.WebSocket !== Auto) {
      Auto.Native = global.WebSocket;
      global.WebSocket = Auto;
    }
    return global.WebSocket;
  };

  var proto = PolySocket.prototype;
  proto.CONNECTING = CONNECTING;
  proto.OPEN = OPEN;
  proto.CLOSING = CLOSING;
  proto.CLOSED = CLOSED;

  proto.addEventListener = function (type, listener) {
    var list = this._listeners[type] || (this._listeners[type] = []), i;
    for (i = 0; i < list.length; i++) { if (list[i] === listener) { return; } }
    list.push(listener);
  };

  proto.removeEventListener = function (type, listener) {
    var list = this._listeners[type] || [], i;
    for (i = 0; i < list.length; i++) {
      if (list[i] === listener) { list.splice(i, 1); return; }
    }
  };

  /* The listeners an event goes to, as [function, this] pairs. Listeners
     come before the on<type> handler: ES3 cannot see when the handler was
     assigned, and libraries usually add listeners first. */
  proto._targets = function (event) {
    var handler = this["on" + event.type], list = (this._listeners[event.type] || []).slice(0), targets = [], i;
    event.target = event.currentTarget = this;
    for (i = 0; i < list.length; i++) {
      if (typeof list[i] === "function") { targets.push([list[i], this]); }
      else if (list[i] && typeof list[i].handleEvent === "function") { targets.push([list[i].handleEvent, list[i]]); }
    }
    if (typeof handler === "function") { targets.push([handler, this]); }
    return targets;
  };

  /* As in browsers, a listener that throws stops neither the others nor
     the caller: its exception is reported from a task of its own. */
  proto.dispatchEvent = function (event) {
    var targets = this._targets(event), i;
    for (i = 0; i < targets.length; i++) {
      try { targets[i][0].call(targets[i][1], event); } catch (e) { rethrow(e); }
    }
    return true;
  };

  /* The socket's own events are dispatched in order, one per task as the
     standard queues them, never from inside the transport's callbacks. A
     listener's exception is not caught: the browser reports it as the
     page's own, with its message and line (rethrown from here it would be
     only "Script error." where this file comes from another origin), and
     the rest of that event's listeners follow in a task of their own.
     `message`, instead of an event, is a message from a poll: its event is
     made in its task, as the standard does, so the binaryType in force then
     applies. */
  proto._fire = function (event, message) {
    this._events.push({event: event, message: message, targets: null});
    this._nextEvent();
  };

  /* A task is scheduled as each event is queued, and each serves the
     oldest event: chained one after another, they would cost up to 15 ms
     an event in old IE. Before each step that may throw, one more task is
     scheduled to carry on should it throw, and cancelled if it does not:
     not in a finally block, which IE6-8 skip when the exception goes
     uncaught. An event that could not be made is dropped. */
  proto._nextEvent = function () {
    var self = this;
    return setTimeout(function () {
      var entry = self._events[0], target, rest;
      if (!entry.targets) {
        entry.targets = [];
        rest = self._nextEvent();
        if (entry.message) { entry.event = self._messageEvent(entry.message); }
        entry.targets = self._targets(entry.event);
        clearTimeout(rest);
      }
      while (entry.targets.length > 0) {
        target = entry.targets.shift();
        rest = self._nextEvent();
        target[0].call(target[1], entry.event);
        clearTimeout(rest);
      }
      self._events.shift();
    }, 0);
  };

  proto.send = function (data) {
    if (this.readyState === CONNECTING) {
      throw error("InvalidStateError", "still connecting");
    }
    var item = {seq: 0, parts: null, size: 0, ready: true, t: "b"}, self = this, reader;
    if (typeof ArrayBuffer !== "undefined" && data instanceof ArrayBuffer) {
      item.size = data.byteLength;
      item.d = encodeBase64(new Uint8Array(data));
    } else if (typeof ArrayBuffer !== "undefined" && ArrayBuffer.isView && ArrayBuffer.isView(data)) {
      item.size = data.byteLength;
      item.d = encodeBase64(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    } else if (typeof Blob !== "undefined" && data instanceof Blob && typeof FileReader !== "undefined") {
      item.size = data.size;
      item.ready = false;
      reader = new FileReader();
      reader.onload = function () {
        item.d = encodeBase64(new Uint8Array(reader.result));
        item.ready = true;
        self._pump();
      };
      reader.onerror = function () { self._lost(); };
      reader.readAsArrayBuffer(data);
    } else {
      data = String(data);
      item.size = utf8Length(data);
      item.t = "t";
      item.d = data;
    }
    this._enqueue(item);
  };

  /* A binary message given as a binary string (one character per byte, as
     delivered where ArrayBuffer is missing): send() of a string is always
     text, as with a native WebSocket. */
  proto.sendBinary = function (data) {
    if (this.readyState === CONNECTING) {
      throw error("InvalidStateError", "still connecting");
    }
    data = String(data);
    this._enqueue({seq: 0, parts: null, size: data.length, ready: true, t: "b", d: encodeBase64(stringToBytes(data))});
  };

  proto._enqueue = function (item) {
    this.bufferedAmount += item.size;
    /* After close(), data is counted but not sent, as the standard says. */
    if (this.readyState !== OPEN) { return; }
    this._outbox.push(item);
    /* At the end of this task, so that the sends a script makes in a loop
       go in one request. */
    var self = this;
    if (this._pumpTimer === null) {
      this._pumpTimer = setTimeout(function () { self._pumpTimer = null; self._pump(); }, 0);
    }
  };

  /* close()'s arguments as the standard checks them: the reason, as a string. */
  function closeReason(code, reason) {
    if (code !== undefined && code !== 1000 && !(code >= 3000 && code <= 4999)) {
      throw error("InvalidAccessError", "close code must be 1000 or 3000-4999");
    }
    reason = reason === undefined ? "" : String(reason);
    if (utf8Length(reason) > 123) {
      throw error("SyntaxError", "close reason longer than 123 bytes");
    }
    return reason;
  }

  proto.close = function (code, reason) {
    reason = closeReason(code, reason);
    if (this.readyState === CLOSING || this.readyState === CLOSED) { return; }
    this.readyState = CLOSING;
    /* The close goes out after everything already sent; before the socket
       exists, it goes out as soon as it does. */
    /* As the standard: no code and no reason sends a Close without a code;
       a reason alone goes with 1000. */
    if (code === undefined && reason !== "") { code = 1000; }
    this._outbox.push({close: true, code: code, reason: reason, ready: true, size: 0});
    this._pump();
  };

  /* Splits a message so that each request URL stays under maxUrl. Base64
     pieces keep whole 4-character groups; text pieces never split a
     surrogate pair (each piece must be valid UTF-8 on its own). */
  proto._split = function (item) {
    var overhead = (this._base + "/s/" + this._socket).length + 120;
    var budget = maxUrl - overhead, parts = [], d = item.d, start = 0, end, cost, c;
    if (item.t === "b") {
      /* "+", "/" and "=" take three characters each once URL-encoded. */
      var size = Math.max(4, Math.floor(budget / 12) * 4);
      for (start = 0; start < d.length; start += size) { parts.push(d.substring(start, start + size)); }
    } else {
      while (start < d.length) {
        cost = 0;
        end = start;
        while (end < d.length) {
          c = d.charCodeAt(end);
          var width = (c >= 0xd800 && c <= 0xdbff && end + 1 < d.length) ? 2 : 1;
          var encoded = encodeURIComponent(d.substring(end, end + width)).length;
          if (cost + encoded > budget && end > start) { break; }
          cost += encoded;
          end += width;
        }
        parts.push(d.substring(start, end));
        start = end;
      }
    }
    if (parts.length === 0) { parts.push(""); }
    return parts;
  };

  /* The next request's messages: from the head of the outbox, all that
     are ready and fit in one URL (JSONP) or body (POST, or a frame's form
     when `byBody`), each as its next piece. The first always goes; a piece
     with more to follow ends the batch, since the next request must
     continue it. Pieces are cut to fit a URL whenever the socket polls, so
     that a frame's batch, if frames fail, goes on in URLs with the same
     seqs. */
  proto._batch = function (byBody) {
    var overhead = (this._base + "/s/" + this._socket).length + 120;
    var budget = byBody ? MAX_BODY : maxUrl - overhead, used = 0, batch = [], i, item, cost;
    for (i = 0; i < this._outbox.length && batch.length < MAX_BATCH; i++) {
      item = this._outbox[i];
      if (item.close || !item.ready) { break; }
      /* A POST body has no URL to keep short. */
      if (!item.parts) { item.parts = this._streaming ? [item.d] : this._split(item); }
      /* "&t=b&d=" and the piece, URL-encoded. */
      cost = 7 + encodeURIComponent(item.parts[0]).length;
      if (batch.length > 0 && used + cost > budget) { break; }
      used += cost;
      batch.push(item);
      if (item.parts.length > 1) { break; }
    }
    return batch;
  };

  /* Sends the outbox in order, one request at a time, each carrying every
     message waiting that fits; the close goes once everything before it
     has. */
  proto._pump = function () {
    var self = this, head = this._outbox[0], batch, params, types = [], data = [], mixed = false, byFrame = false, framed, i;
    if (this._sending || !this._socket || !head || !head.ready || this._gone) { return; }
    if (head.close) {
      params = {t: "c", code: head.code === undefined ? null : head.code, reason: head.reason || null};
      batch = [];
    } else {
      batch = this._batch(this._streaming);
      /* More is waiting than one URL takes: one form carries it all. */
      framed = !this._streaming && canFrame() ? this._batch(true) : batch;
      if (framed.length > batch.length) {
        byFrame = true;
        batch = framed;
      }
      for (i = 0; i < batch.length; i++) {
        /* Consecutive seqs, kept across retries until each is taken. */
        if (!batch[i].seq) { batch[i].seq = ++this._seq; }
        types.push(batch[i].t);
        data.push(batch[i].parts[0]);
        mixed = mixed || batch[i].t !== batch[0].t;
      }
      /* One t types every d; text needs none. */
      params = {seq: batch[0].seq, t: mixed ? types : (types[0] === "t" ? null : types[0]), d: data,
        more: batch[batch.length - 1].parts.length > 1 ? 1 : null};
    }
    this._sending = true;
    persistent(this, this._base + "/s/" + this._socket, params, SEND_TIMEOUT, function (failure, answer) {
      self._sending = false;
      self._acknowledgeClose();
      /* Frames do not work on this page: the batch goes again in URLs. */
      if (failure === "blocked") { return self._pump(); }
      if (failure) { return self._lost(); }
      if (head.close) {
        self._outbox.shift();
        return;
      }
      /* A refused or half-taken batch (the upstream busy, the send rate)
         says how many of its messages were taken: the rest go again. */
      var taken = answer.ok ? batch.length : (typeof answer.accepted === "number" ? answer.accepted : 0);
      for (i = 0; i < taken && i < batch.length; i++) {
        batch[i].parts.shift();
        batch[i].seq = 0;
        if (batch[i].parts.length === 0) {
          self._outbox.shift();
          self.bufferedAmount -= batch[i].size;
        }
      }
      if (answer.ok) {
        self._sendFailures = 0;
        self._sendFailingSince = null;
        return self._pump();
      }
      /* Its close is on its way to the receiving side. */
      if (answer.error === "socket is closed") { return; }
      if (self._sendFailingSince === null) { self._sendFailingSince = now(); }
      var pause = backoff(++self._sendFailures, self._sendFailingSince);
      if (pause < 0) { return self._lost(); }
      setTimeout(function () { self._pump(); }, pause);
    }, byFrame ? "frame" : null);
  };

  /* A message from either transport; false once it was the close. Those
     already seen (a retried poll, a resumed stream) are skipped by seq. */
  proto._deliver = function (m) {
    if (m.type === "heartbeat" || m.seq <= this._acked) { return true; }
    this._acked = m.seq;
    if (m.type === "close") {
      this._closed(m.code, m.reason, m.code !== 1006);
      return false;
    }
    this._fire(null, m);
    return true;
  };

  proto._poll = function () {
    var self = this;
    persistent(this, this._base + "/j/" + this._socket, {ttl: POLL_TTL, ack: this._acked},
      POLL_TTL + POLL_SLACK, function (failure, answer) {
        if (failure || !answer.ok || !isArray(answer.messages)) { return self._lost(); }
        var messages = answer.messages, i;
        for (i = 0; i < messages.length; i++) {
          if (!self._deliver(messages[i])) { return; }
        }
        self._poll();
      });
  };

  /* A streaming GET, read as text as it arrives: `onText(piece)` for each
     new piece, then `onEnd(status)` once (0: the request failed). By fetch
     where the browser can read a body as a stream: XMLHttpRequest hands
     over a growing response at most every 50 ms or so, which holds each
     message of a trickle back by half that on average. Returns what stops
     it, after which neither is called. */
  function streamText(url, onText, onEnd) {
    var stopped = false, xhr, read = 0;
    function end(status) {
      if (!stopped) {
        stopped = true;
        onEnd(status);
      }
    }
    if (typeof fetch !== "undefined" && typeof ReadableStream !== "undefined" && typeof TextDecoder !== "undefined" &&
        typeof AbortController !== "undefined") {
      var controller = new AbortController(), decoder = new TextDecoder();
      fetch(url, {signal: controller.signal, cache: "no-store"}).then(function (response) {
        if (response.status !== 200 || !response.body) { return end(response.status); }
        var reader = response.body.getReader();
        function next() {
          reader.read().then(function (chunk) {
            if (stopped) { return; }
            if (chunk.done) {
              onText(decoder.decode());
              return end(200);
            }
            onText(decoder.decode(chunk.value, {stream: true}));
            next();
          }, function () { end(0); });
        }
        next();
      }, function () { end(0); });
      return function () {
        stopped = true;
        controller.abort();
      };
    }
    xhr = new XMLHttpRequest();
    xhr.onreadystatechange = function () {
      if (stopped) { return; }
      if (xhr.readyState >= 3 && xhr.status === 200 && xhr.responseText.length > read) {
        onText(xhr.responseText.substring(read));
        read = xhr.responseText.length;
      }
      if (xhr.readyState === 4) { end(xhr.status); }
    };
    xhr.open("GET", url, true);
    xhr.send(null);
    return function () {
      stopped = true;
      xhr.abort();
    };
  }

  /* One streaming receive: NDJSON lines on one response, read as they
     arrive, from the last seq received. A stream ends by itself now and
     then and is simply opened again. Where no stream has got through yet,
     one whose first line (a heartbeat) does not arrive within
     STREAM_PROBE, or that fails before it, did not get through: the socket
     (and the page) falls back to JSONP polls. Once one has, a stream that
     fails met a failing link, and is retried like any request (`failures`
     in a row, since `since`). */
  proto._stream = function (failures, since) {
    var self = this, buffer = "", live = false, finished = false, silence, stop;
    function retry() {
      var started = since === undefined ? now() : since, pause = backoff(failures + 1, started);
      if (pause < 0) { return self._lost(); }
      setTimeout(function () { if (!self._gone) { self._stream(failures + 1, started); } }, pause);
    }
    function notThrough() {
      if (self._streamWorked) { return retry(); }
      self._fallBack();
    }
    var probe = setTimeout(function () { if (!live) { finish(); notThrough(); } }, STREAM_PROBE);
    function finish() {
      finished = true;
      clearTimeout(probe);
      clearTimeout(silence);
      stop();
    }
    /* Heartbeats come every STREAM_TTL: a stream silent for longer is dead. */
    function watch() {
      clearTimeout(silence);
      silence = setTimeout(function () { finish(); self._stream(failures + 1); }, STREAM_TTL + POLL_SLACK);
    }
    function lines(text) {
      var start = 0, end;
      buffer += text;
      while (!finished && (end = buffer.indexOf("\n", start)) >= 0) {
        var message = JSON.parse(buffer.substring(start, end));
        start = end + 1;
        live = true;
        self._streamWorked = true;
        failures = 0;
        since = undefined;
        watch();
        if (!self._deliver(message)) { finish(); }
      }
      buffer = buffer.substring(start);
    }
    stop = streamText(this._base + "/j/" + this._socket + "?" + query({stream: "ndjson", ttl: STREAM_TTL, ack: this._acked}), lines,
      function (status) {
        if (finished) { return; }
        finish();
        if (self._gone) { return; }
        if (status === 403) { return self._lost(); }
        if (!live) { return notThrough(); }
        if (status === 200) { return self._stream(0); }
        retry();
      });
  };

  proto._fallBack = function () {
    if (this._gone) { return; }
    streamsBlocked = true;
    this._streaming = false;
    this._poll();
  };

  proto._messageEvent = function (message) {
    var binary = message.type === "binary";
    return {type: "message", data: binary ? this._binary(message.data) : message.data, binary: binary, origin: "", lastEventId: ""};
  };

  /* "binarystring" can be chosen anywhere, and is the only form without
     typed arrays whatever binaryType says; "blob" without Blob gives an
     ArrayBuffer. */
  proto._binary = function (base64) {
    var bytes;
    if (this.binaryType !== "binarystring" && typeof Uint8Array !== "undefined") {
      bytes = decodeBase64(base64, new Uint8Array(decodedLength(base64)));
      return this.binaryType === "blob" && typeof Blob !== "undefined" ? new Blob([bytes]) : bytes.buffer;
    }
    return bytesToString(decodeBase64(base64, []));
  };

  proto._closed = function (code, reason, wasClean) {
    if (this.readyState === CLOSED) { return; }
    var acked = this._acked;
    this.readyState = CLOSED;
    this._gone = true;
    if (!wasClean) { this._fire({type: "error"}); }
    this._fire({type: "close", code: code, reason: reason || "", wasClean: wasClean});
    if (this._socket && wasClean) {
      /* Acknowledge the close (whichever way it came) so the daemon lets
         the socket go at once, but only once the requests open on the
         socket's host name have ended (a stream is aborted right after
         this; a send may still be on its way), so it never has more than
         two. */
      var self = this;
      this._closeAck = acked;
      setTimeout(function () { self._acknowledgeClose(); }, 0);
    }
  };

  proto._acknowledgeClose = function () {
    if (this._closeAck === null || this._sending) { return; }
    var ack = this._closeAck;
    this._closeAck = null;
    jsonp(this._base + "/j/" + this._socket, {ttl: 0, ack: ack}, POLL_SLACK, function () {});
  };

  proto._lost = function () {
    this._closed(1006, "", false);
  };


  /* ---- Native first: a browser that has WebSocket, behind a proxy that
     refuses, hangs or strips the upgrade, falls back to the bridge.

     new PolySocket.Auto(url, protocols, options) (what install() puts in
     place of a native WebSocket) opens the native socket and hands the page
     its events, unless it fails first: an error or close before it opens,
     no open within the hang timeout, or a close (1006) within STABLE_AFTER
     of opening before any message came. Then a bridged PolySocket takes
     over without a trace of the native attempt, and the messages the page
     sent in that moment go through it, in order. The failure is remembered
     for FALLBACK_FOR per page origin and target host (localStorage), so the
     next page load goes straight to the bridge. The hang timeout follows
     the link, so that a slow link that does open is kept: HANG_RTTS round
     trips (a native open through a proxy may take five: TCP, CONNECT, two
     of TLS, the upgrade) of the longest round trip this page has seen (its
     own request, the router's answer with this script), and no less than
     twice the time the last native open to this host took; at least
     MIN_HANG, at most MAX_HANG, HANG_UNKNOWN where nothing is known. */
  var MIN_HANG = 400, MAX_HANG = 8000, HANG_UNKNOWN = 2000, HANG_RTTS = 6, STABLE_AFTER = 1000, FALLBACK_FOR = 3600000;
  var FALLBACK_KEY = "polysocket.fallback ", NATIVE_KEY = "polysocket.native ";

  /* What is stored is per page origin and target host. */
  function storageName(url) {
    var host = /^wss?:\/\/([^\/?#]+)/i.exec(url);
    var origin = global.location ? global.location.protocol + "//" + global.location.host : "";
    return origin + " " + (host ? host[1].toLowerCase() : url);
  }

  /* Storage may be missing, disabled or full: then nothing is remembered. */
  function stored(key) {
    try { return Number(global.localStorage.getItem(key)) || 0; } catch (e) { return 0; }
  }

  function store(key, value) {
    try {
      if (value) { global.localStorage.setItem(key, String(value)); } else { global.localStorage.removeItem(key); }
    } catch (e) { /* no storage */ }
  }

  function remembered(name) {
    var until = stored(FALLBACK_KEY + name);
    if (until > now()) { return true; }
    if (until) { store(FALLBACK_KEY + name, 0); }
    return false;
  }

  /* A failure, or (openMs) how long a native open that worked took. */
  function remember(name, failed, openMs) {
    store(FALLBACK_KEY + name, failed ? now() + FALLBACK_FOR : 0);
    if (!failed) { store(NATIVE_KEY + name, Math.max(1, Math.round(openMs))); }
  }

  /* The longest round trip seen, in ms, or -1: the page's own request and
     the router's answer with this script (its Timing-Allow-Origin shows the
     request's own timings, or else the whole fetch counts), either one
     near nothing when it came from a cache. Not navigator.connection.rtt:
     with nothing observed yet it is a guess from the connection type. */
  function roundTrip(router) {
    var rtt = -1, entries, entry, i, timing;
    function seen(ms) { if (ms > rtt) { rtt = ms; } }
    function request(e) { return e.requestStart > 0 && e.responseStart >= e.requestStart ? e.responseStart - e.requestStart : -1; }
    try {
      entries = global.performance.getEntriesByType("navigation");
      if (entries.length) { seen(request(entries[0])); } else {
        timing = global.performance.timing;
        seen(timing.requestStart > 0 ? timing.responseStart - timing.requestStart : -1);
      }
      router = String(router || "").replace(/^https?:/i, "").replace(/\/+$/, "");
      entries = global.performance.getEntriesByType("resource");
      for (i = 0; i < entries.length; i++) {
        entry = entries[i];
        if (/\/polysocket\.js(\?|$)/.test(entry.name) && entry.name.replace(/^https?:/i, "").indexOf(router) === 0) {
          seen(entry.requestStart > 0 ? request(entry) : entry.duration);
        }
      }
    } catch (e) { /* no Resource Timing */ }
    return rtt;
  }

  function hangTimeout(router, name) {
    var rtt = roundTrip(router), lastOpen = stored(NATIVE_KEY + name);
    if (rtt < 0 && !lastOpen) { return HANG_UNKNOWN; }
    return Math.max(MIN_HANG, Math.min(MAX_HANG, Math.max(HANG_RTTS * rtt, 2 * lastOpen)));
  }

  function Auto(url, protocols, options) {
    var self = this;
    this._config = options || PolySocket.defaults;
    this.url = String(url);
    this._protocols = protocols;
    this.readyState = CONNECTING;
    this.protocol = "";
    this.extensions = "";
    this.bufferedAmount = 0;
    this.binaryType = "blob";
    this.onopen = this.onmessage = this.onerror = this.onclose = null;
    this._listeners = {};
    this._events = [];
    this._name = storageName(this.url);
    /* Sent since the native socket opened, until it proves stable. */
    this._unconfirmed = [];
    this._inner = null;
    this._decided = false;
    this._closeAsked = false;
    /* Sent while the bridge that takes over is still opening. */
    this._pending = null;
    if (!Auto.Native || remembered(this._name)) {
      setTimeout(function () { self._bridge(); }, 0);
      return;
    }
    this._native();
  }

  /* The browser's own WebSocket, as it was before install() replaced it. */
  Auto.Native = global.WebSocket;

  var auto = Auto.prototype;
  auto.addEventListener = proto.addEventListener;
  auto.removeEventListener = proto.removeEventListener;
  auto._targets = proto._targets;
  auto.dispatchEvent = proto.dispatchEvent;
  /* Events reach the page as the bridge's do: in tasks of their own, a
     throwing listener reported as the page's own error. */
  auto._fire = proto._fire;
  auto._nextEvent = proto._nextEvent;
  auto.CONNECTING = CONNECTING;
  auto.OPEN = OPEN;
  auto.CLOSING = CLOSING;
  auto.CLOSED = CLOSED;

  auto._native = function () {
    var self = this, socket, started = now(), opened = null, heard = false, hang;
    /* A bad URL or subprotocol throws from here, as natively. */
    socket = this._protocols === undefined ? new Auto.Native(this.url) : new Auto.Native(this.url, this._protocols);
    this._inner = socket;
    function fail() {
      if (self._decided || self._closeAsked || socket !== self._inner) { return false; }
      clearTimeout(hang);
      socket.onopen = socket.onmessage = socket.onerror = socket.onclose = null;
      try { socket.close(); } catch (e) { /* already closed */ }
      remember(self._name, true);
      self._bridge();
      return true;
    }
    /* The native socket works: a message came, or it stayed up. */
    function confirmed() {
      if (self._decided) { return; }
      self._decided = true;
      self._unconfirmed = [];
      remember(self._name, false, opened - started);
    }
    hang = setTimeout(fail, hangTimeout(this._config.router, this._name));
    socket.onopen = function () {
      clearTimeout(hang);
      opened = now();
      socket.binaryType = self.binaryType;
      self.readyState = OPEN;
      self.protocol = socket.protocol;
      self.extensions = socket.extensions;
      setTimeout(function () {
        if (self._inner === socket && socket.readyState === OPEN) { confirmed(); }
      }, STABLE_AFTER);
      self._forward({type: "open"});
    };
    socket.onmessage = function (event) {
      heard = true;
      confirmed();
      self._forward({type: "message", data: event.data});
      socket.binaryType = self.binaryType;
    };
    socket.onerror = function () {
      if (opened === null && fail()) { return; }
      if (self._decided || self._closeAsked || opened !== null) { self._forward({type: "error"}); }
    };
    socket.onclose = function (event) {
      var early = opened !== null && !heard && now() - opened < STABLE_AFTER && event.code === 1006;
      if ((opened === null || early) && fail()) { return; }
      self.readyState = CLOSED;
      self._forward({type: "close", code: event.code, reason: event.reason, wasClean: event.wasClean});
    };
  };

  /* The bridge takes over: the page's handlers see its events as this
     socket's, and what it sent while the native socket was on trial goes
     again, in order. */
  auto._bridge = function () {
    var self = this, socket, opened = this.readyState === OPEN;
    this._decided = true;
    this._pending = this._unconfirmed;
    this._unconfirmed = [];
    try {
      socket = new PolySocket(this.url, this._protocols, this._config);
    } catch (e) {
      this.readyState = CLOSED;
      this._forward({type: "error"});
      this._forward({type: "close", code: 1006, reason: "", wasClean: false});
      return;
    }
    this._inner = socket;
    socket.binaryType = this.binaryType;
    socket.onopen = function () {
      self.protocol = socket.protocol;
      self.readyState = socket.readyState;
      var pending = self._pending, i;
      self._pending = null;
      for (i = 0; i < pending.length; i++) { socket.send(pending[i]); }
      if (self._closeAsked) { socket.close(self._closeCode, self._closeReason); }
      if (!opened) { self._forward({type: "open"}); }
    };
    socket.onmessage = function (event) {
      self._forward({type: "message", data: event.data, binary: event.binary});
    };
    socket.onerror = function () { self._forward({type: "error"}); };
    socket.onclose = function (event) {
      self.readyState = CLOSED;
      self._forward({type: "close", code: event.code, reason: event.reason, wasClean: event.wasClean});
    };
  };

  auto._forward = function (event) {
    if (this._inner) { this.bufferedAmount = this._inner.bufferedAmount || 0; }
    this._fire(event);
  };

  auto.send = function (data) {
    if (this.readyState === CONNECTING) {
      throw error("InvalidStateError", "still connecting");
    }
    if (this._pending) {
      this._pending.push(data);
      return;
    }
    this._inner.binaryType = this.binaryType;
    if (!this._decided) { this._unconfirmed.push(data); }
    this._inner.send(data);
    this._watchBuffered();
  };

  /* A page may wait for bufferedAmount to reach 0: it follows the inner
     socket's while anything is buffered. */
  auto._watchBuffered = function () {
    var self = this;
    this.bufferedAmount = this._inner.bufferedAmount || 0;
    if (this.bufferedAmount > 0 && !this._watching) {
      this._watching = true;
      setTimeout(function () { self._watching = false; self._watchBuffered(); }, 20);
    }
  };

  auto.close = function (code, reason) {
    closeReason(code, reason);
    this._closeAsked = true;
    this._closeCode = code;
    this._closeReason = reason;
    if (this.readyState === CLOSING || this.readyState === CLOSED) { return; }
    this.readyState = CLOSING;
    if (this._inner && !this._pending && this._inner.readyState <= OPEN) {
      if (code === undefined) { this._inner.close(); } else { this._inner.close(code, reason); }
    }
  };

  PolySocket.Auto = Auto;

  PolySocket.prototype.constructor = PolySocket;
  /* A global in every case, bundled or not: JSONP answers call back through
     window.PolySocket._callbacks. */
  global.PolySocket = PolySocket;
  /* UMD, for the npm package: CommonJS (Node, bundlers) gets the
     constructor as the module, as its `PolySocket` and as its "default"
     (quoted: ES3 reserves the word); AMD a module named "polysocket", named
     so that RequireJS pages may still load this file with a script tag. */
  if (typeof module === "object" && module && typeof module.exports === "object") {
    module.exports = PolySocket;
    module.exports.PolySocket = PolySocket;
    module.exports["default"] = PolySocket;
  } else if (typeof define === "function" && define.amd) {
    define("polysocket", [], function () { return PolySocket; });
  }
  /* A bundle runs this file in a function of its own, where `this` is no
     longer the window. */
}(typeof window !== "undefined" ? window : this));
