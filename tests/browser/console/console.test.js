// console.test.js: the agent console in headless Chromium against a real kefu
// server, with a protocol-level visitor (lib/visitor.js). Run from the
// repository root: node --test --test-concurrency=1 tests/browser/console/

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { Kefu, ANN, BOB, BOSS } from './lib/kefu.js';
import { Visitor } from './lib/visitor.js';
import { launch, consolePage, bubbles } from './lib/browser.js';

const DOCS = resolve(import.meta.dirname, '../../../docs');
let browser;
let kefu;
let contexts = [];
let visitors = [];

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

afterEach(async () => {
  for (const visitor of visitors) visitor.close();
  for (const context of contexts) await context.close();
  visitors = [];
  contexts = [];
  await kefu?.close();
});

async function setup(env) {
  kefu = await Kefu.create(env);
  await kefu.start();
}

async function openConsole(email, options) {
  const opened = await consolePage(browser, kefu, email, options);
  contexts.push(opened.context);
  return opened.page;
}

async function newVisitor() {
  const visitor = await Visitor.open(kefu);
  visitors.push(visitor);
  return visitor;
}

test('an agent logs in, is notified, replies, uses a canned reply, writes a note, transfers and closes', async () => {
  await setup();
  const boss = await kefu.login(BOSS);
  const canned = await kefu.request('POST', '/api/v1/canned-replies', {
    token: boss.token, body: { site: kefu.siteKey, shortcut: 'thanks', text: 'Thank you for waiting!' },
  });
  assert.equal(canned.status, 201);
  const bobLogin = await kefu.login(BOB);

  const page = await openConsole(ANN);
  // The tab is in the background when the visitor writes.
  await page.evaluate(() => { window.__focused = false; });
  const visitor = await newVisitor();
  const ack = await visitor.say('Hello, I need help with my order');
  const conversationId = ack.conversation_id;
  await page.waitForFunction(() => window.__notifications.length > 0);
  const notes = await page.evaluate(() => window.__notifications);
  assert.ok(notes.some((n) => /New (conversation|message)/.test(n.title)), JSON.stringify(notes));
  await page.evaluate(() => { window.__focused = true; });

  // Ann holds it (the only agent online): it is in "Mine" with an unread badge.
  const row = page.locator(`.row[data-conversation="${conversationId}"]`);
  await row.locator('.badge').waitFor();
  await row.click();
  await bubbles(page, 'Hello, I need help with my order').waitFor();
  await row.locator('.badge').waitFor({ state: 'detached' });

  // Reply.
  await page.locator('#input').fill('Hi! Let me look that up.');
  await page.locator('#input').press('Enter');
  await visitor.waitForMessage('Hi! Let me look that up.');

  // Canned reply with "/".
  await page.locator('#input').pressSequentially('/tha');
  await page.locator('#canned-menu [data-shortcut="thanks"]').waitFor();
  await page.locator('#input').press('Enter');
  assert.equal(await page.locator('#input').inputValue(), 'Thank you for waiting!');
  await page.locator('#input').press('Control+Enter');
  await visitor.waitForMessage('Thank you for waiting!');

  // An internal note: visibly distinct, never sent to the visitor.
  await page.locator('#internal').check();
  await page.locator('#input').fill('VIP customer, be generous');
  await page.locator('#input').press('Enter');
  await page.locator('#messages .msg.internal .bubble', { hasText: 'VIP customer, be generous' }).waitFor();
  const noteColour = await page.locator('#messages .msg.internal .bubble').first().evaluate((e) => getComputedStyle(e).backgroundColor);
  const replyColour = await page.locator('#messages .msg.out .bubble').first().evaluate((e) => getComputedStyle(e).backgroundColor);
  assert.notEqual(noteColour, replyColour);
  await page.locator('#internal').uncheck();
  await visitor.say('Order 1234, the blue teapot');
  await bubbles(page, 'Order 1234, the blue teapot').waitFor();
  await page.locator('#input').fill('Found it 👍');
  await page.locator('#input').press('Enter');
  const found = await visitor.waitForMessage('Found it 👍');
  // Read receipts and typing, both ways.
  await visitor.waitFor((f) => f.type === 'read' && f.reader.kind === 'agent' && f.seq >= found.seq, 'the agent read receipt');
  visitor.send({ type: 'read', conversation_id: conversationId, seq: found.seq });
  await page.locator('#messages .msg.out .who', { hasText: '✓✓' }).last().waitFor();
  visitor.send({ type: 'typing', conversation_id: conversationId, active: true });
  await page.locator('#pane-typing', { hasText: 'typing' }).waitFor();
  await page.locator('#input').pressSequentially('One more');
  await visitor.waitFor((f) => f.type === 'typing' && f.sender.kind === 'agent' && f.active, 'the agent typing');
  await page.screenshot({ path: `${DOCS}/console.png` });
  await page.locator('#input').fill('');

  // Transfer to Bob with a note.
  await page.locator('#act-transfer').click();
  await page.locator('#transfer-target').selectOption(`agent:${bobLogin.agent.id}`);
  await page.locator('#transfer-note').fill('Please handle the refund');
  await page.locator('#transfer-ok').click();
  await page.locator('#pane-status', { hasText: 'bob' }).waitFor();
  await page.locator('#messages .msg.internal .bubble', { hasText: 'Please handle the refund' }).waitFor();
  const mine = await kefu.request('GET', '/api/v1/conversations?state=mine', { token: bobLogin.token });
  assert.equal(mine.body.conversations[0]?.id, conversationId);

  // Close; the visitor hears it; the console offers to reopen.
  await page.locator('#act-close').click();
  await visitor.waitFor((f) => f.type === 'conversation' && f.event === 'closed', 'closed event');
  await page.locator('#act-reopen').waitFor({ state: 'visible' });
  await page.locator('#act-reopen').click();
  await page.locator('#pane-status', { hasText: 'you' }).waitFor();

  // The visitor never saw a note, and saw every reply once.
  const texts = visitor.texts();
  assert.ok(!texts.some((t) => t.includes('VIP') || t.includes('refund')), JSON.stringify(texts));
  assert.equal(texts.filter((t) => t === 'Thank you for waiting!').length, 1);
  const history = await kefu.request('GET', `/api/v1/conversations/${conversationId}/messages`, { token: visitor.token });
  assert.ok(!history.body.messages.some((m) => m.internal));
});

