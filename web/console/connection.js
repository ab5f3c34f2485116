// connection.js: the console's WebSocket to /ws/agent (authenticated by the
// session cookie). It reconnects with exponential backoff and jitter after a
// network drop, a server restart (goaway) or a laptop sleep (no frame for a
// while), and on every reconnect resumes each conversation the console
// follows from the last seq it holds (docs/protocol.md, "Resume"). Sends are
// kept until their ack and resent with the same client_id after reconnecting,
// so the server deduplicates them.

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30000;
/** A ping every so often; with no frame at all for STALE_MS the socket counts as dead. */
const PING_MS = 20000;
const STALE_MS = 50000;

export class Connection extends EventTarget {
  /** @param {() => Array<{conversation_id, last_seq, epoch}>} resumePoints what to resume on each connect */
  constructor(resumePoints) {
    super();
    this.resumePoints = resumePoints;
    this.ws = null;
    this.attempt = 0;
    this.pending = new Map(); // client_id -> send frame, until its ack or error
    this.timer = 0;
    this.pinger = 0;
    this.lastFrameAt = 0;
    this.stopped = false;
    this.state = 'connecting';
    window.addEventListener('online', () => this.reconnectSoon(0));
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden && this.isStale()) this.drop();
    });
  }

  setState(state) {
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: state }));
  }

  connect() {
    clearTimeout(this.timer);
    if (this.stopped) return;
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${scheme}://${location.host}/ws/agent`);
    this.ws = ws;
    this.setState('connecting');
    ws.onopen = () => {
      this.lastFrameAt = Date.now();
      ws.send(JSON.stringify({ type: 'hello', resume: this.resumePoints() }));
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
        this.attempt = 0;
        this.setState('open');
        for (const send of this.pending.values()) ws.send(JSON.stringify(send));
      } else if (frame.type === 'ack') {
        this.pending.delete(frame.client_id);
      } else if (frame.type === 'error' && frame.client_id && frame.code !== 'internal' && frame.code !== 'unavailable') {
        this.pending.delete(frame.client_id);
      } else if (frame.type === 'goaway') {
        this.reconnectDelay = frame.reconnect_after_ms;
      }
      this.dispatchEvent(new CustomEvent('frame', { detail: frame }));
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearInterval(this.pinger);
      this.setState('closed');
      this.dispatchEvent(new CustomEvent('closed', { detail: event.code }));
      if (event.code === 4001) {
        this.stopped = true; // logged out or session expired
        return;
      }
      const delay = this.reconnectDelay ?? Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
      this.reconnectDelay = undefined;
      this.attempt += 1;
      this.reconnectSoon(delay / 2 + Math.random() * (delay / 2));
    };
    clearInterval(this.pinger);
    this.pinger = setInterval(() => {
      if (this.isStale()) this.drop();
      else this.send({ type: 'ping' });
    }, PING_MS);
  }

  isStale() {
    return this.ws && this.lastFrameAt && Date.now() - this.lastFrameAt > STALE_MS;
  }

  /** Closes a dead socket; onclose schedules the reconnect. */
  drop() {
    try {
      this.ws?.close();
    } catch {
      /* already closed */
    }
  }

  reconnectSoon(delayMs) {
    if (this.stopped || (this.ws && this.ws.readyState <= WebSocket.OPEN)) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delayMs);
  }

  send(frame) {
    if (this.ws?.readyState === WebSocket.OPEN && this.state === 'open') {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  /** A message send: kept until acknowledged and resent after reconnecting. */
  sendMessage(frame) {
    this.pending.set(frame.client_id, frame);
    this.send(frame);
  }

  stop() {
    this.stopped = true;
    clearInterval(this.pinger);
    clearTimeout(this.timer);
    this.ws?.close();
  }
}
