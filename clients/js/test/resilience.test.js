// syncgate-client when things go wrong, against the real gateway binary: acks lost in flight,
// silent (black-holed) connections, graceful restarts, missed history, refusals by close code,
// and the bounded queue. A TCP relay (helpers.js) plays the network.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SyncgateClient, QueueFullError, PublishError } from '../src/index.js';
import { token, tempDir, freePort, gateway, started, relay, client, until, connected, subscribed, sleep, waitFor, aliceAndBob } from './helpers.js';

test('a durable publish whose ack was lost is sent again with its msg_id: stored and delivered once', async () => {
  const g = await started();
  const net = await relay(g.port);
  const { alice, bob, sub, got } = await aliceAndBob(g.url, net.url, 'dm:alice:bob', (e) => e);
  assert.equal((await bob.publish('dm:alice:bob', 'm', { n: 1 })).seq, 1);
  await waitFor(() => got.length === 1);

  // The server stores the next publish, but its ack never reaches bob; then the connection drops.
  net.blockDown();
  const sent = [];
  const orig = bob._ws.send.bind(bob._ws);
  bob._ws.send = (t) => { sent.push(JSON.parse(t)); orig(t); };
  const inFlight = bob.publish('dm:alice:bob', 'm', { n: 2 });
  await waitFor(() => got.length === 2, 5000, 'alice receives the event');
  net.cut();
  const d = await until(bob, 'disconnected');
  assert.equal(d.willReconnect, true);

  // After the reconnect the same frame (same msg_id) goes again: the server answers duplicate.
  const ack = await inFlight;
  assert.equal(ack.seq, 2);
  assert.equal(ack.duplicate, true);
  assert.equal(ack.msg_id, sent[0].msg_id);
  await sleep(300);
  assert.deepEqual(got.map((e) => [e.seq, e.data.n]), [[1, 1], [2, 2]], 'delivered exactly once');
  // And the stream goes on after it.
  assert.equal((await bob.publish('dm:alice:bob', 'm', { n: 3 })).seq, 3);
  alice.close();
  bob.close();
});

test('a publish in flight on a channel that does not de-duplicate rejects, retriable, and is not resent', async () => {
  const g = await started();
  const net = await relay(g.port);
  const { alice, bob, sub, got } = await aliceAndBob(g.url, net.url, 'room:1', (e) => e.data.n);
  net.blockDown();
  const inFlight = bob.publish('room:1', 'm', { n: 1 });
  await waitFor(() => got.length === 1);
  net.cut();
  await assert.rejects(inFlight, (e) => e instanceof PublishError && e.retriable === true && e.code === 'disconnected');
  await until(bob, 'connected');
  await bob.publish('room:1', 'm', { n: 2 });
  await waitFor(() => got.length === 2);
  await sleep(300);
  assert.deepEqual(got, [1, 2]);
  alice.close();
  bob.close();
});

test('a silent connection is noticed after two heartbeats and replaced; a quiet live one is kept by pings', async () => {
  const g = await started({ SYNCGATE_HEARTBEAT_MS: '400' });
  const net = await relay(g.port);
  const c = client(net.url, 'frank', 'f1');
  const drops = [];
  c.on('disconnected', (d) => drops.push(d));
  const sent = [];
  c.on('connected', () => {
    const ws = c._ws;
    const orig = ws.send.bind(ws);
    ws.send = (t) => { sent.push(JSON.parse(t).type); orig(t); };
  });
  c.connect();
  await connected(c);
  assert.equal(c.welcome.heartbeat_ms, 400);
  // Quiet but alive for 2.5 s (six heartbeats): still the same connection, kept up by pings.
  await sleep(2500);
  assert.deepEqual(drops, []);
  assert.ok(sent.filter((t) => t === 'ping').length >= 2, `pings sent: ${sent}`);
  // The network swallows everything, the socket stays open: noticed within about 2 heartbeats.
  const before = Date.now();
  net.blackhole();
  const d = await until(c, 'disconnected', () => true, 5000);
  const took = Date.now() - before;
  assert.deepEqual([d.code, d.reason, d.willReconnect], [1006, 'no heartbeat', true]);
  assert.ok(took < 2000, `noticed after ${took} ms`);
  // A new connection through the same relay works.
  await until(c, 'connected');
  c.close();
});

