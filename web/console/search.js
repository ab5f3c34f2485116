// search.js: full-text search over the history of the agent's sites (GET /api/v1/search, which
// keeps an agent to their own sites), with the filters the API has: site, date range, agent and
// conversation status. Each hit shows its snippet with the matches marked; clicking one opens
// the conversation scrolled to that message.
//
// The API's snippet is HTML (escaped text with the matches in <b>); it is taken apart here
// into text nodes and <mark> elements, so nothing from a message is ever parsed as markup.

import { t, locale } from './i18n.js';
import { h, bdi } from '../shared/dom.js';
import { state } from './state.js';
import { $ } from './render.js';
import { api, openConversationAt } from './actions.js';

const PAGE = 20;

let cursor = null;

const ENTITIES = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

/** Text from escaped HTML: named, decimal and hexadecimal character references. */
function unescape(text) {
  return text.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (whole, name) => {
    if (name[0] === '#') {
      const code = name[1] === 'x' || name[1] === 'X' ? parseInt(name.slice(2), 16) : parseInt(name.slice(1), 10);
      return Number.isFinite(code) ? String.fromCodePoint(code) : whole;
    }
    return ENTITIES[name.toLowerCase()] ?? whole;
  });
}

/** The snippet's nodes: text, and each match in a <mark>. */
export function snippetNodes(snippet) {
  const nodes = [];
  let marked = false;
  for (const part of snippet.split(/(<\/?b>)/)) {
    if (part === '<b>') marked = true;
    else if (part === '</b>') marked = false;
    else if (part) nodes.push(marked ? h('mark', {}, unescape(part)) : unescape(part));
  }
  return nodes;
}

function option(value, label) {
  return h('option', { value }, label);
}

/** The sites the agent may search: their own, or for admins every site the console has seen. */
function knownSites() {
  const sites = new Set(state.me.sites);
  if (state.me.role === 'admin') {
    for (const c of state.conversations.values()) if (c.site) sites.add(c.site);
    for (const team of state.teams) sites.add(team.site);
  }
  return [...sites].sort();
}

export function openSearch() {
  const site = $('search-site').value;
  $('search-site').replaceChildren(option('', t('all_sites')), ...knownSites().map((key) => option(key, key)));
  $('search-site').value = site;
  const agent = $('search-agent').value;
  const agents = [...state.agents.values()].sort((a, b) => a.name.localeCompare(b.name));
  $('search-agent').replaceChildren(option('', t('any')), ...agents.map((a) => option(String(a.id), a.name)));
  $('search-agent').value = agent;
  $('search-dialog').showModal();
  $('search-query').focus();
}

function query() {
  const params = new URLSearchParams({ q: $('search-query').value.trim(), limit: String(PAGE) });
  for (const [name, id] of [['site', 'search-site'], ['from', 'search-from'], ['to', 'search-to'], ['agent', 'search-agent'], ['state', 'search-state']]) {
    if ($(id).value) params.set(name, $(id).value);
  }
  if (cursor) params.set('cursor', cursor);
  return params;
}

function renderHit(hit) {
  const when = new Date(hit.created_at).toLocaleString(locale(), { dateStyle: 'short', timeStyle: 'short' });
  const who = hit.sender_kind === 'visitor' ? t('visitor') : hit.sender_name;
  return h('li', { class: 'hit', tabindex: '0', 'data-conversation': hit.conversation_id, 'data-seq': hit.seq,
    onclick: () => openHit(hit),
    onkeydown: (event) => { if (event.key === 'Enter') openHit(hit); } },
  h('div', { class: 'snippet', dir: 'auto' }, snippetNodes(hit.snippet)),
  h('div', { class: 'meta' }, `#${hit.conversation_id} · `, bdi(hit.site), ` · ${when} · `, bdi(who), hit.internal ? ` · ${t('internal_note')}` : ''));
}

async function openHit(hit) {
  $('search-dialog').close();
  await openConversationAt(hit.conversation_id, hit.seq);
}

async function run(more) {
  if (!more) cursor = null;
  $('search-error').textContent = '';
  try {
    const page = await api('GET', `/api/v1/search?${query()}`);
    const items = page.hits.map(renderHit);
    if (more) $('search-results').append(...items);
    else $('search-results').replaceChildren(...(items.length ? items : [h('li', { class: 'muted' }, t('no_results'))]));
    cursor = page.next_cursor;
    $('search-more').hidden = !cursor;
  } catch (error) {
    $('search-error').textContent = error.status === 422 ? `${t('search_invalid')} (${error.message})` : (error.message || t('failed'));
  }
}

export function wireSearch() {
  $('search-button').addEventListener('click', openSearch);
  $('search-close').addEventListener('click', () => $('search-dialog').close());
  $('search-form').addEventListener('submit', (event) => {
    event.preventDefault();
    run(false);
  });
  for (const id of ['search-site', 'search-from', 'search-to', 'search-agent', 'search-state']) {
    $(id).addEventListener('change', () => { if ($('search-query').value.trim()) run(false); });
  }
  $('search-more').addEventListener('click', () => run(true));
}
