// A browser page's client, as in the README's browser-console example: run in headless
// Chromium by tests/browser.rs (Runtime.evaluate with awaitPromise), called as
// `(this function)(url, topics, want)`.
//
// Opens `new WebSocket(url)` (the browser offers permessage-deflate by itself), subscribes to
// `topics`, and once it holds `want` data frames and one of every topic family asked for
// (trades, bbo, kline), closes with 1000. Resolves after the close with what it saw: the
// negotiated extensions, the close, and every message parsed, in arrival order. Rejects on
// anything else: a binary message, a message that is not JSON, a close before it was done.
(url, topics, want) =>
  new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const messages = [];
    const families = new Set(topics.map((t) => t.split(".")[0]));
    const seen = new Set();
    let data = 0;
    let done = false;
    const fail = (why) => {
      done = true;
      reject(new Error(`${why} (after ${messages.length} messages)`));
      ws.close();
    };
    ws.onopen = () => ws.send(JSON.stringify({ op: "subscribe", id: 1, topics }));
    ws.onmessage = (e) => {
      if (done) return;
      if (typeof e.data !== "string") return fail(`not a text message: ${e.data}`);
      let m;
      try {
        m = JSON.parse(e.data);
      } catch (err) {
        return fail(`not JSON: ${JSON.stringify(e.data)}: ${err}`);
      }
      messages.push(m);
      if (typeof m.topic === "string") {
        data += 1;
        seen.add(m.topic.split(".")[0]);
      }
      if (data >= want && [...families].every((f) => seen.has(f))) {
        done = true;
        ws.close(1000, "done");
      }
    };
    ws.onclose = (e) => {
      const result = { extensions: ws.extensions, code: e.code, clean: e.wasClean, messages };
      if (done) resolve(result);
      else fail(`closed before done: code ${e.code} reason ${JSON.stringify(e.reason)}`);
    };
  })
