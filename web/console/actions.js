// actions.js: what the agent console does: HTTP loads (lists, history pages,
// profiles, agents, visitors online, leads), the frames from the WebSocket
// (onFrame), and what the agent does (open and close panes, take, transfer,
// block, reopen, send, canned replies, uploads, keyboard shortcuts, follow up
// a lead, export or erase a visitor's data). Each action changes `state`
// (state.js), then asks render.js to redraw.

import { t, visitorName } from './i18n.js';
import { Connection } from './connection.js';
import { request, uuid } from '../shared/protocol.js';
import { isolated } from '../shared/dom.js';
import * as sound from '../shared/sound.js';
import {
  state, conversationOf, isMine, listItems, messageKey, addMessage, messageItems, activeConversation, resumePoints, leadOf, leadShown,
} from './state.js';
import {
  $, messageList, renderLists, renderMessages, renderPane, renderVisitorPanel, renderVisitorPanelError, renderAgents, transferOptions,
  renderCanned, showError, showHelp, showLogin,
} from './render.js';

const HISTORY_PAGE = 200;
const CLOSED_PAGE = 50;

export let connection = null;

let audio = null;

export function api(method, path, body) {
  return request(method, path, { body });
}

/** Opens the WebSocket and feeds its frames into onFrame(). */
export function connect() {
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
}

export async function loadOpenList() {
  let cursor = '';
  for (;;) {
    const page = await api('GET', `/api/v1/conversations?state=open&limit=200${cursor}`);
    for (const view of page.conversations) conversationOf(view);
    if (!page.next_cursor) break;
    cursor = `&cursor=${page.next_cursor}`;
  }
  renderLists();
}

