// chat.js: the visitor's connection to kefu, with no DOM in it.
//
// The visitor flow over the shared protocol client (/shared/protocol.js). It
// gets a visitor session over HTTP (the token is kept in localStorage per
// site, so the conversation survives reloads, new tabs and days away), loads
// history page by page, and keeps a WebSocket open: hello with the token and
// resume entries (last seq and epoch per conversation), and reloads history on
// `reset`. Messages go through an outbox persisted in localStorage: an entry
// leaves it only when its ack (or its echo from another tab) arrives, and is
// resent with the same client_id after every reconnect, at most one send per
// SEND_INTERVAL_MS. The panel listens with chat.on(event, fn); events are
// listed in emit() calls.

import * as store from '../shared/store.js';
import { Outbox, RETRYABLE_ERRORS, Socket, request, resumeEntries, uuid } from '../shared/protocol.js';

const PAGE_SIZE = 30;
const MAX_BACKOFF_MS = 10000;
const RETRY_SAME_CONNECTION = new Set(['rate_limited', ...RETRYABLE_ERRORS]);
const SEND_INTERVAL_MS = 100; // at most 10 sends a second, well under the server's 20 (bursts of 40)
const ACK_TIMEOUT_MS = 8000; // no ack by then: send again with the same client_id (the server dedupes)
const TYPING_INTERVAL_MS = 1000;

export class Chat {
  constructor(site) {
    this.site = site;
    this.tokenKey = `kefu.${site}.token`;
    this.pending = new Outbox(`kefu.${site}.outbox`);
    this.token = store.get(this.tokenKey, null);
    this.identity = {}; // {user, attributes, page} from the host page
    this.handlers = {};
    this.visitorId = null;
    this.convs = new Map(); // id -> {id, epoch, status, created_at, seen, incoming, readSent, nextBefore, loaded}
    this.seen = new Set(); // "conversation:seq" of every message handed to the panel
    this.olderId = null; // conversation whose earlier page loads next
    this.socket = new Socket({
      path: () => `/ws/visitor?site=${encodeURIComponent(this.site)}`,
      hello: () => ({ type: 'hello', token: this.token, resume: this.resumeList() }),
      maxBackoffMs: MAX_BACKOFF_MS,
      onConnecting: () => this.emit('status', 'connecting'),
      onFrame: (frame) => this.onFrame(frame),
      onClose: (code) => this.onClose(code),
    });
    this.socket.stopped = true;
    this.typingAt = 0; // when the last typing frame went out
    this.typingOn = false; // what it said
    this.typingTimer = 0;
    this.sendQueue = []; // client_ids of outbox entries still to send on this socket
    this.pumpTimer = 0;
  }

  on(event, fn) {
    (this.handlers[event] ||= []).push(fn);
  }

  emit(event, data) {
    for (const fn of this.handlers[event] || []) fn(data);
  }

  get hasToken() {
    return Boolean(this.token);
  }

  /** Newest conversation first by creation time. */
  conversations() {
    return [...this.convs.values()].sort((a, b) => b.created_at - a.created_at);
  }

  /** The conversation a new message would go to, or null when a new one would start. */
  openConversation() {
    const c = this.conversations()[0];
    return c && c.status !== 'closed' ? c : null;
  }

  outbox() {
    return this.pending.entries();
  }

  /** Welcome received on the current socket. */
  get ready() {
    return this.socket.ready;
  }

  // --- HTTP -----------------------------------------------------------------

  request(method, path, body, auth = true) {
    return request(method, path, { body, token: auth ? this.token : undefined });
  }

