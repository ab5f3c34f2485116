// view.js: DOM building for the panel, with h() from /shared/dom.js.
// Everything that comes from a visitor, an agent or the server is inserted as
// text (append of strings, textContent), never as HTML. MessageList keeps confirmed messages ordered by conversation
// and seq (so history pages, replays and live messages can arrive in any
// order) and unconfirmed ones in a separate list below them. Bot messages are
// marked as automatic (knowledge base or AI), carry thumbs up and down, and
// offer related questions as quick replies; a language model's answer shows
// while it streams in a provisional bubble that the stored message replaces.

import { t } from './i18n.js';
import { h, shownFileName } from '../shared/dom.js';

/** An http(s) URL resolved against this page, or null for anything else (javascript:, data:, ...). */
export function safeUrl(url) {
  try {
    const u = new URL(url, location.href);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
  } catch {
    return null;
  }
}

function formatSize(n) {
  if (!(n >= 0)) return '';
  if (n < 1024) return `${n} B`;
  return n < 1048576 ? `${(n / 1024).toFixed(0)} KB` : `${(n / 1048576).toFixed(1)} MB`;
}

function formatTime(ms) {
  return new Date(ms || Date.now()).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

// Attachments need the visitor's credentials, which an <img src> cannot carry and which must
// not go into URLs: they are fetched with the Authorization header and shown from blob: URLs.
let fetchAttachment = async () => { throw new Error('no attachment fetcher'); };

/** Sets how attachments are fetched: `fn(url)` resolves to a Blob. */
export function setAttachmentFetcher(fn) {
  fetchAttachment = fn;
}

/** The bubble content: an inline image, a download link, or plain text. */
function body(kind, text, attachment) {
  const url = attachment && safeUrl(attachment.url);
  if (url && kind === 'image') {
    const img = h('img', { alt: shownFileName(attachment.name), loading: 'lazy' });
    const link = h('a', { href: '#', class: 'kf-image' }, img);
    fetchAttachment(url).then((blob) => {
      const local = URL.createObjectURL(blob);
      img.src = local;
      link.href = local;
      link.target = '_blank';
      link.rel = 'noopener noreferrer';
    }).catch(() => { img.alt = `${shownFileName(attachment.name)} (${t('download')})`; });
    return link;
  }
  if (url && kind === 'file') {
    const size = formatSize(attachment.size);
    const name = shownFileName(attachment.name);
    const link = h('a', { href: '#', class: 'kf-file' }, '📎 ', h('bdi', { class: 'kf-file-name' }, name || t('download')), size ? ` (${size})` : null);
    link.addEventListener('click', async (event) => {
      event.preventDefault();
      const local = URL.createObjectURL(await fetchAttachment(url));
      const save = h('a', { href: local, download: name || 'download' });
      save.click();
      setTimeout(() => URL.revokeObjectURL(local), 60000);
    });
    return link;
  }
  return h('span', { class: 'kf-text', dir: 'auto' }, text || '');
}

/** What a bot message is, for its label: an automatic answer from the knowledge base or AI. */
function botLabel(source) {
  if (source?.kind === 'kb') return t('autoKb');
  if (source?.kind === 'llm') return t('autoAi');
  return t('auto');
}

/** How long a finished stream's bubble waits for its stored message before it is dropped. */
const STREAM_GRACE_MS = 5000;

function senderName(sender) {
  if (!sender || sender.kind === 'visitor') return t('you');
  return sender.name || t(sender.kind === 'bot' ? 'bot' : 'agent');
}

export class MessageList {
  /**
   * @param list    the <ol> of confirmed messages
   * @param pending the <ol> of messages waiting for their ack
   * @param createdAt conversation id -> its creation time (orders conversations)
   */
  constructor(list, pending, createdAt) {
    this.list = list;
    this.pending = pending;
    this.createdAt = createdAt;
    this.byClient = new Map(); // client_id -> element of an own message
    this.bySeq = new Map(); // "conversation:seq" -> element
    this.streams = new Map(); // stream_id -> provisional bubble of a streaming bot answer
    // What the bot's controls do: feedback(message, helpful) -> Promise, ask(text).
    this.botActions = { feedback: async () => {}, ask: () => {} };
  }

  /** The label, thumbs and quick replies under a bot message. */
  botExtras(m) {
    const source = m.bot_source;
    const extras = [];
    if (source?.kind === 'kb' || source?.kind === 'llm') {
      const thumbs = h('div', { class: 'kf-thumbs', role: 'group', 'aria-label': t('wasHelpful') });
      for (const [helpful, glyph, key] of [[true, '👍', 'helpful'], [false, '👎', 'notHelpful']]) {
        const button = h('button', { type: 'button', class: 'kf-thumb', 'data-helpful': String(helpful), 'aria-pressed': 'false', title: t(key), 'aria-label': t(key) }, glyph);
        button.addEventListener('click', async () => {
          for (const other of thumbs.querySelectorAll('button')) other.setAttribute('aria-pressed', String(other === button));
          try {
            await this.botActions.feedback(m, helpful);
            thumbs.dataset.sent = String(helpful);
          } catch {
            button.setAttribute('aria-pressed', 'false');
          }
        });
        thumbs.append(button);
      }
      extras.push(thumbs);
    }
    if (source?.related?.length) {
      const replies = h('div', { class: 'kf-related' }, h('p', {}, t('relatedPrompt')));
      for (const question of source.related.slice(0, 3)) {
        const button = h('button', { type: 'button', class: 'kf-quick', dir: 'auto' }, question);
        button.addEventListener('click', () => this.botActions.ask(question));
        replies.append(button);
      }
      extras.push(replies);
    }
    return extras;
  }

  /** A piece of a language model's answer (a `bot_stream` frame). */
  stream(f) {
    let li = this.streams.get(f.stream_id);
    if (!li) {
      if (f.done) return;
      li = h('li', { class: 'kf-msg kf-bot kf-streaming', 'data-stream': f.stream_id },
        h('div', { class: 'kf-bubble' }, h('span', { class: 'kf-text', dir: 'auto' })),
        h('div', { class: 'kf-meta' }, h('bdi', { class: 'kf-sender' }, t('bot')), ' · ', h('span', { class: 'kf-auto' }, t('autoAi')), ' · ', t('writing')));
      this.streams.set(f.stream_id, li);
      this.place(li, f.conversation_id, Number.MAX_SAFE_INTEGER, false);
    }
    if (f.delta) li.querySelector('.kf-text').append(f.delta);
    if (f.done) {
      // The stored answer normally follows at once; a stream that was cut has none.
      setTimeout(() => {
        if (this.streams.get(f.stream_id) === li) this.endStream(f.stream_id);
      }, STREAM_GRACE_MS);
    }
  }

  endStream(streamId) {
    this.streams.get(streamId)?.remove();
    this.streams.delete(streamId);
  }

  item(own, m, attachment) {
    const kind = own ? 'own' : m.sender?.kind || 'agent';
    const state = h('span', { class: 'kf-state' });
    const bot = !own && m.sender?.kind === 'bot';
    // An agent's picture (or the initial-letter one kefu makes) beside each of their messages.
    const avatar = kind === 'agent' && m.sender?.id ? h('img', { class: 'kf-avatar', alt: '', src: `/api/v1/agents/${Number(m.sender.id)}/avatar` }) : null;
    const li = h('li', { class: `kf-msg kf-${kind}` }, avatar,
      h('div', { class: 'kf-bubble' }, body(m.kind || 'text', m.text, attachment || m.attachment)),
      h('div', { class: 'kf-meta' }, h('bdi', { class: 'kf-sender' }, senderName(m.sender)), bot ? ' · ' : null, bot ? h('span', { class: 'kf-auto' }, botLabel(m.bot_source)) : null, ' · ', h('time', {}, formatTime(m.created_at)), state),
      ...(bot ? this.botExtras(m) : []));
    if (own) this.byClient.set(m.client_id, li);
    return li;
  }

  setState(li, key, vars) {
    li.dataset.state = key;
    li.querySelector('.kf-state').textContent = ` · ${t(key, vars)}`;
  }

  /** Shows a stored message (history, replay or live); an own pending copy is moved into place. */
  show(m, own) {
    const key = `${m.conversation_id}:${m.seq}`;
    if (this.bySeq.has(key)) return this.bySeq.get(key);
    if (m.bot_source?.stream_id) this.endStream(m.bot_source.stream_id);
    let li = own && m.client_id ? this.byClient.get(m.client_id) : null;
    if (li) li.querySelector('.kf-text')?.replaceChildren(m.text || '');
    else li = this.item(own, m);
    if (own && li.dataset.state !== 'read') this.setState(li, 'sent');
    this.place(li, m.conversation_id, m.seq);
    return li;
  }

  /** Shows an outbox entry below the confirmed messages until its ack arrives. */
  addPending(entry) {
    if (this.byClient.has(entry.client_id)) return this.byClient.get(entry.client_id);
    const li = this.item(true, { ...entry, created_at: entry.at }, entry.attachment);
    this.setState(li, 'sending');
    this.pending.append(li);
    return li;
  }

  /** An ack arrived: the message is stored; `ack.text` is what was stored (maybe masked). */
  confirm(ack) {
    const li = this.byClient.get(ack.client_id);
    if (li) this.show({ ...ack, sender: { kind: 'visitor' } }, true);
  }

  fail(clientId, reason) {
    const li = this.byClient.get(clientId);
    if (li) this.setState(li, 'failed', { reason });
  }

  /** An agent read up to `seq`: own messages up to there show "read". */
  markRead(conversationId, seq) {
    for (const [key, li] of this.bySeq) {
      const [c, s] = key.split(':').map(Number);
      if (c === conversationId && s <= seq && li.classList.contains('kf-own')) this.setState(li, 'read');
    }
  }

  /** A line of its own (e.g. "conversation closed") after the conversation's newest message. */
  note(conversationId, text) {
    const seqs = [...this.bySeq.keys()].filter((k) => k.startsWith(`${conversationId}:`)).map((k) => Number(k.split(':')[1]));
    const li = h('li', { class: 'kf-note' }, text);
    this.place(li, conversationId, Math.max(0, ...seqs) + 0.5, false);
  }

  /** Removes one conversation's messages (before reloading it), or all of them. */
  clear(conversationId) {
    for (const [key, li] of this.bySeq) {
      if (conversationId == null || key.startsWith(`${conversationId}:`)) {
        li.remove();
        this.bySeq.delete(key);
      }
    }
    if (conversationId == null) {
      this.list.replaceChildren();
      this.pending.replaceChildren();
      this.byClient.clear();
    }
  }

  /** Inserts `li` among the confirmed messages, ordered by (conversation creation, seq). */
  place(li, conversationId, seq, index = true) {
    const at = this.createdAt(conversationId);
    li.dataset.at = at;
    li.dataset.seq = seq;
    if (index) this.bySeq.set(`${conversationId}:${seq}`, li);
    const items = this.list.children;
    let lo = 0;
    let hi = items.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const o = items[mid].dataset;
      if (Number(o.at) < at || (Number(o.at) === at && Number(o.seq) < seq)) lo = mid + 1;
      else hi = mid;
    }
    this.list.insertBefore(li, items[lo] || null);
  }
}
