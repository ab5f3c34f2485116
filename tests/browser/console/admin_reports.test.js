// admin_reports.test.js: the admin reports page in headless Chromium against a
// real kefu server: an admin logs in through /admin/login, the page draws its
// three SVG charts, and a table's CSV link downloads a file. Run from the
// repository root: node --test --test-concurrency=1 tests/browser/console/admin_reports.test.js

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { resolve } from 'node:path';
import WebSocket from 'ws';
import { Kefu, ANN, BOSS, PASSWORD } from './lib/kefu.js';
import { Visitor } from './lib/visitor.js';
import { launch } from './lib/browser.js';

const DOCS = resolve(import.meta.dirname, '../../../docs');
let browser;
let kefu;

before(async () => {
  browser = await launch();
  kefu = await Kefu.create();
  await kefu.start();
});

after(async () => {
  await browser?.close();
  await kefu?.close();
});

/** An agent on the protocol: answers frames by waiting for the one that matches. */
async function agentSocket(email) {
  const { token } = await kefu.login(email);
  const ws = new WebSocket(`${kefu.origin.replace(/^http/, 'ws')}/ws/agent`);
  const frames = [];
  const waiters = new Set();
  ws.on('message', (data) => {
    const frame = JSON.parse(String(data));
    frames.push(frame);
    for (const waiter of waiters) waiter(frame);
  });
  const waitFor = (pred, what) => {
    const seen = frames.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolvePromise, reject) => {
      const timer = setTimeout(() => reject(new Error(`agent: timed out waiting for ${what}`)), 15000);
      const check = (frame) => {
        if (!pred(frame)) return;
        clearTimeout(timer);
        waiters.delete(check);
        resolvePromise(frame);
      };
      waiters.add(check);
    });
  };
  ws.on('open', () => ws.send(JSON.stringify({ type: 'hello', token })));
  await waitFor((f) => f.type === 'welcome', 'welcome');
  const event = (id, name) => waitFor((f) => f.type === 'conversation' && f.event === name && f.conversation.id === id, `${name} ${id}`);
  return {
    event,
    async reply(conversationId, text) {
      const clientId = randomUUID();
      ws.send(JSON.stringify({ type: 'send', client_id: clientId, conversation_id: conversationId, text }));
      await waitFor((f) => f.type === 'ack' && f.client_id === clientId, `ack of ${text}`);
    },
    async close(conversationId) {
      ws.send(JSON.stringify({ type: 'close', conversation_id: conversationId }));
      await event(conversationId, 'closed');
    },
    end: () => ws.close(),
  };
}

test('an admin sees the reports drawn as charts and downloads a table as CSV', async () => {
  // Three conversations: Ann answers all, closes two, and they are rated 5 and 4.
  const ann = await agentSocket(ANN);
  const visitors = [];
  try {
    for (const [index, score] of [5, 4, null].entries()) {
      const visitor = await Visitor.open(kefu);
      visitors.push(visitor);
      const { conversation_id: id } = await visitor.say(`我的订单 ${index + 1} 在哪里？`);
      await ann.event(id, 'assigned');
      await ann.reply(id, '马上帮您查询');
      if (score === null) continue;
      await ann.close(id);
      const rated = await kefu.request('POST', `/api/v1/conversations/${id}/rating`, { token: visitor.token, body: { score } });
      assert.equal(rated.status, 204);
    }
  } finally {
    for (const visitor of visitors) visitor.close();
    ann.end();
  }

  const context = await browser.newContext({ viewport: { width: 1280, height: 1150 }, acceptDownloads: true });
  try {
    const page = await context.newPage();
    const problems = [];
    page.on('pageerror', (error) => problems.push(String(error)));
    page.on('console', (message) => {
      // The browser asks for /favicon.ico on its own; the admin pages have none.
      if (message.type() === 'error' && !message.location().url.endsWith('/favicon.ico')) {
        problems.push(`${message.text()} ${message.location().url}`);
      }
    });
    await page.goto(`${kefu.origin}/admin/reports`);
    // Not logged in: the login form, which comes back to the reports.
    await page.locator('input[name="email"]').fill(BOSS);
    await page.locator('input[name="password"]').fill(PASSWORD);
    await page.locator('button[type="submit"]').click();
    await page.waitForURL(/\/admin\/reports$/);

    const charts = page.locator('svg.report-chart');
    assert.equal(await charts.count(), 3);
    for (const chart of await charts.all()) assert.ok(await chart.isVisible());
    assert.equal(await charts.nth(0).locator('rect.bar').count(), 30, 'a bar per day of the default 30');
    assert.equal(await charts.nth(2).locator('rect.bar').count(), 5, 'a bar per score');
    const todayBar = charts.nth(0).locator('rect.bar').last();
    assert.ok(Number(await todayBar.getAttribute('height')) > 0, 'today has conversations');
    assert.match(await todayBar.locator('title').textContent(), /: 3 conversations, 2 closed$/);
    assert.ok(await charts.nth(1).locator('path.line').count() >= 1, 'the times chart draws lines');
    assert.match(await page.locator('.tile', { hasText: 'Satisfaction' }).textContent(), /4\.50 \/ 5/);
    assert.match(await page.locator('#table-agents tbody').textContent(), /ann/);

    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.locator('#table-daily a', { hasText: 'Download CSV' }).click(),
    ]);
    assert.match(download.suggestedFilename(), /^kefu-daily-\d{4}-\d{2}-\d{2}-to-\d{4}-\d{2}-\d{2}\.csv$/);
    const csv = await readFile(await download.path());
    assert.deepEqual([...csv.subarray(0, 3)], [0xef, 0xbb, 0xbf], 'a UTF-8 byte order mark');
    const lines = csv.subarray(3).toString('utf8').trim().split('\n');
    assert.match(lines[0], /^date,conversations,closed,/);
    assert.equal(lines.length, 31);
    assert.match(lines[30], /^\d{4}-\d{2}-\d{2},3,2,/);

    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: `${DOCS}/admin-reports.png` });
    assert.deepEqual(problems, [], 'no script errors or policy violations');
  } finally {
    await context.close();
  }
});

