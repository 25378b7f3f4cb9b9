// Node without a global WebSocket: the client takes the `ws` package's constructor
// (`options.WebSocket`). The whole round trip and a reconnect run through it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WS from 'ws';
import { client, connected, subscribed, until, waitFor, started, gateway } from './helpers.js';

test('the ws package as the WebSocket constructor: publish, subscribe, reconnect', async () => {
  let made = 0;
  class Counted extends WS {
    constructor(...args) {
      super(...args);
      made += 1;
    }
  }
  const g = await started();
  const alice = client(g.url, 'alice', 'a1', { WebSocket: Counted });
  const bob = client(g.url, 'bob', 'b1', { WebSocket: Counted });
  const seqs = [];
  const sub = alice.subscribe('dm:alice:bob');
  sub.on('event', (e) => seqs.push(e.seq));
  alice.connect();
  bob.connect();
  await subscribed(sub);
  await connected(bob);
  assert.equal(made, 2);
  assert.equal((await bob.publish('dm:alice:bob', 'm', { n: 1 })).seq, 1);
  await waitFor(() => seqs.length === 1);
  g.proc.kill('SIGKILL');
  await until(alice, 'disconnected');
  const pending = bob.publish('dm:alice:bob', 'm', { n: 2 });
  const proc = await gateway(g.port, g.dir);
  assert.equal((await pending).seq, 2);
  await waitFor(() => seqs.length === 2);
  assert.deepEqual(seqs, [1, 2]);
  assert.ok(made >= 4, `constructed ${made}`);
  alice.close();
  bob.close();
  proc.kill('SIGKILL');
});
