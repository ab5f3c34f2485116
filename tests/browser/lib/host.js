// host.js: a static HTTP server on its own port, so the widget runs on a
// different origin from kefu, as on a customer's website. Each request asks
// `page(url)` for the HTML to serve.

import { createServer } from 'node:http';

export async function startHost(page) {
  const server = createServer((req, res) => {
    const html = page(new URL(req.url, 'http://host'));
    res.writeHead(html == null ? 404 : 200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(html ?? 'not found');
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { origin: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((r) => server.close(r)) };
}

/**
 * A shop page embedding the widget. Its stylesheet is hostile on purpose (the
 * widget must look right anyway); `before` is inline script placed before the
 * embed tag, e.g. the queue snippet and kefu.setUser().
 */
export function shopPage(kefu, { before = '' } = {}) {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>Host shop</title><link rel="icon" href="data:,">
<style>
  * { box-sizing: content-box !important; font-size: 31px; }
  div, button, iframe, span { display: inline !important; position: static !important; border: 9px solid red !important; }
  body { margin: 0; transform: none; }
</style></head>
<body><h1>Host shop</h1><p>Products…</p>
<script>${before}</script>
<script src="${kefu.origin}/widget.js" data-site="${kefu.siteKey}" async></script>
</body></html>`;
}

/** The queue snippet from loader.js, so calls can be made before the widget loads. */
export const QUEUE_SNIPPET = `window.kefu = window.kefu || { q: [] };
['open','close','toggle','setUser','setAttributes','setLocale','on'].forEach(function (m) {
  kefu[m] = kefu[m] || function () { kefu.q.push([m, arguments]); };
});`;
