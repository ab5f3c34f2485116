// panel.js: the visitor chat panel's entry module. The same page runs inside
// the widget iframe (?site=KEY&embed=1&parent=ORIGIN, driven by loader.js over
// postMessage) and standalone at /chat/KEY (mobile-first H5 page). It wires
// the connection (chat.js) to the DOM (view.js): history, live messages,
// sending with an outbox, typing, read receipts, attention (notify.js), and
// the optional pre-chat, offline-message and rating forms, and the bot: its
// streamed answers, thumbs, quick replies, "Talk to a human" and the handoff
// state (connecting, place in the queue, the offline form, an agent joined).

import { t, setLocale, locale, applyI18n } from './i18n.js';
import { Chat } from './chat.js';
import { MessageList, setAttachmentFetcher } from './view.js';
import { h, isolated, shownFileName } from '../shared/dom.js';
import { mountEmojiPicker } from './emoji.js';
import { settings, saveSettings, unlockAudio, beep, blinkTitle, stopBlink } from './notify.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const site = params.get('site') || decodeURIComponent(location.pathname.match(/^\/chat\/([^/]+)/)?.[1] || '');
const embed = params.get('embed') === '1';
const parentOrigin = embed ? trustedParent(params.get('parent')) : null;

const chat = new Chat(site);
setAttachmentFetcher(async (url) => {
  const res = await fetch(url, { headers: { Authorization: `Bearer ${chat.token}` } });
  if (!res.ok) throw new Error(`attachment: HTTP ${res.status}`);
  return res.blob();
});
const list = new MessageList($('messages'), $('outbox'), (id) => chat.convs.get(id)?.created_at ?? 0);
const log = $('log');
const input = $('input');

let config = null; // the site's widget settings
let siteStatus = null; // {status: 'online'|'away'|'closed', next_open}: settings, then site_status frames
let connection = 'connecting'; // the socket's state: 'connecting' | 'online' | 'offline'
let shown = !embed; // whether the panel is on screen (the loader opens and closes it)
let started = false;
let unread = 0;
let reportedUnread = 0;
let olderState = 'idle'; // 'idle' | 'loading' | 'done'
let typingTimer = 0;
let idleTimer = 0;
let booting = false;
chat.identity = { page: { url: location.href, title: document.title, referrer: document.referrer } };

/** The host page's origin, accepted only if it is a plain origin and (where the browser tells) our real parent. */
function trustedParent(origin) {
  try {
    if (!origin || new URL(origin).origin !== origin) return null;
  } catch {
    return null;
  }
  const ancestors = location.ancestorOrigins;
  return ancestors && ancestors.length && ancestors[0] !== origin ? null : origin;
}

// --- The loader bridge (embed mode) -----------------------------------------

function toHost(type, data) {
  if (parentOrigin) window.parent.postMessage({ kefu: 1, type, ...data }, parentOrigin);
}

function onHostMessage(e) {
  if (e.source !== window.parent || e.origin !== parentOrigin || e.data?.kefu !== 1) return;
  const d = e.data;
  if (d.type === 'init') {
    chat.identity = { user: d.user, attributes: d.attributes, page: d.page };
    if (d.locale) changeLocale(d.locale);
    boot(d.open);
  } else if (d.type === 'open' || d.type === 'close') {
    setShown(d.type === 'open');
  } else if (d.type === 'user' || d.type === 'attributes') {
    chat.identity[d.type] = d[d.type];
    if (chat.visitorId !== null) chat.start();
  } else if (d.type === 'locale') {
    changeLocale(d.locale);
  }
}

function changeLocale(tag) {
  setLocale(tag);
  document.documentElement.lang = locale();
  applyI18n(document);
  if (config?.name) $('site-name').textContent = config.name;
  renderStars();
  renderStatus();
}

function setShown(on) {
  shown = on;
  if (on) {
    if (config) begin();
    if (!$('composer').hidden) input.focus();
    // History that arrived while the frame was hidden had no layout to scroll.
    requestAnimationFrame(() => {
      scrollToEnd();
      fillViewport();
    });
  }
  attention();
}

// --- Start-up -----------------------------------------------------------------

/** The site's widget settings; retried while the server is unreachable, null when refused. */
async function loadConfig() {
  for (;;) {
    try {
      const res = await fetch(`/api/v1/sites/${encodeURIComponent(site)}/widget`);
      if (res.ok) return await res.json();
      if (res.status === 404 || res.status === 403) {
        fatal(res.status === 404 ? 'unknownSite' : 'originNotAllowed');
        return null;
      }
    } catch {
      // Unreachable: try again below.
    }
    setStatus('offline');
    await new Promise((resolve) => setTimeout(resolve, 3000));
  }
}

