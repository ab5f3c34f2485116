// cluster.test.js: the widget and the console on two kefu cluster nodes (PostgreSQL and NATS,
// lib/cluster.js): a visitor's widget served by one node, in Chinese, and the agent's console on
// the other, in English, chat both ways; the admin's Reports page, in Chinese, counts it through
// either node. Skipped, saying why, without PostgreSQL 15 or
// nats-server; under CI they are installed, and a missing one fails the test.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Cluster, missing } from '../lib/cluster.js';
import { startHost, shopPage } from '../lib/host.js';
import { openWidget, typeMessage, messageItem } from '../lib/browser.js';
import { launch, consolePage, bubbles } from './lib/browser.js';

let browser;
let cluster;
let host;

before(async () => {
  browser = await launch();
});

after(async () => {
  await host?.close();
  await cluster?.close();
  await browser?.close();
});

test('a visitor on one node and an agent on another chat through the widget and the console', async (t) => {
  const absent = missing();
  if (absent) {
    assert.ok(!process.env.CI, `CI installs PostgreSQL 15 and nats-server: ${absent}`);
    t.skip(`cluster browser test skipped: ${absent}`);
    return;
  }
  cluster = await Cluster.start({ nodes: 2 });
  const [visitorsNode, agentsNode] = cluster.nodes;
  assert.ok(cluster.adminPassword && cluster.siteKey, cluster.log.join('\n'));

  // The first start's admin serves every site; logged in to the console through the second node.
  const { page: agentConsole } = await consolePage(browser, agentsNode, 'admin@kefu.local', { password: cluster.adminPassword });
  await agentConsole.locator('#connection[data-state="open"]').waitFor({ state: 'attached' });

  // The shop's page embeds the widget from the first node; the visitor's browser is Chinese.
  host = await startHost((url) => (url.pathname === '/' ? shopPage(visitorsNode) : null));
  const visitorContext = await browser.newContext({ locale: 'zh-CN', viewport: { width: 1280, height: 800 } });
  const page = await visitorContext.newPage();
  page.on('pageerror', (error) => console.error('[widget] page error:', error));
  await page.goto(host.origin);
  const frame = await openWidget(page);
  // Online: the agent is on the other node, which the first one learns from the cluster's presence.
  await frame.locator('#status[data-state="online"]').waitFor();

  await typeMessage(frame, '你好，请问绿茶有货吗？');
  await messageItem(frame, '你好，请问绿茶有货吗？').locator('.kf-state', { hasText: '已发送' }).waitFor();

  // The console on the other node lists the conversation, assigned to the admin, and shows it.
  const row = agentConsole.locator('.row').first();
  await row.waitFor();
  await row.click();
  await bubbles(agentConsole, '你好，请问绿茶有货吗？').waitFor();
  await agentConsole.locator('#input').fill('Yes, we have it. 有货，今天可以发货。');
  await agentConsole.locator('#input').press('Enter');

  // The reply crosses back to the widget's node.
  await messageItem(frame, 'Yes, we have it. 有货，今天可以发货。').waitFor();
  await typeMessage(frame, 'Great, thank you!');
  await bubbles(agentConsole, 'Great, thank you!').waitFor();
  // Each message once on both sides.
  assert.equal(await messageItem(frame, 'Yes, we have it. 有货，今天可以发货。').count(), 1);
  assert.equal(await bubbles(agentConsole, '你好，请问绿茶有货吗？').count(), 1);
  await visitorContext.close();

  // The admin's Reports page, in Chinese, through the visitor's node: the node counts the
  // conversation and its messages from PostgreSQL, whichever node stored them.
  const adminContext = await browser.newContext({ locale: 'zh-CN', viewport: { width: 1280, height: 900 } });
  const reports = await adminContext.newPage();
  reports.on('pageerror', (error) => console.error('[reports] page error:', error));
  await reports.goto(`${visitorsNode.origin}/admin/login?next=${encodeURIComponent('/admin/reports')}`);
  await reports.locator('input[name=email]').fill('admin@kefu.local');
  await reports.locator('input[name=password]').fill(cluster.adminPassword);
  await reports.locator('button[type=submit]').click();
  await reports.waitForURL(/\/admin\/reports$/);
  assert.equal(await reports.locator('html').getAttribute('lang'), 'zh-CN');
  const charts = reports.locator('svg.report-chart');
  assert.equal(await charts.count(), 3);
  const todayBar = charts.nth(0).locator('rect.bar').last();
  assert.ok(Number(await todayBar.getAttribute('height')) > 0, 'today has the conversation');
  assert.match(await todayBar.locator('title').textContent(), /1/);
  await adminContext.close();
});
