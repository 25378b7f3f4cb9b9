// syncgate-client under Node against the real syncgate binary (target/debug/syncgate, built by
// `cargo build --workspace`; or $SYNCGATE_BIN). Run: node --experimental-websocket --test test/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SyncgateClient } from '../src/index.js';
import { API_KEY, token, freePort, gateway, started, client, until, connected, subscribed, waitFor, aliceAndBob } from './helpers.js';

test('publish, subscribe, acks and presence', async () => {
  const g = await started();
  const { alice, bob, sub, got } = await aliceAndBob(g.url, g.url, 'room:1', (e) => e.data.n);
  for (let n = 1; n <= 5; n++) {
    const ack = await bob.publish('room:1', 'count', { n });
    assert.equal(ack.type, 'ack');
  }
  await waitFor(() => got.length === 5);
  assert.deepEqual(got, [1, 2, 3, 4, 5]);
  const members = await sub.presence();
  assert.deepEqual(members, [{ user_id: 'alice', device_id: 'a1' }]);
  alice.close();
  bob.close();
  g.proc.kill('SIGKILL');
});

test('durable events survive a SIGKILL of the gateway: exactly once, in order', async () => {
  const g = await started();
  const { alice, bob, sub, got: seqs } = await aliceAndBob(g.url, g.url, 'dm:alice:bob', (e) => e.seq);
  for (let i = 1; i <= 10; i++) assert.equal((await bob.publish('dm:alice:bob', 'm', { i })).seq, i);
  await waitFor(() => seqs.length === 10);
  // Killed: both reconnect to the restarted gateway on the same port and data.
  g.proc.kill('SIGKILL');
  await until(alice, 'disconnected');
  const proc = await gateway(g.port, g.dir);
  // Published while reconnecting: queued, then sent.
  const acks = [];
  for (let i = 11; i <= 20; i++) acks.push(bob.publish('dm:alice:bob', 'm', { i }));
  assert.deepEqual((await Promise.all(acks)).map((a) => a.seq), [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
  await waitFor(() => seqs.length >= 20).catch((e) => { throw new Error(`${e.message}: alice got ${seqs}`); });
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(seqs, Array.from({ length: 20 }, (_, k) => k + 1));
  alice.close();
  bob.close();
  proc.kill('SIGKILL');
});

test('a msg_id sent twice has its effect once', async () => {
  const g = await started();
  const bob = client(g.url, 'bob', 'b1');
  bob.connect();
  await connected(bob);
  const first = await bob.publish('dm:alice:bob', 'm', { x: 1 }, { msgId: 'same-1' });
  const again = await bob.publish('dm:alice:bob', 'm', { x: 1 }, { msgId: 'same-1' });
  assert.equal(first.duplicate, false);
  assert.equal(again.duplicate, true);
  assert.equal(again.seq, first.seq);
  bob.close();
  g.proc.kill('SIGKILL');
});

test('a refused token is fetched again (4001), and refreshed ahead of exp', async () => {
  const g = await started();
  let calls = 0;
  // The first token is garbage: 4001, then a fresh one.
  const c = new SyncgateClient(g.url, {
    getToken: async () => (++calls === 1 ? 'not-a-token' : token('carol', 3)),
    deviceId: 'c1', minReconnectMs: 50, maxReconnectMs: 200,
  });
  const codes = [];
  c.on('disconnected', (d) => codes.push(d.code));
  let connects = 0;
  c.on('connected', () => { connects += 1; });
  c.connect();
  await connected(c);
  assert.deepEqual(codes, [4001]);
  // exp in 3 s: refreshed on the live connection (auth frame) before it expires.
  const before = calls;
  await waitFor(() => calls > before, 5000);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(connects, 1, 'refreshed without reconnecting');
  assert.equal(c.state, 'connected');
  c.close();
  g.proc.kill('SIGKILL');
});

test('4003 stops reconnecting', async () => {
  const g = await started();
  const c = client(g.url, 'dave', 'd1');
  c.connect();
  await connected(c);
  const res = await fetch(`http://127.0.0.1:${g.port}/api/disconnect`, {
    method: 'POST', headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ user_id: 'dave' }),
  });
  assert.equal(res.status, 200);
  const d = await until(c, 'disconnected');
  assert.deepEqual([d.code, d.willReconnect], [4003, false]);
  assert.equal(c.state, 'closed');
  await assert.rejects(c.publish('room:1', 'e', {}), /closed|queue/);
  g.proc.kill('SIGKILL');
});

test('backoff stays between minReconnectMs and a doubling cap', async () => {
  const port = await freePort(); // nothing listens there
  const c = new SyncgateClient(`ws://127.0.0.1:${port}/ws`, {
    getToken: async () => token('erin'), deviceId: 'e1', minReconnectMs: 100, maxReconnectMs: 400,
  });
  const at = [];
  c.on('state', (s) => { if (s === 'connecting') at.push(Date.now()); });
  c.connect();
  await waitFor(() => at.length >= 7, 10000);
  c.close();
  const gaps = at.slice(1).map((t, i) => t - at[i]);
  for (const g of gaps) assert.ok(g >= 90 && g <= 400 + 250, `gap ${g} ms out of bounds: ${gaps}`);
});