async function boot(open) {
  if (open) shown = true;
  if (booting) return;
  booting = true;
  if (!site) return fatal('unknownSite');
  config = await loadConfig();
  if (!config) return;
  siteStatus = config.status || null;
  if (config.name) $('site-name').textContent = config.name;
  if (/^#[0-9a-f]{3,8}$/i.test(config.color || '')) document.documentElement.style.setProperty('--kf-color', config.color);
  if (config.welcome_text) {
    $('welcome').textContent = config.welcome_text;
    $('welcome').hidden = false;
  }
  // A visitor who never opens the widget gets no session; a returning one reconnects for unread badges.
  if (shown || chat.hasToken) begin();
}

function begin() {
  if (started) return;
  started = true;
  if (config.prechat_form && !chat.hasToken && !offlineNow()) {
    $('prechat').hidden = false;
    return;
  }
  chat.start();
}

function setStatus(s) {
  connection = s;
  renderStatus();
}

/** Whether the site takes no live chat now: no agent online, or closed (a bot site always chats). */
function offlineNow() {
  if (config?.bot) return false;
  return siteStatus ? siteStatus.status !== 'online' : !(config?.agents_online && config?.open_now);
}

/** "We're closed, back at 09:00", the time in the visitor's own time zone (the browser's). */
function closedText() {
  const at = siteStatus?.next_open?.at;
  if (!at) return t('closed');
  const when = new Date(at);
  const time = new Intl.DateTimeFormat(locale(), { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).format(when);
  if (when.toDateString() === new Date().toDateString()) return t('closedUntil', { time });
  const day = new Intl.DateTimeFormat(locale(), { weekday: 'long' }).format(when);
  return t('closedUntilDay', { day, time });
}

/** The header line: the connection while it is not up, then the site's one status. */
function renderStatus() {
  const el = $('status');
  if (connection !== 'online' || !siteStatus) {
    el.textContent = t(connection === 'online' ? 'online' : connection === 'connecting' ? 'connecting' : 'reconnecting');
    el.dataset.state = connection;
  } else {
    const state = siteStatus.status;
    el.textContent = state === 'closed' ? closedText() : t(state === 'away' ? 'away' : 'online');
    el.dataset.state = state;
  }
  $('offline-intro').textContent = siteStatus?.status === 'closed' ? t('closedForm', { status: closedText() }) : t('noAgents');
}

/**
 * Shows the chat or the offline form as the site's status says, both ways and without a reload.
 * A bot's handoff that found nobody keeps its offline form (the bot offered it in its own words).
 */
function renderAvailability() {
  if (!started || $('notice').dataset.fatal) return;
  if (!$('prechat').hidden) return;
  const offline = offlineNow();
  $('offline').hidden = !offline && handoff !== 'offline';
  $('composer').hidden = offline;
  if (!offline && shown && document.activeElement !== input) input.focus({ preventScroll: true });
}

/** Stops the chat with a message (invalid signature, blocked, unknown site...). */
function fatal(code) {
  const key = {
    invalid_signature: 'invalidSignature',
    origin_not_allowed: 'originNotAllowed',
    blocked: 'blocked',
    not_found: 'unknownSite',
    unknownSite: 'unknownSite',
    originNotAllowed: 'originNotAllowed',
  }[code];
  showNotice(key ? t(key) : t('requestFailed', { reason: code }));
  $('notice').dataset.fatal = '1';
  for (const id of ['composer', 'prechat', 'offline']) $(id).hidden = true;
  $('status').textContent = '';
}

function showNotice(text) {
  $('notice').textContent = text;
  $('notice').hidden = !text;
}

// --- Chat events --------------------------------------------------------------

const isOwn = (m) => m.sender?.kind === 'visitor';

chat.on('status', setStatus);
chat.on('siteStatus', (f) => {
  siteStatus = { status: f.status, next_open: f.next_open };
  renderStatus();
  renderAvailability();
});
chat.on('fatal', fatal);

chat.on('session', ({ session, changed }) => {
  if (changed) {
    list.clear();
    olderState = 'idle';
  }
  // With the bot on, visitors write to it even when no agent is online; it offers the offline
  // form itself when a handoff finds nobody.
  if (session.site) {
    config = { ...config, ...session.site };
    siteStatus = session.site.status || siteStatus;
  }
  renderStatus();
  renderAvailability();
  for (const entry of chat.outbox()) list.addPending(entry);
  renderBotBar();
});

chat.on('history', ({ messages, older }) => {
  const fromBottom = log.scrollHeight - log.scrollTop;
  for (const m of messages) list.show(m, isOwn(m));
  if (older) log.scrollTop = log.scrollHeight - fromBottom;
  else scrollToEnd();
  attention();
  fillViewport();
});

chat.on('message', (m) => {
  const stick = nearEnd();
  list.show(m, isOwn(m));
  if (m.sender?.kind === 'bot') onBotMessage(m);
  if (stick || isOwn(m)) scrollToEnd();
  if (isOwn(m)) return;
  $('typing').hidden = true;
  const { sender, kind, text, created_at, conversation_id, seq } = m;
  toHost('message', { message: { conversation_id, seq, kind, text, created_at, sender } });
  beep();
  if (!visible()) unread += 1;
  attention();
});

chat.on('ack', ({ ack }) => list.confirm(ack));
chat.on('failed', ({ client_id, code, message }) => list.fail(client_id, message || code));
chat.on('reset', (conversationId) => list.clear(conversationId));

chat.on('typing', (f) => {
  if (isOwn(f)) return;
  const el = $('typing');
  clearTimeout(typingTimer);
  el.hidden = !f.active;
  el.textContent = t('typing', { name: isolated(f.sender?.name || t('agent')) });
  if (f.active) typingTimer = setTimeout(() => { el.hidden = true; }, 6000);
});

chat.on('read', (f) => {
  if (f.reader?.kind !== 'visitor') list.markRead(f.conversation_id, f.seq);
});

chat.on('conversation', (f) => {
  const { event, conversation } = f;
  if (event === 'handed_off') setHandoff(conversation.assigned_agent ? null : 'queued');
  if (event === 'assigned' && !conversation.bot_active) {
    if (handoff) list.note(conversation.id, t('agentJoined'));
    setHandoff(null);
  }
  renderBotBar();
  if (event !== 'closed') return;
  setHandoff(null);
  list.note(conversation.id, t('closedNote'));
  if (config.satisfaction_rating) showRating(conversation.id);
  scrollToEnd();
});

// --- The bot --------------------------------------------------------------------

let handoff = null; // null | 'connecting' | 'queued' | 'offline'
/** What the button sends when there is no conversation yet: phrases the bot hands off on. */
const HANDOFF_WORDS = { en: 'talk to a human', zh: '转人工' };
let queueTimer = 0;
const QUEUE_POLL_MS = 5000;

list.botActions = {
  feedback: (m, helpful) => chat.feedback(m.conversation_id, m.seq, helpful),
  ask: (text) => sendText(text),
};

chat.on('stream', (f) => {
  const stick = nearEnd();
  list.stream(f);
  if (stick) scrollToEnd();
});

/** Follows the bot's part in a conversation from its live messages. */
function onBotMessage(m) {
  const c = chat.convs.get(m.conversation_id);
  const source = m.bot_source || {};
  if (source.kind === 'notice' && source.action === 'handed_off') {
    if (c) c.bot_active = false;
    if (!c?.assigned_agent) setHandoff('queued');
  } else if (source.kind === 'notice' && source.action === 'offline_form') {
    setHandoff('offline');
  } else if (c && c.bot_active == null && source.kind !== 'api') {
    c.bot_active = true;
  }
  renderBotBar();
}

function setHandoff(state) {
  handoff = state;
  clearTimeout(queueTimer);
  if (state === 'offline') {
    $('offline').hidden = false;
  }
  if (state === 'queued') pollQueue();
  renderBotBar();
}

async function pollQueue() {
  const c = chat.openConversation();
  if (!c || handoff !== 'queued') return;
  try {
    const position = await chat.queuePosition(c.id);
    if (handoff === 'queued') {
      $('handoff-state').textContent = position ? t('queuedAt', { n: position }) : t('queued');
    }
  } catch {
    // The line keeps its last text; the next poll tries again.
  }
  if (handoff === 'queued') queueTimer = setTimeout(pollQueue, QUEUE_POLL_MS);
}

/**
 * "Talk to a human" while the bot has the open conversation (or, on a site whose bot answers,
 * before the first message), and the handoff's state.
 */
function renderBotBar() {
  const c = chat.openConversation();
  const botActive = c ? Boolean(c.bot_active) : Boolean(config?.bot && chat.visitorId !== null);
  $('btn-human').hidden = !botActive || handoff === 'connecting';
  const state = $('handoff-state');
  if (handoff === 'connecting') state.textContent = t('connectingHuman');
  else if (handoff === 'queued' && !state.textContent) state.textContent = t('queued');
  else if (handoff === 'offline') state.textContent = t('offlineHuman');
  else if (!handoff) state.textContent = '';
  state.hidden = !handoff;
  $('botbar').hidden = !botActive && !handoff;
}

$('btn-human').addEventListener('click', () => {
  if (chat.openConversation()) {
    if (chat.handoff()) setHandoff('connecting');
    return;
  }
  // No conversation yet: asking in words starts one, and the bot hands it over at once.
  sendText(locale().startsWith('zh') ? HANDOFF_WORDS.zh : HANDOFF_WORDS.en);
  setHandoff('connecting');
});


// --- Visibility, unread and attention -----------------------------------------

function visible() {
  return shown && document.visibilityState === 'visible';
}

/** Marks messages read while visible; otherwise reports unread counts (badge, title blink). */
function attention() {
  if (visible()) {
    unread = 0;
    stopBlink();
    chat.markRead();
  } else if (unread && !embed) {
    blinkTitle(t('newMessage'));
  }
  if (unread !== reportedUnread) toHost('unread', { count: unread, blink: settings.blink });
  reportedUnread = unread;
}

document.addEventListener('visibilitychange', attention);
window.addEventListener('online', () => chat.hurry());

// --- Scrolling and older history ----------------------------------------------

function nearEnd() {
  return log.scrollHeight - log.scrollTop - log.clientHeight < 80;
}

function scrollToEnd() {
  log.scrollTop = log.scrollHeight;
}

async function loadOlder() {
  if (olderState !== 'idle' || !chat.convs.size) return;
  olderState = 'loading';
  $('older').hidden = false;
  const more = await chat.loadOlder().catch(() => true);
  $('older').hidden = true;
  olderState = more ? 'idle' : 'done';
}

/** Keeps loading earlier pages until the log can scroll (the scroll event needs a scrollbar). */
function fillViewport() {
  if (olderState === 'idle' && log.clientHeight && log.scrollHeight <= log.clientHeight) loadOlder();
}

log.addEventListener('scroll', () => {
  if (log.scrollTop < 40) loadOlder();
});

// --- Composer -----------------------------------------------------------------

function sendText(text) {
  $('rating').hidden = true;
  $('rated').hidden = true;
  const entry = chat.send({ text });
  list.addPending(entry);
  scrollToEnd();
}

$('composer').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = input.value.trim();
  if (!text) return;
  sendText(text);
  input.value = '';
  autosize();
  chat.typing(false);
  $('emoji-picker').hidden = true;
});