test('durable subscriptions recover across a graceful restart (1001): exactly once, in order', async () => {
  const g = await started();
  const alice = client(g.url, 'alice', 'a1');
  const bob = client(g.url, 'bob', 'b1');
  const seqs = [];
  const recovered = [];
  const sub = alice.subscribe('dm:alice:bob');
  sub.on('event', (e) => seqs.push(e.seq));
  sub.on('recovered', (r) => recovered.push(r.recovered));
  alice.connect();
  bob.connect();
  await subscribed(sub);
  await connected(bob);
  for (let i = 1; i <= 5; i++) await bob.publish('dm:alice:bob', 'm', { i });
  await waitFor(() => seqs.length === 5);
  const closes = Promise.all([until(alice, 'disconnected'), until(bob, 'disconnected')]);
  g.proc.kill('SIGTERM');
  assert.deepEqual((await closes).map((d) => [d.code, d.willReconnect]), [[1001, true], [1001, true]]);
  assert.equal((await g.proc.exited).code, 0);
  // Published while the gateway is down: queued by bob's client.
  const acks = [];
  for (let i = 6; i <= 10; i++) acks.push(bob.publish('dm:alice:bob', 'm', { i }));
  const proc = await gateway(g.port, g.dir);
  assert.deepEqual((await Promise.all(acks)).map((a) => a.seq), [6, 7, 8, 9, 10]);
  await waitFor(() => seqs.length >= 10);
  await sleep(300);
  assert.deepEqual(seqs, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.deepEqual(recovered, [true], 'the resubscribe after the restart asked since 5 and recovered');
  alice.close();
  bob.close();
  proc.kill('SIGKILL');
});

test('more missed than the server replays: recovered:false is reported and nothing is skipped silently', async () => {
  const g = await started({ SYNCGATE_REPLAY_MAX: '3' });
  const net = await relay(g.port);
  const alice = client(net.url, 'alice', 'a1');
  const bob = client(g.url, 'bob', 'b1');
  const seqs = [];
  const recovered = [];
  const sub = alice.subscribe('dm:alice:bob');
  sub.on('event', (e) => seqs.push(e.seq));
  sub.on('recovered', (r) => recovered.push(r));
  alice.connect();
  bob.connect();
  await subscribed(sub);
  await connected(bob);
  await bob.publish('dm:alice:bob', 'm', {});
  await waitFor(() => seqs.length === 1);
  // Alice stops hearing the server, misses 5 events, then reconnects with since=1.
  net.blockDown();
  for (let i = 0; i < 5; i++) await bob.publish('dm:alice:bob', 'm', {});
  net.cut();
  const r = await until(sub, 'recovered');
  assert.deepEqual(r, { recovered: false, seq: 6 });
  assert.deepEqual(seqs, [1], 'nothing replayed: the application reloads history itself');
  assert.equal(sub.lastSeq, 1, 'the position stays at what the application received');
  // Live traffic goes on.
  await bob.publish('dm:alice:bob', 'm', {});
  await waitFor(() => seqs.length === 2);
  assert.deepEqual(seqs, [1, 7]);
  // A subscription asked with `since` within the replay window recovers it.
  const carol = client(g.url, 'alice', 'a2');
  const again = carol.subscribe('dm:alice:bob', { since: 4 });
  const replayed = [];
  again.on('event', (e) => replayed.push(e.seq));
  const rec = until(again, 'recovered');
  carol.connect();
  assert.deepEqual(await rec, { recovered: true, seq: 7 });
  await waitFor(() => replayed.length === 3);
  assert.deepEqual(replayed, [5, 6, 7]);
  for (const c of [alice, bob, carol]) c.close();
});

test('join, leave and typing reach the subscription; presence lists the members', async () => {
  const g = await started();
  const alice = client(g.url, 'alice', 'a1');
  const bob = client(g.url, 'bob', 'b1');
  const seen = [];
  const sub = alice.subscribe('room:2');
  for (const name of ['join', 'leave', 'typing']) sub.on(name, (f) => seen.push([f.type, f.user_id, f.state ?? null]));
  alice.connect();
  await subscribed(sub);
  const bsub = bob.subscribe('room:2');
  bob.connect();
  await subscribed(bsub);
  await waitFor(() => seen.length === 1);
  const members = (await sub.presence()).map((m) => m.user_id).sort();
  assert.deepEqual(members, ['alice', 'bob']);
  bsub.typing(true);
  bsub.typing(false);
  await waitFor(() => seen.length === 3);
  bsub.unsubscribe();
  await waitFor(() => seen.length === 4);
  assert.deepEqual(seen, [['join', 'bob', null], ['typing', 'bob', 'start'], ['typing', 'bob', 'stop'], ['leave', 'bob', null]]);
  alice.close();
  bob.close();
});

test('acks move the read position, coalesced, also when made while disconnected', async () => {
  const g = await started();
  const alice = client(g.url, 'alice', 'a1');
  const bob = client(g.url, 'bob', 'b1');
  bob.connect();
  await connected(bob);
  for (let i = 0; i < 5; i++) await bob.publish('dm:alice:bob', 'm', {});
  const sub = alice.subscribe('dm:alice:bob');
  alice.connect();
  await subscribed(sub);
  const sent = [];
  const ws = alice._ws;
  const orig = ws.send.bind(ws);
  ws.send = (t) => { sent.push(JSON.parse(t)); orig(t); };
  for (let s = 1; s <= 4; s++) alice.ack('dm:alice:bob', s);
  await waitFor(() => sent.length >= 1);
  await sleep(300);
  assert.deepEqual(sent, [{ type: 'ack', channel: 'dm:alice:bob', seq: 4 }], 'four acks, one frame');
  const readSeq = async (device) => {
    const c = client(g.url, 'alice', device);
    const s = c.subscribe('dm:alice:bob');
    const r = until(s, 'subscribed');
    c.connect();
    const reply = await r;
    c.close();
    return reply.read_seq;
  };
  assert.equal(await readSeq('a1'), 4);
  // Acked while the gateway is down: sent after the reconnect.
  g.proc.kill('SIGKILL');
  await until(alice, 'disconnected');
  alice.ack('dm:alice:bob', 5);
  const proc = await gateway(g.port, g.dir);
  await until(alice, 'connected');
  await sleep(300);
  assert.equal(await readSeq('a1'), 5);
  alice.close();
  bob.close();
  proc.kill('SIGKILL');
});

test('1008 (far over the message rate) emits error and reconnects', async () => {
  const g = await started({ SYNCGATE_MESSAGES_PER_MIN: '5' });
  const c = client(g.url, 'gina', 'g1');
  const errors = [];
  c.on('error', (e) => errors.push(e));
  c.connect();
  await connected(c);
  const closed = until(c, 'disconnected');
  const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => c.publish('room:3', 'm', { i })));
  const d = await closed;
  assert.deepEqual([d.code, d.willReconnect], [1008, true]);
  assert.ok(errors.some((e) => /1008/.test(e.message)), `errors: ${errors}`);
  assert.ok(results.some((r) => r.status === 'rejected' && r.reason.code === 'rate_limited' && r.reason.retriable));
  await until(c, 'connected');
  c.close();
});

