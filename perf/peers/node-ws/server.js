// A Node.js `ws` fan-out server speaking the tickcast protocol v1 subset, written the way a Node
// team would: one process, a Map of topic -> Set of sockets, the data frame serialized once per
// publish (JSON.stringify) and sent to each subscriber with ws.send().
//
// Usage: node server.js --listen 127.0.0.1:9200 [--deflate]   (prints "listening on ADDR")
//
// --deflate: permessage-deflate as a Node team would turn it on (`perMessageDeflate`), a
// per-socket compression baseline for tickcast's compress-once: ws compresses each socket's copy
// of each message with that socket's own zlib stream, keeping its context (ws's default,
// serverNoContextTakeover false), through the libuv thread pool. Set here, and why:
//   threshold: 128 (ws's default 1024 would leave every market-data frame here, ~160-200 B,
//     uncompressed; 128 is tickcast's deflate.min_bytes),
//   zlibDeflateOptions.level: 6 (zlib's default, and tickcast's),
//   concurrencyLimit: 10 (ws's default: at most 10 zlib jobs in flight per process, the rest
//     queue; ws added it against zlib's memory fragmentation with many sockets).
'use strict';
const { WebSocketServer } = require('ws');

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}
const listen = arg('--listen', '127.0.0.1:9200');
const deflate = process.argv.includes('--deflate');
const sep = listen.lastIndexOf(':');
const host = listen.slice(0, sep);
const port = Number(listen.slice(sep + 1));

const PING_INTERVAL_MS = 20000;
const TOPIC_RE = /^[A-Za-z0-9_:@-]+(\.[A-Za-z0-9_:@-]+)*$/;
const topics = new Map(); // topic -> { seq, subs: Set<WebSocket> }
let nextConn = 0;

const nowUs = () => Math.floor((performance.timeOrigin + performance.now()) * 1000);
const topicEntry = (t) => {
  let e = topics.get(t);
  if (!e) topics.set(t, (e = { seq: 0, subs: new Set() }));
  return e;
};

const perMessageDeflate = deflate
  ? { threshold: 128, concurrencyLimit: 10, zlibDeflateOptions: { level: 6 } }
  : false;
const wss = new WebSocketServer({ host, port, path: '/ws', backlog: 4096, perMessageDeflate });
wss.on('listening', () => {
  const a = wss.address();
  console.log(`listening on ${a.address}:${a.port}`);
});

wss.on('connection', (ws) => {
  const mine = new Set();
  ws.isAlive = true;
  ws.on('pong', () => { ws.isAlive = true; });
  ws.send(JSON.stringify({ op: 'welcome', conn: String(nextConn++), shard: 0,
    version: 'node-ws-0.1', ping_interval_s: PING_INTERVAL_MS / 1000 }));
  ws.on('message', (raw, isBinary) => {
    if (isBinary) return;
    let m;
    try { m = JSON.parse(raw); } catch (e) {
      ws.send(JSON.stringify({ op: 'error', code: 'bad_request', message: String(e.message) }));
      return;
    }
    const id = m.id;
    switch (m.op) {
      case 'subscribe':
      case 'unsubscribe': {
        const list = Array.isArray(m.topics) ? m.topics : [];
        const bad = list.find((t) => typeof t !== 'string' || !TOPIC_RE.test(t));
        if (bad !== undefined) {
          ws.send(JSON.stringify({ op: 'error', id, code: 'unsupported', message: `not an exact topic: ${bad}` }));
          return;
        }
        for (const t of list) {
          if (m.op === 'subscribe') { topicEntry(t).subs.add(ws); mine.add(t); }
          else { const e = topics.get(t); if (e) e.subs.delete(ws); mine.delete(t); }
        }
        if (id !== undefined) ws.send(JSON.stringify({ op: 'ack', id, topics: list }));
        return;
      }
      case 'publish': {
        if (typeof m.topic !== 'string' || !TOPIC_RE.test(m.topic)) {
          ws.send(JSON.stringify({ op: 'error', id, code: 'bad_topic', message: 'invalid topic' }));
          return;
        }
        const e = topicEntry(m.topic);
        e.seq += 1;
        const frame = JSON.stringify({ topic: m.topic, seq: e.seq, ts: nowUs(), data: m.data });
        for (const s of e.subs) s.send(frame);
        if (id !== undefined) ws.send(JSON.stringify({ op: 'ack', id, seq: e.seq }));
        return;
      }
      case 'ping':
        ws.send(JSON.stringify({ op: 'pong', id, ts: nowUs() }));
        return;
      default:
        ws.send(JSON.stringify({ op: 'error', id, code: 'bad_op', message: 'unknown op' }));
    }
  });
  ws.on('close', () => {
    for (const t of mine) { const e = topics.get(t); if (e) e.subs.delete(ws); }
  });
});

// Ping every 20 s; drop connections that did not answer the previous ping.
setInterval(() => {
  for (const ws of wss.clients) {
    if (!ws.isAlive) { ws.terminate(); continue; }
    ws.isAlive = false;
    ws.ping();
  }
}, PING_INTERVAL_MS).unref();

const stop = () => { wss.close(); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
