// app.js: the agent console. Plain ES modules, no build step. Everything a
// person typed is put on the page with textContent (see h()), never as HTML.
//
// State lives in `state`; the WebSocket (connection.js) feeds frames into
// onFrame(), HTTP fills lists, history pages, profiles and runs actions. The
// conversation list and the message list are virtual (vlist.js), so 500 open
// conversations and 10,000 messages in one conversation stay responsive.

import { t, apply, setLanguage, language } from './i18n.js';
import { VirtualList } from './vlist.js';
import { Connection } from './connection.js';

const $ = (id) => document.getElementById(id);
const HISTORY_PAGE = 200;
const CLOSED_PAGE = 50;
const EMOJI = ['😀', '😁', '😂', '😊', '😍', '😉', '🙂', '🤔', '😅', '😢', '👍', '👏', '🙏', '👌', '👋', '🤝', '🎉', '❤️', '🔥', '⭐',
  '✅', '❌', '❓', '💯', '🎁', '📦', '🚚', '💰', '🛒', '⏰'];

/** An element with attributes and children; strings become text nodes, never HTML. */
function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') element.className = value;
    else if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/**
 * Text someone typed (a name, an email, a page title), inside running text: a <bdi> isolates its
 * direction, so a right-to-left override in it cannot reorder the text around it.
 */
function bdi(text) {
  return h('bdi', {}, text ?? '');
}

/**
 * Someone's text inside a string where no element can go (an <option>, a notification): wrapped in
 * first-strong isolate ... pop directional isolate, the text form of <bdi>.
 */
function isolated(text) {
  return `\u2068${text ?? ''}\u2069`;
}

/** Bidi controls (embeddings, overrides, isolates, marks) that can make "gpj.exe" read "exe.jpg". */
const BIDI_CONTROLS = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/** A file name as it is shown: its bidi controls replaced, so the extension shown is the real one. */
function shownFileName(name) {
  return (name || 'file').replace(BIDI_CONTROLS, '\ufffd');
}

const state = {
  me: null,
  list: 'mine',
  conversations: new Map(),
  open: [], // conversation ids with a tab, in tab order
  active: null,
  agents: new Map(),
  teams: [],
  visitors: new Map(),
  closed: { ids: [], cursor: null, done: false, loading: false },
  canned: new Map(), // site -> replies
  cannedChoices: [],
  cannedIndex: 0,
};

let connection = null;
let conversationList = null;
let messageList = null;
let audio = null;

// ---------------------------------------------------------------------------
// HTTP

async function api(method, path, body) {
  const init = { method, credentials: 'same-origin', headers: {} };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) {
    const error = new Error(json?.error?.message || `HTTP ${response.status}`);
    error.status = response.status;
    error.code = json?.error?.code;
    throw error;
  }
  return json;
}

// ---------------------------------------------------------------------------
// Conversations

function conversationOf(view) {
  let c = state.conversations.get(view.id);
  if (!c) {
    c = {
      id: view.id, visitor_name: `Visitor #${view.visitor_id}`, read_seq: 0, unread: 0, preview: '',
      messages: null, sorted: [], pending: new Map(), nextBefore: undefined, seen: 0, visitorRead: 0, typingUntil: 0,
      readSent: 0, loadingOlder: false,
    };
    state.conversations.set(view.id, c);
  }
  const wasLast = c.last_seq ?? 0;
  Object.assign(c, {
    site: view.site, visitor_id: view.visitor_id, status: view.status, assigned_agent: view.assigned_agent,
    epoch: view.epoch, created_at: view.created_at,
  });
  c.last_seq = Math.max(wasLast, view.last_seq ?? 0);
  c.updated_at = Math.max(c.updated_at ?? 0, view.updated_at ?? 0);
  if (view.visitor_name) c.visitor_name = view.visitor_name;
  if ('team' in view) c.team = view.team;
  if (view.read_seq !== undefined) {
    c.read_seq = Math.max(c.read_seq, view.read_seq);
    c.unread = Math.max(0, c.last_seq - c.read_seq);
  }
  return c;
}

function isMine(c) {
  return c.assigned_agent === state.me.id && c.status !== 'closed';
}

function inList(c, list) {
  if (list === 'queued') return c.status === 'queued';
  if (list === 'mine') return isMine(c);
  if (list === 'open') return c.status !== 'closed';
  return false;
}

function listItems() {
  if (state.list === 'visitors') return [...state.visitors.values()].map((v) => ({ visitor: v }));
  if (state.list === 'closed') return state.closed.ids.map((id) => state.conversations.get(id)).filter(Boolean);
  const items = [...state.conversations.values()].filter((c) => inList(c, state.list));
  if (state.list === 'queued') items.sort((a, b) => a.id - b.id);
  else items.sort((a, b) => b.updated_at - a.updated_at || b.id - a.id);
  return items;
}