  /**
   * Gets (or renews) the visitor session, loads the newest history page and
   * connects. `profile` ({name, email}) comes from the pre-chat form.
   * Emits 'session' ({session, changed}) or 'fatal' (an error code).
   */
  async start(profile) {
    this.socket.start();
    this.socket.lastAttempt = Date.now();
    clearTimeout(this.socket.timer);
    let s;
    try {
      s = await this.request('POST', '/api/v1/visitor/session', {
        site: this.site,
        token: this.token || undefined,
        user: this.identity.user || undefined,
        attributes: this.identity.attributes || undefined,
        profile: profile || undefined,
        page: this.identity.page || undefined,
      }, false);
    } catch (err) {
      if (err.status >= 400 && err.status < 500 && err.status !== 429) {
        this.stop();
        this.emit('fatal', err.code);
      } else {
        this.emit('status', 'offline');
        this.socket.retry(() => this.start(profile));
      }
      return null;
    }
    const changed = this.visitorId !== null && this.visitorId !== s.visitor_id;
    if (changed) {
      this.convs.clear();
      this.seen.clear();
    }
    this.visitorId = s.visitor_id;
    this.token = s.token;
    store.set(this.tokenKey, s.token);
    for (const c of s.conversations || []) this.track(c);
    this.emit('session', { session: s, changed });
    const newest = this.conversations()[0];
    this.olderId = newest ? newest.id : null;
    if (newest && !newest.loaded) await this.loadPage(newest).catch(() => {});
    this.disconnect();
    this.connect();
    return s;
  }

  /** Loads one history page of `c` (the newest when `before` is absent). Emits 'history'. */
  async loadPage(c, before) {
    const q = before ? `&before=${before}` : '';
    const page = await this.request('GET', `/api/v1/conversations/${c.id}/messages?limit=${PAGE_SIZE}${q}`);
    c.epoch = page.epoch;
    c.nextBefore = page.next_before;
    if (!before) {
      c.loaded = true;
      c.seen = Math.max(c.seen ?? 0, page.last_seq ?? 0);
    }
    const fresh = page.messages.filter((m) => this.remember(m));
    this.emit('history', { conversation: c, messages: fresh, older: Boolean(before) || c.id !== this.conversations()[0]?.id });
    // Read receipts from before this page load (a reload must not turn "Read" back into "Sent").
    if (page.agents_read_seq) this.emit('read', { conversation_id: c.id, reader: { kind: 'agent' }, seq: page.agents_read_seq });
  }

  /** Loads the next earlier page, walking back through older conversations. Resolves false at the start. */
  async loadOlder() {
    while (this.olderId != null) {
      const c = this.convs.get(this.olderId);
      if (!c.loaded) {
        await this.loadPage(c);
        return true;
      }
      if (c.nextBefore != null) {
        await this.loadPage(c, c.nextBefore);
        return true;
      }
      const list = this.conversations();
      this.olderId = list[list.indexOf(c) + 1]?.id ?? null;
    }
    return false;
  }

  upload(file) {
    const c = this.openConversation();
    const q = `conversation_id=${c.id}&name=${encodeURIComponent(file.name)}`;
    return this.request('POST', `/api/v1/uploads?${q}`, file);
  }

  leaveOfflineMessage(form) {
    return this.request('POST', '/api/v1/visitor/offline-messages', form);
  }

  /** Asks for the newest conversation's transcript by email. */
  emailTranscript(email, lang) {
    const c = this.conversations()[0];
    if (!c) return Promise.reject(new Error('no conversation'));
    return this.request('POST', `/api/v1/conversations/${c.id}/transcript`, { email, lang });
  }

  rate(conversationId, score, comment) {
    return this.request('POST', `/api/v1/conversations/${conversationId}/rating`, { score, comment });
  }

  /** A thumbs up (`helpful` true) or down on a bot answer; a second call replaces the first. */
  feedback(conversationId, seq, helpful) {
    return this.request('POST', `/api/v1/conversations/${conversationId}/messages/${seq}/feedback`, { helpful });
  }

  /** The conversation's place in the agents' queue (1 is next), or null when it is not waiting. */
  async queuePosition(conversationId) {
    const answer = await this.request('GET', `/api/v1/conversations/${conversationId}/queue`);
    return answer?.position ?? null;
  }

