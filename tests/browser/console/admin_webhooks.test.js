// admin_webhooks.test.js: an admin adds a webhook in the admin pages (headless
// Chromium, real kefu), a visitor's message reaches a local receiver, the
// delivery shows as sent on the webhook's page (in English and in Chinese) and
// is sent again with one click. Run from the repository root:
// node --test --test-concurrency=1 tests/browser/console/

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { resolve } from 'node:path';
import { Kefu, BOSS, PASSWORD } from './lib/kefu.js';
import { Visitor } from './lib/visitor.js';
import { launch } from './lib/browser.js';

const DOCS = resolve(import.meta.dirname, '../../../docs');
let browser;
let kefu;
let receiver;
const received = [];

before(async () => {
  browser = await launch();
  kefu = await Kefu.create();
  await kefu.start();
  // The integration's endpoint: answers 204 and keeps every body.
  receiver = createServer((request, response) => {
    let body = '';
    request.on('data', (chunk) => { body += chunk; });
    request.on('end', () => { received.push(JSON.parse(body)); response.writeHead(204).end(); });
  });
  await new Promise((done) => receiver.listen(0, '127.0.0.1', done));
});

after(async () => {
  await new Promise((done) => receiver?.close(done));
  await kefu?.close();
  await browser?.close();
});

async function until(check, what, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((done) => setTimeout(done, 50));
  }
}

test('an admin adds a webhook, sees its delivery sent, resends it, in English and Chinese', async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: 'zh-CN' });
  const page = await context.newPage();
  page.on('pageerror', (error) => console.error('page error:', error));
  await page.goto(`${kefu.origin}/admin/login?next=%2Fadmin%2Fwebhooks`);
  await page.locator('input[name=email]').fill(BOSS);
  await page.locator('input[name=password]').fill(PASSWORD);
  await page.locator('button[type=submit]').click();
  // The browser asks for Chinese: the page answers in it, and links to English.
  await page.locator('h1', { hasText: 'Webhook' }).waitFor();
  await page.getByText('这个站点还没有 Webhook。').waitFor();
  await page.getByRole('link', { name: 'English' }).click();
  await page.getByText('This site has no webhooks yet.').waitFor();

  const url = `http://127.0.0.1:${receiver.address().port}/hook`;
  await page.locator('input[name=url]').fill(url);
  await page.locator('input[name=allow_private]').check();
  await page.getByRole('button', { name: 'Add webhook' }).click();
  // No event chosen: a clear message, the URL kept.
  await page.locator('.field-error', { hasText: 'name at least one of' }).waitFor();
  assert.equal(await page.locator('input[name=url]').inputValue(), url);
  assert.ok(await page.locator('input[name=allow_private]').isChecked());
  await page.locator('input[name=events][value="message.created"]').check();
  await page.getByRole('button', { name: 'Add webhook' }).click();
  const secret = await page.locator('#new-secret').inputValue();
  assert.match(secret, /^whsec_/);

  const visitor = await Visitor.open(kefu);
  await visitor.say('Is my order on its way?');
  await until(() => received.some((event) => event.type === 'message.created'), 'the first delivery');

  await page.getByRole('link', { name: /Edit/ }).click();
  const row = page.locator('tr[data-delivery]').first();
  await row.locator('.status.sent').waitFor();
  assert.equal((await row.locator('td').nth(5).textContent()).trim(), '204');
  await page.screenshot({ path: resolve(DOCS, 'admin-webhooks.png'), fullPage: true });
  const before = received.length;
  await row.getByRole('button', { name: 'Resend' }).click();
  await page.locator('.notice', { hasText: 'queued to be sent again' }).waitFor();
  await until(() => received.length > before, 'the resent delivery');

  await page.getByRole('link', { name: '中文' }).click();
  await page.locator('tr[data-delivery] .status.sent', { hasText: '已送达' }).first().waitFor();
  await page.getByRole('button', { name: '删除' }).click();
  await page.locator('.notice', { hasText: 'Webhook 已删除。' }).waitFor();
  await page.getByText('这个站点还没有 Webhook。').waitFor();
  visitor.close();
  await context.close();
});
