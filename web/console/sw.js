// sw.js: the console's service worker, registered with scope /console when an agent turns
// notifications on. It only shows the push notifications kefu sends while the agent's console
// is closed, and opens (or focuses) the console at the conversation on a click. It caches
// nothing and answers no fetch.

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('push', (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch {
    data = { body: event.data ? event.data.text() : '' };
  }
  event.waitUntil(self.registration.showNotification(data.title || 'kefu', {
    body: data.body || '',
    tag: data.tag,
    data: { url: data.url || '/console' },
  }));
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  // Only kefu's own origin: the payload's url is a path, and anything else falls back to it.
  const target = new URL(event.notification.data?.url || '/console', self.location.origin);
  const url = target.origin === self.location.origin ? target.href : new URL('/console', self.location.origin).href;
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
    const open = windows.find((client) => new URL(client.url).pathname === '/console');
    if (open) {
      open.postMessage({ type: 'open', url });
      return open.focus();
    }
    return self.clients.openWindow(url);
  })());
});