  /** Asks for a human in the open conversation; false when there is none or no socket. */
  handoff() {
    const c = this.openConversation();
    return Boolean(c) && this.frame({ type: 'handoff', conversation_id: c.id });
  }

  // --- WebSocket ------------------------------------------------------------

  connect() {
    if (this.token) this.socket.connect();
  }

  /** Closes the socket without triggering a reconnect. */
  disconnect() {
    this.socket.disconnect();
  }

  stop() {
    this.socket.stop();
  }

  resumeList() {
    return resumeEntries(this.convs.values(), (c) => c.seen != null);
  }

  onClose(code) {
    if (this.socket.stopped) return;
    this.emit('status', 'offline');
    if (code === 4003 || code === 4000) {
      this.stop();
      this.emit('fatal', code === 4003 ? 'blocked' : 'protocol');
    } else if (code === 4001) {
      this.token = null;
      store.remove(this.tokenKey);
      this.socket.retry(() => this.start());
    } else {
      this.socket.reconnect();
    }
  }

  /** Skips the current backoff wait (the visitor acted or the network came back), at most once a second. */
  hurry() {
    this.socket.hurry();
  }

  frame(f) {
    return this.socket.send(f);
  }

  onFrame(f) {
    switch (f.type) {
      case 'welcome':
        for (const c of f.conversations || []) {
          const known = this.convs.has(c.id);
          const k = this.track(c);
          // A conversation started elsewhere (another tab): replay it from the start.
          if (!known) {
            k.seen = 0;
            k.loaded = true;
            this.frame({ type: 'resume', conversation_id: c.id, last_seq: 0, epoch: c.epoch });
          }
        }
        this.emit('status', 'online');
        this.sendQueue = this.outbox().map((e) => e.client_id);
        this.pump();
        break;
      case 'ack': {
        const entry = this.takeFromOutbox(f.client_id);
        this.track({ id: f.conversation_id, epoch: f.epoch, created_at: f.created_at });
        this.remember(f);
        this.emit('ack', { ack: f, entry });
        break;
      }
      case 'message':
        this.track({ id: f.conversation_id, epoch: f.epoch, created_at: f.created_at });
        if (!this.remember(f)) break;
        if (f.client_id && f.sender?.kind === 'visitor') this.takeFromOutbox(f.client_id);
        this.emit('message', f);
        break;
      case 'replayed': {
        const c = this.convs.get(f.conversation_id);
        if (c) c.seen = Math.max(c.seen ?? 0, f.last_seq);
        break;
      }
      case 'reset':
        this.reset(f);
        break;
      case 'typing':
      case 'read':
        this.emit(f.type, f);
        break;
      case 'conversation':
        this.track(f.conversation);
        this.emit('conversation', f);
        break;
      case 'bot_stream':
        this.emit('stream', f);
        break;
      case 'site_status':
        this.emit('siteStatus', f);
        break;
      case 'error':
        this.onError(f);
        break;
      default:
        break;
    }
  }

  async reset(f) {
    const c = this.track({ id: f.conversation_id, epoch: f.epoch });
    for (const key of this.seen) if (key.startsWith(`${c.id}:`)) this.seen.delete(key);
    c.seen = f.last_seq;
    this.emit('reset', c.id);
    await this.loadPage(c).catch(() => {});
  }

  onError(f) {
    if (f.code === 'blocked') {
      this.stop();
      this.emit('fatal', 'blocked');
      return;
    }
    if (!f.client_id || !this.pending.has(f.client_id)) return;
    if (RETRY_SAME_CONNECTION.has(f.code)) {
      // Send it again first, after a pause.
      this.sendQueue.unshift(f.client_id);
      clearTimeout(this.pumpTimer);
      this.pumpTimer = setTimeout(() => {
        this.pumpTimer = 0;
        this.pump();
      }, 1000);
    } else {
      this.takeFromOutbox(f.client_id);
      this.emit('failed', { client_id: f.client_id, code: f.code, message: f.message });
    }
  }

