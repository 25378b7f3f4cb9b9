// Type declarations for syncgate-client.

export type State = 'connecting' | 'connected' | 'disconnected' | 'closed';

export interface ClientOptions {
  /** Called on every connect and ahead of the token's `exp` (then sent as an `auth` frame). */
  getToken: () => Promise<string>;
  /** A WebSocket constructor where there is no global one (Node < 22: the `ws` package). */
  WebSocket?: typeof globalThis.WebSocket | (new (url: string) => any);
  /** Generated once and kept (localStorage in browsers) when absent. */
  deviceId?: string;
  minReconnectMs?: number;
  maxReconnectMs?: number;
  ackTimeoutMs?: number;
  maxQueued?: number;
  /** Namespaces whose channels are durable (`SYNCGATE_DURABLE_NAMESPACES`), default `['dm']`;
   * a namespace is also learnt as durable when the server sends a `seq` on one of its channels. */
  durableNamespaces?: string[];
}

export interface Welcome {
  type: 'welcome';
  user_id: string;
  device_id: string;
  conn_id: string;
  heartbeat_ms: number;
  max_message_bytes: number;
  [key: string]: unknown;
}

export interface EventFrame {
  type: 'event';
  channel: string;
  event: string;
  data: unknown;
  from?: { user_id: string; device_id?: string };
  ts: number;
  seq?: number;
  msg_id?: string;
}

export interface MemberFrame {
  type: 'join' | 'leave' | 'typing';
  channel: string;
  user_id: string;
  device_id: string;
  state?: 'start' | 'stop';
}

export interface Ack {
  type: 'ack';
  channel: string;
  seq?: number;
  duplicate?: boolean;
  msg_id?: string;
}

export interface Disconnected {
  code: number;
  reason: string;
  willReconnect: boolean;
}

export class QueueFullError extends Error {}

export class PublishError extends Error {
  code: string;
  retriable: boolean;
}

export class Subscription {
  readonly channel: string;
  /** The server's name for it (`user` → `user:<id>`). */
  readonly canonical: string;
  /** The last durable seq handed to the application (null: none). */
  readonly lastSeq: number | null;
  on(name: 'event', fn: (e: EventFrame) => void): this;
  on(name: 'join' | 'leave' | 'typing', fn: (e: MemberFrame) => void): this;
  on(name: 'recovered', fn: (r: { recovered: boolean; seq?: number }) => void): this;
  on(name: 'subscribed', fn: (r: Record<string, unknown>) => void): this;
  on(name: 'error', fn: (e: Error) => void): this;
  off(name: string, fn: (...args: any[]) => void): this;
  presence(): Promise<Array<{ user_id: string; device_id: string }>>;
  typing(on: boolean): void;
  unsubscribe(): void;
}

export class SyncgateClient {
  constructor(url: string, options: ClientOptions);
  readonly state: State;
  readonly deviceId: string;
  readonly welcome: Welcome | null;
  connect(): void;
  close(): void;
  on(name: 'connected', fn: (w: Welcome) => void): this;
  on(name: 'disconnected', fn: (d: Disconnected) => void): this;
  on(name: 'error', fn: (e: Error) => void): this;
  on(name: 'state', fn: (s: State) => void): this;
  off(name: string, fn: (...args: any[]) => void): this;
  subscribe(channel: string, options?: { since?: number }): Subscription;
  publish(channel: string, event: string, data: unknown, options?: { msgId?: string }): Promise<Ack>;
  ack(channel: string, seq: number): void;
}

export default SyncgateClient;
