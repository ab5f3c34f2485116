// leads.test.js: the console's leads view against a real kefu server. A visitor
// leaves an offline message in the widget (on a host page of another origin),
// it appears live in the agent's leads list, the agent opens it, replies and
// marks it done, and the visitor finds the reply on reopening the widget. And
// an admin exports and erases one visitor's data from the visitor panel.
// Run from the repository root: node --test --test-concurrency=1 tests/browser/console/

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Kefu, ANN, BOB, BOSS } from './lib/kefu.js';
import { Visitor } from './lib/visitor.js';
import { launch, consolePage, bubbles } from './lib/browser.js';
import { startHost, shopPage } from '../lib/host.js';
import { bubble, panelFrame, messageItem } from '../lib/browser.js';

const DOCS = new URL('../../../docs', import.meta.url).pathname;
let browser;
let kefu;
let host;
let contexts = [];

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

afterEach(async () => {
  for (const context of contexts) await context.close();
  contexts = [];
  await host?.close();
  await kefu?.close();
});

async function openConsole(email, options) {
  const opened = await consolePage(browser, kefu, email, options);
  contexts.push(opened.context);
  return opened.page;
}

test('an offline message appears live in the leads view, the agent answers and closes it, the visitor sees the answer', async () => {
  kefu = await Kefu.create();
  await kefu.start();
  host = await startHost((url) => (url.pathname === '/' ? shopPage(kefu) : null));

  // Ann has the Leads view open but is away, so nobody can chat: the widget offers the offline
  // form (it would switch to the chat, live, the moment she is online).
  const page = await openConsole(ANN);
  await page.locator('#presence').selectOption('away');
  await page.locator('.list-tabs button[data-list="leads"]').click();
  await page.locator('#lead-filters').waitFor({ state: 'visible' });

  const shopContext = await browser.newContext({ locale: 'en-US' });
  contexts.push(shopContext);
  const shop = await shopContext.newPage();
  await shop.goto(host.origin);
  await bubble(shop).click();
  let frame = await panelFrame(shop);
  const form = frame.locator('#offline');
  await form.waitFor({ state: 'visible' });

  await form.locator('input[name=name]').fill('Ada Li');
  await form.locator('input[name=email]').fill('ada@example.com');
  await form.locator('textarea[name=text]').fill('Do you ship to Hangzhou? Please email me.');
  await form.locator('button[type=submit]').click();
  await frame.getByText('Thanks! We got your message', { exact: false }).waitFor();

  // It arrives in the open console without a reload, counted as new.
  const row = page.locator('.row[data-lead]', { hasText: 'Do you ship to Hangzhou?' });
  await row.waitFor();
  await page.locator('[data-lead-count="new"]', { hasText: '1' }).waitFor();
  await page.locator('[data-count="leads"]', { hasText: '1' }).waitFor();
  assert.match(await row.textContent(), /Ada Li/);
  assert.match(await row.textContent(), /ada@example\.com/);

  // Opened, it shows the conversation's history with the lead bar over it.
  await row.click();
  await bubbles(page, 'Do you ship to Hangzhou? Please email me.').waitFor();
  await page.locator('#lead-bar').waitFor({ state: 'visible' });
  assert.match(await page.locator('#lead-label').textContent(), /Offline message/);
  await page.screenshot({ path: `${DOCS}/console-leads.png` });

  await page.locator('#input').fill('Yes, we ship to Hangzhou in 2 days.');
  await page.locator('#input').press('Enter');
  await page.locator('#messages .msg.out:not(.pending) .bubble', { hasText: 'Yes, we ship to Hangzhou in 2 days.' }).waitFor();
  await page.locator('#lead-done').click();
  await page.locator('#lead-done').waitFor({ state: 'hidden' });
  await row.waitFor({ state: 'detached' });
  await page.locator('[data-lead-count="done"]', { hasText: '1' }).waitFor();
  await page.locator('[data-count="leads"]', { hasText: '0' }).waitFor();
  const login = await kefu.login(ANN);
  const listed = await kefu.request('GET', '/api/v1/leads?status=done', { token: login.token });
  assert.equal(listed.body.leads.length, 1);
  assert.ok(listed.body.leads[0].assigned_agent, 'the agent who answered holds the lead');

  // The visitor comes back: the same conversation, their message and the answer.
  await shop.reload();
  await bubble(shop).click();
  frame = await panelFrame(shop);
  await messageItem(frame, 'Do you ship to Hangzhou? Please email me.').waitFor();
  await messageItem(frame, 'Yes, we ship to Hangzhou in 2 days.').waitFor();

  // The same lead in Chinese, for another agent of the site.
  const zh = await openConsole(BOB, { locale: 'zh-CN' });
  await zh.locator('.list-tabs button[data-list="leads"]').click();
  assert.equal((await zh.locator('.list-tabs button[data-list="leads"] span').textContent()).trim(), '线索');
  await zh.locator('[data-lead-status="done"]').click();
  const done = zh.locator('.row[data-lead]', { hasText: 'Do you ship to Hangzhou?' });
  await done.waitFor();
  assert.match(await done.textContent(), /已完成/);
  await done.click();
  await bubbles(zh, 'Yes, we ship to Hangzhou in 2 days.').waitFor();
  assert.match(await zh.locator('#lead-label').textContent(), /离线留言/);
  await zh.screenshot({ path: `${DOCS}/console-leads-zh.png` });
});

test("an admin exports a visitor's data from the visitor panel and erases it after confirming", async () => {
  kefu = await Kefu.create();
  await kefu.start();
  const page = await openConsole(BOSS);
  const visitor = await Visitor.open(kefu);
  const ack = await visitor.say('My card ends in 4242');
  const row = page.locator(`.row[data-conversation="${ack.conversation_id}"]`);
  await page.locator('.list-tabs button[data-list="open"]').click();
  await row.click();
  await bubbles(page, 'My card ends in 4242').waitFor();
  await page.locator('#visitor-data').waitFor({ state: 'visible' });

  const download = page.waitForEvent('download');
  await page.locator('#visitor-export').click();
  const archive = await (await download).path();
  assert.ok(readFileSync(archive).includes('My card ends in 4242'), 'the archive holds the message');

  // Erasing asks first; cancelling changes nothing.
  await page.locator('#visitor-erase').click();
  await page.locator('#erase-dialog').waitFor({ state: 'visible' });
  await page.locator('#erase-cancel').click();
  const boss = await kefu.login(BOSS);
  const path = `/api/v1/visitors/${visitor.id}/data`;
  assert.equal((await kefu.request('GET', `/api/v1/visitors/${visitor.id}`, { token: boss.token })).status, 200);
  await page.locator('#visitor-erase').click();
  await page.locator('#erase-sure').check();
  await page.locator('#erase-ok').click();
  await page.locator('#erase-dialog').waitFor({ state: 'hidden' });
  await row.waitFor({ state: 'detached' });
  assert.equal((await kefu.request('GET', path, { token: boss.token })).status, 404);
  visitor.close();
});