input.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $('composer').requestSubmit();
  }
});

input.addEventListener('input', () => {
  autosize();
  chat.typing(Boolean(input.value.trim()));
  clearTimeout(idleTimer);
  idleTimer = setTimeout(() => chat.typing(false), 4000);
});

function autosize() {
  input.style.height = 'auto';
  input.style.height = `${Math.min(input.scrollHeight, 120)}px`;
}

mountEmojiPicker($('emoji-picker'), (emoji) => {
  input.setRangeText(emoji, input.selectionStart, input.selectionEnd, 'end');
  input.focus();
  autosize();
});

$('btn-emoji').addEventListener('click', () => toggle('emoji-picker', 'btn-emoji'));

$('btn-attach').addEventListener('click', () => {
  if (chat.openConversation()) $('file').click();
  else showNotice(t('attachNeedsChat'));
});

$('file').addEventListener('change', async () => {
  const file = $('file').files[0];
  $('file').value = '';
  if (!file) return;
  const limit = config?.max_upload_bytes;
  if (limit && file.size > limit) return showNotice(t('fileTooLarge', { limit: megabytes(limit) }));
  showNotice(t('uploading', { name: isolated(shownFileName(file.name)) }));
  try {
    const attachment = await chat.upload(file);
    showNotice('');
    list.addPending(chat.send({ kind: attachment.kind === 'image' ? 'image' : 'file', attachment }));
    scrollToEnd();
  } catch (err) {
    // The server's refusal of a file over the limit, in the visitor's language.
    if (err.code === 'too_large' && limit) showNotice(t('fileTooLarge', { limit: megabytes(limit) }));
    else showNotice(t('uploadFailed', { reason: err.message }));
  }
});

