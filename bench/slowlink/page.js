// The page side of every scenario, the same code for every system: only
// connect() knows the client libraries. The harness calls window.bench's
// functions with page.evaluate; durations are taken here with
// performance.now(), arrival times with Date.now() where the harness must
// line them up with the link's outage.
(function () {
  "use strict";
  const config = window.benchConfig;

  // One client connection, as {send, close}, reporting to `events`.
  function connect(events) {
    if (config.client === "polysocket") {
      PolySocket.install({ router: config.router, token: config.token, transport: config.transport });
      const ws = new WebSocket(config.target);
      ws.onopen = events.open;
      ws.onmessage = (e) => events.message(e.data);
      ws.onclose = (e) => events.close(`${e.code} ${e.reason}`.trim());
      return { send: (text) => ws.send(text), close: () => ws.close() };
    }
    if (config.client === "sockjs") {
      const sock = new SockJS(config.url, null, { transports: [config.transport] });
      sock.onopen = events.open;
      sock.onmessage = (e) => events.message(e.data);
      sock.onclose = (e) => events.close(`${e.code} ${e.reason}`.trim());
      return { send: (text) => sock.send(text), close: () => sock.close() };
    }
    if (config.client === "engine.io") {
      // The browser bundle exports a function that makes the socket.
      const socket = eio(config.url, { transports: ["polling"] });
      socket.on("open", events.open);
      socket.on("message", (data) => events.message(data));
      socket.on("close", (reason, description) => events.close(`${reason}${description ? `: ${description}` : ""}`));
      return { send: (text) => socket.send(text), close: () => socket.close() };
    }
    throw new Error(`unknown client ${config.client}`);
  }

  let socket = null;
  // Everything received, in order, with its arrival time.
  const received = [];
  let closed = null;
  // Woken on every message and on the close.
  const waiters = new Set();
  const wake = () => waiters.forEach((check) => check());

  /** Resolves "ok" once `done()` holds, "closed" or "timeout" before that. */
  function until(done, timeoutMs) {
    return new Promise((resolve) => {
      const finish = (outcome) => {
        waiters.delete(check);
        clearTimeout(timer);
        resolve(outcome);
      };
      const check = () => (done() ? finish("ok") : closed ? finish("closed") : null);
      const timer = setTimeout(() => finish("timeout"), timeoutMs);
      waiters.add(check);
      check();
    });
  }

  const failure = (outcome, what) => (outcome === "closed" ? `socket closed (${closed.reason}) ${what}` : `timed out ${what}`);
  const pad = (text) => text.padEnd(20, ".");

  window.bench = {
    /** Opens the socket; the open scenario's figure is openMs. */
    async open(timeoutMs) {
      let opened = false;
      const started = performance.now();
      let openMs = null;
      socket = connect({
        open: () => {
          opened = true;
          openMs = performance.now() - started;
          wake();
        },
        message: (data) => {
          received.push({ data, at: Date.now() });
          wake();
        },
        close: (reason) => {
          closed = { reason, at: Date.now() };
          wake();
        },
      });
      const outcome = await until(() => opened, timeoutMs);
      return outcome === "ok" ? { openMs } : { error: failure(outcome, "before it opened") };
    },

    /** Sends `count` messages, each once the echo of the one before arrived. */
    async roundTrips(count, timeoutMs) {
      const deadline = performance.now() + timeoutMs;
      const times = [];
      for (let i = 0; i < count; i++) {
        const text = pad(`round trip ${i} `);
        const base = received.length;
        const started = performance.now();
        socket.send(text);
        const outcome = await until(() => received.length > base, deadline - performance.now());
        if (outcome !== "ok") return { error: failure(outcome, `after ${i} of ${count} round trips`), times };
        times.push(performance.now() - started);
        if (received[base].data !== text) return { error: `round trip ${i} echoed ${JSON.stringify(received[base].data)}`, times };
      }
      return { times };
    },

    /** Sends `count` small messages in one synchronous loop. */
    async burst(count, timeoutMs) {
      const base = received.length;
      const sent = [];
      const started = performance.now();
      for (let i = 0; i < count; i++) {
        sent.push(pad(`burst ${i} `));
        socket.send(sent[i]);
      }
      const outcome = await until(() => received.length >= base + count, timeoutMs);
      const ms = performance.now() - started;
      const echoes = received.slice(base).map((m) => m.data);
      if (outcome !== "ok") return { error: failure(outcome, `with ${echoes.length} of ${count} echoes`), echoed: echoes.length };
      const inOrder = echoes.length === count && echoes.every((text, i) => text === sent[i]);
      return inOrder ? { ms } : { error: "echoes out of order or altered", ms };
    },

    /** Asks the upstream for `count` messages of about `size` characters. */
    async feed(count, size, timeoutMs) {
      const base = received.length;
      const started = performance.now();
      socket.send(JSON.stringify({ feed: count, size }));
      const outcome = await until(() => received.length >= base + count, timeoutMs);
      const ms = performance.now() - started;
      const messages = received.slice(base);
      if (outcome !== "ok") return { error: failure(outcome, `with ${messages.length} of ${count} messages`), received: messages.length };
      let characters = 0;
      for (let i = 0; i < messages.length; i++) {
        if (JSON.parse(messages[i].data).n !== i) return { error: `message ${i} of the feed is out of order`, ms };
        characters += messages[i].data.length;
      }
      return { ms, count: messages.length, characters };
    },

    /**
     * Asks the upstream for `count` records of about `size` characters, one
     * every `everyMs`; each record's delay is its arrival less its "at".
     */
    async trickle(count, everyMs, size, timeoutMs) {
      const base = received.length;
      socket.send(JSON.stringify({ trickle: count, every: everyMs, size }));
      const outcome = await until(() => received.length >= base + count, timeoutMs);
      const messages = received.slice(base);
      if (outcome !== "ok") return { error: failure(outcome, `with ${messages.length} of ${count} messages`), received: messages.length };
      const delays = [];
      for (let i = 0; i < messages.length; i++) {
        const record = JSON.parse(messages[i].data);
        if (record.n !== i) return { error: `message ${i} of the trickle is out of order` };
        delays.push(messages[i].at - record.at);
      }
      return { delays };
    },

    /** Sends one message every `intervalMs` until stopTicking(). */
    startTicking(intervalMs) {
      this.ticks = [];
      this.tickBase = received.length;
      this.ticker = setInterval(() => {
        if (closed) return;
        const text = pad(`tick ${this.ticks.length} `);
        this.ticks.push(text);
        socket.send(text);
      }, intervalMs);
    },

    /**
     * Stops ticking and waits for the echoes of every tick (or the close):
     * what was sent, what came back, when, and whether the socket closed.
     */
    async stopTicking(timeoutMs) {
      clearInterval(this.ticker);
      const sent = this.ticks.length;
      const outcome = await until(() => received.length - this.tickBase >= sent, timeoutMs);
      const echoes = received.slice(this.tickBase);
      return {
        outcome,
        sent: this.ticks,
        echoes: echoes.map((m) => m.data),
        arrivals: echoes.map((m) => m.at),
        closed,
      };
    },

    close() {
      socket.close();
    },
  };
})();
