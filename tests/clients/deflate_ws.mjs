// A real client library with compression on: Node `ws` with perMessageDeflate (off by default
// in `ws`, so it is asked for here, as an application would). Run by tests/clients.rs with the
// suite's pinned `ws` (target/node, installed by tests/run.sh; NODE_PATH points there).
//
// Usage: node deflate_ws.mjs WS_URL HTTP_BASE ADMIN_KEY
// Prints one JSON line: what the client saw. Exits non-zero on any failure.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const WebSocket = require("ws");
const [url, http, key] = process.argv.slice(2);

const fail = (e) => {
  console.error(e);
  process.exit(1);
};
setTimeout(() => fail("timed out"), 60000).unref();

const ws = new WebSocket(url, { perMessageDeflate: { threshold: 0 } });
const data = { levels: Array.from({ length: 40 }, (_, i) => ({ px: `${100 + i}.25`, qty: "1.000" })) };
const seen = {};
let published;
ws.on("error", fail);
ws.on("message", async (raw) => {
  const m = JSON.parse(raw.toString());
  if (m.op === "welcome") {
    seen.extensions = ws.extensions;
    const topics = Array.from({ length: 60 }, (_, i) => `md.${i}`);
    ws.send(JSON.stringify({ op: "subscribe", id: 1, topics }));
  } else if (m.op === "ack") {
    seen.ack_topics = m.topics.length;
    // The frame may arrive before the HTTP answer: the handler below awaits this.
    published = fetch(`${http}/v1/publish`, {
      method: "POST",
      headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
      body: JSON.stringify({ topic: "md.7", data }),
    })
      .then((res) => res.json())
      .catch(fail);
  } else if (m.topic === "md.7") {
    const ack = await published;
    seen.frame_ok = JSON.stringify(m.data) === JSON.stringify(data) && m.seq === ack.seq;
    console.log(JSON.stringify(seen));
    ws.close(1000);
  }
});