test('1009: a publish over max_message_bytes rejects locally; a 1009 close emits error and reconnects', async () => {
  const g = await started({ SYNCGATE_MAX_MESSAGE_BYTES: '2048' });
  const c = client(g.url, 'hank', 'h1');
  const errors = [];
  c.on('error', (e) => errors.push(e));
  const drops = [];
  c.on('disconnected', (d) => drops.push(d));
  c.connect();
  await connected(c);
  assert.equal(c.welcome.max_message_bytes, 2048);
  // Sent, it would close the connection, and on a durable channel be retried forever.
  await assert.rejects(c.publish('dm:hank:ivy', 'm', { text: 'x'.repeat(4000) }), (e) => e.code === 'too_large' && e.retriable === false);
  await assert.rejects(c.publish('room:4', 'm', { text: 'é'.repeat(1100) }), (e) => e.code === 'too_large');
  assert.deepEqual(drops, []);
  assert.equal((await c.publish('room:4', 'm', { text: 'small' })).type, 'ack');
  // A frame the client would never build (written straight to the socket): the server closes 1009.
  c._ws.send('x'.repeat(3000));
  const d = await until(c, 'disconnected');
  assert.deepEqual([d.code, d.willReconnect], [1009, true]);
  assert.ok(errors.some((e) => /1009/.test(e.message)));
  await until(c, 'connected');
  c.close();
});

test('4009 (over the per-user connection cap) stops reconnecting', async () => {
  const g = await started({ SYNCGATE_MAX_CONNECTIONS_PER_USER: '1' });
  const first = client(g.url, 'ivy', 'i1');
  first.connect();
  await connected(first);
  const second = client(g.url, 'ivy', 'i2');
  const states = [];
  second.on('state', (s) => states.push(s));
  second.connect();
  const d = await until(second, 'disconnected');
  assert.deepEqual([d.code, d.willReconnect], [4009, false]);
  await sleep(500);
  assert.deepEqual(states, ['connecting', 'closed'], 'no second attempt');
  assert.equal(first.state, 'connected');
  first.close();
});

test('publishes wait while disconnected, at most maxQueued; then QueueFullError', async () => {
  const port = await freePort();
  const c = client(`ws://127.0.0.1:${port}/ws`, 'jack', 'j1', { maxQueued: 3 });
  c.connect();
  const queued = [1, 2, 3].map((n) => c.publish('dm:jack:kim', 'm', { n }));
  await assert.rejects(c.publish('dm:jack:kim', 'm', { n: 4 }), QueueFullError);
  // The gateway comes up on that port: the queued ones go, in order.
  const proc = await gateway(port, tempDir());
  assert.deepEqual((await Promise.all(queued)).map((a) => a.seq), [1, 2, 3]);
  c.close();
  proc.kill('SIGKILL');
});

test('the backoff cap is reset once a connection stayed up for 10 s', async () => {
  const port = await freePort();
  const c = new SyncgateClient(`ws://127.0.0.1:${port}/ws`, {
    getToken: async () => token('lena'), deviceId: 'l1', minReconnectMs: 100, maxReconnectMs: 3000,
  });
  const attempts = [];
  c.on('state', (s) => { if (s === 'connecting') attempts.push(Date.now()); });
  c.connect();
  // Failing attempts: the cap climbs to 3 s.
  await waitFor(() => attempts.length >= 6, 15000);
  const g = await gateway(port, tempDir());
  await until(c, 'connected', () => true, 5000);
  await sleep(10500);
  g.kill('SIGKILL');
  await until(c, 'disconnected');
  const down = Date.now();
  attempts.length = 0;
  await waitFor(() => attempts.length >= 1, 5000);
  const gap = attempts[0] - down;
  assert.ok(gap < 250, `first reconnect after ${gap} ms: the cap was reset to minReconnectMs`);
  c.close();
});
