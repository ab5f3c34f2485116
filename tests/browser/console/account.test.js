// account.test.js: the console's search (Chinese and English, a hit opens the conversation at
// that message), the agent's two-factor login (enrolment by QR code and key, recovery codes,
// then a login that asks for the code, and turning it off) and the profile's picture and
// password change, in headless Chromium against a real kefu server.
// Run from the repository root: node --test --test-concurrency=1 tests/browser/console/

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { resolve } from 'node:path';
import { Kefu, ANN, BOSS, PASSWORD } from './lib/kefu.js';
import { Visitor } from './lib/visitor.js';
import { launch, consolePage } from './lib/browser.js';

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

async function openConsole(email, options) {
  const opened = await consolePage(browser, kefu, email, options);
  contexts.push(opened.context);
  return opened.page;
}

/** The RFC 6238 code of a base32 secret, `stepsAhead` 30-second steps from now. */
function totp(secret, stepsAhead = 0) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const ch of secret.replace(/=+$/, '')) bits += alphabet.indexOf(ch).toString(2).padStart(5, '0');
  const key = Buffer.from(bits.match(/.{8}/g).map((byte) => parseInt(byte, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 30000) + stepsAhead));
  const digest = createHmac('sha1', key).update(counter).digest();
  const offset = digest[digest.length - 1] & 0x0f;
  return String((digest.readUInt32BE(offset) & 0x7fffffff) % 1e6).padStart(6, '0');
}

/**
 * Submits the search until the index (committed within 3 s of a message) has hits marking these
 * words; the previous search's hits stay on screen until the new ones arrive, so they do not count.
 */
async function search(page, words) {
  await page.locator('#search-query').fill(words);
  const marked = page.locator('#search-results .hit mark', { hasText: words });
  for (let attempt = 0; attempt < 20; attempt++) {
    await page.locator('#search-submit').click();
    try {
      await marked.first().waitFor({ timeout: 500 });
      return;
    } catch {
      // Not indexed yet.
    }
  }
  assert.fail(`no hits for ${words}`);
}

test('an agent searches in Chinese and English and opens a hit at its message', async () => {
  kefu = await Kefu.create();
  await kefu.start();
  const visitor = await Visitor.open(kefu);
  visitors.push(visitor);
  const first = await visitor.say('我想退款，订单号 20261206');
  for (let i = 1; i <= 30; i++) await visitor.say(`Message number ${i} about shipping`);
  await visitor.say('Also, how long does a refund take?');

  const page = await openConsole(ANN);
  await page.locator('#search-button').click();
  await search(page, '退款');
  const hits = page.locator('#search-results .hit');
  assert.equal(await hits.count(), 1);
  assert.equal(await hits.first().locator('mark').first().textContent(), '退款');

  await search(page, 'refund');
  assert.equal(await hits.count(), 1);
  assert.match(await hits.first().textContent(), /how long does a refund take/);
  assert.equal(await hits.first().locator('mark').textContent(), 'refund');
  await page.screenshot({ path: `${DOCS}/console-search.png` });

  // The Chinese hit is the conversation's first message, far above the newest: it is opened there.
  await search(page, '退款');
  await hits.first().click();
  await page.locator('#search-dialog').waitFor({ state: 'hidden' });
  const found = page.locator(`#messages .msg.found[data-seq="${first.seq}"]`);
  await found.waitFor();
  assert.match(await found.textContent(), /我想退款/);
  const box = await found.boundingBox();
  const pane = await page.locator('#messages').boundingBox();
  assert.ok(box.y >= pane.y && box.y + box.height <= pane.y + pane.height, 'the message is in view');
});

test('an agent turns on two-factor login by QR code and then logs in with a code', async () => {
  kefu = await Kefu.create();
  await kefu.start();
  const page = await openConsole(ANN, { locale: 'zh-CN' });
  await page.locator('#me-button').click();
  await page.locator('#profile-dialog').waitFor();
  await page.locator('#two-factor-start').click();
  await page.locator('#two-factor-qr').waitFor();
  assert.equal(await page.locator('#two-factor-qr').evaluate((img) => img.complete && img.naturalWidth > 0), true);
  const secret = await page.locator('#two-factor-key').getAttribute('data-secret');
  assert.match(await page.locator('#profile-two-factor').textContent(), /扫描此二维码/);
  await page.screenshot({ path: `${DOCS}/console-2fa-zh.png` });

  await page.locator('#two-factor-code').fill(totp(secret));
  await page.locator('#two-factor-confirm button').click();
  await page.locator('#recovery-codes').waitFor();
  assert.equal(await page.locator('#recovery-codes li').count(), 10);
  await page.locator('#recovery-codes-done').click();
  assert.match(await page.locator('#profile-two-factor').textContent(), /已开启/);
  await page.locator('#profile-close').click();

  await page.locator('#logout').click();
  await page.locator('#login-form').waitFor();
  await page.locator('#login-email').fill(ANN);
  await page.locator('#login-password').fill(PASSWORD);
  await page.locator('#login-submit').click();
  await page.locator('#code-form').waitFor();
  // A wrong code is refused and said so; the next step's code (this one was used) lets her in.
  await page.locator('#login-code').fill(totp(secret) === '000000' ? '111111' : '000000');
  await page.locator('#code-submit').click();
  await page.locator('#code-error:text("验证码错误或已被使用。")').waitFor();
  await page.locator('#login-code').fill(totp(secret, 1));
  await page.locator('#code-submit').click();
  await page.locator('#app').waitFor({ state: 'visible' });
  await page.locator('#connection[data-state="open"]').waitFor({ state: 'attached' });
});

