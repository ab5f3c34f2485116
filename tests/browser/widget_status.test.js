// widget_status.test.js: the widget's one live status against a real kefu
// server: the panel switches between the offline form and the chat within 2 s
// as an agent comes and goes (no reload), a site outside its business hours
// says when it opens again (screenshots docs/widget-closed-en.png and
// docs/widget-closed-zh.png), and a page of an origin the site does not allow
// gets a clear console message. Run: node --test tests/browser/widget_status.test.js

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { Kefu, AGENT } from './lib/kefu.js';
import { Agent } from './lib/agent.js';
import { startHost, shopPage } from './lib/host.js';
import { launch, bubble, panelFrame } from './lib/browser.js';

const DOCS = resolve(import.meta.dirname, '../../docs');
const SWITCH_MS = 2000;
const BOSS = 'boss@x.test';

let browser;
let kefu;
let host;
let context;

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

afterEach(async () => {
  await context?.close();
  await host?.close();
  await kefu?.close();
});

async function serve(options) {
  // No grace period: an agent who leaves is offline at once.
  kefu = await Kefu.create({ env: { KEFU_ROUTING__OFFLINE_GRACE_SECS: '0' }, ...options });
  await kefu.start();
  host = await startHost((url) => (url.pathname === '/' ? shopPage(kefu) : null));
}

async function openPanel({ locale = 'en-US', timezoneId = 'Europe/London' } = {}) {
  context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale, timezoneId });
  const page = await context.newPage();
  page.on('pageerror', (err) => console.error('[browser] page error:', err));
  await page.goto(host.origin);
  await bubble(page).click();
  return { page, frame: await panelFrame(page) };
}

/** Milliseconds until `locator` is visible, failing after the switch budget. */
async function msUntilVisible(locator) {
  const started = Date.now();
  await locator.waitFor({ state: 'visible', timeout: SWITCH_MS });
  return Date.now() - started;
}

test('the panel switches from the offline form to the chat and back within 2 s as an agent comes and goes', async () => {
  await serve();
  const { frame } = await openPanel();
  await frame.locator('#offline').waitFor({ state: 'visible' });
  assert.ok(await frame.locator('#composer').isHidden());
  await frame.locator('#status[data-state="away"]').waitFor();
  assert.equal(await frame.locator('#status').textContent(), 'No agent online right now');

  const agent = await Agent.connect(kefu);
  const toChat = await msUntilVisible(frame.locator('#composer'));
  assert.ok(await frame.locator('#offline').isHidden(), 'the offline form goes when the chat comes');
  await frame.locator('#status[data-state="online"]').waitFor({ timeout: SWITCH_MS });
  assert.equal(await frame.locator('#status').textContent(), 'Online');

  agent.close();
  const toForm = await msUntilVisible(frame.locator('#offline'));
  assert.ok(await frame.locator('#composer').isHidden());
  // Never "Online" above "No agent is available".
  assert.equal(await frame.locator('#status').getAttribute('data-state'), 'away');
  console.log(`switch to chat ${toChat} ms, back to the form ${toForm} ms`);
});

/** Closes the site today with the admin form: open all day every day, today a holiday (Shanghai). */
async function closeForToday() {
  const page = await context.newPage();
  await page.goto(`${kefu.origin}/admin`);
  await page.locator('input[name=email]').fill(BOSS);
  await page.locator('input[name=password]').fill(AGENT.password);
  await page.locator('button[type=submit]').click();
  await page.locator('h1', { hasText: /^(Sites|站点)$/ }).waitFor();
  await page.goto(`${kefu.origin}/admin/sites/${kefu.siteKey}`);
  await page.locator('input[name=hours_enabled]').check();
  await page.locator('input[name=time_zone]').fill('Asia/Shanghai');
  for (let day = 0; day < 7; day += 1) {
    await page.locator(`input[name=open_${day}]`).fill('09:00');
    await page.locator(`input[name=close_${day}]`).fill('18:00');
  }
  const today = new Intl.DateTimeFormat('en-CA', { timeZone: 'Asia/Shanghai' }).format(new Date());
  await page.locator('textarea[name=holidays]').fill(today);
  // The admin pages follow the browser's language (Chinese here).
  await page.getByRole('button', { name: /^(Save|保存)$/ }).click();
  await page.locator('.notice, [role=status]', { hasText: /Saved|已保存/ }).first().waitFor();
  await page.close();
}

for (const [lang, locale, heading] of [['en', 'en-US', 'We’re closed, back'], ['zh', 'zh-CN', '我们已下班']]) {
  test(`outside business hours the panel says when it opens again (${lang}), live`, async () => {
    await serve({ agents: [[AGENT.email, 'agent'], [BOSS, 'admin']] });
    const agent = await Agent.connect(kefu);
    const { page, frame } = await openPanel({ locale, timezoneId: 'Asia/Shanghai' });
    await frame.locator('#composer').waitFor({ state: 'visible' });

    await closeForToday();
    await frame.locator('#status[data-state="closed"]').waitFor({ timeout: SWITCH_MS });
    await frame.locator('#offline').waitFor({ state: 'visible', timeout: SWITCH_MS });
    const status = await frame.locator('#status').textContent();
    assert.ok(status.startsWith(heading) && status.includes('09:00'), status);
    assert.ok((await frame.locator('#offline-intro').textContent()).startsWith(status));
    await page.screenshot({ path: `${DOCS}/widget-closed-${lang}.png` });
    agent.close();
  });
}

test('a page of an origin the site does not allow gets a console message naming the origin and the site', async () => {
  await serve({ origin: 'https://allowed.example' });
  context = await browser.newContext();
  const page = await context.newPage();
  const messages = [];
  page.on('console', (msg) => messages.push({ type: msg.type(), text: msg.text() }));
  const refused = page.waitForResponse((r) => r.url().endsWith(`/api/v1/sites/${kefu.siteKey}/widget`));
  await page.goto(host.origin);
  assert.equal((await refused).status(), 403);
  const deadline = Date.now() + 5000;
  let found;
  while (!(found = messages.find((m) => m.text.startsWith('kefu:'))) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(found, `no kefu console message: ${JSON.stringify(messages)}`);
  assert.equal(found.type, 'error');
  assert.ok(found.text.includes(host.origin) && found.text.includes(kefu.siteKey), found.text);
  assert.equal(await bubble(page).count(), 0, 'no bubble on a refused page');
});
