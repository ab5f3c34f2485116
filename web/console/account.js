// account.js: the agent's own account, from the profile menu in the top bar: their picture,
// their password and their two-factor login; and the two screens a login may pass through
// before the console: the code of the authenticator app, and the enrolment an installation
// that requires two-factor login asks of an agent without it. The QR code comes from the server
// as an SVG document and is shown as an <img> (a data: URL), never inserted as markup.

import { t } from './i18n.js';
import { h } from '../shared/dom.js';
import { state } from './state.js';
import { $ } from './render.js';
import { api } from './actions.js';

/** The words of an API error for the person: the server's message, or a translated status. */
function problem(error) {
  if (error.status === 429) return t('rate_limited');
  if (error.status === 413) return t('picture_too_large');
  if (error.status === 415) return t('picture_type');
  return error.message || t('failed');
}

/** Shows the agent's picture (and name) wherever the console shows it. */
export function showMe(me) {
  state.me = me;
  $('me').textContent = me.name;
  $('me-avatar').src = me.avatar_url;
  $('profile-avatar').src = me.avatar_url;
}

/**
 * The two-factor part of the profile (and of the enrolment screen) in `container`: off with a
 * button to set it up, the setup (QR code, key, first code), the recovery codes once, or on
 * with a way to turn it off. `onEnabled(me)` runs when the agent closes the recovery codes.
 */
export function mountTwoFactor(container, { onEnabled = () => {}, canTurnOff = true } = {}) {
  const error = h('p', { class: 'error', role: 'alert' });
  const fail = (e) => { error.textContent = problem(e); };

  const showOff = () => {
    container.replaceChildren(
      h('p', {}, t('two_factor_off')),
      h('button', { type: 'button', id: 'two-factor-start', onclick: () => start().catch(fail) }, t('turn_on')),
      error);
  };

  const start = async () => {
    const setup = await api('POST', '/api/v1/agent/two-factor/setup');
    const code = h('input', { id: 'two-factor-code', type: 'text', inputmode: 'numeric', autocomplete: 'one-time-code', required: true, maxlength: 8 });
    const form = h('form', { id: 'two-factor-confirm', onsubmit: (event) => {
      event.preventDefault();
      confirm(code.value).catch(fail);
    } },
    h('label', {}, h('span', {}, t('enter_first_code')), code),
    h('button', { type: 'submit' }, t('verify')));
    const key = setup.secret.replace(/(.{4})/g, '$1 ').trim();
    container.replaceChildren(
      h('p', {}, t('scan_qr')),
      h('img', { class: 'qr', id: 'two-factor-qr', alt: setup.uri, src: `data:image/svg+xml;charset=utf-8,${encodeURIComponent(setup.qr_svg)}` }),
      h('p', {}, t('or_type_key'), ' ', h('code', { id: 'two-factor-key', 'data-secret': setup.secret }, key)),
      form, error);
    error.textContent = '';
    code.focus();
  };

  const confirm = async (code) => {
    const answer = await api('POST', '/api/v1/agent/two-factor/confirm', { code });
    const me = await api('GET', '/api/v1/agent/me');
    container.replaceChildren(
      h('p', { class: 'notice' }, t('recovery_codes_once')),
      h('ol', { class: 'recovery-codes', id: 'recovery-codes' }, answer.recovery_codes.map((c) => h('li', {}, h('code', {}, c)))),
      h('button', { type: 'button', id: 'recovery-codes-done', onclick: () => {
        showOn();
        onEnabled(me);
      } }, t('saved_them')));
  };

  const showOn = () => {
    const password = h('input', { type: 'password', autocomplete: 'current-password', required: true });
    container.replaceChildren(
      h('p', {}, t('two_factor_on')),
      canTurnOff ? h('form', { onsubmit: async (event) => {
        event.preventDefault();
        try {
          showMe(await api('POST', '/api/v1/agent/two-factor/disable', { password: password.value }));
          showOff();
        } catch (e) {
          if (e.status === 422) error.textContent = t('wrong_password');
          else fail(e);
        }
      } }, h('label', {}, h('span', {}, t('password_to_turn_off')), password), h('button', { type: 'submit', class: 'danger' }, t('turn_off'))) : null,
      error);
  };

  if (state.me?.two_factor) showOn();
  else showOff();
}

/** The enrolment screen: the session may do nothing else until two-factor login is on. */
export function showEnrolment(me, onDone) {
  state.me = me;
  $('login').hidden = true;
  $('app').hidden = true;
  $('enrol').hidden = false;
  mountTwoFactor($('enrol-two-factor'), {
    canTurnOff: false,
    onEnabled: (fresh) => {
      $('enrol').hidden = true;
      onDone(fresh);
    },
  });
}

/** The second step of a login: the code for `ticket`; `onDone(agent)` once it is accepted. */
export function askCode(ticket, onDone) {
  $('login-form').hidden = true;
  $('code-form').hidden = false;
  $('code-error').textContent = '';
  $('login-code').value = '';
  $('login-code').focus();
  $('code-form').onsubmit = async (event) => {
    event.preventDefault();
    try {
      const answer = await api('POST', '/api/v1/agent/login/code', { ticket, code: $('login-code').value });
      $('code-form').hidden = true;
      $('login-form').hidden = false;
      onDone(answer.agent);
    } catch (error) {
      if (error.status === 401 && /expired/.test(error.message || '')) {
        $('code-form').hidden = true;
        $('login-form').hidden = false;
        $('login-error').textContent = t('login_expired');
      } else {
        $('code-error').textContent = error.status === 429 ? t('rate_limited') : t('wrong_code');
      }
    }
  };
}

/** Opens the profile dialog. */
export function openProfile() {
  for (const id of ['avatar-error', 'password-result']) $(id).textContent = '';
  $('password-form').reset();
  mountTwoFactor($('profile-two-factor'), { onEnabled: showMe });
  $('profile-dialog').showModal();
}

/** Wires the profile dialog's controls (once). */
export function wireProfile() {
  $('me-button').addEventListener('click', openProfile);
  $('profile-close').addEventListener('click', () => $('profile-dialog').close());
  $('avatar-choose').addEventListener('click', () => $('avatar-input').click());
  $('avatar-input').addEventListener('change', async (event) => {
    const file = event.target.files[0];
    event.target.value = '';
    if (!file) return;
    $('avatar-error').textContent = '';
    try {
      showMe(await api('PUT', '/api/v1/agent/avatar', file));
    } catch (error) {
      $('avatar-error').textContent = problem(error);
    }
  });
  $('avatar-remove').addEventListener('click', async () => {
    try {
      showMe(await api('DELETE', '/api/v1/agent/avatar'));
    } catch (error) {
      $('avatar-error').textContent = problem(error);
    }
  });
  $('password-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const result = $('password-result');
    result.classList.remove('ok');
    if ($('password-new').value !== $('password-repeat').value) {
      result.textContent = t('passwords_differ');
      return;
    }
    try {
      await api('POST', '/api/v1/agent/password', { current_password: $('password-current').value, new_password: $('password-new').value });
      $('password-form').reset();
      result.classList.add('ok');
      result.textContent = t('password_changed');
    } catch (error) {
      if (error.status === 422 && /current_password/.test(error.message || '')) result.textContent = t('wrong_current_password');
      else if (error.status === 422) result.textContent = t('password_rules');
      else result.textContent = problem(error);
    }
  });
}