let listFrame = 0;
function renderLists() {
  if (listFrame) return;
  listFrame = requestAnimationFrame(() => {
    listFrame = 0;
    const all = [...state.conversations.values()];
    const counts = {
      queued: all.filter((c) => c.status === 'queued').length,
      mine: all.filter(isMine).length,
      open: all.filter((c) => c.status !== 'closed').length,
      visitors: state.visitors.size,
    };
    for (const element of document.querySelectorAll('[data-count]')) element.textContent = counts[element.dataset.count];
    for (const button of document.querySelectorAll('.list-tabs button')) {
      button.setAttribute('aria-selected', String(button.dataset.list === state.list));
    }
    for (const node of conversationList.nodes.values()) node.remove();
    conversationList.nodes.clear();
    conversationList.setItems(listItems(), { anchor: 'keep' });
    const unread = all.filter((c) => c.status !== 'closed').reduce((sum, c) => sum + c.unread, 0);
    document.title = unread ? `(${unread}) kefu` : 'kefu';
    renderTabs();
  });
}

function statusText(c) {
  return t(`status_${c.status}`);
}

function holderName(c) {
  if (!c.assigned_agent) return '';
  if (c.assigned_agent === state.me.id) return t('you');
  return state.agents.get(c.assigned_agent)?.name ?? `#${c.assigned_agent}`;
}

function renderRow(item) {
  if (item.visitor) {
    const v = item.visitor;
    return h('div', { class: 'row', 'data-visitor': v.visitor_id },
      h('div', { class: 'top' }, h('span', { class: 'name', dir: 'auto' }, v.name),
        h('span', { class: 'pill' }, v.returning ? t('returning') : t('new_visitor'))),
      h('div', { class: 'preview', dir: 'auto' }, v.title || v.url),
      h('div', { class: 'meta' }, bdi(v.browser), ` · ${v.ip}`, v.referrer ? [' · ', bdi(v.referrer)] : null),
      h('button', { type: 'button', class: 'chat-visitor', onclick: (event) => { event.stopPropagation(); startChat(v.visitor_id); } }, t('chat')));
  }
  const c = item;
  return h('div', { class: `row${c.id === state.active ? ' active' : ''}`, 'data-conversation': c.id, onclick: () => openConversation(c.id) },
    h('div', { class: 'top' },
      h('span', { class: 'name', dir: 'auto' }, c.visitor_name),
      h('span', { class: `pill ${c.status}` }, statusText(c)),
      c.unread > 0 && c.status !== 'closed' ? h('span', { class: 'badge' }, c.unread > 99 ? '99+' : c.unread) : null),
    h('div', { class: 'preview', dir: 'auto' }, c.preview || ''),
    h('div', { class: 'meta' }, `#${c.id}`, c.assigned_agent ? [` · ${t('held_by')} `, bdi(holderName(c))] : null));
}

async function loadOpenList() {
  let cursor = '';
  for (;;) {
    const page = await api('GET', `/api/v1/conversations?state=open&limit=200${cursor}`);
    for (const view of page.conversations) conversationOf(view);
    if (!page.next_cursor) break;
    cursor = `&cursor=${page.next_cursor}`;
  }
  renderLists();
}

async function loadClosedPage() {
  const closed = state.closed;
  if (closed.loading || closed.done) return;
  closed.loading = true;
  try {
    const cursor = closed.cursor ? `&cursor=${closed.cursor}` : '';
    const page = await api('GET', `/api/v1/conversations?state=closed&limit=${CLOSED_PAGE}${cursor}`);
    for (const view of page.conversations) {
      conversationOf(view);
      if (!closed.ids.includes(view.id)) closed.ids.push(view.id);
    }
    closed.cursor = page.next_cursor;
    closed.done = !page.next_cursor;
  } finally {
    closed.loading = false;
  }
  renderLists();
}

// ---------------------------------------------------------------------------
// Messages

function messageKey(m) {
  return `${m.conversation_id}:${m.seq ?? m.client_id}`;
}

function addMessage(c, m) {
  if (!c.messages) return;
  if (c.messages.has(m.seq)) return; // every message once, by seq
  c.messages.set(m.seq, m);
  if (m.client_id) c.pending.delete(m.client_id);
  const last = c.sorted[c.sorted.length - 1];
  if (!last || last.seq < m.seq) c.sorted.push(m);
  else c.sorted = [...c.messages.values()].sort((a, b) => a.seq - b.seq);
  c.seen = Math.max(c.seen, m.seq);
  c.last_seq = Math.max(c.last_seq, m.seq);
}

function messageItems(c) {
  return [...c.sorted, ...c.pending.values()];
}

