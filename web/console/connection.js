// connection.js: the console's WebSocket to /ws/agent (authenticated by the
// session cookie), the agent flow over the shared protocol client
// (/shared/protocol.js). It reconnects with exponential backoff and jitter
// after a network drop, a server restart (goaway) or a laptop sleep (no frame
// for a while), and on every reconnect resumes each conversation the console
// follows from the last seq it holds (docs/protocol.md, "Resume"). Sends are
// kept until their ack and resent with the same client_id after reconnecting,
// so the server deduplicates them. A close with 4001 (logged out or session
// expired) ends it for good.

import { Outbox, RETRYABLE_ERRORS, Socket } from '../shared/protocol.js';

const MAX_BACKOFF_MS = 30000;

export class Connection extends EventTarget {
  /** @param {() => Array<{conversation_id, last_seq, epoch}>} resumePoints what to resume on each connect */
  constructor(resumePoints) {
    super();
    this.pending = new Outbox(); // send frames, until their ack or error
    this.state = 'connecting';
    this.socket = new Socket({
      path: () => '/ws/agent',
      hello: () => ({ type: 'hello', resume: resumePoints() }),
      maxBackoffMs: MAX_BACKOFF_MS,
      keepAlive: true,
      onConnecting: () => this.setState('connecting'),
      onFrame: (frame) => this.onFrame(frame),
      onClose: (code) => this.onClose(code),
    });
    window.addEventListener('online', () => this.socket.hurry());
  }

  setState(state) {
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: state }));
  }

  connect() {
    this.socket.connect();
  }

  onFrame(frame) {
    if (frame.type === 'welcome') {
      this.setState('open');
      for (const send of this.pending.entries()) this.socket.send(send);
    } else if (frame.type === 'ack') {
      this.pending.take(frame.client_id);
    } else if (frame.type === 'error' && frame.client_id && !RETRYABLE_ERRORS.has(frame.code)) {
      this.pending.take(frame.client_id);
    }
    this.dispatchEvent(new CustomEvent('frame', { detail: frame }));
  }

  onClose(code) {
    this.setState('closed');
    this.dispatchEvent(new CustomEvent('closed', { detail: code }));
    if (code === 4001) this.socket.stop();
    else this.socket.reconnect();
  }

  send(frame) {
    return this.socket.send(frame);
  }

  /** A message send: kept until acknowledged and resent after reconnecting. */
  sendMessage(frame) {
    this.pending.add(frame);
    this.socket.send(frame);
  }

  stop() {
    this.socket.stop();
  }
}
