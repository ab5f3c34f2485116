// app.js: the agent console's entry module. Plain ES modules, no build step.
// Everything a person typed is put on the page with textContent (see h() in
// /shared/dom.js), never as HTML.
//
// State lives in state.js; render.js draws it; actions.js holds what the
// console does: the WebSocket (connection.js over /shared/protocol.js) feeds
// frames into onFrame(), HTTP fills lists, history pages, profiles and runs
// actions. This file logs in, starts the console and wires the page's events.

import { t, apply, setLocale, locale } from './i18n.js';
import { h } from '../shared/dom.js';
import { state, activeConversation } from './state.js';
import { $, mountLists, renderLists, renderPane, renderAgents, showError, showHelp, showLogin } from './render.js';
import { wirePush, disablePush, pushSupported, updatePushLanguage } from './push.js';
import {
  api, connect, openLinked, connection, notifications, loadClosedPage, loadOlder, markRead, onKey, onComposerKey, onTyping,
  updateCanned, sendText, setList, reopen, openTransfer, submitTransfer, submitBlock, uploadFile, unlockAudio,
  setLeadFilter, setLeadStatus, assignLead, submitErase,
} from './actions.js';
import { askCode, showEnrolment, showMe, wireProfile } from './account.js';
import { wireSearch } from './search.js';

const EMOJI = ['😀', '😁', '😂', '😊', '😍', '😉', '🙂', '🤔', '😅', '😢', '👍', '👏', '🙏', '👌', '👋', '🤝', '🎉', '❤️', '🔥', '⭐',
  '✅', '❌', '❓', '💯', '🎁', '📦', '🚚', '💰', '🛒', '⏰'];

let started = false;

/** Starts the console for `me`, or first the enrolment a session that may only enrol needs. */
async function startApp(me) {
  if (me.must_enrol) {
    showEnrolment(me, startApp);
    return;
  }
  if (started) return;
  started = true;
  showMe(me);
  $('login').hidden = true;
  $('app').hidden = false;
  $('admin-link').hidden = me.role !== 'admin';
  mountLists();
  $('list').addEventListener('scroll', () => {
    const list = $('list');
    if (state.list === 'closed' && list.scrollTop + list.clientHeight > list.scrollHeight - 200) loadClosedPage().catch(() => {});
  });
  $('messages').addEventListener('scroll', () => {
    if ($('messages').scrollTop < 300) loadOlder().catch((error) => showError(error.message));
  });
  connect();
  setList(state.list);
  wirePush(showError, (url) => {
    location.hash = new URL(url).hash;
  });
  setInterval(() => {
    const c = activeConversation();
    if (c && c.typingUntil && c.typingUntil < Date.now()) {
      c.typingUntil = 0;
      renderPane();
    }
  }, 1000);
}

function wire() {
  apply();
  $('language').value = locale();
  $('language').addEventListener('change', (event) => {
    setLocale(event.target.value);
    apply();
    renderLists();
    renderAgents();
    if (state.active) renderPane();
    updatePushLanguage().catch(() => {});
  });
  window.addEventListener('hashchange', openLinked);
  $('login-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    unlockAudio();
    if ('Notification' in window && Notification.permission === 'default') Notification.requestPermission().catch(() => {});
    try {
      const answer = await api('POST', '/api/v1/agent/login', { email: $('login-email').value, password: $('login-password').value });
      if (answer.next === 'code') askCode(answer.ticket, startApp);
      else if (answer.next === 'enrol') await startApp({ ...answer.agent, must_enrol: true });
      else await startApp(answer.agent);
    } catch (error) {
      $('login-error').textContent = error.status === 429 ? t('rate_limited') : t('bad_login');
    }
  });
  const logOut = async () => {
    connection?.stop();
    // A shared computer should not show the next person this agent's notifications.
    if (pushSupported()) await disablePush().catch(() => {});
    await api('POST', '/api/v1/agent/logout').catch(() => {});
    location.reload();
  };
  $('logout').addEventListener('click', logOut);
  $('enrol-logout').addEventListener('click', logOut);
  wireProfile();
  wireSearch();
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
  for (const button of document.querySelectorAll('[data-lead-status]')) {
    button.addEventListener('click', () => setLeadFilter({ status: button.dataset.leadStatus }));
  }
  $('lead-mine').addEventListener('change', (event) => setLeadFilter({ mine: event.target.checked }));
  $('lead-site').addEventListener('change', (event) => setLeadFilter({ site: event.target.value }));
  $('lead-status').addEventListener('change', (event) => setLeadStatus(event.target.value));
  $('lead-assignee').addEventListener('change', (event) => assignLead(event.target.value ? Number(event.target.value) : null));
  $('lead-done').addEventListener('click', () => setLeadStatus('done'));
  $('visitor-erase').addEventListener('click', () => {
    $('erase-error').textContent = '';
    $('erase-sure').checked = false;
    $('erase-dialog').showModal();
  });
  $('erase-form').addEventListener('submit', submitErase);
  $('erase-cancel').addEventListener('click', () => $('erase-dialog').close());
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

export { notifications };