function renderMessage(m) {
  const c = state.conversations.get(m.conversation_id);
  const kind = m.sender?.kind ?? 'agent';
  const classes = ['msg'];
  if (m.internal) classes.push('internal');
  else if (kind === 'agent') classes.push('out');
  else if (kind === 'system') classes.push('system');
  if (m.pending) classes.push('pending');
  let body;
  if (m.kind === 'image' && m.attachment?.url) {
    body = h('a', { href: m.attachment.url, target: '_blank', rel: 'noopener' }, h('img', { src: m.attachment.url, alt: shownFileName(m.attachment.name) }));
  } else if (m.kind === 'file' && m.attachment?.url) {
    const name = shownFileName(m.attachment.name);
    body = h('a', { href: m.attachment.url, target: '_blank', rel: 'noopener', download: name }, '📎 ', h('bdi', { class: 'file-name' }, name));
  } else {
    body = m.text;
  }
  const time = m.created_at ? new Date(m.created_at).toLocaleTimeString(language, { hour: '2-digit', minute: '2-digit' }) : '';
  const receipt = m.pending ? t('sending') : (kind === 'agent' && !m.internal && c && m.seq <= c.visitorRead ? `✓✓ ${t('read')}` : '');
  return h('div', { class: classes.join(' '), 'data-seq': m.seq ?? '' },
    h('span', { class: 'who' }, m.internal ? `📝 ${t('internal_note')} · ` : '', bdi(m.sender?.name), ` ${time} ${receipt}`),
    h('div', { class: 'bubble', dir: 'auto' }, body));
}

function renderMessages(anchor = 'auto') {
  const c = state.conversations.get(state.active);
  if (!c || !c.messages) return;
  messageList.setItems(messageItems(c), { anchor });
}

async function loadHistory(c, before) {
  const query = before ? `&before=${before}` : '';
  const page = await api('GET', `/api/v1/conversations/${c.id}/messages?limit=${HISTORY_PAGE}${query}`);
  c.epoch = page.epoch;
  if (!before || c.nextBefore === undefined || (page.next_before ?? 0) < c.nextBefore) c.nextBefore = page.next_before;
  if (before === undefined && page.next_before === null) c.nextBefore = null;
  for (const m of page.messages) addMessage(c, m);
  c.last_seq = Math.max(c.last_seq, page.last_seq);
  c.seen = Math.max(c.seen, page.last_seq);
}

async function loadOlder() {
  const c = state.conversations.get(state.active);
  if (!c || !c.messages || c.loadingOlder || !c.nextBefore) return;
  c.loadingOlder = true;
  try {
    const page = await api('GET', `/api/v1/conversations/${c.id}/messages?limit=${HISTORY_PAGE}&before=${c.nextBefore}`);
    c.nextBefore = page.next_before;
    for (const m of page.messages) c.messages.set(m.seq, m);
    c.sorted = [...c.messages.values()].sort((a, b) => a.seq - b.seq);
    if (state.active === c.id) messageList.setItems(messageItems(c), { anchor: 'keep' });
  } finally {
    c.loadingOlder = false;
  }
}

/** Follows a conversation: subscribe from what we know, then read the newest page. */
async function follow(c) {
  if (c.messages) return;
  c.messages = new Map();
  c.sorted = [];
  c.seen = c.last_seq;
  connection.send({ type: 'resume', conversation_id: c.id, last_seq: c.last_seq, epoch: c.epoch });
  await loadHistory(c);
}

function markRead() {
  const c = state.conversations.get(state.active);
  if (!c || !c.messages || document.hidden || !document.hasFocus()) return;
  if (c.seen > c.readSent) {
    c.readSent = c.seen;
    connection.send({ type: 'read', conversation_id: c.id, seq: c.seen });
  }
  if (c.unread) {
    c.unread = 0;
    renderLists();
  }
}

// ---------------------------------------------------------------------------
// Panes

async function openConversation(id) {
  const c = state.conversations.get(id);
  if (!c) return;
  if (!state.open.includes(id)) state.open.push(id);
  state.active = id;
  $('empty').hidden = true;
  $('pane').hidden = false;
  renderPane();
  renderLists();
  messageList.setItems([], { anchor: 'bottom' });
  try {
    await follow(c);
  } catch (error) {
    showError(error.message);
  }
  if (state.active !== id) return;
  renderMessages('bottom');
  markRead();
  loadVisitorPanel(c);
  $('input').focus();
}

function closePane(id = state.active) {
  const index = state.open.indexOf(id);
  if (index < 0) return;
  state.open.splice(index, 1);
  if (state.active === id) {
    state.active = state.open[Math.min(index, state.open.length - 1)] ?? null;
    if (state.active) openConversation(state.active);
    else {
      $('pane').hidden = true;
      $('empty').hidden = false;
    }
  }
  renderLists();
}

function renderTabs() {
  $('tabs').replaceChildren(...state.open.map((id) => {
    const c = state.conversations.get(id);
    return h('button', { type: 'button', class: `tab${id === state.active ? ' active' : ''}`, 'data-tab': id, onclick: () => openConversation(id) },
      h('span', { class: 'tab-name', dir: 'auto' }, c?.visitor_name ?? `#${id}`),
      c?.unread ? h('span', { class: 'badge' }, c.unread) : null,
      h('span', { class: 'x', role: 'button', 'aria-label': 'close', onclick: (event) => { event.stopPropagation(); closePane(id); } }, '×'));
  }));
}