test('the live visitor list shows who is on the site and an agent can start a chat', async () => {
  await setup();
  const page = await openConsole(ANN);
  const visitor = await newVisitor();
  await page.locator('.list-tabs [data-list="visitors"]').click();
  const row = page.locator(`.row[data-visitor="${visitor.id}"]`);
  await row.waitFor();
  assert.match(await row.textContent(), /Cart/);
  assert.match(await row.textContent(), /Chrome 131 on Linux · 127\.0\.0\.1/);
  visitor.send({ type: 'page_view', url: 'https://shop.test/checkout', title: 'Checkout' });
  await row.locator('.preview', { hasText: 'Checkout' }).waitFor();
  await row.locator('button.chat-visitor').click();
  await page.locator('#pane-status', { hasText: 'you' }).waitFor();
  await page.locator('#input').fill('Can I help you check out?');
  await page.locator('#input').press('Enter');
  await visitor.waitForMessage('Can I help you check out?');
  await page.locator('.visitor-panel dd', { hasText: 'https://shop.test/checkout' }).waitFor();

  // Keyboard: Esc closes the pane, Alt+↓ opens the next conversation of the list, ? shows the help.
  await page.keyboard.press('Escape');
  await page.locator('#pane').waitFor({ state: 'hidden' });
  await page.locator('.list-tabs [data-list="mine"]').click();
  await page.keyboard.press('Alt+ArrowDown');
  await page.locator('#pane').waitFor({ state: 'visible' });
  await page.locator('#list').focus();
  await page.keyboard.press('?');
  await page.locator('#help-dialog', { hasText: 'Alt+↓' }).waitFor({ state: 'visible' });
  await page.keyboard.press('Escape');
  await page.locator('#help-dialog').waitFor({ state: 'hidden' });
});