export async function loadClosedPage() {
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

export async function loadHistory(c, before) {
  const query = before ? `&before=${before}` : '';
  const page = await api('GET', `/api/v1/conversations/${c.id}/messages?limit=${HISTORY_PAGE}${query}`);
  c.epoch = page.epoch;
  if (!before || c.nextBefore === undefined || (page.next_before ?? 0) < c.nextBefore) c.nextBefore = page.next_before;
  if (before === undefined && page.next_before === null) c.nextBefore = null;
  for (const m of page.messages) addMessage(c, m);
  c.last_seq = Math.max(c.last_seq, page.last_seq);
  c.seen = Math.max(c.seen, page.last_seq);
  // The visitor's read receipt so far comes with the history, so a reload keeps "read".
  if ((page.visitor_read_seq ?? 0) > (c.visitorRead ?? 0)) c.visitorRead = page.visitor_read_seq;
}

export async function loadOlder() {
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
export async function follow(c) {
  if (c.messages) return;
  c.messages = new Map();
  c.sorted = [];
  c.seen = c.last_seq;
  connection.send({ type: 'resume', conversation_id: c.id, last_seq: c.last_seq, epoch: c.epoch });
  await loadHistory(c);
}

export function markRead() {
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

export async function openConversation(id) {
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

/**
 * Opens a conversation (fetching it if the console does not hold it) scrolled to message `seq`,
 * loading older history pages until that message is in, and marks it.
 */
export async function openConversationAt(id, seq) {
  try {
    if (!state.conversations.has(id)) conversationOf(await api('GET', `/api/v1/conversations/${id}`));
    await openConversation(id);
    const c = state.conversations.get(id);
    while (c.messages && !c.messages.has(seq) && c.nextBefore && state.active === id) await loadOlder();
    if (state.active !== id) return;
    state.found = `${id}:${seq}`;
    for (const node of messageList.nodes.values()) node.remove();
    messageList.nodes.clear();
    renderMessages('none');
    messageList.scrollToKey(state.found);
  } catch (error) {
    showError(error.message);
  }
}

export function closePane(id = state.active) {
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

export async function loadVisitorPanel(c) {
  try {
    const [profile, earlier] = await Promise.all([
      api('GET', `/api/v1/visitors/${c.visitor_id}`),
      api('GET', `/api/v1/visitors/${c.visitor_id}/conversations`),
    ]);
    if (state.active !== c.id) return;
    renderVisitorPanel(c, profile, earlier);
  } catch (error) {
    renderVisitorPanelError(error.message);
  }
}

/** Ids listed so far by the current welcome's pages; null once the list is complete. */
let welcomeListing = null;

function listPage(views, more) {
  if (!welcomeListing) return;
  for (const view of views) {
    conversationOf(view);
    welcomeListing.add(view.id);
  }
  if (!more) {
    for (const c of state.conversations.values()) {
      if (c.status !== 'closed' && !welcomeListing.has(c.id)) c.status = 'closed';
    }
    welcomeListing = null;
    renderLists();
    if (state.active) renderPane();
    openLinked();
  }
}

/** Opens the conversation a link names (`/console#conversation=ID`, a notification's), once listed. */
export function openLinked() {
  const id = Number(new URLSearchParams(location.hash.slice(1)).get('conversation'));
  if (!id || !state.conversations.has(id)) return;
  history.replaceState(null, '', location.pathname);
  openConversation(id);
}

export function onFrame(frame) {
  switch (frame.type) {
    case 'welcome': {
      // The open list comes in pages (welcome, then `conversations` frames); a conversation
      // missing from it is closed only once the last page is in.
      welcomeListing = new Set();
      listPage(frame.conversations, frame.more_conversations);
      loadOpenList().catch((error) => showError(error.message));
      loadAgents();
      loadVisitors();
      loadLeads().catch((error) => showError(error.message));
      break;
    }
    case 'conversations': {
      listPage(frame.conversations, frame.more);
      break;
    }
    case 'conversation': {
      const c = conversationOf(frame.conversation);
      if (frame.event === 'created' && c.status === 'queued') notify(t('new_conversation'), visitorName(c.visitor_name), c.id);
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
          if (!watching && (isMine(c) || c.status === 'queued')) notify(t('new_message'), `${isolated(visitorName(c.visitor_name))}: ${item.preview}`, c.id);
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
    case 'lead': {
      const lead = frame.lead;
      const leads = state.leads;
      if (frame.event === 'erased') leads.byId.delete(lead.id);
      else leads.byId.set(lead.id, lead);
      leads.sites.add(lead.site);
      // Shown at once where the filters put it; the page and the counts then reload.
      leads.items = leads.items.filter((l) => l.id !== lead.id);
      if (frame.event !== 'erased' && leadShown(lead)) leads.items = [lead, ...leads.items].sort((a, b) => b.id - a.id);
      if (frame.event === 'created') notify(t('new_lead'), `${isolated(lead.name || lead.email)}: ${lead.preview}`, lead.conversation_id);
      renderLists();
      if (state.active) renderPane();
      refreshLeads();
      break;
    }
    case 'error':
      showError(`${frame.code}: ${frame.message}`);
      break;
    default:
      break;
  }
}

/** Numbers the lead loads, so an answer that a newer request overtook is dropped. */
let leadLoads = 0;
let leadTimer = 0;

/** Loads the lead page the filters ask for, with the counts per status. */
export async function loadLeads() {
  const leads = state.leads;
  const query = new URLSearchParams({ status: leads.status, limit: '200' });
  if (leads.mine) query.set('assigned_agent', String(state.me.id));
  if (leads.site) query.set('site', leads.site);
  const load = ++leadLoads;
  const page = await api('GET', `/api/v1/leads?${query}`);
  if (load !== leadLoads) return;
  leads.items = page.leads;
  leads.counts = page.counts;
  for (const lead of page.leads) {
    leads.byId.set(lead.id, lead);
    leads.sites.add(lead.site);
  }
  renderLists();
  if (state.active) renderPane();
}

/** Reloads the leads soon, once for a burst of lead frames. */
export function refreshLeads() {
  clearTimeout(leadTimer);
  leadTimer = setTimeout(() => loadLeads().catch((error) => showError(error.message)), 150);
}

export function setLeadFilter(change) {
  Object.assign(state.leads, change);
  renderLists();
  loadLeads().catch((error) => showError(error.message));
}

/** Opens a lead's conversation (its history) in the pane, with the lead bar over it. */
export async function openLead(id) {
  const lead = state.leads.byId.get(id);
  if (!lead) return;
  try {
    let c = state.conversations.get(lead.conversation_id);
    if (!c) c = conversationOf(await api('GET', `/api/v1/conversations/${lead.conversation_id}`));
    if (c.visitor_name.startsWith('Visitor #') && lead.name) c.visitor_name = lead.name;
    await openConversation(c.id);
  } catch (error) {
    showError(error.message);
  }
}

function leadChanged(lead) {
  state.leads.byId.set(lead.id, lead);
  renderPane();
  refreshLeads();
}

export async function setLeadStatus(status) {
  const lead = leadOf(activeConversation());
  if (!lead) return;
  try {
    leadChanged(await api('POST', `/api/v1/leads/${lead.id}/status`, { status }));
  } catch (error) {
    showError(error.message);
    renderPane();
  }
}

export async function assignLead(agentId) {
  const lead = leadOf(activeConversation());
  if (!lead) return;
  try {
    leadChanged(await api('POST', `/api/v1/leads/${lead.id}/assign`, { agent_id: agentId }));
  } catch (error) {
    showError(error.message);
    renderPane();
  }
}

/**
 * Answers a lead whose conversation the agent does not hold (closed, waiting, or someone
 * else's): the server puts the reply in the visitor's conversation, reopened or taken for
 * the agent, and the conversation's frames follow.
 */
async function replyToLead(lead, c, text) {
  const clientId = uuid();
  c.pending.set(clientId, {
    conversation_id: c.id, client_id: clientId, text, internal: false, pending: true, created_at: Date.now(),
    sender: { kind: 'agent', id: state.me.id, name: state.me.name },
  });
  renderMessages('bottom');
  try {
    const answer = await api('POST', `/api/v1/leads/${lead.id}/reply`, { text, client_id: clientId });
    c.pending.delete(clientId);
    const target = state.conversations.get(answer.message.conversation_id);
    if (target) addMessage(target, answer.message);
    leadChanged(answer.lead);
    if (answer.message.conversation_id !== c.id) {
      conversationOf(await api('GET', `/api/v1/conversations/${answer.message.conversation_id}`));
      await openConversation(answer.message.conversation_id);
    } else {
      renderMessages('bottom');
    }
  } catch (error) {
    c.pending.delete(clientId);
    renderMessages();
    showError(error.message);
  }
}

/** Erases the active conversation's visitor, after the confirmation dialog. */
export async function submitErase(event) {
  event.preventDefault();
  const c = activeConversation();
  if (!c) return;
  try {
    await api('DELETE', `/api/v1/visitors/${c.visitor_id}/data`);
    $('erase-dialog').close();
    for (const other of [...state.conversations.values()]) {
      if (other.visitor_id !== c.visitor_id) continue;
      closePane(other.id);
      state.conversations.delete(other.id);
      state.closed.ids = state.closed.ids.filter((id) => id !== other.id);
    }
    renderLists();
    refreshLeads();
    showError(t('erased'));
  } catch (error) {
    $('erase-error').textContent = error.message;
  }
}

export async function loadAgents() {
  try {
    for (const agent of await api('GET', '/api/v1/agents')) state.agents.set(agent.id, agent);
    state.teams = await api('GET', '/api/v1/teams');
  } catch (error) {
    showError(error.message);
  }
  renderAgents();
}

export async function loadVisitors() {
  try {
    state.visitors.clear();
    for (const visitor of await api('GET', '/api/v1/visitors/online')) state.visitors.set(visitor.visitor_id, visitor);
  } catch (error) {
    showError(error.message);
  }
  renderLists();
}

export async function startChat(visitorId) {
  try {
    const view = await api('POST', `/api/v1/visitors/${visitorId}/conversations`);
    const c = conversationOf(view);
    c.visitor_name = state.visitors.get(visitorId)?.name ?? c.visitor_name;
    await openConversation(view.id);
  } catch (error) {
    showError(error.message);
  }
}

export function openTransfer() {
  const c = activeConversation();
  if (!c) return;
  $('transfer-target').replaceChildren(...transferOptions(c));
  $('transfer-note').value = '';
  $('transfer-error').textContent = '';
  $('transfer-dialog').showModal();
}

export async function submitTransfer(event) {
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

export async function submitBlock(event) {
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

export async function reopen() {
  const c = activeConversation();
  try {
    conversationOf(await api('POST', `/api/v1/conversations/${c.id}/reopen`));
    renderPane();
    renderLists();
  } catch (error) {
    showError(error.message);
  }
}

let typingSentAt = 0;

let typingTimer = 0;

export function sendText() {
  const c = activeConversation();
  const input = $('input');
  const text = input.value.trim();
  if (!c || !text) return;
  const internal = $('internal').checked;
  const lead = leadOf(c);
  // A lead not yet done is answered through the lead, which also takes it up (open, the agent's).
  if (lead && !internal && (lead.status !== 'done' || !(c.status === 'assigned' && c.assigned_agent === state.me.id))) {
    input.value = '';
    closeCanned();
    stopTyping();
    replyToLead(lead, c, text);
    return;
  }
  const clientId = uuid();
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

export function onTyping() {
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

export function stopTyping() {
  clearTimeout(typingTimer);
  if (!typingSentAt) return;
  typingSentAt = 0;
  const c = activeConversation();
  if (c) connection.send({ type: 'typing', conversation_id: c.id, active: false });
}

export async function cannedFor(site) {
  if (!state.canned.has(site)) state.canned.set(site, await api('GET', `/api/v1/canned-replies?site=${encodeURIComponent(site)}`));
  return state.canned.get(site);
}

export async function updateCanned() {
  const value = $('input').value;
  const match = value.match(/^\/(\S*)$/);
  const c = activeConversation();
  if (!match || !c) return closeCanned();
  const replies = await cannedFor(c.site).catch(() => []);
  // The fetch may have taken a while: if the agent chose a reply or typed on meanwhile, this
  // answer is stale (a later call handles the new text) and must not reopen the menu.
  if ($('input').value !== value || activeConversation() !== c) return;
  const prefix = match[1].toLowerCase();
  state.cannedChoices = replies.filter((reply) => reply.shortcut.toLowerCase().startsWith(prefix)).slice(0, 50);
  state.cannedIndex = 0;
  renderCanned();
}

export function closeCanned() {
  state.cannedChoices = [];
  $('canned-menu').hidden = true;
}

export function chooseCanned(index) {
  const reply = state.cannedChoices[index];
  if (!reply) return;
  $('input').value = reply.text;
  closeCanned();
  $('input').focus();
}

export async function uploadFile(file) {
  const c = activeConversation();
  if (!c || !file) return;
  try {
    const response = await fetch(`/api/v1/uploads?conversation_id=${c.id}&name=${encodeURIComponent(file.name)}`, {
      method: 'POST', credentials: 'same-origin', headers: { 'Content-Type': file.type || 'application/octet-stream' }, body: file,
    });
    const upload = await response.json();
    if (!response.ok) throw new Error(upload?.error?.message || `HTTP ${response.status}`);
    const clientId = uuid();
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

export function unlockAudio() {
  audio = sound.unlockAudio(audio);
}

/** Announced notifications, newest last (the browser tests read this). */
export const notifications = [];

export function notify(title, body, conversationId) {
  if (!document.hidden && document.hasFocus()) return;
  sound.beep(audio);
  notifications.push({ title, body, conversationId });
  if (!('Notification' in window) || Notification.permission !== 'granted') return;
  const notification = new Notification(title, { body, tag: `kefu-${conversationId}` });
  notification.onclick = () => {
    window.focus();
    openConversation(conversationId);
  };
}

export function moveInList(step) {
  const items = listItems().filter((item) => !item.visitor).map((item) => (item.lead ? { id: item.lead.conversation_id, lead: item.lead } : item));
  if (!items.length) return;
  const index = items.findIndex((c) => c.id === state.active);
  const next = items[(index + step + items.length) % items.length] ?? items[0];
  if (next.lead) openLead(next.lead.id);
  else openConversation(next.id);
}

export function onKey(event) {
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

export function onComposerKey(event) {
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

export function setList(list) {
  state.list = list;
  if (list === 'closed' && !state.closed.ids.length) loadClosedPage().catch((error) => showError(error.message));
  if (list === 'leads') loadLeads().catch((error) => showError(error.message));
  renderLists();
}