function renderPane() {
  const c = state.conversations.get(state.active);
  if (!c) return;
  $('pane-title').replaceChildren(bdi(c.visitor_name), ` · #${c.id}`);
  $('pane-title').title = c.visitor_name;
  $('pane-status').replaceChildren(statusText(c), ...(c.assigned_agent ? [` · ${t('held_by')} `, bdi(holderName(c))] : []));
  $('pane-typing').textContent = c.typingUntil > Date.now() ? t('typing') : '';
  $('act-take').hidden = c.status === 'closed' || c.assigned_agent === state.me.id;
  $('act-transfer').hidden = c.status === 'closed';
  $('act-close').hidden = c.status === 'closed';
  $('act-reopen').hidden = c.status !== 'closed';
  $('composer').hidden = c.status === 'closed';
}

async function loadVisitorPanel(c) {
  try {
    const [profile, earlier] = await Promise.all([
      api('GET', `/api/v1/visitors/${c.visitor_id}`),
      api('GET', `/api/v1/visitors/${c.visitor_id}/conversations`),
    ]);
    if (state.active !== c.id) return;
    const online = profile.online;
    const rows = [
      [t('name'), profile.name], [t('email'), profile.email ?? ''],
      ...(profile.user_id ? [[t('user_id'), `${profile.user_id} · ${t('verified')}`]] : []),
      ...(profile.unverified_user_id ? [[t('user_id'), `${profile.unverified_user_id} · ${t('unverified')}`]] : []), [t('page'), online?.url ?? profile.last_page?.url ?? ''],
      [t('referrer'), online?.referrer ?? profile.last_page?.referrer ?? ''], [t('browser'), online?.browser ?? ''],
      [t('ip'), online?.ip ?? ''], [t('sessions'), `${profile.n_sessions} (${profile.returning ? t('returning') : t('new_visitor')})`],
      [t('blocked'), profile.blocked ? t('yes') : t('no')],
      ...Object.entries(profile.attributes ?? {}).map(([key, value]) => [key, typeof value === 'string' ? value : JSON.stringify(value)]),
    ];
    $('visitor-info').replaceChildren(...rows.flatMap(([key, value]) => [h('dt', { dir: 'auto' }, key), h('dd', { dir: 'auto' }, value)]));
    $('visitor-history').replaceChildren(...earlier.filter((e) => e.id !== c.id).map((e) => {
      conversationOf(e);
      return h('li', { onclick: () => openConversation(e.id) }, `#${e.id} · ${new Date(e.created_at).toLocaleDateString(language)} · ${t(`status_${e.status}`)}`);
    }));
  } catch (error) {
    $('visitor-info').replaceChildren(h('dd', {}, error.message));
  }
}

// ---------------------------------------------------------------------------
// Frames