test('the console resumes after the server restarts, losing and duplicating nothing', async () => {
  await setup();
  const page = await openConsole(ANN, { locale: 'zh-CN' });
  const visitor = await newVisitor();
  const { conversation_id: conversationId } = await visitor.say('m1');
  await page.locator(`.row[data-conversation="${conversationId}"]`).click();
  await bubbles(page, 'm1').waitFor();
  await visitor.say('m2');
  await bubbles(page, 'm2').waitFor();

  await kefu.kill();
  await page.locator('#connection:not([data-state="open"])').waitFor({ state: 'attached' });
  // The agent writes while the server is down; the console keeps it and resends it.
  await page.locator('#input').fill('agent while down');
  await page.locator('#input').press('Enter');
  await kefu.start();
  // The visitor is back first and writes before the console has reconnected.
  await visitor.connect();
  for (const text of ['m3', 'm4', 'm5']) await visitor.say(text);
  await page.locator('#connection[data-state="open"]').waitFor({ state: 'attached' });
  await visitor.waitForMessage('agent while down');
  await visitor.say('m6');
  await bubbles(page, 'm6').waitFor();
  for (const text of ['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'agent while down']) {
    assert.equal(await bubbles(page, text).count(), 1, `${text} shown once`);
  }
  const seqs = await page.evaluate((id) => window.kefuConsole.state.conversations.get(id).sorted.map((m) => m.seq), conversationId);
  assert.deepEqual(seqs, seqs.map((_, i) => i + 1), 'every seq once, in order, no gap');
  assert.equal(visitor.texts().filter((t) => t === 'agent while down').length, 1);
  assert.equal(await page.locator('#act-close').textContent(), '结束');
  await page.screenshot({ path: `${DOCS}/console-zh.png` });
});

test('500 open conversations and 10,000 messages in one stay light: only what is visible is drawn', async () => {
  await setup({
    KEFU_LIMITS__FRAMES_PER_SECOND: '100000',
    KEFU_LIMITS__FRAME_BURST: '100000',
    // 501 new visitors from one address in seconds: far past an anonymous address's budget.
    KEFU_LIMITS__VISITOR_SESSIONS_PER_ADDRESS_PER_HOUR: '100000',
  });
  const big = await newVisitor();
  const first = await big.say('message 1');
  const N = 10000;
  // Pipelined in chunks; acks come in order, so the chunk's last ack covers it.
  for (let n = 2; n <= N; n += 500) {
    for (let k = n; k < Math.min(n + 499, N); k++) big.send({ type: 'send', client_id: `bulk-${k}`, text: `message ${k}` });
    await big.say(`message ${Math.min(n + 499, N)}`);
  }
  big.frames.length = 0;
  for (let batch = 0; batch < 10; batch++) {
    await Promise.all(Array.from({ length: 50 }, async (_, i) => {
      const visitor = await newVisitor();
      await visitor.say(`question ${batch * 50 + i}`);
      visitor.close();
    }));
  }
  const page = await openConsole(ANN);
  await page.locator('.list-tabs [data-list="open"]').click();
  await page.locator('[data-count="open"]', { hasText: '501' }).waitFor();
  const rows = await page.locator('#list .row').count();
  assert.ok(rows < 40, `${rows} conversation rows in the DOM for 501 conversations`);

  const started = Date.now();
  await page.locator('.list-tabs [data-list="mine"]').click();
  await page.locator(`.row[data-conversation="${first.conversation_id}"]`).click();
  await bubbles(page, `message ${N}`).waitFor();
  const openedMs = Date.now() - started;
  // Scroll up through the whole history, page by page.
  const activeLength = () => page.evaluate(() => window.kefuConsole.state.conversations.get(window.kefuConsole.state.active).sorted.length);
  while ((await activeLength()) < N) {
    const before = await page.evaluate(() => window.kefuConsole.state.conversations.get(window.kefuConsole.state.active).sorted.length);
    await page.locator('#messages').evaluate((e) => { e.scrollTop = 0; });
    await page.waitForFunction((n) => window.kefuConsole.state.conversations.get(window.kefuConsole.state.active).sorted.length > n, before);
  }
  const loaded = await page.evaluate(() => window.kefuConsole.state.conversations.get(window.kefuConsole.state.active).sorted.length);
  const drawn = await page.locator('#messages .msg').count();
  assert.equal(loaded, N);
  assert.ok(drawn < 80, `${drawn} message nodes in the DOM for ${loaded} loaded`);
  const frameMs = await page.evaluate(async () => {
    const list = document.getElementById('messages');
    const t0 = performance.now();
    for (let i = 0; i < 50; i++) {
      list.scrollTop = (i * 997) % list.scrollHeight;
      await new Promise((r) => requestAnimationFrame(r));
    }
    return (performance.now() - t0) / 50;
  });
  console.log(`# 501 conversations: ${rows} rows drawn; 10,000-message conversation opened in ${openedMs} ms, ${loaded} loaded, ${drawn} drawn, ${frameMs.toFixed(1)} ms per scrolled frame`);
});
