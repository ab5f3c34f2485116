// render.js: the agent console on screen, from `state` to the DOM. Every render
// builds elements with h() (/shared/dom.js), so everything a person typed goes
// in as text, never as HTML. The conversation list and the message list are
// virtual (vlist.js), so 500 open conversations and 10,000 messages in one
// conversation stay responsive. Clicks call into actions.js.

import { t, locale, visitorName } from './i18n.js';
import { VirtualList } from './vlist.js';
import { h, bdi, isolated, shownFileName } from '../shared/dom.js';
import { state, conversationOf, isMine, listItems, messageKey, messageItems, leadOf } from './state.js';
import { openConversation, openLead, closePane, startChat, chooseCanned, closeCanned } from './actions.js';

export const $ = (id) => document.getElementById(id);

/** The virtual lists, made by mountLists(). */
export let conversationList = null;
export let messageList = null;

/** Creates the two virtual lists once the console is shown. */
export function mountLists() {
  conversationList = new VirtualList($('list'), { estimate: 68, fixed: true, key: (item) => (item.visitor ? `v${item.visitor.visitor_id}` : item.lead ? `l${item.lead.id}` : `c${item.id}`), render: renderRow });
  messageList = new VirtualList($('messages'), { estimate: 56, key: messageKey, render: renderMessage });
}

let listFrame = 0;

export function renderLists() {
  if (listFrame) return;
  listFrame = requestAnimationFrame(() => {
    listFrame = 0;
    const all = [...state.conversations.values()];
    const counts = {
      queued: all.filter((c) => c.status === 'queued').length,
      mine: all.filter(isMine).length,
      open: all.filter((c) => c.status !== 'closed').length,
      visitors: state.visitors.size,
      leads: state.leads.counts.new,
    };
    for (const element of document.querySelectorAll('[data-count]')) element.textContent = counts[element.dataset.count];
    for (const button of document.querySelectorAll('.list-tabs button')) {
      button.setAttribute('aria-selected', String(button.dataset.list === state.list));
    }
    for (const node of conversationList.nodes.values()) node.remove();
    conversationList.nodes.clear();
    conversationList.setItems(listItems(), { anchor: 'keep' });
    renderLeadFilters();
    const unread = all.filter((c) => c.status !== 'closed').reduce((sum, c) => sum + c.unread, 0);
    document.title = unread ? `(${unread}) kefu` : 'kefu';
    renderTabs();
  });
}

export function statusText(c) {
  return t(`status_${c.status}`);
}

export function holderName(c) {
  if (!c.assigned_agent) return '';
  if (c.assigned_agent === state.me.id) return t('you');
  return state.agents.get(c.assigned_agent)?.name ?? `#${c.assigned_agent}`;
}

/** The lead filters above the list: status buttons with their counts, mine, and the site. */
export function renderLeadFilters() {
  const leads = state.leads;
  $('lead-filters').hidden = state.list !== 'leads';
  for (const button of document.querySelectorAll('[data-lead-status]')) {
    button.setAttribute('aria-pressed', String(button.dataset.leadStatus === leads.status));
  }
  for (const element of document.querySelectorAll('[data-lead-count]')) element.textContent = leads.counts[element.dataset.leadCount];
  $('lead-mine').checked = leads.mine;
  const sites = [...new Set([...(state.me.sites ?? []), ...leads.sites])].sort();
  const select = $('lead-site');
  const wanted = ['', ...sites].join('\n');
  if (select.dataset.options !== wanted || select.dataset.locale !== locale()) {
    select.replaceChildren(h('option', { value: '' }, t('all_sites')), ...sites.map((site) => h('option', { value: site }, site)));
    select.dataset.options = wanted;
    select.dataset.locale = locale();
  }
  select.value = leads.site;
}

function agentName(id) {
  if (id === state.me.id) return t('you');
  return state.agents.get(id)?.name ?? `#${id}`;
}