function onFrame(frame) {
  switch (frame.type) {
    case 'welcome': {
      const listed = new Set();
      for (const view of frame.conversations) {
        conversationOf(view);
        listed.add(view.id);
      }
      for (const c of state.conversations.values()) {
        if (c.status !== 'closed' && !listed.has(c.id)) c.status = 'closed';
      }
      loadOpenList().catch((error) => showError(error.message));
      loadAgents();
      loadVisitors();
      renderLists();
      if (state.active) renderPane();
      break;
    }
    case 'conversation': {
      const c = conversationOf(frame.conversation);
      if (frame.event === 'created' && c.status === 'queued') notify(t('new_conversation'), c.visitor_name, c.id);
      if (frame.event === 'closed' && !state.closed.ids.includes(c.id)) state.closed.ids.unshift(c.id);
      if (frame.event === 'reopened') state.closed.ids = state.closed.ids.filter((id) => id !== c.id);
      if (c.visitor_name.startsWith('Visitor #')) {
        api('GET', `/api/v1/visitors/${c.visitor_id}`).then((profile) => { c.visitor_name = profile.name; renderLists(); }).catch(() => {});
      }
      renderLists();
      if (c.id === state.active) renderPane();
      break;
    }
    case 'activity': {
      for (const item of frame.items) {
        const c = state.conversations.get(item.conversation_id);
        if (!c) continue;
        c.last_seq = Math.max(c.last_seq, item.seq);
        c.updated_at = Math.max(c.updated_at, item.created_at);
        c.preview = `${item.internal ? '📝 ' : ''}${item.preview}`;
        if (item.sender_kind === 'visitor') {
          const watching = c.id === state.active && !document.hidden && document.hasFocus();
          if (!watching && item.seq > c.read_seq) c.unread += 1;
          if (!watching && (isMine(c) || c.status === 'queued')) notify(t('new_message'), `${isolated(c.visitor_name)}: ${item.preview}`, c.id);
        }
      }
      renderLists();
      break;
    }
    case 'message': {
      const c = state.conversations.get(frame.conversation_id);
      if (!c) break;
      addMessage(c, frame);
      if (frame.sender?.kind === 'visitor') c.typingUntil = 0;
      if (c.id === state.active) {
        renderMessages();
        renderPane();
        markRead();
      }
      break;
    }
    case 'ack': {
      const c = state.conversations.get(frame.conversation_id);
      if (!c) break;
      const pending = c.pending.get(frame.client_id);
      c.pending.delete(frame.client_id);
      if (pending) {
        addMessage(c, { ...pending, pending: false, seq: frame.seq, text: frame.text, created_at: frame.created_at, epoch: frame.epoch });
      }
      c.readSent = Math.max(c.readSent, frame.seq);
      connection.send({ type: 'read', conversation_id: c.id, seq: frame.seq });
      if (c.id === state.active) renderMessages('bottom');
      break;
    }
    case 'reset': {
      const c = state.conversations.get(frame.conversation_id);
      if (!c || !c.messages) break;
      // The server could not replay: reload the newest history; later messages arrive live.
      c.messages = new Map();
      c.sorted = [];
      c.epoch = frame.epoch;
      c.nextBefore = undefined;
      loadHistory(c).then(() => { if (c.id === state.active) renderMessages('bottom'); }).catch((error) => showError(error.message));
      break;
    }
    case 'typing': {
      const c = state.conversations.get(frame.conversation_id);
      if (!c || frame.sender.kind !== 'visitor') break;
      c.typingUntil = frame.active ? Date.now() + 6000 : 0;
      if (c.id === state.active) renderPane();
      break;
    }
    case 'read': {
      const c = state.conversations.get(frame.conversation_id);
      if (!c) break;
      if (frame.reader.kind === 'visitor' && frame.seq > c.visitorRead) {
        c.visitorRead = frame.seq;
        if (c.id === state.active) {
          for (const m of c.sorted) if (m.sender?.kind === 'agent' && m.seq <= frame.seq) messageList.refresh(messageKey(m));
        }
      } else if (frame.reader.kind === 'agent' && frame.reader.id === state.me.id) {
        c.read_seq = Math.max(c.read_seq, frame.seq);
        if (c.read_seq >= c.last_seq && c.unread) {
          c.unread = 0;
          renderLists();
        }
      }
      break;
    }
    case 'presence': {
      const agent = state.agents.get(frame.agent_id);
      if (agent) agent.presence = frame.status;
      if (frame.agent_id === state.me.id && frame.status !== 'offline') $('presence').value = frame.status;
      renderAgents();
      break;
    }
    case 'visitor': {
      if (frame.event === 'offline') state.visitors.delete(frame.visitor.visitor_id);
      else state.visitors.set(frame.visitor.visitor_id, frame.visitor);
      renderLists();
      break;
    }
    case 'error':
      showError(`${frame.code}: ${frame.message}`);
      break;
    default:
      break;
  }
}

// ---------------------------------------------------------------------------
// Agents, teams, visitors

async function loadAgents() {
  try {
    for (const agent of await api('GET', '/api/v1/agents')) state.agents.set(agent.id, agent);
    state.teams = await api('GET', '/api/v1/teams');
  } catch (error) {
    showError(error.message);
  }
  renderAgents();
}

function renderAgents() {
  const agents = [...state.agents.values()].sort((a, b) => a.name.localeCompare(b.name));
  $('agents').replaceChildren(...agents.map((agent) => h('li', { 'data-presence': agent.presence, 'data-agent': agent.id },
    bdi(agent.name), `${agent.id === state.me.id ? ` (${t('you')})` : ''} · ${t(agent.presence)}`)));
}

async function loadVisitors() {
  try {
    state.visitors.clear();
    for (const visitor of await api('GET', '/api/v1/visitors/online')) state.visitors.set(visitor.visitor_id, visitor);
  } catch (error) {
    showError(error.message);
  }
  renderLists();
}

async function startChat(visitorId) {
  try {
    const view = await api('POST', `/api/v1/visitors/${visitorId}/conversations`);
    const c = conversationOf(view);
    c.visitor_name = state.visitors.get(visitorId)?.name ?? c.visitor_name;
    await openConversation(view.id);
  } catch (error) {
    showError(error.message);
  }
}

// ---------------------------------------------------------------------------
// Actions

function activeConversation() {
  return state.conversations.get(state.active);
}

function openTransfer() {
  const c = activeConversation();
  if (!c) return;
  const options = [];
  for (const agent of state.agents.values()) {
    if (agent.id === state.me.id || !(agent.role === 'admin' || agent.sites.includes(c.site))) continue;
    options.push(h('option', { value: `agent:${agent.id}` }, `${t('agent_prefix')}: ${isolated(agent.name)} (${t(agent.presence)})`));
  }
  for (const team of state.teams.filter((team) => team.site === c.site)) {
    options.push(h('option', { value: `team:${team.id}` }, `${t('team_prefix')}: ${isolated(team.name)}`));
  }
  $('transfer-target').replaceChildren(...options);
  $('transfer-note').value = '';
  $('transfer-error').textContent = '';
  $('transfer-dialog').showModal();
}

