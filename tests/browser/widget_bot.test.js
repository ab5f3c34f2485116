// widget_bot.test.js: the bot in the visitor widget, end to end against a real
// kefu server and a stand-in language model (a local OpenAI-compatible server
// that streams its answer slowly enough to be seen): a question gets a streamed
// answer marked as automatic, the visitor gives it a thumbs down (stored), asks
// for a human, sees the handoff, and an agent joins and answers.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { Kefu, AGENT } from './lib/kefu.js';
import { Agent } from './lib/agent.js';
import { startHost, shopPage } from './lib/host.js';
import { launch, openWidget, typeMessage, messageItem } from './lib/browser.js';

const ADMIN = 'admin@x.test';
const PIECES = ['Our green tea ', 'ships in ', 'two days.'];
const PIECE_DELAY_MS = 400;

let browser;

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

/** A stand-in chat-completions endpoint that streams PIECES, one every PIECE_DELAY_MS. */
async function standInModel() {
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', async () => {
      res.writeHead(200, { 'Content-Type': 'text/event-stream' });
      for (const piece of PIECES) {
        res.write(`data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: piece } }] })}\n\n`);
        await new Promise((resolve) => setTimeout(resolve, PIECE_DELAY_MS));
      }
      res.end('data: [DONE]\n\n');
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${server.address().port}/v1`, close: () => server.close() };
}

test('ask, a streamed answer, thumbs down, talk to a human, an agent joins', async () => {
  const model = await standInModel();
  const kefu = await Kefu.create({
    agents: [[AGENT.email, 'agent'], [ADMIN, 'admin']],
    env: { KEFU_LLM__ALLOW_PRIVATE_ADDRESSES: 'true' },
  });
  await kefu.start();
  const host = await startHost((url) => (url.pathname === '/' ? shopPage(kefu) : null));
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US' });
  let agent = null;
  try {
    const admin = (await kefu.login(ADMIN)).token;
    const settings = await kefu.request('PUT', `/api/v1/sites/${kefu.siteKey}/bot`, {
      token: admin,
      body: { enabled: true, llm: { base_url: model.url, model: 'stand-in' } },
    });
    assert.equal(settings.status, 200, JSON.stringify(settings.body));

    const page = await context.newPage();
    page.on('pageerror', (err) => console.error('[browser] page error:', err));
    await page.goto(host.origin);
    const frame = await openWidget(page);
    const human = frame.locator('#btn-human');
    await human.waitFor();

    // Ask: the answer streams in a provisional bubble, then the stored message replaces it.
    await typeMessage(frame, 'When does green tea ship?');
    const streaming = frame.locator('li.kf-streaming');
    await streaming.waitFor();
    await streaming.filter({ hasText: 'Our green tea' }).waitFor();
    assert.ok(!(await streaming.textContent()).includes('two days.'), 'the first piece shows before the last is written');
    const answer = messageItem(frame, PIECES.join(''));
    await answer.waitFor();
    await streaming.waitFor({ state: 'detached' });
    assert.equal(await answer.locator('.kf-auto').textContent(), 'Automatic answer · AI');
    assert.ok(await answer.evaluate((li) => li.classList.contains('kf-bot')));

    if (process.env.SHOTS_DIR) await page.screenshot({ path: `${process.env.SHOTS_DIR}/widget-bot-answer.png` });
    // "Talk to a human" shows while the bot has the conversation.
    await human.waitFor();
    assert.equal(await human.textContent(), 'Talk to a human');

    // Thumbs down is stored.
    const stored = page.waitForResponse((res) => res.url().includes('/feedback') && res.request().method() === 'POST');
    await answer.locator('.kf-thumb[data-helpful="false"]').click();
    assert.equal((await stored).status(), 204);
    await answer.locator('.kf-thumbs[data-sent="false"]').waitFor();
    assert.equal(await answer.locator('.kf-thumb[data-helpful="false"]').getAttribute('aria-pressed'), 'true');

    // An agent comes online; the bot's conversation is not theirs until the visitor asks.
    agent = await Agent.connect(kefu);
    // The handoff's states can pass faster than a locator polls: record every text they show.
    await frame.evaluate(() => {
      window.handoffStates = [];
      const state = document.getElementById('handoff-state');
      new MutationObserver(() => window.handoffStates.push(state.textContent)).observe(state, { childList: true, characterData: true, subtree: true });
    });
    await human.click();
    const assigned = await agent.waitFor((f) => f.type === 'conversation' && f.event === 'assigned', 'assigned');
    assert.equal(assigned.conversation.bot_active, false);
    await frame.locator('li.kf-note', { hasText: 'An agent joined the conversation.' }).waitFor();
    await human.waitFor({ state: 'hidden' });
    const states = await frame.evaluate(() => window.handoffStates);
    assert.ok(states.includes('Connecting you to an agent…'), `handoff states: ${JSON.stringify(states)}`);
    assert.equal(await frame.locator('#handoff-state').isVisible(), false, 'no handoff state once the agent joined');

    // The agent sees the whole transcript and answers.
    await agent.waitForMessage('When does green tea ship?');
    const reply = await agent.reply(assigned.conversation.id, 'Hi, Ann here. Your tea ships today.');
    assert.equal(reply.type, 'ack', JSON.stringify(reply));
    const fromAgent = messageItem(frame, 'Hi, Ann here. Your tea ships today.');
    await fromAgent.waitFor();
    assert.ok(await fromAgent.evaluate((li) => li.classList.contains('kf-agent')));
    if (process.env.SHOTS_DIR) await page.screenshot({ path: `${process.env.SHOTS_DIR}/widget-bot.png` });
    assert.equal(await fromAgent.locator('.kf-thumb').count(), 0, 'agents\u2019 messages take no thumbs');
  } finally {
    agent?.close();
    await context.close();
    await host.close();
    await kefu.close();
    model.close();
  }
});

test('with nobody online, talk to a human before any message leads to the offline form', async () => {
  const kefu = await Kefu.create({ agents: [[ADMIN, 'admin']] });
  await kefu.start();
  const host = await startHost((url) => (url.pathname === '/' ? shopPage(kefu) : null));
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'zh-CN' });
  try {
    const admin = (await kefu.login(ADMIN)).token;
    const settings = await kefu.request('PUT', `/api/v1/sites/${kefu.siteKey}/bot`, { token: admin, body: { enabled: true } });
    assert.equal(settings.status, 200, JSON.stringify(settings.body));
    const page = await context.newPage();
    page.on('pageerror', (err) => console.error('[browser] page error:', err));
    await page.goto(host.origin);
    // With the bot on, the visitor may write although no agent is online.
    const frame = await openWidget(page);
    assert.equal(await frame.locator('#offline').isVisible(), false);
    const human = frame.locator('#btn-human');
    await human.waitFor();
    assert.equal(await human.textContent(), '转人工客服');
    await human.click();
    await messageItem(frame, '转人工').waitFor();
    await frame.locator('#offline').waitFor();
    await frame.locator('#handoff-state', { hasText: '当前没有客服在线' }).waitFor();
  } finally {
    await context.close();
    await host.close();
    await kefu.close();
  }
});