  /** Adds or updates a conversation from any frame that names one. */
  track(c) {
    let k = this.convs.get(c.id);
    if (!k) {
      k = { id: c.id, created_at: c.created_at ?? Date.now(), seen: null, incoming: 0, readSent: 0, loaded: false };
      this.convs.set(c.id, k);
    }
    if (c.epoch != null) k.epoch = c.epoch;
    if (c.status) k.status = c.status;
    if (c.bot_active != null) k.bot_active = c.bot_active;
    if (c.assigned_agent !== undefined) k.assigned_agent = c.assigned_agent;
    return k;
  }

  /** Records a message as shown; false when it was already (dedup by conversation and seq). */
  remember(m) {
    const key = `${m.conversation_id}:${m.seq}`;
    if (this.seen.has(key)) return false;
    this.seen.add(key);
    const c = this.track({ id: m.conversation_id });
    c.seen = Math.max(c.seen ?? 0, m.seq);
    if (m.sender && m.sender.kind !== 'visitor') c.incoming = Math.max(c.incoming, m.seq);
    return true;
  }

  // --- Sending --------------------------------------------------------------

  /** Queues a message (text, or an uploaded image/file) and sends it when connected. Returns the outbox entry. */
  send({ kind = 'text', text = '', attachment = null }) {
    const entry = { client_id: uuid(), kind, text, attachment, at: Date.now() };
    this.pending.add(entry);
    if (this.ready) {
      this.sendQueue.push(entry.client_id);
      this.pump();
    } else {
      this.hurry();
    }
    return entry;
  }

  /** Sends the next queued outbox entry, then waits SEND_INTERVAL_MS before the one after. */
  pump() {
    if (this.pumpTimer || !this.ready) return;
    const outbox = this.outbox();
    let e = null;
    while (!e && this.sendQueue.length) {
      const id = this.sendQueue.shift();
      e = outbox.find((x) => x.client_id === id); // gone when acked meanwhile (another tab)
    }
    if (!e) return;
    const f = { type: 'send', client_id: e.client_id, text: e.text };
    if (e.kind !== 'text') Object.assign(f, { kind: e.kind, attachment_id: e.attachment.id });
    this.frame(f);
    const ws = this.socket.ws;
    setTimeout(() => {
      if (this.socket.ws === ws && this.pending.has(e.client_id)) {
        this.sendQueue.push(e.client_id);
        this.pump();
      }
    }, ACK_TIMEOUT_MS);
    this.pumpTimer = setTimeout(() => {
      this.pumpTimer = 0;
      this.pump();
    }, SEND_INTERVAL_MS);
  }

  takeFromOutbox(clientId) {
    return this.pending.take(clientId);
  }

  /**
   * Reports whether the visitor is typing: at most one typing frame a second; while typing
   * the state is repeated each second, and a change that comes too soon is sent when allowed.
   */
  typing(active) {
    clearTimeout(this.typingTimer);
    const c = this.openConversation();
    if (!c || (!active && !this.typingOn)) return;
    const wait = this.typingAt + TYPING_INTERVAL_MS - Date.now();
    if (wait > 0) {
      if (active !== this.typingOn) this.typingTimer = setTimeout(() => this.typing(active), wait);
      return;
    }
    if (this.frame({ type: 'typing', conversation_id: c.id, active })) {
      this.typingAt = Date.now();
      this.typingOn = active;
    }
  }

  /** Tells the server the visitor has seen everything shown; call while the panel is visible. */
  markRead() {
    for (const c of this.convs.values()) {
      if (c.incoming > c.readSent && this.frame({ type: 'read', conversation_id: c.id, seq: c.incoming })) {
        c.readSent = c.incoming;
      }
    }
  }
}