async function submitTransfer(event) {
  event.preventDefault();
  const c = activeConversation();
  const [kind, id] = $('transfer-target').value.split(':');
  const body = { note: $('transfer-note').value };
  body[kind === 'team' ? 'team_id' : 'agent_id'] = Number(id);
  try {
    conversationOf(await api('POST', `/api/v1/conversations/${c.id}/transfer`, body));
    $('transfer-dialog').close();
    renderPane();
    renderLists();
  } catch (error) {
    $('transfer-error').textContent = error.message;
  }
}

async function submitBlock(event) {
  event.preventDefault();
  const c = activeConversation();
  try {
    await api('POST', `/api/v1/visitors/${c.visitor_id}/block`, { ip: $('block-ip').checked });
    $('block-dialog').close();
    loadVisitorPanel(c);
  } catch (error) {
    $('block-error').textContent = error.message;
  }
}

async function reopen() {
  const c = activeConversation();
  try {
    conversationOf(await api('POST', `/api/v1/conversations/${c.id}/reopen`));
    renderPane();
    renderLists();
  } catch (error) {
    showError(error.message);
  }
}

// ---------------------------------------------------------------------------
// Composer

let typingSentAt = 0;
let typingTimer = 0;

function sendText() {
  const c = activeConversation();
  const input = $('input');
  const text = input.value.trim();
  if (!c || !text) return;
  const internal = $('internal').checked;
  const clientId = crypto.randomUUID();
  c.pending.set(clientId, {
    conversation_id: c.id, client_id: clientId, text, internal, pending: true, created_at: Date.now(),
    sender: { kind: 'agent', id: state.me.id, name: state.me.name },
  });
  connection.sendMessage({ type: 'send', client_id: clientId, conversation_id: c.id, text, internal });
  input.value = '';
  closeCanned();
  stopTyping();
  renderMessages('bottom');
}

function onTyping() {
  const c = activeConversation();
  if (!c || $('internal').checked) return;
  const now = Date.now();
  if (now - typingSentAt > 1000) {
    typingSentAt = now;
    connection.send({ type: 'typing', conversation_id: c.id, active: true });
  }
  clearTimeout(typingTimer);
  typingTimer = setTimeout(stopTyping, 3000);
}

function stopTyping() {
  clearTimeout(typingTimer);
  if (!typingSentAt) return;
  typingSentAt = 0;
  const c = activeConversation();
  if (c) connection.send({ type: 'typing', conversation_id: c.id, active: false });
}

async function cannedFor(site) {
  if (!state.canned.has(site)) state.canned.set(site, await api('GET', `/api/v1/canned-replies?site=${encodeURIComponent(site)}`));
  return state.canned.get(site);
}

async function updateCanned() {
  const value = $('input').value;
  const match = value.match(/^\/(\S*)$/);
  const c = activeConversation();
  if (!match || !c) return closeCanned();
  const replies = await cannedFor(c.site).catch(() => []);
  const prefix = match[1].toLowerCase();
  state.cannedChoices = replies.filter((reply) => reply.shortcut.toLowerCase().startsWith(prefix)).slice(0, 50);
  state.cannedIndex = 0;
  renderCanned();
}

function renderCanned() {
  const menu = $('canned-menu');
  if (!state.cannedChoices.length) return closeCanned();
  menu.hidden = false;
  menu.replaceChildren(...state.cannedChoices.map((reply, index) => h('div',
    { class: index === state.cannedIndex ? 'selected' : '', 'data-shortcut': reply.shortcut, onmousedown: (event) => { event.preventDefault(); chooseCanned(index); } },
    h('b', {}, '/', bdi(reply.shortcut)), bdi(reply.text))));
}

function closeCanned() {
  state.cannedChoices = [];
  $('canned-menu').hidden = true;
}

function chooseCanned(index) {
  const reply = state.cannedChoices[index];
  if (!reply) return;
  $('input').value = reply.text;
  closeCanned();
  $('input').focus();
}

async function uploadFile(file) {
  const c = activeConversation();
  if (!c || !file) return;
  try {
    const response = await fetch(`/api/v1/uploads?conversation_id=${c.id}&name=${encodeURIComponent(file.name)}`, {
      method: 'POST', credentials: 'same-origin', headers: { 'Content-Type': file.type || 'application/octet-stream' }, body: file,
    });
    const upload = await response.json();
    if (!response.ok) throw new Error(upload?.error?.message || `HTTP ${response.status}`);
    const clientId = crypto.randomUUID();
    c.pending.set(clientId, {
      conversation_id: c.id, client_id: clientId, kind: upload.kind, attachment: upload, text: upload.name, internal: $('internal').checked,
      pending: true, created_at: Date.now(), sender: { kind: 'agent', id: state.me.id, name: state.me.name },
    });
    connection.sendMessage({ type: 'send', client_id: clientId, conversation_id: c.id, kind: upload.kind, attachment_id: upload.id, internal: $('internal').checked });
    renderMessages('bottom');
  } catch (error) {
    showError(`${t('upload_failed')}: ${error.message}`);
  }
}