function leadRow(lead) {
  const time = new Date(lead.created_at).toLocaleString(locale(), { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
  const active = lead.conversation_id === state.active ? ' active' : '';
  const manySites = new Set([...(state.me.sites ?? []), ...state.leads.sites]).size > 1;
  return h('div', { class: `row${active}`, 'data-lead': lead.id, onclick: () => openLead(lead.id) },
    h('div', { class: 'top' },
      h('span', { class: 'name', dir: 'auto' }, lead.name || lead.email || `#${lead.visitor_id}`),
      h('span', { class: `pill lead-${lead.status}` }, t(`lead_${lead.status}`))),
    h('div', { class: 'preview', dir: 'auto' }, lead.preview),
    h('div', { class: 'meta' }, lead.email ? [bdi(lead.email), ' · '] : null, `${time} · ${manySites ? `${lead.site} · ` : ''}${t(`source_${lead.source}`)}`,
      lead.assigned_agent ? [` · ${t('held_by')} `, bdi(agentName(lead.assigned_agent))] : null));
}

export function renderRow(item) {
  if (item.lead) return leadRow(item.lead);
  if (item.visitor) {
    const v = item.visitor;
    return h('div', { class: 'row', 'data-visitor': v.visitor_id },
      h('div', { class: 'top' }, h('span', { class: 'name', dir: 'auto' }, visitorName(v.name)),
        h('span', { class: 'pill' }, v.returning ? t('returning') : t('new_visitor'))),
      h('div', { class: 'preview', dir: 'auto' }, v.title || v.url),
      h('div', { class: 'meta' }, bdi(v.browser), ` · ${v.ip}`, v.referrer ? [' · ', bdi(v.referrer)] : null),
      h('button', { type: 'button', class: 'chat-visitor', onclick: (event) => { event.stopPropagation(); startChat(v.visitor_id); } }, t('chat')));
  }
  const c = item;
  return h('div', { class: `row${c.id === state.active ? ' active' : ''}`, 'data-conversation': c.id, onclick: () => openConversation(c.id) },
    h('div', { class: 'top' },
      h('span', { class: 'name', dir: 'auto' }, visitorName(c.visitor_name)),
      h('span', { class: `pill ${c.status}` }, statusText(c)),
      c.unread > 0 && c.status !== 'closed' ? h('span', { class: 'badge' }, c.unread > 99 ? '99+' : c.unread) : null),
    h('div', { class: 'preview', dir: 'auto' }, c.preview || ''),
    h('div', { class: 'meta' }, `#${c.id}`, c.assigned_agent ? [` · ${t('held_by')} `, bdi(holderName(c))] : null));
}

export function renderMessage(m) {
  const c = state.conversations.get(m.conversation_id);
  const kind = m.sender?.kind ?? 'agent';
  const classes = ['msg'];
  if (m.internal) classes.push('internal');
  else if (kind === 'agent') classes.push('out');
  else if (kind === 'system') classes.push('system');
  if (m.pending) classes.push('pending');
  if (state.found === messageKey(m)) classes.push('found');
  let body;
  if (m.kind === 'image' && m.attachment?.url) {
    body = h('a', { href: m.attachment.url, target: '_blank', rel: 'noopener' }, h('img', { src: m.attachment.url, alt: shownFileName(m.attachment.name || 'file') }));
  } else if (m.kind === 'file' && m.attachment?.url) {
    const name = shownFileName(m.attachment.name || 'file');
    body = h('a', { href: m.attachment.url, target: '_blank', rel: 'noopener', download: name }, '📎 ', h('bdi', { class: 'file-name' }, name));
  } else {
    body = m.text;
  }
  const time = m.created_at ? new Date(m.created_at).toLocaleTimeString(locale(), { hour: '2-digit', minute: '2-digit' }) : '';
  const receipt = m.pending ? t('sending') : (kind === 'agent' && !m.internal && c && m.seq <= c.visitorRead ? `✓✓ ${t('read')}` : '');
  const avatar = kind === 'agent' && m.sender?.id ? h('img', { class: 'avatar small', alt: '', src: agentAvatar(m.sender.id) }) : null;
  return h('div', { class: classes.join(' '), 'data-seq': m.seq ?? '' },
    h('span', { class: 'who' }, avatar, m.internal ? `📝 ${t('internal_note')} · ` : '', bdi(visitorName(m.sender?.name)), ` ${time} ${receipt}`),
    h('div', { class: 'bubble', dir: 'auto' }, body));
}

/** An agent's picture: the URL the agent list gave (it changes with the picture), or the plain one. */
export function agentAvatar(id) {
  if (id === state.me?.id) return state.me.avatar_url;
  return state.agents.get(id)?.avatar_url ?? `/api/v1/agents/${id}/avatar`;
}

export function renderMessages(anchor = 'auto') {
  const c = state.conversations.get(state.active);
  if (!c || !c.messages) return;
  messageList.setItems(messageItems(c), { anchor });
}

export function renderTabs() {
  $('tabs').replaceChildren(...state.open.map((id) => {
    const c = state.conversations.get(id);
    return h('button', { type: 'button', class: `tab${id === state.active ? ' active' : ''}`, 'data-tab': id, onclick: () => openConversation(id) },
      h('span', { class: 'tab-name', dir: 'auto' }, c ? visitorName(c.visitor_name) : `#${id}`),
      c?.unread ? h('span', { class: 'badge' }, c.unread) : null,
      h('span', { class: 'x', role: 'button', 'aria-label': 'close', onclick: (event) => { event.stopPropagation(); closePane(id); } }, '×'));
  }));
}

export function renderPane() {
  const c = state.conversations.get(state.active);
  if (!c) return;
  $('pane-title').replaceChildren(bdi(visitorName(c.visitor_name)), ` · #${c.id}`);
  $('pane-title').title = visitorName(c.visitor_name);
  $('pane-status').replaceChildren(statusText(c), ...(c.assigned_agent ? [` · ${t('held_by')} `, bdi(holderName(c))] : []));
  $('pane-typing').textContent = c.typingUntil > Date.now() ? t('typing') : '';
  $('act-take').hidden = c.status === 'closed' || c.assigned_agent === state.me.id;
  $('act-transfer').hidden = c.status === 'closed';
  $('act-close').hidden = c.status === 'closed';
  $('act-reopen').hidden = c.status !== 'closed';
  const lead = leadOf(c);
  // A lead's conversation can be answered even when closed: the reply reopens it.
  $('composer').hidden = c.status === 'closed' && !lead;
  renderLeadBar(c, lead);
}

/** The lead bar over a lead's conversation: what it is, its status and its assignee. */
function renderLeadBar(c, lead) {
  $('lead-bar').hidden = !lead;
  if (!lead) return;
  $('lead-label').replaceChildren(`${t('lead')} #${lead.id} · ${t(`source_${lead.source}`)}`, ...(lead.email ? [' · ', bdi(lead.email)] : []));
  $('lead-status').value = lead.status;
  const agents = [...state.agents.values()].filter((agent) => !agent.disabled && (agent.role === 'admin' || agent.sites.includes(c.site)));
  if (!agents.some((agent) => agent.id === state.me.id)) agents.unshift({ id: state.me.id, name: state.me.name });
  $('lead-assignee').replaceChildren(h('option', { value: '' }, t('nobody')),
    ...agents.map((agent) => h('option', { value: String(agent.id) }, agent.id === state.me.id ? `${isolated(agent.name)} (${t('you')})` : isolated(agent.name))));
  $('lead-assignee').value = lead.assigned_agent ? String(lead.assigned_agent) : '';
  $('lead-done').hidden = lead.status === 'done';
}

/** The visitor pane: the profile, what they browse, and their earlier conversations. */
export function renderVisitorPanel(c, profile, earlier) {
  const online = profile.online;
  // Only admins export or erase a visitor's data.
  $('visitor-data').hidden = state.me.role !== 'admin';
  $('visitor-export').href = `/api/v1/visitors/${c.visitor_id}/data`;
  const rows = [
    [t('name'), visitorName(profile.name)], [t('email'), profile.email ?? ''],
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
    return h('li', { onclick: () => openConversation(e.id) }, `#${e.id} · ${new Date(e.created_at).toLocaleDateString(locale())} · ${t(`status_${e.status}`)}`);
  }));
}

