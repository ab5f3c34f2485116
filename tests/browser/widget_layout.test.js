// widget_layout.test.js: text people type cannot break the widget's layout. A long unbroken
// welcome text wraps inside the panel; a right-to-left override (U+202E) in a message or a file
// name stays inside its element (bidi isolation), and a file name is shown without it, so it
// cannot fake an extension. Run: node --test tests/browser/

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Kefu } from './lib/kefu.js';
import { Agent } from './lib/agent.js';
import { startHost, shopPage } from './lib/host.js';
import { launch, openWidget, typeMessage } from './lib/browser.js';

const RLO = '\u202e';
let browser;
let kefu;
let host;
let context;
let agent;

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

afterEach(async () => {
  agent?.close();
  agent = null;
  await context?.close();
  await host?.close();
  await kefu?.close();
});

/** A server whose site says `welcomeText`, an agent online, and the widget open on a host page. */
async function openPanel(welcomeText) {
  kefu = await Kefu.create({ welcomeText });
  await kefu.start();
  host = await startHost((url) => (url.pathname === '/' ? shopPage(kefu) : null));
  agent = await Agent.connect(kefu);
  context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on('pageerror', (error) => console.error('[browser] page error:', error));
  await page.goto(host.origin);
  return openWidget(page);
}

/** The computed `unicode-bidi` of the first element matching `selector` in the panel. */
function bidiOf(frame, selector) {
  return frame.locator(selector).first().evaluate((element) => getComputedStyle(element).unicodeBidi);
}

test('a long unbroken welcome text wraps inside the widget panel', async () => {
  const welcome = `Welcome${'W'.repeat(500)} ${'https://shop.example/'.repeat(20)}`;
  const frame = await openPanel(welcome);
  await frame.locator('#welcome').waitFor({ state: 'visible' });
  assert.equal(await frame.locator('#welcome').textContent(), welcome);
  const sizes = await frame.evaluate(() => {
    const welcomeBox = document.getElementById('welcome').getBoundingClientRect();
    const log = document.getElementById('log');
    return {
      welcomeRight: welcomeBox.right,
      logRight: log.getBoundingClientRect().right,
      logOverflow: log.scrollWidth - log.clientWidth,
      pageOverflow: document.documentElement.scrollWidth - window.innerWidth,
      height: welcomeBox.height,
    };
  });
  assert.ok(sizes.welcomeRight <= sizes.logRight, `the welcome text ends inside the panel: ${JSON.stringify(sizes)}`);
  assert.ok(sizes.logOverflow <= 0 && sizes.pageOverflow <= 0, `nothing scrolls sideways: ${JSON.stringify(sizes)}`);
  assert.ok(sizes.height > 100, 'the text wraps onto many lines instead');
  assert.equal(await bidiOf(frame, '#welcome'), 'isolate');
});

test('a right-to-left override in a message or a file name stays inside its element', async () => {
  const frame = await openPanel(`Hello${RLO} there`);
  await typeMessage(frame, 'Can you send the invoice?');
  const question = await agent.waitForMessage('Can you send the invoice?');
  const conversationId = question.conversation_id;
  const reply = await agent.reply(conversationId, `${RLO}reversed reply`);
  assert.equal(reply.type, 'ack', JSON.stringify(reply));

  const fileName = `invoice${RLO}fdp.exe`;
  const upload = await fetch(`${kefu.origin}/api/v1/uploads?conversation_id=${conversationId}&name=${encodeURIComponent(fileName)}`, {
    method: 'POST', headers: { Authorization: `Bearer ${agent.token}` }, body: 'plain text, not a pdf',
  });
  assert.equal(upload.status, 201);
  const attachment = await upload.json();
  const clientId = randomUUID();
  agent.send({ type: 'send', client_id: clientId, conversation_id: conversationId, text: '', attachment_id: attachment.id });
  await agent.waitFor((f) => f.type === 'ack' && f.client_id === clientId, 'the file ack');

  const shown = frame.locator('#messages .kf-file-name');
  await shown.waitFor();
  const shownName = await shown.textContent();
  assert.ok(!shownName.includes(RLO), `the file name is shown without the override: ${JSON.stringify(shownName)}`);
  assert.ok(shownName.endsWith('fdp.exe'), `the real extension is the one at the end: ${JSON.stringify(shownName)}`);
  assert.equal(await bidiOf(frame, '#messages .kf-file-name'), 'isolate');

  const text = frame.locator('#messages .kf-text', { hasText: 'reversed reply' });
  await text.waitFor();
  assert.equal(await text.evaluate((element) => getComputedStyle(element).unicodeBidi), 'isolate');
  assert.equal(await bidiOf(frame, '#messages .kf-bubble'), 'isolate');
  assert.equal(await bidiOf(frame, '#messages .kf-sender'), 'isolate');
  assert.equal(await bidiOf(frame, '#welcome'), 'isolate');
});