/** A byte count as the visitor reads it: "10 MB" (the unit is the same in both languages). */
function megabytes(bytes) {
  const mb = bytes / (1024 * 1024);
  return `${new Intl.NumberFormat(locale(), { maximumFractionDigits: mb < 10 ? 1 : 0 }).format(mb)} MB`;
}

// --- Header: settings and close -----------------------------------------------

function toggle(panelId, buttonId) {
  const el = $(panelId);
  el.hidden = !el.hidden;
  $(buttonId).setAttribute('aria-expanded', String(!el.hidden));
}

$('btn-settings').addEventListener('click', () => toggle('settings', 'btn-settings'));

$('transcript').addEventListener('submit', async (e) => {
  e.preventDefault();
  const email = e.target.elements.email.value.trim();
  const done = $('transcript-done');
  done.hidden = true;
  if (!chat.conversations().length) {
    showNotice(t('transcriptNone'));
    return;
  }
  try {
    await chat.emailTranscript(email, locale());
    done.textContent = t('transcriptSent', { email });
    done.hidden = false;
  } catch (err) {
    showNotice(t('requestFailed', { reason: err.message }));
  }
});

for (const [id, key] of [['set-sound', 'sound'], ['set-blink', 'blink']]) {
  $(id).checked = settings[key];
  $(id).addEventListener('change', () => {
    settings[key] = $(id).checked;
    saveSettings();
  });
}

