// protocol.js: the client side of kefu's protocol (docs/protocol.md), with no DOM in
// it, served once at /shared/protocol.js for the widget panel (widget/chat.js, the
// visitor flow) and the agent console (console/connection.js, the agent flow).
//
// Socket keeps one WebSocket open: hello (built fresh for each connect, with the
// resume entries of every followed conversation), welcome, goaway, reconnects with
// exponential backoff and jitter, and optionally a keep-alive ping that drops a socket
// gone silent (a laptop that slept). Outbox holds message sends by client_id until
// their ack, so they are resent with the same client_id after a reconnect and the
// server's duplicate detection makes delivery exactly-once. request() is the HTTP
// side, with kefu's JSON error body turned into an HttpError.

import * as store from './store.js';

const BACKOFF_MIN_MS = 500;
/** A ping every so often (with keepAlive); with no frame at all for STALE_MS the socket counts as dead. */
const PING_MS = 20000;
const STALE_MS = 50000;
/** Error codes after which a send is worth repeating: the server did not record it and may later. */
export const RETRYABLE_ERRORS = new Set(['internal', 'unavailable']);

export class HttpError extends Error {
  constructor(status, code, message) {
    super(message || code);
    this.status = status;
    this.code = code;
  }
}

/**
 * A JSON request to kefu's API: `body` goes as JSON (a Blob as is), `token` as a bearer
 * credential (without it the session cookie, if any, authenticates). Resolves to the JSON
 * answer (null when there is none); rejects with an HttpError.
 */
export async function request(method, path, { body, token } = {}) {
  const headers = {};
  if (token !== undefined) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined && !(body instanceof Blob)) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(body);
  }
  const response = await fetch(path, { method, credentials: 'same-origin', headers, body });
  const type = response.headers.get('content-type') || '';
  const data = type.includes('json') ? await response.json().catch(() => null) : null;
  if (!response.ok) {
    // kefu's error body: {"error": {"code": "not_found", "message": "..."}}
    throw new HttpError(response.status, data?.error?.code || `http_${response.status}`, data?.error?.message);
  }
  return data;
}

/** A random UUID, also outside secure contexts where crypto.randomUUID is missing. */
export function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * The resume entries of a hello: one per followed conversation, from the last seq it holds
 * (`seen`) in its epoch (docs/protocol.md, "Resume").
 */
export function resumeEntries(conversations, followed) {
  return [...conversations]
    .filter(followed)
    .map((c) => ({ conversation_id: c.id, last_seq: c.seen, epoch: c.epoch }));
}

/**
 * Message sends waiting for their ack, in the order they were made, by client_id. With a
 * `storageKey` they persist in localStorage (the widget: they survive a reload and are shared
 * by the visitor's tabs); without one they live in memory.
 */
export class Outbox {
  constructor(storageKey = null) {
    this.storageKey = storageKey;
    this.memory = [];
  }

  entries() {
    return this.storageKey ? store.get(this.storageKey, []) : this.memory;
  }

  save(list) {
    if (this.storageKey) store.set(this.storageKey, list);
    else this.memory = list;
  }

  add(entry) {
    this.save([...this.entries(), entry]);
  }

  has(clientId) {
    return this.entries().some((entry) => entry.client_id === clientId);
  }

  /** Removes the entry with `clientId` (acked, echoed or refused); returns it, or null. */
  take(clientId) {
    const list = this.entries();
    const entry = list.find((e) => e.client_id === clientId) || null;
    if (entry) this.save(list.filter((e) => e !== entry));
    return entry;
  }
}

/**
 * One WebSocket to kefu, reopened by its owner after it closes.
 *
 * The owner passes `path()` (the WebSocket path and query), `hello()` (the hello frame),
 * `maxBackoffMs`, `keepAlive`, and the callbacks `onConnecting()`, `onFrame(frame)` (every
 * frame, after the welcome and goaway bookkeeping here) and `onClose(code)` (the socket
 * closed by the server or the network; the owner decides: reconnect(), start over, or stop).
 */
export class Socket {
  constructor({ path, hello, maxBackoffMs, keepAlive = false, onConnecting, onFrame, onClose }) {
    this.path = path;
    this.hello = hello;
    this.maxBackoffMs = maxBackoffMs;
    this.keepAlive = keepAlive;
    this.onConnecting = onConnecting || (() => {});
    this.onFrame = onFrame;
    this.onClose = onClose;
    this.ws = null;
    this.ready = false; // welcome received on the current socket
    this.stopped = false;
    this.attempt = 0; // failed attempts since the last welcome, for the backoff
    this.timer = 0; // the pending retry
    this.retryFn = null;
    this.lastAttempt = 0;
    this.goawayMs = 0; // the server's reconnect_after_ms from its last goaway
    this.pinger = 0;
    this.lastFrameAt = 0;
    if (keepAlive) {
      document.addEventListener('visibilitychange', () => {
        if (!document.hidden && this.isStale()) this.drop();
      });
    }
  }

  connect() {
    if (this.ws || this.stopped) return;
    clearTimeout(this.timer);
    this.timer = 0;
    this.lastAttempt = Date.now();
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${scheme}://${location.host}${this.path()}`);
    this.ws = ws;
    this.onConnecting();
    ws.onopen = () => {
      this.lastFrameAt = Date.now();
      ws.send(JSON.stringify(this.hello()));
    };
    ws.onmessage = (event) => {
      this.lastFrameAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame.type === 'welcome') {
        this.ready = true;
        this.attempt = 0;
      } else if (frame.type === 'goaway') {
        this.goawayMs = frame.reconnect_after_ms || 1000;
      }
      this.onFrame(frame);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.ready = false;
      clearInterval(this.pinger);
      this.onClose(event.code);
    };
    if (this.keepAlive) {
      clearInterval(this.pinger);
      this.pinger = setInterval(() => {
        if (this.isStale()) this.drop();
        else this.send({ type: 'ping' });
      }, PING_MS);
    }
  }

  /** Sends a frame on a welcomed socket; false when there is none. */
  send(frame) {
    if (!this.ready || this.ws?.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** Closes the socket without calling onClose (and so without a reconnect). */
  disconnect() {
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    this.ready = false;
    clearInterval(this.pinger);
    ws.onclose = null;
    ws.close(1000);
  }

  /** Closes the socket for good: no reconnect until start(). */
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.disconnect();
  }

  start() {
    this.stopped = false;
  }

  /** Connects again later: after the server's goaway delay, or after a backoff. */
  reconnect() {
    this.retry(() => this.connect(), this.goawayMs);
    this.goawayMs = 0;
  }

  /** Runs `fn` later: after `fixedMs`, or after an exponential backoff with jitter. */
  retry(fn, fixedMs) {
    const cap = Math.min(this.maxBackoffMs, BACKOFF_MIN_MS * 2 ** this.attempt++);
    this.retryFn = fn;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = 0;
      fn();
    }, fixedMs || cap / 2 + (Math.random() * cap) / 2);
  }

  /** Skips the current backoff wait (the user acted or the network came back), at most once a second. */
  hurry() {
    if (this.timer && Date.now() - this.lastAttempt > 1000) {
      clearTimeout(this.timer);
      this.timer = 0;
      this.retryFn();
    }
  }

  isStale() {
    return this.ws && this.lastFrameAt && Date.now() - this.lastFrameAt > STALE_MS;
  }

  /** Closes a dead socket; onClose follows, and with it the owner's reconnect. */
  drop() {
    try {
      this.ws?.close();
    } catch {
      /* already closed */
    }
  }
}
