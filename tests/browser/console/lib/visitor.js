// visitor.js: a visitor speaking the kefu protocol over a Node WebSocket (the
// `ws` package). It keeps every frame, can reconnect and resume, and resends
// unacknowledged messages with the same client_id, like the widget does.

import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';

export class Visitor {
  static async open(kefu, page = { url: 'https://shop.test/cart', title: 'Cart', referrer: 'https://search.test/' }) {
    const session = await kefu.request('POST', '/api/v1/visitor/session', { body: { site: kefu.siteKey, page } });
    if (session.status !== 200) throw new Error(`visitor session: ${session.status} ${JSON.stringify(session.body)}`);
    const visitor = new Visitor(kefu, session.body);
    await visitor.connect();
    return visitor;
  }

  constructor(kefu, session) {
    this.kefu = kefu;
    this.id = session.visitor_id;
    this.token = session.token;
    this.frames = [];
    this.waiters = new Set();
    this.seen = new Map(); // conversation id -> {last_seq, epoch}
    this.pending = new Map();
  }

  connect() {
    this.ws = new WebSocket(`${this.kefu.origin.replace(/^http/, 'ws')}/ws/visitor?site=${this.kefu.siteKey}`, {
      headers: { 'User-Agent': 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36' },
    });
    this.ws.on('message', (data) => this.onFrame(JSON.parse(String(data))));
    this.ws.on('error', () => {});
    const resume = [...this.seen].map(([conversation_id, s]) => ({ conversation_id, last_seq: s.last_seq, epoch: s.epoch }));
    this.ws.on('open', () => this.ws.send(JSON.stringify({ type: 'hello', token: this.token, resume })));
    const since = this.frames.length;
    return this.waitFor((f, i) => i >= since && f.type === 'welcome', 'welcome');
  }

  onFrame(f) {
    this.frames.push(f);
    if (f.type === 'welcome') for (const frame of this.pending.values()) this.ws.send(JSON.stringify(frame));
    if (f.type === 'ack') this.pending.delete(f.client_id);
    if (f.type === 'message' || f.type === 'ack') {
      const s = this.seen.get(f.conversation_id) ?? { last_seq: 0, epoch: f.epoch };
      s.last_seq = Math.max(s.last_seq, f.seq);
      this.seen.set(f.conversation_id, s);
    }
    const index = this.frames.length - 1;
    for (const w of this.waiters) w(f, index);
  }

  waitFor(pred, what, timeoutMs = 20000) {
    const seen = this.frames.findIndex((f, i) => pred(f, i));
    if (seen >= 0) return Promise.resolve(this.frames[seen]);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`visitor: timed out waiting for ${what}; last frames: ${JSON.stringify(this.frames.slice(-10))}`));
      }, timeoutMs);
      const check = (f, i) => {
        if (!pred(f, i)) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(f);
      };
      this.waiters.add(check);
    });
  }

  /** Sends a text; resolves with its ack (resent after a reconnect until acknowledged). */
  say(text) {
    const frame = { type: 'send', client_id: randomUUID(), text };
    this.pending.set(frame.client_id, frame);
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
    return this.waitFor((f) => f.type === 'ack' && f.client_id === frame.client_id, `ack of ${text}`);
  }

  send(frame) {
    this.ws.send(JSON.stringify(frame));
  }

  waitForMessage(text) {
    return this.waitFor((f) => f.type === 'message' && f.text === text, `message ${JSON.stringify(text)}`);
  }

  texts() {
    return this.frames.filter((f) => f.type === 'message').map((f) => f.text);
  }

  close() {
    this.ws.close();
  }
}
