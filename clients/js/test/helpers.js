// Shared by the client tests: the real gateway binary (target/debug/syncgate, built by
// `cargo build --workspace`; or $SYNCGATE_BIN), tokens, a TCP relay that can black-hole or cut
// connections, and small waiting helpers.
import { after } from 'node:test';
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer, connect } from 'node:net';
import { SyncgateClient } from '../src/index.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '../../..');
const BIN = process.env.SYNCGATE_BIN ?? join(root, 'target/debug/syncgate');
export const SECRET = 'js-client-test-secret-0123456789abcdef';
export const API_KEY = 'js-client-test-api-key-0123456789';
const procs = new Set();
const relays = new Set();
after(() => {
  for (const p of procs) p.kill('SIGKILL');
  for (const r of relays) r.close();
});

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
export function token(sub, ttlSecs = 3600) {
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + ttlSecs })}`;
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

export async function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

/** The gateway on `port` with its data in `dir` (plus `env`); resolves once it listens. */
export function gateway(port, dir, env = {}) {
  const child = spawn(BIN, [], {
    env: {
      SYNCGATE_LISTEN: `127.0.0.1:${port}`, SYNCGATE_DATA_DIR: dir, SYNCGATE_JWT_SECRET: SECRET,
      SYNCGATE_API_KEY: API_KEY, SYNCGATE_PUBLIC_NAMESPACES: 'room', SYNCGATE_LOG_FORMAT: 'json', ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  procs.add(child);
  child.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  child.on('exit', () => procs.delete(child));
  return new Promise((resolve, reject) => {
    let buf = '';
    child.stderr.on('data', (d) => {
      buf += d;
      if (buf.includes('"addr"')) resolve(child);
    });
    child.on('exit', (code) => reject(new Error(`gateway exited ${code}: ${buf}`)));
  });
}

export const tempDir = () => mkdtempSync(join(tmpdir(), 'syncgate-js-'));

export async function started(env = {}) {
  const port = await freePort();
  const dir = tempDir();
  const proc = await gateway(port, dir, env);
  return { port, dir, proc, env, url: `ws://127.0.0.1:${port}/ws` };
}

/**
 * A TCP relay to 127.0.0.1:`target`. `blackhole()` makes every current connection silent in
 * both directions without closing it (a dead peer, a stuck NAT: the client sees nothing at all);
 * `blockDown()` drops what the server sends on current connections (an ack lost in flight);
 * `cut()` resets every current connection. New connections are relayed normally.
 */
export async function relay(target) {
  const pairs = new Set();
  const server = createServer((c) => {
    const u = connect(target, '127.0.0.1');
    const pair = { c, u, up: true, down: true };
    pairs.add(pair);
    c.on('data', (d) => { if (pair.up) u.write(d); });
    u.on('data', (d) => { if (pair.down) c.write(d); });
    const drop = () => { pairs.delete(pair); c.destroy(); u.destroy(); };
    c.on('close', drop);
    c.on('error', drop);
    // A black-holed connection stays open towards the client whatever the server does.
    u.on('close', () => { if (pair.down) drop(); });
    u.on('error', () => { if (pair.down) drop(); });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const r = {
    port: server.address().port,
    url: `ws://127.0.0.1:${server.address().port}/ws`,
    blackhole() { for (const p of pairs) { p.up = false; p.down = false; } },
    blockDown() { for (const p of pairs) p.down = false; },
    cut() { for (const p of pairs) { p.c.resetAndDestroy(); p.u.destroy(); } },
    close() { r.cut(); server.close(); relays.delete(r); },
  };
  relays.add(r);
  return r;
}

export function client(url, user, deviceId, extra = {}) {
  return new SyncgateClient(url, { getToken: async () => token(user), deviceId, minReconnectMs: 50, maxReconnectMs: 400, ...extra });
}

export const until = (emitter, name, pred = () => true, ms = 10000) => new Promise((resolve, reject) => {
  const t = setTimeout(() => reject(new Error(`no ${name} in ${ms} ms`)), ms);
  const fn = (v) => { if (pred(v)) { clearTimeout(t); emitter.off(name, fn); resolve(v); } };
  emitter.on(name, fn);
});

/** Resolves when `c` is connected (at once if it already is). */
export const connected = (c) => (c.state === 'connected' ? Promise.resolve() : until(c, 'connected'));
/** Resolves when `sub` has its `subscribed` reply (at once if it had it). */
export const subscribed = (sub) => (sub.ready ? Promise.resolve() : until(sub, 'subscribed'));

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export const waitFor = async (pred, ms = 10000, what = 'condition') => {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`${what} not met in ${ms} ms`);
    await sleep(20);
  }
};

/**
 * Alice (device a1, on `aliceUrl`) subscribed to `channel`, every event's `pick(e)` pushed to
 * `got`, and Bob (device b1, on `bobUrl`) connected: the two ends most tests start from.
 */
export async function aliceAndBob(aliceUrl, bobUrl, channel, pick = (e) => e) {
  const alice = client(aliceUrl, 'alice', 'a1');
  const bob = client(bobUrl, 'bob', 'b1');
  const got = [];
  const sub = alice.subscribe(channel);
  sub.on('event', (e) => got.push(pick(e)));
  alice.connect();
  bob.connect();
  await subscribed(sub);
  await connected(bob);
  return { alice, bob, sub, got };
}
