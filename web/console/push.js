// push.js: the "Notifications" switch in the top bar. Turned on, it registers the console's
// service worker (/console/sw.js), subscribes to the browser's push service with kefu's VAPID
// key and posts the subscription, so kefu can reach the agent while the console is closed.
// Turned off (or on logout), the subscription is removed from kefu and from the browser.

import { request } from '../shared/protocol.js';
import { t, locale } from './i18n.js';

const SCOPE = '/console';

/** Whether this browser can receive push notifications here (a secure context with a service worker). */
export function pushSupported() {
  return window.isSecureContext && 'serviceWorker' in navigator && 'PushManager' in window && 'Notification' in window;
}

/** The VAPID key (base64url) as the bytes PushManager.subscribe takes. */
function keyBytes(base64url) {
  const base64 = base64url.replace(/-/g, '+').replace(/_/g, '/');
  return Uint8Array.from(atob(base64 + '='.repeat((4 - (base64.length % 4)) % 4)), (char) => char.charCodeAt(0));
}

async function browserSubscription() {
  const registration = await navigator.serviceWorker.getRegistration(SCOPE);
  return registration ? registration.pushManager.getSubscription() : null;
}

/** Whether this browser's subscription is registered with kefu for the logged-in agent. */
export async function pushEnabled() {
  if (!pushSupported() || Notification.permission !== 'granted') return false;
  const subscription = await browserSubscription();
  if (!subscription) return false;
  const mine = await request('GET', '/api/v1/push/subscriptions');
  return mine.some((stored) => stored.endpoint === subscription.endpoint);
}

function post(subscription) {
  return request('POST', '/api/v1/push/subscriptions', { body: { ...subscription.toJSON(), language: locale() } });
}

/** Asks for permission, subscribes and registers the subscription; throws a message to show. */
export async function enablePush() {
  if (Notification.permission !== 'granted' && (await Notification.requestPermission()) !== 'granted') {
    throw new Error(t('push_denied'));
  }
  await navigator.serviceWorker.register('/console/sw.js', { scope: SCOPE });
  const registration = await navigator.serviceWorker.ready;
  const { public_key: key } = await request('GET', '/api/v1/push/key');
  const subscription = (await registration.pushManager.getSubscription())
    || (await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: keyBytes(key) }));
  await post(subscription);
}

/** Removes the subscription from kefu and from the browser. */
export async function disablePush() {
  const subscription = await browserSubscription();
  if (!subscription) return;
  await request('DELETE', '/api/v1/push/subscriptions', { body: { endpoint: subscription.endpoint } }).catch((error) => {
    if (error.status !== 404) throw error;
  });
  await subscription.unsubscribe();
}

/** Re-registers the subscription so notifications follow a change of the console's language. */
export async function updatePushLanguage() {
  if (!(await pushEnabled())) return;
  const subscription = await browserSubscription();
  if (subscription) await post(subscription);
}

/** Wires the switch; `onOpen(url)` runs when a notification is clicked while the console is open. */
export async function wirePush(onError, onOpen) {
  if (!pushSupported()) return;
  const toggle = document.getElementById('push-toggle');
  const label = document.getElementById('push-switch');
  // data-state says what kefu has (on / off), once known: the tests wait for it.
  const show = (on) => {
    toggle.checked = on;
    label.dataset.state = on ? 'on' : 'off';
  };
  label.hidden = false;
  navigator.serviceWorker.addEventListener('message', (event) => {
    if (event.data?.type === 'open') onOpen(event.data.url);
  });
  toggle.addEventListener('change', async () => {
    const wanted = toggle.checked;
    toggle.disabled = true;
    delete label.dataset.state;
    try {
      if (wanted) await enablePush();
      else await disablePush();
      show(wanted);
    } catch (error) {
      show(!wanted);
      onError(`${t('push_failed')}: ${error.message}`);
    } finally {
      toggle.disabled = false;
    }
  });
  show(await pushEnabled().catch(() => false));
}
