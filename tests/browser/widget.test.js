// widget.test.js: end-to-end tests of the visitor widget against a real kefu
// server: a host page on another origin embeds /widget.js, and a protocol-level
// agent client (lib/agent.js) answers. Run: node --test tests/browser/

import { test, before, after, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { Kefu } from './lib/kefu.js';
import { Agent } from './lib/agent.js';
import { startHost, shopPage, QUEUE_SNIPPET } from './lib/host.js';
import { launch, bubble, panelFrame, openWidget, typeMessage, messageItem } from './lib/browser.js';

let browser;
let kefu;
let host;
let context;
let page;
let agent;
let hostBefore; // inline script the host page runs before the embed tag

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

/** A fresh server, host page and browser context for every test. */
async function setup({ enforceIdentity = false, withAgent = true, script = '' } = {}) {
  kefu = await Kefu.create({ enforceIdentity });
  await kefu.start();
  hostBefore = script;
  host = await startHost((url) => (url.pathname === '/' ? shopPage(kefu, { before: hostBefore }) : null));
  if (withAgent) agent = await Agent.connect(kefu);
  context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  page = await context.newPage();
  page.on('pageerror', (err) => console.error('[browser] page error:', err));
  page.on('console', (msg) => msg.type() === 'error' && console.error('[browser]', msg.text()));
}

beforeEach(() => {
  agent = null;
});

afterEach(async () => {
  agent?.close();
  await context?.close();
  await host?.close();
  await kefu?.close();
});

test('the widget on a page of another origin shows its bubble and opens the panel', async () => {
  await setup();
  await page.goto(host.origin);
  assert.notEqual(new URL(host.origin).origin, new URL(kefu.origin).origin);
  await bubble(page).waitFor({ state: 'visible' });
  const box = await bubble(page).boundingBox();
  assert.ok(box.width >= 50 && box.width <= 70, `bubble width ${box.width} (host CSS must not change it)`);
  assert.ok(box.x > 1100 && box.y > 650, `bubble at the bottom right, got ${box.x},${box.y}`);

  const frame = await openWidget(page);
  const iframeBox = await page.locator('kefu-widget iframe').boundingBox();
  assert.ok(iframeBox.width >= 300 && iframeBox.height >= 400, `panel size ${iframeBox.width}x${iframeBox.height}`);
  assert.equal(await frame.locator('#site-name').textContent(), 'Demo');
  await frame.locator('#status[data-state="online"]').waitFor();
  assert.match(frame.url(), /\/widget\/panel\.html\?site=.*&embed=1&parent=/);

  await frame.locator('#btn-close').click();
  await page.locator('kefu-widget iframe').waitFor({ state: 'hidden' });
});

test('a visitor message reaches the agent and the reply shows in the panel', async () => {
  await setup();
  await page.goto(host.origin);
  const frame = await openWidget(page);
  await typeMessage(frame, 'Hello, is the green tea in stock?');
  const msg = await agent.waitForMessage('Hello, is the green tea in stock?');
  assert.equal(msg.sender.kind, 'visitor');
  await messageItem(frame, 'Hello, is the green tea in stock?').locator('.kf-state', { hasText: 'Sent' }).waitFor();

  const ack = await agent.reply(msg.conversation_id, 'Yes, 40 boxes left.');
  assert.equal(ack.type, 'ack', JSON.stringify(ack));
  await messageItem(frame, 'Yes, 40 boxes left.').waitFor();
  assert.ok(await messageItem(frame, 'Yes, 40 boxes left.').evaluate((li) => li.classList.contains('kf-agent')));
  // Beside it, the agent's picture: here the initial-letter one, since they set none.
  const avatar = messageItem(frame, 'Yes, 40 boxes left.').locator('img.kf-avatar');
  assert.equal(await avatar.getAttribute('src'), `/api/v1/agents/${agent.id}/avatar`);
  await avatar.evaluate((img) => (img.complete ? null : new Promise((done) => { img.onload = done; img.onerror = done; })));
  assert.ok(await avatar.evaluate((img) => img.naturalWidth > 0), 'the picture loads');
});

test('a reload keeps the conversation: history shows', async () => {
  await setup();
  await page.goto(host.origin);
  let frame = await openWidget(page);
  await typeMessage(frame, 'Question before reload');
  const msg = await agent.waitForMessage('Question before reload');
  await agent.reply(msg.conversation_id, 'Answer before reload');
  await messageItem(frame, 'Answer before reload').waitFor();

  await page.reload();
  frame = await openWidget(page);
  await messageItem(frame, 'Question before reload').waitFor();
  await messageItem(frame, 'Answer before reload').waitFor();
  assert.equal(await messageItem(frame, 'Question before reload').count(), 1);
});

test('a message typed while the server is down is delivered exactly once after restart', async () => {
  await setup();
  await page.goto(host.origin);
  const frame = await openWidget(page);
  await typeMessage(frame, 'first');
  const first = await agent.waitForMessage('first');
  agent.close();

  await kefu.kill();
  await frame.locator('#status:not([data-state="online"])').waitFor();
  await typeMessage(frame, 'typed while down');
  await messageItem(frame, 'typed while down').locator('.kf-state', { hasText: 'Sending' }).waitFor();

  await kefu.start();
  await messageItem(frame, 'typed while down').locator('.kf-state', { hasText: 'Sent' }).waitFor({ timeout: 30000 });
  agent = await Agent.connect(kefu);
  await agent.waitForMessage('typed while down');
  await agent.waitFor((f) => f.type === 'replayed' && f.conversation_id === first.conversation_id, 'replay');
  assert.equal(agent.count('typed while down'), 1);

  const history = await kefu.request('GET', `/api/v1/conversations/${first.conversation_id}/messages`, { token: agent.token });
  assert.equal(history.status, 200);
  assert.equal(history.body.messages.filter((m) => m.text === 'typed while down').length, 1);
  assert.equal(await messageItem(frame, 'typed while down').count(), 1);
});

test('with no agent online the panel takes an offline message', async () => {
  await setup({ withAgent: false });
  await page.goto(host.origin);
  await bubble(page).click();
  const frame = await panelFrame(page);
  const form = frame.locator('#offline');
  await form.waitFor({ state: 'visible' });
  assert.ok(await frame.locator('#composer').isHidden());
  await form.locator('input[name=name]').fill('Ada');
  await form.locator('input[name=email]').fill('ada@example.com');
  await form.locator('textarea[name=text]').fill('Please call me back about my order.');
  const posted = page.waitForResponse((r) => r.url().endsWith('/api/v1/visitor/offline-messages'));
  await form.locator('button[type=submit]').click();
  const res = await posted;
  assert.equal(res.status(), 201);
  const { lang, ...sent } = JSON.parse(res.request().postData());
  assert.deepEqual(sent, { name: 'Ada', email: 'ada@example.com', text: 'Please call me back about my order.' });
  assert.match(lang, /^(en|zh-CN)$/, 'the widget says which language to answer in');
  await frame.getByText('Thanks! We got your message', { exact: false }).waitFor();
});

test('markup a visitor or agent writes shows as text and never runs', async () => {
  await setup();
  const dialogs = [];
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    d.dismiss();
  });
  await page.goto(host.origin);
  const frame = await openWidget(page);
  const evil = '<img src=x onerror=alert(1)>';
  await typeMessage(frame, evil);
  const msg = await agent.waitForMessage(evil);
  await agent.reply(msg.conversation_id, '<script>alert(2)</script><b>bold?</b>');
  await messageItem(frame, '<script>alert(2)</script><b>bold?</b>').waitFor();
  await messageItem(frame, evil).waitFor();
  // The agent's picture is the one image kefu itself draws there.
  assert.equal(await frame.locator('#messages img:not(.kf-avatar), #messages script, #messages b').count(), 0);
  assert.deepEqual(dialogs, []);
});

