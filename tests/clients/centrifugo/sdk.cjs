// centrifuge-js (npm `centrifuge`, pinned in package.json) with Node `ws`, unmodified, against
// tickcast's Centrifugo endpoint. Driven by tests/centrifugo.rs:
//   node sdk.cjs <ws url> <http base> <admin key> <json: tokens and channels>
// Prints one JSON line with what the SDK's own events reported; exits 1 on a deadline.
const { Centrifuge } = require('centrifuge');
const WebSocket = require('ws');

const [url, http, adminKey, argsJson] = process.argv.slice(2);
const a = JSON.parse(argsJson);
const out = { events: [] };
const pubs = [];
const subscribed = [];
const note = (e) => out.events.push(e);

async function post(path, body) {
  const r = await fetch(http + path, {
    method: 'POST',
    headers: { Authorization: 'Bearer ' + adminKey },
    body: JSON.stringify(body),
  });
  return [r.status, await r.text()];
}

/// Refreshes the server counted (`tickcast_security_events_total{event="refreshed"}`).
async function refreshes() {
  const text = await (await fetch(http + '/metrics')).text();
  return text.split('\n')
    .filter((l) => l.startsWith('tickcast_security_events_total') && l.includes('event="refreshed"'))
    .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
}

function until(what, cond, ms = 20000) {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const poll = () => {
      if (cond()) return resolve();
      if (Date.now() - t0 > ms) return reject(new Error('deadline: ' + what + ' ' + JSON.stringify({ out, pubs, subscribed })));
      setTimeout(poll, 10);
    };
    poll();
  });
}

async function main() {
  // 1. Connect with a JWT; a subscription that recovers.
  let tokenCalls = 0;
  const client = new Centrifuge(url, {
    websocket: WebSocket,
    token: a.token,
    getToken: async () => { tokenCalls += 1; return a.token; },
    name: 'tickcast-test',
  });
  let connected = 0;
  client.on('connected', (c) => { connected += 1; out.client = c.client; });
  client.on('connecting', (c) => note({ connecting: c.code, reason: c.reason }));
  client.on('error', (c) => note({ client_error: c.type, code: c.error && c.error.code }));
  const sub = client.newSubscription(a.channel);
  sub.on('subscribed', (c) => subscribed.push({
    wasRecovering: c.wasRecovering, recovered: c.recovered, recoverable: c.recoverable,
    positioned: c.positioned, offset: c.streamPosition && c.streamPosition.offset,
  }));
  sub.on('publication', (c) => pubs.push({ offset: c.offset, n: c.data.n }));
  sub.on('error', (c) => note({ sub_error: c.type, code: c.error && c.error.code }));
  sub.subscribe();
  client.connect();
  await until('subscribed', () => subscribed.length === 1);

  // 2. Publications in order.
  for (let i = 1; i <= 5; i++) await post('/v1/publish', { topic: a.channel, data: { n: i } });
  await until('5 publications', () => pubs.length >= 5);

  // 3. The server closes the connection mid-stream with a reconnect code; what is published
  //    meanwhile is recovered on resubscribe.
  const [st, body] = await post('/v1/disconnect', { conn: out.client, code: 4100, reason: 'go away' });
  note({ disconnect: st, body });
  await until('reconnecting', () => out.events.some((e) => e.connecting === 4100));
  for (let i = 6; i <= 10; i++) await post('/v1/publish', { topic: a.channel, data: { n: i } });
  await until('resubscribed', () => subscribed.length === 2);
  await until('10 publications', () => pubs.length >= 10);

  // 4. Publish from the SDK.
  await client.publish(a.channel, { n: 11 });
  await until('own publication', () => pubs.length >= 11);

  // 5. History (newest first), from the SDK's own call.
  const hist = await client.history(a.channel, { limit: 3, reverse: true });
  out.history = { offsets: hist.publications.map((p) => p.offset), top: hist.offset,
    epoch: hist.epoch, n: hist.publications.map((p) => p.data.n) };

  // 6. Join and leave pushes of a presence channel (joinLeave): another client of alice's
  //    comes and goes.
  const watch = client.newSubscription(a.presence, { joinLeave: true });
  const joins = [];
  const leaves = [];
  watch.on('join', (c) => joins.push({ user: c.info.user, client: c.info.client }));
  watch.on('leave', (c) => leaves.push({ user: c.info.user, client: c.info.client }));
  let watching = false;
  watch.on('subscribed', () => { watching = true; });
  watch.subscribe();
  await until('watching', () => watching);
  // Presence and presence stats of that channel (its class has presence on): this client.
  const pres = await client.presence(a.presence);
  out.presence = Object.values(pres.clients).map((c) => c.user);
  const stats = await client.presenceStats(a.presence);
  out.presence_stats = { clients: stats.numClients, users: stats.numUsers };
  const other = new Centrifuge(url, { websocket: WebSocket, token: a.token });
  let otherId = null;
  other.on('connected', (c) => { otherId = c.client; });
  const otherSub = other.newSubscription(a.presence);
  otherSub.subscribe();
  other.connect();
  await until('join', () => joins.some((j) => j.client === otherId));
  other.disconnect();
  await until('leave', () => leaves.some((j) => j.client === otherId));
  out.join_leave = { joins: joins.filter((j) => j.client === otherId),
    leaves: leaves.filter((j) => j.client === otherId), other: otherId };

  // 7. A channel it may not read: the SDK's own `unsubscribed` with Centrifugo's code.
  const denied = client.newSubscription(a.forbidden);
  let deniedCtx = null;
  denied.on('unsubscribed', (c) => { deniedCtx = { code: c.code, reason: c.reason }; });
  denied.subscribe();
  await until('denied', () => deniedCtx !== null);

  // 8. What is not offered is an error reply, not silence.
  try { await client.rpc('x', {}); out.rpc = 'ok'; } catch (e) { out.rpc = e.code; }

  client.disconnect();

  // 9. An expired token: error 109, the SDK fetches a fresh one (getToken) and connects; that
  //    token expires in seconds, so the SDK refreshes it on the connection (refresh command).
  let fresh = 0;
  const c2 = new Centrifuge(url, {
    websocket: WebSocket,
    token: a.expired,
    getToken: async () => { fresh += 1; return fresh === 1 ? a.short : a.token; },
    minReconnectDelay: 50,
  });
  let c2connected = 0;
  const c2errors = [];
  c2.on('connected', () => { c2connected += 1; });
  c2.on('error', (c) => c2errors.push(c.error && c.error.code));
  c2.connect();
  await until('refreshed', () => fresh >= 2, 30000);
  // The refresh command reached the server: its count of refreshes (in /metrics, flushed
  // every second) moved.
  let refreshed = 0;
  const poll = setInterval(async () => { refreshed = await refreshes(); }, 100);
  await until('refresh counted', () => refreshed >= 1, 30000);
  clearInterval(poll);
  out.expired = { errors: c2errors, token_calls: fresh, connects: c2connected, state: c2.state };
  c2.disconnect();

  Object.assign(out, { connected, token_calls: tokenCalls, subscribed, pubs, denied: deniedCtx });
  console.log(JSON.stringify(out));
  process.exit(0);
}

main().catch((e) => { console.error(String(e && e.stack || e)); process.exit(1); });