// ---------------------------------------------------------------------------
// Attention: sound and desktop notifications when the tab is not focused

function unlockAudio() {
  const Context = window.AudioContext || window.webkitAudioContext;
  if (!audio && Context) audio = new Context();
  if (audio?.state === 'suspended') audio.resume();
}

function beep() {
  if (audio?.state !== 'running') return;
  const now = audio.currentTime;
  const oscillator = audio.createOscillator();
  const gain = audio.createGain();
  oscillator.frequency.value = 880;
  gain.gain.setValueAtTime(0.0001, now);
  gain.gain.exponentialRampToValueAtTime(0.2, now + 0.02);
  gain.gain.exponentialRampToValueAtTime(0.0001, now + 0.25);
  oscillator.connect(gain).connect(audio.destination);
  oscillator.start(now);
  oscillator.stop(now + 0.3);
}

/** Announced notifications, newest last (the browser tests read this). */
export const notifications = [];

function notify(title, body, conversationId) {
  if (!document.hidden && document.hasFocus()) return;
  beep();
  notifications.push({ title, body, conversationId });
  if (!('Notification' in window) || Notification.permission !== 'granted') return;
  const notification = new Notification(title, { body, tag: `kefu-${conversationId}` });
  notification.onclick = () => {
    window.focus();
    openConversation(conversationId);
  };
}

// ---------------------------------------------------------------------------
// Keyboard

const SHORTCUTS = [
  ['Alt+↓', 'k_next'], ['Alt+↑', 'k_prev'], ['Enter / Ctrl+Enter', 'k_send'], ['Esc', 'k_esc'], ['/', 'k_canned'],
  ['Alt+N', 'k_note'], ['Alt+1 … Alt+5', 'k_lists'], ['?', 'k_help'],
];

function showHelp() {
  $('help-table').replaceChildren(...SHORTCUTS.map(([keys, what]) => h('tr', {}, h('td', {}, keys), h('td', {}, t(what)))));
  $('help-dialog').showModal();
}

function moveInList(step) {
  const items = listItems().filter((item) => !item.visitor);
  if (!items.length) return;
  const index = items.findIndex((c) => c.id === state.active);
  const next = items[(index + step + items.length) % items.length] ?? items[0];
  openConversation(next.id);
}

function onKey(event) {
  const inField = ['INPUT', 'TEXTAREA', 'SELECT'].includes(event.target.tagName);
  if (event.altKey && event.key === 'ArrowDown') {
    event.preventDefault();
    moveInList(1);
  } else if (event.altKey && event.key === 'ArrowUp') {
    event.preventDefault();
    moveInList(-1);
  } else if (event.altKey && /^[1-5]$/.test(event.key)) {
    event.preventDefault();
    setList(['queued', 'mine', 'open', 'closed', 'visitors'][Number(event.key) - 1]);
  } else if (event.altKey && (event.key === 'n' || event.key === 'N')) {
    event.preventDefault();
    $('internal').checked = !$('internal').checked;
    $('composer').classList.toggle('internal', $('internal').checked);
  } else if (event.key === 'Escape' && !document.querySelector('dialog[open]')) {
    if (!$('canned-menu').hidden || !$('emoji-panel').hidden) {
      closeCanned();
      $('emoji-panel').hidden = true;
    } else if (state.active) {
      closePane();
    }
  } else if (event.key === '?' && !inField) {
    event.preventDefault();
    showHelp();
  }
}

function onComposerKey(event) {
  if (!$('canned-menu').hidden) {
    if (event.key === 'ArrowDown' || event.key === 'ArrowUp') {
      event.preventDefault();
      const n = state.cannedChoices.length;
      state.cannedIndex = (state.cannedIndex + (event.key === 'ArrowDown' ? 1 : -1) + n) % n;
      renderCanned();
      return;
    }
    if (event.key === 'Enter' || event.key === 'Tab') {
      event.preventDefault();
      chooseCanned(state.cannedIndex);
      return;
    }
  }
  if (event.key === 'Enter' && (event.ctrlKey || event.metaKey || !event.shiftKey)) {
    event.preventDefault();
    sendText();
  }
}

// ---------------------------------------------------------------------------
// Start

function showError(message) {
  console.warn('kefu console:', message);
  const element = $('connection');
  element.title = message;
}

function setList(list) {
  state.list = list;
  if (list === 'closed' && !state.closed.ids.length) loadClosedPage().catch((error) => showError(error.message));
  renderLists();
}