test('a Chinese browser gets the reports in Chinese with a today card that refreshes itself', async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1150 }, locale: 'zh-CN' });
  const ann = await agentSocket(ANN);
  const visitors = [];
  try {
    const page = await context.newPage();
    const problems = [];
    page.on('pageerror', (error) => problems.push(String(error)));
    page.on('console', (message) => {
      if (message.type() === 'error' && !message.location().url.endsWith('/favicon.ico')) {
        problems.push(`${message.text()} ${message.location().url}`);
      }
    });
    await page.goto(`${kefu.origin}/admin/reports`);
    assert.equal(await page.locator('html').getAttribute('lang'), 'zh-CN');
    assert.equal(await page.locator('button[type="submit"]').textContent(), '登录');
    await page.locator('input[name="email"]').fill(BOSS);
    await page.locator('input[name="password"]').fill(PASSWORD);
    await page.locator('button[type="submit"]').click();
    await page.waitForURL(/\/admin\/reports$/);

    assert.equal(await page.locator('h1').textContent(), '报表');
    const card = page.locator('#today');
    assert.ok(await card.isVisible());
    assert.match(await card.locator('h2').textContent(), /今天/);
    assert.match(await page.locator('main').textContent(), /日期按 [A-Za-z_/]+ 计算/, 'the page names the time zone');
    const conversations = card.locator('[data-today="conversations"]');
    const before = Number(await conversations.textContent());
    assert.ok(before >= 3, 'the first test\'s conversations are today\'s');
    assert.match(await page.locator('#table-daily thead').textContent(), /首次响应中位数/);

    // A new conversation reaches the card without a reload (it reads again every 30 s).
    const visitor = await Visitor.open(kefu);
    visitors.push(visitor);
    const { conversation_id: id } = await visitor.say('还有人在吗？');
    await ann.event(id, 'assigned');
    await ann.reply(id, '在的，请讲');
    await page.waitForFunction(
      (count) => Number(document.querySelector('[data-today="conversations"]').textContent) === count,
      before + 1,
      { timeout: 40000 },
    );
    assert.notEqual(await card.locator('[data-today="median_first_response"]').textContent(), '–');

    // The switch turns the pages to English and remembers it.
    await page.locator('header a.language').click();
    await page.waitForURL(/\/admin\/reports$/);
    assert.equal(await page.locator('h1').textContent(), 'Reports');
    await page.goto(`${kefu.origin}/admin/sites`);
    assert.equal(await page.locator('h1').textContent(), 'Sites');
    await page.locator('header a.language').click();
    await page.waitForURL(/\/admin\/sites$/);
    assert.equal(await page.locator('h1').textContent(), '站点');

    await page.goto(`${kefu.origin}/admin/reports`);
    await page.screenshot({ path: `${DOCS}/admin-reports-zh.png` });
    assert.deepEqual(problems, [], 'no script errors or policy violations');
  } finally {
    for (const visitor of visitors) visitor.close();
    ann.end();
    await context.close();
  }
});
