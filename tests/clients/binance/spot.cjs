// @binance/spot (npm, pinned in package.json/package-lock.json), unmodified, against tickcast's
// Binance market streams. Driven by tests/binance.rs, against a server running the demo feed in
// Binance's shapes (`demo.format = "binance"`):
//   node spot.cjs ws://127.0.0.1:PORT/binance
// The SDK opens `<url>/stream?streams=btcusdt@trade` (the stream given to connect()); its typed
// trade() helper then sends a SUBSCRIBE for that same stream again (streams of the URL are not
// in its map), and bookTicker() one more. Waits for both in their callbacks, asks
// LIST_SUBSCRIPTIONS and GET_PROPERTY on the SDK's socket (it has no helper for them: replies
// only show on its raw 'message' event), unsubscribes both (one UNSUBSCRIBE per stream), lists
// again, then subscribes ethusdt@trade and waits for it: a BTCUSDT frame after the second list
// reply would have been sent after the unsubscribe. Then it waits for 5 server pings (the SDK
// pongs by itself) and lists once more: the connection outlived the server's pong timeout.
// Prints one JSON line; exits 1 (reason on stderr) on a deadline.
// The SDK logs at info level with console.info (stdout) unless LOG_LEVEL says otherwise: keep
// stdout for the one JSON line (warnings and errors go to stderr).
process.env.LOG_LEVEL = 'warn';
const { Spot } = require('@binance/spot');

const url = process.argv[2];
// Every wait below is bounded by this (a failure bound; a passing run takes ~1 s).
const DEADLINE_MS = 20000;

const out = {
  trades: 0,
  book_tickers: 0,
  eth_trades: 0,
  // Request ids the SDK generated (SUBSCRIBE/UNSUBSCRIBE) and the replies that echoed them.
  sdk_ids: 0,
  sdk_replies: 0,
  errors: [],
  btc_after_unsubscribe: 0,
  // Server pings (the SDK pongs by itself, twice: its own pong and ws's automatic one).
  pings: 0,
  duplicate_trade_ids: 0,
};
const trades = [];
const books = [];
const eth = [];
const replies = new Map();
let unsubscribed = false;

function fail(why) {
  console.error(`spot.cjs: ${why}: ${JSON.stringify(out)}`);
  process.exit(1);
}
setTimeout(() => fail('overall deadline'), 3 * DEADLINE_MS).unref();

function until(what, cond) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const poll = () => {
      if (cond()) return resolve();
      if (Date.now() - t0 > DEADLINE_MS) return fail('deadline: ' + what);
      setTimeout(poll, 10);
    };
    poll();
  });
}

async function main() {
  const client = new Spot({ configurationWebsocketStreams: { wsURL: url } });
  const connection = await client.websocketStreams.connect({ stream: ['btcusdt@trade'] });
  const base = connection.websocketBase;
  // What the handshake negotiated (the SDK offers permessage-deflate).
  out.extensions = base.connectionPool[0].ws.extensions;
  connection.on('error', (e) => out.errors.push(String(e)));
  connection.on('ping', () => { out.pings += 1; });
  // The SDK's outgoing requests, to check their ids came back.
  const send = base.send.bind(base);
  const sent = [];
  base.send = (payload, ...rest) => {
    sent.push(JSON.parse(payload));
    return send(payload, ...rest);
  };
  // Raw frames, in order, after the stream callbacks of the same frame have run.
  connection.on('message', (raw) => {
    const msg = JSON.parse(raw);
    if ('result' in msg || 'error' in msg) {
      replies.set(JSON.stringify(msg.id), msg);
      if (msg.id === 9) unsubscribed = true;
    } else if (unsubscribed && msg.stream && msg.stream.startsWith('btcusdt@')) {
      out.btc_after_unsubscribe += 1;
    }
  });

  const trade = connection.trade({ symbol: 'BTCUSDT' });
  trade.on('message', (d) => trades.push(d));
  const book = connection.bookTicker({ symbol: 'BTCUSDT' });
  book.on('message', (d) => books.push(d));
  await until('5 trades and 3 book tickers', () => trades.length >= 5 && books.length >= 3);

  send(JSON.stringify({ method: 'LIST_SUBSCRIPTIONS', id: 7 }), undefined, false);
  send(JSON.stringify({ method: 'GET_PROPERTY', params: ['combined'], id: 8 }), undefined, false);
  await until('replies 7 and 8', () => replies.has('7') && replies.has('8'));
  out.list = replies.get('7').result;
  out.combined = replies.get('8').result;

  trade.unsubscribe();
  book.unsubscribe();
  out.trades = trades.length;
  out.book_tickers = books.length;
  send(JSON.stringify({ method: 'LIST_SUBSCRIPTIONS', id: 9 }), undefined, false);
  await until('reply 9', () => replies.has('9'));
  out.list_after_unsubscribe = replies.get('9').result;

  const ethTrade = connection.trade({ symbol: 'ETHUSDT' });
  ethTrade.on('message', (d) => eth.push(d));
  await until('5 ETHUSDT trades', () => eth.length >= 5);
  out.eth_trades = eth.length;
  out.eth_symbols = [...new Set(eth.map((d) => d.s))];
  // Keep-alive: the test server pings every second and drops a connection silent for 3 s
  // after a ping; the SDK's pongs keep this one open past that.
  await until('5 server pings', () => out.pings >= 5);
  send(JSON.stringify({ method: 'LIST_SUBSCRIPTIONS', id: 10 }), undefined, false);
  await until('reply 10', () => replies.has('10'));
  out.list_final = replies.get('10').result;

  const ids = sent.filter((m) => m.method === 'SUBSCRIBE' || m.method === 'UNSUBSCRIBE');
  await until('replies to the SDK requests', () => ids.every((m) => replies.has(JSON.stringify(m.id))));
  out.sdk_requests = ids.map((m) => [m.method, m.params]);
  out.sdk_ids = ids.filter((m) => /^[0-9a-f]{32}$/.test(m.id)).length;
  out.sdk_replies = ids.filter((m) => replies.get(JSON.stringify(m.id)).result === null).length;

  const t = trades[0];
  out.trade = {
    e: t.e, s: t.s, p: t.p, q: t.q,
    p_type: typeof t.p, t_type: typeof t.t, T_type: typeof t.T, m_type: typeof t.m,
  };
  const tids = trades.map((x) => x.t);
  out.duplicate_trade_ids = tids.length - new Set(tids).size;
  out.trade_ids_increasing = tids.every((v, i) => i === 0 || tids[i - 1] < v);
  const b = books[0];
  out.book_ticker = { s: b.s, b: b.b, a: b.a, b_type: typeof b.b, u_type: typeof b.u };
  await connection.disconnect();
  console.log(JSON.stringify(out));
  process.exit(0);
}

main().catch((e) => fail(e && e.stack ? e.stack : String(e)));
