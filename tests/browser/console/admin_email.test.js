// admin_email.test.js: an admin sets up email on the Email / 邮件 admin page
// (headless Chromium, real kefu), sends a test email to a small SMTP server
// run by this test, and sees it in the outbox. Run from the repository root:
// node --test --test-concurrency=1 tests/browser/console/

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { Kefu, BOSS, PASSWORD } from './lib/kefu.js';
import { launch } from './lib/browser.js';

let browser;
let kefu;
let smtp;

/** An SMTP server that accepts every message (no TLS, any login) and keeps what it received. */
function startSmtpSink() {
  const received = [];
  const server = createServer((socket) => {
    let buffer = '';
    let data = null;
    const say = (line) => socket.write(`${line}\r\n`);
    say('220 sink.test ESMTP');
    socket.on('data', (chunk) => {
      buffer += chunk.toString('utf8');
      let end;
      while ((end = buffer.indexOf('\r\n')) >= 0) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (data !== null) {
          if (line === '.') {
            received.push(data.join('\r\n'));
            data = null;
            say('250 2.0.0 queued');
          } else {
            data.push(line.startsWith('.') ? line.slice(1) : line);
          }
          continue;
        }
        const command = line.toUpperCase();
        if (command.startsWith('EHLO') || command.startsWith('HELO')) say('250-sink.test\r\n250 8BITMIME');
        else if (command === 'DATA') { data = []; say('354 go ahead'); }
        else if (command === 'QUIT') { say('221 bye'); socket.end(); }
        else say('250 ok');
      }
    });
    socket.on('error', () => {});
  });
  return new Promise((done) => server.listen(0, '127.0.0.1', () => done({
    port: server.address().port,
    received,
    close: () => new Promise((closed) => server.close(closed)),
  })));
}

before(async () => {
  browser = await launch();
  smtp = await startSmtpSink();
  kefu = await Kefu.create();
  await kefu.start();
});

after(async () => {
  await kefu?.close();
  await smtp?.close();
  await browser?.close();
});

test('an admin saves the SMTP settings, sends a test email and finds it sent in the outbox', async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: 'zh-CN' });
  const page = await context.newPage();
  page.on('pageerror', (error) => console.error('page error:', error));
  await page.goto(`${kefu.origin}/admin/login`);
  await page.locator('input[name=email]').fill(BOSS);
  await page.locator('input[name=password]').fill(PASSWORD);
  await page.locator('button[type=submit]').click();
  await page.locator('h1', { hasText: '站点' }).waitFor();

  // The nav leads to the page, in the browser's language (Chinese here).
  await page.getByRole('link', { name: '邮件', exact: true }).click();
  await page.locator('h1', { hasText: '邮件' }).waitFor();
  await page.locator('p.error', { hasText: '设置主机和发件地址之前不会发送邮件' }).waitFor();

  // A mistake is named next to its field, and nothing is saved.
  const settings = page.locator('#email-settings');
  await settings.locator('input[name=host]').fill('127.0.0.1');
  await settings.locator('input[name=port]').fill('99999');
  await settings.getByRole('button', { name: '保存' }).click();
  await page.locator('.field-error', { hasText: '端口:' }).waitFor();

  await settings.locator('input[name=port]').fill(String(smtp.port));
  await settings.locator('select[name=security]').selectOption('none');
  await settings.locator('input[name=from_address]').fill('help@tea.test');
  await settings.locator('input[name=from_name]').fill('茶馆客服');
  await settings.getByRole('button', { name: '保存' }).click();
  await page.locator('.notice', { hasText: '邮件设置已保存' }).waitFor();
  assert.equal(await page.locator('#email-settings input[name=port]').inputValue(), String(smtp.port));

  // The test email goes to the sink, and the page says the server took it.
  const test = page.locator('#email-test');
  assert.equal(await test.locator('input[name=to]').inputValue(), BOSS, 'the admin\'s own address by default');
  await test.locator('input[name=to]').fill('owner@tea.test');
  await test.getByRole('button', { name: '发送测试邮件' }).click();
  await page.locator('#test-result', { hasText: 'SMTP 服务器已接收测试邮件' }).waitFor();
  assert.equal(smtp.received.length, 1);
  assert.match(smtp.received[0], /^Subject: kefu =\?utf-8\?b\?5rWL6K\+V6YKu5Lu2\?=$/im, 'the Chinese subject is RFC 2047 encoded');
  assert.match(smtp.received[0], /multipart\/alternative/);

  // The outbox lists it as sent.
  const row = page.locator('#outbox tbody tr', { hasText: 'owner@tea.test' });
  await row.waitFor();
  assert.equal(await row.getAttribute('data-status'), 'sent');
  assert.match(await row.textContent(), /kefu 测试邮件[\s\S]*已发送/);

  // The same page in English.
  await page.getByRole('link', { name: 'English' }).click();
  await page.locator('h1', { hasText: 'Email' }).waitFor();
  assert.match(await page.locator('#outbox tbody tr').first().textContent(), /sent/);
  await context.close();
});