function resumePoints() {
  return [...state.conversations.values()]
    .filter((c) => c.messages)
    .map((c) => ({ conversation_id: c.id, last_seq: c.seen, epoch: c.epoch }));
}

async function startApp(me) {
  state.me = me;
  $('login').hidden = true;
  $('app').hidden = false;
  $('me').textContent = me.name;
  $('admin-link').hidden = me.role !== 'admin';
  conversationList = new VirtualList($('list'), { estimate: 60, fixed: true, key: (item) => (item.visitor ? `v${item.visitor.visitor_id}` : `c${item.id}`), render: renderRow });
  messageList = new VirtualList($('messages'), { estimate: 56, key: messageKey, render: renderMessage });
  $('list').addEventListener('scroll', () => {
    const list = $('list');
    if (state.list === 'closed' && list.scrollTop + list.clientHeight > list.scrollHeight - 200) loadClosedPage().catch(() => {});
  });
  $('messages').addEventListener('scroll', () => {
    if ($('messages').scrollTop < 300) loadOlder().catch((error) => showError(error.message));
  });
  connection = new Connection(resumePoints);
  connection.addEventListener('frame', (event) => onFrame(event.detail));
  connection.addEventListener('state', (event) => {
    $('connection').dataset.state = event.detail;
    $('connection').textContent = event.detail === 'open' ? '' : event.detail;
  });
  connection.addEventListener('closed', (event) => {
    if (event.detail === 4001) showLogin();
  });
  connection.connect();
  setList(state.list);
  setInterval(() => {
    const c = activeConversation();
    if (c && c.typingUntil && c.typingUntil < Date.now()) {
      c.typingUntil = 0;
      renderPane();
    }
  }, 1000);
}

function showLogin(message = '') {
  $('app').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message;
}

function wire() {
  apply();
  $('language').value = language;
  $('language').addEventListener('change', (event) => {
    setLanguage(event.target.value);
    renderLists();
    renderAgents();
    if (state.active) renderPane();
  });
  $('login-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    unlockAudio();
    if ('Notification' in window && Notification.permission === 'default') Notification.requestPermission().catch(() => {});
    try {
      const answer = await api('POST', '/api/v1/agent/login', { email: $('login-email').value, password: $('login-password').value });
      await startApp(answer.agent);
    } catch (error) {
      $('login-error').textContent = error.status === 429 ? t('rate_limited') : t('bad_login');
    }
  });
  $('logout').addEventListener('click', async () => {
    connection?.stop();
    await api('POST', '/api/v1/agent/logout').catch(() => {});
    location.reload();
  });
  $('presence').addEventListener('change', (event) => connection.send({ type: 'presence', status: event.target.value }));
  for (const button of document.querySelectorAll('.list-tabs button')) button.addEventListener('click', () => setList(button.dataset.list));
  $('act-take').addEventListener('click', () => connection.send({ type: 'take', conversation_id: state.active }));
  $('act-close').addEventListener('click', () => connection.send({ type: 'close', conversation_id: state.active }));
  $('act-reopen').addEventListener('click', reopen);
  $('act-transfer').addEventListener('click', openTransfer);
  $('act-block').addEventListener('click', () => {
    $('block-error').textContent = '';
    $('block-dialog').showModal();
  });
  $('transfer-form').addEventListener('submit', submitTransfer);
  $('transfer-cancel').addEventListener('click', () => $('transfer-dialog').close());
  $('block-form').addEventListener('submit', submitBlock);
  $('block-cancel').addEventListener('click', () => $('block-dialog').close());
  $('help-button').addEventListener('click', showHelp);
  $('help-close').addEventListener('click', () => $('help-dialog').close());
  $('composer').addEventListener('submit', (event) => {
    event.preventDefault();
    sendText();
  });
  $('input').addEventListener('keydown', onComposerKey);
  $('input').addEventListener('input', () => {
    onTyping();
    updateCanned();
  });
  $('internal').addEventListener('change', () => $('composer').classList.toggle('internal', $('internal').checked));
  $('emoji-panel').replaceChildren(...EMOJI.map((emoji) => h('button', { type: 'button', onclick: () => {
    const input = $('input');
    const at = input.selectionStart ?? input.value.length;
    input.value = input.value.slice(0, at) + emoji + input.value.slice(input.selectionEnd ?? at);
    input.focus();
  } }, emoji)));
  $('emoji-button').addEventListener('click', () => { $('emoji-panel').hidden = !$('emoji-panel').hidden; });
  $('file-button').addEventListener('click', () => $('file-input').click());
  $('file-input').addEventListener('change', (event) => {
    uploadFile(event.target.files[0]);
    event.target.value = '';
  });
  document.addEventListener('keydown', onKey);
  document.addEventListener('click', unlockAudio, { once: true });
  window.addEventListener('focus', markRead);
  document.addEventListener('visibilitychange', markRead);
}

wire();
api('GET', '/api/v1/agent/me').then(startApp, () => showLogin());
window.kefuConsole = { state, notifications };
