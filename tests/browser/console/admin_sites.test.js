// admin_sites.test.js: an admin creates a site in the admin pages (headless
// Chromium, real kefu), copies its snippet into a page on another origin, and
// the widget on that page reaches an agent. Run from the repository root:
// node --test --test-concurrency=1 tests/browser/console/

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { Kefu, BOSS, PASSWORD } from './lib/kefu.js';
import { launch } from './lib/browser.js';
import { startHost } from '../lib/host.js';
import { Agent } from '../lib/agent.js';
import { openWidget, typeMessage, messageItem } from '../lib/browser.js';

const DOCS = resolve(import.meta.dirname, '../../../docs');
let browser;
let kefu;
let host;

before(async () => {
  browser = await launch();
  kefu = await Kefu.create();
  await kefu.start();
});

after(async () => {
  await host?.close();
  await kefu?.close();
  await browser?.close();
});

/** A page logged in to the admin pages through the login form. */
async function adminPage(context) {
  const page = await context.newPage();
  page.on('pageerror', (error) => console.error('page error:', error));
  await page.goto(`${kefu.origin}/admin`);
  assert.match(page.url(), /\/admin\/login\?next=/);
  await page.locator('input[name=email]').fill(BOSS);
  await page.locator('input[name=password]').fill(PASSWORD);
  await page.locator('button[type=submit]').click();
  await page.locator('h1', { hasText: 'Sites' }).waitFor();
  return page;
}

test('an admin creates a site, fixes a mistake, and its pasted snippet opens a chat an agent answers', async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await adminPage(context);

  await page.getByRole('link', { name: 'New site' }).click();
  await page.locator('input[name=name]').fill('Tea shop');
  await page.locator('input[name=color]').fill('green');
  await page.getByRole('button', { name: 'Create site' }).click();
  // A clear message, the typed values kept.
  await page.locator('.field-error', { hasText: 'Colour:' }).waitFor();
  assert.equal(await page.locator('input[name=name]').inputValue(), 'Tea shop');
  assert.equal(await page.locator('input[name=color]').inputValue(), 'green');

  await page.locator('input[name=color]').fill('#0a7d45');
  await page.locator('textarea[name=welcome_text]').fill('欢迎光临 Tea shop!');
  await page.getByRole('button', { name: 'Create site' }).click();
  await page.locator('.notice', { hasText: 'Site created' }).waitFor();
  const snippet = await page.locator('#snippet').inputValue();
  assert.match(snippet, /^<script src="http:\/\/127\.0\.0\.1:\d+\/widget\.js" data-site="[0-9a-f]+" async><\/script>$/);
  const key = snippet.match(/data-site="([0-9a-f]+)"/)[1];

  // Allow the shop's origin, as the admin would before pasting the snippet.
  host = await startHost((url) => (url.pathname === '/' ? `<!doctype html><html><head><meta charset="utf-8">
<title>Tea shop</title><link rel="icon" href="data:,"></head><body><h1>Tea shop</h1>${snippet}</body></html>` : null));
  await page.locator('textarea[name=allowed_origins]').fill(host.origin);
  await page.getByRole('button', { name: 'Save' }).click();
  await page.locator('.notice', { hasText: 'Saved' }).waitFor();
  await page.screenshot({ path: resolve(DOCS, 'admin-site.png'), fullPage: true });

  // An agent of the new site, created through the agents page.
  await page.getByRole('link', { name: 'Agents' }).click();
  await page.locator('input[name=email]').fill('tea@x.test');
  await page.locator('input[name=name]').fill('Tea agent');
  await page.locator(`input[name=sites][value="${key}"]`).check();
  await page.getByRole('button', { name: 'Add agent' }).click();
  const password = await page.locator('.created-password').textContent();
  const agent = await Agent.connect(kefu, { email: 'tea@x.test', password });

  // The visitor on the shop page sees the widget with the new settings, writes, and is answered.
  const shop = await context.newPage();
  await shop.goto(host.origin);
  const frame = await openWidget(shop);
  await frame.getByText('欢迎光临 Tea shop!').waitFor();
  await typeMessage(frame, 'Do you sell oolong?');
  const message = await agent.waitForMessage('Do you sell oolong?');
  await agent.reply(message.conversation_id, 'Yes, three kinds.');
  await messageItem(frame, 'Yes, three kinds.').waitFor();
  agent.close();

  // The audit log shows what the admin did.
  await page.getByRole('link', { name: 'Audit log' }).click();
  for (const action of ['site.create', 'site.update', 'agent.create']) {
    await page.locator('td code', { hasText: action }).first().waitFor();
  }
  await context.close();
});
