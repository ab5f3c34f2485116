// state.js: what the agent console knows, with no DOM in it: the conversations
// (merged from every list page, profile and frame by conversationOf()), the
// lists, the open panes, agents, teams, visitors online, canned replies and
// leads (the page the filters show, their counts, and every lead seen by id).
// Messages are held by seq, so each is kept once however it arrived (history
// page, replay or live frame); sends not yet acknowledged wait in `pending`.

import { resumeEntries } from '../shared/protocol.js';

export const state = {
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
  leads: {
    items: [], // the page the filters show, newest first
    counts: { new: 0, open: 0, done: 0 },
    byId: new Map(), // every lead seen, for the pane's lead bar
    sites: new Set(), // sites seen, for the site filter
    status: 'new',
    mine: false,
    site: '',
  },
  found: null, // `${conversation id}:${seq}` of the search hit last opened, marked in the pane
};

/** Whether a lead belongs in the list the lead filters show. */
export function leadShown(lead) {
  const f = state.leads;
  return lead.status === f.status && (!f.mine || lead.assigned_agent === state.me.id) && (!f.site || lead.site === f.site);
}

/** The newest lead of a conversation, if it is one. */
export function leadOf(c) {
  let found = null;
  for (const lead of state.leads.byId.values()) {
    if (lead.conversation_id === c.id && (!found || lead.id > found.id)) found = lead;
  }
  return found;
}

export function conversationOf(view) {
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

export function isMine(c) {
  return c.assigned_agent === state.me.id && c.status !== 'closed';
}

export function inList(c, list) {
  if (list === 'queued') return c.status === 'queued';
  if (list === 'mine') return isMine(c);
  if (list === 'open') return c.status !== 'closed';
  return false;
}

export function listItems() {
  if (state.list === 'leads') return state.leads.items.map((lead) => ({ lead }));
  if (state.list === 'visitors') return [...state.visitors.values()].map((v) => ({ visitor: v }));
  if (state.list === 'closed') return state.closed.ids.map((id) => state.conversations.get(id)).filter(Boolean);
  const items = [...state.conversations.values()].filter((c) => inList(c, state.list));
  if (state.list === 'queued') items.sort((a, b) => a.id - b.id);
  else items.sort((a, b) => b.updated_at - a.updated_at || b.id - a.id);
  return items;
}

export function messageKey(m) {
  return `${m.conversation_id}:${m.seq ?? m.client_id}`;
}

export function addMessage(c, m) {
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

export function messageItems(c) {
  return [...c.sorted, ...c.pending.values()];
}

export function activeConversation() {
  return state.conversations.get(state.active);
}

/** The resume entries of every conversation the console follows (has messages of). */
export function resumePoints() {
  return resumeEntries(state.conversations.values(), (c) => c.messages);
}
