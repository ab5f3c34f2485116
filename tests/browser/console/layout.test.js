// layout.test.js: text people type cannot break the console's layout. A long unbroken
// visitor name leaves Take, Close and Block visible and inside the viewport; a right-to-left
// override (U+202E) in a name, a message or a file name stays inside its element (bidi
// isolation), and a file name is shown without it, so it cannot fake an extension.
// Run from the repository root: node --test --test-concurrency=1 tests/browser/console/

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Kefu, ANN, BOB } from './lib/kefu.js';
import { Visitor } from './lib/visitor.js';
import { Agent } from '../lib/agent.js';
import { launch, consolePage } from './lib/browser.js';

const RLO = '\u202e';
let browser;
let kefu;
let contexts = [];
let closers = [];

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

afterEach(async () => {
  for (const close of closers) close();
  for (const context of contexts) await context.close();
  closers = [];
  contexts = [];
  await kefu?.close();
});

/** A visitor whose pre-chat name is `name`, connected. */
async function namedVisitor(name) {
  const visitor = new Visitor(kefu, await session({ site: kefu.siteKey, profile: { name } }));
  await visitor.connect();
  closers.push(() => visitor.close());
  return visitor;
}

async function session(body) {
  const answer = await kefu.request('POST', '/api/v1/visitor/session', { body });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body;
}

/** Bob, online over the protocol, takes every queued conversation, so Ann's console offers Take. */
async function bobOnline() {
  const bob = await Agent.connect(kefu, { email: BOB });
  closers.push(() => bob.close());
  return bob;
}

/** Ann's console with the conversation open from the "All open" list. */
async function openAsAnn(conversationId, viewport) {
  const opened = await consolePage(browser, kefu, ANN, { viewport });
  contexts.push(opened.context);
  const page = opened.page;
  await page.locator('[data-list="open"]').click();
  await page.locator(`.row[data-conversation="${conversationId}"]`).click();
  await page.locator('#pane').waitFor({ state: 'visible' });
  return page;
}

/** The element's box lies inside the viewport, and the element is visible. */
async function assertInViewport(page, selector) {
  const locator = page.locator(selector);
  assert.ok(await locator.isVisible(), `${selector} is visible`);
  const box = await locator.boundingBox();
  const { width, height } = page.viewportSize();
  assert.ok(box.x >= 0 && box.y >= 0 && box.x + box.width <= width && box.y + box.height <= height,
    `${selector} at ${JSON.stringify(box)} lies inside the ${width}x${height} viewport`);
}

/** The computed `unicode-bidi` of the first element matching `selector`. */
function bidiOf(page, selector) {
  return page.locator(selector).first().evaluate((element) => getComputedStyle(element).unicodeBidi);
}

test('a 300-character unbroken visitor name keeps Take, Close and Block visible and inside the viewport', async () => {
  kefu = await Kefu.create();
  await kefu.start();
  await bobOnline();
  const name = 'W'.repeat(300);
  const visitor = await namedVisitor(name);
  const ack = await visitor.say('Hello');

  for (const viewport of [{ width: 1400, height: 860 }, { width: 1024, height: 700 }]) {
    const page = await openAsAnn(ack.conversation_id, viewport);
    await page.locator('#pane-title bdi', { hasText: name }).waitFor();
    for (const button of ['#act-take', '#act-transfer', '#act-close', '#act-block']) await assertInViewport(page, button);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page does not scroll sideways (${overflow}px too wide)`);
    // The label holding the name ends (and clips the name) before the buttons start.
    const label = await page.locator('.pane-head .pane-label').boundingBox();
    const actions = await page.locator('.pane-head .actions').boundingBox();
    assert.ok(label.x + label.width <= actions.x + 1, 'the name is cut before the buttons');
    const clipped = await page.locator('.pane-head .pane-label').evaluate((element) => element.scrollWidth > element.clientWidth);
    assert.ok(clipped, 'the long name is clipped, with an ellipsis');
    // The list row and the tab are cut too, inside their own boxes.
    for (const selector of [`.row[data-conversation="${ack.conversation_id}"] .name`, '.tab-name']) {
      const fits = await page.locator(selector).first().evaluate((element) => {
        const box = element.getBoundingClientRect();
        const parent = element.parentElement.getBoundingClientRect();
        return box.right <= parent.right + 1;
      });
      assert.ok(fits, `${selector} stays inside its row`);
    }
    await page.context().close();
    contexts = contexts.filter((context) => context !== page.context());
  }
});

test('a right-to-left override in a name, a message or a file name stays inside its element', async () => {
  kefu = await Kefu.create();
  await kefu.start();
  await bobOnline();
  const name = `Ada${RLO}evil`;
  const visitor = await namedVisitor(name);
  const first = await visitor.say(`${RLO}reversed text`);
  const fileName = `invoice${RLO}fdp.exe`;
  const upload = await fetch(`${kefu.origin}/api/v1/uploads?name=${encodeURIComponent(fileName)}`, {
    method: 'POST', headers: { Authorization: `Bearer ${visitor.token}` }, body: 'plain text, not a pdf',
  });
  assert.equal(upload.status, 201);
  const attachment = await upload.json();
  visitor.send({ type: 'send', client_id: randomUUID(), conversation_id: first.conversation_id, text: '', attachment_id: attachment.id });

  const page = await openAsAnn(first.conversation_id, { width: 1400, height: 860 });
  const shown = page.locator('#messages .file-name');
  await shown.waitFor();
  const shownName = await shown.textContent();
  assert.ok(!shownName.includes(RLO), `the file name is shown without the override: ${JSON.stringify(shownName)}`);
  assert.ok(shownName.endsWith('fdp.exe'), `the real extension is the one at the end: ${JSON.stringify(shownName)}`);
  assert.equal(await bidiOf(page, '#messages .file-name'), 'isolate');

  // The name in the header, the list and the message line, and the message itself, are isolated:
  // the text after them (" · #12", the time) keeps its order.
  assert.equal(await page.locator('#pane-title bdi').textContent(), name);
  assert.equal(await bidiOf(page, '#pane-title bdi'), 'isolate');
  assert.match(await page.locator('#pane-title').textContent(), new RegExp(` · #${first.conversation_id}$`));
  assert.equal(await bidiOf(page, `.row[data-conversation="${first.conversation_id}"] .name`), 'isolate');
  assert.equal(await bidiOf(page, '.tab-name'), 'isolate');
  // The holder's name in the status line is isolated too.
  await page.locator('#pane-status bdi', { hasText: 'bob' }).waitFor();
  assert.match(await page.locator('#pane-status').textContent(), / · with bob$/);
  const bubble = page.locator('#messages .msg .bubble', { hasText: 'reversed text' });
  assert.equal(await bubble.evaluate((element) => getComputedStyle(element).unicodeBidi), 'isolate');
  assert.equal(await bubble.getAttribute('dir'), 'auto');
  const who = page.locator('#messages .msg .who bdi', { hasText: 'Ada' }).first();
  assert.equal(await who.evaluate((element) => getComputedStyle(element).unicodeBidi), 'isolate');
  // The visitor panel's values too.
  await page.locator('#visitor-info dd', { hasText: 'evil' }).first().waitFor();
  assert.equal(await bidiOf(page, '#visitor-info dd'), 'isolate');
});
