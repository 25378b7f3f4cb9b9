// syncgate-client: a WebSocket client for syncgate that reconnects, restores subscriptions
// (durable ones from the last seq received), retries publishes with their msg_id and refreshes
// its token. No dependencies; browsers and Node >= 20 (pass `WebSocket` when there is no global).

const RESET_AFTER_MS = 10000;
const ACK_FLUSH_MS = 200;

/** A publish could not be queued: `maxQueued` publishes already wait for a connection. */
export class QueueFullError extends Error {
  constructor() {
    super('publish queue is full');
    this.name = 'QueueFullError';
  }
}

/** A publish whose outcome is unknown (the connection dropped on a channel that does not
 * de-duplicate), or that the server refused; `retriable` says whether sending it again may work. */
export class PublishError extends Error {
  constructor(message, { code = 'unavailable', retriable = true } = {}) {
    super(message);
    this.name = 'PublishError';
    this.code = code;
    this.retriable = retriable;
  }
}

class Emitter {
  constructor() {
    this._handlers = new Map();
  }
  on(name, fn) {
    if (!this._handlers.has(name)) this._handlers.set(name, new Set());
    this._handlers.get(name).add(fn);
    return this;
  }
  off(name, fn) {
    this._handlers.get(name)?.delete(fn);
    return this;
  }
  _emit(name, value) {
    for (const fn of [...(this._handlers.get(name) ?? [])]) {
      try {
        fn(value);
      } catch (e) {
        queueMicrotask(() => { throw e; });
      }
    }
  }
}

const namespace = (channel) => channel.split(':', 1)[0];
const encoder = new TextEncoder();

function randomId(prefix) {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The device id kept across reloads (localStorage in browsers), generated once. */
function storedDeviceId() {
  const key = 'syncgate-device-id';
  try {
    const kept = globalThis.localStorage?.getItem(key);
    if (kept) return kept;
    const id = randomId('d-');
    globalThis.localStorage?.setItem(key, id);
    return id;
  } catch {
    return randomId('d-');
  }
}

/** Seconds since the epoch when `token` (a JWT) expires, or null. */
function tokenExp(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = globalThis.atob ? globalThis.atob(part) : Buffer.from(part, 'base64').toString();
    const exp = JSON.parse(json).exp;
    return typeof exp === 'number' ? exp : null;
  } catch {
    return null;
  }
}

/** One channel the application subscribed to; restored after every reconnect. */
export class Subscription extends Emitter {
  constructor(client, channel, since) {
    super();
    this._client = client;
    this.channel = channel;
    /** The canonical name the server replied with (`user` → `user:<id>`). */
    this.canonical = channel;
    /** The last durable seq the application received on this channel (null: none). */
    this.lastSeq = since ?? null;
    this.durable = since != null || channel.startsWith('dm:');
    this.active = true;
  }

  /** Members of the channel: Promise of [{user_id, device_id}]. */
  presence() {
    return this._client._request({ type: 'presence', channel: this.channel }).then((r) => r.members);
  }

  /** Typing indicator on or off. */
  typing(on) {
    this._client._sendNow({ type: 'typing', channel: this.channel, state: on ? 'start' : 'stop' });
  }

  unsubscribe() {
    if (!this.active) return;
    this.active = false;
    this._client._forget(this);
    this._client._sendNow({ type: 'unsubscribe', channel: this.channel });
  }

  _event(frame) {
    if (typeof frame.seq === 'number') {
      this.durable = true;
      // Never hand the application the same durable event twice.
      if (this.lastSeq != null && frame.seq <= this.lastSeq) return;
      this.lastSeq = frame.seq;
    }
    this._emit('event', frame);
  }
}

export class SyncgateClient extends Emitter {
  constructor(url, options = {}) {
    super();
    if (typeof options.getToken !== 'function') throw new TypeError('options.getToken is required');
    this.url = url;
    this.options = {
      minReconnectMs: 200,
      maxReconnectMs: 10000,
      ackTimeoutMs: 10000,
      maxQueued: 1000,
      ...options,
    };
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (!this._WebSocket) throw new TypeError('no WebSocket: pass options.WebSocket (e.g. from the ws package)');
    this.deviceId = options.deviceId ?? storedDeviceId();
    this.state = 'disconnected';
    this.welcome = null;
    this._ws = null;
    this._subs = new Map();
    this._pending = new Map();
    this._queue = [];
    this._nextId = 0;
    this._cap = this.options.minReconnectMs;
    this._timers = {};
    this._acks = new Map();
    this._stopped = true;
    this._lastFrameAt = 0;
    // Namespaces whose channels are durable (they de-duplicate by msg_id): the configured ones,
    // plus every namespace the server showed to be durable (a `seq` on its events or acks).
    this._durableNs = new Set(options.durableNamespaces ?? ['dm']);
  }