$('btn-close').addEventListener('click', () => {
  toHost('close');
  setShown(false);
});

// --- Forms: pre-chat, offline message, rating ---------------------------------

function formData(form) {
  return Object.fromEntries([...new FormData(form)].map(([k, v]) => [k, String(v).trim()]));
}

$('prechat').addEventListener('submit', async (e) => {
  e.preventDefault();
  const { name, email, question } = formData(e.target);
  e.target.hidden = true;
  if (question) list.addPending(chat.send({ text: question }));
  await chat.start({ name, email });
});

$('offline').addEventListener('submit', async (e) => {
  e.preventDefault();
  const form = e.target;
  const button = form.querySelector('button');
  button.disabled = true;
  try {
    await chat.leaveOfflineMessage({ ...formData(form), lang: locale() });
    form.replaceChildren(h('p', { class: 'kf-thanks' }, t('offlineThanks')));
  } catch (err) {
    showNotice(t('requestFailed', { reason: err.message }));
    button.disabled = false;
  }
});

let rating = { conversationId: null, score: 0 };

function renderStars() {
  $('stars').replaceChildren(...[1, 2, 3, 4, 5].map((n) => h('button', {
    type: 'button',
    role: 'radio',
    class: n <= rating.score ? 'kf-star kf-on' : 'kf-star',
    'aria-checked': String(n === rating.score),
    'aria-label': t('star', { n }),
    'data-score': String(n),
  }, '★')));
}

function showRating(conversationId) {
  rating = { conversationId, score: 0 };
  const form = $('rating');
  form.querySelector('button[type=submit]').disabled = true;
  $('rate-comment').value = '';
  $('rated').hidden = true;
  form.hidden = false;
  renderStars();
}

$('stars').addEventListener('click', (e) => {
  const star = e.target.closest('[data-score]');
  if (!star) return;
  rating.score = Number(star.dataset.score);
  renderStars();
  $('rating').querySelector('button[type=submit]').disabled = false;
});

$('rating').addEventListener('submit', async (e) => {
  e.preventDefault();
  const form = e.target;
  try {
    await chat.rate(rating.conversationId, rating.score, $('rate-comment').value.trim());
    form.hidden = true;
    $('rated').hidden = false;
    scrollToEnd();
  } catch (err) {
    showNotice(t('requestFailed', { reason: err.message }));
  }
});

// --- Go -------------------------------------------------------------------------

document.addEventListener('pointerdown', unlockAudio, { once: true });
document.addEventListener('keydown', unlockAudio, { once: true });
document.documentElement.lang = locale();
document.documentElement.classList.toggle('kf-embed', embed);
$('btn-close').hidden = !embed;
applyI18n(document);
setStatus('connecting');

if (embed) {
  window.addEventListener('message', onHostMessage);
  toHost('ready');
} else {
  boot(true);
}
