// admin_bot_eval.test.js: an admin pastes labelled visitor messages on the bot's evaluation
// page (headless Chromium, real kefu) and reads the figures, the curve and the wrong answers,
// in English and in Chinese. Run from the repository root:
// node --test --test-concurrency=1 tests/browser/console/

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { Kefu, BOSS, PASSWORD } from './lib/kefu.js';
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
  await kefu?.close();
  await browser?.close();
});

test('an admin evaluates the bot on labelled messages and sees the figures and the curve', async () => {
  const { token } = await kefu.login(BOSS);
  const ids = [];
  for (const [question, answer] of [
    ['How much is shipping?', 'Free over 99 yuan.'],
    ['How do I return an item?', 'Within 30 days, unused.'],
    ['运费怎么算？', '满99元包邮。'],
  ]) {
    const created = await kefu.request('POST', `/api/v1/kb?site=${kefu.siteKey}`, { token, body: { questions: [question], answer } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    ids.push(created.body.id);
  }
  const messages = [
    { message: 'how much is shipping', expected: ids[0], lang: 'en', kind: 'paraphrase' },
    { message: 'can I return this', expected: ids[1], lang: 'en', kind: 'paraphrase' },
    { message: '运费多少', expected: ids[2], lang: 'zh', kind: 'paraphrase' },
    { message: 'what is the weather today', expected: null, lang: 'en', kind: 'unrelated' },
  ].map((line) => JSON.stringify(line)).join('\n');

  const context = await browser.newContext({ viewport: { width: 1280, height: 1000 }, locale: 'zh-CN' });
  const page = await context.newPage();
  page.on('pageerror', (error) => console.error('page error:', error));
  await page.goto(`${kefu.origin}/admin/login`);
  await page.locator('input[name=email]').fill(BOSS);
  await page.locator('input[name=password]').fill(PASSWORD);
  await page.locator('button[type=submit]').click();
  await page.waitForURL(/\/admin/);

  // From the bot page, in the browser's language (Chinese), to the evaluation page.
  await page.goto(`${kefu.origin}/admin/bot?site=${kefu.siteKey}`);
  await page.getByRole('link', { name: '评估机器人' }).click();
  await page.locator('h1', { hasText: '评估机器人' }).waitFor();
  await page.locator('textarea[name=messages]').fill('{"message": "hi", "expected": 424242}');
  await page.getByRole('button', { name: '开始评估' }).click();
  await page.locator('.field-error', { hasText: 'no entry has the id' }).waitFor();

  await page.locator('textarea[name=messages]').fill(messages);
  await page.getByRole('button', { name: '开始评估' }).click();
  await page.locator('figure.curve svg').waitFor();
  assert.match(await page.locator('.eval-results h2').first().innerText(), /4 条消息/);
  assert.equal(await page.locator('figure.curve svg text', { hasText: '召回率' }).count() > 0, true);
  await page.screenshot({ path: resolve(DOCS, 'admin-bot-eval-zh.png'), fullPage: true });

  // The same page in English, by its switch.
  await page.getByRole('link', { name: 'English' }).click();
  await page.locator('h1', { hasText: 'Evaluate the bot' }).waitFor();
  await page.locator('textarea[name=messages]').fill(messages);
  await page.getByRole('button', { name: 'Evaluate' }).click();
  await page.locator('figure.curve svg').waitFor();
  const allRow = page.locator('.eval-results table').first().locator('tr.marked');
  assert.match(await allRow.innerText(), /^all/);
  await context.close();
});
