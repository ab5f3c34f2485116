// agent.js: a test agent speaking the kefu protocol over a Node WebSocket. It
// logs in over HTTP, says hello with the token, goes online, takes queued
// conversations, and resumes every conversation it hears of from seq 0, so
// it ends up holding every stored message, each once, keyed by seq.

import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { AGENT } from './kefu.js';

export class Agent {
  static async connect(kefu, { email = AGENT.email, password = AGENT.password } = {}) {
    const login = await kefu.request('POST', '/api/v1/agent/login', { body: { email, password } });
    if (login.status !== 200) throw new Error(`agent login: ${login.status} ${JSON.stringify(login.body)}`);
    const agent = new Agent(kefu, login.body.token);
    await agent.open();
    return agent;
  }

  constructor(kefu, token) {
    this.kefu = kefu;
    this.token = token;
    this.frames = [];
    this.waiters = new Set();
    this.resumed = new Set();
    this.messages = new Map(); // "conversation:seq" -> message frame
  }

  open() {
    this.ws = new WebSocket(`${this.kefu.origin.replace(/^http/, 'ws')}/ws/agent`);
    this.ws.on('message', (data) => this.onFrame(JSON.parse(String(data))));
    this.ws.on('open', () => this.send({ type: 'hello', token: this.token }));
    return this.waitFor((f) => f.type === 'welcome', 'welcome');
  }

  send(frame) {
    this.ws.send(JSON.stringify(frame));
  }

  onFrame(f) {
    this.frames.push(f);
    if (f.type === 'welcome') {
      this.id = f.agent_id;
      this.send({ type: 'presence', status: 'online' });
      for (const c of f.conversations || []) this.follow(c);
    } else if (f.type === 'conversation') {
      this.follow(f.conversation);
    } else if (f.type === 'message') {
      this.messages.set(`${f.conversation_id}:${f.seq}`, f);
    }
    for (const w of this.waiters) w(f);
  }

  /**
   * Takes a queued conversation (not one the bot still answers: a take would end the bot's part)
   * and replays every conversation from its start.
   */
  follow(c) {
    if (c.status === 'queued' && !c.bot_active) this.send({ type: 'take', conversation_id: c.id });
    if (!this.resumed.has(c.id)) {
      this.resumed.add(c.id);
      this.send({ type: 'resume', conversation_id: c.id, last_seq: 0, epoch: c.epoch });
    }
  }

  /** Resolves with the first frame (already received or future) matching `pred`. */
  waitFor(pred, what, timeoutMs = 15000) {
    const seen = this.frames.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`agent: timed out waiting for ${what}; frames: ${JSON.stringify(this.frames.slice(-20))}`));
      }, timeoutMs);
      const check = (f) => {
        if (!pred(f)) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(f);
      };
      this.waiters.add(check);
    });
  }

  /** The visitor message with this text, once it has arrived. */
  waitForMessage(text, timeoutMs) {
    return this.waitFor((f) => f.type === 'message' && f.text === text, `message ${JSON.stringify(text)}`, timeoutMs);
  }

  /** All stored messages with this text that this agent has received. */
  count(text) {
    return [...this.messages.values()].filter((m) => m.text === text).length;
  }

  async reply(conversationId, text) {
    const clientId = randomUUID();
    this.send({ type: 'send', client_id: clientId, conversation_id: conversationId, text });
    return this.waitFor((f) => (f.type === 'ack' || f.type === 'error') && f.client_id === clientId, `ack of ${clientId}`);
  }

  close() {
    this.ws.close();
  }
}