test('where an admin requires two-factor login, an agent without it enrols right after the password', async () => {
  kefu = await Kefu.create();
  await kefu.start();
  // The admin turns it on for themself, then requires it (the form of the admin pages, with its CSRF token).
  const boss = await kefu.login(BOSS);
  const setup = await kefu.request('POST', '/api/v1/agent/two-factor/setup', { token: boss.token });
  const confirmed = await kefu.request('POST', '/api/v1/agent/two-factor/confirm', { token: boss.token, body: { code: totp(setup.body.secret) } });
  assert.equal(confirmed.status, 200, JSON.stringify(confirmed.body));
  const agentsPage = await kefu.request('GET', '/admin/agents', { token: boss.token });
  const csrf = agentsPage.body.match(/name="csrf" value="([^"]+)"/)[1];
  const required = await fetch(`${kefu.origin}/admin/two-factor`, {
    method: 'POST', redirect: 'manual',
    headers: { Authorization: `Bearer ${boss.token}`, 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ csrf, required: 'on' }),
  });
  assert.equal(required.status, 303);

  const context = await browser.newContext({ locale: 'en-US', viewport: { width: 1200, height: 800 } });
  contexts.push(context);
  const page = await context.newPage();
  await page.goto(`${kefu.origin}/console`);
  await page.locator('#login-email').fill(ANN);
  await page.locator('#login-password').fill(PASSWORD);
  await page.locator('#login-submit').click();
  await page.locator('#enrol').waitFor();
  assert.equal(await page.locator('#app').isHidden(), true);
  await page.locator('#enrol-two-factor #two-factor-start').click();
  const secret = await page.locator('#enrol-two-factor #two-factor-key').getAttribute('data-secret');
  await page.locator('#enrol-two-factor #two-factor-code').fill(totp(secret));
  await page.locator('#enrol-two-factor #two-factor-confirm button').click();
  await page.locator('#enrol-two-factor #recovery-codes-done').click();
  await page.locator('#app').waitFor({ state: 'visible' });
  await page.locator('#connection[data-state="open"]').waitFor({ state: 'attached' });
});

// A 1×1 PNG, as a picture an agent might choose.
const PICTURE = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==', 'base64');

test('an agent sets a picture and changes her password in English, and turns two-factor login off in Chinese', async () => {
  kefu = await Kefu.create();
  await kefu.start();
  const page = await openConsole(ANN);
  await page.locator('#me-button').click();
  await page.locator('#profile-dialog').waitFor();

  // The picture is served from the agent's avatar URL as an image, sandboxed, and shown.
  await page.locator('#avatar-input').setInputFiles({ name: 'me.png', mimeType: 'image/png', buffer: PICTURE });
  await page.waitForFunction(() => {
    const img = document.getElementById('profile-avatar');
    return img.src.includes('/avatar') && img.complete && img.naturalWidth === 1;
  });
  const served = await page.evaluate(async () => {
    const response = await fetch(document.getElementById('profile-avatar').src);
    return [response.status, response.headers.get('content-type'), response.headers.get('content-security-policy')];
  });
  assert.deepEqual(served, [200, 'image/png', "default-src 'none'; sandbox"]);

  // A wrong current password and a too-short new one are told apart; the right one changes it.
  const change = async (current, next) => {
    await page.locator('#password-current').fill(current);
    await page.locator('#password-new').fill(next);
    await page.locator('#password-repeat').fill(next);
    await page.locator('#password-form button[type="submit"]').click();
  };
  await change('not my password', 'a new long password');
  await page.locator('#password-result:text("The current password is wrong.")').waitFor();
  await change(PASSWORD, 'x'.repeat(1025));
  await page.locator('#password-result:text("A password has 8 to 1024 characters.")').waitFor();
  await change(PASSWORD, 'a new long password');
  await page.locator('#password-result:text("Password changed. Your other sessions have ended.")').waitFor();
  assert.equal((await kefu.request('POST', '/api/v1/agent/login', { body: { email: ANN, password: 'a new long password' } })).status, 200);
  await page.locator('#profile-close').click();

  // In Chinese: turned on, then a wrong password is refused in Chinese and the right one turns it off.
  const zh = await openConsole(BOSS, { locale: 'zh-CN' });
  await zh.locator('#me-button').click();
  await zh.locator('#two-factor-start').click();
  const secret = await zh.locator('#two-factor-key').getAttribute('data-secret');
  await zh.locator('#two-factor-code').fill(totp(secret));
  await zh.locator('#two-factor-confirm button').click();
  await zh.locator('#recovery-codes-done').click();
  const turnOff = async (password) => {
    await zh.locator('#profile-two-factor input[type="password"]').fill(password);
    await zh.locator('#profile-two-factor button.danger').click();
  };
  await turnOff('not my password');
  await zh.locator('#profile-two-factor .error:text("密码错误。")').waitFor();
  assert.match(await zh.locator('#profile-two-factor').textContent(), /已开启/);
  await turnOff(PASSWORD);
  await zh.locator('#profile-two-factor:has-text("未开启")').waitFor();
  const me = await zh.evaluate(async () => (await fetch('/api/v1/agent/me')).json());
  assert.equal(me.two_factor, false);
});