test('identity enforcement refuses a bad signature and accepts a good one', async () => {
  await setup({ enforceIdentity: true, script: `${QUEUE_SNIPPET}\nkefu.setUser({ id: 'u-42', name: 'Ada', signature: 'deadbeef' });` });
  const refused = page.waitForResponse((r) => r.url().endsWith('/api/v1/visitor/session'));
  await page.goto(host.origin);
  await bubble(page).click();
  const frame = await panelFrame(page);
  const res = await refused;
  assert.equal(res.status(), 403);
  assert.equal((await res.json()).error.code, 'invalid_signature');
  await frame.locator('#notice', { hasText: 'could not verify your identity' }).waitFor();
  assert.ok(await frame.locator('#composer').isHidden());

  const signature = createHmac('sha256', kefu.siteSecret).update('u-42').digest('hex');
  hostBefore = `${QUEUE_SNIPPET}\nkefu.setUser({ id: 'u-42', name: 'Ada', signature: '${signature}' });`;
  const good = await browser.newContext();
  try {
    const goodPage = await good.newPage();
    const accepted = goodPage.waitForResponse((r) => r.url().endsWith('/api/v1/visitor/session'));
    await goodPage.goto(host.origin);
    const goodFrame = await openWidget(goodPage);
    assert.equal((await accepted).status(), 200);
    assert.ok(await goodFrame.locator('#notice').isHidden());
  } finally {
    await good.close();
  }
});