export function renderVisitorPanelError(message) {
  $('visitor-info').replaceChildren(h('dd', {}, message));
}

export function renderAgents() {
  const agents = [...state.agents.values()].sort((a, b) => a.name.localeCompare(b.name));
  $('agents').replaceChildren(...agents.map((agent) => h('li', { 'data-presence': agent.presence, 'data-agent': agent.id },
    h('img', { class: 'avatar small', alt: '', src: agentAvatar(agent.id) }), bdi(agent.name), `${agent.id === state.me.id ? ` (${t('you')})` : ''} · ${t(agent.presence)}`)));
}

/** The agents and teams the active conversation can go to, as <option>s. */
export function transferOptions(c) {
  const options = [];
  for (const agent of state.agents.values()) {
    if (agent.id === state.me.id || !(agent.role === 'admin' || agent.sites.includes(c.site))) continue;
    options.push(h('option', { value: `agent:${agent.id}` }, `${t('agent_prefix')}: ${isolated(agent.name)} (${t(agent.presence)})`));
  }
  for (const team of state.teams.filter((team) => team.site === c.site)) {
    options.push(h('option', { value: `team:${team.id}` }, `${t('team_prefix')}: ${isolated(team.name)}`));
  }
  return options;
}

export function renderCanned() {
  const menu = $('canned-menu');
  if (!state.cannedChoices.length) return closeCanned();
  menu.hidden = false;
  menu.replaceChildren(...state.cannedChoices.map((reply, index) => h('div',
    { class: index === state.cannedIndex ? 'selected' : '', 'data-shortcut': reply.shortcut, onmousedown: (event) => { event.preventDefault(); chooseCanned(index); } },
    h('b', {}, '/', bdi(reply.shortcut)), bdi(reply.text))));
}

const SHORTCUTS = [
  ['Alt+↓', 'k_next'], ['Alt+↑', 'k_prev'], ['Enter / Ctrl+Enter', 'k_send'], ['Esc', 'k_esc'], ['/', 'k_canned'],
  ['Alt+N', 'k_note'], ['Alt+1 … Alt+5', 'k_lists'], ['?', 'k_help'],
];

export function showHelp() {
  $('help-table').replaceChildren(...SHORTCUTS.map(([keys, what]) => h('tr', {}, h('td', {}, keys), h('td', {}, t(what)))));
  $('help-dialog').showModal();
}

export function showError(message) {
  console.warn('kefu console:', message);
  const element = $('connection');
  element.title = message;
}

export function showLogin(message = '') {
  $('app').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message;
}