  _setState(s) {
    if (this.state === s) return;
    this.state = s;
    this._emit('state', s);
  }

  /** Opens the connection (and keeps it open until `close`). */
  connect() {
    if (!this._stopped) return;
    this._stopped = false;
    this._open();
  }

  /** Closes for good: no more reconnects; waiting publishes reject. */
  close() {
    this._stopped = true;
    this._clearTimers();
    this._flushAcks();
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      try { ws.close(1000); } catch { /* already closed */ }
    }
    for (const p of [...this._queue, ...this._pending.values()]) {
      clearTimeout(p.timer);
      p.reject(new PublishError('client closed', { code: 'closed', retriable: false }));
    }
    this._queue = [];
    this._pending.clear();
    this._setState('closed');
  }

  async _open() {
    if (this._stopped) return;
    this._setState('connecting');
    let token;
    try {
      token = await this.options.getToken();
    } catch (e) {
      this._emit('error', e);
      this._scheduleReconnect();
      return;
    }
    if (this._stopped) return;
    const sep = this.url.includes('?') ? '&' : '?';
    let ws;
    try {
      ws = new this._WebSocket(`${this.url}${sep}device_id=${encodeURIComponent(this.deviceId)}`);
    } catch (e) {
      this._emit('error', e);
      this._scheduleReconnect();
      return;
    }
    this._ws = ws;
    this._token = token;
    // No welcome in time (a black-holed address, a stuck upgrade): give up on this attempt.
    this._timers.open = setTimeout(() => {
      if (ws !== this._ws || this.state === 'connected') return;
      this._ws = null;
      try { ws.close(); } catch { /* never opened */ }
      this._closed(1006, 'connect timeout');
    }, this.options.ackTimeoutMs);
    ws.onopen = () => {
      // The token travels in the first frame, never in the URL.
      ws.send(JSON.stringify({ type: 'auth', token }));
    };
    ws.onmessage = (m) => {
      if (ws !== this._ws) return;
      this._lastFrameAt = Date.now();
      if (typeof m.data !== 'string') return;
      let frame;
      try {
        frame = JSON.parse(m.data);
      } catch {
        return;
      }
      this._frame(frame);
    };
    ws.onerror = () => {
      // A connection that never opened: some implementations (Node 20's) send no close event.
      if (ws !== this._ws || this.state === 'connected') return;
      this._ws = null;
      try { ws.close(); } catch { /* never opened */ }
      this._closed(1006, 'connection failed');
    };
    ws.onclose = (ev) => {
      if (ws !== this._ws) return;
      this._ws = null;
      this._closed(ev.code, ev.reason ?? '');
    };
  }

  _frame(f) {
    if (typeof f.seq === 'number' && typeof f.channel === 'string') this._durableNs.add(namespace(f.channel));
    switch (f.type) {
      case 'welcome':
        return this._welcomed(f);
      case 'event': {
        for (const sub of this._subsFor(f.channel)) sub._event(f);
        return;
      }
      case 'join':
      case 'leave':
      case 'typing':
        for (const sub of this._subsFor(f.channel)) sub._emit(f.type, f);
        return;
      default:
        break;
    }
    if (f.id != null && this._pending.has(f.id)) {
      const p = this._pending.get(f.id);
      this._pending.delete(f.id);
      clearTimeout(p.timer);
      if (f.type === 'error') {
        const retriable = f.code === 'unavailable' || f.code === 'rate_limited';
        p.reject(new PublishError(f.message ?? f.code, { code: f.code, retriable }));
      } else {
        // A durable ack always says whether it was a duplicate.
        if (f.type === 'ack' && typeof f.seq === 'number') f.duplicate = f.duplicate === true;
        p.resolve(f);
      }
    }
  }

  _subsFor(channel) {
    const out = [];
    for (const sub of this._subs.values()) {
      if (sub.canonical === channel || sub.channel === channel) out.push(sub);
    }
    return out;
  }

  _welcomed(w) {
    clearTimeout(this._timers.open);
    this.welcome = w;
    this._setState('connected');
    this._emit('connected', w);
    const hb = w.heartbeat_ms ?? 25000;
    this._lastFrameAt = Date.now();
    this._timers.live = setInterval(() => this._liveness(hb), Math.max(250, Math.floor(hb / 4)));
    this._timers.reset = setTimeout(() => { this._cap = this.options.minReconnectMs; }, RESET_AFTER_MS);
    this._scheduleRefresh();
    // Restore every subscription; durable ones from the last seq the application received.
    for (const sub of this._subs.values()) this._sendSubscribe(sub);
    // Publishes that were in flight when the connection dropped, then the waiting ones.
    const resend = [...this._pending.values()];
    this._pending.clear();
    for (const p of [...resend, ...this._queue.splice(0)]) this._sendPublish(p);
    // Read positions acked while disconnected.
    this._flushAcks();
  }

  _liveness(hb) {
    const quiet = Date.now() - this._lastFrameAt;
    if (quiet >= 2 * hb) {
      // Dead: no frame for two heartbeats.
      const ws = this._ws;
      this._ws = null;
      try { ws?.close(4000, 'no heartbeat'); } catch { /* gone */ }
      this._closed(1006, 'no heartbeat');
    } else if (quiet >= hb) {
      this._sendNow({ type: 'ping' });
    }
  }

  _scheduleRefresh() {
    const exp = tokenExp(this._token);
    if (exp == null) return;
    // Ahead of exp: at 80 % of the remaining lifetime, at least 1 s from now.
    const wait = Math.max(1000, (exp * 1000 - Date.now()) * 0.8);
    this._timers.refresh = setTimeout(async () => {
      try {
        const token = await this.options.getToken();
        this._token = token;
        await this._request({ type: 'auth', token });
        this._scheduleRefresh();
      } catch (e) {
        this._emit('error', e);
      }
    }, wait);
  }

  _clearTimers() {
    clearInterval(this._timers.live);
    clearTimeout(this._timers.reset);
    clearTimeout(this._timers.refresh);
    clearTimeout(this._timers.reconnect);
    clearTimeout(this._timers.open);
    this._timers = {};
  }

  _closed(code, reason) {
    this._clearTimers();
    this.welcome = null;
    // In-flight publishes: durable channels de-duplicate by msg_id, so they are sent again after
    // the reconnect; elsewhere the outcome is unknown and the Promise rejects (retriable).
    for (const [id, p] of this._pending) {
      if (!p.publish) {
        // Subscribes are sent again on the next welcome; other requests fail.
        this._pending.delete(id);
        clearTimeout(p.timer);
        if (p.request) p.reject(new PublishError('connection lost', { code: 'disconnected', retriable: true }));
      } else if (!this._dedupes(p.frame.channel)) {
        this._pending.delete(id);
        clearTimeout(p.timer);
        p.reject(new PublishError('connection lost before the ack', { code: 'disconnected', retriable: true }));
      }
    }
    if (this._stopped) return;
    const stop = code === 4003 || code === 4009;
    if (code === 1008 || code === 1009) this._emit('error', new Error(`closed with ${code}: ${reason}`));
    this._emit('disconnected', { code, reason, willReconnect: !stop });
    if (stop) {
      this._stopped = true;
      for (const p of [...this._queue, ...this._pending.values()]) {
        clearTimeout(p.timer);
        p.reject(new PublishError(`closed with ${code}`, { code: 'closed', retriable: false }));
      }
      this._queue = [];
      this._pending.clear();
      this._setState('closed');
      return;
    }
    this._setState('disconnected');
    // 4001: the next connect calls getToken again (it always does).
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    if (this._stopped) return;
    const { minReconnectMs: min, maxReconnectMs: max } = this.options;
    const delay = min + Math.random() * Math.max(0, this._cap - min);
    this._cap = Math.min(max, this._cap * 2);
    this._timers.reconnect = setTimeout(() => this._open(), delay);
  }

  _dedupes(channel) {
    if (this._durableNs.has(namespace(channel))) return true;
    return this._subsFor(channel).some((s) => s.durable);
  }

  /** Whether `text` is over the server's `max_message_bytes` (it would close with 1009). */
  _tooLarge(text) {
    const max = this.welcome?.max_message_bytes;
    if (typeof max !== 'number' || text.length <= max / 3) return false;
    return encoder.encode(text).length > max;
  }

  /** Sends `frame` (an object, or its JSON text) if connected. */
  _sendNow(frame) {
    if (this.state !== 'connected' || !this._ws) return false;
    try {
      this._ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  /** A request with an id; resolves with the reply (or rejects with an `error` frame). */
  _request(frame) {
    return new Promise((resolve, reject) => {
      const id = `r${++this._nextId}`;
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new PublishError('no reply', { code: 'timeout', retriable: true }));
      }, this.options.ackTimeoutMs);
      this._pending.set(id, { frame: { ...frame, id, channel: frame.channel ?? '' }, resolve, reject, timer, request: true });
      if (!this._sendNow({ ...frame, id })) {
        this._pending.delete(id);
        clearTimeout(timer);
        reject(new PublishError('not connected', { code: 'disconnected', retriable: true }));
      }
    });
  }

  _sendSubscribe(sub) {
    const frame = { type: 'subscribe', channel: sub.channel, id: `s${++this._nextId}` };
    if (sub.lastSeq != null) frame.since = sub.lastSeq;
    if (this._tooLarge(JSON.stringify(frame))) {
      // Sent, it would close the connection (1009) on every reconnect: refused here for good.
      sub.active = false;
      this._forget(sub);
      sub._emit('error', new PublishError('channel name over max_message_bytes', { code: 'too_large', retriable: false }));
      return;
    }
    const timer = setTimeout(() => this._pending.delete(frame.id), this.options.ackTimeoutMs);
    this._pending.set(frame.id, {
      frame,
      timer,
      resolve: (r) => {
        if (r.channel) sub.canonical = r.channel;
        if (typeof r.seq === 'number') sub.durable = true;
        if (sub.lastSeq == null && typeof r.seq === 'number') sub.lastSeq = r.seq;
        if (r.recovered != null) sub._emit('recovered', { recovered: r.recovered, seq: r.seq });
        sub.ready = true;
        sub._emit('subscribed', r);
      },
      reject: (e) => sub._emit('error', e),
    });
    this._sendNow(frame);
  }

  /** Subscribes to `channel` (restored after every reconnect); `since`: the last durable seq
   * already received. */
  subscribe(channel, { since } = {}) {
    const existing = this._subs.get(channel);
    if (existing) return existing;
    const sub = new Subscription(this, channel, since);
    this._subs.set(channel, sub);
    if (this.state === 'connected') this._sendSubscribe(sub);
    return sub;
  }

  _forget(sub) {
    this._subs.delete(sub.channel);
  }

  /** Publishes; resolves with the ack (`{seq, duplicate}` on durable channels). */
  publish(channel, event, data, { msgId } = {}) {
    return new Promise((resolve, reject) => {
      const frame = { type: 'publish', channel, event, data, msg_id: msgId ?? randomId('m-'), id: `p${++this._nextId}` };
      const p = { frame, resolve, reject, timer: null, publish: true };
      if (this.state === 'closed') {
        reject(new PublishError('client closed', { code: 'closed', retriable: false }));
      } else if (this.state === 'connected' && this._ws) {
        this._sendPublish(p);
      } else if (this._queue.length >= this.options.maxQueued) {
        reject(new QueueFullError());
      } else {
        this._queue.push(p);
      }
    });
  }

  _sendPublish(p) {
    clearTimeout(p.timer);
    const text = JSON.stringify(p.frame);
    if (this._tooLarge(text)) {
      // The server would close the connection (1009), and a retry would do it again.
      p.reject(new PublishError('publish over max_message_bytes', { code: 'too_large', retriable: false }));
      return;
    }
    p.timer = setTimeout(() => {
      this._pending.delete(p.frame.id);
      p.reject(new PublishError('no ack in time', { code: 'timeout', retriable: true }));
    }, this.options.ackTimeoutMs);
    this._pending.set(p.frame.id, p);
    if (!this._sendNow(text)) {
      // Not connected after all: it waits for the next connection.
      this._pending.delete(p.frame.id);
      clearTimeout(p.timer);
      this._queue.push(p);
    }
  }

  /** Moves this device's read position on a durable channel (coalesced). */
  ack(channel, seq) {
    const prev = this._acks.get(channel) ?? 0;
    if (seq > prev) this._acks.set(channel, seq);
    if (!this._timers.acks) {
      this._timers.acks = setTimeout(() => {
        this._timers.acks = null;
        this._flushAcks();
      }, ACK_FLUSH_MS);
    }
  }

  _flushAcks() {
    for (const [channel, seq] of this._acks) {
      if (this._sendNow({ type: 'ack', channel, seq })) this._acks.delete(channel);
    }
  }
}

export default SyncgateClient;
